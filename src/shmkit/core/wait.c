/*
 * wait.c - the one driver of every blocking call (see wait.h): adaptive spin, arming,
 * sleeping in slices, signal returns and the liveness cadence, written once.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "wait.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "atomics.h"
#include "futex.h"
#include "segment.h"

struct shk_wait_config shk_wait_cfg = {
    .spin_max_ns = 200 * 1000,
    .liveness_ns = 10 * 1000 * 1000,
    .recheck_ns = 100 * 1000 * 1000,
};

void shk_wait_config_load_env(void)
{
    const char *s;
    if ((s = getenv("SHMKIT_SPIN_NS")) && *s)
        shk_wait_cfg.spin_max_ns = strtoull(s, NULL, 10);
    if ((s = getenv("SHMKIT_LIVENESS_NS")) && *s) {
        uint64_t v = strtoull(s, NULL, 10);
        if (v >= 100000)
            shk_wait_cfg.liveness_ns = v;
    }
}

static int ncpu_cache;

int shk_ncpu(void)
{
    int n = shk_load_relaxed(&ncpu_cache);
    if (__builtin_expect(n == 0, 0)) {
        long c = sysconf(_SC_NPROCESSORS_ONLN);
        n = c > 0 ? (int)c : 1;
        shk_store_relaxed(&ncpu_cache, n);
    }
    return n;
}

uint64_t shk_wait_deadline(const struct timespec *deadline)
{
    if (!deadline)
        return SHK_FOREVER;
    return (uint64_t)deadline->tv_sec * 1000000000ull + (uint64_t)deadline->tv_nsec;
}

int shk_wait_expired(const struct shk_wait *w)
{
    return w->deadline_ns != SHK_FOREVER && shk_now_ns() >= w->deadline_ns;
}

int shk_wait_liveness_due(struct shk_wait *w, uint64_t now)
{
    if (now < w->next_live)
        return 0;
    uint64_t step = w->live_step ? w->live_step * 2 : 1000000u;
    if (step > shk_wait_cfg.liveness_ns)
        step = shk_wait_cfg.liveness_ns;
    w->live_step = step;
    w->next_live = now + step;
    return 1;
}

/* ---- cancelling ----------------------------------------------------------------------------- */

static inline int cancelled(const struct shk_wait *w)
{
    return w->cancel && shk_load_acquire(w->cancel) != 0;
}

void shk_wait_cancel_wake(struct shk_wait *w)
{
    uint32_t *cancel = (uint32_t *)w->cancel;
    if (!cancel)
        return;
    shk_store_seq_cst(cancel, 1);
    /* a long sleep watches the cancel word (futex_waitv); a short one sleeps on the
     * object's word alone and said which (seq_cst on both sides: it saw the cancel, or we
     * see the word) */
    syscall(SYS_futex, cancel, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
    uint32_t *word = shk_load_seq_cst(&w->sleeping_on);
    if (word)
        shk_futex_wake(word, INT32_MAX);
}

/* ---- what to wait on -------------------------------------------------------------------- */

void shk_wait_disarm(struct shk_wait *w)
{
    if (w->on.count) {
        shk_sub_fetch_seq_cst(w->on.count, 1);
        w->on.count = NULL;
    }
}

void shk_wait_on_futex(struct shk_wait *w, uint32_t *word, uint32_t value, uint32_t *count)
{
    shk_wait_disarm(w); /* one registration at a time */
    w->on.kind = SHK_WAITON_FUTEX;
    w->on.word = word;
    w->on.value = value;
    w->on.retry_ns = SHK_FOREVER;
    if (count && (w->flags & SHK_WAIT_ARMED)) {
        /* seq_cst: the waker publishes, then reads the count (futex.h's rule) */
        shk_add_fetch_seq_cst(count, 1);
        w->on.count = count;
    }
}

void shk_wait_on_ofd(struct shk_wait *w, int fd, uint64_t offset, int lock_type)
{
    shk_wait_disarm(w);
    w->on.kind = SHK_WAITON_OFD;
    w->on.fd = fd;
    w->on.offset = offset;
    w->on.lock_type = lock_type;
    w->on.word = NULL;
    w->on.retry_ns = SHK_FOREVER;
}

void shk_wait_on_poll(struct shk_wait *w, uint64_t retry_ns)
{
    shk_wait_disarm(w);
    w->on.kind = SHK_WAITON_POLL;
    w->on.word = NULL;
    w->on.retry_ns = retry_ns;
}

/* ---- adaptive spin ------------------------------------------------------------------------ */

#define SPIN_FLOOR_NS 2000u

/* This wait's spin budget (0: do not spin); claims the object's gate. */
static uint64_t spin_begin(const struct shk_spin *sp, struct shk_wait *w, uint64_t now)
{
    if ((w->flags & SHK_WAIT_NOSPIN) || sp->max_ns == 0)
        return 0;
    if ((sp->policy & SHK_SPIN_GATE) && shk_ncpu() < 2)
        return 0;
    uint64_t budget = shk_load_relaxed(sp->budget_ns);
    if (budget == UINT32_MAX) /* unset: start at a quarter of the maximum */
        budget = sp->max_ns / 4 > SPIN_FLOOR_NS ? sp->max_ns / 4 : SPIN_FLOOR_NS;
    if (budget > sp->max_ns)
        budget = sp->max_ns;
    if (w->deadline_ns != SHK_FOREVER) {
        uint64_t left = w->deadline_ns > now ? w->deadline_ns - now : 0;
        if (left < budget)
            budget = left;
    }
    if (budget == 0)
        return 0;
    if ((sp->policy & SHK_SPIN_GATE) && shk_ncpu() <= 2) {
        /* With two CPUs a second spinner can only take time from the process that is
         * about to hand over. */
        uint32_t now_ms = (uint32_t)(now / 1000000u);
        uint32_t busy = shk_load_relaxed(sp->gate_ms);
        if ((int32_t)(busy - now_ms) > 0)
            return 0;
        shk_store_relaxed(sp->gate_ms, now_ms + (uint32_t)(budget / 1000000u) + 2);
    }
    return budget;
}

/* Open the gate again (now: the time, read once by the caller for this and spin_learn). */
static void spin_end(const struct shk_spin *sp, uint64_t now)
{
    if ((sp->policy & SHK_SPIN_GATE) && shk_ncpu() <= 2)
        shk_store_relaxed(sp->gate_ms, (uint32_t)(now / 1000000u));
}

/* The probe of SHK_SPIN_PROBE: offer the CPU; 1 if that gave it away (the yield took more
 * than 3 us: other threads were runnable here, and spinning only delays the one we wait
 * for), after recording it in *busy. */
static int probe_busy(const struct shk_spin *sp)
{
    uint64_t t = shk_now_ns();
    sched_yield();
    if (shk_now_ns() - t <= 3000)
        return 0;
    if (sp->busy)
        shk_store_relaxed(sp->busy, SHK_SPIN_BUSY_WAITS);
    return 1;
}

/* Spin while *word == value, until end (absolute).  1 if it changed.  The hand-off's
 * path: one load and a pause a round; the clock (~20 ns), the cancel word and the probes
 * only every 32 rounds (a round is a pause, ~10-50 ns: the budget is overrun by 1-2 us
 * at most). */
static int spin_on(const struct shk_spin *sp, const struct shk_wait *w, uint64_t end)
{
    const uint32_t *word = w->on.word, value = w->on.value;
    for (uint32_t k = 1;; k++) {
        if (shk_load_acquire(word) != value)
            return 1;
        shk_cpu_relax();
        if (__builtin_expect((k & 31) == 0, 0)) {
            if (shk_now_ns() >= end || cancelled(w))
                return 0;
            /* the waker may be waiting for this very CPU (more busy processes than
             * cores): offer it every ~1000 pauses (PROBE: every 64, and stop if it was
             * taken) */
            if ((sp->policy & SHK_SPIN_PROBE) && (k & 63) == 0 && probe_busy(sp))
                return 0;
            if ((sp->policy & SHK_SPIN_YIELD) && (k & 1023) == 0)
                sched_yield();
        }
    }
}

/*
 * Learn from a finished wait.  LEARN_SLEEPS (sync objects): a spin that won after t ns
 * wants a budget of about 2t (grow at once, shrink slowly; KEEP_WON: never shrink); a
 * wait that slept but ended within the maximum would have been caught by a longer spin;
 * a long wait halves it.
 * Otherwise (boards): only a spin that won grows the budget, to twice what it took; a
 * sleep halves it, because a quick wake-up after sleeping is no evidence that spinning
 * would have caught it (the writer may have run only because this process stopped).
 */
static void spin_learn(const struct shk_spin *sp, struct shk_wait *w, int won, uint64_t now)
{
    uint64_t max = sp->max_ns;
    if (!max || !w->t0)
        return;
    uint64_t waited = now - w->t0;
    uint64_t b = shk_load_relaxed(sp->budget_ns), nb;
    if (b == UINT32_MAX)
        b = max / 4 > SPIN_FLOOR_NS ? max / 4 : SPIN_FLOOR_NS;
    if (sp->policy & SHK_SPIN_LEARN_SLEEPS) {
        if (won) {
            nb = 2 * waited + 2000;
            if (nb < b)
                nb = (sp->policy & SHK_SPIN_KEEP_WON) ? b : b - (b - nb) / 8;
        } else if (waited <= max) {
            nb = 2 * waited + 2000;
        } else {
            nb = b / 2;
        }
    } else if (won) {
        nb = 2 * waited > SPIN_FLOOR_NS ? 2 * waited : SPIN_FLOOR_NS;
        if (nb < b)
            nb = b;
    } else {
        nb = b / 2 < SPIN_FLOOR_NS ? SPIN_FLOOR_NS : b / 2;
    }
    if (nb > max)
        nb = max;
    if (nb > UINT32_MAX - 1)
        nb = UINT32_MAX - 1;
    if (nb != b)
        shk_store_relaxed(sp->budget_ns, (uint32_t)nb);
}

/* ---- sleeping ------------------------------------------------------------------------------- */

static void ns_to_timespec(uint64_t t, struct timespec *ts)
{
    ts->tv_sec = (time_t)(t / 1000000000ull);
    ts->tv_nsec = (long)(t % 1000000000ull);
}

/* A cancellable wait sleeps on its object's word alone (futex_wait: a hand-off costs less
 * than with futex_waitv, ~0.7 us a sleep here) for its first CANCEL_PLAIN_NS, in sleeps of
 * at most that; afterwards (or without futex_waitv) it watches the cancel word too. */
#define CANCEL_PLAIN_NS 10000000u

static int no_waitv; /* futex_waitv said ENOSYS (Linux < 5.16) */

/* Sleep while *word == value and *cancel == 0 (shared and private words), until ts.
 * 0 (woken, changed, or time is up), EINTR, or ENOSYS. */
static int futex_wait_or_cancel(uint32_t *word, uint32_t value, const uint32_t *cancel,
                                const struct timespec *ts)
{
#ifdef SYS_futex_waitv
    if (!shk_load_relaxed(&no_waitv)) {
        struct futex_waitv v[2];
        memset(v, 0, sizeof v);
        v[0].uaddr = (uintptr_t)word;
        v[0].val = value;
        v[0].flags = FUTEX_32; /* shared: the wakers are other processes */
        v[1].uaddr = (uintptr_t)cancel;
        v[1].val = 0;
        v[1].flags = FUTEX_32 | FUTEX_PRIVATE_FLAG;
        if (syscall(SYS_futex_waitv, v, 2, 0, ts, CLOCK_MONOTONIC) >= 0)
            return 0;
        if (errno == EINTR)
            return EINTR;
        if (errno != ENOSYS)
            return 0; /* EAGAIN: a word had changed; ETIMEDOUT */
        shk_store_relaxed(&no_waitv, 1);
    }
#endif
    return ENOSYS;
}

/* Sleep while *word == value on a word private to this process, until ts. */
static int private_futex_wait(uint32_t *word, uint32_t value, const struct timespec *ts)
{
    long r = syscall(SYS_futex, word, FUTEX_WAIT_BITSET_PRIVATE, value, ts, NULL,
                     FUTEX_BITSET_MATCH_ANY);
    return r < 0 && errno == EINTR ? EINTR : 0;
}

/* Sleep on w->on until `until` (absolute ns; SHK_FOREVER: no limit), watching w->cancel.
 * 0 (woken, changed, or time is up) or EINTR. */
static int sleep_on(struct shk_wait *w, uint64_t until)
{
    struct timespec ts;
    uint64_t now = shk_now_ns();
    switch (w->on.kind) {
    case SHK_WAITON_FUTEX:
        if (until > (uint64_t)1 << 62) /* "never": keep the timespec in range */
            until = (uint64_t)1 << 62;
        if (w->cancel) {
            if (now - w->t0 >= CANCEL_PLAIN_NS) {
                ns_to_timespec(until, &ts);
                int r = futex_wait_or_cancel(w->on.word, w->on.value, w->cancel, &ts);
                if (r != ENOSYS)
                    return r;
            }
            /* a short sleep on the word alone: say so, then look at the cancel word (a
             * cancel that lands after this look and before the sleep is seen at the
             * bound, CANCEL_PLAIN_NS at most; shk_wait_cancel_wake wakes the word) */
            if (until > now + CANCEL_PLAIN_NS)
                until = now + CANCEL_PLAIN_NS;
            shk_store_seq_cst(&w->sleeping_on, w->on.word);
            int r = cancelled(w) ? 0 : EAGAIN;
            if (r == EAGAIN) {
                ns_to_timespec(until, &ts);
                r = shk_futex_wait(w->on.word, w->on.value, &ts) == EINTR ? EINTR : 0;
            }
            shk_store_relaxed(&w->sleeping_on, NULL);
            return r;
        }
        ns_to_timespec(until, &ts);
        return shk_futex_wait(w->on.word, w->on.value, &ts) == EINTR ? EINTR : 0;
    case SHK_WAITON_OFD:
        if (until == SHK_FOREVER) {
            /* no time limit: let the kernel queue us for the lock (interruptible) */
            int r = shk_ofd_lock(w->on.fd, w->on.offset, w->on.lock_type, 1);
            return r == EINTR ? EINTR : 0;
        }
        /* OFD locks have no timed wait: poll, backing off from 1 ms to 50 ms */
        {
            uint64_t gap = w->t0 && now > w->t0 ? (now - w->t0) / 4 : 0;
            gap = gap < 1000000u ? 1000000u : gap > 50000000u ? 50000000u : gap;
            if (now + gap < until)
                until = now + gap;
        }
        break;
    default:
        break;
    }
    if (until > (uint64_t)1 << 62)
        until = (uint64_t)1 << 62;
    ns_to_timespec(until, &ts);
    if (w->cancel) /* sleep on the cancel word itself (private; 0 while not cancelled) */
        return private_futex_wait((uint32_t *)w->cancel, 0, &ts);
    int r = clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
    return r == EINTR ? EINTR : 0;
}

/* ---- the driver ----------------------------------------------------------------------------- */

__thread uint64_t shk_wait_ambient_ns __attribute__((tls_model("initial-exec")));

static int give_up(const struct shk_wait_op *op, void *obj, struct shk_wait *w, int why)
{
    shk_wait_disarm(w);
    int r = why;
    if (op->give_up) {
        /* undoing may need an internal mutex: past a deadline, it gets a short grace */
        uint64_t saved = shk_wait_ambient_ns;
        if (saved)
            shk_wait_ambient_ns = shk_now_ns() + SHK_WAIT_UNDO_GRACE_NS;
        r = op->give_up(obj, w, why);
        shk_wait_ambient_ns = saved;
    }
    shk_wait_disarm(w);
    return r;
}

int shk_wait_cancel(const struct shk_wait_op *op, void *obj, struct shk_wait *w, int why)
{
    return give_up(op, obj, w, why);
}

static int run(const struct shk_wait_op *op, void *obj, struct shk_wait *w);

int shk_wait_run(const struct shk_wait_op *op, void *obj, struct shk_wait *w)
{
    /* publish the deadline for the internal mutexes (no timeout: nothing to publish);
     * one call site, so that run() is inlined */
    uint64_t deadline = w->deadline_ns, saved = 0;
    int publish = deadline != SHK_FOREVER || (w->flags & SHK_WAIT_TRY);
    if (publish)
        saved = shk_wait_ambient_push(deadline != SHK_FOREVER
                                          ? deadline : shk_now_ns() + SHK_WAIT_TRY_GRACE_NS);
    int r = run(op, obj, w);
    if (publish)
        shk_wait_ambient_pop(saved);
    return r;
}

static int run(const struct shk_wait_op *op, void *obj, struct shk_wait *w)
{
    struct shk_spin sp = {0};
    int have_spin = 0;
    for (;;) {
        int r = op->attempt(obj, w);
        if (__builtin_expect(r == ETIMEDOUT, 0)) /* an internal mutex met the deadline */
            return give_up(op, obj, w, ETIMEDOUT);
        if (r != EAGAIN) {
            shk_wait_disarm(w);
            if (w->t0 && op->spin_of && r >= 0) {
                if (!have_spin)
                    op->spin_of(obj, &sp);
                spin_learn(&sp, w, !w->slept, shk_now_ns());
            }
            return r;
        }
        if (w->flags & SHK_WAIT_TRY) /* before the clock: a non-blocking call needs no t0 */
            return give_up(op, obj, w, EBUSY);
        uint64_t now = shk_now_ns();
        if (!w->t0)
            w->t0 = now;
        if (cancelled(w))
            return give_up(op, obj, w, ECANCELED);
        if (now >= w->deadline_ns)
            return give_up(op, obj, w, ETIMEDOUT);
        if (!(w->flags & SHK_WAIT_SPUN)) {
            w->flags |= SHK_WAIT_SPUN;
            if (op->spin_of && (w->on.kind == SHK_WAITON_FUTEX || w->on.kind == SHK_WAITON_POLL)) {
                op->spin_of(obj, &sp);
                have_spin = 1;
                uint64_t budget = spin_begin(&sp, w, now);
                if (budget) {
                    /* spin while the word holds its value (POLL: a few pauses); each
                     * change is worth an attempt, until the budget is spent.  The clock
                     * is read inside spin_on (every 32 pauses) and here only every 4th
                     * POLL round: not on the hand-off's path */
                    uint64_t end = now + budget;
                    for (uint32_t round = 1;; round++) {
                        if (w->on.kind == SHK_WAITON_FUTEX) {
                            if (!spin_on(&sp, w, end))
                                break;
                        } else {
                            for (int k = 0; k < 16; k++)
                                shk_cpu_relax();
                            if ((round & 3) == 0) {
                                if (shk_now_ns() >= end || cancelled(w))
                                    break;
                                if ((sp.policy & SHK_SPIN_PROBE) && probe_busy(&sp))
                                    break;
                            }
                        }
                        r = op->attempt(obj, w);
                        if (__builtin_expect(r != EAGAIN, 1)) {
                            uint64_t t = shk_now_ns(); /* once, for the gate and learning */
                            spin_end(&sp, t);
                            if (r == ETIMEDOUT)
                                return give_up(op, obj, w, ETIMEDOUT);
                            shk_wait_disarm(w);
                            if (r >= 0)
                                spin_learn(&sp, w, 1, t);
                            return r;
                        }
                        if (w->on.kind != SHK_WAITON_FUTEX && w->on.kind != SHK_WAITON_POLL)
                            break;
                        /* a change that did not let us through (another waiter won, a
                         * different stage): the budget still bounds the spin */
                        if ((round & 3) == 0 && (shk_now_ns() >= end || cancelled(w)))
                            break;
                    }
                    spin_end(&sp, shk_now_ns());
                }
                continue; /* look once more after the spin */
            }
        }
        if (w->flags & SHK_WAIT_NOSLEEP) {
            shk_wait_disarm(w);
            return EAGAIN;
        }
        if (!(w->flags & SHK_WAIT_ARMED)) {
            w->flags |= SHK_WAIT_ARMED; /* the next attempt registers, then we sleep */
            continue;
        }
        uint64_t until = w->deadline_ns;
        if (w->on.retry_ns < until)
            until = w->on.retry_ns;
        /* OFD locks have no timed wait: with nothing else to wake for, queue in the
         * kernel (no slices: only a signal to this thread interrupts it) rather than
         * poll for the whole wait */
        int slices = !(w->flags & SHK_WAIT_NOSIGNALS) &&
                     !(w->on.kind == SHK_WAITON_OFD && until == SHK_FOREVER);
        if (slices) {
            if (now >= w->next_return) {
                /* before the first sleep, then every recheck_ns: the caller looks at
                 * its signals (one that landed just before this sleep included) */
                w->next_return = now + shk_wait_cfg.recheck_ns;
                shk_wait_disarm(w);
                return EINTR;
            }
            if (w->next_return < until)
                until = w->next_return;
        }
        r = sleep_on(w, until);
        w->slept = 1;
        shk_wait_disarm(w);
        if (r == EINTR)
            return EINTR;
    }
}
