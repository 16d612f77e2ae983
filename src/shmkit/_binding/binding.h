/*
 * binding.h - what the files of the thin CPython binding share.
 *
 * The binding parses arguments, releases the GIL around calls that can block, and turns
 * core error codes into exceptions (shk_py_raise, the one place that does).  Nothing
 * else: the work is in core/.  One file per public primitive (segment.c, zone.c, ...);
 * each exports an init function that _coremodule.c calls to add its types.
 */
#ifndef SHK_BINDING_H
#define SHK_BINDING_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "errors.h"
#include "futex.h"
#include "layout.h"
#include "segment.h"
#include "zone.h"

/* ---- errors ---------------------------------------------------------------------- */

/* Raise the exception for core code `code`; `what` names the operation. Returns NULL. */
PyObject *shk_py_raise(int code, const char *what);
/* Same, returning -1 (for int-returning slots). */
int shk_py_raise_int(int code, const char *what);
/* An exception class from shmkit._errors by name (borrowed). */
PyObject *shk_py_exc(const char *name);

/* A consistency check's result as (problem_count, lines): runs check(obj, report, cap)
 * without the GIL (the core checkers write one problem per line into report). */
typedef int (*shk_checker)(void *obj, char *report, size_t cap);
PyObject *shk_py_check_report(shk_checker check, void *obj);

/*
 * Wait helper for blocking calls: converts a Python timeout (None or < 0: forever;
 * a number: seconds) into an absolute CLOCK_MONOTONIC deadline. Returns 0, or -1 with
 * an exception set (bad type). *has is 0 when there is no deadline.
 */
int shk_py_deadline(PyObject *timeout, struct timespec *deadline, int *has);

/* ---- Segment ------------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    struct shk_segment seg;
    Py_ssize_t exports;     /* buffers handed out (memoryviews, Regions, arrays) */
    int close_pending;      /* close() was called while exports > 0 */
    int closed;
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

/* ---- Zone ---------------------------------------------------------------------------- */

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

/* ---- per-file init functions (called from _coremodule.c) -------------------------- */

int shk_init_segment(PyObject *module);
int shk_init_zone(PyObject *module);

#endif
