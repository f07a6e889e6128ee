"""The aggregated call tree (one node per distinct call path), the shape
behind flame graphs. Its size is the number of distinct paths, not calls."""
from __future__ import annotations

from typing import Iterable, Iterator

from ..trace.model import Thread


class Node:
    __slots__ = ("name", "calls", "total_ns", "children")

    def __init__(self, name: str):
        self.name = name
        self.calls = 0
        self.total_ns = 0
        self.children: dict[str, Node] = {}

    @property
    def self_ns(self) -> int:
        return max(0, self.total_ns - sum(c.total_ns for c in self.children.values()))


def call_tree(threads: Iterable[Thread], root_name: str = "all") -> Node:
    """Merge the calls of ``threads`` by call path; the root's total is the
    sum of the outermost calls."""
    root = Node(root_name)
    for t in threads:
        stack = [root]
        for fn, depth, _, dur, _ in t.rows():
            del stack[depth + 1:]
            parent = stack[-1]
            node = parent.children.get(fn)
            if node is None:
                node = parent.children[fn] = Node(fn)
            node.calls += 1
            node.total_ns += dur
            if depth == 0:
                root.total_ns += dur
            stack.append(node)
    root.calls = 1
    return root


def walk(root: Node) -> Iterator[tuple[list[str], Node]]:
    """Depth-first, children by name, without recursion (deep traces)."""
    path: list[str] = []
    todo: list[tuple[int, Node]] = [(0, c) for c in sorted(root.children.values(),
                                                             key=lambda n: n.name, reverse=True)]
    while todo:
        depth, node = todo.pop()
        del path[depth:]
        path.append(node.name)
        yield path, node
        todo.extend((depth + 1, c) for c in sorted(node.children.values(),
                                                   key=lambda n: n.name, reverse=True))
