/* The dict core against a model: random stores, deletes, lists and increments with every
 * invariant checked by shk_dict_check(); eviction and fragmentation; TTLs on a fixed
 * clock; a scan that returns every key once; a child SIGKILLed at each crash point inside
 * a write leaves a dict that recovers to old-or-new values; scribbled bytes give
 * SHK_ECORRUPT, never a wild access; forked writers and readers agree on checksums.  And the
 * protocols the binding used to run itself: incr's arithmetic and its atomicity under
 * threads and processes, values handed back through a growing buffer, lists, stale reads,
 * a busy shard (EBUSY without SHK_DWAIT, a wait with it) and the wait for its lock in the
 * one wait shape (shk_dict_shard_op: deadline, signal slices, the asyncio contract, a
 * holder killed while stopped). */
#include <errno.h>
#include <linux/futex.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "dict.h"

static struct shk_segment seg;
static struct shk_zone z;
static char report[1 << 16];

static void open_zone(size_t size)
{
    int status = -1;
    CHECK_EQ(shk_seg_create_anon(&seg, size), 0);
    struct shk_zone_params p = {size, 0, NULL, 0};
    CHECK_EQ(shk_zone_try_open(&z, &seg, &p, 0, &status), 0);
    CHECK_EQ(status, SHK_ZONE_MUST_INIT);
    CHECK_EQ(shk_zone_init_done(&z, 1), 0);
}

static void close_zone(void)
{
    shk_seg_close(&seg);
}

static void expect_consistent(struct shk_dict *d, const char *when)
{
    int n = shk_dict_check(d, report, sizeof report);
    if (n != 0)
        fprintf(stderr, "inconsistent %s:\n%s\n", when, report);
    CHECK_EQ(n, 0);
}

static void mkkey(struct shk_dkey *k, char *buf, int i)
{
    int n = snprintf(buf, 32, "key-%d", i);
    CHECK_EQ(shk_dict_key(k, SHK_DK_STR, buf, (size_t)n), 0);
}

/* value bytes derived from (key, version, length): verifiable on read */
static void fill(uint8_t *v, size_t len, int key, int ver)
{
    uint32_t x = (uint32_t)key * 2654435761u ^ (uint32_t)ver * 40503u;
    for (size_t i = 0; i < len; i++) {
        x = x * 1103515245u + 12345u;
        v[i] = (uint8_t)(x >> 16);
    }
}

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* The binding's wait after a call said EBUSY: until k's shard lock is free (no signal
 * returns: nobody here handles signals; a deadline far beyond any real wait, so that a
 * lost wake-up fails the test instead of hanging it).  0: make the call again. */
static int wait_shard(struct shk_dict *d, const struct shk_dkey *k)
{
    struct shk_dict_shard_wait sw = {d, shk_dict_shard_of(d, k)};
    struct shk_wait w = SHK_WAIT_INIT(mono_ns() + 60000000000u, SHK_WAIT_NOSIGNALS);
    return shk_wait_run(&shk_dict_shard_op, &sw, &w);
}

static int get_bytes(struct shk_dict *d, struct shk_dkey *k, uint8_t *buf, uint64_t cap,
                     struct shk_dict_found *f)
{
    /* the binding's way: the inline fast path, then the general lookup, which never
     * sleeps: when a writer holds the shard's lock, wait for it and look again */
    int r = cap <= UINT32_MAX ? shk_dict_get_fast(d, k, buf, (uint32_t)cap, f) : SHK_DICT_SLOW;
    if (r != SHK_DICT_SLOW)
        return r;
    while ((r = shk_dict_get(d, k, 0, buf, cap, f)) == EBUSY && (r = wait_shard(d, k)) == 0)
        ;
    return r;
}

#define NKEYS 300
static int model_len[NKEYS];   /* -1: absent */
static int model_ver[NKEYS];

static void test_random_model(void)
{
    open_zone(8 << 20);
    struct shk_dict d;
    int created;
    CHECK_EQ(shk_dict_open(&d, &z, "model", 4 << 20, 4, SHK_DOPEN_CREATE | SHK_DOPEN_STRICT,
                           &created), 0);
    CHECK_EQ(created, 1);
    static uint8_t v[70000], out[70000];
    for (int i = 0; i < NKEYS; i++)
        model_len[i] = -1;
    unsigned seed = 777;
    for (int step = 0; step < 60000; step++) {
        seed = seed * 1103515245u + 12345u;
        int key = (int)((seed >> 8) % NKEYS);
        int op = (int)((seed >> 20) % 10);
        char kb[32];
        struct shk_dkey k;
        mkkey(&k, kb, key);
        if (op < 5) {
            seed = seed * 1103515245u + 12345u;
            size_t len = (seed >> 16) % 7 == 0 ? (seed >> 4) % 60000 : (seed >> 12) % 200;
            int ver = step;
            fill(v, len, key, ver);
            uint32_t ev;
            int r = shk_dict_store(&d, &k, SHK_DV_BYTES, v, len, (uint32_t)key, 0, SHK_DSET, 0, &ev);
            CHECK_EQ(r, 0);
            CHECK_EQ(ev, 0); /* 4 MiB hold all of it: nothing is evicted */
            model_len[key] = (int)len;
            model_ver[key] = ver;
        } else if (op < 7) {
            int r = shk_dict_delete(&d, &k, SHK_DWAIT);
            CHECK_EQ(r, model_len[key] >= 0 ? 0 : SHK_ENOTFOUND);
            model_len[key] = -1;
        } else {
            struct shk_dict_found f;
            int r = get_bytes(&d, &k, out, sizeof out, &f);
            if (model_len[key] < 0) {
                CHECK_EQ(r, SHK_ENOTFOUND);
            } else {
                CHECK_EQ(r, 0);
                CHECK_EQ(f.len, model_len[key]);
                CHECK_EQ(f.flags, key);
                fill(v, f.len, key, model_ver[key]);
                CHECK(memcmp(v, out, f.len) == 0);
            }
        }
        if (step % 5000 == 0)
            expect_consistent(&d, "during the random model test");
    }
    expect_consistent(&d, "after the random model test");
    /* count and scan agree with the model; every key once */
    uint64_t n = 0, live = 0;
    for (int i = 0; i < NKEYS; i++)
        live += model_len[i] >= 0;
    CHECK_EQ(shk_dict_count(&d, SHK_DWAIT, &n), 0);
    CHECK_EQ(n, live);
    static int seen[NKEYS];
    memset(seen, 0, sizeof seen);
    uint64_t cursor = 0, total = 0;
    uint8_t sbuf[512];
    while (cursor != UINT64_MAX) {
        uint64_t used;
        uint32_t nk;
        int r = shk_dict_scan(&d, &cursor, 16, SHK_DWAIT, sbuf, sizeof sbuf, &used, &nk);
        CHECK_EQ(r, 0);
        for (uint64_t pos = 0, i = 0; pos < used; i++) {
            struct shk_dict_keyrec kr;
            shk_dict_keyrec_next(sbuf, &pos, &kr);
            CHECK(i < nk && kr.type == SHK_DK_STR && kr.mark == 0 && kr.len < 32);
            char kb[32];
            memcpy(kb, kr.data, kr.len);
            kb[kr.len] = 0;
            int idx = atoi(kb + 4); /* "key-N" */
            if (idx >= 0 && idx < NKEYS)
                seen[idx]++;
            total++;
            CHECK(pos <= used);
        }
    }
    CHECK_EQ(total, live);
    for (int i = 0; i < NKEYS; i++)
        CHECK_EQ(seen[i], model_len[i] >= 0 ? 1 : 0);
    /* a buffer too small for even one bucket says so instead of skipping keys */
    uint64_t used, nbad = 0;
    uint32_t nk;
    for (cursor = 0; cursor != UINT64_MAX && nbad == 0;) {
        int r = shk_dict_scan(&d, &cursor, 1, SHK_DWAIT, sbuf, 4, &used, &nk);
        if (r == ENOBUFS)
            nbad++;
        else
            CHECK(r == 0 && nk == 0);
    }
    CHECK_EQ(nbad, 1);
    /* ... and how much room it needs: with that, the bucket comes back whole */
    CHECK(used > 4 && used <= sizeof sbuf);
    uint64_t need = used;
    CHECK_EQ(shk_dict_scan(&d, &cursor, 1, SHK_DWAIT, sbuf, need, &used, &nk), 0);
    CHECK(used == need && nk >= 1);
    uint64_t flushed;
    CHECK_EQ(shk_dict_flush_all(&d, &flushed), 0);
    CHECK_EQ(flushed, live);
    struct shk_dict_stats st;
    shk_dict_stats(&d, &st);
    CHECK_EQ(st.free_cells * SHK_DICT_CELL, st.capacity);
    CHECK_EQ(st.free_bytes, st.capacity);
    CHECK_EQ(st.max_item_bytes, (uint64_t)st.cells_per_shard * SHK_DICT_CELL);
    CHECK_EQ(st.items, 0);
    int nfields = 0;
    for (const struct shk_field *f = shk_dict_stats_fields; f->name; f++, nfields++)
        CHECK(f->off < sizeof st);
    CHECK_EQ(nfields, 15);
    expect_consistent(&d, "after flush_all");
    close_zone();
}

static void test_eviction(void)
{
    open_zone(4 << 20);
    struct shk_dict d;
    int created;
    CHECK_EQ(shk_dict_open(&d, &z, "lru", 64 << 10, 1, SHK_DOPEN_CREATE, &created), 0);
    uint8_t v[100];
    uint32_t ev, total_ev = 0;
    /* 64 KiB / (48 + 8 + 100 -> 160 bytes) = 409 items fit */
    for (int i = 0; i < 1000; i++) {
        char kb[32];
        struct shk_dkey k;
        mkkey(&k, kb, i);
        fill(v, sizeof v, i, 0);
        CHECK_EQ(shk_dict_store(&d, &k, SHK_DV_BYTES, v, sizeof v, 0, 0, SHK_DSET, 0, &ev), 0);
        total_ev += ev;
        if (i == 300) { /* read the first 100 keys: they get a second chance */
            for (int j = 0; j < 100; j++) {
                struct shk_dict_found f;
                uint8_t out[128];
                mkkey(&k, kb, j);
                CHECK_EQ(get_bytes(&d, &k, out, sizeof out, &f), 0);
            }
        }
    }
    CHECK(total_ev >= 1000 - 64 * 1024 / 160);
    struct shk_dict_stats st;
    shk_dict_stats(&d, &st);
    CHECK_EQ(st.evictions, total_ev);
    CHECK_EQ(st.items, 1000 - total_ev);
    expect_consistent(&d, "after evictions");
    /* the newest keys survive; safe_set never evicts and keeps the old value */
    char kb[32];
    struct shk_dkey k;
    mkkey(&k, kb, 999);
    struct shk_dict_found f;
    uint8_t out[60000];
    CHECK_EQ(get_bytes(&d, &k, out, sizeof out, &f), 0);
    static uint8_t big[20000];
    fill(big, sizeof big, 999, 1);
    CHECK_EQ(shk_dict_store(&d, &k, SHK_DV_BYTES, big, sizeof big, 0, 0, SHK_DSET | SHK_DSAFE, 0, &ev),
             SHK_EFULL);
    CHECK_EQ(get_bytes(&d, &k, out, sizeof out, &f), 0);
    CHECK_EQ(f.len, 100);
    fill(v, sizeof v, 999, 0);
    CHECK(memcmp(out, v, 100) == 0);
    /* set makes room by evicting; the value is intact */
    CHECK_EQ(shk_dict_store(&d, &k, SHK_DV_BYTES, big, sizeof big, 0, 0, SHK_DSET, 0, &ev), 0);
    CHECK(ev > 0);
    CHECK_EQ(get_bytes(&d, &k, out, sizeof out, &f), 0);
    CHECK_EQ(f.len, sizeof big);
    CHECK(memcmp(out, big, sizeof big) == 0);
    /* larger than a shard: never fits */
    static uint8_t huge[70000];
    CHECK_EQ(shk_dict_store(&d, &k, SHK_DV_BYTES, huge, sizeof huge, 0, 0, SHK_DSET, 0, &ev),
             SHK_ETOOBIG);
    expect_consistent(&d, "after big values");
    close_zone();
}

static void test_fragments(void)
{
    open_zone(4 << 20);
    struct shk_dict d;
    int created;
    CHECK_EQ(shk_dict_open(&d, &z, "frag", 32 << 10, 1, SHK_DOPEN_CREATE, &created), 0);
    /* fill with small items, delete every other one: free space in 96-byte holes */
    uint8_t v[40];
    int n = 0;
    for (;; n++) {
        char kb[32];
        struct shk_dkey k;
        mkkey(&k, kb, n);
        uint32_t ev;
        fill(v, sizeof v, n, 0);
        CHECK_EQ(shk_dict_store(&d, &k, SHK_DV_BYTES, v, sizeof v, 0, 0, SHK_DSET | SHK_DSAFE, 0, &ev) == 0 ||
                     n > 0, 1);
        struct shk_dict_stats st;
        shk_dict_stats(&d, &st);
        if (st.free_cells < 4)
            break;
    }
    for (int i = 0; i <= n; i += 2) {
        char kb[32];
        struct shk_dkey k;
        mkkey(&k, kb, i);
        shk_dict_delete(&d, &k, SHK_DWAIT);
    }
    expect_consistent(&d, "with holes");
    struct shk_dict_stats st;
    shk_dict_stats(&d, &st);
    uint64_t free_bytes = st.free_cells * SHK_DICT_CELL;
    /* a value as large as most of the free space fits without evicting: fragments */
    size_t len = (size_t)(free_bytes / 2);
    uint8_t *big = malloc(len), *out = malloc(len);
    fill(big, len, 5000, 3);
    char kb[32];
    struct shk_dkey k;
    mkkey(&k, kb, 5000);
    uint32_t ev;
    CHECK_EQ(shk_dict_store(&d, &k, SHK_DV_BYTES, big, len, 0, 0, SHK_DSET | SHK_DSAFE, 0, &ev), 0);
    struct shk_dict_found f;
    CHECK_EQ(get_bytes(&d, &k, out, len, &f), 0);
    CHECK_EQ(f.len, len);
    CHECK(memcmp(big, out, len) == 0);
    /* too small a buffer: ENOBUFS with the length */
    CHECK_EQ(shk_dict_get(&d, &k, 0, out, 10, &f), ENOBUFS);
    CHECK_EQ(f.len, len);
    expect_consistent(&d, "with a fragmented value");
    CHECK_EQ(shk_dict_delete(&d, &k, SHK_DWAIT), 0);
    expect_consistent(&d, "after freeing a fragmented value");
    free(big);
    free(out);
    close_zone();
}

static void test_ttl_incr_lists(void)
{
    open_zone(4 << 20);
    struct shk_dict d;
    int created;
    CHECK_EQ(shk_dict_open(&d, &z, "ttl", 256 << 10, 2, SHK_DOPEN_CREATE, &created), 0);
    d.clock_ms = 1000000;
    char kb[32];
    struct shk_dkey k;
    mkkey(&k, kb, 1);
    uint32_t ev;
    uint8_t out[64];
    struct shk_dict_found f;
    CHECK_EQ(shk_dict_store(&d, &k, SHK_DV_STR, "abc", 3, 7, 1500, SHK_DSET, 0, &ev), 0);
    int64_t ms;
    CHECK_EQ(shk_dict_ttl(&d, &k, SHK_DWAIT, &ms), 0);
    CHECK_EQ(ms, 1500);
    d.clock_ms += 1499;
    CHECK_EQ(get_bytes(&d, &k, out, sizeof out, &f), 0);
    d.clock_ms += 1;
    CHECK_EQ(get_bytes(&d, &k, out, sizeof out, &f), SHK_ENOTFOUND);
    CHECK_EQ(shk_dict_get(&d, &k, SHK_DSTALE, out, sizeof out, &f), 0);
    CHECK_EQ(f.stale, 1);
    CHECK_EQ(f.flags, 7);
    CHECK(memcmp(out, "abc", 3) == 0);
    CHECK_EQ(shk_dict_ttl(&d, &k, SHK_DWAIT, &ms), SHK_ENOTFOUND);
    /* add succeeds over an expired item */
    CHECK_EQ(shk_dict_store(&d, &k, SHK_DV_STR, "x", 1, 0, 0, SHK_DADD, 0, &ev), 0);
    CHECK_EQ(shk_dict_store(&d, &k, SHK_DV_STR, "y", 1, 0, 0, SHK_DADD, 0, &ev), SHK_EEXISTS);
    CHECK_EQ(shk_dict_ttl(&d, &k, SHK_DWAIT, &ms), 0);
    CHECK_EQ(ms, -1);
    /* flush_expired reclaims */
    for (int i = 10; i < 60; i++) {
        mkkey(&k, kb, i);
        CHECK_EQ(shk_dict_store(&d, &k, SHK_DV_BYTES, "v", 1, 0, i < 40 ? 10 : 0, SHK_DSET, 0, &ev), 0);
    }
    d.clock_ms += 10;
    uint64_t n;
    CHECK_EQ(shk_dict_count(&d, SHK_DWAIT, &n), 0);
    CHECK_EQ(n, 21);
    CHECK_EQ(shk_dict_flush_expired(&d, 5, &n), 0);
    CHECK_EQ(n, 5);
    CHECK_EQ(shk_dict_flush_expired(&d, 0, &n), 0);
    CHECK_EQ(n, 25);
    CHECK_EQ(shk_dict_count(&d, SHK_DWAIT, &n), 0);
    CHECK_EQ(n, 21);
    expect_consistent(&d, "after flush_expired");
    /* incr (every case in test_incr_numbers) */
    mkkey(&k, kb, 100);
    int64_t one_i = 1, oi;
    double half = 0.5;
    struct shk_dval one = {SHK_DV_INT, &one_i, 8}, halfv = {SHK_DV_FLOAT, &half, 8};
    CHECK_EQ(shk_dict_incr(&d, &k, &one, NULL, 0, SHK_DWAIT, out, sizeof out, &f), SHK_ENOTFOUND);
    int64_t big = INT64_MAX - 1;
    CHECK_EQ(shk_dict_store(&d, &k, SHK_DV_INT, &big, 8, 0, 0, SHK_DSET, 0, &ev), 0);
    CHECK_EQ(shk_dict_incr(&d, &k, &one, NULL, 0, SHK_DWAIT, out, sizeof out, &f), 0);
    memcpy(&oi, out, 8);
    CHECK_EQ(f.vtype, SHK_DV_INT);
    CHECK_EQ(oi, INT64_MAX);
    /* past INT64_MAX: 2**63, exactly (was ERANGE: the binding did it in Python) */
    CHECK_EQ(shk_dict_incr(&d, &k, &one, NULL, 0, SHK_DWAIT, out, sizeof out, &f), 0);
    CHECK(f.vtype == SHK_DV_BIGINT && f.len == 9 && out[7] == 0x80 && out[8] == 0);
    CHECK_EQ(shk_dict_incr(&d, &k, &halfv, NULL, 0, SHK_DWAIT, out, sizeof out, &f), 0);
    CHECK_EQ(f.vtype, SHK_DV_FLOAT);
    CHECK_EQ(get_bytes(&d, &k, out, sizeof out, &f), 0);
    CHECK_EQ(f.vtype, SHK_DV_FLOAT);
    mkkey(&k, kb, 101);
    CHECK_EQ(shk_dict_store(&d, &k, SHK_DV_STR, "s", 1, 0, 0, SHK_DSET, 0, &ev), 0);
    CHECK_EQ(shk_dict_incr(&d, &k, &one, NULL, 0, SHK_DWAIT, out, sizeof out, &f), SHK_ETYPE);
    /* lists */
    mkkey(&k, kb, 200);
    uint64_t len;
    for (int i = 0; i < 50; i++) {
        char e[16];
        int el = snprintf(e, sizeof e, "%d", i);
        CHECK_EQ(shk_dict_push(&d, &k, i % 2, SHK_DV_STR, e, (uint64_t)el, SHK_DWAIT, &len, &ev), 0);
        CHECK_EQ(len, (uint64_t)i + 1);
    }
    CHECK_EQ(shk_dict_llen(&d, &k, SHK_DWAIT, &len), 0);
    CHECK_EQ(len, 50);
    expect_consistent(&d, "with a list");
    static uint8_t packed[4096];
    CHECK_EQ(shk_dict_get(&d, &k, SHK_DWAIT, packed, sizeof packed, &f), 0);
    CHECK_EQ(f.vtype, SHK_DV_LIST);
    CHECK_EQ(f.count, 50);
    /* left pushes of even numbers then right pushes of odd ones: 48 46 ... 0 1 3 ... 49 */
    CHECK(memcmp(packed + 8, "48", 2) == 0);
    CHECK_EQ(shk_dict_pop(&d, &k, 1, SHK_DWAIT, out, sizeof out, &f), 0);
    CHECK(memcmp(out, "49", 2) == 0);
    CHECK_EQ(shk_dict_pop(&d, &k, 0, SHK_DWAIT, out, sizeof out, &f), 0);
    CHECK(memcmp(out, "48", 2) == 0);
    for (int i = 0; i < 48; i++)
        CHECK_EQ(shk_dict_pop(&d, &k, i % 2, SHK_DWAIT, out, sizeof out, &f), 0);
    CHECK_EQ(shk_dict_pop(&d, &k, 0, SHK_DWAIT, out, sizeof out, &f), SHK_ENOTFOUND);
    CHECK_EQ(shk_dict_llen(&d, &k, SHK_DWAIT, &len), 0);
    CHECK_EQ(len, 0);
    mkkey(&k, kb, 101);
    CHECK_EQ(shk_dict_push(&d, &k, 0, SHK_DV_STR, "x", 1, SHK_DWAIT, &len, &ev), SHK_ETYPE);
    expect_consistent(&d, "after lists");
    close_zone();
}

/* A child does one write with crash_at set and dies inside it, holding the shard lock. */
static void test_crash_points(void)
{
    int crashed = 0;
    for (int point = 1; point <= SHK_DCRASH_MID_INPLACE; point++) {
        for (int variant = 0; variant < 3; variant++) {
            open_zone(4 << 20);
            struct shk_dict d;
            int created;
            CHECK_EQ(shk_dict_open(&d, &z, "crash", 16 << 10, 1, SHK_DOPEN_CREATE, &created), 0);
            d.clock_ms = 5000;
            static uint8_t v[4000];
            uint32_t ev;
            char kb[32];
            struct shk_dkey k;
            /* a full dict (so writes evict), a key with an old value, and a list */
            for (int i = 0; i < 200; i++) {
                mkkey(&k, kb, i);
                fill(v, 100, i, 0);
                shk_dict_store(&d, &k, SHK_DV_BYTES, v, 100, 0, i % 3 == 0 ? 10 : 0, SHK_DSET, 0, &ev);
            }
            mkkey(&k, kb, 1000);
            fill(v, 100, 1000, 0);
            CHECK_EQ(shk_dict_store(&d, &k, SHK_DV_BYTES, v, 100, 0, 0, SHK_DSET, 0, &ev), 0);
            struct shk_dkey lk;
            char lkb[32];
            mkkey(&lk, lkb, 2000);
            uint64_t len;
            CHECK_EQ(shk_dict_push(&d, &lk, 0, SHK_DV_STR, "a", 1, SHK_DWAIT, &len, &ev), 0);
            CHECK_EQ(shk_dict_push(&d, &lk, 0, SHK_DV_STR, "b", 1, SHK_DWAIT, &len, &ev), 0);
            mkkey(&k, kb, 1001);
            int64_t one = 1;
            CHECK_EQ(shk_dict_store(&d, &k, SHK_DV_INT, &one, 8, 0, 0, SHK_DSET, 0, &ev), 0);
            d.clock_ms = 6000; /* the ttl'd items have expired */
            pid_t pid = fork();
            if (pid == 0) {
                d.crash_at = point;
                struct shk_dkey ck;
                char ckb[32];
                mkkey(&ck, ckb, 1000);
                fill(v, sizeof v, 1000, 1);
                int64_t step_i = 41;
                struct shk_dval step = {SHK_DV_INT, &step_i, 8};
                struct shk_dict_found f;
                uint8_t out[400];
                if (point == SHK_DCRASH_MID_LIST) {
                    if (variant < 2)
                        shk_dict_push(&d, &lk, variant, SHK_DV_STR, "c", 1, SHK_DWAIT, &len, &ev);
                    else
                        shk_dict_pop(&d, &lk, 1, SHK_DWAIT, out, sizeof out, &f);
                }
                if (point == SHK_DCRASH_MID_FLUSH) {
                    uint64_t n;
                    shk_dict_flush_all(&d, &n);
                }
                if (point == SHK_DCRASH_IN_PLACE) {
                    mkkey(&ck, ckb, 1001);
                    if (variant == 0)
                        shk_dict_incr(&d, &ck, &step, NULL, 0, SHK_DWAIT, out, sizeof out, &f);
                    else
                        shk_dict_expire(&d, &ck, 100, SHK_DWAIT);
                }
                if (variant == 2 && point != SHK_DCRASH_MID_LIST) {
                    d.crash_at = 0;
                    shk_dict_delete(&d, &ck, SHK_DWAIT);
                    d.crash_at = point;
                }
                /* a big value forces eviction; the first variant replaces, others insert;
                 * 104 bytes take the cells of the old 100: an update in place */
                uint64_t len = point == SHK_DCRASH_MID_INPLACE ? 104 : variant == 1 ? 3000 : 300;
                if (point == SHK_DCRASH_MID_INPLACE && variant == 1) { /* the binding's way */
                    uint32_t cs = shk_dict_shard_of(&d, &ck);
                    shk_dict_lock(&d, cs);
                    if (shk_dict_set_fast_locked(&d, &ck, SHK_DV_BYTES, v, len, SHK_DSET, &ev) == SHK_DICT_SLOW)
                        _exit(3); /* the fast path must take this one */
                    shk_dict_unlock(&d, cs);
                }
                shk_dict_store(&d, &ck, SHK_DV_BYTES, v, len, 0, 0, SHK_DSET, 0, &ev);
                shk_dict_delete(&d, &ck, SHK_DWAIT);
                _exit(0); /* this point is not on the path: no crash */
            }
            int status;
            waitpid(pid, &status, 0);
            CHECK(!WIFEXITED(status) || WEXITSTATUS(status) == 0);
            /* the next process carries on */
            mkkey(&k, kb, 1000);
            struct shk_dict_found f;
            static uint8_t out[4000];
            int r = get_bytes(&d, &k, out, sizeof out, &f);
            CHECK(r == 0 || r == SHK_ENOTFOUND);
            if (r == 0) { /* old or new, never garbage */
                fill(v, f.len == 100 ? 100 : f.len, 1000, f.len == 100 ? 0 : 1);
                CHECK(f.len == 100 || f.len == 104 || f.len == 300 || f.len == 3000);
                CHECK(memcmp(out, v, f.len) == 0);
            }
            mkkey(&k, kb, 1001);
            r = get_bytes(&d, &k, out, sizeof out, &f);
            if (r == 0) {
                int64_t val;
                memcpy(&val, out, 8);
                CHECK(val == 1 || val == 42);
            }
            uint64_t llen;
            CHECK_EQ(shk_dict_llen(&d, &lk, SHK_DWAIT, &llen), 0);
            CHECK(llen <= 3);
            expect_consistent(&d, "after a crash");
            struct shk_dict_stats st;
            shk_dict_stats(&d, &st);
            if (WIFSIGNALED(status)) {
                CHECK_EQ(st.recoveries, 1);
                crashed++;
            }
            /* and it keeps working */
            for (int i = 0; i < 300; i++) {
                mkkey(&k, kb, 3000 + i);
                fill(v, 100, i, 9);
                CHECK_EQ(shk_dict_store(&d, &k, SHK_DV_BYTES, v, 100, 0, 0, SHK_DSET, 0, &ev), 0);
            }
            expect_consistent(&d, "after writes that followed a crash");
            close_zone();
        }
    }
    /* every point is reached by at least one variant */
    CHECK(crashed >= 10 + 2 * 3);
    printf("test_crash_points: %d of 30 writes died inside the lock\n", crashed);
}

static void test_corruption(void)
{
    open_zone(4 << 20);
    struct shk_dict d;
    int created;
    CHECK_EQ(shk_dict_open(&d, &z, "bad", 64 << 10, 1, SHK_DOPEN_CREATE, &created), 0);
    uint32_t ev;
    char kb[32];
    struct shk_dkey k;
    for (int i = 0; i < 100; i++) {
        mkkey(&k, kb, i);
        CHECK_EQ(shk_dict_store(&d, &k, SHK_DV_BYTES, "0123456789", 10, 0, 0, SHK_DSET, 0, &ev), 0);
    }
    /* point every bucket far outside the shard */
    uint32_t *bk = (uint32_t *)d.data0;
    unsigned seed = 99;
    for (int round = 0; round < 200; round++) {
        seed = seed * 1103515245u + 12345u;
        uint32_t b = (seed >> 8) % d.nbuckets;
        uint32_t old = bk[b];
        bk[b] = 0x7fffffffu ^ seed;
        for (int i = 0; i < 100; i++) {
            struct shk_dict_found f;
            uint8_t out[64];
            mkkey(&k, kb, i);
            int r = get_bytes(&d, &k, out, sizeof out, &f);
            CHECK(r == 0 || r == SHK_ECORRUPT || r == SHK_ENOTFOUND);
        }
        bk[b] = old;
    }
    /* scribble over item bytes, then let recovery drop what it must */
    uint8_t *cells = d.data0 + d.cells_off;
    for (int i = 0; i < 64; i++) {
        seed = seed * 1103515245u + 12345u;
        cells[(seed >> 4) % (d.ncells * SHK_DICT_CELL)] ^= (uint8_t)(seed >> 24);
    }
    for (int i = 0; i < 100; i++) {
        struct shk_dict_found f;
        uint8_t out[64];
        mkkey(&k, kb, i);
        int r = get_bytes(&d, &k, out, sizeof out, &f);
        CHECK(r == 0 || r == SHK_ECORRUPT || r == SHK_ENOTFOUND);
        r = shk_dict_store(&d, &k, SHK_DV_BYTES, "abcdefghij", 10, 0, 0, SHK_DSET, 0, &ev);
        CHECK(r == 0 || r == SHK_ECORRUPT);
    }
    CHECK_EQ(shk_dict_lock(&d, 0), 0);
    CHECK_EQ(shk_dict_recover_locked(&d, 0), 0);
    shk_dict_unlock(&d, 0);
    expect_consistent(&d, "after recovering from scribbles");
    for (int i = 0; i < 100; i++) {
        mkkey(&k, kb, i);
        CHECK_EQ(shk_dict_store(&d, &k, SHK_DV_BYTES, "abcdefghij", 10, 0, 0, SHK_DSET, 0, &ev), 0);
    }
    expect_consistent(&d, "after rewriting every key");
    close_zone();
}

/* Two forked writers and a forked reader: every value read carries a valid checksum. */
static void test_processes(void)
{
    open_zone(16 << 20);
    struct shk_dict d;
    int created;
    CHECK_EQ(shk_dict_open(&d, &z, "procs", 256 << 10, 4, SHK_DOPEN_CREATE, &created), 0);
    pid_t kids[3];
    for (int w = 0; w < 3; w++) {
        kids[w] = fork();
        if (kids[w] == 0) {
            unsigned seed = 1 + (unsigned)w * 7919u;
            uint8_t v[600], out[600];
            int bad = 0;
            for (int i = 0; i < 200000; i++) {
                seed = seed * 1103515245u + 12345u;
                int key = (int)((seed >> 8) % 400);
                char kb[32];
                struct shk_dkey k;
                mkkey(&k, kb, key);
                if (w < 2) {
                    size_t len = 8 + (seed >> 20) % 500;
                    fill(v + 8, len - 8, key, i);
                    uint32_t sum = 0;
                    for (size_t j = 8; j < len; j++)
                        sum = sum * 31 + v[j];
                    memcpy(v, &sum, 4);
                    memcpy(v + 4, &key, 4);
                    uint32_t ev;
                    int r = shk_dict_store(&d, &k, SHK_DV_BYTES, v, len, 0, 0, SHK_DSET, 0, &ev);
                    if (r == EBUSY) /* the other writer holds the lock: now wait for it */
                        r = shk_dict_store(&d, &k, SHK_DV_BYTES, v, len, 0, 0,
                                           SHK_DSET | SHK_DWAIT, 0, &ev);
                    if (r)
                        bad++;
                } else {
                    struct shk_dict_found f;
                    int r = SHK_DICT_SLOW;
                    if (i & 1) /* half of the reads by the inline fast path */
                        r = shk_dict_get_fast(&d, &k, out, sizeof out, &f);
                    if (r == SHK_DICT_SLOW) /* a quarter waiting for a busy shard at once */
                        r = shk_dict_get(&d, &k, i & 2 ? SHK_DWAIT : 0, out, sizeof out, &f);
                    if (r == EBUSY)
                        r = shk_dict_get(&d, &k, SHK_DWAIT, out, sizeof out, &f);
                    if (r == 0) {
                        uint32_t sum = 0, want;
                        int kk;
                        for (size_t j = 8; j < f.len; j++)
                            sum = sum * 31 + out[j];
                        memcpy(&want, out, 4);
                        memcpy(&kk, out + 4, 4);
                        if (sum != want || kk != key)
                            bad++;
                    } else if (r != SHK_ENOTFOUND) {
                        bad++;
                    }
                }
            }
            _exit(bad ? 1 : 0);
        }
    }
    for (int w = 0; w < 3; w++) {
        int status;
        waitpid(kids[w], &status, 0);
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    expect_consistent(&d, "after concurrent writers and a reader");
    close_zone();
}

/* Declaring an existing dict again: with SHK_DOPEN_STRICT another capacity or shard count
 * is SHK_EOBJMISMATCH (ObjectMismatchError), the same ones or none attach; without it any
 * existing dict is attached to.  A name that is missing and not to be created is
 * SHK_ENOTFOUND. */
static void test_open_strict(void)
{
    open_zone(4 << 20);
    struct shk_dict d;
    int created;
    const int strict = SHK_DOPEN_CREATE | SHK_DOPEN_STRICT;
    CHECK_EQ(shk_dict_open(&d, &z, "strict", 256 << 10, 2, strict, &created), 0);
    CHECK_EQ(created, 1);
    CHECK_EQ(shk_dict_open(&d, &z, "strict", 512 << 10, 2, strict, &created), SHK_EOBJMISMATCH);
    CHECK(strstr(shk_error_detail(), "exists with capacity 262144 in 2 shards") != NULL);
    CHECK_EQ(shk_dict_open(&d, &z, "strict", 256 << 10, 4, strict, &created), SHK_EOBJMISMATCH);
    CHECK_EQ(shk_dict_open(&d, &z, "strict", 256 << 10, 2, strict, &created), 0);
    CHECK_EQ(created, 0);
    CHECK_EQ(shk_dict_open(&d, &z, "strict", 256 << 10, 0, strict, &created), 0);
    CHECK_EQ(shk_dict_open(&d, &z, "strict", 512 << 10, 4, SHK_DOPEN_CREATE, &created), 0);
    CHECK_EQ(d.hdr->capacity, 256u << 10);
    CHECK_EQ(shk_dict_open(&d, &z, "absent", 0, 0, 0, &created), SHK_ENOTFOUND);
    close_zone();
}

/* The default shard count gives a plan for every capacity, tiny to huge (plans only:
 * nothing is allocated), powers of two, at least one MiB per shard once there is room. */
static void test_default_shards(void)
{
    struct shk_dict_geometry g;
    for (uint64_t cap = 64 << 10; cap <= (8ull << 40); cap = cap * 3 / 2) {
        uint32_t n = shk_dict_default_shards(cap);
        CHECK(n >= 1 && n <= SHK_DICT_MAX_SHARDS && (n & (n - 1)) == 0);
        CHECK_EQ(shk_dict_plan(cap, 0, &g), 0);
        CHECK_EQ(g.nshards, n);
        CHECK(g.cells_per_shard <= (1u << 30));
    }
    /* 300 GiB: more than 8 shards of at most 32 GiB are needed, whatever the CPUs */
    CHECK(shk_dict_default_shards(300ull << 30) >= 16);
}

/* shk_dict_key_fill (specialised for short keys) agrees with the hash of layout.h and
 * with a zero-padded copy of the key, for every length around the special cases. */
static void test_key_fill(void)
{
    uint8_t buf[64];
    unsigned seed = 4242;
    for (int round = 0; round < 200; round++) {
        for (size_t len = 0; len <= 40; len++) {
            for (size_t i = 0; i < len; i++) {
                seed = seed * 1103515245u + 12345u;
                buf[i] = (uint8_t)(seed >> 16);
            }
            for (uint8_t type = SHK_DK_BYTES; type <= SHK_DK_STR; type++) {
                struct shk_dkey k;
                shk_dict_key_fill(&k, type, buf, (uint32_t)len);
                CHECK(k.hash == shk_dict_hash(type, buf, len));
                uint64_t head[2] = {0, 0};
                memcpy(head, buf, len < 16 ? len : 16);
                CHECK(k.head[0] == head[0] && k.head[1] == head[1]);
            }
        }
    }
}

/* The inline fast lookup either answers exactly as shk_dict_get does or defers to it:
 * keys of 0..20 bytes, values of every type and of 0..600 bytes, expiring items, lists
 * and fragmented values, present and absent. */
static void test_fast_path(void)
{
    open_zone(8 << 20);
    struct shk_dict d;
    int created;
    CHECK_EQ(shk_dict_open(&d, &z, "fast", 1 << 20, 2, SHK_DOPEN_CREATE, &created), 0);
    d.clock_ms = 1000000;
    static uint8_t v[4096], a[4096], b[4096];
    unsigned seed = 31337;
    int answered = 0, deferred = 0, fast_sets = 0;
    for (int step = 0; step < 20000; step++) {
        seed = seed * 1103515245u + 12345u;
        char kb[32];
        size_t klen = (seed >> 8) % 21;
        for (size_t i = 0; i < klen; i++)
            kb[i] = (char)('a' + (seed >> (i % 16)) % 7);
        struct shk_dkey k;
        CHECK_EQ(shk_dict_key(&k, (seed >> 30) ? SHK_DK_STR : SHK_DK_BYTES, kb, klen), 0);
        seed = seed * 1103515245u + 12345u;
        int op = (int)((seed >> 8) % 10);
        uint32_t ev;
        if (op < 4) {
            static const uint8_t types[] = {SHK_DV_BYTES, SHK_DV_STR, SHK_DV_INT, SHK_DV_FLOAT,
                                            SHK_DV_TRUE, SHK_DV_NONE, SHK_DV_OBJECT};
            uint8_t vt = types[(seed >> 12) % 7];
            size_t len = vt == SHK_DV_INT || vt == SHK_DV_FLOAT ? 8
                         : vt == SHK_DV_TRUE || vt == SHK_DV_NONE ? 0
                         : (seed >> 16) % 9 == 0 ? (seed >> 4) % 3000 : (seed >> 18) % 100;
            fill(v, len, step, 0);
            uint64_t ttl = (seed >> 20) % 4 == 0 ? 1 + (seed >> 22) % 3 : 0;
            uint32_t flags = (seed >> 24) & 1 ? 0 : seed & 0xffff;
            int r = SHK_DICT_SLOW;
            if (!ttl && !flags) { /* a plain set: the fast in-place update when it applies */
                uint32_t cs = shk_dict_shard_of(&d, &k);
                CHECK_EQ(shk_dict_lock(&d, cs), 0);
                r = shk_dict_set_fast_locked(&d, &k, vt, v, len, SHK_DSET, &ev);
                shk_dict_unlock(&d, cs);
                fast_sets += r == 0;
            }
            if (r == SHK_DICT_SLOW)
                r = shk_dict_store(&d, &k, vt, v, len, flags, ttl, SHK_DSET, 0, &ev);
            CHECK(r == 0 || r == SHK_EFULL);
            if (r == 0) { /* reads back exactly */
                struct shk_dict_found fs;
                CHECK_EQ(shk_dict_get(&d, &k, 0, b, sizeof b, &fs), 0);
                CHECK(fs.vtype == vt && fs.len == len && fs.flags == flags &&
                      memcmp(b, v, len) == 0);
            }
        } else if (op == 4) {
            uint64_t nl;
            int r = shk_dict_push(&d, &k, 1, SHK_DV_BYTES, "x", 1, SHK_DWAIT, &nl, &ev);
            CHECK(r == 0 || r == SHK_ETYPE || r == SHK_EFULL);
        } else if (op == 5) {
            d.clock_ms += 1; /* some items expire */
        } else {
            struct shk_dict_found ff, fs;
            uint32_t cap = (seed >> 12) % 3 == 0 ? (seed >> 14) % 200 : (uint32_t)sizeof a;
            int rf = shk_dict_get_fast(&d, &k, a, cap, &ff);
            int rs = shk_dict_get(&d, &k, 0, b, cap, &fs);
            if (rf == SHK_DICT_SLOW) {
                deferred++;
                continue;
            }
            answered++;
            CHECK_EQ(rf, rs);
            if (rf == 0) {
                CHECK(ff.vtype == fs.vtype && ff.len == fs.len && ff.flags == fs.flags &&
                      ff.version == fs.version && ff.expire == fs.expire && !ff.stale);
                CHECK(memcmp(a, b, ff.len) == 0);
            }
        }
    }
    CHECK(answered > 1000);
    CHECK(deferred > 100);
    CHECK(fast_sets > 100);
    expect_consistent(&d, "after the fast path test");
    close_zone();
}

/* ---- the protocols that moved from the binding into the core ----------------------------- */

/* The binding's shape of a call about the caller's key k of its dict d: made without
 * waiting, and on EBUSY made again once shk_dict_shard_op found the lock free. */
#define TRY_THEN_WAIT(r, call)                                                            \
    do {                                                                                  \
        while (((r) = (call)) == EBUSY && ((r) = wait_shard(&d, &k)) == 0)                \
            ;                                                                             \
    } while (0)

/* x as the dict stores a big int: Python's int.to_bytes(bit_length // 8 + 1, "little",
 * signed=True). */
static size_t big_bytes(__int128 x, uint8_t *out)
{
    unsigned __int128 m = x < 0 ? -(unsigned __int128)x : (unsigned __int128)x;
    size_t bits = 0;
    while (bits < 128 && (m >> bits) != 0)
        bits++;
    size_t n = bits / 8 + 1;
    for (size_t i = 0; i < n; i++)
        out[i] = i < 16 ? (uint8_t)((unsigned __int128)x >> (8 * i)) : (x < 0 ? 0xff : 0);
    return n;
}

/* An incr result (INT or BIGINT of at most 16 bytes) as a 128-bit integer. */
static __int128 int_of(const struct shk_dict_found *f, const uint8_t *buf)
{
    if (f->vtype == SHK_DV_INT) {
        int64_t v;
        memcpy(&v, buf, 8);
        return v;
    }
    unsigned __int128 u = (f->len && (buf[f->len - 1] & 0x80)) ? ~(unsigned __int128)0 : 0;
    for (size_t i = 0; i < f->len && i < 16; i++) {
        u &= ~((unsigned __int128)0xff << (8 * i));
        u |= (unsigned __int128)buf[i] << (8 * i);
    }
    return (__int128)u;
}

/* a (stored as INT when it fits, else BIGINT) + b by incr, against 128-bit arithmetic:
 * the exact sum, stored as INT exactly when it fits an int64, else in Python's bytes. */
static void check_int_sum(struct shk_dict *d, __int128 a, __int128 b)
{
    static const __int128 lo = -((__int128)1 << 63), hi = ((__int128)1 << 63) - 1;
    uint8_t ab[17], bb[17], out[64], want[17];
    int64_t ai = (int64_t)a, bi = (int64_t)b;
    struct shk_dval bv = {SHK_DV_INT, &bi, 8};
    if (b < lo || b > hi)
        bv = (struct shk_dval){SHK_DV_BIGINT, bb, big_bytes(b, bb)};
    struct shk_dkey k;
    CHECK_EQ(shk_dict_key(&k, SHK_DK_STR, "sum", 3), 0);
    uint32_t ev;
    if (a < lo || a > hi)
        CHECK_EQ(shk_dict_store(d, &k, SHK_DV_BIGINT, ab, big_bytes(a, ab), 3, 0, SHK_DSET, 0, &ev),
                 0);
    else
        CHECK_EQ(shk_dict_store(d, &k, SHK_DV_INT, &ai, 8, 3, 0, SHK_DSET, 0, &ev), 0);
    struct shk_dict_found f;
    CHECK_EQ(shk_dict_incr(d, &k, &bv, NULL, 0, 0, out, sizeof out, &f), 0);
    __int128 sum = a + b;
    if (sum >= lo && sum <= hi) {
        CHECK(f.vtype == SHK_DV_INT && f.len == 8);
    } else {
        size_t n = big_bytes(sum, want);
        CHECK(f.vtype == SHK_DV_BIGINT && f.len == n && memcmp(out, want, n) == 0);
    }
    CHECK(int_of(&f, out) == sum);
    /* what is stored is what came back, with the flags kept */
    uint8_t got[64];
    struct shk_dict_found g;
    CHECK_EQ(shk_dict_get(d, &k, 0, got, sizeof got, &g), 0);
    CHECK(g.vtype == f.vtype && g.len == f.len && memcmp(got, out, f.len) == 0 && g.flags == 3);
}

static double incr_float(struct shk_dict *d, const uint8_t *a, size_t alen, double step, int *r)
{
    struct shk_dkey k;
    CHECK_EQ(shk_dict_key(&k, SHK_DK_STR, "fsum", 4), 0);
    uint32_t ev;
    CHECK_EQ(shk_dict_store(d, &k, SHK_DV_BIGINT, a, alen, 0, 0, SHK_DSET, 0, &ev), 0);
    struct shk_dval sv = {SHK_DV_FLOAT, &step, 8};
    uint8_t out[256];
    struct shk_dict_found f;
    double v = -1;
    *r = shk_dict_incr(d, &k, &sv, NULL, 0, 0, out, sizeof out, &f);
    if (*r == 0 && f.vtype == SHK_DV_FLOAT)
        memcpy(&v, out, 8);
    return v;
}

/* incr's arithmetic is Python's: exact ints across the int64 boundary both ways, big
 * ints in Python's bytes, ints converted to float rounded to nearest (ties to even),
 * OverflowError (ERANGE) beyond the largest double; init + step for a missing key; a
 * value that changes type keeps its expiry and flags; ENOBUFS changes nothing. */
static void test_incr_numbers(void)
{
    open_zone(4 << 20);
    struct shk_dict d;
    int created;
    CHECK_EQ(shk_dict_open(&d, &z, "nums", 256 << 10, 1, SHK_DOPEN_CREATE, &created), 0);
    const __int128 p63 = (__int128)1 << 63, p64 = (__int128)1 << 64, p70 = (__int128)1 << 70;
    const __int128 edges[] = {0, 1, -1, p63 - 1, p63, -p63, -p63 - 1, p64, -p64, p64 - 1,
                              p70, -p70, ((__int128)1 << 120) + 12345, -((__int128)1 << 119)};
    const size_t ne = sizeof edges / sizeof edges[0];
    for (size_t i = 0; i < ne; i++)
        for (size_t j = 0; j < ne; j++)
            check_int_sum(&d, edges[i], edges[j]);
    unsigned seed = 2718;
    for (int i = 0; i < 2000; i++) { /* random magnitudes up to 2**100 */
        __int128 ab[2];
        for (int m = 0; m < 2; m++) {
            seed = seed * 1103515245u + 12345u;
            int bits = (int)((seed >> 8) % 100);
            seed = seed * 1103515245u + 12345u;
            __int128 v = ((__int128)seed << 64 | (uint64_t)seed * 0x9e3779b97f4a7c15ull) &
                         (((__int128)1 << bits) - 1);
            ab[m] = (seed >> 30) & 1 ? -v : v;
        }
        check_int_sum(&d, ab[0], ab[1]);
    }
    /* int + float: the int rounded as Python's float() rounds it */
    uint8_t b[200];
    int r;
    double two117 = 0x1p117;
    CHECK(incr_float(&d, b, big_bytes(((__int128)1 << 53 | 1) << 64, b), 0.0, &r) == two117);
    CHECK(incr_float(&d, b, big_bytes((((__int128)1 << 53 | 1) << 64) + 1, b), 0.0, &r) ==
          0x1.0000000000001p+117);
    CHECK(incr_float(&d, b, big_bytes(-(((__int128)1 << 53 | 1) << 64), b), 0.0, &r) == -two117);
    CHECK(incr_float(&d, b, big_bytes(((__int128)1 << 53 | 3) << 64, b), 0.0, &r) ==
          0x1.0000000000002p+117);
    CHECK(incr_float(&d, b, big_bytes(p70, b), 0.5, &r) == 0x1p70);
    /* 2**1024 - 2**970 - 1 (all ones below bit 1024 but bit 970) rounds to the largest
     * double; from 2**1024 - 2**970 on (a tie, to even) it is out of range */
    memset(b, 0xff, 128);
    b[970 / 8] &= (uint8_t)~(1u << (970 % 8));
    b[128] = 0;
    CHECK(incr_float(&d, b, 129, 0.0, &r) == 0x1.fffffffffffffp+1023);
    CHECK_EQ(r, 0);
    memset(b, 0, 128);
    b[970 / 8] = (uint8_t)(1u << (970 % 8));
    uint8_t max_minus[129];
    memset(max_minus, 0xff, 128); /* 2**1024 - 2**970 = (2**54 - 1) * 2**970 */
    memset(max_minus, 0, 970 / 8);
    max_minus[970 / 8] = (uint8_t)(0xff << (970 % 8));
    max_minus[128] = 0;
    incr_float(&d, max_minus, 129, 0.0, &r);
    CHECK_EQ(r, ERANGE);
    uint8_t minus_max[129]; /* -(2**1024 - 2**970): out of range too */
    for (int i = 0, carry = 1; i < 129; i++) {
        int x = (uint8_t)~max_minus[i] + carry;
        minus_max[i] = (uint8_t)x;
        carry = x >> 8;
    }
    incr_float(&d, minus_max, 129, 0.0, &r);
    CHECK_EQ(r, ERANGE);
    /* missing key: init + step (ADD), with its ttl; without init: not found */
    struct shk_dkey k;
    CHECK_EQ(shk_dict_key(&k, SHK_DK_STR, "fresh", 5), 0);
    d.clock_ms = 5000;
    int64_t init_i = 40, step_i = 2;
    double half = 0.5;
    struct shk_dval iv = {SHK_DV_INT, &init_i, 8}, sv = {SHK_DV_INT, &step_i, 8},
                    hv = {SHK_DV_FLOAT, &half, 8};
    struct shk_dict_found f;
    uint8_t out[64];
    CHECK_EQ(shk_dict_incr(&d, &k, &sv, NULL, 0, 0, out, sizeof out, &f), SHK_ENOTFOUND);
    CHECK_EQ(shk_dict_incr(&d, &k, &sv, &iv, 100, 0, out, sizeof out, &f), 0);
    CHECK(f.vtype == SHK_DV_INT && int_of(&f, out) == 42);
    int64_t ms;
    CHECK_EQ(shk_dict_ttl(&d, &k, 0, &ms), 0);
    CHECK_EQ(ms, 100);
    CHECK_EQ(shk_dict_incr(&d, &k, &hv, &iv, 0, 0, out, sizeof out, &f), 0); /* init ignored */
    double dv;
    memcpy(&dv, out, 8);
    CHECK(f.vtype == SHK_DV_FLOAT && dv == 42.5);
    CHECK_EQ(shk_dict_ttl(&d, &k, 0, &ms), 0); /* a new item (float), the same expiry */
    CHECK_EQ(ms, 100);
    d.clock_ms += 100; /* expired: init again */
    CHECK_EQ(shk_dict_incr(&d, &k, &sv, &iv, 0, 0, out, sizeof out, &f), 0);
    CHECK(f.vtype == SHK_DV_INT && int_of(&f, out) == 42);
    /* a big result that does not fit the buffer: ENOBUFS, the value unchanged */
    uint8_t big[40];
    memset(big, 0x11, sizeof big);
    struct shk_dval bigv = {SHK_DV_BIGINT, big, sizeof big};
    CHECK_EQ(shk_dict_incr(&d, &k, &bigv, NULL, 0, 0, out, 16, &f), ENOBUFS);
    CHECK_EQ(f.len, sizeof big + 1);
    CHECK_EQ(shk_dict_get(&d, &k, 0, out, sizeof out, &f), 0);
    CHECK(f.vtype == SHK_DV_INT && int_of(&f, out) == 42);
    /* not numbers */
    uint32_t ev;
    CHECK_EQ(shk_dict_store(&d, &k, SHK_DV_TRUE, "", 0, 0, 0, SHK_DSET, 0, &ev), 0);
    CHECK_EQ(shk_dict_incr(&d, &k, &sv, NULL, 0, 0, out, sizeof out, &f), SHK_ETYPE);
    struct shk_dval bad = {SHK_DV_STR, "1", 1};
    CHECK_EQ(shk_dict_incr(&d, &k, &bad, NULL, 0, 0, out, sizeof out, &f), EINVAL);
    expect_consistent(&d, "after the number tests");
    close_zone();
}

#define NTHREADS 4
#define INCRS 4000

static pthread_barrier_t incr_start;

/* One thread: increments shared by all threads, on its own handle, the binding's way. */
static void *incr_thread(void *arg)
{
    struct shk_dict d;
    int created, r, bad = 0;
    (void)arg;
    if (shk_dict_open(&d, &z, "threads", 0, 0, 0, &created))
        return (void *)1;
    int64_t one_i = 1, minus_i = -1, zero_i = 0, hundred_i = 100;
    double half_f = 0.5, zero_f = 0.0;
    uint8_t p70[10] = {0, 0, 0, 0, 0, 0, 0, 0, 0x40, 0}; /* 2**70 */
    struct shk_dval one = {SHK_DV_INT, &one_i, 8}, minus = {SHK_DV_INT, &minus_i, 8},
                    zero = {SHK_DV_INT, &zero_i, 8}, hundred = {SHK_DV_INT, &hundred_i, 8},
                    half = {SHK_DV_FLOAT, &half_f, 8}, zerof = {SHK_DV_FLOAT, &zero_f, 8},
                    big = {SHK_DV_BIGINT, p70, 9};
    uint8_t out[64];
    struct shk_dict_found f;
    pthread_barrier_wait(&incr_start);
    for (int i = 0; i < INCRS; i++) {
        char kb[32];
        struct shk_dkey k;
        snprintf(kb, sizeof kb, "c%d", i % 4);
        shk_dict_key(&k, SHK_DK_STR, kb, strlen(kb));
        TRY_THEN_WAIT(r, shk_dict_incr(&d, &k, &one, &zero, 0, 0, out, sizeof out, &f));
        bad += r != 0;
        shk_dict_key(&k, SHK_DK_STR, "f", 1);
        TRY_THEN_WAIT(r, shk_dict_incr(&d, &k, &half, &zerof, 0, 0, out, sizeof out, &f));
        bad += r != 0;
        /* across INT64_MAX and back: up for the first half, down for the second */
        shk_dict_key(&k, SHK_DK_STR, "edge", 4);
        TRY_THEN_WAIT(r, shk_dict_incr(&d, &k, i < INCRS / 2 ? &one : &minus, NULL, 0, 0,
                                       out, sizeof out, &f));
        bad += r != 0;
        if (i % 10 == 0) {
            shk_dict_key(&k, SHK_DK_STR, "big", 3);
            TRY_THEN_WAIT(r, shk_dict_incr(&d, &k, &big, &zero, 0, 0, out, sizeof out, &f));
            bad += r != 0;
        }
        if (i % 40 == 0) { /* every thread initialises the same fresh keys at once */
            snprintf(kb, sizeof kb, "init%d", i / 40);
            shk_dict_key(&k, SHK_DK_STR, kb, strlen(kb));
            TRY_THEN_WAIT(r, shk_dict_incr(&d, &k, &one, &hundred, 0, 0, out, sizeof out, &f));
            bad += r != 0;
        }
    }
    shk_dict_publish_counts(&d);
    return (void *)(intptr_t)bad;
}

/* Threads of one process and two forked processes increment the same keys: exact totals,
 * an int64 that crossed INT64_MAX up and back is an int64 again, big ints add exactly,
 * every fresh key is initialised once. */
static void test_incr_threads(void)
{
    open_zone(8 << 20);
    struct shk_dict d;
    int created;
    CHECK_EQ(shk_dict_open(&d, &z, "threads", 1 << 20, 2, SHK_DOPEN_CREATE, &created), 0);
    struct shk_dkey k;
    int64_t start = INT64_MAX - 3;
    uint32_t ev;
    CHECK_EQ(shk_dict_key(&k, SHK_DK_STR, "edge", 4), 0);
    CHECK_EQ(shk_dict_store(&d, &k, SHK_DV_INT, &start, 8, 0, 0, SHK_DSET, 0, &ev), 0);
    pid_t kids[2];
    for (int p = 0; p < 2; p++) {
        kids[p] = fork();
        if (kids[p] == 0) {
            pthread_t th[NTHREADS];
            pthread_barrier_init(&incr_start, NULL, NTHREADS);
            int bad = 0;
            for (int t = 0; t < NTHREADS; t++)
                pthread_create(&th[t], NULL, incr_thread, NULL);
            for (int t = 0; t < NTHREADS; t++) {
                void *rv;
                pthread_join(th[t], &rv);
                bad += (int)(intptr_t)rv;
            }
            _exit(bad ? 1 : 0);
        }
    }
    for (int p = 0; p < 2; p++) {
        int status;
        waitpid(kids[p], &status, 0);
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    const int workers = 2 * NTHREADS;
    uint8_t out[64];
    struct shk_dict_found f;
    for (int c = 0; c < 4; c++) {
        char kb[8];
        snprintf(kb, sizeof kb, "c%d", c & 3);
        CHECK_EQ(shk_dict_key(&k, SHK_DK_STR, kb, strlen(kb)), 0);
        CHECK_EQ(shk_dict_get(&d, &k, 0, out, sizeof out, &f), 0);
        CHECK(f.vtype == SHK_DV_INT && int_of(&f, out) == workers * INCRS / 4);
    }
    double fv;
    CHECK_EQ(shk_dict_key(&k, SHK_DK_STR, "f", 1), 0);
    CHECK_EQ(shk_dict_get(&d, &k, 0, out, sizeof out, &f), 0);
    memcpy(&fv, out, 8);
    CHECK(f.vtype == SHK_DV_FLOAT && fv == workers * INCRS * 0.5);
    CHECK_EQ(shk_dict_key(&k, SHK_DK_STR, "edge", 4), 0);
    CHECK_EQ(shk_dict_get(&d, &k, 0, out, sizeof out, &f), 0);
    CHECK(f.vtype == SHK_DV_INT && int_of(&f, out) == start);
    CHECK_EQ(shk_dict_key(&k, SHK_DK_STR, "big", 3), 0);
    CHECK_EQ(shk_dict_get(&d, &k, 0, out, sizeof out, &f), 0);
    CHECK(f.vtype == SHK_DV_BIGINT && int_of(&f, out) == (__int128)workers * (INCRS / 10) << 70);
    for (int i = 0; i < INCRS / 40; i++) {
        char kb[16];
        snprintf(kb, sizeof kb, "init%d", i);
        CHECK_EQ(shk_dict_key(&k, SHK_DK_STR, kb, strlen(kb)), 0);
        CHECK_EQ(shk_dict_get(&d, &k, 0, out, sizeof out, &f), 0);
        CHECK(f.vtype == SHK_DV_INT && int_of(&f, out) == 100 + workers);
    }
    expect_consistent(&d, "after increments from threads and processes");
    close_zone();
}

/* Records of a packed list (dict.h): element i's type, bytes and length. */
static const uint8_t *packed_elem(const uint8_t *p, uint64_t len, int i, uint8_t *type,
                                  uint32_t *n)
{
    uint64_t pos = 0;
    for (int j = 0; pos + 8 <= len; j++) {
        memcpy(n, p + pos + 4, 4);
        if (j == i) {
            *type = p[pos];
            return p + pos + 8;
        }
        pos += 8 + ((*n + 7ull) & ~7ull);
    }
    return NULL;
}

/* Values handed back through the caller's buffer: ENOBUFS says how much room, changes
 * nothing and is not counted; lists come packed; pop/take/setdefault refuse rather than
 * lose a value; stale reads and peeks; a call with SHK_DWAIT counts in the shared
 * counters, never in the handle. */
static void test_buffers_lists_stale(void)
{
    open_zone(8 << 20);
    struct shk_dict d;
    int created;
    CHECK_EQ(shk_dict_open(&d, &z, "bufs", 1 << 20, 1, SHK_DOPEN_CREATE, &created), 0);
    d.clock_ms = 1000;
    static uint8_t v[100000], out[200000];
    struct shk_dict_found f;
    struct shk_dict_stats st0, st1;
    uint32_t ev;
    char kb[32];
    struct shk_dkey k;
    mkkey(&k, kb, 1);
    fill(v, sizeof v, 1, 0);
    CHECK_EQ(shk_dict_store(&d, &k, SHK_DV_BYTES, v, sizeof v, 0, 0, SHK_DSET, 0, &ev), 0);
    shk_dict_stats(&d, &st0);
    CHECK_EQ(shk_dict_get(&d, &k, 0, out, 16, &f), ENOBUFS);
    CHECK(f.vtype == SHK_DV_BYTES && f.len == sizeof v);
    shk_dict_stats(&d, &st1);
    CHECK_EQ(st1.hits, st0.hits); /* not counted: the caller comes back */
    CHECK_EQ(shk_dict_get(&d, &k, 0, out, f.len, &f), 0);
    CHECK(f.len == sizeof v && memcmp(out, v, sizeof v) == 0);
    shk_dict_stats(&d, &st1);
    CHECK_EQ(st1.hits, st0.hits + 1);
    uint64_t local = d.hits; /* waiting calls count in the shared header, not the handle */
    CHECK_EQ(shk_dict_get(&d, &k, SHK_DWAIT, out, sizeof out, &f), 0);
    CHECK_EQ(d.hits, local);
    shk_dict_stats(&d, &st0);
    CHECK_EQ(st0.hits, st1.hits + 1);
    /* setdefault: present (ENOBUFS first: nothing stored), then absent */
    CHECK_EQ(shk_dict_setdefault(&d, &k, SHK_DV_STR, "d", 1, 0, out, 16, &f), ENOBUFS);
    CHECK_EQ(f.len, sizeof v);
    CHECK_EQ(shk_dict_setdefault(&d, &k, SHK_DV_STR, "d", 1, 0, out, sizeof out, &f), SHK_EEXISTS);
    CHECK(f.vtype == SHK_DV_BYTES && f.len == sizeof v && memcmp(out, v, sizeof v) == 0);
    mkkey(&k, kb, 2);
    CHECK_EQ(shk_dict_setdefault(&d, &k, SHK_DV_STR, "d", 1, 0, out, 16, &f), 0);
    CHECK_EQ(shk_dict_get(&d, &k, 0, out, sizeof out, &f), 0);
    CHECK(f.vtype == SHK_DV_STR && f.len == 1 && out[0] == 'd');
    /* take: ENOBUFS keeps it; with room, hands it over and removes it */
    mkkey(&k, kb, 1);
    CHECK_EQ(shk_dict_take(&d, &k, 0, out, 100, &f), ENOBUFS);
    CHECK_EQ(shk_dict_get(&d, &k, SHK_DPEEK, NULL, 0, &f), 0);
    CHECK_EQ(shk_dict_take(&d, &k, 0, out, sizeof out, &f), 0);
    CHECK(f.len == sizeof v && memcmp(out, v, sizeof v) == 0);
    CHECK_EQ(shk_dict_get(&d, &k, SHK_DPEEK, NULL, 0, &f), SHK_ENOTFOUND);
    /* a list of values of every size: packed, in order */
    mkkey(&k, kb, 3);
    uint64_t n;
    for (int i = 0; i < 12; i++) {
        fill(v, (size_t)i * 700, 3, i);
        CHECK_EQ(shk_dict_push(&d, &k, 1, i % 2 ? SHK_DV_BYTES : SHK_DV_STR, v, (uint64_t)i * 700,
                               0, &n, &ev), 0);
        CHECK_EQ(n, (uint64_t)i + 1);
    }
    CHECK_EQ(shk_dict_get(&d, &k, 0, out, 64, &f), ENOBUFS);
    uint64_t need = f.len;
    CHECK(f.vtype == SHK_DV_LIST && need > 12 * 8);
    CHECK_EQ(shk_dict_get(&d, &k, 0, out, need, &f), 0);
    CHECK(f.vtype == SHK_DV_LIST && f.count == 12 && f.len == need);
    for (int i = 0; i < 12; i++) {
        uint8_t t;
        uint32_t len;
        const uint8_t *p = packed_elem(out, f.len, i, &t, &len);
        fill(v, (size_t)i * 700, 3, i);
        CHECK(p && len == (uint32_t)i * 700 && t == (i % 2 ? SHK_DV_BYTES : SHK_DV_STR) &&
              memcmp(p, v, len) == 0);
    }
    CHECK_EQ(shk_dict_get(&d, &k, SHK_DPEEK, NULL, 0, &f), 0);
    CHECK(f.vtype == SHK_DV_LIST && f.count == 12);
    /* a pop that does not fit takes nothing */
    CHECK_EQ(shk_dict_pop(&d, &k, 1, 0, out, 100, &f), ENOBUFS);
    CHECK_EQ(f.len, 11 * 700);
    CHECK_EQ(shk_dict_llen(&d, &k, 0, &n), 0);
    CHECK_EQ(n, 12);
    CHECK_EQ(shk_dict_pop(&d, &k, 1, 0, out, sizeof out, &f), 0);
    fill(v, 11 * 700, 3, 11);
    CHECK(f.len == 11 * 700 && memcmp(out, v, f.len) == 0);
    /* stale: an expired value and an expired list, until something reclaims them */
    CHECK_EQ(shk_dict_expire(&d, &k, 10, 0), 0);
    mkkey(&k, kb, 4);
    CHECK_EQ(shk_dict_store(&d, &k, SHK_DV_STR, "old", 3, 5, 10, SHK_DSET, 0, &ev), 0);
    d.clock_ms += 10;
    CHECK_EQ(shk_dict_get(&d, &k, 0, out, sizeof out, &f), SHK_ENOTFOUND);
    CHECK_EQ(shk_dict_get(&d, &k, SHK_DPEEK, NULL, 0, &f), SHK_ENOTFOUND);
    CHECK_EQ(shk_dict_get(&d, &k, SHK_DSTALE | SHK_DPEEK, NULL, 0, &f), 0);
    CHECK_EQ(shk_dict_get(&d, &k, SHK_DSTALE, out, sizeof out, &f), 0);
    CHECK(f.stale == 1 && f.flags == 5 && f.len == 3 && memcmp(out, "old", 3) == 0);
    mkkey(&k, kb, 3);
    CHECK_EQ(shk_dict_get(&d, &k, 0, out, sizeof out, &f), SHK_ENOTFOUND);
    CHECK_EQ(shk_dict_get(&d, &k, SHK_DSTALE, out, sizeof out, &f), 0);
    CHECK(f.vtype == SHK_DV_LIST && f.stale == 1 && f.count == 11);
    CHECK_EQ(shk_dict_llen(&d, &k, 0, &n), 0);
    CHECK_EQ(n, 0);
    int64_t ms;
    CHECK_EQ(shk_dict_ttl(&d, &k, 0, &ms), SHK_ENOTFOUND);
    CHECK_EQ(shk_dict_pop(&d, &k, 0, 0, out, sizeof out, &f), SHK_ENOTFOUND); /* reclaims */
    CHECK_EQ(shk_dict_get(&d, &k, SHK_DSTALE, out, sizeof out, &f), SHK_ENOTFOUND);
    expect_consistent(&d, "after the buffer, list and stale tests");
    close_zone();
}

struct frozen {
    struct shk_dict *d;
    struct shk_dkey k;
    int r, done, held, release;
    uint8_t out[64];
    struct shk_dict_found f;
};

/* A writer stuck mid-write: holds shard 0's lock with seq odd until told to finish. */
static void *stuck_writer(void *arg)
{
    struct frozen *fz = arg;
    struct shk_dict_shard *sh = &fz->d->shards[0];
    if (shk_dict_lock(fz->d, 0))
        return (void *)1;
    __atomic_store_n(&sh->seq, sh->seq + 1, __ATOMIC_RELEASE); /* odd */
    __atomic_store_n(&fz->held, 1, __ATOMIC_RELEASE);
    for (int i = 0; i < 3000 && !__atomic_load_n(&fz->release, __ATOMIC_ACQUIRE); i++)
        usleep(10000); /* at most 30 s */
    __atomic_store_n(&sh->seq, sh->seq + 1, __ATOMIC_RELEASE); /* even: the write is done */
    shk_dict_unlock(fz->d, 0);
    return NULL;
}

static void *wait_get(void *arg)
{
    struct frozen *fz = arg;
    fz->r = shk_dict_get(fz->d, &fz->k, SHK_DWAIT, fz->out, sizeof fz->out, &fz->f);
    __atomic_store_n(&fz->done, 1, __ATOMIC_RELEASE);
    return NULL;
}

/* A shard whose writer is stuck mid-write (lock held, seq odd): every call without
 * SHK_DWAIT gives up with EBUSY in bounded time and changes nothing; a call with it waits
 * and answers once the writer is done; a writer that let go of the lock mid-write gets
 * its shard rebuilt by the next caller. */
static void test_busy_shard(void)
{
    open_zone(4 << 20);
    struct shk_dict d;
    int created;
    CHECK_EQ(shk_dict_open(&d, &z, "busy", 64 << 10, 1, SHK_DOPEN_CREATE, &created), 0);
    struct shk_dkey k, lk;
    char kb[32], lkb[32];
    uint32_t ev;
    uint64_t n, used;
    uint32_t nk;
    int64_t five = 5, ms;
    struct shk_dval fivev = {SHK_DV_INT, &five, 8};
    mkkey(&k, kb, 1);
    mkkey(&lk, lkb, 2);
    CHECK_EQ(shk_dict_store(&d, &k, SHK_DV_BYTES, "value", 5, 0, 0, SHK_DSET, 0, &ev), 0);
    CHECK_EQ(shk_dict_push(&d, &lk, 0, SHK_DV_BYTES, "e", 1, 0, &n, &ev), 0);
    struct frozen fz = {.d = &d, .k = k};
    pthread_t holder, waiter;
    CHECK_EQ(pthread_create(&holder, NULL, stuck_writer, &fz), 0);
    for (int i = 0; i < 3000 && !__atomic_load_n(&fz.held, __ATOMIC_ACQUIRE); i++)
        usleep(10000);
    CHECK_EQ(__atomic_load_n(&fz.held, __ATOMIC_ACQUIRE), 1);
    uint8_t out[64], sbuf[256];
    struct shk_dict_found f;
    uint64_t cursor = 0;
    CHECK_EQ(shk_dict_get(&d, &k, 0, out, sizeof out, &f), EBUSY);
    CHECK_EQ(shk_dict_get(&d, &k, SHK_DPEEK, NULL, 0, &f), EBUSY);
    CHECK_EQ(shk_dict_store(&d, &k, SHK_DV_BYTES, "other", 5, 0, 0, SHK_DSET, 0, &ev), EBUSY);
    CHECK_EQ(shk_dict_delete(&d, &k, 0), EBUSY);
    CHECK_EQ(shk_dict_take(&d, &k, 0, out, sizeof out, &f), EBUSY);
    CHECK_EQ(shk_dict_setdefault(&d, &k, SHK_DV_STR, "x", 1, 0, out, sizeof out, &f), EBUSY);
    CHECK_EQ(shk_dict_incr(&d, &k, &fivev, &fivev, 0, 0, out, sizeof out, &f), EBUSY);
    CHECK_EQ(shk_dict_expire(&d, &k, 100, 0), EBUSY);
    CHECK_EQ(shk_dict_ttl(&d, &k, 0, &ms), EBUSY);
    CHECK_EQ(shk_dict_push(&d, &lk, 1, SHK_DV_BYTES, "f", 1, 0, &n, &ev), EBUSY);
    CHECK_EQ(shk_dict_pop(&d, &lk, 1, 0, out, sizeof out, &f), EBUSY);
    CHECK_EQ(shk_dict_llen(&d, &lk, 0, &n), EBUSY);
    CHECK_EQ(shk_dict_count(&d, 0, &n), EBUSY);
    CHECK_EQ(shk_dict_scan(&d, &cursor, 16, 0, sbuf, sizeof sbuf, &used, &nk), EBUSY);
    CHECK_EQ(shk_dict_debug_queue(&d, 0, 0, sbuf, sizeof sbuf, &used, &nk), EBUSY);
    /* a waiting reader answers once the writer is done */
    CHECK_EQ(pthread_create(&waiter, NULL, wait_get, &fz), 0);
    usleep(50000);
    CHECK_EQ(__atomic_load_n(&fz.done, __ATOMIC_ACQUIRE), 0);
    __atomic_store_n(&fz.release, 1, __ATOMIC_RELEASE);
    struct timespec limit;
    clock_gettime(CLOCK_REALTIME, &limit);
    limit.tv_sec += 30;
    void *rv = (void *)1;
    CHECK_EQ(pthread_timedjoin_np(waiter, NULL, &limit), 0);
    CHECK_EQ(pthread_timedjoin_np(holder, &rv, &limit), 0);
    CHECK(rv == NULL);
    CHECK(fz.r == 0 && fz.f.len == 5 && memcmp(fz.out, "value", 5) == 0);
    /* nothing was changed by the calls that gave up */
    CHECK_EQ(shk_dict_get(&d, &k, 0, out, sizeof out, &f), 0);
    CHECK(f.len == 5 && memcmp(out, "value", 5) == 0);
    CHECK_EQ(shk_dict_ttl(&d, &k, 0, &ms), 0);
    CHECK_EQ(ms, -1);
    CHECK_EQ(shk_dict_llen(&d, &lk, 0, &n), 0);
    CHECK_EQ(n, 1);
    /* a writer that let go of the lock with seq odd: the next caller rebuilds the shard */
    struct shk_dict_stats st;
    shk_dict_stats(&d, &st);
    uint64_t rec = st.recoveries;
    CHECK_EQ(shk_dict_lock(&d, 0), 0);
    __atomic_store_n(&d.shards[0].seq, d.shards[0].seq + 1, __ATOMIC_RELEASE);
    shk_dict_unlock(&d, 0);
    CHECK_EQ(shk_dict_get(&d, &k, 0, out, sizeof out, &f), 0);
    CHECK(f.len == 5 && memcmp(out, "value", 5) == 0);
    shk_dict_stats(&d, &st);
    CHECK_EQ(st.recoveries, rec + 1);
    expect_consistent(&d, "after a frozen writer");
    close_zone();
}

/* ---- waiting for a shard's lock: shk_dict_shard_op (wait.h's one shape) -------------- */

struct sleeper {
    struct shk_dict *d;
    int id, r, stored;
    uint64_t woke_ns;
};

/* Waits for shard 0 (deaf to signals: only a wake-up ends its sleep before the 30 s
 * deadline, which the test would see), then stores its key as the binding does. */
static void *shard_sleeper(void *arg)
{
    struct sleeper *sl = arg;
    struct shk_dict_shard_wait sw = {sl->d, 0};
    struct shk_wait w = SHK_WAIT_INIT(mono_ns() + 30000000000u, SHK_WAIT_NOSIGNALS);
    int r = shk_wait_run(&shk_dict_shard_op, &sw, &w);
    sl->woke_ns = mono_ns();
    __atomic_store_n(&sl->r, r, __ATOMIC_RELEASE);
    if (r == 0) {
        struct shk_dict d = *sl->d; /* its own handle, as the binding has one per thread */
        char kb[32];
        struct shk_dkey k;
        uint32_t ev;
        mkkey(&k, kb, 500 + sl->id);
        TRY_THEN_WAIT(r, shk_dict_store(&d, &k, SHK_DV_BYTES, "slept", 5, 0, 0, SHK_DSET, 0, &ev));
        sl->stored = r == 0;
    }
    return NULL;
}

/*
 * The wait for a shard's lock, in wait.h's shape.  With a writer stuck mid-write: a try
 * answers EBUSY, a deadline ETIMEDOUT (not before it), a wait that takes signals returns
 * EINTR on its 100 ms slices, an armed attempt answers EAGAIN with the mutex's robust
 * futex word (holder's tid, FUTEX_WAITERS set) as the asyncio contract needs, and
 * answers 0 once the word changed; three sleepers deaf to signals all wake when the writer
 * finishes (each passes the wake-up on) and then make their calls.  A writer SIGKILLed
 * while stopped mid-write (the crash hook's stop): the sleeping waiter is woken by the
 * kernel, repairs the shard, and the half-done write is not there.
 */
static void test_shard_wait(void)
{
    open_zone(4 << 20);
    struct shk_dict d;
    int created;
    CHECK_EQ(shk_dict_open(&d, &z, "shardwait", 64 << 10, 1, SHK_DOPEN_CREATE, &created), 0);
    struct shk_dkey k;
    char kb[32];
    uint32_t ev;
    mkkey(&k, kb, 1);
    CHECK_EQ(shk_dict_store(&d, &k, SHK_DV_BYTES, "value", 5, 0, 0, SHK_DSET, 0, &ev), 0);
    struct shk_dict_shard_wait sw = {&d, 0};
    uint32_t *word = (uint32_t *)&d.shards[0].lock; /* glibc: the robust futex word first */

    /* free: one attempt says so, and leaves the lock free */
    struct shk_wait w = SHK_WAIT_INIT(SHK_FOREVER, SHK_WAIT_TRY);
    CHECK_EQ(shk_wait_run(&shk_dict_shard_op, &sw, &w), 0);
    CHECK_EQ(__atomic_load_n(word, __ATOMIC_SEQ_CST), 0);
    struct shk_dict_shard_wait bad = {&d, 1};
    w = SHK_WAIT_INIT(SHK_FOREVER, SHK_WAIT_TRY);
    CHECK_EQ(shk_wait_run(&shk_dict_shard_op, &bad, &w), EINVAL);

    struct frozen fz = {.d = &d, .k = k};
    pthread_t holder;
    CHECK_EQ(pthread_create(&holder, NULL, stuck_writer, &fz), 0);
    for (int i = 0; i < 3000 && !__atomic_load_n(&fz.held, __ATOMIC_ACQUIRE); i++)
        usleep(10000);
    CHECK_EQ(__atomic_load_n(&fz.held, __ATOMIC_ACQUIRE), 1);

    w = SHK_WAIT_INIT(SHK_FOREVER, SHK_WAIT_TRY);
    CHECK_EQ(shk_wait_run(&shk_dict_shard_op, &sw, &w), EBUSY);
    uint64_t t0 = mono_ns();
    w = SHK_WAIT_INIT(t0 + 60000000u, SHK_WAIT_NOSIGNALS);
    CHECK_EQ(shk_wait_run(&shk_dict_shard_op, &sw, &w), ETIMEDOUT);
    CHECK(mono_ns() - t0 >= 60000000u);
    /* signal slices: EINTR at least once before a 350 ms deadline, then ETIMEDOUT */
    t0 = mono_ns();
    w = SHK_WAIT_INIT(t0 + 350000000u, 0);
    int r, eintr = 0;
    for (int i = 0; i < 1000 && (r = shk_wait_run(&shk_dict_shard_op, &sw, &w)) == EINTR; i++)
        eintr++;
    CHECK_EQ(r, ETIMEDOUT);
    CHECK(eintr >= 1);
    CHECK(mono_ns() - t0 >= 350000000u);

    /* the asyncio contract: an armed attempt says what to sleep on */
    w = SHK_WAIT_INIT(SHK_FOREVER, SHK_WAIT_ARMED | SHK_WAIT_NOSIGNALS);
    CHECK_EQ(shk_dict_shard_op.attempt(&sw, &w), EAGAIN);
    CHECK_EQ(w.on.kind, SHK_WAITON_FUTEX);
    CHECK(w.on.word == word);
    CHECK((w.on.value & FUTEX_TID_MASK) != 0 && (w.on.value & FUTEX_WAITERS));
    CHECK_EQ(__atomic_load_n(word, __ATOMIC_SEQ_CST), w.on.value);
    shk_wait_disarm(&w);

    /* three sleepers, deaf to signals, all woken when the writer finishes */
    struct sleeper sl[3];
    pthread_t th[3];
    for (int i = 0; i < 3; i++) {
        sl[i] = (struct sleeper){&d, i, -1, 0, 0};
        CHECK_EQ(pthread_create(&th[i], NULL, shard_sleeper, &sl[i]), 0);
    }
    usleep(100000);
    for (int i = 0; i < 3; i++)
        CHECK_EQ(__atomic_load_n(&sl[i].r, __ATOMIC_ACQUIRE), -1);
    uint64_t released = mono_ns();
    __atomic_store_n(&fz.release, 1, __ATOMIC_RELEASE);
    struct timespec limit;
    clock_gettime(CLOCK_REALTIME, &limit);
    limit.tv_sec += 40;
    void *rv = (void *)1;
    CHECK_EQ(pthread_timedjoin_np(holder, &rv, &limit), 0);
    CHECK(rv == NULL);
    for (int i = 0; i < 3; i++) {
        CHECK_EQ(pthread_timedjoin_np(th[i], NULL, &limit), 0);
        CHECK_EQ(sl[i].r, 0);
        CHECK_EQ(sl[i].stored, 1);
        CHECK(sl[i].woke_ns - released < 10000000000u); /* woken, not saved by the deadline */
    }
    /* the word changed since the async attempt: attempt again, the lock is free */
    CHECK(__atomic_load_n(word, __ATOMIC_SEQ_CST) != w.on.value);
    CHECK_EQ(shk_dict_shard_op.attempt(&sw, &w), 0);
    CHECK_EQ(__atomic_load_n(word, __ATOMIC_SEQ_CST), 0);
    uint8_t out[64];
    struct shk_dict_found f;
    for (int i = 0; i < 3; i++) {
        struct shk_dkey sk;
        char skb[32];
        mkkey(&sk, skb, 500 + i);
        CHECK_EQ(shk_dict_get(&d, &sk, 0, out, sizeof out, &f), 0);
        CHECK(f.len == 5 && memcmp(out, "slept", 5) == 0);
    }

    /* a writer stopped mid-write, then SIGKILLed while a waiter sleeps on its lock */
    struct shk_dict_stats st;
    shk_dict_stats(&d, &st);
    uint64_t rec = st.recoveries;
    pid_t pid = fork();
    if (pid == 0) {
        struct shk_dkey nk;
        char nkb[32];
        mkkey(&nk, nkb, 900);
        d.crash_at = SHK_DCRASH_HALF_WRITTEN;
        d.crash_stop = 1;
        shk_dict_store(&d, &nk, SHK_DV_BYTES, "never", 5, 0, 0, SHK_DSET, 0, &ev);
        _exit(3); /* not reached: killed while stopped */
    }
    CHECK(pid > 0);
    int status = 0, stopped = 0;
    for (int i = 0; i < 1000 && !stopped; i++) { /* within 10 s */
        pid_t p = waitpid(pid, &status, WUNTRACED | WNOHANG);
        stopped = p == pid && WIFSTOPPED(status);
        if (!stopped)
            usleep(10000);
    }
    CHECK(stopped);
    CHECK_EQ(shk_dict_get(&d, &k, 0, out, sizeof out, &f), EBUSY); /* held, seq odd */
    struct sleeper waiter = {&d, 9, -1, 0, 0};
    pthread_t wt;
    CHECK_EQ(pthread_create(&wt, NULL, shard_sleeper, &waiter), 0);
    usleep(50000);
    CHECK_EQ(__atomic_load_n(&waiter.r, __ATOMIC_ACQUIRE), -1);
    uint64_t killed = mono_ns();
    kill(pid, SIGKILL);
    CHECK_EQ(waitpid(pid, &status, 0), pid);
    CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    clock_gettime(CLOCK_REALTIME, &limit);
    limit.tv_sec += 40;
    CHECK_EQ(pthread_timedjoin_np(wt, NULL, &limit), 0);
    CHECK_EQ(waiter.r, 0);
    CHECK(waiter.woke_ns - killed < 10000000000u);
    CHECK_EQ(waiter.stored, 1);
    shk_dict_stats(&d, &st);
    CHECK_EQ(st.recoveries, rec + 1);
    struct shk_dkey nk;
    char nkb[32];
    mkkey(&nk, nkb, 900);
    CHECK_EQ(shk_dict_get(&d, &nk, 0, out, sizeof out, &f), SHK_ENOTFOUND);
    CHECK_EQ(shk_dict_get(&d, &k, 0, out, sizeof out, &f), 0);
    CHECK(f.len == 5 && memcmp(out, "value", 5) == 0);
    expect_consistent(&d, "after waits for a shard's lock");
    close_zone();
}

struct grower {
    int stop;
    int rounds;
};

/* Rewrites key 7 with values of growing sizes (each carrying its checksum). */
static void *grow_writer(void *arg)
{
    struct grower *g = arg;
    struct shk_dict d;
    int created;
    if (shk_dict_open(&d, &z, "grow", 0, 0, 0, &created))
        return (void *)1;
    static uint8_t v[60000];
    char kb[32];
    struct shk_dkey k;
    mkkey(&k, kb, 7);
    for (int i = 0; i < 1000000 && !__atomic_load_n(&g->stop, __ATOMIC_ACQUIRE); i++) {
        size_t len = 8 + (size_t)(i % 200) * 250;
        fill(v + 8, len - 8, 7, i);
        uint32_t sum = 0;
        for (size_t j = 8; j < len; j++)
            sum = sum * 31 + v[j];
        memcpy(v, &sum, 4);
        memcpy(v + 4, &len, 4);
        uint32_t ev;
        int r;
        TRY_THEN_WAIT(r, shk_dict_store(&d, &k, SHK_DV_BYTES, v, len, 0, 0, SHK_DSET, 0, &ev));
        if (r)
            return (void *)2;
        __atomic_add_fetch(&g->rounds, 1, __ATOMIC_RELAXED);
    }
    return NULL;
}

/* A reader grows its buffer to what the core says it needs, as the binding does, while a
 * writer keeps changing the value's size: every read ends within a few rounds (the room
 * asked for only grows) with a value that checks out. */
static void test_get_growing_value(void)
{
    open_zone(8 << 20);
    struct shk_dict d;
    int created;
    CHECK_EQ(shk_dict_open(&d, &z, "grow", 1 << 20, 1, SHK_DOPEN_CREATE, &created), 0);
    struct grower g = {0, 0};
    pthread_t th;
    CHECK_EQ(pthread_create(&th, NULL, grow_writer, &g), 0);
    char kb[32];
    struct shk_dkey k;
    mkkey(&k, kb, 7);
    int reads = 0, grown = 0, worst = 0;
    for (int i = 0; i < 1000 && !__atomic_load_n(&g.rounds, __ATOMIC_RELAXED); i++)
        usleep(10000); /* the first value, within 10 s */
    /* 3000 reads while at least 300 writes happen, and until reads have met a value larger
     * than their buffer 100 times (bounded: 2 cores may serialise them; a writer that got
     * no CPU while the reader read the first, small value must not end the test early) */
    for (int i = 0; i < 300000 &&
                    (reads < 3000 || __atomic_load_n(&g.rounds, __ATOMIC_RELAXED) < 300 ||
                     grown <= 100);
         i++) {
        uint8_t stack[64], *buf = stack;
        uint64_t cap = sizeof stack;
        struct shk_dict_found f;
        int r, rounds = 0;
        for (;;) {
            TRY_THEN_WAIT(r, shk_dict_get(&d, &k, 0, buf, cap, &f));
            if (r != ENOBUFS || rounds++ > 100)
                break;
            CHECK(f.len > cap);
            if (buf != stack)
                free(buf);
            buf = malloc(cap = f.len);
            grown++;
        }
        worst = rounds > worst ? rounds : worst;
        CHECK(r == 0 || r == SHK_ENOTFOUND);
        if (r == 0) {
            uint32_t sum = 0, want, len;
            for (size_t j = 8; j < f.len; j++)
                sum = sum * 31 + buf[j];
            memcpy(&want, buf, 4);
            memcpy(&len, buf + 4, 4);
            CHECK(sum == want && len == f.len);
            reads++;
        }
        if (buf != stack)
            free(buf);
    }
    __atomic_store_n(&g.stop, 1, __ATOMIC_RELEASE);
    void *rv;
    CHECK_EQ(pthread_join(th, &rv), 0);
    CHECK(rv == NULL);
    printf("test_get_growing_value: %d reads, %d buffer growths (at most %d in one read), "
           "%d writes\n", reads, grown, worst, __atomic_load_n(&g.rounds, __ATOMIC_RELAXED));
    CHECK(reads > 1000 && grown > 100);
    CHECK(worst <= 100);
    expect_consistent(&d, "after reads of a growing value");
    close_zone();
}

/* The value layout a binding decodes with: numbers and a list's packed elements. */
static void test_value_layout(void)
{
    int64_t i = 0, x = -42;
    double f = 0, y = 2.5;
    CHECK_EQ(shk_dval_number(SHK_DV_INT, &x, 8, &i, &f), 0);
    CHECK_EQ(i, -42);
    CHECK_EQ(shk_dval_number(SHK_DV_FLOAT, &y, 8, &i, &f), 0);
    CHECK(f == 2.5);
    CHECK_EQ(shk_dval_number(SHK_DV_INT, &x, 7, &i, &f), SHK_ECORRUPT);
    /* [b"abc", 7, None] as the core packs them, and a 3-byte tail that is no record */
    uint8_t p[8 + 8 + 8 + 8 + 8 + 3];
    memset(p, 0, sizeof p);
    uint32_t n = 3;
    p[0] = SHK_DV_BYTES;
    memcpy(p + 4, &n, 4);
    memcpy(p + 8, "abc", 3);
    n = 8;
    p[16] = SHK_DV_INT;
    memcpy(p + 20, &n, 4);
    memcpy(p + 24, &x, 8);
    p[32] = SHK_DV_NONE;
    uint64_t pos = 0;
    struct shk_dval e;
    CHECK_EQ(shk_dict_list_next(p, sizeof p, &pos, &e), 1);
    CHECK(e.type == SHK_DV_BYTES && e.len == 3 && !memcmp(e.data, "abc", 3));
    CHECK_EQ(shk_dict_list_next(p, sizeof p, &pos, &e), 1);
    CHECK(e.type == SHK_DV_INT && e.len == 8 && e.data == p + 24);
    CHECK_EQ(shk_dict_list_next(p, sizeof p, &pos, &e), 1);
    CHECK(e.type == SHK_DV_NONE && e.len == 0);
    CHECK_EQ(pos, 40);
    CHECK_EQ(shk_dict_list_next(p, sizeof p, &pos, &e), 0);
    /* a record running past the end, and a list inside a list, are corruption */
    pos = 0;
    CHECK_EQ(shk_dict_list_next(p, 10, &pos, &e), SHK_ECORRUPT);
    p[0] = SHK_DV_LIST;
    CHECK_EQ(shk_dict_list_next(p, sizeof p, &pos, &e), SHK_ECORRUPT);
}

/* The values a caller stores (shk_dval_*), read back as the binding reads them: each type
 * with the bytes layout.h gives it, through a real store and get. */
static void test_value_writers(void)
{
    struct shk_dval_buf b[7];
    int64_t i = 0;
    double f = 0;
    static const uint8_t big[9] = {0, 0, 0, 0, 0, 0, 0, 0x80, 0}; /* 2**63 */
    shk_dval_int(&b[0], -7);
    CHECK(b[0].v.type == SHK_DV_INT && b[0].v.len == 8 && b[0].v.data == &b[0].num.i);
    CHECK_EQ(shk_dval_number(b[0].v.type, b[0].v.data, b[0].v.len, &i, &f), 0);
    CHECK_EQ(i, -7);
    shk_dval_float(&b[1], -0.5);
    CHECK(b[1].v.type == SHK_DV_FLOAT && b[1].v.len == 8 && b[1].v.data == &b[1].num.f);
    CHECK_EQ(shk_dval_number(b[1].v.type, b[1].v.data, b[1].v.len, &i, &f), 0);
    CHECK(f == -0.5);
    shk_dval_bool(&b[2], 1);
    shk_dval_bool(&b[3], 0);
    shk_dval_none(&b[4]);
    CHECK(b[2].v.type == SHK_DV_TRUE && b[3].v.type == SHK_DV_FALSE && b[4].v.type == SHK_DV_NONE);
    CHECK(b[2].v.len == 0 && b[3].v.len == 0 && b[4].v.len == 0 && b[4].v.data != NULL);
    shk_dval_bytes(&b[5], SHK_DV_STR, "h\xc3\xa9", 3);
    CHECK(b[5].v.type == SHK_DV_STR && b[5].v.len == 3);
    /* Python: (2**63).bit_length() == 64 -> 9 bytes; 255 -> 2 (the sign bit); 0 -> 1 */
    CHECK_EQ(shk_dval_bigint_len(64), 9);
    CHECK_EQ(shk_dval_bigint_len(8), 2);
    CHECK_EQ(shk_dval_bigint_len(0), 1);
    shk_dval_bytes(&b[6], SHK_DV_BIGINT, big, shk_dval_bigint_len(64));
    open_zone(4 << 20);
    struct shk_dict d;
    int created;
    CHECK_EQ(shk_dict_open(&d, &z, "writers", 1 << 20, 1, SHK_DOPEN_CREATE, &created), 0);
    for (int n = 0; n < 7; n++) {
        char kb[32];
        struct shk_dkey k;
        struct shk_dict_found fo;
        uint8_t out[64];
        uint32_t evicted;
        mkkey(&k, kb, n);
        CHECK_EQ(shk_dict_store(&d, &k, b[n].v.type, b[n].v.data, b[n].v.len, 0, 0, SHK_DSET, 0,
                                &evicted), 0);
        CHECK_EQ(shk_dict_get(&d, &k, 0, out, sizeof out, &fo), 0);
        CHECK(fo.vtype == b[n].v.type && fo.len == b[n].v.len && !memcmp(out, b[n].v.data, fo.len));
    }
    /* the eviction queue as key records: oldest first, each read once (mark: referenced) */
    uint8_t qbuf[512];
    uint64_t used, pos = 0;
    uint32_t nq;
    CHECK_EQ(shk_dict_debug_queue(&d, 0, SHK_DWAIT, qbuf, sizeof qbuf, &used, &nq), 0);
    CHECK_EQ(nq, 7);
    for (uint32_t n = 0; n < nq; n++) {
        struct shk_dict_keyrec kr;
        char want[32];
        shk_dict_keyrec_next(qbuf, &pos, &kr);
        snprintf(want, sizeof want, "key-%u", n);
        CHECK(kr.type == SHK_DK_STR && kr.mark == 1 && kr.len == strlen(want) &&
              !memcmp(kr.data, want, kr.len));
        CHECK_EQ(pos % 4, 0);
    }
    CHECK_EQ(pos, used);
    /* incr of the stored INT by the FLOAT: a float, as Python adds */
    char kb[32];
    struct shk_dkey k;
    struct shk_dict_found fo;
    uint8_t out[64];
    mkkey(&k, kb, 0);
    CHECK_EQ(shk_dict_incr(&d, &k, &b[1].v, NULL, 0, 0, out, sizeof out, &fo), 0);
    CHECK_EQ(shk_dval_number(fo.vtype, out, fo.len, &i, &f), 0);
    CHECK(fo.vtype == SHK_DV_FLOAT && f == -7.5);
    expect_consistent(&d, "after the value writers");
    close_zone();
}

int main(void)
{
    test_default_shards();
    test_open_strict();
    test_key_fill();
    test_value_layout();
    test_value_writers();
    test_fast_path();
    test_random_model();
    test_eviction();
    test_fragments();
    test_ttl_incr_lists();
    test_crash_points();
    test_corruption();
    test_processes();
    test_incr_numbers();
    test_incr_threads();
    test_buffers_lists_stale();
    test_busy_shard();
    test_shard_wait();
    test_get_growing_value();
    TEST_MAIN_END();
}
