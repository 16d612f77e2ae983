"""``/metrics``: the status document in the Prometheus text format, made with the
prometheus_client library (``pip install shmkit[metrics]``).

Every figure is read from shared memory at scrape time (through collect.py, the same
document the page shows) and is the field of ``statistics()`` named in ``METRICS``; the
names are stable (docs/serve.md lists them).  Labels: ``zone`` and ``name`` for objects,
``zone`` for zones, ``backend``, ``segment`` and ``kind`` for segments.
"""

from __future__ import annotations

from typing import Any

try:
    from prometheus_client import CollectorRegistry, exposition
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
except ImportError as _e:  # pragma: no cover - exercised where the extra is missing
    raise ImportError("/metrics needs prometheus_client: pip install shmkit[metrics]") from _e

__all__ = ["METRICS", "CONTENT_TYPE", "render_metrics", "families"]

CONTENT_TYPE = getattr(exposition, "CONTENT_TYPE_PLAIN_0_0_4", exposition.CONTENT_TYPE_LATEST)

G, C = "gauge", "counter"


def _bool(v: object) -> float:
    return 1.0 if v else 0.0


def _dead(v: object) -> float:
    return 1.0 if v is False else 0.0


def _at_least_once(v: object) -> float:
    return 1.0 if v == "at-least-once" else 0.0


def _ns(v: float) -> float:
    return v / 1e9


#: object kind -> [(metric name, statistics() field, type, help, transform or None)]
#: (counters are exposed with the suffix _total that the format adds)
METRICS: dict[str, Any] = {
    "queue": [
        ("shmkit_queue_depth", "depth", G, "messages in the queue", None),
        ("shmkit_queue_used_bytes", "bytes_used", G, "ring bytes in use, headers included", None),
        ("shmkit_queue_capacity_bytes", "capacity", G, "ring bytes", None),
        ("shmkit_queue_max_messages", "max_messages", G, "message limit (0: none)", None),
        ("shmkit_queue_puts", "puts", C, "messages put", None),
        ("shmkit_queue_gets", "gets", C, "messages got", None),
        ("shmkit_queue_waits", "waits", C, "times a caller slept waiting for data or space", None),
        ("shmkit_queue_dropped_puts", "dropped_puts", C,
         "messages claimed by producers that died before committing", None),
        ("shmkit_queue_dropped_gets", "dropped_gets", C,
         "messages taken by consumers that died holding them", None),
        ("shmkit_queue_recoveries", "recoveries", C,
         "repairs of what dead processes left behind", None),
        ("shmkit_queue_handles", "members", G,
         "handles attached (all processes but the status page)", None),
        ("shmkit_queue_reservations", "reservations", G, "zero-copy blocks alive", None),
        ("shmkit_queue_closed", "closed", G, "1 once the queue is closed", _bool),
        ("shmkit_queue_at_least_once", "delivery", G,
         "1 for acknowledged delivery (at-least-once), 0 for at-most-once", _at_least_once),
        ("shmkit_queue_unfinished_tasks", "unfinished_tasks", G,
         "messages put and not yet marked done (what join() waits for)", None),
        ("shmkit_queue_in_flight", "in_flight", G, "messages taken and not yet marked done", None),
        ("shmkit_queue_acknowledged", "acknowledged", C, "tasks marked done (task_done)", None),
        ("shmkit_queue_redeliveries", "redeliveries", C,
         "at-least-once: messages given back by dead or detached consumers", None),
        ("shmkit_queue_abandoned_tasks", "abandoned_tasks", C,
         "at-most-once: tasks released with dead or detached consumers", None),
    ],
    "dict": [
        ("shmkit_dict_items", "items", G, "keys held (expired ones until reclaimed)", None),
        ("shmkit_dict_hits", "hits", C, "lookups that found a value", None),
        ("shmkit_dict_misses", "misses", C, "lookups that found none", None),
        ("shmkit_dict_evictions", "evictions", C, "unexpired items removed to make room", None),
        ("shmkit_dict_expirations", "expirations", C, "expired items reclaimed", None),
        ("shmkit_dict_memory_bytes", "memory", G, "bytes the dict occupies in its zone", None),
        ("shmkit_dict_capacity_bytes", "capacity", G, "bytes of item memory", None),
        ("shmkit_dict_free_bytes", "free_space", G, "bytes of item memory free", None),
        ("shmkit_dict_ttl_items", "ttl_items", G, "items with an expiry time", None),
        ("shmkit_dict_recoveries", "recoveries", C, "shards rebuilt after a writer died", None),
    ],
    "lock": [
        ("shmkit_lock_held", "locked", G, "1 while held", _bool),
        ("shmkit_lock_owner_pid", "owner_pid", G, "holding process (0: free)", None),
        ("shmkit_lock_owner_dead", "owner_alive", G,
         "1 while the holder is dead and the lock awaits take-over", _dead),
        ("shmkit_lock_waiters", "waiters", G, "asleep waiting for it (approximate)", None),
        ("shmkit_lock_acquisitions", "acquisitions", C, "successful acquires", None),
        ("shmkit_lock_contentions", "contentions", C, "acquires that found it held", None),
        ("shmkit_lock_owner_deaths", "owner_deaths", C, "holds taken over from dead holders", None),
    ],
    "rwlock": [
        ("shmkit_rwlock_writer_pid", "writer_pid", G, "writer (0: none)", None),
        ("shmkit_rwlock_readers", "readers", G, "read holds now", None),
        ("shmkit_rwlock_waiters", "waiters", G, "asleep waiting (approximate)", None),
        ("shmkit_rwlock_read_acquisitions", "read_acquisitions", C, "read acquires", None),
        ("shmkit_rwlock_write_acquisitions", "write_acquisitions", C, "write acquires", None),
        ("shmkit_rwlock_contentions", "contentions", C, "acquires that had to wait", None),
        ("shmkit_rwlock_owner_deaths", "owner_deaths", C, "dead writers taken over", None),
        ("shmkit_rwlock_reader_deaths", "reader_deaths", C, "dead readers reclaimed", None),
    ],
    "semaphore": [
        ("shmkit_semaphore_value", "value", G, "units available", None),
        ("shmkit_semaphore_initial", "initial", G, "initial value", None),
        ("shmkit_semaphore_waiters", "waiters", G, "asleep waiting (approximate)", None),
        ("shmkit_semaphore_acquisitions", "acquisitions", C, "successful acquires", None),
        ("shmkit_semaphore_contentions", "contentions", C, "acquires that had to wait", None),
        ("shmkit_semaphore_holders", "holders", G, "undo: processes holding units", None),
        ("shmkit_semaphore_reclaimed", "reclaimed", C, "undo: units given back from the dead",
         None),
    ],
    "event": [
        ("shmkit_event_set", "is_set", G, "1 while set", _bool),
        ("shmkit_event_waiters", "waiters", G, "asleep in wait()", None),
        ("shmkit_event_sets", "sets", C, "set() calls that changed it", None),
        ("shmkit_event_waits", "waits", C, "wait() calls that had to wait", None),
    ],
    "condition": [
        ("shmkit_condition_waiters", "waiters", G, "in wait() now", None),
        ("shmkit_condition_notifies", "notifies", C, "notify() calls that found waiters", None),
        ("shmkit_condition_waits", "waits", C, "wait() calls", None),
    ],
    "counter": [
        ("shmkit_counter_value", "value", G, "the counter's value", None),
    ],
    "board": [
        ("shmkit_board_version", "version", G, "latest version (0: nothing yet)", None),
        ("shmkit_board_last_publish_timestamp_seconds", "last_publish_ns", G,
         "time of the latest publication (0: never)", _ns),
        ("shmkit_board_writer_pid", "writer_pid", G, "writer (0: none)", None),
        ("shmkit_board_writer_alive", "writer_alive", G, "1 while the writer lives", _bool),
        ("shmkit_board_waiters", "waiters", G, "readers asleep in wait_newer", None),
        ("shmkit_board_zero_copy_readers_in_use", "zero_copy_readers_in_use", G,
         "zero-copy views held", None),
        ("shmkit_board_pinned_skips", "pinned_skips", C,
         "buffers the writer skipped because a reader pinned them", None),
        ("shmkit_board_takeovers", "takeovers", C, "writers that replaced a dead writer", None),
        ("shmkit_board_reclaimed", "reclaimed", C, "reader records taken back from the dead",
         None),
    ],
}
METRICS["rlock"] = METRICS["lock"]
METRICS["config"] = METRICS["board"]

#: the zone's allocator (statistics() of Zone, plus used_bytes)
ZONE_METRICS = [
    ("shmkit_zone_size_bytes", "size", G, "current size", None),
    ("shmkit_zone_max_size_bytes", "max_size", G, "size it may grow to", None),
    ("shmkit_zone_free_bytes", "free_bytes", G, "free pages plus free slab chunks", None),
    ("shmkit_zone_used_bytes", "used_bytes", G, "page bytes in use", None),
    ("shmkit_zone_largest_free_bytes", "largest_free_bytes", G,
     "largest allocation that fits without growing", None),
    ("shmkit_zone_pages", "total_pages", G, "allocator pages", None),
    ("shmkit_zone_free_pages", "free_pages", G, "free pages", None),
    ("shmkit_zone_page_requests", "page_reqs", C, "page-run requests (> 2 KiB)", None),
    ("shmkit_zone_page_failures", "page_fails", C, "page-run requests that failed", None),
    ("shmkit_zone_recoveries", "recoveries", C, "repairs after a process died holding the "
     "zone mutex", None),
    ("shmkit_zone_grows", "grow_count", C, "times the zone grew", None),
    ("shmkit_zone_objects", "objects", G, "named objects", None),
]

SLAB_METRICS = [
    ("shmkit_zone_slab_pages", "pages", G, "pages of this size class", None),
    ("shmkit_zone_slab_chunks", "total", G, "chunks in those pages", None),
    ("shmkit_zone_slab_used_chunks", "used", G, "chunks handed out", None),
    ("shmkit_zone_slab_requests", "reqs", C, "allocation requests", None),
    ("shmkit_zone_slab_failures", "fails", C, "requests that failed for lack of memory", None),
]

SEGMENT_METRICS = [
    ("shmkit_segment_size_bytes", "size", G, "size", None),
    ("shmkit_segment_attached_processes", "nattch", G, "processes that have it attached", None),
    ("shmkit_segment_stale", "status", G, "1 when its lifecycle says it should be gone",
     lambda s: 1.0 if "stale" in s else 0.0),
]

OTHER_METRICS = [
    ("shmkit_dev_shm_size_bytes", None, G, "size of /dev/shm", None),
    ("shmkit_dev_shm_free_bytes", None, G, "free bytes in /dev/shm", None),
    ("shmkit_zone_ready", None, G, "1 when the zone could be read and is ready", None),
    ("shmkit_zone_state", None, G, "1 for the zone's state (ready, corrupt, gone, ...)", None),
    ("shmkit_object_error", None, G, "1 when an object could not be read", None),
]


def all_metric_names() -> list[str]:
    names = {m[0] for rows in METRICS.values() for m in rows}
    for rows in (ZONE_METRICS, SLAB_METRICS, SEGMENT_METRICS, OTHER_METRICS):
        names |= {m[0] for m in rows}
    return sorted(names)


def _family(name: str, typ: str, help_: str, labels: list[str]) -> Any:
    cls = CounterMetricFamily if typ == C else GaugeMetricFamily
    return cls(name, help_, labels=labels)


def _fill(table: Any, labels: list[str], rows: list[tuple[list[str], dict[str, Any]]],
          out: dict[str, Any]) -> None:
    """rows: [(label values, stats dict)] -> one family per metric of the table."""
    for name, field, typ, help_, f in table:
        fam = out.get(name)
        if fam is None:
            fam = out[name] = _family(name, typ, help_, labels)
        for values, st in rows:
            v = st[field]
            fam.add_metric(values, float(f(v) if f else v))


def families(doc: dict[str, Any]) -> list[Any]:
    """The metric families of one status document."""
    out: dict[str, Any] = {}
    shm = doc["dev_shm"]
    if "size" in shm:
        for name, key in (("shmkit_dev_shm_size_bytes", "size"),
                          ("shmkit_dev_shm_free_bytes", "free")):
            out[name] = GaugeMetricFamily(name, f"{key} of {shm['path']}", value=shm[key])
    _fill(SEGMENT_METRICS, ["backend", "segment", "kind"],
          [([s["backend"], s["display_name"], s["kind"] or "foreign"], s)
           for s in doc["segments"]], out)
    ready = GaugeMetricFamily("shmkit_zone_ready", "1 when the zone could be read and is ready",
                              labels=["zone"])
    state = GaugeMetricFamily("shmkit_zone_state", "1 for the zone's state",
                              labels=["zone", "state"])
    broken = GaugeMetricFamily("shmkit_object_error", "1 when an object could not be read",
                               labels=["zone", "name", "type"])
    zone_rows: list[tuple[list[str], dict[str, Any]]] = []
    slab_rows: list[tuple[list[str], dict[str, Any]]] = []
    per_kind: dict[str, Any] = {}
    for z in doc["zones"]:
        ready.add_metric([z["name"]], 1.0 if z["state"] == "ready" else 0.0)
        state.add_metric([z["name"], z["state"]], 1.0)
        if z["allocator"] is None:
            continue
        zone_rows.append(([z["name"]], z["allocator"]))
        slab_rows += [([z["name"], str(c["size"])], c) for c in z["slab_classes"]]
        for o in z["objects"]:
            if o["error"]:
                broken.add_metric([z["name"], o["name"], o["type"]], 1.0)
            elif o["statistics"] is not None and o["type"] in METRICS:
                per_kind.setdefault(o["type"], []).append(([z["name"], o["name"]],
                                                           o["statistics"]))
    out.update({"shmkit_zone_ready": ready, "shmkit_zone_state": state,
                "shmkit_object_error": broken})
    _fill(ZONE_METRICS, ["zone"], zone_rows, out)
    _fill(SLAB_METRICS, ["zone", "chunk_bytes"], slab_rows, out)
    for kind, rows in per_kind.items():
        _fill(METRICS[kind], ["zone", "name"], rows, out)
    return list(out.values())


class _Collector:
    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc

    def collect(self) -> list[Any]:
        return families(self.doc)


def render_metrics(doc: dict[str, Any]) -> bytes:
    """The exposition text of one status document."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(doc))
    return exposition.generate_latest(registry)
