"""The parts of lnlbench and the arrows between them, read statically from every ``import`` (``ast``).

Parts: ``core`` (errors, registry, types, files, command: what everything may import), ``engine`` (the rest
of ``bench/``: config, data, engine, contract, results, components, models, ...), ``methods``,
``datasets``, ``runner``, ``aggregate``, ``perf`` and ``cli`` (the top, which imports the others).
Every import counts, including those inside functions. ``python tests/test_architecture.py`` prints the graph.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCES = {"bench": "lnlbench", "methods": "lnlbench.methods", "datasets": "lnlbench.datasets"}
CORE = {"errors", "registry", "types", "files", "command"}
SUBPARTS = {"methods": "methods", "datasets": "datasets", "runner": "runner", "aggregate": "aggregate",
            "perf": "perf", "cli": "cli"}


def modules() -> dict[str, Path]:
    """Dotted module name → file, for every Python file of the package."""
    out = {}
    for folder, package in SOURCES.items():
        for path in (ROOT / folder).rglob("*.py"):
            rel = path.relative_to(ROOT / folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            out[".".join([package, *parts])] = path
    return out


def part_of(module: str) -> str | None:
    """The part a dotted ``lnlbench...`` module name belongs to (None: not lnlbench)."""
    names = module.split(".")
    if names[0] != "lnlbench":
        return None
    if len(names) == 1:
        return "core"
    if names[1] in SUBPARTS:
        return SUBPARTS[names[1]]
    return "core" if names[1] in CORE else "engine"


def imports(module: str, path: Path) -> set[str]:
    """Every module ``path`` imports (absolute names; relative imports resolved against ``module``)."""
    is_pkg = path.name == "__init__.py"
    package = module.split(".") if is_pkg else module.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            name = ".".join([*base, *(node.module.split(".") if node.module else [])])
            found.add(name)
            found.update(f"{name}.{a.name}" for a in node.names if f"{name}.{a.name}" in modules())
    return found


def part_graph() -> dict[str, set[str]]:
    """part → the other parts it imports."""
    graph: dict[str, set[str]] = {}
    for module, path in modules().items():
        src = part_of(module)
        graph.setdefault(src, set())
        for name in imports(module, path):
            dst = part_of(name)
            if dst is not None and dst != src:
                graph[src].add(dst)
    return graph


def cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph as a path, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = 2
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_parts_import_each_other_without_a_cycle():
    graph = part_graph()
    assert set(graph) == {"core", "engine", "methods", "datasets", "runner", "aggregate", "perf", "cli"}
    assert cycle(graph) is None, f"import cycle between parts: {' -> '.join(cycle(graph))}"
    assert graph["core"] == set()  # errors, registry, types, files, command import no other part
    assert graph["datasets"] == {"core"}  # the data types live in lnlbench.types, not in the engine
    assert graph["aggregate"] == {"core"}  # result files in, tables out: no torch, no engine
    assert graph["methods"] <= {"core", "engine"}  # the contract and shared components, never the runner
    assert "perf" not in graph["runner"] and "cli" not in set().union(*(graph[p] for p in graph if p != "cli"))


def test_no_module_imports_itself_back():
    """Within and across parts, e.g. no perf.py <-> perf_trials.py circle (a module's own parent packages,
    which Python imports first anyway, do not count)."""
    mods = modules()
    graph = {m: {n for n in imports(m, p) if n in mods and n != m and not m.startswith(n + ".")}
             for m, p in mods.items()}
    assert cycle(graph) is None, f"import cycle: {' -> '.join(cycle(graph))}"


def test_a_cycle_is_found():  # the checker itself
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert cycle({"a": {"b"}, "b": set()}) is None


def test_ray_is_imported_only_under_the_runner():
    for module, path in modules().items():
        if any(name == "ray" or name.startswith("ray.") for name in imports(module, path)):
            assert module.startswith("lnlbench.runner."), f"{path.relative_to(ROOT)} imports ray"


def test_commands_are_declarations_not_registrations():
    """No CLI module walks ``sys.modules`` or registers into another module; lnlbench.cli reads tuples."""
    from lnlbench.aggregate.cli import COMMANDS as AGGREGATE
    from lnlbench.cli import COMMANDS
    from lnlbench.runner.cli import COMMANDS as RUNNER

    for path in (ROOT / "bench" / "cli.py", ROOT / "bench" / "runner" / "cli.py", ROOT / "bench" / "aggregate" / "cli.py"):
        assert "sys.modules" not in path.read_text(), path
    assert [c.name for c in (*AGGREGATE, *RUNNER)] == [n for n in COMMANDS if n not in ("list", "trial", "noise", "perf")]


if __name__ == "__main__":
    for src, dsts in sorted(part_graph().items()):
        print(f"{src:>9} -> {', '.join(sorted(dsts)) or '(nothing)'}")
