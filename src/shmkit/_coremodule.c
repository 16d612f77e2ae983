/*
 * _coremodule.c - the shmkit._core extension module: module init, the one function that
 * turns core error codes into exceptions, and small module-level functions.  The types
 * live in _binding/<primitive>.c, one file each.
 *
 * Exceptions are the classes of shmkit._errors (documented there), imported once when
 * the module initialises; the binding never defines its own.
 */
#include "_binding/binding.h"

#include <errno.h>
#include <sys/ipc.h>

#include "proc.h"

static PyObject *errors_module; /* shmkit._errors */

/* The binding file of each later primitive defines one of these.  Weak references let
 * the module build and load while a primitive is still being written: a missing one is
 * NULL and is skipped. */
__attribute__((weak)) int shk_init_sync(PyObject *m);
__attribute__((weak)) int shk_init_queue(PyObject *m);
__attribute__((weak)) int shk_init_dict(PyObject *m);
__attribute__((weak)) int shk_init_board(PyObject *m);
__attribute__((weak)) int shk_init_bench(PyObject *m);

PyObject *shk_py_exc(const char *name)
{
    PyObject *cls = errors_module ? PyObject_GetAttrString(errors_module, name) : NULL;
    if (!cls) {
        PyErr_Clear();
        return PyExc_RuntimeError;
    }
    Py_DECREF(cls); /* the module keeps it alive */
    return cls;
}

/* errno values with an exception class of their own (the others are ShmkitOSError);
 * ETIMEDOUT is a ShmkitTimeoutError, which is no OSError subclass. */
static const struct {
    int err;
    const char *pyclass;
} errno_classes[] = {
    {ENOENT, "SegmentNotFoundError"}, {EEXIST, "SegmentExistsError"},
    {EACCES, "SegmentPermissionError"}, {EPERM, "SegmentPermissionError"},
    {ENOSPC, "NoSpaceError"}, {ENOMEM, "NoSpaceError"}, {EFBIG, "NoSpaceError"},
    {EINVAL, "InvalidArgumentError"}, {ETIMEDOUT, "ShmkitTimeoutError"},
};

static PyObject *raise_os(int e, const char *msg)
{
    const char *cls = "ShmkitOSError";
    for (size_t i = 0; i < sizeof errno_classes / sizeof errno_classes[0]; i++)
        if (errno_classes[i].err == e)
            cls = errno_classes[i].pyclass;
    if (e == ETIMEDOUT) {
        PyErr_SetString(shk_py_exc(cls), msg);
        return NULL;
    }
    PyObject *args = Py_BuildValue("(is)", e, msg);
    if (args) {
        PyErr_SetObject(shk_py_exc(cls), args);
        Py_DECREF(args);
    }
    return NULL;
}

PyObject *shk_py_raise(int code, const char *what)
{
    const char *detail = shk_error_detail();
    char msg[1024];
    if (detail && *detail)
        snprintf(msg, sizeof msg, "%s", detail);
    else if (what)
        snprintf(msg, sizeof msg, "%s: %s", what, shk_strerror(code));
    else
        snprintf(msg, sizeof msg, "%s", shk_strerror(code));
    if (code > 0)
        return raise_os(code, msg);
    const char *cls = "ShmkitError";
    switch (code) {
#define SHK_ERROR(value, name, text, pyclass) \
    case name: cls = #pyclass; break;
#include "errors.def"
#undef SHK_ERROR
    default: break;
    }
    PyErr_SetString(shk_py_exc(cls), msg);
    return NULL;
}

int shk_py_raise_int(int code, const char *what)
{
    shk_py_raise(code, what);
    return -1;
}

PyObject *shk_py_check_report(shk_checker check, void *obj)
{
    size_t cap = 1 << 16;
    char *buf = PyMem_Malloc(cap);
    if (!buf)
        return PyErr_NoMemory();
    int n;
    Py_BEGIN_ALLOW_THREADS
    n = check(obj, buf, cap);
    Py_END_ALLOW_THREADS
    if (n < 0) {
        PyMem_Free(buf);
        return shk_py_raise(n, "check");
    }
    PyObject *text = PyUnicode_DecodeUTF8(buf, (Py_ssize_t)strlen(buf), "replace");
    PyMem_Free(buf);
    if (!text)
        return NULL;
    PyObject *lines = PyUnicode_Splitlines(text, 0);
    Py_DECREF(text);
    if (!lines)
        return NULL;
    return Py_BuildValue("(iN)", n, lines);
}

int shk_py_deadline(PyObject *timeout, struct timespec *deadline, int *has)
{
    *has = 0;
    if (!timeout || timeout == Py_None)
        return 0;
    double t = PyFloat_AsDouble(timeout);
    if (t == -1.0 && PyErr_Occurred()) {
        PyErr_Format(PyExc_TypeError, "timeout must be a number or None, not %.100s",
                     Py_TYPE(timeout)->tp_name);
        return -1;
    }
    if (t != t) {
        PyErr_SetString(PyExc_ValueError, "timeout must not be NaN");
        return -1;
    }
    if (t < 0)
        return 0; /* threading's convention: -1 means forever */
    shk_deadline_after(deadline, t);
    *has = 1;
    return 0;
}

/* ---- module functions ------------------------------------------------------------- */

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
        return raise_os(e, "ftok: cannot stat the path");
    }
    return PyLong_FromLong((long)k);
}

static PyObject *core_proc_start_time(PyObject *self, PyObject *arg)
{
    long pid = PyLong_AsLong(arg);
    if (pid == -1 && PyErr_Occurred())
        return NULL;
    return PyLong_FromUnsignedLongLong(shk_proc_start_time((pid_t)pid));
}

static PyObject *core_proc_alive(PyObject *self, PyObject *args)
{
    long pid;
    unsigned long long start;
    if (!PyArg_ParseTuple(args, "lK:proc_alive", &pid, &start))
        return NULL;
    return PyBool_FromLong(shk_proc_alive((pid_t)pid, start));
}

static PyObject *core_strerror(PyObject *self, PyObject *arg)
{
    long code = PyLong_AsLong(arg);
    if (code == -1 && PyErr_Occurred())
        return NULL;
    return PyUnicode_FromString(shk_strerror((int)code));
}

/* The core's error table (errors.def), for error_table() and the E_* constants. */
static const struct {
    int code;
    const char *name, *text, *pyclass;
} core_errors[] = {
#define SHK_ERROR(value, name, text, pyclass) {name, #name, text, #pyclass},
#include "errors.def"
#undef SHK_ERROR
};
#define N_CORE_ERRORS (sizeof core_errors / sizeof core_errors[0])

/* ((code, name, text, exception class), ...) from errors.def, and ((errno, exception
 * class), ...) for the errno values with a class of their own: tests compare both with
 * shmkit._errors. */
static PyObject *core_error_table(PyObject *self, PyObject *unused)
{
    PyObject *codes = PyTuple_New((Py_ssize_t)N_CORE_ERRORS);
    for (size_t i = 0; codes && i < N_CORE_ERRORS; i++) {
        PyObject *row = Py_BuildValue("(isss)", core_errors[i].code, core_errors[i].name,
                                      core_errors[i].text, core_errors[i].pyclass);
        if (!row) {
            Py_CLEAR(codes);
            break;
        }
        PyTuple_SET_ITEM(codes, (Py_ssize_t)i, row);
    }
    size_t ne = sizeof errno_classes / sizeof errno_classes[0];
    PyObject *errnos = codes ? PyTuple_New((Py_ssize_t)ne) : NULL;
    for (size_t i = 0; errnos && i < ne; i++) {
        PyObject *row = Py_BuildValue("(is)", errno_classes[i].err, errno_classes[i].pyclass);
        if (!row) {
            Py_CLEAR(errnos);
            break;
        }
        PyTuple_SET_ITEM(errnos, (Py_ssize_t)i, row);
    }
    if (!errnos) {
        Py_XDECREF(codes);
        return NULL;
    }
    return Py_BuildValue("(NN)", codes, errnos);
}

static PyObject *core_unlink_posix(PyObject *self, PyObject *arg)
{
    const char *name = PyUnicode_AsUTF8(arg);
    if (!name)
        return NULL;
    int r = shk_seg_unlink_posix(name);
    if (r)
        return shk_py_raise(r, "shm_unlink");
    Py_RETURN_NONE;
}

static PyObject *core_rmid(PyObject *self, PyObject *arg)
{
    long id = PyLong_AsLong(arg);
    if (id == -1 && PyErr_Occurred())
        return NULL;
    int r = shk_seg_rmid((int)id);
    if (r)
        return shk_py_raise(r, "shmctl(IPC_RMID)");
    Py_RETURN_NONE;
}

static PyObject *core_fs_free_bytes(PyObject *self, PyObject *arg)
{
    int fd = PyObject_AsFileDescriptor(arg);
    if (fd < 0)
        return NULL;
    return PyLong_FromUnsignedLongLong(shk_fs_free_bytes(fd));
}

static PyObject *core_ofd_lock(PyObject *self, PyObject *args)
{
    int fd, type, wait = 0;
    unsigned long long offset;
    if (!PyArg_ParseTuple(args, "iKi|p:ofd_lock", &fd, &offset, &type, &wait))
        return NULL;
    int r;
    if (wait) {
        do {
            Py_BEGIN_ALLOW_THREADS
            r = shk_ofd_lock(fd, offset, type, 1);
            Py_END_ALLOW_THREADS
        } while (r == EINTR && PyErr_CheckSignals() == 0);
        if (r == EINTR)
            return NULL;
    } else {
        r = shk_ofd_lock(fd, offset, type, 0);
    }
    if (r == EAGAIN)
        Py_RETURN_FALSE;
    if (r) {
        shk_clear_detail();
        return raise_os(r, "fcntl(F_OFD_SETLK)");
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
        return raise_os(r, "fcntl(F_OFD_GETLK)");
    }
    return PyBool_FromLong(conflict);
}

static PyMethodDef core_methods[] = {
    {"ftok", core_ftok, METH_VARARGS,
     "ftok(path, proj_id, /)\n--\n\nSysV IPC key from a path and a project id, exactly as C's ftok(3)."},
    {"proc_start_time", core_proc_start_time, METH_O,
     "proc_start_time(pid, /)\n--\n\nStart time of pid in clock ticks since boot (0: no such process)."},
    {"proc_alive", core_proc_alive, METH_VARARGS,
     "proc_alive(pid, start_time, /)\n--\n\nTrue if (pid, start_time) names a live process."},
    {"strerror", core_strerror, METH_O,
     "strerror(code, /)\n--\n\nOne line describing a core error code or errno."},
    {"error_table", core_error_table, METH_NOARGS,
     "error_table()\n--\n\n(((code, name, text, exception class), ...), ((errno, exception class), ...)):\n"
     "the core's error codes (core/errors.def) and the errno values with a class of their own."},
    {"unlink_posix", core_unlink_posix, METH_O,
     "unlink_posix(name, /)\n--\n\nshm_unlink the POSIX segment `name` (no leading '/')."},
    {"rmid", core_rmid, METH_O, "rmid(shmid, /)\n--\n\nshmctl(shmid, IPC_RMID)."},
    {"fs_free_bytes", core_fs_free_bytes, METH_O,
     "fs_free_bytes(fd, /)\n--\n\nFree bytes on the file system holding fd."},
    {"ofd_lock", core_ofd_lock, METH_VARARGS,
     "ofd_lock(fd, offset, type, wait=False, /)\n--\n\nOFD byte lock (F_RDLCK, F_WRLCK, "
     "F_UNLCK) on one byte. True when taken, False when held elsewhere (non-blocking)."},
    {"ofd_probe", core_ofd_probe, METH_VARARGS,
     "ofd_probe(fd, offset, type, /)\n--\n\nTrue if another open file description holds a "
     "conflicting lock on that byte."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef core_module = {
    PyModuleDef_HEAD_INIT, "shmkit._core",
    "The C core of shmkit, through a thin binding. Use the public API in `shmkit`.", -1,
    core_methods,
};

PyMODINIT_FUNC PyInit__core(void)
{
    PyObject *m = PyModule_Create(&core_module);
    if (!m)
        return NULL;
    errors_module = PyImport_ImportModule("shmkit._errors");
    if (!errors_module)
        goto fail;
#define CONST(name, value) \
    if (PyModule_AddObject(m, name, PyLong_FromLongLong((long long)(value))) < 0) goto fail
#define UCONST(name, value) \
    if (PyModule_AddObject(m, name, PyLong_FromUnsignedLongLong((unsigned long long)(value))) < 0) goto fail
    CONST("O_CREATE", SHK_O_CREATE);
    CONST("O_EXCL", SHK_O_EXCL);
    CONST("O_RDONLY", SHK_O_RDONLY);
    CONST("O_ANYOWNER", SHK_O_ANYOWNER);
    CONST("O_ALLOWEMPTY", SHK_O_ALLOWEMPTY);
    CONST("KIND_POSIX", SHK_SEG_POSIX);
    CONST("KIND_SYSV", SHK_SEG_SYSV);
    CONST("KIND_FILE", SHK_SEG_FILE);
    CONST("KIND_MEMFD", SHK_SEG_MEMFD);
    CONST("KIND_ANON", SHK_SEG_ANON);
    UCONST("LOCKBYTE_INIT", SHK_LOCKBYTE_INIT);
    UCONST("LOCKBYTE_ATTACH", SHK_LOCKBYTE_ATTACH);
    UCONST("LOCKBYTE_CREATOR", SHK_LOCKBYTE_CREATOR);
    UCONST("ZONE_MAGIC", SHK_ZONE_MAGIC);
    UCONST("FORMAT_WORD", SHK_FORMAT_WORD);
    CONST("LAYOUT_VERSION", SHK_LAYOUT_VERSION);
    CONST("PAGE", SHK_PAGE);
    CONST("SLAB_MAX", SHK_SLAB_MAX);
    CONST("SLAB_MIN_SHIFT", SHK_SLAB_MIN_SHIFT);
    CONST("NCLASSES", SHK_NCLASSES);
    CONST("ZONE_MIN_SIZE", SHK_ZONE_MIN_SIZE);
    CONST("TAG_MAX", SHK_TAG_MAX);
    CONST("OBJ_NAME_MAX", SHK_OBJ_NAME_MAX);
    CONST("ZONE_HEADER_SIZE", sizeof(struct shk_zone_header));
    CONST("ZONE_OFF_STATE", offsetof(struct shk_zone_header, state));
    CONST("ZONE_OFF_EXT", offsetof(struct shk_zone_header, ext));
    CONST("ZONE_OFF_STATS", offsetof(struct shk_zone_header, stats));
    CONST("ZONE_OFF_FREE_HEAD", offsetof(struct shk_zone_header, free_head));
    CONST("ZONE_OFF_DIR", offsetof(struct shk_zone_header, dir_off));
    CONST("ZS_UNINIT", SHK_ZS_UNINIT);
    CONST("ZS_INITIALIZING", SHK_ZS_INITIALIZING);
    CONST("ZS_READY", SHK_ZS_READY);
    CONST("ZS_CORRUPT", SHK_ZS_CORRUPT);
    CONST("OBJ_RAW", SHK_OBJ_RAW);
    CONST("OBJ_LOCK", SHK_OBJ_LOCK);
    CONST("OBJ_RLOCK", SHK_OBJ_RLOCK);
    CONST("OBJ_RWLOCK", SHK_OBJ_RWLOCK);
    CONST("OBJ_SEMAPHORE", SHK_OBJ_SEMAPHORE);
    CONST("OBJ_EVENT", SHK_OBJ_EVENT);
    CONST("OBJ_CONDITION", SHK_OBJ_CONDITION);
    CONST("OBJ_BARRIER", SHK_OBJ_BARRIER);
    CONST("OBJ_VALUE", SHK_OBJ_VALUE);
    CONST("OBJ_ARRAY", SHK_OBJ_ARRAY);
    CONST("OBJ_COUNTER", SHK_OBJ_COUNTER);
    CONST("OBJ_QUEUE", SHK_OBJ_QUEUE);
    CONST("OBJ_DICT", SHK_OBJ_DICT);
    CONST("OBJ_NDARRAY", SHK_OBJ_NDARRAY);
    CONST("OBJ_BOARD", SHK_OBJ_BOARD);
    CONST("OBJ_CONFIG", SHK_OBJ_CONFIG);
    CONST("OBJ_USER", SHK_OBJ_USER);
    for (size_t i = 0; i < N_CORE_ERRORS; i++) { /* E_CORRUPT for SHK_ECORRUPT, ... */
        char cname[64];
        snprintf(cname, sizeof cname, "E_%s", core_errors[i].name + 5);
        if (PyModule_AddIntConstant(m, cname, core_errors[i].code) < 0)
            goto fail;
    }
#undef CONST
#undef UCONST
    if (shk_init_segment(m) < 0 || shk_init_zone(m) < 0)
        goto fail;
    if ((shk_init_sync && shk_init_sync(m) < 0) || (shk_init_queue && shk_init_queue(m) < 0) ||
        (shk_init_dict && shk_init_dict(m) < 0) || (shk_init_board && shk_init_board(m) < 0) ||
        (shk_init_bench && shk_init_bench(m) < 0))
        goto fail;
    return m;
fail:
    Py_DECREF(m);
    return NULL;
}
