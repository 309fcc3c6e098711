"""Named parameter sets of the simulated executor (docs/simulator.md explains each field).

Profiles differ in overall skill (weak < medium < strong) and in which operators help:
`coder` writes programs well but reviews badly; `verifier` reviews and revises well but its
programs often crash. They exist so executor-transfer experiments (open question 1) have a
non-trivial answer: the best workflow structure under one profile is not the best under another.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace


@dataclass(frozen=True)
class SimProfile:
    name: str
    skill: dict[str, float]
    """Per-domain skill s_D; a generation call is correct w.p. sigmoid(s_D + b_op + b_instr - d)."""
    op_bonus: dict[str, float]
    """b_op per generating operator and domain, keyed 'Operator' or 'Operator@domain'."""
    style_bonus: dict[str, float]
    """b_instr of a generating call by its instruction style (plain | cot | decompose), keyed
    'style@domain:kind', 'style@domain' or 'style' (the most specific key present wins). The kind
    keys are the question-conditional mechanisms of docs/simulator.md ('Headroom by design')."""
    text_arithmetic: float
    """Added to every text-reasoning call (not Programmer) on a computational item: language models
    slip on large-number arithmetic that a program does exactly (PAL, arXiv 2211.10435)."""
    programmer_computational: float
    """b_op of Programmer on computational items."""
    programmer_other: float
    """b_op of Programmer on other items (usually negative: programs for non-computational items fail)."""
    programmer_crash: float
    """P(a wrong program raises instead of printing a wrong answer); the operator retries on a crash."""
    ensemble_majority: float
    """P(ScEnsemble picks the plurality answer); otherwise it picks a solution at random."""
    review_detect: float
    """P(Review flags a wrong answer)."""
    review_false_alarm: float
    """P(Review flags a correct answer)."""
    revise_fix: float
    """Bonus of a revision of a wrong answer: fixed w.p. sigmoid(s_D + revise_fix - d)."""
    revise_break_easy: float
    """P(Revise breaks a correct answer) on easy items (d < 0.5)."""
    revise_break_hard: float
    """P(Revise breaks a correct answer) on other items."""
    test_fix: float
    """Bonus of Test's repair call: fixed w.p. sigmoid(s_D + test_fix - d)."""
    format_error: float
    """P(Format returns a wrong answer)."""
    distractor_decay: float
    """Distractor k is drawn w.p. proportional to decay**k: large values spread errors, small ones correlate them."""
    logit_scale: float = 1.0
    """Sharpness k of every success probability sigmoid(k * (...)): larger k makes items either mostly
    solved or mostly failed across repeats, as real executors are."""
    completion_tokens: dict[str, int] = field(default_factory=dict)
    """Mean completion length per operator (tokens), for cost accounting."""


_TOKENS = {
    "Custom": 220,
    "AnswerGenerate": 180,
    "CustomCodeGenerate": 260,
    "ScEnsemble": 40,
    "Programmer": 200,
    "Programmer.retry": 200,
    "Review": 120,
    "Revise": 220,
    "Test.fix": 260,
    "Format": 20,
}

MEDIUM = SimProfile(
    name="medium",
    skill={"math": -0.5, "code": -0.9, "qa": -0.5},
    op_bonus={
        "Custom": 0.0,
        "AnswerGenerate": 0.6,  # its prompt always asks for step-by-step reasoning
        "CustomCodeGenerate@code": 0.4,
        "Custom@code": -0.4,
        "AnswerGenerate@code": -1.5,
    },
    style_bonus={
        "cot": 1.3,
        # code: reasoning first pays on long specifications and misleads on short ones (UnCert-CoT)
        "plain@code:short_spec": 0.8,
        "cot@code:short_spec": -0.5,
        "cot@code:long_spec": 1.6,
        # qa: answering by sub-questions closes the compositionality gap on bridge questions and
        # adds a hop that can go wrong on a single lookup (self-ask)
        "decompose@qa:bridge": 1.9,
        "decompose@qa:single_hop": 0.15,
        "cot@qa:bridge": 0.3,
    },
    text_arithmetic=-1.15,
    programmer_computational=0.9,
    programmer_other=0.3,
    programmer_crash=0.4,
    ensemble_majority=0.9,
    review_detect=0.55,
    review_false_alarm=0.15,
    revise_fix=0.0,
    revise_break_easy=0.45,
    revise_break_hard=0.08,
    test_fix=0.5,
    format_error=0.08,
    distractor_decay=0.45,
    logit_scale=2.5,
    completion_tokens=_TOKENS,
)

PROFILES: dict[str, SimProfile] = {
    "medium": MEDIUM,
    "weak": replace(
        MEDIUM,
        name="weak",
        skill={"math": -1.5, "code": -1.9, "qa": -1.5},
        ensemble_majority=0.8,
        review_detect=0.4,
        review_false_alarm=0.25,
        format_error=0.05,
    ),
    "strong": replace(
        MEDIUM,
        name="strong",
        skill={"math": 0.6, "code": 0.2, "qa": 0.6},
        ensemble_majority=0.95,
        review_detect=0.7,
        review_false_alarm=0.08,
        revise_break_easy=0.15,
    ),
    "coder": replace(
        MEDIUM,
        name="coder",
        skill={"math": -0.9, "code": -0.4, "qa": -0.9},
        programmer_computational=1.7,
        programmer_other=0.8,
        programmer_crash=0.15,
        review_detect=0.3,
        review_false_alarm=0.35,
        revise_break_easy=0.45,
        test_fix=0.9,
    ),
    "verifier": replace(
        MEDIUM,
        name="verifier",
        skill={"math": -0.6, "code": -1.3, "qa": -0.3},
        programmer_computational=-0.4,
        programmer_other=-0.5,
        programmer_crash=0.7,
        review_detect=0.85,
        review_false_alarm=0.05,
        revise_fix=1.0,
        revise_break_easy=0.05,
        revise_break_hard=0.02,
        test_fix=-0.5,
    ),
}
