/*
 * binding.h - what the files of the thin CPython binding share.
 *
 * The binding parses arguments, converts objects, releases the GIL around calls that
 * can block, and turns core error codes into exceptions.  Nothing else: the work is in
 * core/.  Files:
 *
 *   common.c      the shared helpers below (errors, arguments, deadlines, waiting)
 *   segment.c     Segment, Region and the segment-level module functions
 *   zone.c        Zone
 *   sync.c        Lock, RLock, RWLock, Semaphore, Event, Condition, Barrier, Counter
 *   queue.c       Queue                dict.c     Dict
 *   board.c       Board                ndarray.c  shared NumPy arrays
 *   aio.c         the asyncio twins' waits and the process's readiness hub (issue 16)
 *
 * Each file exports one init function (listed at the end of this header) that adds its
 * types and functions to the module; _coremodule.c only calls them, in the order of its
 * table.  Binding files call down into common.c and the core, never into each other
 * except through the Segment and Zone handles declared here.
 */
#ifndef SHK_BINDING_H
#define SHK_BINDING_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "errors.h"
#include "futex.h"
#include "layout.h"
#include "segment.h"
#include "wait.h"
#include "zone.h"

/* ---- errors (common.c) ----------------------------------------------------------------- */

/* Raise the exception for core code `code` (errors.def, or an errno); `what` names the
 * operation when the core left no detail.  Returns NULL. */
PyObject *shk_py_raise(int code, const char *what);
/* Same, returning -1 (for int-returning slots). */
int shk_py_raise_int(int code, const char *what);
/* None when r is 0, else the exception of core code r as shk_py_raise (inline: release
 * paths call it). */
static inline PyObject *shk_py_none_or_raise(int r, const char *what)
{
    if (r)
        return shk_py_raise(r, what);
    Py_RETURN_NONE;
}
/* The exception of errno e with message msg (ignores the core's detail). Returns NULL. */
PyObject *shk_py_raise_os(int e, const char *msg);
/* An exception class from shmkit._errors by name (borrowed). */
PyObject *shk_py_exc(const char *name);
/* Raise ClosedError(what); returns NULL. */
void *shk_py_closed(const char *what);

/* A consistency check's result as (problem_count, lines): runs check(obj, report, cap)
 * without the GIL (the core checkers write one problem per line into report). */
typedef int (*shk_checker)(void *obj, char *report, size_t cap);
PyObject *shk_py_check_report(shk_checker check, void *obj);

/* ---- arguments (common.c) ------------------------------------------------------------- */

/* METH_FASTCALL|METH_KEYWORDS arguments by name into out[n] (borrowed; NULL when not
 * given).  0, or -1 with TypeError set. */
int shk_py_parse_args(PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
                      const char *fname, const char *const *names, int n, PyObject **out);

/* A Python timeout (None or < 0: forever; a number: seconds) as an absolute
 * CLOCK_MONOTONIC deadline.  0, or -1 with an exception set (bad type, NaN).  *has is 0
 * when there is no deadline. */
int shk_py_deadline(PyObject *timeout, struct timespec *deadline, int *has);
/* The three timeout rules of threading, checked as threading checks them (TypeError,
 * NaN: ValueError, above threading.TIMEOUT_MAX: OverflowError, blocking=False with a
 * timeout: ValueError):
 *  LOCK       acquire(blocking=True, timeout=-1) of Lock, RLock, RWLock: -1 is forever
 *             (None too, as in multiprocessing), other negative values a ValueError;
 *  SEMAPHORE  Semaphore.acquire(blocking=True, timeout=None): None is forever, <= 0 one
 *             attempt, and blocking=False takes no timeout but None;
 *  WAIT       wait(timeout=None) of Event, Condition, Barrier: None is forever, <= 0 one
 *             look (blocking is not an argument: pass NULL).
 * *seconds: -1 forever, 0 a single attempt, else the seconds.  0, or -1 with an
 * exception set.  shmkit._core.timeout_seconds() gives the same to Python code (the
 * asyncio twins, the Redis backend). */
enum { SHK_PY_TIMEOUT_LOCK, SHK_PY_TIMEOUT_SEMAPHORE, SHK_PY_TIMEOUT_WAIT };
int shk_py_timeout(int rule, PyObject *blocking, PyObject *timeout, double *seconds);
/* shk_py_timeout as a wait's deadline (*has 0: none) and flags (SHK_WAIT_TRY for a
 * single attempt). */
int shk_py_acquire_args(int rule, PyObject *blocking, PyObject *timeout,
                        struct timespec *deadline, int *has, uint32_t *flags);
/* The WAIT rule: wait(timeout=None). */
int shk_py_wait_args(PyObject *timeout, struct timespec *deadline, int *has, uint32_t *flags);
/* queue.Queue's (block=True, timeout=None) as a wait's deadline (SHK_FOREVER: None) and
 * flags: block false is one look (SHK_WAIT_TRY; the timeout is ignored); a negative
 * timeout is a ValueError.  NULL arguments take their defaults.  0, or -1 with an
 * exception set. */
int shk_py_block_timeout(PyObject *block, PyObject *timeout, uint64_t *deadline,
                         uint32_t *flags);

/* ---- waiting (common.c) ------------------------------------------------------------------ */

#define SHK_PY_ERR INT_MIN          /* shk_py_wait: a Python exception is set */
#define SHK_PY_WAIT_NOGILSPIN 0x1   /* never spin with the GIL held */

/*
 * Run a blocking core operation (core/wait.h) to completion: the GIL released around
 * the driver, the signal handlers run after every return from it (PEP 475; the driver
 * returns before its first sleep and every 100 ms).  When this is the interpreter's only
 * thread the spin runs first with the GIL held.  Returns the operation's result, or
 * SHK_PY_ERR when a signal handler raised: the wait was cancelled (shk_wait_cancel with
 * ECANCELED: registration and partial progress undone).  With pending != NULL nothing
 * interrupts the wait: the first exception is kept, *pending set, and the wait goes on
 * (re-acquiring a Condition's lock).  how: SHK_PY_WAIT_* flags.
 */
int shk_py_wait(const struct shk_wait_op *op, void *obj, struct shk_wait *w, int how,
                int *pending);

/* ---- calls in progress without the GIL (common.c) ------------------------------------- */

struct SegmentObject;

/*
 * A call that runs core code on a segment's memory with the GIL released (a wait, a
 * repair) registers for its duration.  It holds one export of the segment, so the mapping
 * outlives a close() made meanwhile; and it can be told to stop: closing the handle it
 * runs on (shk_py_calls_cancel(seg, handle)), or the segment itself for calls that end
 * with their zone (ends_with_zone: handles that refuse calls once their zone is closed),
 * sets its cancel word, which w->cancel watches (core/wait.h, "Cancelling"): the wait
 * ends at once with ECANCELED.  Begin and end with the GIL held.
 */
struct shk_py_call {
    struct shk_py_call *prev, *next;
    struct SegmentObject *seg;
    const void *handle;
    struct shk_wait *w;         /* the call's wait (NULL: it does not wait) */
    uint32_t cancel;            /* set by a close: the call ends with ClosedError */
    int ends_with_zone;
};
/* w (may be NULL) gets w->cancel = &c->cancel. */
void shk_py_call_begin(struct shk_py_call *c, struct SegmentObject *seg, const void *handle,
                       int ends_with_zone, struct shk_wait *w);
void shk_py_call_end(struct shk_py_call *c);
/* Stop the calls in progress on handle (NULL: every call that ends with its zone).
 * Returns how many were told. */
int shk_py_calls_cancel(struct SegmentObject *seg, const void *handle);

/* ---- module contents (common.c) ------------------------------------------------------- */

struct shk_py_int {
    const char *name;
    long long value;
    int is_unsigned;            /* then the value is u (SHK_PY_UINT) */
    unsigned long long u;
};
#define SHK_PY_UINT(name, v) {(name), 0, 1, (v)}
/* Add integer constants from a table ending with {NULL}. 0 or -1. */
int shk_py_add_ints(PyObject *m, const struct shk_py_int *table);

/* A getter (PyGetSetDef) whose body is one expression of self, a Type *. */
#define SHK_PY_GETTER(fname, Type, expr)                        \
    static PyObject *fname(Type *self, void *closure)           \
    {                                                           \
        return expr;                                            \
    }

/* A dict of record rec's fields as table names them (core/fields.h); NULL with an
 * exception set.  The caller may add what the table cannot say (lists, strings). */
struct shk_field;
PyObject *shk_py_fields(const void *rec, const struct shk_field *table);

/* A type from spec, added to m as the last part of spec->name (a string literal: the type
 * keeps pointing into it).  Returns the type (the module holds a reference), or NULL. */
PyTypeObject *shk_py_add_type(PyObject *m, PyType_Spec *spec);
/* The end of every tp_dealloc here: free o with its type's tp_free, then drop the
 * reference an instance of a heap type holds on its type. */
void shk_py_free(void *o);

/* ---- Segment (segment.c) ---------------------------------------------------------------- */

typedef struct SegmentObject {
    PyObject_HEAD
    struct shk_segment seg;
    Py_ssize_t exports;     /* buffers handed out (memoryviews, Regions, arrays), handles
                               and calls in progress on its memory */
    int close_pending;      /* close() was called while exports > 0 */
    int closed;
    struct shk_py_call *calls; /* calls in progress without the GIL (common.c) */
    PyObject *weakreflist;
} SegmentObject;

extern PyTypeObject *shk_SegmentType;
#define Segment_Check(o) PyObject_TypeCheck((o), shk_SegmentType)

/* Raise ClosedError and return -1 if the segment is closed. */
int shk_segment_check_open(SegmentObject *s);
/* Count one more export of the segment (keeps its mapping alive) / release it. */
void shk_segment_export(SegmentObject *s);
void shk_segment_unexport(SegmentObject *s);

/*
 * A Region exports [ptr, ptr + len) of a segment's mapping through the buffer protocol,
 * holding a reference to the segment and one export of it, so a memoryview or NumPy
 * array over it never outlives the mapping.  `owner` is kept alive too (may be NULL):
 * structures use it to run a release callback when the last view goes (see
 * shk_region_new_with_release).
 */
PyObject *shk_region_new(SegmentObject *seg, void *ptr, Py_ssize_t len, int readonly,
                         PyObject *owner);
/* A memoryview over a new Region. */
PyObject *shk_memoryview_of(SegmentObject *seg, void *ptr, Py_ssize_t len, int readonly,
                            PyObject *owner);
/* Like shk_region_new, and when the Region is deallocated call release(owner, cookie)
 * with the GIL held (e.g. give a zero-copy message's memory back to the zone). */
typedef void (*shk_region_release_fn)(PyObject *owner, uint64_t cookie);
PyObject *shk_region_new_with_release(SegmentObject *seg, void *ptr, Py_ssize_t len,
                                      int readonly, PyObject *owner,
                                      shk_region_release_fn release, uint64_t cookie);

/* ---- Zone (zone.c) ------------------------------------------------------------------------ */

typedef struct {
    PyObject_HEAD
    SegmentObject *segment; /* strong reference: the mapping the zone lives in */
    struct shk_zone zone;
    int must_init;          /* this handle created the zone and is initialising it */
    PyObject *weakreflist;
} ZoneObject;

extern PyTypeObject *shk_ZoneType;
#define Zone_Check(o) PyObject_TypeCheck((o), shk_ZoneType)

/* Raise ClosedError and return -1 if the zone (its segment) is closed. */
int shk_zone_check_open(ZoneObject *z);

/* ---- handles on an object in a zone (common.c) ------------------------------------------ */

/*
 * The head of a handle on an object in a zone (sync.c's types, Queue, Dict, Board): the
 * zone, its segment, and while `attached` one export of the segment, so the mapping
 * outlives a zone.close() made while the handle is open.  When a handle lets the memory
 * go differs by type (at close, after the last wait of a detached queue, at dealloc for a
 * Dict): each calls shk_py_handle_unexport then.
 */
#define SHK_PY_HANDLE_HEAD                                                              \
    PyObject_HEAD                                                                       \
    ZoneObject *zone;       /* strong reference */                                      \
    SegmentObject *seg;     /* strong: the zone's segment, for the handle's life */     \
    int attached;           /* holds one export of seg */

struct shk_py_handle {
    SHK_PY_HANDLE_HEAD
};

/* Hold zone and its segment and export the segment (handle: a SHK_PY_HANDLE_HEAD type). */
void shk_py_handle_attach(void *handle, ZoneObject *zone);
/* Give the export back; a no-op once it was. */
void shk_py_handle_unexport(void *handle);
/* The end of the handle's tp_dealloc: the export back, both references dropped, then
 * shk_py_free. */
void shk_py_handle_free(void *handle);

/* ---- what aio.c needs from the handles (sync.c, board.c, queue.c) and tells them ------ */

/* The _ref functions check that a handle is of their type and open; its segment is then
 * the head's (struct shk_py_handle). */

/* A sync handle's shared object and where an awaited acquire writes its results back. */
struct shk_py_sync_ref {
    void *sh;               /* the shared object */
    uint32_t type;          /* SHK_OBJ_* */
    uint32_t *slot;         /* RWLock: the handle's reader slot hint */
    int *owner_died;        /* the handle's owner_died */
};
/* 0, or -1 with TypeError (not a sync handle) or ClosedError. */
int shk_py_sync_ref(PyObject *handle, struct shk_py_sync_ref *out);
/* The handle is open and its zone too (an awaited attempt may run). */
int shk_py_sync_live(PyObject *handle);
struct shk_board;
/* The board of an open board handle, or NULL with TypeError or ClosedError. */
struct shk_board *shk_py_board_ref(PyObject *handle);
int shk_py_board_live(PyObject *handle);
struct shk_queue;
/* The queue of an attached queue handle, or NULL with TypeError or ClosedError. */
struct shk_queue *shk_py_queue_ref(PyObject *handle);
int shk_py_queue_live(PyObject *handle);
/* The record bytes a put of item needs: a bytes-like object (one message) or a list of
 * them (one framed message of those parts).  0, or -1 with an exception set. */
int shk_py_queue_record_need(PyObject *item, uint64_t *need);

/* A handle or a segment (key) is being closed: coroutines waiting on it are woken, and
 * get ClosedError (aio.c; a no-op when nothing waits). */
void shk_py_aio_closed(const void *key);

/* ---- the init function of each file: _coremodule.c calls them in this order ------------- */

int shk_init_common(PyObject *m);   /* first: imports shmkit._errors for the others */
int shk_init_segment(PyObject *m);
int shk_init_zone(PyObject *m);
int shk_init_sync(PyObject *m);
int shk_init_queue(PyObject *m);
int shk_init_dict(PyObject *m);
int shk_init_board(PyObject *m);
int shk_init_ndarray(PyObject *m);
int shk_init_aio(PyObject *m);

#endif
