"""The core's one error table (core/errors.def) against shmkit._errors, both ways."""

import errno

import pytest

import shmkit
from shmkit import _core, _errors


def test_every_core_code_names_an_existing_shmkit_error():
    codes, _ = _core.error_table()
    assert codes, "the table is empty"
    seen = set()
    for code, name, text, cls_name in codes:
        assert -30699 <= code <= -30600, (name, code)
        assert code not in seen, f"{name}: value {code} used twice"
        seen.add(code)
        cls = getattr(_errors, cls_name, None)
        assert isinstance(cls, type) and issubclass(cls, _errors.ShmkitError), (name, cls_name)
        assert cls_name in _errors.__all__ and getattr(shmkit, cls_name) is cls
        assert _core.strerror(code) == text and text
        assert getattr(_core, "E_" + name[len("SHK_E"):]) == code


def test_every_shmkit_error_is_reached_by_a_core_code_or_an_errno():
    codes, errnos = _core.error_table()
    named = {c[3] for c in codes} | {c[1] for c in errnos}
    for number, cls_name in errnos:
        assert number > 0 and cls_name in _errors.__all__, (number, cls_name)
    # the two bases are what every other code and errno falls back to
    reachable = named | {"ShmkitError", "ShmkitOSError"}
    declared = {n for n in _errors.__all__ if isinstance(getattr(_errors, n), type)
                and issubclass(getattr(_errors, n), BaseException)}
    assert declared - reachable == set(), "exception classes no code can raise"
    assert reachable - declared == set(), "codes naming classes _errors does not declare"


def test_object_mismatch_has_its_own_code():
    codes, _ = _core.error_table()
    by_class = {c[3]: c for c in codes}
    assert by_class["ObjectMismatchError"][1] == "SHK_EOBJMISMATCH"
    assert _core.E_OBJMISMATCH != _core.E_MISMATCH


@pytest.mark.parametrize("err, cls", [(errno.ENOENT, "SegmentNotFoundError"),
                                      (errno.ETIMEDOUT, "ShmkitTimeoutError")])
def test_errno_classes(err, cls):
    _, errnos = _core.error_table()
    assert (err, cls) in errnos
