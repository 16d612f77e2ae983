/* The readiness hub (waitv.h), in both modes (futex_waitv, and the fallback forced):
 * a changed word makes its waits READY through the notifier's eventfd, whether it changed
 * before the hub slept or after; waits on one (word, value) share one slot; more words
 * than one thread can watch start more threads (and in the fallback, threads share words
 * beyond max_threads); deadlines and retries (one retry per slot, the others pushed);
 * timers; unwatch leaves no trace; close_group; a word unwatched and unmapped at once
 * does not disturb the hub; destroy joins the threads.  Words live
 * in a MAP_SHARED mapping, woken by other threads with FUTEX_WAKE as other processes
 * would. */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "check.h"
#include "atomics.h"
#include "futex.h"
#include "waitv.h"

#define NWORDS 4096
static uint32_t *words; /* shared mapping */

static uint64_t ms(uint64_t n)
{
    return n * 1000000ull;
}

/* Wait until the notifier is readable (or timeout_ms passed); drain into out. */
static size_t collect(struct shk_hub_notifier *n, struct shk_hub_wait **out, size_t max,
                      size_t want, int timeout_ms)
{
    size_t got = 0;
    uint64_t end = shk_now_ns() + ms((uint64_t)timeout_ms);
    while (got < want) {
        uint64_t now = shk_now_ns();
        if (now >= end)
            break;
        struct pollfd p = {n->efd, POLLIN, 0};
        int r = poll(&p, 1, (int)((end - now) / 1000000u) + 1);
        if (r <= 0)
            continue;
        got += shk_hub_drain(n, out + got, max - got);
    }
    return got;
}

static void set_wait(struct shk_hub_wait *w, struct shk_hub_notifier *n, uint32_t *word,
                     uint32_t value)
{
    memset(w, 0, sizeof *w);
    w->word = word;
    w->value = value;
    w->retry_ns = UINT64_MAX;
    w->deadline_ns = UINT64_MAX;
    w->notifier = n;
}

struct later {
    uint32_t *word;
    uint32_t value;
    int delay_ms;
};

static void *store_and_wake(void *arg)
{
    struct later *l = arg;
    usleep((useconds_t)l->delay_ms * 1000u);
    shk_store_seq_cst(l->word, l->value);
    shk_futex_wake(l->word, INT32_MAX);
    return NULL;
}

static void test_changed(int mode)
{
    struct shk_hub h;
    struct shk_hub_notifier n;
    CHECK_EQ(shk_hub_init(&h, mode, 0), 0);
    CHECK_EQ(shk_hub_notifier_init(&n, &h), 0);
    struct shk_hub_wait a, b, c, *out[8];

    /* changed after the hub went to sleep */
    words[0] = 5;
    set_wait(&a, &n, &words[0], 5);
    CHECK_EQ(shk_hub_watch(&h, &a), 0);
    usleep(20000);
    CHECK_EQ(collect(&n, out, 8, 1, 0), 0);
    pthread_t th;
    struct later l = {&words[0], 6, 10};
    pthread_create(&th, NULL, store_and_wake, &l);
    CHECK_EQ(collect(&n, out, 8, 1, 5000), 1);
    CHECK(out[0] == &a);
    CHECK_EQ(a.why, SHK_HUB_CHANGED);
    CHECK_EQ(a.state, SHK_HUB_IDLE);
    pthread_join(th, NULL);

    /* already changed when watched (the kernel refuses to sleep: EAGAIN) */
    words[1] = 1;
    set_wait(&b, &n, &words[1], 0);
    CHECK_EQ(shk_hub_watch(&h, &b), 0);
    CHECK_EQ(collect(&n, out, 8, 1, 5000), 1);
    CHECK(out[0] == &b && b.why == SHK_HUB_CHANGED);

    /* waits on one pair share a slot; unwatch leaves nothing behind */
    words[2] = 0;
    set_wait(&a, &n, &words[2], 0);
    set_wait(&b, &n, &words[2], 0);
    set_wait(&c, &n, &words[2], 0);
    CHECK_EQ(shk_hub_watch(&h, &a), 0);
    CHECK_EQ(shk_hub_watch(&h, &b), 0);
    CHECK_EQ(shk_hub_watch(&h, &c), 0);
    struct shk_hub_stats st;
    shk_hub_get_stats(&h, &st);
    CHECK_EQ(st.slots, 1);
    CHECK_EQ(st.waits, 3);
    CHECK_EQ(st.slots_shared, 2);
    CHECK_EQ(shk_hub_unwatch(&h, &b), SHK_HUB_WATCHING);
    CHECK_EQ(b.state, SHK_HUB_IDLE);
    l = (struct later){&words[2], 1, 5};
    pthread_create(&th, NULL, store_and_wake, &l);
    CHECK_EQ(collect(&n, out, 8, 2, 5000), 2);
    CHECK((out[0] == &a && out[1] == &c) || (out[0] == &c && out[1] == &a));
    pthread_join(th, NULL);
    CHECK_EQ(collect(&n, out, 8, 1, 50), 0); /* b was not reported */
    shk_hub_get_stats(&h, &st);
    CHECK_EQ(st.slots, 0);
    CHECK_EQ(st.waits, 0);
    CHECK_EQ(st.threads, 1);

    /* unwatch of a READY wait takes it off the notifier */
    words[3] = 0;
    set_wait(&a, &n, &words[3], 1);
    CHECK_EQ(shk_hub_watch(&h, &a), 0);
    usleep(50000);
    CHECK_EQ(shk_hub_unwatch(&h, &a), SHK_HUB_READY);
    CHECK_EQ(collect(&n, out, 8, 1, 50), 0);

    shk_hub_notifier_destroy(&n);
    shk_hub_destroy(&h);
}

static void test_times(int mode)
{
    struct shk_hub h;
    struct shk_hub_notifier n;
    CHECK_EQ(shk_hub_init(&h, mode, 0), 0);
    CHECK_EQ(shk_hub_notifier_init(&n, &h), 0);
    struct shk_hub_wait a, b, c, t1, t2, *out[8];
    words[10] = 0;
    uint64_t t0 = shk_now_ns();

    /* deadlines */
    set_wait(&a, &n, &words[10], 0);
    a.deadline_ns = t0 + ms(30);
    CHECK_EQ(shk_hub_watch(&h, &a), 0);
    CHECK_EQ(collect(&n, out, 8, 1, 5000), 1);
    CHECK(out[0] == &a && a.why == SHK_HUB_DEADLINE);
    CHECK(shk_now_ns() >= t0 + ms(30));

    /* retries: one per slot, the others pushed back */
    t0 = shk_now_ns();
    set_wait(&a, &n, &words[10], 0);
    set_wait(&b, &n, &words[10], 0);
    set_wait(&c, &n, &words[10], 0);
    a.retry_ns = t0 + ms(20);
    b.retry_ns = t0 + ms(21);
    c.retry_ns = t0 + ms(22);
    CHECK_EQ(shk_hub_watch(&h, &a), 0);
    CHECK_EQ(shk_hub_watch(&h, &b), 0);
    CHECK_EQ(shk_hub_watch(&h, &c), 0);
    CHECK_EQ(collect(&n, out, 8, 1, 5000), 1);
    CHECK(out[0] == &a && a.why == SHK_HUB_RETRY);
    uint64_t fired = shk_now_ns();
    /* b and c were due within the push: nothing before ~10 ms after a */
    size_t k = collect(&n, out, 8, 1, 3);
    CHECK(k == 0 || shk_now_ns() - fired > ms(3)); /* tolerate a slow machine */
    CHECK(collect(&n, out, 8, 1, 5000) >= 1); /* then one of them (both, if slow) */
    CHECK(out[0] == &b || out[0] == &c);
    shk_hub_unwatch(&h, &b);
    shk_hub_unwatch(&h, &c);

    /* timers (no word): each its own */
    t0 = shk_now_ns();
    set_wait(&t1, &n, NULL, 0);
    set_wait(&t2, &n, NULL, 0);
    t1.retry_ns = t0 + ms(10);
    t2.retry_ns = t0 + ms(10);
    CHECK_EQ(shk_hub_watch(&h, &t1), 0);
    CHECK_EQ(shk_hub_watch(&h, &t2), 0);
    CHECK_EQ(collect(&n, out, 8, 2, 5000), 2);
    CHECK(t1.why == SHK_HUB_RETRY && t2.why == SHK_HUB_RETRY);
    CHECK(shk_now_ns() >= t0 + ms(10));

    shk_hub_notifier_destroy(&n);
    shk_hub_destroy(&h);
}

/* More distinct words than one thread (or max_threads in the fallback) can take. */
static void test_many(int mode, uint32_t nwords, uint32_t per_word, uint32_t max_threads,
                      uint32_t want_threads)
{
    struct shk_hub h;
    struct shk_hub_notifier n;
    CHECK_EQ(shk_hub_init(&h, mode, max_threads), 0);
    CHECK_EQ(shk_hub_notifier_init(&n, &h), 0);
    uint32_t total = nwords * per_word;
    struct shk_hub_wait *ws = calloc(total, sizeof *ws);
    struct shk_hub_wait **out = calloc(total, sizeof *out);
    for (uint32_t i = 0; i < nwords; i++)
        words[100 + i] = 7;
    for (uint32_t i = 0; i < total; i++) {
        set_wait(&ws[i], &n, &words[100 + i % nwords], 7);
        CHECK_EQ(shk_hub_watch(&h, &ws[i]), 0);
    }
    struct shk_hub_stats st;
    shk_hub_get_stats(&h, &st);
    CHECK_EQ(st.slots, nwords);
    CHECK_EQ(st.waits, total);
    CHECK_EQ(st.threads, want_threads);
    usleep(30000);
    CHECK_EQ(collect(&n, out, total, 1, 0), 0);
    for (uint32_t i = 0; i < nwords; i++) {
        shk_store_seq_cst(&words[100 + i], 8);
        shk_futex_wake(&words[100 + i], INT32_MAX);
    }
    CHECK_EQ(collect(&n, out, total, total, 10000), total);
    for (uint32_t i = 0; i < total; i++)
        CHECK_EQ(ws[i].why, SHK_HUB_CHANGED);
    shk_hub_get_stats(&h, &st);
    CHECK_EQ(st.waits, 0);
    CHECK_EQ(st.slots, 0);
    free(ws);
    free(out);
    shk_hub_notifier_destroy(&n);
    shk_hub_destroy(&h);
}

static void test_close_group(int mode)
{
    struct shk_hub h;
    struct shk_hub_notifier n;
    CHECK_EQ(shk_hub_init(&h, mode, 0), 0);
    CHECK_EQ(shk_hub_notifier_init(&n, &h), 0);
    struct shk_hub_wait a, b, c, *out[8];
    int k1, k2;
    words[20] = words[21] = 0;
    set_wait(&a, &n, &words[20], 0);
    set_wait(&b, &n, &words[20], 0);
    set_wait(&c, &n, &words[21], 0);
    a.keys[0] = &k1;
    b.keys[1] = &k2;
    c.keys[1] = &k1;
    CHECK_EQ(shk_hub_watch(&h, &a), 0);
    CHECK_EQ(shk_hub_watch(&h, &b), 0);
    CHECK_EQ(shk_hub_watch(&h, &c), 0);
    CHECK_EQ(shk_hub_close_group(&h, &k1), 2);
    CHECK_EQ(collect(&n, out, 8, 2, 5000), 2);
    CHECK(a.why == SHK_HUB_CLOSED && c.why == SHK_HUB_CLOSED);
    CHECK_EQ(b.state, SHK_HUB_WATCHING);
    CHECK_EQ(shk_hub_close_group(&h, NULL), 0);
    CHECK_EQ(shk_hub_unwatch(&h, &b), SHK_HUB_WATCHING);
    shk_hub_notifier_destroy(&n);
    shk_hub_destroy(&h);
}

/* Unwatching, then unmapping at once (what a finished wait of a closing segment does)
 * while the hub may be about to sleep on that word: the kernel may find the address gone
 * (EFAULT) or reused; the hub must go on serving the other waits, without spinning. */
static void test_unmap_race(int mode)
{
    struct shk_hub h;
    struct shk_hub_notifier n;
    CHECK_EQ(shk_hub_init(&h, mode, 0), 0);
    CHECK_EQ(shk_hub_notifier_init(&n, &h), 0);
    struct shk_hub_wait a, b, *out[8];
    words[30] = 0;
    set_wait(&b, &n, &words[30], 0);
    CHECK_EQ(shk_hub_watch(&h, &b), 0);
    for (int i = 0; i < 200; i++) {
        uint32_t *m = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        CHECK(m != MAP_FAILED);
        set_wait(&a, &n, m, 0);
        CHECK_EQ(shk_hub_watch(&h, &a), 0);
        if (i % 2)
            sched_yield();
        CHECK_EQ(shk_hub_unwatch(&h, &a), SHK_HUB_WATCHING);
        munmap(m, 4096);
    }
    struct shk_hub_stats st;
    usleep(20000);
    shk_hub_get_stats(&h, &st);
    uint64_t sleeps = st.sleeps;
    usleep(50000);
    shk_hub_get_stats(&h, &st);
    CHECK(st.sleeps - sleeps < 5); /* asleep on b, not spinning */
    CHECK_EQ(collect(&n, out, 8, 1, 0), 0);
    pthread_t th;
    struct later l = {&words[30], 1, 1};
    pthread_create(&th, NULL, store_and_wake, &l);
    CHECK_EQ(collect(&n, out, 8, 1, 5000), 1);
    CHECK(out[0] == &b && b.why == SHK_HUB_CHANGED);
    pthread_join(th, NULL);
    shk_hub_notifier_destroy(&n);
    shk_hub_destroy(&h);
}

/* ---- the event loop's spin (shk_loop_spin) ---------------------------------------------- */

struct spin_obj {
    uint32_t word;      /* 0: busy; anything else: the attempt succeeds */
    int attempts;
};

static int spin_attempt(void *obj, struct shk_wait *w)
{
    struct spin_obj *o = obj;
    o->attempts++;
    if (shk_load_relaxed(&o->word) != 0)
        return 0;
    w->on.kind = SHK_WAITON_FUTEX;
    w->on.word = &o->word;
    w->on.value = 0;
    return EAGAIN;
}

static const struct shk_wait_op spin_op = {"spin test", spin_attempt, NULL, NULL};

static uint32_t learnt_budget(struct shk_loop_spin *s, const uint32_t *word)
{
    for (uint32_t i = 0; i < SHK_LOOP_SPIN_TABLE; i++)
        if (s->table[i].word == word)
            return s->table[i].budget_ns;
    return UINT32_MAX; /* not in the table */
}

static void test_loop_spin(void)
{
    static struct shk_loop_spin s = {.max_ns = 50000};
    struct spin_obj o = {0, 0};
    struct shk_wait w = SHK_WAIT_INIT(SHK_FOREVER, 0);
    CHECK_EQ(spin_attempt(&o, &w), EAGAIN);

    /* losses halve the budget from max/2 until it is below 1 µs: then no spin at all */
    uint32_t expect = 25000;
    for (int i = 0; i < 5; i++) {
        CHECK_EQ(shk_loop_spin(&s, &spin_op, &o, &w), EAGAIN);
        expect /= 2;
        CHECK_EQ(learnt_budget(&s, &o.word), expect < 1000 ? 0 : expect);
    }
    CHECK_EQ(s.spins, 5);
    CHECK_EQ(s.spins_won, 0);
    CHECK_EQ(o.attempts, 1); /* the word never changed: never attempted again */
    /* every 16th wait with no budget probes with the maximum; the others do not spin */
    for (int i = 1; i <= 16; i++) {
        CHECK_EQ(shk_loop_spin(&s, &spin_op, &o, &w), EAGAIN);
        CHECK_EQ(s.spins, i < 16 ? 5 : 6);
    }

    /* a word that changed: the attempt wins at once; the budget (from max/2 again after a
     * reset) never shrinks on a win, and stays within the maximum */
    shk_loop_spin_reset(&s);
    CHECK_EQ(learnt_budget(&s, &o.word), UINT32_MAX);
    shk_store_relaxed(&o.word, 1);
    CHECK_EQ(shk_loop_spin(&s, &spin_op, &o, &w), 0);
    CHECK_EQ(s.spins_won, 1);
    CHECK_EQ(o.attempts, 2);
    uint32_t won = learnt_budget(&s, &o.word);
    CHECK(won >= 25000 && won <= 50000);

    /* shk_wait_cfg.spin_max_ns = 0 stops it too */
    uint64_t saved = shk_wait_cfg.spin_max_ns;
    shk_wait_cfg.spin_max_ns = 0;
    shk_store_relaxed(&o.word, 0);
    CHECK_EQ(shk_loop_spin(&s, &spin_op, &o, &w), EAGAIN);
    CHECK_EQ(s.spins, 7);
    shk_wait_cfg.spin_max_ns = saved;

    /* the next loss after a reset spins for max/2 and halves it */
    shk_loop_spin_reset(&s);
    uint64_t t0 = shk_now_ns();
    CHECK_EQ(shk_loop_spin(&s, &spin_op, &o, &w), EAGAIN);
    CHECK(shk_now_ns() - t0 >= 25000); /* it spun for its budget */
    CHECK_EQ(learnt_budget(&s, &o.word), 12500);
}

int main(void)
{
    words = mmap(NULL, NWORDS * sizeof *words, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
                 -1, 0);
    CHECK(words != MAP_FAILED);
    int modes[2] = {SHK_HUB_FALLBACK, SHK_HUB_WAITV};
    for (int i = 0; i < 2; i++) {
        int mode = modes[i];
        if (mode == SHK_HUB_WAITV && !shk_hub_waitv_supported()) {
            struct shk_hub h;
            CHECK_EQ(shk_hub_init(&h, SHK_HUB_WAITV, 0), ENOSYS);
            fprintf(stderr, "test_waitv: no futex_waitv on this kernel: fallback only\n");
            continue;
        }
        test_changed(mode);
        test_times(mode);
        test_close_group(mode);
        test_unmap_race(mode);
    }
    if (shk_hub_waitv_supported()) {
        test_many(SHK_HUB_WAITV, 300, 3, 0, 3);        /* 127 words per thread */
        test_many(SHK_HUB_WAITV, 1000, 10, 0, 8);      /* the 10,000 on 1,000 */
    }
    test_many(SHK_HUB_FALLBACK, 20, 2, 0, 20);         /* a thread per word */
    test_many(SHK_HUB_FALLBACK, 40, 2, 8, 8);          /* threads share words (slices) */
    test_loop_spin();
    TEST_MAIN_END();
}
