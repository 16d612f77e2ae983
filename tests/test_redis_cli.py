"""`shmkit ls --url` and `shmkit info --url`: the real command against a real server."""

from __future__ import annotations

import json
import subprocess
import sys


def shmkit(*args, timeout=60):
    r = subprocess.run([sys.executable, "-m", "shmkit", *args], capture_output=True, text=True,
                       timeout=timeout)
    return r.returncode, r.stdout, r.stderr


def test_ls_and_info(redis_zone, redis_server):
    z = redis_zone()
    z.queue("jobs").put_many([b"x" * 10] * 3)
    z.dict("cache").update({"a": 1, "b": 2})
    z.lock("leader")
    rc, out, err = shmkit("ls", "--url", redis_server.url)
    assert rc == 0, err
    assert any(line.split()[:2] == [z.name, "3"] for line in out.splitlines()), out
    rc, out, err = shmkit("ls", "--url", f"{redis_server.url}?zone={z.name}")
    assert rc == 0, err
    rows = {line.split()[0]: line.split()[1:4] for line in out.splitlines()[1:]}
    assert rows["jobs"][:2] == ["queue", "3"] and rows["cache"][:2] == ["dict", "2"]
    assert rows["leader"][0] == "lock" and int(rows["jobs"][2]) > 0
    rc, out, err = shmkit("ls", "--url", redis_server.url, "--zone", z.name, "--json")
    assert rc == 0, err
    listed = {o["name"]: o for o in json.loads(out)}
    assert listed["jobs"]["type"] == "queue" and listed["jobs"]["items"] == 3
    rc, out, err = shmkit("info", "--url", redis_server.url, "--zone", z.name, "jobs", "--json")
    assert rc == 0, err
    info = json.loads(out)
    assert info["type"] == "queue" and info["statistics"]["depth"] == 3
    assert info["statistics"]["puts"] == 3
    rc, out, err = shmkit("info", "--url", redis_server.url, "--zone", z.name, "jobs")
    assert rc == 0 and "depth" in out
    rc, out2, err = shmkit("info", "--url", redis_server.url, f"{z.name}/jobs")
    assert rc == 0 and out2 == out
    rc, out, err = shmkit("ls", "--url", redis_server.url, z.name, "--bytes")
    assert rc == 0 and "jobs" in out and "queue" in out
    rc, out, err = shmkit("info", "--url", redis_server.url, "--zone", z.name, "nope")
    assert rc == 3 and "nope" in err
    rc, out, err = shmkit("info", "--url", redis_server.url, "jobs")
    assert rc == 2 and "zone" in err


def test_unreachable_server(redis_server):
    from redis_support import free_port
    rc, out, err = shmkit("ls", "--url", f"redis://127.0.0.1:{free_port()}/0")
    assert rc == 6 and "connect" in err.lower()


def test_ls_and_info_on_a_cluster(cluster_zone, redis_cluster):
    z = cluster_zone()
    z.queue("jobs").put_many([b"x"] * 2)
    z.dict("cache")["a"] = 1
    rc, out, err = shmkit("ls", "--url", redis_cluster.url, z.name, "--json")
    assert rc == 0, err
    listed = {o["name"]: o for o in json.loads(out)}
    assert listed["jobs"]["items"] == 2 and listed["cache"]["items"] == 1
    rc, out, err = shmkit("info", "--url", redis_cluster.url, f"{z.name}/jobs", "--json")
    assert rc == 0 and json.loads(out)["statistics"]["depth"] == 2, err
