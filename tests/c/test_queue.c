/* The queue core: round trips and wrap-around, full/empty/closed/oversize, message
 * limits, 2x2 threads with per-producer order and exactly-once delivery, fork()ed
 * producers and consumers SIGKILLed at each crash point (the queue repairs and goes
 * on, drops are counted), zero-copy reservations returning their memory; the waits in
 * the wait.h shape (results, registration undone on every path, wake-ups, a cancel word,
 * the asyncio contract for a get with futex_waitv), and a corruption fuzz: every shared
 * position, length and count overwritten at random, every operation must end (with
 * SHK_ECORRUPT or not) within its deadline, under ASan/UBSan. */
#include <errno.h>
#include <linux/futex.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "futex.h"
#include "queue.h"

static struct shk_segment seg;
static struct shk_zone z;

static void open_zone(size_t size)
{
    int status = -1;
    CHECK_EQ(shk_seg_create_anon(&seg, size), 0);
    struct shk_zone_params p = {size, 0, "q", 1};
    CHECK_EQ(shk_zone_try_open(&z, &seg, &p, 0, &status), 0);
    CHECK_EQ(status, SHK_ZONE_MUST_INIT);
    CHECK_EQ(shk_zone_init_done(&z, 1), 0);
}

static int put1(struct shk_queue *q, const void *p, uint64_t n)
{
    struct shk_qpart part = {p, n};
    return shk_queue_put(q, &part, 1, SHK_QK_DATA);
}

/* Wait as the binding does (shk_queue_wait_op) until a retry may succeed; deadline NULL:
 * none.  0, or what the wait gives up with. */
static int wait_ready(struct shk_queue *q, int what, uint64_t need, const struct timespec *dl)
{
    struct shk_queue_waiter qw = {.q = q, .what = what, .need = need};
    struct shk_wait w = SHK_WAIT_INIT(shk_wait_deadline(dl), SHK_WAIT_NOSIGNALS);
    return shk_wait_run(&shk_queue_wait_op, &qw, &w);
}

/* Take one message into buf; returns its length or -code. */
static long get1(struct shk_queue *q, void *buf, size_t cap)
{
    struct shk_qmsg m;
    struct shk_qtake t;
    int r = shk_queue_take(q, &m, 1, UINT64_MAX, &t);
    if (r)
        return r > 0 ? -r : r;
    CHECK(m.len <= cap);
    shk_queue_read(q, m.pos, 0, buf, m.len);
    shk_queue_finish(q, &t);
    return (long)m.len;
}

static void test_basics(void)
{
    struct shk_queue q;
    int created;
    CHECK_EQ(shk_queue_open(&z, "basic", 4096, 0, SHK_O_CREATE, &q, &created), 0);
    CHECK_EQ(created, 1);
    char buf[4096];
    CHECK_EQ(get1(&q, buf, sizeof buf), SHK_EEMPTY);
    /* wrap around many times with sizes that do not divide the ring */
    unsigned seed = 7;
    for (int i = 0; i < 20000; i++) {
        seed = seed * 1103515245u + 12345u;
        uint64_t n = (seed >> 16) % 700;
        for (uint64_t k = 0; k < n; k++)
            buf[k] = (char)(i + k);
        CHECK_EQ(put1(&q, buf, n), 0);
        char out[4096];
        long got = get1(&q, out, sizeof out);
        CHECK_EQ(got, (long)n);
        for (uint64_t k = 0; k < n; k++)
            if (out[k] != (char)(i + k)) {
                CHECK(!"payload differs");
                break;
            }
    }
    /* fill until full; everything comes back in order */
    int nput = 0;
    for (;;) {
        int v = nput;
        int r = put1(&q, &v, sizeof v);
        if (r == SHK_EFULLQ)
            break;
        CHECK_EQ(r, 0);
        nput++;
    }
    CHECK_EQ(nput, 4096 / 32);
    CHECK_EQ(shk_queue_depth(&q), (uint64_t)nput);
    CHECK(shk_queue_is_full(&q, 4));
    for (int i = 0; i < nput; i++) {
        int v = -1;
        CHECK_EQ(get1(&q, &v, sizeof v), (long)sizeof v);
        CHECK_EQ(v, i);
    }
    CHECK_EQ(shk_queue_depth(&q), 0);
    /* oversize never fits; the largest message does */
    static char big[4096];
    CHECK_EQ(put1(&q, big, 4096 - 16 + 1), SHK_ETOOBIG);
    CHECK_EQ(put1(&q, big, 4096 - 16), 0);
    CHECK_EQ(get1(&q, buf, sizeof buf), 4096 - 16);
    /* batches */
    struct shk_qpart parts[300];
    int vals[300];
    for (int i = 0; i < 300; i++) {
        vals[i] = i;
        parts[i].p = &vals[i];
        parts[i].n = sizeof(int);
    }
    size_t done = 0;
    CHECK_EQ(shk_queue_put_many(&q, parts, 300, &done), 0);
    CHECK_EQ(done, 128); /* 4096 / 32 */
    struct shk_qmsg ms[300];
    struct shk_qtake t;
    CHECK_EQ(shk_queue_take(&q, ms, 300, UINT64_MAX, &t), 0);
    CHECK_EQ(t.n, 128);
    for (size_t i = 0; i < t.n; i++) {
        int v;
        shk_queue_read(&q, ms[i].pos, 0, &v, sizeof v);
        CHECK_EQ(v, (int)i);
    }
    shk_queue_finish(&q, &t);
    CHECK_EQ(shk_queue_bytes_used(&q), 0);
    /* max_bytes stops a batch (the first message always comes) */
    CHECK_EQ(shk_queue_put_many(&q, parts, 10, &done), 0);
    CHECK_EQ(shk_queue_take(&q, ms, 300, 9, &t), 0);
    CHECK_EQ(t.n, 2);
    shk_queue_finish(&q, &t);
    CHECK_EQ(shk_queue_take(&q, ms, 300, 1, &t), 0);
    CHECK_EQ(t.n, 1);
    shk_queue_finish(&q, &t);
    CHECK_EQ(shk_queue_take(&q, ms, 300, UINT64_MAX, &t), 0);
    CHECK_EQ(t.n, 7);
    shk_queue_finish(&q, &t);
    /* close: puts fail at once, gets drain then fail */
    CHECK_EQ(put1(&q, "x", 1), 0);
    shk_queue_close(&q);
    CHECK_EQ(put1(&q, "y", 1), SHK_ECLOSED);
    CHECK_EQ(get1(&q, buf, sizeof buf), 1);
    CHECK_EQ(get1(&q, buf, sizeof buf), SHK_ECLOSED);
    shk_queue_reopen(&q);
    CHECK_EQ(put1(&q, "z", 1), 0);
    CHECK_EQ(get1(&q, buf, sizeof buf), 1);
    struct shk_queue_stats st;
    shk_queue_stats(&q, &st);
    CHECK_EQ(st.dropped_puts + st.dropped_gets, 0);
    CHECK(st.puts == st.gets);
    shk_queue_release(&q);
    /* a second handle sees the same queue; a mismatching capacity is refused */
    struct shk_queue q2;
    CHECK_EQ(shk_queue_open(&z, "basic", 8192, 0, SHK_O_CREATE, &q2, &created), SHK_EMISMATCH);
    CHECK_EQ(shk_queue_open(&z, "basic", 0, 0, SHK_O_CREATE, &q2, &created), 0);
    CHECK_EQ(created, 0);
    CHECK_EQ(q2.cap, 4096);
    shk_queue_release(&q2);
}

/* Copy first, take after; and its interplay with ranges taken claim first. */
static void test_copy_first(void)
{
    struct shk_queue q;
    int created;
    CHECK_EQ(shk_queue_open(&z, "peek", 4096, 0, SHK_O_CREATE, &q, &created), 0);
    struct shk_qmsg ms[16];
    struct shk_qpeek pk;
    char buf[4096];
    CHECK_EQ(shk_queue_peek(&q, ms, 16, UINT64_MAX, &pk), SHK_EEMPTY);
    /* round trips that wrap around the ring many times */
    unsigned seed = 11;
    for (int i = 0; i < 20000; i++) {
        seed = seed * 1103515245u + 12345u;
        uint64_t n = (seed >> 16) % 900;
        for (uint64_t k = 0; k < n; k++)
            buf[k] = (char)(i * 3 + k);
        CHECK_EQ(put1(&q, buf, n), 0);
        CHECK_EQ(shk_queue_peek(&q, ms, 16, UINT64_MAX, &pk), 0);
        CHECK_EQ(pk.n, 1);
        CHECK(pk.direct);
        CHECK_EQ(ms[0].len, n);
        char out[4096];
        shk_queue_read(&q, ms[0].pos, 0, out, n);
        /* looking does not take: a second look sees the same */
        struct shk_qpeek pk2;
        CHECK_EQ(shk_queue_peek(&q, ms, 16, UINT64_MAX, &pk2), 0);
        CHECK_EQ(pk2.lo, pk.lo);
        CHECK_EQ(shk_queue_take_peeked(&q, &pk), 0);
        CHECK_EQ(shk_queue_take_peeked(&q, &pk2), EAGAIN); /* taken already */
        CHECK(memcmp(out, buf, n) == 0);
        CHECK_EQ(shk_queue_bytes_used(&q), 0);
    }
    /* a batch: max_bytes stops it, the first message always counts */
    for (int i = 0; i < 10; i++)
        CHECK_EQ(put1(&q, &i, sizeof i), 0);
    CHECK_EQ(shk_queue_peek(&q, ms, 16, 9, &pk), 0);
    CHECK_EQ(pk.n, 2);
    CHECK_EQ(shk_queue_peek(&q, ms, 16, 1, &pk), 0);
    CHECK_EQ(pk.n, 1);
    CHECK_EQ(shk_queue_peek(&q, ms, 4, UINT64_MAX, &pk), 0);
    CHECK_EQ(pk.n, 4);
    CHECK_EQ(shk_queue_take_peeked(&q, &pk), 0);
    CHECK_EQ(shk_queue_depth(&q), 6);
    /* a range taken claim first and not given back: copying first must step aside */
    struct shk_qtake t1, t2;
    CHECK_EQ(shk_queue_take(&q, ms, 2, UINT64_MAX, &t1), 0); /* 4, 5 */
    CHECK_EQ(shk_queue_peek(&q, ms, 16, UINT64_MAX, &pk), 0);
    CHECK(!pk.direct);
    CHECK_EQ(shk_queue_take_peeked(&q, &pk), EINVAL);
    CHECK_EQ(shk_queue_take(&q, ms, 2, UINT64_MAX, &t2), 0); /* 6, 7 */
    int v;
    shk_queue_read(&q, ms[0].pos, 0, &v, sizeof v);
    CHECK_EQ(v, 6);
    /* given back out of order: the younger range is marked, the older one shrinks the
     * lag, and the marked records are reclaimed by whoever needs the space */
    shk_queue_finish(&q, &t2);
    CHECK(shk_queue_bytes_used(&q) > 0);
    shk_queue_finish(&q, &t1);
    CHECK_EQ(shk_queue_bytes_used(&q), 2 * 32); /* 8, 9 */
    CHECK_EQ(shk_queue_peek(&q, ms, 16, UINT64_MAX, &pk), 0);
    CHECK(pk.direct);
    CHECK_EQ(pk.n, 2);
    CHECK_EQ(shk_queue_take_peeked(&q, &pk), 0);
    CHECK_EQ(shk_queue_bytes_used(&q), 0);
    /* a full ring refills after copy-first takes (the producer sees the space) */
    int nput = 0;
    while (put1(&q, &nput, sizeof nput) == 0)
        nput++;
    CHECK_EQ(nput, 4096 / 32);
    for (int i = 0; i < nput; i += 16) {
        CHECK_EQ(shk_queue_peek(&q, ms, 16, UINT64_MAX, &pk), 0);
        for (size_t k = 0; k < pk.n; k++) {
            shk_queue_read(&q, ms[k].pos, 0, &v, sizeof v);
            CHECK_EQ(v, i + (int)k);
        }
        CHECK_EQ(shk_queue_take_peeked(&q, &pk), 0);
        CHECK_EQ(put1(&q, &v, sizeof v), 0);
    }
    /* closed and empty */
    while (shk_queue_peek(&q, ms, 16, UINT64_MAX, &pk) == 0)
        shk_queue_take_peeked(&q, &pk);
    shk_queue_close(&q);
    CHECK_EQ(shk_queue_peek(&q, ms, 16, UINT64_MAX, &pk), SHK_ECLOSED);
    shk_queue_reopen(&q);
    struct shk_queue_stats st;
    shk_queue_stats(&q, &st);
    CHECK_EQ(st.puts, st.gets);
    CHECK_EQ(st.depth, 0);
    CHECK_EQ(st.dropped_puts + st.dropped_gets, 0);
    shk_queue_release(&q);
}

/* Ranges given back out of order leave CONSUMED records at the free position; the next
 * get reclaims them itself and takes the copy-first way at once (it used to take the
 * claim-first way, marking its own records CONSUMED, until a producer found the ring
 * full: a whole ring's worth of gets). */
static void test_out_of_order_give_back(void)
{
    struct shk_queue q, c2;
    int created;
    CHECK_EQ(shk_queue_open(&z, "lag", 1 << 20, 0, SHK_O_CREATE, &q, &created), 0);
    CHECK_EQ(shk_queue_open(&z, "lag", 0, 0, 0, &c2, &created), 0);
    char b[48] = {0};
    for (int i = 0; i < 4; i++)
        CHECK_EQ(put1(&q, b, sizeof b), 0);
    struct shk_qmsg ms[4];
    struct shk_qtake t1, t2;
    struct shk_qpeek pk;
    CHECK_EQ(shk_queue_take(&c2, ms, 1, UINT64_MAX, &t1), 0); /* another range is out */
    CHECK_EQ(shk_queue_take(&q, ms, 1, UINT64_MAX, &t2), 0);
    shk_queue_finish(&q, &t2);                                 /* not the oldest: CONSUMED */
    shk_queue_finish(&c2, &t1);                                /* the oldest: lag shrinks */
    for (int i = 0; i < 1000; i++) {
        CHECK_EQ(put1(&q, b, sizeof b), 0);
        CHECK_EQ(shk_queue_peek(&q, ms, 1, UINT64_MAX, &pk), 0);
        CHECK(pk.direct); /* copy first from the first get on */
        CHECK_EQ(shk_queue_take_peeked(&q, &pk), 0);
    }
    while (shk_queue_peek(&q, ms, 4, UINT64_MAX, &pk) == 0)
        CHECK_EQ(shk_queue_take_peeked(&q, &pk), 0);
    struct shk_queue_stats st;
    shk_queue_stats(&q, &st);
    CHECK_EQ(st.depth, 0);
    CHECK_EQ(shk_queue_bytes_used(&q), 0);
    CHECK_EQ(st.puts, st.gets);
    shk_queue_release(&c2);
    shk_queue_release(&q);
}

static void test_max_messages(void)
{
    struct shk_queue q;
    int created;
    CHECK_EQ(shk_queue_open(&z, "limited", 65536, 3, SHK_O_CREATE, &q, &created), 0);
    for (int i = 0; i < 3; i++)
        CHECK_EQ(put1(&q, &i, sizeof i), 0);
    CHECK_EQ(put1(&q, "a", 1), SHK_EFULLQ);
    char buf[16];
    CHECK_EQ(get1(&q, buf, sizeof buf), 4);
    CHECK_EQ(put1(&q, "a", 1), 0);
    shk_queue_release(&q);
}

/* ---- 2 producers x 2 consumers, threads -------------------------------------------- */

#define PER_PRODUCER 200000
struct msg {
    uint32_t producer, seq, check, pad;
    uint8_t body[40];
};
static uint8_t seen[2][PER_PRODUCER];
static long received_total;
static pthread_mutex_t seen_lock = PTHREAD_MUTEX_INITIALIZER;

static void *producer(void *arg)
{
    int id = (int)(intptr_t)arg;
    struct shk_queue q;
    int created;
    CHECK_EQ(shk_queue_open(&z, "mpmc", 16384, 0, SHK_O_CREATE, &q, &created), 0);
    for (uint32_t s = 0; s < PER_PRODUCER;) {
        struct msg m = {(uint32_t)id, s, 0, 0, {0}};
        memset(m.body, (int)(s & 0xff), sizeof m.body);
        m.check = s * 2654435761u ^ (uint32_t)id;
        int batch = (s % 7 == 0) ? 5 : 1;
        if (s + batch > PER_PRODUCER)
            batch = 1;
        int r;
        if (batch == 1) {
            r = put1(&q, &m, sizeof m);
            if (r == 0)
                s++;
        } else {
            struct msg ms[5];
            struct shk_qpart parts[5];
            for (int i = 0; i < batch; i++) {
                ms[i] = m;
                ms[i].seq = s + i;
                ms[i].check = (s + i) * 2654435761u ^ (uint32_t)id;
                memset(ms[i].body, (int)((s + i) & 0xff), sizeof m.body);
                parts[i].p = &ms[i];
                parts[i].n = sizeof m;
            }
            size_t done = 0;
            r = shk_queue_put_many(&q, parts, batch, &done);
            s += done;
        }
        if (r == SHK_EFULLQ)
            CHECK_EQ(wait_ready(&q, SHK_QW_SPACE, shk_qrec_size(sizeof m), NULL), 0);
        else
            CHECK_EQ(r, 0);
    }
    shk_queue_release(&q);
    return NULL;
}

/* Consumer 1 copies first (peek, copy, take_peeked), falling back to claim first when
 * consumer 0 has a range out; consumer 0 always claims first. */
static int take_copy_first(struct shk_queue *q, struct shk_qmsg *ms, size_t max,
                           struct msg *copies, struct shk_qtake *t, int *copied)
{
    struct shk_qpeek pk;
    *copied = 0;
    int r = shk_queue_peek(q, ms, max, UINT64_MAX, &pk);
    if (r)
        return r;
    if (!pk.direct)
        return shk_queue_take(q, ms, max, UINT64_MAX, t);
    /* copy first, judge after: until take_peeked succeeds the records may be reused under
     * us (another consumer took them), so their lengths are not to be trusted yet */
    int bad = 0;
    for (size_t i = 0; i < pk.n; i++) {
        if (ms[i].len != sizeof(struct msg)) {
            bad = 1;
            continue;
        }
        shk_queue_read(q, ms[i].pos, 0, &copies[i], sizeof copies[i]);
    }
    if (shk_queue_take_peeked(q, &pk) != 0)
        return EAGAIN; /* another consumer took them first: the copies are void */
    if (bad)
        return SHK_ECORRUPT;
    t->start = t->end = 0;
    t->n = pk.n;
    *copied = 1;
    return 0;
}

static long copied_total, claimed_total;

static void *consumer(void *arg)
{
    struct shk_queue q;
    int created;
    CHECK_EQ(shk_queue_open(&z, "mpmc", 16384, 0, SHK_O_CREATE, &q, &created), 0);
    uint32_t last[2] = {0, 0};
    int have[2] = {0, 0};
    for (;;) {
        struct shk_qmsg ms[8];
        struct shk_qtake t;
        struct msg copies[8];
        int copied = 0;
        int r = arg ? take_copy_first(&q, ms, 8, copies, &t, &copied)
                    : shk_queue_take(&q, ms, 1, UINT64_MAX, &t);
        if (r == EAGAIN)
            continue;
        if (r == SHK_EEMPTY) {
            static int stuck;
            if (shk_queue_is_closed(&q) && ++stuck == 1000000) {
                struct shk_queue_sh *sh = q.sh;
                struct shk_qrec *h = (struct shk_qrec *)(q.ring + (sh->head_pos & q.mask));
                fprintf(stderr, "stuck: free %llu head %llu tail %llu hi %llx/%llx rec pos %llu word %llx\n",
                        (unsigned long long)(sh->head_pos - (sh->head_hi >> 32) - sh->base), (unsigned long long)(sh->head_pos - sh->base),
                        (unsigned long long)(sh->tail_pos - sh->base), (unsigned long long)sh->head_hi,
                        (unsigned long long)sh->tail_hi, (unsigned long long)(h->pos - sh->base),
                        (unsigned long long)h->word);
                abort();
            }
            int w = wait_ready(&q, SHK_QW_DATA, 0, NULL);
            CHECK(w == 0);
            continue;
        }
        if (r == SHK_ECLOSED)
            break;
        CHECK_EQ(r, 0);
        __atomic_fetch_add(copied ? &copied_total : &claimed_total, (long)t.n, __ATOMIC_RELAXED);
        for (size_t i = 0; i < t.n; i++) {
            struct msg m;
            CHECK_EQ(ms[i].len, sizeof m);
            if (copied)
                m = copies[i];
            else
                shk_queue_read(&q, ms[i].pos, 0, &m, sizeof m);
            CHECK(m.producer < 2 && m.seq < PER_PRODUCER);
            CHECK_EQ(m.check, m.seq * 2654435761u ^ m.producer);
            CHECK_EQ(m.body[39], (uint8_t)(m.seq & 0xff));
            if (have[m.producer])
                CHECK(m.seq > last[m.producer]); /* per-producer order */
            last[m.producer] = m.seq;
            have[m.producer] = 1;
            pthread_mutex_lock(&seen_lock);
            CHECK_EQ(seen[m.producer][m.seq], 0); /* exactly once */
            seen[m.producer][m.seq] = 1;
            received_total++;
            pthread_mutex_unlock(&seen_lock);
        }
        shk_queue_finish(&q, &t);
    }
    shk_queue_release(&q);
    return NULL;
}

static void test_threads(void)
{
    pthread_t p[2], c[2];
    for (int i = 0; i < 2; i++)
        pthread_create(&c[i], NULL, consumer, (void *)(intptr_t)i);
    for (int i = 0; i < 2; i++)
        pthread_create(&p[i], NULL, producer, (void *)(intptr_t)i);
    for (int i = 0; i < 2; i++)
        pthread_join(p[i], NULL);
    struct shk_queue q;
    int created;
    CHECK_EQ(shk_queue_open(&z, "mpmc", 0, 0, SHK_O_CREATE, &q, &created), 0);
    shk_queue_close(&q);
    for (int i = 0; i < 2; i++)
        pthread_join(c[i], NULL);
    CHECK_EQ(received_total, 2L * PER_PRODUCER);
    CHECK(copied_total > 0 && claimed_total > 0); /* both ways, side by side */
    struct shk_queue_stats st;
    shk_queue_stats(&q, &st);
    CHECK_EQ(st.puts, 2 * PER_PRODUCER);
    CHECK_EQ(st.gets, 2 * PER_PRODUCER);
    CHECK_EQ(st.dropped_puts + st.dropped_gets, 0);
    CHECK_EQ(st.depth, 0);
    shk_queue_release(&q);
}

/* ---- crashes in fork()ed children ------------------------------------------------- */

static void child_dies(const char *qname, int where, int batch)
{
    pid_t pid = fork();
    if (pid == 0) {
        struct shk_queue q;
        int created;
        if (shk_queue_open(&z, qname, 0, 0, SHK_O_CREATE, &q, &created))
            _exit(3);
        shk_queue_debug_die(where);
        if (where == SHK_QDIE_AFTER_TAKE) {
            struct shk_qmsg m[4];
            struct shk_qtake t;
            shk_queue_take(&q, m, 4, UINT64_MAX, &t);
        } else if (where == SHK_QDIE_COPIED) {
            struct shk_qmsg m[4];
            struct shk_qpeek pk;
            char copy[4096];
            if (shk_queue_peek(&q, m, 4, UINT64_MAX, &pk) == 0 && pk.direct) {
                for (size_t i = 0; i < pk.n; i++)
                    shk_queue_read(&q, m[i].pos, 0, copy, m[i].len);
                shk_queue_take_peeked(&q, &pk);
            }
        } else if (where == SHK_QDIE_AFTER_RESERVE) {
            uint32_t idx, gen;
            void *p;
            shk_queue_reserve(&q, 100000, &idx, &gen, &p);
        } else if (batch) {
            char a[100] = {0}, b[100] = {0}, c[100] = {0};
            struct shk_qpart parts[3] = {{a, 100}, {b, 100}, {c, 100}};
            size_t done;
            shk_queue_put_many(&q, parts, 3, &done);
        } else {
            char big[300] = {0};
            put1(&q, big, sizeof big);
        }
        _exit(4); /* the hook did not fire */
    }
    int status = 0;
    waitpid(pid, &status, 0);
    CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
}

static void test_crashes(void)
{
    struct shk_queue q;
    int created;
    CHECK_EQ(shk_queue_open(&z, "crash", 4096, 0, SHK_O_CREATE, &q, &created), 0);
    struct shk_zone_stats zs0, zs1;
    shk_zone_stats(&z, &zs0);
    char buf[4096];
    struct timespec dl;
    uint64_t expect_pdrops = 0, expect_gdrops = 0;
    int cases[][2] = {{SHK_QDIE_AFTER_CLAIM, 0}, {SHK_QDIE_MID_COPY, 0},
                      {SHK_QDIE_AFTER_CLAIM, 1}, {SHK_QDIE_MID_COPY, 1}};
    for (int round = 0; round < 3; round++) {
        for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
            CHECK_EQ(put1(&q, "before", 6), 0);
            child_dies("crash", cases[c][0], cases[c][1]);
            /* a batch that died mid-copy had committed its first record */
            int first_done = cases[c][0] == SHK_QDIE_MID_COPY && cases[c][1];
            expect_pdrops += cases[c][1] ? 3 - first_done : 1;
            /* a live producer claims after the dead one: it must not hang */
            CHECK_EQ(put1(&q, "after", 5), 0);
            CHECK_EQ(get1(&q, buf, sizeof buf), 6);
            if (first_done)
                CHECK_EQ(get1(&q, buf, sizeof buf), 100);
            /* the dead claim blocks the head until a waiter repairs it */
            long got;
            shk_deadline_after(&dl, 5.0);
            while ((got = get1(&q, buf, sizeof buf)) == SHK_EEMPTY)
                CHECK_EQ(wait_ready(&q, SHK_QW_DATA, 0, &dl), 0);
            CHECK_EQ(got, 5);
            CHECK(memcmp(buf, "after", 5) == 0);
            CHECK_EQ(shk_queue_depth(&q), 0);
        }
        /* a consumer dies holding two messages: they are dropped, space comes back */
        CHECK_EQ(put1(&q, "m1", 2), 0);
        CHECK_EQ(put1(&q, "m2", 2), 0);
        child_dies("crash", SHK_QDIE_AFTER_TAKE, 0);
        expect_gdrops += 2;
        CHECK_EQ(get1(&q, buf, sizeof buf), SHK_EEMPTY);
        CHECK(shk_queue_bytes_used(&q) > 0);
        shk_queue_repair(&q);
        CHECK_EQ(shk_queue_bytes_used(&q), 0);
        /* a consumer dies after copying two messages out, before taking them: nothing
         * is lost, they are still there */
        CHECK_EQ(put1(&q, "c1", 2), 0);
        CHECK_EQ(put1(&q, "c2", 2), 0);
        child_dies("crash", SHK_QDIE_COPIED, 0);
        CHECK_EQ(get1(&q, buf, sizeof buf), 2);
        CHECK(memcmp(buf, "c1", 2) == 0);
        CHECK_EQ(get1(&q, buf, sizeof buf), 2);
        CHECK(memcmp(buf, "c2", 2) == 0);
        CHECK_EQ(shk_queue_bytes_used(&q), 0);
        /* a producer dies holding a reservation: the block returns to the zone */
        child_dies("crash", SHK_QDIE_AFTER_RESERVE, 0);
        shk_queue_repair(&q);
    }
    struct shk_queue_stats st;
    shk_queue_stats(&q, &st);
    CHECK_EQ(st.dropped_puts, expect_pdrops);
    CHECK_EQ(st.dropped_gets, expect_gdrops);
    CHECK_EQ(st.drops, expect_pdrops + expect_gdrops);
    /* every committed message was handed over or lost with its consumer */
    CHECK_EQ(st.puts, st.gets + st.dropped_gets + st.depth);
    CHECK(st.recoveries > 0);
    CHECK_EQ(st.reservations, 0);
    CHECK_EQ(st.members, 1); /* the dead children's slots were scrubbed */
    shk_zone_stats(&z, &zs1);
    CHECK_EQ(zs1.free_bytes, zs0.free_bytes);
    /* still fully usable */
    for (int i = 0; i < 1000; i++) {
        CHECK_EQ(put1(&q, &i, sizeof i), 0);
        int v;
        CHECK_EQ(get1(&q, &v, sizeof v), 4);
        CHECK_EQ(v, i);
    }
    shk_queue_release(&q);
}

static void test_reservations(void)
{
    struct shk_queue q;
    int created;
    CHECK_EQ(shk_queue_open(&z, "zc", 4096, 0, SHK_O_CREATE, &q, &created), 0);
    struct shk_zone_stats zs0, zs1;
    shk_zone_stats(&z, &zs0);
    uint32_t idx, gen;
    void *p;
    CHECK_EQ(shk_queue_reserve(&q, 1 << 20, &idx, &gen, &p), 0);
    memset(p, 0xab, 1 << 20);
    CHECK_EQ(shk_queue_commit_ref(&q, idx, gen), 0);
    CHECK_EQ(shk_queue_commit_ref(&q, idx, gen), EINVAL); /* once only */
    struct shk_qmsg m;
    struct shk_qtake t;
    CHECK_EQ(shk_queue_take(&q, &m, 1, UINT64_MAX, &t), 0);
    CHECK_EQ(m.kind, SHK_QK_REF);
    uint32_t i2, g2;
    void *p2;
    uint64_t len;
    CHECK_EQ(shk_queue_accept_ref(&q, &m, &i2, &g2, &p2, &len), 0);
    shk_queue_finish(&q, &t);
    CHECK(p2 == p);
    CHECK_EQ(len, 1 << 20);
    CHECK_EQ(((uint8_t *)p2)[12345], 0xab);
    CHECK_EQ(shk_queue_release_ref(&q, i2, g2), 0);
    CHECK_EQ(shk_queue_release_ref(&q, i2, g2), ENOENT);
    /* reserved and dropped without commit */
    CHECK_EQ(shk_queue_reserve(&q, 5000, &idx, &gen, &p), 0);
    CHECK_EQ(shk_queue_release_ref(&q, idx, gen), 0);
    shk_zone_stats(&z, &zs1);
    CHECK_EQ(zs1.free_bytes, zs0.free_bytes);
    /* a commit that does not fit waits for shk_queue_record_size(REF) bytes: fill the ring
     * until one does not fit; the wait for that room is not ready until a get makes it */
    uint64_t ref_need = shk_queue_record_size(NULL, 0, SHK_QK_REF);
    CHECK_EQ(ref_need, shk_qrec_size(sizeof(struct shk_qref)));
    CHECK_EQ(shk_queue_reserve(&q, 64, &idx, &gen, &p), 0);
    char fill[64] = {0}, buf[4096];
    int puts = 0;
    while (puts < 4096 && put1(&q, fill, sizeof fill) == 0)
        puts++;
    CHECK(puts > 0 && puts < 4096);
    CHECK_EQ(shk_queue_commit_ref(&q, idx, gen), SHK_EFULLQ);
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    CHECK_EQ(wait_ready(&q, SHK_QW_SPACE, ref_need, &now), SHK_EFULLQ);
    CHECK_EQ(get1(&q, buf, sizeof buf), sizeof fill);
    CHECK_EQ(wait_ready(&q, SHK_QW_SPACE, ref_need, NULL), 0);
    CHECK_EQ(shk_queue_commit_ref(&q, idx, gen), 0);
    while (--puts > 0) /* the rest, then the block (given back) */
        CHECK_EQ(get1(&q, buf, sizeof buf), sizeof fill);
    CHECK_EQ(shk_queue_take(&q, &m, 1, UINT64_MAX, &t), 0);
    CHECK_EQ(shk_queue_accept_ref(&q, &m, &i2, &g2, &p2, &len), 0);
    shk_queue_finish(&q, &t);
    CHECK_EQ(shk_queue_release_ref(&q, i2, g2), 0);
    shk_queue_release(&q);
}

/* ---- waits in the wait.h shape ------------------------------------------------------- */

static struct shk_wait *current_wait; /* the wait run_wait runs (for a cancel) */

struct later {
    struct shk_queue *q; /* a handle of this thread's own */
    uint64_t delay_ns;
    int what;            /* 0: put a message, 1: take one, 2: cancel */
    struct shk_wait *w;
};

static void *do_later(void *arg)
{
    struct later *l = arg;
    struct timespec d = {(time_t)(l->delay_ns / 1000000000u), (long)(l->delay_ns % 1000000000u)};
    nanosleep(&d, NULL);
    char buf[4096];
    if (l->what == 0)
        CHECK_EQ(put1(l->q, "later", 5), 0);
    else if (l->what == 1)
        CHECK(get1(l->q, buf, sizeof buf) >= 0);
    else
        shk_wait_cancel_wake(shk_load_seq_cst(&current_wait)); /* (set before its sleep) */
    return NULL;
}

static int run_wait(struct shk_queue *q, int what, uint64_t need, double timeout,
                    uint32_t flags, uint32_t *cancel, uint64_t *took)
{
    struct shk_queue_waiter qw = {.q = q, .what = what, .need = need};
    uint64_t t0 = shk_now_ns();
    struct shk_wait w = SHK_WAIT_INIT(timeout < 0 ? SHK_FOREVER : t0 + (uint64_t)(timeout * 1e9),
                                      flags | SHK_WAIT_NOSIGNALS);
    w.cancel = cancel;
    shk_store_seq_cst(&current_wait, &w);
    int r;
    while ((r = shk_wait_run(&shk_queue_wait_op, &qw, &w)) == EINTR)
        ;
    *took = shk_now_ns() - t0;
    return r;
}

static void test_waits(void)
{
    struct shk_queue q, other;
    int created;
    uint64_t took;
    char buf[64];
    CHECK_EQ(shk_queue_open(&z, "waits", 4096, 0, SHK_O_CREATE, &q, &created), 0);
    CHECK_EQ(shk_queue_open(&z, "waits", 4096, 0, SHK_O_CREATE, &other, &created), 0);
    struct shk_queue_sh *sh = q.sh;
    /* not waiting: the answers of get/put_nowait */
    CHECK_EQ(run_wait(&q, SHK_QW_DATA, 0, -1, SHK_WAIT_TRY, NULL, &took), SHK_EEMPTY);
    CHECK(strstr(shk_error_detail(), "queue is empty") != NULL);
    /* a deadline: "(timed out)", on time, nothing left registered */
    CHECK_EQ(run_wait(&q, SHK_QW_DATA, 0, 0.05, 0, NULL, &took), SHK_EEMPTY);
    CHECK(strstr(shk_error_detail(), "(timed out)") != NULL);
    CHECK(took >= 50000000u && took < 2000000000u);
    CHECK_EQ(sh->data_waiters, 0);
    struct shk_queue_stats st;
    shk_queue_stats(&q, &st);
    CHECK(st.waits >= 1); /* it slept */
    /* woken by a put from another thread (a sleep, not a spin: spin 0) */
    shk_queue_set_spin(&q, 0);
    pthread_t th;
    struct later l = {&other, 30000000u, 0, NULL};
    pthread_create(&th, NULL, do_later, &l);
    CHECK_EQ(run_wait(&q, SHK_QW_DATA, 0, 10, 0, NULL, &took), 0);
    pthread_join(th, NULL);
    CHECK(took < 2000000000u);
    CHECK_EQ(sh->data_waiters, 0);
    CHECK_EQ(get1(&q, buf, sizeof buf), 5);
    /* the same with a spin that catches it */
    shk_queue_set_spin(&q, 200000000u);
    l.delay_ns = 1000000u;
    pthread_create(&th, NULL, do_later, &l);
    CHECK_EQ(run_wait(&q, SHK_QW_DATA, 0, 10, 0, NULL, &took), 0);
    pthread_join(th, NULL);
    CHECK_EQ(get1(&q, buf, sizeof buf), 5);
    shk_queue_set_spin(&q, 50000u);
    /* room: fill, then a take from another thread makes room */
    while (put1(&q, buf, 48) == 0)
        ;
    CHECK_EQ(run_wait(&q, SHK_QW_SPACE, shk_qrec_size(48), -1, SHK_WAIT_TRY, NULL, &took),
             SHK_EFULLQ);
    CHECK(strstr(shk_error_detail(), "queue is full") != NULL);
    l = (struct later){&other, 30000000u, 1, NULL};
    pthread_create(&th, NULL, do_later, &l);
    CHECK_EQ(run_wait(&q, SHK_QW_SPACE, shk_qrec_size(48), 10, 0, NULL, &took), 0);
    pthread_join(th, NULL);
    CHECK_EQ(sh->space_waiters, 0);
    CHECK_EQ(put1(&q, buf, 48), 0);
    /* a cancel word ends a sleeping wait at once */
    uint32_t cancel = 0;
    while (get1(&q, buf, sizeof buf) >= 0)
        ;
    l = (struct later){NULL, 30000000u, 2, NULL};
    pthread_create(&th, NULL, do_later, &l);
    CHECK_EQ(run_wait(&q, SHK_QW_DATA, 0, -1, 0, &cancel, &took), ECANCELED);
    pthread_join(th, NULL);
    CHECK(took < 2000000000u);
    CHECK_EQ(sh->data_waiters, 0);
    /* closing wakes waiters; a closed queue is "ready" (the get then says closed) */
    CHECK_EQ(shk_queue_close(&other), 0);
    CHECK_EQ(run_wait(&q, SHK_QW_DATA, 0, 10, 0, NULL, &took), 0);
    CHECK_EQ(run_wait(&q, SHK_QW_SPACE, 16, 10, 0, NULL, &took), 0);
    shk_queue_reopen(&other);
    /* reserve: the operation's wait reserves */
    uint32_t idx[SHK_QUEUE_RESV], gen[SHK_QUEUE_RESV];
    void *p;
    for (int i = 0; i < SHK_QUEUE_RESV; i++)
        CHECK_EQ(shk_queue_reserve(&q, 64, &idx[i], &gen[i], &p), 0);
    struct shk_queue_waiter rw = {.q = &q, .what = SHK_QW_RESV, .len = 64};
    struct shk_wait w = SHK_WAIT_INIT(shk_now_ns() + 50000000u, SHK_WAIT_NOSIGNALS);
    CHECK_EQ(shk_wait_run(&shk_queue_reserve_op, &rw, &w), SHK_EFULLQ);
    CHECK(strstr(shk_error_detail(), "reservations") != NULL);
    CHECK_EQ(shk_queue_release_ref(&q, idx[7], gen[7]), 0);
    w = SHK_WAIT_INIT(shk_now_ns() + 1000000000u, SHK_WAIT_NOSIGNALS);
    CHECK_EQ(shk_wait_run(&shk_queue_reserve_op, &rw, &w), 0);
    CHECK_EQ(rw.index, idx[7]);
    idx[7] = rw.index;
    gen[7] = rw.gen;
    for (int i = 0; i < SHK_QUEUE_RESV; i++)
        CHECK_EQ(shk_queue_release_ref(&q, idx[i], gen[i]), 0);
    CHECK_EQ(sh->space_waiters, 0);
    shk_queue_release(&other);
    shk_queue_release(&q);
}

/* shk_queue_poll: the binding's look before it sets up a wait (nothing registered) */
static void test_poll(void)
{
    struct shk_queue q, other;
    int created;
    char buf[64];
    CHECK_EQ(shk_queue_open(&z, "poll", 4096, 0, SHK_O_CREATE, &q, &created), 0);
    CHECK_EQ(shk_queue_open(&z, "poll", 4096, 0, SHK_O_CREATE, &other, &created), 0);
    struct shk_queue_waiter qw = {.q = &q, .what = SHK_QW_DATA};
    shk_queue_set_spin(&q, 50000u);
    CHECK_EQ(shk_queue_poll(&qw, 64), 0); /* empty: 64 looks, then no */
    CHECK_EQ(q.sh->data_waiters, 0);
    CHECK_EQ(put1(&other, "hello", 5), 0);
    CHECK_EQ(shk_queue_poll(&qw, 1), 1);
    shk_queue_set_spin(&q, 0); /* spin=0: not even one look */
    CHECK_EQ(shk_queue_poll(&qw, 64), 0);
    shk_queue_set_spin(&q, 50000u);
    q.busy = 3; /* the CPUs were found oversubscribed: sleep at once, no look */
    CHECK_EQ(shk_queue_poll(&qw, 64), 0);
    CHECK_EQ(q.busy, 3); /* the waits that skip spinning count it down, not the poll */
    q.busy = 0;
    CHECK_EQ(get1(&q, buf, sizeof buf), 5);
    CHECK_EQ(shk_queue_poll(&qw, 64), 0);
    CHECK_EQ(shk_queue_close(&other), 0); /* closed: ready (the get then says so) */
    CHECK_EQ(shk_queue_poll(&qw, 1), 1);
    shk_queue_reopen(&other);
    CHECK_EQ(q.sh->data_waiters, 0);
    shk_queue_release(&other);
    shk_queue_release(&q);
}

/* put_many's rounds (shk_queue_put_more): what fits, then the room the next one needs; on
 * after room was made, in order; not waiting: what fits; a message that can never fit. */
static void test_put_more(void)
{
    struct shk_queue q;
    int created;
    enum { N = 200 };
    static uint32_t msg[N][12];
    static char big[8192];
    struct shk_qpart parts[N];
    for (uint32_t i = 0; i < N; i++) {
        msg[i][0] = i;
        parts[i] = (struct shk_qpart){msg[i], sizeof msg[i]};
    }
    CHECK_EQ(shk_queue_open(&z, "more", 4096, 0, SHK_O_CREATE, &q, &created), 0);
    size_t total = 0, none = 0;
    uint64_t need = 0;
    CHECK_EQ(shk_queue_put_more(&q, parts, N, &total, 0, &need), SHK_EFULLQ);
    CHECK(total > 0 && total < N);
    CHECK_EQ(need, shk_qrec_size(48));
    CHECK_EQ(shk_queue_put_more(&q, parts, N, &none, 1, &need), SHK_EFULLQ); /* full */
    CHECK_EQ(none, 0);
    /* room made: on from where it stopped, until all are in, in order */
    uint32_t got[16], next = 0;
    int r, rounds = 0;
    do {
        long len;
        while ((len = get1(&q, got, sizeof got)) > 0) {
            CHECK_EQ(got[0], next);
            next++;
        }
        r = shk_queue_put_more(&q, parts, N, &total, 0, &need);
    } while (r == SHK_EFULLQ && ++rounds < 100);
    CHECK_EQ(r, 0);
    CHECK_EQ(total, N);
    while (get1(&q, got, sizeof got) > 0)
        CHECK_EQ(got[0], next++);
    CHECK_EQ(next, N);
    /* not waiting: what fits, without the room the rest would need */
    CHECK_EQ(shk_queue_put_more(&q, parts, N, &none, 1, &need), 0);
    CHECK(none > 0 && none < N);
    while (get1(&q, got, sizeof got) > 0)
        ;
    /* one that can never fit: an error, nothing more put */
    total = 0;
    parts[2] = (struct shk_qpart){big, sizeof big};
    CHECK_EQ(shk_queue_put_more(&q, parts, N, &total, 0, &need), SHK_ETOOBIG);
    CHECK_EQ(total, 0);
    CHECK_EQ(shk_queue_depth(&q), 0);
    shk_queue_release(&q);
}

/* The answers a queue wait gives without waiting (shk_queue_wait_now), as get_nowait,
 * a timeout already over and join(timeout=0) ask them; EAGAIN where it must wait.  And a
 * wait its caller cancelled (shk_queue_wait_cancelled). */
static void test_wait_now(void)
{
    struct shk_queue q;
    int created;
    char buf[64];
    CHECK_EQ(shk_queue_open(&z, "now", 4096, 0, SHK_O_CREATE, &q, &created), 0);
    struct shk_queue_waiter data = {.q = &q, .what = SHK_QW_DATA};
    struct shk_queue_waiter space = {.q = &q, .what = SHK_QW_SPACE, .need = shk_qrec_size(48)};
    uint64_t past = shk_now_ns() - 1, later = shk_now_ns() + 10000000000u;
    /* may not wait: "not now" in the call's words, nothing registered */
    struct shk_wait w = SHK_WAIT_INIT(SHK_FOREVER, SHK_WAIT_TRY);
    CHECK_EQ(shk_queue_wait_now(&shk_queue_wait_op, &data, &w), SHK_EEMPTY);
    CHECK(strstr(shk_error_detail(), "queue is empty") != NULL);
    CHECK(strstr(shk_error_detail(), "(timed out)") == NULL);
    w = SHK_WAIT_INIT(SHK_FOREVER, SHK_WAIT_TRY);
    CHECK_EQ(shk_queue_wait_now(&shk_queue_wait_op, &space, &w), SHK_EFULLQ);
    CHECK(strstr(shk_error_detail(), "queue is full") != NULL);
    /* the deadline passed: timed out, even when the wait would say "ready" */
    CHECK_EQ(put1(&q, "hello", 5), 0);
    w = SHK_WAIT_INIT(past, 0);
    CHECK_EQ(shk_queue_wait_now(&shk_queue_wait_op, &data, &w), SHK_EEMPTY);
    CHECK(strstr(shk_error_detail(), "(timed out)") != NULL);
    /* a deadline to come, or none: wait (nothing was looked at, nothing registered) */
    w = SHK_WAIT_INIT(later, 0);
    CHECK_EQ(shk_queue_wait_now(&shk_queue_wait_op, &data, &w), EAGAIN);
    w = SHK_WAIT_INIT(SHK_FOREVER, 0);
    CHECK_EQ(shk_queue_wait_now(&shk_queue_wait_op, &space, &w), EAGAIN);
    CHECK_EQ(q.sh->data_waiters, 0);
    CHECK_EQ(q.sh->space_waiters, 0);
    /* reserve's wait reserves: it always runs, even not blocking */
    struct shk_queue_waiter rw = {.q = &q, .what = SHK_QW_RESV, .len = 64};
    w = SHK_WAIT_INIT(SHK_FOREVER, SHK_WAIT_TRY);
    CHECK_EQ(shk_queue_wait_now(&shk_queue_reserve_op, &rw, &w), EAGAIN);
    /* join at its deadline: one look (a message is unfinished, then none) */
    w = SHK_WAIT_INIT(past, 0);
    CHECK_EQ(shk_queue_wait_now(&shk_queue_join_op, &q, &w), ETIMEDOUT);
    CHECK(strstr(shk_error_detail(), "1 task(s) unfinished") != NULL);
    w = SHK_WAIT_INIT(later, 0);
    CHECK_EQ(shk_queue_wait_now(&shk_queue_join_op, &q, &w), EAGAIN);
    CHECK_EQ(get1(&q, buf, sizeof buf), 5);
    CHECK_EQ(shk_queue_task_done(&q, 1), 0);
    w = SHK_WAIT_INIT(past, 0);
    CHECK_EQ(shk_queue_wait_now(&shk_queue_join_op, &q, &w), 0);
    CHECK_EQ(q.sh->done_waiters, 0);
    /* cancelled by its caller: ECANCELED whatever it ended with, a reservation made given back */
    struct shk_queue_stats st;
    w = SHK_WAIT_INIT(SHK_FOREVER, 0);
    CHECK_EQ(shk_wait_run(&shk_queue_reserve_op, &rw, &w), 0);
    shk_queue_stats(&q, &st);
    CHECK_EQ(st.reservations, 1);
    CHECK_EQ(shk_queue_wait_cancelled(&shk_queue_reserve_op, &rw, 0), ECANCELED);
    shk_queue_stats(&q, &st);
    CHECK_EQ(st.reservations, 0);
    CHECK_EQ(shk_queue_release_ref(&q, rw.index, rw.gen), ENOENT); /* not twice */
    CHECK_EQ(shk_queue_wait_cancelled(&shk_queue_reserve_op, &rw, SHK_EFULLQ), ECANCELED);
    CHECK_EQ(shk_queue_wait_cancelled(&shk_queue_wait_op, &data, 0), ECANCELED);
    shk_queue_release(&q);
}

/* The asyncio contract for a get (wait.h): armed attempts in the caller's thread,
 * EAGAIN with the word to sleep on, registered; futex_waitv elsewhere; disarm; attempt
 * again; a cancel takes nothing and leaves no registration. */
static void test_async_contract(void)
{
#ifdef SYS_futex_waitv
    struct shk_queue q, prod;
    int created;
    CHECK_EQ(shk_queue_open(&z, "async", 4096, 0, SHK_O_CREATE, &q, &created), 0);
    CHECK_EQ(shk_queue_open(&z, "async", 4096, 0, SHK_O_CREATE, &prod, &created), 0);
    struct shk_queue_sh *sh = q.sh;
    uint32_t flags = SHK_WAIT_ARMED | SHK_WAIT_NOSIGNALS;
    struct shk_queue_waiter a = {.q = &q, .what = SHK_QW_DATA};
    struct shk_queue_waiter b = {.q = &q, .what = SHK_QW_DATA};
    struct shk_wait wa = SHK_WAIT_INIT(SHK_FOREVER, flags), wb = SHK_WAIT_INIT(SHK_FOREVER, flags);
    /* an attempt that is not armed registers nothing */
    struct shk_wait wn = SHK_WAIT_INIT(SHK_FOREVER, SHK_WAIT_NOSIGNALS);
    CHECK_EQ(shk_queue_wait_op.attempt(&a, &wn), EAGAIN);
    CHECK(wn.on.count == NULL);
    CHECK_EQ(sh->data_waiters, 0);
    a.nospin = 0;
    /* armed: registered on data_seq, with its value */
    CHECK_EQ(shk_queue_wait_op.attempt(&a, &wa), EAGAIN);
    CHECK_EQ(shk_queue_wait_op.attempt(&b, &wb), EAGAIN);
    CHECK(wa.on.kind == SHK_WAITON_FUTEX && wa.on.word == &sh->data_seq);
    CHECK(wa.on.count == &sh->data_waiters);
    CHECK(wa.on.retry_ns != SHK_FOREVER); /* the next stuck-repair check */
    CHECK_EQ(sh->data_waiters, 2);
    pthread_t th;
    struct later l = {&prod, 20000000u, 0, NULL};
    pthread_create(&th, NULL, do_later, &l);
    struct futex_waitv v[2];
    memset(v, 0, sizeof v);
    v[0].uaddr = (uintptr_t)wa.on.word;
    v[0].val = wa.on.value;
    v[0].flags = FUTEX_32; /* shared: never FUTEX_PRIVATE_FLAG */
    v[1].uaddr = (uintptr_t)wb.on.word;
    v[1].val = wb.on.value;
    v[1].flags = FUTEX_32;
    struct timespec d;
    shk_deadline_after(&d, 10);
    long r;
    do
        r = syscall(SYS_futex_waitv, v, 2, 0, &d, CLOCK_MONOTONIC);
    while (r < 0 && errno == EINTR);
    CHECK(r >= 0 || errno == EAGAIN);
    pthread_join(th, NULL);
    shk_wait_disarm(&wa);
    CHECK_EQ(shk_queue_wait_op.attempt(&a, &wa), 0); /* ready: now the get */
    struct shk_qmsg m;
    struct shk_qget g = {.msgs = &m, .max_msgs = 1, .max_bytes = UINT64_MAX};
    CHECK_EQ(shk_queue_get_begin(&q, &g), 0);
    CHECK_EQ(g.n, 1);
    char buf[16];
    shk_queue_read(&q, m.pos, 0, buf, m.len);
    CHECK_EQ(shk_queue_get_end(&q, &g), 0);
    CHECK(memcmp(buf, "later", 5) == 0);
    /* the other wait is cancelled: no registration, nothing taken */
    CHECK_EQ(put1(&prod, "stays", 5), 0);
    CHECK_EQ(shk_wait_cancel(&shk_queue_wait_op, &b, &wb, ECANCELED), ECANCELED);
    CHECK_EQ(sh->data_waiters, 0);
    CHECK_EQ(shk_queue_depth(&q), 1);
    CHECK_EQ(get1(&q, buf, sizeof buf), 5);
    shk_queue_release(&prod);
    shk_queue_release(&q);
#endif
}

/* ---- corruption: every shared number is input ------------------------------------------ */

static const char *fuzz_step = "";
static int fuzz_round;

static void watchdog(int sig)
{
    char msg[160];
    int n = snprintf(msg, sizeof msg, "test_queue: corruption round %d hangs in %s\n",
                     fuzz_round, fuzz_step);
    (void)!write(2, msg, (size_t)n);
    _exit(3);
}

static uint64_t rnd_state = 0x9e3779b97f4a7c15ull;
static uint64_t rnd(void)
{
    rnd_state ^= rnd_state << 13;
    rnd_state ^= rnd_state >> 7;
    rnd_state ^= rnd_state << 17;
    return rnd_state;
}

/* A value a corrupted word may hold: small, huge, near the real one, unaligned. */
static uint64_t hostile(uint64_t real)
{
    switch (rnd() % 8) {
    case 0: return 0;
    case 1: return UINT64_MAX - (rnd() % 64);
    case 2: return real + (rnd() % 4096);
    case 3: return real - (rnd() % 65536);
    case 4: return real + 1 + (rnd() % 15);
    case 5: return (uint64_t)1 << (rnd() % 64);
    case 6: return real ^ ((uint64_t)1 << (rnd() % 64));
    default: return rnd();
    }
}

/* Each call below must return (the watchdog says which did not) and stay in bounds
 * (ASan says if not); answers are free, corruption may or may not be noticed. */
static void fuzz_calls(struct shk_queue *q)
{
    char buf[8192];
    uint64_t took;
    struct shk_qpart parts[3] = {{buf, 10}, {buf, 700}, {buf, 3000}};
    size_t done;
    fuzz_step = "put";
    put1(q, buf, rnd() % 2000);
    fuzz_step = "put_many";
    shk_queue_put_many(q, parts, 3, &done);
    fuzz_step = "framed put";
    shk_queue_put(q, parts, 3, SHK_QK_FRAMED);
    for (int i = 0; i < 3; i++) {
        struct shk_qmsg ms[8];
        struct shk_qget g = {.msgs = ms, .max_msgs = 8, .max_bytes = UINT64_MAX};
        fuzz_step = "get_begin";
        if (shk_queue_get_begin(q, &g) == 0) {
            for (size_t k = 0; k < g.n; k++) {
                CHECK(ms[k].len <= shk_queue_max_payload(q));
                shk_queue_read(q, ms[k].pos, 0, buf, ms[k].len < sizeof buf ? ms[k].len : sizeof buf);
                if (ms[k].kind == SHK_QK_REF && !g.copy_first) {
                    uint32_t idx, gen;
                    void *p;
                    uint64_t len;
                    if (shk_queue_accept_ref(q, &ms[k], &idx, &gen, &p, &len) == 0) {
                        memset(p, 0, len < 64 ? len : 64);
                        shk_queue_release_ref(q, idx, gen);
                    }
                }
                if (ms[k].kind == SHK_QK_FRAMED) {
                    struct shk_qframe f;
                    uint64_t off, n, len = ms[k].len < sizeof buf ? ms[k].len : sizeof buf;
                    if (shk_qframe_begin(&f, buf, len) == 0)
                        while (shk_qframe_next(&f, &off, &n) == 0)
                            CHECK(off + n <= len);
                }
            }
            fuzz_step = "get_end";
            shk_queue_get_end(q, &g);
        }
    }
    fuzz_step = "wait for data";
    run_wait(q, SHK_QW_DATA, 0, 0.02, 0, NULL, &took);
    CHECK(took < 1000000000u);
    fuzz_step = "wait for room";
    run_wait(q, SHK_QW_SPACE, shk_qrec_size(1000), 0.02, 0, NULL, &took);
    CHECK(took < 1000000000u);
    fuzz_step = "wait for a reservation";
    run_wait(q, SHK_QW_RESV, 0, 0.02, 0, NULL, &took);
    CHECK(took < 1000000000u);
    fuzz_step = "reserve";
    struct shk_queue_waiter rw = {.q = q, .what = SHK_QW_RESV, .len = 100};
    struct shk_wait w = SHK_WAIT_INIT(shk_now_ns() + 20000000u, SHK_WAIT_NOSIGNALS);
    if (shk_wait_run(&shk_queue_reserve_op, &rw, &w) == 0) {
        fuzz_step = "commit";
        if (shk_queue_commit_ref(q, rw.index, rw.gen) != 0)
            shk_queue_release_ref(q, rw.index, rw.gen);
    }
    fuzz_step = "repair";
    shk_queue_repair(q);
    fuzz_step = "state";
    struct shk_queue_stats st;
    shk_queue_stats(q, &st);
    shk_queue_depth(q);
    shk_queue_bytes_used(q);
    shk_queue_is_full(q, 100);
}

static void test_corruption(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = watchdog;
    sigaction(SIGALRM, &sa, NULL);
    int rounds = getenv("SHK_FUZZ_ROUNDS") ? atoi(getenv("SHK_FUZZ_ROUNDS")) : 400;
    for (fuzz_round = 0; fuzz_round < rounds; fuzz_round++) {
        struct shk_segment fseg;
        struct shk_zone fz;
        int status = -1, created;
        CHECK_EQ(shk_seg_create_anon(&fseg, 1 << 20), 0);
        struct shk_zone_params p = {1 << 20, 0, "fuzz", 1};
        CHECK_EQ(shk_zone_try_open(&fz, &fseg, &p, 0, &status), 0);
        CHECK_EQ(shk_zone_init_done(&fz, 1), 0);
        struct shk_queue q;
        CHECK_EQ(shk_queue_open(&fz, "f", 8192, fuzz_round % 3 ? 0 : 20, SHK_O_CREATE, &q, &created), 0);
        shk_queue_set_spin(&q, 0);
        char buf[3000];
        memset(buf, 'x', sizeof buf);
        for (uint64_t i = 0, n = rnd() % 12; i < n; i++)
            put1(&q, buf, rnd() % sizeof buf);
        uint32_t idx, gen;
        void *rp;
        if (rnd() % 2 && shk_queue_reserve(&q, 200, &idx, &gen, &rp) == 0)
            shk_queue_commit_ref(&q, idx, gen);
        for (uint64_t i = 0, n = rnd() % 4; i < n; i++)
            get1(&q, buf, sizeof buf);
        /* overwrite one to three shared words */
        struct shk_queue_sh *sh = q.sh;
        for (uint64_t k = 0, n = 1 + rnd() % 3; k < n; k++) {
            uint64_t *word;
            struct shk_qrec *rec = (struct shk_qrec *)(q.ring + ((sh->head_pos + 16 * (rnd() % 8)) & q.mask & ~15ull));
            struct shk_qslot *slot = (struct shk_qslot *)((uint8_t *)sh + sizeof *sh) + rnd() % 2;
            struct shk_qresv *resv = (struct shk_qresv *)((uint8_t *)sh + sizeof *sh + SHK_QUEUE_SLOTS * sizeof(struct shk_qslot)) + rnd() % 2;
            switch (rnd() % 12) {
            case 0: word = &sh->tail_pos; break;
            case 1: word = &sh->tail_hi; break;
            case 2: word = &sh->head_pos; break;
            case 3: word = &sh->head_hi; break;
            case 4: word = &rec->word; break;
            case 5: word = &rec->pos; break;
            case 6: word = &slot->claim_pos; break;
            case 7: word = &slot->claim_size; break;
            case 8: word = &slot->take_pos; break;
            case 9: word = &resv->ctl; break;
            case 10: word = &resv->off; break;
            default: word = &resv->reserved; break;
            }
            *word = hostile(*word);
        }
        alarm(20);
        fuzz_calls(&q);
        alarm(0);
        shk_queue_release(&q);
        shk_seg_close(&fseg);
    }
    /* issue 13 #7, exactly: a tail position overwritten with 0, then put(timeout) */
    struct shk_queue q;
    int created;
    CHECK_EQ(shk_queue_open(&z, "tail0", 4096, 0, SHK_O_CREATE, &q, &created), 0);
    CHECK_EQ(put1(&q, "a", 1), 0);
    q.sh->tail_pos = 0;
    alarm(20);
    fuzz_step = "put after tail = 0";
    CHECK_EQ(put1(&q, "x", 1), SHK_ECORRUPT);
    CHECK(strstr(shk_error_detail(), "tail position") != NULL);
    uint64_t took;
    run_wait(&q, SHK_QW_SPACE, 32, 0.05, 0, NULL, &took);
    CHECK(took < 1000000000u);
    alarm(0);
    shk_queue_release(&q);
}


/* ---- at-least-once delivery and task accounting (layout.h "Delivery modes") -------- */

/* One get the binding's way (get_begin/get_end): up to max messages into ids[]. */
static int get_ids(struct shk_queue *q, uint32_t *ids, size_t max, size_t *n)
{
    struct shk_qmsg m[64];
    struct shk_qget g = {.msgs = m, .max_msgs = max < 64 ? max : 64, .max_bytes = UINT64_MAX};
    int r = shk_queue_get_begin(q, &g);
    if (r)
        return r;
    for (size_t i = 0; i < g.n; i++) {
        CHECK_EQ(m[i].len, 4);
        shk_queue_read(q, m[i].pos, 0, &ids[i], 4);
    }
    *n = g.n;
    return shk_queue_get_end(q, &g);
}

static int join_now(struct shk_queue *q, double seconds)
{
    struct timespec dl;
    shk_deadline_after(&dl, seconds);
    struct shk_wait w = SHK_WAIT_INIT(shk_wait_deadline(&dl), SHK_WAIT_NOSIGNALS);
    return shk_wait_run(&shk_queue_join_op, q, &w);
}

static void test_ack_basics(void)
{
    struct shk_queue q, c, x;
    int created;
    CHECK_EQ(shk_queue_open_delivery(&z, "ack", 4096, 0, SHK_QDELIVERY_AT_LEAST_ONCE,
                                     SHK_O_CREATE, &q, &created), 0);
    CHECK_EQ(shk_queue_delivery(&q), SHK_QDELIVERY_AT_LEAST_ONCE);
    CHECK_EQ(shk_queue_open_delivery(&z, "ack", 0, 0, SHK_QDELIVERY_AT_MOST_ONCE, 0, &x,
                                     &created), SHK_EOBJMISMATCH);
    CHECK_EQ(shk_queue_open(&z, "ack", 0, 0, 0, &c, &created), 0); /* ANY: what exists */
    CHECK_EQ(shk_queue_delivery(&c), SHK_QDELIVERY_AT_LEAST_ONCE);
    /* the copy-first and claim-first ways and zero-copy are refused */
    struct shk_qmsg m[4];
    struct shk_qpeek pk;
    struct shk_qtake t;
    uint32_t idx, gen;
    void *ptr;
    CHECK_EQ(shk_queue_peek(&q, m, 4, UINT64_MAX, &pk), EINVAL);
    CHECK_EQ(shk_queue_take(&q, m, 4, UINT64_MAX, &t), EINVAL);
    CHECK_EQ(shk_queue_reserve(&q, 100, &idx, &gen, &ptr), EINVAL);

    uint32_t ids[8];
    size_t n;
    CHECK_EQ(get_ids(&c, ids, 8, &n), SHK_EEMPTY);
    for (uint32_t i = 0; i < 5; i++)
        CHECK_EQ(put1(&q, &i, 4), 0);
    CHECK_EQ(shk_queue_unfinished(&q), 5);
    CHECK_EQ(get_ids(&c, ids, 2, &n), 0);
    CHECK_EQ(n, 2);
    CHECK(ids[0] == 0 && ids[1] == 1);
    CHECK_EQ(shk_queue_outstanding(&c), 2);
    CHECK_EQ(shk_queue_task_done(&c, 3), EINVAL); /* holds two: nothing marked */
    CHECK_EQ(shk_queue_outstanding(&c), 2);
    CHECK_EQ(shk_queue_task_done(&c, 1), 0);      /* 0 acknowledged */
    CHECK_EQ(shk_queue_unfinished(&q), 4);
    CHECK_EQ(join_now(&q, 0.05), ETIMEDOUT);
    /* the other handle takes 2 and 3, the first gives 1 back by going away */
    CHECK_EQ(get_ids(&q, ids, 2, &n), 0);
    CHECK(n == 2 && ids[0] == 2 && ids[1] == 3);
    shk_queue_release(&c);
    struct shk_queue_stats st;
    shk_queue_stats(&q, &st);
    CHECK_EQ(st.redeliveries, 1);
    CHECK_EQ(st.in_flight, 2);
    CHECK_EQ(st.unfinished_tasks, 4);
    /* 1 comes back (behind head) before 4 */
    CHECK_EQ(get_ids(&q, ids, 8, &n), 0);
    CHECK(n == 2 && ids[0] == 1 && ids[1] == 4);
    CHECK_EQ(shk_queue_task_done(&q, 4), 0);
    CHECK_EQ(join_now(&q, 1.0), 0);
    shk_queue_stats(&q, &st);
    CHECK_EQ(st.unfinished_tasks, 0);
    CHECK_EQ(st.in_flight, 0);
    CHECK_EQ(st.acknowledged, 5);
    CHECK_EQ(shk_queue_bytes_used(&q), 0);
    /* wrap the ring many times: acked space comes back */
    for (uint32_t i = 0; i < 3000; i++) {
        CHECK_EQ(put1(&q, &i, 4), 0);
        CHECK_EQ(get_ids(&q, ids, 1, &n), 0);
        CHECK(n == 1 && ids[0] == i);
        CHECK_EQ(shk_queue_task_done(&q, 1), 0);
    }
    CHECK_EQ(join_now(&q, 1.0), 0);
    /* an old layout is refused by name */
    q.sh->version = 2;
    CHECK_EQ(shk_queue_open(&z, "ack", 0, 0, 0, &x, &created), SHK_EVERSION);
    q.sh->version = SHK_QUEUE_VERSION;
    shk_queue_release(&q);
}

static void test_at_most_once_accounting(void)
{
    struct shk_queue q, c;
    int created;
    char buf[64];
    CHECK_EQ(shk_queue_open(&z, "amo", 4096, 0, SHK_O_CREATE, &q, &created), 0);
    CHECK_EQ(shk_queue_delivery(&q), SHK_QDELIVERY_AT_MOST_ONCE);
    CHECK_EQ(shk_queue_open(&z, "amo", 0, 0, 0, &c, &created), 0);
    for (uint32_t i = 0; i < 4; i++)
        CHECK_EQ(put1(&q, &i, 4), 0);
    CHECK_EQ(shk_queue_unfinished(&q), 4);
    CHECK_EQ(get1(&c, buf, sizeof buf), 4);
    CHECK_EQ(get1(&c, buf, sizeof buf), 4);
    CHECK_EQ(shk_queue_outstanding(&c), 2);
    CHECK_EQ(shk_queue_task_done(&c, 1), 0);
    CHECK_EQ(shk_queue_unfinished(&q), 3);
    shk_queue_release(&c);                  /* one outstanding: released */
    struct shk_queue_stats st;
    shk_queue_stats(&q, &st);
    CHECK_EQ(st.abandoned_tasks, 1);
    CHECK_EQ(st.unfinished_tasks, 2);
    CHECK_EQ(get1(&q, buf, sizeof buf), 4);
    CHECK_EQ(get1(&q, buf, sizeof buf), 4);
    CHECK_EQ(shk_queue_task_done(&q, 3), EINVAL);
    CHECK_EQ(shk_queue_task_done(&q, 2), 0);
    CHECK_EQ(join_now(&q, 1.0), 0);
    /* a consumer SIGKILLed holding two tasks: released when the death is noticed */
    CHECK_EQ(put1(&q, "a", 1), 0);
    CHECK_EQ(put1(&q, "b", 1), 0);
    pid_t pid = fork();
    if (pid == 0) {
        struct shk_queue k;
        int cr;
        if (shk_queue_open(&z, "amo", 0, 0, 0, &k, &cr))
            _exit(3);
        get1(&k, buf, sizeof buf);
        get1(&k, buf, sizeof buf);
        kill(getpid(), SIGKILL);
        _exit(4);
    }
    int status;
    waitpid(pid, &status, 0);
    CHECK(WIFSIGNALED(status));
    CHECK_EQ(join_now(&q, 5.0), 0);          /* its liveness check releases them */
    shk_queue_stats(&q, &st);
    CHECK_EQ(st.abandoned_tasks, 3);
    CHECK_EQ(st.acknowledged, 3);
    shk_queue_release(&q);
}

/* A consumer that takes, records and acknowledges until SIGKILLed by the parent at a
 * random moment (any instruction: inside the take, between the take and the record,
 * inside task_done). */
static void ack_consumer(uint32_t *seen, uint32_t n, int die)
{
    struct shk_queue q;
    int created;
    if (shk_queue_open(&z, "ackstorm", 0, 0, 0, &q, &created))
        _exit(3);
    if (die)
        shk_queue_debug_die(die);
    for (;;) {
        uint32_t ids[4];
        size_t got = 0;
        int r = get_ids(&q, ids, 1 + (unsigned)rand() % 4, &got);
        if (r == SHK_ECLOSED)
            _exit(0);
        if (r == SHK_EEMPTY) {
            struct timespec dl;
            shk_deadline_after(&dl, 0.2);
            wait_ready(&q, SHK_QW_DATA, 0, &dl);
            continue;
        }
        if (r)
            _exit(5);
        for (size_t i = 0; i < got; i++)
            if (ids[i] < n)
                __atomic_add_fetch(&seen[ids[i]], 1, __ATOMIC_SEQ_CST);
        if (rand() % 8 == 0)
            usleep((useconds_t)(rand() % 500)); /* some work between get and task_done */
        if (shk_queue_task_done(&q, got))
            _exit(6);
    }
}

static void test_ack_storm(void)
{
    enum { N = 20000, WORKERS = 3 };
    struct shk_queue q;
    int created;
    CHECK_EQ(shk_queue_open_delivery(&z, "ackstorm", 8192, 0, SHK_QDELIVERY_AT_LEAST_ONCE,
                                     SHK_O_CREATE, &q, &created), 0);
    uint32_t *seen = mmap(NULL, N * sizeof(uint32_t), PROT_READ | PROT_WRITE,
                          MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    CHECK(seen != MAP_FAILED);
    pid_t w[WORKERS] = {0};
    uint32_t put = 0;
    int kills = 0, hooks = 0;
    struct timespec dl;
    shk_deadline_after(&dl, 120.0);
    srand(7);
    for (int round = 0; round < 100000; round++) {
        for (int i = 0; i < WORKERS; i++) {
            if (w[i] > 0) {
                int status;
                if (waitpid(w[i], &status, WNOHANG) == 0)
                    continue;
                CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
            }
            /* one start in five dies by a hook inside the core's own steps */
            int die = rand() % 5 == 0 ? (rand() % 2 ? SHK_QDIE_ACK_TAKEN : SHK_QDIE_ACK_DONE) : 0;
            hooks += die != 0;
            srand((unsigned)round * 31 + (unsigned)i);
            w[i] = fork();
            if (w[i] == 0)
                ack_consumer(seen, N, die);
        }
        while (put < N) {                       /* the producer: this process */
            int r = put1(&q, &put, 4);
            if (r == SHK_EFULLQ)
                break;
            CHECK_EQ(r, 0);
            put++;
        }
        if (put == N && join_now(&q, 0.001) == 0)
            break;
        CHECK(shk_wait_expired(&(struct shk_wait){.deadline_ns = shk_wait_deadline(&dl)}) == 0);
        usleep((useconds_t)(rand() % 3000));
        if (rand() % 2 == 0) {                  /* SIGKILL one at a random moment */
            int i = rand() % WORKERS;
            kill(w[i], SIGKILL);
            kills++;
        }
        if (put < N) {
            struct timespec sdl;
            shk_deadline_after(&sdl, 0.01);
            wait_ready(&q, SHK_QW_SPACE, 32, &sdl);
        }
    }
    CHECK_EQ(join_now(&q, 30.0), 0);
    shk_queue_close(&q);
    for (int i = 0; i < WORKERS; i++) {
        kill(w[i], SIGKILL);
        waitpid(w[i], NULL, 0);
    }
    shk_queue_repair(&q);
    uint64_t dup = 0;
    for (uint32_t i = 0; i < N; i++) {
        CHECK(seen[i] >= 1);                   /* nothing lost */
        dup += seen[i] - 1;
    }
    struct shk_queue_stats st;
    shk_queue_stats(&q, &st);
    /* every second processing of a message was preceded by its redelivery */
    CHECK(dup <= st.redeliveries);
    CHECK(st.redeliveries > 0);
    CHECK_EQ(st.unfinished_tasks, 0);
    CHECK_EQ(st.in_flight, 0);
    CHECK_EQ(st.puts, N);
    CHECK_EQ(st.members, 1);
    fprintf(stderr, "  ack storm: %d kills, %d hooks, %llu redeliveries, %llu processed twice\n",
            kills, hooks, (unsigned long long)st.redeliveries, (unsigned long long)dup);
    munmap(seen, N * sizeof(uint32_t));
    shk_queue_release(&q);
}

int main(void)
{
    open_zone(16 << 20);
    test_basics();
    test_max_messages();
    test_copy_first();
    test_out_of_order_give_back();
    test_reservations();
    test_crashes();
    test_threads();
    test_waits();
    test_poll();
    test_wait_now();
    test_put_more();
    test_async_contract();
    test_corruption();
    test_ack_basics();
    test_at_most_once_accounting();
    test_ack_storm();
    TEST_MAIN_END();
}
