"""Turn gdb.Value objects into trace VALUE objects (docs/FORMAT.md).

Runs inside GDB (stdlib + gdb only). Everything that reads inferior memory
(strings, --deref) happens here, at stop time, because the values are gone
once the inferior resumes.
"""
import math
import re

import gdb

STR_CAP = 256          # bytes of a string copied per argument
ARRAY_CAP = 32         # elements of an array member
NEST_CAP = 4           # struct nesting levels
CHAR_NAMES = {"char", "signed char", "unsigned char"}
_enum_names = {}       # type name -> [(type, {value: enumerator})]
_fn_names = {}         # address -> "0x401136 <compare>"



def escape_char(code):
    """One byte as FORMAT.md wants it: itself when printable (or \\n, \\t),
    else a literal backslash escape."""
    c = chr(code & 0xFF)
    if c in "\n\t\r" or 0x20 <= (code & 0xFF) < 0x7F:
        return c
    return "\\x%02x" % (code & 0xFF)


def decode_bytes(raw):
    """Bytes of a C string: UTF-8 where valid, other bytes as \\xNN escapes."""
    text = raw.decode("utf-8", errors="backslashreplace")
    if any(ord(ch) < 0x20 and ch not in "\n\t\r" for ch in text):
        text = "".join(ch if (ord(ch) >= 0x20 or ch in "\n\t\r") else "\\x%02x" % ord(ch)
                       for ch in text)
    return text


def read_string(addr, cap=None):
    """(text, note): a NUL-terminated string at addr, at most cap bytes."""
    cap = STR_CAP if cap is None else cap
    inf = gdb.selected_inferior()
    out = b""
    # Read up to page boundaries so a short string at the end of a mapping works.
    while len(out) <= cap:
        want = min(cap + 1 - len(out), 4096 - ((addr + len(out)) % 4096))
        try:
            chunk = inf.read_memory(addr + len(out), want).tobytes()
        except (gdb.MemoryError, gdb.error):
            if not out:
                return None, "invalid pointer"
            break
        nul = chunk.find(b"\0")
        if nul >= 0:
            return decode_bytes(out + chunk[:nul]), None
        out += chunk
    if len(out) > cap:
        return decode_bytes(out[:cap]), "truncated"
    return decode_bytes(out), "unreadable"


def fn_pointer(addr):
    """"0x401136 <compare>" for a code address (cached per address)."""
    s = _fn_names.get(addr)
    if s is None:
        name = None
        try:
            b = gdb.block_for_pc(addr)
            while b is not None and b.function is None:
                b = b.superblock
            if b is not None and b.function is not None and b.start == addr:
                name = b.function.print_name
        except RuntimeError:
            pass
        if name is None:
            m = re.search(r"<([^>+]+)>", str(gdb.Value(addr).cast(
                gdb.lookup_type("void").function().pointer())))
            name = m.group(1) if m else None
        s = "0x%x <%s>" % (addr, name) if name else "0x%x" % addr
        _fn_names[addr] = s
    return s


def enum_name(t, n):
    """The enumerator of value n in enum type t. Cached by the type itself:
    anonymous enums all print as "enum {...}" (gdb.Type is unhashable, so
    the types of one printed name are told apart with ==)."""
    seen = _enum_names.setdefault(str(t), [])
    table = next((tab for typ, tab in seen if typ == t), None)
    if table is None:
        table = {int(f.enumval): f.name for f in t.fields()}
        seen.append((t, table))
    return table.get(n, n)


def plain(val, level=0, deref=False):
    """(json value, note) for a gdb.Value: the `value` part of a VALUE."""
    if val.is_optimized_out:
        return None, "optimized out"
    declared = val.type
    t = declared.strip_typedefs()
    code = t.code
    try:
        if code == gdb.TYPE_CODE_INT:
            n = int(val)
            name = declared.unqualified().name
            if name in CHAR_NAMES or (t.name in CHAR_NAMES and name is None):
                return escape_char(n), None
            return n, None
        if code == gdb.TYPE_CODE_CHAR:
            return escape_char(int(val)), None
        if code == gdb.TYPE_CODE_BOOL:
            return bool(int(val)), None
        if code == gdb.TYPE_CODE_FLT:
            x = float(val)
            if math.isnan(x):
                return "nan", None
            if math.isinf(x):
                return ("inf" if x > 0 else "-inf"), None
            return x, None
        if code == gdb.TYPE_CODE_ENUM:
            return enum_name(t, int(val)), None
        if code == gdb.TYPE_CODE_PTR:
            return pointer(val, t, level, deref)
        if code == gdb.TYPE_CODE_STRUCT and is_std_string(t):
            return std_string(val)
        if code in (gdb.TYPE_CODE_STRUCT, gdb.TYPE_CODE_UNION):
            if level >= NEST_CAP:
                return "{...}", "truncated"
            out, note = {}, None
            for f in t.fields():
                if f.is_base_class or f.name is None or not hasattr(f, "bitpos"):
                    continue
                v, n = plain(val[f], level + 1)
                out[f.name] = v
                note = note or (n if n == "truncated" else None)
            return out, note
        if code == gdb.TYPE_CODE_ARRAY:
            return array(val, t, level)
        if code == gdb.TYPE_CODE_FUNC:
            return fn_pointer(int(val.address)), None
        if code == gdb.TYPE_CODE_REF or code == gdb.TYPE_CODE_RVALUE_REF:
            return plain(val.referenced_value(), level + 1)
        return str(val), None
    except gdb.MemoryError:
        return None, "unreadable"
    except gdb.error as e:
        if "optimized out" in str(e):
            return None, "optimized out"
        return None, "unavailable"


def is_std_string(t):
    """libstdc++'s std::string (C++11 ABI): pointer, size, small buffer."""
    return t.sizeof == 32 and (t.name or "").startswith("std::__cxx11::basic_string<char,")


def std_string(val):
    """A std::string as its text, capped like a char * (the runtime reads
    the same bytes through its pointer)."""
    addr = int(val["_M_dataplus"]["_M_p"])
    size = int(val["_M_string_length"])
    if size == 0:
        return "", None
    try:
        raw = gdb.selected_inferior().read_memory(addr, min(size, STR_CAP)).tobytes()
    except (gdb.MemoryError, gdb.error):
        return "0x%x" % addr, "invalid pointer"
    return decode_bytes(raw), ("truncated" if size > STR_CAP else None)


def synthetic_string(val):
    """A char * to a constant the compiler folded away (an implicit
    pointer): GDB gives 0 as its address but can index it."""
    out = bytearray()
    try:
        while len(out) <= STR_CAP:
            c = int(val[len(out)]) & 0xFF
            if c == 0:
                return decode_bytes(bytes(out)), None
            out.append(c)
    except gdb.error:
        return decode_bytes(bytes(out)), "unreadable"
    return decode_bytes(bytes(out[:STR_CAP])), "truncated"


def pointer(val, t, level, deref):
    addr = int(val)
    target = t.target().strip_typedefs()
    if addr == 0 and str(val) == "<synthetic pointer>" and not (
            target.code == gdb.TYPE_CODE_INT and target.name in CHAR_NAMES):
        return None, "optimized out"   # an object with no address: GDB says 0
    if target.code == gdb.TYPE_CODE_FUNC:
        return (fn_pointer(addr) if addr else "0x0"), None
    if target.code == gdb.TYPE_CODE_INT and target.name in CHAR_NAMES:
        if addr == 0 and str(val) == "<synthetic pointer>":
            return synthetic_string(val)
        if addr == 0:
            return None, None
        text, note = read_string(addr)
        if text is None:
            return "0x%x" % addr, note
        return text, note
    return "0x%x" % addr, None


def array(val, t, level):
    lo, hi = t.range()
    n = hi - lo + 1
    elem = t.target().strip_typedefs()
    if elem.code == gdb.TYPE_CODE_INT and elem.name in CHAR_NAMES:
        raw = bytes(int(val[i]) & 0xFF for i in range(lo, lo + min(n, STR_CAP)))
        return decode_bytes(raw.split(b"\0", 1)[0]), None
    out = [plain(val[i], level + 1)[0] for i in range(lo, lo + min(n, ARRAY_CAP))]
    return out, ("truncated" if n > ARRAY_CAP else None)


def entry_value(frame, name):
    """name@entry: the argument's value at the call, from the caller's
    DW_TAG_call_site (DW_OP_entry_value), when DWARF offers it; or None."""
    try:
        frame.select()
        val = gdb.parse_and_eval(name + "@entry")
        if val.is_optimized_out:
            return None
        val.fetch_lazy()
        return val
    except gdb.error:
        return None
    finally:
        gdb.newest_frame().select()     # registers are read from the selected frame


def value(name, val, deref=False):
    """A complete VALUE object {name, type, value, note?[, deref]}."""
    v, note = plain(val, 0, deref)
    d = {"name": name, "type": str(val.type), "value": v} if name is not None else \
        {"type": str(val.type), "value": v}
    if note:
        d["note"] = note
    if deref and note is None and isinstance(v, str) and v.startswith("0x") and v != "0x0":
        t = val.type.strip_typedefs()
        if t.code == gdb.TYPE_CODE_PTR and t.target().strip_typedefs().code in (
                gdb.TYPE_CODE_STRUCT, gdb.TYPE_CODE_UNION):
            try:
                target, tnote = plain(val.dereference(), 1)
                d["deref"] = target
            except gdb.error:
                d["deref"] = None
    return d


def return_value(frame, rtype):
    """The value a function of return type rtype just returned, read at the
    return site (or at its `ret`): x86-64 System V classification."""
    t = rtype.strip_typedefs()
    code = t.code
    if code == gdb.TYPE_CODE_VOID:
        return None
    if code == gdb.TYPE_CODE_FLT:
        if t.sizeof == 4:
            return frame.read_register("xmm0")["v4_float"][0].cast(rtype)
        if t.sizeof == 8:
            return frame.read_register("xmm0")["v2_double"][0].cast(rtype)
        return frame.read_register("st0").cast(rtype)
    if code in (gdb.TYPE_CODE_STRUCT, gdb.TYPE_CODE_UNION, gdb.TYPE_CODE_ARRAY):
        if t.sizeof > 16 or not _all_flat(t):
            addr = int(frame.read_register("rax"))
            return gdb.Value(addr).cast(rtype.pointer()).dereference()
        ints = [frame.read_register("rax"), frame.read_register("rdx")]
        sses = [frame.read_register("xmm0"), frame.read_register("xmm1")]
        raw = b""
        for i in range((t.sizeof + 7) // 8):
            if _eightbyte_is_sse(t, i):
                reg = sses.pop(0)
                raw += int(reg["v2_int64"][0]).to_bytes(8, "little", signed=True)
            else:
                reg = ints.pop(0)
                raw += int(reg).to_bytes(8, "little", signed=True)
        return gdb.Value(raw[:t.sizeof], rtype)
    return frame.read_register("rax").cast(rtype)


def _leaves(t, base=0):
    """(offset, type) of every scalar inside a struct/union/array."""
    t = t.strip_typedefs()
    if t.code in (gdb.TYPE_CODE_STRUCT, gdb.TYPE_CODE_UNION):
        for f in t.fields():
            if hasattr(f, "bitpos") and f.type is not None:
                yield from _leaves(f.type, base + f.bitpos // 8)
    elif t.code == gdb.TYPE_CODE_ARRAY:
        et = t.target()
        for i in range(t.sizeof // max(1, et.sizeof)):
            yield from _leaves(et, base + i * et.sizeof)
    else:
        yield base, t


def _all_flat(t):
    # long double (x87) members force memory class; keep it simple.
    return all(not (lt.code == gdb.TYPE_CODE_FLT and lt.sizeof > 8) for _, lt in _leaves(t))


def _eightbyte_is_sse(t, i):
    kinds = [lt.code == gdb.TYPE_CODE_FLT for off, lt in _leaves(t) if off // 8 == i]
    return bool(kinds) and all(kinds)
