/*
 * mutex.h - the robust, process-shared mutex used inside zones.
 *
 * A pthread mutex with PTHREAD_PROCESS_SHARED and PTHREAD_MUTEX_ROBUST: when its owner
 * dies, the kernel marks it and the next locker gets SHK_EOWNERDEAD *with the lock held*.
 * That caller repairs what the mutex protects, then calls shk_mutex_consistent() before
 * unlocking; otherwise the mutex becomes unusable (ENOTRECOVERABLE).  Structures keep
 * every critical section recoverable by preparing state off to the side and publishing
 * it with one store.
 *
 * A robust mutex belongs to the OS thread that locked it: it is held only inside one C
 * call of the core, never across Python code.
 */
#ifndef SHK_MUTEX_H
#define SHK_MUTEX_H

#include <pthread.h>
#include <time.h>

#include "wait.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Initialise a mutex in shared memory (robust, process-shared, error-checking). */
int shk_mutex_init(pthread_mutex_t *m);

/*
 * A mutex in a zone is shared input like any other (issue 13 #3): glibc trusts its kind
 * word, and one corrupted byte there (another type, a PI or priority-protect protocol, a
 * ceiling) sends pthread_mutex_* down paths that assert and abort() the process.  Every
 * mutex of the core is made by shk_mutex_init with the same attributes, so its kind is one
 * known value: shk_mutex_check compares it (one load and a compare) before every
 * pthread_mutex_* call on shared memory and says SHK_ECORRUPT otherwise.  The functions
 * below do it themselves; code that calls pthread_mutex_* on a zone's mutex directly
 * (the dict's fast path) calls it first.
 */
#define SHK_MUTEX_KIND_IGNORED 0x300 /* glibc's lock-elision hints (a mutex may gain them) */
extern int shk_mutex_kind_expected;  /* 0 until the first check */
int shk_mutex_check_slow(pthread_mutex_t *m);
static inline int shk_mutex_check(pthread_mutex_t *m)
{
#ifdef __GLIBC__
    int k = __atomic_load_n(&m->__data.__kind, __ATOMIC_RELAXED) & ~SHK_MUTEX_KIND_IGNORED;
    if (__builtin_expect(k == shk_mutex_kind_expected, 1))
        return 0;
#endif
    return shk_mutex_check_slow(m);
}

/*
 * Lock, waiting until the absolute CLOCK_MONOTONIC deadline (NULL: forever), through the
 * one wait shape (shk_mutex_op below).  An owner that does not exist is dead: the wait
 * checks the owner's liveness and marks the mutex as the kernel marks one whose owner
 * died (issue 13 #6).  The wait does not return for signals, except that once it has
 * lasted recheck_ns it asks shk_wait_interrupted (wait.h) every slice, and a yes ends it
 * with EINTR.  An uncontended mutex is taken by one checked trylock, with no wait set up.
 * Returns 0, SHK_EOWNERDEAD (held; repair, then shk_mutex_consistent),
 * ETIMEDOUT, EINTR, or SHK_ECORRUPT (unrecoverable, or a corrupted kind word).
 */
int shk_mutex_lock(pthread_mutex_t *m, const struct timespec *deadline);

/* The wait of shk_mutex_lock as an operation of wait.h (obj: the pthread_mutex_t): for
 * callers that can take EINTR returns or wait elsewhere. */
extern const struct shk_wait_op shk_mutex_op;

/* Try once: 0, EBUSY, SHK_EOWNERDEAD, SHK_ECORRUPT. */
int shk_mutex_trylock(pthread_mutex_t *m);

/* Unlock: 0, SHK_ENOTOWNER when this thread does not hold it, or SHK_ECORRUPT when its
 * kind word was corrupted while held (then it is unlocked all the same if it is ours). */
int shk_mutex_unlock(pthread_mutex_t *m);

/* Mark a mutex acquired with SHK_EOWNERDEAD as consistent again. */
int shk_mutex_consistent(pthread_mutex_t *m);

#ifdef __cplusplus
}
#endif
#endif
