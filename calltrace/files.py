"""Writing result files safely: a temporary file in the same folder, then a
rename, so a reader never sees half a file and a symlink left at the path is
replaced rather than written through. Mode 0666 minus the umask."""
from __future__ import annotations

import fcntl
import glob
import os
import shutil
import stat
import tempfile
from typing import IO, Callable

from .errors import CalltraceError


def write_atomic(path: str, write: Callable[[IO], object], what: str = "file",
                 encoding: str | None = None, errors: str = "strict", scratch: str | None = None) -> None:
    """Call `write(f)` on a temporary file (text with `encoding`, else binary
    and unbuffered, so `f.fileno()` may be written to directly), then move it
    to `path`. Nothing is left behind on any failure, Ctrl-C included. The
    temporary file is made in `scratch` (a folder on the same file system)
    when given: where a SIGKILL cannot leave it unnoticed. A device, FIFO,
    socket or anything under /dev or /proc is written into directly."""
    if _special(path):
        _write_into(path, write, what, encoding, errors)
        return
    folder = scratch or os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(prefix=".calltrace-", suffix=".tmp", dir=folder)
    except OSError as e:
        raise CalltraceError(f"cannot write {what} {path}: {e.strerror}") from None
    try:
        if encoding:
            f = os.fdopen(fd, "w", encoding=encoding, errors=errors)
        else:
            f = os.fdopen(fd, "wb", buffering=0)
        with f:
            write(f)
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError):
            raise CalltraceError(f"cannot write {what} {path}: {e.strerror or e}") from None
        raise


def _special(path: str) -> bool:
    """A device, FIFO or socket (/dev/null, /dev/stdout, a named pipe): the
    output goes into it. Renaming over it would replace the device node
    itself, for every program on the machine when we run as root."""
    full = os.path.abspath(path)
    if full.startswith(("/dev/", "/proc/")):
        return os.path.exists(full)     # /dev/stdout: a link to whatever fd 1 is, never ours to replace
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return not stat.S_ISREG(mode) and not stat.S_ISDIR(mode)


def _write_into(path: str, write: Callable[[IO], object], what: str, encoding: str | None,
                errors: str) -> None:
    try:
        if encoding:
            f = open(path, "w", encoding=encoding, errors=errors)
        else:
            f = open(path, "wb", buffering=0)
        with f:
            write(f)
    except OSError as e:
        raise CalltraceError(f"cannot write {what} {path}: {e.strerror or e}") from None


def starts_with(path: str, magic: bytes) -> bool:
    """The file at `path` begins with `magic` (False when it cannot be read)."""
    try:
        with open(path, "rb") as f:
            return f.read(len(magic)) == magic
    except OSError:
        return False


def probe_writable(output: str, folder: str) -> None:
    """Create and remove a file where the trace will go: access() says yes to
    root even on read-only file systems and /proc."""
    if output == "/dev/null":
        return
    if os.path.islink(output):
        raise CalltraceError(f"{output} is a symbolic link: refusing to write a trace through it")
    try:
        fd, probe = tempfile.mkstemp(prefix=".calltrace-probe-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise CalltraceError(f"cannot write {output}: {e.strerror}") from None


def lock_if_free(path: str, create: bool = True) -> int | None:
    """An exclusive flock on `path` (made if `create`), or None when a live
    process holds it (or, without `create`, there is none). The kernel
    drops a lock when its process ends, however it ends: a folder whose lock
    is free is a dead process's. The descriptor must be the one now at
    `path` (a dead run's folder may have been moved away between open and
    flock)."""
    flags = os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW | (os.O_CREAT if create else 0)
    while True:
        try:
            fd = os.open(path, flags, 0o644)
        except FileNotFoundError:
            if create:
                raise
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        try:
            same = os.stat(path, follow_symlinks=False).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)


LOCK = "lock"      # the file a live process holds an flock on, in a folder of its own


def locked_scratch(prefix: str) -> tuple[str, int]:
    """A new folder `prefix`XXXXXX in $TMPDIR and the descriptor of the flock
    on its LOCK, held while this process lives. Folders of the same prefix
    whose lock is free are removed first: their process is gone, however it
    ended (SIGKILL included)."""
    for old in glob.glob(os.path.join(tempfile.gettempdir(), glob.escape(prefix) + "*", LOCK)):
        try:
            fd = lock_if_free(old, create=False)
        except OSError:     # removed meanwhile by the process that made it
            continue
        if fd is not None:
            shutil.rmtree(os.path.dirname(old), ignore_errors=True)
            os.close(fd)
    path = tempfile.mkdtemp(prefix=prefix)
    # Locked before it has its name: a sweep never sees it unlocked.
    fd = os.open(os.path.join(path, ".lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.rename(os.path.join(path, ".lock"), os.path.join(path, LOCK))
    return path, fd
