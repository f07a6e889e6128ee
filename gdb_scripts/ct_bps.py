"""The breakpoints of the GDB-side recorder (ct_gdb.py). Every stop()
returns False: GDB resumes at once, no MI round trip per call."""
import gdb


class _Bp(gdb.Breakpoint):
    def __init__(self, rec, spec):
        super().__init__(spec, internal=True)
        self.silent = True
        self.rec = rec


def reg(name, _eval=gdb.parse_and_eval):
    # parse_and_eval("$rdi") costs ~4 us after a resume; building the frame
    # object to call read_register costs ~30 us (its frame id): per stop, that
    # is most of what a recorder adds to GDB's own breakpoint cost.
    return int(_eval(name))


class Hook(_Bp):
    """First instruction of a hook in the preloaded runtime: rdi = fn,
    rsi = call site; the instrumented function is the next frame out."""
    def __init__(self, rec, addr, kind):
        super().__init__(rec, "*0x%x" % addr)
        self.kind = kind
        self.addr = addr
        self.outer = True       # the arguments live one frame out

    def stop(self):
        rec = self.rec
        try:
            tid = gdb.selected_thread().ptid[1]
            fn = reg("$rdi")
            if self.kind == "E":
                site = reg("$rsi") if rec.rets else 0
                frame = None
                if rec.args:
                    frame = gdb.selected_frame()
                    frame = frame.older() if self.outer else frame
                rec.enter(tid, fn, site, frame, self.cal_target)
            else:
                rec.exit(tid, fn)
        except Exception as e:          # never let an error stop the program
            rec.error(e)
        return False


    def cal_target(self):
        # where the hook returns to
        rsp = reg("$rsp")
        return int.from_bytes(gdb.selected_inferior().read_memory(rsp, 8).tobytes(), "little")


class HookSite(Hook):
    """A `call` of a hook inside a selected function (--function): the
    arguments are already in rdi/rsi and the frame is the function's own."""
    def __init__(self, rec, addr, kind):
        super().__init__(rec, addr, kind)
        self.outer = False

    def cal_target(self):
        # the instruction after the call, where the hook returns to
        arch = gdb.selected_inferior().architecture()
        return self.addr + arch.disassemble(self.addr)[0]["length"]


class ReturnSite(_Bp):
    """One permanent breakpoint per return site, shared by every call that
    returns there (never a temporary FinishBreakpoint per call)."""
    def __init__(self, rec, addr):
        super().__init__(rec, "*0x%x" % addr)
        self.addr = addr

    def stop(self):
        try:
            self.rec.returned(gdb.selected_thread().ptid[1], self.addr)
        except Exception as e:
            self.rec.error(e)
        return False


class Entry(_Bp):
    """--uninstrumented: a function's entry (after the prologue at -O0)."""
    def stop(self):
        rec = self.rec
        try:
            pc = reg("$pc")
            b = gdb.block_for_pc(pc)
            while b is not None and b.function is None:
                b = b.superblock
            if b is not None:
                rec.enter(gdb.selected_thread().ptid[1], b.start, 0,
                          gdb.selected_frame() if rec.args else None,
                          lambda: rec.cal.skip(pc, 2))
        except Exception as e:
            rec.error(e)
        return False


class Ret(_Bp):
    """--uninstrumented: a `ret` (or a tail-call jump) of a selected function."""
    def __init__(self, rec, addr, fn, reg=None, size=0, is_ret=True):
        super().__init__(rec, "*0x%x" % addr)
        self.fn = fn
        self.is_ret = is_ret    # a tail jump has no return value of its own
        self.reg = reg          # `jmp reg`: an exit only when it leaves the function
        self.end = fn + size

    def stop(self):
        rec = self.rec
        try:
            if self.reg is not None:
                target = reg("$" + self.reg)
                if self.fn <= target < self.end:
                    return False
            rec.exit(gdb.selected_thread().ptid[1], self.fn,
                     gdb.selected_frame() if rec.rets and self.is_ret else None,
                     tail=not self.is_ret)
        except Exception as e:
            rec.error(e)
        return False
