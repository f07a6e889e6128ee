"""`calltrace debug` end to end: real GDB, real gcc-built fixtures.

The differential tests hold the GDB backend to the runtime: the same call
tree, names and order per thread from `calltrace debug` and `calltrace run`."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT, _cli_env, cli_process, fixture, load_json, require_tool, run_cli, shape, validate
from test_run import RECURSION_TREE, fib_calls


@pytest.fixture(autouse=True)
def _gdb():
    require_tool("gdb", "gdb")


def debug(tmp_path, *args, name="d.json", input=None, env=None, check_exists=True):
    out = tmp_path / name
    proc = run_cli("debug", "--output", out, *args, cwd=tmp_path, input=input, env=env,
                   timeout=300)
    if check_exists:
        assert out.exists(), proc.stderr.decode()
        return proc, validate(load_json(out))
    return proc, None


def run_trace(tmp_path, *args):
    out = tmp_path / "r.json"
    proc = run_cli("run", "-q", "-o", out, *args, cwd=tmp_path)
    assert out.exists(), proc.stderr.decode()
    return proc, validate(load_json(out))


def per_thread(doc):
    """Main thread's calls first, then the other threads', sorted (thread
    start order may differ between runs): name, depth, incomplete."""
    def calls(t):
        return [(d, f, c.get("incomplete", False))
                for (d, f), c in zip(shape(t["calls"]), t["calls"])]
    main = [(t["name"], calls(t)) for t in doc["threads"] if t["main"]]
    rest = sorted((t["name"], calls(t)) for t in doc["threads"] if not t["main"])
    return main, rest


@pytest.mark.parametrize("fix,args", [
    ("recursion", []), ("recursion-O2", []), ("threads", ["3"]), ("workers", []),
    ("deep", ["300"]), ("interleave", ["4"]), ("names", []), ("callloop", ["250"]),
    ("argtypes", []), ("argtypes-O2", []), ("forker", []),
    ("die", ["return"]), ("die", ["exit"]), ("die", ["_exit"]), ("die", ["abort"]),
    ("die", ["segv"]), ("die", ["term"]), ("die", ["handled"]), ("crash", []),
])
def test_differential_same_tree_as_run(tmp_path, fix, args):
    rp, rdoc = run_trace(tmp_path, fixture(fix), *args)
    dp, ddoc = debug(tmp_path, "-q", fixture(fix), *args)
    assert dp.returncode == rp.returncode
    assert dp.stdout == rp.stdout
    # the runtime leaves a thread unnamed when the process dies of a signal
    if any(t["name"] is None for t in rdoc["threads"]):
        for t in ddoc["threads"]:
            t["name"] = None
    assert per_thread(ddoc) == per_thread(rdoc)
    assert ddoc["metadata"]["total_calls"] == rdoc["metadata"]["total_calls"]
    assert {f["function"]: f["calls"] for f in ddoc["functions"]} == \
        {f["function"]: f["calls"] for f in rdoc["functions"]}
    for key in ("exit_status", "termination", "signal", "incomplete_calls", "thread_count"):
        assert ddoc["metadata"][key] == rdoc["metadata"][key], key
    m = ddoc["metadata"]
    assert m["backend"] == "gdb" and m["clock"] == "thread-cpu" and "per stop" in m["timing"]


def test_recursion_exact_with_args_and_returns(tmp_path):
    proc, doc = debug(tmp_path, fixture("recursion"), "--capture-args", "--capture-returns")
    assert proc.returncode == 0 and proc.stdout == b"fib=5 sq=25 h=7\n"
    calls = doc["threads"][0]["calls"]
    assert shape(calls) == RECURSION_TREE
    fibs = [c for c in calls if c["function"] == "fib"]
    assert [c["args"][0]["value"] for c in fibs] == [5, 4, 3, 2, 1, 0, 1, 2, 1, 0, 3, 2, 1, 0, 1]
    assert [c["return"]["value"] for c in fibs] == [5, 3, 2, 1, 1, 0, 1, 1, 1, 0, 2, 1, 1, 0, 1]
    sq = [c for c in calls if c["function"] == "square"]
    assert [(c["args"][0]["value"], c["return"]) for c in sq] == [
        (5, {"type": "int", "value": 25}), (1, {"type": "int", "value": 1})]
    apply = [c for c in calls if c["function"] == "apply"][0]
    assert apply["args"][0]["type"] == "int (*)(int)"
    assert apply["args"][0]["value"].endswith(" <square>")
    assert calls[0]["args"] == [] and calls[0]["return"] == {"type": "int", "value": 0}
    # durations: thread CPU time, nested, and the summary says how
    assert all(c["duration_ns"] >= 0 for c in calls)
    assert "GDB stops" in proc.stderr.decode()


def v(name, type_, value, note=None):
    d = {"name": name, "type": type_, "value": value}
    if note:
        d["note"] = note
    return d


PT = {"x": 1, "y": -2, "name": "pt", "w": 0.5}
ARGTYPES = [
    ("main", [], {"type": "int", "value": 0}),
    ("f_i8", [v("v", "int8_t", -128)], None),
    ("f_u8", [v("v", "uint8_t", 255)], None),
    ("f_i16", [v("v", "int16_t", -32768)], None),
    ("f_u16", [v("v", "uint16_t", 65535)], None),
    ("f_i32", [v("v", "int32_t", -2147483648)], {"type": "int", "value": -2147483648}),
    ("f_u32", [v("v", "uint32_t", 4294967295)], None),
    ("f_i64", [v("v", "int64_t", -9223372036854775808)], None),
    ("f_u64", [v("v", "uint64_t", 18446744073709551615)], None),
    ("f_ints", [v("a", "int", -1), v("b", "long", 0), v("c", "short", 1),
                v("d", "unsigned int", 42)], None),
    ("f_char", [v("v", "char", "A")], None),
    ("f_char", [v("v", "char", "\n")], None),
    ("f_schar", [v("v", "signed char", "\\xff")], None),
    ("f_bool", [v("v", "_Bool", True)], {"type": "_Bool", "value": False}),
    ("f_bool", [v("v", "_Bool", False)], {"type": "_Bool", "value": True}),
    ("f_float", [v("v", "float", 1.5)], None),
    ("f_double", [v("v", "double", -0.25)], {"type": "double", "value": -0.5}),
    ("f_ldouble", [v("v", "long double", 3.0)], None),
    ("f_enum", [v("v", "enum color", "GREEN")], None),
    ("f_enum", [v("v", "enum color", 7)], None),
    ("f_str", [v("s", "const char *", "hello")], {"type": "int", "value": 5}),
    ("f_str", [v("s", "const char *", None)], {"type": "int", "value": -1}),
    ("f_str", [v("s", "const char *", "x" * 256, "truncated")], {"type": "int", "value": 300}),
    ("f_struct", [v("p", "struct point", PT)], None),
    ("f_union", [v("u", "union word", {"i": 65, "c": "A"})], None),
    ("f_ptr", [dict(v("p", "struct point *", "ADDR"), deref=PT)],
     {"type": "struct point *", "value": "ADDR"}),
    ("f_ptr", [v("p", "struct point *", "0x0")], {"type": "struct point *", "value": "0x0"}),
    ("f_array", [v("arr", "int *", "ADDR"), v("n", "int", 3)], None),
    ("f_fnptr", [v("fn", "int (*)(int, int)", "ADDR <compare>")], None),
    ("apply_cmp", [v("fn", "int (*)(int, int)", "ADDR <compare>"), v("a", "int", 3),
                   v("b", "int", 4)], {"type": "int", "value": -1}),
    ("compare", [v("a", "int", 3), v("b", "int", 4)], {"type": "int", "value": -1}),
    ("f_variadic", [v("count", "int", 2)], None),
    ("make_pair", [v("a", "long", 3), v("b", "long", 4)],
     {"type": "struct pair", "value": {"a": 3, "b": 4}}),
    ("make_vec", [v("x", "float", 1.0), v("y", "float", 2.0)],
     {"type": "struct vec", "value": {"x": 1.0, "y": 2.0}}),
]


def _norm(value):
    """Addresses vary run to run: keep only their shape."""
    if isinstance(value, str) and value.startswith("0x") and value != "0x0":
        head, _, sym = value.partition(" ")
        int(head, 16)
        return "ADDR" + (" " + sym if sym else "")
    if isinstance(value, dict):
        return {k: _norm(x) for k, x in value.items()}
    if isinstance(value, list):
        return [_norm(x) for x in value]
    return value


# Arguments allowed to be "optimized out" at -O2. None: where DWARF has no
# location at the hook's call (f_union's u lives in %rdi only up to the call),
# the entry value (DW_OP_entry_value, `u@entry`) supplies it.
O2_OPTIMIZED_OUT: set[tuple[str, str]] = set()


@pytest.mark.parametrize("variant", ["argtypes", "argtypes-O2"])
def test_argtypes_exact(tmp_path, variant):
    proc, doc = debug(tmp_path, fixture(variant), "--capture-args", "--capture-returns",
                      "--deref")
    assert proc.returncode == 0 and proc.stdout == b"argtypes done\n"
    calls = doc["threads"][0]["calls"]
    assert [c["function"] for c in calls] == [a[0] for a in ARGTYPES]
    for call, (fn, args, ret) in zip(calls, ARGTYPES):
        got = _norm(call["args"])
        for g, want in zip(got, args):
            if variant.endswith("O2") and (fn, want["name"]) in O2_OPTIMIZED_OUT \
                    and g.get("note") == "optimized out":
                assert g["value"] is None and g["type"] == want["type"]
                continue
            assert g == want, fn
        assert len(got) == len(args), fn
        assert _norm(call.get("return")) == ret, fn
    variadic = [c for c in calls if c["function"] == "f_variadic"][0]
    assert "variadic" in variadic["args_note"]


def test_threads_every_thread_traced(tmp_path):
    proc, doc = debug(tmp_path, fixture("threads"), "4", "--capture-args")
    assert proc.returncode == 0 and proc.stdout == b"threads 4 total 60\n"
    main = [t for t in doc["threads"] if t["main"]]
    workers = [t for t in doc["threads"] if not t["main"]]
    assert len(main) == 1 and main[0]["tid"] == doc["metadata"]["pid"]
    assert shape(main[0]["calls"]) == [(0, "main"), (1, "start_all"), (1, "join_all")]
    assert len(workers) == 4 and len({t["tid"] for t in doc["threads"]}) == 5
    tree = [(0, "worker"), (1, "step"), (2, "twice")] * 1
    ks = []
    for t in workers:
        assert shape(t["calls"]) == [(0, "worker")] + [(1, "step"), (2, "twice")] * 3
        k = int(t["calls"][0]["args"][0]["value"], 16)      # void *arg
        ks.append(k)
        steps = [c["args"][1]["value"] for c in t["calls"] if c["function"] == "step"]
        assert steps == [0, 1, 2]
        assert all(c["args"][0]["value"] == k for c in t["calls"] if c["function"] == "step")
    assert sorted(ks) == [0, 1, 2, 3] and tree
    assert doc["metadata"]["thread_count"] == 5


def test_crash_mid_call(tmp_path):
    proc, doc = debug(tmp_path, fixture("crash"))
    assert proc.returncode == 139
    assert proc.stdout == b"before crash\n"
    m = doc["metadata"]
    assert (m["termination"], m["signal"], m["exit_status"]) == ("signal", 11, 139)
    calls = doc["threads"][0]["calls"]
    assert [(c["depth"], c["function"], c.get("incomplete", False)) for c in calls] == [
        (0, "main", True), (1, "setup", False), (1, "outer", True), (2, "middle", True),
        (3, "inner", True)]
    assert m["incomplete_calls"] == 4


def test_interleaved_output_stays_the_programs(tmp_path):
    proc, doc = debug(tmp_path, fixture("interleave"), "4", input=b"hello there\n")
    assert proc.returncode == 3
    assert proc.stdout == b"got: hello there\nline 0\nline 1\nline 2\nline 3\n"
    err = proc.stderr.decode()
    assert err.startswith("odd 1\nodd 3\n"), err
    assert "^done" not in err and "*stopped" not in err and "(gdb)" not in proc.stdout.decode()
    assert shape(doc["threads"][0]["calls"]) == [
        (0, "main"), (1, "greet"), (1, "say"), (1, "say"), (2, "shout"), (1, "say"),
        (1, "say"), (2, "shout")]


def test_stdout_to_file_keeps_order(tmp_path):
    out = tmp_path / "out.txt"
    with open(out, "wb") as f:
        p = subprocess.run([sys.executable, "-m", "calltrace", "debug", "-q", "--output",
                            str(tmp_path / "t.json"), fixture("interleave"), "2"],
                           stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.PIPE,
                           cwd=tmp_path, timeout=120)
    assert p.returncode == 3
    assert out.read_bytes() == b"got: (none)\nline 0\nline 1\n"


PLAIN = fib_calls(5, 0) + [(0, "apply"), (1, "square"), (0, "twice")]


def test_uninstrumented_exact(tmp_path):
    proc, doc = debug(tmp_path, "--uninstrumented", fixture("plain_calls"),
                      "--only", "^(fib|square|apply|twice)$", "--capture-args",
                      "--capture-returns")
    assert proc.returncode == 0 and proc.stdout == b"fib=5 sq=25 tw=42\n"
    calls = doc["threads"][0]["calls"]
    assert shape(calls) == PLAIN
    fibs = [c for c in calls if c["function"] == "fib"]
    assert [c["args"][0]["value"] for c in fibs] == [5, 4, 3, 2, 1, 0, 1, 2, 1, 0, 3, 2, 1, 0, 1]
    assert [c["return"]["value"] for c in fibs] == [5, 3, 2, 1, 1, 0, 1, 1, 1, 0, 2, 1, 1, 0, 1]
    tw = calls[-1]
    assert tw["args"] == [v("x", "double", 21.0)] and tw["return"] == {"type": "double",
                                                                       "value": 42.0}
    assert doc["metadata"]["options"]["mode"] == "plain"


def test_uninstrumented_O2_tail_call(tmp_path):
    # at -O2 apply tail-calls square (`jmp *%rdi`): apply ends where square starts
    proc, doc = debug(tmp_path, "--uninstrumented", fixture("plain_calls-O2"),
                      "--only", "^(square|apply|twice)$", "--capture-args",
                      "--capture-returns")
    assert proc.returncode == 0
    calls = doc["threads"][0]["calls"]
    assert shape(calls) == [(0, "apply"), (0, "square"), (0, "twice")]
    assert "return" not in calls[0] and not calls[0].get("incomplete")
    assert calls[1]["return"] == {"type": "int", "value": 25}
    assert calls[2]["return"] == {"type": "double", "value": 42.0}


def test_only_stops_only_there(tmp_path):
    _, full = debug(tmp_path, "-q", fixture("callloop"), "1000", name="full.json")
    proc, doc = debug(tmp_path, "-q", fixture("callloop"), "1000", "--only", "^rare$")
    assert proc.returncode == 0 and proc.stdout == b"sum 490500\n"
    assert shape(doc["threads"][0]["calls"]) == [(0, "rare")] * 10
    def stops(d):
        return d["metadata"]["gdb_stops"] - d["metadata"]["calibration_stops"]
    assert stops(full) == 2 * 1001
    assert stops(doc) == 2 * 10          # 1% of the calls, 1% of the stops
    assert doc["metadata"]["calibration_stops"] <= 10
    assert doc["metadata"]["options"]["mode"] == "sites"


def test_exclude_and_max_depth(tmp_path):
    _, doc = debug(tmp_path, "-q", fixture("recursion"), "--exclude", "^fib$")
    assert shape(doc["threads"][0]["calls"]) == [
        (0, "main"), (1, "apply"), (2, "square"), (1, "apply"), (2, "square"), (1, "helper")]
    _, doc = debug(tmp_path, "-q", fixture("deep"), "50", "--max-depth", "10", name="m.json")
    calls = doc["threads"][0]["calls"]
    assert len(calls) == 10 and max(c["depth"] for c in calls) == 9
    assert doc["metadata"]["depth_limited_calls"] == 41


def test_options_after_program_and_double_dash(tmp_path):
    proc, doc = debug(tmp_path, fixture("echo"), "--capture-args", "--", "--capture-args", "b",
                      input=b"")
    assert proc.stdout == b"arg: --capture-args\narg: b\n"
    assert proc.returncode == 2
    shows = [c for c in doc["threads"][0]["calls"] if c["function"] == "show"]
    assert [c["args"][0]["value"] for c in shows] == ["--capture-args", "b"]
    assert doc["metadata"]["argv"][1:] == ["--capture-args", "b"]


def test_post_mortem_commands_read_debug_traces(tmp_path):
    _, doc = debug(tmp_path, "-q", fixture("recursion"), "--capture-args")
    for cmd in (["replay"], ["report"], ["info"]):
        p = run_cli(*cmd, tmp_path / "d.json", cwd=tmp_path)
        assert p.returncode == 0, (cmd, p.stderr.decode())


def test_library_use(tmp_path):
    from calltrace.debug.tracer import Options, trace
    out = tmp_path / "lib.json"
    prog = fixture("recursion")
    res = trace(Options(program=prog, argv=[prog], output=str(out), quiet=True))
    assert res.status == 0 and res.metadata["total_calls"] == 21
    assert shape(validate(load_json(out))["threads"][0]["calls"]) == RECURSION_TREE


@pytest.mark.parametrize("args,msg", [
    (["/nonexistent/prog"], "no such file"),
    (["--uninstrumented", "PLAIN"], "--uninstrumented needs --only REGEX or --function REGEX"),
    (["PLAIN"], "not built with -finstrument-functions"),
    (["--uninstrumented", "PLAIN", "--only", "^nomatch$"], "no function"),
    (["RECURSION", "--function", "("], "--function '(' is not a valid regular expression"),
    (["RECURSION", "--deref"], "--deref needs --capture-args"),
])
def test_errors_are_one_line(tmp_path, args, msg):
    args = [fixture("plain_calls") if a == "PLAIN" else fixture("recursion") if a == "RECURSION"
            else a for a in args]
    proc = run_cli("debug", *args, cwd=tmp_path)
    err = proc.stderr.decode()
    assert proc.returncode != 0 and msg in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_not_executable_and_no_debug_info(tmp_path):
    src = tmp_path / "p.c"
    src.write_text("int f(int x){return x+1;} int main(void){return f(1)-2;}\n")
    exe = tmp_path / "p"
    subprocess.run(["gcc", "-O0", "-finstrument-functions", str(src), "-o", str(exe)],
                   check=True)
    proc = run_cli("debug", exe, "--capture-args", cwd=tmp_path)
    assert "no debug info" in proc.stderr.decode() and proc.returncode == 2
    proc, doc = debug(tmp_path, "-q", exe)        # without args: names from the symbols
    assert proc.returncode == 0 and shape(doc["threads"][0]["calls"]) == [(0, "main"),
                                                                          (1, "f")]
    os.chmod(exe, 0o644)
    proc = run_cli("debug", exe, cwd=tmp_path)
    assert "not executable" in proc.stderr.decode() and proc.returncode == 126


def test_ctrl_c_stops_program_and_writes_trace(tmp_path):
    out = tmp_path / "c.json"
    mi_log = tmp_path / "mi.log"
    with cli_process("debug", "-q", "--output", out, fixture("callloop"), "100000000", cwd=tmp_path,
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                     env={**_cli_env(None), "CALLTRACE_MI_LOG": str(mi_log)}) as p:
        # Wait until the breakpoints are armed and the program runs again (the
        # second *running, after libc is loaded), then let it record a while.
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and p.poll() is None:
            log = mi_log.read_text() if mi_log.exists() else ""
            if log.count("message='running'") >= 4 and "libc.so" in log:
                break
            time.sleep(0.05)
        time.sleep(1)
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=120)
    assert p.returncode == 130, err.decode()
    doc = validate(load_json(out))
    m = doc["metadata"]
    assert (m["termination"], m["signal"]) == ("signal", 2)
    calls = doc["threads"][0]["calls"]
    assert calls[0]["function"] == "main" and calls[0].get("incomplete")
    assert len(calls) > 10 and {c["function"] for c in calls[1:]} <= {"tick", "rare"}


def test_fork_parent_traced_child_untraced(tmp_path):
    proc, doc = debug(tmp_path, fixture("forker"), "--capture-returns")
    assert proc.returncode == 0 and proc.stdout == b"child 5\n"
    (t,) = doc["threads"]
    assert shape(t["calls"]) == [(0, "main"), (1, "before_fork"), (1, "after_fork")]
    assert t["calls"][0]["return"] == {"type": "int", "value": 0}


def test_exec_ends_tracing(tmp_path):
    proc, doc = debug(tmp_path, fixture("forker"), "exec")
    assert proc.returncode == 0 and proc.stdout == b"exec'd\n"
    m = doc["metadata"]
    assert m["termination"] == "exec" and m["exit_status"] == 0
    assert [(c["function"], c.get("incomplete")) for c in doc["threads"][0]["calls"]] == [
        ("main", True), ("before_exec", True)]


def test_progress_bar_and_summary_on_stderr(tmp_path):
    proc, doc = debug(tmp_path, "--progress", fixture("callloop"), "300")
    err = proc.stderr.decode()
    assert proc.stdout == b"sum 44250\n"   # 0..299 minus twice the multiples of 100
    assert "calltrace debug" in err and "calls" in err and "GDB stops" in err
    assert "trace written to" in err and doc["metadata"]["total_calls"] == 301


@pytest.mark.parametrize("flags", [["-fno-plt"], ["-fno-plt", "-O2"], ["-fcf-protection"]])
def test_hook_calls_found_without_plt(tmp_path, flags):
    # -fno-plt: the hooks are called through the GOT (`call *slot(%rip)`);
    # -fcf-protection: through .plt.sec stubs
    src = ROOT / "fixtures" / "recursion.c"
    exe = tmp_path / "rec"
    subprocess.run(["gcc", "-g", "-finstrument-functions", "-rdynamic", *flags, str(src), "-o",
                    str(exe)], check=True)
    _, full = debug(tmp_path, "-q", exe, name="full.json")
    _, part = debug(tmp_path, "-q", exe, "--only", "^(fib|square)$", "--capture-args")
    if "-O2" not in flags:
        assert shape(full["threads"][0]["calls"]) == RECURSION_TREE
    want = [(d - 1, f) for d, f in shape(full["threads"][0]["calls"]) if f in ("fib", "square")]
    got = shape(part["threads"][0]["calls"])
    assert [f for _, f in got] == [f for _, f in want] and len(got) == 17
    m = part["metadata"]
    assert m["gdb_stops"] - m["calibration_stops"] == 2 * 17


def test_durations_do_not_count_stop_time(tmp_path):
    # spin burns 30 ms of its own CPU time with no call inside; many makes 500
    # empty calls = 1000 stops, each about a millisecond of wall time in GDB.
    # Only relations that hold however loaded the machine is; how close the
    # per-stop correction comes is a figure for `make bench` (bench_debug.py).
    proc, doc = debug(tmp_path, fixture("busy"), "30")
    got = re.fullmatch(rb"busy done: spin (\d+) ns, main (\d+) ns\n", proc.stdout)
    assert proc.returncode == 0 and got, proc.stdout
    spun, main_cpu = int(got.group(1)), int(got.group(2))
    calls = {c["function"]: c for c in doc["threads"][0]["calls"]}
    m = doc["metadata"]
    assert m["clock"] == "thread-cpu" and m["calibration_stops"] > 0
    per_stop = int(m["timing"].split(" ns per stop")[0].rsplit(" ", 1)[1])
    assert per_stop > 0
    # spin's own measure lies between our two stamps; one stop (its return) is
    # subtracted from it
    assert calls["spin"]["duration_ns"] >= spun - per_stop
    # None of the stops' wall time counts: main took no more than the CPU time
    # its thread had used by its end (stop time included in that figure).
    assert calls["main"]["duration_ns"] <= main_cpu
    assert calls["main"]["duration_ns"] >= calls["spin"]["duration_ns"] + calls["many"]["duration_ns"]


def test_missing_gdb_is_a_clear_error(tmp_path):
    proc = run_cli("debug", fixture("recursion"), cwd=tmp_path,
                   env={"CALLTRACE_GDB": str(tmp_path / "no-gdb")})
    err = proc.stderr.decode()
    assert proc.returncode == 2 and "gdb is not installed (Debian package: gdb)" in err
    assert len(err.strip().splitlines()) == 1
