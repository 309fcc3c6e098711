"""Shared fixtures. Tests never touch the network or a model hub."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # One torch thread per xdist worker (set before torch is imported; the spogw processes tests
    # start inherit it): two workers with a thread per core each would oversubscribe the cores.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("SPOGW_TORCH_THREADS", "1")

REPO = Path(__file__).resolve().parents[1]
T = TypeVar("T")


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coroutine)


@pytest.fixture
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def spogw_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private cache: generators are built from scratch in the test run.

    Under pytest-xdist every worker has its own cache, except for built generators, which all
    workers of one run share (a tiny recipe takes minutes to build; the build is locked, so the
    first worker builds it and the others wait and load it).
    """
    path = tmp_path_factory.mktemp("spogw-cache")
    os.environ["SPOGW_CACHE"] = str(path)
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = tmp_path_factory.getbasetemp().parent / "shared-generators"
        shared.mkdir(exist_ok=True)
        (path / "generators").symlink_to(shared, target_is_directory=True)
    return path


@pytest.fixture(scope="session")
def small_generator(spogw_cache: Path):  # type: ignore[no-untyped-def]
    """The tiny build machinery on the small test recipe (fast; not a learning model), with LoRA."""
    import torch
    from transformers import AutoModelForCausalLM

    from spogw.harness.config import GeneratorConfig
    from spogw.harness.policy import tiny
    from spogw.harness.policy.model import Generator, attach_lora

    directory = tiny.build(tiny.TEST_RECIPE, progress=False)
    base = AutoModelForCausalLM.from_pretrained(directory)
    torch.manual_seed(0)
    model = attach_lora(base, GeneratorConfig())
    identity = f"tiny-{tiny.recipe_hash(tiny.TEST_RECIPE)}"
    return Generator(model, tiny.load_tokenizer(directory), identity, "compact", tiny.TEST_RECIPE.max_prompt_tokens)


@pytest.fixture(scope="session")
def standard_tiny(spogw_cache: Path) -> Path:
    """The CPU default generator (the standard tiny recipe), built once per test run, with torch's
    two threads as it always was (float sums, hence the built weights, depend on the thread count)."""
    import torch

    from spogw.harness.policy import tiny

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        return tiny.build(tiny.TinyRecipe(), progress=False)
    finally:
        torch.set_num_threads(before)


LONGEST_FIRST = (
    "test_learning",  # 820 s (the standard tiny build included)
    "test_cluster",  # 480 s
    "test_runner",  # 339 s
    "test_distributed",  # 333 s
    "test_real_models_e2e",  # 264 s
    "test_reliability",  # 205 s
    "test_sweeps",  # 171 s
    "test_operations",  # 146 s
    "test_sim_fairness",  # 108 s
    "test_grader_agreement",  # 100 s
    "test_executors",  # 95 s
    "test_calibration",  # 86 s
    "test_workflow_fuzz",  # 83 s
    "test_served",  # 77 s
    "test_sim",  # 62 s
)
"""The modules with the most work, most first (per-module sums of ``pytest --durations=0`` from a
clean clone on 2 cores, 2026-12-02; see docs/contributing.md); every other module (under 50 s
each) follows in name order. Under ``-n 2 --dist loadfile`` a worker takes the next module when it
is almost done with its own: longest first leaves small modules for the end, so neither worker
idles long while the other finishes a big one (in the measured run the two ended 43 s apart). The
first, the learning check with the standard tiny build it starts, runs on one worker while the
other does most of the rest."""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Order the modules for ``pytest -n 2 --dist loadfile --no-loadscope-reorder``: each module
    runs whole on one worker (its module-scoped fixtures, a served model or a run folder, start
    once), in the order of `LONGEST_FIRST`. Generator builds are shared and locked (see
    `spogw_cache`)."""

    def rank(item: pytest.Item) -> int:
        module = item.nodeid.split("::")[0].removeprefix("tests/").removesuffix(".py")
        return LONGEST_FIRST.index(module) if module in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: the tests of a module, and the other modules, keep their order


@contextlib.contextmanager
def standin_process(
    recipe: str = "test", served_model: str = "tiny-test", exit_after: int | None = None
) -> Iterator[str]:
    """The vLLM stand-in (harness/policy/standin.py) serving the tiny generator of ``recipe`` as
    ``served_model``, in its own process; yields its base URL. ``exit_after``: it exits after that
    many completions (a server that dies mid-collection)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    args = [sys.executable, "-m", "spogw.harness.policy.standin", "--tiny-recipe", recipe]
    args += ["--served-model", served_model, "--port", str(port)]
    if exit_after is not None:
        args += ["--exit-after-completions", str(exit_after)]
    repo = Path(__file__).resolve().parents[1]
    process = subprocess.Popen(args, cwd=repo, env=dict(os.environ), stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert f"serving {served_model}" in line, line
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        process.kill()
        process.wait(10)
