/* The one wait driver (wait.h) with a toy operation: a counter that another thread bumps.
 * Results (done, EBUSY for TRY, ETIMEDOUT at the deadline), registration taken back on
 * every path, the spin catching a quick hand-off without registering, EINTR returns for
 * signals before the first sleep and at every slice even when nothing interrupts the
 * sleep (the "signal just before the sleep" bug cannot happen), no slices with
 * NOSIGNALS, give_up on cancel, the liveness cadence, POLL and OFD waits, a cancel word
 * set by another thread ending FUTEX and POLL sleeps at any moment, the spin probe giving
 * up on a busy CPU. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "futex.h"
#include "mutex.h"
#include "segment.h"
#include "wait.h"

struct toy {
    uint32_t word;      /* the futex word: bumped by the "waker" */
    uint32_t target;    /* done when word >= target */
    uint32_t waiters;   /* registration count */
    uint32_t spin_ns, gate;
    int attempts, armed_attempts, gave_up;
};

static int toy_attempt(void *obj, struct shk_wait *w)
{
    struct toy *t = obj;
    shk_add_fetch_seq_cst(&t->attempts, 1);
    if (w->flags & SHK_WAIT_ARMED)
        t->armed_attempts++;
    uint32_t v = shk_load_seq_cst(&t->word);
    shk_wait_on_futex(w, &t->word, v, &t->waiters);
    if (v >= t->target)
        return 0;
    return EAGAIN;
}

static int toy_give_up(void *obj, struct shk_wait *w, int why)
{
    ((struct toy *)obj)->gave_up = why;
    return why == ECANCELED ? ECANCELED : why;
}

static void toy_spin(void *obj, struct shk_spin *out)
{
    struct toy *t = obj;
    out->budget_ns = &t->spin_ns;
    out->gate_ms = &t->gate;
    out->max_ns = 2000000;
    out->policy = SHK_SPIN_LEARN_SLEEPS;
}

static const struct shk_wait_op toy_op = {"toy", toy_attempt, toy_give_up, toy_spin};
static const struct shk_wait_op toy_nospin_op = {"toy", toy_attempt, toy_give_up, NULL};

static uint64_t deadline_in(double s)
{
    return shk_now_ns() + (uint64_t)(s * 1e9);
}

struct bump {
    struct toy *t;
    uint64_t delay_ns;
};

static void *bumper(void *arg)
{
    struct bump *b = arg;
    struct timespec d = {(time_t)(b->delay_ns / 1000000000u), (long)(b->delay_ns % 1000000000u)};
    nanosleep(&d, NULL);
    shk_add_fetch_seq_cst(&b->t->word, 1);
    if (shk_load_seq_cst(&b->t->waiters))
        shk_futex_wake(&b->t->word, INT32_MAX);
    return NULL;
}

static int run_to_end(const struct shk_wait_op *op, struct toy *t, struct shk_wait *w, int *eintrs)
{
    int r;
    while ((r = shk_wait_run(op, t, w)) == EINTR)
        (*eintrs)++;
    return r;
}

static void test_results(void)
{
    struct toy t = {.target = 1, .spin_ns = UINT32_MAX};
    struct shk_wait w = SHK_WAIT_INIT(SHK_FOREVER, SHK_WAIT_TRY);
    CHECK_EQ(shk_wait_run(&toy_op, &t, &w), EBUSY);
    CHECK_EQ(t.gave_up, EBUSY);
    CHECK_EQ(t.attempts, 1);
    CHECK_EQ(t.waiters, 0);

    memset(&t, 0, sizeof t);
    t.target = 1;
    t.spin_ns = UINT32_MAX;
    w = SHK_WAIT_INIT(deadline_in(0.05), 0);
    int eintrs = 0;
    uint64_t t0 = shk_now_ns();
    CHECK_EQ(run_to_end(&toy_op, &t, &w, &eintrs), ETIMEDOUT);
    uint64_t took = shk_now_ns() - t0;
    CHECK(took >= 50000000u && took < 1000000000u);
    CHECK_EQ(t.gave_up, ETIMEDOUT);
    CHECK_EQ(t.waiters, 0);
    CHECK(eintrs >= 1); /* before the first sleep */

    /* done at once: no registration, no spin, no sleep */
    memset(&t, 0, sizeof t);
    t.word = 5;
    t.target = 1;
    w = SHK_WAIT_INIT(SHK_FOREVER, 0);
    CHECK_EQ(shk_wait_run(&toy_op, &t, &w), 0);
    CHECK_EQ(t.attempts, 1);
    CHECK_EQ(w.t0, 0);
}

/* The other side of a quick hand-off: waits (spinning) until the waiter has made its
 * first attempt, then bumps the word at once. */
static void *quick_bumper(void *arg)
{
    struct toy *t = arg;
    uint64_t give_up = shk_now_ns() + 2000000000ull;
    while (shk_load_seq_cst(&t->attempts) < 1 && shk_now_ns() < give_up)
        shk_cpu_relax();
    shk_add_fetch_seq_cst(&t->word, 1);
    if (shk_load_seq_cst(&t->waiters))
        shk_futex_wake(&t->word, INT32_MAX);
    return NULL;
}

/* A hand-off within the spin budget is caught by the spin: no registration, no sleep. */
static void test_spin_catches_quick_handoff(void)
{
    if (shk_ncpu() < 2)
        return;
    int caught = 0;
    for (int i = 0; i < 50 && !caught; i++) {
        struct toy t = {.target = 1, .spin_ns = 2000000};
        pthread_t th;
        pthread_create(&th, NULL, quick_bumper, &t);
        struct timespec d = {0, 1000000};
        nanosleep(&d, NULL); /* let it start spinning */
        struct shk_wait w = SHK_WAIT_INIT(deadline_in(5), SHK_WAIT_NOSIGNALS);
        int eintrs = 0;
        CHECK_EQ(run_to_end(&toy_op, &t, &w, &eintrs), 0);
        pthread_join(th, NULL);
        CHECK_EQ(t.waiters, 0);
        caught = t.armed_attempts == 0 && !w.slept;
    }
    CHECK(caught); /* on a loaded machine some may miss; not all fifty */
}

/* A toy whose first attempt fails and then moves its own word: the driver's spin sees the
 * change at once and the next attempt wins, so the wait ends as a won spin, no thread. */
struct won {
    uint32_t word, spin_ns, gate;
    int attempts;
    uint32_t policy;
};

static int won_attempt(void *obj, struct shk_wait *w)
{
    struct won *t = obj;
    if (t->attempts++)
        return 0;
    shk_wait_on_futex(w, &t->word, shk_load_seq_cst(&t->word), NULL);
    shk_add_fetch_seq_cst(&t->word, 1); /* changed after the attempt said what it watches */
    return EAGAIN;
}

static void won_spin(void *obj, struct shk_spin *out)
{
    struct won *t = obj;
    out->budget_ns = &t->spin_ns;
    out->gate_ms = &t->gate;
    out->busy = NULL;
    out->max_ns = 2000000;
    out->policy = t->policy;
}

static const struct shk_wait_op won_op = {"won", won_attempt, toy_give_up, won_spin};

/* Learning from a spin that won: LEARN_SLEEPS moves the budget toward twice the wait (a
 * few us here, so it shrinks); with KEEP_WON (the queue's handles) it stays where it was. */
static void test_spin_won_learning(void)
{
    uint32_t policies[2] = {SHK_SPIN_LEARN_SLEEPS, SHK_SPIN_LEARN_SLEEPS | SHK_SPIN_KEEP_WON};
    for (int k = 0; k < 2; k++) {
        struct won t = {.spin_ns = 2000000, .policy = policies[k]};
        struct shk_wait w = SHK_WAIT_INIT(deadline_in(5), SHK_WAIT_NOSIGNALS);
        CHECK_EQ(shk_wait_run(&won_op, &t, &w), 0);
        CHECK_EQ(t.attempts, 2);
        CHECK(!w.slept);
        if (policies[k] & SHK_SPIN_KEEP_WON)
            CHECK_EQ(t.spin_ns, 2000000u);
        else
            CHECK(t.spin_ns < 2000000u);
    }
}

/* Woken from a real sleep; the registration was taken back. */
static void test_sleep_and_wake(void)
{
    struct toy t = {.target = 1, .spin_ns = 0};
    struct bump b = {&t, 30000000};
    pthread_t th;
    struct shk_wait w = SHK_WAIT_INIT(deadline_in(10), 0);
    pthread_create(&th, NULL, bumper, &b);
    int eintrs = 0;
    CHECK_EQ(run_to_end(&toy_nospin_op, &t, &w, &eintrs), 0);
    pthread_join(th, NULL);
    CHECK(w.slept);
    CHECK(t.armed_attempts >= 1);
    CHECK_EQ(t.waiters, 0);
}

/* The slices: nothing wakes the sleeper and no signal interrupts it, yet the driver
 * returns EINTR every recheck_ns, so a signal handler that has something to say (a
 * signal that landed just before the sleep) runs within one slice.  NOSIGNALS: none. */
static void test_slices(void)
{
    uint64_t saved = shk_wait_cfg.recheck_ns;
    shk_wait_cfg.recheck_ns = 20000000; /* 20 ms */
    struct toy t = {.target = 1};
    struct shk_wait w = SHK_WAIT_INIT(deadline_in(0.25), 0);
    int r, eintrs = 0;
    uint64_t last = shk_now_ns(), worst = 0;
    while ((r = shk_wait_run(&toy_nospin_op, &t, &w)) == EINTR) {
        uint64_t now = shk_now_ns();
        if (now - last > worst)
            worst = now - last;
        last = now;
        eintrs++;
        CHECK_EQ(t.waiters, 0); /* never registered while the caller runs handlers */
    }
    CHECK_EQ(r, ETIMEDOUT);
    CHECK(eintrs >= 8 && eintrs <= 20);
    CHECK(worst < 150000000u);
    t.gave_up = 0;
    w = SHK_WAIT_INIT(deadline_in(0.1), SHK_WAIT_NOSIGNALS);
    eintrs = 0;
    CHECK_EQ(run_to_end(&toy_nospin_op, &t, &w, &eintrs), ETIMEDOUT);
    CHECK_EQ(eintrs, 0);
    shk_wait_cfg.recheck_ns = saved;
}

/* Cancel after an armed attempt: registration undone, give_up told why. */
static void test_cancel(void)
{
    struct toy t = {.target = 1};
    struct shk_wait w = SHK_WAIT_INIT(SHK_FOREVER, SHK_WAIT_ARMED | SHK_WAIT_NOSIGNALS);
    CHECK_EQ(toy_op.attempt(&t, &w), EAGAIN); /* the async caller's first step */
    CHECK_EQ(t.waiters, 1);
    CHECK(w.on.kind == SHK_WAITON_FUTEX && w.on.word == &t.word && w.on.value == 0);
    CHECK(w.on.retry_ns == SHK_FOREVER);
    CHECK_EQ(shk_wait_cancel(&toy_op, &t, &w, ECANCELED), ECANCELED);
    CHECK_EQ(t.waiters, 0);
    CHECK_EQ(t.gave_up, ECANCELED);
    shk_wait_disarm(&w); /* idempotent */
    CHECK_EQ(t.waiters, 0);
}

/* Another thread cancels through w.cancel: the sleeper ends with ECANCELED at once,
 * whatever the moment (before the attempt, between the attempt and the sleep, asleep in a
 * short sleep on the word alone or in a long one watching both words). */
static int poll_left;
static int poll_attempt(void *obj, struct shk_wait *w);
static const struct shk_wait_op poll_op;

struct canceller {
    struct shk_wait *w;
    uint64_t delay_ns;
};

static void *cancel_later(void *arg)
{
    struct canceller *c = arg;
    uint64_t until = shk_now_ns() + c->delay_ns;
    while (shk_now_ns() < until)
        shk_cpu_relax();
    shk_wait_cancel_wake(c->w);
    return NULL;
}

static uint32_t sleeper_started;
static void *sleep_on_word(void *arg)
{
    struct timespec d;
    shk_deadline_after(&d, 5.0);
    shk_store_seq_cst(&sleeper_started, 1);
    shk_futex_wait(arg, 0, &d);
    return NULL;
}

static void test_cancel_word(void)
{
    for (int round = 0; round < 400; round++) {
        struct toy t = {.target = 1, .spin_ns = UINT32_MAX};
        uint32_t cancel = 0;
        int poll = round % 4 == 3;
        struct shk_wait w = SHK_WAIT_INIT(SHK_FOREVER, SHK_WAIT_NOSIGNALS);
        w.cancel = &cancel;
        /* spread over: at once, within the spin, around the first sleep, asleep on the
         * word alone (1..8 ms), asleep on both words (50 ms) */
        uint64_t delay = round < 10 ? 50000000u
                         : round < 110 ? 1000000u + (uint64_t)(round * 70001u) % 7000000u
                         : (uint64_t)(round * 997u) % 400000u;
        struct canceller c = {&w, delay};
        pthread_t th;
        pthread_create(&th, NULL, cancel_later, &c);
        uint64_t t0 = shk_now_ns();
        int r;
        if (poll) {
            poll_left = 1 << 30;
            r = shk_wait_run(&poll_op, NULL, &w);
        } else {
            r = shk_wait_run(round % 2 ? &toy_op : &toy_nospin_op, &t, &w);
        }
        uint64_t took = shk_now_ns() - t0;
        pthread_join(th, NULL);
        CHECK_EQ(r, ECANCELED);
        CHECK(took < delay + 1000000000u); /* never the whole (infinite) wait */
        CHECK_EQ(t.waiters, 0);
        CHECK(w.sleeping_on == NULL);
        if (!poll)
            CHECK_EQ(t.gave_up, ECANCELED);
    }
    /* a short sleep on the object's word alone is woken through sleeping_on: a thread
     * asleep on a word (5 s) that a wait names there */
    static uint32_t word, sw_cancel;
    static struct shk_wait sw;
    sw = SHK_WAIT_INIT(SHK_FOREVER, 0);
    sw.cancel = &sw_cancel;
    pthread_t th;
    uint64_t t0 = shk_now_ns();
    pthread_create(&th, NULL, sleep_on_word, &word);
    while (shk_load_seq_cst(&sleeper_started) == 0)
        shk_cpu_relax();
    shk_store_seq_cst(&sw.sleeping_on, &word);
    struct timespec d = {0, 20000000};
    nanosleep(&d, NULL); /* (asleep by now, or it sees the word change: either way woken) */
    shk_wait_cancel_wake(&sw);
    pthread_join(th, NULL);
    CHECK(shk_now_ns() - t0 < 4000000000u);
    CHECK_EQ(sw_cancel, 1);
    /* an attempt that succeeds wins over a cancel that comes after it */
    struct toy t = {.word = 3, .target = 1};
    uint32_t cancel = 0;
    struct shk_wait w = SHK_WAIT_INIT(SHK_FOREVER, 0);
    w.cancel = &cancel;
    CHECK_EQ(shk_wait_run(&toy_op, &t, &w), 0);
    cancel = 1; /* already set: not even one sleep */
    t.word = 0;
    w = SHK_WAIT_INIT(SHK_FOREVER, 0);
    w.cancel = &cancel;
    CHECK_EQ(shk_wait_run(&toy_op, &t, &w), ECANCELED);
    CHECK_EQ(t.attempts, 2);
}

/* SHK_SPIN_PROBE: a spinner that shares its CPU with a busy thread finds its yields give
 * the CPU away, stops spinning and says so in *busy. */
static uint32_t probe_busy_word;
static void probe_spin(void *obj, struct shk_spin *out)
{
    struct toy *t = obj;
    out->budget_ns = &t->spin_ns;
    out->gate_ms = NULL;
    out->busy = &probe_busy_word;
    out->max_ns = 1000000000u; /* a second: only the probe can end it early */
    out->policy = SHK_SPIN_PROBE;
}
static const struct shk_wait_op probe_op = {"probe", toy_attempt, toy_give_up, probe_spin};

static volatile int hog_stop;
static void *hog(void *arg)
{
    while (!hog_stop)
        ;
    return NULL;
}

static void test_spin_probe(void)
{
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(0, &one);
    cpu_set_t saved;
    pthread_getaffinity_np(pthread_self(), sizeof saved, &saved);
    CHECK_EQ(pthread_setaffinity_np(pthread_self(), sizeof one, &one), 0);
    pthread_t th;
    hog_stop = 0;
    pthread_create(&th, NULL, hog, NULL);
    CHECK_EQ(pthread_setaffinity_np(th, sizeof one, &one), 0);
    struct toy t = {.target = 1, .spin_ns = 500000000u};
    probe_busy_word = 0;
    struct shk_wait w = SHK_WAIT_INIT(shk_now_ns() + 300000000u, SHK_WAIT_NOSIGNALS);
    uint64_t t0 = shk_now_ns();
    CHECK_EQ(shk_wait_run(&probe_op, &t, &w), ETIMEDOUT);
    CHECK_EQ(probe_busy_word, SHK_SPIN_BUSY_WAITS);
    CHECK(w.slept); /* it went to sleep after the probe, not after 300 ms of spinning */
    CHECK(shk_now_ns() - t0 >= 300000000u);
    hog_stop = 1;
    pthread_join(th, NULL);
    pthread_setaffinity_np(pthread_self(), sizeof saved, &saved);
}

static void test_liveness_cadence(void)
{
    struct shk_wait w = SHK_WAIT_INIT(SHK_FOREVER, 0);
    uint64_t now = 1000000000ull;
    CHECK(shk_wait_liveness_due(&w, now));          /* at once */
    CHECK(!shk_wait_liveness_due(&w, now + 999999)); /* then after 1 ms */
    CHECK(shk_wait_liveness_due(&w, now + 1000000));
    CHECK_EQ(w.live_step, 2000000);
    for (int i = 0; i < 20; i++)
        shk_wait_liveness_due(&w, w.next_live);
    CHECK_EQ(w.live_step, shk_wait_cfg.liveness_ns); /* capped */
}

/* POLL: nothing to watch, tried again at retry_ns. */
static int poll_attempt(void *obj, struct shk_wait *w)
{
    if (--poll_left <= 0)
        return 0;
    shk_wait_on_poll(w, shk_now_ns() + 2000000);
    return EAGAIN;
}
static const struct shk_wait_op poll_op = {"poll", poll_attempt, NULL, NULL};

static void test_poll(void)
{
    poll_left = 5;
    struct shk_wait w = SHK_WAIT_INIT(deadline_in(5), SHK_WAIT_NOSIGNALS);
    uint64_t t0 = shk_now_ns();
    CHECK_EQ(shk_wait_run(&poll_op, NULL, &w), 0);
    uint64_t took = shk_now_ns() - t0;
    CHECK(took >= 6000000u && took < 2000000000u); /* 3 sleeps of 2 ms at least */
}

/* OFD: wait for a byte lock another open file description holds. */
struct ofd_call {
    int fd;
};
static int ofd_attempt(void *obj, struct shk_wait *w)
{
    struct ofd_call *c = obj;
    int r = shk_ofd_lock(c->fd, 100, F_RDLCK, 0);
    if (r != EAGAIN)
        return r;
    shk_wait_on_ofd(w, c->fd, 100, F_RDLCK);
    return EAGAIN;
}
static const struct shk_wait_op ofd_op = {"ofd", ofd_attempt, NULL, NULL};

static void *ofd_release(void *arg)
{
    int fd = *(int *)arg;
    struct timespec d = {0, 50000000};
    nanosleep(&d, NULL);
    shk_ofd_lock(fd, 100, F_UNLCK, 0);
    return NULL;
}

static void test_ofd(void)
{
    char path[] = "/tmp/shmkit-test-wait-XXXXXX";
    int fd1 = mkstemp(path);
    CHECK(fd1 >= 0);
    int fd2 = open(path, O_RDWR);
    unlink(path);
    CHECK_EQ(shk_ofd_lock(fd1, 100, F_WRLCK, 0), 0);
    struct ofd_call c = {fd2};
    /* with a deadline: polled, gives up in time */
    struct shk_wait w = SHK_WAIT_INIT(deadline_in(0.05), SHK_WAIT_NOSIGNALS);
    CHECK_EQ(shk_wait_run(&ofd_op, &c, &w), ETIMEDOUT);
    /* without one: queued in the kernel, gets it when released */
    pthread_t th;
    pthread_create(&th, NULL, ofd_release, &fd1);
    w = SHK_WAIT_INIT(SHK_FOREVER, SHK_WAIT_NOSIGNALS);
    CHECK_EQ(shk_wait_run(&ofd_op, &c, &w), 0);
    pthread_join(th, NULL);
    int conflict = 0;
    CHECK_EQ(shk_ofd_probe(fd1, 100, F_WRLCK, &conflict), 0);
    CHECK_EQ(conflict, 1); /* fd2 holds its read lock */
    close(fd1);
    close(fd2);
}

/* The robust mutex through the driver: contention with sleeps (no wake-up lost: every
 * thread finishes), the owner's own lock is EDEADLK, a deadline is kept, a dead
 * owner is reported as SHK_EOWNERDEAD. */
static pthread_mutex_t *g_mx;
static uint64_t g_count;

static void *mutex_worker(void *arg)
{
    for (int i = 0; i < 20000; i++) {
        if (shk_mutex_lock(g_mx, NULL) != 0)
            abort();
        g_count++;
        if ((i & 255) == 0)
            sched_yield(); /* hold it across a reschedule now and then: others sleep */
        shk_mutex_unlock(g_mx);
    }
    return NULL;
}

static void test_mutex(void)
{
    g_mx = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    CHECK(g_mx != MAP_FAILED);
    CHECK_EQ(shk_mutex_init(g_mx), 0);
    pthread_t th[4];
    for (int i = 0; i < 4; i++)
        pthread_create(&th[i], NULL, mutex_worker, NULL);
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    CHECK_EQ(g_count, 80000);
    CHECK_EQ(shk_mutex_lock(g_mx, NULL), 0);
    CHECK_EQ(shk_mutex_lock(g_mx, NULL), EDEADLK);
    CHECK_EQ(shk_mutex_unlock(g_mx), 0);
    /* held by a child: a deadline is kept; then the child dies holding it */
    int ready[2];
    CHECK_EQ(pipe(ready), 0);
    pid_t pid = fork();
    if (pid == 0) {
        shk_mutex_lock(g_mx, NULL);
        char c = 1;
        if (write(ready[1], &c, 1) != 1)
            _exit(2);
        pause();
        _exit(0);
    }
    char c;
    CHECK_EQ(read(ready[0], &c, 1), 1);
    struct timespec d;
    shk_deadline_after(&d, 0.05);
    uint64_t t0 = shk_now_ns();
    CHECK_EQ(shk_mutex_lock(g_mx, &d), ETIMEDOUT);
    CHECK(shk_now_ns() - t0 >= 50000000u);
    kill(pid, SIGKILL);
    int st;
    waitpid(pid, &st, 0);
    CHECK_EQ(shk_mutex_lock(g_mx, NULL), SHK_EOWNERDEAD);
    CHECK_EQ(shk_mutex_consistent(g_mx), 0);
    CHECK_EQ(shk_mutex_unlock(g_mx), 0);
    close(ready[0]);
    close(ready[1]);
    munmap(g_mx, 4096);
}

int main(void)
{
    test_results();
    test_spin_catches_quick_handoff();
    test_spin_won_learning();
    test_sleep_and_wake();
    test_slices();
    test_cancel();
    test_cancel_word();
    test_spin_probe();
    test_liveness_cadence();
    test_poll();
    test_ofd();
    test_mutex();
    TEST_MAIN_END();
}
