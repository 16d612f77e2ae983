/*
 * sync.h - synchronisation objects that survive crashed processes.
 *
 * Lock, RLock, RWLock, Semaphore (optionally bounded, optionally with SEM_UNDO-like
 * give-back), Event, Condition, Barrier, and the headers of Value/Array and Counter.
 * Their bytes are specified in layout.h ("Synchronisation objects").
 *
 * Waiting.  Every blocking call takes a struct shk_wait: one absolute CLOCK_MONOTONIC
 * deadline (NULL: forever) and some state carried between calls.  A blocking call goes
 * through three phases: one attempt; an adaptive spin (bounded by shk_sync_cfg.spin_max_ns,
 * learnt per object, and on machines with 2 CPUs or fewer allowed to one spinner per
 * object at a time); then sleeping on a futex word in slices.  Waiters register before
 * sleeping and wakers make a system call only when someone is registered, so the
 * uncontended steady state makes no system call.
 *
 * A blocking call returns EINTR when a signal interrupted it *and* once before its first
 * sleep and every shk_sync_cfg.recheck_ns while sleeping: the caller (the Python binding)
 * then runs its signal handlers and calls again with the same struct shk_wait, which
 * resumes where it stopped.  With SHK_WAIT_NOSLEEP a call returns EAGAIN instead of
 * sleeping (the binding spins with the GIL held, then sleeps without it).
 *
 * Liveness.  Holders are recorded as identities (pid or thread id + start time, see
 * layout.h); a sleeping waiter checks every shk_sync_cfg.liveness_ns that the holder is
 * alive, and takes over (or reclaims) a dead holder's share.  No helper thread, no
 * bare pid.
 *
 * Return values follow errors.h: 0, an errno (EBUSY: not available and not blocking;
 * ETIMEDOUT; EINTR; EAGAIN: would sleep) or SHK_E* (SHK_EOWNERDEAD: acquired, and the
 * previous holder had died holding it; SHK_ENOTOWNER; SHK_EBROKEN; SHK_ECORRUPT).
 */
#ifndef SHK_SYNC_H
#define SHK_SYNC_H

#include <stdint.h>
#include <time.h>

#include "layout.h"
#include "zone.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Process-wide tuning.  Defaults: spin up to 200 µs, check a holder's liveness every
 * 10 ms, return to the caller every 100 ms while sleeping.  Environment variables
 * SHMKIT_SPIN_NS and SHMKIT_LIVENESS_NS override them when the first object is used. */
struct shk_sync_config {
    uint64_t spin_max_ns;       /* upper bound of the adaptive spin; 0: never spin */
    uint64_t liveness_ns;       /* how often a waiter checks that the holder lives */
    uint64_t recheck_ns;        /* how often a sleeping call returns EINTR */
};
extern struct shk_sync_config shk_sync_cfg;
void shk_sync_config_load_env(void);

/* --- identities --------------------------------------------------------------------- */

/* This process: (pid, start time) as a union shk_ident value. Cached; reset by fork.
 * Inline: it is on the fast path of every acquire and release. */
extern uint64_t shk_sync_self_proc_cache;
uint64_t shk_sync_self_proc_slow(void);
static inline uint64_t shk_sync_self_proc(void)
{
    uint64_t v = shk_sync_self_proc_cache;
    return __builtin_expect(v != 0, 1) ? v : shk_sync_self_proc_slow();
}
/* This thread: (kernel tid, thread start time). Cached per thread; reset by fork. */
uint64_t shk_sync_self_thread(void);
/* 1 if the holder named by ident (flags ignored) is alive, 0 if it is gone. */
int shk_sync_ident_alive(uint64_t ident);
/* The id (pid or tid) of an identity. */
static inline uint32_t shk_ident_id(uint64_t ident)
{
    union shk_ident u;
    u.all = ident;
    return u.f.word & SHK_ID_MASK;
}
/* Same holder (flags ignored). */
static inline int shk_ident_same(uint64_t a, uint64_t b)
{
    union shk_ident x, y;
    x.all = a;
    y.all = b;
    return ((x.f.word ^ y.f.word) & SHK_ID_MASK) == 0 && x.f.start == y.f.start;
}

/* --- waiting ---------------------------------------------------------------------------- */

#define SHK_WAIT_TRY 0x1        /* one attempt only (blocking=False) */
#define SHK_WAIT_NOSLEEP 0x2    /* spin, then return EAGAIN instead of sleeping */
#define SHK_WAIT_NOSPIN 0x4     /* skip the spin */

struct shk_wait {
    const struct timespec *deadline; /* absolute CLOCK_MONOTONIC; NULL: forever */
    uint32_t flags;                  /* SHK_WAIT_* */
    /* state kept between calls: zero-initialise, then leave alone */
    uint32_t phase;
    uint32_t observed;               /* futex value a call is waiting to change */
    uint32_t aux;                    /* per call (barrier generation, ...) */
    uint64_t t0;                     /* when the wait began */
    uint64_t next_live;              /* next liveness check (CLOCK_MONOTONIC ns) */
    uint64_t next_return;            /* next return with EINTR */
    uint64_t live_step;              /* gap to the next liveness check: starts at 1 ms,
                                        doubles up to shk_sync_cfg.liveness_ns */
    int spun, slept;
};

/* --- objects ---------------------------------------------------------------------------- */

struct shk_sync_params {
    uint32_t type;              /* SHK_OBJ_LOCK, ... */
    uint32_t flags;             /* SHK_SYNCF_* */
    uint64_t a, b;              /* Semaphore: value, undo slots; RWLock: reader slots;
                                   Barrier: parties; Counter: initial value (int64);
                                   Value/Array: element size, length */
    const char *text;           /* Condition: external lock name (NULL: own RLock);
                                   Value/Array: type name */
    uint32_t text_type;         /* Condition: SHK_OBJ_LOCK or SHK_OBJ_RLOCK */
    const void *data;           /* Value/Array: initial bytes (may be NULL) */
    uint64_t data_len;
};

/* Bytes an object with these parameters takes (0 and a detail if they are invalid). */
uint64_t shk_sync_size(const struct shk_sync_params *p);

/* Find the object `name` of p->type, or create it (flags: SHK_O_CREATE, SHK_O_EXCL)
 * initialised from p.  *off gets its offset. */
int shk_sync_open(struct shk_zone *z, const char *name, const struct shk_sync_params *p,
                  int flags, uint64_t *off, int *created);

/* Validate the object of `type` at off (bounds, magic, type, sizes) and return a pointer
 * to it, or NULL with SHK_ECORRUPT in *err. */
void *shk_sync_ptr(struct shk_zone *z, uint64_t off, uint32_t type, int *err);

/* --- Lock and RLock (recursive != 0) ------------------------------------------------ */

int shk_lock_acquire(struct shk_lock_sh *l, int recursive, struct shk_wait *w);
int shk_lock_release(struct shk_lock_sh *l, int recursive);
/* RLock: release every level held by this thread; *count gets how many (Condition). */
int shk_rlock_release_all(struct shk_lock_sh *l, uint32_t *count);
/* Held by the caller: Lock by this process, RLock by this thread. */
int shk_lock_is_mine(struct shk_lock_sh *l, int recursive);

/* --- Event ------------------------------------------------------------------------------ */

void shk_event_set(struct shk_event_sh *e);
void shk_event_clear(struct shk_event_sh *e);
/* 0 when set (or set while waiting), ETIMEDOUT, EINTR, EAGAIN (NOSLEEP). */
int shk_event_wait(struct shk_event_sh *e, struct shk_wait *w);

/* --- Semaphore -------------------------------------------------------------------------- */

int shk_sem_acquire(struct shk_sem_sh *s, struct shk_wait *w);
/* SHK_ETOOBIG: a BoundedSemaphore would go above its initial value. */
int shk_sem_release(struct shk_sem_sh *s, uint32_t n);
/* Give back the units of dead processes (undo semaphores). Returns units given back. */
uint32_t shk_sem_reclaim(struct shk_sem_sh *s);
/* Units this process holds (undo semaphores). */
uint32_t shk_sem_held(struct shk_sem_sh *s);

/* --- RWLock ------------------------------------------------------------------------------ */

/* *slot caches this process's reader slot between calls (start with UINT32_MAX). */
int shk_rw_acquire_read(struct shk_rwlock_sh *rw, uint32_t *slot, struct shk_wait *w);
int shk_rw_release_read(struct shk_rwlock_sh *rw, uint32_t *slot);
int shk_rw_acquire_write(struct shk_rwlock_sh *rw, struct shk_wait *w);
int shk_rw_release_write(struct shk_rwlock_sh *rw);
/* Give up a write acquisition interrupted while waiting for the readers to leave
 * (w->phase >= 3): the writer word is released again. */
void shk_rw_cancel_write(struct shk_rwlock_sh *rw, struct shk_wait *w);
/* Read holds of all live readers (dead ones not reclaimed yet are counted too). */
uint32_t shk_rw_readers(struct shk_rwlock_sh *rw, uint32_t *processes);

/* --- Condition --------------------------------------------------------------------------- */

/* Call with the lock held: registers the caller and returns the sequence to wait on. */
uint32_t shk_cond_prepare(struct shk_cond_sh *c);
/* Wait (lock released by the caller) until notified: 0, ETIMEDOUT, EINTR. */
int shk_cond_wait(struct shk_cond_sh *c, uint32_t seq, struct shk_wait *w);
/* After the wait, whatever its outcome. */
void shk_cond_finish(struct shk_cond_sh *c);
/* Wake up to n waiters (with the lock held). Returns the number woken in the kernel. */
int shk_cond_notify(struct shk_cond_sh *c, int n);

/* --- Barrier ------------------------------------------------------------------------------ */

/* Arrive and wait.  On 0, *index is the arrival index; *last = 1 for the last party, which
 * is not released yet: it runs the action, then calls shk_barrier_complete (or
 * shk_barrier_abort).  SHK_EBROKEN when the barrier is or becomes broken (a wait that
 * times out breaks it and returns SHK_EBROKEN too, with detail saying so). */
int shk_barrier_wait(struct shk_barrier_sh *b, struct shk_wait *w, uint32_t *index, int *last);
int shk_barrier_complete(struct shk_barrier_sh *b, uint32_t gen);
void shk_barrier_abort(struct shk_barrier_sh *b);
void shk_barrier_reset(struct shk_barrier_sh *b);

#ifdef __cplusplus
}
#endif
#endif
