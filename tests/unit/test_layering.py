"""The layering rule, checked on the imports of every module of every workspace member.

    faxbox.shared            imports no other faxbox package
    libraries (fax, render)  import faxbox.shared only
    services (services/*)    import faxbox.shared and the libraries, never another service
    admin, demo              sit on top: they may import any of the above, and each other

An import counts wherever it is written: at module level, inside a function, under
``TYPE_CHECKING``, or as ``importlib.import_module("faxbox....")`` with a literal name.
A member may also import only the members its ``pyproject.toml`` declares, so a hidden
import (one that works only because the whole workspace is installed) fails too. Within
one member, no module imports one that imports it back. Within a service, its
``ports`` (the protocols its handlers are written against) never reaches its ``adapters``
or its ``service`` wiring, not even through another module of the service.

Members are found from the root ``pyproject.toml`` (``[tool.uv.workspace] members``);
their layer from where they live: ``shared/``, ``services/<name>/``, the tools on top by
name (:data:`TOP`), any other member is a library.
"""

from __future__ import annotations

import ast
import itertools
import re
import tomllib
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

TOP = frozenset({"admin", "demo"})
# What a service's ports must never reach: the real implementations and their wiring.
WIRING_MODULES = ("adapters", "service")
# Every service's shape (docs/architecture.md, "Inside a service"), and the files a service
# goes without, each with its reason: an exception is decided here, not forgotten.
LAYOUT = ("service.py", "handlers.py", "ports.py", "adapters.py")
WITHOUT: dict[str, dict[str, str]] = {
    "inbound": {"adapters.py": "its ports are served by faxbox.shared (the store, GridFS)"},
    "portal": {"handlers.py": "its handlers are the HTTP routes (api, api_v1, pages ...)"},
    "pstn-sim": dict.fromkeys(
        ("handlers.py", "ports.py", "adapters.py"),
        "a stand-in for the phone network with no bus and no database: sim.py answers "
        "the calls, control.py is its HTTP API",
    ),
}


class Layer(IntEnum):
    SHARED = 0
    LIBRARY = 1
    SERVICE = 2
    TOP = 3

    def __str__(self) -> str:
        return self.name.lower()

    @property
    def described(self) -> str:
        return {
            Layer.SHARED: "faxbox.shared",
            Layer.LIBRARY: "a library",
            Layer.SERVICE: "a service",
            Layer.TOP: "a tool on top",
        }[self]


MAY_IMPORT: dict[Layer, frozenset[Layer]] = {
    Layer.SHARED: frozenset(),
    Layer.LIBRARY: frozenset({Layer.SHARED}),
    Layer.SERVICE: frozenset({Layer.SHARED, Layer.LIBRARY}),
    Layer.TOP: frozenset({Layer.SHARED, Layer.LIBRARY, Layer.SERVICE, Layer.TOP}),
}


@dataclass(frozen=True)
class Member:
    path: Path  # relative to the workspace root
    distribution: str
    layer: Layer
    declares: frozenset[str]


@dataclass(frozen=True)
class Module:
    name: str  # faxbox.portal.app
    file: Path  # relative to the workspace root
    is_package: bool
    member: Member

    @property
    def package(self) -> str:
        return _package_of(self.name)


@dataclass(frozen=True)
class Import:
    line: int
    target: str  # the module named: faxbox.validator.render


def _normalized(distribution: str) -> str:
    return re.sub(r"[-_.]+", "-", distribution).lower()


def _package_of(module: str) -> str:
    return ".".join(module.split(".")[:2])


def _layer_of(path: Path) -> Layer:
    if path == Path("shared"):
        return Layer.SHARED
    if path.parent == Path("services"):
        return Layer.SERVICE
    return Layer.TOP if path.name in TOP else Layer.LIBRARY


def members(root: Path) -> list[Member]:
    workspace = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["uv"]["workspace"]
    found = []
    for pattern in workspace["members"]:
        for path in sorted(root.glob(pattern)):
            if not (path / "pyproject.toml").is_file():
                continue
            project = tomllib.loads((path / "pyproject.toml").read_text())["project"]
            requirements = project.get("dependencies", [])
            names = (re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", r) for r in requirements)
            relative = path.relative_to(root)
            found.append(
                Member(
                    path=relative,
                    distribution=_normalized(project["name"]),
                    layer=_layer_of(relative),
                    declares=frozenset(_normalized(n.group(0)) for n in names if n),
                )
            )
    return found


def modules(root: Path) -> list[Module]:
    found = []
    for member in members(root):
        src = root / member.path / "src"
        for file in sorted((src / "faxbox").rglob("*.py")):
            parts = list(file.relative_to(src).with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            name = ".".join(parts[:-1] if is_package else parts)
            found.append(Module(name, file.relative_to(root), is_package, member))
    return found


def imports_of(module: Module, root: Path) -> Iterator[Import]:
    """Every module ``module`` names in an import, wherever the import is written."""
    here = module.name.split(".") if module.is_package else module.name.split(".")[:-1]
    for node in ast.walk(ast.parse((root / module.file).read_text(), str(module.file))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(node.lineno, alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = here[: len(here) - node.level + 1] if node.level else []
            named = ".".join([*base, *([node.module] if node.module else [])])
            yield Import(node.lineno, named)
            # ``from faxbox import shared``, ``from . import app``: the names may be modules.
            for alias in node.names:
                yield Import(node.lineno, f"{named}.{alias.name}")
        elif (
            isinstance(node, ast.Call)
            and _called_name(node.func) in {"import_module", "__import__"}
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            yield Import(node.lineno, node.args[0].value)


def _called_name(func: ast.expr) -> str | None:
    if isinstance(func, ast.Name):
        return func.id
    return func.attr if isinstance(func, ast.Attribute) else None


def layer_violations(root: Path) -> list[str]:
    """One line per import that breaks the rule: ``file:line: edge: why``."""
    found = modules(root)
    provider = {m.package: m.member for m in found}
    lines: list[str] = []
    for module in found:
        seen: set[tuple[int, str]] = set()
        for imported in imports_of(module, root):
            parts = imported.target.split(".")
            # "faxbox" alone is the namespace (its names are checked one by one), and a
            # name imported from a module (faxbox.shared.store.Store) is its package's.
            if parts[0] != "faxbox" or len(parts) < 2:
                continue
            target = _package_of(imported.target)
            if target == module.package or (imported.line, target) in seen:
                continue
            seen.add((imported.line, target))
            why = _why_not(module.member, target, provider.get(target))
            if why:
                lines.append(
                    f"{module.file}:{imported.line}: {module.package} ({module.member.layer})"
                    f" imports {target}: {why}"
                )
    return lines


def _why_not(source: Member, target: str, provider: Member | None) -> str:
    if provider is None:
        return f"no workspace member provides {target}"
    if provider == source:
        return ""
    reasons = []
    if provider.layer not in MAY_IMPORT[source.layer]:
        reasons.append(f"{source.layer.described} may not import {provider.layer.described}")
    if provider.distribution not in source.declares:
        reasons.append(f"{source.distribution} does not declare {provider.distribution}")
    return "; ".join(reasons)


def import_cycles(root: Path) -> list[str]:
    """Each circle of modules importing each other within one member, with its edges."""
    found = {m.name: m for m in modules(root)}
    edges: dict[str, dict[str, int]] = defaultdict(dict)
    for module in found.values():
        for imported in imports_of(module, root):
            target = imported.target
            known = target in found and found[target].member == module.member
            if known and target != module.name:
                edges[module.name].setdefault(target, imported.line)
    cycles = []
    for group in _strongly_connected(edges):
        path = _cycle_through(min(group), group, edges)
        steps = " -> ".join(path)
        where = ", ".join(f"{found[a].file}:{edges[a][b]}" for a, b in itertools.pairwise(path))
        cycles.append(f"{steps} ({where})")
    return cycles


def _strongly_connected(edges: dict[str, dict[str, int]]) -> list[set[str]]:
    """Tarjan's algorithm: the groups of two or more modules that reach each other."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in edges.get(node, {}):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = set()
            while True:
                member = stack.pop()
                group.add(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(group)

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return groups


def _cycle_through(start: str, group: set[str], edges: dict[str, dict[str, int]]) -> list[str]:
    """The shortest path from ``start`` back to itself inside ``group`` (breadth first)."""
    paths = {start: [start]}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for nxt in sorted(edges.get(node, {})):
            if nxt == start:
                return [*paths[node], start]
            if nxt in group and nxt not in paths:
                paths[nxt] = [*paths[node], nxt]
                queue.append(nxt)
    raise AssertionError(f"{start} is in a cycle but does not reach itself")


def ports_reaching_adapters(root: Path) -> list[str]:
    """Each service ``ports`` module that imports, directly or through other modules of its
    service, the service's ``adapters`` or ``service`` module: the path of imports."""
    found = {m.name: m for m in modules(root)}
    edges: dict[str, dict[str, int]] = defaultdict(dict)
    for module in found.values():
        for imported in imports_of(module, root):
            target = imported.target
            if target in found and found[target].package == module.package:
                edges[module.name].setdefault(target, imported.line)
    lines = []
    for name, module in sorted(found.items()):
        if module.member.layer != Layer.SERVICE or name != f"{module.package}.ports":
            continue
        forbidden = {f"{module.package}.{leaf}" for leaf in WIRING_MODULES}
        paths = {name: [name]}
        queue = [name]
        while queue:
            node = queue.pop(0)
            for nxt in sorted(edges.get(node, {})):
                if nxt in paths:
                    continue
                paths[nxt] = [*paths[node], nxt]
                if nxt in forbidden:
                    steps = paths[nxt]
                    where = ", ".join(
                        f"{found[a].file}:{edges[a][b]}" for a, b in itertools.pairwise(steps)
                    )
                    lines.append(f"{' -> '.join(steps)} ({where})")
                else:
                    queue.append(nxt)
    return lines


# --- the repository ------------------------------------------------------------------------


def test_members_are_found_in_every_layer() -> None:
    # Guards the checks below against passing because they read nothing.
    layers = {m.path.as_posix(): m.layer for m in members(ROOT)}
    assert layers["shared"] == Layer.SHARED
    assert layers["fax"] == layers["render"] == Layer.LIBRARY
    assert layers["services/portal"] == Layer.SERVICE
    assert layers["admin"] == layers["demo"] == Layer.TOP
    assert len(modules(ROOT)) > 100


def test_no_package_imports_upward_or_sideways() -> None:
    violations = layer_violations(ROOT)
    assert not violations, "imports against the layering rule:\n" + "\n".join(violations)


def test_no_module_imports_one_that_imports_it_back() -> None:
    cycles = import_cycles(ROOT)
    assert not cycles, "modules importing each other in a circle:\n" + "\n".join(cycles)


def test_every_service_has_the_layout() -> None:
    services = [m for m in members(ROOT) if m.layer == Layer.SERVICE]
    assert {m.path.name for m in services} >= set(WITHOUT)  # no exception outlives its service
    missing, needless = [], []
    for member in services:
        package = ROOT / member.path / "src" / "faxbox" / member.path.name.replace("-", "_")
        excused = WITHOUT.get(member.path.name, {})
        for name in LAYOUT:
            if not (package / name).is_file() and name not in excused:
                missing.append(f"{member.path}: {name}")
            if (package / name).is_file() and name in excused:
                needless.append(f"{member.path}: {name} is there; drop its exception")
    assert not missing, "services without their layout:\n" + "\n".join(missing)
    assert not needless, "\n".join(needless)


def test_no_ports_module_reaches_an_adapter() -> None:
    reached = ports_reaching_adapters(ROOT)
    assert not reached, "ports importing adapters or wiring:\n" + "\n".join(reached)


# --- the checks themselves, on a small workspace made for the purpose -----------------------


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def _project(name: str, *dependencies: str) -> str:
    return f"[project]\nname = {name!r}\ndependencies = {list(dependencies)!r}\n"


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    _write(
        tmp_path,
        {
            "pyproject.toml": '[tool.uv.workspace]\nmembers = ["shared", "lib", "admin", '
            '"services/*"]\n',
            "shared/pyproject.toml": _project("faxbox-shared"),
            "shared/src/faxbox/shared/__init__.py": "",
            "shared/src/faxbox/shared/cli.py": (
                "import sys\n\n\ndef main() -> None:\n    from faxbox.alpha import check\n"
            ),
            "lib/pyproject.toml": _project("faxbox-lib", "faxbox-shared"),
            "lib/src/faxbox/lib/core.py": "from faxbox.shared import x\nimport faxbox.alpha.api\n",
            "services/alpha/pyproject.toml": _project(
                "faxbox-alpha", "faxbox-shared", "faxbox_lib>=0.1"
            ),
            "services/alpha/src/faxbox/alpha/__init__.py": "",
            "services/alpha/src/faxbox/alpha/api.py": (
                "from faxbox.lib import core\nfrom .. import beta\nimport importlib\n\n"
                'render = importlib.import_module("faxbox.beta.render")\n'
                "from faxbox.gamma import x\n"
            ),
            "services/beta/pyproject.toml": _project("faxbox-beta", "faxbox-shared"),
            "services/beta/src/faxbox/beta/ports.py": (
                "from typing import Protocol\n\nfrom faxbox.beta import records\n"
            ),
            "services/beta/src/faxbox/beta/records.py": "from faxbox.beta.adapters import Row\n",
            "services/beta/src/faxbox/beta/adapters.py": "import os\n",
            "services/alpha/src/faxbox/alpha/ports.py": "from faxbox.alpha import service\n",
            "services/alpha/src/faxbox/alpha/service.py": "import os\n",
            "services/beta/src/faxbox/beta/render.py": (
                "from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n"
                "    from faxbox.lib.core import Thing\n"
            ),
            "admin/pyproject.toml": _project(
                "faxbox-admin", "faxbox-shared", "faxbox-lib", "faxbox-alpha"
            ),
            "admin/src/faxbox/admin/a.py": "from faxbox.admin import b\nimport faxbox.alpha.api\n",
            "admin/src/faxbox/admin/b.py": "import os\n\n\ndef f() -> None:\n    from . import a\n",
        },
    )
    return tmp_path


def test_each_forbidden_edge_is_named_with_file_and_line(workspace: Path) -> None:
    assert sorted(layer_violations(workspace)) == [
        "lib/src/faxbox/lib/core.py:2: faxbox.lib (library) imports faxbox.alpha:"
        " a library may not import a service; faxbox-lib does not declare faxbox-alpha",
        "services/alpha/src/faxbox/alpha/api.py:2: faxbox.alpha (service) imports faxbox.beta:"
        " a service may not import a service; faxbox-alpha does not declare faxbox-beta",
        "services/alpha/src/faxbox/alpha/api.py:5: faxbox.alpha (service) imports faxbox.beta:"
        " a service may not import a service; faxbox-alpha does not declare faxbox-beta",
        "services/alpha/src/faxbox/alpha/api.py:6: faxbox.alpha (service) imports faxbox.gamma:"
        " no workspace member provides faxbox.gamma",
        "services/beta/src/faxbox/beta/render.py:4: faxbox.beta (service) imports faxbox.lib:"
        " faxbox-beta does not declare faxbox-lib",
        "shared/src/faxbox/shared/cli.py:5: faxbox.shared (shared) imports faxbox.alpha:"
        " faxbox.shared may not import a service; faxbox-shared does not declare faxbox-alpha",
    ]


def test_a_circle_of_imports_is_named_with_its_edges(workspace: Path) -> None:
    assert import_cycles(workspace) == [
        "faxbox.admin.a -> faxbox.admin.b -> faxbox.admin.a"
        " (admin/src/faxbox/admin/a.py:1, admin/src/faxbox/admin/b.py:5)"
    ]


def test_a_ports_module_reaching_adapters_or_wiring_is_named_with_its_path(
    workspace: Path,
) -> None:
    assert ports_reaching_adapters(workspace) == [
        "faxbox.alpha.ports -> faxbox.alpha.service (services/alpha/src/faxbox/alpha/ports.py:1)",
        "faxbox.beta.ports -> faxbox.beta.records -> faxbox.beta.adapters"
        " (services/beta/src/faxbox/beta/ports.py:3, services/beta/src/faxbox/beta/records.py:1)",
    ]
