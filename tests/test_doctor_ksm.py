"""`shmkit doctor`'s KSM part: the live /sys/kernel/mm/ksm figures, what KSM can and
cannot do for shared memory, what to use instead (the real command, the real kernel)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.timeout(120)

KSM = "/sys/kernel/mm/ksm"
# tunables nobody changes while the test runs (the pages_* figures move when ksmd runs)
STEADY = ("max_page_sharing", "merge_across_nodes", "use_zero_pages", "sleep_millisecs")


def doctor(*args):
    r = subprocess.run([sys.executable, "-m", "shmkit", "doctor", *args], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode in (0, 1), r.stderr
    return r.stdout


def test_doctor_json_has_the_live_ksm_figures():
    k = json.loads(doctor("--json"))["facts"]["ksm"]
    assert k["available"] == os.path.isdir(KSM)
    for text in (k["can"], k["cannot"], k["instead"], k["here"]):
        assert isinstance(text, str) and text
    assert "shared" in k["cannot"] and "MADV_MERGEABLE" in k["can"]
    if not k["available"]:
        assert k["state"] == "absent" and "no KSM" in k["here"]
        return
    files = {n: open(os.path.join(KSM, n)).read().strip() for n in os.listdir(KSM)}
    numeric = {n for n, v in files.items() if v.lstrip("-").isdigit()}
    assert set(k["figures"]) == numeric                   # every figure, nothing invented
    for n in STEADY:
        if n in numeric:
            assert k["figures"][n] == int(files[n])
    assert k["run"] == int(files["run"])
    assert k["state"] == {0: "off", 1: "running", 2: "unmerging"}[k["run"]]
    assert k["saved_bytes"] == k["figures"]["pages_sharing"] * os.sysconf("SC_PAGESIZE")
    assert k["can_start"] == os.access(os.path.join(KSM, "run"), os.W_OK)
    assert k["pages_sharing"] == k["figures"]["pages_sharing"]


def test_doctor_text_says_what_ksm_can_and_cannot_do_for_shared_memory():
    text = doctor()
    for label in ("KSM ", "  can ", "  cannot ", "  here ", "  instead ", "stdlib shm "):
        assert label in text, label
    assert "one copy in shared memory is already the deduplication" in text
    if os.path.isdir(KSM):
        assert "pages_sharing" in text and "saves now" in text


def test_doctor_json_says_how_to_attach_from_the_stdlib():
    f = json.loads(doctor("--json"))["facts"]
    st = f["stdlib_shared_memory"]
    assert st["safe_attach"] == "shmkit.attach_shared_memory(name)"
    assert st["track_parameter"] == (sys.version_info >= (3, 13))
    assert isinstance(f["vanished"], list)
