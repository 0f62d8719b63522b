"""The house: roles meet only through the wire, and the package has no import cycle."""

from __future__ import annotations

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "taylorism_zmq"
ROLES = ("boss", "agent", "client")
#: what each folder must not import
FORBIDDEN = {"boss": {"agent", "client", "launch"}, "agent": {"boss", "client"}, "client": {"boss", "agent"},
             "wire": {"boss", "agent", "client", "launch"},
             # task processes and their launchers: forked by agents, and by clients with the embedded default
             "launch": {"boss", "agent", "client"}}


def _module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: pathlib.Path, top_level_only: bool) -> set[str]:
    """Modules of the package that *path* imports (module level only, outside TYPE_CHECKING, if asked)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    modules = {_module_name(p) for p in PACKAGE.rglob("*.py")}
    return {m for m in found if m in modules and m != name}


def _folder(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in FORBIDDEN) else None


@pytest.mark.parametrize("folder", sorted(FORBIDDEN))
def test_roles_meet_only_through_the_wire(folder):
    offences = []
    for path in sorted((PACKAGE / folder).rglob("*.py")):
        for module in _imports(path, top_level_only=False):
            if _folder(module) in FORBIDDEN[folder]:
                offences.append(f"{_module_name(path)} imports {module}")
    assert not offences, offences


def test_the_role_folders_exist():
    for folder in (*ROLES, "wire", "launch"):
        assert (PACKAGE / folder / "__init__.py").is_file(), folder


def test_no_import_cycle_at_module_level():
    graph = {_module_name(p): _imports(p, top_level_only=True) for p in PACKAGE.rglob("*.py")}
    # a package's __init__ imported by its own modules is how Python loads them, not a cycle
    for module, deps in graph.items():
        graph[module] = {d for d in deps if not module.startswith(d + ".")}
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        path.append(module)
        for dep in sorted(graph.get(module, ())):
            if state.get(dep) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*path[path.index(dep):], dep]))
            if dep not in state:
                visit(dep)
        path.pop()
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)
