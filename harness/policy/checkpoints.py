"""LoRA adapters per iteration: saved atomically, reloaded only onto the base they were trained on."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

META = "spogw_adapter.json"


class AdapterMismatch(ValueError):
    """An adapter folder trained on another base model (or not an adapter folder at all)."""


def save_adapter(model: Any, directory: Path, base_identity: str, **meta: Any) -> Path:
    """Save the trainable adapter to ``directory`` (write to a temporary folder, then rename)."""
    directory = Path(directory)
    staging = directory.with_name(f".{directory.name}.saving-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(str(staging), selected_adapters=["default"])
    (staging / META).write_text(json.dumps({"base": base_identity, **meta}, indent=2))
    for path in staging.rglob("*"):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
    shutil.rmtree(directory, ignore_errors=True)
    os.replace(staging, directory)
    return directory


def check_adapter_base(directory: Path, base_identity: str) -> dict[str, Any]:
    """The adapter's metadata; AdapterMismatch if it belongs to another base model."""
    meta_path = Path(directory) / META
    if not meta_path.is_file():
        raise AdapterMismatch(f"{directory}: not a saved spogw adapter (no {META})")
    meta = json.loads(meta_path.read_text())
    if meta.get("base") != base_identity:
        raise AdapterMismatch(
            f"{directory}: adapter was trained on base model {meta.get('base')!r}, not {base_identity!r}"
        )
    return meta  # type: ignore[no-any-return]


def load_adapter_weights(model: Any, directory: Path, base_identity: str) -> None:
    """Replace the trainable adapter's weights with those saved in ``directory`` (resume)."""
    from peft import set_peft_model_state_dict
    from peft.utils import load_peft_weights

    check_adapter_base(directory, base_identity)
    weights = load_peft_weights(str(directory))
    set_peft_model_state_dict(model, weights, adapter_name="default")
