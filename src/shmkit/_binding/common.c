/*
 * common.c (binding) - what every binding file needs, in one place: core codes become
 * exceptions (shk_py_raise, the one function that does it, generated from
 * core/errors.def), timeouts become deadlines, METH_FASTCALL arguments are parsed by
 * name, a closed handle raises ClosedError, a checker's report becomes (count, lines),
 * every blocking core call waits through shk_py_wait, and small module-level functions
 * about processes and errors.
 *
 * The binding files call down into this file; nothing here calls a binding file.
 */
#include "binding.h"

#include <errno.h>

#include "fields.h"
#include "proc.h"
#include "wait.h"

static PyObject *errors_module; /* shmkit._errors: the exception classes */

PyObject *shk_py_exc(const char *name)
{
    /* Looked up once per name: an attribute lookup per raise cost more than the rest of
     * raising (and a lookup made while an exception is set can lose it).  The names are
     * the binding's string literals, so the pointer usually matches at once. */
    static struct {
        const char *name;
        PyObject *cls;
    } cache[48];
    size_t i;
    for (i = 0; i < 48 && cache[i].name; i++)
        if (cache[i].name == name || strcmp(cache[i].name, name) == 0)
            return cache[i].cls;
    PyObject *cls = errors_module ? PyObject_GetAttrString(errors_module, name) : NULL;
    if (!cls) {
        PyErr_Clear();
        return PyExc_RuntimeError;
    }
    if (i < 48) { /* kept for good (a reference of our own) */
        cache[i].name = name;
        cache[i].cls = cls;
        return cls;
    }
    Py_DECREF(cls); /* the module keeps it alive */
    return cls;
}

/* ---- errors ------------------------------------------------------------------------- */

/* The core's codes (core/errors.def), for shk_py_raise, error_table() and E_*. */
static const struct {
    int code;
    const char *name, *text, *pyclass;
} core_errors[] = {
#define SHK_ERROR(value, name, text, pyclass) {name, #name, text, #pyclass},
#include "errors.def"
#undef SHK_ERROR
};
#define N_CORE_ERRORS (sizeof core_errors / sizeof core_errors[0])

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
#define N_ERRNO_CLASSES (sizeof errno_classes / sizeof errno_classes[0])

/* A message may hold bytes of a name that are not UTF-8 (file names are bytes): they are
 * shown escaped instead of turning the error into a UnicodeDecodeError. */
static PyObject *message(const char *msg)
{
    return PyUnicode_DecodeUTF8(msg, (Py_ssize_t)strlen(msg), "backslashreplace");
}

/* Raise cls with the message msg (escaped where it is not UTF-8). */
static PyObject *raise_message(PyObject *cls, const char *msg)
{
    PyObject *m = message(msg);
    if (m) {
        PyErr_SetObject(cls, m);
        Py_DECREF(m);
    }
    return NULL;
}

PyObject *shk_py_raise_os(int e, const char *msg)
{
    const char *cls = "ShmkitOSError";
    for (size_t i = 0; i < N_ERRNO_CLASSES; i++)
        if (errno_classes[i].err == e)
            cls = errno_classes[i].pyclass;
    if (e == ETIMEDOUT)
        return raise_message(shk_py_exc(cls), msg);
    PyObject *args = Py_BuildValue("(iN)", e, message(msg));
    if (args) {
        PyErr_SetObject(shk_py_exc(cls), args);
        Py_DECREF(args);
    }
    return NULL;
}

PyObject *shk_py_raise(int code, const char *what)
{
    if (code == EINTR && PyErr_Occurred())
        return NULL; /* a signal handler raised while the core waited (py_interrupted) */
    const char *detail = shk_error_detail();
    char buf[1024];
    const char *msg = buf;
    if (detail && *detail)
        msg = detail;
    else if (what)
        snprintf(buf, sizeof buf, "%s: %s", what, shk_strerror(code));
    else
        msg = shk_strerror(code);
    if (code > 0)
        return shk_py_raise_os(code, msg);
    const char *cls = "ShmkitError";
    for (size_t i = 0; i < N_CORE_ERRORS; i++)
        if (core_errors[i].code == code)
            cls = core_errors[i].pyclass;
    return raise_message(shk_py_exc(cls), msg);
}

int shk_py_raise_int(int code, const char *what)
{
    shk_py_raise(code, what);
    return -1;
}

void *shk_py_closed(const char *what)
{
    PyErr_SetString(shk_py_exc("ClosedError"), what);
    return NULL;
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

/* ---- arguments ------------------------------------------------------------------------ */

/* Is the keyword `key` (a str from kwnames) the C string name?  Keywords are nearly always
 * compact ASCII, where a strcmp is several times cheaper than the general comparison. */
static inline int key_is(PyObject *key, const char *name)
{
    if (PyUnicode_IS_COMPACT_ASCII(key))
        return strcmp((const char *)PyUnicode_DATA(key), name) == 0;
    return PyUnicode_CompareWithASCIIString(key, name) == 0;
}

int shk_py_parse_args(PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
                      const char *fname, const char *const *names, int n, PyObject **out)
{
    for (int i = 0; i < n; i++)
        out[i] = NULL;
    if (nargs > n) {
        PyErr_Format(PyExc_TypeError, "%s() takes at most %d arguments (%zd given)", fname, n,
                     nargs);
        return -1;
    }
    for (Py_ssize_t i = 0; i < nargs; i++)
        out[i] = args[i];
    if (!kwnames)
        return 0;
    Py_ssize_t nk = PyTuple_GET_SIZE(kwnames);
    for (Py_ssize_t k = 0; k < nk; k++) {
        PyObject *key = PyTuple_GET_ITEM(kwnames, k);
        int found = 0;
        for (int i = 0; i < n && !found; i++) {
            if (!key_is(key, names[i]))
                continue;
            if (out[i]) {
                PyErr_Format(PyExc_TypeError, "%s() got multiple values for argument '%s'",
                             fname, names[i]);
                return -1;
            }
            out[i] = args[nargs + k];
            found = 1;
        }
        if (!found) {
            PyErr_Format(PyExc_TypeError, "%s() got an unexpected keyword argument '%U'", fname,
                         key);
            return -1;
        }
    }
    return 0;
}

/* threading.TIMEOUT_MAX (read at import): a longer timeout is an OverflowError there. */
static double timeout_max = 9223372036.0;

/* A timeout object as seconds, checked as threading checks it: 0 with *t set, 1 for None
 * (or absent), -1 with an exception.  Any real number (what float() takes) is accepted,
 * as multiprocessing does; not a number is a TypeError (an int too large for a float
 * stays an OverflowError), NaN a ValueError, more than TIMEOUT_MAX an OverflowError. */
static int timeout_seconds(PyObject *timeout, double *t)
{
    if (!timeout || timeout == Py_None)
        return 1;
    *t = PyFloat_AsDouble(timeout);
    if (*t == -1.0 && PyErr_Occurred()) {
        if (PyErr_ExceptionMatches(PyExc_TypeError)) {
            PyErr_Clear();
            PyErr_Format(PyExc_TypeError, "timeout must be a number or None, not %.100s",
                         Py_TYPE(timeout)->tp_name);
        }
        return -1;
    }
    if (*t != *t) {
        PyErr_SetString(PyExc_ValueError, "timeout must not be NaN");
        return -1;
    }
    if (*t > timeout_max) {
        PyErr_SetString(PyExc_OverflowError, "timeout value is too large");
        return -1;
    }
    return 0;
}

int shk_py_deadline(PyObject *timeout, struct timespec *deadline, int *has)
{
    double t = -1;
    *has = 0;
    int r = timeout_seconds(timeout, &t);
    if (r != 0)
        return r < 0 ? -1 : 0;
    if (t < 0)
        return 0; /* threading's convention: -1 means forever */
    shk_deadline_after(deadline, t);
    *has = 1;
    return 0;
}

int shk_py_timeout(int rule, PyObject *blocking_obj, PyObject *timeout_obj, double *seconds)
{
    int blocking = 1;
    double t = -1;
    *seconds = -1;
    if (blocking_obj && (blocking = PyObject_IsTrue(blocking_obj)) < 0)
        return -1;
    if (rule == SHK_PY_TIMEOUT_SEMAPHORE && !blocking && timeout_obj && timeout_obj != Py_None) {
        /* threading.Semaphore looks at nothing else first */
        PyErr_SetString(PyExc_ValueError, "can't specify a timeout for a non-blocking call");
        return -1;
    }
    int r = timeout_seconds(timeout_obj, &t);
    if (r < 0)
        return -1;
    if (r == 0 && rule == SHK_PY_TIMEOUT_LOCK) {
        /* threading.Lock's: -1 (the default) is forever; None too, as in multiprocessing */
        if (t < -timeout_max) {
            PyErr_SetString(PyExc_OverflowError, "timeout value is too large");
            return -1;
        }
        if (!blocking && t != -1) {
            PyErr_SetString(PyExc_ValueError, "can't specify a timeout for a non-blocking call");
            return -1;
        }
        if (t < 0 && t != -1) {
            PyErr_SetString(PyExc_ValueError, "timeout value must be a non-negative number");
            return -1;
        }
    }
    if (!blocking || (r == 0 && t <= 0 && !(rule == SHK_PY_TIMEOUT_LOCK && t == -1)))
        *seconds = 0; /* a single attempt */
    else if (r == 0 && t > 0)
        *seconds = t;
    return 0;
}

/* shk_py_timeout's seconds as the deadline and flags of a wait. */
static void wait_deadline_of(double seconds, struct timespec *deadline, int *has, uint32_t *flags)
{
    *has = 0;
    *flags = 0;
    if (seconds == 0) {
        *flags = SHK_WAIT_TRY;
    } else if (seconds > 0) {
        shk_deadline_after(deadline, seconds);
        *has = 1;
    }
}

int shk_py_acquire_args(int rule, PyObject *blocking_obj, PyObject *timeout_obj,
                        struct timespec *deadline, int *has, uint32_t *flags)
{
    double seconds;
    if (shk_py_timeout(rule, blocking_obj, timeout_obj, &seconds) < 0)
        return -1;
    wait_deadline_of(seconds, deadline, has, flags);
    return 0;
}

int shk_py_wait_args(PyObject *timeout_obj, struct timespec *deadline, int *has, uint32_t *flags)
{
    return shk_py_acquire_args(SHK_PY_TIMEOUT_WAIT, NULL, timeout_obj, deadline, has, flags);
}

int shk_py_block_timeout(PyObject *block, PyObject *timeout, uint64_t *deadline,
                         uint32_t *flags)
{
    int blocking = 1;
    double t = 0;
    *deadline = SHK_FOREVER;
    *flags = 0;
    if (block && (blocking = PyObject_IsTrue(block)) < 0)
        return -1;
    if (!blocking) {
        *flags = SHK_WAIT_TRY;
        return 0;
    }
    int r = timeout_seconds(timeout, &t);
    if (r != 0)
        return r < 0 ? -1 : 0; /* an exception; None: forever */
    if (t < 0) {
        PyErr_SetString(PyExc_ValueError, "'timeout' must be a non-negative number");
        return -1;
    }
    struct timespec d;
    shk_deadline_after(&d, t);
    *deadline = shk_wait_deadline(&d);
    return 0;
}

/* ---- calls in progress without the GIL ------------------------------------------------- */

void shk_py_call_begin(struct shk_py_call *c, SegmentObject *seg, const void *handle,
                       int ends_with_zone, struct shk_wait *w)
{
    c->seg = seg;
    c->handle = handle;
    c->w = w;
    c->cancel = 0;
    c->ends_with_zone = ends_with_zone;
    c->prev = NULL;
    c->next = seg->calls;
    if (c->next)
        c->next->prev = c;
    seg->calls = c;
    Py_INCREF(seg);
    shk_segment_export(seg); /* the mapping stays until the call ends */
    if (w)
        w->cancel = &c->cancel;
}

void shk_py_call_end(struct shk_py_call *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        c->seg->calls = c->next;
    if (c->next)
        c->next->prev = c->prev;
    shk_segment_unexport(c->seg); /* the last user of a closed segment unmaps it */
    Py_DECREF(c->seg);
}

int shk_py_calls_cancel(SegmentObject *seg, const void *handle)
{
    int n = 0;
    for (struct shk_py_call *c = seg->calls; c; c = c->next) {
        if (handle ? c->handle == handle : c->ends_with_zone) {
            if (c->w)
                shk_wait_cancel_wake(c->w); /* its wait ends now */
            else
                c->cancel = 1;
            n++;
        }
    }
    return n;
}

/* ---- waiting: the one helper every blocking call goes through ------------------------ */

static unsigned long main_thread_ident; /* threading.main_thread().ident */

static int only_python_thread(void)
{
    PyThreadState *ts = PyThreadState_Get();
    PyThreadState *head = PyInterpreterState_ThreadHead(PyThreadState_GetInterpreter(ts));
    return head != NULL && PyThreadState_Next(head) == NULL;
}

/*
 * PEP 475 for the core's one wait shape (core/wait.h): the GIL is released around every
 * call of the driver, and the signal handlers run after EVERY return from it, which the
 * driver makes before its first sleep and at least every recheck_ns (100 ms) after: a
 * signal that lands just before a sleep, or on another thread, is therefore seen within
 * one slice, in every wait, by construction.  Other threads than the main one never run
 * signal handlers, so their waits take no slices (SHK_WAIT_NOSIGNALS): they sleep until
 * woken, their deadline or their operation's own retry time.
 */
/*
 * shk_wait_interrupted (core/wait.h): a wait of the core that takes no EINTR returns (an
 * internal mutex, normally held for microseconds) asks, once it has lasted a slice,
 * whether to stop.  Here: did a signal handler raise (Ctrl-C)?  Only the main thread
 * runs them.  The GIL is taken for the look (the waiting thread released it, or holds it
 * still); the exception stays set for the binding, which sees EINTR come back.
 */
static int py_interrupted(void)
{
    if (PyThread_get_thread_ident() != main_thread_ident)
        return 0;
#if PY_VERSION_HEX >= 0x030D0000
    if (Py_IsFinalizing())
        return 0;
#else
    if (_Py_IsFinalizing())
        return 0;
#endif
    PyGILState_STATE g = PyGILState_Ensure();
    int stop = PyErr_CheckSignals() < 0;
    PyGILState_Release(g);
    return stop;
}

int shk_py_wait(const struct shk_wait_op *op, void *obj, struct shk_wait *w, int how,
                int *pending)
{
    int r;
    if (w->flags & SHK_WAIT_TRY)
        return shk_wait_run(op, obj, w); /* one attempt, never sleeps: keep the GIL */
    if (PyThread_get_thread_ident() != main_thread_ident)
        w->flags |= SHK_WAIT_NOSIGNALS;
    if (op->spin_of && !(how & SHK_PY_WAIT_NOGILSPIN) && only_python_thread()) {
        /* the spin with the GIL held: no other thread needs it, and taking it back after
         * a hand-off that came within the spin would cost more than the spin */
        w->flags |= SHK_WAIT_NOSLEEP;
        r = shk_wait_run(op, obj, w);
        w->flags &= ~SHK_WAIT_NOSLEEP;
        if (r != EAGAIN && r != EINTR)
            return r;
        /* run the signal handlers now, with the GIL, so that the driver need not return
         * once more before its first sleep just for that */
        if (!(w->flags & SHK_WAIT_NOSIGNALS)) {
            if (PyErr_Occurred() || PyErr_CheckSignals() < 0) /* see below */
                goto interrupted;
            if (w->next_return == 0)
                w->next_return = shk_now_ns() + shk_wait_cfg.recheck_ns;
        }
    }
    for (;;) {
        Py_BEGIN_ALLOW_THREADS
        r = shk_wait_run(op, obj, w);
        Py_END_ALLOW_THREADS
        if (r != EINTR)
            return r;
        if (pending && *pending)
            continue; /* uninterruptible, and an exception is already kept */
        /* PyErr_Occurred: a handler raised inside the attempt (an internal mutex's wait
         * asked py_interrupted) */
        if (PyErr_Occurred() || PyErr_CheckSignals() < 0)
            goto interrupted;
    }
interrupted:
    if (pending) {
        *pending = 1; /* keep the exception, finish the wait */
        for (;;) {
            Py_BEGIN_ALLOW_THREADS
            r = shk_wait_run(op, obj, w);
            Py_END_ALLOW_THREADS
            if (r != EINTR)
                return r;
        }
    }
    shk_wait_cancel(op, obj, w, ECANCELED);
    return SHK_PY_ERR;
}

/* ---- module contents ------------------------------------------------------------------ */

int shk_py_add_ints(PyObject *m, const struct shk_py_int *table)
{
    for (; table->name; table++) {
        PyObject *v = table->is_unsigned ? PyLong_FromUnsignedLongLong(table->u)
                                         : PyLong_FromLongLong(table->value);
        int r = v ? PyModule_AddObjectRef(m, table->name, v) : -1;
        Py_XDECREF(v);
        if (r < 0)
            return -1;
    }
    return 0;
}

PyObject *shk_py_fields(const void *rec, const struct shk_field *f)
{
    PyObject *d = PyDict_New();
    for (; d && f->name; f++) {
        const char *p = (const char *)rec + f->off;
        PyObject *v;
        int32_t i;
        switch (f->kind) {
        case SHK_FIELD_U64: v = PyLong_FromUnsignedLongLong(*(const uint64_t *)p); break;
        case SHK_FIELD_U32: v = PyLong_FromUnsignedLong(*(const uint32_t *)p); break;
        case SHK_FIELD_I32: v = PyLong_FromLong(*(const int32_t *)p); break;
        case SHK_FIELD_I64: v = PyLong_FromLongLong(*(const int64_t *)p); break;
        case SHK_FIELD_BOOL: v = PyBool_FromLong(*(const int *)p); break;
        case SHK_FIELD_TRI:
            i = *(const int *)p;
            v = Py_NewRef(i < 0 ? Py_None : i ? Py_True : Py_False);
            break;
        case SHK_FIELD_F64: v = PyFloat_FromDouble(*(const double *)p); break;
        default: v = PyErr_Format(PyExc_SystemError, "field %s: unknown kind", f->name);
        }
        if (!v || PyDict_SetItemString(d, f->name, v) < 0)
            Py_CLEAR(d);
        Py_XDECREF(v);
    }
    return d;
}

PyTypeObject *shk_py_add_type(PyObject *m, PyType_Spec *spec)
{
    PyTypeObject *t = (PyTypeObject *)PyType_FromSpec(spec);
    if (!t)
        return NULL;
    int r = PyModule_AddObjectRef(m, strrchr(spec->name, '.') + 1, (PyObject *)t);
    Py_DECREF(t); /* the module's reference keeps it */
    return r < 0 ? NULL : t;
}

void shk_py_free(void *o)
{
    PyTypeObject *tp = Py_TYPE(o);
    tp->tp_free(o);
    Py_DECREF(tp);
}

/* ---- handles on an object in a zone ----------------------------------------------------- */

void shk_py_handle_attach(void *handle, ZoneObject *zone)
{
    struct shk_py_handle *h = handle;
    h->zone = (ZoneObject *)Py_NewRef(zone);
    h->seg = (SegmentObject *)Py_NewRef(zone->segment);
    shk_segment_export(h->seg);
    h->attached = 1;
}

void shk_py_handle_unexport(void *handle)
{
    struct shk_py_handle *h = handle;
    if (h->attached) {
        h->attached = 0;
        shk_segment_unexport(h->seg);
    }
}

void shk_py_handle_free(void *handle)
{
    struct shk_py_handle *h = handle;
    shk_py_handle_unexport(h);
    Py_CLEAR(h->seg);
    Py_CLEAR(h->zone);
    shk_py_free(h);
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
    PyObject *errnos = codes ? PyTuple_New((Py_ssize_t)N_ERRNO_CLASSES) : NULL;
    for (size_t i = 0; errnos && i < N_ERRNO_CLASSES; i++) {
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

/* timeout_seconds(timeout, blocking=True, rule=TIMEOUT_LOCK): the binding's timeout
 * rules (binding.h) for Python code: None (forever), 0.0 (a single attempt) or the
 * seconds; the exceptions are those of the blocking calls. */
static PyObject *core_timeout_seconds(PyObject *self, PyObject *const *args, Py_ssize_t nargs,
                                      PyObject *kwnames)
{
    static const char *const names[] = {"timeout", "blocking", "rule"};
    PyObject *a[3];
    if (shk_py_parse_args(args, nargs, kwnames, "timeout_seconds", names, 3, a) < 0)
        return NULL;
    long rule = a[2] ? PyLong_AsLong(a[2]) : SHK_PY_TIMEOUT_LOCK;
    if (rule == -1 && PyErr_Occurred())
        return NULL;
    if (rule < SHK_PY_TIMEOUT_LOCK || rule > SHK_PY_TIMEOUT_WAIT)
        return PyErr_Format(PyExc_ValueError, "unknown timeout rule %ld", rule);
    double seconds;
    if (shk_py_timeout((int)rule, a[1], a[0], &seconds) < 0)
        return NULL;
    if (seconds < 0)
        Py_RETURN_NONE;
    return PyFloat_FromDouble(seconds);
}

static PyMethodDef common_functions[] = {
    {"timeout_seconds", (PyCFunction)(void (*)(void))core_timeout_seconds,
     METH_FASTCALL | METH_KEYWORDS,
     "timeout_seconds(timeout, blocking=True, rule=0)\n--\n\nA blocking call's "
     "(blocking, timeout) checked as threading checks them: None (forever), 0.0 (a single "
     "attempt) or seconds.  rule: TIMEOUT_LOCK (0), TIMEOUT_SEMAPHORE or TIMEOUT_WAIT."},
    {"proc_start_time", core_proc_start_time, METH_O,
     "proc_start_time(pid, /)\n--\n\nStart time of pid in clock ticks since boot (0: no such process)."},
    {"proc_alive", core_proc_alive, METH_VARARGS,
     "proc_alive(pid, start_time, /)\n--\n\nTrue if (pid, start_time) names a live process."},
    {"strerror", core_strerror, METH_O,
     "strerror(code, /)\n--\n\nOne line describing a core error code or errno."},
    {"error_table", core_error_table, METH_NOARGS,
     "error_table()\n--\n\n(((code, name, text, exception class), ...), ((errno, exception class), ...)):\n"
     "the core's error codes (core/errors.def) and the errno values with a class of their own."},
    {NULL, NULL, 0, NULL},
};

int shk_init_common(PyObject *m)
{
    errors_module = PyImport_ImportModule("shmkit._errors");
    if (!errors_module || PyModule_AddFunctions(m, common_functions) < 0)
        return -1;
    PyObject *threading = PyImport_ImportModule("threading");
    PyObject *main_thread = threading ? PyObject_CallMethod(threading, "main_thread", NULL) : NULL;
    PyObject *ident = main_thread ? PyObject_GetAttrString(main_thread, "ident") : NULL;
    Py_XDECREF(main_thread);
    if (!ident) {
        Py_XDECREF(threading);
        return -1;
    }
    main_thread_ident = PyLong_AsUnsignedLong(ident);
    shk_wait_interrupted = py_interrupted;
    Py_DECREF(ident);
    PyObject *tmax = PyErr_Occurred() ? NULL : PyObject_GetAttrString(threading, "TIMEOUT_MAX");
    timeout_max = tmax ? PyFloat_AsDouble(tmax) : -1.0;
    Py_XDECREF(tmax);
    Py_DECREF(threading);
    if (PyErr_Occurred())
        return -1;
    static const struct shk_py_int rules[] = {
        {"TIMEOUT_LOCK", SHK_PY_TIMEOUT_LOCK},
        {"TIMEOUT_SEMAPHORE", SHK_PY_TIMEOUT_SEMAPHORE},
        {"TIMEOUT_WAIT", SHK_PY_TIMEOUT_WAIT},
        {NULL},
    };
    PyObject *tmax_obj = PyFloat_FromDouble(timeout_max);
    int added = tmax_obj ? PyModule_AddObjectRef(m, "TIMEOUT_MAX", tmax_obj) : -1;
    Py_XDECREF(tmax_obj);
    if (added < 0 || shk_py_add_ints(m, rules) < 0)
        return -1;
    shk_wait_config_load_env();
    for (size_t i = 0; i < N_CORE_ERRORS; i++) { /* E_CORRUPT for SHK_ECORRUPT, ... */
        char cname[64];
        snprintf(cname, sizeof cname, "E_%s", core_errors[i].name + 5);
        if (PyModule_AddIntConstant(m, cname, core_errors[i].code) < 0)
            return -1;
    }
    return 0;
}
