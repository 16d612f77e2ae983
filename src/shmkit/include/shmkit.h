/*
 * shmkit.h - shmkit from C and C++: zones, queues, dicts, locks and counters in shared
 * memory, shared with the Python processes that use the same names.
 *
 * @section intro_sec Introduction
 *
 * shmkit is shared memory for processes on Linux: named segments, zones (a segment with
 * an allocator and a directory of named objects, in the manner of nginx's shared zones),
 * and the structures processes pass between them.  Its core is a C library; Python's
 * `import shmkit` is one way in, this header is the other.  A C program and a Python
 * program that open the same zone and the same object name use the same bytes: a queue
 * filled by C is emptied by Python, a dict key incremented by both holds the exact sum,
 * a lock held by a C process that is killed is taken over by a Python waiter.
 *
 * Building:
 *
 *     cc -o prog prog.c $(shmkit config --cflags --libs)
 *
 * or with pkg-config (the relocatable shmkit.pc is installed with the package):
 *
 *     export PKG_CONFIG_PATH=$(shmkit config --pkgconfigdir)
 *     cc -o prog prog.c $(pkg-config --cflags --libs shmkit)
 *
 * From Python, shmkit.get_include() and shmkit.get_library_dir() give the directories.
 * The library is libshmkit.so inside the installed package; the flags above record its
 * directory as the program's run path (-Wl,-rpath), so the program finds it without
 * LD_LIBRARY_PATH.  docs/c.md is the guide; this header is the reference.
 *
 * @section design_sec Design
 *
 * The library is the shmkit C core (the same sources the Python extension is built
 * from, so the bytes are the same: core/layout.h is their one specification) with this
 * thin layer on top.  Every handle is opaque and per process: a shmkit_zone maps a zone
 * into this process; a shmkit_queue, shmkit_dict, shmkit_lock or shmkit_counter is this
 * process's handle on one named object in an open zone.  Objects are found by name
 * and created on first use (SHMKIT_CREATE), with the same parameters Python uses, so
 * either side may create them.
 *
 * Errors.  Every function that can fail returns an int:
 *     0               success
 *     > 0             an errno value (ENOENT, EACCES, ENOSPC, EINVAL, ETIMEDOUT, EBUSY,
 *                     ENOBUFS, ...), from the system or with the same meaning
 *     SHMKIT_E* < 0   a shmkit condition, in the reserved range -30600 .. -30699
 * shmkit_strerror() describes any of them; shmkit_error_detail() gives the message of
 * the last failure in the calling thread, naming the function and what was wrong, e.g.
 * "zone exists with size 1048576; it was declared again with size 65536".  The
 * SHMKIT_E* values are those of the core's error table (core/errors.def) and are fixed
 * forever; a test checks this list against it.
 *
 * Timeouts are in seconds, as a double, as in the Python API: a negative value
 * (SHMKIT_FOREVER) waits as long as it takes, 0 tries once without waiting (the
 * shmkit_*_try_* functions are the same call with 0), and a positive value waits at
 * most that long, measured on CLOCK_MONOTONIC from the call (one deadline: retries
 * never stretch it).  A wait that runs out returns ETIMEDOUT; a try that cannot
 * proceed returns EBUSY (locks) or SHMKIT_EEMPTY / SHMKIT_EFULLQ (queues).
 *
 * @section guarantees_sec Guarantees
 *
 *  - The bytes are the Python package's bytes: one layout, checked at every attach by
 *    a magic number and a format word (layout version, sizeof(pthread_mutex_t), cache
 *    line, pid_t).  A zone made by an incompatible build is refused with
 *    SHMKIT_EVERSION, never misread.
 *  - Nothing read from shared memory is trusted: offsets and lengths are bounds-checked,
 *    and a corrupted zone gives SHMKIT_ECORRUPT, not a crash.
 *  - Crashed processes do not wedge the others.  A lock whose holder died (SIGKILL
 *    included) is taken over by the next acquirer, which is told so: the acquire
 *    returns SHMKIT_EOWNERDEAD, with the lock held.  A producer or consumer killed in
 *    the middle of a queue operation loses at most its own message, never anyone
 *    else's; a dict writer killed inside its shard's critical section is repaired by
 *    the next writer of that shard.
 *  - Queue messages are delivered exactly once to one consumer, in the order each
 *    producer put them (messages of different producers interleave).
 *  - Dict operations and counter operations are atomic: concurrent increments from any
 *    number of C and Python processes add up exactly.
 *  - Blocking calls sleep on futexes (no polling), spin briefly first (adaptively), and
 *    honour their deadline.
 *
 * @section caveats_sec Caveats
 *
 *  - Signals.  A blocking call is not ended by a signal: when a handler of this
 *    program runs while the call sleeps, the call resumes its wait (with the same
 *    deadline) once the handler returns, as SA_RESTART would make it.  A program that
 *    wants a signal to end a wait uses a timeout and checks a flag set by its handler
 *    between calls.  No function here is async-signal-safe; do not call them from a
 *    signal handler.
 *  - Threads.  A shmkit_zone, shmkit_lock and shmkit_counter handle may be used by
 *    several threads at once.  A shmkit_queue or shmkit_dict handle keeps per-handle
 *    state (the queue's member slot, the dict's hit counts): use it from one thread at
 *    a time, or open one handle per thread (handles are cheap).  A lock belongs to the
 *    process: any thread of the process that acquired it may release it; acquiring it
 *    twice without releasing deadlocks, as with a non-recursive mutex.
 *  - fork().  The child inherits mappings and handles.  It does not inherit lock
 *    holds: a lock the parent holds stays the parent's.  A queue handle takes a new
 *    member slot in the child by itself.  The child shares its parent's open file
 *    descriptions, and with them the OFD locks that tell other processes it is
 *    attached; the cleanest is to open handles after fork() in the child, and to
 *    close the inherited ones.  Do not fork while another thread is inside a call.
 *  - Closing.  shmkit_*_close() releases a handle.  Object handles keep their zone
 *    mapped: shmkit_zone_close() may be called before the object handles are closed,
 *    and the zone is unmapped when its last handle goes.  Closing a handle while
 *    another thread is inside a call on that same handle is undefined behaviour.
 *  - Removing.  shmkit_segment_unlink() and shmkit_zone_unlink() remove the name;
 *    processes that have it mapped keep using it until they close it.  Segments and
 *    zones made here persist until unlinked (lifecycle "persist"); the other lifecycles
 *    of the Python API are chosen by Python creators and honoured here (a C handle
 *    counts as attached).
 *  - Only POSIX shared memory (names in /dev/shm) is opened here; SysV, file, memfd
 *    and anonymous segments and zones are the Python API's for now.
 *  - Values are bytes.  A dict written by Python may hold values of other types (str,
 *    int, float, pickled objects); shmkit_dict_get() returns str values as their UTF-8
 *    bytes and refuses the others with SHMKIT_ETYPE; shmkit_dict_get_int() reads ints.
 *    Keys are bytes: Python reaches them as bytes keys (d[b"hits"]), not str keys.
 *  - Two copies of the core in one process (this library and the Python extension,
 *    e.g. through ctypes) work, but keep separate per-process caches; prefer one.
 */
#ifndef SHMKIT_H
#define SHMKIT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__) || defined(__clang__)
#define SHMKIT_API __attribute__((visibility("default")))
#else
#define SHMKIT_API
#endif

/* ---- version --------------------------------------------------------------------------- */

/* The version of the package this header comes from (the library says its own with
 * shmkit_version(); the layout version of the bytes is checked at every attach). */
#define SHMKIT_VERSION_MAJOR 0
#define SHMKIT_VERSION_MINOR 1
#define SHMKIT_VERSION_PATCH 0
#define SHMKIT_VERSION_STRING "0.1.0"

/* The library's version string ("0.1.0"); major, minor, patch through the pointers that
 * are not NULL. */
SHMKIT_API const char *shmkit_version(int *major, int *minor, int *patch);

/* ---- errors ------------------------------------------------------------------------------ */

/* shmkit's own conditions (errno values are positive, these negative).  One line each;
 * the same list as core/errors.def, in the same order, with the same values. */
#define SHMKIT_ECORRUPT (-30600)     /* shared structure is corrupted */
#define SHMKIT_EVERSION (-30601)     /* made by an incompatible shmkit layout */
#define SHMKIT_EMISMATCH (-30602)    /* zone exists with a different size or tag */
#define SHMKIT_EFULL (-30603)        /* zone is full */
#define SHMKIT_EOWNERDEAD (-30604)   /* previous owner died holding the lock */
#define SHMKIT_ENOTFOUND (-30605)    /* no such object in the zone */
#define SHMKIT_EEXISTS (-30606)      /* object already exists */
#define SHMKIT_ETYPE (-30607)        /* object exists with a different type */
#define SHMKIT_EBADFREE (-30608)     /* free of something that is not a live allocation */
#define SHMKIT_EINITDIED (-30609)    /* the process initialising the zone died */
#define SHMKIT_ENOTREADY (-30610)    /* zone is not initialised */
#define SHMKIT_ETOOBIG (-30611)      /* request is larger than the structure can ever hold */
#define SHMKIT_ENOTOWNER (-30612)    /* lock is not held by the caller */
#define SHMKIT_EBROKEN (-30613)      /* barrier is broken */
#define SHMKIT_EEMPTY (-30614)       /* empty */
#define SHMKIT_EFULLQ (-30615)       /* full */
#define SHMKIT_ECLOSED (-30616)      /* closed */
#define SHMKIT_ENAME (-30617)        /* invalid object name */
#define SHMKIT_ENOGROW (-30618)      /* zone cannot grow any further */
#define SHMKIT_EOBJMISMATCH (-30619) /* object exists with other parameters */

#define SHMKIT_ERANGE_FIRST (-30600) /* the reserved range, first and last value */
#define SHMKIT_ERANGE_LAST (-30699)

/* One line describing code (0, an errno value or SHMKIT_E*).  Never NULL; static. */
SHMKIT_API const char *shmkit_strerror(int code);

/* The message of the last failure in the calling thread ("" if none recorded), e.g.
 * "queue 'jobs' exists with capacity 1048576 bytes; it was opened with 65536".  Valid
 * until the thread's next shmkit call. */
SHMKIT_API const char *shmkit_error_detail(void);

/* ---- flags and limits --------------------------------------------------------------------- */

/* Opening (segments, zones' objects) */
#define SHMKIT_CREATE 0x01   /* create it when it does not exist */
#define SHMKIT_EXCL 0x02     /* with SHMKIT_CREATE: fail (EEXIST, SHMKIT_EEXISTS) if it exists */
#define SHMKIT_RDONLY 0x04   /* segments: map read-only */
#define SHMKIT_ANYOWNER 0x08 /* segments and zones: attach to one owned by another user
                                (refused by default with EACCES) */

#define SHMKIT_FOREVER (-1.0) /* a timeout: wait as long as it takes */

#define SHMKIT_NAME_MAX 63    /* bytes of an object name (queue, dict, lock, counter) */
#define SHMKIT_SEGMENT_NAME_MAX 250 /* bytes of a segment or zone name */
#define SHMKIT_TAG_MAX 64     /* bytes of a zone tag */

/* ---- segments ----------------------------------------------------------------------------- */

/*
 * A segment is a named mapping of POSIX shared memory (/dev/shm/NAME), the bytes all
 * yours: the same object Python's shmkit.Segment(NAME), shm_open(3) and
 * multiprocessing.shared_memory see.
 */
typedef struct shmkit_segment shmkit_segment;

/*
 * Open the segment NAME (a leading '/' is accepted and ignored; no other '/').
 *   flags  SHMKIT_CREATE: create it if it does not exist, with `size` bytes (> 0) and
 *          permission bits `mode` (0: 0600); with SHMKIT_EXCL it must not exist (EEXIST).
 *          Without SHMKIT_CREATE it must exist (ENOENT).  SHMKIT_RDONLY maps it
 *          read-only; SHMKIT_ANYOWNER allows a segment of another user.
 *   size   when opening an existing segment: 0, or the least size it must have (EINVAL
 *          if smaller).
 * Space is reserved when it is created (posix_fallocate): a full /dev/shm is ENOSPC
 * here, never a SIGBUS later.  *out gets the handle.  Errors: EEXIST, ENOENT, EACCES,
 * ENOSPC, EINVAL, SHMKIT_ENAME, ENOMEM.
 */
SHMKIT_API int shmkit_segment_open(const char *name, int flags, size_t size, unsigned mode,
                                   shmkit_segment **out);

/* First byte of the mapping (read-only mapping: do not write), and its size in bytes. */
SHMKIT_API void *shmkit_segment_ptr(const shmkit_segment *seg);
SHMKIT_API size_t shmkit_segment_size(const shmkit_segment *seg);

/* 1 if this open created the segment, 0 if it existed. */
SHMKIT_API int shmkit_segment_created(const shmkit_segment *seg);

/* Unmap and release the handle (this process only; the segment stays).  NULL is
 * accepted.  Returns 0. */
SHMKIT_API int shmkit_segment_close(shmkit_segment *seg);

/* Remove the name NAME from /dev/shm: processes that have it mapped keep it until they
 * close it.  ENOENT if there is no such name. */
SHMKIT_API int shmkit_segment_unlink(const char *name);

/* ---- zones -------------------------------------------------------------------------------- */

/*
 * A zone is a segment with a header, an allocator and a directory of named objects.
 * Its identity is (name, size, tag): declaring an existing zone with the same size and
 * tag attaches to it, another size or tag is SHMKIT_EMISMATCH (the detail names both).
 */
typedef struct shmkit_zone shmkit_zone;

/* Optional parameters of shmkit_zone_open (all-zero: the defaults). */
struct shmkit_zone_options {
    size_t max_size;   /* the zone may grow up to this many bytes (0: size, no growth) */
    unsigned mode;     /* permission bits when created (0: 0600) */
    int flags;         /* SHMKIT_EXCL (the zone must not exist), SHMKIT_ANYOWNER */
    double timeout;    /* how long to wait for another process that is initialising the
                          zone (0: 30 s, as Python; SHMKIT_FOREVER: no limit) */
    /* Called exactly once, in the process that creates the zone, before any other
     * process can use it (others wait): create the zone's objects here.  Return 0, or an
     * error code to make the open fail with it (the zone stays uninitialised and the
     * next declaration initialises it again).  NULL: nothing to do. */
    int (*init)(shmkit_zone *zone, void *arg);
    void *init_arg;
};

/*
 * Declare the zone NAME (a POSIX name, as for segments) of `size` bytes (at least 16
 * KiB; rounded up to 4 KiB) with `tag` (tag_len bytes, at most SHMKIT_TAG_MAX; NULL: any
 * tag is accepted when attaching, none is recorded when creating).  size 0 attaches to
 * an existing zone of any size and creates nothing (ENOENT / SHMKIT_ENOTREADY if there
 * is none).  opts may be NULL.  If the process initialising the zone dies, waiters get
 * SHMKIT_EINITDIED and the next declaration initialises it again.
 * Errors: SHMKIT_EMISMATCH, SHMKIT_EVERSION, SHMKIT_ECORRUPT, SHMKIT_EINITDIED,
 * ETIMEDOUT, EEXIST (SHMKIT_EXCL), ENOENT, EACCES, ENOSPC, EINVAL, SHMKIT_ENAME.
 */
SHMKIT_API int shmkit_zone_open(const char *name, size_t size, const void *tag, size_t tag_len,
                                const struct shmkit_zone_options *opts, shmkit_zone **out);

/* 1 if this open created (initialised) the zone, 0 if it attached. */
SHMKIT_API int shmkit_zone_created(const shmkit_zone *zone);

/* The zone's current size in bytes (it grows up to its max_size). */
SHMKIT_API size_t shmkit_zone_size(const shmkit_zone *zone);

/* Remove the object NAME from the zone and free its memory.  Every process must have
 * stopped using it.  SHMKIT_ENOTFOUND if there is none. */
SHMKIT_API int shmkit_zone_destroy_object(shmkit_zone *zone, const char *name);

/* Release this handle (NULL is accepted).  Object handles opened from it keep the
 * mapping until they are closed too.  Returns 0. */
SHMKIT_API int shmkit_zone_close(shmkit_zone *zone);

/* Remove the zone's name (as shmkit_segment_unlink).  ENOENT if there is none. */
SHMKIT_API int shmkit_zone_unlink(const char *name);

/* ---- queue -------------------------------------------------------------------------------- */

/*
 * A multi-producer multi-consumer queue of variable-size messages in a zone (Python:
 * zone.queue(name)).  Each message is delivered once, in the order its producer put
 * it.  Messages are bytes: a Python bytes-mode queue puts and gets the same bytes.
 */
typedef struct shmkit_queue shmkit_queue;

#define SHMKIT_QUEUE_DEFAULT_CAPACITY (1u << 20) /* ring bytes of a queue created with 0 */

/*
 * Open the queue NAME in the zone; with SHMKIT_CREATE create it if missing with
 * `capacity` ring bytes (0: SHMKIT_QUEUE_DEFAULT_CAPACITY; rounded up to a power of
 * two, at least 4096).  When it exists, capacity 0 accepts it as it is and another
 * capacity than its own is SHMKIT_EOBJMISMATCH.  Errors: SHMKIT_ENOTFOUND (no
 * SHMKIT_CREATE), SHMKIT_EEXISTS (SHMKIT_EXCL), SHMKIT_ETYPE (NAME is another kind of
 * object), SHMKIT_EFULL (no room in the zone), SHMKIT_ENAME.
 */
SHMKIT_API int shmkit_queue_open(shmkit_zone *zone, const char *name, size_t capacity,
                                 int flags, shmkit_queue **out);

/*
 * Delivery modes, as flags of shmkit_queue_open (Python: zone.queue(name, delivery=...);
 * docs/queue.md, "Delivery modes").  With neither, an existing queue is taken as it is
 * and a new one is at-most-once; one that exists with the other mode is
 * SHMKIT_EOBJMISMATCH.
 *   SHMKIT_AT_MOST_ONCE   a message is the consumer's once a get returned it; if the
 *                         consumer dies before marking it done, the task is released.
 *   SHMKIT_AT_LEAST_ONCE  a message stays in the queue, owned by the handle whose get
 *                         returned it, until shmkit_queue_task_done marks it done; if the
 *                         handle's process dies or the handle is closed first, it is
 *                         delivered again to another get.
 */
#define SHMKIT_AT_MOST_ONCE 0x10
#define SHMKIT_AT_LEAST_ONCE 0x20

/*
 * Put one message of len bytes (0 allowed), waiting up to `timeout` seconds for room.
 * 0; ETIMEDOUT; SHMKIT_EFULLQ (timeout 0: no room now); SHMKIT_ETOOBIG (it can never
 * fit: larger than the ring less its 16-byte record header); SHMKIT_ECLOSED (the queue
 * was closed for puts, from Python).
 */
SHMKIT_API int shmkit_queue_put(shmkit_queue *q, const void *data, size_t len, double timeout);
SHMKIT_API int shmkit_queue_try_put(shmkit_queue *q, const void *data, size_t len);

/*
 * Take the oldest message into buf (cap bytes), waiting up to `timeout` seconds for one;
 * *len gets its length.  When it does not fit in cap bytes: ENOBUFS with *len set to
 * the size needed, and the message is not lost: it stays in the queue or, if another
 * consumer's activity made the handle take it already, the handle keeps it and its next
 * get returns it first (call again with a buffer of *len bytes; a handle closed while
 * it keeps one puts it back at the tail; at-least-once, it stays the handle's task and is
 * delivered again).  0; ETIMEDOUT; SHMKIT_EEMPTY (timeout 0:
 * nothing there); SHMKIT_ECLOSED (closed from Python and drained).  A message is the
 * bytes its producer put; from a Python objects-mode queue, a pickle (with out-of-band
 * buffers: the frame core/layout.h describes).
 */
SHMKIT_API int shmkit_queue_get(shmkit_queue *q, void *buf, size_t cap, size_t *len,
                                double timeout);
SHMKIT_API int shmkit_queue_try_get(shmkit_queue *q, void *buf, size_t cap, size_t *len);

/* Messages in the queue now (a snapshot). */
SHMKIT_API size_t shmkit_queue_depth(shmkit_queue *q);

/*
 * Task accounting (Python: q.task_done(), q.join(), q.unfinished_tasks): every message a
 * get of this handle returned is a task of this handle until marked done.
 * shmkit_queue_task_done marks the `count` oldest as done: 0, or EINVAL ("called too many
 * times": the handle holds fewer; nothing is marked).  shmkit_queue_join waits up to
 * `timeout` seconds (< 0: forever) until every message put has been marked done (or
 * released with a dead consumer, at-most-once): 0 or ETIMEDOUT; task_done wakes it, no
 * polling.  shmkit_queue_unfinished_tasks: messages put and not yet done (a snapshot).
 */
SHMKIT_API int shmkit_queue_task_done(shmkit_queue *q, size_t count);
SHMKIT_API int shmkit_queue_join(shmkit_queue *q, double timeout);
SHMKIT_API size_t shmkit_queue_unfinished_tasks(shmkit_queue *q);

/* Release the handle (its member slot goes back to the queue; the queue and its
 * messages stay).  NULL is accepted.  Returns 0. */
SHMKIT_API int shmkit_queue_close(shmkit_queue *q);

/* ---- dict --------------------------------------------------------------------------------- */

/*
 * A hash table in a zone with OpenResty's lua_shared_dict semantics (Python:
 * zone.dict(name)): bytes keys (1 .. 65535 bytes) and values, TTLs, eviction of the
 * least recently used items when full (unless SHMKIT_DICT_SAFE), atomic increments.
 * Lookups take no lock; each write holds the lock of one shard.
 */
typedef struct shmkit_dict shmkit_dict;

#define SHMKIT_DICT_DEFAULT_CAPACITY (16u << 20) /* item bytes of a dict created with 0 */

/* shmkit_dict_set flags */
#define SHMKIT_DICT_ADD 0x1      /* only if the key is absent (else SHMKIT_EEXISTS) */
#define SHMKIT_DICT_REPLACE 0x2  /* only if the key is present (else SHMKIT_ENOTFOUND) */
#define SHMKIT_DICT_SAFE 0x10    /* never evict other items to make room (SHMKIT_EFULL) */

/*
 * Open the dict NAME in the zone; with SHMKIT_CREATE create it if missing with
 * `capacity` bytes of item memory (0: SHMKIT_DICT_DEFAULT_CAPACITY).  When it exists,
 * capacity 0 accepts it, another capacity than its own is SHMKIT_EOBJMISMATCH.  Errors
 * as shmkit_queue_open.
 */
SHMKIT_API int shmkit_dict_open(shmkit_zone *zone, const char *name, size_t capacity,
                                int flags, shmkit_dict **out);

/*
 * Copy the value of key into buf (cap bytes); *len gets its length.  0;
 * SHMKIT_ENOTFOUND (absent or expired); ENOBUFS (*len: the size needed; call again);
 * SHMKIT_ETYPE (a value stored by Python that is not bytes or str: use
 * shmkit_dict_get_int for ints).  str values come back as their UTF-8 bytes.
 */
SHMKIT_API int shmkit_dict_get(shmkit_dict *d, const void *key, size_t klen, void *buf,
                               size_t cap, size_t *len);

/* The int value of key (stored by shmkit_dict_incr, shmkit_dict_set_int or Python):
 * 0; SHMKIT_ENOTFOUND; SHMKIT_ETYPE (not an int); ERANGE (an int beyond int64). */
SHMKIT_API int shmkit_dict_get_int(shmkit_dict *d, const void *key, size_t klen,
                                   int64_t *value);

/*
 * Store value (vlen bytes) under key, expiring after ttl seconds (0: never; rounded to
 * milliseconds, at least 1), with flags SHMKIT_DICT_ADD / SHMKIT_DICT_REPLACE /
 * SHMKIT_DICT_SAFE.  0; SHMKIT_EEXISTS (ADD); SHMKIT_ENOTFOUND (REPLACE); SHMKIT_EFULL
 * (no room, even after evicting, or SAFE); SHMKIT_ETOOBIG (key and value can never fit
 * in one shard); EINVAL.
 */
SHMKIT_API int shmkit_dict_set(shmkit_dict *d, const void *key, size_t klen, const void *value,
                               size_t vlen, double ttl, int flags);

/* The same with an int value (Python reads it as an int). */
SHMKIT_API int shmkit_dict_set_int(shmkit_dict *d, const void *key, size_t klen, int64_t value,
                                   double ttl, int flags);

/* Remove key: 0 if it was there, SHMKIT_ENOTFOUND otherwise. */
SHMKIT_API int shmkit_dict_delete(shmkit_dict *d, const void *key, size_t klen);

/*
 * Add step to the int at key, atomically; *result (if not NULL) gets the new value.
 * A missing (or expired) key is SHMKIT_ENOTFOUND, or, when init is not NULL, becomes
 * *init + step, expiring after init_ttl seconds (0: never).  SHMKIT_ETYPE: the value is
 * not a number (nothing changed), or a float (then, as Python's incr does, the sum was
 * stored as a float; *result is not set).  ERANGE: the sum left int64; it was stored
 * exactly (Python sees the big int) but *result is not set.
 */
SHMKIT_API int shmkit_dict_incr(shmkit_dict *d, const void *key, size_t klen, int64_t step,
                                const int64_t *init, double init_ttl, int64_t *result);

/* Seconds before key expires into *ttl (a negative value: never).  SHMKIT_ENOTFOUND. */
SHMKIT_API int shmkit_dict_ttl(shmkit_dict *d, const void *key, size_t klen, double *ttl);

/* Release the handle (NULL is accepted; the dict stays).  Returns 0. */
SHMKIT_API int shmkit_dict_close(shmkit_dict *d);

/* ---- locks -------------------------------------------------------------------------------- */

/*
 * A lock that survives its holder's death (Python: zone.lock(name), shmkit.Lock).  It
 * belongs to the process that acquired it.  If that process dies holding it, the next
 * acquire (within about 10 ms of the death) gets the lock and returns
 * SHMKIT_EOWNERDEAD instead of 0: the data it protects may be half-updated; repair it
 * before releasing.
 */
typedef struct shmkit_lock shmkit_lock;

/* Open the lock NAME in the zone (SHMKIT_CREATE: create it if missing, free).  Errors as
 * shmkit_queue_open. */
SHMKIT_API int shmkit_lock_open(shmkit_zone *zone, const char *name, int flags,
                                shmkit_lock **out);

/* Acquire, waiting up to timeout seconds.  0 (acquired); SHMKIT_EOWNERDEAD (acquired,
 * the previous holder died holding it); ETIMEDOUT; EBUSY (timeout 0: held). */
SHMKIT_API int shmkit_lock_acquire(shmkit_lock *lock, double timeout);
SHMKIT_API int shmkit_lock_try(shmkit_lock *lock);

/* Release: 0, or SHMKIT_ENOTOWNER when this process does not hold it. */
SHMKIT_API int shmkit_lock_release(shmkit_lock *lock);

/* Release the handle (not the lock: a held lock stays held).  NULL accepted.  0. */
SHMKIT_API int shmkit_lock_close(shmkit_lock *lock);

/* ---- counters ----------------------------------------------------------------------------- */

/*
 * A signed 64-bit integer changed by atomic instructions, without a lock (Python:
 * zone.counter(name), shmkit.Counter).  Arithmetic wraps modulo 2**64.
 */
typedef struct shmkit_counter shmkit_counter;

/* Open the counter NAME (SHMKIT_CREATE: create it if missing, with value `initial`;
 * initial is ignored when it exists).  Errors as shmkit_queue_open. */
SHMKIT_API int shmkit_counter_open(shmkit_zone *zone, const char *name, int64_t initial,
                                   int flags, shmkit_counter **out);

/* Add n (negative to subtract); returns the new value. */
SHMKIT_API int64_t shmkit_counter_add(shmkit_counter *c, int64_t n);

/* The value now. */
SHMKIT_API int64_t shmkit_counter_load(shmkit_counter *c);

/* Set the value. */
SHMKIT_API void shmkit_counter_store(shmkit_counter *c, int64_t value);

/* If the value is *expected, make it desired and return 1; otherwise copy the value
 * into *expected and return 0 (C11's atomic_compare_exchange_strong). */
SHMKIT_API int shmkit_counter_cas(shmkit_counter *c, int64_t *expected, int64_t desired);

/* Release the handle (NULL accepted).  0. */
SHMKIT_API int shmkit_counter_close(shmkit_counter *c);

#ifdef __cplusplus
}
#endif
#endif /* SHMKIT_H */
