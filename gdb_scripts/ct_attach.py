"""GDB-side helper of `calltrace attach` (stdlib + gdb module only): every
thread's frames, written as JSON for the controller (calltrace/attach/).

  python import ct_attach; ct_attach.frames("/tmp/.../frames.json", 20000)

One object per thread: {"tid", "name", "pcs": [innermost first], "fn0":
name of the innermost frame's function or null, "cut": true when the walk
stopped at the limit}. A frame's pc is GDB's: the return address for the
callers, where the thread stands for the innermost one."""
import json

import gdb


def _walk(limit):
    pcs = []
    frame = gdb.newest_frame()
    fn0 = frame.name()
    while frame is not None and len(pcs) < limit:
        pcs.append(frame.pc())
        try:
            frame = frame.older()
        except gdb.error:
            break
    return pcs, fn0, frame is not None


def frames(path, limit=20000):
    out = []
    selected = gdb.selected_thread()
    for th in gdb.selected_inferior().threads():
        th.switch()
        try:
            pcs, fn0, cut = _walk(limit)
        except gdb.error:
            pcs, fn0, cut = [], None, True
        out.append({"tid": th.ptid[1], "num": th.num, "name": th.name or "", "pcs": pcs, "fn0": fn0,
                    "cut": cut})
    if selected is not None and selected.is_valid():
        selected.switch()
    with open(path, "w") as f:
        json.dump(out, f)


# -- calling a function in the program ----------------------------------------
# GDB's own `call` saves and restores the vector registers too, which some
# kernels refuse (PTRACE_SETREGSET NT_X86_XSTATE: "Couldn't write extended
# state status"). These calls run in a thread blocked in a system call, where
# no vector register is live (all are caller-saved in the SysV ABI), and save
# and restore the general registers only, orig_rax included so an
# interrupted system call restarts as it would have.
REGS = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp", "r8", "r9", "r10", "r11", "r12",
        "r13", "r14", "r15", "eflags", "orig_rax", "rip")
_saved = None


def _reg(name):
    return int(gdb.parse_and_eval(f"${name}")) & 0xFFFFFFFFFFFFFFFF


def prepare(fn, ret, *args):
    """Set the selected thread up to call fn(*args) and return to `ret`;
    a str argument is copied below the thread's stack pointer (past the red
    zone) and passed by address."""
    global _saved
    gdb.newest_frame().select()   # registers are writable in the innermost frame only
    _saved = {r: _reg(r) for r in REGS}
    mem = gdb.selected_inferior()
    scratch = (_saved["rsp"] - 256 - 4096) & ~0xF
    values = []
    for a in args:
        if isinstance(a, str):
            data = a.encode() + b"\0"
            mem.write_memory(scratch, data)
            values.append(scratch)
            scratch += (len(data) + 15) & ~0xF
        else:
            values.append(int(a))
    sp = ((_saved["rsp"] - 256 - 8192) & ~0xF) - 8
    mem.write_memory(sp, ret.to_bytes(8, "little"))
    for reg, value in zip(("rdi", "rsi", "rdx", "rcx"), values):
        gdb.execute(f"set ${reg} = {value}")
    gdb.execute(f"set $rsp = {sp}")
    gdb.execute(f"set $rip = {fn}")
    gdb.execute("set $orig_rax = -1")   # else the kernel restarts the system call at rip - 2


def finish(path):
    """Back to where the thread was; the call's result goes to `path`."""
    global _saved
    gdb.newest_frame().select()
    rax = _reg("rax")
    for r in REGS:
        if r not in ("rip", "orig_rax", "eflags"):
            gdb.execute(f"set ${r} = {_saved[r]}")
    gdb.execute(f"set $eflags = {_saved['eflags']}")
    gdb.execute(f"set $rip = {_saved['rip']}")
    orig = _saved["orig_rax"]
    gdb.execute(f"set $orig_rax = {orig - (1 << 64) if orig >> 63 else orig}")
    _saved = None
    with open(path, "w") as f:
        f.write(str(rax))
