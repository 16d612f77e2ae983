/*
 * errors.h - how the shmkit C core reports failure.
 *
 * Every core function returns an int:
 *     0                 success
 *     > 0               an errno value (ENOENT, EACCES, ENOSPC, ETIMEDOUT, EINTR, ...)
 *     SHK_E* (< 0)      a shmkit condition, from the reserved range below
 *
 * The reserved range -30600 .. -30699 cannot collide with errno values (which are
 * positive) or with LMDB-style codes of other libraries.  The codes are listed once, in
 * errors.def, with their text and their Python exception class: the enum below,
 * shk_strerror() and the binding's code -> exception mapping are generated from it.
 * shk_error_detail() gives the message of the most recent failure in this thread,
 * naming the function and the broken invariant, e.g.
 *     "shk_slab_free(): chunk is already free (offset 8192)".
 * The core never touches Python; the binding turns codes into exceptions in one place.
 */
#ifndef SHK_ERRORS_H
#define SHK_ERRORS_H

#ifdef __cplusplus
extern "C" {
#endif

#define SHK_ERANGE_FIRST (-30600)
#define SHK_ERANGE_LAST (-30699)

/* The codes, from errors.def (value, name, text, Python class): the one list. */
enum shk_error {
#define SHK_ERROR(value, name, text, pyclass) name = (value),
#include "errors.def"
#undef SHK_ERROR
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
