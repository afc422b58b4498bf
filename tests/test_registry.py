# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
import pytest

from ultra_hstu_plugin import registry as registry_module
from ultra_hstu_plugin.registry import (
    ENTRY_POINT_GROUP,
    Registry,
    UnknownComponentError,
    discover,
    register_builtin_components,
)


def test_builtin_components_are_discovered_through_the_entry_point():
    reg = discover(reload=True)
    assert "ultra_hstu" in reg.names("encoder")
    assert "movielens-100k" in reg.names("dataset")
    comp = reg.get("encoder", "ultra_hstu")
    assert comp.origin == "ultra-hstu-plugin"
    assert callable(comp.load())
    backend = reg.get("backend", "pytorch")  # what dispatch reads (was "attention_backend")
    assert backend.origin == "ultra-hstu-plugin"
    assert backend.load().name == "pytorch"


def test_unknown_name_lists_the_known_ones():
    reg = discover(reload=True)
    with pytest.raises(UnknownComponentError) as err:
        reg.get("encoder", "ultra_hstuu")
    assert (
        "ultra_hstuu" in str(err.value)
        and "ultra_hstu" in str(err.value)
        and "hstu" in str(err.value)
    )


def test_unknown_kind():
    with pytest.raises(ValueError, match="known kinds"):
        Registry().register("optimizer", "x", "d", "m:x")


def test_second_plugin_composes(monkeypatch):
    class FakeEntryPoint:
        def __init__(self, value, hook):
            self.value = value
            self._hook = hook

        def load(self):
            return self._hook

    def other_plugin(reg):
        reg.register("encoder", "other", "someone else's encoder", "math:sqrt", "other-plugin")

    eps = [
        FakeEntryPoint(
            "ultra_hstu_plugin.registry:register_builtin_components", register_builtin_components
        ),
        FakeEntryPoint("other_plugin:register", other_plugin),
    ]
    monkeypatch.setattr(
        registry_module, "entry_points", lambda group: eps if group == ENTRY_POINT_GROUP else []
    )
    try:
        reg = discover(reload=True)
        assert {"hstu", "ultra_hstu", "other"} <= set(reg.names("encoder"))
        assert reg.get("encoder", "other").origin == "other-plugin"
    finally:
        monkeypatch.undo()
        discover(reload=True)  # later tests see the real installed plugins only
    assert "other" not in discover().names("encoder")


def test_conflicting_registration_is_an_error():
    reg = Registry()
    reg.register("encoder", "x", "d", "a:b", "p1")
    with pytest.raises(ValueError, match="registered twice"):
        reg.register("encoder", "x", "d", "c:d", "p2")
