"""Property-based fuzzing of generated workflow code (hypothesis).

Sources are drawn from the allowed grammar (operator calls, literals, arithmetic, f-strings,
comprehensions, if/for/while/try) and then mutated toward what is forbidden: hostile statements
spliced in at random places (imports, dunder walks, format-string attribute access, generator
frames, tracebacks, huge integers and strings, recursion, file and process access, endless loops),
lines dropped, sources cut short, names swapped for forbidden ones. For every source:

- the validator either accepts it or raises WorkflowInvalid with a reason, and nothing else;
- an accepted source runs to a status, with a reason when it is not ok, within its timeout;
- no file outside the sandbox changes (every hostile write aims at a canary path);
- memory stays bounded: the test process's and the workers' peak RSS.

The hand-written escape attempts, each with its expected status and reason, are
tests/hostile_workflows/ (tests/test_hostile_workflows.py).
"""

from __future__ import annotations

import asyncio
import resource
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spogw.harness.benchmarks.gsm_synth import generate
from spogw.harness.executors.sim import SimExecutor
from spogw.harness.workflows.engine import RunStatus, WorkflowEngine
from spogw.harness.workflows.pool import PoolLimits
from spogw.harness.workflows.validate import FORBIDDEN_NAMES, SAFE_METHODS, WorkflowInvalid, validate_workflow

TIMEOUT_S = 5.0
VARIABLES = ("x", "y", "s", "items")
OUTSIDE = Path("/tmp/spogw-fuzz-canary")
"""Where every hostile write aims: it must never exist (it is outside any sandbox)."""

# ------------------------------------------------------------------------------------------
# The allowed grammar


def _literal() -> st.SearchStrategy[str]:
    text = st.text(alphabet="abc xyz0123456789.,!?", max_size=12).map(repr)
    return st.one_of(st.integers(-(10**6), 10**6).map(str), text, st.sampled_from(["True", "False", "None", "1.5"]))


def _expression() -> st.SearchStrategy[str]:
    leaves = st.one_of(_literal(), st.sampled_from([*VARIABLES, "self.problem"]))

    def extend(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
        binary = st.tuples(inner, st.sampled_from(["+", "-", "*", "//", "%", "**", "<", "==", "and", "or"]), inner)
        method = st.tuples(inner, st.sampled_from(sorted(SAFE_METHODS - {"clear", "pop", "remove", "insert"})))
        return st.one_of(
            binary.map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
            inner.map(lambda e: f"len({e})"),
            inner.map(lambda e: f"str({e})"),
            st.tuples(inner, inner).map(lambda t: f"[{t[0]}, {t[1]}]"),
            st.tuples(inner, inner).map(lambda t: f"{{'k': {t[0]}, 'v': {t[1]}}}"),
            st.tuples(inner, inner, inner).map(lambda t: f"({t[0]} if {t[1]} else {t[2]})"),
            inner.map(lambda e: f"[v for v in str({e})]"),
            st.tuples(inner, inner).map(lambda t: f"({t[0]})[{t[1]}]"),
            method.map(lambda t: f"({t[0]}).{t[1]}()"),
            st.sampled_from(VARIABLES).map(lambda name: f'f"{{{name}}} and {{len(str({name}))}}"'),
            inner.map(lambda e: f'(await self.custom(input=str({e}), instruction="Solve it."))["response"]'),
            inner.map(
                lambda e: f'(await self.sc_ensemble(solutions=[str({e}), "1"], problem=self.problem))["response"]'
            ),
        )

    return st.recursive(leaves, extend, max_leaves=8)


EXPRESSION = _expression()  # built once: hypothesis strategies are values


def _block(depth: int) -> st.SearchStrategy[list[str]]:
    simple = st.one_of(
        st.tuples(st.sampled_from(VARIABLES), EXPRESSION).map(lambda t: [f"{t[0]} = {t[1]}"]),
        EXPRESSION.map(lambda e: [f"s = s + str({e})"]),
        EXPRESSION.map(lambda e: [f"items.append({e})"]),
        EXPRESSION.map(lambda e: [f"return str({e})"]),
    )
    if depth == 0:
        return st.lists(simple, min_size=1, max_size=3).map(lambda blocks: [line for b in blocks for line in b])
    inner = _block(depth - 1)

    def indent(lines: list[str]) -> list[str]:
        return ["    " + line for line in lines]

    compound = st.one_of(
        st.tuples(EXPRESSION, inner, inner).map(lambda t: [f"if {t[0]}:", *indent(t[1]), "else:", *indent(t[2])]),
        st.tuples(st.integers(0, 50), inner).map(lambda t: [f"for v in range({t[0]}):", *indent(t[1])]),
        st.tuples(EXPRESSION, inner).map(lambda t: [f"while {t[0]}:", *indent(t[1]), "    break"]),
        inner.map(lambda b: ["try:", *indent(b), "except Exception:", "    s = s + 'failed'"]),
    )
    return st.lists(st.one_of(simple, compound), min_size=1, max_size=4).map(
        lambda blocks: [line for b in blocks for line in b]
    )


def _source(body: list[str]) -> str:
    lines = [
        "class Workflow:",
        "    def __init__(self, llm, problem):",
        "        self.problem = problem",
        "        self.custom = operator.Custom(llm)",
        "        self.sc_ensemble = operator.ScEnsemble(llm)",
        "",
        "    async def run_workflow(self):",
        "        x, y, s, items = 1, 2, '', []",
        *("        " + line for line in body),
        "        return s",
    ]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------
# Mutations toward the forbidden

HOSTILE = (
    "import os",
    "from os import system",
    f"open({str(OUTSIDE)!r}, 'w').write('pwned')",
    f"__import__('os').system('touch {OUTSIDE}')",
    "x = ().__class__.__base__.__subclasses__()",
    "x = '{0.__class__.__init__.__globals__}'.format(self)",
    "x = self.__dict__",
    "x = type(self).__mro__",
    "x = getattr(self, 'problem')",
    "g = (i for i in [1])\nx = g.gi_frame.f_back.f_globals",
    "try:\n    1 / 0\nexcept Exception as e:\n    x = e.__traceback__.tb_frame.f_globals",
    "x = 10 ** 10 ** 10",
    "x = 'a' * 10 ** 10",
    "x = [[0] * 10 ** 6 for _ in range(10 ** 4)]",
    "x = 1 << 10 ** 9",
    "while True:\n    x = x + 1",
    "while x > 0:\n    x = x + 1",
    "for v in range(10 ** 12):\n    x = x + 1",
    "def f(n):\n    return f(n + 1)\nx = f(0)",
    "f = lambda: 0",
    "exec('x = 1')",
    "x = eval('1 + 1')",
    "x = globals()['__builtins__']",
    "x = __builtins__",
    "x = self._private",
    "x = operator.__dict__",
    "x = llm.client",
    "x = b'bytes'",
    "x = '%s %s' % (self, self)",
    "x = f'{self!r:>{10 ** 9}}'",
    "x = f'{x:>1000000000}'",
    "import asyncio\nawait asyncio.sleep(10 ** 9)",
    "with open('/etc/passwd') as h:\n    x = h.read()",
    "class Other:\n    pass",
    "del x",
    "global x",
    "yield x",
    "x = [i async for i in self]",
    "raise SystemExit(0)",
    "x = breakpoint()",
    "x = compile('1', 'f', 'eval')",
    "x = (lambda: 0).__code__.co_consts",
    "x = self.custom.__self__",
    "x = print.__self__",
    "x = str.mro()",
    "x = s.format_map({})",
    "x = {}.__class__.__subclasses__",
    "x = [].__reduce_ex__(2)",
    "async def g():\n    pass",
)


@st.composite
def hostile_sources(draw: st.DrawFn) -> str:
    """An allowed source, mutated: hostile statements spliced in, or lines dropped, or cut short."""
    body = draw(_block(2))
    kind = draw(st.sampled_from(["splice", "splice", "splice", "drop", "truncate", "rename"]))
    if kind == "splice":
        for _ in range(draw(st.integers(1, 3))):
            snippet = draw(st.sampled_from(HOSTILE)).splitlines()
            at = draw(st.integers(0, len(body)))
            indent = body[at - 1][: len(body[at - 1]) - len(body[at - 1].lstrip())] if at and body else ""
            if body and at and body[at - 1].rstrip().endswith(":"):
                indent += "    "
            body[at:at] = [indent + line for line in snippet]
        return _source(body)
    source = _source(body)
    if kind == "drop":
        lines = source.splitlines()
        del lines[draw(st.integers(0, len(lines) - 1))]
        return "\n".join(lines)
    if kind == "truncate":
        return source[: draw(st.integers(0, len(source)))]
    name = draw(st.sampled_from(sorted(FORBIDDEN_NAMES)))
    return source.replace(draw(st.sampled_from(["str(", "len(", "range("])), f"{name}(", 1)


# ------------------------------------------------------------------------------------------
# The properties


@pytest.fixture(autouse=True)
def outside_canary() -> Iterator[None]:
    OUTSIDE.unlink(missing_ok=True)
    yield
    assert not OUTSIDE.exists(), "a workflow wrote outside the sandbox"


def _validated_or_reason(source: str) -> str | None:
    try:
        validate_workflow(source)
    except WorkflowInvalid as err:
        assert str(err).strip(), "a rejection always says why"
        return str(err)
    return None


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(source=_block(2).map(_source))
def test_the_allowed_grammar_validates(source: str) -> None:
    assert _validated_or_reason(source) is None, source


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(source=hostile_sources())
def test_the_validator_accepts_or_names_a_reason_and_never_crashes(source: str) -> None:
    _validated_or_reason(source)  # any exception other than WorkflowInvalid fails the test


class _EngineThread:
    """One WorkflowEngine on its own event loop in a thread, shared by the examples (a worker pool
    per example would make the fuzzer measure process start-up)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.engine = self.call(self._make())
        self.item = generate(1)[0]

    async def _make(self) -> WorkflowEngine:
        return WorkflowEngine(
            SimExecutor("medium"),
            concurrency=2,
            timeout_s=TIMEOUT_S,
            max_calls=8,
            pool_limits=PoolLimits(max_steps=20_000),
        )

    def call(self, coroutine):  # type: ignore[no-untyped-def]
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=120)

    def close(self) -> None:
        self.call(self.engine.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)


@pytest.fixture(scope="module")
def engine_thread() -> Iterator[_EngineThread]:
    runner = _EngineThread()
    yield runner
    runner.close()
    if RUNS:  # the figures docs/reliability.md quotes (pytest -s shows them)
        counts = {status: sum(s == status for s, _ in RUNS) for status in sorted({s for s, _ in RUNS})}
        print(f"\nfuzz: {len(RUNS)} runs, statuses {counts}, slowest {max(w for _, w in RUNS):.2f} s")


RUNS: list[tuple[str, float]] = []


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(source=st.one_of(hostile_sources(), _block(2).map(_source)))
def test_every_workflow_ends_with_a_status_in_bounded_time_and_memory(
    source: str, engine_thread: _EngineThread, tmp_path: Path
) -> None:
    canary = tmp_path / "canary.txt"
    canary.write_text("untouched")
    start = time.perf_counter()
    outcome = engine_thread.call(engine_thread.engine.run(source, engine_thread.item, repeat=0))
    wall_s = time.perf_counter() - start
    RUNS.append((outcome.status.value, wall_s))
    assert outcome.status in set(RunStatus)
    assert outcome.status is RunStatus.OK or outcome.reason.strip(), f"{outcome.status} without a reason"
    assert wall_s < TIMEOUT_S + 5, f"took {wall_s:.1f} s:\n{source}"
    assert canary.read_text() == "untouched"
    limit = PoolLimits().worker.memory_bytes
    for worker in engine_thread.engine.pool._idle:  # the live workers; a killed one died at its limit
        peak = _tree_peak_rss(worker.process.pid)
        assert peak <= limit, f"a worker peaked at {peak / 2**20:.0f} MiB, over its {limit / 2**20:.0f} MiB limit"
    mine = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    assert mine < 4 * 2**30, f"the test process peaked at {mine / 2**30:.1f} GiB"


def _tree_peak_rss(pid: int) -> int:
    """Peak resident memory (VmHWM) of the largest process in ``pid``'s tree, in bytes."""
    peak = 0
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                peak = int(line.split()[1]) * 1024
        children = [
            int(child)
            for task in Path(f"/proc/{pid}/task").iterdir()
            for child in (task / "children").read_text().split()
        ]
    except (FileNotFoundError, ProcessLookupError):
        return peak
    return max([peak, *(_tree_peak_rss(child) for child in children)])
