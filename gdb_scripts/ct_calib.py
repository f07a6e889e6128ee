"""Calibrating the per-stop cost, on the traced thread itself.

What a stop still charges to the stopped thread's CPU time is the kernel's
work: the trap, the single-step over the breakpoint, the resume. To measure
it, the first recorded entries get a second breakpoint two instructions
on: the CPU time between the two stops is one whole stop cycle plus two
instructions. The calibration breakpoint is hit by every call returning
there while it exists, so the samples are taken back to back on the first
entries; after WANT samples (or TRIES attempts) the extra breakpoints are
deleted and the samples go to the controller, which
subtracts their trimmed mean once per stop.
"""
import gdb

WANT = 50
TRIES = 2000


class Calibrator:
    def __init__(self, rec):
        self.rec = rec
        self.samples = []
        self.waiting = {}        # tid -> (next pc, cpu, stop count)
        self.bps = {}            # pc -> CalBp
        self.lengths = {}        # pc -> instruction length
        self.tries = 0
        self.stops = 0           # stops of the calibration breakpoints
        self.done = False

    def after(self, tid, target, cpu, n):
        """A recorded stop: measure from it to this thread's arrival at
        target, which must be reached by running (not by the single-step
        over the breakpoint just hit) with nothing but a few instructions
        on the way."""
        if self.done or not target:
            return
        self.tries += 1
        if self.tries > TRIES:
            self.finish()
            return
        if target not in self.bps:
            try:        # only code we can read: never a breakpoint GDB cannot insert
                gdb.selected_inferior().read_memory(target, 1)
            except gdb.MemoryError:
                return
            self.bps[target] = CalBp(self, target)
        self.waiting[tid] = (target, cpu, n)

    def skip(self, pc, count):
        """pc + the length of count instructions, when they are all
        straight-line code; else 0 (cached per pc)."""
        key = (pc, count)
        off = self.lengths.get(key)
        if off is None:
            insns = gdb.selected_inferior().architecture().disassemble(pc, count=count)
            branch = any(i["asm"].split()[0].startswith(("j", "call", "ret", "bnd", "notrack"))
                         for i in insns[:count])
            off = self.lengths[key] = 0 if branch or len(insns) < count else \
                sum(i["length"] for i in insns[:count])
        return pc + off if off else 0

    def hit(self, tid, pc):
        self.stops += 1
        n = self.rec.stop(tid)
        w = self.waiting.pop(tid, None)
        if w is not None and w[0] == pc and n == w[2] + 1:
            self.samples.append(self.rec.cpu(tid) - w[1])
            if len(self.samples) >= WANT:
                self.finish()

    def finish(self):
        if self.done:
            return
        self.done = True
        bps, self.bps = list(self.bps.values()), {}
        # never delete a breakpoint from inside a stop(): GDB's event loop
        # runs this once the current stop is over
        gdb.post_event(lambda: [b.delete() for b in bps if b.is_valid()])


class CalBp(gdb.Breakpoint):
    def __init__(self, cal, addr):
        super().__init__("*0x%x" % addr, internal=True)
        self.silent = True
        self.cal = cal
        self.addr = addr

    def stop(self):
        try:
            if not self.cal.done:
                self.cal.hit(gdb.selected_thread().ptid[1], self.addr)
        except Exception as e:
            self.cal.rec.error(e)
        return False
