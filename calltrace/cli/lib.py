"""``calltrace lib``: print the runtime library's path, for LD_PRELOAD."""
from ..runtime import library_path

NAME = "lib"
HELP = "print the absolute path of libcalltrace.so (for LD_PRELOAD)"


def add_arguments(parser) -> None:
    pass


def run(args) -> int:
    print(library_path())
    return 0
