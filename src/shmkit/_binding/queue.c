/*
 * queue.c (binding) - shmkit._core.Queue and shmkit._core.Reservation (core/queue.h).
 *
 * Parse, convert, handle the GIL.  Every operation is one core call made with the GIL
 * held (a handle's member slot is used by one thread at a time); when it says "not now"
 * the call waits through shk_queue_wait_op with shk_py_wait (GIL released, signals,
 * Ctrl-C) and makes it again.  The hot paths (put(bytes), get()) are METH_FASTCALL and
 * parse nothing when no option is given.
 *
 * Lifetime: a handle holds one export of its zone's segment while attached, so the
 * mapping outlives zone.close(); waits are calls in progress (common.c): detach() or
 * closing the zone ends them with ClosedError, and detach() lets the last of them give
 * the member slot back.
 */
#include "binding.h"

#include <errno.h>
#include <structmember.h>

#include "queue.h"

typedef struct {
    SHK_PY_HANDLE_HEAD          /* exported from open until the member slot goes back */
    struct shk_queue q;
    int opened;                 /* attached (detach() clears it at once) */
    int waits;                  /* waits in progress (GIL released) on this handle */
    PyObject *recv_buf;         /* bytearray reused by get(view=True) once nobody holds it */
    Py_ssize_t zc_live;         /* zero-copy blocks this handle owns (reservations, views) */
    PyObject *weakreflist;
} QueueObject;

typedef struct {
    PyObject_HEAD
    QueueObject *queue;
    void *ptr;
    Py_ssize_t len;
    uint32_t index, gen;
    int state;                  /* 0 reserved, 1 committed, 2 released */
    Py_ssize_t exports;
} ReservationObject;

static PyTypeObject *QueueType;
static PyTypeObject *ReservationType;

/* ---- helpers ---------------------------------------------------------------------- */

/* The hot paths' check: the handle, its zone and its member slot are all usable. */
static inline int queue_ready_fast(QueueObject *self)
{
    SegmentObject *seg = self->seg;
    return self->opened && !seg->closed && !seg->close_pending &&
           self->q.slot != SHK_QNOSLOT && self->q.fork_gen == shk_queue_fork_gen();
}

static int queue_ready(QueueObject *self)
{
    if (!self->opened) {
        shk_py_closed("queue handle is detached");
        return -1;
    }
    if (shk_zone_check_open(self->zone) < 0)
        return -1;
    int r = shk_queue_ensure(&self->q);
    return r ? shk_py_raise_int(r, "queue register") : 0;
}

/* Detach for real: the member slot goes back, the export too (no wait is in progress). */
static void queue_release(QueueObject *self)
{
    if (self->attached) {
        if (!self->seg->closed)
            shk_queue_release(&self->q);
        shk_py_handle_unexport(self);
    }
}

/* A bytes-like object's memory: bytes exactly without a buffer request (fast path). */
static int get_bytes(PyObject *o, Py_buffer *b, struct shk_qpart *part)
{
    if (PyBytes_CheckExact(o)) {
        b->obj = NULL;
        part->p = PyBytes_AS_STRING(o);
        part->n = (uint64_t)PyBytes_GET_SIZE(o);
        return 0;
    }
    if (PyObject_GetBuffer(o, b, PyBUF_C_CONTIGUOUS) < 0) {
        if (PyErr_ExceptionMatches(PyExc_TypeError)) {
            PyErr_Clear();
            PyErr_Format(PyExc_TypeError, "a bytes-like object is required, not '%.100s' "
                         "(use mode=\"objects\" to put any picklable object)",
                         Py_TYPE(o)->tp_name);
        }
        return -1;
    }
    part->p = b->buf;
    part->n = (uint64_t)b->len;
    return 0;
}

static void release_bytes(Py_buffer *b, Py_ssize_t n)
{
    for (Py_ssize_t i = 0; i < n; i++)
        if (b[i].obj)
            PyBuffer_Release(&b[i]);
}

/* ---- waiting ------------------------------------------------------------------------ */

/*
 * Run a call without the GIL as a call in progress on this handle (common.c): op's wait
 * on obj, or with op NULL a repair.  A detach() or a close of the zone meanwhile ends a
 * wait with ECANCELED, and the last call of a handle detached meanwhile gives its member
 * slot back.  The call's result (SHK_PY_ERR: a signal handler raised).
 */
static int run_call(QueueObject *self, const struct shk_wait_op *op, void *obj,
                    struct shk_wait *w)
{
    struct shk_py_call call;
    int r;
    shk_py_call_begin(&call, self->seg, self, op != NULL, w);
    self->waits++;
    if (op) {
        r = shk_py_wait(op, obj, w, 0, NULL);
        if (call.cancel && r != SHK_PY_ERR)
            r = shk_queue_wait_cancelled(op, obj, r);
    } else {
        Py_BEGIN_ALLOW_THREADS
        r = shk_queue_repair(&self->q);
        Py_END_ALLOW_THREADS
    }
    self->waits--;
    shk_py_call_end(&call);
    if (!self->opened && !self->waits)
        queue_release(self); /* detached while we waited: the last call finishes it */
    return r;
}

/*
 * An operation said "not now": wait (op on obj) until it may succeed, by the deadline;
 * flags SHK_WAIT_TRY: not at all.  0: make it again; -1 with the exception set
 * (QueueEmpty/QueueFull in the core's words, ClosedError when the handle was detached or
 * its zone closed meanwhile, or what a signal handler raised).  Reserve's wait does the
 * operation itself: 0 means reserved.  join()'s wait: 0 when nothing is unfinished,
 * ShmkitTimeoutError at the deadline, where it still looks once.
 */
static int wait_for(QueueObject *self, const struct shk_wait_op *op, void *obj,
                    uint64_t deadline, uint32_t flags)
{
    int r, join = op == &shk_queue_join_op;
    struct shk_wait w = SHK_WAIT_INIT(deadline, flags);
    if ((r = shk_queue_wait_now(op, obj, &w)) == EAGAIN) /* not an answer without waiting */
        r = run_call(self, op, obj, &w);
    if (r == 0)
        return PyErr_CheckSignals(); /* "ready" and "not now" may alternate: stay stoppable */
    if (r == ECANCELED)
        PyErr_Format(shk_py_exc("ClosedError"), self->opened
                         ? "the queue's zone was closed while %s"
                         : "the queue handle was detached while %s", join ? "joining" : "waiting");
    else if (r != SHK_PY_ERR)
        shk_py_raise(join && r == EBUSY ? ETIMEDOUT : r, join ? "join" : "queue wait");
    return -1;
}

/* ---- put ---------------------------------------------------------------------------- */

/* One message (DATA, or a FRAMED one of parts), waiting until deadline (flags: see wait_for). */
static PyObject *put_message(QueueObject *self, const struct shk_qpart *parts, int nparts,
                             uint32_t kind, uint64_t deadline, uint32_t flags)
{
    struct shk_queue_waiter qw = {.q = &self->q, .what = SHK_QW_SPACE};
    int r;
    while ((r = shk_queue_put(&self->q, parts, nparts, kind)) == SHK_EFULLQ) {
        qw.need = shk_queue_record_size(parts, nparts, kind);
        if (!(flags & SHK_WAIT_TRY) && shk_queue_poll(&qw, 100))
            continue; /* room came within the poll: no wait set up (as get's) */
        if (wait_for(self, &shk_queue_wait_op, &qw, deadline, flags) < 0)
            return NULL;
    }
    return r ? shk_py_raise(r, "put") : Py_NewRef(Py_None);
}

static const char *const put_names[] = {"item", "block", "timeout"};

static PyObject *queue_put(QueueObject *self, PyObject *const *args, Py_ssize_t nargs,
                           PyObject *kwnames)
{
    /* the common call: put(bytes), room in the ring */
    if (nargs == 1 && !kwnames && PyBytes_CheckExact(args[0]) && queue_ready_fast(self) &&
        shk_queue_put1(&self->q, PyBytes_AS_STRING(args[0]),
                       (uint64_t)PyBytes_GET_SIZE(args[0])) == 0)
        Py_RETURN_NONE;
    PyObject *a[3];
    uint64_t deadline;
    uint32_t flags;
    if (shk_py_parse_args(args, nargs, kwnames, "put", put_names, 3, a) < 0 ||
        shk_py_block_timeout(a[1], a[2], &deadline, &flags) < 0)
        return NULL;
    if (!a[0])
        return PyErr_Format(PyExc_TypeError, "put() missing required argument 'item'");
    Py_buffer b;
    struct shk_qpart part;
    if (queue_ready(self) < 0 || get_bytes(a[0], &b, &part) < 0)
        return NULL;
    PyObject *res = put_message(self, &part, 1, SHK_QK_DATA, deadline, flags);
    release_bytes(&b, 1);
    return res;
}

static PyObject *queue_put_nowait(QueueObject *self, PyObject *item)
{
    if (PyBytes_CheckExact(item) && queue_ready_fast(self) &&
        shk_queue_put1(&self->q, PyBytes_AS_STRING(item), (uint64_t)PyBytes_GET_SIZE(item)) == 0)
        Py_RETURN_NONE;
    PyObject *args[2] = {item, Py_False};
    return queue_put(self, args, 2, NULL);
}

/* Items as parts for the core: their buffers are held until gather_release. */
struct gathered {
    PyObject *seq;
    Py_ssize_t n, got;
    struct shk_qpart *parts, stack_parts[32];
    Py_buffer *bufs, stack_bufs[32];
};

static int gather(struct gathered *g, PyObject *items, const char *err)
{
    g->got = 0;
    g->parts = g->stack_parts;
    g->bufs = g->stack_bufs;
    if (!(g->seq = PySequence_Fast(items, err)))
        return -1;
    g->n = PySequence_Fast_GET_SIZE(g->seq);
    if (g->n > 32 && (!(g->parts = PyMem_Malloc((size_t)g->n * sizeof *g->parts)) ||
                      !(g->bufs = PyMem_Malloc((size_t)g->n * sizeof *g->bufs)))) {
        PyErr_NoMemory();
        return -1;
    }
    PyObject **it = PySequence_Fast_ITEMS(g->seq);
    while (g->got < g->n && get_bytes(it[g->got], &g->bufs[g->got], &g->parts[g->got]) == 0)
        g->got++;
    return g->got == g->n ? 0 : -1;
}

static void gather_release(struct gathered *g)
{
    release_bytes(g->bufs, g->got);
    if (g->parts && g->parts != g->stack_parts)
        PyMem_Free(g->parts);
    if (g->bufs && g->bufs != g->stack_bufs)
        PyMem_Free(g->bufs);
    Py_XDECREF(g->seq);
}

/* _put_parts(parts, block=True, timeout=None): one FRAMED message (objects mode). */
static PyObject *queue_put_parts(QueueObject *self, PyObject *const *args, Py_ssize_t nargs,
                                 PyObject *kwnames)
{
    PyObject *a[3], *res = NULL;
    uint64_t deadline;
    uint32_t flags;
    struct gathered g = {NULL};
    if (shk_py_parse_args(args, nargs, kwnames, "_put_parts", put_names, 3, a) < 0 ||
        shk_py_block_timeout(a[1], a[2], &deadline, &flags) < 0)
        return NULL;
    if (!a[0] || !PyList_Check(a[0]))
        return PyErr_Format(PyExc_TypeError, "_put_parts() needs a list of buffers");
    if (queue_ready(self) == 0 && gather(&g, a[0], "_put_parts") == 0) /* core: <= 4096 parts */
        res = put_message(self, g.parts, g.n > INT_MAX ? INT_MAX : (int)g.n, SHK_QK_FRAMED, deadline, flags);
    gather_release(&g);
    return res;
}

static PyObject *queue_put_many(QueueObject *self, PyObject *const *args, Py_ssize_t nargs,
                                PyObject *kwnames)
{
    static const char *const names[] = {"items", "block", "timeout"};
    PyObject *a[3], *res = NULL;
    uint64_t deadline;
    uint32_t flags;
    struct gathered g = {NULL};
    if (shk_py_parse_args(args, nargs, kwnames, "put_many", names, 3, a) < 0 ||
        shk_py_block_timeout(a[1], a[2], &deadline, &flags) < 0)
        return NULL;
    if (!a[0])
        return PyErr_Format(PyExc_TypeError, "put_many() missing required argument 'items'");
    if (queue_ready(self) < 0 ||
        gather(&g, a[0], "put_many() needs an iterable of bytes-like objects") < 0)
        goto out;
    size_t total = 0;
    struct shk_queue_waiter qw = {.q = &self->q, .what = SHK_QW_SPACE};
    PyObject *full = shk_py_exc("QueueFull"); /* (not looked up with an error set) */
    int r; /* the core puts all that fits (not blocking: what fits), then says what to wait for */
    while ((r = shk_queue_put_more(&self->q, g.parts, (size_t)g.n, &total, flags & SHK_WAIT_TRY,
                                   &qw.need)) == SHK_EFULLQ) {
        if (wait_for(self, &shk_queue_wait_op, &qw, deadline, flags) < 0) {
            if (!(flags & SHK_WAIT_TRY) && PyErr_ExceptionMatches(full))
                PyErr_Format(full, "queue is full (timed out after putting %zu of %zd items)",
                             total, g.n);
            goto out;
        }
    }
    res = r ? shk_py_raise(r, "put_many") : PyLong_FromSize_t(total);
out:
    gather_release(&g);
    return res;
}

/* ---- get ---------------------------------------------------------------------------- */

static void ref_release(PyObject *owner, uint64_t cookie)
{
    QueueObject *self = (QueueObject *)owner;
    self->zc_live--;
    if (self->opened)
        shk_queue_release_ref(&self->q, (uint32_t)cookie, (uint32_t)(cookie >> 32));
}

/* copy_message's other cases: a bytearray (FRAMED: framed_parts cuts it once it is
 * taken); DATA with view: a memoryview of the receive buffer, reused once the caller let
 * go of every view of it (large messages then cost no allocation, no page faults). */
static PyObject *copy_to_buffer(QueueObject *self, const struct shk_qmsg *m)
{
    int view = m->kind == SHK_QK_DATA;
    PyObject *ba = view ? self->recv_buf : NULL;
    if (ba && (Py_REFCNT(ba) != 1 || ((PyByteArrayObject *)ba)->ob_exports != 0)) {
        Py_CLEAR(self->recv_buf);
        ba = NULL;
    }
    if (ba && PyByteArray_Resize(ba, (Py_ssize_t)m->len) < 0)
        return NULL;
    if (!ba && !(ba = PyByteArray_FromStringAndSize(NULL, (Py_ssize_t)m->len)))
        return NULL;
    shk_queue_read(&self->q, m->pos, 0, PyByteArray_AS_STRING(ba), m->len);
    if (!view)
        return ba;
    if (!self->recv_buf)
        self->recv_buf = ba;
    return PyMemoryView_FromObject(ba);
}

/* A copy of a message's payload: bytes for DATA (see copy_to_buffer for the others). */
static inline PyObject *copy_message(QueueObject *self, const struct shk_qmsg *m, int view)
{
    if (__builtin_expect(m->kind != SHK_QK_DATA || view, 0))
        return copy_to_buffer(self, m);
    PyObject *o = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)m->len);
    if (o)
        shk_queue_read(&self->q, m->pos, 0, PyBytes_AS_STRING(o), m->len);
    return o;
}

/* The tuple of memoryviews onto the parts of a copied FRAMED payload (steals ba). */
static PyObject *framed_parts(PyObject *ba)
{
    struct shk_qframe f;
    uint64_t off, n;
    PyObject *mv = NULL, *tup = NULL;
    if (shk_qframe_begin(&f, PyByteArray_AS_STRING(ba), (uint64_t)PyByteArray_GET_SIZE(ba)) == 0 &&
        (mv = PyMemoryView_FromObject(ba)) && (tup = PyTuple_New(f.nparts))) {
        for (uint32_t i = 0; i < f.nparts; i++) {
            PyObject *part = NULL;
            if (shk_qframe_next(&f, &off, &n) == 0)
                part = PySequence_GetSlice(mv, (Py_ssize_t)off, (Py_ssize_t)(off + n));
            if (!part) {
                Py_CLEAR(tup);
                break;
            }
            PyTuple_SET_ITEM(tup, i, part);
        }
    }
    if (!tup && !PyErr_Occurred()) {
        shk_clear_detail();
        shk_py_raise(SHK_ECORRUPT, "get: a framed message whose parts do not hold together");
    }
    Py_XDECREF(mv);
    Py_DECREF(ba);
    return tup;
}

/* The object of a message taken claim-first (a zero-copy REF: a view of its block). */
static PyObject *message_object(QueueObject *self, const struct shk_qmsg *m, int view)
{
    if (m->kind != SHK_QK_REF) {
        PyObject *raw = copy_message(self, m, view);
        return raw && m->kind == SHK_QK_FRAMED ? framed_parts(raw) : raw;
    }
    uint32_t idx, gen;
    void *ptr;
    uint64_t len;
    int r = shk_queue_accept_ref(&self->q, m, &idx, &gen, &ptr, &len);
    if (r)
        return shk_py_raise(r, "get");
    PyObject *region = shk_region_new_with_release(self->seg, ptr, (Py_ssize_t)len, 0,
                                                   (PyObject *)self, ref_release,
                                                   (uint64_t)idx | ((uint64_t)gen << 32));
    if (!region) {
        shk_queue_release_ref(&self->q, idx, gen);
        return NULL;
    }
    self->zc_live++;
    PyObject *mv = PyMemoryView_FromObject(region);
    Py_DECREF(region);
    return mv;
}

static PyObject again; /* take_*: another consumer took the messages first */

/* get's object of the message in g (begun).  Copied first: taken only if nobody was
 * faster, and only then is a frame judged (a copy made first may be torn). */
static PyObject *take_one(QueueObject *self, struct shk_qget *g, int view)
{
    const struct shk_qmsg *m = g->msgs;
    PyObject *o;
    if (!g->copy_first) { /* taken: give the range back whatever happens */
        o = message_object(self, m, view);
        shk_queue_get_end(&self->q, g);
        return o;
    }
    if (!(o = copy_message(self, m, view)))
        return NULL; /* nothing taken: the message stays */
    if (shk_queue_get_end(&self->q, g)) {
        Py_DECREF(o);
        return &again;
    }
    return m->kind == SHK_QK_FRAMED ? framed_parts(o) : o;
}

/* get_many's list of the messages in g (begun), as take_one. */
static PyObject *take_list(QueueObject *self, struct shk_qget *g)
{
    PyObject *list = PyList_New((Py_ssize_t)g->n);
    int framed = 0; /* the pass over the list below only when there are framed messages */
    for (size_t i = 0; list && i < g->n; i++) {
        const struct shk_qmsg *m = &g->msgs[i];
        PyObject *o;
        if (__builtin_expect(m->kind == SHK_QK_DATA && g->copy_first, 1)) {
            o = copy_message(self, m, 0); /* the common case: bytes */
        } else {
            framed |= m->kind == SHK_QK_FRAMED;
            o = g->copy_first ? copy_message(self, m, 0) : message_object(self, m, 0);
        }
        if (o)
            PyList_SET_ITEM(list, (Py_ssize_t)i, o);
        else
            Py_CLEAR(list);
    }
    if (!list && g->copy_first)
        return NULL;
    if (shk_queue_get_end(&self->q, g) && list) {
        Py_DECREF(list);
        return &again;
    }
    for (size_t i = 0; list && framed && g->copy_first && i < g->n; i++) {
        PyObject **it = &PyList_GET_ITEM(list, (Py_ssize_t)i);
        if (g->msgs[i].kind == SHK_QK_FRAMED && !(*it = framed_parts(*it))) {
            *it = Py_NewRef(Py_None);
            Py_CLEAR(list);
        }
    }
    return list;
}

/* get (many = 0: the object) or get_many (a list) of up to g->max_msgs messages. */
static PyObject *get_messages(QueueObject *self, struct shk_qget *g, int view, int many,
                              uint64_t deadline, uint32_t flags)
{
    for (;;) {
        int r = shk_queue_get_begin(&self->q, g);
        if (__builtin_expect(r != 0, 0)) {
            if (r != SHK_EEMPTY)
                return shk_py_raise(r, "get");
            struct shk_queue_waiter qw = {.q = &self->q, .what = SHK_QW_DATA};
            if (!(flags & SHK_WAIT_TRY) && shk_queue_poll(&qw, 64))
                continue; /* a message came within the poll: no wait set up */
            if (wait_for(self, &shk_queue_wait_op, &qw, deadline, flags) < 0)
                return NULL;
            continue;
        }
        PyObject *res = many ? take_list(self, g) : take_one(self, g, view);
        if (res != &again)
            return res;
    }
}

static PyObject *queue_get(QueueObject *self, PyObject *const *args, Py_ssize_t nargs,
                           PyObject *kwnames)
{
    static const char *const names[] = {"block", "timeout", "view"};
    struct shk_qmsg m;
    struct shk_qget g;
    g.msgs = &m;
    g.max_msgs = 1;
    g.max_bytes = UINT64_MAX;
    if (nargs == 0 && !kwnames && queue_ready_fast(self)) /* the common call: get() */
        return get_messages(self, &g, 0, 0, SHK_FOREVER, 0);
    PyObject *a[3];
    uint64_t deadline;
    uint32_t flags;
    int view = 0;
    if (nargs > 2)
        return PyErr_Format(PyExc_TypeError, "get() takes at most 2 positional arguments");
    if (shk_py_parse_args(args, nargs, kwnames, "get", names, 3, a) < 0 ||
        shk_py_block_timeout(a[0], a[1], &deadline, &flags) < 0 || (a[2] && (view = PyObject_IsTrue(a[2])) < 0) ||
        queue_ready(self) < 0)
        return NULL;
    return get_messages(self, &g, view, 0, deadline, flags);
}

static PyObject *queue_get_nowait(QueueObject *self, PyObject *unused)
{
    struct shk_qmsg m;
    struct shk_qget g;
    g.msgs = &m;
    g.max_msgs = 1;
    g.max_bytes = UINT64_MAX;
    if (queue_ready(self) < 0)
        return NULL;
    return get_messages(self, &g, 0, 0, SHK_FOREVER, SHK_WAIT_TRY);
}

/* get_many(max_messages=1024, max_bytes=None, block=True, timeout=None) -> list */
static PyObject *queue_get_many(QueueObject *self, PyObject *const *args, Py_ssize_t nargs,
                                PyObject *kwnames)
{
    static const char *const names[] = {"max_messages", "max_bytes", "block", "timeout"};
    PyObject *a[4];
    Py_ssize_t max_msgs = 1024;
    long long max_bytes = -1;
    uint64_t deadline;
    uint32_t flags;
    if (shk_py_parse_args(args, nargs, kwnames, "get_many", names, 4, a) < 0 ||
        shk_py_block_timeout(a[2], a[3], &deadline, &flags) < 0)
        return NULL;
    if (a[0] && a[0] != Py_None && (max_msgs = PyLong_AsSsize_t(a[0])) < 1)
        return PyErr_Occurred() ? NULL : PyErr_Format(PyExc_ValueError, "max_messages must be "
                                                      ">= 1, not %zd", max_msgs);
    if (a[1] && a[1] != Py_None && (max_bytes = PyLong_AsLongLong(a[1])) < 1)
        return PyErr_Occurred() ? NULL : PyErr_Format(PyExc_ValueError, "max_bytes must be "
                                                      ">= 1, not %lld", max_bytes);
    if (queue_ready(self) < 0)
        return NULL;
    if (max_msgs > 65536)
        max_msgs = 65536;
    struct shk_qmsg stack_msgs[256], *msgs = stack_msgs;
    if (max_msgs > 256 && !(msgs = PyMem_Malloc((size_t)max_msgs * sizeof *msgs)))
        return PyErr_NoMemory();
    struct shk_qget g = {.msgs = msgs, .max_msgs = (size_t)max_msgs,
                         .max_bytes = max_bytes < 0 ? UINT64_MAX : (uint64_t)max_bytes};
    PyObject *empty = shk_py_exc("QueueEmpty");
    PyObject *list = get_messages(self, &g, 0, 1, deadline, flags);
    if (!list && (flags & SHK_WAIT_TRY) && PyErr_ExceptionMatches(empty)) {
        PyErr_Clear(); /* not blocking: what is there, maybe nothing */
        list = PyList_New(0);
    }
    if (msgs != stack_msgs)
        PyMem_Free(msgs);
    return list;
}

/* ---- state -------------------------------------------------------------------------- */

#define STATE_FN(fname, expr)                                                           \
    static PyObject *fname(QueueObject *self, PyObject *unused)                         \
    {                                                                                   \
        if (queue_ready(self) < 0)                                                      \
            return NULL;                                                                \
        return expr;                                                                    \
    }
STATE_FN(queue_qsize, PyLong_FromUnsignedLongLong(shk_queue_depth(&self->q)))
STATE_FN(queue_empty, PyBool_FromLong(shk_queue_depth(&self->q) == 0))
STATE_FN(queue_full, PyBool_FromLong(shk_queue_is_full(&self->q, 0)))
STATE_FN(queue_close, (shk_queue_close(&self->q), Py_NewRef(Py_None)))
STATE_FN(queue_reopen, (shk_queue_reopen(&self->q), Py_NewRef(Py_None)))

static PyObject *queue_repair(QueueObject *self, PyObject *unused)
{
    if (queue_ready(self) < 0)
        return NULL;
    int r = run_call(self, NULL, NULL, NULL); /* a detach meanwhile waits for it */
    return r < 0 ? shk_py_raise(r, "repair") : PyLong_FromLong(r);
}

static PyObject *queue_detach(QueueObject *self, PyObject *unused)
{
    if (self->zc_live > 0)
        return PyErr_Format(PyExc_BufferError, "detach(): %zd zero-copy block(s) of this "
                            "handle (reservations, received views) are still alive; release "
                            "them first", self->zc_live);
    if (self->opened) {
        self->opened = 0;
        shk_py_aio_closed(self); /* coroutines waiting through this handle: ClosedError */
        if (self->waits)
            shk_py_calls_cancel(self->seg, self); /* they end; the last one releases */
        else
            queue_release(self);
    }
    Py_RETURN_NONE;
}

/* ---- for the asyncio twins (aio.c) ---------------------------------------------------- */

struct shk_queue *shk_py_queue_ref(PyObject *h)
{
    if (!PyObject_TypeCheck(h, QueueType)) {
        PyErr_Format(PyExc_TypeError, "expected a queue handle, not %.100s", Py_TYPE(h)->tp_name);
        return NULL;
    }
    QueueObject *self = (QueueObject *)h;
    return queue_ready(self) < 0 ? NULL : &self->q;
}

int shk_py_queue_record_need(PyObject *item, uint64_t *need)
{
    if (!PyList_Check(item)) {
        Py_buffer b;
        struct shk_qpart part;
        if (get_bytes(item, &b, &part) < 0)
            return -1;
        *need = shk_queue_record_size(&part, 1, SHK_QK_DATA);
        release_bytes(&b, 1);
        return 0;
    }
    Py_ssize_t n = PyList_GET_SIZE(item);
    if (n < 1 || n > SHK_QFRAME_MAX_PARTS) {
        PyErr_Format(PyExc_ValueError, "a framed message has 1 to %d parts, not %zd",
                     SHK_QFRAME_MAX_PARTS, n);
        return -1;
    }
    struct gathered g = {NULL};
    int r = gather(&g, item, "a framed message");
    if (r == 0)
        *need = shk_queue_record_size(g.parts, (int)n, SHK_QK_FRAMED);
    gather_release(&g);
    return r;
}

int shk_py_queue_live(PyObject *h)
{
    QueueObject *self = (QueueObject *)h;
    return self->opened && !self->seg->closed && !self->seg->close_pending;
}

static PyObject *queue_statistics(QueueObject *self, PyObject *unused)
{
    if (queue_ready(self) < 0)
        return NULL;
    struct shk_queue_stats st;
    shk_queue_stats(&self->q, &st);
    return shk_py_fields(&st, shk_queue_stats_fields);
}

/* ---- task accounting ---------------------------------------------------------------- */

/* task_done(count=1): mark the handle's `count` oldest outstanding messages done. */
static PyObject *queue_task_done(QueueObject *self, PyObject *const *args, Py_ssize_t nargs,
                                 PyObject *kwnames)
{
    static const char *const names[] = {"count"};
    PyObject *a[1];
    long long count = 1;
    if (shk_py_parse_args(args, nargs, kwnames, "task_done", names, 1, a) < 0)
        return NULL;
    if (a[0] && (count = PyLong_AsLongLong(a[0])) < 1)
        return PyErr_Occurred() ? NULL : PyErr_Format(PyExc_ValueError, "task_done() count "
                                                      "must be >= 1, not %lld", count);
    if (queue_ready(self) < 0)
        return NULL;
    if ((uint64_t)count > shk_queue_outstanding(&self->q))
        return PyErr_Format(PyExc_ValueError, "task_done() called too many times");
    int r = shk_queue_task_done(&self->q, (uint64_t)count);
    return r ? shk_py_raise(r, "task_done") : Py_NewRef(Py_None);
}

/* join(timeout=None): until every message put is marked done (or released). */
static PyObject *queue_join(QueueObject *self, PyObject *const *args, Py_ssize_t nargs,
                            PyObject *kwnames)
{
    static const char *const names[] = {"timeout"};
    PyObject *a[1];
    uint64_t deadline;
    uint32_t flags;
    if (shk_py_parse_args(args, nargs, kwnames, "join", names, 1, a) < 0 ||
        shk_py_block_timeout(NULL, a[0], &deadline, &flags) < 0 || queue_ready(self) < 0)
        return NULL;
    if (wait_for(self, &shk_queue_join_op, &self->q, deadline, 0) < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* (getters: the getset table casts them) */
STATE_FN(queue_get_unfinished, PyLong_FromUnsignedLongLong(shk_queue_unfinished(&self->q)))
STATE_FN(queue_get_outstanding, PyLong_FromUnsignedLongLong(shk_queue_outstanding(&self->q)))

static PyObject *queue_get_delivery(QueueObject *self, void *c)
{
    return PyUnicode_FromString(self->q.ack ? "at-least-once" : "at-most-once");
}

static PyObject *queue_get_mode_recorded(QueueObject *self, void *c)
{
    int mode = shk_queue_mode(&self->q);
    if (mode == SHK_QMODE_ANY)
        Py_RETURN_NONE;
    return PyUnicode_FromString(mode == SHK_QMODE_OBJECTS ? "objects" : "bytes");
}

static PyObject *queue_debug_die(QueueObject *self, PyObject *arg)
{
    long where = PyLong_AsLong(arg);
    if (where == -1 && PyErr_Occurred())
        return NULL;
    shk_queue_debug_die((int)where);
    Py_RETURN_NONE;
}

/* ---- zero-copy ------------------------------------------------------------------- */

static PyObject *queue_reserve(QueueObject *self, PyObject *const *args, Py_ssize_t nargs,
                               PyObject *kwnames)
{
    static const char *const names[] = {"nbytes", "block", "timeout"};
    PyObject *a[3];
    uint64_t deadline;
    uint32_t flags;
    if (shk_py_parse_args(args, nargs, kwnames, "reserve", names, 3, a) < 0 ||
        shk_py_block_timeout(a[1], a[2], &deadline, &flags) < 0)
        return NULL;
    if (!a[0])
        return PyErr_Format(PyExc_TypeError, "reserve() missing required argument 'nbytes'");
    Py_ssize_t n = PyLong_AsSsize_t(a[0]);
    if (n <= 0)
        return PyErr_Occurred() ? NULL : PyErr_Format(PyExc_ValueError, "reserve() size must "
                                                      "be > 0, not %zd", n);
    if (queue_ready(self) < 0)
        return NULL;
    /* (its wait reserves, with the GIL released: reserving may grow the zone) */
    struct shk_queue_waiter qw = {.q = &self->q, .what = SHK_QW_RESV, .len = (uint64_t)n};
    if (wait_for(self, &shk_queue_reserve_op, &qw, deadline, flags) < 0)
        return NULL;
    ReservationObject *res = PyObject_New(ReservationObject, ReservationType);
    if (!res) {
        shk_queue_release_ref(&self->q, qw.index, qw.gen);
        return NULL;
    }
    res->queue = (QueueObject *)Py_NewRef(self);
    res->ptr = qw.ptr;
    res->len = n;
    res->index = qw.index;
    res->gen = qw.gen;
    res->state = 0;
    res->exports = 0;
    self->zc_live++;
    shk_segment_export(self->seg);
    return (PyObject *)res;
}

static int resv_getbuffer(ReservationObject *r, Py_buffer *view, int flags)
{
    if (r->state != 0) {
        PyErr_SetString(PyExc_BufferError, r->state == 1 ? "reservation was committed: its "
                        "memory belongs to the consumer now" : "reservation was released");
        return -1;
    }
    if (PyBuffer_FillInfo(view, (PyObject *)r, r->ptr, r->len, 0, flags) < 0)
        return -1;
    r->exports++;
    return 0;
}

static void resv_releasebuffer(ReservationObject *r, Py_buffer *view)
{
    r->exports--;
}

static PyObject *resv_commit(ReservationObject *r, PyObject *const *args, Py_ssize_t nargs,
                             PyObject *kwnames)
{
    static const char *const names[] = {"block", "timeout"};
    PyObject *a[2];
    uint64_t deadline;
    uint32_t flags;
    if (shk_py_parse_args(args, nargs, kwnames, "commit", names, 2, a) < 0 ||
        shk_py_block_timeout(a[0], a[1], &deadline, &flags) < 0)
        return NULL;
    if (r->state != 0)
        return PyErr_Format(shk_py_exc("ClosedError"), "reservation was already %s",
                            r->state == 1 ? "committed" : "released");
    /* Views of the block may still exist (NumPy's ndarray(buffer=...) keeps the object,
     * not an export, so they cannot all be counted): after commit the memory belongs to
     * the consumer and the producer must not touch it.  New views are refused. */
    QueueObject *self = r->queue;
    if (queue_ready(self) < 0)
        return NULL;
    struct shk_queue_waiter qw = {.q = &self->q, .what = SHK_QW_SPACE,
                                  .need = shk_queue_record_size(NULL, 0, SHK_QK_REF)};
    int e;
    while ((e = shk_queue_commit_ref(&self->q, r->index, r->gen)) == SHK_EFULLQ)
        if (wait_for(self, &shk_queue_wait_op, &qw, deadline, flags) < 0)
            return NULL;
    if (e)
        return shk_py_raise(e, "commit");
    r->state = 1;
    Py_RETURN_NONE;
}

/* release() and leaving the with block without commit() give the memory back */
static int resv_give_back(ReservationObject *r)
{
    if (r->state != 0 || r->exports > 0)
        return r->state == 0;
    r->state = 2;
    if (r->queue->opened)
        shk_queue_release_ref(&r->queue->q, r->index, r->gen);
    return 0;
}

static PyObject *resv_release(ReservationObject *r, PyObject *unused)
{
    if (resv_give_back(r))
        return PyErr_Format(PyExc_BufferError, "release(): %zd view(s) of the reservation "
                            "are still alive", r->exports);
    Py_RETURN_NONE;
}

static PyObject *resv_enter(ReservationObject *r, PyObject *unused)
{
    return Py_NewRef(r);
}

static PyObject *resv_exit(ReservationObject *r, PyObject *args)
{
    resv_give_back(r);
    Py_RETURN_FALSE;
}

static void resv_dealloc(ReservationObject *r)
{
    r->queue->zc_live--;
    if (r->state == 0 && r->queue->opened)
        shk_queue_release_ref(&r->queue->q, r->index, r->gen);
    shk_segment_unexport(r->queue->seg);
    Py_DECREF(r->queue);
    shk_py_free(r);
}

static PyObject *resv_get_state(ReservationObject *r, void *c)
{
    static const char *names[] = {"reserved", "committed", "released"};
    return PyUnicode_FromString(names[r->state]);
}

static PyMethodDef resv_methods[] = {
    {"commit", (PyCFunction)(void (*)(void))resv_commit, METH_FASTCALL | METH_KEYWORDS,
     "commit(block=True, timeout=None)\n--\n\nEnqueue the block: the consumer receives a "
     "view of this very memory.  From then on it is the consumer's: do not write through "
     "views taken before (new ones are refused)."},
    {"release", (PyCFunction)resv_release, METH_NOARGS,
     "release()\n--\n\nGive the block back to the zone without sending it."},
    {"__enter__", (PyCFunction)resv_enter, METH_NOARGS, NULL},
    {"__exit__", (PyCFunction)resv_exit, METH_VARARGS, NULL},
    {NULL},
};

static PyGetSetDef resv_getset[] = {
    {"state", (getter)resv_get_state, NULL, "'reserved', 'committed' or 'released'", NULL},
    {NULL},
};

static PyMemberDef resv_members[] = {
    {"nbytes", T_PYSSIZET, offsetof(ReservationObject, len), READONLY,
     "size of the block in bytes"},
    {NULL},
};

static PyType_Slot resv_slots[] = {
    {Py_tp_dealloc, resv_dealloc},
    {Py_tp_methods, resv_methods},
    {Py_tp_getset, resv_getset},
    {Py_tp_members, resv_members},
    {Py_tp_doc, "A writable block of zone memory reserved for one zero-copy message.\n\n"
                "Fill it through the buffer protocol (memoryview, NumPy), release those "
                "views, then commit().  Dropped without commit, it goes back to the zone."},
    {Py_bf_getbuffer, resv_getbuffer},
    {Py_bf_releasebuffer, resv_releasebuffer},
    {0, NULL},
};

/* ---- type --------------------------------------------------------------------------- */

static PyObject *queue_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"zone", "name", "capacity", "max_messages", "create", "exclusive",
                             "delivery", "mode", NULL};
    PyObject *zobj;
    const char *name;
    unsigned long long capacity = 0, max_messages = 0;
    int create = 1, exclusive = 0, delivery = SHK_QDELIVERY_ANY, mode = SHK_QMODE_ANY;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O!s|KKppii:Queue", kwlist, shk_ZoneType, &zobj,
                                     &name, &capacity, &max_messages, &create, &exclusive,
                                     &delivery, &mode))
        return NULL;
    ZoneObject *zone = (ZoneObject *)zobj;
    if (shk_zone_check_open(zone) < 0)
        return NULL;
    QueueObject *self = (QueueObject *)type->tp_alloc(type, 0);
    if (!self)
        return NULL;
    int flags = (create ? SHK_O_CREATE : 0) | (exclusive ? SHK_O_EXCL : 0);
    int created = 0, r;
    Py_BEGIN_ALLOW_THREADS
    r = shk_queue_open_mode(&zone->zone, name, capacity, max_messages, delivery, mode, flags,
                            &self->q, &created);
    Py_END_ALLOW_THREADS
    if (r) {
        Py_DECREF(self);
        return shk_py_raise(r, "queue open");
    }
    shk_py_handle_attach(self, zone); /* the mapping stays while this handle is attached */
    self->opened = 1;
    return (PyObject *)self;
}

static void queue_dealloc(QueueObject *self)
{
    PyObject_GC_UnTrack(self);
    if (self->weakreflist)
        PyObject_ClearWeakRefs((PyObject *)self);
    self->opened = 0;
    queue_release(self);
    Py_CLEAR(self->recv_buf);
    shk_py_handle_free(self);
}

static int queue_traverse(QueueObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->zone);
    Py_VISIT(self->seg);
    Py_VISIT(self->recv_buf);
    return 0;
}

static PyObject *queue_get_max_message_size(QueueObject *self, void *c)
{
    return PyLong_FromUnsignedLongLong(shk_queue_max_payload(&self->q));
}
static PyObject *queue_get_closed(QueueObject *self, void *c)
{
    if (!queue_ready_fast(self) && (!self->opened || shk_zone_check_open(self->zone) < 0)) {
        PyErr_Clear();
        Py_RETURN_TRUE;
    }
    return PyBool_FromLong(shk_queue_is_closed(&self->q));
}
static PyObject *queue_get_spin(QueueObject *self, void *c)
{
    return PyFloat_FromDouble((double)self->q.spin_ns / 1e9);
}
static int queue_set_spin(QueueObject *self, PyObject *v, void *c)
{
    double s = v ? PyFloat_AsDouble(v) : -1;
    if (s == -1.0 && PyErr_Occurred())
        return -1;
    if (!(s >= 0 && s <= 10)) {
        PyErr_SetString(PyExc_ValueError, "spin must be a number of seconds in [0, 10]");
        return -1;
    }
    shk_queue_set_spin(&self->q, (uint64_t)(s * 1e9));
    return 0;
}
static PyObject *queue_get_detached(QueueObject *self, void *c)
{
    return PyBool_FromLong(!self->opened);
}

static PyGetSetDef queue_getset[] = {
    {"max_message_size", (getter)queue_get_max_message_size, NULL,
     "largest message that can ever fit, in bytes", NULL},
    {"closed", (getter)queue_get_closed, NULL, "True after close() (by any process)", NULL},
    {"spin", (getter)queue_get_spin, (setter)queue_set_spin,
     "seconds a blocked call spins before it sleeps (adaptive below this bound)", NULL},
    {"detached", (getter)queue_get_detached, NULL, "True after detach()", NULL},
    {"unfinished_tasks", (getter)queue_get_unfinished, NULL,
     "messages put and not yet marked done by task_done() (all processes)", NULL},
    {"outstanding_tasks", (getter)queue_get_outstanding, NULL,
     "messages this handle took and has not yet marked done", NULL},
    {"delivery", (getter)queue_get_delivery, NULL,
     "'at-most-once' or 'at-least-once', fixed when the queue was created", NULL},
    {"_mode_recorded", (getter)queue_get_mode_recorded, NULL,
     "'bytes' or 'objects' as recorded at creation; None for a queue that recorded none", NULL},
    {NULL},
};

#define FASTKW (METH_FASTCALL | METH_KEYWORDS)
static PyMethodDef queue_methods[] = {
    {"put", (PyCFunction)(void (*)(void))queue_put, FASTKW,
     "put(item, block=True, timeout=None)\n--\n\nPut a bytes-like item.  Blocks while the "
     "queue is full (up to timeout seconds), then raises QueueFull."},
    {"put_nowait", (PyCFunction)queue_put_nowait, METH_O,
     "put_nowait(item)\n--\n\nput(item, block=False)."},
    {"get", (PyCFunction)(void (*)(void))queue_get, FASTKW,
     "get(block=True, timeout=None, *, view=False)\n--\n\nRemove and return the oldest "
     "message (bytes; with view=True a memoryview of this handle's receive buffer, reused "
     "once every view of it is released: no allocation for large messages).  Blocks while "
     "empty, then raises QueueEmpty; ClosedError once closed and drained."},
    {"get_nowait", (PyCFunction)queue_get_nowait, METH_NOARGS,
     "get_nowait()\n--\n\nget(block=False)."},
    {"put_many", (PyCFunction)(void (*)(void))queue_put_many, FASTKW,
     "put_many(items, block=True, timeout=None)\n--\n\nPut every item in order with as few "
     "claims as possible.  Returns how many were put."},
    {"get_many", (PyCFunction)(void (*)(void))queue_get_many, FASTKW,
     "get_many(max_messages=1024, max_bytes=None, block=True, timeout=None)\n--\n\nRemove "
     "and return up to max_messages messages (at least one; when blocking, waits for it)."},
    {"_put_parts", (PyCFunction)(void (*)(void))queue_put_parts, FASTKW,
     "_put_parts(parts, block=True, timeout=None)\n--\n\nOne message made of several "
     "buffers, each written straight into the ring (objects mode)."},
    {"qsize", (PyCFunction)queue_qsize, METH_NOARGS, "qsize()\n--\n\nMessages in the queue."},
    {"empty", (PyCFunction)queue_empty, METH_NOARGS, "empty()\n--\n\nqsize() == 0."},
    {"full", (PyCFunction)queue_full, METH_NOARGS,
     "full()\n--\n\nTrue if not even an empty message would fit now."},
    {"close", (PyCFunction)queue_close, METH_NOARGS,
     "close()\n--\n\nClose the queue for every process: put() fails at once, get() drains "
     "what is left, then raises ClosedError."},
    {"reopen", (PyCFunction)queue_reopen, METH_NOARGS, "reopen()\n--\n\nUndo close()."},
    {"repair", (PyCFunction)queue_repair, METH_NOARGS,
     "repair()\n--\n\nRepair now what dead processes left behind (waiters do it too). "
     "Returns the number of repairs."},
    {"detach", (PyCFunction)queue_detach, METH_NOARGS,
     "detach()\n--\n\nGive this handle's member slot back; the handle is unusable after."},
    {"statistics", (PyCFunction)queue_statistics, METH_NOARGS,
     "statistics()\n--\n\nCounters as a dict."},
    {"reserve", (PyCFunction)(void (*)(void))queue_reserve, FASTKW,
     "reserve(nbytes, block=True, timeout=None)\n--\n\nA writable zone block for a zero-copy "
     "message (a Reservation).  At most 64 are alive per queue: when all are, blocks until a "
     "consumer releases one (QueueFull after the timeout)."},
    {"task_done", (PyCFunction)(void (*)(void))queue_task_done, FASTKW,
     "task_done($self, /, count=1)\n--\n\nMark the oldest message this handle took (count: that many) "
     "as done.  ValueError when it holds fewer.  With at-least-once delivery this "
     "acknowledges it: it is never delivered again."},
    {"join", (PyCFunction)(void (*)(void))queue_join, FASTKW,
     "join($self, /, timeout=None)\n--\n\nBlock until every message put (by any process) is marked "
     "done, or released with a dead consumer.  ShmkitTimeoutError after timeout seconds."},
    {"_debug_die", (PyCFunction)queue_debug_die, METH_O,
     "_debug_die(where)\n--\n\nTest hook: SIGKILL this process at a chosen point."},
    {NULL},
};

static PyMemberDef queue_members[] = {
    {"__weaklistoffset__", T_PYSSIZET, offsetof(QueueObject, weakreflist), READONLY},
    {"capacity", T_ULONGLONG, offsetof(QueueObject, q.cap), READONLY,
     "ring size in bytes (a power of two)"},
    {"max_messages", T_ULONGLONG, offsetof(QueueObject, q.max_messages), READONLY,
     "message limit (0: none)"},
    {NULL},
};

static PyType_Slot queue_slots[] = {
    {Py_tp_new, queue_new},
    {Py_tp_dealloc, queue_dealloc},
    {Py_tp_traverse, queue_traverse},
    {Py_tp_methods, queue_methods},
    {Py_tp_getset, queue_getset},
    {Py_tp_members, queue_members},
    {Py_tp_doc, "Queue(zone, name, capacity=0, max_messages=0, create=True, exclusive=False, "
                "delivery=0, mode=0)"
                "\n--\n\nA queue in a zone (internal; use shmkit.Queue)."},
    {0, NULL},
};

int shk_init_queue(PyObject *m)
{
    PyType_Spec spec = {"shmkit._core.Queue", sizeof(QueueObject), 0,
                        Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC, queue_slots};
    QueueType = (PyTypeObject *)PyType_FromSpec(&spec);
    if (!QueueType)
        return -1;
    if (PyModule_AddObjectRef(m, "Queue", (PyObject *)QueueType) < 0)
        return -1;
    PyType_Spec rspec = {"shmkit._core.Reservation", sizeof(ReservationObject), 0,
                         Py_TPFLAGS_DEFAULT, resv_slots};
    ReservationType = (PyTypeObject *)PyType_FromSpec(&rspec);
    if (!ReservationType)
        return -1;
    if (PyModule_AddObjectRef(m, "Reservation", (PyObject *)ReservationType) < 0)
        return -1;
    static const struct shk_py_int ints[] = {
        {"QDIE_AFTER_CLAIM", SHK_QDIE_AFTER_CLAIM}, {"QDIE_MID_COPY", SHK_QDIE_MID_COPY},
        {"QDIE_AFTER_TAKE", SHK_QDIE_AFTER_TAKE}, {"QDIE_AFTER_RESERVE", SHK_QDIE_AFTER_RESERVE},
        {"QDIE_COPIED", SHK_QDIE_COPIED}, {"QDIE_ACK_TAKEN", SHK_QDIE_ACK_TAKEN},
        {"QDIE_ACK_DONE", SHK_QDIE_ACK_DONE}, {"QDIE_REDELIVER", SHK_QDIE_REDELIVER},
        {"QUEUE_RESERVATIONS", SHK_QUEUE_RESV}, {NULL}};
    return shk_py_add_ints(m, ints);
}
