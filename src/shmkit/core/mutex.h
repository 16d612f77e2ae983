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
 * Lock, waiting until the absolute CLOCK_MONOTONIC deadline (NULL: forever), through the
 * one wait shape (shk_mutex_op below; the wait never returns early for signals).
 * Returns 0, SHK_EOWNERDEAD (held; repair, then shk_mutex_consistent), ETIMEDOUT,
 * or SHK_ECORRUPT if the mutex is unrecoverable.
 */
int shk_mutex_lock(pthread_mutex_t *m, const struct timespec *deadline);

/* The wait of shk_mutex_lock as an operation of wait.h (obj: the pthread_mutex_t): for
 * callers that can take EINTR returns or wait elsewhere. */
extern const struct shk_wait_op shk_mutex_op;

/* Try once: 0, EBUSY, SHK_EOWNERDEAD, SHK_ECORRUPT. */
int shk_mutex_trylock(pthread_mutex_t *m);

/* Unlock: 0, or SHK_ENOTOWNER when this thread does not hold it. */
int shk_mutex_unlock(pthread_mutex_t *m);

/* Mark a mutex acquired with SHK_EOWNERDEAD as consistent again. */
int shk_mutex_consistent(pthread_mutex_t *m);

#ifdef __cplusplus
}
#endif
#endif
