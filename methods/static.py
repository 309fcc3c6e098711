"""static: evaluation only. A fixed workflow (IO, CoT, CoT-SC, ScoreFlow-style, or any file) is
run on the benchmark with the executor; there is nothing to train."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, field_validator

from spogw.harness.errors import InputError
from spogw.methods.config import Method


class StaticConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    workflow: str = "cot_sc"
    """A registered static workflow (`spogw list workflows`) or a path to a workflow file."""

    @field_validator("workflow")
    @classmethod
    def _exists(cls, value: str) -> str:
        return known_workflow(value)


def known_workflow(value: str) -> str:
    """``value`` if it names a registered static workflow or a file; else ValueError (did you mean)."""
    from spogw.harness.catalog import registries

    workflows = registries()["workflows"]
    if value not in workflows and not Path(value).is_file():
        raise ValueError(f"{workflows.unknown_message(value)}; or give the path of a workflow file")
    return value


def workflow_source(name_or_path: str) -> tuple[str, str]:
    """(display name, source code) of a registered static workflow or a workflow file."""
    from spogw.harness.catalog import registries

    workflows = registries()["workflows"]
    if name_or_path in workflows:
        path = Path(workflows.get(name_or_path))
        return name_or_path, path.read_text(encoding="utf-8")
    path = Path(name_or_path)
    if not path.is_file():
        raise FileNotFoundError(f"{workflows.unknown_message(name_or_path)}; and no file {name_or_path!r}")
    try:
        return path.stem, path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise InputError(f"workflow file {name_or_path!r} is not UTF-8 text (byte {err.start}: {err.reason})") from None


METHOD = Method(StaticConfig, "evaluation only: a fixed workflow (IO, CoT, CoT-SC, ScoreFlow-style, or a file)")
