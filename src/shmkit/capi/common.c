/*
 * common.c (C API) - version, errors, set-up, argument checks and the one way the C API
 * waits.  See capi.h.
 */
#include "capi.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <string.h>

#include "errors.h"
#include "futex.h"
#include "layout.h"

/* The public flags are the core's (the header cannot include the core's headers). */
_Static_assert(SHMKIT_CREATE == SHK_O_CREATE, "SHMKIT_CREATE is SHK_O_CREATE");
_Static_assert(SHMKIT_EXCL == SHK_O_EXCL, "SHMKIT_EXCL is SHK_O_EXCL");
_Static_assert(SHMKIT_RDONLY == SHK_O_RDONLY, "SHMKIT_RDONLY is SHK_O_RDONLY");
_Static_assert(SHMKIT_ANYOWNER == SHK_O_ANYOWNER, "SHMKIT_ANYOWNER is SHK_O_ANYOWNER");
_Static_assert(SHMKIT_NAME_MAX == SHK_OBJ_NAME_MAX, "SHMKIT_NAME_MAX is SHK_OBJ_NAME_MAX");
_Static_assert(SHMKIT_TAG_MAX == SHK_TAG_MAX, "SHMKIT_TAG_MAX is SHK_TAG_MAX");
_Static_assert(SHMKIT_ERANGE_FIRST == SHK_ERANGE_FIRST && SHMKIT_ERANGE_LAST == SHK_ERANGE_LAST,
               "the reserved range is the core's");

/* The number of codes in the header is the number in errors.def (the values and names
 * are compared one by one by tests/test_capi.py, which parses both). */
enum {
#define SHK_ERROR(value, name, text, pyclass) shk_capi_count_##name,
#include "errors.def"
#undef SHK_ERROR
    SHK_CAPI_NERRORS
};
_Static_assert(SHK_CAPI_NERRORS == SHMKIT_EOBJMISMATCH - SHMKIT_ECORRUPT + 1 ||
                   SHK_CAPI_NERRORS == SHMKIT_ECORRUPT - SHMKIT_EOBJMISMATCH + 1,
               "shmkit.h lists as many error codes as core/errors.def");

SHMKIT_API const char *shmkit_version(int *major, int *minor, int *patch)
{
    if (major)
        *major = SHMKIT_VERSION_MAJOR;
    if (minor)
        *minor = SHMKIT_VERSION_MINOR;
    if (patch)
        *patch = SHMKIT_VERSION_PATCH;
    return SHMKIT_VERSION_STRING;
}

SHMKIT_API const char *shmkit_strerror(int code)
{
    return shk_strerror(code); /* the one table: core/errors.def */
}

SHMKIT_API const char *shmkit_error_detail(void)
{
    return shk_error_detail();
}

static pthread_once_t init_once = PTHREAD_ONCE_INIT;

static void init(void)
{
    shk_wait_config_load_env(); /* SHMKIT_SPIN_NS, SHMKIT_LIVENESS_NS, as in Python */
}

void shk_capi_init(void)
{
    pthread_once(&init_once, init);
}

int shk_capi_null(const char *fn, const char *what)
{
    return shk_fail(EINVAL, "%s(): %s is NULL", fn, what);
}

int shk_capi_check_object_name(const char *name)
{
    if (!name)
        return shk_fail(SHK_ENAME, "object name is NULL");
    size_t n = strlen(name);
    if (n == 0)
        return shk_fail(SHK_ENAME, "object name is empty");
    if (n > SHK_OBJ_NAME_MAX)
        return shk_fail(SHK_ENAME, "object name is %zu bytes long; at most %d are allowed", n,
                        SHK_OBJ_NAME_MAX);
    return 0;
}

int shk_capi_check_flags(const char *fn, int flags, int allowed)
{
    if (flags & ~allowed)
        return shk_fail(EINVAL, "%s(): unknown flags 0x%x", fn, (unsigned)(flags & ~allowed));
    return 0;
}

int shk_capi_object_mismatch(int r)
{
    return r == SHK_EMISMATCH ? SHK_EOBJMISMATCH : r;
}

int shk_capi_wait_init(struct shk_wait *w, double timeout)
{
    if (isnan(timeout))
        return shk_fail(EINVAL, "timeout is NaN");
    uint64_t deadline = SHK_FOREVER;
    uint32_t flags = SHK_WAIT_NOSIGNALS;
    if (timeout == 0)
        flags |= SHK_WAIT_TRY;
    else if (timeout > 0 && timeout < 1e9) /* beyond 31 years: forever */
        deadline = shk_now_ns() + (uint64_t)(timeout * 1e9);
    *w = SHK_WAIT_INIT(deadline, flags);
    return 0;
}

int shk_capi_wait_run(const struct shk_wait_op *op, void *obj, struct shk_wait *w)
{
    int r;
    do /* EINTR: a handler of the program ran; the wait resumes where it stopped */
        r = shk_wait_run(op, obj, w);
    while (r == EINTR);
    return r;
}

int shk_capi_ttl_ms(const char *fn, double ttl, uint64_t *ms)
{
    /* as the Python binding: 0 .. 1e10 seconds, rounded to ms, at least 1 ms if > 0 */
    if (!(ttl >= 0) || ttl > 1e10)
        return shk_fail(EINVAL, "%s(): ttl must be from 0 to 1e10 seconds (0: never "
                        "expires), not %g", fn, ttl);
    uint64_t m = (uint64_t)(ttl * 1000.0 + 0.5); /* llround for ttl >= 0, without libm */
    *ms = m == 0 && ttl > 0 ? 1 : m;
    return 0;
}
