"""shmkit.SharedConfig: loading dicts, JSON and TOML, immutable snapshots, atomic reloads
seen by other processes (never a mixture), a loader killed mid-reload, waiting for
changes."""

from __future__ import annotations

import datetime
import json
import multiprocessing as mp
import os
import pickle
import signal
import time
import types

import pytest

import shmkit
from shmkit import NotOwnerError, ShmkitTimeoutError, SharedConfig, TooLargeError, Zone

from conftest import wait_until

SPAWN = mp.get_context("spawn")

TOML = """
title = "demo"
[server]
host = "127.0.0.1"
ports = [8000, 8001]
started = 2024-05-06T07:08:09Z
[[backends]]
name = "a"
weight = 1.5
"""


def test_load_dict_and_snapshot_is_deeply_frozen(zone):
    cfg = zone.config("app")
    assert cfg.read() == ({}, 0)
    v = cfg.load({"a": 1, "nested": {"list": [1, {"x": 2}], "set": {3}}, "raw": bytearray(b"x")})
    assert v == 1
    snap, version = SharedConfig("app", zone=zone).read()
    assert version == 1
    assert isinstance(snap, types.MappingProxyType)
    assert snap["nested"]["list"] == (1, {"x": 2})
    assert isinstance(snap["nested"]["list"][1], types.MappingProxyType)
    assert snap["nested"]["set"] == frozenset({3}) and snap["raw"] == b"x"
    with pytest.raises(TypeError):
        snap["a"] = 2
    with pytest.raises(TypeError):
        snap["nested"]["list"][1]["x"] = 3
    with pytest.raises(AttributeError):
        snap["nested"]["list"].append(4)
    assert cfg.snapshot() is cfg.snapshot()  # computed once per version
    info = cfg.info()
    assert (info.version, info.source, info.format, info.loader_pid) == (1, None, "dict", os.getpid())


def test_json_and_toml_files(zone, tmp_path):
    j = tmp_path / "app.json"
    j.write_text(json.dumps({"workers": 4, "name": "svc"}))
    t = tmp_path / "app.toml"
    t.write_text(TOML)
    cfg = zone.config("app")
    reader = zone.config("app")
    cfg.load(j)
    assert reader["workers"] == 4 and reader.info().format == "json"
    assert reader.info().source == str(j)
    cfg.load(str(t))
    snap = reader.snapshot()
    assert snap["server"]["ports"] == (8000, 8001)
    assert snap["server"]["started"] == datetime.datetime(2024, 5, 6, 7, 8, 9,
                                                          tzinfo=datetime.timezone.utc)
    assert snap["backends"][0]["weight"] == 1.5
    assert reader.info().format == "toml" and reader.version == 2
    other = tmp_path / "app.conf"
    other.write_text(json.dumps({"k": "v"}))
    with pytest.raises(ValueError, match="format"):
        cfg.load(other)
    cfg.load(other, format="json")
    assert reader["k"] == "v"
    # reload re-reads the file the current configuration came from
    other.write_text(json.dumps({"k": "changed"}))
    assert cfg.reload() == 4
    assert reader["k"] == "changed" and reader.info().format == "json"


def test_mapping_interface(zone):
    cfg = zone.config("m")
    cfg.publish({"a": 1, "b": 2})
    assert cfg["a"] == 1 and "b" in cfg and "c" not in cfg
    assert sorted(cfg) == ["a", "b"] and len(cfg) == 2
    assert dict(cfg.items()) == {"a": 1, "b": 2}
    assert cfg.get("c", 9) == 9
    with pytest.raises(KeyError):
        cfg["c"]


def test_bad_input_publishes_nothing(zone, tmp_path):
    cfg = zone.config("bad", 4096)
    cfg.publish({"ok": True})
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(ValueError):
        cfg.load(broken)
    top = tmp_path / "list.json"
    top.write_text("[1, 2]")
    with pytest.raises(ValueError, match="top"):
        cfg.load(top)
    with pytest.raises(TypeError, match=r"\['when'\]\[1\]"):
        cfg.publish({"when": [1, object()]})
    with pytest.raises(TypeError, match="mapping"):
        cfg.publish([("a", 1)])
    with pytest.raises(TooLargeError):
        cfg.publish({"big": "x" * 10000})
    with pytest.raises(FileNotFoundError):
        cfg.load(tmp_path / "missing.toml")
    with pytest.raises(ValueError, match="nothing to reload"):
        cfg.reload()
    assert cfg.read() == ({"ok": True}, 1)


def test_wait_for_change_and_watch(zone):
    cfg = zone.config("w")
    reader = zone.config("w")
    with pytest.raises(ShmkitTimeoutError):
        reader.wait_for_change(timeout=0.05)
    import threading
    threading.Timer(0.05, cfg.publish, ({"v": 1},)).start()
    snap, version = reader.wait_for_change(0, timeout=10)
    assert (dict(snap), version) == ({"v": 1}, 1)
    threading.Timer(0.05, cfg.publish, ({"v": 2},)).start()
    assert reader.wait_for_change(timeout=10)[1] == 2
    seen = [(dict(s), v) for s, v in reader.watch(timeout=0.1)]
    assert seen == [({"v": 2}, 2)]  # the current one, then nothing more within the timeout


def test_one_loader_at_a_time(zone):
    a = zone.config("l")
    b = zone.config("l")
    a.publish({"from": "a"})
    with pytest.raises(NotOwnerError):
        b.publish({"from": "b"})
    a.close()
    b.publish({"from": "b"})
    assert zone.config("l")["from"] == "b"


def _alternating_loader(zone, seconds, q):
    cfg = zone.config("atomic", 1 << 20)
    # two configurations that differ in every value: a mixture is easy to recognise
    confs = [{f"key{i}": {"gen": g, "values": [g] * 50} for i in range(200)} for g in (1, 2)]
    n = 0
    start = time.monotonic()
    # `seconds` at least, and at least 100 publications (a sanitizer build or a loaded
    # machine publishes far fewer per second), but never more than 60 s
    while True:
        elapsed = time.monotonic() - start
        if elapsed >= 60 or (elapsed >= seconds and n >= 100):
            break
        cfg.publish(confs[n % 2])
        n += 1
    cfg.publish({"stop": True})
    q.put(("loader", n))


def _checking_reader(zone, q):
    cfg = zone.config("atomic", 1 << 20)
    q.put(("ready",))
    checked = mixed = 0
    version = 0
    while True:
        snap, version = cfg.wait_for_change(version, timeout=60)
        if "stop" in snap:
            break
        gens = {v["gen"] for v in snap.values()} | {x for v in snap.values() for x in v["values"]}
        if len(gens) != 1 or len(snap) != 200:
            mixed += 1
        checked += 1
    q.put(("reader", checked, mixed))


def test_readers_never_see_a_mixture(name, procs):
    z = Zone(name, 16 << 20)
    z.config("atomic", 1 << 20)
    q = SPAWN.Queue()
    readers = [SPAWN.Process(target=_checking_reader, args=(z, q)) for _ in range(2)]
    for p in readers:
        p.start()
        procs.append(p)
    for _ in readers:
        assert q.get(timeout=60) == ("ready",)
    loader = SPAWN.Process(target=_alternating_loader, args=(z, 2.0, q))
    loader.start()
    procs.append(loader)
    results = [q.get(timeout=120) for _ in range(3)]
    loads = [r[1] for r in results if r[0] == "loader"][0]
    assert loads > 50
    for r in results:
        if r[0] == "reader":
            assert r[2] == 0 and r[1] > 10
    z.close()


def _loader_dies_mid_reload(zone, path):
    cfg = zone.config("crash", 1 << 20)
    cfg.load(path)
    cfg._board._cb._debug_die_mid_publish(5000)  # killed while writing the next version


def test_loader_killed_mid_reload_keeps_the_old_configuration(name, procs, tmp_path):
    z = Zone(name, 8 << 20)
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"version": "old"}))
    reader = z.config("crash", 1 << 20)
    p = SPAWN.Process(target=_loader_dies_mid_reload, args=(z, str(path)))
    p.start()
    procs.append(p)
    p.join(timeout=60)
    assert p.exitcode == -signal.SIGKILL
    assert reader.read() == ({"version": "old"}, 1)
    # another process can take over and reload the same file
    path.write_text(json.dumps({"version": "new"}))
    assert reader.reload() == 2
    assert reader["version"] == "new"
    assert reader.statistics().takeovers == 1
    z.close()


def _pickled_reader(cfg, q):
    q.put(dict(cfg.snapshot()))


def test_pickles_by_name(name, procs):
    z = Zone(name, 4 << 20)
    cfg = z.config("p")
    cfg.publish({"shared": [1, 2]})
    q = SPAWN.Queue()
    p = SPAWN.Process(target=_pickled_reader, args=(cfg, q))
    p.start()
    procs.append(p)
    assert q.get(timeout=60) == {"shared": (1, 2)}
    p.join(timeout=30)
    assert pickle.loads(pickle.dumps(cfg))["shared"] == (1, 2)
    cfg.close()
    assert cfg.closed and "closed" in repr(cfg)
    z.close()


def test_top_level_constructor_uses_the_default_zone(monkeypatch, name):
    monkeypatch.setenv("SHMKIT_ZONE", name)
    import shmkit.zone as zmod
    monkeypatch.setattr(zmod, "_default", None)
    try:
        cfg = shmkit.SharedConfig("top")
        cfg.publish({"x": 1})
        assert shmkit.SharedConfig("top")["x"] == 1
        assert cfg.zone is shmkit.default_zone()
        cfg.close()
    finally:
        if zmod._default is not None:
            zmod._default.close()
        monkeypatch.setattr(zmod, "_default", None)
