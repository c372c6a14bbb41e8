"""The one registry class: refusal of silent overwrite, temporary registration, entry points."""

from __future__ import annotations

import pytest

from securetrain.errors import ConfigurationError, UnknownNameError
from securetrain.registry import Registry


def test_temporarily_restores_the_previous_entry_even_when_the_block_raises():
    reg: Registry[int] = Registry("number")
    reg.add("one", 1)
    with pytest.raises(RuntimeError, match="inside"):
        with reg.temporarily("one", 11, overwrite=True):
            assert reg.get("one") == 11
            raise RuntimeError("inside")
    assert reg.get("one") == 1
    with reg.temporarily("two", 2):
        assert reg.names() == ["one", "two"]
    assert reg.names() == ["one"]
    with pytest.raises(ConfigurationError, match="number 'one' is already registered; pass overwrite=True"):
        with reg.temporarily("one", 3):
            pass
    assert reg.get("one") == 1


def test_remove_returns_the_entry_and_refuses_unknown_names():
    reg: Registry[str] = Registry("colour")
    reg.add("red", "#f00")
    assert reg.remove("red") == "#f00"
    with pytest.raises(UnknownNameError, match="unknown colour 'red'; choose one of: "):
        reg.remove("red")


def test_entry_points_are_read_lazily_and_explicit_entries_win():
    reg: Registry[object] = Registry("defense", entry_point_group="securetrain.defenses")
    reg.add("privacy", "mine")
    assert reg.get("privacy") == "mine"  # found without reading entry points
    assert "adversarial" in reg  # a miss reads the group once
    assert reg.get("privacy") == "mine"  # the explicit entry was not replaced
    assert reg.get("adversarial").__name__ == "AdversarialTraining"
