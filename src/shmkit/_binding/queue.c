/*
 * queue.c (binding) - shmkit._core.Queue and shmkit._core.Reservation.
 *
 * Hot paths (put, get, put_nowait, get_nowait, put_many, get_many) are METH_FASTCALL and
 * parse keywords only when some are given.  They keep the GIL for the non-blocking
 * attempt and release it only to wait (spin, then futex), in the PEP 475 loop: a signal
 * runs its Python handler and, if that raises (Ctrl-C), the wait ends with it.
 * Errors become exceptions in shk_py_raise only.
 */
#include "binding.h"

#include <errno.h>
#include <structmember.h>

#include "queue.h"

typedef struct {
    PyObject_HEAD
    ZoneObject *zone;           /* strong: keeps the mapping alive */
    struct shk_queue q;
    int opened;
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

static int queue_ready(QueueObject *self)
{
    if (!self->opened) {
        PyErr_SetString(shk_py_exc("ClosedError"), "queue handle is detached");
        return -1;
    }
    if (shk_zone_check_open(self->zone) < 0)
        return -1;
    int r = shk_queue_ensure(&self->q);
    if (r) {
        shk_py_raise(r, "queue register");
        return -1;
    }
    return 0;
}

/* The hot paths' check: the handle, its zone and its member slot are all usable. */
static inline int queue_ready_fast(QueueObject *self)
{
    SegmentObject *seg = self->opened ? self->zone->segment : NULL;
    return seg && !seg->closed && !seg->close_pending && self->zone->zone.base &&
           self->q.slot != SHK_QNOSLOT && self->q.fork_gen == shk_queue_fork_gen();
}

static PyObject *raise_empty(const char *msg)
{
    PyErr_SetString(shk_py_exc("QueueEmpty"), msg);
    return NULL;
}

static PyObject *raise_full(const char *msg)
{
    PyErr_SetString(shk_py_exc("QueueFull"), msg);
    return NULL;
}

/* Parse (block=True, timeout=None[, view=False]) from fastcall args starting at `first`. */
static int parse_block_timeout(PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
                               Py_ssize_t first, int *block, struct timespec *dl, int *has_dl,
                               int *view, const char *fname)
{
    PyObject *blk = NULL, *tmo = NULL, *vw = NULL;
    Py_ssize_t maxpos = first + 2;
    if (nargs > maxpos) {
        PyErr_Format(PyExc_TypeError, "%s() takes at most %zd positional arguments (%zd given)",
                     fname, maxpos, nargs);
        return -1;
    }
    if (nargs > first)
        blk = args[first];
    if (nargs > first + 1)
        tmo = args[first + 1];
    if (kwnames) {
        Py_ssize_t nk = PyTuple_GET_SIZE(kwnames);
        for (Py_ssize_t i = 0; i < nk; i++) {
            PyObject *k = PyTuple_GET_ITEM(kwnames, i);
            PyObject *v = args[nargs + i];
            if (PyUnicode_CompareWithASCIIString(k, "block") == 0 && !blk)
                blk = v;
            else if (PyUnicode_CompareWithASCIIString(k, "timeout") == 0 && !tmo)
                tmo = v;
            else if (view && PyUnicode_CompareWithASCIIString(k, "view") == 0)
                vw = v;
            else {
                PyErr_Format(PyExc_TypeError, "%s() got an unexpected or repeated keyword "
                             "argument '%U'", fname, k);
                return -1;
            }
        }
    }
    *block = 1;
    if (blk && (*block = PyObject_IsTrue(blk)) < 0)
        return -1;
    if (view) {
        *view = 0;
        if (vw && (*view = PyObject_IsTrue(vw)) < 0)
            return -1;
    }
    *has_dl = 0;
    if (tmo && tmo != Py_None) {
        double t = PyFloat_AsDouble(tmo);
        if (t == -1.0 && PyErr_Occurred())
            return -1;
        if (t < 0 || t != t) {
            PyErr_SetString(PyExc_ValueError, "'timeout' must be a non-negative number");
            return -1;
        }
        if (*block) {
            shk_deadline_after(dl, t);
            *has_dl = 1;
        }
    }
    return 0;
}

/* Wait for data or space with the GIL released.  0: try again; 1: timed out; -1: a
 * signal handler raised. */
static int wait_released(QueueObject *self, int what, uint64_t need, struct timespec *dl,
                         int has_dl)
{
    int r;
    /* the other side is often a few hundred ns away: look again for ~2 us with the GIL
     * held before paying for releasing and taking it back */
    if (self->q.spin_ns && !self->q.contended && shk_queue_poll(&self->q, what, need, 100))
        return 0;
    Py_BEGIN_ALLOW_THREADS
    r = shk_queue_wait(&self->q, what, need, has_dl ? dl : NULL);
    Py_END_ALLOW_THREADS
    /* every round, not only on EINTR: a signal that arrived while we spun interrupted
     * no system call, and its Python handler must still run (Ctrl-C) */
    if (PyErr_CheckSignals() < 0)
        return -1;
    if (r == ETIMEDOUT)
        return 1;
    return 0;
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

/* ---- put ---------------------------------------------------------------------------- */

static PyObject *do_put(QueueObject *self, const struct shk_qpart *parts, int nparts,
                        uint32_t kind, int block, struct timespec *dl, int has_dl)
{
    for (;;) {
        int r = shk_queue_put(&self->q, parts, nparts, kind);
        if (r == 0)
            Py_RETURN_NONE;
        if (r != SHK_EFULLQ)
            return shk_py_raise(r, "put");
        if (!block)
            return raise_full("queue is full");
        uint64_t len = 0;
        for (int i = 0; i < nparts; i++)
            len += parts[i].n;
        int w = wait_released(self, SHK_QW_SPACE, shk_qrec_size(len + 64 * nparts), dl, has_dl);
        if (w < 0)
            return NULL;
        if (w > 0) {
            r = shk_queue_put(&self->q, parts, nparts, kind);
            if (r == 0)
                Py_RETURN_NONE;
            return r == SHK_EFULLQ ? raise_full("queue is full (timed out)") : shk_py_raise(r, "put");
        }
    }
}

static PyObject *queue_put(QueueObject *self, PyObject *const *args, Py_ssize_t nargs,
                           PyObject *kwnames)
{
    int block = 1, has_dl = 0;
    struct timespec dl;
    /* the common call: put(bytes), room in the ring */
    if (nargs == 1 && !kwnames && PyBytes_CheckExact(args[0]) && queue_ready_fast(self) &&
        shk_queue_put1(&self->q, PyBytes_AS_STRING(args[0]),
                       (uint64_t)PyBytes_GET_SIZE(args[0])) == 0)
        Py_RETURN_NONE;
    if (nargs < 1) {
        PyErr_SetString(PyExc_TypeError, "put() missing required argument 'item'");
        return NULL;
    }
    if ((nargs > 1 || kwnames) &&
        parse_block_timeout(args, nargs, kwnames, 1, &block, &dl, &has_dl, NULL, "put") < 0)
        return NULL;
    if (queue_ready(self) < 0)
        return NULL;
    Py_buffer b;
    struct shk_qpart part;
    if (get_bytes(args[0], &b, &part) < 0)
        return NULL;
    PyObject *res = do_put(self, &part, 1, SHK_QK_DATA, block, &dl, has_dl);
    if (b.obj)
        PyBuffer_Release(&b);
    return res;
}

static PyObject *queue_put_nowait(QueueObject *self, PyObject *item)
{
    if (PyBytes_CheckExact(item) && queue_ready_fast(self) &&
        shk_queue_put1(&self->q, PyBytes_AS_STRING(item), (uint64_t)PyBytes_GET_SIZE(item)) == 0)
        Py_RETURN_NONE;
    if (queue_ready(self) < 0)
        return NULL;
    Py_buffer b;
    struct shk_qpart part;
    if (get_bytes(item, &b, &part) < 0)
        return NULL;
    PyObject *res = do_put(self, &part, 1, SHK_QK_DATA, 0, NULL, 0);
    if (b.obj)
        PyBuffer_Release(&b);
    return res;
}

/* _put_parts(parts, block=True, timeout=None): one FRAMED message (objects mode). */
static PyObject *queue_put_parts(QueueObject *self, PyObject *const *args, Py_ssize_t nargs,
                                 PyObject *kwnames)
{
    int block = 1, has_dl = 0;
    struct timespec dl;
    if (nargs < 1 || !PyList_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "_put_parts() needs a list of buffers");
        return NULL;
    }
    if (parse_block_timeout(args, nargs, kwnames, 1, &block, &dl, &has_dl, NULL, "_put_parts") < 0)
        return NULL;
    if (queue_ready(self) < 0)
        return NULL;
    PyObject *list = args[0];
    Py_ssize_t n = PyList_GET_SIZE(list);
    if (n < 1 || n > 4096) {
        PyErr_SetString(PyExc_ValueError, "_put_parts(): 1 to 4096 parts");
        return NULL;
    }
    Py_buffer *bufs = PyMem_Calloc((size_t)n, sizeof *bufs);
    struct shk_qpart *parts = PyMem_Calloc((size_t)n, sizeof *parts);
    PyObject *res = NULL;
    Py_ssize_t got = 0;
    if (!bufs || !parts) {
        PyErr_NoMemory();
        goto out;
    }
    for (; got < n; got++)
        if (get_bytes(PyList_GET_ITEM(list, got), &bufs[got], &parts[got]) < 0)
            goto out;
    res = do_put(self, parts, (int)n, SHK_QK_FRAMED, block, &dl, has_dl);
out:
    for (Py_ssize_t i = 0; i < got; i++)
        if (bufs[i].obj)
            PyBuffer_Release(&bufs[i]);
    PyMem_Free(bufs);
    PyMem_Free(parts);
    return res;
}

static PyObject *queue_put_many(QueueObject *self, PyObject *const *args, Py_ssize_t nargs,
                                PyObject *kwnames)
{
    int block = 1, has_dl = 0;
    struct timespec dl;
    if (nargs < 1) {
        PyErr_SetString(PyExc_TypeError, "put_many() missing required argument 'items'");
        return NULL;
    }
    if ((nargs > 1 || kwnames) &&
        parse_block_timeout(args, nargs, kwnames, 1, &block, &dl, &has_dl, NULL, "put_many") < 0)
        return NULL;
    if (queue_ready(self) < 0)
        return NULL;
    PyObject *seq = PySequence_Fast(args[0], "put_many() needs an iterable of bytes-like objects");
    if (!seq)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    PyObject **items = PySequence_Fast_ITEMS(seq);
    struct shk_qpart stack_parts[64];
    Py_buffer stack_bufs[64];
    struct shk_qpart *parts = stack_parts;
    Py_buffer *bufs = stack_bufs;
    PyObject *res = NULL;
    Py_ssize_t got = 0;
    if (n > 64) {
        parts = PyMem_Malloc((size_t)n * sizeof *parts);
        bufs = PyMem_Malloc((size_t)n * sizeof *bufs);
        if (!parts || !bufs) {
            PyErr_NoMemory();
            goto out;
        }
    }
    for (; got < n; got++)
        if (get_bytes(items[got], &bufs[got], &parts[got]) < 0)
            goto out;
    /* all or nothing for messages that can never fit: none is put */
    for (Py_ssize_t i = 0; i < n; i++)
        if (parts[i].n > shk_queue_max_payload(&self->q)) {
            PyErr_Format(shk_py_exc("TooLargeError"), "put_many(): item %zd of %llu bytes can "
                         "never fit in a queue of %llu bytes (at most %llu per message); "
                         "nothing was put", i, (unsigned long long)parts[i].n,
                         (unsigned long long)self->q.cap,
                         (unsigned long long)shk_queue_max_payload(&self->q));
            goto out;
        }
    size_t total = 0;
    while ((Py_ssize_t)total < n) {
        size_t done = 0;
        int r = shk_queue_put_many(&self->q, parts + total, (size_t)n - total, &done);
        total += done;
        if ((Py_ssize_t)total == n)
            break;
        if (r && r != SHK_EFULLQ) {
            shk_py_raise(r, "put_many");
            goto out;
        }
        if (done)
            continue;
        if (!block) {
            if (total)
                break;
            raise_full("queue is full");
            goto out;
        }
        int w = wait_released(self, SHK_QW_SPACE, shk_qrec_size(parts[total].n), &dl, has_dl);
        if (w < 0)
            goto out;
        if (w > 0) {
            PyErr_Format(shk_py_exc("QueueFull"), "queue is full (timed out after putting %zu "
                         "of %zd items)", total, n);
            goto out;
        }
    }
    res = PyLong_FromSize_t(total);
out:
    for (Py_ssize_t i = 0; i < got; i++)
        if (bufs[i].obj)
            PyBuffer_Release(&bufs[i]);
    if (parts != stack_parts)
        PyMem_Free(parts);
    if (bufs != stack_bufs)
        PyMem_Free(bufs);
    Py_DECREF(seq);
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

/* A copy of a DATA payload: bytes, or (view) a memoryview of the reused receive buffer. */
static PyObject *copy_data(QueueObject *self, const struct shk_qmsg *m, int view)
{
    if (!view) {
        PyObject *b = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)m->len);
        if (b)
            shk_queue_read(&self->q, m->pos, 0, PyBytes_AS_STRING(b), m->len);
        return b;
    }
    /* reuse the receive buffer when the caller let go of every view of it: large messages
     * then cost no allocation (and no page faults) at all */
    PyObject *ba = self->recv_buf;
    if (ba && (Py_REFCNT(ba) != 1 || ((PyByteArrayObject *)ba)->ob_exports != 0)) {
        Py_CLEAR(self->recv_buf);
        ba = NULL;
    }
    if (ba && PyByteArray_Resize(ba, (Py_ssize_t)m->len) < 0)
        return NULL;
    if (!ba) {
        ba = PyByteArray_FromStringAndSize(NULL, (Py_ssize_t)m->len);
        if (!ba)
            return NULL;
        self->recv_buf = ba;
    }
    shk_queue_read(&self->q, m->pos, 0, PyByteArray_AS_STRING(ba), m->len);
    return PyMemoryView_FromObject(ba);
}

/* A FRAMED payload, copied as one bytearray (the parts are cut by framed_parts).  No
 * judgement of its contents here: a copy made before the take may come from a header
 * read torn, and is only known good once the take succeeds. */
static PyObject *copy_framed(QueueObject *self, const struct shk_qmsg *m)
{
    PyObject *ba = PyByteArray_FromStringAndSize(NULL, (Py_ssize_t)m->len);
    if (ba)
        shk_queue_read(&self->q, m->pos, 0, PyByteArray_AS_STRING(ba), m->len);
    return ba;
}

/* The tuple of memoryviews onto the parts of a copied FRAMED payload (steals ba). */
static PyObject *framed_parts(PyObject *ba)
{
    char *base = PyByteArray_AS_STRING(ba);
    uint64_t len = (uint64_t)PyByteArray_GET_SIZE(ba);
    if (len < 8) {
        Py_DECREF(ba);
        return shk_py_raise(SHK_ECORRUPT, "get: framed message too short");
    }
    uint32_t head[2];
    memcpy(head, base, 8);
    uint64_t nparts = head[0];
    if (nparts == 0 || nparts > 4096 || 8 + 8 * nparts > len) {
        Py_DECREF(ba);
        return shk_py_raise(SHK_ECORRUPT, "get: framed message with a bad part count");
    }
    PyObject *mv = PyMemoryView_FromObject(ba);
    Py_DECREF(ba);
    if (!mv)
        return NULL;
    PyObject *tup = PyTuple_New((Py_ssize_t)nparts);
    uint64_t o = 8 + 8 * nparts;
    for (uint64_t i = 0; tup && i < nparts; i++) {
        uint64_t n;
        memcpy(&n, base + 8 + 8 * i, 8);
        o = (o + SHK_QFRAME_ALIGN - 1) & ~(uint64_t)(SHK_QFRAME_ALIGN - 1);
        if (o + n > len || o + n < o) {
            Py_CLEAR(tup);
            shk_py_raise(SHK_ECORRUPT, "get: framed message part out of bounds");
            break;
        }
        PyObject *part = PySequence_GetSlice(mv, (Py_ssize_t)o, (Py_ssize_t)(o + n));
        if (!part) {
            Py_CLEAR(tup);
            break;
        }
        PyTuple_SET_ITEM(tup, (Py_ssize_t)i, part);
        o += n;
    }
    Py_DECREF(mv);
    return tup;
}

/* A copy of a DATA or FRAMED message (before or after it is taken). */
static inline PyObject *copy_message(QueueObject *self, const struct shk_qmsg *m, int view)
{
    return m->kind == SHK_QK_DATA ? copy_data(self, m, view) : copy_framed(self, m);
}

/* What get returns for a copied message (steals raw). */
static inline PyObject *finish_message(const struct shk_qmsg *m, PyObject *raw)
{
    return m->kind == SHK_QK_FRAMED ? framed_parts(raw) : raw;
}

/* The Python object for one message taken claim-first (the caller gives the range back). */
static PyObject *message_object(QueueObject *self, const struct shk_qmsg *m, int view)
{
    if (m->kind == SHK_QK_REF) {
        uint32_t idx, gen;
        void *ptr;
        uint64_t len;
        int r = shk_queue_accept_ref(&self->q, m, &idx, &gen, &ptr, &len);
        if (r)
            return shk_py_raise(r, "get");
        PyObject *region = shk_region_new_with_release(
            self->zone->segment, ptr, (Py_ssize_t)len, 0, (PyObject *)self, ref_release,
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
    PyObject *raw = copy_message(self, m, view);
    return raw ? finish_message(m, raw) : NULL;
}

/* Messages up to this size are copied out before they are taken (see shk_queue_peek);
 * larger ones are taken first, so that consumers racing for them never copy in vain. */
#define COPY_FIRST_MAX (64u << 10)
/* ... and a get_many copies at most this much before taking (the first message counts) */
#define COPY_FIRST_BATCH (256u << 10)

/* One attempt at get: the object, or NULL with an exception, or NULL without one when
 * there is nothing (*r says why: SHK_EEMPTY, or another code already raised). */
static PyObject *try_get(QueueObject *self, int view, int *r)
{
    for (;;) {
        struct shk_qmsg m;
        struct shk_qpeek pk;
        *r = shk_queue_peek(&self->q, &m, 1, UINT64_MAX, &pk);
        if (*r) {
            if (*r != SHK_EEMPTY)
                shk_py_raise(*r, "get");
            return NULL;
        }
        if (pk.direct && pk.n == 1 && m.kind != SHK_QK_REF && m.len <= COPY_FIRST_MAX) {
            /* copy first, then take: one CAS takes it and gives the space back */
            PyObject *raw = copy_message(self, &m, view);
            if (!raw) {
                *r = -1;
                return NULL;
            }
            if (shk_queue_take_peeked(&self->q, &pk) == 0)
                return finish_message(&m, raw);
            Py_DECREF(raw); /* another consumer took it first */
            continue;
        }
        struct shk_qtake t;
        *r = shk_queue_take(&self->q, &m, 1, UINT64_MAX, &t);
        if (*r == SHK_EEMPTY)
            continue; /* taken by another consumer meanwhile: look again */
        if (*r) {
            shk_py_raise(*r, "get");
            return NULL;
        }
        PyObject *o = message_object(self, &m, view);
        shk_queue_finish(&self->q, &t);
        if (!o)
            *r = -1;
        return o;
    }
}

static PyObject *do_get(QueueObject *self, int block, struct timespec *dl, int has_dl, int view)
{
    for (;;) {
        int r;
        PyObject *o = try_get(self, view, &r);
        if (o || r != SHK_EEMPTY)
            return o;
        if (!block)
            return raise_empty("queue is empty");
        int w = wait_released(self, SHK_QW_DATA, 0, dl, has_dl);
        if (w < 0)
            return NULL;
        if (w > 0) {
            o = try_get(self, view, &r);
            if (o || r != SHK_EEMPTY)
                return o;
            return raise_empty("queue is empty (timed out)");
        }
    }
}

static PyObject *queue_get(QueueObject *self, PyObject *const *args, Py_ssize_t nargs,
                           PyObject *kwnames)
{
    int block = 1, has_dl = 0, view = 0;
    struct timespec dl;
    if (nargs == 0 && !kwnames && queue_ready_fast(self)) {
        /* the common call: get(), a message waiting */
        int r;
        PyObject *o = try_get(self, 0, &r);
        if (o || r != SHK_EEMPTY)
            return o;
        return do_get(self, 1, &dl, 0, 0);
    }
    if ((nargs || kwnames) &&
        parse_block_timeout(args, nargs, kwnames, 0, &block, &dl, &has_dl, &view, "get") < 0)
        return NULL;
    if (queue_ready(self) < 0)
        return NULL;
    return do_get(self, block, &dl, has_dl, view);
}

static PyObject *queue_get_nowait(QueueObject *self, PyObject *unused)
{
    if (queue_ready(self) < 0)
        return NULL;
    return do_get(self, 0, NULL, 0, 0);
}

/* One attempt at get_many: a list (possibly empty: nothing there, *r = SHK_EEMPTY), or
 * NULL with an exception. */
static PyObject *try_get_many(QueueObject *self, struct shk_qmsg *msgs, size_t max_msgs,
                              uint64_t max_bytes, int *r)
{
    for (;;) {
        struct shk_qpeek pk;
        uint64_t mb = max_bytes < COPY_FIRST_BATCH ? max_bytes : COPY_FIRST_BATCH;
        *r = shk_queue_peek(&self->q, msgs, max_msgs, mb, &pk);
        if (*r == SHK_EEMPTY)
            return PyList_New(0);
        if (*r)
            return shk_py_raise(*r, "get_many");
        if (pk.direct && pk.n >= 1 && msgs[0].kind != SHK_QK_REF &&
            msgs[0].len <= COPY_FIRST_MAX) {
            /* copy first (peek stopped before any REF), then take them all with one CAS */
            PyObject *list = PyList_New((Py_ssize_t)pk.n);
            if (!list)
                return NULL;
            for (size_t i = 0; i < pk.n; i++) {
                PyObject *raw = copy_message(self, &msgs[i], 0);
                if (!raw) {
                    Py_DECREF(list);
                    return NULL;
                }
                PyList_SET_ITEM(list, (Py_ssize_t)i, raw);
            }
            if (shk_queue_take_peeked(&self->q, &pk) != 0) {
                Py_DECREF(list); /* another consumer took them first */
                continue;
            }
            for (size_t i = 0; i < pk.n; i++) {
                if (msgs[i].kind == SHK_QK_FRAMED) {
                    PyObject **it = &PyList_GET_ITEM(list, (Py_ssize_t)i);
                    PyObject *o = framed_parts(*it);
                    *it = o;
                    if (!o) {
                        *it = Py_NewRef(Py_None);
                        Py_DECREF(list);
                        return NULL;
                    }
                }
            }
            return list;
        }
        struct shk_qtake t;
        *r = shk_queue_take(&self->q, msgs, max_msgs, max_bytes, &t);
        if (*r == SHK_EEMPTY)
            continue;
        if (*r)
            return shk_py_raise(*r, "get_many");
        PyObject *list = PyList_New((Py_ssize_t)t.n);
        for (size_t i = 0; list && i < t.n; i++) {
            PyObject *o = message_object(self, &msgs[i], 0);
            if (!o) {
                Py_CLEAR(list);
                break;
            }
            PyList_SET_ITEM(list, (Py_ssize_t)i, o);
        }
        shk_queue_finish(&self->q, &t);
        return list;
    }
}

/* get_many(max_messages=1024, max_bytes=None, block=True, timeout=None) -> list */
static PyObject *queue_get_many(QueueObject *self, PyObject *const *args, Py_ssize_t nargs,
                                PyObject *kwnames)
{
    Py_ssize_t max_msgs = 1024;
    unsigned long long max_bytes = UINT64_MAX;
    int block = 1, has_dl = 0;
    struct timespec dl;
    static const char *names[4] = {"max_messages", "max_bytes", "block", "timeout"};
    PyObject *vals[4] = {NULL, NULL, NULL, NULL};
    if (nargs > 4) {
        PyErr_SetString(PyExc_TypeError, "get_many() takes at most 4 positional arguments");
        return NULL;
    }
    for (Py_ssize_t i = 0; i < nargs; i++)
        vals[i] = args[i];
    if (kwnames) {
        for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(kwnames); i++) {
            PyObject *k = PyTuple_GET_ITEM(kwnames, i);
            int j = 0;
            while (j < 4 && PyUnicode_CompareWithASCIIString(k, names[j]) != 0)
                j++;
            if (j == 4 || vals[j]) {
                PyErr_Format(PyExc_TypeError, "get_many() got an unexpected or repeated "
                             "keyword argument '%U'", k);
                return NULL;
            }
            vals[j] = args[nargs + i];
        }
    }
    PyObject *mm = vals[0], *mb = vals[1];
    if ((vals[2] || vals[3])) {
        PyObject *bt[2] = {vals[2] ? vals[2] : Py_True, vals[3] ? vals[3] : Py_None};
        if (parse_block_timeout(bt, 2, NULL, 0, &block, &dl, &has_dl, NULL, "get_many") < 0)
            return NULL;
    }
    if (mm && mm != Py_None) {
        max_msgs = PyLong_AsSsize_t(mm);
        if (max_msgs == -1 && PyErr_Occurred())
            return NULL;
        if (max_msgs < 1)
            return PyErr_Format(PyExc_ValueError, "max_messages must be >= 1, not %zd", max_msgs);
    }
    if (mb && mb != Py_None) {
        long long v = PyLong_AsLongLong(mb);
        if (v == -1 && PyErr_Occurred())
            return NULL;
        if (v < 1)
            return PyErr_Format(PyExc_ValueError, "max_bytes must be >= 1, not %lld", v);
        max_bytes = (unsigned long long)v;
    }
    if (queue_ready(self) < 0)
        return NULL;
    if (max_msgs > 65536)
        max_msgs = 65536;
    struct shk_qmsg stack_msgs[256];
    struct shk_qmsg *msgs = stack_msgs;
    if (max_msgs > 256 && !(msgs = PyMem_Malloc((size_t)max_msgs * sizeof *msgs)))
        return PyErr_NoMemory();
    PyObject *list = NULL;
    for (;;) {
        int r;
        list = try_get_many(self, msgs, (size_t)max_msgs, max_bytes, &r);
        if (!list || PyList_GET_SIZE(list) > 0 || !block)
            break;
        Py_CLEAR(list);
        int w = wait_released(self, SHK_QW_DATA, 0, &dl, has_dl);
        if (w < 0)
            break;
        if (w > 0) {
            list = try_get_many(self, msgs, (size_t)max_msgs, max_bytes, &r);
            if (list && PyList_GET_SIZE(list) == 0) {
                Py_CLEAR(list);
                raise_empty("queue is empty (timed out)");
            }
            break;
        }
    }
    if (msgs != stack_msgs)
        PyMem_Free(msgs);
    return list;
}

/* ---- state -------------------------------------------------------------------------- */

static PyObject *queue_qsize(QueueObject *self, PyObject *unused)
{
    if (queue_ready(self) < 0)
        return NULL;
    return PyLong_FromUnsignedLongLong(shk_queue_depth(&self->q));
}

static PyObject *queue_empty(QueueObject *self, PyObject *unused)
{
    if (queue_ready(self) < 0)
        return NULL;
    return PyBool_FromLong(shk_queue_depth(&self->q) == 0);
}

static PyObject *queue_full(QueueObject *self, PyObject *unused)
{
    if (queue_ready(self) < 0)
        return NULL;
    return PyBool_FromLong(shk_queue_is_full(&self->q, 0));
}

static PyObject *queue_close(QueueObject *self, PyObject *unused)
{
    if (queue_ready(self) < 0)
        return NULL;
    shk_queue_close(&self->q);
    Py_RETURN_NONE;
}

static PyObject *queue_reopen(QueueObject *self, PyObject *unused)
{
    if (queue_ready(self) < 0)
        return NULL;
    shk_queue_reopen(&self->q);
    Py_RETURN_NONE;
}

static PyObject *queue_repair(QueueObject *self, PyObject *unused)
{
    if (queue_ready(self) < 0)
        return NULL;
    int r;
    Py_BEGIN_ALLOW_THREADS
    r = shk_queue_repair(&self->q);
    Py_END_ALLOW_THREADS
    if (r < 0)
        return shk_py_raise(r, "repair");
    return PyLong_FromLong(r);
}

static PyObject *queue_detach(QueueObject *self, PyObject *unused)
{
    if (self->zc_live > 0)
        return PyErr_Format(PyExc_BufferError, "detach(): %zd zero-copy block(s) of this "
                            "handle (reservations, received views) are still alive; release "
                            "them first", self->zc_live);
    if (self->opened) {
        shk_queue_release(&self->q);
        self->opened = 0;
    }
    Py_RETURN_NONE;
}

static PyObject *queue_statistics(QueueObject *self, PyObject *unused)
{
    if (queue_ready(self) < 0)
        return NULL;
    struct shk_queue_stats st;
    shk_queue_stats(&self->q, &st);
    return Py_BuildValue("{sKsKsKsKsKsKsKsKsKsKsKsIsIsO}", "capacity",
                         (unsigned long long)st.capacity, "max_messages",
                         (unsigned long long)st.max_messages, "depth",
                         (unsigned long long)st.depth, "bytes_used",
                         (unsigned long long)st.bytes_used, "puts", (unsigned long long)st.puts,
                         "gets", (unsigned long long)st.gets, "waits",
                         (unsigned long long)st.waits, "drops",
                         (unsigned long long)(st.dropped_puts + st.dropped_gets),
                         "dropped_puts", (unsigned long long)st.dropped_puts, "dropped_gets",
                         (unsigned long long)st.dropped_gets, "recoveries",
                         (unsigned long long)st.recoveries, "members", st.members,
                         "reservations", st.reservations, "closed",
                         st.closed ? Py_True : Py_False);
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
    int block = 1, has_dl = 0;
    struct timespec dl;
    if (nargs < 1) {
        PyErr_SetString(PyExc_TypeError, "reserve() missing required argument 'nbytes'");
        return NULL;
    }
    Py_ssize_t n = PyLong_AsSsize_t(args[0]);
    if (n == -1 && PyErr_Occurred())
        return NULL;
    if (n <= 0)
        return PyErr_Format(PyExc_ValueError, "reserve() size must be > 0, not %zd", n);
    if ((nargs > 1 || kwnames) &&
        parse_block_timeout(args, nargs, kwnames, 1, &block, &dl, &has_dl, NULL, "reserve") < 0)
        return NULL;
    if (queue_ready(self) < 0)
        return NULL;
    uint32_t idx, gen;
    void *ptr;
    int r;
    for (;;) {
        Py_BEGIN_ALLOW_THREADS /* may grow the zone: ftruncate, page faults */
        r = shk_queue_reserve(&self->q, (uint64_t)n, &idx, &gen, &ptr);
        Py_END_ALLOW_THREADS
        if (r != SHK_EFULLQ)
            break;
        if (shk_queue_is_closed(&self->q)) {
            shk_clear_detail();
            return shk_py_raise(SHK_ECLOSED, "reserve() on a closed queue");
        }
        if (!block)
            return raise_full("all zero-copy reservations of the queue are in use");
        int w = wait_released(self, SHK_QW_RESV, 0, &dl, has_dl);
        if (w < 0)
            return NULL;
        if (w > 0)
            return raise_full("all zero-copy reservations of the queue are in use (timed out)");
    }
    if (r)
        return shk_py_raise(r, "reserve");
    ReservationObject *res = PyObject_New(ReservationObject, ReservationType);
    if (!res) {
        shk_queue_release_ref(&self->q, idx, gen);
        return NULL;
    }
    res->queue = (QueueObject *)Py_NewRef(self);
    res->ptr = ptr;
    res->len = n;
    res->index = idx;
    res->gen = gen;
    res->state = 0;
    res->exports = 0;
    self->zc_live++;
    shk_segment_export(self->zone->segment);
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
    int block = 1, has_dl = 0;
    struct timespec dl;
    if ((nargs || kwnames) &&
        parse_block_timeout(args, nargs, kwnames, 0, &block, &dl, &has_dl, NULL, "commit") < 0)
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
    for (;;) {
        int e = shk_queue_commit_ref(&self->q, r->index, r->gen);
        if (e == 0) {
            r->state = 1;
            Py_RETURN_NONE;
        }
        if (e != SHK_EFULLQ)
            return shk_py_raise(e, "commit");
        if (!block)
            return raise_full("queue is full");
        int w = wait_released(self, SHK_QW_SPACE, shk_qrec_size(sizeof(struct shk_qref)), &dl, has_dl);
        if (w < 0)
            return NULL;
        if (w > 0)
            return raise_full("queue is full (timed out)");
    }
}

static PyObject *resv_release(ReservationObject *r, PyObject *unused)
{
    if (r->state == 0) {
        if (r->exports > 0)
            return PyErr_Format(PyExc_BufferError, "release(): %zd view(s) of the reservation "
                                "are still alive", r->exports);
        r->state = 2;
        if (r->queue->opened)
            shk_queue_release_ref(&r->queue->q, r->index, r->gen);
    }
    Py_RETURN_NONE;
}

static PyObject *resv_enter(ReservationObject *r, PyObject *unused)
{
    return Py_NewRef(r);
}

static PyObject *resv_exit(ReservationObject *r, PyObject *args)
{
    /* leaving the block without commit() gives the memory back */
    if (r->state == 0 && r->exports == 0) {
        r->state = 2;
        if (r->queue->opened)
            shk_queue_release_ref(&r->queue->q, r->index, r->gen);
    }
    Py_RETURN_FALSE;
}

static void resv_dealloc(ReservationObject *r)
{
    r->queue->zc_live--;
    if (r->state == 0 && r->queue->opened)
        shk_queue_release_ref(&r->queue->q, r->index, r->gen);
    shk_segment_unexport(r->queue->zone->segment);
    Py_DECREF(r->queue);
    PyTypeObject *tp = Py_TYPE(r);
    PyObject_Free(r);
    Py_DECREF(tp);
}

static PyObject *resv_get_nbytes(ReservationObject *r, void *c)
{
    return PyLong_FromSsize_t(r->len);
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
    {"nbytes", (getter)resv_get_nbytes, NULL, "size of the block in bytes", NULL},
    {"state", (getter)resv_get_state, NULL, "'reserved', 'committed' or 'released'", NULL},
    {NULL},
};

static PyType_Slot resv_slots[] = {
    {Py_tp_dealloc, resv_dealloc},
    {Py_tp_methods, resv_methods},
    {Py_tp_getset, resv_getset},
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
    static char *kwlist[] = {"zone", "name", "capacity", "max_messages", "create", "exclusive", NULL};
    PyObject *zobj;
    const char *name;
    unsigned long long capacity = 0, max_messages = 0;
    int create = 1, exclusive = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O!s|KKpp:Queue", kwlist, shk_ZoneType, &zobj,
                                     &name, &capacity, &max_messages, &create, &exclusive))
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
    r = shk_queue_open(&zone->zone, name, capacity, max_messages, flags, &self->q, &created);
    Py_END_ALLOW_THREADS
    if (r) {
        Py_DECREF(self);
        return shk_py_raise(r, "queue open");
    }
    self->zone = (ZoneObject *)Py_NewRef(zone);
    self->opened = 1;
    return (PyObject *)self;
}

static void queue_dealloc(QueueObject *self)
{
    PyObject_GC_UnTrack(self);
    if (self->weakreflist)
        PyObject_ClearWeakRefs((PyObject *)self);
    if (self->opened && self->zone && !self->zone->segment->closed)
        shk_queue_release(&self->q);
    self->opened = 0;
    PyTypeObject *tp = Py_TYPE(self);
    Py_CLEAR(self->zone);
    Py_CLEAR(self->recv_buf);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static int queue_traverse(QueueObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->zone);
    Py_VISIT(self->recv_buf);
    return 0;
}

static PyObject *queue_get_capacity(QueueObject *self, void *c)
{
    return PyLong_FromUnsignedLongLong(self->q.cap);
}
static PyObject *queue_get_max_messages(QueueObject *self, void *c)
{
    return PyLong_FromUnsignedLongLong(self->q.max_messages);
}
static PyObject *queue_get_max_message_size(QueueObject *self, void *c)
{
    return PyLong_FromUnsignedLongLong(shk_queue_max_payload(&self->q));
}
static PyObject *queue_get_closed(QueueObject *self, void *c)
{
    if (!self->opened || shk_zone_check_open(self->zone) < 0) {
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
    self->q.spin_ns = self->q.spin_cur = (uint64_t)(s * 1e9);
    return 0;
}
static PyObject *queue_get_detached(QueueObject *self, void *c)
{
    return PyBool_FromLong(!self->opened);
}

static PyGetSetDef queue_getset[] = {
    {"capacity", (getter)queue_get_capacity, NULL, "ring size in bytes (a power of two)", NULL},
    {"max_messages", (getter)queue_get_max_messages, NULL, "message limit (0: none)", NULL},
    {"max_message_size", (getter)queue_get_max_message_size, NULL,
     "largest message that can ever fit, in bytes", NULL},
    {"closed", (getter)queue_get_closed, NULL, "True after close() (by any process)", NULL},
    {"spin", (getter)queue_get_spin, (setter)queue_set_spin,
     "seconds a blocked call spins before it sleeps (adaptive below this bound)", NULL},
    {"detached", (getter)queue_get_detached, NULL, "True after detach()", NULL},
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
    {"_debug_die", (PyCFunction)queue_debug_die, METH_O,
     "_debug_die(where)\n--\n\nTest hook: SIGKILL this process at a chosen point."},
    {NULL},
};

static PyMemberDef queue_members[] = {
    {"__weaklistoffset__", T_PYSSIZET, offsetof(QueueObject, weakreflist), READONLY},
    {NULL},
};

static PyType_Slot queue_slots[] = {
    {Py_tp_new, queue_new},
    {Py_tp_dealloc, queue_dealloc},
    {Py_tp_traverse, queue_traverse},
    {Py_tp_methods, queue_methods},
    {Py_tp_getset, queue_getset},
    {Py_tp_members, queue_members},
    {Py_tp_doc, "Queue(zone, name, capacity=0, max_messages=0, create=True, exclusive=False)"
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
#define CONST(name, value) \
    if (PyModule_AddIntConstant(m, name, (long)(value)) < 0) return -1
    CONST("QDIE_AFTER_CLAIM", SHK_QDIE_AFTER_CLAIM);
    CONST("QDIE_MID_COPY", SHK_QDIE_MID_COPY);
    CONST("QDIE_AFTER_TAKE", SHK_QDIE_AFTER_TAKE);
    CONST("QDIE_AFTER_RESERVE", SHK_QDIE_AFTER_RESERVE);
    CONST("QDIE_COPIED", SHK_QDIE_COPIED);
    CONST("QUEUE_SLOTS", SHK_QUEUE_SLOTS);
    CONST("QUEUE_RESERVATIONS", SHK_QUEUE_RESV);
    CONST("QUEUE_MIN_CAPACITY", SHK_QUEUE_MIN_CAP);
#undef CONST
    return PyModule_AddObject(m, "QUEUE_MAX_CAPACITY",
                              PyLong_FromUnsignedLongLong(SHK_QUEUE_MAX_CAP));
}
