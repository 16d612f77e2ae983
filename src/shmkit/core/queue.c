/*
 * queue.c - the multi-producer multi-consumer ring (see queue.h and layout.h "Queue").
 *
 * Memory ordering, in one place:
 *   - a record header is written word first (relaxed), then pos (release); readers load
 *     pos (acquire) and only then word: a matching pos guarantees the word is this
 *     record's, never a stale one from an earlier lap at the same place;
 *   - commit is an atomic exchange of the word (a full fence on every architecture we
 *     build for), so the waiter count read after it cannot be stale (no lost wake-up);
 *   - claims are 16-byte CAS on {tail, owner|count} and {head, lag|count}; the
 *     announcement in the member slot is stored (release) before the CAS, so whoever
 *     sees the new tail/head sees it;
 *   - a copy-first take reads the payload before its CAS: the record cannot be reclaimed
 *     while head has not passed it, and the CAS fails if anyone else moved head;
 *   - the free position (head - lag) moves only by CAS of the head pair: a consumer
 *     giving back the oldest range, or a reclaimer stepping over CONSUMED records;
 *     CONSUMED is final until reclaimed, so records marked while an older range was out
 *     are reclaimed by whoever needs the space next;
 *   - a claim-first consumer clears its announcement (release) only after giving its
 *     range back, so a repairer that finds it cleared finds the free position moved.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "queue.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <linux/membarrier.h>
#include <sys/random.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "atomics.h"
#include "errors.h"
#include "futex.h"
#include "mutex.h"
#include "proc.h"

#define W_LEN(w) ((uint64_t)(uint32_t)(w))
#define W_OWN(w) ((uint32_t)(((w) >> 32) & 0xffff))
#define W_STATE(w) ((uint32_t)(((w) >> 48) & 0xff))
#define W_KIND(w) ((uint32_t)((w) >> 56))
#define MKW(len, own, state, kind)                                                       \
    ((uint64_t)(uint32_t)(len) | ((uint64_t)((own) & 0xffff) << 32) |                    \
     ((uint64_t)(state) << 48) | ((uint64_t)(kind) << 56))
#define W_WITH_STATE(w, s) (((w) & ~(0xffull << 48)) | ((uint64_t)(s) << 48))

/* The head pair {head_pos, head_hi}: head_hi = lag << 32 | messages taken (mod 2^32);
 * free_pos = head_pos - lag (see layout.h). */
#define H_LAG(hi) ((hi) >> 32)
#define H_CNT(hi) ((uint32_t)(hi))
#define MKH(lag, cnt) (((uint64_t)(lag) << 32) | (uint64_t)(uint32_t)(cnt))

#define R_STATE(c) ((uint32_t)(c))
#define R_OWN(c) ((uint32_t)(((c) >> 32) & 0xffff))
#define R_GEN(c) ((uint32_t)((c) >> 48))
#define MKR(state, own, gen) \
    ((uint64_t)(state) | ((uint64_t)((own) & 0xffff) << 32) | ((uint64_t)((gen) & 0xffff) << 48))

#define DEFAULT_CAP (1u << 20)
#define SLICE_NS (20u * 1000 * 1000)       /* sleep slices: dead processes noticed by then */
#define FIRST_SLICE_NS (5u * 1000 * 1000)  /* unfenced first sleep (see "waiting"); longer
                                              than a tick: no timer reprogramming per sleep */
#define DEFAULT_SPIN_NS 50000u             /* Queue.spin's default */
#define BATCH_MAX 65535u                   /* records per claim (SKIP count is 16 bits) */
#define PREFETCH_AHEAD 256u                /* producers warm the line this far past a claim */
#define SPACE_CHUNK (128u << 10)           /* a producer waiting for space waits for this
                                              much more while consumers are active (at
                                              most an eighth of the ring) */
#define SPACE_LOOK_EVERY 4u                /* ... and looks at the head pair at every 4th
                                              of its spin's looks (every ~64 pauses) */

static int die_at;

void shk_queue_debug_die(int where)
{
    die_at = where;
}

static void maybe_die(int where)
{
    if (die_at == where) {
        kill(getpid(), SIGKILL);
        for (;;)
            pause();
    }
}

/* ---- fork generation ------------------------------------------------------------- */

unsigned shk_queue_fork_generation = 1;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static void on_fork_child(void)
{
    shk_queue_fork_generation++;
}

static void install_atfork(void)
{
    pthread_atfork(NULL, NULL, on_fork_child);
}


/* ---- asymmetric fences -------------------------------------------------------------- */

/*
 * A waker publishes (a commit, a give-back) and then reads a waiter count; a waiter
 * bumps the count and then re-checks the condition.  Each side needs a full fence
 * between its store and its load, or both can miss (a lost wake-up).  The wakers are the
 * fast paths, the waiters are about to sleep anyway: so when every process has
 * registered for membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED), wakers use plain release
 * stores and the waiter pays for both with one membarrier() (~1 us), which makes every
 * running thread of the registered processes execute a full fence.  Without it (old
 * kernels), wakers use an atomic exchange (a full fence) as before.
 */
static int asym_fences = 0;

static void register_membarrier(void)
{
    long r = syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED, 0, 0);
    asym_fences = r == 0;
}

static inline void publish_word(uint64_t *p, uint64_t v)
{
    if (asym_fences)
        shk_store_release(p, v);
    else
        shk_exchange_seq_cst(p, v);
}

/* The waiter's half: after registering, before re-checking. */
static inline void waiter_fence(void)
{
    if (asym_fences)
        syscall(SYS_membarrier, MEMBARRIER_CMD_GLOBAL_EXPEDITED, 0, 0);
}

/* ---- small helpers ------------------------------------------------------------------ */

/* A consistent snapshot of the head pair without a locked instruction: the pair only
 * changes by 16-byte CAS and head_pos only grows, so an unchanged head_pos around the
 * read of head_hi means both halves belong to one moment.  If head_pos moves at every
 * look (consumers racing, or someone writing garbage), take the line instead. */
static inline void head_load(struct shk_queue_sh *sh, uint64_t *pos, uint64_t *hi)
{
    uint64_t a = shk_load_acquire(&sh->head_pos);
    for (int tries = 0; tries < 64; tries++) {
        uint64_t h = shk_load_acquire(&sh->head_hi);
        uint64_t b = shk_load_acquire(&sh->head_pos);
        if (a == b) {
            *pos = a;
            *hi = h;
            return;
        }
        a = b;
    }
    shk_load16_seq_cst(&sh->head_pos, pos, hi);
}

/* Can this head pair be true?  Positions are multiples of the record alignment and the
 * lag (taken, not given back) is at most the capacity.  Everything read from shared
 * memory is input: a pair that fails this is corruption, never followed. */
static inline int head_sane(const struct shk_queue *q, uint64_t pos, uint64_t hi)
{
    return ((pos | H_LAG(hi)) & (SHK_QREC_ALIGN - 1)) == 0 && H_LAG(hi) <= q->cap;
}

static int head_corrupt(uint64_t pos, uint64_t hi)
{
    return shk_fail(SHK_ECORRUPT, "queue: head position %llu with %llu bytes taken is "
                    "impossible (not aligned, or more than the capacity)",
                    (unsigned long long)pos, (unsigned long long)H_LAG(hi));
}

/* Oldest position not given back (everything before it is free space). */
static inline uint64_t free_load(struct shk_queue_sh *sh)
{
    uint64_t pos, hi;
    head_load(sh, &pos, &hi);
    return pos - H_LAG(hi);
}

/* The header at pos.  hmask also clears the low bits: a corrupted position can never make
 * a 16-byte header straddle the end of the ring. */
static inline struct shk_qrec *rec(struct shk_queue *q, uint64_t pos)
{
    return (struct shk_qrec *)(q->ring + (pos & q->hmask));
}

static inline struct shk_qslot *slot_at(struct shk_queue *q, uint32_t idx)
{
    return (struct shk_qslot *)((uint8_t *)q->sh + sizeof(struct shk_queue_sh)) + idx;
}

static inline struct shk_qresv *resv_at(struct shk_queue *q, uint32_t idx)
{
    return (struct shk_qresv *)((uint8_t *)q->sh + sizeof(struct shk_queue_sh) +
                                (size_t)SHK_QUEUE_SLOTS * sizeof(struct shk_qslot)) + idx;
}

static inline void ring_write(struct shk_queue *q, uint64_t at, const void *src, uint64_t n)
{
    uint64_t o = at & q->mask, first = q->cap - o;
    if (n <= first) {
        memcpy(q->ring + o, src, n);
    } else {
        memcpy(q->ring + o, src, first);
        memcpy(q->ring, (const uint8_t *)src + first, n - first);
    }
}


/* Is the process holding member slot idx alive?  Our own slot always is. */
static int slot_alive(struct shk_queue *q, uint32_t idx)
{
    if (idx == q->slot)
        return 1;
    struct shk_qslot *s = slot_at(q, idx);
    int32_t pid = shk_load_acquire(&s->pid);
    if (pid <= 0)
        return 0;
    return shk_proc_alive((pid_t)pid, shk_load_acquire(&s->start));
}

/*
 * Wake the sleepers of a futex word: only when one is registered, and only once per sleep:
 * sleepers arm the sequence value they sleep on; the first waker to see it still current
 * moves it on (CAS) and makes the one system call; later wakers see it moved and skip.
 */
static inline void wake_armed(uint32_t *seq, uint32_t *waiters, uint32_t *armed)
{
    /* the caller's publish was a full fence, or sleepers fence with membarrier */
    if (shk_load_relaxed(waiters)) {
        uint32_t s = shk_load_relaxed(seq);
        if (shk_load_relaxed(armed) == s && shk_cas_seq_cst_fail_relaxed(seq, &s, s + 1))
            shk_futex_wake(seq, INT32_MAX);
    }
}

/* Arm sequence value s (the armed word only moves forward, modulo 2^32; a CAS that
 * fails saw another sleeper arm, so a few tries always settle it). */
static inline void arm(uint32_t *armed, uint32_t s)
{
    uint32_t a = shk_load_relaxed(armed);
    for (int tries = 0; tries < 64 && (int32_t)(s - a) > 0; tries++)
        if (shk_cas_seq_cst_fail_relaxed(armed, &a, s))
            return;
}

/* Repairs are counted in the repairer's slot, or straight in the totals without one. */
static void add_drops(struct shk_queue *q, uint64_t n)
{
    if (q->ms)
        shk_stat_add(&q->ms->drops, n);
    else
        shk_stat_add(&q->sh->retired_drops, n);
}

static void add_pdrops(struct shk_queue *q, uint64_t n)
{
    if (q->ms)
        shk_stat_add(&q->ms->pdrops, n);
    else
        shk_stat_add(&q->sh->retired_pdrops, n);
}

static void add_recoveries(struct shk_queue *q, uint64_t n)
{
    if (q->ms)
        shk_stat_add(&q->ms->recoveries, n);
    else
        shk_stat_add(&q->sh->retired_recoveries, n);
}

static int repair_lock(struct shk_queue *q)
{
    int r = shk_mutex_lock(&q->sh->repair, NULL);
    if (r == SHK_EOWNERDEAD) {
        /* a repairer died: every repair re-validates what it changes, so there is
         * nothing to undo; but one that died between giving a record back and raising
         * the redelivery hint left it invisible: raise the hint (getters clear it) */
        if (q->ack)
            shk_add_fetch_seq_cst(&q->sh->redeliverable, 1);
        shk_mutex_consistent(&q->sh->repair);
        return 0;
    }
    return r;
}

static void repair_unlock(struct shk_queue *q)
{
    shk_mutex_unlock(&q->sh->repair);
}

/* ---- open / members -------------------------------------------------------------- */

static uint64_t layout_ring_rel(void)
{
    uint64_t n = sizeof(struct shk_queue_sh) + (uint64_t)SHK_QUEUE_SLOTS * sizeof(struct shk_qslot) +
                 (uint64_t)SHK_QUEUE_RESV * sizeof(struct shk_qresv);
    return (n + SHK_PAGE - 1) / SHK_PAGE * SHK_PAGE;
}

struct init_arg {
    uint64_t cap, max_messages;
    uint32_t flags;
};

static int queue_init(struct shk_zone *z, uint64_t off, uint64_t size, void *argp)
{
    struct init_arg *a = argp;
    struct shk_queue_sh *sh = shk_zone_ptr(z, off, size);
    if (!sh)
        return SHK_ECORRUPT;
    uint64_t rnd = 0;
    if (getrandom(&rnd, sizeof rnd, GRND_NONBLOCK) != (ssize_t)sizeof rnd)
        rnd = shk_now_ns() * 0x9e3779b97f4a7c15ull ^ (uint64_t)getpid();
    /* a random start (below 2^61: positions never overflow) aligned to the capacity */
    uint64_t base = ((rnd & ((1ull << 61) - 1)) | (1ull << 40)) & ~(a->cap - 1);
    sh->version = SHK_QUEUE_VERSION;
    sh->nslots = SHK_QUEUE_SLOTS;
    sh->nresv = SHK_QUEUE_RESV;
    sh->capacity = a->cap;
    sh->max_messages = a->max_messages;
    sh->flags = a->flags;
    sh->ring_rel = layout_ring_rel();
    sh->base = base;
    sh->created_ns = shk_wall_ns();
    sh->tail_pos = sh->head_pos = base;
    int r = shk_mutex_init(&sh->repair);
    if (r)
        return shk_fail(r, "shk_queue_open(): cannot initialise the repair mutex");
    shk_store_release(&sh->magic, SHK_QUEUE_MAGIC);
    return 0;
}

static int check_sh(struct shk_queue *q, const struct shk_dirent *e, const char *name)
{
    struct shk_queue_sh *sh = q->sh;
    if (sh->magic != SHK_QUEUE_MAGIC)
        return shk_fail(SHK_ECORRUPT, "queue '%s': bad magic 0x%016llx", name,
                        (unsigned long long)sh->magic);
    if (sh->version != SHK_QUEUE_VERSION)
        return shk_fail(SHK_EVERSION, "queue '%s' has layout version %u; this build "
                        "expects %u", name, sh->version, SHK_QUEUE_VERSION);
    uint64_t cap = sh->capacity;
    if (cap < SHK_QUEUE_MIN_CAP || cap > SHK_QUEUE_MAX_CAP || (cap & (cap - 1)) ||
        sh->nslots != SHK_QUEUE_SLOTS || sh->nresv != SHK_QUEUE_RESV ||
        sh->ring_rel != layout_ring_rel() || sh->ring_rel + cap > e->size)
        return shk_fail(SHK_ECORRUPT, "queue '%s': header fields are inconsistent "
                        "(capacity %llu, object %llu bytes)", name,
                        (unsigned long long)cap, (unsigned long long)e->size);
    return 0;
}

/* The owner id a handle in slot idx (generation gen) writes into the records it takes. */
static inline uint32_t taker_id(uint32_t idx, uint32_t gen)
{
    return (idx + 1) | ((gen & 0x7fu) << SHK_QTAKER_SLOT_BITS);
}

int shk_queue_register(struct shk_queue *q)
{
    pthread_once(&atfork_once, install_atfork);
    register_membarrier(); /* per process, so again in fork children (idempotent) */
    int32_t pid = (int32_t)shk_self_pid();
    uint64_t start = shk_self_start();
    for (int pass = 0; pass < 2; pass++) {
        for (uint32_t i = 0; i < SHK_QUEUE_SLOTS; i++) {
            struct shk_qslot *s = slot_at(q, i);
            int32_t expect = 0;
            if (shk_load_relaxed(&s->pid) != 0)
                continue;
            if (!shk_cas_acq_rel(&s->pid, &expect, pid))
                continue;
            shk_store_release(&s->start, start);
            uint32_t gen = shk_load_relaxed(&s->gen) + 1;
            shk_store_relaxed(&s->gen, gen);
            uint32_t hwm = shk_load_relaxed(&q->sh->slot_hwm);
            for (int tries = 0; tries < 1024 && hwm < i + 1; tries++)
                if (shk_cas_acq_rel(&q->sh->slot_hwm, &hwm, i + 1))
                    break;
            q->slot = i;
            q->me = i + 1;
            q->ms = s;
            q->fork_gen = shk_queue_fork_generation;
            q->taker = taker_id(i, gen);
            q->fifo_head = q->fifo_len = 0; /* (a fork child holds none of its parent's) */
            return 0;
        }
        if (pass == 0) {
            int r = shk_queue_repair(q); /* scrubs the slots of dead processes */
            if (r < 0)
                return r;
        }
    }
    q->slot = SHK_QNOSLOT;
    return shk_fail(SHK_EFULL, "queue: all %d member slots are held by live handles",
                    SHK_QUEUE_SLOTS);
}

int shk_queue_open(struct shk_zone *z, const char *name, uint64_t capacity,
                   uint64_t max_messages, int flags, struct shk_queue *q, int *created)
{
    return shk_queue_open_delivery(z, name, capacity, max_messages, SHK_QDELIVERY_ANY, flags,
                                   q, created);
}

static const char *delivery_name(int ack)
{
    return ack ? "at-least-once" : "at-most-once";
}

static const char *mode_name(uint32_t bits)
{
    return bits == SHK_QF_MODE_OBJECTS ? "objects" : bits == SHK_QF_MODE_BYTES ? "bytes"
                                                                              : "unrecorded";
}

int shk_queue_open_delivery(struct shk_zone *z, const char *name, uint64_t capacity,
                            uint64_t max_messages, int delivery, int flags,
                            struct shk_queue *q, int *created)
{
    return shk_queue_open_mode(z, name, capacity, max_messages, delivery, SHK_QMODE_ANY, flags,
                               q, created);
}

int shk_queue_mode(const struct shk_queue *q)
{
    uint32_t bits = shk_load_relaxed(&q->sh->flags) & SHK_QF_MODE_MASK;
    return bits == SHK_QF_MODE_OBJECTS ? SHK_QMODE_OBJECTS
         : bits == SHK_QF_MODE_BYTES   ? SHK_QMODE_BYTES
                                       : SHK_QMODE_ANY;
}

int shk_queue_open_mode(struct shk_zone *z, const char *name, uint64_t capacity,
                        uint64_t max_messages, int delivery, int mode, int flags,
                        struct shk_queue *q, int *created)
{
    shk_clear_detail();
    if (delivery < SHK_QDELIVERY_ANY || delivery > SHK_QDELIVERY_AT_LEAST_ONCE)
        return shk_fail(EINVAL, "delivery must be at-most-once or at-least-once");
    if (mode < SHK_QMODE_ANY || mode > SHK_QMODE_OBJECTS)
        return shk_fail(EINVAL, "queue mode must be bytes or objects");
    uint32_t mode_bits = mode == SHK_QMODE_OBJECTS ? SHK_QF_MODE_OBJECTS : SHK_QF_MODE_BYTES;
    memset(q, 0, sizeof *q);
    q->slot = SHK_QNOSLOT;
    uint64_t cap = capacity ? capacity : DEFAULT_CAP;
    if (cap > SHK_QUEUE_MAX_CAP)
        return shk_fail(SHK_ETOOBIG, "queue capacity %llu bytes is above the maximum of %llu",
                        (unsigned long long)cap, (unsigned long long)SHK_QUEUE_MAX_CAP);
    uint64_t c = SHK_QUEUE_MIN_CAP;
    while (c < cap)
        c <<= 1;
    cap = c;
    struct init_arg a = {cap, max_messages,
                         (delivery == SHK_QDELIVERY_AT_LEAST_ONCE ? SHK_QF_AT_LEAST_ONCE : 0) |
                             mode_bits};
    struct shk_dirent e;
    int r = shk_zone_obj_get(z, name, SHK_OBJ_QUEUE, layout_ring_rel() + cap, cap, flags,
                             queue_init, &a, &e, created);
    if (r)
        return r;
    q->z = z;
    q->obj_off = e.offset;
    q->sh = shk_zone_ptr(z, e.offset, e.size);
    if (!q->sh)
        return SHK_ECORRUPT;
    if ((r = check_sh(q, &e, name)) != 0)
        return r;
    if (!*created) {
        if (capacity && q->sh->capacity != cap)
            return shk_fail(SHK_EMISMATCH, "queue '%s' exists with capacity %llu bytes; it "
                            "was declared again with %llu", name,
                            (unsigned long long)q->sh->capacity, (unsigned long long)cap);
        if (max_messages && q->sh->max_messages != max_messages)
            return shk_fail(SHK_EMISMATCH, "queue '%s' exists with max_messages %llu; it was "
                            "declared again with %llu", name,
                            (unsigned long long)q->sh->max_messages,
                            (unsigned long long)max_messages);
        int ack = (q->sh->flags & SHK_QF_AT_LEAST_ONCE) != 0;
        if (delivery != SHK_QDELIVERY_ANY && ack != (delivery == SHK_QDELIVERY_AT_LEAST_ONCE))
            return shk_fail(SHK_EOBJMISMATCH, "queue '%s' exists with delivery %s; it was "
                            "declared again with delivery %s", name, delivery_name(ack),
                            delivery_name(!ack));
    }
    uint32_t qflags = q->sh->flags;
    if ((qflags & ~SHK_QF_KNOWN) || (qflags & SHK_QF_MODE_MASK) == SHK_QF_MODE_MASK)
        return shk_fail(SHK_ECORRUPT, "queue '%s': unknown flags 0x%x", name, qflags);
    if (!*created && mode != SHK_QMODE_ANY && (qflags & SHK_QF_MODE_MASK) &&
        (qflags & SHK_QF_MODE_MASK) != mode_bits)
        return shk_fail(SHK_EOBJMISMATCH, "queue '%s' exists with mode %s; it was declared "
                        "again with mode %s", name, mode_name(qflags & SHK_QF_MODE_MASK),
                        mode_name(mode_bits));
    q->ack = (q->sh->flags & SHK_QF_AT_LEAST_ONCE) != 0;
    q->cap = q->sh->capacity;
    q->mask = q->cap - 1;
    q->hmask = q->mask & ~(uint64_t)(SHK_QREC_ALIGN - 1);
    q->max_messages = q->sh->max_messages;
    q->ring = (uint8_t *)q->sh + q->sh->ring_rel;
    q->free_cache = free_load(q->sh);
    shk_queue_set_spin(q, DEFAULT_SPIN_NS);
    return shk_queue_register(q);
}

static void notify_done(struct shk_queue *q);

/* Fold a slot's counters into the queue's totals and clear it (not its pid).  The tasks
 * it took and did not mark done are released (at-most-once: counted as abandoned). */
static void retire_slot(struct shk_queue *q, struct shk_qslot *s)
{
    struct shk_queue_sh *sh = q->sh;
    uint64_t got = shk_load_relaxed(&s->got), done = shk_load_relaxed(&s->done);
    shk_stat_add(&sh->retired_done, done);
    shk_stat_add(&sh->retired_redeliveries, shk_load_relaxed(&s->redeliveries));
    if (got > done)
        shk_stat_add(&sh->abandoned, got - done);
    shk_store_relaxed(&s->got, 0);
    shk_store_relaxed(&s->done, 0);
    shk_store_relaxed(&s->redeliveries, 0);
    if (got > done)
        notify_done(q);
    shk_stat_add(&sh->retired_waits, shk_load_relaxed(&s->waits));
    shk_stat_add(&sh->retired_drops, shk_load_relaxed(&s->drops));
    shk_stat_add(&sh->retired_recoveries, shk_load_relaxed(&s->recoveries));
    shk_stat_add(&sh->retired_pdrops, shk_load_relaxed(&s->pdrops));
    shk_store_relaxed(&s->pdrops, 0);
    shk_store_relaxed(&s->waits, 0);
    shk_store_relaxed(&s->drops, 0);
    shk_store_relaxed(&s->recoveries, 0);
    shk_store_relaxed(&s->claim_pos, 0);
    shk_store_relaxed(&s->claim_size, 0);
    shk_store_relaxed(&s->claim_n, 0);
    shk_store_relaxed(&s->take_pos, 0);
    shk_store_relaxed(&s->take_end, 0);
    shk_store_relaxed(&s->start, 0);
}

static uint64_t give_back_taken(struct shk_queue *q, uint32_t taker);

void shk_queue_release(struct shk_queue *q)
{
    if (!q->sh || q->slot == SHK_QNOSLOT || q->fork_gen != shk_queue_fork_generation) {
        free(q->fifo);
        q->fifo = NULL;
        q->fifo_cap = q->fifo_head = q->fifo_len = 0;
        return;
    }
    if (q->ack && q->fifo_len && repair_lock(q) == 0) {
        /* messages taken and not acknowledged: deliverable again, now */
        give_back_taken(q, q->taker);
        repair_unlock(q);
    }
    free(q->fifo);
    q->fifo = NULL;
    q->fifo_cap = q->fifo_head = q->fifo_len = 0;
    retire_slot(q, q->ms);
    shk_store_release(&q->ms->pid, 0);
    q->slot = SHK_QNOSLOT;
    q->me = 0;
    q->ms = NULL;
}

/* ---- producing --------------------------------------------------------------------- */

static uint64_t reclaim_forward(struct shk_queue *q);

/* Is the header of the latest claim (owner `owner`, ending at tail_pos) written?  A claim
 * whose owner moved on to another announcement was written before it did. */
static int latest_claim_written(struct shk_queue *q, uint32_t owner, uint64_t tail_pos)
{
    if (owner == 0 || owner > SHK_QUEUE_SLOTS)
        return 1;
    struct shk_qslot *s = slot_at(q, owner - 1);
    uint64_t p = shk_load_acquire(&s->claim_pos), sz = shk_load_relaxed(&s->claim_size);
    if (p + sz != tail_pos)
        return 1; /* a torn or moved-on announcement: the CAS re-validates the tail */
    return shk_load_acquire(&rec(q, p)->pos) == p;
}

/* Refresh the producer's view of free space (it said "no room"). */
static __attribute__((noinline)) uint64_t refresh_free(struct shk_queue *q)
{
    q->free_cache = reclaim_forward(q);
    return q->free_cache;
}

/* The slow look of a claim at tail position lo for a first record of `first` bytes: the
 * cached free position said "no room" (or the tail is not aligned).  Refresh it; 0 with
 * *used = bytes in use, SHK_EFULLQ, or SHK_ECORRUPT: the tail never moves back and never
 * runs more than the capacity ahead of the free position, so a tail that does is
 * corrupted (a cached free position lags the real one, it is never ahead of the tail). */
static __attribute__((noinline)) int claim_slow(struct shk_queue *q, uint64_t lo,
                                                uint64_t first, uint64_t *used)
{
    if (lo & (SHK_QREC_ALIGN - 1))
        return shk_fail(SHK_ECORRUPT, "queue: tail position %llu is not a multiple of %d",
                        (unsigned long long)lo, SHK_QREC_ALIGN);
    uint64_t f = refresh_free(q);
    if (lo < f && shk_load_acquire(&q->sh->tail_pos) != lo) {
        /* lo is an old look at the tail (this producer was descheduled while others put
         * and got past it), not corruption: the claim's CAS fails on it and looks again */
        *used = 0;
        return 0;
    }
    if (lo < f)
        return shk_fail(SHK_ECORRUPT, "queue: tail position %llu is behind the free position "
                        "%llu", (unsigned long long)lo, (unsigned long long)f);
    if (lo - f > q->cap)
        return shk_fail(SHK_ECORRUPT, "queue: tail %llu is more than the capacity ahead of "
                        "free %llu", (unsigned long long)lo, (unsigned long long)f);
    *used = lo - f;
    return first > q->cap - *used ? SHK_EFULLQ : 0;
}

/* Claims give up after this many failed CAS (each one another producer's success) and
 * this many rounds of waiting for a previous claimer's header: the caller waits and
 * comes back (no loop over shared state without a bound). */
#define CLAIM_TRIES 65536u
#define HEADER_SPINS 4096u

/* Warm the cache line `ahead` bytes past a claim for writing, if that space is free: the
 * transfer from wherever the line is (the consumer's cache, L3) overlaps this message's
 * work instead of stalling the next claim's locked instruction. */
static inline void prefetch_ahead(struct shk_queue *q, uint64_t end)
{
    uint64_t at = end + PREFETCH_AHEAD;
    if (at + 64 - q->free_cache <= q->cap)
        __builtin_prefetch(q->ring + (at & q->mask), 1);
}

/*
 * Claim space.  Single record: msgs == NULL, *size is its size.  Batch: the longest
 * prefix of msgs[0..*k) that fits now; *k and *size get what was claimed.  *pos gets the
 * claim's first position.
 */
static inline __attribute__((always_inline)) int
claim(struct shk_queue *q, const struct shk_qpart *msgs, size_t *k, uint64_t *size,
      uint64_t *pos)
{
    struct shk_queue_sh *sh = q->sh;
    uint64_t lo = shk_load_acquire(&sh->tail_pos), hi = shk_load_relaxed(&sh->tail_hi);
    unsigned spins = 0, tries = 0;
    for (;;) {
        if (__builtin_expect(shk_load_relaxed(&sh->closed) != 0, 0))
            return shk_fail(SHK_ECLOSED, "queue is closed: put() is not allowed");
        /* free_cache only ever lags the real free position: refresh it when it says "no
         * room" (or is so old that the tail has lapped it: `used` wraps) */
        uint64_t first = msgs ? shk_qrec_size(msgs[0].n) : *size;
        uint64_t used = lo - q->free_cache;
        if (__builtin_expect(used > q->cap - first || (lo & (SHK_QREC_ALIGN - 1)), 0)) {
            int r = claim_slow(q, lo, first, &used);
            if (r)
                return r;
        }
        uint64_t avail = q->cap - used;
        uint64_t count = hi & SHK_QCOUNT_MASK;
        uint64_t room = UINT64_MAX;
        if (q->max_messages) {
            uint32_t depth = (uint32_t)count - (uint32_t)q->hcount_cache;
            if (depth >= q->max_messages) {
                uint64_t hp, hh;
                head_load(sh, &hp, &hh);
                q->hcount_cache = H_CNT(hh);
                depth = (uint32_t)count - (uint32_t)q->hcount_cache;
                if (depth >= q->max_messages)
                    return SHK_EFULLQ;
            }
            room = q->max_messages - depth;
        }
        size_t n = 1;
        uint64_t total = first;
        if (msgs) {
            while (n < *k && n < room && n < BATCH_MAX) {
                uint64_t s = shk_qrec_size(msgs[n].n);
                if (total + s > avail)
                    break;
                total += s;
                n++;
            }
        }
        uint32_t owner = (uint32_t)(hi >> SHK_QOWNER_SHIFT);
        if (owner != q->me && !latest_claim_written(q, owner, lo)) {
            /* the previous claimer is between its CAS and its first header: wait for
             * it (nanoseconds), unless it died there; if it is alive but does not come
             * (descheduled, stopped), the caller waits for space, which sleeps */
            if (++spins < HEADER_SPINS) {
                shk_cpu_relax();
            } else {
                spins = 0;
                if (slot_alive(q, owner - 1) || ++tries > 4)
                    return SHK_EFULLQ;
                shk_queue_repair(q);
            }
            lo = shk_load_acquire(&sh->tail_pos);
            hi = shk_load_relaxed(&sh->tail_hi);
            continue;
        }
        struct shk_qslot *ms = q->ms;
        shk_store_relaxed(&ms->claim_size, total);
        shk_store_relaxed(&ms->claim_n, n);
        shk_store_release(&ms->claim_pos, lo);
        if (shk_cas16_seq_cst(&sh->tail_pos, &lo, &hi, lo + total,
                  ((uint64_t)q->me << SHK_QOWNER_SHIFT) | ((count + n) & SHK_QCOUNT_MASK))) {
            *pos = lo;
            *size = total;
            if (msgs)
                *k = n;
            prefetch_ahead(q, lo + total);
            if (__builtin_expect(die_at != 0, 0))
                maybe_die(SHK_QDIE_AFTER_CLAIM);
            return 0;
        }
        if (__builtin_expect(++tries > CLAIM_TRIES, 0))
            return SHK_EFULLQ; /* lost to other producers that often: wait, come back */
    }
}

static uint64_t frame_len(const struct shk_qpart *parts, int nparts)
{
    uint64_t n = 8 + 8 * (uint64_t)nparts;
    for (int i = 0; i < nparts; i++) {
        n = (n + SHK_QFRAME_ALIGN - 1) & ~(uint64_t)(SHK_QFRAME_ALIGN - 1);
        n += parts[i].n;
    }
    return n;
}

uint64_t shk_queue_record_size(const struct shk_qpart *parts, int nparts, uint32_t kind)
{
    uint64_t len = 0;
    if (kind == SHK_QK_REF) {
        len = sizeof(struct shk_qref);
    } else if (kind == SHK_QK_FRAMED) {
        len = frame_len(parts, nparts);
    } else {
        for (int i = 0; i < nparts; i++)
            len += parts[i].n;
    }
    return shk_qrec_size(len);
}

int shk_queue_put(struct shk_queue *q, const struct shk_qpart *parts, int nparts, uint32_t kind)
{
    uint64_t len = 0;
    if (kind == SHK_QK_FRAMED && (nparts < 1 || nparts > SHK_QFRAME_MAX_PARTS))
        return shk_fail(EINVAL, "a framed message has 1 to %d parts, not %d",
                        SHK_QFRAME_MAX_PARTS, nparts);
    if (kind == SHK_QK_FRAMED) {
        len = frame_len(parts, nparts);
    } else {
        for (int i = 0; i < nparts; i++)
            len += parts[i].n;
    }
    if (len > shk_queue_max_payload(q))
        return shk_fail(SHK_ETOOBIG, "message of %llu bytes can never fit in a queue of "
                        "%llu bytes (at most %llu per message)", (unsigned long long)len,
                        (unsigned long long)q->cap,
                        (unsigned long long)shk_queue_max_payload(q));
    uint64_t size = shk_qrec_size(len), pos = 0;
    int r = claim(q, NULL, NULL, &size, &pos);
    if (r)
        return r;
    struct shk_qrec *h = rec(q, pos);
    shk_store_relaxed(&h->word, MKW(len, q->me, SHK_QS_CLAIMED, kind));
    shk_store_release(&h->pos, pos);
    uint64_t at = pos + SHK_QREC_HDR;
    if (kind == SHK_QK_FRAMED) {
        uint32_t head[2] = {(uint32_t)nparts, 0};
        ring_write(q, at, head, 8);
        uint64_t o = 8;
        for (int i = 0; i < nparts; i++, o += 8)
            ring_write(q, at + o, &parts[i].n, 8);
        for (int i = 0; i < nparts; i++) {
            o = (o + SHK_QFRAME_ALIGN - 1) & ~(uint64_t)(SHK_QFRAME_ALIGN - 1);
            if (die_at == SHK_QDIE_MID_COPY && i == nparts - 1)
                maybe_die(SHK_QDIE_MID_COPY);
            ring_write(q, at + o, parts[i].p, parts[i].n);
            o += parts[i].n;
        }
    } else {
        for (int i = 0; i < nparts; i++) {
            if (die_at == SHK_QDIE_MID_COPY) {
                ring_write(q, at, parts[i].p, parts[i].n / 2);
                maybe_die(SHK_QDIE_MID_COPY);
            }
            ring_write(q, at, parts[i].p, parts[i].n);
            at += parts[i].n;
        }
    }
    publish_word(&h->word, MKW(len, q->me, SHK_QS_COMMITTED, kind));
    wake_armed(&q->sh->data_seq, &q->sh->data_waiters, &q->sh->data_armed);
    return 0;
}

int shk_queue_put1(struct shk_queue *q, const void *p, uint64_t len)
{
    if (__builtin_expect(len > shk_queue_max_payload(q) || die_at != 0, 0)) {
        struct shk_qpart part = {p, len};
        return shk_queue_put(q, &part, 1, SHK_QK_DATA); /* the error, or the test hooks */
    }
    uint64_t size = shk_qrec_size(len), pos = 0;
    int r = claim(q, NULL, NULL, &size, &pos);
    if (r)
        return r;
    struct shk_qrec *h = rec(q, pos);
    shk_store_relaxed(&h->word, MKW(len, q->me, SHK_QS_CLAIMED, SHK_QK_DATA));
    shk_store_release(&h->pos, pos);
    ring_write(q, pos + SHK_QREC_HDR, p, len);
    publish_word(&h->word, MKW(len, q->me, SHK_QS_COMMITTED, SHK_QK_DATA));
    wake_armed(&q->sh->data_seq, &q->sh->data_waiters, &q->sh->data_armed);
    return 0;
}

int shk_queue_put_many(struct shk_queue *q, const struct shk_qpart *msgs, size_t n, size_t *done)
{
    *done = 0;
    uint64_t maxp = shk_queue_max_payload(q);
    /* all or nothing for messages that can never fit: none is put */
    for (size_t i = 0; i < n; i++)
        if (msgs[i].n > maxp)
            return shk_fail(SHK_ETOOBIG, "put_many(): item %zu of %llu bytes can never fit in a "
                            "queue of %llu bytes (at most %llu per message); nothing was put",
                            i, (unsigned long long)msgs[i].n, (unsigned long long)q->cap,
                            (unsigned long long)maxp);
    while (*done < n) {
        const struct shk_qpart *m = msgs + *done;
        size_t k = n - *done;
        uint64_t size = 0, pos = 0;
        int r = claim(q, m, &k, &size, &pos);
        if (r == SHK_EFULLQ && *done > 0)
            return 0;
        if (r)
            return r;
        /* headers first, the first one last: once it is visible all of them are */
        uint64_t p = pos + size;
        for (size_t i = k; i-- > 0;) {
            p -= shk_qrec_size(m[i].n);
            struct shk_qrec *h = rec(q, p);
            shk_store_relaxed(&h->word, MKW(m[i].n, q->me, SHK_QS_CLAIMED, SHK_QK_DATA));
            shk_store_release(&h->pos, p);
        }
        p = pos;
        for (size_t i = 0; i < k; i++) {
            struct shk_qrec *h = rec(q, p);
            if (die_at == SHK_QDIE_MID_COPY && i == k / 2)
                maybe_die(SHK_QDIE_MID_COPY);
            ring_write(q, p + SHK_QREC_HDR, m[i].p, m[i].n);
            uint64_t w = MKW(m[i].n, q->me, SHK_QS_COMMITTED, SHK_QK_DATA);
            if (i + 1 < k)
                shk_store_release(&h->word, w);
            else
                publish_word(&h->word, w);
            p += shk_qrec_size(m[i].n);
        }
        *done += k;
        wake_armed(&q->sh->data_seq, &q->sh->data_waiters, &q->sh->data_armed);
    }
    return 0;
}

int shk_queue_put_more(struct shk_queue *q, const struct shk_qpart *msgs, size_t n,
                       size_t *total, int some, uint64_t *need)
{
    size_t done = 0;
    int r = shk_queue_put_many(q, msgs + *total, n - *total, &done);
    *total += done;
    if (*total == n || (some && *total))
        return 0;
    if (r && r != SHK_EFULLQ)
        return r;
    *need = shk_queue_record_size(&msgs[*total], 1, SHK_QK_DATA); /* room for the next one */
    return SHK_EFULLQ;
}

/* ---- consuming --------------------------------------------------------------------- */

/*
 * Look at the committed records from position lo: up to max_msgs messages (records of dead
 * producers are stepped over and counted), stopping before the payload total would pass
 * max_bytes (the first message always counts) and, with stop_at_ref, before a REF record
 * that is not the first.  *end: the position after them; *cnt: messages they stand for.
 */
static int scan(struct shk_queue *q, uint64_t lo, struct shk_qmsg *msgs, size_t max_msgs,
                uint64_t max_bytes, int stop_at_ref, uint64_t *end, uint64_t *cnt, size_t *nout)
{
    uint64_t p = lo, c = 0, bytes = 0;
    size_t n = 0;
    if (max_msgs == 0)
        max_msgs = 1;
    while (n < max_msgs && p - lo < q->cap) {
        struct shk_qrec *h = rec(q, p);
        if (shk_load_acquire(&h->pos) != p)
            break;
        uint64_t w = shk_load_acquire(&h->word);
        if (W_STATE(w) != SHK_QS_COMMITTED) {
            /* at or past the head a written header is CLAIMED or COMMITTED, nothing else
             * (CONSUMED ones lie behind it: our head was stale if it moved) */
            if (__builtin_expect(W_STATE(w) != SHK_QS_CLAIMED, 0)) {
                if (shk_load_acquire(&q->sh->head_pos) != lo)
                    return EAGAIN;
                return shk_fail(SHK_ECORRUPT, "queue record at %llu: state %u",
                                (unsigned long long)p, W_STATE(w));
            }
            break;
        }
        uint64_t len = W_LEN(w);
        uint32_t kind = W_KIND(w);
        if (__builtin_expect(kind > SHK_QK_FRAMED || len > shk_queue_max_payload(q), 0)) {
            /* taken and reused meanwhile (the head moved): just look again */
            if (shk_load_acquire(&q->sh->head_pos) != lo)
                return EAGAIN;
            return shk_fail(SHK_ECORRUPT, "queue record at %llu: kind %u, length %llu",
                            (unsigned long long)p, kind, (unsigned long long)len);
        }
        if (kind == SHK_QK_SKIP) {
            c += W_OWN(w);
            p += shk_qrec_size(len);
            continue;
        }
        if (n > 0 && (bytes + len > max_bytes || (stop_at_ref && kind == SHK_QK_REF)))
            break;
        msgs[n].pos = p;
        msgs[n].len = len;
        msgs[n].kind = kind;
        n++;
        c++;
        bytes += len;
        p += shk_qrec_size(len);
    }
    *end = p;
    *cnt = c;
    *nout = n;
    return 0;
}

/* Nothing to take at head position lo: empty, closed and empty, or impossible (the tail,
 * read after the head, is never behind it; positions are aligned). */
static int empty_or_closed(struct shk_queue *q, uint64_t lo)
{
    int closed = shk_load_acquire(&q->sh->closed) != 0;
    uint64_t t = shk_load_acquire(&q->sh->tail_pos);
    if (__builtin_expect(t < lo || (lo & (SHK_QREC_ALIGN - 1)), 0))
        return shk_fail(SHK_ECORRUPT, "queue: head position %llu is %s", (unsigned long long)lo,
                        t < lo ? "beyond the tail" : "not aligned");
    if (closed && t == lo)
        return shk_fail(SHK_ECLOSED, "queue is closed and empty");
    return SHK_EEMPTY;
}

/* Consumers look again after losing a race to another consumer; after this many looks in
 * one call they report "nothing now" and the caller waits (bounded loops only). */
#define LOOK_TRIES 4096

static inline int take_peeked(struct shk_queue *q, const struct shk_qpeek *pk);

/* always inlined: get_begin's call of it is every get's path (~15 instructions a get) */
static inline __attribute__((always_inline)) int peek(struct shk_queue *q,
                                                      struct shk_qmsg *msgs, size_t max_msgs,
                                                      uint64_t max_bytes, struct shk_qpeek *pk)
{
    struct shk_queue_sh *sh = q->sh;
    int reclaimed = 0;
    for (int look = 0; look < LOOK_TRIES; look++) {
        uint64_t lo, hi, end, cnt;
        size_t n;
        head_load(sh, &lo, &hi);
        if (H_LAG(hi) != 0 && !reclaimed) {
            if (!head_sane(q, lo, hi))
                return head_corrupt(lo, hi);
            /* Ranges given back out of order (CONSUMED records at the free position)
             * wait for whoever needs space; while they do, the lag is not 0 and every
             * get would take the claim-first way (and mark its own records CONSUMED,
             * keeping it so).  Reclaim them now: one header read, only on this path. */
            reclaimed = 1;
            if (reclaim_forward(q) != lo - H_LAG(hi))
                continue;
        }
        int r = scan(q, lo, msgs, max_msgs, max_bytes, 1, &end, &cnt, &n);
        if (r == EAGAIN)
            continue;
        if (r)
            return r;
        if (end == lo)
            return empty_or_closed(q, lo);
        pk->lo = lo;
        pk->hi = hi;
        pk->end = end;
        pk->cnt = cnt;
        pk->n = n;
        /* (the test hook for a kill between a claim-first take and its give-back wants
         * the claim-first way) */
        pk->direct = H_LAG(hi) == 0 && die_at != SHK_QDIE_AFTER_TAKE;
        if (n == 0 && pk->direct) {
            /* only records of dead producers: step over them and look again */
            take_peeked(q, pk);
            continue;
        }
        return 0;
    }
    return SHK_EEMPTY;
}

static int ack_refused(const char *what)
{
    return shk_fail(EINVAL, "%s: the queue has at-least-once delivery (take messages with "
                    "shk_queue_get_begin, acknowledge them with shk_queue_task_done)", what);
}

int shk_queue_peek(struct shk_queue *q, struct shk_qmsg *msgs, size_t max_msgs,
                   uint64_t max_bytes, struct shk_qpeek *pk)
{
    if (q->ack)
        return ack_refused("shk_queue_peek");
    return peek(q, msgs, max_msgs, max_bytes, pk);
}

static inline int take_peeked(struct shk_queue *q, const struct shk_qpeek *pk)
{
    if (!pk->direct)
        return EINVAL;
    if (__builtin_expect(die_at != 0, 0))
        maybe_die(SHK_QDIE_COPIED);
    uint64_t lo = pk->lo, hi = pk->hi;
    /* counted as got (the handle's task) before the take, taken back if it fails: a crash
     * in between releases one get too many, never one too few (join cannot hang) */
    struct shk_qslot *ms = q->ms;
    uint64_t got = ms ? shk_load_relaxed(&ms->got) : 0;
    if (ms && pk->n)
        shk_store_relaxed(&ms->got, got + pk->n);
    /* taken and given back at once: nothing was outstanding (lag 0), nothing is */
    if (!shk_cas16_seq_cst(&q->sh->head_pos, &lo, &hi, pk->end, MKH(0, H_CNT(pk->hi) + pk->cnt))) {
        if (ms && pk->n)
            shk_store_relaxed(&ms->got, got);
        return EAGAIN;
    }
    wake_armed(&q->sh->space_seq, &q->sh->space_waiters, &q->sh->space_armed);
    return 0;
}

int shk_queue_take_peeked(struct shk_queue *q, const struct shk_qpeek *pk)
{
    return take_peeked(q, pk);
}

int shk_queue_take(struct shk_queue *q, struct shk_qmsg *msgs, size_t max_msgs,
                   uint64_t max_bytes, struct shk_qtake *t)
{
    struct shk_queue_sh *sh = q->sh;
    struct shk_qslot *ms = q->ms;
    if (q->ack)
        return ack_refused("shk_queue_take");
    uint64_t lo, hi;
    head_load(sh, &lo, &hi);
    for (int look = 0; look < LOOK_TRIES; look++) {
        if (!head_sane(q, lo, hi))
            return head_corrupt(lo, hi);
        uint64_t p, cnt;
        size_t n;
        int r = scan(q, lo, msgs, max_msgs, max_bytes, 0, &p, &cnt, &n);
        if (r == EAGAIN) {
            head_load(sh, &lo, &hi);
            continue;
        }
        if (r)
            return r;
        if (p == lo)
            return empty_or_closed(q, lo);
        /* announced first: a repairer that sees the new head sees who is taking it; and
         * counted as got first (see take_peeked) */
        uint64_t got = shk_load_relaxed(&ms->got);
        shk_store_relaxed(&ms->got, got + n);
        shk_store_relaxed(&ms->take_end, p);
        shk_store_release(&ms->take_pos, lo);
        uint64_t start = lo;
        if (shk_cas16_seq_cst(&sh->head_pos, &lo, &hi, p, MKH(H_LAG(hi) + (p - lo), H_CNT(hi) + cnt))) {
            t->start = start;
            t->end = p;
            t->n = n;
            maybe_die(SHK_QDIE_AFTER_TAKE);
            if (n == 0) { /* only records of dead producers: give them back, look again */
                shk_queue_finish(q, t);
                head_load(sh, &lo, &hi);
                continue;
            }
            return 0;
        }
        shk_store_relaxed(&ms->take_pos, 0);
        shk_store_relaxed(&ms->take_end, 0);
        shk_store_relaxed(&ms->got, got);
    }
    return SHK_EEMPTY;
}

/* Move the free position over the run of CONSUMED records that starts there (one CAS of
 * the head pair per run: the lag shrinks).  Whoever needs space does this (producers,
 * waiters, repairs); the CAS succeeding proves that nobody reclaimed those records first,
 * and CONSUMED is final until then.  Returns the free position. */
static void advance_head(struct shk_queue *q);

static uint64_t reclaim_forward(struct shk_queue *q)
{
    struct shk_queue_sh *sh = q->sh;
    if (q->ack)
        advance_head(q); /* acked records head has not passed yet */
    for (int tries = 0;; tries++) {
        uint64_t hp, hi;
        head_load(sh, &hp, &hi);
        uint64_t f = hp - H_LAG(hi), p = f;
        /* an impossible pair is left to the callers' checks (tail behind free...); a CAS
         * lost that often means others are reclaiming: their result will do */
        if (!head_sane(q, hp, hi) || tries >= LOOK_TRIES)
            return f;
        while (p < hp) {
            struct shk_qrec *h = rec(q, p);
            if (shk_load_acquire(&h->pos) != p)
                break;
            uint64_t w = shk_load_acquire(&h->word);
            /* at-least-once: acknowledged records and SKIP ones (nothing to acknowledge) */
            if (W_STATE(w) != SHK_QS_CONSUMED &&
                !(q->ack && W_STATE(w) == SHK_QS_COMMITTED && W_KIND(w) == SHK_QK_SKIP))
                break;
            p += shk_qrec_size(W_LEN(w));
        }
        if (p == f)
            return f;
        if (p > hp)
            return f; /* a stale record: leave it to the repair */
        if (shk_cas16_seq_cst(&sh->head_pos, &hp, &hi, hp, MKH(H_LAG(hi) - (p - f), H_CNT(hi))))
            return p;
    }
}

void shk_queue_finish(struct shk_queue *q, const struct shk_qtake *t)
{
    struct shk_queue_sh *sh = q->sh;
    if (t->end == t->start)
        return;
    for (int tries = 0;; tries++) {
        uint64_t hp, hi;
        head_load(sh, &hp, &hi);
        if (hp - H_LAG(hi) == t->start && H_LAG(hi) >= t->end - t->start &&
            tries < LOOK_TRIES) {
            /* the oldest range: give it back by shrinking the lag, without writing to the
             * ring (a write there would pull the line away from the producer that fills
             * it next) */
            if (shk_cas16_seq_cst(&sh->head_pos, &hp, &hi, hp, MKH(H_LAG(hi) - (t->end - t->start), H_CNT(hi))))
                break;
            continue;
        }
        /* an older range is still out: mark the records; the space is reclaimed by
         * whoever needs it (reclaim_forward) */
        for (uint64_t p = t->start; p < t->end && p - t->start < q->cap;) {
            struct shk_qrec *h = rec(q, p);
            uint64_t w = shk_load_relaxed(&h->word);
            uint64_t size = shk_qrec_size(W_LEN(w));
            if (p + size >= t->end)
                publish_word(&h->word, W_WITH_STATE(w, SHK_QS_CONSUMED));
            else
                shk_store_release(&h->word, W_WITH_STATE(w, SHK_QS_CONSUMED));
            p += size;
        }
        break;
    }
    /* cleared only after: a repairer that finds the announcement cleared also finds the
     * range given back or its records CONSUMED */
    shk_store_release(&q->ms->take_pos, 0);
    shk_store_relaxed(&q->ms->take_end, 0);
    wake_armed(&sh->space_seq, &sh->space_waiters, &sh->space_armed);
}


/* ---- at-least-once: taking and acknowledging (layout.h "Delivery modes") ----------- */

/* A message record this handle may take: committed data (not SKIP). */
static inline int takeable(uint64_t w)
{
    return W_STATE(w) == SHK_QS_COMMITTED && W_KIND(w) != SHK_QK_SKIP;
}

/* One atomic step makes the record at p this handle's: {word, pos} from w (COMMITTED) to
 * TAKEN(taker).  The pos half of the CAS proves the record is still the one at p. */
static inline int ack_claim(struct shk_queue *q, uint64_t p, uint64_t w)
{
    uint64_t elo = w, ehi = p;
    return shk_cas16_seq_cst((uint64_t *)rec(q, p), &elo, &ehi,
                             MKW(W_LEN(w), q->taker, SHK_QS_TAKEN, W_KIND(w)), p);
}

/* Move head over the records that are not takeable at it (TAKEN, acked, SKIP): head is
 * only a hint, anyone may move it, the CAS proves nobody else did meanwhile. */
static void advance_head(struct shk_queue *q)
{
    struct shk_queue_sh *sh = q->sh;
    for (int tries = 0; tries < LOOK_TRIES; tries++) {
        uint64_t hp, hi;
        head_load(sh, &hp, &hi);
        if (!head_sane(q, hp, hi))
            return; /* the callers report it */
        /* (no look at the tail, a line every put writes: the first header not written
         * stops the walk, and a claim being written is CLAIMED) */
        uint64_t p = hp, c = 0;
        while (p - hp < q->cap) {
            struct shk_qrec *h = rec(q, p);
            if (shk_load_acquire(&h->pos) != p)
                break;
            uint64_t w = shk_load_acquire(&h->word);
            uint32_t st = W_STATE(w);
            if (st == SHK_QS_COMMITTED && W_KIND(w) == SHK_QK_SKIP)
                c += W_OWN(w);
            else if (st == SHK_QS_TAKEN || st == SHK_QS_CONSUMED)
                c++;
            else
                break; /* CLAIMED, takeable, or impossible (the getters report it) */
            p += shk_qrec_size(W_LEN(w));
        }
        if (p == hp || p - hp > q->cap)
            return;
        uint64_t lag = H_LAG(hi) + (p - hp);
        if (lag > q->cap)
            return;
        if (shk_cas16_seq_cst(&sh->head_pos, &hp, &hi, p, MKH(lag, H_CNT(hi) + c)))
            return;
    }
}

/* Room in the handle's FIFO for n more positions (before taking: a take never fails after
 * its CAS). */
static int fifo_reserve(struct shk_queue *q, size_t n)
{
    if ((uint64_t)q->fifo_len + n <= q->fifo_cap)
        return 0;
    uint64_t want = q->fifo_cap ? q->fifo_cap : 64;
    while (want < (uint64_t)q->fifo_len + n)
        want *= 2;
    if (want > UINT32_MAX / 2)
        return shk_fail(ENOMEM, "at-least-once: too many messages taken and not acknowledged");
    uint64_t *f = malloc(want * sizeof *f);
    if (!f)
        return shk_fail(ENOMEM, "at-least-once: no memory for the list of messages taken");
    for (uint32_t i = 0; i < q->fifo_len; i++)
        f[i] = q->fifo[(q->fifo_head + i) % q->fifo_cap];
    free(q->fifo);
    q->fifo = f;
    q->fifo_cap = (uint32_t)want;
    q->fifo_head = 0;
    return 0;
}

static inline void fifo_push(struct shk_queue *q, uint64_t pos)
{
    q->fifo[(q->fifo_head + q->fifo_len) % q->fifo_cap] = pos;
    q->fifo_len++;
}

/* Try to take the record at p (read as w).  1 taken, 0 lost to another consumer. */
static int ack_take_one(struct shk_queue *q, struct shk_qmsg *msgs, size_t *n, uint64_t p,
                        uint64_t w)
{
    if (!ack_claim(q, p, w))
        return 0;
    fifo_push(q, p);
    msgs[*n].pos = p;
    msgs[*n].len = W_LEN(w);
    msgs[*n].kind = W_KIND(w);
    (*n)++;
    if (__builtin_expect(die_at != 0, 0))
        maybe_die(SHK_QDIE_ACK_TAKEN);
    return 1;
}

/* A record read at p: can it be?  (Records are checked before anything follows them.) */
static int ack_record_bad(struct shk_queue *q, uint64_t w)
{
    uint32_t st = W_STATE(w);
    return W_KIND(w) > SHK_QK_FRAMED || W_LEN(w) > shk_queue_max_payload(q) ||
           st < SHK_QS_CLAIMED || st > SHK_QS_TAKEN;
}

/* Take up to max_msgs messages, each with its own CAS: first any given back for
 * redelivery (behind head, when the hint says so), then from head on. */
static int ack_take(struct shk_queue *q, struct shk_qmsg *msgs, size_t max_msgs,
                    uint64_t max_bytes, size_t *nout)
{
    struct shk_queue_sh *sh = q->sh;
    size_t n = 0;
    uint64_t bytes = 0;
    if (max_msgs == 0)
        max_msgs = 1;
    int r = fifo_reserve(q, max_msgs);
    if (r)
        return r;
    int moved = 0;
    uint64_t hint = shk_load_acquire(&sh->redeliverable);
    if (hint) {
        uint64_t hp, hi;
        head_load(sh, &hp, &hi);
        if (!head_sane(q, hp, hi))
            return head_corrupt(hp, hi);
        uint64_t f = hp - H_LAG(hi), p = f;
        size_t found = 0;
        unsigned fails = 0;
        while (p < hp && p - f < q->cap && n < max_msgs && fails < LOOK_TRIES) {
            struct shk_qrec *h = rec(q, p);
            if (shk_load_acquire(&h->pos) != p)
                break; /* reclaimed meanwhile: look again next time */
            uint64_t w = shk_load_acquire(&h->word);
            if (ack_record_bad(q, w))
                break;
            if (takeable(w)) {
                if (n > 0 && bytes + W_LEN(w) > max_bytes)
                    break;
                if (ack_take_one(q, msgs, &n, p, w)) {
                    bytes += W_LEN(w);
                    found++;
                    uint64_t v = shk_load_relaxed(&sh->redeliverable);
                    while (v && !shk_cas_acq_rel(&sh->redeliverable, &v, v - 1))
                        ;
                } else {
                    fails++;
                    continue; /* read it again */
                }
            }
            p += shk_qrec_size(W_LEN(w));
        }
        if (!found && p >= hp) /* nothing behind head: the hint was stale */
            shk_cas_acq_rel(&sh->redeliverable, &hint, 0);
    }
    for (int look = 0; look < LOOK_TRIES && n < max_msgs; look++) {
        uint64_t hp, hi;
        head_load(sh, &hp, &hi);
        if (!head_sane(q, hp, hi))
            return head_corrupt(hp, hi);
        uint64_t p = hp, adv_end = hp, adv_cnt = 0;
        int lost = 0;
        unsigned fails = 0;
        while (n < max_msgs && p - hp < q->cap && fails < LOOK_TRIES) {
            struct shk_qrec *h = rec(q, p);
            if (shk_load_acquire(&h->pos) != p)
                break;
            uint64_t w = shk_load_acquire(&h->word);
            if (ack_record_bad(q, w)) {
                if (shk_load_acquire(&sh->head_pos) != hp) {
                    lost = 1; /* stale head: look again */
                    break;
                }
                return shk_fail(SHK_ECORRUPT, "queue record at %llu: state %u, kind %u, "
                                "length %llu", (unsigned long long)p, W_STATE(w), W_KIND(w),
                                (unsigned long long)W_LEN(w));
            }
            if (W_STATE(w) == SHK_QS_CLAIMED)
                break;
            if (takeable(w)) {
                if (n > 0 && bytes + W_LEN(w) > max_bytes)
                    break;
                if (!ack_take_one(q, msgs, &n, p, w)) {
                    lost = 1; /* another consumer was faster: read it again */
                    fails++;
                    if (shk_load_acquire(&h->pos) != p)
                        break;
                    continue;
                }
                bytes += W_LEN(w);
            }
            p += shk_qrec_size(W_LEN(w));
            /* what we passed is TAKEN (by us or others), acked or SKIP: head may pass it */
            adv_end = p;
            adv_cnt += W_KIND(w) == SHK_QK_SKIP ? W_OWN(w) : 1;
        }
        if (adv_end != hp) {
            /* move head over what we walked, in one CAS from the pair we started from (a
             * record given back meanwhile and passed here is found through the hint) */
            uint64_t lag = H_LAG(hi) + (adv_end - hp);
            if (lag <= q->cap &&
                shk_cas16_seq_cst(&sh->head_pos, &hp, &hi, adv_end, MKH(lag, H_CNT(hi) + adv_cnt)))
                moved = 1;
        }
        if (!lost || n > 0)
            break;
    }
    if (!moved)
        advance_head(q);
    *nout = n;
    if (n == 0) {
        uint64_t hp, hi;
        head_load(sh, &hp, &hi);
        return empty_or_closed(q, hp);
    }
    return 0;
}

uint64_t shk_queue_outstanding(struct shk_queue *q)
{
    if (q->ack)
        return q->fifo_len;
    if (!q->ms)
        return 0;
    uint64_t got = shk_load_relaxed(&q->ms->got), done = shk_load_relaxed(&q->ms->done);
    return got > done ? got - done : 0;
}

/* Tasks finished (or released): wake join() callers, only when one is registered (the
 * caller's change was a full fence: a seq_cst RMW). */
static void notify_done(struct shk_queue *q)
{
    struct shk_queue_sh *sh = q->sh;
    if (shk_load_seq_cst(&sh->done_waiters)) {
        shk_add_fetch_seq_cst(&sh->done_seq, 1);
        shk_futex_wake(&sh->done_seq, INT32_MAX);
    }
}

int shk_queue_task_done(struct shk_queue *q, uint64_t count)
{
    struct shk_qslot *ms = q->ms;
    if (!ms)
        return shk_fail(SHK_ECLOSED, "task_done(): the handle has no member slot");
    if (count == 0)
        return 0;
    if (count > shk_queue_outstanding(q))
        return shk_fail(EINVAL, "task_done() called too many times");
    if (q->ack) {
        for (uint64_t i = 0; i < count; i++) {
            uint64_t p = q->fifo[q->fifo_head];
            struct shk_qrec *h = rec(q, p);
            uint64_t w = shk_load_acquire(&h->word);
            if (shk_load_acquire(&h->pos) != p || W_STATE(w) != SHK_QS_TAKEN ||
                W_OWN(w) != (q->taker & 0xffff))
                return shk_fail(SHK_ECORRUPT, "task_done(): the record at %llu is no longer "
                                "this handle's (state %u)", (unsigned long long)p, W_STATE(w));
            uint64_t elo = w, ehi = p;
            /* the acknowledgement, in one step */
            if (!shk_cas16_seq_cst((uint64_t *)h, &elo, &ehi, W_WITH_STATE(w, SHK_QS_CONSUMED), p))
                return shk_fail(SHK_ECORRUPT, "task_done(): the record at %llu changed while "
                                "acknowledged", (unsigned long long)p);
            q->fifo_head = (q->fifo_head + 1) % q->fifo_cap;
            q->fifo_len--;
            shk_single_writer_inc(&ms->done); /* (statistics only in this mode) */
            if (__builtin_expect(die_at != 0, 0))
                maybe_die(SHK_QDIE_ACK_DONE);
        }
        wake_armed(&q->sh->space_seq, &q->sh->space_waiters, &q->sh->space_armed);
    } else {
        shk_add_fetch_seq_cst(&ms->done, count);
    }
    notify_done(q);
    return 0;
}

/* At-least-once: every record of taker in [free, tail) back to COMMITTED, one CAS each
 * (deliverable again: the hint tells getters to look behind head).  Under the repair
 * mutex.  Returns how many. */
static uint64_t give_back_taken(struct shk_queue *q, uint32_t taker)
{
    struct shk_queue_sh *sh = q->sh;
    uint64_t n = 0, f = free_load(sh), t = shk_load_acquire(&sh->tail_pos), p = f;
    while (p < t && p - f < q->cap) {
        struct shk_qrec *h = rec(q, p);
        if (shk_load_acquire(&h->pos) != p)
            break; /* the latest claim, headerless (or reclaimed under us: next repair) */
        uint64_t w = shk_load_acquire(&h->word);
        uint64_t size = shk_qrec_size(W_LEN(w));
        if (W_STATE(w) == SHK_QS_TAKEN && W_OWN(w) == (taker & 0xffff)) {
            uint64_t elo = w, ehi = p;
            if (shk_cas16_seq_cst((uint64_t *)h, &elo, &ehi, W_WITH_STATE(w, SHK_QS_COMMITTED), p)) {
                /* the hint first: a redelivered record is never invisible to getters
                 * for longer than this one step (a crash here leaves the hint high,
                 * which getters clear) */
                shk_add_fetch_seq_cst(&sh->redeliverable, 1);
                if (__builtin_expect(die_at != 0, 0))
                    maybe_die(SHK_QDIE_REDELIVER);
                n++;
            }
        }
        if (W_LEN(w) > shk_queue_max_payload(q))
            break;
        p += size;
    }
    if (n) {
        if (q->ms)
            shk_stat_add(&q->ms->redeliveries, n);
        else
            shk_stat_add(&sh->retired_redeliveries, n);
        if (taker == q->taker) {
            q->fifo_head = q->fifo_len = 0;
        }
        wake_armed(&sh->data_seq, &sh->data_waiters, &sh->data_armed);
        notify_done(q);
    } else if (taker == q->taker) {
        q->fifo_head = q->fifo_len = 0;
    }
    return n;
}

/* Messages put and not yet marked done (nor released). */
uint64_t shk_queue_unfinished(struct shk_queue *q)
{
    struct shk_queue_sh *sh = q->sh;
    if (q->ack) {
        /* from the ring alone: records in [free, tail) not acknowledged and not SKIP;
         * those at or past head counted by the message counts (a claim being written is
         * unfinished already) */
        for (int tries = 0; tries < 64; tries++) {
            advance_head(q);
            uint64_t hp, hi;
            head_load(sh, &hp, &hi);
            uint64_t tc = shk_load_acquire(&sh->tail_hi) & SHK_QCOUNT_MASK;
            uint64_t n = (uint32_t)((uint32_t)tc - H_CNT(hi));
            uint64_t f = hp - H_LAG(hi), p = f;
            int torn = 0;
            while (p < hp && p - f < q->cap) {
                struct shk_qrec *h = rec(q, p);
                if (shk_load_acquire(&h->pos) != p) {
                    torn = 1; /* reclaimed under us: look again */
                    break;
                }
                uint64_t w = shk_load_acquire(&h->word);
                if (W_STATE(w) != SHK_QS_CONSUMED && W_KIND(w) != SHK_QK_SKIP)
                    n++;
                p += shk_qrec_size(W_LEN(w));
            }
            if (!torn)
                return n;
        }
        return 1; /* changing too fast to count: not finished */
    }
    /* the finished counts first, then the puts: a task finished meanwhile was put before
     * (the count errs high, never low) */
    uint64_t fin = shk_load_acquire(&sh->retired_done) + shk_load_acquire(&sh->abandoned);
    uint64_t pdrops = shk_load_acquire(&sh->retired_pdrops);
    uint32_t hwm = shk_load_relaxed(&sh->slot_hwm);
    if (hwm > SHK_QUEUE_SLOTS)
        hwm = SHK_QUEUE_SLOTS;
    for (uint32_t i = 0; i < hwm; i++) {
        struct shk_qslot *s = slot_at(q, i);
        fin += shk_load_acquire(&s->done);
        pdrops += shk_load_acquire(&s->pdrops);
    }
    uint64_t tc = shk_load_seq_cst(&sh->tail_hi) & SHK_QCOUNT_MASK;
    uint64_t puts = tc > pdrops ? tc - pdrops : 0;
    return puts > fin ? puts - fin : 0;
}

/* join()'s condition: in at-least-once mode without counting (free reaches tail exactly
 * when every record in between is acked or SKIP). */
static int all_done(struct shk_queue *q)
{
    if (q->ack) {
        uint64_t f = reclaim_forward(q);
        return f == shk_load_acquire(&q->sh->tail_pos);
    }
    return shk_queue_unfinished(q) == 0;
}

static int join_attempt(void *obj, struct shk_wait *w)
{
    struct shk_queue *q = obj;
    struct shk_queue_sh *sh = q->sh;
    if (all_done(q))
        return 0;
    if (!(w->flags & SHK_WAIT_ARMED)) {
        shk_wait_on_futex(w, &sh->done_seq, shk_load_acquire(&sh->done_seq), NULL);
        return EAGAIN;
    }
    uint64_t now = shk_now_ns();
    if (shk_wait_liveness_due(w, now))
        shk_queue_repair(q); /* dead consumers' tasks: released or given back */
    shk_wait_on_futex(w, &sh->done_seq, shk_load_acquire(&sh->done_seq), &sh->done_waiters);
    shk_fence_seq_cst(); /* registered before looking (notify_done: changed, then looks) */
    if (all_done(q))
        return 0;
    shk_wait_retry_by(w, w->next_live);
    return EAGAIN;
}

static int join_give_up(void *obj, struct shk_wait *w, int why)
{
    struct shk_queue *q = obj;
    if (why == ECANCELED)
        return ECANCELED;
    return shk_fail(ETIMEDOUT, "join(): %llu task(s) unfinished%s",
                    (unsigned long long)shk_queue_unfinished(q),
                    why == ETIMEDOUT ? " (timed out)" : "");
}

const struct shk_wait_op shk_queue_join_op = {"Queue.join", join_attempt, join_give_up, NULL};

/* ---- a whole get ------------------------------------------------------------------- */

/* Messages up to this size are copied out before they are taken (the copy-first way of
 * shk_queue_peek); larger ones are taken first, so that consumers racing for them never
 * copy in vain.  A batch copies at most COPY_FIRST_BATCH before taking (its first message
 * always counts). */
#define COPY_FIRST_MAX (64u << 10)
#define COPY_FIRST_BATCH (256u << 10)

int shk_queue_get_begin(struct shk_queue *q, struct shk_qget *g)
{
    if (q->ack) {
        /* taken one CAS each and kept until acknowledged: nothing to give back at the end */
        g->copy_first = 0;
        g->t.start = g->t.end = 0;
        g->t.n = 0;
        return ack_take(q, g->msgs, g->max_msgs, g->max_bytes, &g->n);
    }
    uint64_t copy_max = g->max_bytes < COPY_FIRST_BATCH ? g->max_bytes : COPY_FIRST_BATCH;
    for (int look = 0; look < LOOK_TRIES; look++) {
        int r = peek(q, g->msgs, g->max_msgs, copy_max, &g->pk);
        if (r)
            return r;
        if (g->pk.direct && g->pk.n >= 1 && g->msgs[0].kind != SHK_QK_REF &&
            g->msgs[0].len <= COPY_FIRST_MAX) {
            g->copy_first = 1;
            g->n = g->pk.n;
            return 0;
        }
        r = shk_queue_take(q, g->msgs, g->max_msgs, g->max_bytes, &g->t);
        if (r == SHK_EEMPTY)
            continue; /* taken by another consumer meanwhile: look again */
        if (r)
            return r;
        g->copy_first = 0;
        g->n = g->t.n;
        return 0;
    }
    return SHK_EEMPTY;
}

int shk_queue_get_end(struct shk_queue *q, struct shk_qget *g)
{
    if (g->copy_first)
        return take_peeked(q, &g->pk);
    shk_queue_finish(q, &g->t);
    return 0;
}

/* ---- waiting (core/wait.h) ------------------------------------------------------------ */

/*
 * Every blocking call of the queue waits through one operation in the shape of
 * core/wait.h, shk_queue_wait_op: its attempt says whether the call may succeed now (a get:
 * a committed message at the head; a put: room for `need` record bytes; a reservation: a
 * free entry; each also when the queue is closed, or when what it sees is impossible: the
 * operation itself then reports it), and otherwise what to wait on.  The operation itself
 * (claim, take) is made by the caller with the handle's member slot, which one thread at a
 * time uses, while attempts run in any thread (without the GIL); when another process got
 * there first the caller waits again.  Reserving uses no member slot, so
 * shk_queue_reserve_op's attempt reserves.
 *
 * Spinning (not armed), an attempt registers nothing: a get watches the tail's low word
 * (it moves with every claim) while the queue is plainly empty, otherwise the driver looks
 * again every 16 pauses (POLL: a producer's pace, which leaves the head line to the
 * consumers that move it; a spinning producer also waits for a good stretch of space, see
 * space_ready_hyst).  Armed, it sleeps on data_seq / space_seq with the membarrier
 * protocol (see "asymmetric fences"): register in the waiter count, arm the sequence value,
 * fence, look once more.  The first sleep of a round (a round ends when the sequence moves:
 * a wake-up) skips the membarrier and lasts at most FIRST_SLICE_NS: a wake-up it can miss
 * is one published in the last nanoseconds, and costs at most that slice.  Later sleeps
 * fence and last SLICE_NS (on.retry_ns), after which the attempt looks for stuck work (a
 * dead producer's claim at the head, a dead consumer's range) and repairs it.
 */

static int data_ready(struct shk_queue *q)
{
    struct shk_queue_sh *sh = q->sh;
    if (q->ack && shk_load_relaxed(&sh->redeliverable))
        return 1; /* messages given back behind head */
    uint64_t h = shk_load_acquire(&sh->head_pos);
    /* poll the tail (written once per claim) rather than the header the producer is
     * writing: polling that line would pull it away from the producer at every store */
    uint64_t t = shk_load_acquire(&sh->tail_pos);
    if (t == h)
        return shk_load_relaxed(&sh->closed) != 0;
    if (t < h)
        return 1; /* impossible: the get reports it */
    struct shk_qrec *r = rec(q, h);
    if (shk_load_acquire(&r->pos) == h && W_STATE(shk_load_acquire(&r->word)) != SHK_QS_CLAIMED)
        return 1; /* committed (or impossible: the get reports it) */
    return shk_load_relaxed(&sh->closed) != 0;
}

/* Room for a put now (bytes), or 0 when the message limit is reached; 1 + need when the
 * queue is closed (the put fails at once) or the positions are impossible (the put
 * reports it). */
static uint64_t space_room(struct shk_queue *q, uint64_t need, uint64_t *freep)
{
    struct shk_queue_sh *sh = q->sh;
    if (shk_load_relaxed(&sh->closed))
        return need + 1;
    uint64_t f = reclaim_forward(q), t = shk_load_acquire(&sh->tail_pos);
    *freep = f;
    if (t < f || t - f > q->cap)
        return need + 1;
    if (q->max_messages) {
        uint64_t hp, hh;
        head_load(sh, &hp, &hh);
        uint32_t tc = (uint32_t)shk_load_acquire(&sh->tail_hi);
        if ((uint32_t)(tc - H_CNT(hh)) >= q->max_messages)
            return 0;
    }
    return q->cap - (t - f);
}

static int space_ready(struct shk_queue *q, uint64_t need)
{
    uint64_t f;
    return space_room(q, need, &f) >= need;
}

/*
 * The same for a spinning producer, with hysteresis: while consumers are still giving
 * space back, it holds on until a good stretch is free (need + chunk) instead of taking
 * each record's worth as it comes back: filling the ring right behind a consumer bounces
 * the cache lines it is reading, and every look at the head pair takes that line away
 * from the consumer that moves it.  Once the free position stops moving between two looks
 * (nobody is consuming), whatever fits will do.
 */
static int space_ready_hyst(struct shk_queue *q, uint64_t need, uint64_t *seen_free)
{
    uint64_t f = *seen_free;
    uint64_t room = space_room(q, need, &f);
    uint64_t chunk = q->cap / 8 < SPACE_CHUNK ? q->cap / 8 : SPACE_CHUNK;
    int stalled = f == *seen_free;
    *seen_free = f;
    return room >= need + chunk || (room >= need && stalled);
}

static int resv_ready(struct shk_queue *q)
{
    if (shk_load_relaxed(&q->sh->closed))
        return 1;
    for (uint32_t i = 0; i < SHK_QUEUE_RESV; i++)
        if (R_STATE(shk_load_acquire(&resv_at(q, i)->ctl)) == SHK_QR_FREE)
            return 1;
    return 0;
}

/* A put can be held up by the latest claim of another producer whose header is not
 * written yet (it sits between its CAS and its first store, or died there): the owner's
 * slot + 1, or 0 when nothing holds puts up. */
static uint32_t claim_in_the_way(struct shk_queue *q)
{
    uint64_t lo = shk_load_acquire(&q->sh->tail_pos), hi = shk_load_relaxed(&q->sh->tail_hi);
    uint32_t owner = (uint32_t)(hi >> SHK_QOWNER_SHIFT);
    return owner != q->me && !latest_claim_written(q, owner, lo) ? owner : 0;
}

/* Look for stuck work after a whole slice without a wake-up. */
static void repair_if_stuck(struct shk_queue *q, int what)
{
    struct shk_queue_sh *sh = q->sh;
    if (what == SHK_QW_DATA) {
        uint64_t h, hi;
        head_load(sh, &h, &hi);
        /* plainly empty (at-least-once: and nothing in flight that a dead consumer may
         * hold, to be given back) */
        if (h == shk_load_acquire(&sh->tail_pos) && (!q->ack || H_LAG(hi) == 0))
            return;
    } else if (what == SHK_QW_SPACE) {
        uint64_t hp, hi;
        head_load(sh, &hp, &hi);
        if (H_LAG(hi) == 0 && hp == shk_load_acquire(&sh->tail_pos))
            return;
    }
    shk_queue_repair(q); /* SHK_QW_RESV: reservations of dead processes go back */
}

static void add_waits(struct shk_queue *q)
{
    if (q->ms)
        shk_stat_add(&q->ms->waits, 1);
    else
        shk_stat_add(&q->sh->retired_waits, 1);
}

/* struct shk_wait.aux of the queue's waits */
#define QW_ROUND 0x1   /* registered in this round (the sequence has not moved since) */
#define QW_FENCED 0x2  /* this round's unfenced first sleep is over: registrations fence */
#define QW_COUNTED 0x4 /* this round is counted in the `waits` statistic */
#define QW_SLICE 0x8   /* the last registration was a fenced slice (on.retry_ns: its end) */

static inline uint32_t *low_word(uint64_t *p)
{
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    return (uint32_t *)p;
#else
    return (uint32_t *)p + 1;
#endif
}

/* Not armed: what to watch while spinning (nothing is registered). */
static void watch_while_spinning(struct shk_queue *q, struct shk_wait *w, int what)
{
    struct shk_queue_sh *sh = q->sh;
    if (what == SHK_QW_DATA) {
        uint64_t t = shk_load_acquire(&sh->tail_pos);
        if (t == shk_load_acquire(&sh->head_pos)) {
            shk_wait_on_futex(w, low_word(&sh->tail_pos), (uint32_t)t, NULL);
            return;
        }
    }
    shk_wait_on_poll(w, 0);
}

/* Armed: register on the sequence word of `what` (see the essay above).  The caller looks
 * once more after this, then sleeps. */
static void register_sleep(struct shk_queue *q, struct shk_wait *w, int what)
{
    struct shk_queue_sh *sh = q->sh;
    uint32_t *seq = what == SHK_QW_DATA ? &sh->data_seq : &sh->space_seq;
    uint32_t *waiters = what == SHK_QW_DATA ? &sh->data_waiters : &sh->space_waiters;
    uint32_t *armed = what == SHK_QW_DATA ? &sh->data_armed : &sh->space_armed;
    uint64_t now = shk_now_ns();
    uint32_t s = shk_load_acquire(seq);
    if (!(w->aux & QW_ROUND) || s != w->observed) {
        w->aux = QW_ROUND; /* a new round: the first sleep, or the sequence moved */
    } else if ((w->aux & QW_SLICE) && now >= w->on.retry_ns) {
        repair_if_stuck(q, what); /* a whole fenced slice without a wake-up */
        s = shk_load_acquire(seq);
    }
    w->observed = s;
    shk_wait_on_futex(w, seq, s, waiters); /* registers: waiters + 1, seq_cst */
    arm(armed, s);
    if (asym_fences && !(w->aux & QW_FENCED)) {
        w->aux = (w->aux | QW_FENCED) & ~QW_SLICE;
        shk_wait_retry_by(w, now + FIRST_SLICE_NS);
    } else {
        waiter_fence();
        w->aux |= QW_FENCED | QW_SLICE;
        shk_wait_retry_by(w, now + SLICE_NS);
    }
}

/* The look of an attempt: 1 when the call may succeed now (for a put: room, and no
 * other producer's claim without its header in the way). */
static int looks_ready(struct shk_queue_waiter *qw, int spinning)
{
    struct shk_queue *q = qw->q;
    switch (qw->what) {
    case SHK_QW_DATA:
        return data_ready(q);
    case SHK_QW_SPACE:
        if (spinning && qw->spins++ % SPACE_LOOK_EVERY)
            return 0;
        if (!(spinning ? space_ready_hyst(q, qw->need, &qw->seen_free)
                       : space_ready(q, qw->need)))
            return 0;
        return shk_load_relaxed(&q->sh->closed) || !claim_in_the_way(q);
    default:
        return resv_ready(q);
    }
}

/* Not ready: what the attempt waits on (EAGAIN), or 0 when a look after registering
 * found it ready. */
static int wait_on(struct shk_queue_waiter *qw, struct shk_wait *w)
{
    struct shk_queue *q = qw->q;
    if (w->phase == 0) {
        w->phase = 1;
        if (q->busy) { /* the last spins found the CPUs oversubscribed: sleep at once */
            q->busy--;
            qw->nospin = 1;
        }
    }
    if (!(w->flags & SHK_WAIT_ARMED)) {
        watch_while_spinning(q, w, qw->what);
        return EAGAIN;
    }
    uint32_t owner;
    if (qw->what == SHK_QW_SPACE && (owner = claim_in_the_way(q)) != 0) {
        /* no wake-up comes when a header is written: look again soon, and find out
         * whether its producer died there (then repair makes it a SKIP record) */
        uint64_t now = shk_now_ns();
        if (shk_wait_liveness_due(w, now) && !slot_alive(q, owner - 1))
            shk_queue_repair(q);
        shk_wait_on_poll(w, now + 200000);
        w->aux &= ~QW_SLICE;
        return EAGAIN;
    }
    register_sleep(q, w, qw->what);
    if (looks_ready(qw, 0))
        return 0;
    if (!(w->aux & QW_COUNTED)) {
        w->aux |= QW_COUNTED;
        add_waits(q);
    }
    return EAGAIN;
}

static int wait_attempt(void *obj, struct shk_wait *w)
{
    struct shk_queue_waiter *qw = obj;
    if (looks_ready(qw, !(w->flags & SHK_WAIT_ARMED)))
        return 0;
    return wait_on(qw, w);
}

/* Give up: the answer of a call that could not wait (SHK_WAIT_TRY) or waited too long. */
static int wait_give_up(void *obj, struct shk_wait *w, int why)
{
    struct shk_queue_waiter *qw = obj;
    const char *late = why == ETIMEDOUT ? " (timed out)" : "";
    if (why == ECANCELED)
        return ECANCELED;
    if (why == ETIMEDOUT && qw->what == SHK_QW_SPACE && !qw->last_try && looks_ready(qw, 0)) {
        /* the spin held out for more room than the put needs (space_ready_hyst) and the
         * deadline came: the put gets one last try (once: it may still not fit) */
        qw->last_try = 1;
        return 0;
    }
    if (qw->what == SHK_QW_DATA)
        return shk_fail(SHK_EEMPTY, "queue is empty%s", late);
    if (qw->what == SHK_QW_SPACE)
        return shk_fail(SHK_EFULLQ, "queue is full%s", late);
    return shk_fail(SHK_EFULLQ, "all %d zero-copy reservations of the queue are in use "
                    "(release the views of received blocks)%s", SHK_QUEUE_RESV, late);
}

/* The handle's spin: its own budget (learnt per handle, at most Queue.spin), none while
 * the CPUs are oversubscribed (q->busy, set by the driver's probe). */
static void wait_spin(void *obj, struct shk_spin *out)
{
    struct shk_queue_waiter *qw = obj;
    struct shk_queue *q = qw->q;
    out->budget_ns = &q->spin_cur;
    out->gate_ms = NULL;
    out->busy = &q->busy;
    out->max_ns = qw->nospin ? 0 : q->spin_ns;
    /* KEEP_WON: 160705c's queue learnt from sleeps only; shrinking the budget on every
     * quick hand-off made the slowest 1-2 % of a spinning ping-pong sleep (p99 1 -> 28 us) */
    out->policy = SHK_SPIN_PROBE | SHK_SPIN_LEARN_SLEEPS | SHK_SPIN_KEEP_WON;
}

int shk_queue_poll(struct shk_queue_waiter *qw, unsigned looks)
{
    struct shk_queue *q = qw->q;
    if (!q->spin_ns || q->busy)
        return 0;
    /* a producer's looks are spaced 16 pauses apart, as the driver's POLL spin (and
     * only every SPACE_LOOK_EVERY-th of them reads the head pair: see looks_ready) */
    unsigned pace = qw->what == SHK_QW_SPACE ? 16 : 1;
    for (unsigned i = 0; i < looks; i++) {
        if (i % pace == 0 && looks_ready(qw, 1))
            return 1;
        shk_cpu_relax();
    }
    return 0;
}

const struct shk_wait_op shk_queue_wait_op = {"Queue.wait", wait_attempt, wait_give_up,
                                              wait_spin};

static int reserve_attempt(void *obj, struct shk_wait *w)
{
    struct shk_queue_waiter *qw = obj;
    struct shk_queue *q = qw->q;
    if (w->phase && !(w->flags & SHK_WAIT_ARMED) && !resv_ready(q))
        return wait_on(qw, w); /* spinning: the cheap look first */
    int r = shk_queue_reserve(q, qw->len, &qw->index, &qw->gen, &qw->ptr);
    if (r != SHK_EFULLQ)
        return r;
    if (shk_queue_is_closed(q))
        return shk_fail(SHK_ECLOSED, "reserve(): the queue is closed and all its zero-copy "
                        "reservations are in use");
    r = wait_on(qw, w);
    if (r == 0) /* a look after registering found an entry free */
        r = shk_queue_reserve(q, qw->len, &qw->index, &qw->gen, &qw->ptr);
    return r == SHK_EFULLQ ? EAGAIN : r;
}

const struct shk_wait_op shk_queue_reserve_op = {"Queue.reserve", reserve_attempt,
                                                 wait_give_up, wait_spin};

void shk_queue_set_spin(struct shk_queue *q, uint64_t ns)
{
    q->spin_ns = ns;
    q->spin_cur = ns < UINT32_MAX ? (uint32_t)ns : UINT32_MAX - 1;
}

int shk_queue_wait_now(const struct shk_wait_op *op, void *obj, struct shk_wait *w)
{
    int late = w->deadline_ns != SHK_FOREVER && !(w->flags & SHK_WAIT_TRY) &&
               shk_now_ns() >= w->deadline_ns;
    if (op == &shk_queue_wait_op && (w->flags & SHK_WAIT_TRY))
        return shk_wait_cancel(op, obj, w, EBUSY); /* the answer of a call that does not wait */
    if (op == &shk_queue_wait_op && late)
        return shk_wait_cancel(op, obj, w, ETIMEDOUT); /* even if the wait says "ready" */
    if (op == &shk_queue_join_op && late) {
        w->flags |= SHK_WAIT_TRY; /* join(timeout=0): one look */
        return shk_wait_run(op, obj, w);
    }
    return EAGAIN;
}

int shk_queue_wait_cancelled(const struct shk_wait_op *op, void *obj, int r)
{
    if (r == 0 && op == &shk_queue_reserve_op) { /* reserved, but the caller went away */
        struct shk_queue_waiter *qw = obj;
        shk_queue_release_ref(qw->q, qw->index, qw->gen);
    }
    return ECANCELED;
}

/* ---- state ------------------------------------------------------------------------- */

int shk_queue_close(struct shk_queue *q)
{
    struct shk_queue_sh *sh = q->sh;
    shk_exchange_seq_cst(&sh->closed, 1);
    shk_add_fetch_seq_cst(&sh->data_seq, 1);
    shk_add_fetch_seq_cst(&sh->space_seq, 1);
    shk_futex_wake(&sh->data_seq, INT32_MAX);
    shk_futex_wake(&sh->space_seq, INT32_MAX);
    return 0;
}

int shk_queue_reopen(struct shk_queue *q)
{
    shk_exchange_seq_cst(&q->sh->closed, 0);
    return 0;
}

int shk_queue_is_closed(struct shk_queue *q)
{
    return shk_load_acquire(&q->sh->closed) != 0;
}

uint64_t shk_queue_depth(struct shk_queue *q)
{
    uint64_t hp, hh;
    head_load(q->sh, &hp, &hh); /* first: every message taken was claimed before */
    uint32_t tc = (uint32_t)shk_load_acquire(&q->sh->tail_hi);
    uint64_t d = (uint32_t)(tc - H_CNT(hh));
    if (q->ack) /* and those given back for redelivery (behind head; a hint) */
        d += shk_load_relaxed(&q->sh->redeliverable);
    return d;
}

uint64_t shk_queue_bytes_used(struct shk_queue *q)
{
    uint64_t f = reclaim_forward(q), t = shk_load_acquire(&q->sh->tail_pos);
    return t > f ? t - f : 0;
}

int shk_queue_is_full(struct shk_queue *q, uint64_t len)
{
    if (len > shk_queue_max_payload(q))
        return 1;
    return !space_ready(q, shk_qrec_size(len)); /* a closed queue is not full: put fails */
}

#define QS(member) SHK_FIELD(struct shk_queue_stats, member, U64)
const struct shk_field shk_queue_stats_fields[] = {
    QS(capacity), QS(max_messages), QS(depth), QS(bytes_used), QS(puts), QS(gets), QS(waits),
    QS(drops), QS(dropped_puts), QS(dropped_gets), QS(recoveries),
    SHK_FIELD(struct shk_queue_stats, members, U32),
    SHK_FIELD(struct shk_queue_stats, reservations, U32),
    SHK_FIELD(struct shk_queue_stats, closed, BOOL), QS(unfinished_tasks), QS(in_flight),
    QS(redeliveries), QS(abandoned_tasks), QS(acknowledged), {NULL, 0, 0},
};
#undef QS

int shk_queue_stats(struct shk_queue *q, struct shk_queue_stats *st)
{
    struct shk_queue_sh *sh = q->sh;
    memset(st, 0, sizeof *st);
    st->capacity = q->cap;
    st->max_messages = q->max_messages;
    uint64_t hp, hh;
    head_load(sh, &hp, &hh); /* first: every message taken was claimed before */
    uint64_t tc = shk_load_acquire(&sh->tail_hi) & SHK_QCOUNT_MASK;
    st->depth = (uint32_t)((uint32_t)tc - H_CNT(hh));
    uint64_t hc = tc - st->depth; /* messages taken, at the full width of the tail count */
    st->bytes_used = shk_queue_bytes_used(q);
    st->waits = shk_load_relaxed(&sh->retired_waits);
    st->dropped_gets = shk_load_relaxed(&sh->retired_drops);
    st->dropped_puts = shk_load_relaxed(&sh->retired_pdrops);
    st->recoveries = shk_load_relaxed(&sh->retired_recoveries);
    uint32_t hwm = shk_load_relaxed(&sh->slot_hwm);
    if (hwm > SHK_QUEUE_SLOTS)
        hwm = SHK_QUEUE_SLOTS;
    for (uint32_t i = 0; i < hwm; i++) {
        struct shk_qslot *s = slot_at(q, i);
        if (shk_load_relaxed(&s->pid))
            st->members++;
        st->waits += shk_load_relaxed(&s->waits);
        st->dropped_gets += shk_load_relaxed(&s->drops);
        st->dropped_puts += shk_load_relaxed(&s->pdrops);
        st->recoveries += shk_load_relaxed(&s->recoveries);
    }
    /* every claim is committed or dropped, every taken record handed over or dropped:
     * exact whenever no put or get is in progress */
    st->puts = tc >= st->dropped_puts ? tc - st->dropped_puts : 0;
    st->drops = st->dropped_puts + st->dropped_gets;
    st->gets = hc >= st->drops ? hc - st->drops : 0;
    for (uint32_t i = 0; i < SHK_QUEUE_RESV; i++)
        if (R_STATE(shk_load_relaxed(&resv_at(q, i)->ctl)) != SHK_QR_FREE)
            st->reservations++;
    st->closed = shk_load_relaxed(&sh->closed) != 0;
    /* task accounting */
    st->delivery = shk_queue_delivery(q);
    st->acknowledged = shk_load_relaxed(&sh->retired_done);
    st->redeliveries = shk_load_relaxed(&sh->retired_redeliveries);
    st->abandoned_tasks = shk_load_relaxed(&sh->abandoned);
    for (uint32_t i = 0; i < hwm; i++) {
        struct shk_qslot *s = slot_at(q, i);
        uint64_t got = shk_load_relaxed(&s->got), done = shk_load_relaxed(&s->done);
        st->acknowledged += done;
        st->redeliveries += shk_load_relaxed(&s->redeliveries);
        if (!q->ack && shk_load_relaxed(&s->pid) && got > done)
            st->in_flight += got - done;
    }
    if (q->ack) {
        uint64_t f = free_load(sh), t = shk_load_acquire(&sh->tail_pos), p = f;
        while (p < t && p - f < q->cap) {
            struct shk_qrec *h = rec(q, p);
            if (shk_load_acquire(&h->pos) != p)
                break;
            uint64_t w = shk_load_acquire(&h->word);
            if (W_STATE(w) == SHK_QS_TAKEN)
                st->in_flight++;
            if (W_LEN(w) > shk_queue_max_payload(q))
                break;
            p += shk_qrec_size(W_LEN(w));
        }
        st->depth += shk_load_relaxed(&sh->redeliverable);
    }
    st->unfinished_tasks = shk_queue_unfinished(q);
    return 0;
}

/* ---- zero-copy reservations --------------------------------------------------------- */

/* Free entry idx if its ctl is still `expect`: the block goes back to the zone. */
static int resv_free(struct shk_queue *q, uint32_t idx, uint64_t expect)
{
    struct shk_qresv *e = resv_at(q, idx);
    int r = shk_zone_lock(q->z);
    if (r)
        return r;
    uint64_t off = shk_load_relaxed(&e->off);
    uint64_t freed = MKR(SHK_QR_FREE, 0, R_GEN(expect) + 1);
    if (!shk_cas_acq_rel(&e->ctl, &expect, freed)) {
        shk_zone_unlock(q->z);
        return ENOENT;
    }
    shk_store_relaxed(&e->off, 0);
    if (off)
        r = shk_zone_free_locked(q->z, off);
    shk_zone_unlock(q->z);
    /* a producer may be waiting in reserve() for an entry (the CAS above was a fence) */
    wake_armed(&q->sh->space_seq, &q->sh->space_waiters, &q->sh->space_armed);
    return r;
}

int shk_queue_reserve(struct shk_queue *q, uint64_t len, uint32_t *index, uint32_t *gen,
                      void **ptr)
{
    if (len == 0)
        return shk_fail(EINVAL, "reserve(): size must be > 0");
    if (q->ack)
        return shk_fail(EINVAL, "reserve(): zero-copy messages are not available with "
                        "at-least-once delivery (a redelivered block would have no owner)");
    for (int pass = 0; pass < 2; pass++) {
        for (uint32_t i = 0; i < SHK_QUEUE_RESV; i++) {
            struct shk_qresv *e = resv_at(q, i);
            uint64_t c = shk_load_relaxed(&e->ctl);
            if (R_STATE(c) != SHK_QR_FREE)
                continue;
            uint64_t mine = MKR(SHK_QR_ALLOCATING, q->me, R_GEN(c));
            if (!shk_cas_acq_rel(&e->ctl, &c, mine))
                continue;
            shk_store_relaxed(&e->off, 0);
            shk_store_relaxed(&e->len, len);
            shk_store_relaxed(&e->reserved, 0);
            uint64_t off = 0;
            int r = shk_zone_lock(q->z);
            if (r == 0) {
                r = shk_zone_alloc_locked(q->z, len, 0, &off);
                if (r == 0)
                    shk_store_release(&e->off, off); /* recorded before the zone mutex is let go */
                shk_zone_unlock(q->z);
            }
            if (r) {
                shk_store_release(&e->ctl, MKR(SHK_QR_FREE, 0, R_GEN(c) + 1));
                return r;
            }
            void *p = shk_zone_ptr(q->z, off, len);
            if (!p) {
                resv_free(q, i, mine);
                return SHK_ECORRUPT;
            }
            shk_store_release(&e->ctl, MKR(SHK_QR_RESERVED, q->me, R_GEN(c)));
            *index = i;
            *gen = R_GEN(c);
            *ptr = p;
            maybe_die(SHK_QDIE_AFTER_RESERVE);
            return 0;
        }
        if (pass == 0)
            shk_queue_repair(q);
    }
    return shk_fail(SHK_EFULLQ, "queue: all %d zero-copy reservations are in use (release "
                    "the views of received blocks)", SHK_QUEUE_RESV);
}

int shk_queue_commit_ref(struct shk_queue *q, uint32_t index, uint32_t gen)
{
    if (index >= SHK_QUEUE_RESV)
        return shk_fail(EINVAL, "commit(): no reservation %u", index);
    struct shk_qresv *e = resv_at(q, index);
    uint64_t c = shk_load_acquire(&e->ctl);
    if (c != MKR(SHK_QR_RESERVED, q->me, gen))
        return shk_fail(EINVAL, "commit(): the reservation was already committed or released");
    struct shk_qref ref = {index, gen, shk_load_relaxed(&e->len)};
    uint64_t size = shk_qrec_size(sizeof ref), pos = 0;
    int r = claim(q, NULL, NULL, &size, &pos);
    if (r)
        return r;
    struct shk_qrec *h = rec(q, pos);
    shk_store_relaxed(&h->word, MKW(sizeof ref, q->me, SHK_QS_CLAIMED, SHK_QK_REF));
    shk_store_release(&h->pos, pos);
    ring_write(q, pos + SHK_QREC_HDR, &ref, sizeof ref);
    shk_store_relaxed(&e->reserved, pos); /* where its REF record is, for the scrub of a dead producer */
    shk_store_release(&e->ctl, MKR(SHK_QR_QUEUED, q->me, gen));
    publish_word(&h->word, MKW(sizeof ref, q->me, SHK_QS_COMMITTED, SHK_QK_REF));
    wake_armed(&q->sh->data_seq, &q->sh->data_waiters, &q->sh->data_armed);
    return 0;
}

int shk_queue_accept_ref(struct shk_queue *q, const struct shk_qmsg *m, uint32_t *index,
                         uint32_t *gen, void **ptr, uint64_t *len)
{
    struct shk_qref ref;
    if (m->len != sizeof ref)
        return shk_fail(SHK_ECORRUPT, "queue: REF record of %llu bytes", (unsigned long long)m->len);
    shk_queue_read(q, m->pos, 0, &ref, sizeof ref);
    if (ref.index >= SHK_QUEUE_RESV)
        return shk_fail(SHK_ECORRUPT, "queue: REF record names reservation %u", ref.index);
    struct shk_qresv *e = resv_at(q, ref.index);
    uint64_t c = shk_load_acquire(&e->ctl);
    if (R_STATE(c) != SHK_QR_QUEUED || R_GEN(c) != (ref.gen & 0xffff) || shk_load_relaxed(&e->len) != ref.len)
        return shk_fail(SHK_ECORRUPT, "queue: reservation %u is not the one queued (state %u)",
                        ref.index, R_STATE(c));
    void *p = shk_zone_ptr(q->z, shk_load_relaxed(&e->off), ref.len);
    if (!p)
        return SHK_ECORRUPT;
    if (!shk_cas_acq_rel(&e->ctl, &c, MKR(SHK_QR_TAKEN, q->me, R_GEN(c))))
        return shk_fail(SHK_ECORRUPT, "queue: reservation %u changed while accepted", ref.index);
    *index = ref.index;
    *gen = R_GEN(c);
    *ptr = p;
    *len = ref.len;
    return 0;
}

int shk_queue_release_ref(struct shk_queue *q, uint32_t index, uint32_t gen)
{
    if (index >= SHK_QUEUE_RESV)
        return ENOENT;
    struct shk_qresv *e = resv_at(q, index);
    uint64_t c = shk_load_acquire(&e->ctl);
    uint32_t s = R_STATE(c);
    if ((s != SHK_QR_RESERVED && s != SHK_QR_TAKEN) || R_OWN(c) != q->me || R_GEN(c) != (gen & 0xffff))
        return ENOENT;
    return resv_free(q, index, c);
}

/* ---- repair ------------------------------------------------------------------------ */

/* The record at head is headerless or CLAIMED by a dead producer: make it SKIP. */
static int repair_head_locked(struct shk_queue *q)
{
    struct shk_queue_sh *sh = q->sh;
    uint64_t h = shk_load_acquire(&sh->head_pos);
    struct shk_qrec *r = rec(q, h);
    uint64_t pos = shk_load_acquire(&r->pos);
    if (pos != h) {
        uint64_t tlo, thi;
        shk_load16_seq_cst(&sh->tail_pos, &tlo, &thi);
        if (tlo == h)
            return 0;
        uint32_t owner = (uint32_t)(thi >> SHK_QOWNER_SHIFT);
        if (owner == 0 || owner > SHK_QUEUE_SLOTS)
            return 0;
        struct shk_qslot *s = slot_at(q, owner - 1);
        uint64_t p = shk_load_acquire(&s->claim_pos), sz = shk_load_relaxed(&s->claim_size), n = shk_load_relaxed(&s->claim_n);
        if (p != h || p + sz != tlo || shk_load_acquire(&r->pos) == h || slot_alive(q, owner - 1))
            return 0;
        /* the latest claim, headerless, its producer dead: nothing can move past it
         * (producers wait for its header, consumers cannot take it), so writing it is
         * safe */
        shk_store_relaxed(&r->word, MKW(sz - SHK_QREC_HDR, n, SHK_QS_COMMITTED, SHK_QK_SKIP));
        shk_store_release(&r->pos, h);
        add_pdrops(q, n);
        add_recoveries(q, 1);
        wake_armed(&sh->data_seq, &sh->data_waiters, &sh->data_armed);
        notify_done(q);
        return 1;
    }
    uint64_t w = shk_load_acquire(&r->word);
    if (W_STATE(w) != SHK_QS_CLAIMED)
        return 0;
    uint32_t owner = W_OWN(w);
    if (owner == 0 || owner > SHK_QUEUE_SLOTS || slot_alive(q, owner - 1))
        return 0;
    uint64_t elo = w, ehi = h;
    if (!shk_cas16_seq_cst((uint64_t *)r, &elo, &ehi, MKW(W_LEN(w), 1, SHK_QS_COMMITTED, SHK_QK_SKIP), h))
        return 0;
    add_pdrops(q, 1);
    add_recoveries(q, 1);
    wake_armed(&sh->data_seq, &sh->data_waiters, &sh->data_armed);
    notify_done(q);
    return 1;
}

/* A queued REF record is being dropped: give its block back. */
static void drop_ref(struct shk_queue *q, const struct shk_qref *rp)
{
    struct shk_qref ref = *rp;
    if (ref.index >= SHK_QUEUE_RESV)
        return;
    uint64_t c = shk_load_acquire(&resv_at(q, ref.index)->ctl);
    if (R_STATE(c) == SHK_QR_QUEUED && R_GEN(c) == (ref.gen & 0xffff))
        resv_free(q, ref.index, c);
}

/* Records taken by consumers that all died: mark them CONSUMED so that the free position
 * (head_pos - lag) can move over them. */
static int repair_free_locked(struct shk_queue *q)
{
    struct shk_queue_sh *sh = q->sh;
    int repaired = 0;
    if (q->ack)
        return 0; /* records behind head are in flight or redeliverable, never lost */
    for (int guard = 0; guard < 1 << 20; guard++) {
        reclaim_forward(q);
        uint64_t hd, hh;
        head_load(sh, &hd, &hh);
        uint64_t f = hd - H_LAG(hh);
        if (f == hd)
            break;
        struct shk_qrec *r = rec(q, f);
        if (shk_load_acquire(&r->pos) != f)
            break; /* behind head every header is written: a reclaimer is mid-way */
        uint64_t w = shk_load_acquire(&r->word);
        if (W_STATE(w) != SHK_QS_COMMITTED)
            break;
        /* taken (head is past it): is any live consumer announcing it? */
        uint32_t hwm = shk_load_relaxed(&sh->slot_hwm);
        int live = 0;
        for (uint32_t i = 0; i < hwm && i < SHK_QUEUE_SLOTS && !live; i++) {
            struct shk_qslot *s = slot_at(q, i);
            uint64_t tp = shk_load_acquire(&s->take_pos), te = shk_load_relaxed(&s->take_end);
            if (shk_load_relaxed(&s->pid) && tp <= f && f < te && slot_alive(q, i))
                live = 1;
        }
        if (live)
            break;
        /* a consumer that gave its range back by shrinking the lag cleared its
         * announcement only after: found cleared, the free position has moved */
        if (free_load(sh) != f)
            continue;
        /* so the record is still taken and still there (a taken record cannot be
         * reclaimed); the 16-byte CAS (word and position) fails if its consumer was alive
         * after all and marked it CONSUMED meanwhile */
        struct shk_qref ref = {SHK_QUEUE_RESV, 0, 0};
        if (W_KIND(w) == SHK_QK_REF && W_LEN(w) == sizeof ref)
            shk_queue_read(q, f, 0, &ref, sizeof ref);
        uint64_t elo = w, ehi = f;
        if (!shk_cas16_seq_cst((uint64_t *)r, &elo, &ehi, W_WITH_STATE(w, SHK_QS_CONSUMED), f))
            continue;
        if (W_KIND(w) != SHK_QK_SKIP)
            add_drops(q, 1);
        if (W_KIND(w) == SHK_QK_REF)
            drop_ref(q, &ref);
        add_recoveries(q, 1);
        repaired++;
    }
    if (repaired)
        wake_armed(&sh->space_seq, &sh->space_waiters, &sh->space_armed);
    return repaired;
}

/* Resolve what the dead handle in slot idx left, then free the slot. */
static int scrub_slot_locked(struct shk_queue *q, uint32_t idx)
{
    struct shk_queue_sh *sh = q->sh;
    struct shk_qslot *s = slot_at(q, idx);
    uint32_t owner = idx + 1;
    int repaired = 0;
    /* its latest producer claim */
    uint64_t p = shk_load_acquire(&s->claim_pos), sz = shk_load_relaxed(&s->claim_size), n = shk_load_relaxed(&s->claim_n);
    if (sz && p >= free_load(sh)) {
        struct shk_qrec *r = rec(q, p);
        if (shk_load_acquire(&r->pos) != p) {
            uint64_t tlo, thi;
            shk_load16_seq_cst(&sh->tail_pos, &tlo, &thi);
            if (tlo == p + sz && (uint32_t)(thi >> SHK_QOWNER_SHIFT) == owner &&
                shk_load_acquire(&r->pos) != p && p >= free_load(sh)) {
                shk_store_relaxed(&r->word, MKW(sz - SHK_QREC_HDR, n, SHK_QS_COMMITTED, SHK_QK_SKIP));
                shk_store_release(&r->pos, p);
                add_pdrops(q, n);
                repaired++;
            }
        } else {
            /* headers written: turn its CLAIMED records into SKIP */
            for (uint64_t x = p; x < p + sz && x - p < q->cap;) {
                struct shk_qrec *h = rec(q, x);
                if (shk_load_acquire(&h->pos) != x)
                    break;
                uint64_t w = shk_load_acquire(&h->word);
                uint64_t size = shk_qrec_size(W_LEN(w));
                if (W_STATE(w) == SHK_QS_CLAIMED && W_OWN(w) == owner && W_KIND(w) != SHK_QK_SKIP) {
                    uint64_t elo = w, ehi = x;
                    if (shk_cas16_seq_cst((uint64_t *)h, &elo, &ehi,
                              MKW(W_LEN(w), 1, SHK_QS_COMMITTED, SHK_QK_SKIP), x)) {
                        add_pdrops(q, 1);
                        repaired++;
                    }
                }
                if (size == 0)
                    break;
                x += size;
            }
        }
    }
    /* its reservations */
    for (uint32_t i = 0; i < SHK_QUEUE_RESV; i++) {
        struct shk_qresv *e = resv_at(q, i);
        uint64_t c = shk_load_acquire(&e->ctl);
        if (R_OWN(c) != owner)
            continue;
        uint32_t st = R_STATE(c);
        if (st == SHK_QR_ALLOCATING || st == SHK_QR_RESERVED || st == SHK_QR_TAKEN) {
            if (resv_free(q, i, c) == 0)
                repaired++;
        } else if (st == SHK_QR_QUEUED) {
            /* keep it if its REF record is committed: a consumer will take it */
            uint64_t rp = shk_load_relaxed(&e->reserved);
            struct shk_qrec *h = rec(q, rp);
            uint64_t w = shk_load_acquire(&h->word);
            int in_ring = rp >= free_load(sh) && shk_load_acquire(&h->pos) == rp &&
                          W_KIND(w) == SHK_QK_REF && W_STATE(w) == SHK_QS_COMMITTED;
            if (!in_ring && resv_free(q, i, c) == 0)
                repaired++;
        }
    }
    /* at-least-once: the messages it took and did not acknowledge, deliverable again */
    if (q->ack && give_back_taken(q, taker_id(idx, shk_load_relaxed(&s->gen))))
        repaired++;
    if (repaired)
        add_recoveries(q, 1);
    retire_slot(q, s);
    shk_store_release(&s->pid, 0);
    if (repaired) {
        wake_armed(&sh->data_seq, &sh->data_waiters, &sh->data_armed);
        wake_armed(&sh->space_seq, &sh->space_waiters, &sh->space_armed);
        notify_done(q);
    }
    return repaired;
}

int shk_queue_repair(struct shk_queue *q)
{
    int r = repair_lock(q);
    if (r)
        return r;
    int n = 0;
    n += repair_head_locked(q);
    n += repair_free_locked(q);
    uint32_t hwm = shk_load_relaxed(&q->sh->slot_hwm);
    for (uint32_t i = 0; i < hwm && i < SHK_QUEUE_SLOTS; i++) {
        if (i == q->slot || !shk_load_relaxed(&slot_at(q, i)->pid) || slot_alive(q, i))
            continue;
        n += scrub_slot_locked(q, i);
    }
    /* after scrubbing, records they had taken may be reclaimable now */
    n += repair_free_locked(q);
    n += repair_head_locked(q);
    repair_unlock(q);
    return n;
}
