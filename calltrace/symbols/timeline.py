"""The module map over time. The runtime records every loaded module at each
scan (start-up, dlopen/dlsym after a load, dlclose, the dlopen after a
dlclose, exit), each scan stamped with the clock of the events. A library
dlclose'd and another loaded at its addresses are then two *stays* at the
same addresses; the converter counts, per call, how many stays at its
address had ended before it (its era), and names it after the stay of
that era."""
from __future__ import annotations

from dataclasses import dataclass

from .resolver import Module


@dataclass(frozen=True)
class Stay:
    """One module mapped from one scan to the first scan that no longer
    lists it (`end`, in ticks; None: until the end of the run)."""
    module: Module
    end: int | None


def stays(scans: list[tuple[int, list[Module]]]) -> list[Stay]:
    """Stays in the order they began."""
    out: list[Stay] = []
    open_: dict[Module, int] = {}        # module -> index of its stay in out
    for ticks, mods in scans:
        now = set(mods)
        for m, i in list(open_.items()):
            if m not in now:
                out[i] = Stay(m, ticks)
                del open_[m]
        for m in mods:
            if m not in open_:
                open_[m] = len(out)
                out.append(Stay(m, None))
    return out


def cuts(all_stays: list[Stay]) -> list[tuple[int, int, int]]:
    """(lo, hi, ticks) of each stay that ended and whose addresses a later
    stay took: from `ticks` on, calls there are the later one's. Empty for
    the usual run, which keeps the converter's fast path."""
    out = []
    for i, s in enumerate(all_stays):
        if s.end is None:
            continue
        m = s.module
        # the same library back at the same place is the same code: no cut
        if any(t.module != m and t.module.lo < m.hi and m.lo < t.module.hi for t in all_stays[i + 1:]):
            out.append((m.lo, m.hi, s.end))
    return out


def module_at(all_stays: list[Stay], addr: int, era: int) -> Module | None:
    """The module of the era-th stay covering addr (a library back at the
    same place after another counts once per stay, like the cuts)."""
    here: list[Module] = []
    for s in all_stays:
        if s.module.lo <= addr < s.module.hi and (not here or here[-1] != s.module):
            here.append(s.module)
    return here[era] if era < len(here) else None
