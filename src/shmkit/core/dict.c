/*
 * dict.c - a shared dictionary with OpenResty's lua_shared_dict semantics.
 *
 * Layout: layout.h, dict section.  In short: one zone allocation split into shards; a
 * shard is a complete small dict (bucket chains, an arena of 32-byte cells with its own
 * allocator, an eviction queue, counters) behind one robust mutex.
 *
 * Reads take no lock.  A writer makes the shard's seq odd for the whole of its critical
 * section and even again at the end; a reader samples seq, follows the chain, copies the
 * value, and keeps the copy only if seq did not move.  Because a reader may be looking
 * at cells that a writer is freeing and reusing, every field it reads is read once into
 * a local (shk_load_relaxed, atomics.h), and every index and length is checked against
 * the shard before it is used: a torn read can only produce a wrong answer, which the seq check then throws
 * away, never an access outside the shard.  A reader that keeps losing to writers falls
 * back to the shard's lock, inside the same call.
 *
 * One call, one operation (dict.h): each public call takes the lock it needs itself, as
 * its flags allow (without SHK_DWAIT it spins a little, then gives up with EBUSY having
 * done nothing, and its caller waits with shk_dict_shard_op), runs the operation's whole
 * protocol, and hands values back through the caller's buffer (ENOBUFS with the room
 * needed, nothing done).  Inside, nginx's pattern: the `_inner` functions assume the lock
 * is held and seq odd; LOCKED_WRITE and READ_OP are the plain calls around them.
 *
 * Numbers: incr adds under the lock as Python adds (int64 and double in place; exact
 * two's complement arithmetic when an int outgrows int64; an int meets a float rounded
 * to nearest, ties to even), so no caller ever has to retry a compare-and-set.
 *
 * Memory: an item takes a run of cells (header, key, value).  Free cells form runs kept
 * in size bins with boundary tags (first cell and last 4 bytes), coalesced on free.  When
 * no single run is large enough the value continues in fragments taken from the largest
 * runs, so an item fits whenever the shard has enough free cells in total: eviction
 * frees exactly as much as is needed, and free_space is the truth.
 *
 * Eviction is CLOCK in its second-chance FIFO form.  Items queue in insertion order; a
 * read sets the item's bit in the shard's ref bitmap (a plain bitmap, so a reader with a
 * stale index can only set a harmless bit); when memory is needed the hand looks at the
 * oldest item: expired -> reclaimed, referenced -> bit cleared and sent to the back,
 * otherwise evicted.  Reads therefore never write an item, and a hot key's bit is
 * usually already set, so reading it writes nothing at all.  Before evicting live items
 * a write reclaims expired ones (a bounded sweep over the buckets).
 *
 * Crash safety: see layout.h.  Everything a write does is either one aligned store that
 * publishes (chain link, list link, int64 value, expiry) or derived state that
 * shk_dict_recover_locked() rebuilds from the chains (shard_rebuild below).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "dict.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "atomics.h"
#include "errors.h"
#include "futex.h"
#include "mutex.h"
#include "proc.h"
#include "report.h"

#define CORRUPT(...) shk_fail(SHK_ECORRUPT, __VA_ARGS__)
#define CELL SHK_DICT_CELL
#define ITEM_HDR ((uint32_t)sizeof(struct shk_ditem))
#define NODE_HDR ((uint32_t)sizeof(struct shk_dnode))
#define FRAG_HDR ((uint32_t)sizeof(struct shk_dfrag))
#define NO_EXPIRY UINT64_MAX
#define LIKELY(x) __builtin_expect(!!(x), 1)
#define UNLIKELY(x) __builtin_expect(!!(x), 0)

/* Internal result of a lock-free walk that met bytes that make no sense.  Either a
 * writer changed them under us (seq tells) or the shard is corrupted. */
#define INCONSISTENT (-1)

#define READ_TRIES 64          /* lock-free attempts before asking for the lock */
#define LOCK_SPINS 64          /* trylock rounds before blocking */
#define MIN_SHARD_CELLS 64
#define DEFAULT_SHARD_BYTES (1u << 20)
#define DEFAULT_MAX_SHARDS 64u
#define DEFAULT_MIN_SHARDS 8u
#define COUNT_PUBLISH_EVERY SHK_DICT_COUNT_EVERY

static inline uint64_t round8(uint64_t n)
{
    return (n + 7) & ~7ull;
}

static inline uint64_t cells_for(uint64_t bytes)
{
    return (bytes + CELL - 1) >> SHK_DICT_CELL_SHIFT;
}

static inline uint64_t align64(uint64_t n)
{
    return (n + 63) & ~63ull;
}

/* ---- hash (the function itself is inline in dict.h) -------------------------------- */

uint64_t shk_dict_hash(uint8_t type, const void *data, size_t n)
{
    return shk_dict_hash_inline(type, data, n);
}

int shk_dict_key(struct shk_dkey *k, uint8_t type, const void *data, size_t len)
{
    if (type != SHK_DK_BYTES && type != SHK_DK_STR)
        return shk_fail(EINVAL, "shk_dict_key(): key type %u is neither bytes nor str", type);
    if (len > SHK_DICT_KEY_MAX)
        return shk_fail(SHK_ETOOBIG, "dict key is %zu bytes long; at most %u are allowed", len,
                        SHK_DICT_KEY_MAX);
    shk_dict_key_fill(k, type, data, (uint32_t)len);
    return 0;
}

/* ---- clock ------------------------------------------------------------------------------ */

uint64_t shk_dict_now(const struct shk_dict *d)
{
    int64_t ms = shk_load_relaxed(&d->clock_ms); /* see shk_dict_set_clock */
    if (ms >= 0)
        return (uint64_t)ms;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* ---- the shard context: pointers computed once per operation ------------------------ */

struct sc {
    struct shk_dict *d;
    struct shk_dict_shard *sh;
    uint32_t *bk;           /* buckets */
    uint64_t *used;
    uint64_t *ref;
    uint8_t *undo;
    uint8_t *cells;
    uint32_t n;             /* cells in the shard */
    uint32_t s;             /* shard number */
    uint32_t bmask;         /* buckets - 1 */
    int have_now;
    uint64_t now;
    uint32_t removed;       /* items removed by this operation (chains may have changed) */
    int published;          /* the operation has made its change visible */
    const char *why;        /* what a walk found inconsistent */
    int key_absent;         /* a walk under this lock just found no such key: the next
                               store_inner need not walk again (it clears this) */
};

static inline void sc_init(struct sc *c, struct shk_dict *d, uint32_t s)
{
    uint8_t *blk = d->data0 + (uint64_t)s * d->stride;
    c->d = d;
    c->sh = &d->shards[s];
    c->bk = (uint32_t *)blk;
    c->used = (uint64_t *)(blk + d->used_off);
    c->ref = (uint64_t *)(blk + d->ref_off);
    c->undo = blk + d->undo_off;
    c->cells = blk + d->cells_off;
    c->n = d->ncells;
    c->s = s;
    c->bmask = d->nbuckets - 1;
    c->have_now = 0;
    c->now = 0;
    c->removed = 0;
    c->published = 0;
    c->why = NULL;
    c->key_absent = 0;
}

static inline uint64_t now_ms(struct sc *c)
{
    if (!c->have_now) {
        c->now = shk_dict_now(c->d);
        c->have_now = 1;
    }
    return c->now;
}

static inline int is_expired(struct sc *c, uint64_t expire)
{
    return expire != 0 && expire <= now_ms(c);
}

static inline void *cellp(struct sc *c, uint32_t ci)
{
    return c->cells + (uint64_t)ci * CELL;
}

static inline uint32_t bucket_of(const struct shk_dict *d, uint64_t hash)
{
    return (uint32_t)((hash >> 32) >> d->shard_bits) & (d->nbuckets - 1);
}

static inline int bit_get(const uint64_t *map, uint32_t i)
{
    return (int)((shk_load_relaxed(&map[i >> 6]) >> (i & 63)) & 1);
}

static inline void bit_put(uint64_t *map, uint32_t i, int on)
{
    if (on)
        map[i >> 6] |= 1ull << (i & 63);
    else
        map[i >> 6] &= ~(1ull << (i & 63));
}

static void bits_put(uint64_t *map, uint32_t start, uint32_t len, int on)
{
    while (len) {
        uint32_t w = start >> 6, b = start & 63;
        uint32_t k = 64 - b < len ? 64 - b : len;
        uint64_t m = (k == 64 ? ~0ull : ((1ull << k) - 1)) << b;
        if (on)
            map[w] |= m;
        else
            map[w] &= ~m;
        start += k;
        len -= k;
    }
}

/* CLOCK reference bit: readers set it without the lock (it lives in its own bitmap). */
static inline void ref_touch(struct sc *c, uint32_t ci)
{
    uint64_t bit = 1ull << (ci & 63);
    uint64_t *w = &c->ref[ci >> 6];
    if (!(shk_load_relaxed(w) & bit))
        shk_fetch_or_relaxed(w, bit);
}

static inline int ref_take(struct sc *c, uint32_t ci)
{
    uint64_t bit = 1ull << (ci & 63);
    uint64_t *w = &c->ref[ci >> 6];
    if (!(shk_load_relaxed(w) & bit))
        return 0;
    shk_fetch_and_relaxed(w, ~bit);
    return 1;
}

/* The test hook (shk_dict.crash_at): SIGKILL ourselves here, or with crash_stop, stop
 * here once (SIGSTOP, holding the shard's lock) and carry on when continued. */
static __attribute__((noinline, cold)) void crash_now(struct shk_dict *d)
{
    if (d->crash_stop) {
        d->crash_at = 0;
        kill(getpid(), SIGSTOP);
        return;
    }
    kill(getpid(), SIGKILL);
    for (;;)
        pause();
}

static inline void crash_point(struct sc *c, int point)
{
    if (UNLIKELY(c->d->crash_at == point))
        crash_now(c->d);
}

/* ---- the shard lock ------------------------------------------------------------------- */

static int shard_lock_slow(struct shk_dict *d, uint32_t s, int flags, int r);
static int lock_acquired(struct shk_dict *d, uint32_t s, int r);

/*
 * Take shard s's lock for a call with these flags: 0 (held, whatever a dead owner left
 * repaired), EBUSY (still held elsewhere after a short spin, and SHK_DWAIT not given:
 * nothing was done), or an error.  The uncontended case is one trylock and a look at seq.
 */
static inline int shard_lock(struct shk_dict *d, uint32_t s, int flags)
{
    int r = shk_mutex_check(&d->shards[s].lock); /* a corrupted kind makes glibc abort */
    if (UNLIKELY(r))
        return r;
    r = pthread_mutex_trylock(&d->shards[s].lock);
    if (LIKELY(r == 0) && !(shk_load_relaxed(&d->shards[s].seq) & 1))
        return 0;
    return shard_lock_slow(d, s, flags, r);
}

/* The shard context of k's shard, its lock taken as shard_lock does. */
static inline int lock_key(struct sc *c, struct shk_dict *d, const struct shk_dkey *k, int flags)
{
    uint32_t s = shk_dict_shard_of(d, k);
    int r = shard_lock(d, s, flags);
    if (LIKELY(r == 0))
        sc_init(c, d, s);
    return r;
}

static inline void unlock_sc(struct sc *c)
{
    if (UNLIKELY(shk_mutex_check(&c->sh->lock)))
        shk_mutex_unlock(&c->sh->lock); /* corrupted while held: mended and unlocked */
    else
        pthread_mutex_unlock(&c->sh->lock);
}

/* Writers keep seq odd while they change the shard. */
static inline void write_begin(struct sc *c)
{
    uint32_t s = c->sh->seq;
    shk_store_relaxed(&c->sh->seq, (s | 1u) == s ? s + 2 : s + 1); /* odd, whatever it was */
    shk_fence_release();
}

static inline void write_end(struct sc *c)
{
    uint32_t s = c->sh->seq;
    shk_store_release(&c->sh->seq, (s & 1u) ? s + 1 : s + 2);
}

/* ---- geometry ---------------------------------------------------------------------------- */

static uint32_t pow2_floor(uint64_t n)
{
    uint32_t p = 1;
    while ((uint64_t)p * 2 <= n && p < (1u << 31))
        p *= 2;
    return p;
}

/*
 * Shards exist so that writers in different processes do not wait for each other: two
 * per CPU (rounded up to a power of two) keep collisions rare.  More than that only
 * costs: the items stored one after another end up in as many separate places as there
 * are shards (a read in the order of the writes, the common bulk-load-then-read, then
 * walks that many interleaved streams, which defeats the hardware prefetcher and the
 * TLB), eviction is decided per shard (less like global LRU), and a shard bounds the
 * largest item.  So: max(8, 2 x CPUs) rounded up, at most 64, and at most one per MiB.
 */
uint32_t shk_dict_default_shards(uint64_t capacity)
{
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    uint64_t want = cpus > 0 ? 2 * (uint64_t)cpus : 8;
    if (want < DEFAULT_MIN_SHARDS)
        want = DEFAULT_MIN_SHARDS;
    uint32_t n = 1;
    while (n < want && n < DEFAULT_MAX_SHARDS)
        n *= 2;
    uint64_t by_size = capacity / DEFAULT_SHARD_BYTES;
    uint32_t cap_n = pow2_floor(by_size ? by_size : 1);
    if (cap_n < n)
        n = cap_n;
    /* a huge dict needs enough shards that none exceeds the largest a shard can be
     * (2^30 cells): beyond what SHK_DICT_MAX_SHARDS allows, shk_dict_plan says so */
    uint64_t max_shard = (1ull << 30) * CELL;
    while (n < SHK_DICT_MAX_SHARDS && capacity / n > max_shard)
        n *= 2;
    return n;
}

int shk_dict_plan(uint64_t capacity, uint32_t nshards, struct shk_dict_geometry *g)
{
    memset(g, 0, sizeof *g);
    uint64_t min_cap = (uint64_t)MIN_SHARD_CELLS * CELL;
    if (capacity < min_cap)
        return shk_fail(EINVAL, "dict capacity %llu is below the minimum of %llu bytes",
                        (unsigned long long)capacity, (unsigned long long)min_cap);
    if (nshards == 0)
        nshards = shk_dict_default_shards(capacity);
    if (nshards > SHK_DICT_MAX_SHARDS || (nshards & (nshards - 1)))
        return shk_fail(EINVAL, "dict shards must be a power of two from 1 to %u, not %u",
                        SHK_DICT_MAX_SHARDS, nshards);
    uint64_t cells = capacity / CELL / nshards;
    if (cells < MIN_SHARD_CELLS)
        return shk_fail(EINVAL, "dict capacity %llu split in %u shards leaves %llu bytes per "
                        "shard; each needs at least %llu", (unsigned long long)capacity,
                        nshards, (unsigned long long)(cells * CELL),
                        (unsigned long long)min_cap);
    if (cells > (1u << 30))
        return shk_fail(EINVAL, "dict shards of %llu bytes are too large (at most %llu); "
                        "use more shards", (unsigned long long)(cells * CELL),
                        (unsigned long long)((1ull << 30) * CELL));
    uint32_t shard_bits = (uint32_t)__builtin_ctz(nshards);
    uint64_t buckets = 16;
    while (buckets * 4 < cells)
        buckets *= 2;
    while (buckets > (1ull << (32 - shard_bits)))
        buckets /= 2;
    uint64_t words = (cells + 63) / 64;
    g->nshards = nshards;
    g->cells_per_shard = (uint32_t)cells;
    g->buckets_per_shard = (uint32_t)buckets;
    g->capacity = cells * CELL * nshards;
    g->shards_off = sizeof(struct shk_dict_header);
    g->data_off = align64(g->shards_off + (uint64_t)nshards * sizeof(struct shk_dict_shard));
    g->used_off = align64(buckets * 4);
    g->ref_off = align64(g->used_off + words * 8);
    g->undo_off = align64(g->ref_off + words * 8);
    g->cells_off = align64(g->undo_off + SHK_DICT_UNDO);
    g->stride = align64(g->cells_off + cells * CELL);
    g->total_size = g->data_off + g->stride * nshards;
    return 0;
}

static void handle_fill(struct shk_dict *d, uint8_t *base, const struct shk_dict_geometry *g)
{
    d->base = base;
    d->hdr = (struct shk_dict_header *)base;
    d->shards = (struct shk_dict_shard *)(base + g->shards_off);
    d->data0 = base + g->data_off;
    d->stride = g->stride;
    d->used_off = g->used_off;
    d->ref_off = g->ref_off;
    d->undo_off = g->undo_off;
    d->cells_off = g->cells_off;
    d->nshards = g->nshards;
    d->shard_bits = (uint32_t)__builtin_ctz(g->nshards);
    d->ncells = g->cells_per_shard;
    d->nbuckets = g->buckets_per_shard;
}

/* ---- free runs --------------------------------------------------------------------- */

static inline int bin_of(uint32_t n)
{
    if (n <= 32)
        return (int)n - 1;
    return 32 + (31 - __builtin_clz(n)) - 5;
}

static inline uint32_t *footer_of(struct sc *c, uint32_t last_cell)
{
    return (uint32_t *)((uint8_t *)cellp(c, last_cell) + CELL - 4);
}

/* Make [start, start + len) a free run at the front of its bin (used bits already clear). */
static int bin_push(struct sc *c, uint32_t start, uint32_t len)
{
    struct shk_dict_shard *sh = c->sh;
    struct shk_dfree *f = cellp(c, start);
    int b = bin_of(len);
    uint32_t head = sh->bins[b];
    if (head && head > c->n)
        return CORRUPT("dict shard %u: bin %d starts at cell %u, outside the shard", c->s, b,
                       head - 1);
    f->magic = SHK_DICT_FREE_MAGIC;
    f->ncells = len;
    f->prev = 0;
    f->next = head;
    *footer_of(c, start + len - 1) = len;
    if (head)
        ((struct shk_dfree *)cellp(c, head - 1))->prev = start + 1;
    sh->bins[b] = start + 1;
    sh->bin_mask |= 1ull << b;
    return 0;
}

/* Unlink the free run starting at `start` from its bin. */
static int bin_remove(struct sc *c, uint32_t start)
{
    struct shk_dict_shard *sh = c->sh;
    struct shk_dfree *f = cellp(c, start);
    uint32_t len = f->ncells;
    if (f->magic != SHK_DICT_FREE_MAGIC || len == 0 || len > c->n - start)
        return CORRUPT("dict shard %u: cell %u should start a free run but does not (magic "
                       "0x%08x, length %u)", c->s, start, f->magic, len);
    int b = bin_of(len);
    if ((f->prev && f->prev > c->n) || (f->next && f->next > c->n))
        return CORRUPT("dict shard %u: free run at cell %u links outside the shard", c->s, start);
    if (f->prev)
        ((struct shk_dfree *)cellp(c, f->prev - 1))->next = f->next;
    else if (sh->bins[b] == start + 1)
        sh->bins[b] = f->next;
    else
        return CORRUPT("dict shard %u: free run at cell %u has no predecessor but is not the "
                       "head of bin %d", c->s, start, b);
    if (f->next)
        ((struct shk_dfree *)cellp(c, f->next - 1))->prev = f->prev;
    if (!sh->bins[b])
        sh->bin_mask &= ~(1ull << b);
    f->magic = 0;
    return 0;
}

/* Take `want` cells from the front of the free run at `start` (length len >= want). */
static int run_take_at(struct sc *c, uint32_t start, uint32_t len, uint32_t want)
{
    int r = bin_remove(c, start);
    if (r)
        return r;
    if (len > want && (r = bin_push(c, start + want, len - want)) != 0)
        return r;
    bits_put(c->used, start, want, 1);
    c->sh->free_cells -= want;
    return 0;
}

/* A free run of at least `need` cells: its start and length, or SHK_EFULL. */
static int run_find(struct sc *c, uint32_t need, uint32_t *start, uint32_t *len)
{
    struct shk_dict_shard *sh = c->sh;
    if (need == 0 || need > c->n)
        return SHK_EFULL;
    int b = bin_of(need);
    if (need > 32) {
        /* bin b holds runs of [2^k, 2^(k+1)) cells: look for a fit among its first few */
        uint32_t idx = sh->bins[b];
        for (int guard = 0; idx && guard < 16; guard++) {
            if (idx > c->n)
                return CORRUPT("dict shard %u: bin %d links to cell %u outside the shard",
                               c->s, b, idx - 1);
            struct shk_dfree *f = cellp(c, idx - 1);
            if (f->ncells >= need && f->ncells <= c->n - (idx - 1)) {
                *start = idx - 1;
                *len = f->ncells;
                return 0;
            }
            idx = f->next;
        }
        b++;
    }
    uint64_t mask = b < 64 ? sh->bin_mask & (~0ull << b) : 0;
    if (!mask)
        return SHK_EFULL;
    b = __builtin_ctzll(mask);
    uint32_t idx = sh->bins[b];
    if (!idx || idx > c->n)
        return CORRUPT("dict shard %u: bin %d is marked non-empty but starts at %u", c->s, b, idx);
    struct shk_dfree *f = cellp(c, idx - 1);
    if (f->ncells < need || f->ncells > c->n - (idx - 1))
        return CORRUPT("dict shard %u: run of %u cells at cell %u is in bin %d", c->s,
                       f->ncells, idx - 1, b);
    *start = idx - 1;
    *len = f->ncells;
    return 0;
}

/* The largest-bin run (for gathering fragments). */
static int run_biggest(struct sc *c, uint32_t *start, uint32_t *len)
{
    struct shk_dict_shard *sh = c->sh;
    if (!sh->bin_mask)
        return SHK_EFULL;
    int b = 63 - __builtin_clzll(sh->bin_mask);
    uint32_t idx = sh->bins[b], best = 0, best_len = 0;
    for (int guard = 0; idx && guard < 8; guard++) {
        if (idx > c->n)
            return CORRUPT("dict shard %u: bin %d links to cell %u outside the shard", c->s, b,
                           idx - 1);
        struct shk_dfree *f = cellp(c, idx - 1);
        if (f->ncells > best_len && f->ncells <= c->n - (idx - 1)) {
            best = idx;
            best_len = f->ncells;
        }
        idx = f->next;
    }
    if (!best)
        return CORRUPT("dict shard %u: bin %d is marked non-empty but holds no run", c->s, b);
    *start = best - 1;
    *len = best_len;
    return 0;
}

/* Give [start, start + len) back, merging with free neighbours. */
static int run_free(struct sc *c, uint32_t start, uint32_t len)
{
    int r;
    if (len == 0 || start >= c->n || len > c->n - start)
        return CORRUPT("dict shard %u: free of cells [%u, +%u) outside the shard", c->s, start, len);
    bits_put(c->used, start, len, 0);
    c->sh->free_cells += len;
    uint32_t end = start + len;
    if (end < c->n && !bit_get(c->used, end)) {
        struct shk_dfree *f = cellp(c, end);
        uint32_t rlen = f->ncells;
        if ((r = bin_remove(c, end)) != 0)
            return r;
        len += rlen;
    }
    if (start > 0 && !bit_get(c->used, start - 1)) {
        uint32_t llen = *footer_of(c, start - 1);
        if (llen == 0 || llen > start)
            return CORRUPT("dict shard %u: free run ending at cell %u claims length %u", c->s,
                           start - 1, llen);
        uint32_t lstart = start - llen;
        struct shk_dfree *f = cellp(c, lstart);
        if (f->ncells != llen)
            return CORRUPT("dict shard %u: free run at cell %u has length %u, its footer %u",
                           c->s, lstart, f->ncells, llen);
        if ((r = bin_remove(c, lstart)) != 0)
            return r;
        start = lstart;
        len += llen;
    }
    return bin_push(c, start, len);
}

/* ---- objects: an item or a list node with its fragments --------------------------------- */

struct alloc {
    uint32_t head;          /* first cell */
    uint32_t head_cells;
    uint32_t frag;          /* first fragment, cell + 1 */
};

/* Free the fragment chain starting at link `frag`. */
static int free_frags(struct sc *c, uint32_t frag)
{
    uint32_t guard = c->n;
    while (frag) {
        if (frag > c->n || !guard--)
            return CORRUPT("dict shard %u: fragment chain leaves the shard or loops", c->s);
        struct shk_dfrag *g = cellp(c, frag - 1);
        uint32_t nc = g->ncells, next = g->next;
        if (nc == 0 || nc > c->n - (frag - 1))
            return CORRUPT("dict shard %u: fragment at cell %u has %u cells", c->s, frag - 1, nc);
        int r = run_free(c, frag - 1, nc);
        if (r)
            return r;
        frag = next;
    }
    return 0;
}

/*
 * Cells for an object of hdr + vlen bytes whose first run must hold at least head_min
 * bytes.  One run when there is one; else the largest runs, chained as fragments.
 * SHK_EFULL when the free cells are not enough (nothing taken then).
 */
static int alloc_obj(struct sc *c, uint32_t hdr, uint64_t vlen, uint32_t head_min,
                     struct alloc *a)
{
    uint64_t total = (uint64_t)hdr + vlen;
    uint64_t need = cells_for(total);
    uint32_t start, len;
    int r;
    a->frag = 0;
    if (need <= c->n) {
        r = run_find(c, (uint32_t)need, &start, &len);
        if (r == 0) {
            if ((r = run_take_at(c, start, len, (uint32_t)need)) != 0)
                return r;
            a->head = start;
            a->head_cells = (uint32_t)need;
            return 0;
        }
        if (r != SHK_EFULL)
            return r;
    }
    /* gather: the biggest run first (it holds the header and key), then the next ones */
    if ((uint64_t)c->sh->free_cells < need)
        return SHK_EFULL;
    if ((r = run_biggest(c, &start, &len)) != 0)
        return r;
    if ((uint64_t)len * CELL < head_min)
        return SHK_EFULL;
    if (len >= need) { /* a fit the bounded bin search did not reach */
        if ((r = run_take_at(c, start, len, (uint32_t)need)) != 0)
            return r;
        a->head = start;
        a->head_cells = (uint32_t)need;
        return 0;
    }
    if ((r = run_take_at(c, start, len, len)) != 0)
        return r;
    a->head = start;
    a->head_cells = len;
    uint64_t have = (uint64_t)len * CELL - hdr;  /* value bytes placed so far */
    uint32_t *link = &a->frag;
    while (have < vlen) {
        r = run_biggest(c, &start, &len);
        if (r) {
            /* not enough after all: give everything back */
            int r2 = run_free(c, a->head, a->head_cells);
            if (r2 == 0)
                r2 = free_frags(c, a->frag);
            return r2 ? r2 : r;
        }
        uint64_t left = vlen - have;
        uint32_t want = len;
        if ((uint64_t)len * CELL - FRAG_HDR > left)
            want = (uint32_t)cells_for(left + FRAG_HDR);
        if ((r = run_take_at(c, start, len, want)) != 0)
            return r;
        struct shk_dfrag *g = cellp(c, start);
        g->ncells = want;
        g->next = 0;
        *link = start + 1;
        link = &g->next;
        have += (uint64_t)want * CELL - FRAG_HDR;
    }
    return 0;
}

/* Copy src into an allocated object: the first `room` bytes at dst, the rest into the
 * fragments. */
static void write_bytes(struct sc *c, uint8_t *dst, uint64_t room, uint32_t frag,
                        const uint8_t *src, uint64_t len)
{
    uint64_t first = room < len ? room : len;
    if (first)
        memcpy(dst, src, first);
    src += first;
    len -= first;
    while (len && frag) {
        struct shk_dfrag *g = cellp(c, frag - 1);
        uint64_t cap = (uint64_t)g->ncells * CELL - FRAG_HDR;
        uint64_t k = cap < len ? cap : len;
        memcpy((uint8_t *)g + FRAG_HDR, src, k);
        src += k;
        len -= k;
        frag = g->next;
    }
}

/*
 * Copy `len` value bytes of an object into dst: `room` bytes at p, then the fragment
 * chain from `frag`.  Safe on bytes a writer may be changing: every fragment index and
 * length is checked against the shard first.  INCONSISTENT when they make no sense.
 */
static int read_bytes(struct sc *c, const uint8_t *p, uint64_t room, uint32_t frag,
                      uint8_t *dst, uint64_t len)
{
    uint64_t first = room < len ? room : len;
    if (first)
        memcpy(dst, p, first);
    dst += first;
    len -= first;
    uint32_t guard = c->n;
    while (len) {
        if (!frag || frag > c->n || !guard--) {
            c->why = "a value's fragment chain ends early or leaves the shard";
            return INCONSISTENT;
        }
        struct shk_dfrag *g = cellp(c, frag - 1);
        uint32_t nc = shk_load_relaxed(&g->ncells);
        if (nc == 0 || nc > c->n - (frag - 1)) {
            c->why = "a fragment's length runs past the shard";
            return INCONSISTENT;
        }
        uint64_t cap = (uint64_t)nc * CELL - FRAG_HDR;
        uint64_t k = cap < len ? cap : len;
        memcpy(dst, (const uint8_t *)g + FRAG_HDR, k);
        dst += k;
        len -= k;
        frag = shk_load_relaxed(&g->next);
    }
    return 0;
}

/* ---- items: lookup (safe without the lock), the eviction queue, removal ----------------- */

struct hit {
    uint32_t ci;            /* first cell of the item */
    struct shk_ditem *it;
    uint32_t *link;         /* the link that points at it (bucket or predecessor's next) */
};

/* The item at a link (cell + 1), or NULL if an item header cannot start there. */
static inline struct shk_ditem *item_at(struct sc *c, uint32_t link)
{
    if (!link || link > c->n - 1)
        return NULL;
    return cellp(c, link - 1);
}

/* Does the key stored at `stored` (zero-padded to 8 bytes) equal k?  Short keys compare
 * as words: one or two loads instead of a call. */
static inline int key_equal(const struct shk_dkey *k, const uint8_t *stored)
{
    if (k->len == 0)
        return 1; /* nothing stored: the value starts right after the header */
    if (k->len <= 16) {
        uint64_t w0, w1;
        memcpy(&w0, stored, 8);
        if (w0 != k->head[0])
            return 0;
        if (k->len <= 8)
            return 1;
        memcpy(&w1, stored + 8, 8);
        return w1 == k->head[1];
    }
    return memcmp(stored, k->data, k->len) == 0;
}

/* Find k in its chain.  1 found, 0 absent, INCONSISTENT.  Safe on a changing shard. */
static inline __attribute__((always_inline)) int find(struct sc *c, const struct shk_dkey *k,
                                                      struct hit *h)
{
    uint32_t tag = (uint32_t)k->hash;
    uint32_t *link = &c->bk[bucket_of(c->d, k->hash)];
    uint32_t idx = shk_load_acquire(link);
    uint32_t guard = c->n;
    while (idx) {
        uint32_t ci = idx - 1;
        if (ci >= c->n - 1) {
            c->why = "a bucket chain points outside the shard";
            return INCONSISTENT;
        }
        struct shk_ditem *it = cellp(c, ci);
        /* the key and value usually spill into the next two cache lines: ask for them
         * now, in parallel with the header's miss, rather than after it */
        __builtin_prefetch((const uint8_t *)it + 64);
        __builtin_prefetch((const uint8_t *)it + 127); /* a 4-cell item may span 3 lines */
        if (shk_load_relaxed(&it->tag) == tag && shk_load_relaxed(&it->klen) == k->len &&
            shk_load_relaxed(&it->ktype) == k->type) {
            if (!shk_dict_item_span_ok(c->d, ci, shk_load_relaxed(&it->ncells),
                                       ITEM_HDR + round8(k->len))) {
                c->why = "an item's length does not fit the shard";
                return INCONSISTENT;
            }
            if (key_equal(k, (const uint8_t *)(it + 1))) {
                h->ci = ci;
                h->it = it;
                h->link = link;
                return 1;
            }
        }
        link = &it->next;
        idx = shk_load_acquire(link);
        if (!guard--) {
            c->why = "a bucket chain loops";
            return INCONSISTENT;
        }
    }
    return 0;
}

static inline uint8_t *value_of(struct shk_ditem *it, uint64_t *room)
{
    uint64_t voff = ITEM_HDR + round8(shk_load_relaxed(&it->klen));
    *room = (uint64_t)shk_load_relaxed(&it->ncells) * CELL - voff;
    return (uint8_t *)it + voff;
}

static int vtype_valid(uint8_t t)
{
    return t >= SHK_DV_BYTES && t <= SHK_DV_LIST;
}

/* Count a lookup.  A call that may wait (SHK_DWAIT) may run beside other calls on this
 * handle (C callers sharing a handle between threads), so it never writes the handle:
 * its lookups go to the shared counters at once. */
static inline void count_lookup(struct shk_dict *d, int hit, int flags)
{
    if (UNLIKELY(flags & SHK_DWAIT))
        shk_stat_add(hit ? &d->hdr->hits : &d->hdr->misses, 1);
    else
        shk_dict_count_fast(d, hit);
}

void shk_dict_publish_counts(struct shk_dict *d)
{
    if (d->pid != shk_self_pid()) { /* counts inherited through fork are the parent's */
        d->pid = shk_self_pid();
        d->hits = d->misses = 0;
        return;
    }
    if (d->hits)
        shk_stat_add(&d->hdr->hits, d->hits);
    if (d->misses)
        shk_stat_add(&d->hdr->misses, d->misses);
    d->hits = d->misses = 0;
}

/* Copy a short value with fixed-size moves (no call): both sides have room for them. */
static inline void copy_value(void *dst, uint64_t cap, const uint8_t *src, uint64_t room,
                              uint64_t len)
{
    if (len <= 16 && room >= 16 && cap >= 16)
        __builtin_memcpy(dst, src, 16);
    else if (len <= 64 && room >= 64 && cap >= 64)
        __builtin_memcpy(dst, src, 64);
    else
        memcpy(dst, src, len);
}

/*
 * The lookup of the hot path in one pass, without the lock: chain walk, checks, copy,
 * validation.  A short value (that fits `cap`, in the item's first run) costs a few moves
 * from the item; the rest (fragments, errors) leaves the straight line.  0, SHK_ENOTFOUND,
 * ENOBUFS (f->len: the room needed; not counted: the caller comes back), SHK_ECORRUPT, or
 * EAGAIN: writers kept the shard busy, or the value is a list (whose elements are copied
 * under the lock): shk_dict_get then takes the lock.
 */
static inline int get_lockfree(struct shk_dict *d, const struct shk_dkey *k, int flags,
                               void *buf, uint64_t cap, struct shk_dict_found *f)
{
    const uint32_t s = shk_dict_shard_of(d, k);
    struct shk_dict_shard *sh = &d->shards[s];
    uint8_t *blk = d->data0 + (uint64_t)s * d->stride;
    const uint32_t *bkt = (const uint32_t *)blk + bucket_of(d, k->hash);
    uint8_t *cells = blk + d->cells_off;
    const uint32_t n = d->ncells, tag = (uint32_t)k->hash, klen = k->len;
    const uint64_t voff = ITEM_HDR + round8(klen);
    const char *why = NULL;
    for (int attempt = 0; attempt < READ_TRIES; attempt++) {
        uint32_t s1 = shk_load_acquire(&sh->seq);
        if (UNLIKELY(s1 & 1)) {
            for (int i = 0; i < 32; i++)
                shk_cpu_relax();
            continue;
        }
        uint32_t idx = shk_load_acquire(bkt), guard = n, ci = 0;
        struct shk_ditem *it = NULL;
        int found = 0, fits = 0, stale = 0;
        while (idx) {
            ci = idx - 1;
            if (UNLIKELY(ci >= n - 1)) {
                why = "a bucket chain points outside the shard";
                goto torn;
            }
            it = (struct shk_ditem *)(cells + (uint64_t)ci * CELL);
            /* the value usually spills into the next cache lines (items are 32-byte
             * aligned: a 128-byte one spans 3 lines half of the time): ask for them now */
            __builtin_prefetch((const uint8_t *)it + 64);
            __builtin_prefetch((const uint8_t *)it + 127);
            if (shk_load_relaxed(&it->tag) == tag && shk_load_relaxed(&it->klen) == klen &&
                shk_load_relaxed(&it->ktype) == k->type) {
                if (UNLIKELY(!shk_dict_item_span_ok(d, ci, shk_load_relaxed(&it->ncells), voff))) {
                    why = "an item's length does not fit the shard";
                    goto torn;
                }
                if (key_equal(k, (const uint8_t *)(it + 1))) {
                    found = 1;
                    break;
                }
            }
            idx = shk_load_acquire(&it->next);
            if (UNLIKELY(!guard--)) {
                why = "a bucket chain loops";
                goto torn;
            }
        }
        if (found) {
            uint64_t expire = shk_load_relaxed(&it->expire);
            if (expire && expire <= shk_dict_now(d)) {
                stale = 1;
                found = (flags & SHK_DSTALE) != 0;
            }
        }
        if (found) {
            uint8_t vt = shk_load_relaxed(&it->vtype);
            uint32_t vlen = shk_load_relaxed(&it->vlen), nc = shk_load_relaxed(&it->ncells),
                     frag = shk_load_relaxed(&it->frag);
            if (UNLIKELY((why = shk_dict_item_problem(d, ci, vt, nc, voff, vlen, frag)) != NULL))
                goto torn;
            const uint8_t *val = (const uint8_t *)it + voff;
            uint64_t room = (uint64_t)nc * CELL - voff;
            f->vtype = vt;
            f->flags = shk_load_relaxed(&it->flags);
            f->expire = shk_load_relaxed(&it->expire);
            f->version = shk_load_relaxed(&it->version);
            f->stale = stale;
            if (vt == SHK_DV_LIST) {
                f->count = shk_load_relaxed(&((const struct shk_dlist *)val)->count);
                f->len = 0;
                fits = (flags & SHK_DPEEK) ? 1 : -1; /* -1: its elements, under the lock */
            } else {
                f->len = vlen;
                fits = vlen <= cap;
                if (UNLIKELY(flags & SHK_DPEEK)) {
                    fits = 1; /* found is all it asks */
                } else if (fits && LIKELY(vlen <= room)) {
                    copy_value(buf, cap, val, room, vlen);
                } else if (fits) { /* continued in fragments */
                    struct sc c;
                    sc_init(&c, d, s);
                    if (read_bytes(&c, val, room, frag, buf, vlen)) {
                        why = c.why;
                        goto torn;
                    }
                }
            }
        }
        shk_fence_acquire();
        if (UNLIKELY(shk_load_relaxed(&sh->seq) != s1))
            continue;
        if (!found) {
            count_lookup(d, 0, flags);
            return SHK_ENOTFOUND;
        }
        if (fits <= 0)
            return fits ? EAGAIN : ENOBUFS; /* counted when the caller comes back */
        uint64_t bit = 1ull << (ci & 63); /* CLOCK: used (set once, by the first reader) */
        uint64_t *w = (uint64_t *)(blk + d->ref_off) + (ci >> 6);
        if (!(shk_load_relaxed(w) & bit))
            shk_fetch_or_relaxed(w, bit);
        count_lookup(d, 1, flags);
        return 0;
    torn: /* bytes that make no sense: a writer moved them, or they are corrupt */
        shk_fence_acquire();
        if (shk_load_relaxed(&sh->seq) != s1)
            continue;
        return CORRUPT("dict shard %u: %s", s, why);
    }
    return EAGAIN;
}

static int lru_append(struct sc *c, uint32_t ci)
{
    struct shk_dict_shard *sh = c->sh;
    struct shk_ditem *it = cellp(c, ci);
    uint32_t tail = sh->lru_tail;
    it->lru_next = 0;
    it->lru_prev = tail;
    if (tail) {
        struct shk_ditem *t = item_at(c, tail);
        if (!t)
            return CORRUPT("dict shard %u: eviction queue tail %u is outside the shard", c->s, tail - 1);
        t->lru_next = ci + 1;
    } else {
        sh->lru_head = ci + 1;
    }
    sh->lru_tail = ci + 1;
    return 0;
}

/* Take the item at cell ci out of the eviction queue, pointing its neighbours (or the
 * queue's ends) at `after_prev` and `before_next` instead: its successor and predecessor
 * to unlink it, another item (cell + 1) to put that one in its place. */
static int lru_relink(struct sc *c, uint32_t ci, uint32_t after_prev, uint32_t before_next)
{
    struct shk_dict_shard *sh = c->sh;
    struct shk_ditem *it = cellp(c, ci);
    uint32_t prev = it->lru_prev, next = it->lru_next;
    if (prev) {
        struct shk_ditem *p = item_at(c, prev);
        if (!p)
            return CORRUPT("dict shard %u: item at cell %u has its queue predecessor outside "
                           "the shard", c->s, ci);
        p->lru_next = after_prev;
    } else if (sh->lru_head == ci + 1) {
        sh->lru_head = after_prev;
    } else {
        return CORRUPT("dict shard %u: item at cell %u has no queue predecessor but is not "
                       "the queue's head", c->s, ci);
    }
    crash_point(c, SHK_DCRASH_MID_LRU);
    if (next) {
        struct shk_ditem *n = item_at(c, next);
        if (!n)
            return CORRUPT("dict shard %u: item at cell %u has its queue successor outside "
                           "the shard", c->s, ci);
        n->lru_prev = before_next;
    } else if (sh->lru_tail == ci + 1) {
        sh->lru_tail = before_next;
    } else {
        return CORRUPT("dict shard %u: item at cell %u has no queue successor but is not "
                       "the queue's tail", c->s, ci);
    }
    it->lru_prev = it->lru_next = 0;
    return 0;
}

static int lru_unlink(struct sc *c, uint32_t ci)
{
    struct shk_ditem *it = cellp(c, ci);
    return lru_relink(c, ci, it->lru_next, it->lru_prev);
}

/* The item at new_ci takes old_ci's place in the queue, referenced: a write is a use. */
static int lru_replace(struct sc *c, uint32_t old_ci, uint32_t new_ci)
{
    struct shk_ditem *o = cellp(c, old_ci), *n = cellp(c, new_ci);
    n->lru_prev = o->lru_prev;
    n->lru_next = o->lru_next;
    int r = lru_relink(c, old_ci, new_ci + 1, new_ci + 1);
    if (r == 0)
        ref_touch(c, new_ci);
    return r;
}

static int lru_to_tail(struct sc *c, uint32_t ci)
{
    if (c->sh->lru_tail == ci + 1)
        return 0;
    int r = lru_unlink(c, ci);
    return r ? r : lru_append(c, ci);
}

/* The list header inside the LIST item at cell ci (checked to lie inside the item's
 * first run, itself inside the shard); NULL if it is not a list or does not fit. */
static struct shk_dlist *list_of(struct sc *c, struct shk_ditem *it, uint32_t ci)
{
    uint32_t nc = it->ncells;
    uint64_t voff = ITEM_HDR + round8(it->klen);
    if (it->vtype != SHK_DV_LIST || nc < 2 || ci >= c->n || nc > c->n - ci ||
        voff + sizeof(struct shk_dlist) > (uint64_t)nc * CELL)
        return NULL;
    return (struct shk_dlist *)((uint8_t *)it + voff);
}

/* A list node at a link, or NULL if one cannot start there. */
static inline struct shk_dnode *node_at(struct sc *c, uint32_t link)
{
    if (!link || link > c->n)
        return NULL;
    return cellp(c, link - 1);
}

static int free_node(struct sc *c, uint32_t ni)
{
    struct shk_dnode *nd = cellp(c, ni);
    uint32_t nc = nd->ncells, frag = nd->frag;
    if (nc == 0 || nc > c->n - ni || NODE_HDR > (uint64_t)nc * CELL)
        return CORRUPT("dict shard %u: list node at cell %u has %u cells", c->s, ni, nc);
    int r = run_free(c, ni, nc);
    return r ? r : free_frags(c, frag);
}

/* Give an unpublished item's memory back (its list nodes too). */
static int free_item_memory(struct sc *c, struct shk_ditem *it, uint32_t ci)
{
    int r;
    if (it->vtype == SHK_DV_LIST) {
        struct shk_dlist *l = list_of(c, it, ci);
        if (!l)
            return CORRUPT("dict shard %u: list item at cell %u is too short", c->s, ci);
        uint32_t node = l->head, guard = c->n;
        while (node) {
            struct shk_dnode *nd = node_at(c, node);
            if (!nd || !guard--)
                return CORRUPT("dict shard %u: a list's node chain leaves the shard or loops", c->s);
            uint32_t next = nd->next;
            if ((r = free_node(c, node - 1)) != 0)
                return r;
            node = next;
        }
    }
    uint32_t nc = it->ncells, frag = it->frag;
    if (nc < 2 || nc > c->n - ci)
        return CORRUPT("dict shard %u: item at cell %u has %u cells", c->s, ci, nc);
    if ((r = run_free(c, ci, nc)) != 0)
        return r;
    crash_point(c, SHK_DCRASH_MID_FREE);
    return free_frags(c, frag);
}

/* Unpublish the item that `link` points at and give its memory back. */
static int item_remove(struct sc *c, uint32_t *link, uint32_t ci, struct shk_ditem *it)
{
    struct shk_dict_shard *sh = c->sh;
    /* gone for readers; a crash from here on only leaks cells until the next recovery walk */
    shk_store_release(link, it->next);
    c->removed++;
    sh->items--;
    if (it->expire)
        sh->ttl_items--;
    int r = lru_unlink(c, ci);
    return r ? r : free_item_memory(c, it, ci);
}

/* The link pointing at the item at cell ci (found through its key's bucket). */
static int link_of(struct sc *c, uint32_t ci, struct shk_ditem *it, uint32_t **out)
{
    uint32_t klen = it->klen, nc = it->ncells;
    if (nc < 2 || nc > c->n - ci || ITEM_HDR + (uint64_t)klen > (uint64_t)nc * CELL)
        return CORRUPT("dict shard %u: item at cell %u is shorter than its key", c->s, ci);
    uint64_t hash = shk_dict_hash(it->ktype, it + 1, klen);
    uint32_t *link = &c->bk[bucket_of(c->d, hash)];
    uint32_t idx = *link, guard = c->n;
    while (idx && guard--) {
        if (idx == ci + 1) {
            *out = link;
            return 0;
        }
        struct shk_ditem *x = item_at(c, idx);
        if (!x)
            break;
        link = &x->next;
        idx = *link;
    }
    return CORRUPT("dict shard %u: item at cell %u is queued for eviction but not in its "
                   "bucket's chain", c->s, ci);
}

/*
 * One step of CLOCK: reclaim or evict the first suitable item from the queue's head.
 * `protect` (cell + 1) is the item the caller is replacing: it is passed over.
 * 0 (one item gone), SHK_ENOTFOUND (nothing can go), or an error.
 */
static int evict_one(struct sc *c, uint32_t protect, uint32_t *evicted)
{
    struct shk_dict_shard *sh = c->sh;
    uint64_t steps = 0, limit = 2ull * sh->items + 4;
    int r;
    for (;;) {
        uint32_t head = sh->lru_head;
        if (!head)
            return SHK_ENOTFOUND;
        struct shk_ditem *it = item_at(c, head);
        if (!it)
            return CORRUPT("dict shard %u: eviction queue head %u is outside the shard", c->s,
                           head - 1);
        uint32_t ci = head - 1;
        if (steps++ > limit + sh->items + 4)
            return CORRUPT("dict shard %u: the eviction queue does not end", c->s);
        if (head == protect) {
            if (sh->lru_tail == head)
                return SHK_ENOTFOUND;
            if ((r = lru_to_tail(c, ci)) != 0)
                return r;
            continue;
        }
        int expired = is_expired(c, it->expire);
        /* second chance for a referenced item; readers in other processes may keep
         * setting bits, so after two rounds the bits are ignored */
        if (!expired && steps <= limit && ref_take(c, ci)) {
            if ((r = lru_to_tail(c, ci)) != 0)
                return r;
            continue;
        }
        uint32_t *link = NULL;
        if ((r = link_of(c, ci, it, &link)) != 0)
            return r;
        crash_point(c, SHK_DCRASH_MID_EVICT);
        if ((r = item_remove(c, link, ci, it)) != 0)
            return r;
        if (expired) {
            sh->expirations++;
        } else {
            sh->evictions++;
            (*evicted)++;
        }
        return 0;
    }
}

/*
 * Reclaim expired items from up to `budget` buckets, from the shard's sweep cursor on,
 * stopping after `max` of them (0: no limit).  A pass that reaches the last bucket
 * refreshes min_expire.  *n += items reclaimed.
 */
static int sweep_expired(struct sc *c, uint32_t budget, uint32_t protect, uint64_t max,
                         uint64_t *n)
{
    struct shk_dict_shard *sh = c->sh;
    uint32_t nb = c->d->nbuckets;
    uint64_t now = now_ms(c);
    int r;
    for (uint32_t i = 0; i < budget; i++) {
        uint32_t b = sh->expire_cursor;
        if (b >= nb)
            b = 0;
        if (b == 0)
            sh->sweep_min = NO_EXPIRY;
        uint32_t *link = &c->bk[b];
        uint32_t idx = *link, guard = c->n;
        while (idx) {
            struct shk_ditem *it = item_at(c, idx);
            if (!it || !guard--)
                return CORRUPT("dict shard %u: bucket %u's chain leaves the shard or loops", c->s, b);
            uint64_t e = it->expire;
            if (e && e <= now && idx != protect) {
                if ((r = item_remove(c, link, idx - 1, it)) != 0)
                    return r;
                sh->expirations++;
                (*n)++;
                if (max && *n >= max) {
                    sh->expire_cursor = b;
                    return 0;
                }
                idx = *link;
                continue;
            }
            if (e && e < sh->sweep_min)
                sh->sweep_min = e;
            link = &it->next;
            idx = *link;
        }
        if (++b == nb) {
            b = 0;
            sh->min_expire = sh->ttl_items ? sh->sweep_min : NO_EXPIRY;
        }
        sh->expire_cursor = b;
    }
    return 0;
}

static void note_expiry(struct shk_dict_shard *sh, uint64_t expire)
{
    sh->ttl_items++;
    if (expire < sh->min_expire)
        sh->min_expire = expire;
    if (expire < sh->sweep_min)
        sh->sweep_min = expire;
}

/*
 * Allocate, making room if needed: first expired items (one bounded sweep), then, if
 * allowed, CLOCK eviction until the object fits.  SHK_EFULL when it cannot.
 */
static int alloc_evicting(struct sc *c, uint32_t hdr, uint64_t vlen, uint32_t head_min,
                          int may_evict, uint32_t protect, struct alloc *a, uint32_t *evicted)
{
    struct shk_dict_shard *sh = c->sh;
    int swept = 0, r;
    for (;;) {
        r = alloc_obj(c, hdr, vlen, head_min, a);
        if (r != SHK_EFULL)
            return r;
        if (!swept && sh->ttl_items && sh->min_expire <= now_ms(c)) {
            uint64_t n = 0;
            uint32_t budget = c->d->expire_budget < c->d->nbuckets ? c->d->expire_budget
                                                                   : c->d->nbuckets;
            if ((r = sweep_expired(c, budget, protect, 0, &n)) != 0)
                return r;
            swept = 1;
            if (n)
                continue;
        }
        if (!may_evict)
            return SHK_EFULL;
        r = evict_one(c, protect, evicted);
        if (r == SHK_ENOTFOUND)
            return SHK_EFULL;
        if (r)
            return r;
    }
}

static int full_error(struct sc *c, uint64_t bytes, int safe)
{
    return shk_fail(SHK_EFULL, "dict is full: an item of %llu bytes does not fit in shard %u "
                    "(%llu of %llu bytes free)%s", (unsigned long long)(cells_for(bytes) * CELL),
                    c->s, (unsigned long long)c->sh->free_cells * CELL,
                    (unsigned long long)c->n * CELL,
                    safe ? "; the safe_ operations never evict unexpired items"
                         : " even after evicting everything else it could");
}

static int too_big_error(struct sc *c, uint64_t bytes)
{
    return shk_fail(SHK_ETOOBIG, "an item of %llu bytes (key, value and a 48-byte header) "
                    "can never fit in a shard of this dict (%llu bytes); use fewer shards or "
                    "a larger capacity", (unsigned long long)bytes,
                    (unsigned long long)c->n * CELL);
}

/* ---- writes ------------------------------------------------------------------------------ */

static int shard_rebuild(struct sc *c);

/*
 * Run a write under seq-odd.  When it meets derived state that makes no sense (a bad
 * free run, a broken queue), the shard is rebuilt from its chains and the write tried
 * once more, unless it had already made its change visible.
 */
#define WRITE_OP(c, call)                                                                 \
    ({                                                                                    \
        int r_;                                                                           \
        write_begin(c);                                                                   \
        for (int attempt_ = 0;; attempt_++) {                                             \
            (c)->published = 0;                                                           \
            r_ = (call);                                                                  \
            if (r_ != SHK_ECORRUPT || attempt_)                                           \
                break;                                                                    \
            if (shard_rebuild(c) != 0)                                                    \
                break;                                                                    \
            (c)->sh->recoveries++;                                                        \
            if ((c)->published) {                                                         \
                r_ = 0;                                                                   \
                break;                                                                    \
            }                                                                             \
        }                                                                                 \
        write_end(c);                                                                     \
        r_;                                                                               \
    })

/*
 * The plain call of a write, nginx's five lines: take k's shard lock as `flags` say (EBUSY
 * without SHK_DWAIT when it is held elsewhere), run `inner` under seq-odd, unlock.
 * `inner` names the shard context `c`.
 */
#define LOCKED_WRITE(d, k, flags, inner)                                                  \
    ({                                                                                    \
        struct sc c;                                                                      \
        int r_ = lock_key(&c, (d), (k), (flags));                                         \
        if (r_ == 0) {                                                                    \
            r_ = WRITE_OP(&c, inner);                                                     \
            unlock_sc(&c);                                                                \
        }                                                                                 \
        r_;                                                                               \
    })

static int found_or_corrupt(struct sc *c, const struct shk_dkey *k, struct hit *h)
{
    int r = find(c, k, h);
    if (r == INCONSISTENT)
        return CORRUPT("dict shard %u: %s", c->s, c->why);
    return r;
}

/* Write a new item's header and key into freshly allocated cells. */
static struct shk_ditem *item_init(struct sc *c, const struct alloc *a, const struct shk_dkey *k,
                                   uint8_t vtype, uint64_t vlen, uint32_t flags, uint64_t expire)
{
    struct shk_ditem *it = cellp(c, a->head);
    it->next = 0;
    it->tag = (uint32_t)k->hash;
    it->lru_prev = it->lru_next = 0;
    it->expire = expire;
    it->ncells = a->head_cells;
    it->frag = a->frag;
    it->vlen = (uint32_t)vlen;
    it->flags = flags;
    it->klen = (uint16_t)k->len;
    it->ktype = k->type;
    it->vtype = vtype;
    it->version = ++c->sh->version;
    uint8_t *key = (uint8_t *)(it + 1);
    if (k->len)
        memcpy(key, k->data, k->len);
    memset(key + k->len, 0, round8(k->len) - k->len);
    ref_take(c, a->head); /* a stale bit from whatever lived here before */
    return it;
}

/* Link a new item into its bucket (replacing `old` at h->link when found). */
static void item_publish(struct sc *c, struct shk_ditem *it, uint32_t ci,
                         const struct shk_dkey *k, struct hit *old)
{
    if (old) {
        it->next = old->it->next;
        shk_store_release(old->link, ci + 1);
    } else {
        uint32_t *head = &c->bk[bucket_of(c->d, k->hash)];
        it->next = *head;
        shk_store_release(head, ci + 1);
        c->sh->items++;
    }
    c->published = 1;
}

/*
 * Overwrite an item whose new contents take exactly its cells: save its bytes in the
 * shard's undo area, mark the undo record, overwrite, clear the record.  A crash in
 * between is undone by recovery (shard_rebuild).  No allocation, no relinking: the item
 * keeps its place in the queue and is marked used.
 */
static int update_in_place(struct sc *c, struct hit *h, uint8_t vtype, const void *data,
                           uint64_t len, uint32_t flags, uint64_t expire, int expired)
{
    struct shk_dict_shard *sh = c->sh;
    struct shk_ditem *it = h->it;
    uint32_t nc = it->ncells;
    if (nc <= 4 && h->ci + 4 <= c->n) /* small items (most): fixed-size moves, no call */
        __builtin_memcpy(c->undo, it, 4 * CELL); /* the undo area has room; cells past the
                                                    item are copied, never restored */
    else
        memcpy(c->undo, it, (uint64_t)nc * CELL);
    sh->undo_ncells = nc;
    /* from here on a crash restores the old bytes */
    shk_store_release(&sh->undo_cell, h->ci + 1);
    c->published = 1;
    uint64_t old_expire = it->expire;
    it->expire = expire;
    it->vlen = (uint32_t)len;
    it->flags = flags;
    it->vtype = vtype;
    it->version = ++sh->version;
    crash_point(c, SHK_DCRASH_MID_INPLACE);
    uint64_t room = (uint64_t)nc * CELL - ITEM_HDR - round8(it->klen);
    copy_value((uint8_t *)it + ITEM_HDR + round8(it->klen), room, data, len, len);
    shk_store_release(&sh->undo_cell, 0);
    if (old_expire)
        sh->ttl_items--;
    if (expire)
        note_expiry(sh, expire);
    if (expired)
        sh->expirations++;
    ref_touch(c, h->ci);
    return 0;
}

static int store_inner(struct sc *c, const struct shk_dkey *k, uint8_t vtype, const void *data,
                       uint64_t len, uint32_t flags, uint64_t expire, int mode,
                       uint32_t version, uint32_t *evicted)
{
    struct shk_dict_shard *sh = c->sh;
    struct hit h;
    int r = 0;
    if (c->key_absent)
        c->key_absent = 0; /* once: a retry after a shard rebuild walks again */
    else if ((r = found_or_corrupt(c, k, &h)) < 0)
        return r;
    int found = r == 1;
    int expired = found && is_expired(c, h.it->expire);
    int base = mode & 3;
    if (mode & SHK_DIFVERSION) {
        if (!found || expired)
            return SHK_ENOTFOUND;
        if (h.it->version != version)
            return SHK_EEXISTS;
    }
    if (base == SHK_DADD && found && !expired)
        return SHK_EEXISTS;
    if (base == SHK_DREPLACE && (!found || expired))
        return SHK_ENOTFOUND;
    if ((mode & SHK_DKEEP) && found && !expired) {
        expire = h.it->expire;
        flags = h.it->flags;
    }
    uint32_t hdr = ITEM_HDR + (uint32_t)round8(k->len);
    uint64_t total = hdr + len;
    if (len > UINT32_MAX || cells_for(total) > c->n)
        return too_big_error(c, total);
    if (found) {
        struct shk_ditem *o = h.it;
        if (cells_for(total) == o->ncells && !o->frag && o->vtype != SHK_DV_LIST &&
            (uint64_t)o->ncells * CELL <= SHK_DICT_UNDO)
            return update_in_place(c, &h, vtype, data, len, flags, expire, expired);
    }
    struct alloc a;
    uint32_t removed0 = c->removed;
    r = alloc_evicting(c, hdr, len, hdr + (uint32_t)(len < 8 ? len : 8), !(mode & SHK_DSAFE),
                       found ? h.ci + 1 : 0, &a, evicted);
    if (r == SHK_EFULL)
        return full_error(c, total, mode & SHK_DSAFE);
    if (r)
        return r;
    crash_point(c, SHK_DCRASH_AFTER_ALLOC);
    if (c->removed != removed0 && found) {
        /* eviction may have changed the chain before the old item: find it again */
        if ((r = found_or_corrupt(c, k, &h)) < 0)
            return r;
        if (r != 1)
            return CORRUPT("dict shard %u: the item being replaced vanished during eviction", c->s);
    }
    struct shk_ditem *it = item_init(c, &a, k, vtype, len, flags, expire);
    crash_point(c, SHK_DCRASH_HALF_WRITTEN);
    write_bytes(c, (uint8_t *)it + hdr, (uint64_t)a.head_cells * CELL - hdr, a.frag, data, len);
    item_publish(c, it, a.head, k, found ? &h : NULL);
    crash_point(c, SHK_DCRASH_AFTER_PUBLISH);
    if (expire)
        note_expiry(sh, expire);
    if (!found)
        return lru_append(c, a.head);
    struct shk_ditem *old = h.it;
    if (old->expire)
        sh->ttl_items--;
    if (expired)
        sh->expirations++;
    if ((r = lru_replace(c, h.ci, a.head)) != 0)
        return r;
    return free_item_memory(c, old, h.ci);
}

/*
 * The common write, straight: a plain set (no ttl, flags 0) of a key whose item has no
 * expiry and whose new contents take exactly its cells: the in-place update under the
 * undo record, as store_inner would do it, without the general path's steps.  Anything
 * else (an absent key, expiry, other size, list, odd bytes) is SHK_DICT_SLOW: the general
 * store (store_slow), told when the walk found nothing (no second walk).  Locked.
 */
static inline __attribute__((always_inline)) int set_fast(struct sc *c, const struct shk_dkey *k,
                                                          uint8_t vtype, const void *data,
                                                          uint64_t len)
{
    struct hit h;
    if (!vtype_valid(vtype) || vtype == SHK_DV_LIST)
        return SHK_DICT_SLOW;
    int fr = find(c, k, &h);
    if (fr == 0)
        c->key_absent = 1;
    if (fr != 1 || len > SHK_DICT_UNDO)
        return SHK_DICT_SLOW;
    struct shk_ditem *it = h.it;
    uint32_t nc = it->ncells;
    if (it->expire || it->frag || it->vtype == SHK_DV_LIST || nc > c->n - h.ci ||
        cells_for(ITEM_HDR + round8(k->len) + len) != nc || (uint64_t)nc * CELL > SHK_DICT_UNDO)
        return SHK_DICT_SLOW;
    write_begin(c);
    update_in_place(c, &h, vtype, data, len, 0, 0, 0);
    write_end(c);
    return 0;
}

/* The general store (locked): whatever set_fast does not do. */
static __attribute__((noinline)) int store_slow(struct sc *c, const struct shk_dkey *k,
                                                uint8_t vtype, const void *data, uint64_t len,
                                                uint32_t flags, uint64_t ttl_ms, int mode,
                                                uint32_t version, uint32_t *evicted)
{
    if (!vtype_valid(vtype) || vtype == SHK_DV_LIST)
        return shk_fail(EINVAL, "shk_dict_store(): value type %u cannot be stored", vtype);
    uint64_t expire = ttl_ms ? now_ms(c) + ttl_ms : 0;
    return WRITE_OP(c, store_inner(c, k, vtype, data, len, flags, expire, mode, version, evicted));
}

int shk_dict_set_fast_locked(struct shk_dict *d, const struct shk_dkey *k, uint8_t vtype,
                             const void *data, uint64_t len, int mode, uint32_t *evicted)
{
    struct sc c;
    sc_init(&c, d, shk_dict_shard_of(d, k));
    *evicted = 0;
    int r = set_fast(&c, k, vtype, data, len);
    if (r == SHK_DICT_SLOW && c.key_absent)
        r = store_slow(&c, k, vtype, data, len, 0, 0, mode, 0, evicted);
    return r;
}

int shk_dict_store(struct shk_dict *d, const struct shk_dkey *k, uint8_t vtype,
                   const void *data, uint64_t len, uint32_t flags, uint64_t ttl_ms, int mode,
                   uint32_t version, uint32_t *evicted)
{
    struct sc c;
    *evicted = 0;
    int r = lock_key(&c, d, k, mode);
    if (UNLIKELY(r))
        return r;
    r = SHK_DICT_SLOW;
    if (!((mode & ~(SHK_DSAFE | SHK_DWAIT)) | flags | ttl_ms)) /* a plain set */
        r = set_fast(&c, k, vtype, data, len);
    if (r == SHK_DICT_SLOW)
        r = store_slow(&c, k, vtype, data, len, flags, ttl_ms, mode, version, evicted);
    unlock_sc(&c);
    return r;
}

static int delete_inner(struct sc *c, const struct shk_dkey *k)
{
    struct hit h;
    int r = found_or_corrupt(c, k, &h);
    if (r <= 0)
        return r < 0 ? r : SHK_ENOTFOUND;
    int expired = is_expired(c, h.it->expire);
    c->published = 1;
    if ((r = item_remove(c, h.link, h.ci, h.it)) != 0)
        return r;
    if (expired) {
        c->sh->expirations++;
        return SHK_ENOTFOUND;
    }
    return 0;
}

int shk_dict_delete(struct shk_dict *d, const struct shk_dkey *k, int flags)
{
    return LOCKED_WRITE(d, k, flags, delete_inner(&c, k));
}

/* Validate a list node; its value's first byte and room. */
static int node_check(struct sc *c, uint32_t ni, struct shk_dnode *nd)
{
    uint32_t nc = nd->ncells;
    if (nc == 0 || nc > c->n - ni || NODE_HDR > (uint64_t)nc * CELL ||
        (uint64_t)nd->vlen > (uint64_t)c->n * CELL || !vtype_valid(nd->vtype) ||
        nd->vtype == SHK_DV_LIST)
        return CORRUPT("dict shard %u: list node at cell %u is inconsistent", c->s, ni);
    return 0;
}

/* The elements of a list, packed as records (dict.h) into (buf, cap): f->count elements
 * in f->len bytes.  ENOBUFS when they do not fit (nothing copied); with buf NULL only
 * the count and length are wanted.  Locked. */
static int list_pack(struct sc *c, struct shk_dlist *l, uint8_t *buf, uint64_t cap,
                     struct shk_dict_found *f)
{
    uint64_t total = 0, n = 0;
    uint32_t node = l->head, guard = c->n;
    int r;
    while (node) {
        struct shk_dnode *nd = node_at(c, node);
        if (!nd || !guard--)
            return CORRUPT("dict shard %u: a list's node chain leaves the shard or loops", c->s);
        if ((r = node_check(c, node - 1, nd)) != 0)
            return r;
        total += 8 + round8(nd->vlen);
        n++;
        node = nd->next;
    }
    f->count = n;
    f->len = total;
    if (!buf)
        return 0;
    if (total > cap)
        return ENOBUFS;
    uint64_t pos = 0;
    for (node = l->head; node; node = ((struct shk_dnode *)cellp(c, node - 1))->next) {
        struct shk_dnode *nd = cellp(c, node - 1);
        uint32_t len = nd->vlen;
        buf[pos] = nd->vtype;
        buf[pos + 1] = buf[pos + 2] = buf[pos + 3] = 0;
        memcpy(buf + pos + 4, &len, 4);
        if (read_bytes(c, (uint8_t *)nd + NODE_HDR, (uint64_t)nd->ncells * CELL - NODE_HDR,
                       nd->frag, buf + pos + 8, len))
            return CORRUPT("dict shard %u: %s", c->s, c->why);
        memset(buf + pos + 8 + len, 0, round8(len) - len);
        pos += 8 + round8(len);
    }
    return 0;
}

/*
 * Describe the item at cell ci in *f and, with `copy`, copy its value into (buf, cap):
 * its bytes, or for a LIST its elements packed.  ENOBUFS, with f->len the room needed,
 * when they do not fit (nothing copied).  Locked.
 */
static int value_out(struct sc *c, uint32_t ci, struct shk_ditem *it, int copy, void *buf,
                     uint64_t cap, struct shk_dict_found *f)
{
    uint8_t vt = it->vtype;
    uint32_t vlen = it->vlen, nc = it->ncells, frag = it->frag;
    uint64_t voff = ITEM_HDR + round8(it->klen);
    const char *why = shk_dict_item_problem(c->d, ci, vt, nc, voff, vlen, frag);
    if (why)
        return CORRUPT("dict shard %u: item at cell %u: %s", c->s, ci, why);
    uint8_t *val = (uint8_t *)it + voff;
    f->vtype = vt;
    f->flags = it->flags;
    f->expire = it->expire;
    f->version = it->version;
    f->stale = is_expired(c, f->expire);
    if (vt == SHK_DV_LIST)
        return list_pack(c, (struct shk_dlist *)val, copy ? buf : NULL, cap, f);
    f->len = vlen;
    if (!copy)
        return 0;
    if (vlen > cap)
        return ENOBUFS;
    if (read_bytes(c, val, (uint64_t)nc * CELL - voff, frag, buf, vlen))
        return CORRUPT("dict shard %u: %s", c->s, c->why);
    return 0;
}

/* shk_dict_get under the lock: what the lock-free pass left (a busy shard, a list). */
static int get_locked(struct sc *c, const struct shk_dkey *k, int flags, void *buf,
                      uint64_t cap, struct shk_dict_found *f)
{
    struct hit h;
    int r = found_or_corrupt(c, k, &h);
    if (r < 0)
        return r;
    if (r == 0 || (!(flags & SHK_DSTALE) && is_expired(c, h.it->expire))) {
        count_lookup(c->d, 0, flags);
        return SHK_ENOTFOUND;
    }
    if ((r = value_out(c, h.ci, h.it, !(flags & SHK_DPEEK), buf, cap, f)) != 0)
        return r; /* ENOBUFS: counted when the caller comes back */
    ref_touch(c, h.ci);
    count_lookup(c->d, 1, flags);
    return 0;
}

int shk_dict_get(struct shk_dict *d, const struct shk_dkey *k, int flags, void *buf,
                 uint64_t cap, struct shk_dict_found *f)
{
    int r = get_lockfree(d, k, flags, buf, cap, f);
    if (LIKELY(r != EAGAIN))
        return r;
    struct sc c;
    if ((r = lock_key(&c, d, k, flags)) != 0)
        return r;
    r = get_locked(&c, k, flags, buf, cap, f);
    unlock_sc(&c);
    return r;
}

static int setdefault_inner(struct sc *c, const struct shk_dkey *k, uint8_t vtype,
                            const void *data, uint64_t len, int flags, void *buf, uint64_t cap,
                            struct shk_dict_found *f)
{
    struct hit h;
    uint32_t evicted;
    int r = found_or_corrupt(c, k, &h);
    if (r < 0)
        return r;
    if (r == 1 && !is_expired(c, h.it->expire)) {
        if ((r = value_out(c, h.ci, h.it, 1, buf, cap, f)) != 0)
            return r;
        ref_touch(c, h.ci);
        count_lookup(c->d, 1, flags);
        return SHK_EEXISTS;
    }
    count_lookup(c->d, 0, flags);
    c->key_absent = r == 0;
    return store_inner(c, k, vtype, data, len, 0, 0, SHK_DADD, 0, &evicted);
}

int shk_dict_setdefault(struct shk_dict *d, const struct shk_dkey *k, uint8_t vtype,
                        const void *data, uint64_t len, int flags, void *buf, uint64_t cap,
                        struct shk_dict_found *f)
{
    if (!vtype_valid(vtype) || vtype == SHK_DV_LIST)
        return shk_fail(EINVAL, "shk_dict_setdefault(): value type %u cannot be stored", vtype);
    return LOCKED_WRITE(d, k, flags,
                        setdefault_inner(&c, k, vtype, data, len, flags, buf, cap, f));
}

static int take_inner(struct sc *c, const struct shk_dkey *k, void *buf, uint64_t cap,
                      struct shk_dict_found *f)
{
    struct hit h;
    int r = found_or_corrupt(c, k, &h);
    if (r <= 0)
        return r < 0 ? r : SHK_ENOTFOUND;
    if (is_expired(c, h.it->expire)) {
        c->published = 1;
        if ((r = item_remove(c, h.link, h.ci, h.it)) != 0)
            return r;
        c->sh->expirations++;
        return SHK_ENOTFOUND;
    }
    if ((r = value_out(c, h.ci, h.it, 1, buf, cap, f)) != 0)
        return r; /* ENOBUFS: nothing removed */
    c->published = 1;
    return item_remove(c, h.link, h.ci, h.it);
}

int shk_dict_take(struct shk_dict *d, const struct shk_dkey *k, int flags, void *buf,
                  uint64_t cap, struct shk_dict_found *f)
{
    return LOCKED_WRITE(d, k, flags, take_inner(&c, k, buf, cap, f));
}

/* ---- numbers: what incr adds, as Python adds ints and floats ---------------------------- */

/* An operand: an int64, a double, or a little-endian two's complement integer. */
struct num {
    uint8_t type;               /* SHK_DV_INT, SHK_DV_FLOAT or SHK_DV_BIGINT */
    int64_t i;
    double f;
    const uint8_t *big;
    uint64_t len;
};

static inline int num_of(const struct shk_dval *v, struct num *n)
{
    n->type = v->type;
    n->big = v->data;
    n->len = v->len;
    if ((v->type == SHK_DV_INT || v->type == SHK_DV_FLOAT) && v->len == 8) {
        if (v->type == SHK_DV_INT)
            memcpy(&n->i, v->data, 8);
        else
            memcpy(&n->f, v->data, 8);
        return 0;
    }
    if (v->type == SHK_DV_BIGINT && v->len > 0 && v->len <= UINT32_MAX)
        return 0;
    return shk_fail(EINVAL, "shk_dict_incr(): an operand of type %u and %llu bytes is not a "
                    "number", v->type, (unsigned long long)v->len);
}

/*
 * Byte i of |x|, for the two's complement x = p[0, n) (negative when `neg`), whose first
 * non-zero byte is byte z: -x is ~x + 1, so below z it is 0, at z the carry stops, above
 * z it is ~x.
 */
static inline uint8_t mag_byte(const uint8_t *p, int neg, uint64_t z, uint64_t i)
{
    if (!neg)
        return p[i];
    return i < z ? 0 : i == z ? (uint8_t)(0x100 - p[i]) : (uint8_t)~p[i];
}

/* |x| of x = p[0, n): how many bits it has (Python's int.bit_length()), and its
 * highest non-zero byte; *neg, *z as mag_byte wants them. */
static uint64_t mag_bits(const uint8_t *p, uint64_t n, int *neg, uint64_t *z, uint64_t *hi)
{
    *neg = n && (p[n - 1] & 0x80);
    *z = *hi = 0;
    while (*neg && *z < n - 1 && p[*z] == 0)
        (*z)++;
    uint64_t i = n;
    while (i > 0 && mag_byte(p, *neg, *z, i - 1) == 0)
        i--;
    if (i == 0)
        return 0;
    *hi = i - 1;
    return *hi * 8 + (uint64_t)(32 - __builtin_clz(mag_byte(p, *neg, *z, *hi)));
}

/* The double nearest to a two's complement integer (ties to even, as Python's float());
 * ERANGE when it is beyond the largest double. */
static int big_to_double(const uint8_t *p, uint64_t n, double *out)
{
    int neg;
    uint64_t z, hi;
    uint64_t bits = mag_bits(p, n, &neg, &z, &hi);
    double v;
    if (bits <= 64) {
        uint64_t u = 0;
        for (uint64_t i = 0; bits && i <= hi; i++)
            u |= (uint64_t)mag_byte(p, neg, z, i) << (8 * i);
        v = (double)u; /* rounds to nearest, ties to even */
    } else {
        /* the 64 bits from the top, and whether anything below them is set: folded into
         * the lowest of them, that decides ties exactly as the whole number would */
        unsigned __int128 w = 0;
        for (uint64_t i = hi - 8; i <= hi; i++)
            w |= (unsigned __int128)mag_byte(p, neg, z, i) << (8 * (i - (hi - 8)));
        uint64_t wbits = bits - 8 * (hi - 8), drop = wbits - 64;
        uint64_t u = (uint64_t)(w >> drop);
        int sticky = (w & (((unsigned __int128)1 << drop) - 1)) != 0;
        for (uint64_t i = 0; !sticky && i < hi - 8; i++)
            sticky = mag_byte(p, neg, z, i) != 0;
        /* times 2^(bits - 64), exactly (a power of two), unless it overflows */
        uint64_t e = bits - 64;
        if (e > 1023)
            return shk_fail(ERANGE, "dict incr(): int too large to convert to float");
        uint64_t pow2_bits = (e + 1023) << 52;
        double pow2;
        memcpy(&pow2, &pow2_bits, 8);
        v = (double)(u | (uint64_t)sticky) * pow2;
        if (__builtin_isinf(v))
            return shk_fail(ERANGE, "dict incr(): int too large to convert to float");
    }
    *out = neg ? -v : v;
    return 0;
}

static int num_to_double(const struct num *a, double *out)
{
    if (a->type == SHK_DV_FLOAT)
        *out = a->f;
    else if (a->type == SHK_DV_INT)
        *out = (double)a->i; /* rounds to nearest, ties to even */
    else
        return big_to_double(a->big, a->len, out);
    return 0;
}

/* An int64 as the 8 bytes of its little-endian two's complement. */
static void le_of_i64(int64_t v, uint8_t out[8])
{
    for (int i = 0; i < 8; i++)
        out[i] = (uint8_t)((uint64_t)v >> (8 * i));
}

/* The integer in buf[0, n) (two's complement, little-endian) as it is stored: INT when it
 * fits an int64 (its native bytes in buf[0, 8)), else BIGINT of shk_dval_bigint_len
 * bytes (the length the binding's encoding gives it). */
static void int_normalize(uint8_t *buf, uint64_t n, uint8_t *type, uint64_t *len)
{
    uint8_t sign = (buf[n - 1] & 0x80) ? 0xff : 0;
    uint64_t i = n;
    while (i > 8 && buf[i - 1] == sign)
        i--;
    if (i <= 8 && (i < 8 || (buf[7] & 0x80) == (sign & 0x80))) {
        uint64_t u = 0;
        for (int j = 0; j < 8; j++)
            u |= (uint64_t)(j < (int)i ? buf[j] : sign) << (8 * j);
        int64_t v = (int64_t)u;
        memcpy(buf, &v, 8);
        *type = SHK_DV_INT;
        *len = 8;
        return;
    }
    int neg;
    uint64_t z, hi;
    *type = SHK_DV_BIGINT;
    *len = shk_dval_bigint_len(mag_bits(buf, n, &neg, &z, &hi));
}

/*
 * a + b into (buf, cap), typed as the dict stores numbers: a float when either is one
 * (ERANGE if an integer is too large for a double), else the exact integer.  ENOBUFS with
 * *len the room needed.  a->big may be buf itself (each byte is read before it is
 * written); b must not overlap buf.
 */
static int num_add(const struct num *a, const struct num *b, uint8_t *buf, uint64_t cap,
                   uint8_t *type, uint64_t *len)
{
    int r;
    if (a->type == SHK_DV_FLOAT || b->type == SHK_DV_FLOAT) {
        double x, y;
        if ((r = num_to_double(a, &x)) != 0 || (r = num_to_double(b, &y)) != 0)
            return r;
        *len = 8;
        if (cap < 8)
            return ENOBUFS;
        double sum = x + y;
        memcpy(buf, &sum, 8);
        *type = SHK_DV_FLOAT;
        return 0;
    }
    int64_t sum;
    if (a->type == SHK_DV_INT && b->type == SHK_DV_INT &&
        !__builtin_add_overflow(a->i, b->i, &sum)) {
        *len = 8;
        if (cap < 8)
            return ENOBUFS;
        memcpy(buf, &sum, 8);
        *type = SHK_DV_INT;
        return 0;
    }
    /* arbitrary precision: byte by byte, one byte longer than the longer operand */
    uint8_t la[8], lb[8];
    const uint8_t *pa = a->big, *pb = b->big;
    uint64_t na = a->len, nb = b->len;
    if (a->type == SHK_DV_INT) {
        le_of_i64(a->i, la);
        pa = la;
        na = 8;
    }
    if (b->type == SHK_DV_INT) {
        le_of_i64(b->i, lb);
        pb = lb;
        nb = 8;
    }
    uint64_t n = (na > nb ? na : nb) + 1;
    *len = n;
    if (n > cap)
        return ENOBUFS;
    uint8_t sa = (pa[na - 1] & 0x80) ? 0xff : 0, sb = (pb[nb - 1] & 0x80) ? 0xff : 0;
    unsigned carry = 0;
    for (uint64_t i = 0; i < n; i++) {
        unsigned x = (i < na ? pa[i] : sa) + (i < nb ? pb[i] : sb) + carry;
        buf[i] = (uint8_t)x;
        carry = x >> 8;
    }
    int_normalize(buf, n, type, len);
    return 0;
}

static int incr_inner(struct sc *c, const struct shk_dkey *k, const struct num *step,
                      const struct shk_dval *init, uint64_t init_ttl, void *buf, uint64_t cap,
                      struct shk_dict_found *f)
{
    struct hit h;
    struct num old;
    uint32_t evicted;
    int r = found_or_corrupt(c, k, &h);
    if (r < 0)
        return r;
    f->stale = 0;
    f->count = 0;
    if (r == 0 || is_expired(c, h.it->expire)) { /* init + step, stored as by add() */
        int absent = r == 0;
        if (!init)
            return SHK_ENOTFOUND;
        f->flags = 0;
        f->version = 0;
        if ((r = num_of(init, &old)) != 0 ||
            (r = num_add(&old, step, buf, cap, &f->vtype, &f->len)) != 0)
            return r;
        f->expire = init_ttl ? now_ms(c) + init_ttl : 0;
        c->key_absent = absent;
        return store_inner(c, k, f->vtype, buf, f->len, 0, f->expire, SHK_DADD, 0, &evicted);
    }
    struct shk_ditem *it = h.it;
    uint8_t vt = it->vtype;
    uint32_t vlen = it->vlen, nc = it->ncells;
    uint64_t voff = ITEM_HDR + round8(it->klen);
    const char *why = shk_dict_item_problem(c->d, h.ci, vt, nc, voff, vlen, it->frag);
    if (why)
        return CORRUPT("dict shard %u: item at cell %u: %s", c->s, h.ci, why);
    uint8_t *v = (uint8_t *)it + voff;
    f->flags = it->flags;
    f->expire = it->expire;
    f->version = it->version;
    old.type = vt;
    if (vt == SHK_DV_INT) {
        old.i = shk_load_relaxed((int64_t *)v);
        int64_t sum;
        if (step->type == SHK_DV_INT && cap >= 8 && !__builtin_add_overflow(old.i, step->i, &sum)) {
            memcpy(buf, &sum, 8); /* the common case, straight */
            f->vtype = SHK_DV_INT;
            f->len = 8;
            goto in_place;
        }
    } else if (vt == SHK_DV_FLOAT) {
        uint64_t bits = shk_load_relaxed((uint64_t *)v);
        memcpy(&old.f, &bits, 8);
    } else if (vt == SHK_DV_BIGINT) { /* its bytes in buf: the sum is made there */
        uint64_t need = (vlen > step->len ? vlen : step->len) + 1;
        if (vlen == 0 || need > cap) {
            f->len = need;
            return vlen ? ENOBUFS : CORRUPT("dict shard %u: an empty BIGINT", c->s);
        }
        if (read_bytes(c, v, (uint64_t)nc * CELL - voff, it->frag, buf, vlen))
            return CORRUPT("dict shard %u: %s", c->s, c->why);
        old.big = buf;
        old.len = vlen;
    } else {
        return shk_fail(SHK_ETYPE, "dict: incr() of a value that is not a number");
    }
    if ((r = num_add(&old, step, buf, cap, &f->vtype, &f->len)) != 0)
        return r;
    if (f->vtype == vt && vt != SHK_DV_BIGINT) { /* an int64 or a double: one aligned store */
    in_place:;
        uint64_t bits;
        memcpy(&bits, buf, 8);
        shk_store_relaxed((uint64_t *)v, bits);
        c->published = 1;
        crash_point(c, SHK_DCRASH_IN_PLACE);
        ref_touch(c, h.ci);
        return 0;
    }
    /* the type or the size changes: a new item replaces it, with its expiry and flags */
    return store_inner(c, k, f->vtype, buf, f->len, f->flags, f->expire, SHK_DREPLACE, 0,
                       &evicted);
}

int shk_dict_incr(struct shk_dict *d, const struct shk_dkey *k, const struct shk_dval *step,
                  const struct shk_dval *init, uint64_t init_ttl, int flags, void *buf,
                  uint64_t cap, struct shk_dict_found *f)
{
    struct num st;
    int r = num_of(step, &st);
    if (r)
        return r;
    return LOCKED_WRITE(d, k, flags, incr_inner(&c, k, &st, init, init_ttl, buf, cap, f));
}

static int expire_inner(struct sc *c, const struct shk_dkey *k, uint64_t ttl_ms)
{
    struct hit h;
    int r = found_or_corrupt(c, k, &h);
    if (r <= 0)
        return r < 0 ? r : SHK_ENOTFOUND;
    struct shk_ditem *it = h.it;
    if (is_expired(c, it->expire))
        return SHK_ENOTFOUND;
    uint64_t e = ttl_ms ? now_ms(c) + ttl_ms : 0;
    if (it->expire)
        c->sh->ttl_items--;
    if (e)
        note_expiry(c->sh, e);
    shk_store_release(&it->expire, e); /* one aligned store */
    c->published = 1;
    crash_point(c, SHK_DCRASH_IN_PLACE);
    return 0;
}

int shk_dict_expire(struct shk_dict *d, const struct shk_dkey *k, uint64_t ttl_ms, int flags)
{
    return LOCKED_WRITE(d, k, flags, expire_inner(&c, k, ttl_ms));
}

static int push_inner(struct sc *c, const struct shk_dkey *k, int right, uint8_t vtype,
                      const void *data, uint64_t len, uint64_t *newlen, uint32_t *evicted)
{
    struct shk_dict_shard *sh = c->sh;
    struct hit h;
    int r = found_or_corrupt(c, k, &h);
    if (r < 0)
        return r;
    int found = r == 1;
    if (found && is_expired(c, h.it->expire)) {
        c->published = 1;
        if ((r = item_remove(c, h.link, h.ci, h.it)) != 0)
            return r;
        sh->expirations++;
        found = 0;
    }
    if (found && h.it->vtype != SHK_DV_LIST)
        return shk_fail(SHK_ETYPE, "dict: lpush()/rpush() on a key whose value is not a list");
    uint32_t ihdr = ITEM_HDR + (uint32_t)round8(k->len);
    uint64_t need = cells_for(NODE_HDR + len) + (found ? 0 : cells_for(ihdr + sizeof(struct shk_dlist)));
    if (len > UINT32_MAX || need > c->n)
        return too_big_error(c, need * CELL);
    struct alloc na, ia;
    r = alloc_evicting(c, NODE_HDR, len, NODE_HDR + (uint32_t)(len < 8 ? len : 8), 1,
                       found ? h.ci + 1 : 0, &na, evicted);
    if (r == SHK_EFULL)
        return full_error(c, NODE_HDR + len, 0);
    if (r)
        return r;
    if (!found) {
        r = alloc_evicting(c, ihdr, sizeof(struct shk_dlist), ihdr + sizeof(struct shk_dlist),
                           1, 0, &ia, evicted);
        if (r) {
            int r2 = run_free(c, na.head, na.head_cells);
            if (r2 == 0)
                r2 = free_frags(c, na.frag);
            if (r2)
                return r2;
            return r == SHK_EFULL ? full_error(c, need * CELL, 0) : r;
        }
    }
    crash_point(c, SHK_DCRASH_AFTER_ALLOC);
    struct shk_dnode *nd = cellp(c, na.head);
    nd->ncells = na.head_cells;
    nd->frag = na.frag;
    nd->vlen = (uint32_t)len;
    nd->vtype = vtype;
    memset(nd->reserved, 0, sizeof nd->reserved);
    write_bytes(c, (uint8_t *)nd + NODE_HDR, (uint64_t)na.head_cells * CELL - NODE_HDR, na.frag,
                data, len);
    if (!found) {
        nd->next = nd->prev = 0;
        struct shk_ditem *it = item_init(c, &ia, k, SHK_DV_LIST, sizeof(struct shk_dlist), 0, 0);
        struct shk_dlist *l = (struct shk_dlist *)((uint8_t *)it + ihdr);
        l->head = l->tail = na.head + 1;
        l->count = 1;
        item_publish(c, it, ia.head, k, NULL);
        *newlen = 1;
        return lru_append(c, ia.head);
    }
    struct shk_dlist *l = list_of(c, h.it, h.ci);
    if (!l)
        return CORRUPT("dict shard %u: list item at cell %u is too short", c->s, h.ci);
    if (!right) {
        nd->prev = 0;
        nd->next = l->head;
        shk_store_release(&l->head, na.head + 1);
        c->published = 1;
        crash_point(c, SHK_DCRASH_MID_LIST);
        if (nd->next) {
            struct shk_dnode *o = node_at(c, nd->next);
            if (!o)
                return CORRUPT("dict shard %u: list head node outside the shard", c->s);
            o->prev = na.head + 1;
        } else {
            l->tail = na.head + 1;
        }
    } else {
        nd->next = 0;
        nd->prev = l->tail;
        if (l->tail) {
            struct shk_dnode *o = node_at(c, l->tail);
            if (!o)
                return CORRUPT("dict shard %u: list tail node outside the shard", c->s);
            shk_store_release(&o->next, na.head + 1);
        } else {
            shk_store_release(&l->head, na.head + 1);
        }
        c->published = 1;
        crash_point(c, SHK_DCRASH_MID_LIST);
        l->tail = na.head + 1;
    }
    shk_store_relaxed(&l->count, l->count + 1);
    *newlen = l->count;
    ref_touch(c, h.ci);
    return 0;
}

int shk_dict_push(struct shk_dict *d, const struct shk_dkey *k, int right, uint8_t vtype,
                  const void *data, uint64_t len, int flags, uint64_t *newlen,
                  uint32_t *evicted)
{
    *evicted = 0;
    if (!vtype_valid(vtype) || vtype == SHK_DV_LIST)
        return shk_fail(EINVAL, "shk_dict_push(): value type %u cannot be stored", vtype);
    return LOCKED_WRITE(d, k, flags,
                        push_inner(&c, k, right, vtype, data, len, newlen, evicted));
}

static int pop_inner(struct sc *c, const struct shk_dkey *k, int right, void *buf,
                     uint64_t cap, struct shk_dict_found *f)
{
    struct hit h;
    int r = found_or_corrupt(c, k, &h);
    if (r <= 0)
        return r < 0 ? r : SHK_ENOTFOUND;
    struct shk_ditem *it = h.it;
    if (is_expired(c, it->expire)) {
        c->published = 1;
        if ((r = item_remove(c, h.link, h.ci, it)) != 0)
            return r;
        c->sh->expirations++;
        return SHK_ENOTFOUND;
    }
    if (it->vtype != SHK_DV_LIST)
        return shk_fail(SHK_ETYPE, "dict: lpop()/rpop() on a key whose value is not a list");
    struct shk_dlist *l = list_of(c, it, h.ci);
    if (!l)
        return CORRUPT("dict shard %u: list item at cell %u is too short", c->s, h.ci);
    uint32_t link = right ? l->tail : l->head;
    struct shk_dnode *nd = node_at(c, link);
    if (!nd)
        return CORRUPT("dict shard %u: list at cell %u has no %s node", c->s, h.ci,
                       right ? "tail" : "head");
    uint32_t ni = link - 1;
    if ((r = node_check(c, ni, nd)) != 0)
        return r;
    f->vtype = nd->vtype;
    f->flags = 0;
    f->expire = it->expire;
    f->version = 0;
    f->stale = 0;
    f->len = nd->vlen;
    if (f->len > cap)
        return ENOBUFS; /* nothing taken */
    if (read_bytes(c, (uint8_t *)nd + NODE_HDR, (uint64_t)nd->ncells * CELL - NODE_HDR, nd->frag,
                   buf, f->len))
        return CORRUPT("dict shard %u: %s", c->s, c->why);
    if (!right) {
        uint32_t next = nd->next;
        shk_store_release(&l->head, next);
        c->published = 1;
        crash_point(c, SHK_DCRASH_MID_LIST);
        if (next) {
            struct shk_dnode *o = node_at(c, next);
            if (!o)
                return CORRUPT("dict shard %u: list node links outside the shard", c->s);
            o->prev = 0;
        } else {
            l->tail = 0;
        }
    } else {
        uint32_t prev = nd->prev;
        if (prev) {
            struct shk_dnode *o = node_at(c, prev);
            if (!o)
                return CORRUPT("dict shard %u: list node links outside the shard", c->s);
            shk_store_release(&o->next, 0);
        } else {
            shk_store_release(&l->head, 0);
        }
        c->published = 1;
        crash_point(c, SHK_DCRASH_MID_LIST);
        l->tail = prev;
    }
    shk_store_relaxed(&l->count, l->count ? l->count - 1 : 0);
    if ((r = free_node(c, ni)) != 0)
        return r;
    if (!l->head) /* emptied: the key goes away, as in OpenResty */
        return item_remove(c, h.link, h.ci, it);
    ref_touch(c, h.ci);
    return 0;
}

int shk_dict_pop(struct shk_dict *d, const struct shk_dkey *k, int right, int flags, void *buf,
                 uint64_t cap, struct shk_dict_found *f)
{
    return LOCKED_WRITE(d, k, flags, pop_inner(&c, k, right, buf, cap, f));
}

/* ---- small lock-free reads --------------------------------------------------------------- */

/*
 * Run `body` (which sets r) as a validated lock-free read of shard c; when writers keep
 * the shard busy (or one died in it), run it once more under the lock, taken as `flags`
 * say (EBUSY then, if it is held elsewhere and waiting was not allowed).
 */
#define READ_OP(c, flags, body)                                                           \
    ({                                                                                    \
        int r = EAGAIN;                                                                   \
        for (int attempt_ = 0; attempt_ < READ_TRIES; attempt_++) {                       \
            uint32_t s1_ = shk_load_acquire(&(c)->sh->seq);                               \
            if (s1_ & 1) {                                                                \
                for (int i_ = 0; i_ < 32; i_++)                                           \
                    shk_cpu_relax();                                                      \
                r = EAGAIN;                                                               \
                continue;                                                                 \
            }                                                                             \
            body;                                                                         \
            shk_fence_acquire();                                                          \
            if (shk_load_relaxed(&(c)->sh->seq) != s1_) {                                 \
                r = EAGAIN;                                                               \
                continue;                                                                 \
            }                                                                             \
            break;                                                                        \
        }                                                                                 \
        if (r == EAGAIN && (r = shard_lock((c)->d, (c)->s, (flags))) == 0) {              \
            body; /* nobody writes while we hold the lock */                              \
            unlock_sc(c);                                                                 \
        }                                                                                 \
        if (r == INCONSISTENT)                                                            \
            r = CORRUPT("dict shard %u: %s", (c)->s, (c)->why);                           \
        r;                                                                                \
    })

int shk_dict_ttl(struct shk_dict *d, const struct shk_dkey *k, int flags, int64_t *ms)
{
    struct sc c;
    sc_init(&c, d, shk_dict_shard_of(d, k));
    uint64_t e = 0;
    int r = READ_OP(&c, flags, {
        struct hit h;
        r = find(&c, k, &h);
        if (r == 1)
            e = shk_load_relaxed(&h.it->expire);
    });
    if (r != 0 && r != 1)
        return r;
    if (r == 0 || is_expired(&c, e))
        return SHK_ENOTFOUND;
    *ms = e ? (int64_t)(e - now_ms(&c)) : -1;
    return 0;
}

int shk_dict_llen(struct shk_dict *d, const struct shk_dkey *k, int flags, uint64_t *n)
{
    struct sc c;
    sc_init(&c, d, shk_dict_shard_of(d, k));
    uint8_t vt = 0;
    uint64_t count = 0;
    int r = READ_OP(&c, flags, {
        struct hit h;
        r = find(&c, k, &h);
        if (r == 1 && is_expired(&c, shk_load_relaxed(&h.it->expire))) {
            r = 0;
        } else if (r == 1) {
            struct shk_ditem *it = h.it;
            uint64_t voff = ITEM_HDR + round8(k->len);
            vt = shk_load_relaxed(&it->vtype);
            c.why = shk_dict_item_problem(d, h.ci, vt, shk_load_relaxed(&it->ncells), voff,
                                          shk_load_relaxed(&it->vlen),
                                          shk_load_relaxed(&it->frag));
            if (c.why)
                r = INCONSISTENT;
            else if (vt == SHK_DV_LIST)
                count = shk_load_relaxed(
                    &((const struct shk_dlist *)((uint8_t *)it + voff))->count);
        }
    });
    if (r == 0) {
        *n = 0;
        return 0;
    }
    if (r != 1)
        return r;
    if (vt != SHK_DV_LIST)
        return shk_fail(SHK_ETYPE, "dict: llen() of a key whose value is not a list");
    *n = count;
    return 0;
}

/* ---- whole-dict operations ------------------------------------------------------------- */

#define CHUNK_BUCKETS 256u    /* buckets handled per lock hold / per validated read */

/* Count the unexpired items of buckets [b, b + nb). Safe on a changing shard. */
static int count_chunk(struct sc *c, uint32_t b, uint32_t nb, uint64_t *out)
{
    uint64_t cnt = 0;
    uint32_t end = b + nb < c->d->nbuckets ? b + nb : c->d->nbuckets;
    for (; b < end; b++) {
        uint32_t idx = shk_load_acquire(&c->bk[b]), guard = c->n;
        while (idx) {
            struct shk_ditem *it = item_at(c, idx);
            if (!it || !guard--) {
                c->why = "a bucket chain leaves the shard or loops";
                return INCONSISTENT;
            }
            if (!is_expired(c, shk_load_relaxed(&it->expire)))
                cnt++;
            idx = shk_load_acquire(&it->next);
        }
    }
    *out = cnt;
    return 0;
}

/* count's answer when a shard stopped it: EBUSY says which one (in *out). */
static int busy_shard(int r, uint32_t s, uint64_t *out)
{
    if (r == EBUSY)
        *out = s;
    return r;
}

int shk_dict_count(struct shk_dict *d, int flags, uint64_t *out)
{
    uint64_t total = 0;
    for (uint32_t s = 0; s < d->nshards; s++) {
        struct sc c;
        sc_init(&c, d, s);
        uint32_t items = 0, ttl = 0;
        uint64_t minexp = 0;
        int r = READ_OP(&c, flags, {
            items = shk_load_relaxed(&c.sh->items);
            ttl = shk_load_relaxed(&c.sh->ttl_items);
            minexp = shk_load_relaxed(&c.sh->min_expire);
            r = 0;
            if (items > d->ncells / 2) { /* an item takes two cells or more (issue 13) */
                c.why = "it counts more items than its cells can hold";
                r = INCONSISTENT;
            }
        });
        if (r)
            return busy_shard(r, s, out);
        if (!ttl || minexp > now_ms(&c)) {
            total += items;
            continue;
        }
        for (uint32_t b = 0; b < d->nbuckets; b += CHUNK_BUCKETS) {
            uint64_t cnt = 0;
            r = READ_OP(&c, flags, { r = count_chunk(&c, b, CHUNK_BUCKETS, &cnt); });
            if (r)
                return busy_shard(r, s, out);
            total += cnt;
        }
    }
    *out = total;
    return 0;
}

/* Write the key record (dict.h, struct shk_dict_keyrec) of a key at p: its
 * shk_dict_keyrec_size(klen) bytes, the padding zeroed. */
static void keyrec_put(uint8_t *p, uint8_t type, uint8_t mark, const void *key, uint32_t klen)
{
    uint16_t kl = (uint16_t)klen;
    p[0] = type;
    p[1] = mark;
    memcpy(p + 2, &kl, 2);
    memcpy(p + 4, key, klen);
    memset(p + 4 + klen, 0, shk_dict_keyrec_size(klen) - 4 - klen);
}

/* Key records of whole buckets from b on (see shk_dict_scan). Safe on a changing shard. */
static int scan_chunk(struct sc *c, uint32_t b, uint32_t max_buckets, uint8_t *buf, uint64_t cap,
                      uint64_t *used, uint32_t *nkeys, uint32_t *next_bucket)
{
    uint64_t pos = 0;
    uint32_t nk = 0, first = b;
    uint32_t nb = c->d->nbuckets;
    for (; b < nb && b - first < max_buckets; b++) {
        uint64_t pos0 = pos;
        uint32_t nk0 = nk;
        uint32_t idx = shk_load_acquire(&c->bk[b]), guard = c->n;
        int overflow = 0;
        while (idx) {
            struct shk_ditem *it = item_at(c, idx);
            if (!it || !guard--) {
                c->why = "a bucket chain leaves the shard or loops";
                return INCONSISTENT;
            }
            uint32_t klen = shk_load_relaxed(&it->klen), nc = shk_load_relaxed(&it->ncells);
            uint8_t kt = shk_load_relaxed(&it->ktype);
            if (!shk_dict_item_span_ok(c->d, idx - 1, nc, ITEM_HDR + (uint64_t)klen)) {
                c->why = "an item's key runs past the item";
                return INCONSISTENT;
            }
            if (!is_expired(c, shk_load_relaxed(&it->expire))) {
                uint64_t rec = shk_dict_keyrec_size(klen);
                overflow |= pos + rec > cap; /* then only count the room it needs */
                if (!overflow)
                    keyrec_put(buf + pos, kt, 0, it + 1, klen);
                pos += rec;
                nk++;
            }
            idx = shk_load_acquire(&it->next);
        }
        if (overflow) {
            if (b == first) {
                *used = pos; /* the room this bucket needs */
                return ENOBUFS;
            }
            pos = pos0;
            nk = nk0;
            break;
        }
    }
    *used = pos;
    *nkeys = nk;
    *next_bucket = b;
    return 0;
}

int shk_dict_scan(struct shk_dict *d, uint64_t *cursor, uint32_t max_buckets, int flags,
                  void *buf, uint64_t cap, uint64_t *used, uint32_t *nkeys)
{
    *used = 0;
    *nkeys = 0;
    if (*cursor == UINT64_MAX)
        return 0;
    uint32_t s = (uint32_t)(*cursor >> 32), b = (uint32_t)*cursor;
    if (s >= d->nshards || b >= d->nbuckets) {
        *cursor = UINT64_MAX;
        return 0;
    }
    if (max_buckets == 0)
        max_buckets = 1;
    struct sc c;
    sc_init(&c, d, s);
    uint32_t nb = b;
    int r = READ_OP(&c, flags,
                    { r = scan_chunk(&c, b, max_buckets, buf, cap, used, nkeys, &nb); });
    if (r)
        return r;
    if (nb >= d->nbuckets)
        *cursor = s + 1 < d->nshards ? (uint64_t)(s + 1) << 32 : UINT64_MAX;
    else
        *cursor = ((uint64_t)s << 32) | nb;
    return 0;
}

int shk_dict_debug_queue(struct shk_dict *d, uint32_t shard, int flags, void *out,
                         uint64_t cap, uint64_t *used, uint32_t *n)
{
    *used = 0;
    *n = 0;
    if (shard >= d->nshards)
        return shk_fail(EINVAL, "dict: shard %u does not exist (the dict has %u)", shard,
                        d->nshards);
    int r = shard_lock(d, shard, flags);
    if (r)
        return r;
    struct sc c;
    sc_init(&c, d, shard);
    uint8_t *buf = out;
    uint64_t pos = 0;
    uint32_t count = 0, guard = c.n;
    for (uint32_t idx = c.sh->lru_head; idx && !r; count++) {
        struct shk_ditem *it = item_at(&c, idx);
        if (!it || !guard-- ||
            !shk_dict_item_span_ok(d, idx - 1, it->ncells, ITEM_HDR + it->klen)) {
            r = CORRUPT("dict shard %u: the eviction queue leaves the shard or loops", shard);
            break;
        }
        uint64_t rec = shk_dict_keyrec_size(it->klen);
        if (pos + rec <= cap)
            keyrec_put(buf + pos, it->ktype, (uint8_t)bit_get(c.ref, idx - 1), it + 1, it->klen);
        pos += rec;
        idx = it->lru_next;
    }
    unlock_sc(&c);
    *used = pos;
    *n = count;
    return r ? r : pos > cap ? ENOBUFS : 0;
}

static int flush_shard(struct sc *c, uint64_t *n)
{
    struct shk_dict_shard *sh = c->sh;
    uint32_t nb = c->d->nbuckets;
    uint64_t words = ((uint64_t)c->n + 63) / 64;
    *n += sh->items;
    c->published = 1;
    memset(c->bk, 0, (nb / 2) * sizeof(uint32_t));
    crash_point(c, SHK_DCRASH_MID_FLUSH);
    memset(c->bk, 0, nb * sizeof(uint32_t));
    memset(c->used, 0, words * 8);
    memset(c->ref, 0, words * 8);
    memset(sh->bins, 0, sizeof sh->bins);
    sh->bin_mask = 0;
    sh->lru_head = sh->lru_tail = 0;
    sh->items = 0;
    sh->ttl_items = 0;
    sh->min_expire = NO_EXPIRY;
    sh->sweep_min = NO_EXPIRY;
    sh->expire_cursor = 0;
    sh->free_cells = c->n;
    sh->undo_cell = sh->undo_ncells = 0;
    return bin_push(c, 0, c->n);
}

int shk_dict_flush_all(struct shk_dict *d, uint64_t *n)
{
    *n = 0;
    for (uint32_t s = 0; s < d->nshards; s++) {
        int r = shk_dict_lock(d, s);
        if (r)
            return r;
        struct sc c;
        sc_init(&c, d, s);
        r = WRITE_OP(&c, flush_shard(&c, n));
        shk_dict_unlock(d, s);
        if (r)
            return r;
    }
    return 0;
}

int shk_dict_flush_expired(struct shk_dict *d, uint64_t max, uint64_t *n)
{
    *n = 0;
    for (uint32_t s = 0; s < d->nshards; s++) {
        if (!shk_load_relaxed(&d->shards[s].ttl_items))
            continue;
        for (uint32_t covered = 0; covered < d->nbuckets; covered += CHUNK_BUCKETS) {
            uint32_t chunk = d->nbuckets - covered < CHUNK_BUCKETS ? d->nbuckets - covered
                                                                    : CHUNK_BUCKETS;
            int r = shk_dict_lock(d, s);
            if (r)
                return r;
            struct sc c;
            sc_init(&c, d, s);
            r = WRITE_OP(&c, sweep_expired(&c, chunk, 0, max ? max - *n : 0, n));
            uint32_t ttl = c.sh->ttl_items;
            shk_dict_unlock(d, s);
            if (r)
                return r;
            if ((max && *n >= max))
                return 0;
            if (!ttl)
                break;
        }
    }
    return 0;
}

int shk_dict_stats(struct shk_dict *d, struct shk_dict_stats *st)
{
    memset(st, 0, sizeof *st);
    for (uint32_t s = 0; s < d->nshards; s++) {
        struct shk_dict_shard *sh = &d->shards[s];
        uint64_t fc = shk_load_relaxed(&sh->free_cells);
        st->items += shk_load_relaxed(&sh->items);
        st->ttl_items += shk_load_relaxed(&sh->ttl_items);
        st->free_cells += fc;
        st->evictions += shk_load_relaxed(&sh->evictions);
        st->expirations += shk_load_relaxed(&sh->expirations);
        st->recoveries += shk_load_relaxed(&sh->recoveries);
        if (fc * CELL > st->largest_free)
            st->largest_free = fc * CELL;
    }
    if (d->pid == shk_self_pid()) {
        st->hits = d->hits;
        st->misses = d->misses;
    }
    st->hits += shk_load_relaxed(&d->hdr->hits);
    st->misses += shk_load_relaxed(&d->hdr->misses);
    st->capacity = d->hdr->capacity;
    st->total_size = d->hdr->total_size;
    st->nshards = d->nshards;
    st->cells_per_shard = d->ncells;
    st->buckets_per_shard = d->nbuckets;
    st->largest_free = st->largest_free > ITEM_HDR ? st->largest_free - ITEM_HDR : 0;
    st->free_bytes = st->free_cells * CELL;
    st->max_item_bytes = (uint64_t)d->ncells * CELL;
    return 0;
}

#define DS(member, kind) SHK_FIELD(struct shk_dict_stats, member, kind)
#define DS_AS(name, member, kind) SHK_FIELD_AS(name, struct shk_dict_stats, member, kind)
const struct shk_field shk_dict_stats_fields[] = {
    DS(items, U64), DS(ttl_items, U64), DS(free_bytes, U64), DS(evictions, U64),
    DS(expirations, U64), DS(recoveries, U64), DS(hits, U64), DS(misses, U64),
    DS(capacity, U64), DS_AS("memory", total_size, U64), DS_AS("shards", nshards, U32),
    DS(cells_per_shard, U32), DS(buckets_per_shard, U32), DS(largest_free, U64),
    DS(max_item_bytes, U64), {NULL, 0, 0},
};
#undef DS_AS
#undef DS

uint64_t shk_dict_item_bytes(uint64_t klen, uint64_t vlen)
{
    return cells_for(ITEM_HDR + round8(klen) + vlen) * CELL;
}

/* ---- creating, attaching, locking ------------------------------------------------------ */

int shk_dict_format(void *mem, const struct shk_dict_geometry *g)
{
    struct shk_dict d;
    memset(&d, 0, sizeof d);
    handle_fill(&d, mem, g);
    struct shk_dict_header *h = d.hdr;
    h->version = SHK_DICT_VERSION;
    h->cell_size = CELL;
    h->nshards = g->nshards;
    h->cells_per_shard = g->cells_per_shard;
    h->buckets_per_shard = g->buckets_per_shard;
    h->capacity = g->capacity;
    h->total_size = g->total_size;
    h->shards_off = g->shards_off;
    h->data_off = g->data_off;
    h->shard_stride = g->stride;
    h->used_off = g->used_off;
    h->ref_off = g->ref_off;
    h->undo_off = g->undo_off;
    h->cells_off = g->cells_off;
    h->created_ns = shk_wall_ns();
    for (uint32_t s = 0; s < g->nshards; s++) {
        struct shk_dict_shard *sh = &d.shards[s];
        int r = shk_mutex_init(&sh->lock);
        if (r)
            return shk_fail(r, "dict: cannot initialise a shard's mutex: %s", strerror(r));
        sh->min_expire = NO_EXPIRY;
        sh->sweep_min = NO_EXPIRY;
        struct sc c;
        sc_init(&c, &d, s);
        sh->free_cells = c.n;
        if ((r = bin_push(&c, 0, c.n)) != 0)
            return r;
    }
    shk_store_release(&h->magic, SHK_DICT_MAGIC);
    return 0;
}

int shk_dict_attach(struct shk_dict *d, struct shk_zone *z, uint64_t off, uint64_t size)
{
    memset(d, 0, sizeof *d);
    d->clock_ms = -1;
    d->expire_budget = 1024;
    d->pid = shk_self_pid();
    struct shk_dict_header *h = shk_zone_ptr(z, off, sizeof *h);
    if (!h || size < sizeof *h)
        return CORRUPT("dict at offset %llu (%llu bytes) lies outside the zone",
                       (unsigned long long)off, (unsigned long long)size);
    uint32_t magic = shk_load_acquire(&h->magic);
    if (magic != SHK_DICT_MAGIC)
        return CORRUPT("object at offset %llu is not a dict (magic 0x%08x)",
                       (unsigned long long)off, magic);
    if (h->version != SHK_DICT_VERSION || h->cell_size != CELL)
        return shk_fail(SHK_EVERSION, "dict has layout version %u with %u-byte cells; this "
                        "build reads version %u with %u-byte cells", h->version, h->cell_size,
                        SHK_DICT_VERSION, CELL);
    struct shk_dict_geometry g;
    if (shk_dict_plan(h->capacity, h->nshards, &g) != 0 || g.capacity != h->capacity ||
        g.cells_per_shard != h->cells_per_shard || g.buckets_per_shard != h->buckets_per_shard ||
        g.total_size != h->total_size || g.shards_off != h->shards_off ||
        g.data_off != h->data_off || g.stride != h->shard_stride || g.used_off != h->used_off ||
        g.ref_off != h->ref_off || g.undo_off != h->undo_off || g.cells_off != h->cells_off ||
        g.total_size > size)
        return CORRUPT("dict header at offset %llu describes an impossible layout (capacity "
                       "%llu, %u shards)", (unsigned long long)off,
                       (unsigned long long)h->capacity, h->nshards);
    uint8_t *base = shk_zone_ptr(z, off, g.total_size);
    if (!base)
        return CORRUPT("dict at offset %llu (%llu bytes) lies outside the zone",
                       (unsigned long long)off, (unsigned long long)g.total_size);
    handle_fill(d, base, &g);
    d->zone = z;
    d->offset = off;
    return 0;
}

static int format_cb(struct shk_zone *z, uint64_t off, uint64_t size, void *arg)
{
    void *mem = shk_zone_ptr(z, off, size);
    if (!mem)
        return SHK_ECORRUPT;
    return shk_dict_format(mem, arg);
}

int shk_dict_open(struct shk_dict *d, struct shk_zone *z, const char *name, uint64_t capacity,
                  uint32_t nshards, int flags, int *created)
{
    struct shk_dict_geometry g;
    struct shk_dirent e;
    int r;
    *created = 0;
    shk_clear_detail();
    if (flags & SHK_DOPEN_CREATE) {
        if ((r = shk_dict_plan(capacity, nshards, &g)) != 0)
            return r;
        r = shk_zone_obj_get(z, name, SHK_OBJ_DICT, g.total_size, g.capacity, SHK_O_CREATE,
                             format_cb, &g, &e, created);
    } else {
        r = shk_zone_obj_get(z, name, SHK_OBJ_DICT, 0, 0, 0, NULL, NULL, &e, created);
    }
    if (r)
        return r;
    if ((r = shk_dict_attach(d, z, e.offset, e.size)) != 0)
        return r;
    if (!*created && (flags & SHK_DOPEN_STRICT)) {
        struct shk_dict_geometry want;
        int bad = nshards && nshards != d->nshards;
        if (capacity && !bad)
            bad = shk_dict_plan(capacity, d->nshards, &want) != 0 ||
                  want.capacity != d->hdr->capacity;
        if (bad)
            return shk_fail(SHK_EOBJMISMATCH, "dict '%s' exists with capacity %llu in %u shards; "
                            "it was declared again with capacity %llu%s", name,
                            (unsigned long long)d->hdr->capacity, d->nshards,
                            (unsigned long long)capacity,
                            nshards ? " and another shard count" : "");
    }
    return 0;
}

static int lock_acquired(struct shk_dict *d, uint32_t s, int r)
{
    int dead = r == SHK_EOWNERDEAD;
    /* seq odd under a free lock: a write stopped half way and gave the lock back (only a
     * caller of shk_dict_lock misusing the shard does that); repair the same way */
    if (!dead && (r || !UNLIKELY(shk_load_relaxed(&d->shards[s].seq) & 1)))
        return r;
    /* we hold it; the previous owner died inside a write: rebuild the shard */
    struct sc c;
    sc_init(&c, d, s);
    write_begin(&c);
    int rr = shard_rebuild(&c);
    c.sh->recoveries++;
    write_end(&c);
    if (dead)
        shk_mutex_consistent(&c.sh->lock);
    if (rr) {
        shk_mutex_unlock(&c.sh->lock);
        return rr;
    }
    return 0;
}

/* The lock taken by shard_lock when the first try did not simply succeed: `r` is what
 * that try returned. */
static int shard_lock_slow(struct shk_dict *d, uint32_t s, int flags, int r)
{
    pthread_mutex_t *m = &d->shards[s].lock;
    for (int i = 0; r == EBUSY && i < LOCK_SPINS; i++) {
        for (int k = 0; k < 16; k++)
            shk_cpu_relax();
        if ((r = shk_mutex_check(m)) != 0)
            return r;
        r = pthread_mutex_trylock(m);
    }
    if (r == EBUSY) {
        if (!(flags & SHK_DWAIT))
            return EBUSY;
        /* the one place a dict call sleeps (see SHK_DWAIT in dict.h) */
        return lock_acquired(d, s, shk_mutex_lock(m, NULL));
    }
    switch (r) {
    case 0: /* taken (seq may be odd: lock_acquired looks) */
        return lock_acquired(d, s, 0);
    case EOWNERDEAD:
        return lock_acquired(d, s, SHK_EOWNERDEAD);
    case ENOTRECOVERABLE:
        return shk_fail(SHK_ECORRUPT, "dict shard %u: its mutex is not recoverable", s);
    default:
        return r;
    }
}

int shk_dict_lock(struct shk_dict *d, uint32_t s)
{
    return shard_lock(d, s, SHK_DWAIT);
}

void shk_dict_unlock(struct shk_dict *d, uint32_t s)
{
    shk_mutex_unlock(&d->shards[s].lock);
}

/*
 * Waiting for a shard's lock to come free, in the one wait shape (dict.h, wait.h).  The
 * attempt is shk_mutex_op's: pthread_mutex_trylock, and when the lock is held elsewhere
 * EAGAIN with the kernel's robust futex word of the shard's mutex (FUTEX_WAITERS set once
 * armed, so that the holder's unlock wakes us).  When it gets the lock it repairs what a
 * dead owner left (as every taker does) and gives the lock back at once: the caller makes
 * its call itself, in its own context (the Python binding: holding the GIL), and a
 * shard's lock must never be held while its taker waits for anything.  A waiter that
 * slept took the lock with FUTEX_WAITERS set (shk_mutex_op does, since others may sleep
 * too), so giving it back wakes the next sleeper: the robust futex protocol asks that of
 * every woken waiter that does not keep the lock.
 */
static int shard_wait_attempt(void *obj, struct shk_wait *w)
{
    struct shk_dict_shard_wait *sw = obj;
    struct shk_dict *d = sw->d;
    if (sw->shard >= d->nshards)
        return shk_fail(EINVAL, "dict: shard %u does not exist (the dict has %u)", sw->shard,
                        d->nshards);
    pthread_mutex_t *m = &d->shards[sw->shard].lock;
    int r = shk_mutex_op.attempt(m, w);
    if (r != 0 && r != SHK_EOWNERDEAD)
        return r; /* EAGAIN (w->on says what to sleep on), or an error */
    if ((r = lock_acquired(d, sw->shard, r)) != 0)
        return r; /* a repair failed (lock_acquired gave the lock back) */
    return shk_mutex_unlock(m);
}

static int shard_wait_give_up(void *obj, struct shk_wait *w, int why)
{
    struct shk_dict_shard_wait *sw = obj;
    if (sw->shard >= sw->d->nshards)
        return why;
    return shk_mutex_op.give_up(&sw->d->shards[sw->shard].lock, w, why);
}

const struct shk_wait_op shk_dict_shard_op = {"dict shard lock", shard_wait_attempt,
                                              shard_wait_give_up, NULL};

/* ---- rebuilding a shard from its chains, and checking one ------------------------------- */

static int range_is_free(const uint64_t *map, uint32_t start, uint32_t len)
{
    for (uint32_t i = 0; i < len; i++)
        if (bit_get(map, start + i))
            return 0;
    return 1;
}

/*
 * Claim (mark in `map`) an object's first run and, to hold `need` more bytes, the
 * fragments chained from *frag_link.  With `repair`, a chain that goes on after `need`
 * bytes is cut there.  0, or INCONSISTENT with nothing left marked.
 */
static int claim_obj(struct sc *c, uint64_t *map, uint32_t head, uint32_t head_cells,
                     uint32_t *frag_link, uint64_t need, int repair)
{
    if (head_cells == 0 || head >= c->n || head_cells > c->n - head ||
        !range_is_free(map, head, head_cells)) {
        c->why = "an item or node overlaps another or leaves the shard";
        return INCONSISTENT;
    }
    bits_put(map, head, head_cells, 1);
    uint64_t have = 0;
    uint32_t *link = frag_link, count = 0;
    while (have < need) {
        uint32_t f = *link;
        struct shk_dfrag *g = f && f <= c->n ? cellp(c, f - 1) : NULL;
        if (!g || g->ncells == 0 || g->ncells > c->n - (f - 1) ||
            !range_is_free(map, f - 1, g->ncells)) {
            c->why = "a value's fragments are missing, overlap, or leave the shard";
            /* undo */
            bits_put(map, head, head_cells, 0);
            uint32_t u = *frag_link;
            for (uint32_t i = 0; i < count; i++) {
                struct shk_dfrag *x = cellp(c, u - 1);
                bits_put(map, u - 1, x->ncells, 0);
                u = x->next;
            }
            return INCONSISTENT;
        }
        bits_put(map, f - 1, g->ncells, 1);
        have += (uint64_t)g->ncells * CELL - FRAG_HDR;
        count++;
        link = &g->next;
    }
    if (*link) {
        if (!repair) {
            c->why = "a value's fragment chain goes on past its length";
            bits_put(map, head, head_cells, 0); /* report it as a problem of the item */
            uint32_t u = *frag_link;
            for (uint32_t i = 0; i < count; i++) {
                struct shk_dfrag *x = cellp(c, u - 1);
                bits_put(map, u - 1, x->ncells, 0);
                u = x->next;
            }
            return INCONSISTENT;
        }
        *link = 0;
    }
    return 0;
}

static void unclaim_obj(struct sc *c, uint64_t *map, uint32_t head, uint32_t head_cells,
                        uint32_t frag)
{
    bits_put(map, head, head_cells, 0);
    for (uint32_t guard = c->n; frag && guard--;) {
        struct shk_dfrag *g = cellp(c, frag - 1);
        bits_put(map, frag - 1, g->ncells, 0);
        frag = g->next;
    }
}

/* Check an item's header against its bucket; claim its cells in map. */
static int claim_item(struct sc *c, uint64_t *map, uint32_t ci, uint32_t bucket, int repair)
{
    struct shk_ditem *it = cellp(c, ci);
    uint32_t nc = it->ncells, klen = it->klen;
    uint64_t voff = ITEM_HDR + round8(klen);
    if (nc < 2 || nc > c->n - ci || voff > (uint64_t)nc * CELL) {
        c->why = "an item's length does not fit the shard or its key";
        return INCONSISTENT;
    }
    if ((it->ktype != SHK_DK_BYTES && it->ktype != SHK_DK_STR) || !vtype_valid(it->vtype)) {
        c->why = "an item has an unknown key or value type";
        return INCONSISTENT;
    }
    uint64_t hash = shk_dict_hash(it->ktype, it + 1, klen);
    if (shk_dict_shard_of(c->d, &(struct shk_dkey){.hash = hash}) != c->s ||
        bucket_of(c->d, hash) != bucket || (uint32_t)hash != it->tag) {
        c->why = "an item's key does not hash to the bucket holding it";
        return INCONSISTENT;
    }
    uint64_t room = (uint64_t)nc * CELL - voff;
    uint8_t vt = it->vtype;
    uint64_t vlen = it->vlen;
    if (((vt == SHK_DV_INT || vt == SHK_DV_FLOAT) && (vlen != 8 || room < 8)) ||
        ((vt == SHK_DV_TRUE || vt == SHK_DV_FALSE || vt == SHK_DV_NONE) && vlen != 0) ||
        (vt == SHK_DV_LIST && (vlen != sizeof(struct shk_dlist) || room < vlen))) {
        c->why = "an item's value length does not suit its type";
        return INCONSISTENT;
    }
    return claim_obj(c, map, ci, nc, &it->frag, vlen > room ? vlen - room : 0, repair);
}

/* Walk a list's nodes, claiming them; with repair, cut it at the first bad node and fix
 * prev links, tail and count.  Returns the number of good nodes, or INCONSISTENT
 * (without repair) when something is wrong. */
static int64_t claim_list(struct sc *c, uint64_t *map, struct shk_dlist *l, int repair)
{
    uint32_t *link = &l->head, prev = 0;
    int64_t count = 0;
    while (*link) {
        uint32_t idx = *link;
        struct shk_dnode *nd = node_at(c, idx);
        int bad = !nd || nd->ncells == 0 || nd->ncells > c->n - (idx - 1) ||
                  NODE_HDR > (uint64_t)nd->ncells * CELL || !vtype_valid(nd->vtype) ||
                  nd->vtype == SHK_DV_LIST;
        if (!bad) {
            uint64_t room = (uint64_t)nd->ncells * CELL - NODE_HDR;
            bad = claim_obj(c, map, idx - 1, nd->ncells, &nd->frag,
                            nd->vlen > room ? nd->vlen - room : 0, repair) != 0;
        }
        if (bad) {
            c->why = "a list node is inconsistent";
            if (!repair)
                return INCONSISTENT;
            *link = 0;
            break;
        }
        if (nd->prev != prev) {
            if (!repair) {
                c->why = "a list node's prev link is wrong";
                return INCONSISTENT;
            }
            nd->prev = prev;
        }
        prev = idx;
        count++;
        link = &nd->next;
    }
    if (!repair && (l->tail != prev || l->count != (uint64_t)count)) {
        c->why = "a list's tail or count is wrong";
        return INCONSISTENT;
    }
    l->tail = prev;
    l->count = (uint64_t)count;
    return count;
}

/*
 * Rebuild everything derived from the chains (the recovery routine).  Items that fail a
 * check are dropped; cells nobody can reach become free; the eviction queue keeps its
 * old order for the items still in it.  Seq is odd (the caller's write_begin).
 */
static int shard_rebuild(struct sc *c)
{
    struct shk_dict_shard *sh = c->sh;
    uint32_t n = c->n, nb = c->d->nbuckets;
    uint64_t words = ((uint64_t)n + 63) / 64;
    uint64_t items = 0, ttl = 0, minexp = NO_EXPIRY;
    int r;
    /* an in-place update that did not finish: put the old bytes back */
    uint32_t uc = sh->undo_cell, un = sh->undo_ncells;
    if (uc && uc <= n && un && un <= n - (uc - 1) && (uint64_t)un * CELL <= SHK_DICT_UNDO)
        memcpy(cellp(c, uc - 1), c->undo, (uint64_t)un * CELL);
    sh->undo_cell = sh->undo_ncells = 0;
    memset(c->used, 0, words * 8);
    memset(c->ref, 0, words * 8); /* during the rebuild: the set of live items */
    for (uint32_t b = 0; b < nb; b++) {
        uint32_t *link = &c->bk[b];
        uint32_t guard = n;
        while (*link) {
            uint32_t idx = *link;
            if (idx > n - 1 || bit_get(c->used, idx - 1) || !guard--) {
                *link = 0; /* out of the shard, a loop, or into an item already taken */
                break;
            }
            uint32_t ci = idx - 1;
            struct shk_ditem *it = cellp(c, ci);
            if (claim_item(c, c->used, ci, b, 1) != 0) {
                *link = 0; /* its next link cannot be trusted either */
                break;
            }
            if (it->vtype == SHK_DV_LIST) {
                struct shk_dlist *l = (struct shk_dlist *)((uint8_t *)it + ITEM_HDR +
                                                           round8(it->klen));
                if (claim_list(c, c->used, l, 1) <= 0) {
                    /* an empty (or wholly broken) list goes away */
                    unclaim_obj(c, c->used, ci, it->ncells, it->frag);
                    *link = it->next;
                    continue;
                }
            }
            bit_put(c->ref, ci, 1);
            items++;
            if (it->expire) {
                ttl++;
                if (it->expire < minexp)
                    minexp = it->expire;
            }
            link = &it->next;
        }
    }
    /* free runs: every maximal stretch of unclaimed cells */
    memset(sh->bins, 0, sizeof sh->bins);
    sh->bin_mask = 0;
    uint64_t free_cells = 0;
    for (uint32_t i = 0; i < n;) {
        if (bit_get(c->used, i)) {
            i++;
            continue;
        }
        uint32_t j = i;
        while (j < n && !bit_get(c->used, j))
            j++;
        if ((r = bin_push(c, i, j - i)) != 0)
            return r;
        free_cells += j - i;
        i = j;
    }
    sh->free_cells = (uint32_t)free_cells;
    /* the eviction queue: the old order for whatever is still queued, then the rest */
    uint32_t idx = sh->lru_head, guard = n;
    sh->lru_head = sh->lru_tail = 0;
    while (idx && idx <= n - 1 && guard--) {
        struct shk_ditem *it = cellp(c, idx - 1);
        uint32_t next = it->lru_next;
        if (bit_get(c->ref, idx - 1)) {
            bit_put(c->ref, idx - 1, 0);
            if ((r = lru_append(c, idx - 1)) != 0)
                return r;
        }
        idx = next;
    }
    for (uint32_t b = 0; b < nb; b++) {
        for (uint32_t i = c->bk[b]; i; i = ((struct shk_ditem *)cellp(c, i - 1))->next) {
            if (bit_get(c->ref, i - 1)) {
                bit_put(c->ref, i - 1, 0);
                if ((r = lru_append(c, i - 1)) != 0)
                    return r;
            }
        }
    }
    sh->items = (uint32_t)items;
    sh->ttl_items = (uint32_t)ttl;
    sh->min_expire = ttl ? minexp : NO_EXPIRY;
    sh->sweep_min = NO_EXPIRY;
    sh->expire_cursor = 0;
    shk_clear_detail();
    return 0;
}

int shk_dict_recover_locked(struct shk_dict *d, uint32_t s)
{
    struct sc c;
    sc_init(&c, d, s);
    write_begin(&c);
    int r = shard_rebuild(&c);
    c.sh->recoveries++;
    write_end(&c);
    return r;
}

/* Verify one shard without changing it (locked). */
static int shard_check(struct sc *c, struct shk_report *rp)
{
    struct shk_dict_shard *sh = c->sh;
    uint32_t n = c->n, nb = c->d->nbuckets, s = c->s;
    uint64_t words = ((uint64_t)n + 63) / 64;
    uint64_t *marks = calloc(words, 8), *heads = calloc(words, 8), *seen = calloc(words, 8);
    int rc = 0;
    if (!marks || !heads || !seen) {
        rc = shk_fail(ENOMEM, "dict check: no memory");
        goto out;
    }
    if (sh->seq & 1)
        shk_report_problem(rp, "shard %u: seq %u is odd while nobody writes", s, sh->seq);
    if (sh->undo_cell)
        shk_report_problem(rp, "shard %u: an in-place update of cell %u never finished", s,
                           sh->undo_cell - 1);
    uint64_t items = 0, ttl = 0, minexp = NO_EXPIRY;
    for (uint32_t b = 0; b < nb; b++) {
        uint32_t guard = n;
        for (uint32_t idx = c->bk[b]; idx;) {
            if (idx > n - 1 || !guard--) {
                shk_report_problem(rp, "shard %u bucket %u: chain leaves the shard or loops", s,
                                   b);
                break;
            }
            if (bit_get(marks, idx - 1)) {
                shk_report_problem(rp,
                                   "shard %u bucket %u: chain runs into cell %u, already taken",
                                   s, b, idx - 1);
                break;
            }
            struct shk_ditem *it = cellp(c, idx - 1);
            if (claim_item(c, marks, idx - 1, b, 0) != 0) {
                shk_report_problem(rp, "shard %u bucket %u: item at cell %u: %s", s, b, idx - 1,
                                   c->why);
                break;
            }
            if (it->vtype == SHK_DV_LIST) {
                struct shk_dlist *l = (struct shk_dlist *)((uint8_t *)it + ITEM_HDR +
                                                           round8(it->klen));
                int64_t cnt = claim_list(c, marks, l, 0);
                if (cnt <= 0)
                    shk_report_problem(rp, "shard %u: list at cell %u: %s", s, idx - 1,
                                       cnt == 0 ? "is empty" : c->why);
            }
            bit_put(heads, idx - 1, 1);
            items++;
            if (it->expire) {
                ttl++;
                if (it->expire < minexp)
                    minexp = it->expire;
            }
            idx = it->next;
        }
    }
    if (items != sh->items)
        shk_report_problem(rp, "shard %u: says it holds %u items; its chains hold %llu", s,
                           sh->items, (unsigned long long)items);
    if (ttl != sh->ttl_items)
        shk_report_problem(rp, "shard %u: says %u items have an expiry; the chains hold %llu",
                           s, sh->ttl_items, (unsigned long long)ttl);
    if (ttl && sh->min_expire > minexp)
        shk_report_problem(rp, "shard %u: min_expire %llu is later than an item's expiry %llu",
                           s, (unsigned long long)sh->min_expire, (unsigned long long)minexp);
    uint64_t wrong = 0;
    for (uint64_t w = 0; w < words; w++)
        wrong += (uint64_t)__builtin_popcountll(marks[w] ^ c->used[w]);
    if (wrong)
        shk_report_problem(rp, "shard %u: %llu cells are marked used/free wrongly", s,
                           (unsigned long long)wrong);
    /* free runs: in the right bin, unclaimed, disjoint, not adjacent, counted */
    uint64_t free_cells = 0;
    for (int bi = 0; bi < SHK_DICT_NBINS; bi++) {
        if (!!sh->bins[bi] != !!(sh->bin_mask & (1ull << bi)))
            shk_report_problem(rp, "shard %u: bin %d and the bin mask disagree", s, bi);
        uint32_t prev = 0, guard = n;
        for (uint32_t idx = sh->bins[bi]; idx;) {
            if (idx > n || !guard--) {
                shk_report_problem(rp, "shard %u: bin %d leaves the shard or loops", s, bi);
                break;
            }
            struct shk_dfree *f = cellp(c, idx - 1);
            uint32_t st = idx - 1, len = f->ncells;
            if (f->magic != SHK_DICT_FREE_MAGIC || len == 0 || len > n - st) {
                shk_report_problem(rp,
                                   "shard %u: bin %d holds cell %u which starts no free run", s,
                                   bi, st);
                break;
            }
            if (bin_of(len) != bi)
                shk_report_problem(rp, "shard %u: run of %u cells at %u is in bin %d", s, len,
                                   st, bi);
            if (f->prev != prev)
                shk_report_problem(rp, "shard %u: run at %u has a wrong prev link", s, st);
            if (*footer_of(c, st + len - 1) != len)
                shk_report_problem(rp, "shard %u: run at %u has footer %u, not %u", s, st,
                                   *footer_of(c, st + len - 1), len);
            if (!range_is_free(marks, st, len) || !range_is_free(seen, st, len))
                shk_report_problem(rp,
                                   "shard %u: free run at %u overlaps an item or another run",
                                   s, st);
            bits_put(seen, st, len, 1);
            if (st + len < n && !bit_get(marks, st + len))
                shk_report_problem(rp,
                                   "shard %u: free run at %u is followed by a free cell (not merged)",
                                   s, st);
            free_cells += len;
            prev = idx;
            idx = f->next;
        }
    }
    if (free_cells != sh->free_cells)
        shk_report_problem(rp, "shard %u: says %u cells are free; its runs hold %llu", s,
                           sh->free_cells, (unsigned long long)free_cells);
    uint64_t marked = 0;
    for (uint64_t w = 0; w < words; w++)
        marked += (uint64_t)__builtin_popcountll(marks[w]);
    if (marked + free_cells != n)
        shk_report_problem(rp, "shard %u: %llu cells used + %llu free != %u (cells lost)", s,
                           (unsigned long long)marked, (unsigned long long)free_cells, n);
    /* the eviction queue: every live item exactly once, links both ways */
    memset(seen, 0, words * 8);
    uint64_t queued = 0;
    uint32_t prev = 0, guard = n;
    for (uint32_t idx = sh->lru_head; idx;) {
        if (idx > n - 1 || !guard--) {
            shk_report_problem(rp, "shard %u: eviction queue leaves the shard or loops", s);
            break;
        }
        if (!bit_get(heads, idx - 1) || bit_get(seen, idx - 1)) {
            shk_report_problem(rp, "shard %u: eviction queue holds cell %u, %s", s, idx - 1,
                               bit_get(seen, idx - 1) ? "twice" : "which is not a live item");
            break;
        }
        bit_put(seen, idx - 1, 1);
        struct shk_ditem *it = cellp(c, idx - 1);
        if (it->lru_prev != prev)
            shk_report_problem(rp, "shard %u: queue link before cell %u is wrong", s, idx - 1);
        queued++;
        prev = idx;
        idx = it->lru_next;
    }
    if (sh->lru_tail != prev)
        shk_report_problem(rp, "shard %u: eviction queue tail is %u, its last item %u", s,
                           sh->lru_tail, prev);
    if (queued != items)
        shk_report_problem(rp, "shard %u: eviction queue holds %llu of %llu items", s,
                           (unsigned long long)queued, (unsigned long long)items);
out:
    free(marks);
    free(heads);
    free(seen);
    return rc;
}

int shk_dict_check(struct shk_dict *d, char *report, size_t cap)
{
    struct shk_report rp;
    shk_report_init(&rp, report, cap);
    for (uint32_t s = 0; s < d->nshards; s++) {
        int r = shk_dict_lock(d, s);
        if (r)
            return r;
        struct sc c;
        sc_init(&c, d, s);
        r = shard_check(&c, &rp);
        shk_dict_unlock(d, s);
        if (r)
            return r;
    }
    return rp.problems;
}
