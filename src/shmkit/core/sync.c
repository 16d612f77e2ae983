/*
 * sync.c - locks, semaphores, events, conditions and barriers in shared memory that
 * survive the death of the processes using them.  See sync.h for the model and
 * layout.h for the bytes.
 *
 * Memory ordering, the one rule everything below follows (futex hand-off): a waker
 * publishes its change with a sequentially consistent read-modify-write, then reads the
 * waiter registration (flag bit or count); a waiter registers with a sequentially
 * consistent read-modify-write, then sleeps with FUTEX_WAIT on the value it saw, which
 * the kernel re-checks.  Either the waker sees the registration and wakes, or the
 * waiter's FUTEX_WAIT sees the new value and does not sleep.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "sync.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "atomics.h"
#include "errors.h"
#include "futex.h"
#include "mutex.h"
#include "proc.h"
#include "wait.h"

#define likely(x) __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)

/* ---------------------------------------------------------------------------------- */
/* Identities and liveness                                                              */
/* ---------------------------------------------------------------------------------- */

uint64_t shk_sync_self_proc_cache;
static uint32_t fork_gen = 1;
static __thread uint64_t self_thread_cache;
static __thread uint32_t self_thread_gen;
static pthread_once_t once = PTHREAD_ONCE_INIT;

static void after_fork_child(void)
{
    /* the child has another pid and its one thread another tid */
    shk_sync_self_proc_cache = 0;
    shk_fetch_add_relaxed(&fork_gen, 1);
}

static void init_once(void)
{
    pthread_atfork(NULL, NULL, after_fork_child);
}

/* State (field 3) and start time (field 22) of /proc/ID/stat. -1 if unreadable. */
static int read_stat(pid_t id, uint64_t *start, int *zombie)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)id);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return -1;
    buf[n] = '\0';
    char *p = strrchr(buf, ')'); /* the command name may hold spaces and parentheses */
    if (!p || p[1] != ' ' || !p[2])
        return -1;
    *zombie = p[2] == 'Z' || p[2] == 'X';
    p += 2;
    for (int field = 3; field < 22; field++) {
        p = strchr(p, ' ');
        if (!p)
            return -1;
        p++;
    }
    *start = strtoull(p, NULL, 10);
    return 0;
}

static uint64_t make_ident(uint32_t id, uint64_t start)
{
    union shk_ident u;
    u.f.word = id & SHK_ID_MASK;
    u.f.start = (uint32_t)start;
    return u.all;
}

uint64_t shk_sync_self_proc_slow(void)
{
    uint64_t v;
    pthread_once(&once, init_once);
    pid_t pid = getpid();
    uint64_t start = 0;
    int zombie;
    if (read_stat(pid, &start, &zombie) != 0)
        start = 0;
    v = make_ident((uint32_t)pid, start);
    shk_sync_self_proc_cache = v;
    return v;
}

uint64_t shk_sync_self_thread(void)
{
    uint64_t v = self_thread_cache;
    if (likely(v != 0 && self_thread_gen == shk_load_relaxed(&fork_gen)))
        return v;
    pthread_once(&once, init_once);
    pid_t tid = (pid_t)syscall(SYS_gettid);
    uint64_t start = 0;
    int zombie;
    if (read_stat(tid, &start, &zombie) != 0)
        start = 0;
    v = make_ident((uint32_t)tid, start);
    self_thread_cache = v;
    self_thread_gen = shk_load_relaxed(&fork_gen);
    return v;
}

int shk_sync_ident_alive(uint64_t ident)
{
    union shk_ident u;
    u.all = ident;
    pid_t id = (pid_t)(u.f.word & SHK_ID_MASK);
    if (id == 0)
        return 0;
    uint64_t start;
    int zombie;
    if (read_stat(id, &start, &zombie) == 0) {
        if (zombie)
            return 0;
        return u.f.start == 0 || (uint32_t)start == u.f.start;
    }
    /* /proc/ID unreadable: gone, or hidden from us (hidepid).  Only a definite "no such
     * process" counts as dead. */
    if (kill(id, 0) == 0 || errno == EPERM)
        return 1;
    return 0;
}

static int is_self_proc(uint64_t ident)
{
    return shk_ident_same(ident, shk_sync_self_proc());
}

/* ---------------------------------------------------------------------------------- */
/* Waiting: every blocking call is an attempt run by the one driver of wait.h           */
/* ---------------------------------------------------------------------------------- */

#define SPIN_INITIAL_NS 20000u

/* The adaptive spin of a sync object: its budget and gate live in its shared head, so
 * every process learns from every other (every sync struct begins with the head). */
static void head_spin(void *obj, struct shk_spin *out)
{
    struct shk_sync_head *h = obj;
    out->budget_ns = &h->spin_ns;
    out->gate_ms = &h->spin_busy;
    out->max_ns = shk_wait_cfg.spin_max_ns;
    out->policy = SHK_SPIN_GATE | SHK_SPIN_LEARN_SLEEPS;
}

/* A liveness check of a holder is due: only for a call about to sleep or a
 * non-blocking one (never while spinning, where a /proc read would cost more than the
 * whole hand-off), throttled by shk_wait_liveness_due. */
static int live_check_due(struct shk_wait *w)
{
    return (w->flags & (SHK_WAIT_ARMED | SHK_WAIT_TRY)) && shk_wait_liveness_due(w, shk_now_ns());
}

/* After a liveness decision: be tried again when the next check is due. */
static void retry_at_next_check(struct shk_wait *w)
{
    if (w->flags & SHK_WAIT_ARMED)
        shk_wait_retry_by(w, w->next_live ? w->next_live : shk_now_ns());
}

/*
 * The owner-word protocol of Lock, RLock and RWLock's writer, once: one step of taking
 * the 64-bit word *owner (an identity, SHK_ID_WAITERS when someone sleeps on its low
 * word) for `me`.  Returns 0 when taken, 1 when taken over from a holder found dead
 * (*dead gets its identity), or EAGAIN with w->on set to sleep on the low word (armed:
 * WAITERS set first, so the releaser wakes us).  `self_ok`: a holder with our own
 * process identity is alive by definition (Lock and the writer: any thread of ours).
 */
static int owner_word_step(union shk_ident *owner, uint64_t me, int self_ok, uint32_t *sleepers,
                           struct shk_wait *w, uint64_t *dead)
{
    union shk_ident cur, des;
    cur.all = shk_load_seq_cst(&owner->all);
    for (int tries = 0;; tries++) {
        if ((cur.f.word & SHK_ID_MASK) == 0) {
            /* free: a sleeper (armed) takes it with WAITERS set: others may still sleep */
            uint64_t exp = cur.all;
            des.all = me;
            des.f.word |= (w->flags & SHK_WAIT_ARMED) ? SHK_ID_WAITERS : (cur.f.word & SHK_ID_WAITERS);
            if (shk_cas_seq_cst(&owner->all, &exp, des.all))
                return 0;
            cur.all = exp;
            continue;
        }
        if (live_check_due(w) && !(self_ok && shk_ident_same(cur.all, shk_sync_self_proc())) &&
            !shk_sync_ident_alive(cur.all)) {
            uint64_t exp = cur.all;
            des.all = me;
            des.f.word |= cur.f.word & SHK_ID_WAITERS;
            if (shk_cas_seq_cst(&owner->all, &exp, des.all)) {
                *dead = cur.all;
                return 1;
            }
            cur.all = exp;
            continue;
        }
        if ((w->flags & SHK_WAIT_ARMED) && !(cur.f.word & SHK_ID_WAITERS) && tries < 64) {
            uint64_t exp = cur.all;
            des = cur;
            des.f.word |= SHK_ID_WAITERS;
            if (!shk_cas_seq_cst(&owner->all, &exp, des.all)) {
                cur.all = exp;
                continue;
            }
            cur = des;
        }
        shk_wait_on_futex(w, &owner->f.word, cur.f.word, sleepers);
        retry_at_next_check(w);
        return EAGAIN;
    }
}

/* ---------------------------------------------------------------------------------- */
/* Objects: sizes, creation, validation                                                 */
/* ---------------------------------------------------------------------------------- */

#define MAX_SLOTS 65536u
#define MAX_PARTIES 65536u

uint64_t shk_sync_size(const struct shk_sync_params *p)
{
    switch (p->type) {
    case SHK_OBJ_LOCK:
    case SHK_OBJ_RLOCK:
        return sizeof(struct shk_lock_sh);
    case SHK_OBJ_EVENT:
        return sizeof(struct shk_event_sh);
    case SHK_OBJ_COUNTER:
        return sizeof(struct shk_counter_sh);
    case SHK_OBJ_CONDITION:
        return sizeof(struct shk_cond_sh);
    case SHK_OBJ_SEMAPHORE:
        if (p->a > SHK_SEM_VALUE_MAX) {
            shk_fail(EINVAL, "semaphore value %llu is too large (at most %u)",
                     (unsigned long long)p->a, SHK_SEM_VALUE_MAX);
            return 0;
        }
        if (!(p->flags & SHK_SYNCF_UNDO))
            return sizeof(struct shk_sem_sh);
        if (p->b < 1 || p->b > MAX_SLOTS) {
            shk_fail(EINVAL, "undo semaphore: %llu process slots (1..%u allowed)",
                     (unsigned long long)p->b, MAX_SLOTS);
            return 0;
        }
        return sizeof(struct shk_sem_sh) + p->b * sizeof(struct shk_undo_slot);
    case SHK_OBJ_RWLOCK:
        if (p->a < 1 || p->a > MAX_SLOTS) {
            shk_fail(EINVAL, "rwlock: %llu reader slots (1..%u allowed)",
                     (unsigned long long)p->a, MAX_SLOTS);
            return 0;
        }
        return sizeof(struct shk_rwlock_sh) + p->a * sizeof(struct shk_rw_slot);
    case SHK_OBJ_BARRIER:
        if (p->a < 1 || p->a > MAX_PARTIES) {
            shk_fail(EINVAL, "barrier: %llu parties (1..%u allowed)", (unsigned long long)p->a,
                     MAX_PARTIES);
            return 0;
        }
        return sizeof(struct shk_barrier_sh) + p->a * sizeof(union shk_ident);
    case SHK_OBJ_VALUE:
    case SHK_OBJ_ARRAY: {
        uint64_t es = p->a, n = p->b;
        if (es == 0 || es > (1u << 20) || n > ((uint64_t)1 << 40) / es) {
            shk_fail(EINVAL, "value: %llu elements of %llu bytes cannot be stored",
                     (unsigned long long)n, (unsigned long long)es);
            return 0;
        }
        uint64_t data = es * n;
        return SHK_VALUE_DATA_OFF + (data ? data : 1);
    }
    default:
        shk_fail(EINVAL, "type %u is not a sync object", p->type);
        return 0;
    }
}

static void head_init(struct shk_sync_head *h, uint32_t type, uint32_t flags)
{
    h->type = (uint16_t)type;
    h->flags = (uint16_t)flags;
    h->spin_ns = SPIN_INITIAL_NS;
    h->spin_busy = 0;
    shk_store_release(&h->magic, SHK_SYNC_MAGIC);
}

static void lock_init(struct shk_lock_sh *l, uint32_t type)
{
    memset(l, 0, sizeof *l);
    head_init(&l->head, type, 0);
}

static int sync_init(struct shk_zone *z, uint64_t off, uint64_t size, void *arg)
{
    const struct shk_sync_params *p = arg;
    uint8_t *obj = shk_zone_ptr(z, off, size);
    int r;
    if (!obj)
        return SHK_ECORRUPT;
    switch (p->type) {
    case SHK_OBJ_LOCK:
    case SHK_OBJ_RLOCK:
        lock_init((struct shk_lock_sh *)obj, p->type);
        return 0;
    case SHK_OBJ_EVENT:
        head_init((struct shk_sync_head *)obj, p->type, 0);
        return 0;
    case SHK_OBJ_COUNTER: {
        struct shk_counter_sh *c = (struct shk_counter_sh *)obj;
        c->value = (int64_t)p->a;
        head_init(&c->head, p->type, 0);
        return 0;
    }
    case SHK_OBJ_SEMAPHORE: {
        struct shk_sem_sh *s = (struct shk_sem_sh *)obj;
        s->value = (uint32_t)p->a;
        s->bound = (uint32_t)p->a;
        if (p->flags & SHK_SYNCF_UNDO) {
            s->nslots = (uint32_t)p->b;
            if ((r = shk_mutex_init(&s->mutex)) != 0)
                return shk_fail(r, "semaphore: cannot initialise its mutex: %s", strerror(r));
        }
        head_init(&s->head, p->type, p->flags & (SHK_SYNCF_BOUNDED | SHK_SYNCF_UNDO));
        return 0;
    }
    case SHK_OBJ_RWLOCK: {
        struct shk_rwlock_sh *rw = (struct shk_rwlock_sh *)obj;
        rw->nslots = (uint32_t)p->a;
        head_init(&rw->head, p->type, 0);
        return 0;
    }
    case SHK_OBJ_CONDITION: {
        struct shk_cond_sh *c = (struct shk_cond_sh *)obj;
        lock_init(&c->lock, SHK_OBJ_RLOCK);
        uint32_t flags = 0;
        if (p->text && *p->text) {
            if (strlen(p->text) > SHK_OBJ_NAME_MAX)
                return shk_fail(SHK_ENAME, "condition: lock name too long");
            strncpy(c->lock_name, p->text, SHK_OBJ_NAME_MAX);
            c->lock_type = p->text_type;
            flags |= SHK_SYNCF_EXTLOCK;
        } else {
            c->lock_type = SHK_OBJ_RLOCK;
        }
        head_init(&c->head, p->type, flags);
        return 0;
    }
    case SHK_OBJ_BARRIER: {
        struct shk_barrier_sh *b = (struct shk_barrier_sh *)obj;
        b->parties = (uint32_t)p->a;
        if ((r = shk_mutex_init(&b->mutex)) != 0)
            return shk_fail(r, "barrier: cannot initialise its mutex: %s", strerror(r));
        head_init(&b->head, p->type, 0);
        return 0;
    }
    case SHK_OBJ_VALUE:
    case SHK_OBJ_ARRAY: {
        struct shk_value_sh *v = (struct shk_value_sh *)obj;
        v->elem_size = p->a;
        v->length = p->b;
        v->data_size = p->a * p->b;
        if (p->text)
            strncpy(v->type_name, p->text, SHK_VALUE_TYPENAME_MAX);
        lock_init(&v->lock, SHK_OBJ_RLOCK);
        if (p->data && p->data_len)
            memcpy(obj + SHK_VALUE_DATA_OFF, p->data,
                   p->data_len < v->data_size ? p->data_len : v->data_size);
        head_init(&v->head, p->type, p->flags & SHK_SYNCF_LOCKED);
        return 0;
    }
    default:
        return shk_fail(EINVAL, "type %u is not a sync object", p->type);
    }
}

int shk_sync_open(struct shk_zone *z, const char *name, const struct shk_sync_params *p,
                  int flags, uint64_t *off, int *created)
{
    shk_clear_detail();
    uint64_t size = shk_sync_size(p);
    if (!size)
        return EINVAL;
    struct shk_dirent e;
    int r = shk_zone_obj_get(z, name, p->type, size, 0, flags, sync_init, (void *)p, &e,
                             created);
    if (r)
        return r;
    int err = 0;
    if (!shk_sync_ptr(z, e.offset, p->type, &err))
        return err;
    *off = e.offset;
    return 0;
}

void *shk_sync_ptr(struct shk_zone *z, uint64_t off, uint32_t type, int *err)
{
    struct shk_sync_head *h = shk_zone_ptr(z, off, sizeof(struct shk_counter_sh));
    *err = 0;
    if (!h) {
        *err = SHK_ECORRUPT;
        return NULL;
    }
    if (shk_load_acquire(&h->magic) != SHK_SYNC_MAGIC || h->type != type) {
        *err = shk_fail(SHK_ECORRUPT, "sync object at offset %llu: magic 0x%08x type %u, "
                        "expected a type %u object", (unsigned long long)off, h->magic,
                        h->type, type);
        return NULL;
    }
    uint64_t size;
    switch (type) {
    case SHK_OBJ_LOCK:
    case SHK_OBJ_RLOCK: size = sizeof(struct shk_lock_sh); break;
    case SHK_OBJ_EVENT: size = sizeof(struct shk_event_sh); break;
    case SHK_OBJ_COUNTER: size = sizeof(struct shk_counter_sh); break;
    case SHK_OBJ_CONDITION: size = sizeof(struct shk_cond_sh); break;
    case SHK_OBJ_SEMAPHORE: {
        struct shk_sem_sh *s = (void *)h;
        if (s->nslots > MAX_SLOTS)
            goto bad;
        size = sizeof *s + (uint64_t)s->nslots * sizeof(struct shk_undo_slot);
        break;
    }
    case SHK_OBJ_RWLOCK: {
        struct shk_rwlock_sh *rw = (void *)h;
        if (rw->nslots < 1 || rw->nslots > MAX_SLOTS)
            goto bad;
        size = sizeof *rw + (uint64_t)rw->nslots * sizeof(struct shk_rw_slot);
        break;
    }
    case SHK_OBJ_BARRIER: {
        struct shk_barrier_sh *b = (void *)h;
        if (b->parties < 1 || b->parties > MAX_PARTIES)
            goto bad;
        size = sizeof *b + (uint64_t)b->parties * sizeof(union shk_ident);
        break;
    }
    case SHK_OBJ_VALUE:
    case SHK_OBJ_ARRAY: {
        struct shk_value_sh *v = (void *)h;
        if (v->elem_size == 0 || v->data_size != v->elem_size * v->length ||
            v->data_size > ((uint64_t)1 << 40))
            goto bad;
        size = SHK_VALUE_DATA_OFF + v->data_size;
        break;
    }
    default:
        goto bad;
    }
    if (!shk_zone_ptr(z, off, size)) {
        *err = SHK_ECORRUPT;
        return NULL;
    }
    return h;
bad:
    *err = shk_fail(SHK_ECORRUPT, "sync object at offset %llu (type %u): its size fields are "
                    "inconsistent", (unsigned long long)off, type);
    return NULL;
}

int shk_sync_configure(int64_t spin_max_ns, int64_t liveness_ns, int64_t recheck_ns)
{
    if (liveness_ns >= 0 && liveness_ns < 100000)
        return shk_fail(EINVAL, "liveness interval must be at least 100 µs");
    if (recheck_ns >= 0 && recheck_ns < 1000000)
        return shk_fail(EINVAL, "recheck interval must be at least 1 ms");
    if (spin_max_ns >= 0)
        shk_wait_cfg.spin_max_ns = (uint64_t)spin_max_ns;
    if (liveness_ns >= 0)
        shk_wait_cfg.liveness_ns = (uint64_t)liveness_ns;
    if (recheck_ns >= 0)
        shk_wait_cfg.recheck_ns = (uint64_t)recheck_ns;
    return 0;
}

uint32_t shk_sync_extent(const void *obj, uint32_t type)
{
    switch (type) {
    case SHK_OBJ_RWLOCK: return shk_load_acquire(&((const struct shk_rwlock_sh *)obj)->nslots);
    case SHK_OBJ_SEMAPHORE: return shk_load_acquire(&((const struct shk_sem_sh *)obj)->nslots);
    case SHK_OBJ_BARRIER: return shk_load_acquire(&((const struct shk_barrier_sh *)obj)->parties);
    default: return 0;
    }
}

/* ---------------------------------------------------------------------------------- */
/* Lock and RLock                                                                       */
/* ---------------------------------------------------------------------------------- */

static int lock_got(struct shk_lock_sh *l, int rec, int r)
{
    if (rec) {
        l->count = 1;
        l->owner_pid = (int32_t)shk_ident_id(shk_sync_self_proc());
    }
    shk_single_writer_inc(&l->acquisitions);
    return r;
}

static int lock_attempt(struct shk_lock_sh *l, int rec, struct shk_wait *w)
{
    uint64_t me = rec ? shk_sync_self_thread() : shk_sync_self_proc();
    if (w->phase == 0) {
        w->phase = 1;
        if (likely(shk_lock_try_fast(l, rec) == 0))
            return 0;
        if (rec && shk_ident_same(shk_load_relaxed(&l->owner.all), me))
            return shk_fail(EOVERFLOW, "RLock: recursion too deep");
        shk_stat_add(&l->contentions, 1);
    }
    uint64_t dead = 0;
    int r = owner_word_step(&l->owner, me, !rec, &l->sleepers, w, &dead);
    if (r == 0)
        return lock_got(l, rec, 0);
    if (r == 1) {
        shk_single_writer_inc(&l->owner_deaths);
        shk_store_relaxed(&l->last_death_ns, shk_wall_ns());
        shk_store_relaxed(&l->last_dead_pid, (int32_t)shk_ident_id(dead));
        return lock_got(l, rec, SHK_EOWNERDEAD);
    }
    return r;
}

static int lock_attempt_fn(void *obj, struct shk_wait *w)
{
    return lock_attempt(obj, 0, w);
}

static int rlock_attempt_fn(void *obj, struct shk_wait *w)
{
    return lock_attempt(obj, 1, w);
}

const struct shk_wait_op shk_lock_op = {"Lock.acquire", lock_attempt_fn, NULL, head_spin};
const struct shk_wait_op shk_rlock_op = {"RLock.acquire", rlock_attempt_fn, NULL, head_spin};

int shk_lock_acquire(struct shk_lock_sh *l, int rec, struct shk_wait *w)
{
    return shk_wait_run(rec ? &shk_rlock_op : &shk_lock_op, l, w);
}

int shk_lock_release(struct shk_lock_sh *l, int rec)
{
    uint64_t me = rec ? shk_sync_self_thread() : shk_sync_self_proc();
    union shk_ident cur;
    cur.all = shk_load_relaxed(&l->owner.all);
    for (;;) {
        if (!shk_ident_same(cur.all, me)) {
            if ((cur.f.word & SHK_ID_MASK) == 0)
                return shk_fail(SHK_ENOTOWNER, "release(): the %s is not held",
                                rec ? "RLock" : "Lock");
            return shk_fail(SHK_ENOTOWNER, "release(): the %s is held by %s %u, not by this %s",
                            rec ? "RLock" : "Lock", rec ? "thread" : "process",
                            cur.f.word & SHK_ID_MASK, rec ? "thread" : "process");
        }
        if (rec && l->count > 1) {
            l->count--;
            return 0;
        }
        if (rec) {
            l->count = 0;
            l->owner_pid = 0;
        }
        uint64_t exp = cur.all;
        if (shk_cas_seq_cst(&l->owner.all, &exp, 0))
            break;
        cur.all = exp; /* only the WAITERS bit can have changed */
    }
    if (cur.f.word & SHK_ID_WAITERS)
        shk_futex_wake(&l->owner.f.word, 1);
    return 0;
}

int shk_rlock_release_all(struct shk_lock_sh *l, uint32_t *count)
{
    uint64_t me = shk_sync_self_thread();
    if (!shk_ident_same(shk_load_relaxed(&l->owner.all), me))
        return shk_fail(SHK_ENOTOWNER, "the RLock is not held by this thread");
    *count = l->count;
    l->count = 1;
    return shk_lock_release(l, 1);
}

int shk_lock_release_all(struct shk_lock_sh *l, int recursive, uint32_t *count)
{
    *count = 1;
    return recursive ? shk_rlock_release_all(l, count) : shk_lock_release(l, 0);
}

void shk_rlock_restore(struct shk_lock_sh *l, uint32_t count)
{
    if (count > 1 && shk_lock_is_mine(l, 1))
        l->count = count;
}

int shk_lock_is_mine(struct shk_lock_sh *l, int rec)
{
    uint64_t me = rec ? shk_sync_self_thread() : shk_sync_self_proc();
    return shk_ident_same(shk_load_relaxed(&l->owner.all), me);
}

uint32_t shk_lock_owned_count(struct shk_lock_sh *l, int rec)
{
    if (!shk_lock_is_mine(l, rec))
        return 0;
    return rec ? l->count : 1;
}

/* ---------------------------------------------------------------------------------- */
/* Event                                                                                */
/* ---------------------------------------------------------------------------------- */

void shk_event_set(struct shk_event_sh *e)
{
    uint32_t cur = shk_load_relaxed(&e->state);
    do {
        if (cur & 1)
            return;
    } while (!shk_cas_seq_cst(&e->state, &cur, (cur + 2) | 1));
    shk_stat_add(&e->sets, 1);
    if (shk_load_seq_cst(&e->sleepers))
        shk_futex_wake(&e->state, INT_MAX);
}

void shk_event_clear(struct shk_event_sh *e)
{
    uint32_t cur = shk_load_relaxed(&e->state);
    while ((cur & 1) && !shk_cas_seq_cst(&e->state, &cur, cur & ~1u))
        ;
}

/* Any change from the state observed at the start (clear) means a set() happened, even
 * if a clear() followed. */
static int event_attempt(void *obj, struct shk_wait *w)
{
    struct shk_event_sh *e = obj;
    uint32_t cur = shk_load_seq_cst(&e->state);
    if (w->phase == 0) {
        if (cur & 1)
            return 0;
        w->observed = cur;
        w->phase = 1;
        if (!(w->flags & SHK_WAIT_TRY))
            shk_stat_add(&e->waits, 1);
    } else if (cur != w->observed) {
        return 0;
    }
    shk_wait_on_futex(w, &e->state, w->observed, &e->sleepers);
    return EAGAIN;
}

const struct shk_wait_op shk_event_op = {"Event.wait", event_attempt, NULL, head_spin};

int shk_event_wait(struct shk_event_sh *e, struct shk_wait *w)
{
    return shk_wait_run(&shk_event_op, e, w);
}

/* ---------------------------------------------------------------------------------- */
/* Semaphore                                                                            */
/* ---------------------------------------------------------------------------------- */

/* Undo semaphores: value and slots change together under the robust mutex.  The journal
 * holds the state before a half-done change; whoever inherits the mutex from a dead
 * holder puts it back. */
static int sem_lock(struct shk_sem_sh *s)
{
    int r = shk_mutex_lock(&s->mutex, NULL);
    if (r == SHK_EOWNERDEAD) {
        if (shk_load_seq_cst(&s->j_valid)) {
            uint32_t i = s->j_slot;
            if (i < s->nslots) {
                s->slot[i].count = s->j_count;
                s->slot[i].owner.all = s->j_owner.all;
            }
            shk_store_seq_cst(&s->value, s->j_value);
            shk_store_seq_cst(&s->j_valid, 0);
        }
        shk_mutex_consistent(&s->mutex);
        return 0;
    }
    return r;
}

static void sem_journal(struct shk_sem_sh *s, uint32_t i)
{
    s->j_slot = i;
    s->j_value = s->value;
    s->j_count = i < s->nslots ? s->slot[i].count : 0;
    s->j_owner.all = i < s->nslots ? s->slot[i].owner.all : 0;
    shk_store_seq_cst(&s->j_valid, 1);
    /* the journal must be visible before any change it describes */
    shk_fence_seq_cst();
}

static void sem_journal_done(struct shk_sem_sh *s)
{
    shk_fence_seq_cst();
    shk_store_seq_cst(&s->j_valid, 0);
}

/* Slot of this process, or a free one (UINT32_MAX if none). Mutex held. */
static uint32_t sem_slot_locked(struct shk_sem_sh *s, uint64_t me, int claim)
{
    uint32_t free_slot = UINT32_MAX;
    for (uint32_t i = 0; i < s->nslots; i++) {
        uint64_t o = s->slot[i].owner.all;
        if (o == me)
            return i;
        if (o == 0 && free_slot == UINT32_MAX)
            free_slot = i;
    }
    return claim ? free_slot : UINT32_MAX;
}

uint32_t shk_sem_reclaim(struct shk_sem_sh *s)
{
    if (!(s->head.flags & SHK_SYNCF_UNDO))
        return 0;
    /* liveness checks read /proc: do them without the mutex, then re-check under it */
    uint32_t given = 0, n = s->nslots;
    uint64_t me = shk_sync_self_proc();
    for (uint32_t i = 0; i < n; i++) {
        uint64_t o = shk_load_seq_cst(&s->slot[i].owner.all);
        if (o == 0 || o == me || shk_load_seq_cst(&s->slot[i].count) == 0)
            continue;
        if (shk_sync_ident_alive(o))
            continue;
        if (sem_lock(s) != 0)
            return given;
        if (s->slot[i].owner.all == o) {
            uint32_t c = s->slot[i].count;
            sem_journal(s, i);
            shk_store_seq_cst(&s->value, s->value + c);
            s->slot[i].count = 0;
            s->slot[i].owner.all = 0;
            sem_journal_done(s);
            s->reclaimed += c;
            s->dead_owners++;
            given += c;
        }
        shk_mutex_unlock(&s->mutex);
    }
    if (given && shk_load_seq_cst(&s->sleepers))
        shk_futex_wake(&s->value, (int)(given > INT_MAX ? INT_MAX : given));
    return given;
}

uint32_t shk_sem_held(struct shk_sem_sh *s)
{
    if (!(s->head.flags & SHK_SYNCF_UNDO))
        return 0;
    uint64_t me = shk_sync_self_proc();
    for (uint32_t i = 0; i < s->nslots; i++)
        if (shk_load_seq_cst(&s->slot[i].owner.all) == me)
            return shk_load_seq_cst(&s->slot[i].count);
    return 0;
}

uint32_t shk_sem_holders(struct shk_sem_sh *s)
{
    uint32_t holders = 0;
    for (uint32_t i = 0; i < s->nslots; i++)
        if (shk_load_relaxed(&s->slot[i].count))
            holders++;
    return holders;
}

/* One attempt: 0 or EBUSY (or an error for undo semaphores). */
static int sem_try(struct shk_sem_sh *s)
{
    if (!(s->head.flags & SHK_SYNCF_UNDO)) {
        uint32_t v = shk_load_relaxed(&s->value);
        while (v > 0) {
            if (shk_cas_seq_cst(&s->value, &v, v - 1)) {
                shk_stat_add(&s->acquisitions, 1);
                return 0;
            }
        }
        return EBUSY;
    }
    if (shk_load_seq_cst(&s->value) == 0)
        return EBUSY;
    int r = sem_lock(s);
    if (r)
        return r;
    if (s->value == 0) {
        shk_mutex_unlock(&s->mutex);
        return EBUSY;
    }
    uint64_t me = shk_sync_self_proc();
    uint32_t i = sem_slot_locked(s, me, 1);
    if (i == UINT32_MAX) {
        shk_mutex_unlock(&s->mutex);
        if (shk_sem_reclaim(s) == 0)
            return shk_fail(SHK_ETOOBIG, "undo semaphore: all %u process slots are taken by "
                            "live processes holding units (create it with more slots)",
                            s->nslots);
        return sem_try(s);
    }
    sem_journal(s, i);
    s->slot[i].owner.all = me;
    s->slot[i].count++;
    shk_store_seq_cst(&s->value, s->value - 1);
    sem_journal_done(s);
    s->acquisitions++;
    shk_mutex_unlock(&s->mutex);
    return 0;
}

static int sem_attempt(void *obj, struct shk_wait *w)
{
    struct shk_sem_sh *s = obj;
    int undo = s->head.flags & SHK_SYNCF_UNDO;
    int r = sem_try(s);
    if (r != EBUSY)
        return r;
    if (w->phase == 0) {
        w->phase = 1;
        shk_stat_add(&s->contentions, 1);
    }
    /* undo semaphores: units held by dead processes come back (liveness throttled) */
    if (undo && live_check_due(w) && shk_sem_reclaim(s) && (r = sem_try(s)) != EBUSY)
        return r;
    shk_wait_on_futex(w, &s->value, 0, &s->sleepers);
    if (undo)
        retry_at_next_check(w);
    return EAGAIN;
}

const struct shk_wait_op shk_sem_op = {"Semaphore.acquire", sem_attempt, NULL, head_spin};

int shk_sem_try_now(struct shk_sem_sh *s)
{
    struct shk_wait w = SHK_WAIT_INIT(SHK_FOREVER, SHK_WAIT_TRY);
    w.next_live = UINT64_MAX; /* no liveness check due */
    int undo = s->head.flags & SHK_SYNCF_UNDO;
    uint64_t saved = undo ? shk_wait_ambient_push(shk_now_ns() + SHK_WAIT_TRY_GRACE_NS) : 0;
    int r = sem_attempt(s, &w);
    if (undo)
        shk_wait_ambient_pop(saved);
    return r;
}

int shk_sem_acquire(struct shk_sem_sh *s, struct shk_wait *w)
{
    return shk_wait_run(&shk_sem_op, s, w);
}

/* n more units on top of v would go beyond what s may hold. */
static inline int sem_excess(const struct shk_sem_sh *s, uint32_t v, uint64_t n)
{
    uint64_t limit = (s->head.flags & SHK_SYNCF_BOUNDED) ? s->bound : SHK_SEM_VALUE_MAX;
    if (v <= limit && n <= limit - v)
        return 0;
    return shk_fail(SHK_ETOOBIG, (s->head.flags & SHK_SYNCF_BOUNDED)
                                     ? "Semaphore released too many times"
                                     : "semaphore value would overflow");
}

int shk_sem_release(struct shk_sem_sh *s, uint64_t n)
{
    if (n == 0)
        return 0;
    if (!(s->head.flags & SHK_SYNCF_UNDO)) {
        uint32_t v = shk_load_relaxed(&s->value);
        for (;;) {
            if (sem_excess(s, v, n))
                return SHK_ETOOBIG;
            if (shk_cas_seq_cst(&s->value, &v, (uint32_t)(v + n)))
                break;
        }
    } else {
        int r = sem_lock(s);
        if (r)
            return r;
        uint32_t v = s->value;
        if (sem_excess(s, v, n)) {
            shk_mutex_unlock(&s->mutex);
            return SHK_ETOOBIG;
        }
        uint64_t me = shk_sync_self_proc();
        uint32_t i = sem_slot_locked(s, me, 0);
        sem_journal(s, i);
        if (i != UINT32_MAX) {
            /* units this process gives back are no longer its to be undone */
            uint32_t c = s->slot[i].count;
            s->slot[i].count = c > n ? (uint32_t)(c - n) : 0;
            if (s->slot[i].count == 0)
                s->slot[i].owner.all = 0;
        }
        shk_store_seq_cst(&s->value, (uint32_t)(v + n));
        sem_journal_done(s);
        shk_mutex_unlock(&s->mutex);
    }
    if (shk_load_seq_cst(&s->sleepers))
        shk_futex_wake(&s->value, n > INT_MAX ? INT_MAX : (int)n);
    return 0;
}


/* ---------------------------------------------------------------------------------- */
/* RWLock                                                                               */
/* ---------------------------------------------------------------------------------- */


/* Take a dead process's reader slot back: mark it (RECLAIM + our pid), zero it, free it. */
static int rw_reclaim_slot(struct shk_rwlock_sh *rw, uint32_t i, uint64_t dead)
{
    struct shk_rw_slot *sl = &rw->slot[i];
    union shk_ident mark;
    mark.all = shk_sync_self_proc();
    mark.f.word |= SHK_ID_RECLAIM;
    uint64_t exp = dead;
    if (!shk_cas_seq_cst(&sl->owner.all, &exp, mark.all))
        return 0;
    uint32_t c = shk_load_seq_cst(&sl->count);
    shk_store_seq_cst(&sl->count, 0);
    shk_store_seq_cst(&sl->owner.all, 0);
    if (c)
        shk_stat_add(&rw->reader_deaths, 1);
    return 1;
}

/* Is the holder of a slot's owner word dead (a reclaim by a dead process included)? */
static int rw_slot_dead(uint64_t o)
{
    return o != 0 && !is_self_proc(o) && !shk_sync_ident_alive(o);
}

static int rw_find_slot(struct shk_rwlock_sh *rw, uint32_t *hint, int claim)
{
    uint64_t me = shk_sync_self_proc();
    uint32_t n = rw->nslots, i = *hint;
    if (i < n && shk_load_relaxed(&rw->slot[i].owner.all) == me)
        return (int)i;
    for (i = 0; i < n; i++)
        if (shk_load_relaxed(&rw->slot[i].owner.all) == me) {
            *hint = i;
            return (int)i;
        }
    if (!claim)
        return -1;
    for (int pass = 0; pass < 2; pass++) {
        for (i = 0; i < n; i++) {
            uint64_t exp = 0;
            if (shk_load_relaxed(&rw->slot[i].owner.all) == 0 && shk_cas_seq_cst(&rw->slot[i].owner.all, &exp, me)) {
                *hint = i;
                return (int)i;
            }
        }
        /* all taken: take back the slots of dead processes, then try again */
        for (i = 0; i < n; i++) {
            uint64_t o = shk_load_seq_cst(&rw->slot[i].owner.all);
            if (rw_slot_dead(o))
                rw_reclaim_slot(rw, i, o);
        }
    }
    return shk_fail(SHK_ETOOBIG, "RWLock: all %u reader slots are taken by live processes "
                    "(create it with a larger max_readers)", n);
}

static void rw_read_leave(struct shk_rwlock_sh *rw, struct shk_rw_slot *sl)
{
    shk_sub_fetch_seq_cst(&sl->count, 1);
    if (shk_load_seq_cst(&rw->drain_sleeping)) {
        shk_add_fetch_seq_cst(&rw->drain_seq, 1);
        shk_futex_wake(&rw->drain_seq, 1);
    }
}

/* One read attempt: 0, or EBUSY when a writer is there or waiting. */
static int rw_read_try(struct shk_rwlock_sh *rw, struct shk_rw_slot *sl)
{
    if (shk_load_relaxed(&rw->writer.f.word) & SHK_ID_MASK)
        return EBUSY;
    shk_add_fetch_seq_cst(&sl->count, 1);
    if (likely((shk_load_seq_cst(&rw->writer.f.word) & SHK_ID_MASK) == 0)) {
        shk_stat_add(&sl->acquisitions, 1);
        return 0;
    }
    rw_read_leave(rw, sl); /* a writer came in between: it goes first */
    return EBUSY;
}

/* The writer `dead` died: clear its hold so readers and writers go on. */
static int rw_clear_dead_writer(struct shk_rwlock_sh *rw, uint64_t dead)
{
    uint64_t exp = dead;
    if (!shk_cas_seq_cst(&rw->writer.all, &exp, 0))
        return 0;
    shk_stat_add(&rw->owner_deaths, 1);
    shk_store_seq_cst(&rw->drain_sleeping, 0);
    union shk_ident d;
    d.all = dead;
    if (d.f.word & SHK_ID_WAITERS)
        shk_futex_wake(&rw->writer.f.word, INT_MAX);
    return 1;
}

static int rw_read_attempt(void *obj, struct shk_wait *w)
{
    struct shk_rw_reader *rd = obj;
    struct shk_rwlock_sh *rw = rd->rw;
    int i = rw_find_slot(rw, &rd->slot, 1);
    if (i < 0)
        return i;
    struct shk_rw_slot *sl = &rw->slot[i];
    union shk_ident cur;
    for (int tries = 0; tries < 64; tries++) {
        if (rw_read_try(rw, sl) == 0)
            return w->aux ? SHK_EOWNERDEAD : 0; /* aux: a dead writer was cleared */
        if (w->phase == 0) {
            w->phase = 1;
            shk_stat_add(&rw->contentions, 1);
        }
        cur.all = shk_load_seq_cst(&rw->writer.all);
        if ((cur.f.word & SHK_ID_MASK) == 0)
            continue; /* the writer left in between: try again */
        if (live_check_due(w) && !is_self_proc(cur.all) && !shk_sync_ident_alive(cur.all)) {
            if (rw_clear_dead_writer(rw, cur.all))
                w->aux = 1;
            continue;
        }
        if ((w->flags & SHK_WAIT_ARMED) && !(cur.f.word & SHK_ID_WAITERS)) {
            uint64_t exp = cur.all;
            union shk_ident des = cur;
            des.f.word |= SHK_ID_WAITERS;
            if (!shk_cas_seq_cst(&rw->writer.all, &exp, des.all))
                continue;
            cur = des;
        }
        shk_wait_on_futex(w, &rw->writer.f.word, cur.f.word, &rw->sleepers);
        retry_at_next_check(w);
        return EAGAIN;
    }
    shk_wait_on_poll(w, shk_now_ns()); /* readers and writers racing: look again soon */
    return EAGAIN;
}

static void rw_read_spin(void *obj, struct shk_spin *out)
{
    head_spin(((struct shk_rw_reader *)obj)->rw, out);
}

const struct shk_wait_op shk_rw_read_op = {"RWLock.acquire_read", rw_read_attempt, NULL,
                                           rw_read_spin};

int shk_rw_acquire_read(struct shk_rwlock_sh *rw, uint32_t *hint, struct shk_wait *w)
{
    struct shk_rw_reader rd = {rw, *hint};
    int r = shk_wait_run(&shk_rw_read_op, &rd, w);
    *hint = rd.slot;
    return r;
}

int shk_rw_release_read(struct shk_rwlock_sh *rw, uint32_t *hint)
{
    int i = rw_find_slot(rw, hint, 0);
    if (i < 0 || shk_load_seq_cst(&rw->slot[i].count) == 0)
        return shk_fail(SHK_ENOTOWNER, "release_read(): this process holds no read lock");
    rw_read_leave(rw, &rw->slot[i]);
    return 0;
}

static void rw_writer_drop(struct shk_rwlock_sh *rw)
{
    shk_store_seq_cst(&rw->drain_sleeping, 0);
    union shk_ident cur;
    cur.all = shk_load_seq_cst(&rw->writer.all);
    uint64_t exp = cur.all;
    while (!shk_cas_seq_cst(&rw->writer.all, &exp, 0))
        cur.all = exp;
    if (cur.f.word & SHK_ID_WAITERS)
        shk_futex_wake(&rw->writer.f.word, INT_MAX);
}

/* Read holds still in the way of the writer; reclaims dead readers when `check`. */
static uint32_t rw_busy(struct shk_rwlock_sh *rw, int check)
{
    uint32_t busy = 0;
    for (uint32_t i = 0; i < rw->nslots; i++) {
        uint32_t c = shk_load_seq_cst(&rw->slot[i].count);
        if (!c)
            continue;
        uint64_t o = shk_load_seq_cst(&rw->slot[i].owner.all);
        union shk_ident u;
        u.all = o;
        if (u.f.word & SHK_ID_RECLAIM) {
            /* being reclaimed: the owner is dead; if the reclaimer died too, finish it */
            if (check && !shk_sync_ident_alive(o))
                rw_reclaim_slot(rw, i, o);
            continue;
        }
        if (check && rw_slot_dead(o)) {
            rw_reclaim_slot(rw, i, o);
            continue;
        }
        busy += c;
    }
    return busy;
}


/* RWLock writer: phase 1 takes the writer word (the owner-word protocol of Lock); phase 3
 * holds it, so new readers stay out, and waits for the readers inside to leave. */
static int rw_write_attempt(void *obj, struct shk_wait *w)
{
    struct shk_rwlock_sh *rw = obj;
    uint64_t me = shk_sync_self_proc();
    if (w->phase == 0) {
        uint64_t exp = 0;
        if (shk_cas_seq_cst(&rw->writer.all, &exp, me)) {
            w->phase = 3;
        } else {
            shk_stat_add(&rw->contentions, 1);
            w->phase = 1;
        }
    }
    if (w->phase == 1) {
        uint64_t dead = 0;
        int r = owner_word_step(&rw->writer, me, 1, &rw->sleepers, w, &dead);
        if (r == EAGAIN)
            return r;
        if (r == 1) {
            shk_stat_add(&rw->owner_deaths, 1);
            w->aux = 1;
        }
        w->phase = 3;
        w->flags &= ~SHK_WAIT_SPUN; /* the drain earns a spin of its own */
    }
    /* phase 3: drain.  Armed, readers that leave bump drain_seq and wake us. */
    uint32_t seq = shk_load_seq_cst(&rw->drain_seq);
    if (w->flags & SHK_WAIT_ARMED)
        shk_store_seq_cst(&rw->drain_sleeping, 1);
    if (rw_busy(rw, live_check_due(w)) == 0) {
        shk_store_seq_cst(&rw->drain_sleeping, 0);
        shk_single_writer_inc(&rw->write_acquisitions);
        return w->aux ? SHK_EOWNERDEAD : 0;
    }
    if (w->flags & SHK_WAIT_ARMED) {
        shk_wait_on_futex(w, &rw->drain_seq, seq, &rw->sleepers);
        retry_at_next_check(w);
    } else {
        shk_wait_on_poll(w, shk_now_ns()); /* spinning: look again */
    }
    return EAGAIN;
}

/* A writer that gives up while the readers drain lets go of the writer word again. */
static int rw_write_give_up(void *obj, struct shk_wait *w, int why)
{
    struct shk_rwlock_sh *rw = obj;
    if (w->phase >= 3 && shk_ident_same(shk_load_seq_cst(&rw->writer.all), shk_sync_self_proc()))
        rw_writer_drop(rw);
    w->phase = 0;
    w->aux = 0;
    return why;
}

const struct shk_wait_op shk_rw_write_op = {"RWLock.acquire_write", rw_write_attempt,
                                            rw_write_give_up, head_spin};

int shk_rw_acquire_write(struct shk_rwlock_sh *rw, struct shk_wait *w)
{
    return shk_wait_run(&shk_rw_write_op, rw, w);
}

const struct shk_wait_op *shk_sync_acquire_op(uint32_t type, int write)
{
    switch (type) {
    case SHK_OBJ_LOCK:
        return &shk_lock_op;
    case SHK_OBJ_RLOCK:
        return &shk_rlock_op;
    case SHK_OBJ_SEMAPHORE:
        return &shk_sem_op;
    case SHK_OBJ_RWLOCK:
        return write ? &shk_rw_write_op : &shk_rw_read_op;
    }
    return NULL;
}

int shk_rw_release_write(struct shk_rwlock_sh *rw)
{
    uint64_t me = shk_sync_self_proc();
    union shk_ident cur;
    cur.all = shk_load_seq_cst(&rw->writer.all);
    for (;;) {
        if (!shk_ident_same(cur.all, me))
            return shk_fail(SHK_ENOTOWNER, "release_write(): this process does not hold the "
                            "write lock");
        uint64_t exp = cur.all;
        if (shk_cas_seq_cst(&rw->writer.all, &exp, 0))
            break;
        cur.all = exp;
    }
    if (cur.f.word & SHK_ID_WAITERS)
        shk_futex_wake(&rw->writer.f.word, INT_MAX);
    return 0;
}


uint64_t shk_rw_read_acquisitions(struct shk_rwlock_sh *rw)
{
    uint64_t reads = 0;
    for (uint32_t i = 0; i < rw->nslots; i++)
        reads += shk_load_relaxed(&rw->slot[i].acquisitions);
    return reads;
}

uint32_t shk_rw_held_here(struct shk_rwlock_sh *rw, uint32_t slot)
{
    if (slot < rw->nslots && shk_load_relaxed(&rw->slot[slot].owner.all) == shk_sync_self_proc())
        return shk_load_relaxed(&rw->slot[slot].count);
    return 0;
}

int shk_rw_is_writer(struct shk_rwlock_sh *rw)
{
    return shk_ident_same(shk_load_acquire(&rw->writer.all), shk_sync_self_proc());
}

uint32_t shk_rw_readers(struct shk_rwlock_sh *rw, uint32_t *processes)
{
    uint32_t holds = 0, procs = 0;
    for (uint32_t i = 0; i < rw->nslots; i++) {
        uint32_t c = shk_load_seq_cst(&rw->slot[i].count);
        if (c) {
            holds += c;
            procs++;
        }
    }
    if (processes)
        *processes = procs;
    return holds;
}

/* ---------------------------------------------------------------------------------- */
/* Condition                                                                            */
/* ---------------------------------------------------------------------------------- */

uint32_t shk_cond_prepare(struct shk_cond_sh *c)
{
    shk_add_fetch_seq_cst(&c->sleepers, 1);
    shk_stat_add(&c->waits, 1);
    return shk_load_seq_cst(&c->seq);
}


/* w->observed holds the sequence shk_cond_prepare returned. */
static int cond_attempt(void *obj, struct shk_wait *w)
{
    struct shk_cond_sh *c = obj;
    if (shk_load_seq_cst(&c->seq) != w->observed)
        return 0;
    /* registered by shk_cond_prepare (under the lock), not per sleep */
    shk_wait_on_futex(w, &c->seq, w->observed, NULL);
    return EAGAIN;
}

const struct shk_wait_op shk_cond_op = {"Condition.wait", cond_attempt, NULL, NULL};

int shk_cond_wait(struct shk_cond_sh *c, uint32_t seq, struct shk_wait *w)
{
    w->observed = seq;
    return shk_wait_run(&shk_cond_op, c, w);
}

void shk_cond_finish(struct shk_cond_sh *c)
{
    uint32_t v = shk_load_relaxed(&c->sleepers);
    while (v > 0 && !shk_cas_seq_cst(&c->sleepers, &v, v - 1))
        ;
}

int shk_cond_unlock(struct shk_cond_sh *c, struct shk_lock_sh *l, int recursive, uint32_t *seq,
                    uint32_t *count)
{
    *count = 1;
    if (!shk_lock_is_mine(l, recursive))
        return shk_fail(SHK_ENOTOWNER, "cannot wait on un-acquired lock");
    *seq = shk_cond_prepare(c);
    int r = shk_lock_release_all(l, recursive, count);
    if (r)
        shk_cond_finish(c);
    return r;
}

int shk_cond_wait_lock(struct shk_cond_sh *c, struct shk_lock_sh *l, int recursive,
                       struct shk_wait *w)
{
    uint32_t seq, count;
    int r = shk_cond_unlock(c, l, recursive, &seq, &count);
    if (r)
        return r;
    w->observed = seq;
    do
        r = shk_wait_run(&shk_cond_op, c, w);
    while (r == EINTR);
    shk_cond_finish(c);
    struct shk_wait lw = SHK_WAIT_INIT(SHK_FOREVER, 0);
    int lr;
    do
        lr = shk_lock_acquire(l, recursive, &lw);
    while (lr == EINTR);
    if (lr != 0 && lr != SHK_EOWNERDEAD)
        return lr;
    if (recursive)
        shk_rlock_restore(l, count);
    return r;
}

int shk_cond_notify(struct shk_cond_sh *c, int n)
{
    if (n <= 0 || shk_load_seq_cst(&c->sleepers) == 0)
        return 0;
    shk_add_fetch_seq_cst(&c->seq, 1);
    shk_stat_add(&c->notifies, 1);
    return shk_futex_wake(&c->seq, n);
}

/* ---------------------------------------------------------------------------------- */
/* Barrier                                                                              */
/* ---------------------------------------------------------------------------------- */

static void barrier_break_locked(struct shk_barrier_sh *b)
{
    if (b->broken)
        return;
    uint32_t g = b->gen;
    b->broken = 1;
    b->broken_hist |= (uint64_t)1 << (g % 64);
    b->count = 0;
    b->breaks++;
    /* the next generation starts clean; bumping gen wakes every waiter */
    b->broken_hist &= ~((uint64_t)1 << ((g + 1) % 64));
    shk_store_seq_cst(&b->gen, g + 1);
}

static int barrier_lock(struct shk_barrier_sh *b)
{
    int r = shk_mutex_lock(&b->mutex, NULL);
    if (r == SHK_EOWNERDEAD) {
        /* a party died inside: whatever it was doing, the barrier cannot be trusted */
        barrier_break_locked(b);
        shk_mutex_consistent(&b->mutex);
        shk_futex_wake(&b->gen, INT_MAX);
        return 0;
    }
    return r;
}

static void barrier_unlock_wake(struct shk_barrier_sh *b, int wake)
{
    shk_mutex_unlock(&b->mutex);
    if (wake)
        shk_futex_wake(&b->gen, INT_MAX);
}

void shk_barrier_abort(struct shk_barrier_sh *b)
{
    if (barrier_lock(b) != 0)
        return;
    barrier_break_locked(b);
    barrier_unlock_wake(b, 1);
}

void shk_barrier_reset(struct shk_barrier_sh *b)
{
    if (barrier_lock(b) != 0)
        return;
    int wake = 0;
    if (b->count > 0) {
        barrier_break_locked(b); /* the parties waiting now get BrokenBarrierError */
        wake = 1;
    }
    b->broken = 0;
    b->count = 0;
    barrier_unlock_wake(b, wake);
}

int shk_barrier_complete(struct shk_barrier_sh *b, uint32_t gen)
{
    int r = barrier_lock(b);
    if (r)
        return r;
    if (b->gen != gen || b->broken) {
        shk_mutex_unlock(&b->mutex);
        return shk_fail(SHK_EBROKEN, "barrier was broken while its action ran");
    }
    b->broken_hist &= ~((uint64_t)1 << (gen % 64));
    b->broken_hist &= ~((uint64_t)1 << ((gen + 1) % 64));
    b->count = 0;
    b->passed++;
    shk_store_seq_cst(&b->gen, gen + 1);
    barrier_unlock_wake(b, 1);
    return 0;
}

/* A party of this generation died? (liveness of the arrived ones, without the mutex) */
static int barrier_party_died(struct shk_barrier_sh *b, uint32_t gen)
{
    uint32_t n = shk_load_seq_cst(&b->count);
    if (n > b->parties)
        n = b->parties;
    for (uint32_t i = 0; i < n; i++) {
        uint64_t o = shk_load_seq_cst(&b->arrived[i].all);
        if (o && !is_self_proc(o) && !shk_sync_ident_alive(o))
            return shk_load_seq_cst(&b->gen) == gen;
    }
    return 0;
}


#define BARRIER_ARRIVED 1 /* w->phase: arrived, waiting for the generation to end */
#define BARRIER_LAST 2    /* w->phase: the last party (runs the action, then completes) */

/* w->observed: the arrival index; w->aux: the generation arrived in. */
static int barrier_attempt(void *obj, struct shk_wait *w)
{
    struct shk_barrier_sh *b = obj;
    int r;
    if (w->phase == 0) {
        /* arrive */
        if ((r = barrier_lock(b)) != 0)
            return r;
        if (b->broken) {
            shk_mutex_unlock(&b->mutex);
            return shk_fail(SHK_EBROKEN, "barrier is broken");
        }
        if (b->count >= b->parties) {
            /* every party of this generation is in and its action is running: wait for
             * the next generation, then arrive */
            uint32_t g = b->gen;
            shk_mutex_unlock(&b->mutex);
            shk_wait_on_futex(w, &b->gen, g, NULL);
            return EAGAIN;
        }
        uint32_t i = b->count;
        w->aux = b->gen;
        b->arrived[i].all = shk_sync_self_proc();
        b->count = i + 1;
        w->observed = i;
        w->phase = i + 1 == b->parties ? BARRIER_LAST : BARRIER_ARRIVED;
        shk_mutex_unlock(&b->mutex);
        if (w->phase == BARRIER_LAST)
            return 0; /* released only once its action ran: shk_barrier_complete */
    }
    uint32_t g = w->aux;
    for (int tries = 0; tries < 4; tries++) {
        if (shk_load_seq_cst(&b->gen) != g) {
            if (shk_load_seq_cst(&b->broken_hist) & ((uint64_t)1 << (g % 64)))
                return shk_fail(SHK_EBROKEN, "barrier was broken (aborted, reset, timed out, or "
                                "a party died) while waiting");
            return 0;
        }
        if (!live_check_due(w) || !barrier_party_died(b, g))
            break;
        if ((r = barrier_lock(b)) != 0)
            return r;
        int wake = b->gen == g;
        if (wake)
            barrier_break_locked(b);
        barrier_unlock_wake(b, wake);
    }
    shk_wait_on_futex(w, &b->gen, g, &b->sleepers);
    retry_at_next_check(w);
    return EAGAIN;
}

/* A party that gives up after arriving breaks the barrier (threading's semantics: the
 * others must not wait for it forever); a timeout says so. */
static int barrier_give_up(void *obj, struct shk_wait *w, int why)
{
    struct shk_barrier_sh *b = obj;
    if (w->phase != BARRIER_ARRIVED)
        return why;
    if (why == ECANCELED) {
        shk_barrier_abort(b);
        return why;
    }
    uint32_t g = w->aux;
    int r = barrier_lock(b);
    if (r)
        return r;
    int wake = b->gen == g;
    if (wake)
        barrier_break_locked(b);
    barrier_unlock_wake(b, wake);
    if (wake)
        return shk_fail(SHK_EBROKEN, "barrier wait timed out; the barrier is now broken");
    /* the generation ended just before we gave up: its outcome is ours */
    if (shk_load_seq_cst(&b->broken_hist) & ((uint64_t)1 << (g % 64)))
        return shk_fail(SHK_EBROKEN, "barrier was broken (aborted, reset, timed out, or a party "
                        "died) while waiting");
    return 0;
}

const struct shk_wait_op shk_barrier_op = {"Barrier.wait", barrier_attempt, barrier_give_up,
                                           head_spin};

int shk_barrier_wait(struct shk_barrier_sh *b, struct shk_wait *w, uint32_t *index, int *last)
{
    int r = shk_wait_run(&shk_barrier_op, b, w);
    shk_barrier_result(w, index, last);
    return r;
}

void shk_barrier_result(const struct shk_wait *w, uint32_t *index, int *last)
{
    *index = w->observed;
    *last = w->phase == BARRIER_LAST;
}

/* ---------------------------------------------------------------------------------- */
/* Statistics                                                                           */
/* ---------------------------------------------------------------------------------- */

#define F(rec, member, kind) SHK_FIELD(struct shk_##rec##_stats, member, kind)
static const struct shk_field lock_fields[] = {
    F(lock, owner_pid, I32), F(lock, owner_tid, I32), F(lock, count, U32),
    F(lock, waiters, U32), F(lock, acquisitions, U64), F(lock, contentions, U64),
    F(lock, owner_deaths, U64), F(lock, last_death_ns, U64), F(lock, last_dead_pid, I32),
    F(lock, spin_ns, U32), F(lock, owner_alive, TRI), {NULL, 0, 0},
};
static const struct shk_field sem_fields[] = {
    F(sem, value, U32), F(sem, initial, U32), F(sem, bounded, BOOL), F(sem, undo, BOOL),
    F(sem, waiters, U32), F(sem, slots, U32), F(sem, acquisitions, U64),
    F(sem, contentions, U64), F(sem, reclaimed, U64), F(sem, dead_owners, U64),
    F(sem, holders, U32), F(sem, held_here, U32), {NULL, 0, 0},
};
static const struct shk_field event_fields[] = {
    F(event, is_set, BOOL), F(event, waiters, U32), F(event, sets, U64), F(event, waits, U64),
    F(event, spin_ns, U32), {NULL, 0, 0},
};
static const struct shk_field rwlock_fields[] = {
    F(rwlock, writer_pid, I32), F(rwlock, readers, U32), F(rwlock, reader_processes, U32),
    F(rwlock, waiters, U32), F(rwlock, max_readers, U32), F(rwlock, read_acquisitions, U64),
    F(rwlock, write_acquisitions, U64), F(rwlock, contentions, U64),
    F(rwlock, owner_deaths, U64), F(rwlock, reader_deaths, U64), F(rwlock, held_here, U32),
    {NULL, 0, 0},
};
/* (lock_name is a string: the caller adds it) */
static const struct shk_field cond_fields[] = {
    F(cond, waiters, U32), F(cond, notifies, U64), F(cond, waits, U64),
    F(cond, lock_type, U32), F(cond, lock_offset, U32), {NULL, 0, 0},
};
static const struct shk_field barrier_fields[] = {
    F(barrier, parties, U32), F(barrier, n_waiting, U32), F(barrier, broken, BOOL),
    F(barrier, waiters, U32), F(barrier, passed, U64), F(barrier, breaks, U64),
    F(barrier, generation, U32), {NULL, 0, 0},
};
#undef F

/* A Lock's owner word holds the pid; an RLock's the thread id, with the process beside. */
static void lock_stats(struct shk_lock_sh *l, int rec, struct shk_lock_stats *st)
{
    union shk_ident cur;
    cur.all = shk_load_acquire(&l->owner.all);
    uint32_t id = cur.f.word & SHK_ID_MASK;
    st->owner_pid = rec ? (id ? l->owner_pid : 0) : (int32_t)id;
    st->owner_tid = rec ? (int32_t)id : 0;
    st->count = rec ? (id ? l->count : 0) : (id ? 1 : 0);
    st->waiters = shk_load_relaxed(&l->sleepers);
    st->acquisitions = l->acquisitions;
    st->contentions = l->contentions;
    st->owner_deaths = l->owner_deaths;
    st->last_death_ns = l->last_death_ns;
    st->last_dead_pid = l->last_dead_pid;
    st->spin_ns = l->head.spin_ns;
    st->owner_alive = id ? shk_sync_ident_alive(cur.all) : -1;
}

static void sem_stats(struct shk_sem_sh *s, struct shk_sem_stats *st)
{
    st->value = s->value;
    st->initial = s->bound;
    st->bounded = (s->head.flags & SHK_SYNCF_BOUNDED) != 0;
    st->undo = (s->head.flags & SHK_SYNCF_UNDO) != 0;
    st->waiters = s->sleepers;
    st->slots = s->nslots;
    st->acquisitions = s->acquisitions;
    st->contentions = s->contentions;
    st->reclaimed = s->reclaimed;
    st->dead_owners = s->dead_owners;
    st->holders = shk_sem_holders(s);
    st->held_here = shk_sem_held(s);
}

static void rwlock_stats(struct shk_rwlock_sh *rw, uint32_t slot, struct shk_rwlock_stats *st)
{
    st->writer_pid = (int32_t)shk_ident_id(shk_load_acquire(&rw->writer.all));
    st->readers = shk_rw_readers(rw, &st->reader_processes);
    st->waiters = rw->sleepers;
    st->max_readers = rw->nslots;
    st->read_acquisitions = shk_rw_read_acquisitions(rw);
    st->write_acquisitions = rw->write_acquisitions;
    st->contentions = rw->contentions;
    st->owner_deaths = rw->owner_deaths;
    st->reader_deaths = rw->reader_deaths;
    st->held_here = shk_rw_held_here(rw, slot);
}

const struct shk_field *shk_sync_stats(void *obj, uint32_t type, uint32_t slot,
                                       union shk_sync_stats *out)
{
    memset(out, 0, sizeof *out);
    switch (type) {
    case SHK_OBJ_LOCK:
    case SHK_OBJ_RLOCK:
        lock_stats(obj, type == SHK_OBJ_RLOCK, &out->lock);
        return lock_fields;
    case SHK_OBJ_SEMAPHORE:
        sem_stats(obj, &out->sem);
        return sem_fields;
    case SHK_OBJ_EVENT: {
        struct shk_event_sh *e = obj;
        out->event.is_set = shk_load_acquire(&e->state) & 1;
        out->event.waiters = e->sleepers;
        out->event.sets = e->sets;
        out->event.waits = e->waits;
        out->event.spin_ns = e->head.spin_ns;
        return event_fields;
    }
    case SHK_OBJ_RWLOCK:
        rwlock_stats(obj, slot, &out->rw);
        return rwlock_fields;
    case SHK_OBJ_CONDITION: {
        struct shk_cond_sh *c = obj;
        out->cond.waiters = c->sleepers;
        out->cond.notifies = c->notifies;
        out->cond.waits = c->waits;
        out->cond.lock_type = c->lock_type;
        out->cond.lock_offset = (uint32_t)offsetof(struct shk_cond_sh, lock);
        memcpy(out->cond.lock_name, c->lock_name, sizeof out->cond.lock_name);
        out->cond.lock_name[SHK_OBJ_NAME_MAX] = '\0';
        return cond_fields;
    }
    case SHK_OBJ_BARRIER: {
        struct shk_barrier_sh *b = obj;
        out->barrier.parties = b->parties;
        out->barrier.broken = b->broken != 0;
        out->barrier.n_waiting = b->broken ? 0 : b->count;
        out->barrier.waiters = b->sleepers;
        out->barrier.passed = b->passed;
        out->barrier.breaks = b->breaks;
        out->barrier.generation = b->gen;
        return barrier_fields;
    }
    default: return NULL;
    }
}
