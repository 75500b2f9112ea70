"""The package's import graph: acyclic, and every import points down the layers.

Counted: every ``import`` and ``from ... import`` anywhere in a module (functions
included), the package ``__init__`` as the module ``portclone``, and the registry's
lazy import paths.  Imports under ``if TYPE_CHECKING:`` are left out: they never run.
CONTRIBUTING.md draws the same layers.
"""

from __future__ import annotations

import ast
import pathlib
from typing import Dict, Iterator, List, Optional, Set

from portclone._registry import BACKENDS

SRC = pathlib.Path(__file__).resolve().parent.parent / "src" / "portclone"

#: Bottom to top.  A module may import from its own layer (acyclically) and below.
LAYERS: List[List[str]] = [
    ["portclone._common"],
    ["portclone._flags"],
    ["portclone._errors"],
    [
        "portclone._validate",
        "portclone._loader",
        "portclone._communicate",
        "portclone._docs",
        "portclone._procns",
        "portclone._caller",
        "portclone._subids",
    ],
    ["portclone._sigfd"],
    ["portclone._childside"],
    ["portclone._child"],
    ["portclone._setup"],
    ["portclone._plan"],
    ["portclone._check"],
    ["portclone._backend"],
    [
        "portclone.backends",
        "portclone.backends.linux",
        "portclone.backends.netbsd",
        "portclone.backends.fork",
    ],
    ["portclone._registry"],
    ["portclone._api"],
    ["portclone"],
    ["portclone.cli._common", "portclone.cli._getopt", "portclone.cli._syscalls"],
    ["portclone.cli._dropin"],
    ["portclone.cli._idmaps"],
    ["portclone.cli._reports"],
    ["portclone.cli._commands", "portclone.cli._unshare", "portclone.cli._nsenter"],
    ["portclone.cli._run"],
    ["portclone.cli", "portclone._cli", "portclone.__main__", "portclone.pytest_plugin"],
]
LAYER = {module: n for n, layer in enumerate(LAYERS) for module in layer}


def _name(path: pathlib.Path) -> str:
    parts = ["portclone", *path.relative_to(SRC).with_suffix("").parts]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _is_module(package: str, name: str) -> bool:
    """Whether ``package.name`` is a module of ours: Python source, or the C extension."""
    if not package.startswith("portclone"):
        return False
    folder = SRC.joinpath(*package.split(".")[1:], name)
    return any(folder.with_suffix(ext).exists() for ext in (".py", ".c")) or folder.is_dir()


def _imports(tree: ast.AST, module: str, is_package: bool) -> Iterator[str]:
    package = module if is_package else module.rpartition(".")[0]
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            submodules = [alias.name for alias in node.names if _is_module(base, alias.name)]
            if submodules:  # from . import _native: the modules, not the package's names
                yield from (f"{base}.{name}" for name in submodules)
            else:
                yield base
        stack.extend(ast.iter_child_nodes(node))


def graph() -> Dict[str, Set[str]]:
    modules = {_name(p): p for p in SRC.rglob("*.py")}
    edges: Dict[str, Set[str]] = {}
    for module, path in modules.items():
        tree = ast.parse(path.read_text(), str(path))
        found = {
            target
            for target in _imports(tree, module, path.name == "__init__.py")
            if target in modules and target != module
        }
        edges[module] = found
    edges["portclone._registry"] |= {f"portclone.backends.{name}" for name in BACKENDS}
    return edges


def test_every_module_has_a_layer() -> None:
    assert sorted(graph()) == sorted(LAYER)


def test_imports_point_down_the_layers() -> None:
    upward = [
        f"{module} (layer {LAYER[module]}) imports {target} (layer {LAYER[target]})"
        for module, targets in graph().items()
        for target in sorted(targets)
        if LAYER[target] > LAYER[module]
    ]
    assert not upward


def find_cycle(edges: Dict[str, Set[str]]) -> Optional[List[str]]:
    """A cycle in ``edges`` (as the modules along it), or None."""
    done: Set[str] = set()

    def visit(module: str, path: List[str]) -> Optional[List[str]]:
        if module in path:
            return [*path[path.index(module) :], module]
        if module in done:
            return None
        for target in sorted(edges[module]):
            cycle = visit(target, [*path, module])
            if cycle:
                return cycle
        done.add(module)
        return None

    for module in sorted(edges):
        cycle = visit(module, [])
        if cycle:
            return cycle
    return None


def test_the_import_graph_has_no_cycle() -> None:
    cycle = find_cycle(graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_cycle_check_finds_a_planted_cycle() -> None:
    edges = graph()
    edges["portclone._flags"] = {"portclone._api"}
    cycle = find_cycle(edges)
    assert cycle is not None and cycle[0] == cycle[-1] and "portclone._flags" in cycle


#: No module over this many lines: a file that grows past it holds more than one job.
MAX_LINES = 600
#: The flag table is one table, whatever its length: listed here so that the list stays
#: exact, and no file joins it unnoticed.
OVER_THE_LIMIT = {
    "_flags.py": "the flag table: one table",
}


def test_no_module_is_over_the_limit() -> None:
    sizes = {
        str(path.relative_to(SRC)): len(path.read_text().splitlines())
        for path in sorted(SRC.rglob("*"))
        if path.suffix in (".py", ".c", ".h") and "__pycache__" not in path.parts
    }
    over = {name for name, n in sizes.items() if n > MAX_LINES}
    assert over == set(OVER_THE_LIMIT), {name: sizes.get(name) for name in over ^ set(OVER_THE_LIMIT)}


def _source_files() -> Iterator[pathlib.Path]:
    return (path for path in sorted(SRC.rglob("*.py")) if "__pycache__" not in path.parts)


def test_only_common_tests_the_platform() -> None:
    """psutil's rule: one module says which system this is (``_common.LINUX`` ...)."""
    testing = set()
    for path in _source_files():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr == "platform":
                if isinstance(node.value, ast.Name) and node.value.id == "sys":
                    testing.add(_name(path))
    assert testing == {"portclone._common"}


def test_the_backend_names_are_listed_once() -> None:
    names = {"linux", "netbsd", "fork"}
    listing = set()
    for path in _source_files():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Tuple, ast.List, ast.Set, ast.Dict)):
                items = node.keys if isinstance(node, ast.Dict) else node.elts
                found = {item.value for item in items if isinstance(item, ast.Constant)}
                if names <= found:
                    listing.add(_name(path))
    assert listing == {"portclone._common"}
