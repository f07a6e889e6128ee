"""C++ demangling through binutils' c++filt, one process for all names."""
from __future__ import annotations

import shutil
import subprocess


def demangle(names: list[str]) -> dict[str, str]:
    """Mangled -> readable, for the names that look mangled. Names c++filt
    cannot read are left as they are."""
    mangled = sorted({n for n in names if n.startswith("_Z")})
    if not mangled:
        return {}
    tool = shutil.which("c++filt")
    if tool is None:
        return {}
    try:
        out = subprocess.run([tool], input="\n".join(mangled) + "\n", capture_output=True,
                             text=True, timeout=60, check=True).stdout.split("\n")
    except (OSError, subprocess.SubprocessError):
        return {}
    return {m: d for m, d in zip(mangled, out) if d}
