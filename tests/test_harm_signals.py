"""Issue 9.6: the program's signal dispositions are its own. The toggle
signal is installed only when asked for (CALLTRACE_TOGGLE_SIGNAL /
--toggle-signal, or starting off), so by default SIGUSR1 is the program's:
signal() returns SIG_DFL, its handlers run, and with none it dies of it."""
from __future__ import annotations

import pytest

from conftest import fixture
from harm import bare, bare_as_native, calls, native, run, same_as_native, trace


@pytest.mark.parametrize("how", ["bare", "run"])
def test_program_sees_default_disposition_and_its_handler_runs(tmp_path, how):
    argv = [fixture("sigown"), "query"]
    ref = native(argv, tmp_path)
    assert ref.stdout == b"previous default\nhandled 2\n" and ref.returncode == 0
    proc = (bare if how == "bare" else run)(argv, tmp_path)
    same_as_native(proc, ref)
    doc = trace(tmp_path / "t.json")
    assert calls(doc) == [(0, "main"), (1, "on_usr1"), (1, "on_usr1")]
    assert "toggle_signal" not in doc["metadata"]["options"]


@pytest.mark.parametrize("how", ["bare", "run"])
def test_raise_without_handler_kills_like_native(tmp_path, how):
    argv = [fixture("sigown"), "die"]
    ref = native(argv, tmp_path)
    assert ref.returncode == -10 and ref.stdout == b"raising\n"
    proc = (bare if how == "bare" else run)(argv, tmp_path)
    same_as_native(proc, ref)
    assert proc.returncode == (-10 if how == "bare" else 138)
    doc = trace(tmp_path / "t.json")
    m = doc["metadata"]
    assert (m["termination"], m["signal"], m["exit_status"]) == ("signal", 10, 138)
    assert [(c["function"], c.get("incomplete", False)) for c in doc["threads"][0]["calls"]] == [("main", True)]


def test_forwarding_handler_does_not_turn_recording_off(tmp_path):
    argv = [fixture("sigown"), "forward"]
    doc = bare_as_native(argv, tmp_path, b"forwarded 3 previous default\nsum 15\n")
    assert calls(doc) == [(0, "main")] + [(1, "chain")] * 3 + [(1, "work")] * 5
    assert doc["metadata"]["incomplete_calls"] == 0


def test_toggle_only_when_asked(tmp_path):
    """Asked for, the toggle works as before (fixtures/toggle raises it)."""
    proc = bare([fixture("toggle")], tmp_path, env={"CALLTRACE_TOGGLE_SIGNAL": "USR1"})
    assert proc.returncode == 0 and proc.stdout == b"toggled\n"
    doc = trace(tmp_path / "t.json")
    assert calls(doc) == [(0, "main"), (1, "before"), (1, "after"), (1, "stop_inside"), (1, "after")]
    assert doc["metadata"]["options"]["toggle_signal"] == 10
