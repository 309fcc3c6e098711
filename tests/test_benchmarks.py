from __future__ import annotations

from pathlib import Path

import pytest

from spogw.harness.benchmarks import load_benchmark
from spogw.harness.benchmarks.data import Source
from spogw.harness.benchmarks.gsm_synth import TEMPLATES, generate
from spogw.harness.benchmarks.humaneval import load_humaneval
from spogw.harness.benchmarks.programs import graded_program, score_tests
from spogw.harness.benchmarks.scoring import score_last_number
from spogw.harness.workflows.sandbox import Sandbox
from tests.conftest import run


def test_gsm_synth_is_deterministic_and_varied() -> None:
    first, second = generate(60, seed=0), generate(60, seed=0)
    assert first == second
    assert generate(60, seed=1) != first
    assert len({item.meta["template"] for item in first}) == len(TEMPLATES)
    for item in first:
        assert item.answer.lstrip("-").isdigit()
        assert item.sim is not None and item.answer not in item.sim.distractors
        assert str(item.answer) == item.sim.correct


def test_gsm_synth_answers_are_right_for_a_known_template() -> None:
    item = next(i for i in generate(24) if i.meta["template"] == "change")
    numbers = [int(n) for n in __import__("re").findall(r"\d+", item.question)]
    price, count, bill = numbers[0], numbers[1], numbers[2]
    assert int(item.answer) == bill - price * count


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("The answer is \\boxed{1,000}.", 1.0),
        ("1000.0", 1.0),
        ("999", 0.0),
        ("no number", 0.0),
        ("first 1000 then 12", 0.0),
    ],
)
def test_numeric_scorer(answer: str, expected: float) -> None:
    item = generate(1)[0]
    item = type(item)(**{**item.__dict__, "answer": "1000"})
    assert run(score_last_number(item, answer, Sandbox())) == expected


def test_split_is_deterministic_disjoint_and_covering() -> None:
    bench = load_benchmark("gsm_synth", size=100)
    test, train = bench.split("test", 0.8, seed=3), bench.split("train", 0.8, seed=3)
    assert len(test) == 80 and len(train) == 20
    assert {i.id for i in test}.isdisjoint({i.id for i in train})
    assert {i.id for i in test} | {i.id for i in train} == {i.id for i in bench.items}
    assert [i.id for i in bench.split("test", 0.8, seed=3)] == [i.id for i in test]
    assert [i.id for i in bench.split("test", 0.8, seed=4)] != [i.id for i in test]


def test_humaneval_bundled_has_164_items() -> None:
    bench = load_humaneval()
    assert len(bench.items) == 164
    assert all(item.entry_point and item.test for item in bench.items)


def test_humaneval_jsonl_broken_line_is_named(tmp_path: Path) -> None:
    path = tmp_path / "he.jsonl"
    path.write_text('{"task_id": "x", "prompt": "", "entry_point": "f", "canonical_solution": "", "test": ""}\n{oops\n')
    with pytest.raises(ValueError, match=r"he.jsonl:2: not valid JSON"):
        load_humaneval(Source(path=str(path)))


def test_humaneval_missing_field_is_named(tmp_path: Path) -> None:
    path = tmp_path / "he.jsonl"
    path.write_text('{"task_id": "x", "prompt": "def f():\\n"}\n')
    with pytest.raises(ValueError, match=r"he.jsonl:1: missing or non-string field"):
        load_humaneval(Source(path=str(path)))


def test_humaneval_scorer_body_only_and_full_and_wrong() -> None:
    item = load_humaneval().items[0]
    sandbox = Sandbox()
    assert run(score_tests(item, item.answer, sandbox)) == 1.0  # body only: prompt prepended
    full = f"```python\n{item.question}{item.answer}```"
    assert run(score_tests(item, full, sandbox)) == 1.0
    prints_but_fails = item.question + "    print('True')\n    return None\n"
    assert run(score_tests(item, prints_but_fails, sandbox)) == 0.0
    assert "check(has_close_elements)" in graded_program(item, item.answer)


@pytest.mark.slow
def test_humaneval_canonical_solutions_pass_164_of_164() -> None:
    import asyncio

    bench = load_humaneval()

    async def all_scores() -> list[float]:
        sandbox = Sandbox(max_parallel=4)
        return await asyncio.gather(*(score_tests(i, i.answer, sandbox) for i in bench.items))

    scores = run(all_scores())
    failing = [item.id for item, score in zip(bench.items, scores, strict=True) if score != 1.0]
    assert not failing, failing


@pytest.mark.parametrize(("name", "domain", "size"), [("gsm_synth", "math", 250), ("qa_synth", "qa", 240)])
def test_a_generated_benchmark_has_its_default_size_and_refuses_a_file_or_a_dataset(
    name: str, domain: str, size: int
) -> None:
    from spogw.harness.errors import InputError

    benchmark = load_benchmark(name)
    assert (benchmark.name, benchmark.domain, len(benchmark.items)) == (name, domain, size)
    assert len(load_benchmark(name, size=12).items) == 12
    for source in ({"path": "data.jsonl"}, {"hub": "openai/gsm8k"}):
        with pytest.raises(InputError, match=f"{name} is generated; it reads no file or dataset"):
            load_benchmark(name, **source)
