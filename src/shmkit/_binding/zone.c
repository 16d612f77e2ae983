/*
 * zone.c (binding) - shmkit._core.Zone: open/initialise a zone over a Segment, the
 * allocator, the directory, statistics and the consistency check.
 */
#include "binding.h"

#include <errno.h>
#include <signal.h>
#include <unistd.h>

#include "mutex.h"
#include <structmember.h>

PyTypeObject *shk_ZoneType;

int shk_zone_check_open(ZoneObject *z)
{
    if (!z->segment || z->segment->closed || z->segment->close_pending || !z->zone.base) {
        shk_py_closed("zone is closed");
        return -1;
    }
    return 0;
}

static PyObject *zone_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"segment", "size", "max_size", "tag", "timeout", NULL};
    PyObject *segobj, *tag = Py_None, *timeout = Py_None;
    Py_ssize_t size = 0, max_size = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O!|nnOO:Zone", kwlist, shk_SegmentType, &segobj,
                                     &size, &max_size, &tag, &timeout))
        return NULL;
    SegmentObject *seg = (SegmentObject *)segobj;
    if (shk_segment_check_open(seg) < 0)
        return NULL;
    if (seg->exports > 0) {
        PyErr_SetString(PyExc_BufferError, "open the zone before taking views of its segment");
        return NULL;
    }
    if (size < 0 || max_size < 0)
        return PyErr_Format(PyExc_ValueError, "size and max_size must be >= 0");
    struct shk_zone_params p = {(size_t)size, (size_t)max_size, NULL, 0};
    Py_buffer tagbuf = {0};
    if (tag != Py_None) {
        if (PyObject_GetBuffer(tag, &tagbuf, PyBUF_SIMPLE) < 0)
            return NULL;
        p.tag = tagbuf.buf;
        p.tag_len = (size_t)tagbuf.len;
    }
    struct timespec deadline;
    int has_deadline;
    ZoneObject *z = NULL;
    int r = SHK_PY_ERR;
    struct shk_zone_opening o = {NULL, &seg->seg, &p, 0};
    if (shk_py_deadline(timeout, &deadline, &has_deadline) == 0 &&
        (z = (ZoneObject *)type->tp_alloc(type, 0)) != NULL) {
        struct shk_wait w = SHK_WAIT_INIT(shk_wait_deadline(has_deadline ? &deadline : NULL), 0);
        o.z = &z->zone;
        shk_clear_detail();
        r = shk_py_wait(&shk_zone_open_op, &o, &w, 0, NULL); /* (ETIMEDOUT: with a detail) */
    }
    if (tagbuf.obj)
        PyBuffer_Release(&tagbuf);
    if (r) {
        if (z)
            z->zone.base = NULL;
        Py_XDECREF(z);
        return r == SHK_PY_ERR ? NULL : shk_py_raise(r, "zone open");
    }
    Py_INCREF(seg);
    z->segment = seg;
    z->must_init = o.status == SHK_ZONE_MUST_INIT;
    return (PyObject *)z;
}

static void zone_dealloc(ZoneObject *z)
{
    if (z->weakreflist)
        PyObject_ClearWeakRefs((PyObject *)z);
    if (z->must_init && z->segment && !z->segment->closed)
        shk_zone_init_done(&z->zone, 0); /* dropped while initialising: not ready */
    Py_XDECREF(z->segment);
    shk_py_free(z);
}

static PyObject *zone_init_done(ZoneObject *z, PyObject *arg)
{
    int ok = PyObject_IsTrue(arg);
    if (ok < 0)
        return NULL;
    if (shk_zone_check_open(z) < 0)
        return NULL;
    if (!z->must_init)
        return PyErr_Format(PyExc_RuntimeError, "this handle is not initialising the zone");
    z->must_init = 0;
    int r = shk_zone_init_done(&z->zone, ok);
    return shk_py_none_or_raise(r, "init_done");
}

static PyObject *zone_alloc(ZoneObject *z, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"size", "zero", NULL};
    long long n;
    int zero = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "L|p:alloc", kwlist, &n, &zero))
        return NULL;
    if (shk_zone_check_open(z) < 0)
        return NULL;
    if (n <= 0)
        return PyErr_Format(PyExc_ValueError, "allocation size must be > 0, not %lld", n);
    uint64_t off;
    int r = shk_zone_alloc(&z->zone, (uint64_t)n, zero ? SHK_ALLOC_ZERO : 0, &off);
    if (r)
        return shk_py_raise(r, "alloc");
    return PyLong_FromUnsignedLongLong(off);
}

static PyObject *zone_free(ZoneObject *z, PyObject *arg)
{
    unsigned long long off = PyLong_AsUnsignedLongLong(arg);
    if (off == (unsigned long long)-1 && PyErr_Occurred())
        return NULL;
    if (shk_zone_check_open(z) < 0)
        return NULL;
    int r = shk_zone_free(&z->zone, off);
    return shk_py_none_or_raise(r, "free");
}

static PyObject *zone_usable_size(ZoneObject *z, PyObject *arg)
{
    unsigned long long off = PyLong_AsUnsignedLongLong(arg);
    if (off == (unsigned long long)-1 && PyErr_Occurred())
        return NULL;
    if (shk_zone_check_open(z) < 0)
        return NULL;
    return PyLong_FromUnsignedLongLong(shk_zone_usable_size(&z->zone, off));
}

static PyObject *zone_view(ZoneObject *z, PyObject *args)
{
    unsigned long long off, n;
    int readonly = 0;
    if (!PyArg_ParseTuple(args, "KK|p:view", &off, &n, &readonly))
        return NULL;
    if (shk_zone_check_open(z) < 0)
        return NULL;
    if (n > PY_SSIZE_T_MAX)
        return PyErr_Format(PyExc_ValueError, "length too large");
    shk_clear_detail();
    void *p = shk_zone_ptr(&z->zone, off, n);
    if (!p) {
        PyErr_Format(PyExc_IndexError, "view(%llu, %llu): %s", off, n, shk_error_detail());
        return NULL;
    }
    return shk_memoryview_of(z->segment, p, (Py_ssize_t)n, readonly, NULL);
}

static PyObject *dirent_tuple(const struct shk_dirent *e)
{
    /* a name that is not UTF-8 was not written by shmkit (corruption): shown, not refused */
    PyObject *name = PyUnicode_DecodeUTF8(e->name, (Py_ssize_t)strnlen(e->name, sizeof e->name),
                                          "surrogateescape");
    if (!name)
        return NULL;
    return Py_BuildValue("(NIKKKKi)", name, e->type, (unsigned long long)e->offset,
                         (unsigned long long)e->size, (unsigned long long)e->aux,
                         (unsigned long long)e->created_ns, (int)e->creator_pid);
}

static PyObject *zone_obj_get(ZoneObject *z, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"name", "type", "size", "aux", "flags", NULL};
    const char *name;
    unsigned int type;
    unsigned long long size = 0, aux = 0;
    int flags = SHK_O_CREATE;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "sI|KKi:obj_get", kwlist, &name, &type, &size,
                                     &aux, &flags))
        return NULL;
    if (shk_zone_check_open(z) < 0)
        return NULL;
    struct shk_dirent e;
    int created;
    int r = shk_zone_obj_get(&z->zone, name, type, size, aux, flags, NULL, NULL, &e, &created);
    if (r)
        return shk_py_raise(r, "obj_get");
    PyObject *t = dirent_tuple(&e);
    if (!t)
        return NULL;
    return Py_BuildValue("(NO)", t, created ? Py_True : Py_False);
}

static PyObject *zone_obj_find(ZoneObject *z, PyObject *arg)
{
    const char *name = PyUnicode_AsUTF8(arg);
    if (!name)
        return NULL;
    if (shk_zone_check_open(z) < 0)
        return NULL;
    struct shk_dirent e;
    int r = shk_zone_obj_find(&z->zone, name, &e);
    if (r)
        return shk_py_raise(r, "obj_find");
    return dirent_tuple(&e);
}

static PyObject *zone_obj_destroy(ZoneObject *z, PyObject *args)
{
    const char *name;
    unsigned int type = 0;
    if (!PyArg_ParseTuple(args, "s|I:obj_destroy", &name, &type))
        return NULL;
    if (shk_zone_check_open(z) < 0)
        return NULL;
    int r = shk_zone_obj_destroy(&z->zone, name, type);
    return shk_py_none_or_raise(r, "obj_destroy");
}

static PyObject *zone_obj_list(ZoneObject *z, PyObject *unused)
{
    if (shk_zone_check_open(z) < 0)
        return NULL;
    struct shk_dirent *all;
    size_t n;
    int r = shk_zone_obj_list_all(&z->zone, &all, &n);
    if (r)
        return shk_py_raise(r, "obj_list");
    PyObject *list = PyList_New((Py_ssize_t)n);
    for (size_t i = 0; list && i < n; i++) {
        PyObject *t = dirent_tuple(&all[i]);
        if (!t) {
            Py_CLEAR(list);
            break;
        }
        PyList_SET_ITEM(list, (Py_ssize_t)i, t);
    }
    free(all);
    return list;
}

static PyObject *zone_stats(ZoneObject *z, PyObject *unused)
{
    if (shk_zone_check_open(z) < 0)
        return NULL;
    struct shk_zone_stats st;
    int r = shk_zone_stats(&z->zone, &st);
    if (r)
        return shk_py_raise(r, "stats");
    PyObject *classes = PyList_New(SHK_NCLASSES);
    if (!classes)
        return NULL;
    for (int c = 0; c < SHK_NCLASSES; c++) {
        PyObject *t = Py_BuildValue("(IKKKK)", 1u << (c + SHK_SLAB_MIN_SHIFT),
                                    (unsigned long long)st.cls[c].total,
                                    (unsigned long long)st.cls[c].used,
                                    (unsigned long long)st.cls[c].reqs,
                                    (unsigned long long)st.cls[c].fails);
        if (!t) {
            Py_DECREF(classes);
            return NULL;
        }
        PyList_SET_ITEM(classes, c, t);
    }
    PyObject *d = shk_py_fields(&st, shk_zone_stats_fields);
    if (d && PyDict_SetItemString(d, "classes", classes) < 0)
        Py_CLEAR(d);
    Py_DECREF(classes);
    return d;
}

static int zone_checker(void *obj, char *report, size_t cap)
{
    return shk_zone_check((struct shk_zone *)obj, report, cap);
}

static PyObject *zone_check(ZoneObject *z, PyObject *unused)
{
    if (shk_zone_check_open(z) < 0)
        return NULL;
    return shk_py_check_report(zone_checker, &z->zone);
}

static PyObject *zone_header(ZoneObject *z, PyObject *unused)
{
    if (shk_zone_check_open(z) < 0)
        return NULL;
    struct shk_zone_header_info h;
    shk_zone_header_info(&z->zone, &h);
    PyObject *d = shk_py_fields(&h, shk_zone_header_fields);
    PyObject *tag = d ? PyBytes_FromStringAndSize((const char *)h.tag, h.tag_len) : NULL;
    if (!tag || PyDict_SetItemString(d, "tag", tag) < 0)
        Py_CLEAR(d);
    Py_XDECREF(tag);
    return d;
}

static PyObject *zone_sync(ZoneObject *z, PyObject *unused)
{
    if (shk_zone_check_open(z) < 0)
        return NULL;
    int r = shk_zone_sync(&z->zone);
    if (r)
        return shk_py_raise(r, "sync");
    return PyLong_FromSize_t(z->zone.mapped);
}

static PyObject *zone_debug_die_in_lock(ZoneObject *z, PyObject *arg)
{
    /* Test hook: take the zone mutex, half-do an allocation's bookkeeping the way a
     * crash would leave it, and die by SIGKILL while holding the mutex. Used by the
     * tests of crash recovery; never returns. */
    long mode = PyLong_AsLong(arg);
    if (mode == -1 && PyErr_Occurred())
        return NULL;
    if (shk_zone_check_open(z) < 0)
        return NULL;
    if (shk_zone_lock(&z->zone) != 0)
        return shk_py_raise(SHK_ECORRUPT, "lock");
    shk_zone_debug_half_done_locked(&z->zone, (int)mode);
    kill(getpid(), SIGKILL);
    for (;;)
        pause();
}

SHK_PY_GETTER(zone_get_must_init, ZoneObject, PyBool_FromLong(self->must_init))
SHK_PY_GETTER(zone_get_mapped, ZoneObject, PyLong_FromSize_t(self->zone.mapped))
SHK_PY_GETTER(zone_get_segment, ZoneObject, Py_NewRef((PyObject *)self->segment))
SHK_PY_GETTER(zone_get_closed, ZoneObject,
              PyBool_FromLong(!self->segment || self->segment->closed ||
                              self->segment->close_pending))

static PyGetSetDef zone_getset[] = {
    {"must_init", (getter)zone_get_must_init, NULL, "True while this handle initialises the zone", NULL},
    {"mapped", (getter)zone_get_mapped, NULL, "bytes of the zone mapped in this process", NULL},
    {"segment", (getter)zone_get_segment, NULL, "the _core.Segment holding the zone", NULL},
    {"closed", (getter)zone_get_closed, NULL, "True once its segment is closed", NULL},
    {NULL},
};

static PyMethodDef zone_methods[] = {
    {"init_done", (PyCFunction)zone_init_done, METH_O, "init_done(ok)\n--\n\nFinish initialising."},
    {"alloc", (PyCFunction)(void (*)(void))zone_alloc, METH_VARARGS | METH_KEYWORDS,
     "alloc(size, zero=False)\n--\n\nAllocate; returns the offset."},
    {"free", (PyCFunction)zone_free, METH_O, "free(offset)\n--\n\nFree an allocation."},
    {"usable_size", (PyCFunction)zone_usable_size, METH_O,
     "usable_size(offset)\n--\n\nBytes usable at offset (0 if not an allocation)."},
    {"view", (PyCFunction)zone_view, METH_VARARGS,
     "view(offset, length, readonly=False)\n--\n\nmemoryview of [offset, offset+length)."},
    {"obj_get", (PyCFunction)(void (*)(void))zone_obj_get, METH_VARARGS | METH_KEYWORDS,
     "obj_get(name, type, size=0, aux=0, flags=O_CREATE)\n--\n\nFind or create a named "
     "object; returns (entry, created)."},
    {"obj_find", (PyCFunction)zone_obj_find, METH_O, "obj_find(name)\n--\n\nEntry of a named object."},
    {"obj_destroy", (PyCFunction)zone_obj_destroy, METH_VARARGS,
     "obj_destroy(name, type=0)\n--\n\nRemove a named object and free its memory."},
    {"obj_list", (PyCFunction)zone_obj_list, METH_NOARGS, "obj_list()\n--\n\nAll entries."},
    {"stats", (PyCFunction)zone_stats, METH_NOARGS, "stats()\n--\n\nAllocator statistics."},
    {"check", (PyCFunction)zone_check, METH_NOARGS,
     "check()\n--\n\nVerify every invariant; returns (problem_count, lines)."},
    {"header", (PyCFunction)zone_header, METH_NOARGS, "header()\n--\n\nHeader fields."},
    {"sync", (PyCFunction)zone_sync, METH_NOARGS,
     "sync()\n--\n\nFollow growth made by other processes; returns bytes mapped."},
    {"_debug_die_in_lock", (PyCFunction)zone_debug_die_in_lock, METH_O,
     "_debug_die_in_lock(mode)\n--\n\nTest hook: die by SIGKILL holding the zone mutex."},
    {NULL},
};

static PyMemberDef zone_members[] = {
    {"__weaklistoffset__", T_PYSSIZET, offsetof(ZoneObject, weakreflist), READONLY},
    {NULL},
};

static PyType_Slot zone_slots[] = {
    {Py_tp_new, zone_new},
    {Py_tp_members, zone_members},
    {Py_tp_dealloc, zone_dealloc},
    {Py_tp_methods, zone_methods},
    {Py_tp_getset, zone_getset},
    {Py_tp_doc, "A zone over a Segment (internal; use shmkit.Zone)."},
    {0, NULL},
};

int shk_init_zone(PyObject *m)
{
    static const struct shk_py_int constants[] = {
        {"LAYOUT_VERSION", SHK_LAYOUT_VERSION},
        {"PAGE", SHK_PAGE},
        {"NCLASSES", SHK_NCLASSES},
        {"ZONE_MIN_SIZE", SHK_ZONE_MIN_SIZE},
        {"TAG_MAX", SHK_TAG_MAX},
        {"OBJ_NAME_MAX", SHK_OBJ_NAME_MAX},
        {"ZONE_OFF_STATE", offsetof(struct shk_zone_header, state)},
        {"ZONE_OFF_FREE_HEAD", offsetof(struct shk_zone_header, free_head)},
        {"ZS_READY", SHK_ZS_READY},
        {"OBJ_RAW", SHK_OBJ_RAW},
        {"OBJ_LOCK", SHK_OBJ_LOCK},
        {"OBJ_RLOCK", SHK_OBJ_RLOCK},
        {"OBJ_RWLOCK", SHK_OBJ_RWLOCK},
        {"OBJ_SEMAPHORE", SHK_OBJ_SEMAPHORE},
        {"OBJ_EVENT", SHK_OBJ_EVENT},
        {"OBJ_CONDITION", SHK_OBJ_CONDITION},
        {"OBJ_BARRIER", SHK_OBJ_BARRIER},
        {"OBJ_VALUE", SHK_OBJ_VALUE},
        {"OBJ_ARRAY", SHK_OBJ_ARRAY},
        {"OBJ_COUNTER", SHK_OBJ_COUNTER},
        {"OBJ_QUEUE", SHK_OBJ_QUEUE},
        {"OBJ_DICT", SHK_OBJ_DICT},
        {"OBJ_NDARRAY", SHK_OBJ_NDARRAY},
        {"OBJ_BOARD", SHK_OBJ_BOARD},
        {"OBJ_CONFIG", SHK_OBJ_CONFIG},
        SHK_PY_UINT("ZONE_MAGIC", SHK_ZONE_MAGIC),
        SHK_PY_UINT("FORMAT_WORD", SHK_FORMAT_WORD),
        {NULL},
    };
    if (shk_py_add_ints(m, constants) < 0)
        return -1;
    PyType_Spec spec = {"shmkit._core.Zone", sizeof(ZoneObject), 0, Py_TPFLAGS_DEFAULT, zone_slots};
    shk_ZoneType = shk_py_add_type(m, &spec);
    return shk_ZoneType ? 0 : -1;
}
