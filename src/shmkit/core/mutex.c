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

#ifdef __GLIBC__
int shk_mutex_kind_expected;

/* The kind word of a mutex made by shk_mutex_init (glibc's encoding is its own). */
static int expected_kind(void)
{
    int k = __atomic_load_n(&shk_mutex_kind_expected, __ATOMIC_RELAXED);
    if (k == 0) {
        pthread_mutex_t m;
        if (shk_mutex_init(&m) != 0)
            return -1;
        k = m.__data.__kind & ~SHK_MUTEX_KIND_IGNORED;
        pthread_mutex_destroy(&m);
        __atomic_store_n(&shk_mutex_kind_expected, k, __ATOMIC_RELAXED);
    }
    return k;
}
#endif

int shk_mutex_check_slow(pthread_mutex_t *m)
{
#ifdef __GLIBC__
    int k = __atomic_load_n(&m->__data.__kind, __ATOMIC_RELAXED);
    int want = expected_kind();
    if ((k & ~SHK_MUTEX_KIND_IGNORED) != want)
        return shk_fail(SHK_ECORRUPT, "mutex: its kind word is %#x, not the %#x of a robust, "
                        "process-shared, error-checking mutex (corrupted)", (unsigned)k,
                        (unsigned)want);
#else
    (void)m;
#endif
    return 0;
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

/*
 * The owner a locked word names does not exist (issue 13 #6): no thread has that id, or
 * the word names none.  A mutex whose owner really died was marked by the kernel
 * (FUTEX_OWNER_DIED, the id cleared) and never gets here, so this is a corrupted word, and
 * nothing would ever unlock it.  Do what the kernel does when an owner dies: clear the id
 * and set FUTEX_OWNER_DIED, keeping FUTEX_WAITERS (our unlock then wakes the next
 * sleeper).  The next trylock takes it with EOWNERDEAD and the caller repairs what it
 * protects, as after any death.  The CAS compares the whole word, so an owner that took
 * the mutex meanwhile is left alone.  Thread ids are looked up in this process's PID
 * namespace, as every liveness check of shmkit does.  1 if marked.
 */
#define GHOST_GRACE_NS 1000000u

static int mark_ghost_owner(uint32_t *word, uint32_t v)
{
    pid_t owner = (pid_t)(v & FUTEX_TID_MASK);
    if (v & FUTEX_OWNER_DIED)
        return 0; /* marked already: trylock takes it */
    if (owner != 0 && shk_proc_alive(owner, 0))
        return 0;
    return shk_cas_seq_cst(word, &v, (v & FUTEX_WAITERS) | FUTEX_OWNER_DIED);
}

static int mutex_attempt(void *obj, struct shk_wait *w)
{
    pthread_mutex_t *m = obj;
    int r = shk_mutex_check(m);
    if (r)
        return r;
    r = map_lock_result(pthread_mutex_trylock(m));
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
    if (w->flags & SHK_WAIT_ARMED) {
        /* the owner's liveness, for a caller that sleeps: holders are quick, so the first
         * look comes after GHOST_GRACE_NS of waiting, then after 1, 2, 4 ... ms up to
         * liveness_ns (one /proc lookup each); the sleep ends for each */
        uint64_t now = shk_now_ns(), from = (w->t0 ? w->t0 : now) + GHOST_GRACE_NS;
        if (now >= from && shk_wait_liveness_due(w, now) && mark_ghost_owner(word, v)) {
            shk_wait_on_poll(w, now); /* take it at once, with EOWNERDEAD */
            return EAGAIN;
        }
        shk_wait_retry_by(w, now >= from ? w->next_live : from);
    }
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

int (*shk_wait_interrupted)(void);

/* Ask: the hook may run arbitrary code (Python's signal handlers), whose own calls are not
 * part of the wait in progress: they must not inherit its deadline. */
static int ask(int (*asked)(void))
{
    uint64_t saved = shk_wait_ambient_ns;
    shk_wait_ambient_ns = 0;
    int stop = asked();
    shk_wait_ambient_ns = saved;
    return stop;
}

static int lock_wait(pthread_mutex_t *m, const struct timespec *deadline) __attribute__((noinline));

int shk_mutex_lock(pthread_mutex_t *m, const struct timespec *deadline)
{
    /* Uncontended (nearly always: these are held for microseconds), one checked trylock
     * takes it, before any wait is set up: the driver's first attempt would make the same
     * call, and a result other than EBUSY (taken, taken with EOWNERDEAD, unrecoverable,
     * a corrupted kind word) is final there too.  This keeps a zone allocation's
     * lock/unlock at the cost of a bare pthread_mutex_lock (~60 instructions, against
     * ~220 through the driver). */
    int r = shk_mutex_check(m);
    if (__builtin_expect(r != 0, 0))
        return r;
    r = pthread_mutex_trylock(m);
    if (__builtin_expect(r == 0, 1))
        return 0;
    if (r != EBUSY)
        return map_lock_result(r);
    return lock_wait(m, deadline);
}

/* Held elsewhere (or by this thread: the attempt says EDEADLK): wait in the one shape. */
static int lock_wait(pthread_mutex_t *m, const struct timespec *deadline)
{
    /* The callers hold these mutexes for microseconds and expect no EINTR, so the wait
     * takes no slices for signals, unless someone can be asked whether to stop: a word
     * naming a live thread that never unlocks (corruption) must not keep a caller
     * forever.  Once the wait has lasted a slice, each slice asks; a yes ends the wait
     * with EINTR, which the callers pass up like any error. */
    int (*asked)(void) = shk_wait_interrupted;
    /* No deadline given: the deadline of the wait in progress, if any (wait.h,
     * shk_wait_ambient_ns): a call with a timeout is not kept past it by a lock word
     * naming a live thread that never unlocks. */
    uint64_t ambient = deadline ? 0 : shk_wait_ambient_ns;
    struct shk_wait w = SHK_WAIT_INIT(ambient ? ambient : shk_wait_deadline(deadline),
                                      asked ? 0 : SHK_WAIT_NOSIGNALS);
    int r;
    while ((r = shk_wait_run(&shk_mutex_op, m, &w)) == EINTR) {
        uint64_t waited = w.t0 ? shk_now_ns() - w.t0 : 0;
        if (asked && waited >= shk_wait_cfg.recheck_ns && ask(asked)) {
            uint32_t *word = robust_word(m);
            unsigned owner = word ? shk_load_relaxed(word) & FUTEX_TID_MASK : 0;
            shk_wait_cancel(&shk_mutex_op, m, &w, ECANCELED);
            return shk_fail(EINTR, "interrupted after %.1f s waiting for a mutex held by "
                            "thread %u", (double)waited / 1e9, owner);
        }
    }
    if (r == ETIMEDOUT && ambient) {
        uint32_t *word = robust_word(m);
        return shk_fail(ETIMEDOUT, "timed out: an internal mutex was held past the call's "
                        "deadline by thread %u", word ? shk_load_relaxed(word) & FUTEX_TID_MASK
                                                      : 0u);
    }
    return r;
}

int shk_mutex_trylock(pthread_mutex_t *m)
{
    int r = shk_mutex_check(m);
    return r ? r : map_lock_result(pthread_mutex_trylock(m));
}

/* shk_mutex_unlock's kind check failed (r): corrupted while held.  If it is ours, put
 * the kind back (it must leave this thread's robust list) and unlock it; say so either
 * way.  Out of line, so that the common unlock saves no registers. */
static __attribute__((noinline)) int unlock_corrupted(pthread_mutex_t *m, int r)
{
    uint32_t *word = robust_word(m);
    if (word && (shk_load_relaxed(word) & FUTEX_TID_MASK) == (uint32_t)shk_self_tid()) {
#ifdef __GLIBC__
        __atomic_store_n(&m->__data.__kind, shk_mutex_kind_expected, __ATOMIC_RELAXED);
#endif
        pthread_mutex_unlock(m);
    }
    return r;
}

int shk_mutex_unlock(pthread_mutex_t *m)
{
    int r = shk_mutex_check(m);
    if (__builtin_expect(r != 0, 0))
        return unlock_corrupted(m, r);
    r = pthread_mutex_unlock(m);
    if (__builtin_expect(r == EPERM, 0))
        return shk_fail(SHK_ENOTOWNER, "shk_mutex_unlock(): mutex is not held by this thread");
    return r;
}

int shk_mutex_consistent(pthread_mutex_t *m)
{
    int r = shk_mutex_check(m);
    return r ? r : pthread_mutex_consistent(m);
}
