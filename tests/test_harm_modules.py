"""Issue 9.10: a library loaded by a relative path (dlopen("./libx.so"), or
found through LD_LIBRARY_PATH=.) is named in the module list, so its
functions get their names."""
from __future__ import annotations

import os
import shutil

import pytest

from conftest import FIXTURES
from harm import bare, calls, native, run, same_as_native, trace

TREE = [(0, "main"), (1, "load"), (1, "use"), (2, "plugin_entry"), (3, "twice"),
        (1, "use"), (2, "plugin_entry"), (3, "twice")]


@pytest.fixture
def here(tmp_path):
    """dlopener and its plugin copied into the working folder: run as
    ./dlopener it loads "./libplugin.so"; run as dlopener (from PATH) it
    loads "libplugin.so", found through LD_LIBRARY_PATH=."""
    for name in ("dlopener", "libplugin.so"):
        shutil.copy2(FIXTURES / name, tmp_path / name)
    (tmp_path / "out").mkdir()
    return tmp_path


@pytest.mark.parametrize("argv0,env", [("./dlopener", {}),
                                       ("dlopener", {"LD_LIBRARY_PATH": "."})])
@pytest.mark.parametrize("how", ["bare", "run"])
def test_relative_library_named(here, argv0, env, how):
    env = {**env, "PATH": f"{here}:{os.environ['PATH']}"}
    ref = native([argv0], here, env)
    assert ref.stdout == b"plugin 7 9\n"
    if how == "bare":
        proc = bare([argv0], here, output="out/t.json", env=env)
    else:
        proc = run([argv0], here, output="out/t.json", env=env)
    same_as_native(proc, ref)
    assert os.listdir(here / "out") == ["t.json"]
    doc = trace(here / "out" / "t.json")
    assert calls(doc) == TREE
    (f,) = [f for f in doc["functions"] if f["function"] == "plugin_entry"]
    assert f["module"] == str(here / "libplugin.so") and f["line"] == 5
