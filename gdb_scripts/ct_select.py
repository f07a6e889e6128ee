"""-F/--function, --only and -N/--exclude on the GDB side, decided as
runtime/filter.c decides them for `calltrace run` (calltrace/symbols/select.py
says which functions match; this says which calls are recorded).

Counters, not depths: in the modes that need a subtree (-F, -N) every call
stops, so every entry of an included or excluded function is seen with its
exit, recursion included."""


class Gate:
    def __init__(self, cfg, bias):
        self.on = cfg is not None
        cfg = cfg or {}
        self.mode = cfg.get("mode")                      # "subtree", "only" or None (-N alone)
        self.include = {a + bias for a in cfg.get("include", ())}
        self.exclude = {a + bias for a in cfg.get("exclude", ())}
        self.libs = {e["path"]: e for e in cfg.get("libs", ())}
        self.open = {}                                   # tid -> [included open, excluded open]

    def library(self, path, base_of):
        """A library was loaded: its selected functions, placed
        (`base_of(text_vaddr)` gives its load bias)."""
        entry = self.libs.pop(path, None)
        if entry is not None:
            base = base_of(entry["text"])
            self.include.update(a + base for a in entry["include"])
            self.exclude.update(a + base for a in entry["exclude"])

    def enter(self, tid, fn):
        if not self.on:
            return True
        st = self.open.setdefault(tid, [0, 0])
        if fn in self.exclude:
            st[1] += 1
        if st[1]:
            return False
        if self.mode == "only":
            return fn in self.include
        if self.mode == "subtree":
            if fn in self.include:
                st[0] += 1
            return st[0] > 0
        return True

    def exit(self, tid, fn):
        if not self.on:
            return True
        st = self.open.setdefault(tid, [0, 0])
        if st[1]:
            if fn in self.exclude:
                st[1] -= 1
            return False
        if self.mode == "only":
            return fn in self.include
        if self.mode == "subtree":
            inside = st[0] > 0
            if inside and fn in self.include:
                st[0] -= 1
            return inside
        return True
