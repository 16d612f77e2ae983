/*
 * sync.h - synchronisation objects that survive crashed processes.
 *
 * Lock, RLock, RWLock, Semaphore (optionally bounded, optionally with SEM_UNDO-like
 * give-back), Event, Condition, Barrier, and the headers of Value/Array and Counter.
 * Their bytes are specified in layout.h ("Synchronisation objects").
 *
 * Waiting.  Every blocking call is an attempt run by the one driver of wait.h: the
 * shk_*_op below are the operations (the binding runs them with shk_py_wait), and the
 * shk_*_acquire/wait functions run them to completion in C (EINTR: call again with the
 * same struct shk_wait).  The spin is adaptive, learnt per object in its shared head
 * (shk_sync_head.spin_ns) and on machines with 2 CPUs or fewer allowed to one spinner
 * per object at a time.  Waiters register (a count, or the WAITERS bit of an owner word)
 * only when they are about to sleep, and wakers make a system call only when someone is
 * registered, so the uncontended steady state makes no system call.
 *
 * Liveness.  Holders are recorded as identities (pid or thread id + start time, see
 * layout.h); a sleeping waiter checks every shk_sync_cfg.liveness_ns that the holder is
 * alive (in the attempt, when shk_wait_liveness_due says so), and takes over (or
 * reclaims) a dead holder's share.  No helper thread, no
 * bare pid.
 *
 * Return values follow errors.h and wait.h: 0, an errno (EBUSY: not available and
 * SHK_WAIT_TRY; ETIMEDOUT; EINTR; EAGAIN: would sleep, SHK_WAIT_NOSLEEP) or SHK_E* (SHK_EOWNERDEAD: acquired, and the
 * previous holder had died holding it; SHK_ENOTOWNER; SHK_EBROKEN; SHK_ECORRUPT).
 */
#ifndef SHK_SYNC_H
#define SHK_SYNC_H

#include <errno.h>
#include <stdint.h>
#include <time.h>

#include "atomics.h"
#include "fields.h"
#include "layout.h"
#include "wait.h"
#include "zone.h"

#ifdef __cplusplus
extern "C" {
#endif

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

/* Set the process-wide wait tuning, shk_wait_cfg (a value < 0 keeps its setting).  A
 * liveness interval under 100 us or a recheck interval under 1 ms would have waiters read
 * /proc or wake up all the time: EINVAL with a detail, and nothing changes. */
int shk_sync_configure(int64_t spin_max_ns, int64_t liveness_ns, int64_t recheck_ns);

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

/* The count that sizes an object of `type` (RWLock and undo Semaphore slots, Barrier
 * parties; 0 for the others).  Loops run over the count found when a handle was made,
 * so a count overwritten later is caught (compare), not followed. */
uint32_t shk_sync_extent(const void *obj, uint32_t type);

/* --- statistics ------------------------------------------------------------------------ */

/* A snapshot of a sync object's shared fields as its statistics show them, filled by
 * shk_sync_stats; the tables in sync.c name each field (core/fields.h).  Read without
 * the object's lock: each field is a hint that may change at once. */
struct shk_lock_stats {
    int32_t owner_pid;        /* holding process (RLock: of the holding thread); 0 = free */
    int32_t owner_tid;        /* RLock: holding thread; 0 for a Lock */
    uint32_t count;           /* levels held (a Lock: 1 when held) */
    uint32_t waiters;
    uint64_t acquisitions, contentions, owner_deaths, last_death_ns;
    int32_t last_dead_pid;
    uint32_t spin_ns;
    int owner_alive;          /* the holder is alive: -1 when free */
};
struct shk_sem_stats {
    uint32_t value, initial;
    int bounded, undo;
    uint32_t waiters, slots;
    uint64_t acquisitions, contentions, reclaimed, dead_owners;
    uint32_t holders;         /* processes holding units (undo) */
    uint32_t held_here;       /* units this process holds (undo) */
};
struct shk_event_stats {
    int is_set;
    uint32_t waiters;
    uint64_t sets, waits;
    uint32_t spin_ns;
};
struct shk_rwlock_stats {
    int32_t writer_pid;
    uint32_t readers;         /* read holds of all processes */
    uint32_t reader_processes, waiters, max_readers;
    uint64_t read_acquisitions, write_acquisitions, contentions, owner_deaths,
        reader_deaths;
    uint32_t held_here;       /* read holds of this process */
};
struct shk_cond_stats {
    uint32_t waiters;
    uint64_t notifies, waits;
    uint32_t lock_type;       /* SHK_OBJ_LOCK or SHK_OBJ_RLOCK */
    uint32_t lock_offset;     /* of the embedded RLock in the object */
    char lock_name[SHK_OBJ_NAME_MAX + 1]; /* the named lock's (NUL-terminated; may be
                                              anything if corrupted: not a field) */
};
struct shk_barrier_stats {
    uint32_t parties;
    uint32_t n_waiting;       /* 0 while broken */
    int broken;
    uint32_t waiters;
    uint64_t passed, breaks;
    uint32_t generation;
};
union shk_sync_stats {
    struct shk_lock_stats lock;
    struct shk_sem_stats sem;
    struct shk_event_stats event;
    struct shk_rwlock_stats rw;
    struct shk_cond_stats cond;
    struct shk_barrier_stats barrier;
};

/* Fill out with the statistics of obj, of `type` (slot: the caller's cached RWLock reader
 * slot, for held_here) and return the table of out's fields by name; NULL for a type
 * without statistics (Counter, Value).  Loops run over the extent the caller validated. */
const struct shk_field *shk_sync_stats(void *obj, uint32_t type, uint32_t slot,
                                       union shk_sync_stats *out);

/* --- Counter: a shared int64; arithmetic wraps modulo 2**64, never traps --------------- */

static inline int64_t shk_counter_add(struct shk_counter_sh *c, int64_t n)
{
    return (int64_t)shk_add_fetch_seq_cst((uint64_t *)&c->value, (uint64_t)n);
}
static inline int64_t shk_counter_get(struct shk_counter_sh *c)
{
    return shk_load_seq_cst(&c->value);
}
static inline void shk_counter_set(struct shk_counter_sh *c, int64_t v)
{
    shk_store_seq_cst(&c->value, v);
}
static inline int64_t shk_counter_exchange(struct shk_counter_sh *c, int64_t v)
{
    return shk_exchange_seq_cst(&c->value, v);
}
/* Store desired if the value is expected; 1 when it did. */
static inline int shk_counter_cas(struct shk_counter_sh *c, int64_t expected, int64_t desired)
{
    return shk_cas_seq_cst(&c->value, &expected, desired);
}

/* --- Lock and RLock (recursive != 0) ------------------------------------------------ */

/* The uncontended acquire, inlined into callers (the binding's `with lock:`): one CAS.
 * 0 when acquired (an RLock of this thread: one level more), EBUSY otherwise: then run
 * shk_lock_op, which starts with this same attempt. */
static inline int shk_lock_try_fast(struct shk_lock_sh *l, int recursive)
{
    uint64_t me = recursive ? shk_sync_self_thread() : shk_sync_self_proc();
    uint64_t exp = 0;
    if (__builtin_expect(shk_cas_seq_cst_fail_relaxed(&l->owner.all, &exp, me), 1)) {
        if (recursive) {
            l->count = 1;
            l->owner_pid = (int32_t)shk_ident_id(shk_sync_self_proc());
        }
        shk_single_writer_inc(&l->acquisitions);
        return 0;
    }
    if (recursive && shk_ident_same(exp, me) && l->count < UINT32_MAX) {
        l->count++; /* this thread holds it already */
        shk_single_writer_inc(&l->acquisitions);
        return 0;
    }
    return EBUSY;
}

/* The common release of a Lock, inlined: held by this process, nobody asleep.  0 when
 * released, EAGAIN otherwise: then call shk_lock_release. */
static inline int shk_lock_release_fast(struct shk_lock_sh *l)
{
    uint64_t me = shk_sync_self_proc();
    uint64_t exp = me;
    if (shk_load_relaxed(&l->owner.all) == me && shk_cas_seq_cst_fail_relaxed(&l->owner.all, &exp, 0))
        return 0;
    return EAGAIN;
}

/* Held by anyone (a hint: it may change at once). */
static inline int shk_lock_locked(struct shk_lock_sh *l)
{
    return (shk_load_relaxed(&l->owner.f.word) & SHK_ID_MASK) != 0;
}

extern const struct shk_wait_op shk_lock_op, shk_rlock_op; /* obj: struct shk_lock_sh */
int shk_lock_acquire(struct shk_lock_sh *l, int recursive, struct shk_wait *w);
int shk_lock_release(struct shk_lock_sh *l, int recursive);
/* RLock: release every level held by this thread; *count gets how many (Condition). */
int shk_rlock_release_all(struct shk_lock_sh *l, uint32_t *count);
/* Release completely, a Lock or every level of an RLock (recursive): *count gets the
 * levels released (1 for a Lock), for shk_rlock_restore after taking it again. */
int shk_lock_release_all(struct shk_lock_sh *l, int recursive, uint32_t *count);
/* After re-acquiring an RLock released with shk_rlock_release_all: its depth again. */
void shk_rlock_restore(struct shk_lock_sh *l, uint32_t count);
/* Held by the caller: Lock by this process, RLock by this thread. */
int shk_lock_is_mine(struct shk_lock_sh *l, int recursive);
/* Levels the caller holds (0 when not held; 1 for a Lock). */
uint32_t shk_lock_owned_count(struct shk_lock_sh *l, int recursive);

/* --- Event ------------------------------------------------------------------------------ */

void shk_event_set(struct shk_event_sh *e);
static inline int shk_event_is_set(struct shk_event_sh *e)
{
    return shk_load_acquire(&e->state) & 1;
}
void shk_event_clear(struct shk_event_sh *e);
/* 0 when set (or set while waiting), ETIMEDOUT, EBUSY (TRY), EINTR, EAGAIN (NOSLEEP). */
extern const struct shk_wait_op shk_event_op; /* obj: struct shk_event_sh */
int shk_event_wait(struct shk_event_sh *e, struct shk_wait *w);

/* --- Semaphore -------------------------------------------------------------------------- */

extern const struct shk_wait_op shk_sem_op; /* obj: struct shk_sem_sh */
int shk_sem_acquire(struct shk_sem_sh *s, struct shk_wait *w);
/* One attempt for a caller that may not wait (the binding, with the GIL held): never
 * reads /proc, and an undo semaphore's mutex is waited for at most
 * SHK_WAIT_TRY_GRACE_NS (a corrupted word naming a live thread).  0 when taken; else
 * EAGAIN (none free now: counted as a contention, the caller waits with shk_sem_op) or
 * the undo mutex's error (EINTR: a signal came while waiting for it). */
int shk_sem_try_now(struct shk_sem_sh *s);
/* The most units a semaphore holds (its value, a futex word, stays a non-negative int). */
#define SHK_SEM_VALUE_MAX (UINT32_MAX >> 1)
/* Give back n units (any n: more than a semaphore can count is refused like any other
 * excess).  SHK_ETOOBIG: a BoundedSemaphore would go above its initial value ("released
 * too many times", as threading says), or the value above what it can count. */
int shk_sem_release(struct shk_sem_sh *s, uint64_t n);
/* Give back the units of dead processes (undo semaphores). Returns units given back. */
uint32_t shk_sem_reclaim(struct shk_sem_sh *s);
/* Units this process holds (undo semaphores). */
uint32_t shk_sem_held(struct shk_sem_sh *s);
/* Processes holding units (undo semaphores; 0 otherwise). */
uint32_t shk_sem_holders(struct shk_sem_sh *s);
static inline uint32_t shk_sem_value(struct shk_sem_sh *s)
{
    return shk_load_acquire(&s->value);
}

/* --- RWLock ------------------------------------------------------------------------------ */

/* A reader: the lock and this process's slot, cached between calls (start with
 * UINT32_MAX). */
struct shk_rw_reader {
    struct shk_rwlock_sh *rw;
    uint32_t slot;
};
extern const struct shk_wait_op shk_rw_read_op;  /* obj: struct shk_rw_reader */
extern const struct shk_wait_op shk_rw_write_op; /* obj: struct shk_rwlock_sh; giving up
                                                    while readers drain lets the writer
                                                    word go again */
int shk_rw_acquire_read(struct shk_rwlock_sh *rw, uint32_t *slot, struct shk_wait *w);
int shk_rw_release_read(struct shk_rwlock_sh *rw, uint32_t *slot);
int shk_rw_acquire_write(struct shk_rwlock_sh *rw, struct shk_wait *w);
int shk_rw_release_write(struct shk_rwlock_sh *rw);
/* Read holds of all live readers (dead ones not reclaimed yet are counted too). */
uint32_t shk_rw_readers(struct shk_rwlock_sh *rw, uint32_t *processes);
/* Read acquisitions over all slots; read holds of this process (slot: its cached slot). */
uint64_t shk_rw_read_acquisitions(struct shk_rwlock_sh *rw);
uint32_t shk_rw_held_here(struct shk_rwlock_sh *rw, uint32_t slot);

/* The wait operation that acquires a sync object of `type` (SHK_OBJ_*): Lock, RLock,
 * Semaphore, an RWLock's write side (write) or read side; NULL for a type without an
 * acquire.  Its obj is the shared object, except shk_rw_read_op's (a struct
 * shk_rw_reader). */
const struct shk_wait_op *shk_sync_acquire_op(uint32_t type, int write);
/* This process holds the write lock. */
int shk_rw_is_writer(struct shk_rwlock_sh *rw);

/* --- Condition --------------------------------------------------------------------------- */

/* Call with the lock held: registers the caller and returns the sequence to wait on. */
uint32_t shk_cond_prepare(struct shk_cond_sh *c);
/* Wait (lock released by the caller) until notified: 0, ETIMEDOUT, EBUSY (TRY), EINTR.
 * Through shk_cond_op: set w->observed = seq first.  A waiter that is not asleep in the
 * kernel when notify() runs (on its way there, or back from a slice) is woken too, as
 * threading allows; the binding lets only the main thread take slices (signals). */
extern const struct shk_wait_op shk_cond_op; /* obj: struct shk_cond_sh */
int shk_cond_wait(struct shk_cond_sh *c, uint32_t seq, struct shk_wait *w);
/* After the wait, whatever its outcome. */
void shk_cond_finish(struct shk_cond_sh *c);
/* Wake up to n waiters (with the lock held). Returns the number woken in the kernel. */
int shk_cond_notify(struct shk_cond_sh *c, int n);

/* Condition.wait is, in this order: with the lock l held (recursive: an RLock),
 * shk_cond_unlock registers the caller and releases the lock completely (*seq: the
 * sequence to wait on, w->observed of shk_cond_op; *count: the RLock's levels; on an
 * error, SHK_ENOTOWNER with a detail when the caller does not hold the lock, nothing
 * stays registered); then the wait with shk_cond_op; shk_cond_finish whatever its
 * outcome; then the lock taken again whatever happened (shk_lock_op), and
 * shk_rlock_restore(l, count) for an RLock.  shk_cond_wait_lock is the whole of it for C
 * callers (EINTR is waited through): the wait's result (0, ETIMEDOUT, EBUSY), or the
 * error of taking the lock again. */
int shk_cond_unlock(struct shk_cond_sh *c, struct shk_lock_sh *l, int recursive, uint32_t *seq,
                    uint32_t *count);
int shk_cond_wait_lock(struct shk_cond_sh *c, struct shk_lock_sh *l, int recursive,
                       struct shk_wait *w);

/* --- Barrier ------------------------------------------------------------------------------ */

/* Arrive and wait.  On 0, *index is the arrival index; *last = 1 for the last party, which
 * is not released yet: it runs the action, then calls shk_barrier_complete (or
 * shk_barrier_abort).  SHK_EBROKEN when the barrier is or becomes broken (a wait that
 * times out breaks it and returns SHK_EBROKEN too, with detail saying so). */
extern const struct shk_wait_op shk_barrier_op; /* obj: struct shk_barrier_sh; giving up
                                                   after arriving breaks the barrier
                                                   (a timeout returns SHK_EBROKEN) */
int shk_barrier_wait(struct shk_barrier_sh *b, struct shk_wait *w, uint32_t *index, int *last);
/* After shk_barrier_op finished: the arrival index and whether this is the last party
 * (w->aux is the generation, for shk_barrier_complete). */
void shk_barrier_result(const struct shk_wait *w, uint32_t *index, int *last);
int shk_barrier_complete(struct shk_barrier_sh *b, uint32_t gen);
void shk_barrier_abort(struct shk_barrier_sh *b);
void shk_barrier_reset(struct shk_barrier_sh *b);

#ifdef __cplusplus
}
#endif
#endif
