/*
 * waitv.h - the readiness hub: a few threads of a process wait for MANY futex words at
 * once, on behalf of waits that are not threads (asyncio coroutines).  Issue 16.
 *
 * The asyncio twins follow wait.h's ASYNC CONTRACT: the attempt runs in the event loop's
 * thread (armed: it registers as a waiter, as a thread about to sleep would); when it
 * returns EAGAIN, w.on names a futex word and the value it holds, and that pair is handed
 * to the hub with shk_hub_watch.  The hub reports the wait READY, through the wait's
 * notifier, when
 *
 *     CHANGED   the word no longer holds the value, or a FUTEX_WAKE reached the hub on it;
 *     RETRY     on.retry_ns came (a liveness check, a repair check: see below);
 *     DEADLINE  the wait's deadline came;
 *     CLOSED    shk_hub_close_group named one of the wait's keys (its handle or its
 *               segment is being closed: the waiter must not sleep on that memory);
 *     FAULT     the word could not be read by the kernel (a broken promise: see below).
 *
 * and the caller then disarms, attempts again in its own thread, and either finishes or
 * watches again.  The hub never runs an attempt and never touches a wait's memory other
 * than its futex word.
 *
 * Threads.  With futex_waitv (Linux 5.16) one thread waits on up to SHK_HUB_SLOTS
 * distinct (word, value) pairs plus a private doorbell word; waits on the same pair share
 * one slot (10,000 coroutines on 1,000 events: 1,000 slots, 8 threads).  A thread is
 * started when every thread is full; threads are never stopped while the hub lives (an
 * idle one sleeps on its doorbell).  Adding or removing a slot rings the doorbell of its
 * thread when that thread sleeps, so the thread re-reads its set; waits added to an
 * existing slot cost no system call.  Without futex_waitv (older kernels, or when forced
 * for tests) the hub falls back to one thread per slot, each in FUTEX_WAIT, up to
 * max_threads; beyond that a thread takes turns between its slots in slices of
 * SHK_HUB_SHARE_SLICE_NS (which is polling, bounded).  A fallback thread sleeping on a
 * slot whose last wait went away is kicked with a FUTEX_WAKE of every waiter of that word
 * (the other waiters see a spurious wake-up and sleep again), and re-reads its set at
 * least every SHK_HUB_FALLBACK_SLICE_NS anyway.
 *
 * Wake-ups are never lost: the kernel compares the word with the value (a change made
 * between the attempt and the hub's sleep makes futex_waitv return at once, and the hub
 * then looks at every word it watches); a FUTEX_WAKE that reaches the hub on a slot that
 * has lost its waits meanwhile is passed on (FUTEX_WAKE of one waiter of that word), so a
 * wake-up meant for "one waiter" is not swallowed by a coroutine that was cancelled.  The
 * caller passes wake-ups on too when it cancels a wait the hub may have been woken for
 * (see the binding).
 *
 * Retries.  on.retry_ns of the waits of one slot are about the object, not the waiter
 * (a holder's liveness, a repair): when a slot's earliest retry comes, ONE of its waits is
 * made READY(RETRY) and the others' retries are pushed back by retry_push_ns, so 1,000
 * coroutines waiting for one lock cost one liveness check per interval, not 1,000.
 * Waits with no word (POLL) are timers: READY(RETRY) at on.retry_ns.
 *
 * Memory.  The caller promises that the word of a watched wait stays mapped until
 * shk_hub_unwatch returns (the binding keeps the segment exported): the hub reads words
 * under its mutex, only those of slots that still have waits.  The kernel may still meet
 * an address that was unwatched and unmapped just before a thread went to sleep (EFAULT,
 * or a reused address: a spurious wake-up at worst); the thread then probes its slots and
 * reports any it cannot resolve READY(FAULT) rather than spinning.
 *
 * Notifiers.  A READY wait is appended to its notifier's ready list; the first one of a
 * batch writes the notifier's eventfd, so an event loop that watches that fd (asyncio's
 * add_reader) is woken once per batch and collects the waits with shk_hub_drain.  The hub
 * threads never run Python and never take the GIL.
 *
 * Threads of the hub block every signal (signals go to the threads that handle them).
 * After fork() the child must not use a hub or notifier of its parent (its threads do
 * not exist there): make a new one.
 */
#ifndef SHK_WAITV_H
#define SHK_WAITV_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "wait.h"

#ifdef __cplusplus
extern "C" {
#endif

#define SHK_HUB_SLOTS 127                      /* FUTEX_WAITV_MAX (128) minus the doorbell */
#define SHK_HUB_FALLBACK_SLICE_NS 1000000000ull /* fallback: longest sleep on one word */
#define SHK_HUB_SHARE_SLICE_NS 10000000ull     /* fallback, threads full: turn per word */
#define SHK_HUB_HASH 4096u                     /* buckets of the (word, value) table */

enum { SHK_HUB_AUTO = 0, SHK_HUB_WAITV = 1, SHK_HUB_FALLBACK = 2 };

/* struct shk_hub_wait.state */
enum { SHK_HUB_IDLE = 0, SHK_HUB_WATCHING = 1, SHK_HUB_READY = 2 };

/* struct shk_hub_wait.why: what made it READY (the larger wins when several apply) */
enum {
    SHK_HUB_NONE = 0,
    SHK_HUB_RETRY = 1,
    SHK_HUB_DEADLINE = 2,
    SHK_HUB_CHANGED = 3,
    SHK_HUB_FAULT = 4,
    SHK_HUB_CLOSED = 5,
};

struct shk_hub;
struct shk_hub_slot;
struct shk_hub_thread;

/* Where READY waits go: one per event loop. */
struct shk_hub_notifier {
    int efd;                         /* eventfd, written once per batch of READY waits */
    int signalled;                   /* efd written and not drained since (hub mutex) */
    struct shk_hub_wait *head, *tail; /* READY waits not drained yet (hub mutex) */
    struct shk_hub *hub;
};

/* One wait, as the hub sees it.  The caller fills the first block, then calls
 * shk_hub_watch; it owns the struct (the hub keeps a pointer until unwatch/drain). */
struct shk_hub_wait {
    uint32_t *word;                  /* futex word (shared); NULL: a timer (POLL) */
    uint32_t value;                  /* READY(CHANGED) once *word != value */
    uint64_t retry_ns;               /* absolute CLOCK_MONOTONIC; UINT64_MAX: none */
    uint64_t deadline_ns;            /* absolute CLOCK_MONOTONIC; UINT64_MAX: none */
    const void *keys[2];             /* groups for shk_hub_close_group (NULL: none) */
    struct shk_hub_notifier *notifier;
    void *owner;                     /* the caller's (the binding's object) */
    /* the hub's (read state and why under no lock only when the hub is done with it) */
    uint32_t state;                  /* SHK_HUB_IDLE, _WATCHING, _READY */
    uint32_t why;                    /* SHK_HUB_* reason, for READY */
    struct shk_hub_slot *slot;       /* WATCHING */
    struct shk_hub_wait *prev, *next; /* in the slot (WATCHING) or the notifier (READY) */
};

struct shk_hub_stats {
    uint32_t mode;                   /* SHK_HUB_WAITV or SHK_HUB_FALLBACK */
    uint32_t threads;                /* started */
    uint32_t max_threads;
    uint64_t slots;                  /* (word, value) pairs watched now (timers count 1) */
    uint64_t waits;                  /* waits watched now */
    uint64_t watches;                /* shk_hub_watch calls */
    uint64_t slots_shared;           /* watches that joined an existing slot */
    uint64_t doorbells;              /* doorbells rung (a thread had to re-read its set) */
    uint64_t sleeps;                 /* system calls the hub threads slept in */
    uint64_t ready;                  /* waits made READY */
    uint64_t retries;                /* ... of them for a retry */
    uint64_t forwarded;              /* wake-ups passed on (their slot had gone) */
    uint64_t faults;                 /* words the kernel could not read */
};

struct shk_hub {
    pthread_mutex_t mu;
    int mode;                        /* SHK_HUB_WAITV or SHK_HUB_FALLBACK */
    pid_t pid;                       /* the process the threads run in */
    uint32_t max_threads;
    uint64_t retry_push_ns;          /* see "Retries" */
    struct shk_hub_thread **threads;
    uint32_t nthreads, cap_threads;
    struct shk_hub_slot **hash;      /* SHK_HUB_HASH buckets */
    struct shk_hub_stats st;
};

/* 1 if this kernel has futex_waitv (checked once). */
int shk_hub_waitv_supported(void);

/* Set up a hub: mode SHK_HUB_AUTO (futex_waitv if the kernel has it), SHK_HUB_WAITV
 * (ENOSYS without it) or SHK_HUB_FALLBACK; max_threads 0: the default (256 with
 * futex_waitv, 64 without).  No thread starts before the first watch. */
int shk_hub_init(struct shk_hub *h, int mode, uint32_t max_threads);
/* Stop and join the threads and free everything; nothing may be watched. */
void shk_hub_destroy(struct shk_hub *h);

/* A notifier of hub h (an eventfd, non-blocking, close-on-exec). 0 or errno. */
int shk_hub_notifier_init(struct shk_hub_notifier *n, struct shk_hub *h);
/* Close it; no wait may refer to it any more. */
void shk_hub_notifier_destroy(struct shk_hub_notifier *n);
/* Take up to max READY waits off the notifier (their state becomes IDLE, why is kept),
 * after consuming its eventfd.  Returns how many. */
size_t shk_hub_drain(struct shk_hub_notifier *n, struct shk_hub_wait **out, size_t max);

/* Watch hw (state IDLE, fields of the first block set): 0, or an errno (ENOMEM, EAGAIN:
 * no thread could be started, ENOSPC: max_threads reached with futex_waitv). */
int shk_hub_watch(struct shk_hub *h, struct shk_hub_wait *hw);
/* Stop watching hw, wherever it is (a slot, a notifier's ready list); it is IDLE
 * afterwards.  Returns the state it was in. */
uint32_t shk_hub_unwatch(struct shk_hub *h, struct shk_hub_wait *hw);
/* Make READY(CLOSED) every watched wait with key among its keys; returns how many. */
unsigned shk_hub_close_group(struct shk_hub *h, const void *key);

void shk_hub_get_stats(struct shk_hub *h, struct shk_hub_stats *out);

/* ---- the event loop's spin -------------------------------------------------------------- *
 *
 * An awaited call that finds its object busy may spin briefly in the event loop's thread
 * before it goes to the hub: when the other side answers within microseconds (both sides
 * awaiting in a tight exchange), that saves two thread wake-ups and a turn of the event
 * loop each way.  The blocking calls' learnt budget (in the object's shared head) is not
 * used: it learns from sleeps (a thread's sleep ends when the wake-up comes) and would
 * grow to its 200 µs maximum from the hub's latency, and an event loop must not be held
 * that long.  Instead, per object (by the address of its word, in this process):
 *   - a spin that wins after t: budget = max(budget, 2t + 2 µs), at most max_ns;
 *   - a spin that loses: budget halved; below 1 µs, no spinning, except every 16th wait,
 *     which probes with the maximum (so a tight exchange that starts later is found).
 * A wait that spins at most costs max_ns (50 µs) of the loop; a long wait costs nothing
 * after a few losses.  shk_wait_cfg.spin_max_ns caps it too (0: no spinning at all).
 * Not thread-safe: one caller at a time (the binding holds the GIL); no atomics needed.
 */
#define SHK_LOOP_SPIN_TABLE 1024u
struct shk_loop_spin {
    uint64_t max_ns;                        /* the longest spin (set before use) */
    uint64_t spins, spins_won, spun_ns;     /* statistics */
    struct {
        const uint32_t *word;
        uint32_t budget_ns;
        uint32_t waits;
    } table[SHK_LOOP_SPIN_TABLE];           /* budgets by word (a hash; a collision forgets) */
};
/* Forget every learnt budget (they start again from max_ns / 2). */
void shk_loop_spin_reset(struct shk_loop_spin *s);
/* w->on is a futex word that has not changed yet: spin on it for the object's budget,
 * attempting op (unarmed) whenever it changes.  The attempt's result, or EAGAIN. */
int shk_loop_spin(struct shk_loop_spin *s, const struct shk_wait_op *op, void *obj,
                  struct shk_wait *w);

#ifdef __cplusplus
}
#endif
#endif
