"""Build the runtime (runtime/*.c) into calltrace/_runtime/libcalltrace.so.

It is a plain shared library for LD_PRELOAD, not a Python extension, so it is
compiled here with the system C compiler rather than as an Extension."""
import os
import shlex
import subprocess
import sys

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.dist import Distribution

HERE = os.path.dirname(os.path.abspath(__file__))
# The preloaded recorder, and the converter that Python loads with ctypes: two
# libraries, so that loading the converter never starts a recording.
LIBRARIES = {
    "libcalltrace.so": ["hooks.c", "capture.c", "filter.c", "stream.c", "parts.c", "chunks.c", "meta.c",
                        "prefault.c", "spawn.c",
                        "control.c", "proc.c", "clock.c", "config.c", "lifecycle.c", "interpose.c",
                        "exec.c", "dlplan.c", "attach.c"],
    "libcalltrace-convert.so": ["convert.c", "index.c", "walk.c", "funcs.c", "live.c", "kernels.c", "format.c", "perfetto.c",
                                "tree.c", "events.c", "jsonl.c"],
}
CFLAGS = ["-std=gnu11", "-O2", "-g", "-fPIC", "-shared", "-fvisibility=hidden",
          "-fno-instrument-functions", "-fno-omit-frame-pointer", "-Wall", "-Wextra",
          "-Wno-format-truncation", "-Werror=implicit-function-declaration"]


class BuildRuntime(build_py):
    def run(self):
        super().run()
        out_dir = os.path.join(self.build_lib, "calltrace", "_runtime")
        os.makedirs(out_dir, exist_ok=True)
        cc = os.environ.get("CC", "cc")
        python = os.environ.get("CALLTRACE_BUILD_PYTHON", sys.executable)
        for name, sources in LIBRARIES.items():
            cmd = [cc, *CFLAGS, f'-DCT_PYTHON="{python}"', "-o", os.path.join(out_dir, name),
                   *[os.path.join(HERE, "runtime", s) for s in sources], "-ldl", "-lpthread"]
            print(" ".join(shlex.quote(c) for c in cmd))
            subprocess.check_call(cmd)


class BinaryDistribution(Distribution):
    def has_ext_modules(self):
        return True


setup(cmdclass={"build_py": BuildRuntime}, distclass=BinaryDistribution)
