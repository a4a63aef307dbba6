"""The test-only fault switch (`hookunlearn.faults`): parsed once, a no-op when unset."""

from __future__ import annotations

import pytest

from hookunlearn import faults


def test_points_and_counts_are_parsed() -> None:
    assert faults._parse("") == {}
    assert faults._parse("checkpoint, rename:3") == {"checkpoint": 1, "rename": 3}
    with pytest.raises(ValueError, match="unknown point 'chekpoint'"):
        faults._parse("chekpoint")


def test_unset_points_do_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(faults, "_WANTED", {})
    for point in faults.POINTS:
        faults.reached(point)  # returns: nothing is armed


def test_an_armed_point_exits_at_its_nth_arrival(monkeypatch: pytest.MonkeyPatch) -> None:
    exits: list[int] = []
    monkeypatch.setattr(faults, "_WANTED", {"export": 2})
    monkeypatch.setattr(faults.os, "_exit", exits.append)
    faults.reached("export")
    assert exits == []
    faults.reached("export")
    assert exits == [faults.FAULT_EXIT_CODE]
