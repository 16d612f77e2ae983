#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "mutex.h"

#include <errno.h>
#include <linux/futex.h>

#include "atomics.h"
#include "errors.h"
#include "futex.h"
#include "proc.h"
#include "wait.h"

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

/*
 * Waiting for the mutex, in the one wait shape (wait.h).  The attempt is
 * pthread_mutex_trylock, so glibc keeps doing everything a robust mutex needs (the
 * robust list, EOWNERDEAD, ENOTRECOVERABLE).  The word it sleeps on is the kernel's
 * robust futex word (the first int of glibc's pthread_mutex_t: owner tid |
 * FUTEX_WAITERS | FUTEX_OWNER_DIED, the kernel ABI of robust futexes), with the protocol
 * glibc's own waiters follow: set FUTEX_WAITERS before sleeping, so the unlock (an
 * exchange with 0 that wakes one waiter when the bit was set) wakes us; after a sleep,
 * hold the mutex with FUTEX_WAITERS set, since others may still sleep; a woken waiter
 * that gives up passes the wake-up on.
 */
static uint32_t *robust_word(pthread_mutex_t *m)
{
#ifdef __GLIBC__
    return (uint32_t *)&m->__data.__lock;
#else
    return NULL;
#endif
}

static int mutex_attempt(void *obj, struct shk_wait *w)
{
    pthread_mutex_t *m = obj;
    int r = map_lock_result(pthread_mutex_trylock(m));
    uint32_t *word = robust_word(m);
    if (r != EBUSY) {
        if ((r == 0 || r == SHK_EOWNERDEAD) && w->slept && word) {
            uint32_t v = shk_load_relaxed(word);
            while (!(v & FUTEX_WAITERS) && !shk_cas_seq_cst(word, &v, v | FUTEX_WAITERS))
                ;
        }
        return r;
    }
    if (!word) {
        shk_wait_on_poll(w, shk_now_ns() + 1000000u);
        return EAGAIN;
    }
    uint32_t v = shk_load_seq_cst(word);
    if ((v & FUTEX_TID_MASK) == (uint32_t)shk_self_tid()) /* trylock says EBUSY to its owner */
        return map_lock_result(EDEADLK);
    for (int tries = 0; (w->flags & SHK_WAIT_ARMED) && v && !(v & FUTEX_WAITERS) && tries < 64;
         tries++) {
        if (shk_cas_seq_cst(word, &v, v | FUTEX_WAITERS)) {
            v |= FUTEX_WAITERS;
            break;
        }
    }
    if (v == 0) { /* unlocked in between: try again soon */
        shk_wait_on_poll(w, shk_now_ns());
        return EAGAIN;
    }
    shk_wait_on_futex(w, word, v, NULL);
    return EAGAIN;
}

static int mutex_give_up(void *obj, struct shk_wait *w, int why)
{
    uint32_t *word = robust_word(obj);
    if (w->slept && word) /* we may have taken a wake-up meant for the next waiter */
        shk_futex_wake(word, 1);
    return why;
}

const struct shk_wait_op shk_mutex_op = {"mutex", mutex_attempt, mutex_give_up, NULL};

int shk_mutex_lock(pthread_mutex_t *m, const struct timespec *deadline)
{
    /* no slices for signals: the callers hold no Python state and expect no EINTR */
    struct shk_wait w = SHK_WAIT_INIT(shk_wait_deadline(deadline), SHK_WAIT_NOSIGNALS);
    int r;
    while ((r = shk_wait_run(&shk_mutex_op, m, &w)) == EINTR)
        ; /* a signal interrupted the sleep: go on */
    return r;
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
