"""Convert every raw stream of a run's raw folder (calltrace/rawdir.py) into
its JSON trace, and name the traces:

  - the program's trace is OUTPUT. When the program is a wrapper (a script,
    `nice`, `env`, ...) that runs no instrumented code itself, the one traced
    program it leads to gets OUTPUT: the first traced image after its exec
    chain, or, when it traced nothing in any image, the only other traced
    process it started;
  - every other traced process or image: OUTPUT.<pid>[-<image>].json;
  - processes and images that ran no instrumented code leave no file.

The raw streams are removed only once every trace is written, so an
interrupted conversion can simply be run again (`calltrace convert DIR`)."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass

from ..errors import CalltraceError
from .convert import Converted, convert
from .rawdir import RUN, raw_key, streams, trace_path


@dataclass
class Ending:
    """How the program ended, as its parent saw it (calltrace run)."""
    status: int
    termination: str
    signal: int | None

    @classmethod
    def from_returncode(cls, rc: int) -> "Ending":
        return cls(128 - rc, "signal", -rc) if rc < 0 else cls(rc, "exit", None)


def recorded_run(folder: str) -> tuple[int, str]:
    """(program pid, OUTPUT) of the run that left `folder`."""
    try:
        with open(os.path.join(folder, RUN)) as f:
            run = json.load(f)
        return int(run["pid"]), run["output"]
    except (OSError, ValueError, KeyError, TypeError):
        raws = streams(folder)
        if not raws:
            raise CalltraceError(f"{folder}: no raw streams (*.raw) in this folder") from None
        # The program is the first process: the smallest pid, barring wrap-around.
        name = folder[:-4] if folder.endswith(".raw") else os.path.join(folder, "calltrace.json")
        return raw_key(raws[0])[0], name


def convert_folder(folder: str, pid: int, output: str, ending: Ending | None = None, *,
                   pretty: bool | None = None, progress: bool = False,
                   keep: int | None = None, delete: bool = True,
                   opened: dict | None = None) -> tuple[list[Converted], list[str]]:
    """Convert every stream in `folder`; returns the traces written (the
    program's first) and the failures (one line each). On success the
    folder's streams are deleted (`delete`: a run's raw folder). `keep`:
    rolling output keeps the newest K parts, so older ones are not converted
    at all. `opened`: raw streams measured while the program ran, by path
    (record/live.py); each is closed here."""
    opened = dict(opened or {})
    raws = streams(folder)
    last_part, last_image = {}, {}
    for raw in raws:
        rpid, image, part = raw_key(raw)
        last_part[(rpid, image)] = max(part, last_part.get((rpid, image), 0))
        last_image[rpid] = max(image, last_image.get(rpid, 0))
    done: list[tuple[tuple[int, int, int], Converted]] = []
    failed = []
    for raw in raws:
        key = rpid, image, part = raw_key(raw)
        # The status we saw belongs to the program's last image (after any
        # exec) and its last part; earlier ones say how they ended themselves.
        main = ending is not None and rpid == pid and image == last_image[rpid] \
            and part == last_part[(rpid, image)]
        if keep and part and part <= last_part[(rpid, image)] - keep:
            continue
        out = trace_path(output, pid, raw)
        try:
            done.append((key, convert(str(raw), out, exit_status=ending.status if main else None,
                                      termination=ending.termination if main else None,
                                      signal=ending.signal if main else None, pretty=pretty,
                                      progress=progress, scratch=folder,
                                      stream=opened.pop(str(raw), None))))
        except CalltraceError as e:
            failed.append(f"{raw}: {e}")
    for stream in opened.values():
        stream.close()
    results = _name(done, pid, output)
    if not failed and delete:
        for raw in raws:
            raw.unlink()
    return results, failed


def _name(done, pid: int, output: str) -> list[Converted]:
    """Apply the naming rules of the module docstring to converted traces."""
    if output.endswith("/"):
        # A dataset (-o DIR/): each trace keeps its host=/pid= path; a
        # process that ran no instrumented code (a shell) leaves none.
        kept = [r for _, r in done if r.metadata["total_calls"] or "part" in r.metadata]
        for _, r in done:
            if r not in kept:
                try:
                    os.unlink(r.path)
                except OSError:
                    pass
        return kept
    keep, drop = [], []
    main = [(k, r) for k, r in done if k[0] == pid and not k[2] and "part" not in r.metadata]
    traced = [(k, r) for k, r in main if r.metadata["total_calls"]]
    others = [(k, r) for k, r in done if k[0] != pid]
    target = os.path.abspath(output)
    if traced:
        chosen = traced[0][1]
    else:
        chosen = main[0][1] if main else None
        spawned = [r for _, r in others if r.metadata["total_calls"]]
        if len(spawned) == 1 and "part" not in spawned[0].metadata:
            chosen = spawned[0]
    for k, r in done:
        if r is chosen:
            if os.path.abspath(r.path) != target:
                os.replace(r.path, target)
                r.path = output
            keep.insert(0, r)
        elif os.path.abspath(r.path) == target or not r.metadata["total_calls"] and "part" not in r.metadata:
            drop.append(r)
        else:
            keep.append(r)
    for r in drop:
        if os.path.abspath(r.path) != target:
            os.unlink(r.path)
    return keep
