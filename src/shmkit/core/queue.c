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
#include <sched.h>
#include <signal.h>
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
#define FIRST_SLICE_NS (5u * 1000 * 1000)  /* unfenced first sleep (see shk_queue_wait); longer
                                              than a tick: no timer reprogramming per sleep */
#define SPIN_FLOOR_NS 2000u                /* adaptive spin never shrinks below this ... */
#define BATCH_MAX 65535u                   /* records per claim (SKIP count is 16 bits) */
#define PREFETCH_AHEAD 256u                /* producers warm the line this far past a claim */
#define SPACE_CHUNK (16u << 10)            /* a producer waiting for space waits for this
                                              much more while consumers are active ... */
#define SPACE_PACE 16u                     /* ... looking once every this many pauses */

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
 * read of head_hi means both halves belong to one moment. */
static inline void head_load(struct shk_queue_sh *sh, uint64_t *pos, uint64_t *hi)
{
    uint64_t a = shk_load_acquire(&sh->head_pos);
    for (;;) {
        uint64_t h = shk_load_acquire(&sh->head_hi);
        uint64_t b = shk_load_acquire(&sh->head_pos);
        if (a == b) {
            *pos = a;
            *hi = h;
            return;
        }
        a = b;
    }
}

/* Oldest position not given back (everything before it is free space). */
static inline uint64_t free_load(struct shk_queue_sh *sh)
{
    uint64_t pos, hi;
    head_load(sh, &pos, &hi);
    return pos - H_LAG(hi);
}

static inline struct shk_qrec *rec(struct shk_queue *q, uint64_t pos)
{
    return (struct shk_qrec *)(q->ring + (pos & q->mask));
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

/* Arm sequence value s (the armed word only moves forward, modulo 2^32). */
static inline void arm(uint32_t *armed, uint32_t s)
{
    uint32_t a = shk_load_relaxed(armed);
    while ((int32_t)(s - a) > 0 &&
           !shk_cas_seq_cst_fail_relaxed(armed, &a, s))
        ;
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
         * nothing to undo */
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
            uint32_t hwm = shk_load_relaxed(&q->sh->slot_hwm);
            while (hwm < i + 1 &&
                   !shk_cas_acq_rel(&q->sh->slot_hwm, &hwm, i + 1))
                ;
            q->slot = i;
            q->me = i + 1;
            q->ms = s;
            q->fork_gen = shk_queue_fork_generation;
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
    shk_clear_detail();
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
    struct init_arg a = {cap, max_messages};
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
    }
    q->cap = q->sh->capacity;
    q->mask = q->cap - 1;
    q->max_messages = q->sh->max_messages;
    q->ring = (uint8_t *)q->sh + q->sh->ring_rel;
    q->free_cache = free_load(q->sh);
    q->spin_ns = q->spin_cur = 50 * 1000;
    return shk_queue_register(q);
}

/* Fold a slot's counters into the queue's totals and clear it (not its pid). */
static void retire_slot(struct shk_queue *q, struct shk_qslot *s)
{
    struct shk_queue_sh *sh = q->sh;
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

void shk_queue_release(struct shk_queue *q)
{
    if (!q->sh || q->slot == SHK_QNOSLOT || q->fork_gen != shk_queue_fork_generation)
        return;
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
    unsigned spins = 0;
    for (;;) {
        if (__builtin_expect(shk_load_relaxed(&sh->closed) != 0, 0))
            return shk_fail(SHK_ECLOSED, "queue is closed: put() is not allowed");
        if (__builtin_expect(lo < q->free_cache, 0)) { /* a stale tail read: look again */
            lo = shk_load_acquire(&sh->tail_pos);
            hi = shk_load_relaxed(&sh->tail_hi);
            continue;
        }
        /* free_cache only ever lags the real free position: refresh it when it says "no
         * room" (or is so old that the tail has lapped it) */
        uint64_t first = msgs ? shk_qrec_size(msgs[0].n) : *size;
        uint64_t used = lo - q->free_cache;
        if (__builtin_expect(used > q->cap || first > q->cap - used, 0)) {
            uint64_t f = refresh_free(q);
            if (lo < f)
                continue;
            used = lo - f;
            if (used > q->cap)
                return shk_fail(SHK_ECORRUPT, "queue: tail %llu is more than the capacity "
                                "ahead of free %llu", (unsigned long long)lo,
                                (unsigned long long)f);
            if (first > q->cap - used)
                return SHK_EFULLQ;
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
             * it (nanoseconds), unless it died there */
            if (++spins < 4096) {
                shk_cpu_relax();
            } else {
                spins = 0;
                if (!slot_alive(q, owner - 1))
                    shk_queue_repair(q);
                else
                    sched_yield();
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

int shk_queue_put(struct shk_queue *q, const struct shk_qpart *parts, int nparts, uint32_t kind)
{
    uint64_t len = 0;
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
    while (*done < n) {
        const struct shk_qpart *m = msgs + *done;
        size_t k = n - *done;
        for (size_t i = 0; i < k; i++) {
            if (m[i].n > maxp) {
                if (i == 0)
                    return shk_fail(SHK_ETOOBIG, "message %zu of %llu bytes can never fit in "
                                    "a queue of %llu bytes (at most %llu per message)",
                                    *done, (unsigned long long)m[i].n,
                                    (unsigned long long)q->cap, (unsigned long long)maxp);
                k = i;
                break;
            }
        }
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
        if (W_STATE(w) != SHK_QS_COMMITTED)
            break;
        uint64_t len = W_LEN(w);
        uint32_t kind = W_KIND(w);
        if (kind == SHK_QK_SKIP) {
            c += W_OWN(w);
            p += shk_qrec_size(len);
            continue;
        }
        if (__builtin_expect(kind > SHK_QK_FRAMED || len > shk_queue_max_payload(q), 0)) {
            /* taken and reused meanwhile (the head moved): just look again */
            if (shk_load_acquire(&q->sh->head_pos) != lo)
                return EAGAIN;
            return shk_fail(SHK_ECORRUPT, "queue record at %llu: kind %u, length %llu",
                            (unsigned long long)p, kind, (unsigned long long)len);
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

static int empty_or_closed(struct shk_queue *q, uint64_t lo)
{
    if (shk_load_acquire(&q->sh->closed) && shk_load_acquire(&q->sh->tail_pos) == lo)
        return shk_fail(SHK_ECLOSED, "queue is closed and empty");
    return SHK_EEMPTY;
}

int shk_queue_peek(struct shk_queue *q, struct shk_qmsg *msgs, size_t max_msgs,
                   uint64_t max_bytes, struct shk_qpeek *pk)
{
    struct shk_queue_sh *sh = q->sh;
    int reclaimed = 0;
    for (;;) {
        uint64_t lo, hi, end, cnt;
        size_t n;
        head_load(sh, &lo, &hi);
        if (H_LAG(hi) != 0 && !reclaimed) {
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
            shk_queue_take_peeked(q, pk);
            continue;
        }
        return 0;
    }
}

int shk_queue_take_peeked(struct shk_queue *q, const struct shk_qpeek *pk)
{
    if (!pk->direct)
        return EINVAL;
    if (__builtin_expect(die_at != 0, 0))
        maybe_die(SHK_QDIE_COPIED);
    uint64_t lo = pk->lo, hi = pk->hi;
    /* taken and given back at once: nothing was outstanding (lag 0), nothing is */
    if (!shk_cas16_seq_cst(&q->sh->head_pos, &lo, &hi, pk->end, MKH(0, H_CNT(pk->hi) + pk->cnt)))
        return EAGAIN;
    wake_armed(&q->sh->space_seq, &q->sh->space_waiters, &q->sh->space_armed);
    return 0;
}

int shk_queue_take(struct shk_queue *q, struct shk_qmsg *msgs, size_t max_msgs,
                   uint64_t max_bytes, struct shk_qtake *t)
{
    struct shk_queue_sh *sh = q->sh;
    struct shk_qslot *ms = q->ms;
    uint64_t lo, hi;
    head_load(sh, &lo, &hi);
    for (;;) {
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
        /* announced first: a repairer that sees the new head sees who is taking it */
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
    }
}

/* Move the free position over the run of CONSUMED records that starts there (one CAS of
 * the head pair per run: the lag shrinks).  Whoever needs space does this (producers,
 * waiters, repairs); the CAS succeeding proves that nobody reclaimed those records first,
 * and CONSUMED is final until then.  Returns the free position. */
static uint64_t reclaim_forward(struct shk_queue *q)
{
    struct shk_queue_sh *sh = q->sh;
    for (;;) {
        uint64_t hp, hi;
        head_load(sh, &hp, &hi);
        uint64_t f = hp - H_LAG(hi), p = f;
        while (p < hp) {
            struct shk_qrec *h = rec(q, p);
            if (shk_load_acquire(&h->pos) != p)
                break;
            uint64_t w = shk_load_acquire(&h->word);
            if (W_STATE(w) != SHK_QS_CONSUMED)
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
    for (;;) {
        uint64_t hp, hi;
        head_load(sh, &hp, &hi);
        if (hp - H_LAG(hi) == t->start) {
            /* the oldest range: give it back by shrinking the lag, without writing to the
             * ring (a write there would pull the line away from the producer that fills
             * it next) */
            if (shk_cas16_seq_cst(&sh->head_pos, &hp, &hi, hp, MKH(H_LAG(hi) - (t->end - t->start), H_CNT(hi))))
                break;
            continue;
        }
        /* an older range is still out: mark the records; the space is reclaimed by
         * whoever needs it (reclaim_forward) */
        for (uint64_t p = t->start; p < t->end;) {
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

/* ---- waiting ------------------------------------------------------------------------ */

static int data_ready(struct shk_queue *q)
{
    struct shk_queue_sh *sh = q->sh;
    uint64_t h = shk_load_acquire(&sh->head_pos);
    /* poll the tail (written once per claim) rather than the header the producer is
     * writing: polling that line would pull it away from the producer at every store */
    if (shk_load_acquire(&sh->tail_pos) == h)
        return shk_load_relaxed(&sh->closed) != 0;
    struct shk_qrec *r = rec(q, h);
    if (shk_load_acquire(&r->pos) == h && W_STATE(shk_load_acquire(&r->word)) == SHK_QS_COMMITTED)
        return 1;
    return shk_load_relaxed(&sh->closed) != 0;
}

/* Room for a put now (bytes), or 0 when the message limit is reached; 1 + need when the
 * queue is closed (the put fails at once) or a read was stale (the caller retries). */
static uint64_t space_room(struct shk_queue *q, uint64_t need, uint64_t *freep)
{
    struct shk_queue_sh *sh = q->sh;
    if (shk_load_relaxed(&sh->closed))
        return need + 1;
    uint64_t f = reclaim_forward(q), t = shk_load_acquire(&sh->tail_pos);
    *freep = f;
    if (t < f)
        return need + 1;
    if (q->max_messages) {
        uint64_t hp, hh;
        head_load(sh, &hp, &hh);
        uint32_t tc = (uint32_t)shk_load_acquire(&sh->tail_hi);
        if ((uint32_t)(tc - H_CNT(hh)) >= q->max_messages)
            return 0;
    }
    return t - f >= q->cap ? 0 : q->cap - (t - f);
}

static int space_ready(struct shk_queue *q, uint64_t need)
{
    uint64_t f;
    return space_room(q, need, &f) >= need;
}

/*
 * The same for a waiting producer, with hysteresis: while consumers are still giving space
 * back, it holds on until a good stretch is free (need + chunk) instead of taking each
 * record's worth as it comes back: filling the ring right behind a consumer bounces the
 * cache lines it is reading, and every look at the head pair takes that line away from
 * the consumer that moves it.  Once the free position stops moving between two looks
 * (nobody is consuming), whatever fits will do.
 */
static int space_ready_hyst(struct shk_queue *q, uint64_t need)
{
    uint64_t f = q->spin_free;
    uint64_t room = space_room(q, need, &f);
    uint64_t chunk = q->cap / 8 < SPACE_CHUNK ? q->cap / 8 : SPACE_CHUNK;
    int stalled = f == q->spin_free;
    q->spin_free = f;
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

static int ready(struct shk_queue *q, int what, uint64_t need)
{
    if (what == SHK_QW_DATA)
        return data_ready(q);
    return what == SHK_QW_SPACE ? space_ready(q, need) : resv_ready(q);
}

/* What a waiter does between sleep slices: repair only if something looks stuck. */
static void repair_if_stuck(struct shk_queue *q, int what)
{
    struct shk_queue_sh *sh = q->sh;
    if (what == SHK_QW_DATA) {
        uint64_t h = shk_load_acquire(&sh->head_pos);
        if (h == shk_load_acquire(&sh->tail_pos))
            return; /* plainly empty */
    } else {
        uint64_t hp, hi;
        head_load(sh, &hp, &hi);
        if (H_LAG(hi) == 0 && hp == shk_load_acquire(&sh->tail_pos))
            return;
    }
    shk_queue_repair(q);
}

/* A spinning waiter's look number i: spaced out while waiting for space. */
static inline int spin_ready(struct shk_queue *q, int what, uint64_t need, unsigned i)
{
    if (what != SHK_QW_SPACE)
        return ready(q, what, need);
    if (i % SPACE_PACE)
        return 0;
    return space_ready_hyst(q, need);
}

int shk_queue_poll(struct shk_queue *q, int what, uint64_t need, unsigned spins)
{
    for (unsigned i = 0; i < spins; i++) {
        if (spin_ready(q, what, need, i))
            return 1;
        shk_cpu_relax();
    }
    return 0;
}

int shk_queue_wait(struct shk_queue *q, int what, uint64_t need, const struct timespec *deadline)
{
    struct shk_queue_sh *sh = q->sh;
    uint64_t t0 = shk_now_ns();
    uint64_t budget = q->spin_cur;
    if (q->contended) {
        q->contended--; /* spinning did not pay lately: sleep at once, probe again later */
        budget = 0;
    }
    if (budget) {
        for (unsigned round = 1;; round++) {
            for (unsigned i = 0; i < 32; i++) {
                if (spin_ready(q, what, need, i))
                    return 0;
                shk_cpu_relax();
            }
            uint64_t now = shk_now_ns();
            if (now - t0 >= budget)
                break;
            if (deadline && shk_deadline_left_ns(deadline) == 0)
                return ETIMEDOUT;
            /* every few microseconds, offer the CPU: with a core to spare this returns at
             * once; when processes outnumber cores, the one we wait for may need ours */
            if (round % 2 == 0) {
                uint64_t ty = shk_now_ns();
                sched_yield();
                if (shk_now_ns() - ty > 3000) {
                    /* the yield gave the CPU away: processes outnumber cores, and our
                     * spinning only delays the one we wait for */
                    q->contended = 64;
                    break;
                }
            }
        }
    }
    /* reservation waiters share the space futex: entries are freed by consumers too */
    uint32_t *seq = what == SHK_QW_DATA ? &sh->data_seq : &sh->space_seq;
    uint32_t *waiters = what == SHK_QW_DATA ? &sh->data_waiters : &sh->space_waiters;
    uint32_t *armed = what == SHK_QW_DATA ? &sh->data_armed : &sh->space_armed;
    uint32_t s = shk_load_acquire(seq);
    shk_add_fetch_seq_cst(waiters, 1);
    arm(armed, s);
    int r = 0, slept = 0, fenced = !asym_fences;
    uint64_t ts = shk_now_ns();
    if (!fenced && !ready(q, what, need)) {
        /* A first short sleep without the barrier: membarrier interrupts the CPUs running
         * the other processes (costly IPIs in a VM), and the wake-up it protects is missed
         * only if the waker published in the last few nanoseconds; such a miss costs at
         * most this slice.  Longer sleeps are fenced. */
        struct timespec first;
        shk_deadline_slice(&first, deadline, FIRST_SLICE_NS);
        slept = 1;
        r = shk_futex_wait(seq, s, &first);
        if (r == ETIMEDOUT && !(deadline && shk_deadline_left_ns(deadline) == 0)) {
            s = shk_load_acquire(seq);
            arm(armed, s);
            waiter_fence();
            fenced = 1;
        }
        if (r == ETIMEDOUT)
            r = 0;
    }
    if (fenced && r == 0 && !ready(q, what, need)) {
        struct timespec slice;
        shk_deadline_slice(&slice, deadline, SLICE_NS);
        slept = 1;
        r = shk_futex_wait(seq, s, &slice);
        if (r == ETIMEDOUT) {
            r = 0;
            if (!(deadline && shk_deadline_left_ns(deadline) == 0))
                repair_if_stuck(q, what);
        }
    }
    if (r != EINTR)
        r = 0;
    if (slept) {
        uint64_t took = shk_now_ns() - ts;
        if (q->ms)
            shk_store_relaxed(&q->ms->waits, shk_load_relaxed(&q->ms->waits) + 1);
        /* adaptive spinning: a wake-up that came soon after we gave up spinning says
         * spinning a little longer would have paid; a long sleep says it would not */
        if (q->contended) {
            /* keep the budget; it is used again after the probe interval */
        } else if (took < q->spin_ns) {
            uint64_t c = q->spin_cur * 2;
            if (c < SPIN_FLOOR_NS)
                c = SPIN_FLOOR_NS;
            q->spin_cur = c > q->spin_ns ? q->spin_ns : c;
        } else if (q->spin_cur > SPIN_FLOOR_NS) {
            q->spin_cur /= 2;
        }
    }
    shk_sub_fetch_seq_cst(waiters, 1);
    if (r == 0 && deadline && !ready(q, what, need) && shk_deadline_left_ns(deadline) == 0)
        r = ETIMEDOUT;
    return r;
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
    return (uint32_t)(tc - H_CNT(hh));
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
    uint64_t lost = st->dropped_puts + st->dropped_gets;
    st->gets = hc >= lost ? hc - lost : 0;
    for (uint32_t i = 0; i < SHK_QUEUE_RESV; i++)
        if (R_STATE(shk_load_relaxed(&resv_at(q, i)->ctl)) != SHK_QR_FREE)
            st->reservations++;
    st->closed = shk_load_relaxed(&sh->closed) != 0;
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
            for (uint64_t x = p; x < p + sz;) {
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
    if (repaired)
        add_recoveries(q, 1);
    retire_slot(q, s);
    shk_store_release(&s->pid, 0);
    if (repaired) {
        wake_armed(&sh->data_seq, &sh->data_waiters, &sh->data_armed);
        wake_armed(&sh->space_seq, &sh->space_waiters, &sh->space_armed);
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
