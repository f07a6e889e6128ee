"""Run-time control: the toggle signal, starting off, record-time filters
(--function/--exclude) and the --threshold that drops short calls."""
from __future__ import annotations

import pytest

from conftest import fixture, load_json, run_cli, shape, validate
from test_preload import preload
from test_run import RECURSION_TREE


def traced(tmp_path, *args, name="t.json"):
    proc = run_cli("run", "-q", "-o", tmp_path / name, *args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr.decode()
    return validate(load_json(tmp_path / name))


def flags(calls):
    return [(c["depth"], c["function"], bool(c.get("incomplete"))) for c in calls]


def test_toggle_signal_keeps_calls_consistent(tmp_path):
    doc = traced(tmp_path, "--toggle-signal", "USR1", fixture("toggle"))
    assert flags(doc["threads"][0]["calls"]) == [
        (0, "main", False), (1, "before", False), (1, "after", False),
        (1, "stop_inside", True), (1, "after", False)]
    assert doc["metadata"]["options"]["toggle_signal"] == 10


def test_start_off(tmp_path):
    doc = traced(tmp_path, "--start-off", fixture("toggle"))
    # main was entered before recording began: the thread's outermost recorded
    # calls are at depth 0.
    assert flags(doc["threads"][0]["calls"]) == [
        (0, "hidden", False), (0, "hidden", False), (0, "start_inside", True)]
    assert doc["metadata"]["options"]["start"] == "off"


def test_toggle_signal_can_be_changed_or_disabled(tmp_path):
    proc = preload(tmp_path, fixture("recursion"), CALLTRACE_OUTPUT="t.json",
                   CALLTRACE_TOGGLE_SIGNAL="USR2")
    assert validate(load_json(tmp_path / "t.json"))["metadata"]["options"]["toggle_signal"] == 12
    proc = preload(tmp_path, fixture("toggle"), CALLTRACE_OUTPUT="n.json", CALLTRACE_TOGGLE_SIGNAL="none")
    assert proc.returncode == -10          # SIGUSR1 is the program's again: it dies of it
    proc = preload(tmp_path, fixture("recursion"), CALLTRACE_OUTPUT="b.json", CALLTRACE_TOGGLE_SIGNAL="KILL")
    assert proc.stderr.startswith(b"calltrace: CALLTRACE_TOGGLE_SIGNAL=KILL is not USR1")


def test_function_filter_keeps_matching_subtrees(tmp_path):
    doc = traced(tmp_path, "--function", "^apply$", fixture("recursion"))
    assert shape(doc["threads"][0]["calls"]) == [(0, "apply"), (1, "square")] * 2
    assert doc["metadata"]["options"]["function"] == "^apply$"


def test_exclude_filter_drops_subtrees(tmp_path):
    doc = traced(tmp_path, "--exclude", "fib|helper", fixture("recursion"))
    assert shape(doc["threads"][0]["calls"]) == [
        (0, "main"), (1, "apply"), (2, "square"), (1, "apply"), (2, "square")]


def test_filters_from_environment(tmp_path):
    preload(tmp_path, fixture("recursion"), CALLTRACE_OUTPUT="t.json", CALLTRACE_FUNCTION="square")
    doc = validate(load_json(tmp_path / "t.json"))
    assert shape(doc["threads"][0]["calls"]) == [(0, "square"), (0, "square")]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.json"]


@pytest.mark.parametrize("variant", ["linked", "linked-O2"])
def test_filters_reach_into_linked_libraries(tmp_path, variant):
    """fixtures/linked.c calls into libshapes.so: its functions are matched too."""
    doc = traced(tmp_path, "--function", "^shape_area$", fixture(variant))
    assert shape(doc["threads"][0]["calls"]) == [(0, "shape_area"), (1, "scaled")]
    doc = traced(tmp_path, "--exclude", "^scaled$", fixture(variant), name="x.json")
    assert shape(doc["threads"][0]["calls"]) == [
        (0, "main"), (1, "measure"), (2, "shape_area"), (1, "shape_label")]


def test_bare_filter_reaches_into_linked_libraries(tmp_path):
    proc = preload(tmp_path, fixture("linked"), CALLTRACE_OUTPUT="t.json", CALLTRACE_FUNCTION="label")
    assert (proc.returncode, proc.stderr) == (0, b"")
    doc = validate(load_json(tmp_path / "t.json"))
    assert shape(doc["threads"][0]["calls"]) == [(0, "shape_label")]


def test_filter_in_an_execd_program(tmp_path):
    """The exec'd image inherits CALLTRACE_FILTER made for its parent: it
    matches the expression against its own functions instead."""
    proc = run_cli("run", "-q", "-o", "t.json", "--function", "^(fib|before)$", fixture("execs"), "to",
                   fixture("recursion"), cwd=tmp_path)
    assert (proc.returncode, proc.stdout) == (0, b"before\nfib=5 sq=25 h=7\n")
    first = validate(load_json(tmp_path / "t.json"))
    assert shape(first["threads"][0]["calls"]) == [(0, "before")]
    second = validate(load_json(tmp_path / f"t.{first['metadata']['pid']}-1.json"))
    calls = shape(second["threads"][0]["calls"])
    assert len(calls) == 15 and calls[:3] == [(0, "fib"), (1, "fib"), (2, "fib")]
    assert {f for _, f in calls} == {"fib"}


def test_filter_matching_nothing_says_so(tmp_path):
    proc = run_cli("run", "-o", "t.json", "--function", "^nothing_here$", fixture("recursion"), cwd=tmp_path)
    assert (proc.returncode, proc.stdout) == (0, b"fib=5 sq=25 h=7\n")
    assert proc.stderr.startswith(b"calltrace: note: no function of " + fixture("recursion").encode() +
                                  b" or its libraries matches --function '^nothing_here$'\n")
    assert validate(load_json(tmp_path / "t.json"))["metadata"]["total_calls"] == 0


def test_bad_regex_is_one_line(tmp_path):
    proc = run_cli("run", "--function", "(", fixture("recursion"), cwd=tmp_path)
    assert proc.returncode == 2 and b"not a valid regular expression" in proc.stderr
    assert b"Traceback" not in proc.stderr


@pytest.mark.parametrize("threshold,kept", [("1s", []), ("1ns", RECURSION_TREE)])
def test_threshold_extremes(tmp_path, threshold, kept):
    doc = traced(tmp_path, "--threshold", threshold, fixture("recursion"))
    assert shape(doc["threads"][0]["calls"]) == kept
    assert doc["metadata"]["filtered_calls"] == 21 - len(kept)


def test_threshold_drops_short_leaves_not_long_parents(tmp_path):
    # down(n) at depth 200: with a threshold between a leaf's duration and
    # the outer calls' durations, the kept calls form an unbroken chain from
    # main; everything dropped is counted.
    doc = traced(tmp_path, "--threshold", "2us", fixture("deep"), "200")
    calls = doc["threads"][0]["calls"]
    assert [c["depth"] for c in calls] == list(range(len(calls)))
    assert all(c["duration_ns"] >= 2000 for c in calls)
    assert len(calls) + doc["metadata"]["filtered_calls"] == 201
    assert doc["metadata"]["options"]["threshold_ns"] == 2000


def test_bad_threshold(tmp_path):
    proc = run_cli("run", "--threshold", "fast", fixture("recursion"), cwd=tmp_path)
    assert proc.returncode == 2 and b"bad duration 'fast'" in proc.stderr
    proc = preload(tmp_path, fixture("recursion"), CALLTRACE_OUTPUT="t.json", CALLTRACE_THRESHOLD="3 parsecs")
    assert proc.stderr == b"calltrace: CALLTRACE_THRESHOLD=3 parsecs is not a duration (a number with ns, us, ms or s, e.g. 10us, 2.5ms); ignoring it\n"
