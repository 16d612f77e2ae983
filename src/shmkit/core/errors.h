/*
 * errors.h - how the shmkit C core reports failure.
 *
 * Every core function returns an int:
 *     0                 success
 *     > 0               an errno value (ENOENT, EACCES, ENOSPC, ETIMEDOUT, EINTR, ...)
 *     SHK_E* (< 0)      a shmkit condition, from the reserved range below
 *
 * The reserved range -30600 .. -30699 cannot collide with errno values (which are
 * positive) or with LMDB-style codes of other libraries.  shk_strerror() gives one line
 * for each; shk_error_detail() gives the message of the most recent failure in this
 * thread, naming the function and the broken invariant, e.g.
 *     "shk_slab_free(): chunk is already free (offset 8192)".
 * The core never touches Python; the binding turns codes into exceptions in one place.
 */
#ifndef SHK_ERRORS_H
#define SHK_ERRORS_H

#ifdef __cplusplus
extern "C" {
#endif

#define SHK_ERANGE_FIRST (-30600)

enum shk_error {
    SHK_ECORRUPT = -30600,     /* a shared structure failed a consistency check */
    SHK_EVERSION = -30601,     /* made by an incompatible layout (format word differs) */
    SHK_EMISMATCH = -30602,    /* zone exists with a different size or tag */
    SHK_EFULL = -30603,        /* zone has no room for the allocation */
    SHK_EOWNERDEAD = -30604,   /* previous owner died holding the lock; state recovered */
    SHK_ENOTFOUND = -30605,    /* no object of that name in the zone */
    SHK_EEXISTS = -30606,      /* an object of that name already exists */
    SHK_ETYPE = -30607,        /* an object of that name exists with another type */
    SHK_EBADFREE = -30608,     /* free of an offset that is not a live allocation */
    SHK_EINITDIED = -30609,    /* the process initialising the zone died */
    SHK_ENOTREADY = -30610,    /* the zone is not initialised yet */
    SHK_ETOOBIG = -30611,      /* request larger than the structure can ever hold */
    SHK_ENOTOWNER = -30612,    /* release of a lock this thread/process does not hold */
    SHK_EBROKEN = -30613,      /* barrier broken (aborted, timed out, or a party died) */
    SHK_EEMPTY = -30614,       /* nothing to take (non-blocking get) */
    SHK_EFULLQ = -30615,       /* no room (non-blocking put) */
    SHK_ECLOSED = -30616,      /* structure was closed */
    SHK_ENAME = -30617,        /* name invalid for the zone directory */
    SHK_ENOGROW = -30618,      /* zone cannot grow any further */
    SHK_ERANGE_LAST = -30699
};

/* One line describing a code (errno or SHK_E*). Never NULL. */
const char *shk_strerror(int code);

/* The detail message of the last failure in this thread ("" when none). */
const char *shk_error_detail(void);

/* Record a detail message for the failure about to be returned. Returns `code`. */
int shk_fail(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Forget the detail message (called at the start of an operation). */
void shk_clear_detail(void);

#ifdef __cplusplus
}
#endif
#endif
