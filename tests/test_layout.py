"""The house: roles meet only through the wire, and the package has no import cycle (TYPE_CHECKING and
function-level imports included)."""

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


def _module_name(path: pathlib.Path, root: pathlib.Path = PACKAGE) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: pathlib.Path, root: pathlib.Path = PACKAGE) -> set[str]:
    """Modules of the package at *root* that *path* imports: anywhere in it, at module level, in a function or
    under ``if TYPE_CHECKING:`` (a cycle of annotations is a cycle a reader follows)."""
    name = _module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
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
    modules = {_module_name(p, root) for p in root.rglob("*.py")}
    return {m for m in found if m in modules and m != name}


def _folder(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in FORBIDDEN) else None


@pytest.mark.parametrize("folder", sorted(FORBIDDEN))
def test_roles_meet_only_through_the_wire(folder):
    offences = []
    for path in sorted((PACKAGE / folder).rglob("*.py")):
        for module in _imports(path):
            if _folder(module) in FORBIDDEN[folder]:
                offences.append(f"{_module_name(path)} imports {module}")
    assert not offences, offences


def test_the_role_folders_exist():
    for folder in (*ROLES, "wire", "launch"):
        assert (PACKAGE / folder / "__init__.py").is_file(), folder


def _cycle(root: pathlib.Path) -> list[str] | None:
    """An import cycle of the package at *root*, as the modules on it, or None."""
    graph = {_module_name(p, root): _imports(p, root) for p in root.rglob("*.py")}
    # a package's __init__ imported by its own modules is how Python loads them, not a cycle
    for module, deps in graph.items():
        graph[module] = {d for d in deps if not module.startswith(d + ".")}
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        path.append(module)
        for dep in sorted(graph.get(module, ())):
            if state.get(dep) == 1:
                return [*path[path.index(dep):], dep]
            if dep not in state and (found := visit(dep)):
                return found
        path.pop()
        state[module] = 2
        return None

    for module in sorted(graph):
        if module not in state and (found := visit(module)):
            return found
    return None


def test_no_import_cycle():
    cycle = _cycle(PACKAGE)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


@pytest.mark.parametrize("how", ["module level", "TYPE_CHECKING", "in a function"])
def test_a_cycle_is_seen_however_its_imports_are_written(tmp_path, how):
    root = tmp_path / "pkg"
    root.mkdir()
    (root / "__init__.py").write_text("")
    (root / "a.py").write_text("from . import b\n")
    back = {"module level": "from .a import x\n",
            "TYPE_CHECKING": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .a import x\n",
            "in a function": "def f():\n    from .a import x\n    return x\n"}[how]
    (root / "b.py").write_text(back)
    assert _cycle(root) == ["pkg.a", "pkg.b", "pkg.a"]
    (root / "b.py").write_text("")
    assert _cycle(root) is None
