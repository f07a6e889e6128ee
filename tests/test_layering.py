"""The package's layers (docs/ARCHITECTURE.md): who may import whom."""
from __future__ import annotations

import ast

from conftest import ROOT

PKG = ROOT / "calltrace"     # the source tree: an installed copy can hold files since removed


def imports() -> dict[str, set[str]]:
    """calltrace module -> the calltrace modules it imports (absolute names)."""
    out = {}
    for path in PKG.rglob("*.py"):
        rel = path.relative_to(PKG.parent).with_suffix("")
        mod = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        package = mod if rel.name == "__init__" else mod.rsplit(".", 1)[0]
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
                found.add(target)
                found.update(f"{target}.{a.name}" for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("calltrace"):
                found.add(node.module)
            elif isinstance(node, ast.Import):
                found.update(a.name for a in node.names if a.name.startswith("calltrace"))
        out[mod] = found
    return out


def offenders(src: str, dst: str) -> list[tuple[str, str]]:
    return sorted((m, t) for m, ts in imports().items() if m.startswith(src + ".") or m == src
                  for t in ts if t == dst or t.startswith(dst + "."))


def test_trace_and_symbols_do_not_import_each_other():
    assert offenders("calltrace.trace", "calltrace.symbols") == []
    assert offenders("calltrace.symbols", "calltrace.trace") == []
    assert offenders("calltrace.symbols", "calltrace.record") == []
    assert offenders("calltrace.trace", "calltrace.record") == []


def test_only_the_entry_point_imports_the_cli():
    outside = {m for m, t in offenders("calltrace", "calltrace.cli") if not m.startswith("calltrace.cli")}
    assert outside == {"calltrace.__main__"}


def test_commands_import_no_other_command():
    shared = {"calltrace.cli.options"}
    bad = [(m, t) for m, t in offenders("calltrace.cli", "calltrace.cli")
           if m != "calltrace.cli" and t.rsplit(".", 1)[0] not in shared and t not in shared
           and t != "calltrace.cli" and t != m]
    assert bad == []


def test_the_cli_owns_no_file_format():
    """No struct packing, no ctypes, no file-format constants in the commands."""
    for path in (PKG / "cli").glob("*.py"):
        text = path.read_text()
        assert "import struct" not in text and "import ctypes" not in text, path.name
        assert "MAGIC" not in text and "b\"CT" not in text, path.name


def test_commands_are_an_explicit_list():
    from calltrace import cli
    names = [p.stem for p in (PKG / "cli").glob("*.py") if p.stem not in ("__init__", "options")]
    assert sorted(cli.COMMANDS + cli.INTERNAL) == sorted(names)
