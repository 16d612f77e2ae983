/*
 * segment.c (binding) - shmkit._core.Segment and shmkit._core.Region.
 *
 * Segment owns one core mapping.  Buffers handed out (memoryviews of the Segment, and
 * Regions of part of it), handles on objects in it and calls in progress without the GIL
 * are counted; close() with any of them alive only marks the segment closed and unmaps
 * when the last one is released, so nothing ever points at unmapped memory.
 */
#include "binding.h"

#include <errno.h>
#include <fcntl.h>
#include <structmember.h>
#include <sys/ipc.h>

PyTypeObject *shk_SegmentType;
static PyTypeObject *RegionType;

int shk_segment_check_open(SegmentObject *s)
{
    if (s->closed || s->close_pending || !s->seg.base) {
        shk_py_closed("segment is closed");
        return -1;
    }
    return 0;
}

static void really_close(SegmentObject *s)
{
    if (!s->closed) {
        shk_seg_close(&s->seg);
        s->closed = 1;
    }
}

void shk_segment_export(SegmentObject *s)
{
    s->exports++;
}

void shk_segment_unexport(SegmentObject *s)
{
    if (--s->exports == 0 && s->close_pending)
        really_close(s);
}

static SegmentObject *segment_alloc(PyTypeObject *type)
{
    SegmentObject *s = (SegmentObject *)type->tp_alloc(type, 0);
    if (s) {
        s->seg.fd = -1;
        s->seg.shmid = -1;
    }
    return s;
}

static PyObject *segment_finish(SegmentObject *s, int r, const char *what)
{
    if (r) {
        s->closed = 1;
        Py_DECREF(s);
        return shk_py_raise(r, what);
    }
    return (PyObject *)s;
}

/* Open a posix or file segment.  An opener may wait in the core for the creator to size
 * the object; that wait returns EINTR at signals (core/segment.c: wait_for_size): run
 * the handlers (PEP 475) and open again, or give up if one raised. */
static PyObject *open_fd_segment(PyTypeObject *type, int file, const char *where, int flags,
                                 unsigned int mode, Py_ssize_t size, Py_ssize_t reserve)
{
    SegmentObject *s = segment_alloc(type);
    if (!s)
        return NULL;
    int r;
    do {
        Py_BEGIN_ALLOW_THREADS
        r = file ? shk_seg_open_file(&s->seg, where, flags, mode, (size_t)size, (size_t)reserve)
                 : shk_seg_open_posix(&s->seg, where, flags, mode, (size_t)size, (size_t)reserve);
        Py_END_ALLOW_THREADS
    } while (r == EINTR && PyErr_CheckSignals() == 0);
    /* EINTR here: a handler raised, and shk_py_raise keeps its exception */
    return segment_finish(s, r, file ? "open" : "shm_open");
}

/* posix(name, ...) and file(path, ...): the same arguments but for the first one's name;
 * both a file name in the file system encoding, as os.open's (/dev/shm for posix). */
static PyObject *segment_by_path(PyTypeObject *type, PyObject *args, PyObject *kw, int file)
{
    static char *posix_kwlist[] = {"name", "flags", "mode", "size", "reserve", NULL};
    static char *file_kwlist[] = {"path", "flags", "mode", "size", "reserve", NULL};
    PyObject *path;
    int flags = SHK_O_CREATE;
    unsigned int mode = 0600;
    Py_ssize_t size = 0, reserve = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, file ? "O&|iInn:file" : "O&|iInn:posix",
                                     file ? file_kwlist : posix_kwlist, PyUnicode_FSConverter,
                                     &path, &flags, &mode, &size, &reserve))
        return NULL;
    if (size < 0 || reserve < 0) {
        Py_DECREF(path);
        return PyErr_Format(PyExc_ValueError, "size and reserve must be >= 0");
    }
    PyObject *seg = open_fd_segment(type, file, PyBytes_AS_STRING(path), flags, mode, size,
                                    reserve);
    Py_DECREF(path);
    return seg;
}

static PyObject *segment_posix(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    return segment_by_path(type, args, kw, 0);
}

static PyObject *segment_file(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    return segment_by_path(type, args, kw, 1);
}

static PyObject *segment_sysv(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"key", "shmid", "flags", "mode", "size", NULL};
    long long key = 0;
    int shmid = -1, flags = SHK_O_CREATE;
    unsigned int mode = 0600;
    Py_ssize_t size = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "L|iiIn:sysv", kwlist, &key, &shmid, &flags,
                                     &mode, &size))
        return NULL;
    if (key < INT32_MIN || key > UINT32_MAX)
        return PyErr_Format(PyExc_ValueError, "SysV key %lld does not fit in 32 bits", key);
    if (size < 0)
        return PyErr_Format(PyExc_ValueError, "size must be >= 0");
    SegmentObject *s = segment_alloc(type);
    if (!s)
        return NULL;
    int r;
    Py_BEGIN_ALLOW_THREADS
    r = shk_seg_open_sysv(&s->seg, (int)(uint32_t)key, shmid, flags, mode, (size_t)size);
    Py_END_ALLOW_THREADS
    return segment_finish(s, r, "shmget");
}

static PyObject *segment_memfd(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"name", "size", "seals", "reserve", NULL};
    const char *name;
    Py_ssize_t size, reserve = 0;
    unsigned int seals = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "sn|In:memfd", kwlist, &name, &size, &seals,
                                     &reserve))
        return NULL;
    if (size < 0 || reserve < 0)
        return PyErr_Format(PyExc_ValueError, "size and reserve must be >= 0");
    SegmentObject *s = segment_alloc(type);
    if (!s)
        return NULL;
    int r = shk_seg_create_memfd(&s->seg, name, (size_t)size, seals, (size_t)reserve);
    return segment_finish(s, r, "memfd_create");
}

static PyObject *segment_from_fd(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"fd", "flags", "reserve", NULL};
    int fd, flags = 0;
    Py_ssize_t reserve = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "i|in:from_fd", kwlist, &fd, &flags, &reserve))
        return NULL;
    SegmentObject *s = segment_alloc(type);
    if (!s)
        return NULL;
    int r = shk_seg_open_fd(&s->seg, fd, flags, (size_t)(reserve < 0 ? 0 : reserve));
    return segment_finish(s, r, "mmap");
}

static PyObject *segment_anon(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"size", NULL};
    Py_ssize_t size;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "n:anon", kwlist, &size))
        return NULL;
    if (size < 0)
        return PyErr_Format(PyExc_ValueError, "size must be >= 0");
    SegmentObject *s = segment_alloc(type);
    if (!s)
        return NULL;
    int r = shk_seg_create_anon(&s->seg, (size_t)size);
    return segment_finish(s, r, "mmap");
}

static PyObject *segment_close(SegmentObject *s, PyObject *unused)
{
    if (s->closed || s->close_pending)
        Py_RETURN_TRUE;
    /* waits in progress on handles that refuse calls once their zone is closed end now
     * (ClosedError); the others go on, and every call keeps the mapping until it ends */
    shk_py_calls_cancel(s, NULL);
    if (s->exports > 0) {
        s->close_pending = 1;
        shk_py_aio_closed(s); /* coroutines waiting on objects in it: ClosedError */
        Py_RETURN_FALSE; /* unmapped when the last view is released */
    }
    really_close(s);
    Py_RETURN_TRUE;
}

static PyObject *segment_resize(SegmentObject *s, PyObject *arg)
{
    Py_ssize_t n = PyLong_AsSsize_t(arg);
    if (n == -1 && PyErr_Occurred())
        return NULL;
    if (shk_segment_check_open(s) < 0)
        return NULL;
    if (n <= 0)
        return PyErr_Format(PyExc_ValueError, "size must be > 0, not %zd", n);
    if (s->exports > 0 && (size_t)n < s->seg.size) {
        PyErr_Format(PyExc_BufferError, "cannot shrink the segment while %zd view(s) of it "
                     "exist (memoryviews, arrays); release them first", s->exports);
        return NULL;
    }
    int r = shk_seg_resize(&s->seg, (size_t)n, s->exports == 0);
    if (r == SHK_ENOGROW && s->exports > 0) {
        PyErr_Format(PyExc_BufferError, "cannot grow the segment beyond its reservation while "
                     "%zd view(s) of it exist (the mapping would move); release them first",
                     s->exports);
        return NULL;
    }
    return shk_py_none_or_raise(r, "resize");
}

static PyObject *segment_refresh(SegmentObject *s, PyObject *unused)
{
    if (shk_segment_check_open(s) < 0)
        return NULL;
    int r = shk_seg_refresh(&s->seg);
    if (r && r != SHK_ENOGROW)
        return shk_py_raise(r, "refresh");
    return PyLong_FromSize_t(s->seg.size);
}

static PyObject *segment_remap(SegmentObject *s, PyObject *unused)
{
    if (shk_segment_check_open(s) < 0)
        return NULL;
    int r = shk_seg_remap(&s->seg);
    return shk_py_none_or_raise(r, "remap");
}

static PyObject *segment_publish(SegmentObject *s, PyObject *unused)
{
    if (shk_segment_check_open(s) < 0)
        return NULL;
    int r = shk_seg_publish(&s->seg);
    return shk_py_none_or_raise(r, "publish");
}

static PyObject *segment_object_size(SegmentObject *s, PyObject *unused)
{
    if (shk_segment_check_open(s) < 0)
        return NULL;
    size_t n;
    int r = shk_seg_object_size(&s->seg, &n);
    if (r)
        return shk_py_raise(r, "object_size");
    return PyLong_FromSize_t(n);
}

static PyObject *segment_region(SegmentObject *s, PyObject *args)
{
    Py_ssize_t off, len;
    int readonly = 0;
    if (!PyArg_ParseTuple(args, "nn|p:region", &off, &len, &readonly))
        return NULL;
    if (shk_segment_check_open(s) < 0)
        return NULL;
    if (off < 0 || len < 0 || (size_t)off > s->seg.size || (size_t)len > s->seg.size - (size_t)off)
        return PyErr_Format(PyExc_IndexError, "range [%zd, %zd) is outside the segment "
                            "(%zu bytes)", off, off + len, s->seg.size);
    return shk_memoryview_of(s, s->seg.base + off, len,
                             readonly || (s->seg.flags & SHK_O_RDONLY), NULL);
}

static PyObject *segment_stat(SegmentObject *s, PyObject *unused)
{
    if (shk_segment_check_open(s) < 0)
        return NULL;
    struct shk_seg_stat st;
    shk_clear_detail();
    int r = shk_seg_stat(&s->seg, &st);
    if (r)
        return shk_py_raise(r, "stat");
    return shk_py_fields(&st, shk_seg_stat_fields);
}

static PyObject *core_sysv_stat(PyObject *self, PyObject *arg)
{
    long id = PyLong_AsLong(arg);
    if (id == -1 && PyErr_Occurred())
        return NULL;
    if (id < 0 || id > INT32_MAX)
        return PyErr_Format(PyExc_ValueError, "shmid must be in [0, 2**31), not %ld", id);
    struct shk_seg_stat st;
    shk_clear_detail();
    int r = shk_sysv_stat((int)id, &st);
    if (r)
        return shk_py_raise(r, "shmctl(IPC_STAT)");
    return shk_py_fields(&st, shk_seg_stat_fields);
}


static int segment_getbuffer(SegmentObject *s, Py_buffer *view, int flags)
{
    if (shk_segment_check_open(s) < 0) {
        view->obj = NULL;
        return -1;
    }
    int ro = (s->seg.flags & SHK_O_RDONLY) != 0;
    if (PyBuffer_FillInfo(view, (PyObject *)s, s->seg.base, (Py_ssize_t)s->seg.size, ro, flags) < 0)
        return -1;
    s->exports++;
    return 0;
}

static void segment_releasebuffer(SegmentObject *s, Py_buffer *view)
{
    shk_segment_unexport(s);
}

static void segment_dealloc(SegmentObject *s)
{
    if (s->weakreflist)
        PyObject_ClearWeakRefs((PyObject *)s);
    really_close(s);
    shk_py_free(s);
}

#define GET_INT(fname, expr)                                                  \
    static PyObject *segment_get_##fname(SegmentObject *s, void *c)           \
    {                                                                         \
        return PyLong_FromLongLong((long long)(expr));                        \
    }
GET_INT(kind, s->seg.kind)
GET_INT(fd, s->closed ? -1 : s->seg.fd)
GET_INT(shmid, s->seg.shmid)
GET_INT(size, s->closed ? 0 : s->seg.size)
GET_INT(reserved, s->seg.reserved)
GET_INT(address, (uintptr_t)s->seg.base)
GET_INT(exports, s->exports)
GET_INT(flags, s->seg.flags)

SHK_PY_GETTER(segment_get_created, SegmentObject, PyBool_FromLong(self->seg.created))
SHK_PY_GETTER(segment_get_readonly, SegmentObject,
              PyBool_FromLong((self->seg.flags & SHK_O_RDONLY) != 0))
SHK_PY_GETTER(segment_get_closed, SegmentObject,
              PyBool_FromLong(self->closed || self->close_pending))

static PyGetSetDef segment_getset[] = {
    {"kind", (getter)segment_get_kind, NULL, "backend: KIND_POSIX, KIND_SYSV, ...", NULL},
    {"fd", (getter)segment_get_fd, NULL, "file descriptor (-1 for sysv, anon, or closed)", NULL},
    {"shmid", (getter)segment_get_shmid, NULL, "SysV shmid (-1 for other backends)", NULL},
    {"size", (getter)segment_get_size, NULL, "bytes usable in this mapping", NULL},
    {"reserved", (getter)segment_get_reserved, NULL, "address space reserved for growth", NULL},
    {"address", (getter)segment_get_address, NULL, "address of the mapping in this process", NULL},
    {"exports", (getter)segment_get_exports, NULL, "buffers of this segment still alive", NULL},
    {"flags", (getter)segment_get_flags, NULL, "O_* flags it was opened with", NULL},
    {"created", (getter)segment_get_created, NULL, "True if this open created the object", NULL},
    {"readonly", (getter)segment_get_readonly, NULL, "True if mapped read-only", NULL},
    {"closed", (getter)segment_get_closed, NULL, "True once close() was called", NULL},
    {NULL},
};

static PyMethodDef segment_methods[] = {
    {"posix", (PyCFunction)(void (*)(void))segment_posix, METH_VARARGS | METH_KEYWORDS | METH_CLASS,
     "posix(name, flags=O_CREATE, mode=0o600, size=0, reserve=0)\n--\n\nOpen/create a POSIX segment."},
    {"file", (PyCFunction)(void (*)(void))segment_file, METH_VARARGS | METH_KEYWORDS | METH_CLASS,
     "file(path, flags=O_CREATE, mode=0o600, size=0, reserve=0)\n--\n\nMap a file (no symlinks)."},
    {"sysv", (PyCFunction)(void (*)(void))segment_sysv, METH_VARARGS | METH_KEYWORDS | METH_CLASS,
     "sysv(key, shmid=-1, flags=O_CREATE, mode=0o600, size=0)\n--\n\nOpen/create a SysV segment."},
    {"memfd", (PyCFunction)(void (*)(void))segment_memfd, METH_VARARGS | METH_KEYWORDS | METH_CLASS,
     "memfd(name, size, seals=0, reserve=0)\n--\n\nCreate a memfd segment."},
    {"from_fd", (PyCFunction)(void (*)(void))segment_from_fd, METH_VARARGS | METH_KEYWORDS | METH_CLASS,
     "from_fd(fd, flags=0, reserve=0)\n--\n\nMap a received fd (duplicated)."},
    {"anon", (PyCFunction)(void (*)(void))segment_anon, METH_VARARGS | METH_KEYWORDS | METH_CLASS,
     "anon(size)\n--\n\nAnonymous shared mapping, inherited by fork children."},
    {"close", (PyCFunction)segment_close, METH_NOARGS,
     "close()\n--\n\nDetach this process. True if unmapped now, False if deferred until the "
     "last view is released."},
    {"resize", (PyCFunction)segment_resize, METH_O, "resize(size)\n--\n\nResize object and mapping."},
    {"refresh", (PyCFunction)segment_refresh, METH_NOARGS,
     "refresh()\n--\n\nFollow growth made elsewhere; returns the new size."},
    {"remap", (PyCFunction)segment_remap, METH_NOARGS,
     "remap()\n--\n\nMap the object again from fd at the same address (after fd was given "
     "an open file description of its own)."},
    {"publish", (PyCFunction)segment_publish, METH_NOARGS,
     "publish()\n--\n\nGive a new object (opened with O_PUBLISH_LATER) its name; "
     "SegmentExistsError if another process took the name meanwhile."},
    {"object_size", (PyCFunction)segment_object_size, METH_NOARGS,
     "object_size()\n--\n\nSize of the underlying object now (fstat / IPC_STAT)."},
    {"stat", (PyCFunction)segment_stat, METH_NOARGS,
     "stat()\n--\n\nWhat the kernel knows: IPC_STAT for SysV, fstat otherwise (a dict)."},
    {"region", (PyCFunction)segment_region, METH_VARARGS,
     "region(offset, length, readonly=False)\n--\n\nmemoryview of part of the mapping that "
     "keeps it alive."},
    {NULL},
};

static PyMemberDef segment_members[] = {
    {"__weaklistoffset__", T_PYSSIZET, offsetof(SegmentObject, weakreflist), READONLY},
    {NULL},
};

static PyType_Slot segment_slots[] = {
    {Py_tp_dealloc, segment_dealloc},
    {Py_tp_members, segment_members},
    {Py_tp_methods, segment_methods},
    {Py_tp_getset, segment_getset},
    {Py_tp_doc, "A mapping of shared memory (internal; use shmkit.Segment)."},
    {Py_bf_getbuffer, segment_getbuffer},
    {Py_bf_releasebuffer, segment_releasebuffer},
    {0, NULL},
};

/* ---- Region ------------------------------------------------------------------------ */

typedef struct {
    PyObject_HEAD
    SegmentObject *seg;
    void *ptr;
    Py_ssize_t len;
    int readonly;
    PyObject *owner;
    shk_region_release_fn release;
    uint64_t cookie;
} RegionObject;

PyObject *shk_region_new_with_release(SegmentObject *seg, void *ptr, Py_ssize_t len,
                                      int readonly, PyObject *owner,
                                      shk_region_release_fn release, uint64_t cookie)
{
    RegionObject *r = PyObject_New(RegionObject, RegionType);
    if (!r)
        return NULL;
    Py_INCREF(seg);
    r->seg = seg;
    r->ptr = ptr;
    r->len = len;
    r->readonly = readonly;
    Py_XINCREF(owner);
    r->owner = owner;
    r->release = release;
    r->cookie = cookie;
    shk_segment_export(seg);
    return (PyObject *)r;
}

PyObject *shk_region_new(SegmentObject *seg, void *ptr, Py_ssize_t len, int readonly,
                         PyObject *owner)
{
    return shk_region_new_with_release(seg, ptr, len, readonly, owner, NULL, 0);
}

PyObject *shk_memoryview_of(SegmentObject *seg, void *ptr, Py_ssize_t len, int readonly,
                            PyObject *owner)
{
    PyObject *r = shk_region_new(seg, ptr, len, readonly, owner);
    if (!r)
        return NULL;
    PyObject *mv = PyMemoryView_FromObject(r);
    Py_DECREF(r);
    return mv;
}

static int region_getbuffer(RegionObject *r, Py_buffer *view, int flags)
{
    return PyBuffer_FillInfo(view, (PyObject *)r, r->ptr, r->len, r->readonly, flags);
}

static void region_dealloc(RegionObject *r)
{
    if (r->release)
        r->release(r->owner, r->cookie);
    Py_XDECREF(r->owner);
    shk_segment_unexport(r->seg);
    Py_DECREF(r->seg);
    shk_py_free(r);
}

SHK_PY_GETTER(region_get_len, RegionObject, PyLong_FromSsize_t(self->len))

static PyGetSetDef region_getset[] = {
    {"nbytes", (getter)region_get_len, NULL, "length in bytes", NULL},
    {NULL},
};

static PyType_Slot region_slots[] = {
    {Py_tp_dealloc, region_dealloc},
    {Py_tp_getset, region_getset},
    {Py_tp_doc, "Part of a segment's mapping, exported through the buffer protocol; keeps "
                "the mapping alive."},
    {Py_bf_getbuffer, region_getbuffer},
    {0, NULL},
};

/* ---- module functions ---------------------------------------------------------------- */

static PyObject *core_ftok(PyObject *self, PyObject *args)
{
    PyObject *path_obj;
    int proj;
    if (!PyArg_ParseTuple(args, "O&i:ftok", PyUnicode_FSConverter, &path_obj, &proj))
        return NULL;
    if ((proj & 0xff) == 0) {
        Py_DECREF(path_obj);
        PyErr_SetString(PyExc_ValueError, "ftok: the low 8 bits of proj_id must not be zero");
        return NULL;
    }
    key_t k = ftok(PyBytes_AS_STRING(path_obj), proj);
    int e = errno;
    Py_DECREF(path_obj);
    if (k == (key_t)-1) {
        shk_clear_detail();
        return shk_py_raise_os(e, "ftok: cannot stat the path");
    }
    return PyLong_FromLong((long)k);
}

static PyObject *core_unlink_posix(PyObject *self, PyObject *arg)
{
    PyObject *bytes; /* a file name: the file system encoding, as os.unlink would use */
    if (!PyUnicode_FSConverter(arg, &bytes))
        return NULL;
    int r = shk_seg_unlink_posix(PyBytes_AS_STRING(bytes));
    Py_DECREF(bytes);
    return shk_py_none_or_raise(r, "shm_unlink");
}

static PyObject *core_rmid(PyObject *self, PyObject *arg)
{
    long id = PyLong_AsLong(arg);
    if (id == -1 && PyErr_Occurred())
        return NULL;
    int r = shk_seg_rmid((int)id);
    return shk_py_none_or_raise(r, "shmctl(IPC_RMID)");
}

static PyObject *core_ofd_lock(PyObject *self, PyObject *args)
{
    int fd, type, wait = 0;
    unsigned long long offset;
    if (!PyArg_ParseTuple(args, "iKi|p:ofd_lock", &fd, &offset, &type, &wait))
        return NULL;
    int r;
    if (wait) {
        struct shk_ofd_wait o = {fd, offset, type};
        struct shk_wait w = SHK_WAIT_INIT(SHK_FOREVER, 0);
        if ((r = shk_py_wait(&shk_ofd_lock_op, &o, &w, 0, NULL)) == SHK_PY_ERR)
            return NULL;
    } else {
        r = shk_ofd_lock(fd, offset, type, 0);
    }
    if (r == EAGAIN)
        Py_RETURN_FALSE;
    if (r) {
        shk_clear_detail();
        return shk_py_raise_os(r, "fcntl(F_OFD_SETLK)");
    }
    Py_RETURN_TRUE;
}

static PyObject *core_ofd_probe(PyObject *self, PyObject *args)
{
    int fd, type, conflict = 0;
    unsigned long long offset;
    if (!PyArg_ParseTuple(args, "iKi:ofd_probe", &fd, &offset, &type))
        return NULL;
    int r = shk_ofd_probe(fd, offset, type, &conflict);
    if (r) {
        shk_clear_detail();
        return shk_py_raise_os(r, "fcntl(F_OFD_GETLK)");
    }
    return PyBool_FromLong(conflict);
}

static PyMethodDef segment_functions[] = {
    {"sysv_stat", core_sysv_stat, METH_O,
     "sysv_stat(shmid, /)\n--\n\nIPC_STAT of a SysV segment by id, without attaching: a dict "
     "(size, uid, gid, cuid, cgid, mode, key, cpid, lpid, nattch, atime, dtime, ctime, "
     "removed)."},
    {"ftok", core_ftok, METH_VARARGS,
     "ftok(path, proj_id, /)\n--\n\nSysV IPC key from a path and a project id, exactly as C's ftok(3)."},
    {"unlink_posix", core_unlink_posix, METH_O,
     "unlink_posix(name, /)\n--\n\nshm_unlink the POSIX segment `name` (no leading '/')."},
    {"rmid", core_rmid, METH_O, "rmid(shmid, /)\n--\n\nshmctl(shmid, IPC_RMID)."},
    {"ofd_lock", core_ofd_lock, METH_VARARGS,
     "ofd_lock(fd, offset, type, wait=False, /)\n--\n\nOFD byte lock (F_RDLCK, F_WRLCK, "
     "F_UNLCK) on one byte. True when taken, False when held elsewhere (non-blocking)."},
    {"ofd_probe", core_ofd_probe, METH_VARARGS,
     "ofd_probe(fd, offset, type, /)\n--\n\nTrue if another open file description holds a "
     "conflicting lock on that byte."},
    {NULL, NULL, 0, NULL},
};

int shk_init_segment(PyObject *m)
{
    if (PyModule_AddFunctions(m, segment_functions) < 0)
        return -1;
    static const struct shk_py_int constants[] = {
        {"SHM_DEST", SHK_SHM_DEST},
        {"SHM_LOCKED", SHK_SHM_LOCKED},
        {"O_CREATE", SHK_O_CREATE},
        {"O_EXCL", SHK_O_EXCL},
        {"O_RDONLY", SHK_O_RDONLY},
        {"O_ANYOWNER", SHK_O_ANYOWNER},
        {"O_ALLOWEMPTY", SHK_O_ALLOWEMPTY},
        {"O_PUBLISH_LATER", SHK_O_PUBLISH_LATER},
        {"KIND_POSIX", SHK_SEG_POSIX},
        {"KIND_SYSV", SHK_SEG_SYSV},
        {"KIND_FILE", SHK_SEG_FILE},
        {"KIND_MEMFD", SHK_SEG_MEMFD},
        {"KIND_ANON", SHK_SEG_ANON},
        SHK_PY_UINT("LOCKBYTE_INIT", SHK_LOCKBYTE_INIT),
        SHK_PY_UINT("LOCKBYTE_ATTACH", SHK_LOCKBYTE_ATTACH),
        SHK_PY_UINT("LOCKBYTE_CREATOR", SHK_LOCKBYTE_CREATOR),
        {NULL},
    };
    if (shk_py_add_ints(m, constants) < 0)
        return -1;
    PyType_Spec spec = {"shmkit._core.Segment", sizeof(SegmentObject), 0, Py_TPFLAGS_DEFAULT,
                        segment_slots};
    PyType_Spec rspec = {"shmkit._core.Region", sizeof(RegionObject), 0, Py_TPFLAGS_DEFAULT,
                         region_slots};
    if (!(shk_SegmentType = shk_py_add_type(m, &spec)) ||
        !(RegionType = shk_py_add_type(m, &rspec)))
        return -1;
    return 0;
}
