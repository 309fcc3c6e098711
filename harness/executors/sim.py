"""The simulated executor: a seeded, documented stand-in for an executor LLM on CPU.

THIS IS A SIMULATOR. Its numbers are never LLM results; every output that shows them says so.

It reads only the structured CallInfo of each operator call (never the prompt text): the item's
latent difficulty d and whether it is computational, the operator, the instruction, and which
known answer each candidate is. A generating call is correct with probability
sigmoid(skill[domain] + bonus[operator] + bonus[instruction] - d); a wrong answer is drawn from the
item's distractors (most likely first) so errors correlate and ensembles saturate. Review, Revise,
ScEnsemble, Test's repair and Format transform candidates with the profile's probabilities. The
reply text is written in the form the real operator parsers expect, and the final answer is
graded by the benchmark's real scorer. Every draw is seeded by (seed, profile, item, repeat,
operator, instruction, candidates, occurrence): the same run gives the same answers, and repeats
of a workflow disagree like real executions do. docs/simulator.md has the equations.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass

from spogw.harness.benchmarks.base import Item, SimTraits, seeded_rng
from spogw.harness.errors import InputError
from spogw.harness.executors.base import CallInfo, Completion
from spogw.harness.executors.sim_profiles import PROFILES, SimProfile
from spogw.harness.workflows.answers import last_number

SIM_LABEL = "SIMULATED executor"
_COT = re.compile(r"step[- ]by[- ]step|reason|think|explain|carefully", re.IGNORECASE)
_DECOMPOSE = re.compile(r"sub-?questions?|decompos|break (?:it|the \w+) (?:down|into)", re.IGNORECASE)
_GENERATORS = ("Custom", "AnswerGenerate", "CustomCodeGenerate")


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


@dataclass(frozen=True)
class _Candidate:
    identity: int
    """0 = correct, k >= 1 = distractor k, -1 = an answer the simulator does not know (wrong)."""
    text: str


class SimExecutor:
    """Seeded simulator of an executor LLM (see module docstring and docs/simulator.md)."""

    simulated = True
    name = "sim"

    def __init__(self, profile: str = "medium", seed: int = 0) -> None:
        if profile not in PROFILES:
            raise InputError(f"unknown sim profile {profile!r}; choose one of {', '.join(sorted(PROFILES))}")
        self.profile: SimProfile = PROFILES[profile]
        self.seed = seed
        self.calls = 0

    def describe(self) -> str:
        return f"sim:{self.profile.name} ({SIM_LABEL}, seed {self.seed})"

    async def close(self) -> None:
        return None

    async def complete(self, prompt: str, info: CallInfo) -> Completion:
        self.calls += 1
        text = self.reply(info)
        rng = self._rng(info, "tokens")
        mean = self.profile.completion_tokens.get(info.operator, 150)
        return Completion(
            text=text,
            prompt_tokens=max(1, len(prompt) // 4),
            completion_tokens=max(1, int(mean * (0.7 + 0.6 * rng.random()))),
        )

    # ------------------------------------------------------------------------------------------

    def reply(self, info: CallInfo) -> str:
        traits = traits_of(info.item)
        rng = self._rng(info, "answer")
        op = info.operator
        if op in _GENERATORS:
            answer = self._generate(rng, info, traits, self._bonus(op, info))
            return render(info.item.domain, op, answer)
        if op in ("Programmer", "Programmer.retry"):
            return self._program(rng, info, traits)
        if op == "ScEnsemble":
            return self._ensemble(rng, info, traits)
        if op == "Review":
            return self._review(rng, info, traits)
        if op in ("Revise", "Test.fix"):
            bonus = self.profile.revise_fix if op == "Revise" else self.profile.test_fix
            answer = self._revise(rng, info, traits, bonus, may_break=op == "Revise")
            return render(info.item.domain, op, answer)
        if op == "Format":
            current = classify(info.item.domain, traits, info.candidates[0] if info.candidates else "")
            answer = current.text
            if current.identity == 0 and rng.random() < self.profile.format_error:
                answer = self._distractor(rng, traits)
            return render(info.item.domain, op, answer)
        return render(info.item.domain, op, self._generate(rng, info, traits, self._arithmetic(traits)))

    def _rng(self, info: CallInfo, purpose: str) -> random.Random:
        return seeded_rng(
            self.seed,
            self.profile.name,
            purpose,
            info.item.id,
            info.repeat,
            info.operator,
            info.instruction,
            info.candidates,
            info.occurrence,
        )

    def _bonus(self, op: str, info: CallInfo) -> float:
        table = self.profile.op_bonus
        traits = traits_of(info.item)
        bonus = table.get(f"{op}@{info.item.domain}", table.get(op, 0.0))
        bonus += style_bonus(self.profile, instruction_style(info.instruction), info.item.domain, traits.kind)
        return bonus + self._arithmetic(traits)

    def _arithmetic(self, traits: SimTraits) -> float:
        """What large-number arithmetic costs a text-reasoning call (0 on other items)."""
        return self.profile.text_arithmetic if traits.computational else 0.0

    def _p(self, traits: SimTraits, domain: str, bonus: float) -> float:
        """P(success) = sigmoid(k * (skill[domain] + bonus - d))."""
        return sigmoid(self.profile.logit_scale * (self.profile.skill.get(domain, 0.0) + bonus - traits.difficulty))

    def _generate(self, rng: random.Random, info: CallInfo, traits: SimTraits, bonus: float) -> str:
        p_correct = self._p(traits, info.item.domain, bonus)
        return traits.correct if rng.random() < p_correct else self._distractor(rng, traits)

    def _distractor(self, rng: random.Random, traits: SimTraits) -> str:
        if not traits.distractors:
            return "I do not know."
        weights = [self.profile.distractor_decay**k for k in range(len(traits.distractors))]
        return rng.choices(traits.distractors, weights=weights)[0]

    def _program(self, rng: random.Random, info: CallInfo, traits: SimTraits) -> str:
        bonus = self.profile.programmer_computational if traits.computational else self.profile.programmer_other
        p_correct = self._p(traits, info.item.domain, bonus)
        if rng.random() < p_correct:
            value = traits.correct
        elif rng.random() < self.profile.programmer_crash:
            return "```python\ndef solve():\n    return total_amount  # [simulated executor]\n```"
        else:
            value = self._distractor(rng, traits)
        literal = value if info.item.domain == "math" and last_number(value) is not None else repr(value)
        return f"```python\ndef solve():\n    # [simulated executor]\n    return {literal}\n```"

    def _ensemble(self, rng: random.Random, info: CallInfo, traits: SimTraits) -> str:
        identities = [classify(info.item.domain, traits, c).identity for c in info.candidates]
        # unknown answers are all different from each other
        keys = [ident if ident >= 0 else -1 - index for index, ident in enumerate(identities)]
        if not keys:
            return "<solution_letter>A</solution_letter>"
        if rng.random() < self.profile.ensemble_majority:
            counts = {key: keys.count(key) for key in keys}
            best = max(counts.values())
            choice = next(index for index, key in enumerate(keys) if counts[key] == best)
        else:
            choice = rng.randrange(len(keys))
        letter = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"[choice]
        return f"[simulated executor] The most consistent answer: <solution_letter>{letter}</solution_letter>"

    def _review(self, rng: random.Random, info: CallInfo, traits: SimTraits) -> str:
        current = classify(info.item.domain, traits, info.candidates[0] if info.candidates else "")
        if current.identity == 0:
            flagged = rng.random() < self.profile.review_false_alarm
        else:
            flagged = rng.random() < self.profile.review_detect
        verdict = "incorrect" if flagged else "correct"
        return f"Result: {verdict}\nFeedback: [simulated executor] the solution looks {verdict}."

    def _revise(self, rng: random.Random, info: CallInfo, traits: SimTraits, bonus: float, may_break: bool) -> str:
        current = classify(info.item.domain, traits, info.candidates[0] if info.candidates else "")
        if current.identity == 0:
            if may_break:
                p_break = self.profile.revise_break_easy if traits.difficulty < 0.5 else self.profile.revise_break_hard
                if rng.random() < p_break:
                    return self._distractor(rng, traits)
            return current.text
        if rng.random() < self._p(traits, info.item.domain, bonus + self._arithmetic(traits)):
            return traits.correct
        return current.text


def instruction_style(instruction: str) -> str:
    """The style of a generating call's instruction: decompose (sub-questions), cot (asks for
    reasoning) or plain."""
    if _DECOMPOSE.search(instruction):
        return "decompose"
    return "cot" if _COT.search(instruction) else "plain"


def style_bonus(profile: SimProfile, style: str, domain: str, kind: str) -> float:
    """b_instr: the most specific of 'style@domain:kind', 'style@domain', 'style' in the profile."""
    table = profile.style_bonus
    for key in (f"{style}@{domain}:{kind}", f"{style}@{domain}", style):
        if key in table:
            return table[key]
    return 0.0


# ----------------------------------------------------------------------------------------------
# Candidate identity and reply text


def _normalize(domain: str, text: str) -> str:
    if domain == "math":
        value = last_number(text)
        return repr(round(value, 6)) if value is not None else text.strip().lower()
    if domain == "code":
        return "\n".join(line.rstrip() for line in text.strip("\n").splitlines() if line.strip())
    return " ".join(re.sub(r"[^a-z0-9 ]", " ", text.lower()).split())


def classify(domain: str, traits: SimTraits, candidate: str) -> _Candidate:
    """Which known answer ``candidate`` (already extracted) is: correct, distractor k, or unknown."""
    key = _normalize(domain, candidate)
    if key == _normalize(domain, traits.correct):
        return _Candidate(0, traits.correct)
    for index, distractor in enumerate(traits.distractors, start=1):
        if key == _normalize(domain, distractor):
            return _Candidate(index, distractor)
    return _Candidate(-1, candidate)


def render(domain: str, op: str, answer: str) -> str:
    """A reply that states ``answer`` the way a model would, for the real parsers to read."""
    if op == "AnswerGenerate":
        return f"<thought>[simulated executor] reasoning about the problem.</thought>\n<answer>{answer}</answer>"
    if domain == "math":
        if op == "Format":
            return f"\\boxed{{{answer}}}"
        return f"[simulated executor] Working through the problem step by step.\nThe answer is \\boxed{{{answer}}}."
    if domain == "code":
        return f"[simulated executor] Here is the function.\n```python\n{answer}\n```"
    return answer if op == "Format" else f"[simulated executor] Answer: {answer}"


def traits_of(item: Item) -> SimTraits:
    """The item's simulator traits; items from loaders without them get hash-derived ones."""
    if item.sim is not None:
        return item.sim
    rng = seeded_rng("fallback-traits", item.id)
    return SimTraits(
        difficulty=rng.uniform(-0.5, 2.5),
        computational=rng.random() < 0.5,
        correct=item.answer,
        distractors=tuple(f"{item.answer} (wrong variant {k})" for k in range(1, 4)),
    )
