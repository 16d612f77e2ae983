"""Build of the one compiled module, shmkit._core, and the list of packages.

Sources: the C core (src/shmkit/core/*.c, no Python.h) plus the thin binding
(src/shmkit/_coremodule.c and src/shmkit/_binding/*.c).  Set SHMKIT_SANITIZE=1 to build
with AddressSanitizer and UndefinedBehaviorSanitizer (see `make sanitize`).

Packages: every package under src/ (found, so a new subpackage needs no edit here), and
the benchmark suite: benchmarks/ in the repository (`python -m benchmarks` from a
checkout), installed as the private subpackage shmkit._bench (`shmkit bench` from an
installed shmkit; its modules import each other relatively).  No top-level package named
"benchmarks" is installed.  tests/test_packaging.py checks the wheel's file list.
"""
import glob
import os

from setuptools import Extension, find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))


def rel(pattern):
    return sorted(os.path.relpath(p, HERE) for p in glob.glob(os.path.join(HERE, pattern)))


sources = rel("src/shmkit/core/*.c") + ["src/shmkit/_coremodule.c"] + rel("src/shmkit/_binding/*.c")
depends = rel("src/shmkit/core/*.h") + rel("src/shmkit/core/*.def") + rel("src/shmkit/_binding/*.h")

compile_args = ["-std=gnu11", "-D_GNU_SOURCE", "-Wall", "-Wextra", "-Wno-unused-parameter",
                "-Wno-missing-field-initializers", "-Wno-cast-function-type", "-fno-strict-aliasing"]
link_args = ["-lpthread"]
if os.environ.get("SHMKIT_SANITIZE"):
    compile_args += ["-O1", "-g", "-fno-omit-frame-pointer", "-fsanitize=address,undefined"]
    link_args += ["-fsanitize=address,undefined"]
else:
    compile_args += ["-O2"]

packages = find_packages(os.path.join(HERE, "src")) + [
    "shmkit._bench" + ("." + p if p else "")
    for p in [""] + find_packages(os.path.join(HERE, "benchmarks"))]

setup(
    packages=packages,
    package_dir={"": "src", "shmkit._bench": "benchmarks"},
    ext_modules=[
        Extension(
            "shmkit._core",
            sources=sources,
            depends=depends,
            include_dirs=["src/shmkit/core", "src/shmkit"],
            extra_compile_args=compile_args,
            extra_link_args=link_args,
        )
    ]
)
