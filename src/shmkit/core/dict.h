/*
 * dict.h - a shared dictionary with OpenResty's lua_shared_dict semantics.
 *
 * Keys are byte strings with a type (bytes or str); values are typed byte strings
 * (enum shk_dict_vtype in layout.h).  TTLs in milliseconds, CLOCK (second chance)
 * eviction when a shard is full, lists of values, atomic increments.  The bytes are
 * specified in layout.h's dict section; the algorithms are described in dict.c.
 *
 * One call, one dict operation.  Every call below does its whole protocol itself: the
 * lock-free read and its validation, the fall back to the shard's lock when writers keep
 * the shard busy, the lock of a write, the retry of a write after a shard rebuild.  The
 * caller converts values and chooses how to wait (the `flags` of each call):
 *
 *   Locking.  A dict is split into shards, each with a robust mutex.  Lookups take no
 *   lock (a seqlock read, validated, retried); writes hold their key's shard lock, taken
 *   inside the call.  Without SHK_DWAIT a call never sleeps: when the lock is held
 *   elsewhere after a short spin it returns EBUSY having done nothing.  The caller then
 *   waits for that lock to come free in the one wait shape of wait.h, with
 *   shk_dict_shard_op below (a deadline, EINTR returns for signals, an attempt that the
 *   asyncio contract can run), and makes the call again.  The Python binding runs that
 *   wait with shk_py_wait (the GIL released, Ctrl-C honoured) and makes every call holding
 *   the GIL.  With SHK_DWAIT the call sleeps for the lock itself instead, as long as it
 *   takes and deaf to signals (shk_mutex_lock): for C callers that handle none.  A lock
 *   whose owner died is repaired by whoever takes it next.  A call with SHK_DWAIT never
 *   writes the handle (C callers may share one handle between threads that way).
 *
 *   Buffers.  A call that hands a value back copies it into the caller's (buf, cap).
 *   When it does not fit, the call returns ENOBUFS with f->len set to the room it needs,
 *   having changed nothing (a take or pop has not taken): grow the buffer, call again.
 *   List values come back as their elements packed in records {uint8 vtype; uint8 pad[3];
 *   uint32 len; bytes, padded to 8}.
 *
 * Errors: 0, or SHK_ENOTFOUND (no such key, or expired), SHK_EEXISTS (add of a present
 * key), SHK_ETYPE (list operation on a non-list, incr of a non-number), SHK_EFULL (no
 * room, and eviction not allowed or not enough), SHK_ETOOBIG (can never fit in a shard),
 * SHK_ECORRUPT, EINVAL, EBUSY and ENOBUFS (above), ERANGE (incr: an int too large for a
 * float).
 */
#ifndef SHK_DICT_H
#define SHK_DICT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "atomics.h"
#include "errors.h"
#include "fields.h"
#include "layout.h"
#include "wait.h"
#include "zone.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A key, hashed once (shk_dict_key) and then passed to every call. */
struct shk_dkey {
    const uint8_t *data;
    uint32_t len;
    uint8_t type;               /* SHK_DK_BYTES or SHK_DK_STR */
    uint64_t hash;
    uint64_t head[2];           /* its first 16 bytes, zero-padded (short keys compare by word) */
};

/* Per-process handle.  The shared part is reached through `base`. */
struct shk_dict {
    struct shk_zone *zone;
    uint8_t *base;              /* the dict's first byte */
    struct shk_dict_header *hdr;
    struct shk_dict_shard *shards;
    uint8_t *data0;             /* data block of shard 0 */
    uint64_t stride;
    uint64_t used_off, ref_off, undo_off, cells_off;
    uint32_t nshards, shard_bits, ncells, nbuckets;
    uint64_t offset;            /* of the dict in the zone */
    int64_t clock_ms;           /* >= 0: the time to use instead of CLOCK_REALTIME (tests;
                                   shk_dict_set_clock) */
    uint32_t expire_budget;     /* buckets the expired-item sweep may look at per call */
    uint64_t hits, misses;      /* not yet added to the header's counters (never written
                                   by a call with SHK_DWAIT) */
    pid_t pid;                  /* whose counters those are (fork resets them) */
    int crash_at;               /* test hook: SIGKILL ourselves at this point (0: never) */
    int crash_stop;             /* ... or, when set, stop there once (SIGSTOP, the lock
                                   held) and go on when continued */
};

/* Where a write may be interrupted by the crash test hook (shk_dict.crash_at). */
enum shk_dict_crash_point {
    SHK_DCRASH_NONE = 0,
    SHK_DCRASH_AFTER_ALLOC = 1,      /* new cells taken, nothing published */
    SHK_DCRASH_HALF_WRITTEN = 2,     /* new item half written */
    SHK_DCRASH_AFTER_PUBLISH = 3,    /* new item linked, old one not yet freed */
    SHK_DCRASH_MID_FREE = 4,         /* old item unlinked, its cells half freed */
    SHK_DCRASH_MID_LRU = 5,          /* eviction queue half updated */
    SHK_DCRASH_MID_EVICT = 6,        /* evicting to make room */
    SHK_DCRASH_MID_LIST = 7,         /* list node linked, tail/count not updated */
    SHK_DCRASH_MID_FLUSH = 8,        /* flush_all half done */
    SHK_DCRASH_IN_PLACE = 9,         /* in-place update (incr/expire) done, seq still odd */
    SHK_DCRASH_MID_INPLACE = 10      /* same-size update: old bytes saved, item half new */
};

/* Store modes (shk_dict_store's `mode`, which takes SHK_DWAIT too). */
enum shk_dict_mode {
    SHK_DSET = 0,               /* store; evict if needed */
    SHK_DADD = 1,               /* only if absent (or expired) */
    SHK_DREPLACE = 2,           /* only if present (and not expired) */
    SHK_DSAFE = 0x10,           /* flag: never evict unexpired items */
    SHK_DIFVERSION = 0x20,      /* flag: only if the item still has `version` (CAS) */
    SHK_DKEEP = 0x40            /* flag: keep the replaced item's expiry and flags */
};

/* Flags of the calls (all of them take SHK_DWAIT; the others say which). */
#define SHK_DWAIT 0x100         /* may sleep for a shard's lock; without it: EBUSY */
#define SHK_DSTALE 0x200        /* get: an expired value not reclaimed yet is found too */
#define SHK_DPEEK 0x400         /* get: only whether it is there (counted, nothing copied) */

/* What a call found or made: the value is in the caller's buffer, f->len bytes of it. */
struct shk_dict_found {
    uint8_t vtype;
    uint32_t flags;
    uint64_t len;               /* value bytes (LIST: of the packed elements); after
                                   ENOBUFS, the room needed */
    uint64_t count;             /* LIST: elements */
    uint64_t expire;            /* ms since the epoch, 0 = never */
    uint32_t version;           /* for SHK_DIFVERSION */
    int stale;                  /* expired (only found with SHK_DSTALE) */
};

/* A typed value given to a call (incr's operands), or an element of a list read back
 * (shk_dict_list_next). */
struct shk_dval {
    uint8_t type;               /* enum shk_dict_vtype */
    const void *data;
    uint64_t len;
};

/* A value to store, with room for a number's own 8 bytes: shk_dval_* below fill it (after
 * shk_dval_int or shk_dval_float v.data points into it, so fill one where it stays). */
struct shk_dval_buf {
    struct shk_dval v;
    union {
        int64_t i;
        double f;
    } num;
};

struct shk_dict_stats {
    uint64_t items, ttl_items, free_cells, evictions, expirations, recoveries;
    uint64_t hits, misses, capacity, total_size;
    uint32_t nshards, cells_per_shard, buckets_per_shard;
    uint64_t largest_free;      /* bytes of the largest value+key an item could take now */
    uint64_t free_bytes;        /* free_cells in bytes */
    uint64_t max_item_bytes;    /* bytes of a shard's cells: no item can be larger */
};
/* The fields of shk_dict_stats by name (core/fields.h), in the order shown. */
extern const struct shk_field shk_dict_stats_fields[];

/* Hash of a key (specified in layout.h); inline for the hot paths. */
uint64_t shk_dict_hash(uint8_t type, const void *data, size_t len);

static inline uint64_t shk_dict_mum(uint64_t a, uint64_t b)
{
    __uint128_t r = (__uint128_t)a * b;
    return (uint64_t)r ^ (uint64_t)(r >> 64);
}

static inline uint64_t shk_dict_le64(const uint8_t *p)
{
    uint64_t v;
    __builtin_memcpy(&v, p, 8);
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap64(v);
#endif
    return v;
}

static inline uint64_t shk_dict_le_tail(const uint8_t *p, size_t n)
{
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

static inline uint64_t shk_dict_hash_inline(uint8_t type, const void *data, size_t n)
{
    const uint8_t *p = (const uint8_t *)data;
    uint64_t h = shk_dict_mum(SHK_DICT_SEED ^ type, SHK_DICT_K0 ^ (uint64_t)n);
    while (n >= 16) {
        h = shk_dict_mum(shk_dict_le64(p) ^ SHK_DICT_K1, shk_dict_le64(p + 8) ^ h);
        p += 16;
        n -= 16;
    }
    uint64_t a, b = 0;
    if (n >= 8) {
        a = shk_dict_le64(p);
        b = shk_dict_le_tail(p + 8, n - 8);
    } else {
        a = shk_dict_le_tail(p, n);
    }
    return shk_dict_mum(a ^ SHK_DICT_K1, b ^ h ^ SHK_DICT_K2);
}
/* Fill *k. EINVAL (detail set) for a bad type, ETOOBIG-like SHK_ETOOBIG if too long. */
int shk_dict_key(struct shk_dkey *k, uint8_t type, const void *data, size_t len);

/* --- creating and attaching ---------------------------------------------------------- */

struct shk_dict_geometry {
    uint32_t nshards, cells_per_shard, buckets_per_shard;
    uint64_t capacity, total_size, shards_off, data_off, stride, used_off, ref_off, undo_off;
    uint64_t cells_off;
};

/* The shard count of a dict created without one (dict.c says why). */
uint32_t shk_dict_default_shards(uint64_t capacity);
/* Lay out a dict of `capacity` bytes of cells in `nshards` shards (0: the default).
 * EINVAL with detail for impossible values. */
int shk_dict_plan(uint64_t capacity, uint32_t nshards, struct shk_dict_geometry *g);
/* Write a fresh dict over mem[0, g->total_size) (zeroed memory). */
int shk_dict_format(void *mem, const struct shk_dict_geometry *g);
/* Validate the dict at zone offset `off` (size `size`) and fill the handle. */
int shk_dict_attach(struct shk_dict *d, struct shk_zone *z, uint64_t off, uint64_t size);
#define SHK_DOPEN_CREATE 0x1  /* create it (capacity, nshards) when missing */
#define SHK_DOPEN_STRICT 0x2  /* an existing dict must have this capacity (and nshards if
                                 given): SHK_EOBJMISMATCH otherwise */

/* Find (or with SHK_DOPEN_CREATE create) the dict `name` in the zone and attach. */
int shk_dict_open(struct shk_dict *d, struct shk_zone *z, const char *name, uint64_t capacity,
                  uint32_t nshards, int flags, int *created);

/* The n <= 8 bytes at p as a little-endian number, zero-padded on top, without reading
 * a byte outside [p, p + n) (two overlapping loads instead of a loop). */
static inline uint64_t shk_dict_le_upto8(const uint8_t *p, size_t n)
{
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    if (n >= 4) {
        uint32_t lo, hi;
        __builtin_memcpy(&lo, p, 4);
        __builtin_memcpy(&hi, p + n - 4, 4);
        return (uint64_t)lo | ((uint64_t)hi << (8 * (n - 4)));
    }
    if (n == 0)
        return 0;
    return (uint64_t)p[0] | ((uint64_t)p[n / 2] << (8 * (n / 2))) |
           ((uint64_t)p[n - 1] << (8 * (n - 1)));
#else
    return shk_dict_le_tail(p, n);
#endif
}

/* Fill a key without checks (the caller validated type and length; see shk_dict_key).
 * Keys shorter than 16 bytes (the common case) are read once, as two words that serve
 * both the hash (the same function as shk_dict_hash, specialised) and the comparison. */
static inline void shk_dict_key_fill(struct shk_dkey *k, uint8_t type, const void *data,
                                     uint32_t len)
{
    const uint8_t *p = (const uint8_t *)data;
    k->data = p;
    k->len = len;
    k->type = type;
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    if (__builtin_expect(len < 16, 1)) {
        uint64_t a, b = 0;
        if (len > 8) {
            __builtin_memcpy(&a, p, 8);
            b = shk_dict_le_upto8(p + 8, len - 8);
        } else {
            a = shk_dict_le_upto8(p, len);
        }
        k->head[0] = a;
        k->head[1] = b;
        uint64_t h = shk_dict_mum(SHK_DICT_SEED ^ type, SHK_DICT_K0 ^ (uint64_t)len);
        k->hash = shk_dict_mum(a ^ SHK_DICT_K1, b ^ h ^ SHK_DICT_K2);
        return;
    }
#endif
    k->hash = shk_dict_hash_inline(type, data, len);
    k->head[0] = k->head[1] = 0;
    __builtin_memcpy(k->head, data, len < 16 ? len : 16);
}

/*
 * The one check of an item a reader found, made by every lookup before it touches the
 * value (the inline one below, the lock-free and the locked ones in dict.c).  A lock-free
 * reader passes each field as it read it once: what a racing writer tore is caught here
 * or by the seq check after.
 *
 * shk_dict_item_span_ok: the item of `nc` cells at cell ci lies inside the shard and holds
 * `voff` bytes of header and key (checked on the way along a chain, before the key is
 * compared).  shk_dict_item_problem: that, and the value type is known, a list item holds
 * its list header, a value's length suits its type and fits the item with its fragments.
 * NULL when all is well, else what is wrong (a reader that raced a writer retries; one
 * that holds the lock reports corruption).
 */
static inline int shk_dict_item_span_ok(const struct shk_dict *d, uint32_t ci, uint32_t nc,
                                        uint64_t voff)
{
    return nc >= 2 && nc <= d->ncells - ci && voff <= (uint64_t)nc * SHK_DICT_CELL;
}

static inline const char *shk_dict_item_problem(const struct shk_dict *d, uint32_t ci,
                                                uint8_t vt, uint32_t nc, uint64_t voff,
                                                uint32_t vlen, uint32_t frag)
{
    if (vt < SHK_DV_BYTES || vt > SHK_DV_LIST || !shk_dict_item_span_ok(d, ci, nc, voff))
        return "an item has an unknown value type or runs past the shard";
    const uint64_t room = (uint64_t)nc * SHK_DICT_CELL - voff;
    if (vt == SHK_DV_LIST)
        return room < sizeof(struct shk_dlist) ? "a list item is too short for its list header"
                                               : NULL;
    if ((uint64_t)vlen > (uint64_t)d->ncells * SHK_DICT_CELL || (vlen > room && !frag) ||
        ((vt == SHK_DV_INT || vt == SHK_DV_FLOAT) && (vlen != 8 || room < 8)))
        return "a value's length does not fit its item";
    return NULL;
}

/* Shard of a key. */
static inline uint32_t shk_dict_shard_of(const struct shk_dict *d, const struct shk_dkey *k)
{
    return (uint32_t)(k->hash >> 32) & (d->nshards - 1);
}

/* --- locking ------------------------------------------------------------------------- */

/* Take the shard's lock, waiting as long as it takes, a dead owner's mess repaired (the
 * calls below take it themselves; this is for callers that hold it across several). */
int shk_dict_lock(struct shk_dict *d, uint32_t shard);
void shk_dict_unlock(struct shk_dict *d, uint32_t shard);

/*
 * Waiting for a shard's lock after a call answered EBUSY: an operation of wait.h on a
 * struct shk_dict_shard_wait, run by shk_wait_run (or shk_py_wait, or the asyncio
 * contract).  Its attempt tries the lock as shk_mutex_op does: held elsewhere, EAGAIN
 * with the kernel's robust futex word of the shard's mutex and its value in w->on
 * (registered in the word's FUTEX_WAITERS bit once armed); free, it takes it, repairs
 * what a dead owner left, and gives it back at once: 0 means "the lock was free: make the
 * call again" (which may find it busy again: then wait again).  Nothing is held when the
 * wait ends, so the caller makes its call in its own context.  Results as wait.h says:
 * 0, ETIMEDOUT, EBUSY (SHK_WAIT_TRY), EINTR, or an error (SHK_ECORRUPT, EDEADLK when this
 * thread holds the lock, EINVAL for a shard that does not exist).
 *
 * Which shard: a keyed call's is shk_dict_shard_of(d, k); shk_dict_count names it in *n;
 * shk_dict_scan's is the cursor's (cursor >> 32); shk_dict_debug_queue's is its own.
 */
struct shk_dict_shard_wait {
    struct shk_dict *d;
    uint32_t shard;
};
extern const struct shk_wait_op shk_dict_shard_op;

/* The time (ms since the epoch) this handle uses instead of CLOCK_REALTIME; -1: none. */
static inline void shk_dict_set_clock(struct shk_dict *d, int64_t ms)
{
    shk_store_relaxed(&d->clock_ms, ms); /* read by calls without the GIL */
}

/* --- values given: the bytes each type is stored as (layout.h) ------------------------ */

/* An INT: the int64 itself, 8 bytes in native order (incr updates it with one store). */
static inline void shk_dval_int(struct shk_dval_buf *b, int64_t x)
{
    b->num.i = x;
    b->v = (struct shk_dval){SHK_DV_INT, &b->num.i, 8};
}

/* A FLOAT: the IEEE-754 binary64, 8 bytes in native order. */
static inline void shk_dval_float(struct shk_dval_buf *b, double x)
{
    b->num.f = x;
    b->v = (struct shk_dval){SHK_DV_FLOAT, &b->num.f, 8};
}

/* TRUE or FALSE: the type is the value, no bytes. */
static inline void shk_dval_bool(struct shk_dval_buf *b, int truth)
{
    b->v = (struct shk_dval){truth ? SHK_DV_TRUE : SHK_DV_FALSE, "", 0};
}

/* NONE: no bytes. */
static inline void shk_dval_none(struct shk_dval_buf *b)
{
    b->v = (struct shk_dval){SHK_DV_NONE, "", 0};
}

/* A value that is its caller's bytes: BYTES (raw), STR (UTF-8), BIGINT (little-endian
 * two's complement, shk_dval_bigint_len bytes) or OBJECT (serialized).  The bytes are not
 * copied: they must outlive the call the value is given to. */
static inline void shk_dval_bytes(struct shk_dval_buf *b, uint8_t type, const void *data,
                                  uint64_t len)
{
    b->v = (struct shk_dval){type, data, len};
}

/* The bytes of a BIGINT whose magnitude has bit_length bits (Python's int.bit_length()):
 * room for the magnitude and a sign bit, the length incr gives its results too (so that
 * an int stored and the same int computed are the same bytes). */
static inline uint64_t shk_dval_bigint_len(uint64_t bit_length)
{
    return bit_length / 8 + 1;
}

/* --- values read back: the byte layout of numbers and of a list's elements ------------ */

/* The number an INT (int64) or FLOAT (double) value of len bytes at p holds, in *i or *f
 * as its type says.  0, or SHK_ECORRUPT when the length is not 8. */
static inline int shk_dval_number(uint8_t type, const void *p, uint64_t len, int64_t *i,
                                  double *f)
{
    if (len != 8)
        return SHK_ECORRUPT;
    if (type == SHK_DV_INT)
        __builtin_memcpy(i, p, 8);
    else
        __builtin_memcpy(f, p, 8);
    return 0;
}

/* The next element of a list value's packed elements p[0, len) (records as the header
 * comment says), from *pos (0 first), which it advances.  1: *e is the element; 0: no
 * more (a tail shorter than a record header is not one); SHK_ECORRUPT: a record runs past
 * the end or is itself a list. */
static inline int shk_dict_list_next(const uint8_t *p, uint64_t len, uint64_t *pos,
                                     struct shk_dval *e)
{
    uint64_t at = *pos;
    uint32_t n;
    if (at + 8 > len)
        return 0;
    __builtin_memcpy(&n, p + at + 4, 4);
    if (at + 8 + n > len || p[at] == SHK_DV_LIST)
        return SHK_ECORRUPT;
    *e = (struct shk_dval){p[at], p + at + 8, n};
    *pos = at + 8 + (((uint64_t)n + 7) & ~7ull);
    return 1;
}

/* --- reads ---------------------------------------------------------------------------- */

/*
 * The plainest lookup, inline for the binding's hot path: a short key (1..15 bytes) whose
 * item is one of the first few of its chain, has no expiry, and holds a value of at most
 * `cap` bytes in its first run.  0: found, validated, copied to buf (f filled, hit counted,
 * item marked used); SHK_ENOTFOUND: validated miss (counted); SHK_DICT_SLOW: anything
 * else (a writer busy, a long key or chain, an expiry, a list, fragments, odd bytes, no
 * room): call shk_dict_get, which handles every case.  Same protocol as shk_dict_get
 * (dict.c): seq sampled even, everything read bounds-checked against the shard, the
 * result kept only if seq did not move.  Item words are read whole (8 bytes at their
 * 8-aligned offsets, layout.h), so this is for little-endian machines only.
 */
#define SHK_DICT_SLOW 1
#define SHK_DICT_COUNT_EVERY 1024u  /* lookups between two additions to the shared counts */
typedef uint64_t __attribute__((may_alias)) shk_dict_word;
void shk_dict_publish_counts(struct shk_dict *d);

static inline uint64_t shk_dict_word_at(const uint8_t *p)
{
    return shk_load_relaxed((const shk_dict_word *)p);
}

static inline void shk_dict_count_fast(struct shk_dict *d, int hit)
{
    if (hit)
        d->hits++;
    else
        d->misses++;
    if (__builtin_expect(((d->hits + d->misses) & (SHK_DICT_COUNT_EVERY - 1)) == 0, 0))
        shk_dict_publish_counts(d);
}

static inline int shk_dict_get_fast(struct shk_dict *d, const struct shk_dkey *k, void *buf,
                                    uint32_t cap, struct shk_dict_found *f)
{
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    const uint32_t hi = (uint32_t)(k->hash >> 32), s = hi & (d->nshards - 1);
    struct shk_dict_shard *sh = &d->shards[s];
    uint8_t *blk = d->data0 + (uint64_t)s * d->stride;
    const uint8_t *cells = blk + d->cells_off;
    const uint32_t n = d->ncells, klen = k->len;
    const uint64_t want = (uint64_t)klen | ((uint64_t)k->type << 16);
    const uint64_t voff = sizeof(struct shk_ditem) + ((klen + 7u) & ~7u);
    if (klen - 1u >= 15u) /* empty or 16 bytes and more */
        return SHK_DICT_SLOW;
    uint32_t seq = shk_load_acquire(&sh->seq);
    if (seq & 1)
        return SHK_DICT_SLOW;
    const uint32_t *bucket = (const uint32_t *)blk + ((hi >> d->shard_bits) & (d->nbuckets - 1));
    uint32_t idx = shk_load_acquire(bucket);
    for (int hop = 0; hop < 4 && idx; hop++) {
        uint32_t ci = idx - 1;
        if (ci >= n - 1) /* an item needs two cells */
            return SHK_DICT_SLOW;
        const uint8_t *it = cells + (uint64_t)ci * SHK_DICT_CELL;
        __builtin_prefetch(it + 64); /* the rest of a 128-byte item: 2 or 3 lines */
        __builtin_prefetch(it + 127);
        uint64_t w0 = shk_dict_word_at(it);      /* next | tag << 32 */
        uint64_t w5 = shk_dict_word_at(it + 40); /* klen | ktype << 16 | vtype << 24 | version << 32 */
        if ((uint32_t)(w0 >> 32) == (uint32_t)k->hash && (w5 & 0xffffffu) == want &&
            shk_dict_word_at(it + 48) == k->head[0] &&
            (klen <= 8 || shk_dict_word_at(it + 56) == k->head[1])) {
            uint64_t expire = shk_dict_word_at(it + 16);
            uint64_t w3 = shk_dict_word_at(it + 24); /* ncells | frag << 32 */
            uint64_t w4 = shk_dict_word_at(it + 32); /* vlen | flags << 32 */
            uint32_t nc = (uint32_t)w3, vlen = (uint32_t)w4;
            uint8_t vt = (uint8_t)(w5 >> 24);
            /* the plainest item only: no expiry, no fragments, not a list, the value in
             * its first run and in buf; and it must make sense */
            if (expire || (w3 >> 32) || vt == SHK_DV_LIST ||
                shk_dict_item_problem(d, ci, vt, nc, voff, vlen, 0) || vlen > cap)
                return SHK_DICT_SLOW;
            if (vlen <= 64 && cap >= 64 && voff + 64 <= (uint64_t)nc * SHK_DICT_CELL)
                __builtin_memcpy(buf, it + voff, 64); /* inside the item: fixed-size moves */
            else
                __builtin_memcpy(buf, it + voff, vlen);
            shk_fence_acquire();
            if (shk_load_relaxed(&sh->seq) != seq)
                return SHK_DICT_SLOW;
            f->vtype = vt;
            f->flags = (uint32_t)(w4 >> 32);
            f->len = vlen;
            f->expire = 0;
            f->version = (uint32_t)(w5 >> 32);
            f->stale = 0;
            uint64_t *ref = (uint64_t *)(blk + d->ref_off) + (ci >> 6), bit = 1ull << (ci & 63);
            if (!(shk_load_relaxed(ref) & bit)) /* CLOCK: used */
                shk_fetch_or_relaxed(ref, bit);
            shk_dict_count_fast(d, 1);
            return 0;
        }
        idx = (uint32_t)w0;
    }
    if (idx)
        return SHK_DICT_SLOW;
    shk_fence_acquire();
    if (shk_load_relaxed(&sh->seq) != seq)
        return SHK_DICT_SLOW;
    shk_dict_count_fast(d, 0);
    return SHK_ENOTFOUND;
#else
    (void)d, (void)k, (void)buf, (void)cap, (void)f;
    return SHK_DICT_SLOW;
#endif
}

/*
 * Look k up and copy its value into (buf, cap): 0 (found; *f), SHK_ENOTFOUND (missing or
 * expired), ENOBUFS, EBUSY, SHK_ECORRUPT.  flags: SHK_DSTALE, SHK_DPEEK, SHK_DWAIT.  The
 * read takes no lock unless writers keep the shard busy, or the value is a list (its
 * elements are copied under the lock).  buf[0, cap) may be written beyond f->len (short
 * values are copied with fixed-size moves).
 */
int shk_dict_get(struct shk_dict *d, const struct shk_dkey *k, int flags, void *buf,
                 uint64_t cap, struct shk_dict_found *f);

/* Milliseconds left before k expires: *ms = -1 when it never does. SHK_ENOTFOUND. */
int shk_dict_ttl(struct shk_dict *d, const struct shk_dkey *k, int flags, int64_t *ms);

/* Length of the list at k (0 if absent). SHK_ETYPE if not a list. */
int shk_dict_llen(struct shk_dict *d, const struct shk_dkey *k, int flags, uint64_t *n);

/* Number of unexpired keys. Takes no lock unless writers keep a shard busy.  EBUSY: *n
 * is the shard whose lock is held elsewhere. */
int shk_dict_count(struct shk_dict *d, int flags, uint64_t *n);

/* A key record, as shk_dict_scan and shk_dict_debug_queue hand keys back: {uint8 ktype;
 * uint8 mark; uint16 klen; key bytes, padded to 4}. */
struct shk_dict_keyrec {
    uint8_t type;               /* SHK_DK_BYTES or SHK_DK_STR */
    uint8_t mark;               /* shk_dict_debug_queue: the item's reference bit; else 0 */
    uint16_t len;
    const uint8_t *data;
};

/* The bytes of the record of a key of klen bytes. */
static inline uint64_t shk_dict_keyrec_size(uint32_t klen)
{
    return 4 + ((klen + 3u) & ~3u);
}

/* The record at buf + *pos (one of the n a call said it wrote) into *k; *pos advances to
 * the next one. */
static inline void shk_dict_keyrec_next(const uint8_t *buf, uint64_t *pos,
                                        struct shk_dict_keyrec *k)
{
    const uint8_t *p = buf + *pos;
    k->type = p[0];
    k->mark = p[1];
    __builtin_memcpy(&k->len, p + 2, 2);
    k->data = p + 4;
    *pos += shk_dict_keyrec_size(k->len);
}

/*
 * Iterate keys: *cursor starts at 0 and is UINT64_MAX when done.  Each call appends
 * key records (struct shk_dict_keyrec above, mark 0) to buf (cap
 * bytes) for the unexpired keys of whole buckets, at most `max_buckets` of them, and
 * returns 0 with *used and *nkeys set.  ENOBUFS: not even one bucket fits (*used: the
 * room it needs).
 * Keys present during the whole iteration are returned exactly once; others may or may
 * not be.  Holds no lock across calls; inside one call, at most one shard's lock, only
 * when the lock-free read keeps failing.
 */
int shk_dict_scan(struct shk_dict *d, uint64_t *cursor, uint32_t max_buckets, int flags,
                  void *buf, uint64_t cap, uint64_t *used, uint32_t *nkeys);

/* Test hook: the eviction queue of one shard, oldest first, as scan's records with the
 * mark set when the item's reference bit is: *n of them in *used bytes (ENOBUFS:
 * *used is the room needed). */
int shk_dict_debug_queue(struct shk_dict *d, uint32_t shard, int flags, void *buf,
                         uint64_t cap, uint64_t *used, uint32_t *n);

/* --- writes (each holds its key's shard lock) ------------------------------------------- */

/*
 * Store (vtype, data[0..len)) under k with the user flags and ttl_ms (0: never expires).
 * mode: enum shk_dict_mode, and SHK_DWAIT.  *evicted: unexpired items evicted to make
 * room.  For SHK_DIFVERSION, `version` is the item version the caller read (SHK_EEXISTS
 * if the item changed, SHK_ENOTFOUND if it is gone).  A plain set (no ttl, flags 0, mode
 * SHK_DSET, maybe SHK_DSAFE) of a value that takes exactly the key's cells is done in
 * place (shk_dict_set_fast_locked).
 */
int shk_dict_store(struct shk_dict *d, const struct shk_dkey *k, uint8_t vtype,
                   const void *data, uint64_t len, uint32_t flags, uint64_t ttl_ms, int mode,
                   uint32_t version, uint32_t *evicted);

/* Store's fast path, for a caller that holds the lock (tests tell by it which path ran):
 * 0 or the general store's result (*evicted as there), or SHK_DICT_SLOW: the general
 * store is needed. */
int shk_dict_set_fast_locked(struct shk_dict *d, const struct shk_dkey *k, uint8_t vtype,
                             const void *data, uint64_t len, int mode, uint32_t *evicted);

/* Remove k: 0 if it was there unexpired, SHK_ENOTFOUND otherwise (an expired item is
 * reclaimed all the same). */
int shk_dict_delete(struct shk_dict *d, const struct shk_dkey *k, int flags);

/* Remove k and hand its value over into (buf, cap), as shk_dict_get does (a list: its
 * packed elements).  SHK_ENOTFOUND; ENOBUFS: nothing removed. */
int shk_dict_take(struct shk_dict *d, const struct shk_dkey *k, int flags, void *buf,
                  uint64_t cap, struct shk_dict_found *f);

/* Python's setdefault: 0 when k was missing (or expired) and (vtype, data, len) is now
 * stored; SHK_EEXISTS with k's value copied into (buf, cap) as shk_dict_get does
 * (ENOBUFS: nothing stored).  Counted as a lookup. */
int shk_dict_setdefault(struct shk_dict *d, const struct shk_dkey *k, uint8_t vtype,
                        const void *data, uint64_t len, int flags, void *buf, uint64_t cap,
                        struct shk_dict_found *f);

/*
 * Add step to the number at k, atomically, as Python adds: int + int is exact (an int64
 * that overflows becomes a BIGINT, a BIGINT that fits becomes an int64 again), anything
 * with a float is a float.  Operands: SHK_DV_INT (8 bytes, native), SHK_DV_FLOAT,
 * SHK_DV_BIGINT (layout.h).  The new value is copied into (buf, cap) (f->vtype, f->len);
 * an int64 or a float is updated in place, a value that changes type or size is stored
 * anew with its expiry and flags.  A missing or expired k: SHK_ENOTFOUND, or with `init`
 * it becomes init + step (expiring after init_ttl ms, 0: never).  SHK_ETYPE: the value is
 * not a number; ERANGE: an int too large for a float; ENOBUFS: nothing changed.
 */
int shk_dict_incr(struct shk_dict *d, const struct shk_dkey *k, const struct shk_dval *step,
                  const struct shk_dval *init, uint64_t init_ttl, int flags, void *buf,
                  uint64_t cap, struct shk_dict_found *f);

/* Set or clear (ttl_ms 0) the expiry of k. SHK_ENOTFOUND. */
int shk_dict_expire(struct shk_dict *d, const struct shk_dkey *k, uint64_t ttl_ms, int flags);

/* Lists: push to the left (head) or right (tail); *newlen = length after. */
int shk_dict_push(struct shk_dict *d, const struct shk_dkey *k, int right, uint8_t vtype,
                  const void *data, uint64_t len, int flags, uint64_t *newlen,
                  uint32_t *evicted);
/* Pop from the left or right into (buf, cap). SHK_ENOTFOUND when there is no list (an
 * emptied list is removed); ENOBUFS: nothing popped. */
int shk_dict_pop(struct shk_dict *d, const struct shk_dkey *k, int right, int flags, void *buf,
                 uint64_t cap, struct shk_dict_found *f);

/* Remove everything and give all memory back. *n: items removed. */
int shk_dict_flush_all(struct shk_dict *d, uint64_t *n);
/* Reclaim expired items, at most max (0: all). Locks one chunk of buckets at a time.
 * These two and shk_dict_check wait for each shard's lock (call them without the GIL). */
int shk_dict_flush_expired(struct shk_dict *d, uint64_t max, uint64_t *n);

/* --- bookkeeping ------------------------------------------------------------------------ */

/* Add this process's hit/miss counts to the shared ones. */
void shk_dict_publish_counts(struct shk_dict *d);
int shk_dict_stats(struct shk_dict *d, struct shk_dict_stats *st);
/* Bytes an item with this key and value occupies (whole cells, header included). */
uint64_t shk_dict_item_bytes(uint64_t klen, uint64_t vlen);

/*
 * Verify every invariant of every shard (each under its lock).  Problems are appended
 * to report (one per line).  Returns the number found, or a negative error.
 */
int shk_dict_check(struct shk_dict *d, char *report, size_t cap);

/* Rebuild a shard's derived state (called by shk_dict_lock after a dead owner; exposed
 * for tests). Locked. */
int shk_dict_recover_locked(struct shk_dict *d, uint32_t shard);

/* Milliseconds since the epoch on the dict's clock. */
uint64_t shk_dict_now(const struct shk_dict *d);

#ifdef __cplusplus
}
#endif
#endif
