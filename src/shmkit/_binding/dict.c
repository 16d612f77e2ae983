/*
 * dict.c (binding) - shmkit._core.Dict: the shared dict's methods, as thin as it goes.
 *
 * Here: argument parsing, key and value encoding (so that the hot paths never run
 * Python code), the GIL released only while waiting for a contended shard lock, and
 * errors through shk_py_raise.  The work is in core/dict.c.  shmkit.dict.Dict subclasses
 * this type and adds the rest of the Python surface.
 *
 * Values are stored typed (layout.h, enum shk_dict_vtype): bytes, str, int, float, bool
 * and None natively, anything else through the handle's serializer (pickle unless told
 * otherwise), and they come back as the type they went in.
 */
#include "binding.h"

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <unistd.h>

#include "dict.h"
#include <structmember.h>

#define STACK_BUF 512
#define SCAN_BUF 16384

typedef struct {
    PyObject_HEAD
    ZoneObject *zone;       /* strong reference; its segment is exported while we live */
    struct shk_dict d;
    int attached;
    int closed;
    int created;            /* this handle created the dict (read once by the façade) */
    PyObject *dumps;        /* serializer: callable(obj) -> bytes */
    PyObject *loads;        /* callable(bytes) -> obj */
    PyObject *clock;        /* None or callable() -> seconds since the epoch (tests) */
    PyObject *weakreflist;
} DictObject;

static PyTypeObject *DictType;
static PyObject *pickle_dumps, *pickle_loads;

/* ---- small helpers ------------------------------------------------------------------ */

/* Before every operation: still open, and the test clock (if any) read. */
static inline int ready(DictObject *self)
{
    SegmentObject *seg = self->zone ? self->zone->segment : NULL;
    if (!self->attached || self->closed || !seg || seg->closed || seg->close_pending) {
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
        self->d.clock_ms = (int64_t)floor(s * 1000.0 + 1e-6);
    }
    return 0;
}

/* Wait for a shard's lock: spin briefly with the GIL held, then sleep without it. */
static inline int lock_shard(DictObject *self, uint32_t s)
{
    int r = shk_dict_trylock_fast(&self->d, s);
    if (r == 0)
        return 0;
    if (r == EBUSY) {
        Py_BEGIN_ALLOW_THREADS
        r = shk_dict_lock(&self->d, s);
        Py_END_ALLOW_THREADS
    }
    if (r) {
        shk_py_raise(r, "dict lock");
        return -1;
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

struct enc {
    uint8_t type;
    const void *data;
    uint64_t len;
    union {
        int64_t i;
        double f;
    } num;
    PyObject *owned;        /* bytes that own `data` (serialized objects, big ints) */
};

static PyObject *call_kw(PyObject *callable, PyObject *const *args, size_t nargs,
                         const char *kwname, PyObject *kwvalue)
{
    PyObject *names = Py_BuildValue("(s)", kwname);
    if (!names)
        return NULL;
    PyObject *all[4];
    for (size_t i = 0; i < nargs; i++)
        all[i] = args[i];
    all[nargs] = kwvalue;
    PyObject *r = PyObject_Vectorcall(callable, all, nargs, names);
    Py_DECREF(names);
    return r;
}

static int encode_bigint(PyObject *v, struct enc *e)
{
    /* little-endian two's complement: int.to_bytes(bit_length // 8 + 1, "little",
     * signed=True); rare enough to go through Python */
    PyObject *bits = PyObject_CallMethod(v, "bit_length", NULL);
    if (!bits)
        return -1;
    Py_ssize_t nbits = PyLong_AsSsize_t(bits);
    Py_DECREF(bits);
    if (nbits < 0)
        return -1;
    PyObject *to_bytes = PyObject_GetAttrString(v, "to_bytes");
    if (!to_bytes)
        return -1;
    PyObject *n = PyLong_FromSsize_t(nbits / 8 + 1), *order = PyUnicode_FromString("little");
    PyObject *b = NULL;
    if (n && order) {
        PyObject *args[2] = {n, order};
        b = call_kw(to_bytes, args, 2, "signed", Py_True);
    }
    Py_XDECREF(n);
    Py_XDECREF(order);
    Py_DECREF(to_bytes);
    if (!b)
        return -1;
    e->type = SHK_DV_BIGINT;
    e->owned = b;
    e->data = PyBytes_AS_STRING(b);
    e->len = (uint64_t)PyBytes_GET_SIZE(b);
    return 0;
}

static int encode(DictObject *self, PyObject *v, struct enc *e)
{
    PyTypeObject *t = Py_TYPE(v);
    e->owned = NULL;
    if (t == &PyBytes_Type) {
        e->type = SHK_DV_BYTES;
        e->data = PyBytes_AS_STRING(v);
        e->len = (uint64_t)PyBytes_GET_SIZE(v);
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
            e->type = SHK_DV_STR;
            e->data = s;
            e->len = (uint64_t)n;
            return 0;
        }
        if (!PyErr_ExceptionMatches(PyExc_UnicodeEncodeError))
            return -1;
        PyErr_Clear(); /* lone surrogates are not UTF-8: the serializer keeps them */
    } else if (t == &PyLong_Type) {
        int overflow;
        long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
        if (x == -1 && PyErr_Occurred())
            return -1;
        if (overflow)
            return encode_bigint(v, e);
        e->type = SHK_DV_INT;
        e->num.i = x;
        e->data = &e->num.i;
        e->len = 8;
        return 0;
    } else if (t == &PyFloat_Type) {
        e->type = SHK_DV_FLOAT;
        e->num.f = PyFloat_AS_DOUBLE(v);
        e->data = &e->num.f;
        e->len = 8;
        return 0;
    } else if (v == Py_True || v == Py_False || v == Py_None) {
        e->type = v == Py_True ? SHK_DV_TRUE : v == Py_False ? SHK_DV_FALSE : SHK_DV_NONE;
        e->data = "";
        e->len = 0;
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
    e->type = SHK_DV_OBJECT;
    e->owned = b;
    e->data = PyBytes_AS_STRING(b);
    e->len = (uint64_t)PyBytes_GET_SIZE(b);
    return 0;
}

static PyObject *corrupt_value(uint8_t type)
{
    PyErr_Format(shk_py_exc("CorruptedError"), "dict value has unknown type %u or a wrong length",
                 type);
    return NULL;
}

static PyObject *decode(DictObject *self, uint8_t type, const uint8_t *p, uint64_t len)
{
    switch (type) {
    case SHK_DV_BYTES:
        return PyBytes_FromStringAndSize((const char *)p, (Py_ssize_t)len);
    case SHK_DV_STR:
        return PyUnicode_DecodeUTF8((const char *)p, (Py_ssize_t)len, "surrogateescape"); /* corrupted: not UTF-8 (issue 13) */
    case SHK_DV_INT: {
        int64_t i;
        if (len != 8)
            return corrupt_value(type);
        memcpy(&i, p, 8);
        return PyLong_FromLongLong(i);
    }
    case SHK_DV_FLOAT: {
        double f;
        if (len != 8)
            return corrupt_value(type);
        memcpy(&f, p, 8);
        return PyFloat_FromDouble(f);
    }
    case SHK_DV_TRUE:
        Py_RETURN_TRUE;
    case SHK_DV_FALSE:
        Py_RETURN_FALSE;
    case SHK_DV_NONE:
        Py_RETURN_NONE;
    case SHK_DV_BIGINT: {
        PyObject *b = PyBytes_FromStringAndSize((const char *)p, (Py_ssize_t)len);
        PyObject *from_bytes = PyObject_GetAttrString((PyObject *)&PyLong_Type, "from_bytes");
        PyObject *order = PyUnicode_FromString("little"), *r = NULL;
        if (b && from_bytes && order) {
            PyObject *args[2] = {b, order};
            r = call_kw(from_bytes, args, 2, "signed", Py_True);
        }
        Py_XDECREF(b);
        Py_XDECREF(from_bytes);
        Py_XDECREF(order);
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
    default:
        return corrupt_value(type);
    }
}

/* A Python list from packed list records (see shk_dict_list_items_locked). */
static PyObject *decode_list(DictObject *self, const uint8_t *p, uint64_t len)
{
    PyObject *list = PyList_New(0);
    uint64_t pos = 0;
    while (list && pos + 8 <= len) {
        uint32_t n;
        memcpy(&n, p + pos + 4, 4);
        if (pos + 8 + n > len) {
            Py_DECREF(list);
            return corrupt_value(SHK_DV_LIST);
        }
        PyObject *v = decode(self, p[pos], p + pos + 8, n);
        if (!v || PyList_Append(list, v) < 0) {
            Py_XDECREF(v);
            Py_DECREF(list);
            return NULL;
        }
        Py_DECREF(v);
        pos += 8 + (((uint64_t)n + 7) & ~7ull);
    }
    return list;
}

/* ---- lookups -------------------------------------------------------------------------- */

/* Under the shard lock: what the lock-free path could not do (a busy shard, a list, a
 * value that outgrew the buffer). 1 found (*obj set), 0 missing, -1 error. */
static int fetch_locked(DictObject *self, const struct shk_dkey *k, int allow_stale,
                        PyObject **obj, struct shk_dict_found *f)
{
    uint32_t s = shk_dict_shard_of(&self->d, k);
    uint8_t stack[STACK_BUF], *buf = stack;
    uint64_t cap = sizeof stack, plen = 0, count = 0;
    void *packed = NULL;
    int r;
    for (;;) {
        if (lock_shard(self, s) < 0)
            goto fail;
        r = shk_dict_get_locked(&self->d, k, allow_stale, buf, cap, f);
        if (r == 0 && f->vtype == SHK_DV_LIST)
            r = shk_dict_list_items_locked(&self->d, k, allow_stale, &packed, &plen, &count);
        shk_dict_unlock_fast(&self->d, s);
        if (r != ENOBUFS)
            break;
        if (buf != stack)
            PyMem_Free(buf);
        cap = f->len;
        if (!(buf = PyMem_Malloc(cap ? cap : 1))) {
            PyErr_NoMemory();
            return -1;
        }
    }
    if (r == 0) {
        *obj = f->vtype == SHK_DV_LIST ? decode_list(self, packed, plen)
                                       : decode(self, f->vtype, buf, f->len);
        r = *obj ? 1 : -1;
    } else if (r == SHK_ENOTFOUND) {
        r = 0;
    } else {
        shk_py_raise(r, "dict get");
        r = -1;
    }
    free(packed);
    if (buf != stack)
        PyMem_Free(buf);
    return r;
fail:
    if (buf != stack)
        PyMem_Free(buf);
    return -1;
}

/* A value too large for the stack buffer: copied straight into the bytes object it
 * becomes (validated afterwards).  1, 0, -1 as fetch(). */
static int fetch_large(DictObject *self, const struct shk_dkey *k, int allow_stale,
                       PyObject **obj, struct shk_dict_found *f)
{
    struct shk_dict_view v;
    for (int attempt = 0; attempt < 4; attempt++) {
        int r = shk_dict_view_begin(&self->d, k, allow_stale, &v);
        if (r == SHK_ENOTFOUND)
            return 0;
        if (r == EAGAIN)
            break;
        if (r) {
            shk_py_raise(r, "dict get");
            return -1;
        }
        if (v.f.vtype != SHK_DV_BYTES) { /* large text, objects, lists: the locked way */
            r = shk_dict_view_end(&self->d, &v, 0);
            if (r == EAGAIN)
                continue;
            break; /* valid (or corrupt): the locked path copies it */
        }
        PyObject *o = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)v.f.len);
        if (o)
            shk_dict_view_copy(&self->d, &v, PyBytes_AS_STRING(o));
        r = shk_dict_view_end(&self->d, &v, 1);
        if (r == EAGAIN) {
            Py_XDECREF(o);
            PyErr_Clear(); /* a MemoryError for a length that was torn */
            continue;
        }
        if (r) {
            Py_XDECREF(o);
            shk_py_raise(r, "dict get");
            return -1;
        }
        *f = v.f;
        *obj = o;
        return o ? 1 : -1;
    }
    return fetch_locked(self, k, allow_stale, obj, f);
}

/* A list found by the lock-free lookup (already counted): its elements, under the lock. */
static int fetch_list(DictObject *self, const struct shk_dkey *k, int allow_stale,
                      PyObject **obj, struct shk_dict_found *f)
{
    uint32_t s = shk_dict_shard_of(&self->d, k);
    void *packed = NULL;
    uint64_t plen = 0, count = 0;
    if (lock_shard(self, s) < 0)
        return -1;
    int r = shk_dict_list_items_locked(&self->d, k, allow_stale, &packed, &plen, &count);
    shk_dict_unlock_fast(&self->d, s);
    if (r == 0) {
        *obj = decode_list(self, packed, plen);
        free(packed);
        return *obj ? 1 : -1;
    }
    free(packed);
    if (r == SHK_ENOTFOUND)
        return 0; /* removed since */
    if (r == SHK_ETYPE)
        return fetch_locked(self, k, allow_stale, obj, f); /* replaced by a value since */
    shk_py_raise(r, "dict get");
    return -1;
}

/*
 * Look k up: 1 found (*obj: new reference), 0 missing (or expired), -1 error.
 * The fast path reads without any lock, copies the value to the stack in the same pass
 * and keeps it only if the read validates; the object is built from that copy.  Large
 * values, lists and busy shards go the other ways.
 */
static inline int fetch(DictObject *self, const struct shk_dkey *k, int allow_stale,
                        PyObject **obj, struct shk_dict_found *f)
{
    union {
        int64_t i;
        double f;
        uint8_t b[STACK_BUF];
    } local;
    int r = allow_stale ? SHK_DICT_SLOW : shk_dict_get_fast(&self->d, k, local.b, sizeof local, f);
    if (r == SHK_DICT_SLOW)
        r = shk_dict_get(&self->d, k, allow_stale, local.b, sizeof local, f);
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
        case SHK_DV_LIST:
            return fetch_list(self, k, allow_stale, obj, f);
        default:
            *obj = decode(self, f->vtype, local.b, f->len);
        }
        return *obj ? 1 : -1;
    }
    if (r == SHK_ENOTFOUND)
        return 0;
    if (r == ENOBUFS)
        return fetch_large(self, k, allow_stale, obj, f);
    if (r == EAGAIN)
        return fetch_locked(self, k, allow_stale, obj, f);
    shk_py_raise(r, "dict get");
    return -1;
}

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

static PyObject *Dict_get(DictObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    struct shk_dkey k;
    struct shk_dict_found f;
    PyObject *v;
    if (nargs < 1 || nargs > 2)
        return PyErr_Format(PyExc_TypeError, "get() takes 1 or 2 arguments (%zd given)", nargs);
    if (ready(self) < 0 || key_of(args[0], &k) < 0)
        return NULL;
    int r = fetch(self, &k, 0, &v, &f);
    if (r > 0)
        return v;
    if (r == 0)
        return Py_NewRef(nargs > 1 ? args[1] : Py_None);
    return NULL;
}

static PyObject *Dict_get_with_flags(DictObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    struct shk_dkey k;
    struct shk_dict_found f;
    PyObject *v;
    if (nargs < 1 || nargs > 2)
        return PyErr_Format(PyExc_TypeError, "get_with_flags() takes 1 or 2 arguments (%zd given)",
                            nargs);
    if (ready(self) < 0 || key_of(args[0], &k) < 0)
        return NULL;
    int r = fetch(self, &k, 0, &v, &f);
    if (r > 0)
        return Py_BuildValue("(Nk)", v, (unsigned long)f.flags);
    if (r == 0)
        return Py_BuildValue("(Oi)", nargs > 1 ? args[1] : Py_None, 0);
    return NULL;
}

static PyObject *Dict_get_stale(DictObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    struct shk_dkey k;
    struct shk_dict_found f;
    PyObject *v;
    if (nargs < 1 || nargs > 2)
        return PyErr_Format(PyExc_TypeError, "get_stale() takes 1 or 2 arguments (%zd given)",
                            nargs);
    if (ready(self) < 0 || key_of(args[0], &k) < 0)
        return NULL;
    int r = fetch(self, &k, 1, &v, &f);
    if (r > 0)
        return Py_BuildValue("(NkO)", v, (unsigned long)f.flags, f.stale ? Py_True : Py_False);
    if (r == 0)
        return Py_BuildValue("(OiO)", nargs > 1 ? args[1] : Py_None, 0, Py_False);
    return NULL;
}

static int Dict_contains(DictObject *self, PyObject *key)
{
    struct shk_dkey k;
    struct shk_dict_found f;
    if (ready(self) < 0 || key_of(key, &k) < 0)
        return -1;
    /* a membership test is a lookup like get(): it counts, and marks the item as used */
    struct shk_dict_view v;
    int r;
    for (int attempt = 0;; attempt++) {
        r = shk_dict_view_begin(&self->d, &k, 0, &v);
        if (r == 0)
            r = shk_dict_view_end(&self->d, &v, 1);
        if (r != EAGAIN || attempt == 3)
            break;
    }
    if (r == EAGAIN) {
        uint32_t s = shk_dict_shard_of(&self->d, &k);
        if (lock_shard(self, s) < 0)
            return -1;
        r = shk_dict_get_locked(&self->d, &k, 0, NULL, 0, &f);
        shk_dict_unlock_fast(&self->d, s);
    }
    if (r == 0 || r == ENOBUFS)
        return 1;
    if (r == SHK_ENOTFOUND)
        return 0;
    shk_py_raise(r, "dict contains");
    (void)f;
    return -1;
}

/* ---- argument parsing for the methods with keywords ----------------------------------- */

static int parse_args(const char *fname, PyObject *const *args, Py_ssize_t nargs,
                      PyObject *kwnames, const char *const *names, int n, int nreq,
                      PyObject **out)
{
    if (nargs > n) {
        PyErr_Format(PyExc_TypeError, "%s() takes at most %d arguments (%zd given)", fname, n,
                     nargs);
        return -1;
    }
    for (int i = 0; i < n; i++)
        out[i] = i < nargs ? args[i] : NULL;
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    for (Py_ssize_t j = 0; j < nkw; j++) {
        PyObject *name = PyTuple_GET_ITEM(kwnames, j);
        int idx = -1;
        for (int i = 0; i < n; i++)
            if (PyUnicode_CompareWithASCIIString(name, names[i]) == 0)
                idx = i;
        if (idx < 0) {
            PyErr_Format(PyExc_TypeError, "%s() got an unexpected keyword argument '%U'", fname,
                         name);
            return -1;
        }
        if (out[idx]) {
            PyErr_Format(PyExc_TypeError, "%s() got multiple values for argument '%s'", fname,
                         names[idx]);
            return -1;
        }
        out[idx] = args[nargs + j];
    }
    for (int i = 0; i < nreq; i++) {
        if (!out[i]) {
            PyErr_Format(PyExc_TypeError, "%s() missing required argument '%s'", fname, names[i]);
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
    } else if (parse_args(fname, args, nargs, kwnames, names, 4, 2, a) < 0) {
        return -1;
    }
    struct shk_dkey k;
    uint64_t ttl;
    uint32_t flags;
    struct enc e;
    if (ready(self) < 0 || key_of(a[0], &k) < 0 || parse_ttl("ttl", a[2], &ttl) < 0 ||
        parse_flags(a[3], &flags) < 0 || encode(self, a[1], &e) < 0)
        return -1;
    uint32_t s = shk_dict_shard_of(&self->d, &k);
    int r = -1;
    if (lock_shard(self, s) == 0) {
        r = SHK_DICT_SLOW;
        if ((mode & ~SHK_DSAFE) == SHK_DSET && !flags && !ttl) {
            r = shk_dict_set_fast_locked(&self->d, &k, e.type, e.data, e.len, mode, evicted);
        }
        if (r == SHK_DICT_SLOW)
            r = shk_dict_store_locked(&self->d, &k, e.type, e.data, e.len, flags, ttl, mode, 0,
                                      evicted);
        shk_dict_unlock_fast(&self->d, s);
        if (r == 0)
            r = 1;
        else if (r == SHK_EEXISTS || r == SHK_ENOTFOUND)
            r = 0;
        else
            r = shk_py_raise_int(r, fname);
    }
    Py_XDECREF(e.owned);
    return r;
}

static PyObject *Dict_set(DictObject *self, PyObject *const *args, Py_ssize_t nargs,
                          PyObject *kwnames)
{
    uint32_t evicted = 0;
    if (store(self, args, nargs, kwnames, SHK_DSET, "set", &evicted) < 0)
        return NULL;
    return PyLong_FromUnsignedLong(evicted);
}

static PyObject *Dict_safe_set(DictObject *self, PyObject *const *args, Py_ssize_t nargs,
                               PyObject *kwnames)
{
    uint32_t evicted = 0;
    if (store(self, args, nargs, kwnames, SHK_DSET | SHK_DSAFE, "safe_set", &evicted) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *store_bool(DictObject *self, PyObject *const *args, Py_ssize_t nargs,
                            PyObject *kwnames, int mode, const char *fname)
{
    uint32_t evicted = 0;
    int r = store(self, args, nargs, kwnames, mode, fname, &evicted);
    if (r < 0)
        return NULL;
    return PyBool_FromLong(r);
}

static PyObject *Dict_add(DictObject *self, PyObject *const *args, Py_ssize_t nargs,
                          PyObject *kwnames)
{
    return store_bool(self, args, nargs, kwnames, SHK_DADD, "add");
}

static PyObject *Dict_safe_add(DictObject *self, PyObject *const *args, Py_ssize_t nargs,
                               PyObject *kwnames)
{
    return store_bool(self, args, nargs, kwnames, SHK_DADD | SHK_DSAFE, "safe_add");
}

static PyObject *Dict_replace(DictObject *self, PyObject *const *args, Py_ssize_t nargs,
                              PyObject *kwnames)
{
    return store_bool(self, args, nargs, kwnames, SHK_DREPLACE, "replace");
}

/* 1 deleted, 0 was not there, -1 error. */
static int delete_key(DictObject *self, PyObject *key)
{
    struct shk_dkey k;
    if (ready(self) < 0 || key_of(key, &k) < 0)
        return -1;
    uint32_t s = shk_dict_shard_of(&self->d, &k);
    if (lock_shard(self, s) < 0)
        return -1;
    int r = shk_dict_delete_locked(&self->d, &k);
    shk_dict_unlock_fast(&self->d, s);
    if (r == 0)
        return 1;
    if (r == SHK_ENOTFOUND)
        return 0;
    return shk_py_raise_int(r, "delete");
}

static int Dict_ass_subscript(DictObject *self, PyObject *key, PyObject *value)
{
    if (!value) {
        int r = delete_key(self, key);
        if (r == 0)
            PyErr_SetObject(PyExc_KeyError, key);
        return r > 0 ? 0 : -1;
    }
    struct shk_dkey k;
    struct enc e;
    if (ready(self) < 0 || key_of(key, &k) < 0 || encode(self, value, &e) < 0)
        return -1;
    uint32_t s = shk_dict_shard_of(&self->d, &k), evicted;
    int r = -1;
    if (lock_shard(self, s) == 0) {
        r = shk_dict_set_fast_locked(&self->d, &k, e.type, e.data, e.len, SHK_DSET, &evicted);
        if (r == SHK_DICT_SLOW)
            r = shk_dict_store_locked(&self->d, &k, e.type, e.data, e.len, 0, 0, SHK_DSET, 0,
                                      &evicted);
        shk_dict_unlock_fast(&self->d, s);
        if (r)
            r = shk_py_raise_int(r, "set");
    }
    Py_XDECREF(e.owned);
    return r;
}

static PyObject *Dict_delete(DictObject *self, PyObject *key)
{
    int r = delete_key(self, key);
    return r < 0 ? NULL : PyBool_FromLong(r);
}

/* pop(key[, default]) and the list pops: the value taken out under the lock. */
static PyObject *take(DictObject *self, PyObject *const *args, Py_ssize_t nargs, int which,
                      const char *fname)
{
    struct shk_dkey k;
    struct shk_dict_found f;
    if (nargs < 1 || nargs > 2)
        return PyErr_Format(PyExc_TypeError, "%s() takes 1 or 2 arguments (%zd given)", fname,
                            nargs);
    if (ready(self) < 0 || key_of(args[0], &k) < 0)
        return NULL;
    uint8_t stack[STACK_BUF];
    void *heap = NULL;
    uint32_t s = shk_dict_shard_of(&self->d, &k);
    if (lock_shard(self, s) < 0)
        return NULL;
    int r = which < 0 ? shk_dict_take_locked(&self->d, &k, stack, sizeof stack, &heap, &f)
                      : shk_dict_pop_locked(&self->d, &k, which, stack, sizeof stack, &heap, &f);
    shk_dict_unlock_fast(&self->d, s);
    if (r == SHK_ENOTFOUND) {
        if (nargs > 1)
            return Py_NewRef(args[1]);
        if (which >= 0)
            Py_RETURN_NONE;
        PyErr_SetObject(PyExc_KeyError, args[0]);
        return NULL;
    }
    if (r)
        return shk_py_raise(r, fname);
    const uint8_t *p = heap ? heap : stack;
    PyObject *v = f.vtype == SHK_DV_LIST ? decode_list(self, p, f.len)
                                         : decode(self, f.vtype, p, f.len);
    free(heap);
    return v;
}

static PyObject *Dict_pop(DictObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    return take(self, args, nargs, -1, "pop");
}

static PyObject *Dict_lpop(DictObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    return take(self, args, nargs, 0, "lpop");
}

static PyObject *Dict_rpop(DictObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    return take(self, args, nargs, 1, "rpop");
}

static PyObject *push(DictObject *self, PyObject *const *args, Py_ssize_t nargs, int right,
                      const char *fname)
{
    struct shk_dkey k;
    struct enc e;
    if (nargs != 2)
        return PyErr_Format(PyExc_TypeError, "%s() takes 2 arguments (%zd given)", fname, nargs);
    if (ready(self) < 0 || key_of(args[0], &k) < 0 || encode(self, args[1], &e) < 0)
        return NULL;
    uint32_t s = shk_dict_shard_of(&self->d, &k), evicted;
    uint64_t len = 0;
    int r = -1;
    if (lock_shard(self, s) == 0) {
        r = shk_dict_push_locked(&self->d, &k, right, e.type, e.data, e.len, &len, &evicted);
        shk_dict_unlock_fast(&self->d, s);
        if (r)
            r = shk_py_raise_int(r, fname);
    }
    Py_XDECREF(e.owned);
    return r ? NULL : PyLong_FromUnsignedLongLong(len);
}

static PyObject *Dict_lpush(DictObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    return push(self, args, nargs, 0, "lpush");
}

static PyObject *Dict_rpush(DictObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    return push(self, args, nargs, 1, "rpush");
}

/* A lock-free read, retried under the lock when writers keep the shard busy. */
#define READ_RETRY_LOCKED(self, k, call)                                                  \
    ({                                                                                    \
        int r_ = (call);                                                                  \
        if (r_ == EAGAIN) {                                                               \
            uint32_t s_ = shk_dict_shard_of(&(self)->d, (k));                             \
            if (lock_shard((self), s_) < 0)                                               \
                return NULL;                                                              \
            r_ = (call); /* nobody writes while we hold the lock */                      \
            shk_dict_unlock(&(self)->d, s_);                                              \
        }                                                                                 \
        r_;                                                                               \
    })

static PyObject *Dict_llen(DictObject *self, PyObject *key)
{
    struct shk_dkey k;
    uint64_t n = 0;
    if (ready(self) < 0 || key_of(key, &k) < 0)
        return NULL;
    int r = READ_RETRY_LOCKED(self, &k, shk_dict_llen(&self->d, &k, &n));
    if (r)
        return shk_py_raise(r, "llen");
    return PyLong_FromUnsignedLongLong(n);
}

static PyObject *Dict_ttl(DictObject *self, PyObject *key)
{
    struct shk_dkey k;
    int64_t ms = 0;
    if (ready(self) < 0 || key_of(key, &k) < 0)
        return NULL;
    int r = READ_RETRY_LOCKED(self, &k, shk_dict_ttl(&self->d, &k, &ms));
    if (r == SHK_ENOTFOUND) {
        PyErr_SetObject(PyExc_KeyError, key);
        return NULL;
    }
    if (r)
        return shk_py_raise(r, "ttl");
    if (ms < 0)
        Py_RETURN_NONE;
    return PyFloat_FromDouble((double)ms / 1000.0);
}

static PyObject *Dict_expire(DictObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    struct shk_dkey k;
    uint64_t ttl;
    if (nargs != 2)
        return PyErr_Format(PyExc_TypeError, "expire() takes 2 arguments (%zd given)", nargs);
    if (ready(self) < 0 || key_of(args[0], &k) < 0 || parse_ttl("ttl", args[1], &ttl) < 0)
        return NULL;
    uint32_t s = shk_dict_shard_of(&self->d, &k);
    if (lock_shard(self, s) < 0)
        return NULL;
    int r = shk_dict_expire_locked(&self->d, &k, ttl);
    shk_dict_unlock_fast(&self->d, s);
    if (r == SHK_ENOTFOUND)
        Py_RETURN_FALSE;
    if (r)
        return shk_py_raise(r, "expire");
    Py_RETURN_TRUE;
}

static int is_number(PyObject *o)
{
    return PyLong_Check(o) || PyFloat_Check(o);
}

/* incr's slow path for arbitrary precision: read, add in Python, store if unchanged.
 * NULL with *retry = 1: the value changed meanwhile; 2: it is gone. */
static PyObject *incr_by_cas(DictObject *self, const struct shk_dkey *k, PyObject *step,
                             int *retry)
{
    PyObject *old;
    struct shk_dict_found f;
    *retry = 0;
    int r = fetch_locked(self, k, 0, &old, &f);
    if (r < 0)
        return NULL;
    if (r == 0) {
        *retry = 2;
        return NULL;
    }
    if (!is_number(old) || PyBool_Check(old)) {
        Py_DECREF(old);
        PyErr_SetString(shk_py_exc("ObjectTypeError"), "dict: incr() of a value that is not a number");
        return NULL;
    }
    PyObject *nv = PyNumber_Add(old, step);
    Py_DECREF(old);
    if (!nv)
        return NULL;
    struct enc e;
    if (encode(self, nv, &e) < 0) {
        Py_DECREF(nv);
        return NULL;
    }
    uint32_t s = shk_dict_shard_of(&self->d, k), evicted;
    r = -1;
    if (lock_shard(self, s) == 0) {
        r = shk_dict_store_locked(&self->d, k, e.type, e.data, e.len, 0, 0,
                                  SHK_DREPLACE | SHK_DIFVERSION | SHK_DKEEP, f.version, &evicted);
        shk_dict_unlock_fast(&self->d, s);
    }
    Py_XDECREF(e.owned);
    if (r == 0)
        return nv;
    Py_DECREF(nv);
    if (r == SHK_EEXISTS || r == SHK_ENOTFOUND) {
        *retry = 1;
        return NULL;
    }
    if (r != -1)
        shk_py_raise(r, "incr");
    return NULL;
}

static PyObject *Dict_incr(DictObject *self, PyObject *const *args, Py_ssize_t nargs,
                           PyObject *kwnames)
{
    static const char *const names[] = {"key", "step", "init", "init_ttl"};
    PyObject *a[4];
    if (parse_args("incr", args, nargs, kwnames, names, 4, 1, a) < 0)
        return NULL;
    PyObject *step = a[1] ? a[1] : NULL, *init = a[2] && a[2] != Py_None ? a[2] : NULL;
    struct shk_dkey k;
    uint64_t init_ttl;
    if (ready(self) < 0 || key_of(a[0], &k) < 0 || parse_ttl("init_ttl", a[3], &init_ttl) < 0)
        return NULL;
    uint8_t step_type = SHK_DV_INT;
    int64_t step_i = 1;
    double step_f = 0;
    int step_big = 0;
    if (step) {
        if (PyFloat_Check(step)) {
            step_type = SHK_DV_FLOAT;
            step_f = PyFloat_AS_DOUBLE(step);
        } else if (PyLong_Check(step)) {
            int overflow;
            step_i = PyLong_AsLongLongAndOverflow(step, &overflow);
            if (step_i == -1 && PyErr_Occurred())
                return NULL;
            step_big = overflow != 0;
        } else {
            return PyErr_Format(PyExc_TypeError, "incr() step must be an int or a float, not %.100s",
                                Py_TYPE(step)->tp_name);
        }
    }
    if (init && !is_number(init))
        return PyErr_Format(PyExc_TypeError, "incr() init must be an int, a float or None, not "
                            "%.100s", Py_TYPE(init)->tp_name);
    PyObject *step_obj = step ? step : NULL;
    PyObject *one = NULL;
    if (!step_obj && !(step_obj = one = PyLong_FromLong(1)))
        return NULL;
    PyObject *result = NULL;
    uint32_t s = shk_dict_shard_of(&self->d, &k);
    for (int attempt = 0; attempt < 1000; attempt++) {
        int r = ERANGE;
        uint8_t t = 0;
        int64_t oi = 0;
        double of = 0;
        if (!step_big) {
            if (lock_shard(self, s) < 0)
                goto out;
            r = shk_dict_incr_locked(&self->d, &k, step_type, step_i, step_f, &t, &oi, &of);
            shk_dict_unlock_fast(&self->d, s);
        }
        if (r == 0) {
            result = t == SHK_DV_INT ? PyLong_FromLongLong(oi) : PyFloat_FromDouble(of);
            goto out;
        }
        if (r == ERANGE) {
            int retry;
            result = incr_by_cas(self, &k, step_obj, &retry);
            if (result || !retry)
                goto out;
            if (retry == 1)
                continue;
            r = SHK_ENOTFOUND; /* it vanished: initialise it */
        }
        if (r != SHK_ENOTFOUND) {
            shk_py_raise(r, "incr");
            goto out;
        }
        if (!init) {
            PyErr_SetObject(PyExc_KeyError, a[0]);
            goto out;
        }
        PyObject *nv = PyNumber_Add(init, step_obj);
        struct enc e;
        if (!nv)
            goto out;
        if (encode(self, nv, &e) < 0) {
            Py_DECREF(nv);
            goto out;
        }
        uint32_t evicted;
        r = -1;
        if (lock_shard(self, s) == 0) {
            r = shk_dict_store_locked(&self->d, &k, e.type, e.data, e.len, 0, init_ttl, SHK_DADD,
                                      0, &evicted);
            shk_dict_unlock_fast(&self->d, s);
        }
        Py_XDECREF(e.owned);
        if (r == 0) {
            result = nv;
            goto out;
        }
        Py_DECREF(nv);
        if (r == -1)
            goto out;
        if (r != SHK_EEXISTS) {
            shk_py_raise(r, "incr");
            goto out;
        }
        /* someone initialised it first: add to theirs */
    }
    PyErr_SetString(PyExc_RuntimeError, "incr(): the value kept changing; gave up");
out:
    Py_XDECREF(one);
    return result;
}

static PyObject *Dict_setdefault(DictObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    struct shk_dkey k;
    struct shk_dict_found f;
    struct enc e;
    if (nargs < 1 || nargs > 2)
        return PyErr_Format(PyExc_TypeError, "setdefault() takes 1 or 2 arguments (%zd given)",
                            nargs);
    PyObject *dflt = nargs > 1 ? args[1] : Py_None;
    if (ready(self) < 0 || key_of(args[0], &k) < 0 || encode(self, dflt, &e) < 0)
        return NULL;
    uint32_t s = shk_dict_shard_of(&self->d, &k), evicted;
    PyObject *result = NULL;
    for (int attempt = 0; attempt < 1000 && !result; attempt++) {
        uint8_t stack[STACK_BUF];
        if (lock_shard(self, s) < 0)
            break;
        int r = shk_dict_get_locked(&self->d, &k, 0, stack, sizeof stack, &f);
        if (r == SHK_ENOTFOUND)
            r = shk_dict_store_locked(&self->d, &k, e.type, e.data, e.len, 0, 0, SHK_DADD, 0,
                                      &evicted) ?: 1;
        shk_dict_unlock_fast(&self->d, s);
        if (r == 1) {
            result = Py_NewRef(dflt);
        } else if (r == 0 && f.vtype != SHK_DV_LIST) {
            result = decode(self, f.vtype, stack, f.len);
            break;
        } else if (r == 0 || r == ENOBUFS) {
            int got = fetch(self, &k, 0, &result, &f); /* large value or a list */
            if (got < 0)
                break;
        } else {
            shk_py_raise(r, "setdefault");
            break;
        }
    }
    Py_XDECREF(e.owned);
    return result;
}

/* ---- whole-dict operations and bookkeeping ------------------------------------------------ */

static Py_ssize_t Dict_length(DictObject *self)
{
    uint64_t n;
    if (ready(self) < 0)
        return -1;
    int r = shk_dict_count(&self->d, &n);
    if (!r && n > (uint64_t)self->d.nshards * self->d.ncells / 2) /* one-line guard (issue 13) */
        r = shk_fail(SHK_ECORRUPT, "dict: its shards count %llu items, more than their cells can hold", (unsigned long long)n);
    if (r)
        return shk_py_raise_int(r, "len");
    return (Py_ssize_t)n;
}

static PyObject *Dict_flush_all(DictObject *self, PyObject *unused)
{
    uint64_t n;
    if (ready(self) < 0)
        return NULL;
    int r;
    Py_BEGIN_ALLOW_THREADS
    r = shk_dict_flush_all(&self->d, &n);
    Py_END_ALLOW_THREADS
    if (r)
        return shk_py_raise(r, "flush_all");
    return PyLong_FromUnsignedLongLong(n);
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
    if (ready(self) < 0)
        return NULL;
    uint64_t n;
    int r;
    Py_BEGIN_ALLOW_THREADS
    r = shk_dict_flush_expired(&self->d, max, &n);
    Py_END_ALLOW_THREADS
    if (r)
        return shk_py_raise(r, "flush_expired");
    return PyLong_FromUnsignedLongLong(n);
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
    return PyLong_FromUnsignedLongLong(st.free_cells * SHK_DICT_CELL);
}

static PyObject *Dict_stats(DictObject *self, PyObject *unused)
{
    struct shk_dict_stats st;
    if (ready(self) < 0)
        return NULL;
    shk_dict_publish_counts(&self->d);
    shk_dict_stats(&self->d, &st);
    return Py_BuildValue("{sKsKsKsKsKsKsKsKsKsKsIsIsIsKsK}", "items", st.items, "ttl_items",
                         st.ttl_items, "free_bytes", st.free_cells * SHK_DICT_CELL, "evictions",
                         st.evictions, "expirations", st.expirations, "recoveries",
                         st.recoveries, "hits", st.hits, "misses", st.misses, "capacity",
                         st.capacity, "memory", st.total_size, "shards", st.nshards,
                         "cells_per_shard", st.cells_per_shard, "buckets_per_shard",
                         st.buckets_per_shard, "largest_free", st.largest_free,
                         "max_item_bytes",
                         (unsigned long long)st.cells_per_shard * SHK_DICT_CELL);
}

static PyObject *Dict_item_size(DictObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    struct shk_dkey k;
    struct enc e;
    if (nargs != 2)
        return PyErr_Format(PyExc_TypeError, "item_size() takes 2 arguments (%zd given)", nargs);
    if (key_of(args[0], &k) < 0 || encode(self, args[1], &e) < 0)
        return NULL;
    uint64_t n = shk_dict_item_bytes(k.len, e.len);
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

/* _scan(cursor) -> (next cursor or None, [keys of a few buckets]) */
static PyObject *Dict_scan(DictObject *self, PyObject *arg)
{
    unsigned long long cursor = PyLong_AsUnsignedLongLong(arg);
    if (cursor == (unsigned long long)-1 && PyErr_Occurred())
        return NULL;
    if (ready(self) < 0)
        return NULL;
    uint64_t cap = SCAN_BUF, used;
    uint32_t nkeys;
    uint8_t *buf = NULL;
    uint64_t cur = cursor;
    int r;
    for (;;) {
        PyMem_Free(buf);
        if (!(buf = PyMem_Malloc(cap)))
            return PyErr_NoMemory();
        cur = cursor;
        r = shk_dict_scan(&self->d, &cur, 64, buf, cap, &used, &nkeys);
        if (r != ENOBUFS)
            break;
        if (cap > 4 * (uint64_t)self->d.ncells * SHK_DICT_CELL + SCAN_BUF && (r = shk_fail(SHK_ECORRUPT, "dict: a bucket holds more keys than its shard has room for (a corrupted chain)")))
            break; /* a one-line guard (issue 13): the buffer no longer grows without bound */
        cap *= 4;
    }
    if (r) {
        PyMem_Free(buf);
        return shk_py_raise(r, "keys");
    }
    PyObject *keys = PyList_New(nkeys);
    uint64_t pos = 0;
    for (uint32_t i = 0; keys && i < nkeys; i++) {
        uint16_t kl;
        memcpy(&kl, buf + pos + 2, 2);
        PyObject *key = buf[pos] == SHK_DK_STR
                            ? PyUnicode_DecodeUTF8((const char *)buf + pos + 4, kl, "surrogateescape")
                            : PyBytes_FromStringAndSize((const char *)buf + pos + 4, kl);
        if (!key) {
            Py_CLEAR(keys);
            break;
        }
        PyList_SET_ITEM(keys, i, key);
        pos += 4 + ((kl + 3u) & ~3u);
    }
    PyMem_Free(buf);
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
        self->d.clock_ms = -1;
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
    if (self->attached && !self->closed && self->zone && !self->zone->segment->closed)
        shk_dict_publish_counts(&self->d);
    self->closed = 1;
    Py_RETURN_NONE;
}

static PyObject *Dict_debug_crash_at(DictObject *self, PyObject *arg)
{
    /* Test hook: the next write that reaches this point (enum shk_dict_crash_point)
     * SIGKILLs this process there, holding the shard lock. */
    long p = PyLong_AsLong(arg);
    if (p == -1 && PyErr_Occurred())
        return NULL;
    self->d.crash_at = (int)p;
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
    if (lock_shard(self, (uint32_t)s) < 0)
        return NULL;
    struct shk_dict_shard *sh = &self->d.shards[s];
    uint8_t *cells = self->d.data0 + (uint64_t)s * self->d.stride + self->d.cells_off;
    uint64_t *ref = (uint64_t *)(self->d.data0 + (uint64_t)s * self->d.stride + self->d.ref_off);
    PyObject *out = PyList_New(0);
    uint32_t guard = self->d.ncells;
    for (uint32_t idx = sh->lru_head; out && idx && idx < self->d.ncells && guard--;) {
        struct shk_ditem *it = (struct shk_ditem *)(cells + (uint64_t)(idx - 1) * SHK_DICT_CELL);
        const char *kp = (const char *)(it + 1);
        PyObject *key = it->ktype == SHK_DK_STR ? PyUnicode_DecodeUTF8(kp, it->klen, "replace")
                                                : PyBytes_FromStringAndSize(kp, it->klen);
        int refd = (int)((ref[(idx - 1) >> 6] >> ((idx - 1) & 63)) & 1);
        PyObject *t = key ? Py_BuildValue("(NO)", key, refd ? Py_True : Py_False) : NULL;
        if (!t || PyList_Append(out, t) < 0)
            Py_CLEAR(out);
        Py_XDECREF(t);
        idx = it->lru_next;
    }
    shk_dict_unlock(&self->d, (uint32_t)s);
    return out;
}

static PyObject *Dict_shard_of(DictObject *self, PyObject *key)
{
    struct shk_dkey k;
    if (key_of(key, &k) < 0)
        return NULL;
    return PyLong_FromUnsignedLong(shk_dict_shard_of(&self->d, &k));
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
    self->zone = (ZoneObject *)Py_NewRef(zoneobj);
    shk_segment_export(z->segment); /* the mapping stays while this handle lives */
    self->attached = 1;
    self->created = created;
    return (PyObject *)self;
}

static PyObject *Dict_get_created(DictObject *self, void *c)
{
    return PyBool_FromLong(self->created);
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
    if (self->attached && self->zone && !self->zone->segment->closed)
        shk_dict_publish_counts(&self->d);
    if (self->attached && self->zone)
        shk_segment_unexport(self->zone->segment);
    Dict_clear_refs(self);
    Py_XDECREF(self->zone);
    PyTypeObject *tp = Py_TYPE(self);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static PyObject *Dict_get_closed(DictObject *self, void *c)
{
    return PyBool_FromLong(!self->attached || self->closed || !self->zone ||
                           self->zone->segment->closed || self->zone->segment->close_pending);
}

static PyObject *Dict_get_offset(DictObject *self, void *c)
{
    return PyLong_FromUnsignedLongLong(self->d.offset);
}

static PyGetSetDef Dict_getset[] = {
    {"_created", (getter)Dict_get_created, NULL, "True if this handle created the dict", NULL},
    {"closed", (getter)Dict_get_closed, NULL, "True once closed (or its zone is)", NULL},
    {"_offset", (getter)Dict_get_offset, NULL, "offset of the dict in its zone", NULL},
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
    M("_shard_of", Dict_shard_of, METH_O, "_shard_of(key, /)"),
    {NULL},
};

static PyMemberDef Dict_members[] = {
    {"__weaklistoffset__", T_PYSSIZET, offsetof(DictObject, weakreflist), READONLY},
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
    if (!pickle_dumps || !pickle_loads)
        return -1;
    PyType_Spec spec = {"shmkit._core.Dict", sizeof(DictObject), 0,
                        Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC, Dict_slots};
    DictType = (PyTypeObject *)PyType_FromSpec(&spec);
    if (!DictType)
        return -1;
#define DCONST(name, value) \
    if (PyModule_AddIntConstant(m, name, (long)(value)) < 0) return -1
    DCONST("DICT_CELL", SHK_DICT_CELL);
    DCONST("DICT_ITEM_HEADER", sizeof(struct shk_ditem));
    DCONST("DICT_KEY_MAX", SHK_DICT_KEY_MAX);
    DCONST("DICT_MAX_SHARDS", SHK_DICT_MAX_SHARDS);
    DCONST("DICT_OPEN_CREATE", SHK_DOPEN_CREATE);
    DCONST("DICT_OPEN_STRICT", SHK_DOPEN_STRICT);
    DCONST("DCRASH_AFTER_ALLOC", SHK_DCRASH_AFTER_ALLOC);
    DCONST("DCRASH_HALF_WRITTEN", SHK_DCRASH_HALF_WRITTEN);
    DCONST("DCRASH_AFTER_PUBLISH", SHK_DCRASH_AFTER_PUBLISH);
    DCONST("DCRASH_MID_FREE", SHK_DCRASH_MID_FREE);
    DCONST("DCRASH_MID_LRU", SHK_DCRASH_MID_LRU);
    DCONST("DCRASH_MID_EVICT", SHK_DCRASH_MID_EVICT);
    DCONST("DCRASH_MID_LIST", SHK_DCRASH_MID_LIST);
    DCONST("DCRASH_MID_FLUSH", SHK_DCRASH_MID_FLUSH);
    DCONST("DCRASH_IN_PLACE", SHK_DCRASH_IN_PLACE);
    DCONST("DCRASH_MID_INPLACE", SHK_DCRASH_MID_INPLACE);
#undef DCONST
    return PyModule_AddObjectRef(m, "Dict", (PyObject *)DictType);
}
