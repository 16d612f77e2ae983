"""Where shmkit's C API is installed: the header, the library and its pkg-config file.

C and C++ programs use shmkit through ``shmkit.h`` and ``libshmkit.so``, both installed
inside the package (see docs/c.md)::

    cc -o prog prog.c $(shmkit config --cflags --libs)

    export PKG_CONFIG_PATH=$(shmkit config --pkgconfigdir)
    cc -o prog prog.c $(pkg-config --cflags --libs shmkit)

From Python (a build script, a setup.py of an extension that links to it), the
directories are ``shmkit.get_include()`` and ``shmkit.get_library_dir()``, as NumPy
gives ``numpy.get_include()``.
"""

from __future__ import annotations

import os
import shlex
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import argparse

__all__ = ["get_include", "get_library_dir", "get_pkgconfig_dir", "cflags", "libs"]

_HERE = os.path.dirname(os.path.abspath(__file__))
LIBRARY = "libshmkit.so"


def get_include() -> str:
    """The directory holding ``shmkit.h`` (for ``-I``)."""
    return os.path.join(_HERE, "include")


def get_library_dir() -> str:
    """The directory holding ``libshmkit.so`` (for ``-L`` and the run path)."""
    return os.path.join(_HERE, "lib")


def get_pkgconfig_dir() -> str:
    """The directory holding ``shmkit.pc`` (for ``PKG_CONFIG_PATH``)."""
    return os.path.join(get_library_dir(), "pkgconfig")


def _check_installed() -> None:
    if not os.path.exists(os.path.join(get_library_dir(), LIBRARY)):
        raise FileNotFoundError(
            f"{LIBRARY} is not in {get_library_dir()}: this copy of shmkit was not built "
            "(pip install . / pip install -e . / python setup.py build_ext --inplace)")


def cflags() -> list[str]:
    """Compiler flags for a program that includes ``shmkit.h``."""
    return [f"-I{get_include()}"]


def libs() -> list[str]:
    """Linker flags for a program that uses ``libshmkit.so``: the library and its
    directory, recorded as the program's run path so that it is found at run time
    without ``LD_LIBRARY_PATH``."""
    _check_installed()
    d = get_library_dir()
    return [f"-L{d}", f"-Wl,-rpath,{d}", "-lshmkit"]


def config_main(args: argparse.Namespace) -> int:
    """``shmkit config``: print what was asked for, in the order of pkg-config."""
    out: list[str] = []
    if args.cflags:
        out += cflags()
    if args.libs:
        out += libs()
    lines = [" ".join(shlex.quote(a) for a in out)] if out else []
    for flag, value in (("includedir", get_include), ("libdir", get_library_dir),
                        ("pkgconfigdir", get_pkgconfig_dir)):
        if getattr(args, flag):
            lines.append(value())
    if not lines:
        lines = [" ".join(shlex.quote(a) for a in cflags() + libs())]
    print("\n".join(lines))
    return 0
