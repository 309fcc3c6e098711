from __future__ import annotations

import pytest

from spogw.harness.catalog import registries
from spogw.harness.registry import Registry, RegistryError


def test_decorator_and_direct_registration() -> None:
    reg: Registry[object] = Registry("widget")

    @reg.register("alpha")
    def alpha() -> str:
        """The first widget."""
        return "a"

    reg.register("beta", object(), description="second")
    assert reg.get("alpha") is alpha
    assert reg.entry("alpha").description == "The first widget."
    assert reg.names() == ["alpha", "beta"]


def test_duplicate_name_rejected() -> None:
    reg: Registry[int] = Registry("widget")
    reg.register("alpha", 1)
    with pytest.raises(RegistryError, match="already registered"):
        reg.register("alpha", 2)


def test_miss_suggests_close_names() -> None:
    reg: Registry[int] = Registry("method")
    reg.register("grpo_online", 1)
    reg.register("grpo_offline", 2)
    with pytest.raises(RegistryError) as err:
        reg.get("grpo_onlin")
    assert "did you mean 'grpo_online'" in str(err.value)


def test_lazy_entry_imports_on_load() -> None:
    reg: Registry[object] = Registry("thing")
    reg.register("dumps", "json:dumps")
    import json

    assert reg.get("dumps") is json.dumps


def test_project_registries_hold_the_required_names() -> None:
    regs = registries()
    assert {"spogw", "grpo_online", "grpo_offline", "grpo_kl", "dpo", "score_dpo", "static"} <= set(
        regs["methods"].names()
    )
    assert {"humaneval", "gsm_synth"} <= set(regs["benchmarks"].names())
    assert "sim" in regs["executors"]
    assert {"io", "cot", "cot_sc", "scoreflow_math", "scoreflow_code", "scoreflow_qa"} <= set(regs["workflows"].names())
    for entry in regs["workflows"]:
        assert entry.load().is_file(), entry.name
