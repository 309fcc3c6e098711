"""docs/experiments.md, generated from the pydantic schema: every field with its type, default and meaning.

`spogw schema --out docs/experiments.md` writes it; a test fails when the file is stale, so the
reference can never drift from the code. Meanings are the attribute docstrings of the models.
"""

from __future__ import annotations

import importlib
import types
import typing
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

HEADER = """# Experiment-file reference

Generated from the schema by `spogw schema --out docs/experiments.md`; do not edit by hand (a test
fails when this file is stale). An experiment file is YAML; `include:` (one level) merges another
file under it, and `--set dotted.field=value` overrides a field from the command line. Unknown
fields are errors that name the file, the field and the value; so is a key written twice in one
mapping (plain YAML would keep the last one). A YAML alias (`*anchor`) is a copy: `--set` on one
method's aliased overrides changes that method only. `spogw check` also validates every static
workflow file a method names, and a run refuses trained methods without training questions.

Validate a file with `spogw check FILE`, see what it would run with `spogw run FILE --dry-run`.
"""


def type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Literal:
        return " \\| ".join(repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " \\| ".join(type_name(a) for a in args)
    if origin is typing.Annotated:
        return type_name(args[0])
    if origin in (list, tuple, set):
        return f"list[{', '.join(type_name(a) for a in args)}]"
    if origin is dict:
        return f"mapping[{', '.join(type_name(a) for a in args)}]"
    if annotation is type(None):
        return "null"
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation)


def _constraints(field: FieldInfo) -> str:
    bounds = []
    for item in field.metadata:
        for name, symbol in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"), ("min_length", "min length")):
            value = getattr(item, name, None)
            if value is not None:
                bounds.append(f"{symbol} {value}")
        pattern = getattr(item, "pattern", None)
        if pattern:
            bounds.append(f"pattern `{pattern}`")
    return f" ({', '.join(bounds)})" if bounds else ""


def _default(field: FieldInfo) -> str:
    if field.default is PydanticUndefined and field.default_factory is None:
        return "required"
    value = field.get_default(call_default_factory=True)
    if isinstance(value, BaseModel):
        return "(see below)"
    if isinstance(value, list) and value and isinstance(value[0], BaseModel):
        return "(see below)"
    return f"`{value!r}`" if value is not None else "`None`"


def _nested_models(annotation: Any) -> list[type[BaseModel]]:
    found: list[type[BaseModel]] = []
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    for arg in typing.get_args(annotation):
        found += _nested_models(arg)
    return found


def _describe(model: type[BaseModel], name: str) -> str:
    """The field's docstring; a method file that only changes a default inherits its family's."""
    for klass in model.__mro__:
        fields = getattr(klass, "model_fields", {})
        if name in fields and fields[name].description:
            return " ".join(fields[name].description.split())
    return ""


def model_table(model: type[BaseModel], prefix: str = "") -> tuple[list[str], list[tuple[str, type[BaseModel]]]]:
    """Rows of one model's table, and the nested models to document after it."""
    rows = ["| field | type | default | meaning |", "|---|---|---|---|"]
    nested: list[tuple[str, type[BaseModel]]] = []
    for name, field in model.model_fields.items():
        dotted = f"{prefix}{name}"
        kind = f"{type_name(field.annotation)}{_constraints(field)}"
        if callable(field.json_schema_extra):  # a registered name (methods/config.py `registered`)
            listed: dict[str, Any] = {}
            field.json_schema_extra(listed)
            kind = " \\| ".join(repr(name) for name in listed.get("enum", [])) + " (registered)"
        rows.append(f"| `{dotted}` | {kind} | {_default(field)} | {_describe(model, name)} |")
        for sub in _nested_models(field.annotation):
            is_list = typing.get_origin(field.annotation) is list
            nested.append((f"{dotted}[i]." if is_list else f"{dotted}.", sub))
    return rows, nested


def _method_configs() -> list[tuple[str, str, type[BaseModel]]]:
    from spogw.harness.catalog import registries

    out = []
    for entry in registries()["methods"]:
        module_name, _, attr = entry.metadata["config"].partition(":")
        out.append((entry.name, entry.description, getattr(importlib.import_module(module_name), attr)))
    return out


def render() -> str:
    from spogw.harness.config import ExperimentConfig

    lines = [HEADER, "## Top level", ""]
    rows, queue = model_table(ExperimentConfig)
    lines += [*rows, ""]
    seen: set[str] = set()
    while queue:
        prefix, model = queue.pop(0)
        if prefix in seen:
            continue
        seen.add(prefix)
        rows, nested = model_table(model, prefix)
        lines += [f"## `{prefix.rstrip('.')}` ({model.__name__})", "", *rows, ""]
        queue += nested
    lines += [
        "## Method overrides",
        "",
        "`methods[i].overrides` sets fields of the method's config; each method's defaults are below.",
        "An ablation is an override (e.g. SPOGW without sharpening: `{name: spogw, label: no_sharpen,",
        "overrides: {sharpen_t: 0}}`), never a change of the training loop.",
        "",
    ]
    for name, description, config in _method_configs():
        rows, _ = model_table(config)
        lines += [f"### `{name}`: {description}", "", *rows, ""]
    return "\n".join(lines).rstrip() + "\n"
