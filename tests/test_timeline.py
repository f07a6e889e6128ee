"""The module map over time (symbols/timeline.py) on synthetic scans, and
the resolver's note where a raw stream has no scans."""
from __future__ import annotations

import pytest

from calltrace.symbols import Module, Resolver
from calltrace.symbols.timeline import Stay, cuts, module_at, stays

EXE = Module(0, 0x1000, 0x2000, "/bin/prog")
A = Module(0x7000, 0x7100, 0x7200, "/lib/a.so")
B = Module(0x7000, 0x7100, 0x7180, "/lib/b.so")
C = Module(0x9000, 0x9100, 0x9200, "/lib/c.so")


def test_stays_and_cuts_of_a_reused_address():
    scans = [(10, [EXE]), (20, [EXE, A]), (30, [EXE, A]), (40, [EXE]), (50, [EXE, B]), (60, [EXE, B, C])]
    s = stays(scans)
    assert s == [Stay(EXE, None), Stay(A, 40), Stay(B, None), Stay(C, None)]
    assert cuts(s) == [(0x7100, 0x7200, 40)]


@pytest.mark.parametrize("addr, era, want", [
    (0x7150, 0, A), (0x7150, 1, B), (0x7150, 2, None),
    (0x71f0, 0, A),                     # beyond B's end: only A was ever there
    (0x1500, 0, EXE), (0x9150, 0, C), (0x5000, 0, None)])
def test_module_at(addr, era, want):
    s = stays([(10, [EXE, A]), (40, [EXE]), (50, [EXE, B, C])])
    assert module_at(s, addr, era) == want


def test_same_library_back_in_place_is_one_era():
    s = stays([(10, [EXE, A]), (20, [EXE]), (30, [EXE, A])])
    assert [x.module for x in s] == [EXE, A, A]
    assert cuts(s) == []
    assert module_at(s, 0x7150, 0) == A


def test_a_b_then_a_again_three_eras():
    s = stays([(10, [A]), (20, []), (30, [B]), (40, []), (50, [A])])
    assert cuts(s) == [(0x7100, 0x7200, 20), (0x7100, 0x7180, 40)]
    assert [module_at(s, 0x7150, e) for e in range(4)] == [A, B, A, None]


def test_no_reuse_no_cuts():
    assert cuts(stays([(10, [EXE, A]), (20, [EXE, A, C]), (30, [EXE, C])])) == []


def test_without_scans_overlap_is_noted():
    assert Resolver([EXE, A, B]).notes == [
        "a.so and b.so were loaded at overlapping addresses one after the other (dlclose, then dlopen): "
        "calls in 0x7100-0x7180 are all named after one of them, so some may carry the other's names"]
    assert Resolver([EXE, A, B], stays([(1, [EXE, A]), (2, [EXE]), (3, [EXE, B])])).notes == []
