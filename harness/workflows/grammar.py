"""A grammar over the operator API: workflow structures, their source code, random samples.

A structure is a small pipeline: k generating calls (with an instruction style), optionally a
Programmer answer, a selection (ScEnsemble over every answer; without it the Programmer's answer
when there is one, program-of-thought, else the first answer), optionally Review+Revise,
optionally Test (code) and optionally Format. `render` turns a structure into workflow source in
the ScoreFlow/AFlow style; `sample_structure` draws one at random. The simulator's fairness tests
compare structures, and the tiny generator (issue 4) is warmed up on rendered samples.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass

GENERATORS_BY_DOMAIN = {
    "math": ("Custom", "AnswerGenerate"),
    "code": ("CustomCodeGenerate", "Custom"),
    "qa": ("AnswerGenerate", "Custom"),
}

INSTRUCTIONS = {
    "plain": "Solve the following problem.",
    "cot": "Solve the following problem. Think step by step, then state the final answer.",
    "decompose": (
        "Answer the question by first writing the sub-questions it needs, answering each one from the "
        "passages, then combining them into the final answer."
    ),
}

STYLES_BY_DOMAIN = {"math": ("plain", "cot"), "code": ("plain", "cot"), "qa": ("plain", "cot", "decompose")}
"""Instruction styles per domain: decomposition into sub-questions is a multi-hop QA technique
(self-ask, arXiv 2210.03350). AnswerGenerate takes no instruction, so it has one style, 'cot' (its
prompt always asks for reasoning)."""


@dataclass(frozen=True)
class Structure:
    domain: str
    generator: str
    samples: int
    """Number of generating calls (1 to 5)."""
    style: str
    """Instruction style of the generating calls: plain | cot | decompose (STYLES_BY_DOMAIN)."""
    programmer: bool = False
    ensemble: bool = False
    review: bool = False
    test: bool = False
    format: bool = False

    def signature(self) -> str:
        """A short name of the structure, e.g. 'Custom[cot]x3+Programmer>ScEnsemble>Review'."""
        parts = [f"{self.generator}[{self.style}]x{self.samples}"]
        if self.programmer:
            parts[0] += "+Programmer"
        for flag, name in (
            (self.ensemble, "ScEnsemble"),
            (self.review, "Review+Revise"),
            (self.test, "Test"),
            (self.format, "Format"),
        ):
            if flag:
                parts.append(name)
        return ">".join(parts)


def _generate_call(structure: Structure, indent: str) -> list[str]:
    instruction = INSTRUCTIONS[structure.style]
    if structure.generator == "AnswerGenerate":
        return [
            f"{indent}result = await self.answer_generate(input=self.problem)",
            f"{indent}solutions.append(result['answer'])",
        ]
    if structure.generator == "CustomCodeGenerate":
        return [
            f"{indent}result = await self.code_generate(problem=self.problem, instruction={instruction!r})",
            f"{indent}solutions.append(result['response'])",
        ]
    return [
        f"{indent}result = await self.custom(input=self.problem, instruction={instruction!r})",
        f"{indent}solutions.append(result['response'])",
    ]


def render(structure: Structure) -> str:
    """Workflow source implementing ``structure`` (always passes validation)."""
    members = {
        "Custom": "self.custom = operator.Custom(llm)",
        "AnswerGenerate": "self.answer_generate = operator.AnswerGenerate(llm)",
        "CustomCodeGenerate": "self.code_generate = operator.CustomCodeGenerate(llm)",
    }
    init = ["        self.problem = problem", f"        {members[structure.generator]}"]
    body = ["        solutions = []"]
    if structure.samples == 1:
        body += _generate_call(structure, "        ")
    else:
        body.append(f"        for _ in range({structure.samples}):")
        body += _generate_call(structure, "            ")
    if structure.programmer:
        init.append("        self.programmer = operator.Programmer(llm)")
        body += [
            "        program = await self.programmer(problem=self.problem, analysis=solutions[0])",
            "        solutions.append(program['output'])",
        ]
    if structure.ensemble:
        init.append("        self.sc_ensemble = operator.ScEnsemble(llm)")
        body += [
            "        chosen = await self.sc_ensemble(solutions=solutions, problem=self.problem)",
            "        answer = chosen['response']",
        ]
    elif structure.programmer:
        body.append("        answer = program['output']")  # program-of-thought: the program's answer
    else:
        body.append("        answer = solutions[0]")
    if structure.review:
        init += ["        self.review = operator.Review(llm)", "        self.revise = operator.Revise(llm)"]
        body += [
            "        verdict = await self.review(problem=self.problem, solution=answer)",
            "        if not verdict['review_result']:",
            "            revised = await self.revise(",
            "                problem=self.problem, solution=answer, feedback=verdict['feedback'])",
            "            answer = revised['solution']",
        ]
    if structure.test:
        init.append("        self.test = operator.Test(llm)")
        body += [
            "        checked = await self.test(problem=self.problem, solution=answer)",
            "        answer = checked['solution']",
        ]
    if structure.format:
        init.append("        self.format = operator.Format(llm)")
        body += [
            "        formatted = await self.format(problem=self.problem, solution=answer)",
            "        answer = formatted['response']",
        ]
    body.append("        return answer")
    return "\n".join(
        [
            "class Workflow:",
            "    def __init__(self, llm, problem):",
            *init,
            "",
            "    async def run_workflow(self):",
            *body,
            "",
        ]
    )


def all_structures(domain: str) -> list[Structure]:
    """Every structure of the grammar for ``domain`` (the space the simulator tables are built on)."""
    found = []
    for generator, samples, style, programmer, ensemble, review, test, fmt in itertools.product(
        GENERATORS_BY_DOMAIN[domain],
        (1, 3, 5),
        STYLES_BY_DOMAIN[domain],
        (False, True),
        (False, True),
        (False, True),
        (False, True),
        (False, True),
    ):
        if generator == "AnswerGenerate" and style != "cot":
            continue  # it takes no instruction: one style, or the same workflow twice
        if programmer and domain != "math":
            continue
        if test and domain != "code":
            continue
        if fmt and domain == "code":
            continue
        if ensemble and samples + programmer < 2:
            continue
        if not ensemble and samples > 1:
            continue  # extra samples without a selection are wasted calls: not a structure of its own
        found.append(Structure(domain, generator, samples, style, programmer, ensemble, review, test, fmt))
    return found


def sample_structure(domain: str, rng: random.Random) -> Structure:
    """A random structure of the grammar (uniform over `all_structures`)."""
    return rng.choice(all_structures(domain))
