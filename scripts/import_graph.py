"""Measure Havre's import graph: modules, levels, loops, imports hidden in functions, uphill.

Reads the source with ``ast`` (nothing is imported) and prints one summary:

- modules and internal imports (module -> module, each pair once);
- levels: the longest chain of module-level imports, loops counted as one step;
- loops: groups of modules that import each other through module-level imports;
- loops hidden in functions: the loops once imports inside functions count too, and the
  imports in functions that close one (their target reaches the importing module back);
  imports under ``if TYPE_CHECKING:`` (annotations only, never run) are counted apart;
- uphill imports: imports that break the layer rules (the same rules as the import-linter
  contracts in ``pyproject.toml``, written here for the old names too, so the number before and
  after the move is comparable);
- the largest modules.

Usage: ``python scripts/import_graph.py [--json] [--list]``
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("havre", "spawner", "egress")

#: part of the product -> module prefixes (old and new names), longest prefix wins
PARTS: dict[str, tuple[str, ...]] = {
    "kernel": (
        "havre.enclave",
        "havre.sdc",
        "spawner.enclave",
        "spawner.networks",
        "spawner.ports",
        "egress.sdc",
    ),
    "safe": ("havre.safe", "egress.safe"),
    "havre": ("havre",),
    "spawner": ("spawner",),
    "egress": ("egress",),
}

#: part -> the parts it may import (itself always)
ALLOWED: dict[str, set[str]] = {
    "kernel": set(),
    "safe": {"kernel"},
    "havre": {"kernel", "safe"},
    "spawner": {"kernel", "safe", "havre"},
    "egress": {"kernel", "safe", "havre"},
}


def part_of(module: str) -> str:
    best, best_len = "", -1
    for part, prefixes in PARTS.items():
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_len:
                best, best_len = part, len(prefix)
    return best


def module_files() -> dict[str, Path]:
    modules: dict[str, Path] = {}
    for package in PACKAGES:
        root = REPO / package
        if not root.is_dir():
            continue
        for path in sorted(root.rglob("*.py")):
            if "migrations" in path.parts:
                continue
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The module a dotted name refers to: itself, or its longest known parent."""
    while name:
        if name in modules:
            return name
        if "." not in name:
            return None
        name = name.rsplit(".", 1)[0]
    return None


class _Imports(ast.NodeVisitor):
    def __init__(self, module: str, is_package: bool, modules: dict[str, Path]) -> None:
        self.module = module
        self.is_package = is_package
        self.modules = modules
        self.depth = 0  # inside functions
        self.type_only = 0  # inside `if TYPE_CHECKING:`
        self.found: list[tuple[str, str]] = []  # (target, "top" | "function" | "type")

    def _add(self, target: str | None) -> None:
        if target and target != self.module:
            kind = "type" if self.type_only else "function" if self.depth else "top"
            self.found.append((target, kind))

    def visit_FunctionDef(self, node: ast.AST) -> None:
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_If(self, node: ast.If) -> None:
        test = ast.unparse(node.test)
        if test in ("TYPE_CHECKING", "typing.TYPE_CHECKING"):
            self.type_only += 1
            for child in node.body:
                self.visit(child)
            self.type_only -= 1
            for child in node.orelse:
                self.visit(child)
        else:
            self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(resolve(alias.name, self.modules))

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            base = self.module.split(".")
            if not self.is_package:
                base = base[:-1]
            base = base[: len(base) - (node.level - 1)]
            prefix = ".".join(base + ([node.module] if node.module else []))
        else:
            prefix = node.module or ""
        for alias in node.names:
            candidate = f"{prefix}.{alias.name}"
            self._add(resolve(candidate, self.modules) or resolve(prefix, self.modules))


def strongly_connected(nodes: list[str], edges: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []
    counter = 0
    for root in nodes:
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges[child]))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    group = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        group.append(member)
                        if member == node:
                            break
                    groups.append(sorted(group))
    return groups


def reaches(edges: dict[str, set[str]], start: str, goal: str) -> bool:
    seen, todo = {start}, [start]
    while todo:
        node = todo.pop()
        if node == goal:
            return True
        for child in edges[node]:
            if child not in seen:
                seen.add(child)
                todo.append(child)
    return False


def measure() -> dict:
    modules = module_files()
    top: dict[str, set[str]] = defaultdict(set)
    inner: dict[str, set[str]] = defaultdict(set)
    typing: dict[str, set[str]] = defaultdict(set)
    for module, path in modules.items():
        visitor = _Imports(module, path.name == "__init__.py", modules)
        visitor.visit(ast.parse(path.read_text(), str(path)))
        for target, kind in visitor.found:
            {"top": top, "function": inner, "type": typing}[kind][module].add(target)
    names = sorted(modules)
    for name in names:
        top[name], inner[name], typing[name]  # noqa: B018 - make every node a key
    for name in names:
        inner[name] -= top[name]
        typing[name] -= top[name] | inner[name]

    groups = strongly_connected(names, top)
    loops = [group for group in groups if len(group) > 1]
    group_of = {member: i for i, group in enumerate(groups) for member in group}
    level: dict[int, int] = {}

    def level_of(g: int) -> int:
        if g not in level:
            level[g] = 0  # guards recursion within a group
            below = {group_of[t] for m in groups[g] for t in top[m]} - {g}
            level[g] = 1 + max((level_of(b) for b in below), default=0)
        return level[g]

    sys.setrecursionlimit(10_000)
    levels = max((level_of(g) for g in range(len(groups))), default=0)

    full = {name: top[name] | inner[name] for name in names}
    hidden_loops = [group for group in strongly_connected(names, full) if len(group) > 1]
    hidden = sorted(
        (source, target)
        for source in names
        for target in inner[source]
        if reaches(full, target, source)
    )
    type_loops = sorted(
        (source, target)
        for source in names
        for target in typing[source]
        if reaches(full, target, source)
    )
    every = {(s, t) for s in names for t in top[s] | inner[s] | typing[s]}
    uphill = sorted(
        (s, t)
        for s, t in every
        if part_of(s) != part_of(t) and part_of(t) not in ALLOWED[part_of(s)]
    )
    lines = {name: len(modules[name].read_text().splitlines()) for name in names}
    largest = sorted(lines.items(), key=lambda item: -item[1])[:8]
    return {
        "modules": len(names),
        "imports": sum(len(top[n]) + len(inner[n]) + len(typing[n]) for n in names),
        "imports_for_type_checking": sum(len(typing[n]) for n in names),
        "type_checking_imports_closing_a_loop": type_loops,
        "imports_in_functions": sum(len(inner[n]) for n in names),
        "levels": levels,
        "loops": loops,
        "loops_with_function_imports": hidden_loops,
        "hidden_loop_imports": hidden,
        "uphill_imports": uphill,
        "largest_modules": largest,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the measures as JSON")
    parser.add_argument("--list", action="store_true", help="name each loop and import")
    args = parser.parse_args(argv)
    result = measure()
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"modules: {result['modules']}")
    print(
        f"internal imports: {result['imports']} ({result['imports_in_functions']} in functions, "
        f"{result['imports_for_type_checking']} under TYPE_CHECKING)"
    )
    print(f"levels: {result['levels']}")
    print(f"import loops (module-level): {len(result['loops'])}")
    print(
        f"import loops counting imports in functions: {len(result['loops_with_function_imports'])}"
    )
    print(f"imports in functions closing a loop: {len(result['hidden_loop_imports'])}")
    print(
        "imports under TYPE_CHECKING (annotations only) closing a loop: "
        f"{len(result['type_checking_imports_closing_a_loop'])}"
    )
    print(f"uphill imports (against the layers): {len(result['uphill_imports'])}")
    print("largest modules:")
    for name, count in result["largest_modules"]:
        print(f"  {count:5d} {name}")
    if args.list:
        for loop in result["loops"]:
            print("loop:", " <-> ".join(loop))
        for loop in result["loops_with_function_imports"]:
            print("loop (with imports in functions):", " <-> ".join(loop))
        for source, target in result["hidden_loop_imports"]:
            print(f"hidden: {source} -> {target}")
        for source, target in result["type_checking_imports_closing_a_loop"]:
            print(f"type-only: {source} -> {target}")
        for source, target in result["uphill_imports"]:
            print(f"uphill: {source} -> {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
