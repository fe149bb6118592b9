"""The package's layers: every module imports on its own, and no two parts of the package import each other.

A part is a top-level module or subpackage (`textual_inversion.data`, `textual_inversion.methods`, ...).
Imports inside functions count: a lazy import still makes its part depend on the other one.
"""

import ast
import json
import subprocess
import sys
from pathlib import Path

import textual_inversion

PACKAGE = Path(textual_inversion.__file__).resolve().parent

IMPORT_EVERY_MODULE = """
import importlib, json, pkgutil, traceback
import textual_inversion

failures = {}
def record(name):
    failures[name] = traceback.format_exc().strip().splitlines()[-1]
for module in pkgutil.walk_packages(textual_inversion.__path__, "textual_inversion.", onerror=record):
    try:
        importlib.import_module(module.name)
    except Exception:
        record(module.name)
print(json.dumps(failures))
"""


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(name: str) -> bool:
    relative = Path(*name.split(".")[1:]) if "." in name else Path()
    return (PACKAGE / relative).with_suffix(".py").is_file() or (PACKAGE / relative / "__init__.py").is_file()


def imported_modules(path: Path) -> list[tuple[str, int]]:
    """(module of the package that `path` imports, line) for every import in it, at any depth."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module
            # `from x import y` imports the module x.y where there is one, else a name defined in x.
            found += [(f"{base}.{alias.name}" if is_module(f"{base}.{alias.name}") else base, node.lineno)
                      for alias in node.names]
    return [(target, line) for target, line in found if target.split(".")[0] == PACKAGE.name]


def part(name: str) -> str:
    """`textual_inversion.methods.lora` -> `textual_inversion.methods`; the package itself is its own part."""
    return ".".join(name.split(".")[:2])


def layer_graph() -> dict[str, dict[str, list[str]]]:
    """{part: {part it imports: ["file:line", ...]}}."""
    graph: dict[str, dict[str, list[str]]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        source = part(module_name(path))
        graph.setdefault(source, {})
        for target, line in imported_modules(path):
            if part(target) == source:
                continue
            sites = graph[source].setdefault(part(target), [])
            if (site := f"{path.relative_to(PACKAGE.parent)}:{line}") not in sites:
                sites.append(site)
    return graph


def find_cycle(graph: dict[str, dict[str, list[str]]]) -> list[str] | None:
    """One cycle of `graph` as [a, b, ..., a], or None."""
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        stack.append(node)
        for target in sorted(graph.get(node, {})):
            if state.get(target) == "open":
                return stack[stack.index(target):] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_every_module_imports_in_a_fresh_interpreter():
    result = subprocess.run([sys.executable, "-c", IMPORT_EVERY_MODULE], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    failures = json.loads(result.stdout.strip().splitlines()[-1])
    assert not failures, "modules that do not import:\n" + "\n".join(f"{k}: {v}" for k, v in failures.items())


def test_the_parts_of_the_package_import_each_other_in_one_direction_only():
    graph = layer_graph()
    assert {"textual_inversion.methods", "textual_inversion.training", "textual_inversion.miniworld"} <= set(graph)
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle between parts of the package:\n" + "\n".join(
        f"{a} -> {b} ({', '.join(graph[a][b])})" for a, b in zip(cycle, cycle[1:], strict=False))


def test_the_cycle_finder_reports_a_cycle():
    graph = {"a": {"b": ["a.py:1"]}, "b": {"c": ["b.py:2"]}, "c": {"a": ["c.py:3"]}, "d": {"a": ["d.py:4"]}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b": []}, "b": {}}) is None
