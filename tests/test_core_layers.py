"""The C core's zone layers call only downwards, and _locked functions never lock.

    zone.c -> directory.c -> slab.c -> zonemap.c -> segment.c

Read from the sources (their #include lines and the bodies of *_locked functions), so a
change that reaches back up fails here before anyone has to find the cycle by hand.
"""

import pathlib
import re

CORE = pathlib.Path(__file__).resolve().parent.parent / "src" / "shmkit" / "core"

# file -> the headers of the zone layers it may include (its own and those below it)
LAYERS = ["zone", "directory", "slab", "zonemap"]
ALLOWED = {layer: set(LAYERS[i:]) for i, layer in enumerate(LAYERS)}


def includes(path):
    return set(re.findall(r'#include "([a-z_]+)\.h"', path.read_text()))


def test_zone_layers_include_only_downwards():
    for layer in LAYERS:
        for suffix in (".c", ".h"):
            path = CORE / (layer + suffix)
            used = includes(path) & set(LAYERS)
            assert used <= ALLOWED[layer], f"{path.name} reaches up to {used - ALLOWED[layer]}"


def test_locked_functions_never_take_the_zone_lock():
    pattern = re.compile(r"^[a-z][^\n]*\b(shk_\w+_locked)\(([^)]*)\)\n\{(.*?)^\}", re.S | re.M)
    found = 0
    for path in CORE.glob("*.c"):
        for name, _, body in pattern.findall(path.read_text()):
            found += 1
            assert "shk_zone_lock(" not in body and "shk_mutex_lock(" not in body, \
                f"{path.name}: {name} takes a lock"
    assert found >= 10, "the pattern no longer finds the _locked functions"
