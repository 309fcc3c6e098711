from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from spogw.harness.cli import main
from spogw.harness.config import ConfigError, apply_overrides, load_experiment, load_raw

BASE = """
version: 1
name: demo
benchmarks:
  - name: gsm_synth
    size: 50
methods:
  - name: static
    label: cot_sc
    overrides: {workflow: cot_sc}
seeds: [0, 1]
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_loads_a_valid_file(tmp_path: Path) -> None:
    config = load_experiment(write(tmp_path, "e.yaml", BASE))
    assert config.name == "demo"
    assert config.benchmarks[0].size == 50
    assert config.methods[0].display_label == "cot_sc"
    assert config.executor.name == "sim" and config.executor.profile == "medium"


def test_unknown_key_names_file_path_and_value(tmp_path: Path) -> None:
    path = write(tmp_path, "e.yaml", BASE + "evaluation:\n  repeets: 3\n")
    with pytest.raises(ConfigError) as err:
        load_experiment(path)
    message = str(err.value)
    assert str(path) in message and "evaluation.repeets" in message and "3" in message
    assert "unknown field" in message


def test_bad_value_names_field_and_value(tmp_path: Path) -> None:
    path = write(tmp_path, "e.yaml", BASE.replace("size: 50", "size: -4"))
    with pytest.raises(ConfigError) as err:
        load_experiment(path)
    assert "benchmarks.0.size = -4" in str(err.value)


def test_unknown_method_suggests(tmp_path: Path) -> None:
    path = write(tmp_path, "e.yaml", BASE.replace("name: static", "name: statc"))
    with pytest.raises(ConfigError, match="did you mean 'static'"):
        load_experiment(path)


def test_unsupported_version(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unsupported version 7"):
        load_experiment(write(tmp_path, "e.yaml", BASE.replace("version: 1", "version: 7")))


def test_include_one_level_with_override(tmp_path: Path) -> None:
    write(tmp_path, "base.yaml", BASE)
    child = write(tmp_path, "child.yaml", "include: base.yaml\nname: child\nseeds: [5]\n")
    config = load_experiment(child)
    assert config.name == "child" and config.seeds == [5] and config.benchmarks[0].name == "gsm_synth"


def test_include_of_include_is_refused(tmp_path: Path) -> None:
    write(tmp_path, "base.yaml", BASE)
    write(tmp_path, "mid.yaml", "include: base.yaml\n")
    top = write(tmp_path, "top.yaml", "include: mid.yaml\n")
    with pytest.raises(ConfigError, match="only one level of include"):
        load_experiment(top)


def test_set_overrides_nested_and_list_fields(tmp_path: Path) -> None:
    path = write(tmp_path, "e.yaml", BASE)
    config = load_experiment(path, ["executor.profile=strong", "benchmarks.0.size=20", "seeds=[3, 4, 5]"])
    assert config.executor.profile == "strong"
    assert config.benchmarks[0].size == 20
    assert config.seeds == [3, 4, 5]


def test_set_rejects_malformed_override() -> None:
    with pytest.raises(ConfigError, match=r"expected dotted\.key=value"):
        apply_overrides({}, ["nokey"])


def test_duplicate_labels_rejected(tmp_path: Path) -> None:
    text = BASE + "  - name: static\n    label: cot_sc\n"
    text = text.replace("seeds: [0, 1]\n", "") + "seeds: [0]\n"
    with pytest.raises(ConfigError, match="labels must be unique"):
        load_experiment(write(tmp_path, "e.yaml", text))


def test_static_override_validated(tmp_path: Path) -> None:
    path = write(tmp_path, "e.yaml", BASE.replace("{workflow: cot_sc}", "{workflow: nope, extra: 1}"))
    with pytest.raises(ConfigError) as err:
        load_experiment(path)
    assert "methods.0" in str(err.value)


def test_cli_check_exit_code_2_and_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "e.yaml", BASE + "iterations: -1\n")
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(["check", str(path)]) == 2
    err = capsys.readouterr().err
    assert "iterations = -1" in err and str(path) in err
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_cli_check_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(tmp_path / "absent.yaml")]) == 2
    assert "file not found" in capsys.readouterr().err


def test_every_shipped_experiment_file_validates() -> None:
    from spogw.harness.catalog import experiment_files

    files = experiment_files()
    assert files, "experiments/ ships at least one experiment file"
    for path in files:
        if "base" in (yaml.safe_load(path.read_text()) or {}):  # a sweep over a base experiment
            from spogw.harness.sweeps.config import load_sweep

            load_sweep(path)
        else:
            load_experiment(path)


def test_method_overrides_are_validated_by_the_method_config(tmp_path: Path) -> None:
    text = BASE.replace(
        "  - name: static\n    label: cot_sc\n    overrides: {workflow: cot_sc}\n",
        "  - name: spogw\n    overrides: {group_size: 20, num_samples: 16}\n",
    )
    with pytest.raises(ConfigError, match="group_size n=20 is larger than num_samples m=16"):
        load_experiment(write(tmp_path, "e.yaml", text))
    ok = text.replace("group_size: 20", "kl: standard")
    assert load_experiment(write(tmp_path, "ok.yaml", ok)).methods[0].overrides == {"kl": "standard", "num_samples": 16}


def test_every_method_config_keeps_its_familys_field_constraints() -> None:
    """A method file that redeclares a field with a bare type would silently drop its bound
    (e.g. beta >= 0); every registered config must carry the family's constraints."""
    import importlib

    from spogw.harness.catalog import registries
    from spogw.methods.config import GRPOConfig, MethodConfig, PairConfig

    methods = registries()["methods"]
    checked = 0
    for entry in methods:
        module_name, _, attr = entry.metadata["config"].partition(":")
        config_cls = getattr(importlib.import_module(module_name), attr)
        family = next((base for base in (GRPOConfig, PairConfig) if issubclass(config_cls, base)), None)
        if family is None:
            assert not issubclass(config_cls, MethodConfig), entry.name
            continue
        for name, field in family.model_fields.items():
            assert config_cls.model_fields[name].metadata == field.metadata, f"{entry.name}.{name}"
            assert config_cls.model_fields[name].annotation == field.annotation, f"{entry.name}.{name}"
        for bad in ({"beta": -0.1}, {"num_samples": 1}):
            with pytest.raises(ValueError):
                config_cls.model_validate(bad)
        checked += 1
    assert checked == len(methods.names()) - 2  # every method but static and aflow (a search) trains


def test_experiment_reference_doc_is_current_and_complete(repo) -> None:  # type: ignore[no-untyped-def]
    """docs/experiments.md is generated from the schema; regenerate with `spogw schema --out docs/experiments.md`."""
    from spogw.harness.schema_doc import render

    text = render()
    assert (repo / "docs" / "experiments.md").read_text() == text, "stale: run spogw schema --out docs/experiments.md"
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    assert len(rows) > 60
    assert not [row for row in rows if row.rstrip().endswith("|  |")], "every field needs a docstring (its meaning)"


# ----------------------------------------------------------------------------------------------
# Silent wrong experiments (issue: a researcher's day)


def test_set_on_one_method_never_changes_an_aliased_other(repo, capsys) -> None:  # type: ignore[no-untyped-def]
    """all_methods.yaml gives spogw and grpo_kl one overrides mapping through a YAML alias; --set (and
    harness.run's keywords) on methods.0 must change methods.0 only, and an invalid value must be
    reported on methods.0 only."""
    from spogw.harness.cli import main

    path = repo / "experiments" / "all_methods.yaml"
    config = load_experiment(path, ["methods.0.overrides.group_size=7"])
    assert config.methods[0].overrides["group_size"] == 7 and config.methods[2].overrides["group_size"] == 6
    assert main(["check", str(path), "--set", "methods.0.overrides.group_size=20"]) == 2
    err = capsys.readouterr().err
    assert "methods.0" in err and "methods.2" not in err
    included = apply_overrides(load_raw(path), ["methods.0.overrides.epochs=2"])
    assert included["methods"][2]["overrides"]["epochs"] == 4


def test_a_key_written_twice_is_an_error_naming_it_and_its_lines(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "twice.yaml"
    path.write_text(
        "version: 1\nname: x\nbenchmarks: [{name: gsm_synth}]\nmethods: [{name: spogw}]\n"
        "iterations: 1\nseeds: [0]\niterations: 3\n"
    )
    with pytest.raises(ConfigError, match=r"twice\.yaml: not valid YAML: line 7: duplicate key 'iterations' \(first"):
        load_experiment(path)
    merged = tmp_path / "merged.yaml"  # a merge key may still be overridden by an explicit key
    merged.write_text(
        "version: 1\nname: x\nbenchmarks: [{name: gsm_synth}]\n"
        "base: &b {name: spogw, label: a}\nmethods: [{<<: *b, label: b}]\n"
    )
    assert load_raw(merged)["methods"] == [{"name": "spogw", "label": "b"}]
