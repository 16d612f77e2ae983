/*
 * wait.h - the one way every blocking call of the core waits.
 *
 * A blocking operation is written once, as an ATTEMPT: a function that never sleeps.
 * It either finishes (0, SHK_EOWNERDEAD, an error) or returns EAGAIN after saying, in
 * w->on, what it would sleep on:
 *
 *     FUTEX  a 32-bit word in shared memory and the value it holds now: sleep while
 *            *word == value (the kernel compares, so a change between the attempt and
 *            the sleep is never lost);
 *     OFD    an OFD byte lock (fd, offset, type) held by another open file description;
 *     POLL   nothing to watch: try again at on.retry_ns (while spinning: at once).
 *
 * and, in on.retry_ns, when it must be tried again even if nothing changes (the next
 * liveness check of a holder, a poll).  Liveness checks of holders happen inside the
 * attempt, throttled by shk_wait_liveness_due().
 *
 * Registration.  Structures that count their waiters (so that a waker makes a system
 * call only when someone sleeps) register only when w->flags has SHK_WAIT_ARMED, i.e.
 * when the caller is really going to sleep: an attempt made while spinning leaves no
 * trace.  shk_wait_on_futex() registers by adding 1 to the count (seq_cst) and records
 * it in on.count; shk_wait_disarm() takes it back.  A registration lasts exactly one
 * sleep: the driver disarms after every sleep and re-arms with the next attempt.
 *
 * Giving up.  An attempt may have made progress that must be undone if the call ends
 * without success (an RWLock writer that holds the writer word while readers drain, a
 * barrier party that has arrived).  op->give_up(obj, w, why) undoes it and returns
 * what the call returns: why is EBUSY (SHK_WAIT_TRY and not ready), ETIMEDOUT (the
 * deadline passed) or ECANCELED (the caller stops: a signal handler raised, a
 * coroutine was cancelled).  shk_wait_cancel() is the caller's way in.
 *
 * The driver, shk_wait_run(), is the same for every operation:
 *
 *     attempt -> done?                          return its result
 *             -> SHK_WAIT_TRY                   give_up(EBUSY)
 *             -> deadline passed                give_up(ETIMEDOUT)
 *             -> not spun yet (FUTEX only)      adaptive spin on the word, attempt again
 *             -> SHK_WAIT_NOSLEEP               return EAGAIN (the caller calls again)
 *             -> not armed yet                  arm, attempt again (registers)
 *             -> signal check due               disarm, return EINTR
 *             -> sleep until the word changes, the deadline, on.retry_ns or the next
 *                signal check; disarm; EINTR from the kernel returns EINTR; loop.
 *
 * Results: 0 (or the attempt's own success code, e.g. SHK_EOWNERDEAD), an error,
 * EAGAIN (SHK_WAIT_NOSLEEP only), EINTR, or what give_up returns (ETIMEDOUT, EBUSY,
 * SHK_EBROKEN...).  EINTR means only "run your signal handlers, then call again with
 * the same struct shk_wait": the call resumes where it stopped.
 *
 * Signals.  Unless SHK_WAIT_NOSIGNALS, the driver returns EINTR before its first sleep
 * and then at least every shk_wait_cfg.recheck_ns (100 ms), whatever woke it: a signal
 * that lands just before the sleep (or is delivered to another thread) is therefore seen
 * within one slice, by construction, not only when the kernel interrupts the sleep.
 * The Python binding runs every such call through one helper (shk_py_wait in
 * _binding/common.c) that checks signals at each return; it sets SHK_WAIT_NOSIGNALS
 * for threads other than the main one, which never run signal handlers.
 *
 * The one exception: an OFD lock wait without a deadline sleeps in the kernel
 * (F_OFD_SETLKW) without slices, because the kernel has no timed wait for OFD locks and
 * polling a lock held for hours (the lifecycle reaper) would burn CPU; a signal to the
 * waiting thread still interrupts it.  With a deadline, OFD waits poll (1 to 50 ms).
 *
 * Deadlines are absolute CLOCK_MONOTONIC nanoseconds (SHK_FOREVER: none), computed once
 * by the caller: retries and slices never stretch a timeout.
 *
 * Cancelling from another thread.  w->cancel (NULL: none) names a word private to this
 * process: once it is non-zero the call ends with give_up(ECANCELED) (after the attempt in
 * progress: an attempt that succeeded still returns its success).  The driver never sleeps
 * without watching it: after its first 10 ms a FUTEX sleep waits on the object's word and
 * the cancel word at once (futex_waitv: the kernel compares both, so a cancel between the
 * attempt and the sleep is never lost); before, it sleeps on the object's word alone (a
 * hand-off costs ~0.7 us less than through futex_waitv) in sleeps of at most 10 ms, after
 * publishing the word in w->sleeping_on; a POLL or timed OFD sleep waits on the cancel
 * word itself.  shk_wait_cancel_wake() sets it and wakes the sleeper (the cancel word, and
 * the word in sleeping_on): at once, or for a cancel landing in the nanoseconds between
 * a short sleep's last look and its sleep, within 10 ms.  This is how closing a handle or
 * a zone ends the waits other threads have in progress on it (ClosedError).  Without
 * futex_waitv (Linux < 5.16) FUTEX sleeps last at most 10 ms while a cancel word is given.
 * An OFD wait without a deadline (sleeping in the kernel's F_OFD_SETLKW) is not
 * cancellable: such waits happen only while an object is being opened.
 *
 * ASYNC CONTRACT (what asyncio twins build on; no thread per waiter):
 *   1. w = SHK_WAIT_INIT(deadline); w.flags |= SHK_WAIT_ARMED | SHK_WAIT_NOSIGNALS;
 *   2. r = op->attempt(obj, &w) in the event loop's thread.  r != EAGAIN: done (the
 *      registration, if any, is already undone).
 *   3. EAGAIN: w.on says what to wait for (FUTEX: word + value, to be waited on with
 *      futex_waitv together with many others; OFD and POLL: by a timer / a thread), and
 *      w.on.retry_ns when to try again regardless; the deadline is the caller's.
 *   4. When the word changed, on.retry_ns or the deadline came: shk_wait_disarm(&w);
 *      if the deadline passed, r = shk_wait_cancel(op, obj, &w, ETIMEDOUT); else go
 *      to 2.
 *   5. Cancelled: shk_wait_cancel(op, obj, &w, ECANCELED) unregisters and undoes any
 *      partial progress; nothing was taken that is not given back.
 *   The attempt runs in one thread at a time per struct shk_wait; different waits on
 *   one object may run concurrently in any threads and processes.
 *
 * How the queue adopted it (queue.c, "waiting"): its attempts are looks, not operations
 * (a get or a put uses the handle's member slot, which one thread at a time may touch,
 * while attempts run in any thread), so shk_queue_wait_op says "the call may succeed now"
 * and the caller then makes it, waiting again if another process got there first;
 * reserving uses no slot and its attempt reserves.  EAGAIN names data_seq / space_seq,
 * registered in the queue's waiter counts only when armed, retry_ns = the next
 * stuck-repair check; while spinning it watches the tail's low word or polls; its spin is
 * spin_of (the handle's budget, SHK_SPIN_PROBE).
 *
 * How the robust mutexes adopted it (mutex.c): shk_mutex_op's attempt is
 * pthread_mutex_trylock, after a check of the mutex's kind word (a corrupted one makes
 * glibc abort); its word is the kernel's robust futex word with glibc's FUTEX_WAITERS
 * protocol; an armed attempt checks the owner's liveness (word & FUTEX_TID_MASK: an owner
 * that does not exist is marked dead as the kernel would), with retry_ns at the next
 * check.  The dict shard lock waits through it (shk_dict_shard_op, shk_py_wait, with
 * slices); shk_mutex_lock, for callers that take no EINTR, asks shk_wait_interrupted.
 * shk_mutex_lock tries once (checked trylock) before setting up a wait: the driver's first
 * attempt would make the same call, and uncontended internal mutexes are the common case.
 */
#ifndef SHK_WAIT_H
#define SHK_WAIT_H

#include <stdint.h>
#include <time.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SHK_FOREVER UINT64_MAX

/* struct shk_wait.flags: the first three are the caller's choice */
#define SHK_WAIT_TRY 0x1         /* one attempt, no spin, no sleep (blocking=False) */
#define SHK_WAIT_NOSLEEP 0x2     /* spin if allowed, then return EAGAIN instead of sleeping */
#define SHK_WAIT_NOSPIN 0x4      /* never spin */
#define SHK_WAIT_NOSIGNALS 0x8   /* no periodic EINTR returns (nobody runs signal handlers) */
#define SHK_WAIT_ARMED 0x10      /* the caller will sleep: attempts register as waiters */
#define SHK_WAIT_SPUN 0x20       /* the spin phase is over (driver state); an attempt that
                                    moves to a new stage (an RWLock writer that got the
                                    writer word and now waits for readers) may clear it to
                                    earn that stage a spin of its own */

/* struct shk_waiton.kind */
enum { SHK_WAITON_NONE = 0, SHK_WAITON_FUTEX = 1, SHK_WAITON_OFD = 2, SHK_WAITON_POLL = 3 };

struct shk_waiton {
    uint32_t kind;
    uint32_t value;           /* FUTEX: sleep while *word == value */
    uint32_t *word;           /* FUTEX: a shared (not PRIVATE) futex word */
    uint32_t *count;          /* the waiter count this call is registered in (NULL: none) */
    uint64_t retry_ns;        /* try again by then whatever happens; SHK_FOREVER: no need */
    int fd, lock_type;        /* OFD: F_RDLCK or F_WRLCK on byte `offset` of fd */
    uint64_t offset;
};

struct shk_wait {
    uint64_t deadline_ns;     /* absolute CLOCK_MONOTONIC; SHK_FOREVER: none */
    uint32_t flags;           /* SHK_WAIT_* */
    /* the call's state: start from SHK_WAIT_INIT, then leave alone between calls */
    uint32_t phase;           /* per operation (0: nothing done yet) */
    uint32_t observed;        /* per operation (a value seen at the start, an index) */
    uint32_t aux;             /* per operation (a generation, "the holder died") */
    uint64_t t0;              /* when the call first found it had to wait (0: not yet) */
    uint64_t next_live;       /* next liveness check due (see shk_wait_liveness_due) */
    uint64_t live_step;       /* gap to the next one: 1 ms, doubling to liveness_ns */
    uint64_t next_return;     /* next EINTR return for signals (0: before the first sleep) */
    int slept;                /* this call has slept at least once */
    const uint32_t *cancel;   /* a word private to this process (NULL: none): non-zero ends
                                 the call with give_up(ECANCELED); see "Cancelling" */
    uint32_t *sleeping_on;    /* the driver's: the word of a short cancellable sleep */
    struct shk_waiton on;     /* filled by an attempt that returned EAGAIN */
};

#define SHK_WAIT_INIT(deadline, fl) \
    ((struct shk_wait){.deadline_ns = (deadline), .flags = (fl)})

/* Adaptive spinning of one object: where its learnt budget lives and how it learns. */
#define SHK_SPIN_GATE 0x1         /* on <= 2 CPUs one spinner per object (gate_ms), none on 1 */
#define SHK_SPIN_LEARN_SLEEPS 0x2 /* a wait that slept but ended within the maximum grows
                                     the budget (else only a spin that won grows it, and
                                     every sleep halves it) */
#define SHK_SPIN_YIELD 0x4        /* offer the CPU (sched_yield) every ~1000 pauses */
#define SHK_SPIN_PROBE 0x8        /* offer the CPU every 64 pauses; a yield that gives it away
                                     (more runnable threads than CPUs: our spin only delays
                                     the one we wait for) ends the spin and sets *busy to
                                     SHK_SPIN_BUSY_WAITS, the waits that skip spinning */
#define SHK_SPIN_BUSY_WAITS 64u
#define SHK_SPIN_KEEP_WON 0x10    /* with LEARN_SLEEPS: a spin that won never shrinks the
                                     budget (a queue's hand-offs: the budget shrunk to ~2x a
                                     typical hand-off makes every slower one sleep) */
struct shk_spin {
    uint32_t *budget_ns;      /* the learnt budget (UINT32_MAX: unset, start at max/4) */
    uint32_t *gate_ms;        /* SHK_SPIN_GATE: CLOCK_MONOTONIC ms until which someone
                                 spins (a deadline, so a spinner killed meanwhile does not
                                 keep it closed) */
    uint32_t *busy;           /* SHK_SPIN_PROBE: where the probe reports a busy machine (the
                                 object's spin_of counts it down and spins no more until 0) */
    uint64_t max_ns;          /* upper bound (0: never spin) */
    uint32_t policy;          /* SHK_SPIN_* */
};

struct shk_wait_op {
    const char *name;
    /* one attempt, never sleeping: see above */
    int (*attempt)(void *obj, struct shk_wait *w);
    /* undo partial progress and say what the call returns (NULL: nothing to undo) */
    int (*give_up)(void *obj, struct shk_wait *w, int why);
    /* the object's spin (NULL: never spin) */
    void (*spin_of)(void *obj, struct shk_spin *out);
};

/* Process-wide tuning.  Defaults: spin up to 200 µs, check a holder's liveness every
 * 10 ms at most, return for signals every 100 ms.  SHMKIT_SPIN_NS and
 * SHMKIT_LIVENESS_NS override them (shk_wait_config_load_env). */
struct shk_wait_config {
    uint64_t spin_max_ns;     /* upper bound of the adaptive spin; 0: never spin */
    uint64_t liveness_ns;     /* longest gap between liveness checks of a holder */
    uint64_t recheck_ns;      /* longest sleep before an EINTR return for signals */
};
extern struct shk_wait_config shk_wait_cfg;
void shk_wait_config_load_env(void);

/* Asked by the waits that take no EINTR returns (shk_mutex_lock: the short internal
 * mutexes of zones, boards, semaphores, barriers and queue repairs) once they have waited
 * recheck_ns, then every slice: non-zero ends the wait with EINTR.  NULL: nobody to ask.
 * The Python binding answers by running the signal handlers (Ctrl-C). */
extern int (*shk_wait_interrupted)(void);

/* Run op to completion (see above). */
int shk_wait_run(const struct shk_wait_op *op, void *obj, struct shk_wait *w);

/*
 * The deadline of the wait in progress in this thread (absolute CLOCK_MONOTONIC ns; 0:
 * none), for the internal mutexes its attempts take (issue 13 #6).  Those are taken with
 * shk_mutex_lock(m, NULL): held for microseconds, so they have no timeout of their own;
 * but a lock word corrupted to name a live thread that never unlocks would keep them
 * waiting forever, even inside a call that has a timeout.  So shk_wait_run publishes its
 * deadline here around the attempts (only when it has one: calls without a timeout pay one
 * compare; a non-blocking call, SHK_WAIT_TRY, gets SHK_WAIT_TRY_GRACE_NS), and
 * shk_mutex_lock(m, NULL) waits until it at most, then fails with ETIMEDOUT having taken
 * nothing.  An attempt that returns ETIMEDOUT is treated as the deadline passing: the
 * driver calls give_up(ETIMEDOUT), so partial progress is undone as after any timeout.
 * give_up itself runs with SHK_WAIT_UNDO_GRACE_NS more (undoing may need the mutex the
 * deadline just cut short).  Nested waits keep the earlier deadline; each run restores the
 * value it found.  Entries that wait outside shk_wait_run with a deadline set it
 * themselves with shk_wait_ambient_push / shk_wait_ambient_pop.
 */
#define SHK_WAIT_TRY_GRACE_NS 100000000ull  /* 100 ms */
#define SHK_WAIT_UNDO_GRACE_NS 200000000ull /* 200 ms */
extern __thread uint64_t shk_wait_ambient_ns __attribute__((tls_model("initial-exec")));
/* set deadline_ns (SHK_FOREVER: nothing) unless an earlier one is in force; returns what
 * to give shk_wait_ambient_pop */
static inline uint64_t shk_wait_ambient_push(uint64_t deadline_ns)
{
    uint64_t saved = shk_wait_ambient_ns;
    if (deadline_ns != SHK_FOREVER && (saved == 0 || deadline_ns < saved))
        shk_wait_ambient_ns = deadline_ns ? deadline_ns : 1;
    return saved;
}
static inline void shk_wait_ambient_pop(uint64_t saved)
{
    shk_wait_ambient_ns = saved;
}

/* The caller gives up: unregister, undo partial progress (why: ECANCELED, ETIMEDOUT).
 * Returns what the call returns. */
int shk_wait_cancel(const struct shk_wait_op *op, void *obj, struct shk_wait *w, int why);

/* Cancel the wait w (it has a w->cancel word), from any thread of this process while the
 * wait is in progress: set its cancel word and wake its sleep. */
void shk_wait_cancel_wake(struct shk_wait *w);

/* Take back a registration made by an armed attempt (idempotent). */
void shk_wait_disarm(struct shk_wait *w);

/* For attempts: wait on (word, value); registers in *count when armed (count may be
 * NULL).  Resets on.retry_ns to SHK_FOREVER. */
void shk_wait_on_futex(struct shk_wait *w, uint32_t *word, uint32_t value, uint32_t *count);
/* For attempts: wait to get an OFD byte lock (or nothing at all: POLL, fd < 0). */
void shk_wait_on_ofd(struct shk_wait *w, int fd, uint64_t offset, int lock_type);
void shk_wait_on_poll(struct shk_wait *w, uint64_t retry_ns);
/* For attempts: be tried again by t at the latest. */
static inline void shk_wait_retry_by(struct shk_wait *w, uint64_t t)
{
    if (t < w->on.retry_ns)
        w->on.retry_ns = t;
}
/* For attempts: is a liveness check due now?  The first comes at once, the next after 1,
 * 2, 4 ... ms up to liveness_ns (a holder killed just before we started waiting is
 * usually torn down within a millisecond or two, and a long wait costs one /proc read
 * per interval).  When it says yes it schedules the next one. */
int shk_wait_liveness_due(struct shk_wait *w, uint64_t now);

/* Has the deadline passed? */
int shk_wait_expired(const struct shk_wait *w);

/* deadline in ns from a timespec (NULL: SHK_FOREVER) and back */
uint64_t shk_wait_deadline(const struct timespec *deadline);

/* Number of online CPUs (cached). */
int shk_ncpu(void);

#ifdef __cplusplus
}
#endif
#endif
