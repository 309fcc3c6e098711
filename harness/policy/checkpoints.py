"""LoRA adapters per iteration: saved atomically, reloaded only onto the base they were trained on."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from spogw.harness import failpoints
from spogw.harness.atomic import fsync_path
from spogw.harness.errors import InputError

META = "spogw_adapter.json"


class AdapterMismatch(InputError):
    """An adapter folder trained on another base model (or not an adapter folder at all)."""


OPTIMIZER = "optimizer.pt"


def save_adapter(model: Any, directory: Path, base_identity: str, optimizer: Any | None = None, **meta: Any) -> Path:
    """Save the trainable adapter (and the optimizer's state, to resume training) to ``directory``:
    written to a temporary folder, fsynced, then renamed, so a folder that exists is complete."""
    directory = Path(directory)
    staging = directory.with_name(f".{directory.name}.saving-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(str(staging), selected_adapters=["default"])
    if optimizer is not None:
        import torch

        torch.save(optimizer.state_dict(), staging / OPTIMIZER)
    (staging / META).write_text(json.dumps({"base": base_identity, **meta}, indent=2))
    for path in (*staging.rglob("*"), staging):
        fsync_path(path)
    failpoints.hit("checkpoint.staged")
    shutil.rmtree(directory, ignore_errors=True)  # a stale folder of this iteration (rewritten after a resume)
    os.replace(staging, directory)
    fsync_path(directory.parent)
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
    return meta


def load_adapter_weights(model: Any, directory: Path, base_identity: str) -> None:
    """Replace the trainable adapter's weights with those saved in ``directory`` (resume)."""
    from peft import set_peft_model_state_dict
    from peft.utils import load_peft_weights

    check_adapter_base(directory, base_identity)
    weights = load_peft_weights(str(directory))
    set_peft_model_state_dict(model, weights, adapter_name="default")


def load_training_state(model: Any, optimizer: Any, directory: Path, base_identity: str) -> dict[str, Any]:
    """Resume: the adapter's weights and the optimizer's state from ``directory``; returns its metadata."""
    import torch

    load_adapter_weights(model, directory, base_identity)
    state_path = Path(directory) / OPTIMIZER
    if not state_path.is_file():
        raise AdapterMismatch(f"{directory}: no optimizer state ({OPTIMIZER}); it was not saved to resume from")
    optimizer.load_state_dict(torch.load(state_path, map_location="cpu", weights_only=True))
    return check_adapter_base(directory, base_identity)
