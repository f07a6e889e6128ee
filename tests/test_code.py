"""One hook call-site finder (calltrace/symbols/code.py) for the capture plan
and for `calltrace debug`: it takes the call of the entry hook, not the
function's first call (with -pg, mcount is called first)."""
from __future__ import annotations

import subprocess

from elftools.elf.elffile import ELFFile

from calltrace.symbols.code import Code
from calltrace.symbols.elf import elf_symbols, is_instrumented
from calltrace.symbols.plan import capture_plan
from conftest import ROOT, load_json, run_cli


def build_pg(tmp_path):
    exe = tmp_path / "rec_pg"
    subprocess.run(["gcc", "-g", "-O0", "-pg", "-finstrument-functions", "-rdynamic",
                    str(ROOT / "fixtures" / "recursion.c"), "-o", str(exe)], check=True, timeout=120)
    return str(exe)


def test_entry_hook_call_not_first_call(tmp_path):
    exe = build_pg(tmp_path)
    square = next(s for s in elf_symbols(exe).functions() if s.name == "square")
    with open(exe, "rb") as f:
        code = Code(ELFFile(f), elf_symbols(exe).lookup)
        sites = code.hook_calls(square.start, square.start + square.size)
        first_call = next(i for i in code._md.disasm(code._bytes(square.start, square.start + square.size),
                                                     square.start) if i.mnemonic == "call")
        [(_, ret)] = code.entry_hook_calls(square.start, square.start + square.size)
    enter = [s for s in sites if s.kind == "E"]
    assert len(enter) == 1 and [s.kind for s in sites] == ["E", "X"]
    assert first_call.address < enter[0].addr       # mcount comes first
    assert ret in (enter[0].addr + 5, enter[0].addr + 6)    # call rel32 or call [rip+slot]
    assert any(p.ret_vaddr == ret for p in capture_plan(exe).sites.values())
    assert is_instrumented(exe)


def test_capture_args_with_pg(tmp_path):
    exe = build_pg(tmp_path)
    out = tmp_path / "t.json"
    proc = run_cli("run", "-q", "--capture-args", "-o", out, exe, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr.decode()
    squares = [c for c in load_json(out)["threads"][0]["calls"] if c["function"] == "square"]
    assert [c["args"] for c in squares] == [[{"name": "x", "type": "int", "value": v}] for v in (5, 1)]


def test_is_instrumented_agrees_with_pyelftools(tmp_path):
    """The raw .dynsym scan against pyelftools' own symbol walk, on programs
    and libraries with and without the hook (a -rdynamic program exports
    every function; libc is large and defines no hook)."""
    import glob
    from conftest import FIXTURES
    files = sorted(glob.glob(str(FIXTURES / "*"))) + ["/bin/ls", *glob.glob("/lib/x86_64-linux-gnu/libc.so.6")]

    def walk(path):
        with open(path, "rb") as f:
            sec = ELFFile(f).get_section_by_name(".dynsym")
            return sec is not None and any(s.name == "__cyg_profile_func_enter" and s["st_shndx"] == "SHN_UNDEF"
                                           for s in sec.iter_symbols())

    def dynamic(path):
        with open(path, "rb") as f:
            return f.read(4) == b"\x7fELF" and ELFFile(f).get_section_by_name(".dynsym") is not None
    elves = [p for p in files if dynamic(p)]
    got = {p: is_instrumented(p) for p in elves}
    assert got == {p: walk(p) for p in elves}
    assert sum(got.values()) > 10 and not all(got.values())
