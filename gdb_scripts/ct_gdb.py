"""GDB-side recorder of `calltrace debug` (stdlib + gdb module only).

The controller (calltrace/debug/session.py) loads this module, calls
setup(config.json) and arm() once the program is mapped, then lets the
program run. Every breakpoint here returns False from stop(): GDB resumes at
once and no MI round trip happens per call. Events are buffered and appended
to the events file in batches (one line each, tab-separated):

  E tid fn site cpu n [args-json] a call entered (fn: entry address)
  X tid fn cpu n                  a call returned
  R tid value-json                the value the last returned call returned
  F addr info-json                first sight of a function: name, file, ...
  T tid name                      first event of a thread
  Z what                          exec: tracing stopped (image replaced)
  S summary-json                  written once when the program ends

cpu is the thread's CPU time in ns from /proc/PID/task/TID/schedstat, read
while the thread is stopped, so time spent stopped in GDB is not in it; n
counts the thread's stops so far, so the controller can subtract the kernel's
per-stop cost (calibrated from the whole run).
"""
import json
import os
import re
import time

import gdb

import ct_values as V
from ct_bps import Entry, Hook, HookSite, Ret, ReturnSite
from ct_calib import Calibrator
from ct_select import Gate


class Recorder:
    def __init__(self, cfg):
        self.cfg = cfg
        self.out = os.open(cfg["events"], os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                           0o600)
        self.buf = []
        self.last_flush = time.monotonic()
        self.args = cfg.get("capture_args", False)
        self.rets = cfg.get("capture_returns", False)
        self.deref = cfg.get("deref", False)
        self.param_order = cfg.get("param_order", {})   # symbols/params.py order_key -> names
        self.max_depth = cfg.get("max_depth") or 1 << 30
        self.gate = Gate(None, 0)   # which calls to record (-F/--only/-N), set by arm()
        self.lib_sites = {}         # --function in libraries: real path -> sites, until loaded
        self.fds = {}               # tid -> schedstat fd
        self.tnames = {}            # tid -> thread name last reported
        self.depth = {}             # tid -> depth of recorded calls
        self.sites = {}             # tid -> [return site] (with --capture-returns)
        self.pending = {}           # tid -> (site, fn) of the call that just returned
        self.fns = set()            # entry addresses already described by an F line
        self.plans = {}             # pc -> [(symbol, name)] of the frame's arguments
        self.rtypes = {}            # fn -> return gdb.Type or None
        self.rsite_bps = {}         # return site -> breakpoint
        self.bps = []
        self.cal = Calibrator(self)
        self.stops = 0
        self.tstops = {}            # tid -> stops of that thread so far
        self.depth_limited = 0
        self.errors = 0
        self.first_error = None
        self.pid = 0
        self.armed = False
        self.main_bias = 0
        self.execed = False
        self.summarized = False
        V.STR_CAP = cfg.get("string_cap", V.STR_CAP)

    # -- output ---------------------------------------------------------------
    def emit(self, line):
        self.buf.append(line)
        if len(self.buf) >= 4096 or time.monotonic() - self.last_flush > 0.2:
            self.flush()

    def flush(self):
        if self.buf:
            data = ("\n".join(self.buf) + "\n").encode()
            self.buf = []
            while data:
                data = data[os.write(self.out, data):]
        self.last_flush = time.monotonic()

    def error(self, exc):
        self.errors += 1
        if self.first_error is None:
            self.first_error = "%s: %s" % (type(exc).__name__, exc)

    # -- per stop ---------------------------------------------------------------
    def cpu(self, tid):
        fd = self.fds.get(tid)
        if fd is None:
            if len(self.fds) > 256:     # threads come and go: do not hoard fds
                for old in self.fds.values():
                    os.close(old)
                self.fds.clear()
            path = "/proc/%d/task/%d/schedstat" % (self.pid, tid)
            fd = self.fds[tid] = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            name = self.tnames[tid] = gdb.selected_thread().name or ""
            self.emit("T\t%d\t%s" % (tid, name))
        return int(os.pread(fd, 64, 0).split(b" ", 1)[0])

    def stop(self, tid):
        self.stops += 1
        n = self.tstops[tid] = self.tstops.get(tid, 0) + 1
        return n

    def enter(self, tid, fn, site, frame, cal=None):
        """A call to fn entered; frame is the frame whose arguments to read;
        cal() gives where to calibrate the per-stop cost (ct_calib.py)."""
        n = self.stop(tid)
        if not self.gate.enter(tid, fn):
            return
        d = self.depth.get(tid, 0)
        self.depth[tid] = d + 1
        if d >= self.max_depth:
            self.depth_limited += 1
            return
        cpu = self.cpu(tid)
        if fn not in self.fns:
            self.describe(fn)
        line = "E\t%d\t%d\t%d\t%d\t%d" % (tid, fn, site, cpu, n)
        if self.args:
            line += "\t" + json.dumps(self.read_args(frame), separators=(",", ":"))
        if self.rets:
            self.sites.setdefault(tid, []).append(site)
            if site and site not in self.rsite_bps:
                self.rsite_bps[site] = ReturnSite(self, site)
        self.emit(line)
        if cal is not None and not self.cal.done:
            self.cal.after(tid, cal(), cpu, n)

    def exit(self, tid, fn, frame=None, tail=False):
        n = self.stop(tid)
        if not self.gate.exit(tid, fn):
            return
        d = self.depth.get(tid, 0) - 1
        self.depth[tid] = max(d, 0)
        if d >= self.max_depth or d < 0:
            return
        self.emit("X\t%d\t%d\t%d\t%d" % (tid, fn, self.cpu(tid), n))
        if d == 0:
            # the outermost call ended: the thread may have been named since
            name = gdb.selected_thread().name or ""
            if name != self.tnames.get(tid):
                self.tnames[tid] = name
                self.emit("T\t%d\t%s" % (tid, name))
        if self.rets:
            stack = self.sites.get(tid)
            site = stack.pop() if stack else 0
            if tail:
                pass                        # the tail-called function returns for it
            elif frame is not None:         # at a `ret`: the value is in place now
                self.emit_return(tid, fn, frame)
            else:
                self.pending[tid] = (site, fn)

    def returned(self, tid, pc):
        """A return-site breakpoint: the value of the call that just exited."""
        self.stop(tid)
        p = self.pending.get(tid)
        if p is None or p[0] != pc:
            return                 # the site reached some other way (a loop)
        del self.pending[tid]
        self.emit_return(tid, p[1], gdb.selected_frame())

    def emit_return(self, tid, fn, frame):
        rtype = self.rtypes.get(fn, False)
        if rtype is False:
            self.describe(fn)
            rtype = self.rtypes.get(fn)
        if rtype is None or rtype.strip_typedefs().code == gdb.TYPE_CODE_VOID:
            return
        try:
            val = V.return_value(frame, rtype)
            d = V.value(None, val)
        except gdb.error:
            d = {"type": str(rtype), "value": None, "note": "unavailable"}
        self.emit("R\t%d\t%s" % (tid, json.dumps(d, separators=(",", ":"))))

    def read_args(self, frame):
        pc = frame.pc()
        plan = self.plans.get(pc)
        if plan is None:
            plan = self.plans[pc] = self.arg_plan(frame)
        if isinstance(plan, str):
            return plan
        out = []
        for sym, name in plan:
            try:
                val = frame.read_var(sym)
            except gdb.error as e:
                val = V.entry_value(frame, name)
                if val is None:
                    note = "optimized out" if "optimized out" in str(e) else "unavailable"
                    out.append({"name": name, "type": str(sym.type), "value": None,
                                "note": note})
                    continue
            if val.is_optimized_out:
                val = V.entry_value(frame, name) or val
            out.append(V.value(name, val, self.deref))
        return out

    def arg_plan(self, frame):
        try:
            b = frame.block()
        except RuntimeError:
            return "no debug info"
        while b is not None and b.function is None:
            b = b.superblock
        if b is None:
            return "no debug info"
        args = [(s, s.name) for s in b if s.is_argument]
        if frame.type() == gdb.INLINE_FRAME and len(args) > 1:
            # GCC lists an inlined copy's parameters in reverse: use the
            # declaration order, found in DWARF by calltrace (params.py).
            short = b.function.name.split("(", 1)[0].rsplit("::", 1)[-1]
            order = self.param_order.get(short + "|" + ",".join(sorted(n for _, n in args)))
            if order is not None:
                args.sort(key=lambda a: order.index(a[1]))
        return args

    def describe(self, fn):
        """Emit an F line for fn: its name and where it is defined."""
        self.fns.add(fn)
        info = {"name": None, "module": gdb.solib_name(fn), "file": None, "line": None}
        rtype = None
        try:
            b = gdb.block_for_pc(fn)
            while b is not None and b.function is None:
                b = b.superblock
            if b is not None:
                sym = b.function
                info["name"] = sym.print_name
                info["linkage"] = sym.linkage_name
                if sym.symtab is not None:
                    info["file"] = sym.symtab.filename
                    info["line"] = sym.line
                ftype = sym.type
                if ftype is not None:
                    rtype = ftype.target()
                    if str(ftype).endswith("...)"):
                        info["variadic"] = True
        except RuntimeError:
            pass
        if info["name"] is None:
            s = gdb.execute("info symbol 0x%x" % fn, to_string=True)
            m = re.match(r"(\S+)( \+ \d+)? in section", s)
            if m and not m.group(2):
                info["name"] = m.group(1)
        self.rtypes[fn] = rtype
        self.emit("F\t%d\t%s" % (fn, json.dumps(info, separators=(",", ":"))))

    # -- setting up ---------------------------------------------------------------
    def bias(self):
        """Load bias of the main executable (PIE): AT_ENTRY minus e_entry."""
        auxv = gdb.execute("info auxv", to_string=True)
        m = re.search(r"AT_ENTRY\s.*?(0x[0-9a-f]+)", auxv)
        return int(m.group(1), 16) - self.cfg["elf_entry"] if m else 0

    def arm(self):
        self.pid = gdb.selected_inferior().pid
        self.armed = True
        mode = self.cfg["mode"]
        bias = self.main_bias = self.bias()
        self.gate = Gate(self.cfg.get("select"), bias)
        if mode == "hooks":
            for objfile in gdb.objfiles():
                self.on_objfile(objfile)
        elif mode == "sites":
            for addr, kind in self.cfg["sites"]:
                self.bps.append(HookSite(self, addr + bias, kind))
            self.lib_sites = {e["path"]: e for e in self.cfg.get("lib_sites", [])}
            for objfile in gdb.objfiles():
                self.on_objfile(objfile)
        elif mode == "plain":
            for name in self.cfg["entries"]:
                self.bps.append(Entry(self, name))
            for addr, fn, kind, size in self.cfg["rets"]:
                reg = kind[2:] if kind.startswith("J:") else None
                self.bps.append(Ret(self, addr + bias, fn + bias, reg, size, kind == "X"))
        gdb.events.new_objfile.connect(lambda ev: self.on_objfile(ev.new_objfile))
        gdb.events.clear_objfiles.connect(self.on_clear)
        gdb.events.exited.connect(self.on_exit)

    def on_objfile(self, objfile):
        try:
            self.hook_objfile(objfile)
        except Exception as e:      # an event handler's error would only be printed
            self.error(e)

    def hook_objfile(self, objfile):
        if objfile.filename:
            self.gate.library(os.path.realpath(objfile.filename), lambda text: self.lib_base(objfile, text))
        if self.cfg["mode"] == "sites":
            return self.site_objfile(objfile)
        lib = self.cfg.get("hook_lib")
        if self.cfg["mode"] != "hooks" or self.bps or not objfile.filename:
            return
        if os.path.realpath(objfile.filename) != lib:
            return
        for name, kind in (("__cyg_profile_func_enter", "E"), ("__cyg_profile_func_exit", "X")):
            sym = objfile.lookup_global_symbol(name)
            addr = int(sym.value().address) if sym is not None else \
                self.cfg["hook_offsets"][kind] + self.lib_base(objfile)
            self.bps.append(Hook(self, addr, kind))

    def site_objfile(self, objfile):
        """A selected library is loaded: its hook call sites, placed."""
        if not objfile.filename or not self.lib_sites:
            return
        entry = self.lib_sites.pop(os.path.realpath(objfile.filename), None)
        if entry is None:
            return
        base = self.lib_base(objfile, entry["text"])
        for addr, kind in entry["sites"]:
            self.bps.append(HookSite(self, addr + base, kind))

    def lib_base(self, objfile, text_vaddr=None):
        text = gdb.execute("info sharedlibrary", to_string=True)
        for line in text.splitlines():
            if line.rstrip().endswith(objfile.filename):
                vaddr = self.cfg["hook_text"] if text_vaddr is None else text_vaddr
                return int(line.split()[0], 16) - vaddr
        raise gdb.GdbError("cannot locate %s" % objfile.filename)

    def on_clear(self, ev):
        # The process replaced its image (exec): our addresses mean nothing now.
        if self.armed and not self.execed and self.bps:
            self.execed = True
            self.cal.done = True
            cal_bps, self.cal.bps = list(self.cal.bps.values()), {}
            for bp in self.bps + list(self.rsite_bps.values()) + cal_bps:
                if bp.is_valid():
                    bp.delete()
            self.bps, self.rsite_bps = [], {}
            self.emit("Z\texec")
            self.flush()

    def on_exit(self, ev):
        self.summary()

    def summary(self):
        if self.summarized:
            self.flush()
            return
        self.summarized = True
        self.emit("S\t" + json.dumps({"stops": self.stops, "depth_limited": self.depth_limited,
                                      "errors": self.errors, "first_error": self.first_error,
                                      "pid": self.pid, "bias": self.main_bias,
                                      "calibration": self.cal.samples,
                                      "calibration_stops": self.cal.stops}))
        self.flush()


REC = None


SETTINGS = (
    "set pagination off", "set confirm off", "set print thread-events off",
    "set print inferior-events off", "set startup-with-shell on",
    "set disable-randomization off", "set non-stop off",
    # fork: keep tracing the parent, the child runs on untraced
    "set follow-fork-mode parent", "set detach-on-fork on", "set follow-exec-mode same",
    # the program's signals are its own: never stop on them, always deliver
    "handle all nostop noprint pass", "handle SIGINT nostop noprint pass",
)


def setup(config_path):
    """Settings, the program's arguments (with the stdio redirections) and
    environment; then the recorder, armed later by arm()."""
    global REC
    with open(config_path) as f:
        cfg = json.load(f)
    for cmd in SETTINGS:
        gdb.execute(cmd, to_string=True)
    gdb.execute("set args " + cfg["args"], to_string=True)
    if cfg["mode"] == "hooks":
        preload = cfg["hook_lib"] + (" " + cfg["preload"] if cfg.get("preload") else "")
        gdb.execute("set environment LD_PRELOAD=" + preload, to_string=True)
        gdb.execute("set environment CALLTRACE_OUTPUT=/dev/null", to_string=True)
    elif cfg.get("preload"):
        gdb.execute("set environment LD_PRELOAD=" + cfg["preload"], to_string=True)
    REC = Recorder(cfg)


def arm():
    REC.arm()
