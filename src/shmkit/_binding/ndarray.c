/*
 * ndarray.c (binding) - shmkit._core.ndarray_open: find or create the memory of a shared
 * NumPy array (core/ndarray.h).  The array object itself is built by the Python layer
 * over the writable memoryview returned here, which keeps the mapping alive.
 */
#include "binding.h"

#include "ndarray.h"

/* ndarray_open(zone, name, head=None) -> (data memoryview, head bytes, created, offset) */
static PyObject *core_ndarray_open(PyObject *module, PyObject *args)
{
    PyObject *zoneobj, *headobj = Py_None;
    const char *name;
    if (!PyArg_ParseTuple(args, "O!s|O:ndarray_open", shk_ZoneType, &zoneobj, &name, &headobj))
        return NULL;
    ZoneObject *zone = (ZoneObject *)zoneobj;
    if (shk_zone_check_open(zone) < 0)
        return NULL;
    struct shk_ndarray_head want, got;
    if (headobj != Py_None) {
        Py_buffer hb;
        if (PyObject_GetBuffer(headobj, &hb, PyBUF_SIMPLE) < 0)
            return NULL;
        if (hb.len != (Py_ssize_t)sizeof want) {
            PyBuffer_Release(&hb);
            return PyErr_Format(PyExc_ValueError, "ndarray head must be %zu bytes",
                                sizeof want);
        }
        memcpy(&want, hb.buf, sizeof want);
        PyBuffer_Release(&hb);
    }
    struct shk_dirent e;
    int created = 0;
    uint8_t *data;
    /* with the GIL held, as zone.c does: another thread cannot close the zone meanwhile */
    int r = shk_ndarray_open(&zone->zone, name, headobj != Py_None ? &want : NULL, &e, &created,
                             &got, &data);
    if (r)
        return shk_py_raise(r, "ndarray");
    int readonly = (zone->segment->seg.flags & SHK_O_RDONLY) != 0;
    PyObject *mv = shk_memoryview_of(zone->segment, data, (Py_ssize_t)got.nbytes, readonly, NULL);
    if (!mv)
        return NULL;
    return Py_BuildValue("(Ny#OK)", mv, (const char *)&got, (Py_ssize_t)sizeof got,
                         created ? Py_True : Py_False, (unsigned long long)e.offset);
}

static PyMethodDef ndarray_methods[] = {
    {"ndarray_open", core_ndarray_open, METH_VARARGS,
     "ndarray_open(zone, name, head=None, /)\n--\n\nFind (head None) or find-or-create the "
     "shared array `name`: (writable memoryview of its elements, its 512-byte head, created, "
     "offset)."},
    {NULL, NULL, 0, NULL},
};

int shk_init_ndarray(PyObject *m)
{
    if (PyModule_AddFunctions(m, ndarray_methods) < 0)
        return -1;
    if (PyModule_AddIntConstant(m, "NDARRAY_MAGIC", SHK_NDARRAY_MAGIC) < 0 ||
        PyModule_AddIntConstant(m, "NDARRAY_HEAD_SIZE", SHK_NDARRAY_HEAD_SIZE) < 0 ||
        PyModule_AddIntConstant(m, "NDARRAY_DESCR_MAX", SHK_NDARRAY_DESCR_MAX) < 0)
        return -1;
    return 0;
}
