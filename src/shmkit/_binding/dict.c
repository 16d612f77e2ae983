/*
 * dict.c (binding) - shmkit._core.Dict: the shared dict's methods, as thin as it goes.
 *
 * Here: argument parsing, converting keys and values to the core's typed bytes and back
 * (so that the hot paths never run Python code), the GIL, and errors through
 * shk_py_raise.  Every protocol (lock-free reads and their fall back to the lock, the
 * shard locks, incr, lists) is one call into core/dict.c.  shmkit.dict.Dict subclasses
 * this type and adds the rest of the Python surface.
 *
 * One shape repeats: `do r = call; while (again(...))`.  Every call is made holding the
 * GIL and never sleeps; when its shard's lock is held elsewhere it answers EBUSY having
 * done nothing, and again() waits for the lock in the one wait shape (shk_dict_shard_op
 * through shk_py_wait: the GIL released, Ctrl-C honoured) before it is made again.  A
 * call that hands a value back copies it into a buffer that starts on the stack and grows
 * to what the core says it needs (struct out; ENOBUFS, which again() handles too).
 *
 * Values are stored typed (layout.h, enum shk_dict_vtype): bytes, str, int, float, bool
 * and None natively, anything else through the handle's serializer (pickle unless told
 * otherwise), and they come back as the type they went in.
 */
#include "binding.h"

#include <errno.h>
#include <math.h>

#include "dict.h"
#include <structmember.h>

#define STACK_BUF 512
#define SCAN_BUF 16384
#define RAISED (-1) /* a Python exception is set (no core call returns -1) */

typedef struct {
    SHK_PY_HANDLE_HEAD      /* exported from a successful open until dealloc */
    struct shk_dict d;
    int closed;
    char created;           /* this handle created the dict (read once by the façade) */
    PyObject *dumps;        /* serializer: callable(obj) -> bytes */
    PyObject *loads;        /* callable(bytes) -> obj */
    PyObject *clock;        /* None or callable() -> seconds since the epoch (tests) */
    PyObject *weakreflist;
} DictObject;

static PyTypeObject *DictType;
static PyObject *pickle_dumps, *pickle_loads;
static PyObject *int_from_bytes, *signed_kw; /* int.from_bytes, {"signed": True} */

/* ---- small helpers ------------------------------------------------------------------ */

/* Before every operation: still open, and the test clock (if any) read. */
static inline int ready(DictObject *self)
{
    SegmentObject *seg = self->seg;
    if (!self->attached || self->closed || seg->closed || seg->close_pending) {
        PyErr_SetString(shk_py_exc("ClosedError"), "dict is closed");
        return -1;
    }
    if (self->clock) {
        PyObject *t = PyObject_CallNoArgs(self->clock);
        if (!t)
            return -1;
        double s = PyFloat_AsDouble(t);
        Py_DECREF(t);
        if (s == -1.0 && PyErr_Occurred())
            return -1;
        if (!(s >= 0) || s > 9e15) {
            PyErr_SetString(PyExc_ValueError, "the dict's clock must return seconds >= 0");
            return -1;
        }
        shk_dict_set_clock(&self->d, (int64_t)floor(s * 1000.0 + 1e-6));
    }
    return 0;
}

static inline int key_of(PyObject *key, struct shk_dkey *k)
{
    const char *data;
    Py_ssize_t n;
    uint8_t type;
    if (PyUnicode_Check(key)) {
        if (PyUnicode_IS_COMPACT_ASCII(key)) { /* its bytes are its UTF-8 */
            data = (const char *)PyUnicode_DATA(key);
            n = PyUnicode_GET_LENGTH(key);
        } else if (!(data = PyUnicode_AsUTF8AndSize(key, &n))) {
            if (PyErr_ExceptionMatches(PyExc_UnicodeEncodeError)) { /* a lone surrogate */
                PyErr_Clear();
                PyErr_SetString(PyExc_ValueError, "dict key: a str with a lone surrogate is "
                                "not UTF-8 text; use bytes (str.encode(\"utf-8\", "
                                "\"surrogateescape\"))");
            }
            return -1;
        }
        type = SHK_DK_STR;
    } else if (PyBytes_Check(key)) {
        data = PyBytes_AS_STRING(key);
        n = PyBytes_GET_SIZE(key);
        type = SHK_DK_BYTES;
    } else {
        PyErr_Format(PyExc_TypeError, "dict keys must be str or bytes, not %.100s",
                     Py_TYPE(key)->tp_name);
        return -1;
    }
    if ((size_t)n > SHK_DICT_KEY_MAX) {
        PyErr_Format(shk_py_exc("TooLargeError"), "dict key is %zd bytes long; at most %u are "
                     "allowed", n, SHK_DICT_KEY_MAX);
        return -1;
    }
    shk_dict_key_fill(k, type, data, (uint32_t)n);
    return 0;
}

/* ---- values ------------------------------------------------------------------------ */

/* A value to store: its type and bytes as the core lays them out (shk_dval_*). */
struct enc {
    struct shk_dval_buf b;
    PyObject *owned;        /* bytes that own b.v.data (serialized objects, big ints) */
};

static int encode_bigint(PyObject *v, struct enc *e)
{
    /* int.to_bytes(shk_dval_bigint_len(bit_length), "little", signed=True): rare enough
     * for Python */
    PyObject *bits = PyObject_CallMethod(v, "bit_length", NULL), *args = NULL, *b = NULL;
    Py_ssize_t n = bits ? PyLong_AsSsize_t(bits) : -1;
    PyObject *to_bytes = n >= 0 ? PyObject_GetAttrString(v, "to_bytes") : NULL;
    if (to_bytes && (args = Py_BuildValue("(Ks)", (unsigned long long)shk_dval_bigint_len(
                                              (uint64_t)n), "little")) != NULL)
        b = PyObject_Call(to_bytes, args, signed_kw);
    Py_XDECREF(bits);
    Py_XDECREF(to_bytes);
    Py_XDECREF(args);
    if (!b)
        return -1;
    e->owned = b;
    shk_dval_bytes(&e->b, SHK_DV_BIGINT, PyBytes_AS_STRING(b), (uint64_t)PyBytes_GET_SIZE(b));
    return 0;
}

/* An int (any size; a bool counts as one) or a float, as the core's number. */
static int encode_number(PyObject *v, struct enc *e)
{
    e->owned = NULL;
    if (PyFloat_Check(v)) {
        shk_dval_float(&e->b, PyFloat_AS_DOUBLE(v));
        return 0;
    }
    int overflow;
    long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
    if (x == -1 && PyErr_Occurred())
        return -1;
    if (overflow)
        return encode_bigint(v, e);
    shk_dval_int(&e->b, x);
    return 0;
}

static int encode(DictObject *self, PyObject *v, struct enc *e)
{
    PyTypeObject *t = Py_TYPE(v);
    e->owned = NULL;
    if (t == &PyBytes_Type) {
        shk_dval_bytes(&e->b, SHK_DV_BYTES, PyBytes_AS_STRING(v), (uint64_t)PyBytes_GET_SIZE(v));
        return 0;
    }
    if (t == &PyUnicode_Type) {
        Py_ssize_t n;
        const char *s;
        if (PyUnicode_IS_COMPACT_ASCII(v)) {
            s = (const char *)PyUnicode_DATA(v);
            n = PyUnicode_GET_LENGTH(v);
        } else {
            s = PyUnicode_AsUTF8AndSize(v, &n);
        }
        if (s) {
            shk_dval_bytes(&e->b, SHK_DV_STR, s, (uint64_t)n);
            return 0;
        }
        if (!PyErr_ExceptionMatches(PyExc_UnicodeEncodeError))
            return -1;
        PyErr_Clear(); /* lone surrogates are not UTF-8: the serializer keeps them */
    } else if (t == &PyLong_Type || t == &PyFloat_Type) {
        return encode_number(v, e);
    } else if (v == Py_True || v == Py_False) {
        shk_dval_bool(&e->b, v == Py_True);
        return 0;
    } else if (v == Py_None) {
        shk_dval_none(&e->b);
        return 0;
    }
    PyObject *b;
    if (self->dumps) {
        b = PyObject_CallOneArg(self->dumps, v);
    } else {
        PyObject *args[2] = {v, NULL};
        args[1] = PyLong_FromLong(5);
        b = args[1] ? PyObject_Vectorcall(pickle_dumps, args, 2, NULL) : NULL;
        Py_XDECREF(args[1]);
    }
    if (!b)
        return -1;
    if (!PyBytes_Check(b)) {
        PyObject *bb = PyBytes_FromObject(b);
        Py_DECREF(b);
        if (!bb) {
            PyErr_SetString(PyExc_TypeError, "the dict's serializer must return bytes");
            return -1;
        }
        b = bb;
    }
    e->owned = b;
    shk_dval_bytes(&e->b, SHK_DV_OBJECT, PyBytes_AS_STRING(b), (uint64_t)PyBytes_GET_SIZE(b));
    return 0;
}

static PyObject *corrupt_value(uint8_t type)
{
    PyErr_Format(shk_py_exc("CorruptedError"), "dict value has unknown type %u or a wrong length",
                 type);
    return NULL;
}

static PyObject *decode_list(DictObject *self, const uint8_t *p, uint64_t len);

static PyObject *decode(DictObject *self, uint8_t type, const uint8_t *p, uint64_t len)
{
    int64_t i;
    double f;
    switch (type) {
    case SHK_DV_BYTES:
        return PyBytes_FromStringAndSize((const char *)p, (Py_ssize_t)len);
    case SHK_DV_STR:
        return PyUnicode_DecodeUTF8((const char *)p, (Py_ssize_t)len, "surrogateescape"); /* corrupted: not UTF-8 (issue 13) */
    case SHK_DV_INT:
        if (shk_dval_number(type, p, len, &i, &f))
            return corrupt_value(type);
        return PyLong_FromLongLong(i);
    case SHK_DV_FLOAT:
        if (shk_dval_number(type, p, len, &i, &f))
            return corrupt_value(type);
        return PyFloat_FromDouble(f);
    case SHK_DV_TRUE:
        Py_RETURN_TRUE;
    case SHK_DV_FALSE:
        Py_RETURN_FALSE;
    case SHK_DV_NONE:
        Py_RETURN_NONE;
    case SHK_DV_BIGINT: { /* int.from_bytes(p, "little", signed=True) */
        PyObject *args = Py_BuildValue("(y#s)", (const char *)p, (Py_ssize_t)len, "little");
        PyObject *r = args ? PyObject_Call(int_from_bytes, args, signed_kw) : NULL;
        Py_XDECREF(args);
        return r;
    }
    case SHK_DV_OBJECT: {
        PyObject *b = PyBytes_FromStringAndSize((const char *)p, (Py_ssize_t)len);
        if (!b)
            return NULL;
        PyObject *r = PyObject_CallOneArg(self->loads ? self->loads : pickle_loads, b);
        Py_DECREF(b);
        return r;
    }
    case SHK_DV_LIST:
        return decode_list(self, p, len);
    default:
        return corrupt_value(type);
    }
}

/* A Python list from a list's packed elements (dict.h). */
static PyObject *decode_list(DictObject *self, const uint8_t *p, uint64_t len)
{
    PyObject *list = PyList_New(0);
    uint64_t pos = 0;
    struct shk_dval e;
    int more = 0;
    while (list && (more = shk_dict_list_next(p, len, &pos, &e)) == 1) {
        PyObject *v = decode(self, e.type, e.data, e.len);
        if (!v || PyList_Append(list, v) < 0)
            Py_CLEAR(list);
        Py_XDECREF(v);
    }
    if (list && more) {
        Py_DECREF(list);
        return corrupt_value(SHK_DV_LIST);
    }
    return list;
}

/* ---- values handed back: a buffer that grows to what the core needs ------------------- */

struct out {
    uint8_t *buf;
    uint64_t cap;
    PyObject *bytes;        /* when buf is its storage: a bytes value becomes it, uncopied */
    void *heap;
    uint8_t stack[STACK_BUF];
};

static inline void out_init(struct out *o)
{
    o->buf = o->stack;
    o->cap = sizeof o->stack;
    o->bytes = NULL;
    o->heap = NULL;
}

static void out_free(struct out *o)
{
    Py_CLEAR(o->bytes);
    if (o->heap)
        PyMem_Free(o->heap);
    o->heap = NULL;
}

/* After ENOBUFS: room for the f->len bytes the core asked for (always more than before,
 * so a value that keeps growing cannot keep the caller long).  0 or RAISED. */
static int out_grow(struct out *o, const struct shk_dict_found *f)
{
    out_free(o);
    o->buf = NULL;
    if (f->vtype == SHK_DV_BYTES) {
        if ((o->bytes = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)f->len)) != NULL)
            o->buf = (uint8_t *)PyBytes_AS_STRING(o->bytes);
    } else if (!(o->buf = o->heap = PyMem_Malloc(f->len ? f->len : 1))) {
        PyErr_NoMemory();
    }
    o->cap = f->len;
    return o->buf ? 0 : RAISED;
}

/* ---- a call again: after a busy shard, or into a larger buffer ----------------------- */

/* The exception for a call's result r, unless it is RAISED (then it is set already). */
static PyObject *fail(int r, const char *what)
{
    return r == RAISED ? NULL : shk_py_raise(r, what);
}

static int fail_int(int r, const char *what)
{
    return r == RAISED ? -1 : shk_py_raise_int(r, what);
}

/*
 * Shard `shard`'s lock is held elsewhere (a call answered EBUSY, having done nothing):
 * wait until it is free, in the one wait shape (shk_dict_shard_op through shk_py_wait:
 * the GIL released, signal handlers run, a dead holder's mess repaired; no deadline, as
 * the dict's methods have no timeout).  0: make the call again; RAISED.
 */
static int wait_shard(DictObject *self, uint32_t shard)
{
    struct shk_dict_shard_wait sw = {&self->d, shard};
    struct shk_wait w = SHK_WAIT_INIT(SHK_FOREVER, 0);
    int r = shk_py_wait(&shk_dict_shard_op, &sw, &w, 0, NULL);
    if (r == SHK_PY_ERR)
        return RAISED;
    if (r)
        return shk_py_raise_int(r, "dict shard lock");
    return ready(self); /* closed meanwhile by another thread? */
}

/* again() for any shard (the calls that have no key say which one).  Out of line: it is
 * the slow path of every call. */
static __attribute__((noinline)) int again_at(DictObject *self, int *r, uint32_t shard, struct out *o,
                    const struct shk_dict_found *f)
{
    if (*r == EBUSY)
        *r = wait_shard(self, shard);
    else if (*r == ENOBUFS && o)
        *r = out_grow(o, f);
    else
        return 0;
    return *r == 0;
}

/*
 * After a call about key k: 1 when it must be made again, 0 when *r is its answer.
 * EBUSY: wait for k's shard (wait_shard).  ENOBUFS from a call that hands a value back
 * into o: grow o to the room the call asked for (f->len; it only grows, and is bounded by
 * the shard, so this ends).  *r is RAISED when either raised.
 */
static inline int again(DictObject *self, int *r, const struct shk_dkey *k, struct out *o,
                        const struct shk_dict_found *f)
{
    if (__builtin_expect(*r != EBUSY && (*r != ENOBUFS || !o), 1)) /* o: often a constant */
        return 0;
    return again_at(self, r, shk_dict_shard_of(&self->d, k), o, f);
}

/* The value a call put in o: 1 (*obj set), 0 (SHK_ENOTFOUND), -1 (raised). */
static int out_result(DictObject *self, int r, struct out *o, const struct shk_dict_found *f,
                      PyObject **obj, const char *what)
{
    if (r == 0) {
        if (f->vtype == SHK_DV_BYTES && o->bytes && (uint64_t)PyBytes_GET_SIZE(o->bytes) == f->len)
            *obj = Py_NewRef(o->bytes);
        else
            *obj = decode(self, f->vtype, o->buf, f->len);
        return *obj ? 1 : -1;
    }
    if (r == SHK_ENOTFOUND)
        return 0;
    return fail_int(r, what);
}

/* ---- lookups -------------------------------------------------------------------------- */

/* What the first lookup did not finish (r): a value too large for the stack, a busy
 * shard.  Out of line, so that fetch() stays small enough to inline into its callers. */
static __attribute__((noinline)) int fetch_slow(DictObject *self, const struct shk_dkey *k, int flags, PyObject **obj,
                      struct shk_dict_found *f, int r)
{
    struct out o;
    out_init(&o);
    while (again(self, &r, k, &o, f))
        r = shk_dict_get(&self->d, k, flags, o.buf, o.cap, f);
    r = out_result(self, r, &o, f, obj, "dict get");
    out_free(&o);
    return r;
}

/*
 * Look k up: 1 found (*obj: new reference), 0 missing (or expired), -1 error.  The inline
 * lookup, else the core's, copy the value to the stack and the object is built from that
 * copy; anything larger, or a shard busy with a writer, goes to fetch_slow.
 */
static inline int fetch(DictObject *self, const struct shk_dkey *k, int flags, PyObject **obj,
                        struct shk_dict_found *f)
{
    union {
        int64_t i;
        double f;
        uint8_t b[STACK_BUF];
    } local;
    int r = flags ? SHK_DICT_SLOW : shk_dict_get_fast(&self->d, k, local.b, sizeof local, f);
    if (r == SHK_DICT_SLOW)
        r = shk_dict_get(&self->d, k, flags, local.b, sizeof local, f);
    if (__builtin_expect(r == 0, 1)) {
        switch (f->vtype) {
        case SHK_DV_BYTES:
            *obj = PyBytes_FromStringAndSize((const char *)local.b, (Py_ssize_t)f->len);
            break;
        case SHK_DV_INT: /* 8 bytes: checked by the lookup */
            *obj = PyLong_FromLongLong(local.i);
            break;
        case SHK_DV_FLOAT:
            *obj = PyFloat_FromDouble(local.f);
            break;
        default:
            *obj = decode(self, f->vtype, local.b, f->len);
        }
        return *obj ? 1 : -1;
    }
    if (r == SHK_ENOTFOUND)
        return 0;
    if (r == ENOBUFS || r == EBUSY)
        return fetch_slow(self, k, flags, obj, f, r);
    shk_py_raise(r, "dict get");
    return -1;
}

/* get(key, default), get_with_flags and get_stale: the value and what goes with it. */
static inline __attribute__((always_inline)) PyObject *
get_as(DictObject *self, PyObject *const *args, Py_ssize_t nargs, const char *fname, int flags,
       const char *found, const char *missing)
{
    struct shk_dkey k;
    struct shk_dict_found f;
    PyObject *v;
    if (nargs < 1 || nargs > 2)
        return PyErr_Format(PyExc_TypeError, "%s() takes 1 or 2 arguments (%zd given)", fname,
                            nargs);
    if (ready(self) < 0 || key_of(args[0], &k) < 0)
        return NULL;
    int r = fetch(self, &k, flags, &v, &f);
    PyObject *dflt = nargs > 1 ? args[1] : Py_None;
    if (r > 0)
        return found ? Py_BuildValue(found, v, (unsigned long)f.flags, f.stale ? Py_True : Py_False)
                     : v;
    if (r == 0)
        return missing ? Py_BuildValue(missing, dflt, 0, Py_False) : Py_NewRef(dflt);
    return NULL;
}

/* A method that is another one with fixed arguments (so that the method table can name it). */
#define VARIANT(name, impl, ...)                                                          \
    static PyObject *Dict_##name(DictObject *self, PyObject *const *args, Py_ssize_t nargs) \
    {                                                                                     \
        return impl(self, args, nargs, __VA_ARGS__);                                      \
    }
#define VARIANT_KW(name, impl, ...)                                                       \
    static PyObject *Dict_##name(DictObject *self, PyObject *const *args, Py_ssize_t nargs, \
                                 PyObject *kwnames)                                       \
    {                                                                                     \
        return impl(self, args, nargs, kwnames, __VA_ARGS__);                             \
    }

VARIANT(get, get_as, "get", 0, NULL, NULL)
VARIANT(get_with_flags, get_as, "get_with_flags", 0, "(Nk)", "(Oi)")
VARIANT(get_stale, get_as, "get_stale", SHK_DSTALE, "(NkO)", "(OiO)")

static PyObject *Dict_subscript(DictObject *self, PyObject *key)
{
    struct shk_dkey k;
    struct shk_dict_found f;
    PyObject *v;
    if (ready(self) < 0 || key_of(key, &k) < 0)
        return NULL;
    int r = fetch(self, &k, 0, &v, &f);
    if (r > 0)
        return v;
    if (r == 0)
        PyErr_SetObject(PyExc_KeyError, key);
    return NULL;
}

static int Dict_contains(DictObject *self, PyObject *key)
{
    struct shk_dkey k;
    struct shk_dict_found f;
    int r;
    if (ready(self) < 0 || key_of(key, &k) < 0)
        return -1;
    /* a membership test is a lookup like get(): it counts, and marks the item as used */
    do
        r = shk_dict_get(&self->d, &k, SHK_DPEEK, NULL, 0, &f);
    while (again(self, &r, &k, NULL, NULL));
    if (r == 0 || r == SHK_ENOTFOUND)
        return r == 0;
    return fail_int(r, "dict contains");
}

/* ---- arguments ---------------------------------------------------------------------- */

/* The first nreq of out[] (from shk_py_parse_args) must be given.  0, or -1 with TypeError. */
static int required(const char *fname, const char *const *names, int nreq, PyObject **out)
{
    for (int i = 0; i < nreq; i++) {
        if (!out[i]) {
            PyErr_Format(PyExc_TypeError, "%s() missing required argument '%s'", fname,
                         names[i]);
            return -1;
        }
    }
    return 0;
}

/* Seconds (None / 0: never) to milliseconds, rounded, at least 1 for any positive ttl. */
static int parse_ttl(const char *what, PyObject *o, uint64_t *ms)
{
    *ms = 0;
    if (!o || o == Py_None)
        return 0;
    double t = PyFloat_AsDouble(o);
    if (t == -1.0 && PyErr_Occurred()) {
        PyErr_Format(PyExc_TypeError, "%s must be a number of seconds or None, not %.100s", what,
                     Py_TYPE(o)->tp_name);
        return -1;
    }
    if (!(t >= 0) || t > 1e10) {
        PyErr_Format(PyExc_ValueError, "%s must be from 0 to 1e10 seconds (0 or None: never "
                     "expires), not %R", what, o);
        return -1;
    }
    uint64_t m = (uint64_t)llround(t * 1000.0);
    *ms = m == 0 && t > 0 ? 1 : m;
    return 0;
}

static int parse_flags(PyObject *o, uint32_t *flags)
{
    *flags = 0;
    if (!o)
        return 0;
    if (!PyLong_Check(o)) {
        PyErr_Format(PyExc_TypeError, "flags must be an int, not %.100s", Py_TYPE(o)->tp_name);
        return -1;
    }
    int overflow;
    long long x = PyLong_AsLongLongAndOverflow(o, &overflow);
    if (overflow || x < 0 || x > UINT32_MAX) {
        PyErr_Format(PyExc_ValueError, "flags must be from 0 to 2**32-1, not %R", o);
        return -1;
    }
    *flags = (uint32_t)x;
    return 0;
}

/* ---- writes -------------------------------------------------------------------------------- */

/* 1 stored, 0 not stored (add: exists; replace: missing), -1 error. */
static int store(DictObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
                 int mode, const char *fname, uint32_t *evicted)
{
    static const char *const names[] = {"key", "value", "ttl", "flags"};
    PyObject *a[4] = {NULL, NULL, NULL, NULL};
    if (kwnames == NULL && nargs == 2) {
        a[0] = args[0];
        a[1] = args[1];
    } else if (shk_py_parse_args(args, nargs, kwnames, fname, names, 4, a) < 0 ||
               required(fname, names, 2, a) < 0) {
        return -1;
    }
    struct shk_dkey k;
    uint64_t ttl;
    uint32_t flags;
    struct enc e;
    int r;
    if (ready(self) < 0 || key_of(a[0], &k) < 0 || parse_ttl("ttl", a[2], &ttl) < 0 ||
        parse_flags(a[3], &flags) < 0 || encode(self, a[1], &e) < 0)
        return -1;
    do
        r = shk_dict_store(&self->d, &k, e.b.v.type, e.b.v.data, e.b.v.len, flags, ttl, mode, 0,
                           evicted);
    while (again(self, &r, &k, NULL, NULL));
    Py_XDECREF(e.owned);
    if (r == 0 || r == SHK_EEXISTS || r == SHK_ENOTFOUND)
        return r == 0;
    return fail_int(r, fname);
}

/* set: how many items were evicted; safe_set: None; add, replace...: whether it stored. */
static PyObject *store_as(DictObject *self, PyObject *const *args, Py_ssize_t nargs,
                          PyObject *kwnames, int mode, const char *fname)
{
    uint32_t evicted = 0;
    int r = store(self, args, nargs, kwnames, mode, fname, &evicted);
    if (r < 0)
        return NULL;
    if (mode == SHK_DSET)
        return PyLong_FromUnsignedLong(evicted);
    if (mode == (SHK_DSET | SHK_DSAFE))
        Py_RETURN_NONE;
    return PyBool_FromLong(r);
}

VARIANT_KW(set, store_as, SHK_DSET, "set")
VARIANT_KW(safe_set, store_as, SHK_DSET | SHK_DSAFE, "safe_set")

VARIANT_KW(add, store_as, SHK_DADD, "add")
VARIANT_KW(safe_add, store_as, SHK_DADD | SHK_DSAFE, "safe_add")
VARIANT_KW(replace, store_as, SHK_DREPLACE, "replace")

/* 1 deleted, 0 was not there, -1 error. */
static int delete_key(DictObject *self, PyObject *key)
{
    struct shk_dkey k;
    int r;
    if (ready(self) < 0 || key_of(key, &k) < 0)
        return -1;
    do
        r = shk_dict_delete(&self->d, &k, 0);
    while (again(self, &r, &k, NULL, NULL));
    if (r == 0 || r == SHK_ENOTFOUND)
        return r == 0;
    return fail_int(r, "delete");
}

static int Dict_ass_subscript(DictObject *self, PyObject *key, PyObject *value)
{
    struct shk_dkey k;
    struct enc e;
    uint32_t evicted;
    int r;
    if (!value) {
        r = delete_key(self, key);
        if (r == 0)
            PyErr_SetObject(PyExc_KeyError, key);
        return r > 0 ? 0 : -1;
    }
    if (ready(self) < 0 || key_of(key, &k) < 0 || encode(self, value, &e) < 0)
        return -1;
    do
        r = shk_dict_store(&self->d, &k, e.b.v.type, e.b.v.data, e.b.v.len, 0, 0, SHK_DSET, 0,
                           &evicted);
    while (again(self, &r, &k, NULL, NULL));
    Py_XDECREF(e.owned);
    return r ? fail_int(r, "set") : 0;
}

static PyObject *Dict_delete(DictObject *self, PyObject *key)
{
    int r = delete_key(self, key);
    return r < 0 ? NULL : PyBool_FromLong(r);
}

/* pop(key[, default]) and the list pops (which = left or right): the value taken out. */
static inline __attribute__((always_inline)) PyObject *
take(DictObject *self, PyObject *const *args, Py_ssize_t nargs, int which, const char *fname)
{
    struct shk_dkey k;
    struct shk_dict_found f;
    struct out o;
    PyObject *v = NULL;
    int r;
    if (nargs < 1 || nargs > 2)
        return PyErr_Format(PyExc_TypeError, "%s() takes 1 or 2 arguments (%zd given)", fname,
                            nargs);
    if (ready(self) < 0 || key_of(args[0], &k) < 0)
        return NULL;
    out_init(&o);
    do
        r = which < 0 ? shk_dict_take(&self->d, &k, 0, o.buf, o.cap, &f)
                      : shk_dict_pop(&self->d, &k, which, 0, o.buf, o.cap, &f);
    while (again(self, &r, &k, &o, &f));
    r = out_result(self, r, &o, &f, &v, fname);
    out_free(&o);
    if (r != 0)
        return v;
    if (nargs > 1)
        return Py_NewRef(args[1]);
    if (which >= 0)
        Py_RETURN_NONE;
    PyErr_SetObject(PyExc_KeyError, args[0]);
    return NULL;
}

VARIANT(pop, take, -1, "pop")
VARIANT(lpop, take, 0, "lpop")
VARIANT(rpop, take, 1, "rpop")

static PyObject *push(DictObject *self, PyObject *const *args, Py_ssize_t nargs, int right,
                      const char *fname)
{
    struct shk_dkey k;
    struct enc e;
    uint64_t len = 0;
    uint32_t evicted;
    int r;
    if (nargs != 2)
        return PyErr_Format(PyExc_TypeError, "%s() takes 2 arguments (%zd given)", fname, nargs);
    if (ready(self) < 0 || key_of(args[0], &k) < 0 || encode(self, args[1], &e) < 0)
        return NULL;
    do
        r = shk_dict_push(&self->d, &k, right, e.b.v.type, e.b.v.data, e.b.v.len, 0, &len,
                          &evicted);
    while (again(self, &r, &k, NULL, NULL));
    Py_XDECREF(e.owned);
    return r ? fail(r, fname) : PyLong_FromUnsignedLongLong(len);
}

VARIANT(lpush, push, 0, "lpush")
VARIANT(rpush, push, 1, "rpush")

static PyObject *Dict_llen(DictObject *self, PyObject *key)
{
    struct shk_dkey k;
    uint64_t n = 0;
    int r;
    if (ready(self) < 0 || key_of(key, &k) < 0)
        return NULL;
    do
        r = shk_dict_llen(&self->d, &k, 0, &n);
    while (again(self, &r, &k, NULL, NULL));
    return r ? fail(r, "llen") : PyLong_FromUnsignedLongLong(n);
}

static PyObject *Dict_ttl(DictObject *self, PyObject *key)
{
    struct shk_dkey k;
    int64_t ms = 0;
    int r;
    if (ready(self) < 0 || key_of(key, &k) < 0)
        return NULL;
    do
        r = shk_dict_ttl(&self->d, &k, 0, &ms);
    while (again(self, &r, &k, NULL, NULL));
    if (r == SHK_ENOTFOUND) {
        PyErr_SetObject(PyExc_KeyError, key);
        return NULL;
    }
    if (r)
        return fail(r, "ttl");
    if (ms < 0)
        Py_RETURN_NONE;
    return PyFloat_FromDouble((double)ms / 1000.0);
}

static PyObject *Dict_expire(DictObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    struct shk_dkey k;
    uint64_t ttl;
    int r;
    if (nargs != 2)
        return PyErr_Format(PyExc_TypeError, "expire() takes 2 arguments (%zd given)", nargs);
    if (ready(self) < 0 || key_of(args[0], &k) < 0 || parse_ttl("ttl", args[1], &ttl) < 0)
        return NULL;
    do
        r = shk_dict_expire(&self->d, &k, ttl, 0);
    while (again(self, &r, &k, NULL, NULL));
    if (r == 0 || r == SHK_ENOTFOUND)
        return PyBool_FromLong(r == 0);
    return fail(r, "expire");
}

static PyObject *Dict_incr(DictObject *self, PyObject *const *args, Py_ssize_t nargs,
                           PyObject *kwnames)
{
    static const char *const names[] = {"key", "step", "init", "init_ttl"};
    PyObject *a[4], *result = NULL;
    struct shk_dkey k;
    uint64_t init_ttl;
    struct enc step = {.owned = NULL}, init = {.owned = NULL};
    struct shk_dict_found f;
    struct out o;
    int r;
    if (shk_py_parse_args(args, nargs, kwnames, "incr", names, 4, a) < 0 ||
        required("incr", names, 1, a) < 0 || ready(self) < 0 ||
        key_of(a[0], &k) < 0 || parse_ttl("init_ttl", a[3], &init_ttl) < 0)
        return NULL;
    int has_init = a[2] && a[2] != Py_None;
    if (a[1] && !PyLong_Check(a[1]) && !PyFloat_Check(a[1]))
        return PyErr_Format(PyExc_TypeError, "incr() step must be an int or a float, not %.100s",
                            Py_TYPE(a[1])->tp_name);
    if (has_init && !PyLong_Check(a[2]) && !PyFloat_Check(a[2]))
        return PyErr_Format(PyExc_TypeError, "incr() init must be an int, a float or None, not "
                            "%.100s", Py_TYPE(a[2])->tp_name);
    shk_dval_int(&step.b, 1);
    if ((a[1] && encode_number(a[1], &step) < 0) || (has_init && encode_number(a[2], &init) < 0))
        goto out;
    out_init(&o);
    do
        r = shk_dict_incr(&self->d, &k, &step.b.v, has_init ? &init.b.v : NULL, init_ttl, 0, o.buf,
                          o.cap, &f);
    while (again(self, &r, &k, &o, &f));
    if (r == SHK_ENOTFOUND)
        PyErr_SetObject(PyExc_KeyError, a[0]);
    else if (r == ERANGE) /* Python's word for an int too large for a float */
        PyErr_SetString(PyExc_OverflowError, shk_error_detail());
    else
        out_result(self, r, &o, &f, &result, "incr");
    out_free(&o);
out:
    Py_XDECREF(step.owned);
    Py_XDECREF(init.owned);
    return result;
}

static PyObject *Dict_setdefault(DictObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    struct shk_dkey k;
    struct shk_dict_found f;
    struct enc e;
    struct out o;
    PyObject *result = NULL;
    int r;
    if (nargs < 1 || nargs > 2)
        return PyErr_Format(PyExc_TypeError, "setdefault() takes 1 or 2 arguments (%zd given)",
                            nargs);
    PyObject *dflt = nargs > 1 ? args[1] : Py_None;
    if (ready(self) < 0 || key_of(args[0], &k) < 0 || encode(self, dflt, &e) < 0)
        return NULL;
    out_init(&o);
    do
        r = shk_dict_setdefault(&self->d, &k, e.b.v.type, e.b.v.data, e.b.v.len, 0, o.buf,
                                o.cap, &f);
    while (again(self, &r, &k, &o, &f));
    if (r == 0)
        result = Py_NewRef(dflt);
    else
        out_result(self, r == SHK_EEXISTS ? 0 : r, &o, &f, &result, "setdefault");
    out_free(&o);
    Py_XDECREF(e.owned);
    return result;
}

/* ---- whole-dict operations and bookkeeping ------------------------------------------------ */

static Py_ssize_t Dict_length(DictObject *self)
{
    uint64_t n = 0;
    int r;
    if (ready(self) < 0)
        return -1;
    do /* EBUSY: n is the busy shard */
        r = shk_dict_count(&self->d, 0, &n);
    while (again_at(self, &r, (uint32_t)n, NULL, NULL));
    return r ? fail_int(r, "len") : (Py_ssize_t)n;
}

/* flush_all() (all) and flush_expired(): how many items went, the GIL released. */
static PyObject *flush(DictObject *self, int all, unsigned long long max)
{
    uint64_t n;
    int r;
    if (ready(self) < 0)
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    r = all ? shk_dict_flush_all(&self->d, &n) : shk_dict_flush_expired(&self->d, max, &n);
    Py_END_ALLOW_THREADS
    if (r)
        return shk_py_raise(r, all ? "flush_all" : "flush_expired");
    return PyLong_FromUnsignedLongLong(n);
}

static PyObject *Dict_flush_all(DictObject *self, PyObject *unused)
{
    return flush(self, 1, 0);
}

static PyObject *Dict_flush_expired(DictObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    unsigned long long max = 0;
    if (nargs > 1)
        return PyErr_Format(PyExc_TypeError, "flush_expired() takes at most 1 argument");
    if (nargs == 1) {
        long long m = PyLong_AsLongLong(args[0]);
        if (m == -1 && PyErr_Occurred())
            return NULL;
        if (m < 0)
            return PyErr_Format(PyExc_ValueError, "max_count must be >= 0 (0: all), not %lld", m);
        max = (unsigned long long)m;
    }
    return flush(self, 0, max);
}

static PyObject *Dict_capacity(DictObject *self, PyObject *unused)
{
    if (ready(self) < 0)
        return NULL;
    return PyLong_FromUnsignedLongLong(self->d.hdr->capacity);
}

static PyObject *Dict_free_space(DictObject *self, PyObject *unused)
{
    struct shk_dict_stats st;
    if (ready(self) < 0)
        return NULL;
    shk_dict_stats(&self->d, &st);
    return PyLong_FromUnsignedLongLong(st.free_bytes);
}

static PyObject *Dict_stats(DictObject *self, PyObject *unused)
{
    struct shk_dict_stats st;
    if (ready(self) < 0)
        return NULL;
    shk_dict_publish_counts(&self->d);
    shk_dict_stats(&self->d, &st);
    return shk_py_fields(&st, shk_dict_stats_fields);
}

static PyObject *Dict_item_size(DictObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    struct shk_dkey k;
    struct enc e;
    if (nargs != 2)
        return PyErr_Format(PyExc_TypeError, "item_size() takes 2 arguments (%zd given)", nargs);
    if (key_of(args[0], &k) < 0 || encode(self, args[1], &e) < 0)
        return NULL;
    uint64_t n = shk_dict_item_bytes(k.len, e.b.v.len);
    Py_XDECREF(e.owned);
    return PyLong_FromUnsignedLongLong(n);
}

static int dict_checker(void *obj, char *report, size_t cap)
{
    return shk_dict_check((struct shk_dict *)obj, report, cap);
}

static PyObject *Dict_check(DictObject *self, PyObject *unused)
{
    if (ready(self) < 0)
        return NULL;
    return shk_py_check_report(dict_checker, &self->d);
}

/* Keys from the core's records (shk_dict_scan): a list of keys, or with `refs` of (key,
 * referenced) pairs (shk_dict_debug_queue). */
static PyObject *key_records(const uint8_t *buf, uint32_t n, int refs)
{
    PyObject *keys = PyList_New(n);
    uint64_t pos = 0;
    struct shk_dict_keyrec kr;
    for (uint32_t i = 0; keys && i < n; i++) {
        shk_dict_keyrec_next(buf, &pos, &kr);
        PyObject *key = kr.type == SHK_DK_STR
                            ? PyUnicode_DecodeUTF8((const char *)kr.data, kr.len, "surrogateescape")
                            : PyBytes_FromStringAndSize((const char *)kr.data, kr.len);
        if (key && refs)
            key = Py_BuildValue("(NO)", key, kr.mark ? Py_True : Py_False);
        if (!key)
            Py_CLEAR(keys);
        else
            PyList_SET_ITEM(keys, i, key);
    }
    return keys;
}

/* _scan(cursor) -> (next cursor or None, [keys of a few buckets]) */
static PyObject *Dict_scan(DictObject *self, PyObject *arg)
{
    uint64_t cur = PyLong_AsUnsignedLongLong(arg);
    struct shk_dict_found f = {.vtype = 0, .len = SCAN_BUF}; /* room for many buckets */
    struct out o;
    uint32_t n;
    int r;
    if ((cur == (uint64_t)-1 && PyErr_Occurred()) || ready(self) < 0)
        return NULL;
    out_init(&o);
    if ((r = out_grow(&o, &f)) == 0) /* the cursor moves only when a call succeeds */
        do /* a scan reads the cursor's shard */
            r = shk_dict_scan(&self->d, &cur, 64, 0, o.buf, o.cap, &f.len, &n);
        while (again_at(self, &r, (uint32_t)(cur >> 32), &o, &f));
    PyObject *keys = r ? fail(r, "keys") : key_records(o.buf, n, 0);
    out_free(&o);
    if (!keys)
        return NULL;
    if (cur == UINT64_MAX)
        return Py_BuildValue("(ON)", Py_None, keys);
    return Py_BuildValue("(KN)", (unsigned long long)cur, keys);
}

static PyObject *Dict_set_clock(DictObject *self, PyObject *clock)
{
    if (clock != Py_None && !PyCallable_Check(clock))
        return PyErr_Format(PyExc_TypeError, "clock must be callable or None");
    Py_XSETREF(self->clock, clock == Py_None ? NULL : Py_NewRef(clock));
    if (!self->clock)
        shk_dict_set_clock(&self->d, -1);
    Py_RETURN_NONE;
}

static PyObject *Dict_set_serializer(DictObject *self, PyObject *args)
{
    PyObject *dumps, *loads;
    if (!PyArg_ParseTuple(args, "OO:_set_serializer", &dumps, &loads))
        return NULL;
    if ((dumps != Py_None && !PyCallable_Check(dumps)) || (loads != Py_None && !PyCallable_Check(loads)))
        return PyErr_Format(PyExc_TypeError, "dumps and loads must be callables (or None: pickle)");
    Py_XSETREF(self->dumps, dumps == Py_None ? NULL : Py_NewRef(dumps));
    Py_XSETREF(self->loads, loads == Py_None ? NULL : Py_NewRef(loads));
    Py_RETURN_NONE;
}

static PyObject *Dict_close(DictObject *self, PyObject *unused)
{
    if (self->attached && !self->closed && !self->seg->closed)
        shk_dict_publish_counts(&self->d);
    self->closed = 1;
    Py_RETURN_NONE;
}

static PyObject *Dict_debug_crash_at(DictObject *self, PyObject *arg)
{
    /* Test hook: the next write that reaches this point (enum shk_dict_crash_point)
     * SIGKILLs this process there, holding the shard lock; -point: stops it there
     * (SIGSTOP) once, and the write goes on when the process is continued. */
    long p = PyLong_AsLong(arg);
    if (p == -1 && PyErr_Occurred())
        return NULL;
    self->d.crash_at = (int)(p < 0 ? -p : p);
    self->d.crash_stop = p < 0;
    Py_RETURN_NONE;
}

static PyObject *Dict_debug_queue(DictObject *self, PyObject *arg)
{
    /* Test hook: the eviction queue of one shard, oldest first: [(key, referenced)]. */
    long s = PyLong_AsLong(arg);
    if (s == -1 && PyErr_Occurred())
        return NULL;
    if (ready(self) < 0)
        return NULL;
    if (s < 0 || (uint64_t)s >= self->d.nshards)
        return PyErr_Format(PyExc_IndexError, "shard %ld does not exist", s);
    struct shk_dict_found f = {.vtype = 0};
    struct out o;
    uint32_t n;
    int r;
    out_init(&o);
    do
        r = shk_dict_debug_queue(&self->d, (uint32_t)s, 0, o.buf, o.cap, &f.len, &n);
    while (again_at(self, &r, (uint32_t)s, &o, &f));
    PyObject *out = r ? fail(r, "dict queue") : key_records(o.buf, n, 1);
    out_free(&o);
    return out;
}

/* ---- the type ----------------------------------------------------------------------------- */

static PyObject *Dict_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"zone", "name", "capacity", "shards", "flags", NULL};
    PyObject *zoneobj;
    const char *name;
    unsigned long long capacity = 0;
    unsigned int shards = 0;
    int flags = SHK_DOPEN_CREATE;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O!s|KIi:Dict", kwlist, shk_ZoneType, &zoneobj,
                                     &name, &capacity, &shards, &flags))
        return NULL;
    ZoneObject *z = (ZoneObject *)zoneobj;
    if (shk_zone_check_open(z) < 0)
        return NULL;
    DictObject *self = (DictObject *)type->tp_alloc(type, 0);
    if (!self)
        return NULL;
    int created = 0, r;
    Py_BEGIN_ALLOW_THREADS
    r = shk_dict_open(&self->d, &z->zone, name, capacity, shards, flags, &created);
    Py_END_ALLOW_THREADS
    if (r) {
        Py_DECREF(self);
        return shk_py_raise(r, "dict open");
    }
    shk_py_handle_attach(self, z); /* the mapping stays while this handle lives */
    self->created = created;
    return (PyObject *)self;
}

static int Dict_traverse(DictObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->dumps);
    Py_VISIT(self->loads);
    Py_VISIT(self->clock);
    Py_VISIT(Py_TYPE(self));
    return 0;
}

static int Dict_clear_refs(DictObject *self)
{
    Py_CLEAR(self->dumps);
    Py_CLEAR(self->loads);
    Py_CLEAR(self->clock);
    return 0;
}

static void Dict_dealloc(DictObject *self)
{
    PyObject_GC_UnTrack(self);
    if (self->weakreflist)
        PyObject_ClearWeakRefs((PyObject *)self);
    if (self->attached && !self->seg->closed)
        shk_dict_publish_counts(&self->d);
    Dict_clear_refs(self);
    shk_py_handle_free(self);
}

static PyObject *Dict_get_closed(DictObject *self, void *c)
{
    return PyBool_FromLong(!self->attached || self->closed || self->seg->closed ||
                           self->seg->close_pending);
}

static PyGetSetDef Dict_getset[] = {
    {"closed", (getter)Dict_get_closed, NULL, "True once closed (or its zone is)", NULL},
    {NULL},
};

#define FAST (METH_FASTCALL)
#define FASTKW (METH_FASTCALL | METH_KEYWORDS)
#define M(name, fn, flags, doc) {name, (PyCFunction)(void (*)(void))fn, flags, doc}

static PyMethodDef Dict_methods[] = {
    M("get", Dict_get, FAST, "get(key, default=None, /)\n--\n\n"
      "The value of key, or default when it is missing or expired."),
    M("get_with_flags", Dict_get_with_flags, FAST, "get_with_flags(key, default=None, /)\n--\n\n"
      "(value, flags); (default, 0) when missing or expired."),
    M("get_stale", Dict_get_stale, FAST, "get_stale(key, default=None, /)\n--\n\n"
      "(value, flags, stale): also returns an expired value that is not reclaimed yet, "
      "with stale=True; (default, 0, False) when there is none."),
    M("set", Dict_set, FASTKW, "set(key, value, ttl=None, flags=0)\n--\n\n"
      "Store value under key; evicts least recently used items if the dict is full. "
      "Returns how many unexpired items were evicted (0 almost always)."),
    M("safe_set", Dict_safe_set, FASTKW, "safe_set(key, value, ttl=None, flags=0)\n--\n\n"
      "Like set(), but never evicts unexpired items: ZoneFullError when there is no room "
      "(and the key keeps its previous value)."),
    M("add", Dict_add, FASTKW, "add(key, value, ttl=None, flags=0)\n--\n\n"
      "Store only if key is missing (or expired). True if stored, False if it exists."),
    M("safe_add", Dict_safe_add, FASTKW, "safe_add(key, value, ttl=None, flags=0)\n--\n\n"
      "add() that never evicts: ZoneFullError when there is no room."),
    M("replace", Dict_replace, FASTKW, "replace(key, value, ttl=None, flags=0)\n--\n\n"
      "Store only if key exists (and has not expired). True if replaced, False if missing."),
    M("delete", Dict_delete, METH_O, "delete(key, /)\n--\n\n"
      "Remove key. True if it was there (unexpired)."),
    M("pop", Dict_pop, FAST, "pop(key[, default], /)\n--\n\n"
      "Remove key and return its value (atomically); default, or KeyError, when missing."),
    M("setdefault", Dict_setdefault, FAST, "setdefault(key, default=None, /)\n--\n\n"
      "The value of key; if missing, store default and return it (atomically)."),
    M("incr", Dict_incr, FASTKW, "incr(key, step=1, init=None, init_ttl=None)\n--\n\n"
      "Add step to the number at key atomically and return the new value. A missing or "
      "expired key is KeyError, or, with init, becomes init + step (with init_ttl)."),
    M("ttl", Dict_ttl, METH_O, "ttl(key, /)\n--\n\n"
      "Seconds left before key expires (float), None if it never does; KeyError if missing."),
    M("expire", Dict_expire, FAST, "expire(key, ttl, /)\n--\n\n"
      "Set key's ttl in seconds (0 or None: never expires). False if key is missing."),
    M("lpush", Dict_lpush, FAST, "lpush(key, value, /)\n--\n\n"
      "Insert value at the head of the list at key (created if missing); its new length."),
    M("rpush", Dict_rpush, FAST, "rpush(key, value, /)\n--\n\n"
      "Append value at the tail of the list at key (created if missing); its new length."),
    M("lpop", Dict_lpop, FAST, "lpop(key, default=None, /)\n--\n\n"
      "Remove and return the head of the list at key; default if there is no list."),
    M("rpop", Dict_rpop, FAST, "rpop(key, default=None, /)\n--\n\n"
      "Remove and return the tail of the list at key; default if there is no list."),
    M("llen", Dict_llen, METH_O, "llen(key, /)\n--\n\nLength of the list at key (0 if missing)."),
    M("flush_all", Dict_flush_all, METH_NOARGS, "flush_all()\n--\n\n"
      "Remove every item and free all memory; returns how many items there were."),
    M("flush_expired", Dict_flush_expired, FAST, "flush_expired(max_count=0, /)\n--\n\n"
      "Reclaim expired items (at most max_count; 0: all); returns how many."),
    M("capacity", Dict_capacity, METH_NOARGS, "capacity()\n--\n\nBytes of item memory."),
    M("free_space", Dict_free_space, METH_NOARGS, "free_space()\n--\n\n"
      "Bytes of item memory free right now (whole free cells)."),
    M("item_size", Dict_item_size, FAST, "item_size(key, value, /)\n--\n\n"
      "Bytes an item with this key and value takes in the dict (header included)."),
    M("_stats", Dict_stats, METH_NOARGS, "_stats()\n--\n\nCounters as a dict."),
    M("_check", Dict_check, METH_NOARGS, "_check()\n--\n\n(problems, lines)."),
    M("_scan", Dict_scan, METH_O, "_scan(cursor, /)\n--\n\n(next cursor or None, keys)."),
    M("_set_clock", Dict_set_clock, METH_O, "_set_clock(callable_or_None, /)"),
    M("_set_serializer", Dict_set_serializer, METH_VARARGS, "_set_serializer(dumps, loads, /)"),
    M("_close", Dict_close, METH_NOARGS, "_close()\n--\n\nDetach this handle."),
    M("_debug_crash_at", Dict_debug_crash_at, METH_O, "_debug_crash_at(point, /)"),
    M("_debug_queue", Dict_debug_queue, METH_O, "_debug_queue(shard, /)"),
    {NULL},
};

static PyMemberDef Dict_members[] = {
    {"__weaklistoffset__", T_PYSSIZET, offsetof(DictObject, weakreflist), READONLY},
    {"_created", T_BOOL, offsetof(DictObject, created), READONLY,
     "True if this handle created the dict"},
    {"_offset", T_ULONGLONG, offsetof(DictObject, d.offset), READONLY,
     "offset of the dict in its zone"},
    {NULL},
};

static PyType_Slot Dict_slots[] = {
    {Py_tp_new, Dict_new},
    {Py_tp_dealloc, Dict_dealloc},
    {Py_tp_traverse, Dict_traverse},
    {Py_tp_clear, Dict_clear_refs},
    {Py_tp_methods, Dict_methods},
    {Py_tp_members, Dict_members},
    {Py_tp_getset, Dict_getset},
    {Py_mp_subscript, Dict_subscript},
    {Py_mp_ass_subscript, Dict_ass_subscript},
    {Py_mp_length, Dict_length},
    {Py_sq_contains, Dict_contains},
    {Py_tp_doc, "The shared dict's C half (internal; use shmkit.Dict)."},
    {0, NULL},
};

int shk_init_dict(PyObject *m)
{
    PyObject *pickle = PyImport_ImportModule("pickle");
    if (!pickle)
        return -1;
    pickle_dumps = PyObject_GetAttrString(pickle, "dumps");
    pickle_loads = PyObject_GetAttrString(pickle, "loads");
    Py_DECREF(pickle);
    int_from_bytes = PyObject_GetAttrString((PyObject *)&PyLong_Type, "from_bytes");
    signed_kw = Py_BuildValue("{sO}", "signed", Py_True);
    if (!pickle_dumps || !pickle_loads || !int_from_bytes || !signed_kw)
        return -1;
    PyType_Spec spec = {"shmkit._core.Dict", sizeof(DictObject), 0,
                        Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC, Dict_slots};
    DictType = (PyTypeObject *)PyType_FromSpec(&spec);
    if (!DictType)
        return -1;
    static const struct shk_py_int ints[] = {
        {"DICT_MAX_SHARDS", SHK_DICT_MAX_SHARDS},
        {"DICT_OPEN_CREATE", SHK_DOPEN_CREATE}, {"DICT_OPEN_STRICT", SHK_DOPEN_STRICT},
        {"DCRASH_AFTER_ALLOC", SHK_DCRASH_AFTER_ALLOC},
        {"DCRASH_HALF_WRITTEN", SHK_DCRASH_HALF_WRITTEN},
        {"DCRASH_AFTER_PUBLISH", SHK_DCRASH_AFTER_PUBLISH},
        {"DCRASH_MID_FREE", SHK_DCRASH_MID_FREE}, {"DCRASH_MID_LRU", SHK_DCRASH_MID_LRU},
        {"DCRASH_MID_EVICT", SHK_DCRASH_MID_EVICT}, {"DCRASH_MID_LIST", SHK_DCRASH_MID_LIST},
        {"DCRASH_MID_FLUSH", SHK_DCRASH_MID_FLUSH}, {"DCRASH_IN_PLACE", SHK_DCRASH_IN_PLACE},
        {"DCRASH_MID_INPLACE", SHK_DCRASH_MID_INPLACE}, {NULL}};
    if (shk_py_add_ints(m, ints) < 0)
        return -1;
    return PyModule_AddObjectRef(m, "Dict", (PyObject *)DictType);
}
