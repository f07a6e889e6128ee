"""The aggregated call tree (one node per distinct call path), the shape
behind flame graphs. Its size is the number of distinct paths, not calls:
the calls are merged by a native kernel (trace/events.Tree), and only the
nodes become Python objects."""
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
    """Merge the calls of ``threads`` (through their view's -F/-N/-D/-t) by
    call path; the root's total is the sum of the outermost calls."""
    from ..trace.colsource import Names, columns
    from ..trace.events import Tree
    from .paths import Filter
    from .view import selection
    names = Names()
    tree = None
    try:
        for t in threads:
            thread, flt, _ = selection(t)
            tree = tree or Tree(names, flt)
            tree.feed(columns(thread, names, lean=True))
        if tree is None:
            tree = Tree(names, Filter())
        parent, func, calls, total = tree.nodes()
    finally:
        if tree is not None:
            tree.close()
    root = Node(root_name)
    root.calls = 1
    root.total_ns = int(total[0])
    nodes = [root]
    fn = names.names
    for p, f, n, tot in zip(parent[1:].tolist(), func[1:].tolist(), calls[1:].tolist(), total[1:].tolist()):
        node = Node(fn[f])
        node.calls = n
        node.total_ns = tot
        nodes[p].children[node.name] = node
        nodes.append(node)
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
