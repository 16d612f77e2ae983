/* One awaited wait driven step by step (aiowait.h), against a real hub in both modes
 * (futex_waitv when the kernel has it, and the fallback): ready at once; "not now", then
 * watched until another thread changes the word and wakes it; the deadline (the attempts
 * see it as the ambient deadline; give_up(ETIMEDOUT) undoes them); a closed handle (by the
 * hub's close_group, or said by the caller) and a cancel from outside (give_up(ECANCELED),
 * out of the hub); a non-blocking wait (EBUSY); a timer (POLL); an attempt that names
 * nothing to watch; the event loop's spin; the process's hub (its settings, fork).  Words
 * live in a MAP_SHARED mapping. */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "aiowait.h"
#include "atomics.h"
#include "futex.h"

enum { ON_FUTEX, ON_POLL, ON_NOTHING, ON_MUTEX_TIMEOUT };

struct obj {
    uint32_t *word;      /* 0: busy; else the attempt succeeds */
    int on;              /* what a busy attempt waits on (ON_*) */
    int attempts, armed, give_ups, why;
    uint64_t ambient;    /* shk_wait_ambient_ns during the last attempt */
};

static int attempt(void *p, struct shk_wait *w)
{
    struct obj *o = p;
    o->attempts++;
    o->armed += (w->flags & SHK_WAIT_ARMED) != 0;
    o->ambient = shk_wait_ambient_ns;
    if (shk_load_acquire(o->word) != 0)
        return 0;
    switch (o->on) {
    case ON_POLL:
        shk_wait_on_poll(w, shk_now_ns() + 5000000u);
        return EAGAIN;
    case ON_NOTHING:
        w->on.kind = SHK_WAITON_NONE;
        return EAGAIN;
    case ON_MUTEX_TIMEOUT:
        return ETIMEDOUT; /* an internal mutex met the deadline */
    default:
        shk_wait_on_futex(w, o->word, 0, NULL);
        return EAGAIN;
    }
}

static int give_up(void *p, struct shk_wait *w, int why)
{
    struct obj *o = p;
    o->give_ups++;
    o->why = why;
    return why;
}

static const struct shk_wait_op test_op = {"aio test", attempt, give_up, NULL};

static struct shk_hub hub;
static struct shk_hub_notifier notifier;
static uint32_t *words;
static const char key[] = "handle";

static void start(struct shk_aio_wait *a, struct obj *o, int on, uint32_t *word,
                  uint64_t deadline, uint32_t flags)
{
    memset(o, 0, sizeof *o);
    o->word = word;
    o->on = on;
    *a = (struct shk_aio_wait){.op = &test_op, .obj = o, .w = SHK_WAIT_INIT(deadline, flags)};
    a->hw.keys[0] = key;
    a->hw.notifier = &notifier;
    a->hw.owner = a;
}

static uint64_t hub_waits(void)
{
    struct shk_hub_stats st;
    shk_hub_get_stats(&hub, &st);
    return st.waits;
}

/* Until the hub reports a READY (2 s at most): 1 if it was a. */
static int ready(struct shk_aio_wait *a)
{
    struct pollfd p = {notifier.efd, POLLIN, 0};
    struct shk_hub_wait *got[4];
    for (int i = 0; i < 200; i++) {
        if (poll(&p, 1, 10) > 0 && shk_hub_drain(&notifier, got, 4) > 0)
            return got[0] == &a->hw;
    }
    return 0;
}

static void *wake_later(void *arg)
{
    uint32_t *word = arg;
    usleep(20000);
    shk_store_seq_cst(word, 1);
    shk_futex_wake(word, INT32_MAX);
    return NULL;
}

static void test_mode(int mode)
{
    struct shk_aio_wait a;
    struct obj o;
    CHECK_EQ(shk_hub_init(&hub, mode, 0), 0);
    CHECK_EQ(shk_hub_notifier_init(&notifier, &hub), 0);

    /* ready at once: one attempt, nothing watched */
    words[0] = 1;
    start(&a, &o, ON_FUTEX, &words[0], SHK_FOREVER, 0);
    CHECK_EQ(shk_aio_step(&hub, &a, NULL, 1), 0);
    CHECK_EQ(a.end, SHK_AIO_DONE);
    CHECK_EQ(o.attempts, 1);
    CHECK_EQ(hub_waits(), 0);

    /* not now: an attempt, an armed one, watched; another thread changes the word */
    words[1] = 0;
    start(&a, &o, ON_FUTEX, &words[1], SHK_FOREVER, 0);
    CHECK_EQ(shk_aio_step(&hub, &a, NULL, 1), EAGAIN);
    CHECK_EQ(a.end, SHK_AIO_RUNNING);
    CHECK_EQ(o.attempts, 2);
    CHECK_EQ(o.armed, 1);
    CHECK(a.watched && a.hw.word == &words[1] && a.hw.value == 0);
    CHECK_EQ(hub_waits(), 1);
    pthread_t t;
    CHECK_EQ(pthread_create(&t, NULL, wake_later, &words[1]), 0);
    CHECK(ready(&a));
    CHECK_EQ(a.hw.why, SHK_HUB_CHANGED);
    CHECK_EQ(shk_aio_step(&hub, &a, NULL, 1), 0);
    CHECK_EQ(a.end, SHK_AIO_DONE);
    CHECK_EQ(o.give_ups, 0);
    CHECK_EQ(hub_waits(), 0);
    pthread_join(t, NULL);

    /* the deadline: the attempts run under it; the hub reports it; give_up(ETIMEDOUT) */
    words[2] = 0;
    uint64_t deadline = shk_now_ns() + 30000000u;
    start(&a, &o, ON_FUTEX, &words[2], deadline, 0);
    CHECK_EQ(shk_aio_step(&hub, &a, NULL, 1), EAGAIN);
    CHECK_EQ(o.ambient, deadline);
    CHECK_EQ(shk_wait_ambient_ns, 0);
    CHECK(ready(&a));
    CHECK_EQ(a.hw.why, SHK_HUB_DEADLINE);
    CHECK_EQ(shk_aio_step(&hub, &a, NULL, 1), ETIMEDOUT);
    CHECK_EQ(a.end, SHK_AIO_DONE);
    CHECK_EQ(o.give_ups, 1);
    CHECK_EQ(o.why, ETIMEDOUT);
    CHECK_EQ(hub_waits(), 0);

    /* an internal mutex met the deadline: a timeout too */
    start(&a, &o, ON_MUTEX_TIMEOUT, &words[2], deadline, 0);
    CHECK_EQ(shk_aio_step(&hub, &a, NULL, 1), ETIMEDOUT);
    CHECK_EQ(o.why, ETIMEDOUT);

    /* closed: the hub's close_group, then the step undoes it */
    words[3] = 0;
    start(&a, &o, ON_FUTEX, &words[3], SHK_FOREVER, 0);
    CHECK_EQ(shk_aio_step(&hub, &a, NULL, 1), EAGAIN);
    CHECK_EQ(shk_hub_close_group(&hub, key), 1);
    CHECK(ready(&a));
    CHECK_EQ(shk_aio_step(&hub, &a, NULL, 1), ECANCELED);
    CHECK_EQ(a.end, SHK_AIO_CLOSED);
    CHECK_EQ(o.give_ups, 1);
    CHECK_EQ(o.why, ECANCELED);
    CHECK_EQ(o.attempts, 2); /* no attempt after the close */
    CHECK_EQ(hub_waits(), 0);

    /* closed as the caller says (stepped early, still watched): out of the hub */
    start(&a, &o, ON_FUTEX, &words[3], SHK_FOREVER, 0);
    CHECK_EQ(shk_aio_step(&hub, &a, NULL, 1), EAGAIN);
    CHECK_EQ(shk_aio_step(&hub, &a, NULL, 0), ECANCELED);
    CHECK_EQ(a.end, SHK_AIO_CLOSED);
    CHECK_EQ(a.hw.state, SHK_HUB_IDLE);
    CHECK_EQ(hub_waits(), 0);

    /* cancelled from outside while watched */
    start(&a, &o, ON_FUTEX, &words[3], SHK_FOREVER, 0);
    CHECK_EQ(shk_aio_step(&hub, &a, NULL, 1), EAGAIN);
    CHECK_EQ(shk_aio_give_up(&hub, &a, ECANCELED), ECANCELED);
    CHECK_EQ(o.why, ECANCELED);
    CHECK(!a.watched && a.hw.state == SHK_HUB_IDLE);
    CHECK_EQ(hub_waits(), 0);
    /* ... and one never started: nothing to undo */
    start(&a, &o, ON_FUTEX, &words[3], SHK_FOREVER, 0);
    CHECK_EQ(shk_aio_give_up(&hub, &a, ECANCELED), ECANCELED);
    CHECK_EQ(o.give_ups, 0);

    /* a wait that may not wait: one attempt, EBUSY */
    start(&a, &o, ON_FUTEX, &words[3], SHK_FOREVER, SHK_WAIT_TRY);
    CHECK_EQ(shk_aio_step(&hub, &a, NULL, 1), EBUSY);
    CHECK_EQ(a.end, SHK_AIO_DONE);
    CHECK_EQ(o.attempts, 1);
    CHECK_EQ(hub_waits(), 0);

    /* a timer: no word, READY(RETRY) at its retry time */
    words[4] = 0;
    start(&a, &o, ON_POLL, &words[4], SHK_FOREVER, 0);
    CHECK_EQ(shk_aio_step(&hub, &a, NULL, 1), EAGAIN);
    CHECK(a.hw.word == NULL);
    CHECK(ready(&a));
    CHECK_EQ(a.hw.why, SHK_HUB_RETRY);
    words[4] = 1;
    CHECK_EQ(shk_aio_step(&hub, &a, NULL, 1), 0);

    /* nothing the hub can watch */
    start(&a, &o, ON_NOTHING, &words[3], SHK_FOREVER, 0);
    CHECK_EQ(shk_aio_step(&hub, &a, NULL, 1), ENOTSUP);
    CHECK_EQ(a.end, SHK_AIO_NOT_AWAITABLE);
    CHECK_EQ(o.give_ups, 1);
    CHECK_EQ(hub_waits(), 0);

    /* the event loop's spin runs between the first attempt and the armed one */
    static struct shk_loop_spin spin = {.max_ns = 20000};
    uint64_t spins = spin.spins;
    start(&a, &o, ON_FUTEX, &words[3], SHK_FOREVER, 0);
    CHECK_EQ(shk_aio_step(&hub, &a, &spin, 1), EAGAIN);
    CHECK_EQ(spin.spins, spins + 1);
    CHECK_EQ(o.armed, 1);
    shk_aio_give_up(&hub, &a, ECANCELED);

    /* the statistics: the hub's and the spin's */
    struct shk_aio_stats st;
    shk_aio_stats(&hub, &spin, &st);
    CHECK_EQ(st.hub.mode, mode);
    CHECK_EQ(st.hub.watches, 7); /* one per EAGAIN above */
    CHECK_EQ(st.hub.waits, 0);
    CHECK_EQ(st.spins, spin.spins);
    CHECK_EQ(st.futex_waitv_supported, shk_hub_waitv_supported());

    shk_hub_notifier_destroy(&notifier);
    shk_hub_destroy(&hub);
}

/* The process's hub (struct shk_aio_hub): set up at first use, kept, stopped by new settings
 * only while nothing is watched (EBUSY while a wait is), set up anew in a fork child. */
static void test_process_hub(void)
{
    static struct shk_aio_hub h = {.mode = SHK_HUB_FALLBACK};
    struct shk_hub_stats st;
    struct shk_aio_wait a;
    struct obj o;
    CHECK(!shk_aio_hub_here(&h));
    CHECK_EQ(shk_aio_hub_get(&h), 0);
    CHECK(shk_aio_hub_here(&h));
    CHECK_EQ(shk_aio_hub_get(&h), 0); /* kept: the notifier below stays valid */
    CHECK_EQ(shk_hub_notifier_init(&notifier, &h.hub), 0);
    CHECK_EQ(shk_aio_hub_configure(&h, SHK_HUB_FALLBACK, 0), 0); /* the same: kept */
    CHECK(shk_aio_hub_here(&h));

    /* a wait is watched: no new settings */
    words[5] = 0;
    start(&a, &o, ON_FUTEX, &words[5], SHK_FOREVER, 0);
    CHECK_EQ(shk_aio_step(&h.hub, &a, NULL, 1), EAGAIN);
    CHECK_EQ(shk_aio_hub_configure(&h, SHK_HUB_FALLBACK, 8), EBUSY);
    CHECK(shk_aio_hub_here(&h));
    CHECK_EQ(h.max_threads, 0);

    /* a fork child sets up its own (the parent's, with a thread watching, is forgotten) */
    pid_t pid = fork();
    if (pid == 0) {
        int bad = shk_aio_hub_here(&h) || shk_aio_hub_get(&h) != 0 || !shk_aio_hub_here(&h);
        shk_hub_get_stats(&h.hub, &st);
        bad |= st.waits != 0 || st.threads != 0;
        _exit(bad);
    }
    int status = -1;
    CHECK_EQ(waitpid(pid, &status, 0), pid);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    CHECK(shk_aio_hub_here(&h));
    shk_hub_get_stats(&h.hub, &st);
    CHECK_EQ(st.waits, 1);
    CHECK_EQ(shk_aio_give_up(&h.hub, &a, ECANCELED), ECANCELED);

    /* nothing watched: stopped now, set up with the new settings at the next use */
    shk_hub_notifier_destroy(&notifier);
    CHECK_EQ(shk_aio_hub_configure(&h, SHK_HUB_FALLBACK, 8), 0);
    CHECK(!shk_aio_hub_here(&h));
    CHECK_EQ(shk_aio_hub_get(&h), 0);
    shk_hub_get_stats(&h.hub, &st);
    CHECK_EQ(st.max_threads, 8);
    CHECK_EQ(st.mode, SHK_HUB_FALLBACK);
    /* a mode the kernel lacks: the set-up fails and nothing is set up */
    if (!shk_hub_waitv_supported()) {
        CHECK_EQ(shk_aio_hub_configure(&h, SHK_HUB_WAITV, 0), 0);
        CHECK_EQ(shk_aio_hub_get(&h), ENOSYS);
        CHECK(!shk_aio_hub_here(&h));
    } else {
        shk_hub_destroy(&h.hub);
    }
}

int main(void)
{
    words = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    CHECK(words != MAP_FAILED);
    test_mode(SHK_HUB_FALLBACK);
    if (shk_hub_waitv_supported())
        test_mode(SHK_HUB_WAITV);
    test_process_hub();
    TEST_MAIN_END();
}
