/*
 * sync.c (binding) - shmkit._core.Lock, RLock, RWLock, Semaphore, Event, Condition,
 * Barrier and Counter: handles on sync objects in a zone (core/sync.h).
 *
 * A handle keeps its zone's segment exported, so the mapping outlives a zone.close()
 * (the handle stays usable, and so does a wait in progress); a wait is also a call in
 * progress (common.c): close() of the handle from another thread ends it with
 * ClosedError, and the mapping stays until it has returned.  Fast paths (an uncontended acquire or release, set,
 * is_set, a counter add) take no keyword parsing and never release the GIL.  A call that
 * must wait spins with the GIL held when this is the interpreter's only thread (nobody
 * else needs the GIL), and otherwise releases it before spinning; it always releases it
 * to sleep, and runs the signal handlers (PEP 475) each time the core returns EINTR, so
 * Ctrl-C interrupts a blocked wait.
 *
 * The Python classes of shmkit.sync subclass these types: the methods below are called
 * directly, without a Python-level wrapper.
 */
#include "binding.h"

#include <errno.h>
#include <limits.h>

#include "sync.h"

typedef struct {
    SHK_PY_HANDLE_HEAD
    void *sh;               /* the shared object; NULL once closed */
    uint64_t off;
    uint32_t type;          /* SHK_OBJ_* */
    uint32_t slot;          /* RWLock: this process's reader slot (a hint) */
    uint32_t extent;        /* slots (RWLock, undo Semaphore) or parties (Barrier) found
                               when the handle was made: loops run over that many, so a
                               count overwritten later is caught, not followed */
    uint64_t next_live;     /* throttles liveness checks of non-blocking calls */
    int owner_died;         /* the last acquire through this handle took over a hold of a
                               process (or thread) that had died */
} SyncObject;

static PyTypeObject *LockType, *RLockType, *RWLockType, *SemaphoreType, *EventType,
    *ConditionType, *BarrierType, *CounterType;

/* ---- helpers ------------------------------------------------------------------------- */

#define LIVE(o)                                                                   \
    do {                                                                          \
        if (__builtin_expect((o)->sh == NULL, 0))                                 \
            return shk_py_closed("this synchronisation handle is closed");        \
    } while (0)

/* The methods that are one core call on a live handle: VOID_METHOD returns None,
 * GETTER_METHOD the Python object that expr builds (o is the handle in both). */
#define VOID_METHOD(name, call)                                \
    static PyObject *name(SyncObject *o, PyObject *unused)     \
    {                                                          \
        LIVE(o);                                               \
        call;                                                  \
        Py_RETURN_NONE;                                        \
    }
#define GETTER_METHOD(name, expr)                              \
    static PyObject *name(SyncObject *o, PyObject *unused)     \
    {                                                          \
        LIVE(o);                                               \
        return expr;                                           \
    }

/* A wait for a call on this handle.  A non-blocking attempt (SHK_WAIT_TRY) checks a
 * holder's liveness at most once per liveness interval per handle: a loop of
 * acquire(False) reads /proc at that rate, not at every call. */
static struct shk_wait wait_for(SyncObject *o, const struct timespec *deadline, uint32_t flags)
{
    struct shk_wait w = SHK_WAIT_INIT(shk_wait_deadline(deadline), flags);
    if (flags & SHK_WAIT_TRY) {
        w.next_live = o->next_live;
        w.live_step = shk_wait_cfg.liveness_ns;
    }
    return w;
}

/* Run op on obj for a call on handle o (pending: see shk_py_wait).  Closed by another
 * thread meanwhile: ClosedError (SHK_PY_ERR), unless the wait had succeeded. */
static int run_wait(SyncObject *o, const struct shk_wait_op *op, void *obj, struct shk_wait *w,
                    int *pending)
{
    struct shk_py_call call;
    shk_py_call_begin(&call, o->seg, o, 0, w);
    int r = shk_py_wait(op, obj, w, 0, pending);
    shk_py_call_end(&call);
    if (w->flags & SHK_WAIT_TRY)
        o->next_live = w->next_live;
    if (r == ECANCELED && call.cancel) {
        if (!(pending && *pending))
            shk_py_closed("this synchronisation handle was closed while waiting");
        return SHK_PY_ERR;
    }
    return r;
}

/* ---- construction ------------------------------------------------------------------------ */

/* A handle that is open and whose size fields, validated when it was made, still hold
 * (see extent): 0, or -1 with ClosedError or CorruptedError. */
static inline int usable(SyncObject *o)
{
    if (__builtin_expect(o->sh == NULL, 0)) {
        shk_py_closed("this synchronisation handle is closed");
        return -1;
    }
    uint32_t now = shk_sync_extent(o->sh, o->type);
    if (__builtin_expect(now == o->extent, 1))
        return 0;
    PyErr_Format(shk_py_exc("CorruptedError"), "sync object at offset %llu: its size field "
                 "changed from %u to %u after it was opened", (unsigned long long)o->off,
                 o->extent, now);
    return -1;
}

/* LIVE, and the size fields still hold: for the types whose loops run over them. */
#define USABLE(o)                   \
    do {                            \
        if (usable(o) < 0)          \
            return NULL;            \
    } while (0)

static PyObject *sync_new_common(PyTypeObject *type, PyObject *args, uint32_t objtype)
{
    PyObject *zobj;
    unsigned long long off;
    if (!PyArg_ParseTuple(args, "O!K", shk_ZoneType, &zobj, &off))
        return NULL;
    ZoneObject *z = (ZoneObject *)zobj;
    if (shk_zone_check_open(z) < 0)
        return NULL;
    int err = 0;
    shk_clear_detail();
    void *sh = shk_sync_ptr(&z->zone, off, objtype, &err);
    if (!sh)
        return shk_py_raise(err ? err : SHK_ECORRUPT, "sync object");
    SyncObject *o = (SyncObject *)type->tp_alloc(type, 0);
    if (!o)
        return NULL;
    o->sh = sh;
    o->off = off;
    o->type = objtype;
    o->slot = UINT32_MAX;
    o->extent = shk_sync_extent(sh, objtype);
    shk_py_handle_attach(o, z);
    return (PyObject *)o;
}

static void sync_release_handle(SyncObject *o)
{
    if (o->sh) {
        shk_py_aio_closed(o); /* coroutines waiting through this handle: ClosedError */
        o->sh = NULL;
        shk_py_handle_unexport(o);
    }
}

static void sync_dealloc(SyncObject *o)
{
    sync_release_handle(o);
    shk_py_handle_free(o);
}

static PyObject *sync_close(SyncObject *o, PyObject *unused)
{
    if (o->sh)
        shk_py_calls_cancel(o->seg, o); /* waits of other threads end now */
    sync_release_handle(o);
    Py_RETURN_NONE;
}

SHK_PY_GETTER(sync_get_closed, SyncObject, PyBool_FromLong(self->sh == NULL))
SHK_PY_GETTER(sync_get_offset, SyncObject, PyLong_FromUnsignedLongLong(self->off))
SHK_PY_GETTER(sync_get_owner_died, SyncObject, PyBool_FromLong(self->owner_died))
SHK_PY_GETTER(sync_get_zone, SyncObject, Py_NewRef((PyObject *)self->zone))

#define COMMON_GETSET                                                                      \
    {"closed", (getter)sync_get_closed, NULL, "True once close() was called", NULL},       \
    {"_offset", (getter)sync_get_offset, NULL, "offset of the object in its zone", NULL},  \
    {"_core_zone", (getter)sync_get_zone, NULL, "the _core.Zone", NULL}

#define COMMON_METHODS                                                                     \
    {"close", (PyCFunction)sync_close, METH_NOARGS,                                        \
     "close()\n--\n\nDrop this handle (the object stays in the zone)."}

/* _raw(): the shared fields the core's statistics record names (core/sync.h), for the
 * statistics() of the Python classes; a Condition's lock name besides. */
static PyObject *sync_raw(SyncObject *o, PyObject *unused)
{
    USABLE(o);
    union shk_sync_stats st;
    PyObject *d = shk_py_fields(&st, shk_sync_stats(o->sh, o->type, o->slot, &st));
    if (!d || o->type != SHK_OBJ_CONDITION)
        return d;
    const char *name = st.cond.lock_name; /* corrupted: not UTF-8, kept as surrogates */
    PyObject *v = PyUnicode_DecodeUTF8(name, (Py_ssize_t)strlen(name), "surrogateescape");
    if (!v || PyDict_SetItemString(d, "lock_name", v) < 0)
        Py_CLEAR(d);
    Py_XDECREF(v);
    return d;
}

/* The methods of the types with statistics (all but Counter), and the attributes of the
 * types that have no others (Event, Condition, Barrier). */
#define STATS_METHODS                                                                      \
    COMMON_METHODS,                                                                        \
    {"_raw", (PyCFunction)sync_raw, METH_NOARGS,                                           \
     "_raw($self, /)\n--\n\nShared fields, for statistics()."}

static PyGetSetDef common_getset[] = {COMMON_GETSET, {NULL}};

/* ---- Lock and RLock --------------------------------------------------------------------- */

/* How a wait ended, as acquire() and wait() say it: True (acquired, or woken), False (not
 * acquired: non-blocking, or the timeout passed), NULL (a signal handler raised), else the
 * error of the operation what.  owner_died (acquires; NULL for the waits): told whether
 * the hold was taken over from a holder that had died. */
static PyObject *wait_result(int r, int *owner_died, const char *what)
{
    if (owner_died && (r == 0 || r == SHK_EOWNERDEAD)) {
        *owner_died = r == SHK_EOWNERDEAD;
        Py_RETURN_TRUE;
    }
    if (r == 0)
        Py_RETURN_TRUE;
    if (r == EBUSY || r == ETIMEDOUT)
        Py_RETURN_FALSE;
    if (r == SHK_PY_ERR)
        return NULL;
    return shk_py_raise(r, what);
}

/* Take lock handle lk again after a Condition wait or _release_save(), restoring an
 * RLock's count: shk_py_wait's pending rules (nothing interrupts it).  Returns the wait's
 * result (0 or SHK_EOWNERDEAD when held). */
static int lock_reacquire(SyncObject *lk, uint32_t count, int *pending)
{
    struct shk_lock_sh *l = lk->sh; /* (lk->sh is NULL once closed, even while we wait) */
    struct shk_wait w = wait_for(lk, NULL, 0);
    int r = run_wait(lk, shk_sync_acquire_op(lk->type, 0), l, &w, pending);
    if (r == 0 || r == SHK_EOWNERDEAD) {
        lk->owner_died = r == SHK_EOWNERDEAD;
        if (lk->type == SHK_OBJ_RLOCK)
            shk_rlock_restore(l, count);
    }
    return r;
}

/* acquire(blocking=True, timeout=...)'s arguments under a timeout rule (binding.h). */
static int parse_acquire_args(int rule, PyObject *const *args, Py_ssize_t nargs,
                              PyObject *kwnames, struct timespec *deadline, int *has,
                              uint32_t *flags)
{
    static const char *const names[] = {"blocking", "timeout"};
    PyObject *a[2];
    if (shk_py_parse_args(args, nargs, kwnames, "acquire", names, 2, a) < 0)
        return -1;
    return shk_py_acquire_args(rule, a[0], a[1], deadline, has, flags);
}

/* acquire() the full way (an RWLock's write side when write): parse its arguments, wait
 * with the type's acquire op, say how it ended.  With `attempt` (callers that made no
 * attempt of their own yet), a blocking acquire first makes one attempt with the GIL
 * held, for the uncontended case (not armed: no registration, no /proc read). */
static PyObject *acquire_waiting(SyncObject *o, int write, PyObject *const *args,
                                 Py_ssize_t nargs, PyObject *kwnames, int attempt)
{
    struct timespec deadline;
    int has;
    uint32_t flags;
    int rule = o->type == SHK_OBJ_SEMAPHORE ? SHK_PY_TIMEOUT_SEMAPHORE : SHK_PY_TIMEOUT_LOCK;
    if (parse_acquire_args(rule, args, nargs, kwnames, &deadline, &has, &flags) < 0)
        return NULL;
    const struct shk_wait_op *op = shk_sync_acquire_op(o->type, write);
    struct shk_rw_reader rd = {o->sh, o->slot}; /* a reader's slot, cached on the handle */
    void *obj = op == &shk_rw_read_op ? (void *)&rd : o->sh;
    struct shk_wait w = wait_for(o, has ? &deadline : NULL, flags);
    int r = EAGAIN;
    if (attempt && !(flags & SHK_WAIT_TRY))
        r = op->attempt(obj, &w);
    if (r == EAGAIN)
        r = run_wait(o, op, obj, &w, NULL);
    o->slot = rd.slot;
    return wait_result(r, &o->owner_died, "acquire");
}

static PyObject *lock_acquire(SyncObject *o, PyObject *const *args, Py_ssize_t nargs,
                              PyObject *kwnames)
{
    LIVE(o);
    if (nargs == 0 && kwnames == NULL) {
        /* the uncontended case, inlined from the core: one CAS */
        struct shk_lock_sh *l = o->sh;
        if (shk_lock_try_fast(l, o->type == SHK_OBJ_RLOCK) == 0) {
            if (o->type == SHK_OBJ_LOCK || l->count == 1) /* not a re-entry */
                o->owner_died = 0;
            Py_RETURN_TRUE;
        }
    }
    return acquire_waiting(o, 0, args, nargs, kwnames, 0);
}

static PyObject *lock_release(SyncObject *o, PyObject *unused)
{
    LIVE(o);
    if (o->type == SHK_OBJ_LOCK && shk_lock_release_fast(o->sh) == 0)
        Py_RETURN_NONE; /* the common case, inlined from the core */
    int r = shk_lock_release(o->sh, o->type == SHK_OBJ_RLOCK);
    return shk_py_none_or_raise(r, "release");
}

static PyObject *lock_enter(SyncObject *o, PyObject *unused)
{
    return lock_acquire(o, NULL, 0, NULL);
}

static PyObject *lock_exit(SyncObject *o, PyObject *const *args, Py_ssize_t nargs)
{
    return lock_release(o, NULL);
}

GETTER_METHOD(lock_locked, PyBool_FromLong(shk_lock_locked(o->sh)))
GETTER_METHOD(lock_is_owned,
              PyBool_FromLong(shk_lock_is_mine(o->sh, o->type == SHK_OBJ_RLOCK)))

/* Condition support: release completely (returns the saved state) / restore it. */
static PyObject *lock_release_save(SyncObject *o, PyObject *unused)
{
    LIVE(o);
    uint32_t count;
    int r = shk_lock_release_all(o->sh, o->type == SHK_OBJ_RLOCK, &count);
    if (r)
        return shk_py_raise(r, "release");
    return PyLong_FromUnsignedLong(count);
}

static PyObject *lock_acquire_restore(SyncObject *o, PyObject *arg)
{
    LIVE(o);
    unsigned long count = PyLong_AsUnsignedLong(arg);
    if (count == (unsigned long)-1 && PyErr_Occurred())
        return NULL;
    int pending = 0;
    int r = lock_reacquire(o, (uint32_t)count, &pending);
    if (pending || r == SHK_PY_ERR)
        return NULL;
    if (r != 0 && r != SHK_EOWNERDEAD)
        return shk_py_raise(r, "acquire");
    Py_RETURN_NONE;
}

static PyObject *lock_get_owned_count(SyncObject *o, void *c)
{
    LIVE(o);
    return PyLong_FromUnsignedLong(shk_lock_owned_count(o->sh, o->type == SHK_OBJ_RLOCK));
}

static PyMethodDef lock_methods[] = {
    {"acquire", (PyCFunction)(void (*)(void))lock_acquire, METH_FASTCALL | METH_KEYWORDS,
     "acquire(blocking=True, timeout=-1)\n--\n\nAcquire; True when acquired, False when "
     "not (non-blocking, or the timeout passed)."},
    {"release", (PyCFunction)lock_release, METH_NOARGS,
     "release()\n--\n\nRelease; NotOwnerError when the caller does not hold it."},
    {"__enter__", (PyCFunction)lock_enter, METH_NOARGS, NULL},
    {"__exit__", (PyCFunction)(void (*)(void))lock_exit, METH_FASTCALL, NULL},
    {"locked", (PyCFunction)lock_locked, METH_NOARGS, "locked()\n--\n\nTrue when held by anyone."},
    {"_is_owned", (PyCFunction)lock_is_owned, METH_NOARGS,
     "_is_owned()\n--\n\nHeld by this process (Lock) or this thread (RLock)."},
    {"_release_save", (PyCFunction)lock_release_save, METH_NOARGS, NULL},
    {"_acquire_restore", (PyCFunction)lock_acquire_restore, METH_O, NULL},
    STATS_METHODS,
    {NULL},
};

static PyGetSetDef lock_getset[] = {
    COMMON_GETSET,
    {"owner_died", (getter)sync_get_owner_died, NULL,
     "True when the last acquire through this handle took the lock over from a holder that "
     "had died holding it (the data it protects may be half-updated).", NULL},
    {"_owned_count", (getter)lock_get_owned_count, NULL, "levels held by the caller", NULL},
    {NULL},
};

/* ---- Semaphore -------------------------------------------------------------------------- */

static PyObject *sem_acquire(SyncObject *o, PyObject *const *args, Py_ssize_t nargs,
                             PyObject *kwnames)
{
    USABLE(o);
    if (nargs == 0 && kwnames == NULL) {
        /* one attempt with the GIL held (bounded: core/sync.h); the real wait follows */
        int r = shk_sem_try_now(o->sh);
        if (r == 0)
            Py_RETURN_TRUE;
        if (PyErr_Occurred()) /* Ctrl-C while waiting for the mutex */
            return NULL;
    }
    return acquire_waiting(o, 0, args, nargs, kwnames, 0);
}

static PyObject *sem_release(SyncObject *o, PyObject *const *args, Py_ssize_t nargs,
                             PyObject *kwnames)
{
    USABLE(o);
    uint64_t n = 1;
    if (nargs || kwnames) {
        static const char *const names[] = {"n"};
        PyObject *a[1];
        if (shk_py_parse_args(args, nargs, kwnames, "release", names, 1, a) < 0)
            return NULL;
        if (a[0]) {
            int over;
            long v = PyLong_AsLongAndOverflow(a[0], &over);
            if (v == -1 && PyErr_Occurred())
                return NULL;
            if (v < 1 && over <= 0)
                return PyErr_Format(PyExc_ValueError, "n must be one or more");
            /* any n: beyond what a semaphore can count, the core says which error */
            n = over > 0 ? UINT64_MAX : (uint64_t)v;
        }
    }
    int r = shk_sem_release(o->sh, n);
    return shk_py_none_or_raise(r, "release");
}

static PyObject *sem_exit(SyncObject *o, PyObject *const *args, Py_ssize_t nargs)
{
    return sem_release(o, NULL, 0, NULL);
}

static PyObject *sem_enter(SyncObject *o, PyObject *unused)
{
    return sem_acquire(o, NULL, 0, NULL);
}

GETTER_METHOD(sem_get_value, PyLong_FromUnsignedLong(shk_sem_value(o->sh)))

static PyObject *sem_reclaim(SyncObject *o, PyObject *unused)
{
    USABLE(o);
    uint32_t n;
    Py_BEGIN_ALLOW_THREADS
    n = shk_sem_reclaim(o->sh);
    Py_END_ALLOW_THREADS
    return PyLong_FromUnsignedLong(n);
}

static PyMethodDef sem_methods[] = {
    {"acquire", (PyCFunction)(void (*)(void))sem_acquire, METH_FASTCALL | METH_KEYWORDS,
     "acquire(blocking=True, timeout=None)\n--\n\nTake one unit; True when taken, False when "
     "not (non-blocking, or the timeout passed)."},
    {"release", (PyCFunction)(void (*)(void))sem_release, METH_FASTCALL | METH_KEYWORDS,
     "release(n=1)\n--\n\nGive back n units, waking up to n waiters."},
    {"__enter__", (PyCFunction)sem_enter, METH_NOARGS, NULL},
    {"__exit__", (PyCFunction)(void (*)(void))sem_exit, METH_FASTCALL, NULL},
    {"get_value", (PyCFunction)sem_get_value, METH_NOARGS, "get_value()\n--\n\nUnits available now."},
    {"reclaim", (PyCFunction)sem_reclaim, METH_NOARGS,
     "reclaim()\n--\n\nUndo semaphores: give back the units of dead processes now; returns "
     "how many (waiters do this by themselves)."},
    STATS_METHODS,
    {NULL},
};

static PyGetSetDef sem_getset[] = {
    COMMON_GETSET,
    {"owner_died", (getter)sync_get_owner_died, NULL, "always False for semaphores", NULL},
    {NULL},
};

/* ---- Event ---------------------------------------------------------------------------------- */

VOID_METHOD(event_set, shk_event_set(o->sh))
VOID_METHOD(event_clear, shk_event_clear(o->sh))
GETTER_METHOD(event_is_set, PyBool_FromLong(shk_event_is_set(o->sh)))

static PyObject *event_wait(SyncObject *o, PyObject *const *args, Py_ssize_t nargs,
                            PyObject *kwnames)
{
    LIVE(o);
    if (shk_event_is_set(o->sh))
        Py_RETURN_TRUE;
    static const char *const names[] = {"timeout"};
    PyObject *a[1];
    struct timespec deadline;
    int has;
    uint32_t flags;
    if (shk_py_parse_args(args, nargs, kwnames, "wait", names, 1, a) < 0 ||
        shk_py_wait_args(a[0], &deadline, &has, &flags) < 0)
        return NULL;
    struct shk_wait w = wait_for(o, has ? &deadline : NULL, flags);
    return wait_result(run_wait(o, &shk_event_op, o->sh, &w, NULL), NULL, "wait");
}

static PyMethodDef event_methods[] = {
    {"set", (PyCFunction)event_set, METH_NOARGS, "set()\n--\n\nSet the flag and wake every waiter."},
    {"clear", (PyCFunction)event_clear, METH_NOARGS, "clear()\n--\n\nReset the flag."},
    {"is_set", (PyCFunction)event_is_set, METH_NOARGS, "is_set()\n--\n\nThe flag."},
    {"wait", (PyCFunction)(void (*)(void))event_wait, METH_FASTCALL | METH_KEYWORDS,
     "wait(timeout=None)\n--\n\nBlock until the flag is set; returns the flag (False when the "
     "timeout passed)."},
    STATS_METHODS,
    {NULL},
};

/* ---- RWLock --------------------------------------------------------------------------------- */

static PyObject *rw_acquire(SyncObject *o, PyObject *const *args, Py_ssize_t nargs,
                            PyObject *kwnames, int write)
{
    USABLE(o);
    return acquire_waiting(o, write, args, nargs, kwnames, 1);
}

static PyObject *rw_acquire_read(SyncObject *o, PyObject *const *args, Py_ssize_t nargs,
                                 PyObject *kwnames)
{
    return rw_acquire(o, args, nargs, kwnames, 0);
}

static PyObject *rw_acquire_write(SyncObject *o, PyObject *const *args, Py_ssize_t nargs,
                                  PyObject *kwnames)
{
    return rw_acquire(o, args, nargs, kwnames, 1);
}

static PyObject *rw_release_read(SyncObject *o, PyObject *unused)
{
    USABLE(o);
    int r = shk_rw_release_read(o->sh, &o->slot);
    return shk_py_none_or_raise(r, "release_read");
}

static PyObject *rw_release_write(SyncObject *o, PyObject *unused)
{
    LIVE(o);
    int r = shk_rw_release_write(o->sh);
    return shk_py_none_or_raise(r, "release_write");
}

GETTER_METHOD(rw_is_writer, PyBool_FromLong(shk_rw_is_writer(o->sh)))

static PyMethodDef rw_methods[] = {
    {"acquire_read", (PyCFunction)(void (*)(void))rw_acquire_read, METH_FASTCALL | METH_KEYWORDS,
     "acquire_read(blocking=True, timeout=-1)\n--\n\nTake a shared (read) hold."},
    {"release_read", (PyCFunction)rw_release_read, METH_NOARGS,
     "release_read()\n--\n\nGive back one read hold of this process."},
    {"acquire_write", (PyCFunction)(void (*)(void))rw_acquire_write, METH_FASTCALL | METH_KEYWORDS,
     "acquire_write(blocking=True, timeout=-1)\n--\n\nTake the exclusive (write) hold."},
    {"release_write", (PyCFunction)rw_release_write, METH_NOARGS,
     "release_write()\n--\n\nGive back the write hold."},
    {"_is_writer", (PyCFunction)rw_is_writer, METH_NOARGS, NULL},
    STATS_METHODS,
    {NULL},
};

static PyGetSetDef rw_getset[] = {
    COMMON_GETSET,
    {"owner_died", (getter)sync_get_owner_died, NULL,
     "True when the last acquire through this handle found a writer that had died holding "
     "the lock.", NULL},
    {NULL},
};

/* ---- Condition ------------------------------------------------------------------------------ */

static PyObject *cond_wait(SyncObject *o, PyObject *args)
{
    PyObject *lockobj, *timeout = Py_None;
    if (!PyArg_ParseTuple(args, "O|O:wait", &lockobj, &timeout))
        return NULL;
    LIVE(o);
    if (!PyObject_TypeCheck(lockobj, LockType) && !PyObject_TypeCheck(lockobj, RLockType))
        return PyErr_Format(PyExc_TypeError, "a Condition's lock must be a shmkit Lock or RLock");
    SyncObject *lk = (SyncObject *)lockobj;
    LIVE(lk);
    struct shk_cond_sh *c = o->sh; /* (the handles' sh are NULL once closed, even while */
    struct shk_lock_sh *l = lk->sh; /*  we wait: the mapping stays until the wait ends) */
    int rec = lk->type == SHK_OBJ_RLOCK;
    if (!shk_lock_is_mine(lk->sh, rec)) { /* before the timeout is looked at, as threading */
        PyErr_SetString(PyExc_RuntimeError, "cannot wait on un-acquired lock");
        return NULL;
    }
    struct timespec deadline;
    int has;
    uint32_t flags;
    if (shk_py_wait_args(timeout, &deadline, &has, &flags) < 0)
        return NULL;
    uint32_t seq, count;
    shk_clear_detail();
    int r = shk_cond_unlock(c, l, rec, &seq, &count); /* the sequence of core/sync.h */
    if (r)
        return shk_py_raise(r, "wait");
    struct shk_wait w = wait_for(o, has ? &deadline : NULL, flags);
    w.observed = seq;
    int wr = run_wait(o, &shk_cond_op, c, &w, NULL);
    shk_cond_finish(c);
    /* re-acquire whatever happened, keeping a pending exception for afterwards (unless
     * the lock's handle was closed meanwhile: then there is nothing to hold) */
    PyObject *et = NULL, *ev = NULL, *tb = NULL;
    if (wr == SHK_PY_ERR)
        PyErr_Fetch(&et, &ev, &tb);
    int pending = 0;
    int lr = lk->sh ? lock_reacquire(lk, count, &pending) : SHK_ECLOSED;
    if (wr == SHK_PY_ERR) {
        if (pending)
            PyErr_Clear();
        PyErr_Restore(et, ev, tb);
        return NULL;
    }
    if (pending || lr == SHK_PY_ERR)
        return NULL;
    if (lr == SHK_ECLOSED)
        return shk_py_closed("the Condition's lock handle was closed while waiting");
    if (lr != 0 && lr != SHK_EOWNERDEAD)
        return shk_py_raise(lr, "wait (re-acquiring the lock)");
    return wait_result(wr, NULL, "wait");
}

static PyObject *cond_notify(SyncObject *o, PyObject *const *args, Py_ssize_t nargs)
{
    LIVE(o);
    long n = 1;
    if (nargs > 1)
        return PyErr_Format(PyExc_TypeError, "notify() takes at most 1 argument");
    if (nargs == 1) {
        n = PyLong_AsLong(args[0]);
        if (n == -1 && PyErr_Occurred())
            return NULL;
    }
    if (n > INT_MAX)
        n = INT_MAX;
    return PyLong_FromLong(shk_cond_notify(o->sh, (int)n));
}

static PyObject *cond_notify_all(SyncObject *o, PyObject *unused)
{
    LIVE(o);
    return PyLong_FromLong(shk_cond_notify(o->sh, INT_MAX));
}

static PyMethodDef cond_methods[] = {
    {"_wait", (PyCFunction)cond_wait, METH_VARARGS,
     "_wait(lock, timeout=None)\n--\n\nRelease lock, wait for a notification, re-acquire it."},
    {"_notify", (PyCFunction)(void (*)(void))cond_notify, METH_FASTCALL,
     "_notify(n=1)\n--\n\nWake up to n waiters; returns how many were asleep and woken."},
    {"_notify_all", (PyCFunction)cond_notify_all, METH_NOARGS, NULL},
    STATS_METHODS,
    {NULL},
};

/* ---- Barrier -------------------------------------------------------------------------------- */

static PyObject *barrier_wait(SyncObject *o, PyObject *const *args, Py_ssize_t nargs)
{
    USABLE(o);
    PyObject *timeout = nargs > 0 ? args[0] : Py_None;
    struct timespec deadline;
    int has;
    uint32_t flags;
    if (shk_py_wait_args(timeout, &deadline, &has, &flags) < 0)
        return NULL;
    if (flags & SHK_WAIT_TRY) {
        /* a zero timeout: arrive, and give up at once unless everyone is there */
        shk_deadline_after(&deadline, 0);
        has = 1;
    }
    struct shk_wait w = wait_for(o, has ? &deadline : NULL, 0);
    /* interrupted after arriving, the wait is cancelled: that breaks the barrier, so the
     * other parties do not wait for us forever */
    int r = run_wait(o, &shk_barrier_op, o->sh, &w, NULL);
    if (r == SHK_PY_ERR)
        return NULL;
    if (r)
        return shk_py_raise(r == ETIMEDOUT ? SHK_EBROKEN : r, "wait");
    uint32_t index;
    int last;
    shk_barrier_result(&w, &index, &last);
    return Py_BuildValue("(IIO)", index, w.aux, last ? Py_True : Py_False);
}

static PyObject *barrier_complete(SyncObject *o, PyObject *arg)
{
    LIVE(o);
    unsigned long gen = PyLong_AsUnsignedLong(arg);
    if (gen == (unsigned long)-1 && PyErr_Occurred())
        return NULL;
    int r = shk_barrier_complete(o->sh, (uint32_t)gen);
    return shk_py_none_or_raise(r, "wait");
}

VOID_METHOD(barrier_abort, shk_barrier_abort(o->sh))
VOID_METHOD(barrier_reset, shk_barrier_reset(o->sh))

static PyMethodDef barrier_methods[] = {
    {"_wait", (PyCFunction)(void (*)(void))barrier_wait, METH_FASTCALL,
     "_wait(timeout=None)\n--\n\nArrive and wait; returns (index, generation, is_last)."},
    {"_complete", (PyCFunction)barrier_complete, METH_O, NULL},
    {"abort", (PyCFunction)barrier_abort, METH_NOARGS,
     "abort()\n--\n\nPut the barrier in the broken state: waiting and future calls to wait() "
     "raise BrokenBarrierError."},
    {"reset", (PyCFunction)barrier_reset, METH_NOARGS,
     "reset()\n--\n\nReturn to the empty state; parties waiting get BrokenBarrierError."},
    STATS_METHODS,
    {NULL},
};

/* ---- Counter -------------------------------------------------------------------------------- */

static int arg_int64(PyObject *v, int64_t *out)
{
    long long x = PyLong_AsLongLong(v);
    if (x == -1 && PyErr_Occurred()) {
        if (PyErr_ExceptionMatches(PyExc_OverflowError)) {
            PyErr_Clear();
            PyErr_SetString(PyExc_OverflowError, "Counter holds a signed 64-bit integer");
        }
        return -1;
    }
    *out = (int64_t)x;
    return 0;
}

#define COUNTER(o) ((struct shk_counter_sh *)(o)->sh)

/* Arithmetic wraps modulo 2**64 like the hardware's, never raising mid-way. */
static PyObject *counter_addsub(SyncObject *o, PyObject *const *args, Py_ssize_t nargs, int sign)
{
    LIVE(o);
    int64_t n = 1;
    if (nargs > 1)
        return PyErr_Format(PyExc_TypeError, "takes at most 1 argument (%zd given)", nargs);
    if (nargs == 1 && arg_int64(args[0], &n) < 0)
        return NULL;
    int64_t d = sign > 0 ? n : (int64_t)((uint64_t)0 - (uint64_t)n);
    return PyLong_FromLongLong(shk_counter_add(COUNTER(o), d));
}

static PyObject *counter_add(SyncObject *o, PyObject *const *args, Py_ssize_t nargs)
{
    return counter_addsub(o, args, nargs, 1);
}

static PyObject *counter_sub(SyncObject *o, PyObject *const *args, Py_ssize_t nargs)
{
    return counter_addsub(o, args, nargs, -1);
}

GETTER_METHOD(counter_inc, PyLong_FromLongLong(shk_counter_add(COUNTER(o), 1)))
GETTER_METHOD(counter_dec, PyLong_FromLongLong(shk_counter_add(COUNTER(o), -1)))
GETTER_METHOD(counter_get, PyLong_FromLongLong(shk_counter_get(COUNTER(o))))

static PyObject *counter_set(SyncObject *o, PyObject *arg)
{
    LIVE(o);
    int64_t v;
    if (arg_int64(arg, &v) < 0)
        return NULL;
    shk_counter_set(COUNTER(o), v);
    Py_RETURN_NONE;
}

static PyObject *counter_exchange(SyncObject *o, PyObject *arg)
{
    LIVE(o);
    int64_t v;
    if (arg_int64(arg, &v) < 0)
        return NULL;
    return PyLong_FromLongLong(shk_counter_exchange(COUNTER(o), v));
}

static PyObject *counter_cas(SyncObject *o, PyObject *const *args, Py_ssize_t nargs)
{
    LIVE(o);
    if (nargs != 2)
        return PyErr_Format(PyExc_TypeError, "compare_and_swap(expected, new) takes 2 arguments");
    int64_t expected, desired;
    if (arg_int64(args[0], &expected) < 0 || arg_int64(args[1], &desired) < 0)
        return NULL;
    return PyBool_FromLong(shk_counter_cas(COUNTER(o), expected, desired));
}

SHK_PY_GETTER(counter_get_value, SyncObject, counter_get(self, NULL))

static int counter_set_value(SyncObject *o, PyObject *v, void *c)
{
    if (!v) {
        PyErr_SetString(PyExc_AttributeError, "cannot delete a Counter's value");
        return -1;
    }
    PyObject *r = counter_set(o, v);
    if (!r)
        return -1;
    Py_DECREF(r);
    return 0;
}

static PyMethodDef counter_methods[] = {
    {"add", (PyCFunction)(void (*)(void))counter_add, METH_FASTCALL,
     "add(n=1, /)\n--\n\nAtomically add n; returns the new value."},
    {"sub", (PyCFunction)(void (*)(void))counter_sub, METH_FASTCALL,
     "sub(n=1, /)\n--\n\nAtomically subtract n; returns the new value."},
    {"inc", (PyCFunction)counter_inc, METH_NOARGS, "inc()\n--\n\nAdd 1; returns the new value."},
    {"dec", (PyCFunction)counter_dec, METH_NOARGS, "dec()\n--\n\nSubtract 1; returns the new value."},
    {"get", (PyCFunction)counter_get, METH_NOARGS, "get()\n--\n\nThe value."},
    {"set", (PyCFunction)counter_set, METH_O, "set(value, /)\n--\n\nStore a value."},
    {"exchange", (PyCFunction)counter_exchange, METH_O,
     "exchange(value, /)\n--\n\nStore a value; returns the previous one."},
    {"compare_and_swap", (PyCFunction)(void (*)(void))counter_cas, METH_FASTCALL,
     "compare_and_swap(expected, new, /)\n--\n\nStore new if the value is expected; returns "
     "True when it did."},
    COMMON_METHODS,
    {NULL},
};

static PyGetSetDef counter_getset[] = {
    COMMON_GETSET,
    {"value", (getter)counter_get_value, (setter)counter_set_value, "the value (atomic)", NULL},
    {NULL},
};

/* ---- the handle types ---------------------------------------------------------------- */

/* Each handle type and its object type (tp_new finds a subclass's object type here). */
static const struct {
    PyTypeObject **type;
    uint32_t objtype;       /* SHK_OBJ_* */
    const char *name;
    PyMethodDef *methods;
    PyGetSetDef *getset;
    const char *doc;
} sync_types[] = {
    {&LockType, SHK_OBJ_LOCK, "shmkit._core.Lock", lock_methods, lock_getset,
     "Handle on a robust process-shared lock (internal; use shmkit.Lock)."},
    {&RLockType, SHK_OBJ_RLOCK, "shmkit._core.RLock", lock_methods, lock_getset,
     "Handle on a robust reentrant lock (internal)."},
    {&RWLockType, SHK_OBJ_RWLOCK, "shmkit._core.RWLock", rw_methods, rw_getset,
     "Handle on a robust readers-writer lock (internal)."},
    {&SemaphoreType, SHK_OBJ_SEMAPHORE, "shmkit._core.Semaphore", sem_methods, sem_getset,
     "Handle on a shared semaphore (internal)."},
    {&EventType, SHK_OBJ_EVENT, "shmkit._core.Event", event_methods, common_getset,
     "Handle on a shared event (internal)."},
    {&ConditionType, SHK_OBJ_CONDITION, "shmkit._core.Condition", cond_methods, common_getset,
     "Handle on a shared condition variable (internal)."},
    {&BarrierType, SHK_OBJ_BARRIER, "shmkit._core.Barrier", barrier_methods, common_getset,
     "Handle on a shared barrier (internal)."},
    {&CounterType, SHK_OBJ_COUNTER, "shmkit._core.Counter", counter_methods, counter_getset,
     "Handle on a shared atomic 64-bit counter (internal)."},
};
#define N_SYNC_TYPES (sizeof sync_types / sizeof sync_types[0])

static PyObject *sync_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    for (size_t i = 0; i < N_SYNC_TYPES; i++)
        if (*sync_types[i].type && PyType_IsSubtype(type, *sync_types[i].type))
            return sync_new_common(type, args, sync_types[i].objtype);
    return PyErr_Format(PyExc_TypeError, "%s is not a synchronisation handle type",
                        type->tp_name);
}

/* ---- for the asyncio twins (aio.c) ------------------------------------------------------ */

static int is_sync_handle(PyObject *h)
{
    for (size_t i = 0; i < N_SYNC_TYPES; i++)
        if (*sync_types[i].type && PyObject_TypeCheck(h, *sync_types[i].type))
            return 1;
    return 0;
}

int shk_py_sync_ref(PyObject *h, struct shk_py_sync_ref *out)
{
    if (!is_sync_handle(h)) {
        PyErr_Format(PyExc_TypeError, "expected a shmkit synchronisation object, not %.100s",
                     Py_TYPE(h)->tp_name);
        return -1;
    }
    SyncObject *o = (SyncObject *)h;
    if (usable(o) < 0)
        return -1;
    out->sh = o->sh;
    out->type = o->type;
    out->slot = &o->slot;
    out->owner_died = &o->owner_died;
    return 0;
}

int shk_py_sync_live(PyObject *h)
{
    SyncObject *o = (SyncObject *)h;
    SegmentObject *seg = o->seg;
    return o->sh != NULL && !seg->closed && !seg->close_pending;
}

/* ---- module functions ------------------------------------------------------------------- */

static PyObject *core_sync_open(PyObject *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"zone", "name", "type", "flags", "create", "a", "b", "text",
                             "text_type", "data", NULL};
    PyObject *zobj;
    const char *name, *text = NULL;
    unsigned int type, flags = 0, text_type = 0;
    int create = SHK_O_CREATE;
    long long a = 0;
    unsigned long long b = 0;
    Py_buffer data = {0};
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O!sI|IiLKzIz*:sync_open", kwlist, shk_ZoneType,
                                     &zobj, &name, &type, &flags, &create, &a, &b, &text,
                                     &text_type, &data))
        return NULL;
    ZoneObject *z = (ZoneObject *)zobj;
    if (shk_zone_check_open(z) < 0) {
        PyBuffer_Release(&data);
        return NULL;
    }
    struct shk_sync_params p = {.type = type, .flags = flags, .a = (uint64_t)a, .b = b,
                                .text = text, .text_type = text_type, .data = data.buf,
                                .data_len = data.buf ? (uint64_t)data.len : 0};
    uint64_t off = 0;
    int created = 0, r;
    Py_BEGIN_ALLOW_THREADS
    r = shk_sync_open(&z->zone, name, &p, create, &off, &created);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&data);
    if (r)
        return shk_py_raise(r, "open");
    return Py_BuildValue("(KO)", (unsigned long long)off, created ? Py_True : Py_False);
}

static PyObject *core_sync_config(PyObject *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"spin_max_ns", "liveness_ns", "recheck_ns", NULL};
    long long spin = -1, live = -1, recheck = -1;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|LLL:sync_config", kwlist, &spin, &live, &recheck))
        return NULL;
    shk_clear_detail();
    int r = shk_sync_configure(spin, live, recheck);
    if (r)
        return shk_py_raise(r, "sync_config");
    return Py_BuildValue("(KKK)", (unsigned long long)shk_wait_cfg.spin_max_ns,
                         (unsigned long long)shk_wait_cfg.liveness_ns,
                         (unsigned long long)shk_wait_cfg.recheck_ns);
}

static PyMethodDef sync_module_methods[] = {
    {"sync_open", (PyCFunction)(void (*)(void))core_sync_open, METH_VARARGS | METH_KEYWORDS,
     "sync_open(zone, name, type, flags=0, create=O_CREATE, a=0, b=0, text=None, text_type=0, "
     "data=None)\n--\n\nFind or create a sync object; returns (offset, created)."},
    {"sync_config", (PyCFunction)(void (*)(void))core_sync_config, METH_VARARGS | METH_KEYWORDS,
     "sync_config(spin_max_ns=-1, liveness_ns=-1, recheck_ns=-1)\n--\n\nSet (>= 0) and return "
     "the process-wide tuning (spin_max_ns, liveness_ns, recheck_ns)."},
    {NULL},
};

/* ---- types ---------------------------------------------------------------------------------- */

static PyTypeObject *make_type(PyObject *m, const char *qualname, PyMethodDef *methods,
                               PyGetSetDef *getset, const char *doc)
{
    PyType_Slot slots[] = {
        {Py_tp_new, sync_new},       {Py_tp_dealloc, sync_dealloc}, {Py_tp_methods, methods},
        {Py_tp_getset, getset},    {Py_tp_doc, (void *)doc},      {0, NULL},
    };
    PyType_Spec spec = {qualname, sizeof(SyncObject), 0, Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
                        slots};
    return shk_py_add_type(m, &spec);
}

int shk_init_sync(PyObject *m)
{
    for (size_t i = 0; i < N_SYNC_TYPES; i++)
        if (!(*sync_types[i].type = make_type(m, sync_types[i].name, sync_types[i].methods,
                                              sync_types[i].getset, sync_types[i].doc)))
            return -1;
    static const struct shk_py_int constants[] = {
        {"SYNCF_BOUNDED", SHK_SYNCF_BOUNDED},
        {"SYNCF_UNDO", SHK_SYNCF_UNDO},
        {"SYNCF_LOCKED", SHK_SYNCF_LOCKED},
        {"VALUE_DATA_OFF", SHK_VALUE_DATA_OFF},
        {"VALUE_LOCK_OFF", offsetof(struct shk_value_sh, lock)},
        {"COND_LOCK_OFF", offsetof(struct shk_cond_sh, lock)},
        {"VALUE_TYPENAME_MAX", SHK_VALUE_TYPENAME_MAX},
        {"SEM_VALUE_MAX", SHK_SEM_VALUE_MAX},
        {NULL},
    };
    if (PyModule_AddFunctions(m, sync_module_methods) < 0 || shk_py_add_ints(m, constants) < 0)
        return -1;
    return 0;
}
