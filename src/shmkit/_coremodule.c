/*
 * _coremodule.c - the shmkit._core extension module: built from one init function per
 * binding file (declared in _binding/binding.h), called in the order of the table below.
 * Everything else lives in _binding/: the types, the module functions, and the helpers
 * every file shares (_binding/common.c).
 */
#include "_binding/binding.h"

static int (*const init_functions[])(PyObject *m) = {
    shk_init_common, /* first: the exception classes the others raise */
    shk_init_segment,
    shk_init_zone,
    shk_init_sync,
    shk_init_queue,
    shk_init_dict,
    shk_init_board,
    shk_init_ndarray,
    shk_init_aio,
};

static struct PyModuleDef core_module = {
    PyModuleDef_HEAD_INIT, "shmkit._core",
    "The C core of shmkit, through a thin binding. Use the public API in `shmkit`.", -1, NULL,
};

PyMODINIT_FUNC PyInit__core(void)
{
    PyObject *m = PyModule_Create(&core_module);
    if (!m)
        return NULL;
    for (size_t i = 0; i < sizeof init_functions / sizeof init_functions[0]; i++) {
        if (init_functions[i](m) < 0) {
            Py_DECREF(m);
            return NULL;
        }
    }
    return m;
}
