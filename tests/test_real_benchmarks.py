"""Loaders of the real benchmarks (upstream JSONL and `datasets` layouts, from fixture files written
here) and their scorers on hand-made cases, tricky ones included."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from spogw.harness.benchmarks import load_benchmark
from spogw.harness.benchmarks.scoring import drop_f1, drop_score, hotpotqa_f1, math_equivalent, normalize_answer
from spogw.harness.workflows.sandbox import Sandbox
from tests.conftest import run

DATA = Path(__file__).parent / "data" / "benchmarks"


def write_jsonl(path: Path, rows: list[dict]) -> Path:  # type: ignore[type-arg]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def score(benchmark_name: str, path: Path, index: int, answer: str) -> float:
    benchmark = load_benchmark(benchmark_name, path=str(path))
    return run(benchmark.score(benchmark.items[index], answer, Sandbox()))


# ----------------------------------------------------------------------------------------------
# Scorers on hand-made cases


@pytest.mark.parametrize(
    ("answer", "reference", "expected"),
    [
        ("0.5", "\\boxed{\\frac{1}{2}}", True),
        ("The answer is $\\boxed{\\dfrac12}$.", "\\boxed{\\frac{1}{2}}", True),
        ("\\boxed{1,000}", "\\boxed{1000}", True),
        ("1000", "\\boxed{1,000}", True),
        ("\\boxed{2\\sqrt{2}}", "\\boxed{\\sqrt{8}}", True),
        ("\\boxed{(1,2)}", "\\boxed{(1, 2)}", True),
        ("\\boxed{0.25}", "\\boxed{\\frac{1}{2}}", False),
        ("\\boxed{3}", "\\boxed{-3}", False),
        ("I do not know", "\\boxed{3}", False),
    ],
)
def test_math_equivalence(answer: str, reference: str, expected: bool) -> None:
    assert math_equivalent(answer, reference) is expected


def test_qa_f1_hand_values() -> None:
    """Hand values of HotpotQA's official F1 (token multisets, yes/no rule) and DROP's (token sets,
    numbers compared as numbers, rounded to 2 decimals)."""
    assert normalize_answer("The  Eiffel Tower!") == "eiffel tower"
    assert hotpotqa_f1("The Eiffel Tower!", "eiffel tower") == 1.0  # articles and punctuation do not count
    # 'paris france' vs 'paris': precision 1/2, recall 1 -> F1 2/3
    assert hotpotqa_f1("Paris, France", "Paris") == pytest.approx(2 / 3)
    assert hotpotqa_f1("London", "Paris") == 0.0
    assert hotpotqa_f1("", "") == 0.0 and hotpotqa_f1("a", "Paris") == 0.0  # no common token: 0, as the script
    # repeated tokens count once per occurrence: 'yes yes' vs 'yes' -> P 1/2, R 1 (neither side is exactly 'yes')
    assert hotpotqa_f1("yes yes", "yes") == 0.0  # one side is 'yes' and they differ
    assert hotpotqa_f1("no", "no way") == 0.0 and hotpotqa_f1("yes", "Yes.") == 1.0
    assert hotpotqa_f1("new york city", "new york") == pytest.approx(0.8)
    assert hotpotqa_f1("35", "3.5") == 1.0  # SQuAD normalisation drops the point: the script agrees
    assert drop_score("24 points", ["24", "24 points"]) == 1.0
    assert drop_score("24", ["twenty-four", "24 points"]) == 0.67  # 2/3 rounded as drop_eval.py rounds
    assert drop_score("yes yes", ["yes"]) == 1.0  # token sets: a repeat does not count twice


def test_gsm8k_reads_the_final_number_and_scores_the_last_number() -> None:
    benchmark = load_benchmark("gsm8k", path=str(DATA / "gsm8k.jsonl"))
    assert [i.answer for i in benchmark.items] == ["72", "24000"]
    assert benchmark.items[0].id == "gsm8k-1" and benchmark.items[0].domain == "math"
    assert score("gsm8k", DATA / "gsm8k.jsonl", 0, "so she sold 72 clips") == 1.0
    assert score("gsm8k", DATA / "gsm8k.jsonl", 1, "The total is $24,000.") == 1.0  # 24,000 is 24000
    assert score("gsm8k", DATA / "gsm8k.jsonl", 1, "24,000 dollars, i.e. 2 years") == 0.0  # the last number counts
    assert score("gsm8k", DATA / "gsm8k.jsonl", 0, "no idea") == 0.0


def test_math_loader_takes_the_boxed_answer_and_scores_equivalence() -> None:
    benchmark = load_benchmark("math", path=str(DATA / "math.jsonl"))
    assert [i.answer for i in benchmark.items] == ["\\frac{1}{2}", "3", "2\\sqrt{2}"]
    assert benchmark.items[0].meta["level"] == "Level 1"
    assert score("math", DATA / "math.jsonl", 0, "The sum is 0.5") == 1.0
    assert score("math", DATA / "math.jsonl", 2, "$\\boxed{\\sqrt{8}}$") == 1.0
    assert score("math", DATA / "math.jsonl", 1, "\\boxed{-3}") == 0.0


def test_mbpp_runs_both_check_styles_in_the_sandbox() -> None:
    benchmark = load_benchmark("mbpp", path=str(DATA / "mbpp.jsonl"))
    assert [i.entry_point for i in benchmark.items] == ["similar_elements", "is_not_prime"]
    for index, item in enumerate(benchmark.items):
        assert score("mbpp", DATA / "mbpp.jsonl", index, f"```python\n{item.answer}\n```") == 1.0
    # a solution that prints the right thing but returns the wrong one fails
    printing = "def is_not_prime(n):\n    print(n > 3)\n    return None\n"
    assert score("mbpp", DATA / "mbpp.jsonl", 1, printing) == 0.0
    # a solution that never defines the function fails instead of crashing the scorer
    assert score("mbpp", DATA / "mbpp.jsonl", 0, "print('hello')") == 0.0


def test_hotpotqa_puts_the_passages_in_the_question_and_scores_f1() -> None:
    benchmark = load_benchmark("hotpotqa", path=str(DATA / "hotpotqa.jsonl"))
    item = benchmark.items[1]
    assert item.id == "5a8c7595554299585d9e36b6" and item.domain == "qa"
    assert "Shirley Temple: Shirley Temple served as Chief of Protocol" in item.question
    question = "What government position was held by the woman who portrayed Corliss Archer?"
    assert item.question.endswith(f"Question: {question}")
    assert score("hotpotqa", DATA / "hotpotqa.jsonl", 1, "Answer: the Chief of Protocol.") == 1.0
    # 'protocol chief' vs 'chief of protocol': precision 1, recall 2/3 -> F1 0.8
    assert score("hotpotqa", DATA / "hotpotqa.jsonl", 1, "<answer>Protocol chief</answer>") == pytest.approx(0.8)
    assert score("hotpotqa", DATA / "hotpotqa.jsonl", 0, "Answer: no") == 0.0


def test_drop_takes_the_best_reference() -> None:
    benchmark = load_benchmark("drop", path=str(DATA / "drop.jsonl"))
    assert benchmark.items[0].answer == "24|24 points"
    assert score("drop", DATA / "drop.jsonl", 0, "Answer: 24") == 1.0
    assert score("drop", DATA / "drop.jsonl", 1, "Answer: Duke of Savoy") == 1.0
    assert score("drop", DATA / "drop.jsonl", 1, "Answer: King of France") == drop_f1(
        "King of France", "Duke of Savoy and the King of France"
    )


# ----------------------------------------------------------------------------------------------
# The `datasets` path, with local folders in the hub layouts (never downloaded here)


def test_hub_layouts_load_through_datasets(tmp_path: Path) -> None:
    gsm = write_jsonl(tmp_path / "gsm" / "test.jsonl", [{"question": "1+1?", "answer": "2\n#### 2"}])
    mbpp = write_jsonl(
        tmp_path / "mbpp" / "test.jsonl",
        [
            {
                "task_id": 11,
                "text": "Write a python function to add two numbers.",
                "code": "def add(a, b):\n    return a + b",
                "test_list": ["assert add(1, 2) == 3", "assert add(0, 0) == 0"],
                "test_setup_code": "",
                "challenge_test_list": [],
            }
        ],
    )
    hotpot = write_jsonl(
        tmp_path / "hotpot" / "validation.jsonl",
        [
            {
                "id": "h1",
                "question": "Which city?",
                "answer": "Paris",
                "context": {"title": ["France"], "sentences": [["The capital is Paris.", " It is big."]]},
            }
        ],
    )
    drop = write_jsonl(
        tmp_path / "drop" / "validation.jsonl",
        [
            {
                "query_id": "q1",
                "passage": "Bob scored 3 goals.",
                "question": "How many goals?",
                "answers_spans": {"spans": ["3", "three"], "types": ["number", "number"]},
            }
        ],
    )
    assert load_benchmark("gsm8k", hub=str(gsm.parent)).items[0].answer == "2"
    item = load_benchmark("mbpp", hub=str(mbpp.parent)).items[0]
    assert item.entry_point == "add" and "assert add(1, 2) == 3" in item.question
    assert run(load_benchmark("mbpp", hub=str(mbpp.parent)).score(item, item.answer, Sandbox())) == 1.0
    qa = load_benchmark("hotpotqa", hub=str(hotpot.parent)).items[0]
    assert "France: The capital is Paris. It is big." in qa.question
    drop_item = load_benchmark("drop", hub=str(drop.parent)).items[0]
    assert drop_item.answer == "3|three" and drop_item.id == "q1" and "How many goals?" in drop_item.question


def test_bad_rows_name_the_file_row_and_field(tmp_path: Path) -> None:
    bad = write_jsonl(tmp_path / "math.jsonl", [{"problem": "x?", "solution": "\\boxed{1}"}, {"problem": "y?"}])
    with pytest.raises(ValueError, match=r"math.jsonl: row 2: field 'solution' must be str \(missing\)"):
        load_benchmark("math", path=str(bad))
    broken = tmp_path / "gsm.jsonl"
    broken.write_text('{"question": "q", "answer": "#### 1"}\n{not json\n')
    with pytest.raises(ValueError, match=r"gsm.jsonl:2: not valid JSON"):
        load_benchmark("gsm8k", path=str(broken))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_benchmark("drop", path=str(tmp_path / "missing.jsonl"))
    with pytest.raises(ValueError, match="ships no data"):
        load_benchmark("hotpotqa")
    with pytest.raises(ValueError, match="could not be loaded"):
        load_benchmark("gsm8k", hub=str(tmp_path / "no-such-dataset"))
    with pytest.raises(ValueError, match="gsm_synth is generated"):
        load_benchmark("gsm_synth", hub="openai/gsm8k")
