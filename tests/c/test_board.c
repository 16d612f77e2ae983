/* The board core: publication and copies, torn-read stress with threads, pins that the
 * writer respects, a writer killed in the middle of a publication, record reclaim from a
 * dead reader, waits and timeouts, and corrupted headers reported instead of followed.
 * Also the ndarray head checks. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "board.h"
#include "check.h"
#include "futex.h"
#include "ndarray.h"
#include "zone.h"

static struct shk_segment seg;
static struct shk_zone z;

static void open_zone(size_t size)
{
    int status = -1;
    CHECK_EQ(shk_seg_create_anon(&seg, size), 0);
    struct shk_zone_params p = {size, 0, "b", 1};
    CHECK_EQ(shk_zone_try_open(&z, &seg, &p, 0, &status), 0);
    CHECK_EQ(status, SHK_ZONE_MUST_INIT);
    CHECK_EQ(shk_zone_init_done(&z, 1), 0);
}

static struct shk_dirent make_board(const char *name, uint32_t nbuffers, uint64_t capacity)
{
    struct shk_board_params p = {nbuffers, capacity};
    struct shk_dirent e;
    int created = 0;
    int r = shk_zone_obj_get(&z, name, SHK_OBJ_BOARD, shk_board_size(nbuffers, capacity), 0,
                             SHK_O_CREATE, shk_board_init, &p, &e, &created);
    CHECK_EQ(r, 0);
    return e;
}

static void attach(struct shk_board *b, const struct shk_dirent *e)
{
    CHECK_EQ(shk_board_attach(b, &z, e->offset, e->size), 0);
}

/* A value whose bytes all derive from (version, len): any mixture of two values fails. */
static void fill_value(uint8_t *p, uint64_t len, uint64_t seed)
{
    uint64_t x = seed * 0x9E3779B97F4A7C15ull + len;
    for (uint64_t i = 0; i < len; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        p[i] = (uint8_t)x;
    }
}

static int value_ok(const uint8_t *p, uint64_t len, uint64_t seed)
{
    uint64_t x = seed * 0x9E3779B97F4A7C15ull + len;
    for (uint64_t i = 0; i < len; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        if (p[i] != (uint8_t)x)
            return 0;
    }
    return 1;
}

static void test_sizes_and_params(void)
{
    CHECK_EQ(shk_board_size(1, 100), 0);
    CHECK_EQ(shk_board_size(65, 100), 0);
    CHECK_EQ(shk_board_size(3, 0), 0);
    /* header + 3 slots + 1 record, then 3 areas of 128 */
    CHECK_EQ(shk_board_size(3, 100), 320 + 3 * 64 + 64 + 3 * 128);
    struct shk_board_params p = {1, 100};
    struct shk_dirent e;
    int created;
    int r = shk_zone_obj_get(&z, "bad-params", SHK_OBJ_BOARD, 4096, 0, SHK_O_CREATE,
                             shk_board_init, &p, &e, &created);
    CHECK_EQ(r, EINVAL);

    /* shk_board_open: refuses out-of-range parameters before touching the zone, creates
     * with a capacity, and finds the same board without one */
    struct shk_board a, o;
    CHECK_EQ(shk_board_open(&a, &z, "opened", SHK_OBJ_BOARD, 100, 1, &created), EINVAL);
    CHECK(strstr(shk_error_detail(), "buffers") != NULL);
    CHECK(shk_board_open(&a, &z, "opened", SHK_OBJ_BOARD, 0, 3, &created) != 0);
    CHECK_EQ(shk_board_open(&a, &z, "opened", SHK_OBJ_BOARD, 100, 4, &created), 0);
    CHECK(created);
    CHECK_EQ(shk_board_open(&o, &z, "opened", SHK_OBJ_BOARD, 0, 3, &created), 0);
    CHECK(!created);
    CHECK_EQ(o.off, a.off);
    CHECK_EQ(o.nbuffers, 4);
    CHECK_EQ(o.capacity, 100);
    shk_board_detach(&o);
    shk_board_detach(&a);
}

static void test_basic(void)
{
    struct shk_dirent e = make_board("basic", 3, 1000);
    struct shk_board w, r;
    attach(&w, &e);
    attach(&r, &e);
    struct shk_board_value v;
    uint8_t buf[1000], head[16];
    struct shk_board_copy c = {buf, sizeof buf, NULL, 0};

    CHECK_EQ(shk_board_version(&r), 0);
    CHECK_EQ(shk_board_read(&r, 0, &c, &v), SHK_EEMPTY);
    CHECK_EQ(shk_board_peek(&r, &v), SHK_EEMPTY);
    uint64_t ver = 0;
    CHECK_EQ(shk_board_publish(&w, "x", 1, SHK_BOARD_KIND_BYTES, 0, &ver), SHK_ENOTOWNER);

    CHECK_EQ(shk_board_take_writer(&w), 0);
    CHECK(shk_board_is_writer(&w));
    CHECK(!shk_board_is_writer(&r));
    CHECK_EQ(shk_board_take_writer(&r), EBUSY); /* another handle of this process */
    CHECK_EQ(shk_board_publish(&w, "hello", 5, SHK_BOARD_KIND_BYTES, 0, &ver), 0);
    CHECK_EQ(ver, 1);
    CHECK_EQ(shk_board_version(&r), 1);
    CHECK_EQ(shk_board_read(&r, 0, &c, &v), 0);
    CHECK_EQ(v.version, 1);
    CHECK_EQ(v.len, 5);
    CHECK_EQ(v.kind, SHK_BOARD_KIND_BYTES);
    CHECK(memcmp(buf, "hello", 5) == 0);
    CHECK(v.published_ns > 0);
    CHECK_EQ(shk_board_read(&r, 1, &c, &v), SHK_EEMPTY); /* nothing newer than 1 */

    /* too big for the board, too big for the reader's buffer */
    uint8_t big[2000];
    memset(big, 7, sizeof big);
    CHECK_EQ(shk_board_publish(&w, big, 1001, SHK_BOARD_KIND_BYTES, 0, &ver), SHK_ETOOBIG);
    CHECK_EQ(shk_board_publish(&w, big, 1000, SHK_BOARD_KIND_BYTES, 0, &ver), 0);
    CHECK_EQ(ver, 2);
    struct shk_board_copy small = {buf, 10, NULL, 0};
    CHECK_EQ(shk_board_read(&r, 0, &small, &v), ENOBUFS);
    CHECK_EQ(v.len, 1000);

    /* head/body split: payload[0, meta) to head, payload[meta, len) to dst */
    uint8_t payload[100];
    for (int i = 0; i < 100; i++)
        payload[i] = (uint8_t)i;
    CHECK_EQ(shk_board_publish(&w, payload, 100, SHK_BOARD_KIND_USER, 64, &ver), 0);
    struct shk_board_copy split = {buf, 36, head, sizeof head};
    CHECK_EQ(shk_board_read(&r, 0, &split, &v), 0);
    CHECK_EQ(v.meta, 64);
    CHECK_EQ(head[15], 15);
    CHECK_EQ(buf[0], 64);
    CHECK_EQ(buf[35], 99);
    split.cap = 35;
    CHECK_EQ(shk_board_read(&r, 0, &split, &v), ENOBUFS);

    /* two-phase publication; abort publishes nothing */
    void *slot;
    CHECK_EQ(shk_board_begin(&w, &slot), 0);
    CHECK_EQ(shk_board_begin(&w, &slot), EBUSY);
    memcpy(slot, "partial", 7);
    shk_board_abort(&w);
    CHECK_EQ(shk_board_version(&r), 3);
    CHECK_EQ(shk_board_begin(&w, &slot), 0);
    memcpy(slot, "loaned", 6);
    CHECK_EQ(shk_board_commit(&w, 6, SHK_BOARD_KIND_BYTES, 0, &ver), 0);
    CHECK_EQ(ver, 4);
    CHECK_EQ(shk_board_read(&r, 3, &c, &v), 0);
    CHECK(memcmp(buf, "loaned", 6) == 0);
    CHECK(shk_board_intact(&r, 4));
    CHECK(!shk_board_intact(&r, 99));

    /* hand the writer role over */
    CHECK_EQ(shk_board_release_writer(&w), 0);
    CHECK(!shk_board_is_writer(&w));
    CHECK_EQ(shk_board_take_writer(&r), 0);
    CHECK_EQ(shk_board_publish(&w, "x", 1, SHK_BOARD_KIND_BYTES, 0, &ver), SHK_ENOTOWNER);
    CHECK_EQ(shk_board_publish(&r, "y", 1, SHK_BOARD_KIND_BYTES, 0, &ver), 0);
    CHECK_EQ(ver, 5);
    struct shk_board_stats st;
    CHECK_EQ(shk_board_stats(&r, &st), 0);
    CHECK_EQ(st.version, 5);
    CHECK_EQ(st.takeovers, 0);
    CHECK_EQ(st.writer_pid, getpid());
    CHECK(st.writer_alive);
    /* the handle's own part: r is the writer, w no longer; neither has waited yet */
    CHECK(st.is_writer);
    CHECK_EQ(st.spin_budget_ns, 0);
    CHECK_EQ(st.copies, r.copies);
    CHECK_EQ(shk_board_stats(&w, &st), 0);
    CHECK(!st.is_writer);
    CHECK_EQ(st.writer_pid, getpid());
    /* the field table names every field once, each inside the record */
    int nfields = 0;
    for (const struct shk_field *f = shk_board_stats_fields; f->name; f++, nfields++)
        CHECK(f->off < sizeof st);
    CHECK_EQ(nfields, 21);
    shk_board_detach(&w);
    shk_board_detach(&r);
}

/* --- torn-read stress ---------------------------------------------------------------- */

#define STRESS_CAP 65536
static struct shk_dirent stress_e;
static volatile int stress_stop;
static uint64_t stress_retries;

static void *stress_writer(void *arg)
{
    struct shk_board w;
    attach(&w, &stress_e);
    CHECK_EQ(shk_board_take_writer(&w), 0);
    uint64_t n = 0;
    while (!stress_stop) {
        void *buf;
        if (shk_board_begin(&w, &buf) != 0) {
            CHECK(!"begin failed");
            break;
        }
        uint64_t len = 1 + (n * 7919) % STRESS_CAP;
        uint64_t ver = shk_board_version(&w) + 1;
        fill_value(buf, len, ver);
        CHECK_EQ(shk_board_commit(&w, len, SHK_BOARD_KIND_BYTES, 0, NULL), 0);
        n++;
    }
    *(uint64_t *)arg = n;
    shk_board_detach(&w);
    return NULL;
}

struct reader_result {
    int pinning;
    uint64_t seen, bad, last;
};

static void *stress_reader(void *arg)
{
    struct reader_result *res = arg;
    struct shk_board r;
    attach(&r, &stress_e);
    static __thread uint8_t buf[STRESS_CAP];
    uint64_t after = 0;
    while (!stress_stop) {
        struct shk_board_value v;
        if (res->pinning) {
            const uint8_t *p;
            int rc = shk_board_pin(&r, after, &v, &p);
            if (rc == SHK_EEMPTY)
                continue;
            CHECK_EQ(rc, 0);
            /* a pinned value stays intact however long we look at it */
            for (int pass = 0; pass < 3; pass++)
                if (!value_ok(p, v.len, v.version))
                    res->bad++;
        } else {
            struct shk_board_copy c = {buf, sizeof buf, NULL, 0};
            int rc = shk_board_read(&r, after, &c, &v);
            if (rc == SHK_EEMPTY)
                continue;
            CHECK_EQ(rc, 0);
            if (!value_ok(buf, v.len, v.version))
                res->bad++;
        }
        if (v.version <= after)
            res->bad++; /* versions must grow */
        after = v.version;
        res->seen++;
    }
    res->last = after;
    __atomic_fetch_add(&stress_retries, r.retries, __ATOMIC_RELAXED);
    shk_board_detach(&r);
    return NULL;
}

/* Readers verify every value they copy (or pin) while the writer publishes as fast as it
 * can. With 2 buffers the writer rewrites the slot a copier is reading after a single
 * publication: torn copies happen all the time and must all be caught by the seqlock. */
static void stress(const char *name, uint32_t nbuffers, int pinning, double seconds)
{
    stress_e = make_board(name, nbuffers, STRESS_CAP);
    stress_stop = 0;
    stress_retries = 0;
    pthread_t wt, rt[4];
    struct reader_result res[4];
    memset(res, 0, sizeof res);
    res[3].pinning = pinning;
    int nreaders = pinning ? 4 : 3;
    uint64_t published = 0;
    pthread_create(&wt, NULL, stress_writer, &published);
    for (int i = 0; i < nreaders; i++)
        pthread_create(&rt[i], NULL, stress_reader, &res[i]);
    uint64_t t_end = shk_now_ns() + (uint64_t)(seconds * 1e9);
    while (shk_now_ns() < t_end)
        usleep(10000);
    stress_stop = 1;
    pthread_join(wt, NULL);
    for (int i = 0; i < nreaders; i++) {
        pthread_join(rt[i], NULL);
        CHECK_EQ(res[i].bad, 0);
        CHECK(res[i].seen > 10);
    }
    CHECK(published > 100);
    printf("  stress %u buffers: %llu published, %llu torn copies retried; readers saw %llu "
           "%llu %llu, %llu pinned\n", nbuffers, (unsigned long long)published,
           (unsigned long long)stress_retries, (unsigned long long)res[0].seen,
           (unsigned long long)res[1].seen, (unsigned long long)res[2].seen,
           (unsigned long long)res[3].seen);
}

static void test_stress(void)
{
    stress("stress2", 2, 0, 1.0);
    stress("stress4", 4, 1, 1.0);
}

/* --- pins ---------------------------------------------------------------------------- */

static void test_pins(void)
{
    struct shk_dirent e = make_board("pins", 4, 64); /* 2 zero-copy readers */
    struct shk_board w, r1, r2, r3;
    attach(&w, &e);
    attach(&r1, &e);
    attach(&r2, &e);
    attach(&r3, &e);
    CHECK_EQ(shk_board_take_writer(&w), 0);
    uint64_t ver;
    char msg[64];
    snprintf(msg, sizeof msg, "value %d", 1);
    CHECK_EQ(shk_board_publish(&w, msg, strlen(msg) + 1, 1, 0, &ver), 0);
    struct shk_board_value v1, v2, v;
    const uint8_t *p1, *p2, *p;
    CHECK_EQ(shk_board_pin(&r1, 0, &v1, &p1), 0);
    CHECK_EQ(v1.version, 1);
    CHECK_EQ(shk_board_pin(&r1, 1, &v, &p), SHK_EEMPTY); /* nothing newer: pin kept */
    CHECK_EQ(shk_board_pinned(&r1) >> SHK_BOARD_SLOT_BITS, 1);
    snprintf(msg, sizeof msg, "value %d", 2);
    CHECK_EQ(shk_board_publish(&w, msg, strlen(msg) + 1, 1, 0, &ver), 0);
    CHECK_EQ(shk_board_pin(&r2, 0, &v2, &p2), 0);
    CHECK_EQ(v2.version, 2);
    CHECK_EQ(shk_board_pin(&r3, 0, &v, &p), EBUSY); /* both records taken */
    /* the writer goes on for a long time and never touches the pinned slots */
    for (int i = 3; i < 1000; i++) {
        snprintf(msg, sizeof msg, "value %d", i);
        CHECK_EQ(shk_board_publish(&w, msg, strlen(msg) + 1, 1, 0, &ver), 0);
    }
    CHECK(strcmp((const char *)p1, "value 1") == 0);
    CHECK(strcmp((const char *)p2, "value 2") == 0);
    CHECK(shk_board_intact(&r1, 1));
    struct shk_board_stats st;
    shk_board_stats(&w, &st);
    CHECK(st.pinned_skips > 0);
    CHECK_EQ(st.readers_in_use, 2);
    /* re-pinning releases the old pin; unpin and detach free things */
    CHECK_EQ(shk_board_pin(&r1, 1, &v, &p), 0);
    CHECK_EQ(v.version, 999);
    for (int i = 0; i < 10; i++)
        CHECK_EQ(shk_board_publish(&w, "z", 2, 1, 0, &ver), 0);
    CHECK(!shk_board_intact(&w, 1)); /* slot of version 1 was reused */
    shk_board_unpin(&r2, 0);
    shk_board_detach(&r2);
    CHECK_EQ(shk_board_pin(&r3, 0, &v, &p), 0);
    CHECK_EQ(v.version, 1009);

    /* a reader that dies holding a record: its record is reclaimed */
    shk_board_detach(&r1);
    shk_board_detach(&r3);
    struct shk_board a, bb;
    attach(&a, &e);
    attach(&bb, &e);
    CHECK_EQ(shk_board_pin(&a, 0, &v, &p), 0);
    pid_t child = fork();
    if (child == 0) {
        struct shk_board c;
        shk_board_attach(&c, &z, e.offset, e.size);
        _exit(shk_board_pin(&c, 0, &v, &p) == 0 ? 0 : 1); /* dies with its pin */
    }
    int status;
    waitpid(child, &status, 0);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    shk_board_stats(&w, &st);
    CHECK_EQ(st.readers_in_use, 2);
    uint64_t reclaimed = st.reclaimed;
    CHECK_EQ(shk_board_pin(&bb, 0, &v, &p), 0);
    shk_board_stats(&w, &st);
    CHECK_EQ(st.reclaimed, reclaimed + 1);
    shk_board_detach(&a);
    shk_board_detach(&bb);
    shk_board_detach(&w);

    /* a board of 2 buffers has no zero-copy readers */
    struct shk_dirent e2 = make_board("pins2", 2, 64);
    struct shk_board r4;
    attach(&r4, &e2);
    CHECK_EQ(shk_board_pin(&r4, 0, &v, &p), EBUSY);
    shk_board_detach(&r4);
}

/* --- large values are copied from a pinned slot ------------------------------------------ */

static void test_large_copies(void)
{
    const uint64_t big = 3 << 20;
    struct shk_dirent e = make_board("large", 3, big);
    struct shk_board w, r;
    attach(&w, &e);
    attach(&r, &e);
    CHECK_EQ(shk_board_take_writer(&w), 0);
    uint8_t *src = malloc(big), *dst = malloc(big);
    fill_value(src, big, 1);
    CHECK_EQ(shk_board_publish(&w, src, big, 1, 0, NULL), 0);
    struct shk_board_copy c = {dst, big, NULL, 0};
    struct shk_board_value v;
    CHECK_EQ(shk_board_read(&r, 0, &c, &v), 0);
    CHECK(value_ok(dst, big, 1));
    struct shk_board_stats st;
    shk_board_stats(&w, &st);
    CHECK_EQ(st.readers_in_use, 0); /* the record was given back */
    CHECK_EQ(shk_board_pinned(&r), 0);
    CHECK_EQ(r.pins, 1);             /* it did pin */
    CHECK_EQ(r.fallbacks, 0);        /* by policy, not because it was lapped */
    /* a handle holding a view keeps it: its large copies use the seqlock */
    const uint8_t *p;
    CHECK_EQ(shk_board_pin(&r, 0, &v, &p), 0);
    fill_value(src, big, 2);
    CHECK_EQ(shk_board_publish(&w, src, big, 1, 0, NULL), 0);
    CHECK_EQ(shk_board_read(&r, 1, &c, &v), 0);
    CHECK(value_ok(dst, big, 2));
    CHECK(value_ok(p, big, 1)); /* the view is untouched */
    CHECK_EQ(shk_board_pinned(&r) >> SHK_BOARD_SLOT_BITS, 1);
    shk_board_detach(&r);
    shk_board_detach(&w);
    free(src);
    free(dst);
}

/* --- writer killed mid-publication ------------------------------------------------------ */

static void test_writer_death(void)
{
    struct shk_dirent e = make_board("death", 3, 4096);
    struct shk_board r;
    attach(&r, &e);
    pid_t child = fork();
    if (child == 0) {
        struct shk_board w;
        if (shk_board_attach(&w, &z, e.offset, e.size) || shk_board_take_writer(&w))
            _exit(2);
        uint8_t buf[4096];
        for (uint64_t v = 1; v <= 5; v++) {
            fill_value(buf, 4096, v);
            shk_board_publish(&w, buf, 4096, 1, 0, NULL);
        }
        void *slot;
        shk_board_begin(&w, &slot);
        memset(slot, 0xAB, 2000); /* half-written when it dies */
        kill(getpid(), SIGKILL);
        _exit(3);
    }
    int status;
    waitpid(child, &status, 0);
    CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    uint8_t buf[4096];
    struct shk_board_copy c = {buf, sizeof buf, NULL, 0};
    struct shk_board_value v;
    CHECK_EQ(shk_board_read(&r, 0, &c, &v), 0);
    CHECK_EQ(v.version, 5);
    CHECK(value_ok(buf, v.len, 5)); /* the last complete value */
    pid_t pid;
    int alive;
    shk_board_writer(&r, &pid, &alive);
    CHECK_EQ(pid, child);
    CHECK(!alive);
    /* a new writer takes over and continues the versions */
    CHECK_EQ(shk_board_take_writer(&r), 0);
    for (int i = 0; i < 6; i++) { /* every slot gets rewritten, the half-written one too */
        uint64_t ver;
        uint64_t next = shk_board_version(&r) + 1;
        fill_value(buf, 100, next);
        CHECK_EQ(shk_board_publish(&r, buf, 100, 1, 0, &ver), 0);
        CHECK_EQ(ver, next);
        CHECK_EQ(shk_board_read(&r, ver - 1, &c, &v), 0);
        CHECK(value_ok(buf, v.len, ver));
    }
    struct shk_board_stats st;
    shk_board_stats(&r, &st);
    CHECK_EQ(st.takeovers, 1);
    CHECK_EQ(st.version, 11);
    shk_board_detach(&r);
}

/* --- waiting ---------------------------------------------------------------------------- */

static struct shk_dirent wait_e;

/* shk_board_wait as the binding calls it: again after EINTR (a signal or a slice's end) */
static int wait_for(struct shk_board *b, uint64_t after, const struct timespec *dl,
                    uint64_t spin)
{
    int r;
    struct shk_wait w = SHK_WAIT_INIT(shk_wait_deadline(dl), 0);
    while ((r = shk_board_wait(b, after, spin, &w)) == EINTR)
        ;
    return r;
}

static void *late_writer(void *arg)
{
    struct shk_board w;
    attach(&w, &wait_e);
    shk_board_take_writer(&w);
    usleep(50000);
    shk_board_publish(&w, "late", 4, 1, 0, NULL);
    shk_board_detach(&w);
    return NULL;
}

static void test_wait(void)
{
    wait_e = make_board("wait", 3, 64);
    struct shk_board r;
    attach(&r, &wait_e);
    struct timespec dl;
    shk_deadline_after(&dl, 0.05);
    uint64_t t0 = shk_now_ns();
    CHECK_EQ(wait_for(&r, 0, &dl, 20000), ETIMEDOUT);
    CHECK(shk_now_ns() - t0 >= 40000000ull);
    pthread_t t;
    pthread_create(&t, NULL, late_writer, NULL);
    shk_deadline_after(&dl, 10);
    CHECK_EQ(wait_for(&r, 0, &dl, 0), 0); /* a reader that started before the value */
    CHECK_EQ(shk_board_version(&r), 1);
    CHECK_EQ(wait_for(&r, 0, &dl, 0), 0); /* already newer: returns at once */
    pthread_join(t, NULL);
    struct shk_board_stats st;
    shk_board_stats(&r, &st);
    CHECK_EQ(st.waiters, 0);
    shk_board_detach(&r);
}

/* --- corruption --------------------------------------------------------------------------- */

static void test_corruption(void)
{
    struct shk_dirent e = make_board("corrupt", 3, 64);
    struct shk_board w, r;
    attach(&w, &e);
    shk_board_take_writer(&w);
    shk_board_publish(&w, "ok", 2, 1, 0, NULL);
    struct shk_board_header *h = (struct shk_board_header *)(z.base + e.offset);
    uint8_t buf[64];
    struct shk_board_copy c = {buf, sizeof buf, NULL, 0};
    struct shk_board_value v;

    uint64_t saved = h->latest;
    h->latest = (saved & ~SHK_BOARD_SLOT_MASK) | 40; /* slot 40 of 3 */
    attach(&r, &e);
    CHECK_EQ(shk_board_read(&r, 0, &c, &v), SHK_ECORRUPT);
    const uint8_t *p;
    CHECK_EQ(shk_board_pin(&r, 0, &v, &p), SHK_ECORRUPT);
    h->latest = saved;
    struct shk_board_slot *s = (struct shk_board_slot *)((uint8_t *)h + SHK_BOARD_HEADER_SIZE);
    uint32_t idx = (uint32_t)(saved & SHK_BOARD_SLOT_MASK);
    uint64_t len = s[idx].len;
    s[idx].len = 1 << 20; /* longer than the board */
    CHECK_EQ(shk_board_read(&r, 0, &c, &v), SHK_ECORRUPT);
    s[idx].len = len;
    CHECK_EQ(shk_board_read(&r, 0, &c, &v), 0);
    shk_board_detach(&r);

    h->stride = 7;
    CHECK_EQ(shk_board_attach(&r, &z, e.offset, e.size), SHK_ECORRUPT);
    h->stride = 64;
    h->magic = 0;
    CHECK_EQ(shk_board_attach(&r, &z, e.offset, e.size), SHK_ECORRUPT);
    h->magic = SHK_BOARD_MAGIC;
    CHECK_EQ(shk_board_attach(&r, &z, e.offset, 100), SHK_ECORRUPT); /* allocation too small */
    shk_board_detach(&w);
}

/* --- ndarray heads --------------------------------------------------------------------------- */

static void test_ndarray(void)
{
    struct shk_ndarray_head want;
    memset(&want, 0, sizeof want);
    want.magic = SHK_NDARRAY_MAGIC;
    want.ndim = 2;
    want.data_off = SHK_NDARRAY_HEAD_SIZE;
    want.itemsize = 8;
    want.shape[0] = 3;
    want.shape[1] = 4;
    want.nbytes = 96;
    strcpy(want.descr, "'<f8'");
    struct shk_dirent e;
    struct shk_ndarray_head got;
    int created;
    uint8_t *data = NULL;
    CHECK_EQ(shk_ndarray_open(&z, "arr", NULL, &e, &created, &got, &data), SHK_ENOTFOUND);
    CHECK_EQ(shk_ndarray_open(&z, "arr", &want, &e, &created, &got, &data), 0);
    CHECK(created);
    CHECK_EQ(got.nbytes, 96);
    CHECK_EQ(e.size, SHK_NDARRAY_HEAD_SIZE + 96);
    /* the elements: after the head, zeroed, and what a second open finds */
    CHECK(data == z.base + e.offset + SHK_NDARRAY_HEAD_SIZE);
    for (int i = 0; i < 96; i++)
        CHECK_EQ(data[i], 0);
    data[95] = 7;
    data = NULL;
    CHECK_EQ(shk_ndarray_open(&z, "arr", NULL, &e, &created, &got, &data), 0);
    CHECK(!created);
    CHECK_EQ(got.shape[1], 4);
    CHECK(data == z.base + e.offset + SHK_NDARRAY_HEAD_SIZE && data[95] == 7);
    CHECK_EQ(shk_ndarray_open(&z, "basic", NULL, &e, &created, &got, &data), SHK_ETYPE);

    struct shk_ndarray_head bad = want;
    bad.nbytes = 95;
    CHECK_EQ(shk_ndarray_open(&z, "arr2", &bad, &e, &created, &got, &data), EINVAL);
    bad = want;
    bad.ndim = 33;
    CHECK_EQ(shk_ndarray_check(&bad, 0, 1), EINVAL);
    bad = want;
    bad.shape[0] = UINT64_MAX / 2;
    CHECK_EQ(shk_ndarray_check(&bad, 0, 1), EINVAL);
    bad = want;
    memset(bad.descr, 'x', sizeof bad.descr);
    CHECK_EQ(shk_ndarray_check(&bad, 0, 1), EINVAL);
    /* a head in the zone that was overwritten afterwards */
    CHECK_EQ(shk_ndarray_open(&z, "arr", NULL, &e, &created, &got, &data), 0);
    struct shk_ndarray_head *in_zone = (struct shk_ndarray_head *)(z.base + e.offset);
    in_zone->shape[0] = 1000;
    CHECK_EQ(shk_ndarray_open(&z, "arr", NULL, &e, &created, &got, &data), SHK_ECORRUPT);
    in_zone->shape[0] = 3;
}

int main(void)
{
    open_zone(16 << 20);
    test_sizes_and_params();
    test_basic();
    test_pins();
    test_large_copies();
    test_writer_death();
    test_wait();
    test_corruption();
    test_ndarray();
    test_stress();
    char report[4096];
    CHECK_EQ(shk_zone_check(&z, report, sizeof report), 0);
    TEST_MAIN_END();
}
