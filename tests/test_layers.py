"""The package reads as its layers, and stays that way.

Every import between shmkit's own modules is read from the source with ``ast`` (at module
level, inside functions, and under ``if TYPE_CHECKING:``) and judged against LAYERS, the
table docs/ARCHITECTURE.md draws:

- an import that runs goes strictly down the layers (or stays inside one subpackage),
  so the graph of imports that run has no cycle;
- an import under TYPE_CHECKING (annotations only, never executed) may name any library
  module, upward too, but an application (demo, cli, ...) only from above;
- no module imports a private name (``_x``) from another module: what several modules
  share lives in a private module of its own (``_checks``, ``_dtypes``, ...) under a
  public name;
- the two by-name tables that reach upward without an import (the package's lazy public
  names, Zone's late-bound factories) name only library modules, and agree with what
  type checkers see.

A new module must be given a layer here (and in docs/ARCHITECTURE.md) before it passes.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import os
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src"
PACKAGE = SRC / "shmkit"

#: (layer number, name, modules).  A name ending in ".*" is a subpackage with all its
#: modules.  Read from the bottom up: each layer may import only the layers below it.
LAYERS = [
    (0, "foundation", ["shmkit._core", "shmkit._errors", "shmkit._types", "shmkit._deprecation"]),
    # _aio (the awaitable twins) imports only _core and _errors; the structures import it
    # inside their `aio` properties.  _capi (where the C API is installed) imports nothing
    (1, "internals", ["shmkit._checks", "shmkit._dtypes", "shmkit._lifecycle", "shmkit._ksm",
                      "shmkit._cliutil", "shmkit._aio", "shmkit._capi", "shmkit._surface"]),
    (2, "segments", ["shmkit.segment", "shmkit.inventory", "shmkit._reaper"]),
    (3, "zone", ["shmkit.zone", "shmkit.shmop", "shmkit.interop"]),
    (4, "structures", ["shmkit.sync", "shmkit.queue", "shmkit.dict", "shmkit.board",
                       "shmkit.shared_array"]),
    (5, "composites", ["shmkit.config"]),
    (6, "other backends", ["shmkit.redis", "shmkit.redis.*"]),
    (7, "backend choice", ["shmkit._backends"]),
    (8, "public API", ["shmkit"]),
    # an entry later in the table wins: redis/_cli.py is the Redis backend's part of the
    # command line (shmkit ls/info --url), not a library module
    (9, "applications", ["shmkit.demo", "shmkit.demo.*", "shmkit.dashboard",
                         "shmkit.dashboard.*", "shmkit._bench", "shmkit._bench.*",
                         "shmkit.redis._cli"]),
    (10, "command line", ["shmkit.cli"]),
    (11, "entry point", ["shmkit.__main__"]),
]
LIBRARY_TOP = 7          # TYPE_CHECKING imports and by-name tables may reach this high
APPLICATIONS = 9


def layer_of(module: str) -> int:
    best = None
    for number, _, members in LAYERS:
        for m in members:
            if module == m or (m.endswith(".*") and module.startswith(m[:-1])):
                best = number
    if best is None:
        raise AssertionError(f"{module} has no layer: add it to LAYERS in {__file__} and to "
                             "the picture in docs/ARCHITECTURE.md")
    return best


def subpackage(module: str) -> str | None:
    """The subpackage of shmkit a module belongs to (shmkit.demo for shmkit.demo.queue and
    for shmkit.demo itself), None for shmkit's direct modules."""
    parts = module.split(".")
    if len(parts) >= 2 and is_package(".".join(parts[:2])):
        return ".".join(parts[:2])
    return None


def source_modules() -> dict[str, Path]:
    """shmkit's modules (src/shmkit) and the benchmark suite it ships as shmkit._bench."""
    out = {}
    for base, prefix in ((PACKAGE, "shmkit"), (ROOT / "benchmarks", "shmkit._bench")):
        for path in sorted(base.rglob("*.py")):
            rel = path.relative_to(base).with_suffix("").parts
            if rel[-1] == "__init__":
                rel = rel[:-1]
            out[".".join((prefix,) + rel)] = path
    return out


MODULES = source_modules()
KNOWN = set(MODULES) | {"shmkit._core"}   # the compiled module has no source


def is_package(module: str) -> bool:
    return module in MODULES and MODULES[module].name == "__init__.py"


@dataclass(frozen=True)
class Edge:
    source: str
    target: str        # a module
    name: str | None   # the name taken from it (``from target import name``), if any
    typing_only: bool
    line: int

    def where(self) -> str:
        return f"{MODULES[self.source].relative_to(ROOT)}:{self.line}"


def _is_type_checking(test: ast.expr) -> bool:
    return ((isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or
            (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"))


def _resolve(module: str, level: int, target: str | None) -> str:
    if level == 0:
        return target or ""
    base = module.split(".") if is_package(module) else module.split(".")[:-1]
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join(base + ([target] if target else []))


def _own(target: str) -> bool:
    return target == "shmkit" or target.startswith("shmkit.")


def imports_of(module: str) -> list[Edge]:
    tree = ast.parse(MODULES[module].read_text(), str(MODULES[module]))
    edges: list[Edge] = []

    def visit(node: ast.AST, typing_only: bool) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.body:
                visit(child, True)
            for child in node.orelse:
                visit(child, typing_only)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                if _own(alias.name):
                    edges.append(Edge(module, alias.name, None, typing_only, node.lineno))
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, node.level, node.module)
            if _own(target):
                for alias in node.names:
                    sub = f"{target}.{alias.name}"
                    if sub in KNOWN:   # ``from . import _core``: the module itself
                        edges.append(Edge(module, sub, None, typing_only, node.lineno))
                    else:
                        edges.append(Edge(module, target, alias.name, typing_only,
                                          node.lineno))
        for child in ast.iter_child_nodes(node):
            visit(child, typing_only)

    visit(tree, False)
    return edges


ALL_EDGES = [e for m in sorted(MODULES) for e in imports_of(m)]


def test_every_module_has_a_layer():
    for module in sorted(KNOWN):
        layer_of(module)


def test_imports_that_run_go_down_the_layers():
    bad = []
    for e in ALL_EDGES:
        if e.typing_only or e.target not in KNOWN and e.target != "shmkit":
            continue
        src, dst = layer_of(e.source), layer_of(e.target)
        same_subpackage = (subpackage(e.source) is not None and
                           subpackage(e.source) == subpackage(e.target))
        if not (dst < src or same_subpackage):
            bad.append(f"{e.where()}: {e.source} (layer {src}) imports {e.target} "
                       f"(layer {dst})")
    assert not bad, "imports against the layers:\n" + "\n".join(dict.fromkeys(bad))


def test_imports_that_run_have_no_cycle():
    graph: dict[str, set[str]] = {m: set() for m in KNOWN}
    for e in ALL_EDGES:
        if not e.typing_only and e.target in KNOWN and e.target != e.source:
            graph[e.source].add(e.target)
    state: dict[str, int] = {}
    path: list[str] = []

    def dfs(m: str) -> None:
        state[m] = 1
        path.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                raise AssertionError("import cycle: " + " -> ".join(path[path.index(n):] + [n]))
            if n not in state:
                dfs(n)
        path.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            dfs(m)


def test_type_checking_imports_name_library_modules_only():
    bad = [f"{e.where()}: {e.source} imports {e.target} for type checking"
           for e in ALL_EDGES
           if e.typing_only and e.target in KNOWN and layer_of(e.target) > LIBRARY_TOP
           and layer_of(e.target) >= layer_of(e.source)
           and subpackage(e.target) != subpackage(e.source)]
    assert not bad, "\n".join(bad)


def test_no_module_imports_a_private_name_of_another():
    bad = [f"{e.where()}: {e.source} imports {e.name} from {e.target}"
           for e in ALL_EDGES
           if e.name is not None and e.name.startswith("_") and not e.name.startswith("__")]
    assert not bad, ("private names taken from other modules (move what is shared into a "
                     "private module of its own, under a public name):\n" + "\n".join(bad))


def test_the_rules_catch_what_they_are_for(tmp_path):
    """The checker itself can fail: a structure importing another structure, a zone
    importing a structure, and a private import are each reported."""
    global MODULES
    saved = MODULES
    fake = tmp_path / "shmkit"
    fake.mkdir()
    (fake / "zone.py").write_text("from .queue import Queue\n")
    (fake / "queue.py").write_text("from .zone import _factory\nfrom . import dict\n")
    (fake / "dict.py").write_text("import shmkit.sync\n")
    try:
        MODULES = {"shmkit.zone": fake / "zone.py", "shmkit.queue": fake / "queue.py",
                   "shmkit.dict": fake / "dict.py"}
        edges = [e for m in MODULES for e in imports_of(m)]
    finally:
        MODULES = saved
    got = {(e.source, e.target, e.name) for e in edges}
    assert ("shmkit.zone", "shmkit.queue", "Queue") in got
    assert ("shmkit.queue", "shmkit.zone", "_factory") in got
    assert ("shmkit.dict", "shmkit.sync", None) in got
    assert layer_of("shmkit.queue") == layer_of("shmkit.zone") + 1   # zone -> queue is up
    assert layer_of("shmkit.sync") == layer_of("shmkit.dict")        # dict -> sync is across
    with pytest.raises(AssertionError, match="has no layer"):
        layer_of("shmkit.newthing")


# -- the by-name tables ------------------------------------------------------------------------

def test_lazy_public_names_agree_with_the_static_ones():
    """``shmkit.X`` is imported on first use (so ``import shmkit`` stays cheap) and
    declared to type checkers under TYPE_CHECKING: both lists are one list, every entry
    exists in its library module, and ``__all__`` is exactly them plus the exceptions."""
    import shmkit
    from shmkit import _errors

    tree = ast.parse((PACKAGE / "__init__.py").read_text())
    static: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for imp in node.body:
                assert isinstance(imp, ast.ImportFrom), ast.dump(imp)
                if imp.level == 0:
                    continue  # typing's own names, for annotations
                for alias in imp.names:
                    assert alias.asname == alias.name, \
                        f"re-export {alias.name} as itself (``X as X``) for type checkers"
                    static[alias.name] = imp.module or ""
    lazy = dict(shmkit._LAZY)
    assert static == lazy
    for name, module in lazy.items():
        assert layer_of(f"shmkit.{module}") <= LIBRARY_TOP, (name, module)
        assert hasattr(importlib.import_module(f"shmkit.{module}"), name), (name, module)
    assert set(shmkit.__all__) == set(lazy) | set(_errors.__all__) | {"__version__"}


def _constructor(obj):
    """The Python function whose parameters a class's call takes (its __new__ or
    __init__, skipping the ``(*args, **kwargs)`` placeholders beside a C base)."""
    if not isinstance(obj, type):
        return obj
    for klass in obj.__mro__:
        for attr in ("__new__", "__init__"):
            fn = klass.__dict__.get(attr)
            fn = getattr(fn, "__func__", fn)
            if inspect.isfunction(fn):
                kinds = {p.kind for p in inspect.signature(fn).parameters.values()}
                if kinds != {inspect.Parameter.POSITIONAL_OR_KEYWORD,
                             inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD}:
                    return fn
    raise AssertionError(f"no Python constructor for {obj}")


#: factory parameters that are required where the constructor has a default
REQUIRED_IN_FACTORY = {("ndarray", "shape"), ("board", "max_bytes")}


def _factories() -> list[tuple[str, str]]:
    """(zone module, method) of every late-bound factory: shmkit.Zone's and, when
    redis-py is installed, RedisZone's (its objects' modules import its module too)."""
    out = [("shmkit.zone", m) for m in sorted(importlib.import_module("shmkit.zone")._FACTORIES)]
    try:
        redis_zone = importlib.import_module("shmkit.redis._zone")
    except ImportError:     # no redis-py: the test extra has it, so CI checks these too
        return out
    return out + [("shmkit.redis._zone", m) for m in sorted(redis_zone._FACTORIES)]


@pytest.mark.parametrize("zone_module,method", _factories())
def test_zone_factories_match_their_constructors(zone_module, method):
    """``zone.queue(...)`` takes what ``Queue(...)`` takes (less ``zone``), with the same
    defaults and annotations, and returns what its annotation says.  Zone's factories
    reach up to the structures' layer; RedisZone's stay in its subpackage."""
    zmod = importlib.import_module(zone_module)
    zone_class = zmod.RedisZone if zone_module == "shmkit.redis._zone" else zmod.Zone
    package = zmod.__package__

    module, attr = zmod._FACTORIES[method]
    target = f"{package}.{module}"
    if zone_module == "shmkit.zone":
        assert layer_of(target) > layer_of("shmkit.zone")
        assert layer_of(target) <= LIBRARY_TOP
    else:
        assert subpackage(target) == subpackage(zone_module) == "shmkit.redis"
    made = getattr(importlib.import_module(target), attr)
    assert zmod._factory(method) is made

    fac = inspect.signature(getattr(zone_class, method))
    ctor = inspect.signature(_constructor(made))
    fac_params = list(fac.parameters.values())[1:]
    ctor_params = [p for p in list(ctor.parameters.values())[1 if isinstance(made, type) else 0:]
                   if p.name != "zone" and not p.name.startswith("_")]
    assert [p.name for p in fac_params] == [p.name for p in ctor_params]
    for f, c in zip(fac_params, ctor_params):
        assert f.kind == c.kind or (f.kind, c.kind) == (
            inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD), (f, c)
        if (method, f.name) not in REQUIRED_IN_FACTORY:
            assert f.default == c.default, (f, c)
        assert f.annotation == c.annotation, (f, c)
    returned = fac.return_annotation
    assert returned in (attr, "SharedNDArray"), returned


def _short(member: str) -> str:
    """How the picture names a module: sync.py, demo/, _core, __init__.py."""
    if member == "shmkit":
        return "__init__.py"
    last = member.removesuffix(".*").rsplit(".", 1)[-1]
    if last == "_core":
        return "_core"
    if member.endswith(".*") or is_package(member.removesuffix(".*")) or last in (
            "redis", "dashboard", "_bench"):
        return last + "/"
    return last + ".py"


def test_the_architecture_page_draws_these_layers():
    """docs/ARCHITECTURE.md's picture has a line per layer, "<number> <name>", naming
    each of its modules: the picture and this table cannot drift apart."""
    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    for number, name, members in LAYERS:
        line = next((ln for ln in text.splitlines()
                     if re.match(rf"^\s*{number} {re.escape(name)}\s", ln)), None)
        assert line is not None, f"docs/ARCHITECTURE.md has no line '{number} {name}'"
        for member in members:
            assert _short(member) in line, f"layer {number} of the picture lacks {_short(member)}"


def test_modules_found():
    """The scan sees the package (a wrong ROOT would make every rule pass vacuously)."""
    assert {"shmkit", "shmkit.zone", "shmkit.queue", "shmkit.cli", "shmkit._errors"} <= set(MODULES)
    assert len(ALL_EDGES) > 50
    assert os.path.isdir(PACKAGE)
