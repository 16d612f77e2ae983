"""What stubtest cannot see in shmkit._core: the parameters of methods whose runtime text
signature does not name ``$self``.

CPython's convention is ``name($self, a, b=1, /)``; the binding's docstrings say
``name(a, b=1, /)``, so ``inspect.signature(Type.method)`` lacks self and stubtest reports
every such method as mismatched.  Those methods are in stubtest's allowlist
(stubtest-allowlist.txt, checked to be exactly them), and this module compares their
parameters with the stub itself: names, kinds and defaults, as stubtest would.

stubtest runs with --ignore-unused-allowlist (the __buffer__ entries are unused on Python
3.12+); this module checks instead that the allowlist holds exactly what its reasons give.

Run: python tests/typing/stub_check.py   (make typecheck runs it; exit 1 on a difference)
"""

from __future__ import annotations

import ast
import inspect
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STUB = ROOT / "src" / "shmkit" / "_core.pyi"
ALLOWLIST = Path(__file__).with_name("stubtest-allowlist.txt")
#: what the allowlist holds besides the $self methods (each with its reason in the file)
OTHER_ALLOWED = {f"shmkit._core.{t}.__buffer__" for t in ("Region", "Reservation", "Segment")}


def methods_without_self(core) -> dict[str, object]:
    """'Class.method' -> method, for every method whose text signature lacks $self/$type."""
    out = {}
    for cname, cls in vars(core).items():
        if not isinstance(cls, type):
            continue
        for mname, attr in vars(cls).items():
            sig = getattr(attr, "__text_signature__", None)
            if type(attr).__name__ == "classmethod_descriptor":
                continue  # bound to the class when looked up: its signature is right
            if sig and not sig.startswith("($"):
                try:
                    inspect.signature(getattr(cls, mname))
                except ValueError:  # "(key[, default], /)": no tool can read it
                    continue
                out[f"{cname}.{mname}"] = getattr(cls, mname)
    return out


def stub_functions() -> dict[str, ast.FunctionDef]:
    tree = ast.parse(STUB.read_text())
    out = {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, ast.FunctionDef):
                    out.setdefault(f"{node.name}.{item.name}", item)
    # methods a class inherits from the stub-only base
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and any(
                isinstance(b, ast.Name) and b.id == "_SyncHandle" for b in node.bases):
            for key, fn in list(out.items()):
                if key.startswith("_SyncHandle."):
                    out.setdefault(f"{node.name}.{key.split('.', 1)[1]}", fn)
    return out


def _stub_params(fn: ast.FunctionDef) -> list[tuple[str, str, object]]:
    a = fn.args
    pos = a.posonlyargs + a.args
    defaults = [None] * (len(pos) - len(a.defaults)) + list(a.defaults)
    out = []
    for i, (arg, d) in enumerate(zip(pos, defaults)):
        if i == 0:
            continue  # self / cls
        kind = "POSITIONAL_ONLY" if arg in a.posonlyargs else "POSITIONAL_OR_KEYWORD"
        out.append((arg.arg, kind, _default(d)))
    if a.vararg:
        out.append((a.vararg.arg, "VAR_POSITIONAL", None))
    for arg, d in zip(a.kwonlyargs, a.kw_defaults):
        out.append((arg.arg, "KEYWORD_ONLY", _default(d)))
    if a.kwarg:
        out.append((a.kwarg.arg, "VAR_KEYWORD", None))
    return out


_ANY_DEFAULT = "<some default>"


def _default(node: ast.expr | None) -> object:
    if node is None:
        return None
    if isinstance(node, ast.Constant) and node.value is Ellipsis:
        return _ANY_DEFAULT
    return repr(ast.literal_eval(node))


def _runtime_params(fn: object) -> list[tuple[str, str, object]]:
    out = []
    for p in inspect.signature(fn).parameters.values():  # type: ignore[arg-type]
        d = None if p.default is inspect.Parameter.empty else repr(p.default)
        out.append((p.name, p.kind.name, d))
    return out


def problems() -> list[str]:
    from shmkit import _core

    found = []
    runtime = methods_without_self(_core)
    stubs = stub_functions()
    listed = {line.strip() for line in ALLOWLIST.read_text().splitlines()
              if line.strip() and not line.startswith("#")}
    wanted = {f"shmkit._core.{k}" for k in runtime} | OTHER_ALLOWED
    for extra in sorted(listed - wanted):
        found.append(f"allowlist entry {extra} is no longer needed: remove it")
    for missing in sorted(wanted - listed):
        found.append(f"allowlist lacks {missing} (its text signature has no $self)")
    for key, fn in sorted(runtime.items()):
        stub = stubs.get(key)
        if stub is None:
            found.append(f"{key}: not in the stub")
            continue
        s, r = _stub_params(stub), _runtime_params(fn)
        if [(n, k) for n, k, _ in s] != [(n, k) for n, k, _ in r]:
            found.append(f"{key}: stub parameters {s} != runtime {r}")
            continue
        for (name, _, sd), (_, _, rd) in zip(s, r):
            if (sd is None) != (rd is None) or (sd not in (None, _ANY_DEFAULT) and sd != rd):
                found.append(f"{key}: parameter {name} defaults to {sd} in the stub, {rd} at "
                             "run time")
    return found


def main() -> int:
    found = problems()
    for line in found:
        print(line)
    print(f"stub_check: {len(found)} problem(s)")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
