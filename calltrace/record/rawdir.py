"""The raw folder of a `calltrace run`: OUTPUT.raw/, next to the trace.

The runtime writes one raw stream per traced process image there
(`<pid>[-<image>][.p<part>].raw`); `calltrace run` converts them when the
program ends and removes the folder. Kept next to the output rather than in
/tmp so that a run killed before it could convert (SIGKILL, a crash, a
second Ctrl-C) leaves its data where the user looks, recoverable with
`calltrace convert OUTPUT.raw`, and on the same file system as the trace.

A live run holds an flock on OUTPUT.raw/lock (the kernel drops it when the
run dies, however it dies): a second run writing the same output is refused,
and a folder whose lock is free was left by a dead run. The next run moves
such a folder to OUTPUT.raw.old (as perf keeps perf.data.old) and says so.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import sys
from pathlib import Path

from ..errors import CalltraceError
from ..files import LOCK, lock_if_free, locked_scratch

RUN = "run.json"
RAW_NAME = re.compile(r"^(\d+)(?:-(\d+))?(?:\.p(\d+))?$")
# What calltrace itself puts in a raw folder: the lock, the run's record,
# the plan and filter it hands the runtime, the streams, unfinished traces.
OURS = re.compile(r"^(?:lock|run\.json|capture\.plan|record\.filter|\d+(?:-\d+)?(?:\.p\d+)?\.raw|"
                  r"\.calltrace-.*\.tmp)$")


def raw_key(raw: Path) -> tuple[int, int, int]:
    """(pid, image after exec, part) from "<pid>[-<n>][.p<part>].raw"."""
    m = RAW_NAME.match(raw.stem)
    return (int(m.group(1)), int(m.group(2) or 0), int(m.group(3) or 0)) if m else (0, 0, 0)


def child_output(output: str, tag: str) -> str:
    """t.json -> t.<tag>.json: the trace of another process or image."""
    p = Path(output)
    return str(p.with_name(f"{p.stem}.{tag}{p.suffix}")) if p.suffix else f"{output}.{tag}"


def trace_path(output: str, pid: int, raw: Path) -> str:
    """Where the trace of one raw stream goes: -o itself for the program's
    first image, a name with the pid (and image) for the others; inside a
    dataset folder (-o DIR/), host=/pid= partitions for all (docs/FORMAT.md)."""
    rpid, image, _ = raw_key(raw)
    if output.endswith("/"):
        import socket
        from ..trace import dataset
        path = dataset.member(output, socket.gethostname(), rpid, image)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        return path
    return output if rpid == pid and not image else child_output(output, raw.stem.split(".p")[0])


def _owner(folder: str) -> dict:
    try:
        with open(os.path.join(folder, RUN)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def streams(folder: str) -> list[Path]:
    return sorted(Path(folder).glob("*.raw"), key=raw_key)


def foreign(folder: str) -> list[str]:
    """What is in `folder` that calltrace did not put there."""
    return sorted(n for n in os.listdir(folder) if not OURS.match(n))


def clear(folder: str) -> bool:
    """Delete what calltrace put in `folder`, then the folder if that leaves
    it empty (True); anything else in it stays."""
    for name in os.listdir(folder):
        if OURS.match(name):
            try:
                os.unlink(os.path.join(folder, name))
            except OSError:
                pass
    try:
        os.rmdir(folder)
        return True
    except OSError:
        return False


def writer(raw: Path) -> int | None:
    """The pid of a live process that still has stream `raw` open (it is
    still being written: a run whose calltrace was killed, not its
    program), or None."""
    pid = raw_key(raw)[0]
    target = os.path.realpath(raw)
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return None
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                return pid
        except OSError:
            continue
    return None


class RawDir:
    """The raw folder of one run, locked while this process lives."""

    def __init__(self, path: str, fd: int, temporary: bool):
        self.path, self._fd, self.temporary = path, fd, temporary

    @classmethod
    def claim(cls, output: str) -> "RawDir":
        if output == "/dev/null":
            return cls._temporary()
        path = os.path.abspath(output) + ".raw"
        for _ in range(3):
            try:
                os.mkdir(path, 0o755)
            except FileExistsError:
                if os.path.islink(path) or not os.path.isdir(path):
                    raise CalltraceError(f"{output}.raw is in the way: calltrace keeps the raw data "
                                         "of a run there; move it away") from None
            except OSError as e:
                raise CalltraceError(f"cannot create {output}.raw: {e.strerror}") from None
            fd = lock_if_free(os.path.join(path, LOCK))
            if fd is None:
                who = _owner(path).get("calltrace_pid")
                raise CalltraceError(
                    f"{output} is being written by another calltrace run"
                    + (f" (pid {who})" if who else "") + ": wait for it or choose another -o")
            if os.listdir(path) == [LOCK]:
                return cls(path, fd, False)
            others = foreign(path)
            if others:
                os.close(fd)
                raise CalltraceError(f"{output}.raw is in the way: calltrace keeps the raw data of a run "
                                     f"there, and it holds files calltrace did not write ({', '.join(others[:3])}"
                                     f"{', ...' if len(others) > 3 else ''}); move it away")
            _set_aside(path, output)
            os.close(fd)
        raise CalltraceError(f"cannot claim {path}: other runs keep replacing it")

    @classmethod
    def adopt(cls, path: str) -> "RawDir":
        """A folder left by a run that is over (calltrace convert DIR)."""
        fd = lock_if_free(os.path.join(path, LOCK))
        if fd is None:
            who = _owner(path).get("calltrace_pid")
            raise CalltraceError(f"{path} belongs to a calltrace run still going"
                                 + (f" (pid {who})" if who else ""))
        return cls(path, fd, False)

    @classmethod
    def _temporary(cls) -> "RawDir":
        """-o /dev/null: nothing to recover, so /tmp, and the folders of dead
        runs there are removed."""
        path, fd = locked_scratch("calltrace-")
        return cls(path, fd, True)

    def record(self, program_pid: int, output: str, command: list[str]) -> None:
        """What `calltrace convert OUTPUT.raw` needs to name the traces."""
        with open(os.path.join(self.path, RUN), "w") as f:
            json.dump({"calltrace_pid": os.getpid(), "pid": program_pid,
                       "output": os.path.abspath(output), "command": command}, f)

    def recovery(self) -> str:
        return f"calltrace convert {shlex.quote(self.path)}"

    def remove(self) -> None:
        """The folder and what calltrace put in it (a file someone else put
        there keeps it)."""
        if self.temporary:
            shutil.rmtree(self.path, ignore_errors=True)
        else:
            clear(self.path)
        self.release()

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _set_aside(path: str, output: str) -> None:
    """A dead run's folder: its streams go to OUTPUT.raw.old, or away when
    there are none."""
    if not streams(path):
        clear(path)
        return
    old = path + ".old"
    replaced = os.path.exists(old)
    if replaced and not clear(old):
        raise CalltraceError(f"{output}.raw.old is in the way: it holds files calltrace did not write "
                             f"({', '.join(foreign(old)[:3])}); move it away")
    os.rename(path, old)
    who = _owner(old).get("calltrace_pid")
    # Its trace gets a name of its own: the new run is about to write OUTPUT.
    name = child_output(output, "old") if not output.endswith("/") else output.rstrip("/") + ".old/"
    print(f"calltrace: note: {output}.raw held the raw data of a calltrace run that ended before "
          f"converting it{f' (pid {who})' if who else ''}; moved to {output}.raw.old"
          f"{' (replacing an older one)' if replaced else ''}: recover that trace with "
          f"`calltrace convert {shlex.quote(old)} -o {shlex.quote(name)}`", file=sys.stderr)
