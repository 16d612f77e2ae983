#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "mutex.h"

#include <errno.h>

#include "errors.h"

int shk_mutex_init(pthread_mutex_t *m)
{
    pthread_mutexattr_t a;
    int r = pthread_mutexattr_init(&a);
    if (r)
        return r;
    pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
    pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
    /* error-checking: unlocking a mutex we do not own reports EPERM instead of UB */
    pthread_mutexattr_settype(&a, PTHREAD_MUTEX_ERRORCHECK);
    r = pthread_mutex_init(m, &a);
    pthread_mutexattr_destroy(&a);
    return r;
}

static int map_lock_result(int r)
{
    switch (r) {
    case 0: return 0;
    case EOWNERDEAD: return SHK_EOWNERDEAD;
    case ENOTRECOVERABLE:
        return shk_fail(SHK_ECORRUPT, "shk_mutex_lock(): mutex is not recoverable "
                                      "(a previous owner died and repair never finished)");
    case EDEADLK:
        return shk_fail(EDEADLK, "shk_mutex_lock(): this thread already holds the mutex");
    default: return r;
    }
}

int shk_mutex_lock(pthread_mutex_t *m, const struct timespec *deadline)
{
    int r;
    if (!deadline)
        r = pthread_mutex_lock(m);
    else
        r = pthread_mutex_clocklock(m, CLOCK_MONOTONIC, deadline);
    return map_lock_result(r);
}

int shk_mutex_trylock(pthread_mutex_t *m)
{
    return map_lock_result(pthread_mutex_trylock(m));
}

int shk_mutex_unlock(pthread_mutex_t *m)
{
    int r = pthread_mutex_unlock(m);
    if (r == EPERM)
        return shk_fail(SHK_ENOTOWNER, "shk_mutex_unlock(): mutex is not held by this thread");
    return r;
}

int shk_mutex_consistent(pthread_mutex_t *m)
{
    return pthread_mutex_consistent(m);
}
