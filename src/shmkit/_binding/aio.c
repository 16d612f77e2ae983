/*
 * aio.c (binding) - the C half of the asyncio twins (issue 16): shmkit._core.AioNotifier,
 * shmkit._core.AioWait and the functions that make waits; the Python half (futures, the
 * event loop's reader, the objects' `aio` attributes) is shmkit/_aio.py.
 *
 * One wait follows wait.h's ASYNC CONTRACT, driven from Python by AioWait.step():
 *
 *   step()   in the event loop's thread, with the GIL: the first time, an attempt, a brief
 *            spin (see "the event loop's spin"), then an armed attempt that registers as
 *            a waiter; later, disarm and attempt again.
 *            Finished (0, an operation's own result, ETIMEDOUT, EBUSY...): the wait is
 *            over.  EAGAIN: the (word, value) it would sleep on is handed to the process's
 *            hub (core/waitv.h) with its retry time and deadline; the hub's threads wait
 *            for it, and put the wait on its event loop's notifier when it is READY; the
 *            Python side then resolves the future the coroutine awaits and calls step()
 *            again.
 *   cancel() the coroutine stops (a CancelledError, GeneratorExit...): unwatch, give up with
 *            ECANCELED (registration and partial progress undone: nothing is taken that is
 *            not given back) and pass one wake-up on to another waiter of the word, since
 *            the hub may have taken it for this wait.
 *
 * Memory: a wait holds one export of its segment from creation to its end, so the words
 * the hub sleeps on stay mapped whatever is closed meanwhile.  Closing a handle or a
 * segment (zone) calls shk_py_aio_closed(), which makes the waits on it READY(CLOSED);
 * their next step undoes them and raises ClosedError.  A handle's liveness is checked
 * again before every attempt (the attempt of a closed board would read a detached handle).
 *
 * After fork() the child has no hub threads: the hub is set up anew in the child, and the
 * waits and notifiers it inherited are inert there (their registrations in shared memory
 * belong to the parent and are left alone).
 */
#include "binding.h"

#include <errno.h>

#include "aiowait.h"
#include "board.h"
#include "queue.h"
#include "sync.h"
#include "waitv.h"

/* ---- the process's hub ----------------------------------------------------------------- */

static struct shk_aio_hub aio_hub = {.mode = SHK_HUB_AUTO}; /* settings: aio_configure */
static struct shk_hub *const hub = &aio_hub.hub;
static int aio_spin = 1;            /* the first attempt may spin (core/waitv.h) */
/* the hub's modes by name (aio_configure, aio_stats) */
static const char *const hub_modes[] = {
    [SHK_HUB_AUTO] = "auto", [SHK_HUB_WAITV] = "futex_waitv", [SHK_HUB_FALLBACK] = "fallback"};

/* The hub, set up at first use and in a fork child (shk_aio_hub_get). */
static struct shk_hub *get_hub(void)
{
    int r = shk_aio_hub_get(&aio_hub);
    if (r) {
        shk_py_raise_os(r, r == ENOSYS ? "futex_waitv is not available on this kernel"
                                        : "setting up the asyncio hub");
        return NULL;
    }
    return hub;
}

void shk_py_aio_closed(const void *key)
{
    if (shk_aio_hub_here(&aio_hub))
        shk_hub_close_group(hub, key);
}

/* The event loop's spin (core/waitv.h): budgets learnt per word, in this process. */
static struct shk_loop_spin loop_spin = {.max_ns = 50000};

/* ---- AioNotifier -------------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    struct shk_hub_notifier n;
    pid_t pid;
    int open;
} NotifierObject;

static PyTypeObject *NotifierType, *WaitType;

static PyObject *notifier_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    if (PyTuple_GET_SIZE(args) || (kw && PyDict_GET_SIZE(kw)))
        return PyErr_Format(PyExc_TypeError, "AioNotifier() takes no arguments");
    struct shk_hub *h = get_hub();
    if (!h)
        return NULL;
    NotifierObject *self = (NotifierObject *)type->tp_alloc(type, 0);
    if (!self)
        return NULL;
    int r = shk_hub_notifier_init(&self->n, h);
    if (r) {
        Py_DECREF(self);
        return shk_py_raise_os(r, "eventfd");
    }
    self->pid = getpid();
    self->open = 1;
    return (PyObject *)self;
}

static void notifier_close_now(NotifierObject *self)
{
    if (!self->open)
        return;
    self->open = 0;
    if (self->pid == getpid())
        shk_hub_notifier_destroy(&self->n); /* every wait holds its notifier: none is left */
    else if (self->n.efd >= 0)
        close(self->n.efd); /* the child's copy of the descriptor only */
}

static void notifier_dealloc(NotifierObject *self)
{
    notifier_close_now(self);
    shk_py_free(self);
}

static PyObject *notifier_fileno(NotifierObject *self, PyObject *unused)
{
    if (!self->open)
        return shk_py_closed("AioNotifier is closed");
    return PyLong_FromLong(self->n.efd);
}

static int check_pid(pid_t pid)
{
    if (pid != getpid()) {
        PyErr_SetString(PyExc_RuntimeError, "an asyncio wait or notifier of the parent process "
                        "cannot be used after fork(); make new ones in the child");
        return -1;
    }
    return 0;
}

/* The notifier may report waits: open, made in this process, the hub set up.  0 or -1. */
static int notifier_usable(NotifierObject *n)
{
    if (!n->open) {
        shk_py_closed("AioNotifier is closed");
        return -1;
    }
    return check_pid(n->pid) < 0 || !get_hub() ? -1 : 0;
}

typedef struct AioWaitObject AioWaitObject;

/* drain(): the waits that became READY, as a list (the Python side resolves their
 * futures).  Consumes the eventfd. */
static PyObject *notifier_drain(NotifierObject *self, PyObject *unused)
{
    if (notifier_usable(self) < 0)
        return NULL;
    PyObject *list = PyList_New(0);
    if (!list)
        return NULL;
    struct shk_hub_wait *got[256];
    size_t k;
    do {
        k = shk_hub_drain(&self->n, got, 256);
        for (size_t i = 0; i < k; i++) {
            /* alive: a wait leaves the hub (unwatch, under its mutex) before it is freed,
             * and both that and this run with the GIL */
            if (PyList_Append(list, (PyObject *)got[i]->owner) < 0) {
                Py_DECREF(list);
                return NULL;
            }
        }
    } while (k == 256);
    return list;
}

static PyObject *notifier_close(NotifierObject *self, PyObject *unused)
{
    notifier_close_now(self);
    Py_RETURN_NONE;
}

static PyMethodDef notifier_methods[] = {
    {"fileno", (PyCFunction)notifier_fileno, METH_NOARGS,
     "fileno()\n--\n\nThe eventfd an event loop watches (readable when waits became ready)."},
    {"drain", (PyCFunction)notifier_drain, METH_NOARGS,
     "drain()\n--\n\nThe AioWaits that became ready since the last drain (list)."},
    {"close", (PyCFunction)notifier_close, METH_NOARGS, "close()\n--\n\nClose the eventfd."},
    {NULL},
};

/* ---- AioWait -------------------------------------------------------------------------------- */

enum {
    KIND_LOCK = 1,  /* Lock, RLock and either side of an RWLock: a hold, maybe taken over */
    KIND_SEM,
    KIND_EVENT,
    KIND_COND,
    KIND_BARRIER,
    KIND_BOARD,
    KIND_QUEUE,
};

struct AioWaitObject {
    PyObject_HEAD
    PyObject *handle;               /* the _core handle waited on (strong) */
    SegmentObject *seg;             /* one export of it held until the wait finishes */
    NotifierObject *notifier;       /* strong: READY waits are reported there */
    PyObject *future;               /* the Python side's, resolved when READY */
    int (*live)(PyObject *handle);  /* may the attempt still run? */
    struct shk_aio_wait a;          /* the wait (core/aiowait.h): op, its object (shared
                                       memory, or u below), the hub's record */
    union {
        struct shk_rw_reader rd;
        struct shk_board_waiter bw;
        struct shk_queue_waiter qw;
    } u;
    struct shk_py_sync_ref sync;    /* sync kinds: where results go back to the handle */
    int kind;
    int finished;                   /* over: nothing registered, the export given back */
    int result;                     /* when finished */
    pid_t pid;
};

/* The wait is over: nothing is registered any more; give the export back. */
static void wait_finish(AioWaitObject *self, int r)
{
    if (self->finished)
        return;
    self->finished = 1;
    self->result = r;
    if (self->kind == KIND_COND && self->pid == getpid())
        shk_cond_finish(self->a.obj); /* the registration shk_cond_prepare made */
    if (self->seg) {
        shk_segment_unexport(self->seg);
        Py_CLEAR(self->seg);
    }
}

/* Cancelled, or dropped unfinished: give up (shk_aio_give_up). */
static void wait_abandon(AioWaitObject *self)
{
    if (self->finished)
        return;
    int r = ECANCELED; /* after fork() the parent's registration is not ours to undo */
    if (self->pid == getpid())
        r = shk_aio_give_up(hub, &self->a, ECANCELED);
    wait_finish(self, r);
}

static PyObject *wait_closed_error(AioWaitObject *self)
{
    PyErr_Format(shk_py_exc("ClosedError"), "%s: closed while a coroutine waited",
                 self->a.op ? self->a.op->name : "wait");
    return NULL;
}

/* What the kind does with a finished attempt's result r. */
static void wait_done_ok(AioWaitObject *self, int r)
{
    if (self->kind != KIND_LOCK)
        return;
    if (r == 0 || r == SHK_EOWNERDEAD)
        *self->sync.owner_died = r == SHK_EOWNERDEAD;
    if (self->a.op == &shk_rw_read_op)
        *self->sync.slot = self->u.rd.slot;
}

/* step() -> EAGAIN (await the future, then step again) or the finished result: 0 or the
 * operation's own success code (SHK_EOWNERDEAD), ETIMEDOUT, EBUSY.  Raises for errors,
 * ClosedError when the handle or its zone was closed. */
static PyObject *wait_step(AioWaitObject *self, PyObject *unused)
{
    if (self->finished)
        return PyErr_Format(PyExc_RuntimeError, "this wait is over (result %d)", self->result);
    if (check_pid(self->pid) < 0)
        return NULL;
    int r = shk_aio_step(hub, &self->a, aio_spin ? &loop_spin : NULL,
                         self->live(self->handle));
    if (r == EAGAIN && self->a.end == SHK_AIO_RUNNING)
        return PyLong_FromLong(EAGAIN);
    wait_finish(self, r);
    switch (self->a.end) {
    case SHK_AIO_CLOSED:
        return wait_closed_error(self);
    case SHK_AIO_FAULT:
        return shk_py_raise_os(EFAULT, "asyncio wait: the word waited on is no longer mapped");
    case SHK_AIO_NOT_AWAITABLE:
        return PyErr_Format(PyExc_NotImplementedError, "%s: this wait cannot be awaited",
                            self->a.op->name);
    case SHK_AIO_HUB_FAILED:
        return shk_py_raise_os(r, r == ENOSPC ? "asyncio hub: too many distinct objects "
                               "waited on at once" : "asyncio hub: starting a thread");
    }
    if (r == 0 || r == SHK_EOWNERDEAD || r == ETIMEDOUT || r == EBUSY) {
        wait_done_ok(self, r);
        return PyLong_FromLong(r);
    }
    return shk_py_raise(r, self->a.op->name);
}

static PyObject *wait_cancel(AioWaitObject *self, PyObject *unused)
{
    wait_abandon(self);
    Py_RETURN_NONE;
}

/* Barrier: (index, generation, is_last) of a finished wait. */
static PyObject *wait_barrier_result(AioWaitObject *self, PyObject *unused)
{
    if (self->kind != KIND_BARRIER || !self->finished || self->result != 0)
        return PyErr_Format(PyExc_RuntimeError, "not a finished barrier wait");
    uint32_t index;
    int last;
    shk_barrier_result(&self->a.w, &index, &last);
    return Py_BuildValue("(IIO)", index, self->a.w.aux, last ? Py_True : Py_False);
}

static void wait_dealloc(AioWaitObject *self)
{
    wait_abandon(self); /* dropped without cancel(): undo it now */
    Py_XDECREF(self->seg);
    Py_XDECREF(self->handle);
    Py_XDECREF(self->notifier);
    Py_XDECREF(self->future);
    shk_py_free(self);
}

SHK_PY_GETTER(wait_get_future, AioWaitObject, Py_NewRef(self->future ? self->future : Py_None))

static int wait_set_future(AioWaitObject *self, PyObject *v, void *c)
{
    Py_XSETREF(self->future, v && v != Py_None ? Py_NewRef(v) : NULL);
    return 0;
}

SHK_PY_GETTER(wait_get_finished, AioWaitObject, PyBool_FromLong(self->finished))

SHK_PY_GETTER(wait_get_why, AioWaitObject, PyLong_FromUnsignedLong(self->a.hw.why))

static PyMethodDef wait_methods[] = {
    {"step", (PyCFunction)wait_step, METH_NOARGS,
     "step()\n--\n\nAttempt (again): EAGAIN while it must wait (await the future, then step "
     "again), else the result code of the finished wait."},
    {"cancel", (PyCFunction)wait_cancel, METH_NOARGS,
     "cancel()\n--\n\nGive up: registration and partial progress undone (no-op once over)."},
    {"barrier_result", (PyCFunction)wait_barrier_result, METH_NOARGS,
     "barrier_result()\n--\n\n(index, generation, is_last) of a finished barrier wait."},
    {NULL},
};

static PyGetSetDef wait_getset[] = {
    {"future", (getter)wait_get_future, (setter)wait_set_future,
     "the future the coroutine awaits until the hub reports the wait ready", NULL},
    {"finished", (getter)wait_get_finished, NULL, "True once the wait is over", NULL},
    {"why", (getter)wait_get_why, NULL, "why the hub reported it ready last (AIO_* codes)", NULL},
    {NULL},
};

/* A new wait on handle (a zone-object handle, already checked open by its _ref). */
static AioWaitObject *wait_new(PyObject *notifier, PyObject *handle, int kind,
                               const struct shk_wait_op *op, void *obj,
                               int (*live)(PyObject *), uint64_t deadline, uint32_t flags)
{
    if (!PyObject_TypeCheck(notifier, NotifierType)) {
        PyErr_SetString(PyExc_TypeError, "notifier must be a shmkit._core.AioNotifier");
        return NULL;
    }
    NotifierObject *n = (NotifierObject *)notifier;
    if (notifier_usable(n) < 0)
        return NULL;
    SegmentObject *seg = ((struct shk_py_handle *)handle)->seg;
    if (seg->closed || seg->close_pending) {
        shk_py_closed("the zone is closed");
        return NULL;
    }
    AioWaitObject *self = PyObject_New(AioWaitObject, WaitType);
    if (!self)
        return NULL;
    /* PyObject_New leaves the fields as they were: zero them all, then set the others */
    memset((char *)self + sizeof(PyObject), 0, sizeof *self - sizeof(PyObject));
    self->handle = Py_NewRef(handle);
    self->seg = (SegmentObject *)Py_NewRef((PyObject *)seg);
    shk_segment_export(seg);
    self->notifier = (NotifierObject *)Py_NewRef(notifier);
    self->live = live;
    self->a.op = op;
    self->a.obj = obj;
    self->a.w = SHK_WAIT_INIT(deadline, flags);
    self->a.hw.keys[0] = handle;
    self->a.hw.keys[1] = seg;
    self->a.hw.notifier = &n->n;
    self->a.hw.owner = self;
    self->kind = kind;
    self->pid = getpid();
    return self;
}

/* ---- making waits: the same arguments as the blocking calls ---------------------------------- */

static uint64_t deadline_of(int has, const struct timespec *d)
{
    return shk_wait_deadline(has ? d : NULL);
}

/* aio_acquire(notifier, handle, blocking=True, timeout=-1, write=False): Lock, RLock,
 * Semaphore (timeout None means forever too), RWLock (read, or write). */
static PyObject *core_aio_acquire(PyObject *m, PyObject *const *args, Py_ssize_t nargs,
                                  PyObject *kwnames)
{
    static const char *const names[] = {"notifier", "handle", "blocking", "timeout", "write"};
    PyObject *a[5];
    if (shk_py_parse_args(args, nargs, kwnames, "aio_acquire", names, 5, a) < 0)
        return NULL;
    if (!a[0] || !a[1])
        return PyErr_Format(PyExc_TypeError, "aio_acquire() needs notifier and handle");
    struct shk_py_sync_ref ref;
    if (shk_py_sync_ref(a[1], &ref) < 0)
        return NULL;
    struct timespec d;
    int has;
    uint32_t flags;
    int write = a[4] ? PyObject_IsTrue(a[4]) : 0;
    if (write < 0)
        return NULL;
    const struct shk_wait_op *op = shk_sync_acquire_op(ref.type, write);
    if (!op)
        return PyErr_Format(PyExc_TypeError, "aio_acquire(): %s has no acquire",
                            Py_TYPE(a[1])->tp_name);
    int kind = ref.type == SHK_OBJ_SEMAPHORE ? KIND_SEM : KIND_LOCK;
    if (shk_py_acquire_args(kind == KIND_SEM ? SHK_PY_TIMEOUT_SEMAPHORE : SHK_PY_TIMEOUT_LOCK,
                            a[2], a[3], &d, &has, &flags) < 0)
        return NULL;
    AioWaitObject *w = wait_new(a[0], a[1], kind, op, ref.sh, shk_py_sync_live,
                                deadline_of(has, &d), flags);
    if (!w)
        return NULL;
    w->sync = ref;
    if (op == &shk_rw_read_op) {
        w->u.rd.rw = ref.sh;
        w->u.rd.slot = *ref.slot;
        w->a.obj = &w->u.rd;
    }
    return (PyObject *)w;
}

/* The waits of Event, Condition and Barrier: (notifier, handle, timeout=None), the same
 * steps but for the object type and the core op. */
static const struct {
    const char *usage;              /* the TypeError for a wrong number of arguments */
    uint32_t type;                  /* SHK_OBJ_* the handle must be */
    const char *needs;              /* the TypeError when it is not */
    const struct shk_wait_op *op;
} sync_waits[] = {
    [KIND_EVENT] = {"aio_event_wait(notifier, event, timeout=None)", SHK_OBJ_EVENT,
                    "aio_event_wait() needs an Event", &shk_event_op},
    [KIND_COND] = {"aio_cond_wait(notifier, condition, timeout=None)", SHK_OBJ_CONDITION,
                   "aio_cond_wait() needs a Condition", &shk_cond_op},
    [KIND_BARRIER] = {"aio_barrier_wait(notifier, barrier, timeout=None)", SHK_OBJ_BARRIER,
                      "aio_barrier_wait() needs a Barrier", &shk_barrier_op},
};

static PyObject *aio_sync_wait(PyObject *const *args, Py_ssize_t nargs, int kind)
{
    if (nargs < 2 || nargs > 3)
        return PyErr_Format(PyExc_TypeError, "%s", sync_waits[kind].usage);
    struct shk_py_sync_ref ref;
    if (shk_py_sync_ref(args[1], &ref) < 0)
        return NULL;
    if (ref.type != sync_waits[kind].type)
        return PyErr_Format(PyExc_TypeError, "%s", sync_waits[kind].needs);
    struct timespec d;
    int has;
    uint32_t flags;
    if (shk_py_wait_args(nargs > 2 ? args[2] : Py_None, &d, &has, &flags) < 0)
        return NULL;
    if (kind == KIND_BARRIER && (flags & SHK_WAIT_TRY)) {
        /* a zero timeout: arrive, and give up at once unless everyone is there (as the
         * blocking wait does) */
        shk_deadline_after(&d, 0);
        has = 1;
        flags = 0;
    }
    AioWaitObject *w = wait_new(args[0], args[1], kind, sync_waits[kind].op, ref.sh,
                                shk_py_sync_live, deadline_of(has, &d), flags);
    if (!w)
        return NULL;
    w->sync = ref;
    if (kind == KIND_COND)
        w->a.w.observed = shk_cond_prepare(ref.sh); /* registered now, under the lock */
    return (PyObject *)w;
}

/* aio_event_wait(notifier, event, timeout=None) */
static PyObject *core_aio_event_wait(PyObject *m, PyObject *const *args, Py_ssize_t nargs)
{
    return aio_sync_wait(args, nargs, KIND_EVENT);
}

/* aio_cond_wait(notifier, condition, timeout=None): registers the waiter now (call it with
 * the lock held, then release the lock and await the wait). */
static PyObject *core_aio_cond_wait(PyObject *m, PyObject *const *args, Py_ssize_t nargs)
{
    return aio_sync_wait(args, nargs, KIND_COND);
}

/* aio_barrier_wait(notifier, barrier, timeout=None) */
static PyObject *core_aio_barrier_wait(PyObject *m, PyObject *const *args, Py_ssize_t nargs)
{
    return aio_sync_wait(args, nargs, KIND_BARRIER);
}

/* aio_board_wait(notifier, board, after, timeout=None, max_spin_ns=0) */
static PyObject *core_aio_board_wait(PyObject *m, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 3 || nargs > 5)
        return PyErr_Format(PyExc_TypeError,
                            "aio_board_wait(notifier, board, after, timeout=None, max_spin_ns=0)");
    struct shk_board *b = shk_py_board_ref(args[1]);
    if (!b)
        return NULL;
    unsigned long long after = PyLong_AsUnsignedLongLong(args[2]);
    if (after == (unsigned long long)-1 && PyErr_Occurred())
        return NULL;
    unsigned long long spin = 0;
    if (nargs > 4 && (spin = PyLong_AsUnsignedLongLong(args[4])) == (unsigned long long)-1 &&
        PyErr_Occurred())
        return NULL;
    uint64_t deadline; /* a negative timeout is refused, as by board.wait (issue 13 #11) */
    uint32_t flags;
    if (shk_py_block_timeout(NULL, nargs > 3 ? args[3] : Py_None, &deadline, &flags) < 0)
        return NULL;
    AioWaitObject *w = wait_new(args[0], args[1], KIND_BOARD, &shk_board_wait_op, NULL,
                                shk_py_board_live, deadline, 0);
    if (!w)
        return NULL;
    w->u.bw.b = b;
    w->u.bw.after = after;
    w->u.bw.max_spin_ns = spin;
    w->a.obj = &w->u.bw;
    return (PyObject *)w;
}

/* aio_queue_wait(notifier, queue, what, item=None, timeout=None): until a get may
 * succeed (AIO_QW_DATA), or a put of item (AIO_QW_SPACE, see shk_py_queue_record_need);
 * then make the call (not blocking) again.  0 when it may; QueueEmpty/QueueFull "(timed out)" at the
 * deadline.  AIO_QW_JOIN: until every message put is marked done (the join itself:
 * shk_queue_join_op's attempt, a futex word and its next liveness check); 0, or
 * ETIMEDOUT at the deadline. */
#define AIO_QW_JOIN 16
static PyObject *core_aio_queue_wait(PyObject *m, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 3 || nargs > 5)
        return PyErr_Format(PyExc_TypeError,
                            "aio_queue_wait(notifier, queue, what, item=None, timeout=None)");
    struct shk_queue *q = shk_py_queue_ref(args[1]);
    if (!q)
        return NULL;
    long what = PyLong_AsLong(args[2]);
    if (what == -1 && PyErr_Occurred())
        return NULL;
    if (what != SHK_QW_DATA && what != SHK_QW_SPACE && what != AIO_QW_JOIN)
        return PyErr_Format(PyExc_ValueError, "what must be AIO_QW_DATA, AIO_QW_SPACE or "
                            "AIO_QW_JOIN");
    uint64_t need = 0;
    if (what == SHK_QW_SPACE) {
        if (nargs < 4 || args[3] == Py_None)
            return PyErr_Format(PyExc_TypeError, "a wait for space needs the item to put");
        if (shk_py_queue_record_need(args[3], &need) < 0)
            return NULL;
    }
    struct timespec d;
    int has;
    if (shk_py_deadline(nargs > 4 ? args[4] : Py_None, &d, &has) < 0)
        return NULL;
    int join = what == AIO_QW_JOIN; /* the join op waits on the queue itself */
    AioWaitObject *w = wait_new(args[0], args[1], KIND_QUEUE,
                                join ? &shk_queue_join_op : &shk_queue_wait_op, join ? q : NULL,
                                shk_py_queue_live, deadline_of(has, &d), 0);
    if (!w || join)
        return (PyObject *)w;
    w->u.qw.q = q;
    w->u.qw.what = (int)what;
    w->u.qw.need = need;
    w->a.obj = &w->u.qw;
    return (PyObject *)w;
}

/* aio_configure(mode=None, max_threads=None, spin=None, spin_max_ns=None): set (where
 * given) and return {"mode", "max_threads", "spin", "spin_max_ns"}.  mode and max_threads
 * apply when the hub is set up: changing them while coroutines wait is refused (EBUSY). */
static PyObject *core_aio_configure(PyObject *m, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"mode", "max_threads", "spin", "spin_max_ns", NULL};
    PyObject *mode = Py_None, *maxt = Py_None, *spin = Py_None, *smax = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|OOOO:aio_configure", kwlist, &mode, &maxt,
                                     &spin, &smax))
        return NULL;
    if (smax != Py_None) {
        long long v = PyLong_AsLongLong(smax);
        if (v == -1 && PyErr_Occurred())
            return NULL;
        if (v < 1000 || v > 10000000)
            return PyErr_Format(PyExc_ValueError, "spin_max must be between 1 µs and 10 ms");
        loop_spin.max_ns = (uint64_t)v;
        shk_loop_spin_reset(&loop_spin); /* budgets start again from the new one */
    }
    if (mode != Py_None || maxt != Py_None) {
        int md = aio_hub.mode;
        long mt = (long)aio_hub.max_threads;
        if (mode != Py_None) {
            const char *s = PyUnicode_AsUTF8(mode);
            if (!s)
                return NULL;
            for (md = SHK_HUB_AUTO; md <= SHK_HUB_FALLBACK; md++)
                if (!strcmp(s, hub_modes[md]))
                    break;
            if (md > SHK_HUB_FALLBACK)
                return PyErr_Format(PyExc_ValueError, "mode must be 'auto', 'futex_waitv' or "
                                    "'fallback', not %R", mode);
        }
        if (maxt != Py_None) {
            mt = PyLong_AsLong(maxt);
            if (mt == -1 && PyErr_Occurred())
                return NULL;
            if (mt < 0 || mt > 65536)
                return PyErr_Format(PyExc_ValueError, "max_threads must be 0..65536 (0: default)");
        }
        if (shk_aio_hub_configure(&aio_hub, md, (uint32_t)mt))
            return shk_py_raise_os(EBUSY, "asyncio hub: cannot change its mode while "
                                   "coroutines wait");
    }
    if (spin != Py_None) {
        int v = PyObject_IsTrue(spin);
        if (v < 0)
            return NULL;
        aio_spin = v;
    }
    return Py_BuildValue("{sssIsOsK}", "mode", hub_modes[aio_hub.mode], "max_threads",
                         aio_hub.max_threads, "spin", aio_spin ? Py_True : Py_False, "spin_max_ns",
                         (unsigned long long)loop_spin.max_ns);
}

/* aio_stats(): the hub's statistics (mode in use, threads, slots, waits, ...). */
static PyObject *core_aio_stats(PyObject *m, PyObject *unused)
{
    struct shk_hub *h = get_hub();
    if (!h)
        return NULL;
    struct shk_aio_stats st;
    shk_aio_stats(h, &loop_spin, &st);
    PyObject *d = Py_BuildValue("{ss}", "mode", hub_modes[st.hub.mode]);
    PyObject *f = d ? shk_py_fields(&st, shk_aio_stats_fields) : NULL;
    if (!f || PyDict_Update(d, f) < 0)
        Py_CLEAR(d);
    Py_XDECREF(f);
    return d;
}

static PyMethodDef aio_functions[] = {
    {"aio_acquire", (PyCFunction)(void (*)(void))core_aio_acquire, METH_FASTCALL | METH_KEYWORDS,
     "aio_acquire(notifier, handle, blocking=True, timeout=-1, write=False)\n--\n\nAn AioWait "
     "acquiring a Lock, RLock, Semaphore or RWLock (read, or write=True)."},
    {"aio_event_wait", (PyCFunction)(void (*)(void))core_aio_event_wait, METH_FASTCALL,
     "aio_event_wait(notifier, event, timeout=None)\n--\n\nAn AioWait for an Event."},
    {"aio_cond_wait", (PyCFunction)(void (*)(void))core_aio_cond_wait, METH_FASTCALL,
     "aio_cond_wait(notifier, condition, timeout=None)\n--\n\nAn AioWait for a Condition's "
     "notification, registered now (the lock must be held; release it, then await)."},
    {"aio_barrier_wait", (PyCFunction)(void (*)(void))core_aio_barrier_wait, METH_FASTCALL,
     "aio_barrier_wait(notifier, barrier, timeout=None)\n--\n\nAn AioWait arriving at a "
     "Barrier."},
    {"aio_board_wait", (PyCFunction)(void (*)(void))core_aio_board_wait, METH_FASTCALL,
     "aio_board_wait(notifier, board, after, timeout=None, max_spin_ns=0)\n--\n\nAn AioWait "
     "for a board version newer than after."},
    {"aio_queue_wait", (PyCFunction)(void (*)(void))core_aio_queue_wait, METH_FASTCALL,
     "aio_queue_wait(notifier, queue, what, item=None, timeout=None)\n--\n\nAn AioWait until "
     "a get (AIO_QW_DATA) or a put of item (AIO_QW_SPACE) may succeed."},
    {"aio_configure", (PyCFunction)(void (*)(void))core_aio_configure, METH_VARARGS | METH_KEYWORDS,
     "aio_configure(mode=None, max_threads=None, spin=None, spin_max_ns=None)\n--\n\nSet "
     "(where given) and return the asyncio settings of this process."},
    {"aio_stats", (PyCFunction)core_aio_stats, METH_NOARGS,
     "aio_stats()\n--\n\nThe asyncio hub's statistics (dict)."},
    {NULL},
};

int shk_init_aio(PyObject *m)
{
    PyType_Slot nslots[] = {
        {Py_tp_new, notifier_new},
        {Py_tp_dealloc, notifier_dealloc},
        {Py_tp_methods, notifier_methods},
        {Py_tp_doc, "AioNotifier()\n--\n\nWhere the asyncio hub reports ready waits: an eventfd "
                    "an event loop watches (internal; see shmkit._aio)."},
        {0, NULL},
    };
    PyType_Spec nspec = {"shmkit._core.AioNotifier", sizeof(NotifierObject), 0, Py_TPFLAGS_DEFAULT,
                         nslots};
    PyType_Slot wslots[] = {
        {Py_tp_dealloc, wait_dealloc},
        {Py_tp_methods, wait_methods},
        {Py_tp_getset, wait_getset},
        {Py_tp_doc, "One asyncio wait on a shared object (internal; made by the aio_* "
                    "functions, driven by shmkit._aio)."},
        {0, NULL},
    };
    PyType_Spec wspec = {"shmkit._core.AioWait", sizeof(AioWaitObject), 0, Py_TPFLAGS_DEFAULT,
                         wslots};
    if (!(NotifierType = shk_py_add_type(m, &nspec)) || !(WaitType = shk_py_add_type(m, &wspec)))
        return -1;
    static const struct shk_py_int constants[] = {
        {"AIO_EAGAIN", EAGAIN},
        {"AIO_ETIMEDOUT", ETIMEDOUT},
        {"AIO_QW_DATA", SHK_QW_DATA},
        {"AIO_QW_SPACE", SHK_QW_SPACE},
        {"AIO_QW_JOIN", AIO_QW_JOIN},
        {NULL},
    };
    if (PyModule_AddFunctions(m, aio_functions) < 0 || shk_py_add_ints(m, constants) < 0)
        return -1;
    return 0;
}
