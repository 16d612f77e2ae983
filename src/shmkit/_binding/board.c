/*
 * board.c (binding) - shmkit._core.Board: a handle on a latest-value board (core/board.h).
 *
 * Thin: parse, call the core, release the GIL around calls that can block or copy a lot,
 * turn codes into exceptions.  Decoding values (pickle, NumPy) is the Python layer's.
 *
 * Lifetime: a handle holds its Zone object (the struct shk_zone lives there) and one
 * export of the segment, so the mapping outlives zone.close() while the handle (or a view
 * it handed out) exists.  Views handed out by pin()/begin() are Regions that hold the
 * handle.  Calls running without the GIL are counted; close() while one runs only marks
 * the handle closed and the last one out detaches.
 */
#include "binding.h"

#include <errno.h>
#include <signal.h>
#include <unistd.h>

#include <structmember.h>

#include "board.h"

/* Copies at least this large run without the GIL. */
#define NOGIL_COPY (256u << 10)

typedef struct {
    SHK_PY_HANDLE_HEAD
    struct shk_board b;
    int created;
    int close_pending;      /* close() while calls ran without the GIL */
    int inflight;           /* calls running without the GIL */
    uint64_t view_word;     /* pinned word the live views were made from */
    Py_ssize_t views;       /* live views of view_word */
    /* the value read() returned last, handed out again while the version is unchanged
     * (set by the Python layer, which decodes values) */
    PyObject *cache;        /* (value, version) or NULL */
    uint64_t cache_version;
    int cache_copy;
    PyObject *reader;       /* weak reference to the Python Board: its _read_newest() */
    PyObject *weakreflist;
} BoardObject;

static PyTypeObject *BoardType;

static void board_really_close(BoardObject *self)
{
    Py_CLEAR(self->cache); /* values may hold views of this handle: break the cycle */
    if (!self->attached)
        return;
    shk_board_detach(&self->b);
    shk_py_handle_unexport(self);
}

static int board_check(BoardObject *self)
{
    if (!self->attached || self->close_pending) {
        shk_py_closed("board handle is closed");
        return -1;
    }
    if (self->seg->closed || self->seg->close_pending) {
        shk_py_closed("the board's zone is closed");
        return -1;
    }
    return 0;
}

/* Bracket a call that runs without the GIL. */
static void enter_nogil(BoardObject *self)
{
    self->inflight++;
}

static void leave_nogil(BoardObject *self)
{
    if (--self->inflight == 0 && self->close_pending)
        board_really_close(self);
}

static int get_u64(PyObject *o, uint64_t *out, const char *what)
{
    unsigned long long v = PyLong_AsUnsignedLongLong(o);
    if (v == (unsigned long long)-1 && PyErr_Occurred()) {
        if (PyErr_ExceptionMatches(PyExc_OverflowError) || PyErr_ExceptionMatches(PyExc_TypeError)) {
            PyErr_Clear();
            PyErr_Format(PyExc_ValueError, "%s must be an int >= 0", what);
        }
        return -1;
    }
    *out = v;
    return 0;
}

static PyObject *board_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"zone", "name", "type", "capacity", "buffers", NULL};
    PyObject *zoneobj;
    const char *name;
    unsigned int objtype = SHK_OBJ_BOARD, buffers = 3;
    unsigned long long capacity = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O!s|IKI:Board", kwlist, shk_ZoneType, &zoneobj,
                                     &name, &objtype, &capacity, &buffers))
        return NULL;
    ZoneObject *zone = (ZoneObject *)zoneobj;
    if (shk_zone_check_open(zone) < 0)
        return NULL;
    BoardObject *self = (BoardObject *)type->tp_alloc(type, 0);
    if (!self)
        return NULL;
    int created;
    /* with the GIL held, as zone.c does: another thread cannot close the zone meanwhile */
    int r = shk_board_open(&self->b, &zone->zone, name, objtype, capacity, buffers, &created);
    if (r) {
        Py_DECREF(self);
        return shk_py_raise(r, "board");
    }
    shk_py_handle_attach(self, zone);
    self->created = created;
    return (PyObject *)self;
}

static void board_dealloc(BoardObject *self)
{
    if (self->weakreflist)
        PyObject_ClearWeakRefs((PyObject *)self);
    board_really_close(self);
    Py_CLEAR(self->reader);
    shk_py_handle_free(self);
}

static PyObject *board_close(BoardObject *self, PyObject *unused)
{
    shk_py_aio_closed(self); /* coroutines waiting through this handle: ClosedError */
    if (self->inflight > 0) {
        self->close_pending = 1;
        if (self->attached)
            shk_board_cancel_waits(&self->b); /* threads waiting on this handle return */
    } else {
        board_really_close(self);
    }
    Py_RETURN_NONE;
}

/* ---- readers -------------------------------------------------------------------------- */

/* set_cache(value_version_tuple or None, copy): what read_cached() returns while the
 * version is unchanged. */
static PyObject *board_set_cache(BoardObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2)
        return PyErr_Format(PyExc_TypeError, "set_cache(result, copy)");
    PyObject *result = args[0];
    int copy = PyObject_IsTrue(args[1]);
    if (copy < 0)
        return NULL;
    if (result == Py_None) {
        Py_CLEAR(self->cache);
        Py_RETURN_NONE;
    }
    if (!PyTuple_Check(result) || PyTuple_GET_SIZE(result) != 2)
        return PyErr_Format(PyExc_TypeError, "set_cache: (value, version) expected");
    uint64_t v;
    if (get_u64(PyTuple_GET_ITEM(result, 1), &v, "version") < 0)
        return NULL;
    Py_INCREF(result);
    Py_XSETREF(self->cache, result);
    self->cache_version = v;
    self->cache_copy = copy;
    Py_RETURN_NONE;
}

/* bind_reader(board): the Python Board whose _read_newest(copy) read_cached() calls when
 * the cached value is out of date (held weakly: the board owns this handle). */
static PyObject *board_bind_reader(BoardObject *self, PyObject *board)
{
    PyObject *ref = PyWeakref_NewRef(board, NULL);
    if (!ref)
        return NULL;
    Py_XSETREF(self->reader, ref);
    Py_RETURN_NONE;
}

/* read_cached(copy=True): the fast path of Board.read().  While the latest version is the
 * cached one, return the cached (value, version): one load, no shared write. */
static PyObject *board_read_cached(BoardObject *self, PyObject *const *args, Py_ssize_t nargs,
                                   PyObject *kwnames)
{
    PyObject *copyobj = nargs > 0 ? args[0] : Py_True;
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    if (nargs + nkw > 1 || (nkw == 1 && !PyUnicode_Check(PyTuple_GET_ITEM(kwnames, 0))) ||
        (nkw == 1 && PyUnicode_CompareWithASCIIString(PyTuple_GET_ITEM(kwnames, 0), "copy")))
        return PyErr_Format(PyExc_TypeError, "read() takes one optional argument, copy");
    if (nkw == 1)
        copyobj = args[nargs];
    int copy = copyobj == Py_True ? 1 : copyobj == Py_False ? 0 : PyObject_IsTrue(copyobj);
    if (copy < 0)
        return NULL;
    if (self->cache && self->cache_copy == copy && self->attached && !self->close_pending &&
        !self->seg->close_pending && shk_board_version(&self->b) == self->cache_version)
        return Py_NewRef(self->cache);
    if (board_check(self) < 0)
        return NULL;
    PyObject *board = self->reader ? PyWeakref_GetObject(self->reader) : NULL;
    if (!board || board == Py_None) {
        shk_py_closed("board is gone");
        return NULL;
    }
    Py_INCREF(board);
    PyObject *r = PyObject_CallMethod(board, "_read_newest", "O", copy ? Py_True : Py_False);
    Py_DECREF(board);
    return r;
}

static PyObject *board_version(BoardObject *self, PyObject *unused)
{
    if (board_check(self) < 0)
        return NULL;
    return PyLong_FromUnsignedLongLong(shk_board_version(&self->b));
}

static PyObject *value_tuple(PyObject *payload, const struct shk_board_value *v)
{
    return Py_BuildValue("(NKIKK)", payload, (unsigned long long)v->version, v->kind,
                         (unsigned long long)v->meta, (unsigned long long)v->published_ns);
}

static int copy_call(BoardObject *self, uint64_t after, const struct shk_board_copy *c,
                     struct shk_board_value *v, uint64_t size)
{
    int r;
    if (size < NOGIL_COPY)
        return shk_board_read(&self->b, after, c, v);
    enter_nogil(self);
    Py_BEGIN_ALLOW_THREADS
    r = shk_board_read(&self->b, after, c, v);
    Py_END_ALLOW_THREADS
    leave_nogil(self);
    return r;
}

/* read(after, writable=False): (payload, version, kind, meta, published_ns) or None. */
static PyObject *board_read(BoardObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 1 || nargs > 2)
        return PyErr_Format(PyExc_TypeError, "read(after, writable=False)");
    uint64_t after;
    if (get_u64(args[0], &after, "version") < 0)
        return NULL;
    int writable = nargs > 1 ? PyObject_IsTrue(args[1]) : 0;
    if (writable < 0 || board_check(self) < 0)
        return NULL;
    struct shk_board_value v;
    int r = shk_board_peek(&self->b, &v);
    if (r == SHK_EEMPTY || (r == 0 && v.version <= after))
        Py_RETURN_NONE;
    if (r)
        return shk_py_raise(r, "board read");
    uint64_t size = v.len;
    for (;;) {
        PyObject *buf = writable ? PyByteArray_FromStringAndSize(NULL, (Py_ssize_t)size)
                                 : PyBytes_FromStringAndSize(NULL, (Py_ssize_t)size);
        if (!buf)
            return NULL;
        char *p = writable ? PyByteArray_AS_STRING(buf) : PyBytes_AS_STRING(buf);
        struct shk_board_copy c = {p, size, NULL, 0};
        r = copy_call(self, after, &c, &v, size);
        if (r == ENOBUFS) { /* a larger value came meanwhile */
            Py_DECREF(buf);
            size = v.len;
            continue;
        }
        if (r) {
            Py_DECREF(buf);
            if (r == SHK_EEMPTY)
                Py_RETURN_NONE;
            return shk_py_raise(r, "board read");
        }
        if (v.len < size) {
            if (writable ? PyByteArray_Resize(buf, (Py_ssize_t)v.len) < 0
                         : _PyBytes_Resize(&buf, (Py_ssize_t)v.len) < 0) {
                Py_XDECREF(buf);
                return NULL;
            }
        }
        return value_tuple(buf, &v);
    }
}

/* read_into(after, out, head_cap): copies payload[meta:] into the writable buffer `out`
 * (which must be exactly that long) and payload[:meta] (at most head_cap bytes) into a new
 * bytes object.  (head, version, kind, meta, published_ns) or None. */
static PyObject *board_read_into(BoardObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3)
        return PyErr_Format(PyExc_TypeError, "read_into(after, out, head_cap)");
    uint64_t after, head_cap;
    if (get_u64(args[0], &after, "version") < 0 || get_u64(args[2], &head_cap, "head_cap") < 0)
        return NULL;
    if (board_check(self) < 0)
        return NULL;
    if (head_cap > 1 << 20)
        head_cap = 1 << 20;
    Py_buffer out;
    if (PyObject_GetBuffer(args[1], &out, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) < 0)
        return NULL;
    PyObject *head = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)head_cap);
    if (!head) {
        PyBuffer_Release(&out);
        return NULL;
    }
    char dummy;
    struct shk_board_copy c = {out.buf, (uint64_t)out.len, head_cap ? PyBytes_AS_STRING(head) : &dummy,
                               head_cap};
    struct shk_board_value v;
    int r = copy_call(self, after, &c, &v, (uint64_t)out.len);
    Py_ssize_t outlen = out.len;
    PyBuffer_Release(&out);
    if (r == 0 && v.len - v.meta != (uint64_t)outlen)
        r = ENOBUFS; /* shorter than out: copied, but not what the caller asked for */
    if (r) {
        Py_DECREF(head);
        if (r == SHK_EEMPTY)
            Py_RETURN_NONE;
        if (r == ENOBUFS)
            return PyErr_Format(PyExc_ValueError, "the value (version %llu) has %llu bytes of "
                                "data; the output buffer has %zd",
                                (unsigned long long)v.version,
                                (unsigned long long)(v.len - v.meta), outlen);
        return shk_py_raise(r, "board read_into");
    }
    uint64_t hl = v.meta < head_cap ? v.meta : head_cap;
    if (hl < head_cap && _PyBytes_Resize(&head, (Py_ssize_t)hl) < 0)
        return NULL;
    return value_tuple(head, &v);
}

static void view_released(PyObject *owner, uint64_t word)
{
    BoardObject *self = (BoardObject *)owner;
    if (word != self->view_word)
        return; /* a view of an older pin: that pin is gone already */
    if (--self->views == 0) {
        self->view_word = 0;
        if (self->attached && !self->close_pending)
            shk_board_unpin(&self->b, word);
    }
}

/* pin(after): (read-only memoryview of the payload, version, kind, meta, published_ns) or
 * None.  The writer leaves the slot alone until the next pin on this handle, unpin(), or
 * the last view of it is released. */
static PyObject *board_pin(BoardObject *self, PyObject *arg)
{
    uint64_t after;
    if (get_u64(arg, &after, "version") < 0 || board_check(self) < 0)
        return NULL;
    struct shk_board_value v;
    const uint8_t *data;
    int r = shk_board_pin(&self->b, after, &v, &data);
    if (r == SHK_EEMPTY)
        Py_RETURN_NONE;
    if (r)
        return shk_py_raise(r, "board pin");
    uint64_t word = shk_board_pinned(&self->b);
    if (word != self->view_word) {
        self->view_word = word;
        self->views = 0;
    }
    PyObject *region = shk_region_new_with_release(self->seg, (void *)data, (Py_ssize_t)v.len, 1,
                                                   (PyObject *)self, view_released, word);
    if (!region)
        return NULL;
    self->views++;
    PyObject *mv = PyMemoryView_FromObject(region);
    Py_DECREF(region);
    if (!mv)
        return NULL;
    return value_tuple(mv, &v);
}

static PyObject *board_unpin(BoardObject *self, PyObject *unused)
{
    if (self->attached && !self->close_pending)
        shk_board_unpin(&self->b, 0);
    self->view_word = 0;
    self->views = 0;
    Py_RETURN_NONE;
}

static PyObject *board_intact(BoardObject *self, PyObject *arg)
{
    uint64_t version;
    if (get_u64(arg, &version, "version") < 0 || board_check(self) < 0)
        return NULL;
    return PyBool_FromLong(shk_board_intact(&self->b, version));
}

/* wait(after, timeout=None, max_spin_ns=0): True when a newer version exists, False when
 * the timeout passed. */
static PyObject *board_wait(BoardObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 1 || nargs > 3)
        return PyErr_Format(PyExc_TypeError, "wait(after, timeout=None, max_spin_ns=0)");
    uint64_t after, spin = 0;
    if (get_u64(args[0], &after, "version") < 0)
        return NULL;
    if (nargs > 2 && get_u64(args[2], &spin, "max_spin_ns") < 0)
        return NULL;
    if (board_check(self) < 0)
        return NULL;
    if (shk_board_version(&self->b) > after)
        Py_RETURN_TRUE;
    /* a negative timeout is refused, as by Queue.get (threading's "-1: forever" would
     * make a computed timeout that went negative wait forever: issue 13 #11) */
    uint64_t deadline;
    uint32_t flags;
    if (shk_py_block_timeout(NULL, nargs > 1 ? args[1] : Py_None, &deadline, &flags) < 0)
        return NULL;
    struct shk_board_waiter bw = {&self->b, after, spin};
    struct shk_wait w = SHK_WAIT_INIT(deadline, 0);
    enter_nogil(self);
    int r = shk_py_wait(&shk_board_wait_op, &bw, &w, 0, NULL);
    leave_nogil(self);
    if (r == SHK_PY_ERR)
        return NULL;
    if (r == ETIMEDOUT)
        Py_RETURN_FALSE;
    if (r == ECANCELED) { /* closed by another thread while we waited */
        shk_py_closed("board handle was closed while waiting");
        return NULL;
    }
    if (r)
        return shk_py_raise(r, "board wait");
    Py_RETURN_TRUE;
}

/* ---- for the asyncio twins (aio.c) ---------------------------------------------------- */

struct shk_board *shk_py_board_ref(PyObject *h)
{
    if (!PyObject_TypeCheck(h, BoardType)) {
        PyErr_Format(PyExc_TypeError, "expected a board handle, not %.100s", Py_TYPE(h)->tp_name);
        return NULL;
    }
    BoardObject *self = (BoardObject *)h;
    return board_check(self) < 0 ? NULL : &self->b;
}

int shk_py_board_live(PyObject *h)
{
    BoardObject *self = (BoardObject *)h;
    return self->attached && !self->close_pending && !self->seg->closed &&
           !self->seg->close_pending;
}

/* ---- writer -------------------------------------------------------------------------- */

static PyObject *board_take_writer(BoardObject *self, PyObject *unused)
{
    if (board_check(self) < 0)
        return NULL;
    int r;
    enter_nogil(self);
    Py_BEGIN_ALLOW_THREADS
    r = shk_board_take_writer(&self->b);
    Py_END_ALLOW_THREADS
    leave_nogil(self);
    return shk_py_none_or_raise(r, "take_writer");
}

static PyObject *board_release_writer(BoardObject *self, PyObject *unused)
{
    if (!self->attached || self->close_pending)
        Py_RETURN_NONE;
    int r = shk_board_release_writer(&self->b);
    return shk_py_none_or_raise(r, "release_writer");
}

static PyObject *board_writer(BoardObject *self, PyObject *unused)
{
    if (board_check(self) < 0)
        return NULL;
    pid_t pid;
    int alive;
    shk_board_writer(&self->b, &pid, &alive);
    return Py_BuildValue("(iO)", (int)pid, alive ? Py_True : Py_False);
}

/* publish(data, kind, meta=0) -> version */
static PyObject *board_publish(BoardObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 2 || nargs > 3)
        return PyErr_Format(PyExc_TypeError, "publish(data, kind, meta=0)");
    uint64_t kind, meta = 0;
    if (get_u64(args[1], &kind, "kind") < 0 || (nargs > 2 && get_u64(args[2], &meta, "meta") < 0))
        return NULL;
    if (board_check(self) < 0)
        return NULL;
    Py_buffer buf;
    if (PyObject_GetBuffer(args[0], &buf, PyBUF_C_CONTIGUOUS) < 0)
        return NULL;
    uint64_t version = 0;
    int r;
    if ((uint64_t)buf.len < NOGIL_COPY) {
        r = shk_board_publish(&self->b, buf.buf, (uint64_t)buf.len, (uint32_t)kind, meta, &version);
    } else {
        enter_nogil(self);
        Py_BEGIN_ALLOW_THREADS
        r = shk_board_publish(&self->b, buf.buf, (uint64_t)buf.len, (uint32_t)kind, meta, &version);
        Py_END_ALLOW_THREADS
        leave_nogil(self);
    }
    PyBuffer_Release(&buf);
    if (r)
        return shk_py_raise(r, "publish");
    return PyLong_FromUnsignedLongLong(version);
}

/* begin() -> writable memoryview of the next slot's data area (capacity bytes). */
static PyObject *board_begin(BoardObject *self, PyObject *unused)
{
    if (board_check(self) < 0)
        return NULL;
    void *buf;
    int r = shk_board_begin(&self->b, &buf);
    if (r)
        return shk_py_raise(r, "begin");
    PyObject *mv = shk_memoryview_of(self->seg, buf, (Py_ssize_t)self->b.capacity, 0,
                                     (PyObject *)self);
    if (!mv)
        shk_board_abort(&self->b);
    return mv;
}

/* commit(len, kind, meta=0) -> version */
static PyObject *board_commit(BoardObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 2 || nargs > 3)
        return PyErr_Format(PyExc_TypeError, "commit(len, kind, meta=0)");
    uint64_t len, kind, meta = 0;
    if (get_u64(args[0], &len, "len") < 0 || get_u64(args[1], &kind, "kind") < 0 ||
        (nargs > 2 && get_u64(args[2], &meta, "meta") < 0))
        return NULL;
    if (board_check(self) < 0)
        return NULL;
    uint64_t version;
    int r = shk_board_commit(&self->b, len, (uint32_t)kind, meta, &version);
    if (r)
        return shk_py_raise(r, "commit");
    return PyLong_FromUnsignedLongLong(version);
}

static PyObject *board_abort(BoardObject *self, PyObject *unused)
{
    if (self->attached && !self->close_pending)
        shk_board_abort(&self->b);
    Py_RETURN_NONE;
}

static PyObject *board_debug_die_mid_publish(BoardObject *self, PyObject *arg)
{
    /* Test hook: begin a publication, scribble `n` bytes of it, and die by SIGKILL before
     * committing -- what a writer killed in the middle of a publication leaves. */
    uint64_t n;
    if (get_u64(arg, &n, "n") < 0 || board_check(self) < 0)
        return NULL;
    void *buf;
    int r = shk_board_begin(&self->b, &buf);
    if (r)
        return shk_py_raise(r, "begin");
    memset(buf, 0xA5, n < self->b.capacity ? n : self->b.capacity);
    kill(getpid(), SIGKILL);
    for (;;)
        pause();
}

/* ---- statistics ------------------------------------------------------------------------ */

static PyObject *board_stats(BoardObject *self, PyObject *unused)
{
    if (board_check(self) < 0)
        return NULL;
    struct shk_board_stats st;
    shk_board_stats(&self->b, &st);
    return shk_py_fields(&st, shk_board_stats_fields);
}

#define GETTER(fname, expr) SHK_PY_GETTER(board_get_##fname, BoardObject, expr)
GETTER(capacity, PyLong_FromUnsignedLongLong(self->b.capacity))
GETTER(buffers, PyLong_FromUnsignedLong(self->b.nbuffers))
GETTER(readers, PyLong_FromUnsignedLong(self->b.nreaders))
GETTER(offset, PyLong_FromUnsignedLongLong(self->b.off))
GETTER(size, PyLong_FromUnsignedLongLong(self->b.size))
GETTER(created, PyBool_FromLong(self->created))
GETTER(closed, PyBool_FromLong(!self->attached || self->close_pending))
GETTER(is_writer, PyBool_FromLong(self->attached && !self->close_pending &&
                                  shk_board_is_writer(&self->b)))
GETTER(pinned, PyLong_FromUnsignedLongLong(self->attached ? shk_board_pinned(&self->b) >>
                                                                SHK_BOARD_SLOT_BITS
                                                          : 0))

static PyGetSetDef board_getset[] = {
    {"capacity", (getter)board_get_capacity, NULL, "largest value in bytes", NULL},
    {"buffers", (getter)board_get_buffers, NULL, "number of slots", NULL},
    {"readers", (getter)board_get_readers, NULL, "concurrent zero-copy readers possible", NULL},
    {"offset", (getter)board_get_offset, NULL, "offset of the board in its zone", NULL},
    {"size", (getter)board_get_size, NULL, "bytes of its allocation", NULL},
    {"created", (getter)board_get_created, NULL, "True if this handle created the board", NULL},
    {"closed", (getter)board_get_closed, NULL, "True once closed", NULL},
    {"is_writer", (getter)board_get_is_writer, NULL, "True while this handle is the writer", NULL},
    {"pinned", (getter)board_get_pinned, NULL, "version pinned by this handle (0: none)", NULL},
    {NULL},
};

static PyMethodDef board_methods[] = {
    {"read_cached", (PyCFunction)(void (*)(void))board_read_cached,
     METH_FASTCALL | METH_KEYWORDS,
     "read_cached(copy=True)\n--\n\nBoard.read(): the cached (value, version) while the "
     "version is unchanged, else the bound board's _read_newest(copy)."},
    {"set_cache", (PyCFunction)(void (*)(void))board_set_cache, METH_FASTCALL,
     "set_cache(result, copy, /)\n--\n\nWhat read_cached() returns while the version is "
     "unchanged (None: nothing)."},
    {"bind_reader", (PyCFunction)board_bind_reader, METH_O,
     "bind_reader(board, /)\n--\n\nThe Python Board read_cached() falls back to."},
    {"version", (PyCFunction)board_version, METH_NOARGS,
     "version()\n--\n\nLatest published version (0: nothing yet). No shared write."},
    {"read", (PyCFunction)(void (*)(void))board_read, METH_FASTCALL,
     "read(after, writable=False, /)\n--\n\nCopy the latest value if newer than `after`: "
     "(payload, version, kind, meta, published_ns), or None."},
    {"read_into", (PyCFunction)(void (*)(void))board_read_into, METH_FASTCALL,
     "read_into(after, out, head_cap, /)\n--\n\nCopy payload[meta:] of the latest value into "
     "`out` and payload[:meta] into a new bytes: (head, version, kind, meta, published_ns), or "
     "None."},
    {"pin", (PyCFunction)board_pin, METH_O,
     "pin(after, /)\n--\n\nPin the latest value if newer than `after`: (read-only memoryview, "
     "version, kind, meta, published_ns), or None."},
    {"unpin", (PyCFunction)board_unpin, METH_NOARGS, "unpin()\n--\n\nDrop this handle's pin."},
    {"intact", (PyCFunction)board_intact, METH_O,
     "intact(version, /)\n--\n\nTrue if the value of `version` is still complete in its slot."},
    {"wait", (PyCFunction)(void (*)(void))board_wait, METH_FASTCALL,
     "wait(after, timeout=None, max_spin_ns=0, /)\n--\n\nBlock until a version newer than "
     "`after` exists (True) or the timeout passes (False)."},
    {"take_writer", (PyCFunction)board_take_writer, METH_NOARGS,
     "take_writer()\n--\n\nBecome the writer (the previous one must be gone)."},
    {"release_writer", (PyCFunction)board_release_writer, METH_NOARGS,
     "release_writer()\n--\n\nGive the writer role up."},
    {"writer", (PyCFunction)board_writer, METH_NOARGS,
     "writer()\n--\n\n(pid, alive) of the current writer (pid 0: none)."},
    {"publish", (PyCFunction)(void (*)(void))board_publish, METH_FASTCALL,
     "publish(data, kind, meta=0, /)\n--\n\nPublish a copy of `data`; returns the version."},
    {"begin", (PyCFunction)board_begin, METH_NOARGS,
     "begin()\n--\n\nStart a publication: a writable memoryview of the next slot."},
    {"commit", (PyCFunction)(void (*)(void))board_commit, METH_FASTCALL,
     "commit(len, kind, meta=0, /)\n--\n\nPublish what begin() handed out; returns the version."},
    {"abort", (PyCFunction)board_abort, METH_NOARGS, "abort()\n--\n\nGive up a publication."},
    {"stats", (PyCFunction)board_stats, METH_NOARGS, "stats()\n--\n\nShared and handle counters."},
    {"close", (PyCFunction)board_close, METH_NOARGS, "close()\n--\n\nDetach this handle."},
    {"_debug_die_mid_publish", (PyCFunction)board_debug_die_mid_publish, METH_O,
     "_debug_die_mid_publish(n)\n--\n\nTest hook: begin a publication, write n bytes, SIGKILL."},
    {NULL},
};

static PyMemberDef board_members[] = {
    {"__weaklistoffset__", T_PYSSIZET, offsetof(BoardObject, weakreflist), READONLY},
    {NULL},
};

static PyType_Slot board_slots[] = {
    {Py_tp_new, board_new},
    {Py_tp_dealloc, board_dealloc},
    {Py_tp_methods, board_methods},
    {Py_tp_members, board_members},
    {Py_tp_getset, board_getset},
    {Py_tp_doc, "A handle on a latest-value board (internal; use shmkit.Board)."},
    {0, NULL},
};

int shk_init_board(PyObject *m)
{
    PyType_Spec spec = {"shmkit._core.Board", sizeof(BoardObject), 0, Py_TPFLAGS_DEFAULT,
                        board_slots};
    if (!(BoardType = shk_py_add_type(m, &spec)))
        return -1;
#define CONST(name, value) \
    if (PyModule_AddIntConstant(m, name, (long)(value)) < 0) return -1
    CONST("BOARD_KIND_BYTES", SHK_BOARD_KIND_BYTES);
    CONST("BOARD_KIND_STR", SHK_BOARD_KIND_STR);
    CONST("BOARD_KIND_NDARRAY", SHK_BOARD_KIND_NDARRAY);
    CONST("BOARD_KIND_PICKLE", SHK_BOARD_KIND_PICKLE);
    CONST("BOARD_KIND_USER", SHK_BOARD_KIND_USER);
    CONST("BOARD_MIN_BUFFERS", SHK_BOARD_MIN_BUFFERS);
    CONST("BOARD_MAX_BUFFERS", SHK_BOARD_MAX_BUFFERS);
    CONST("BOARD_ALIGN", SHK_BOARD_ALIGN);
    CONST("BOARD_NDARRAY_MAGIC", SHK_BOARD_NDARRAY_MAGIC);
    CONST("BOARD_PICKLE_MAGIC", SHK_BOARD_PICKLE_MAGIC);
    CONST("NDARRAY_MAX_DIMS", SHK_NDARRAY_MAX_DIMS);
#undef CONST
    return 0;
}
