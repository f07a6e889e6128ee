"""The one bridge: the binary layouts Python shares with the runtime
(calltrace/bridge.py) agree with the C declarations, field by field; a
change on one side alone fails here."""
from __future__ import annotations

import ctypes
import struct
import subprocess

from calltrace import bridge
from calltrace.symbols.plan import CapturePlan, FunctionPlan, ParamPlan, ProgramPlan
from conftest import ROOT


def compile_asserts(tmp_path, asserts: str) -> subprocess.CompletedProcess:
    src = tmp_path / "layout.c"
    src.write_text('#include <stddef.h>\n#include "capture.c"\n#include "conv.h"\n' + asserts)
    return subprocess.run(["gcc", "-fsyntax-only", "-std=gnu11", "-I", str(ROOT / "runtime"), str(src)],
                          capture_output=True, timeout=120)


def test_c_agrees_with_python(tmp_path):
    asserts = bridge.static_asserts()
    assert asserts.count("_Static_assert") > 150
    proc = compile_asserts(tmp_path, asserts)
    assert proc.returncode == 0, proc.stderr.decode()


def test_a_disagreement_fails_to_build(tmp_path):
    """The check has teeth: a Python field of the wrong size is caught."""
    class Header(ctypes.Structure):
        _fields_ = [(n, t if n != "lost_calls" else ctypes.c_uint32) for n, t in bridge.Header._fields_]
    saved = dict(bridge.STRUCTS)
    try:
        bridge.STRUCTS.clear()
        bridge.STRUCTS[Header] = ("struct ct_header", "ct.h")
        proc = compile_asserts(tmp_path, bridge.static_asserts())
    finally:
        bridge.STRUCTS.clear()
        bridge.STRUCTS.update(saved)
    assert proc.returncode != 0 and b"struct ct_header.lost_calls size" in proc.stderr


def test_plan_file_is_the_bridge_layout():
    """symbols/plan.py writes records of the sizes capture.c maps."""
    f = FunctionPlan(origin=7, ret_vaddr=0x1234, cfa_base=0xfd, cfa_off=16,
                     params=[ParamPlan("x", ctypes_int())])
    from calltrace.symbols.locations import Op
    f.params[0].ops = [Op(1, 3, 4, 0)]
    data = ProgramPlan([CapturePlan("/bin/prog", {f.ret_vaddr: f}, {0x1000})]).serialize()
    magic, version, nfuncs, nops, nmods = bridge.PLAN_HEAD.unpack_from(data)
    assert (magic, version, nfuncs, nops, nmods) == (bridge.PLAN_MAGIC, 2, 1, 1, 1)
    rec = bridge.PlanFunc.from_buffer_copy(data, bridge.PLAN_HEAD.size)
    assert (rec.origin, rec.ret_vaddr, rec.cfa_off, rec.cfa_base, rec.nops, rec.first_op) == (7, 0x1234, 16, 0xfd, 1, 0)
    op = bridge.PlanOp.from_buffer_copy(data, bridge.PLAN_HEAD.size + ctypes.sizeof(bridge.PlanFunc))
    assert (op.kind, op.base, op.size, op.off) == (1, 3, 4, 0)
    at = bridge.PLAN_HEAD.size + ctypes.sizeof(bridge.PlanFunc) + ctypes.sizeof(bridge.PlanOp)
    assert data[at:] == struct.pack("<I", 9) + b"/bin/prog"
    assert b'"%s"' % bridge.PLAN_MAGIC in (ROOT / "runtime" / "capture.c").read_bytes()


def ctypes_int():
    from calltrace.symbols.ctypes_dwarf import CType
    return CType("base", "int", 4)


def test_filter_file_layout(tmp_path):
    path = tmp_path / "f"
    bridge.write_filter(str(path), bridge.FILTER_SUBTREE | bridge.FILTER_EXCLUDE,
                        [("/p", [0x10, 0x20], [0x30]), ("/lib.so", [], [0x40])])
    data = path.read_bytes()
    assert data == (b"CTFILT03" + struct.pack("<II", 5, 2) + struct.pack("<I", 2) + b"/p"
                    + struct.pack("<II", 2, 1) + struct.pack("<3Q", 0x10, 0x20, 0x30)
                    + struct.pack("<I", 7) + b"/lib.so" + struct.pack("<II", 0, 1) + struct.pack("<Q", 0x40))
    assert b'"CTFILT03"' in (ROOT / "runtime" / "filter.c").read_bytes()
