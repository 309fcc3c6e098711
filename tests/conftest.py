"""Shared fixtures. Tests never touch the network or a model hub."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
T = TypeVar("T")


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coroutine)


@pytest.fixture
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def spogw_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private cache: generators are built from scratch in the test run."""
    path = tmp_path_factory.mktemp("spogw-cache")
    os.environ["SPOGW_CACHE"] = str(path)
    return path


@pytest.fixture(scope="session")
def small_generator(spogw_cache: Path):  # type: ignore[no-untyped-def]
    """The tiny build machinery on the small test recipe (fast; not a learning model), with LoRA."""
    import torch
    from transformers import AutoModelForCausalLM

    from harness.config import GeneratorConfig
    from harness.policy import tiny
    from harness.policy.model import Generator, attach_lora

    directory = tiny.build(tiny.TEST_RECIPE, progress=False)
    base = AutoModelForCausalLM.from_pretrained(directory)
    torch.manual_seed(0)
    model = attach_lora(base, GeneratorConfig())
    identity = f"tiny-{tiny.recipe_hash(tiny.TEST_RECIPE)}"
    return Generator(model, tiny.load_tokenizer(directory), identity, "compact", tiny.TEST_RECIPE.max_prompt_tokens)
