/*
 * aiowait.c - one awaited wait driven step by step (see aiowait.h).
 */
#include "aiowait.h"

#include <errno.h>
#include <unistd.h>

#include "errors.h"
#include "futex.h"

int shk_aio_give_up(struct shk_hub *hub, struct shk_aio_wait *a, int why)
{
    int r = why;
    if (a->started) {
        shk_hub_unwatch(hub, &a->hw);
        shk_wait_disarm(&a->w);
        r = shk_wait_cancel(a->op, a->obj, &a->w, why);
        if (why == ECANCELED && a->watched && a->w.on.kind == SHK_WAITON_FUTEX && a->w.on.word)
            shk_futex_wake(a->w.on.word, 1); /* the word is mapped: the caller's promise */
    }
    a->watched = 0;
    a->end = why == ECANCELED ? SHK_AIO_CLOSED : SHK_AIO_DONE;
    return r;
}

/* The first attempt: one (SHK_WAIT_TRY), or an attempt, the loop's spin, an armed one. */
static int first_attempt(struct shk_aio_wait *a, struct shk_loop_spin *spin)
{
    a->started = 1;
    a->w.flags |= SHK_WAIT_NOSIGNALS;
    if (a->w.flags & SHK_WAIT_TRY)
        return shk_wait_run(a->op, a->obj, &a->w); /* EBUSY when not now */
    int r = a->op->attempt(a->obj, &a->w);
    if (r == EAGAIN && spin && a->w.on.kind == SHK_WAITON_FUTEX && !shk_wait_expired(&a->w))
        r = shk_loop_spin(spin, a->op, a->obj, &a->w);
    if (r == EAGAIN) {
        shk_wait_disarm(&a->w);
        a->w.flags |= SHK_WAIT_ARMED;
        r = a->op->attempt(a->obj, &a->w);
    }
    return r;
}

/* The attempt said "not now": hand its (word, value), or a timer, to the hub. */
static int watch(struct shk_hub *hub, struct shk_aio_wait *a)
{
    struct shk_hub_wait *hw = &a->hw;
    if (a->w.on.kind == SHK_WAITON_FUTEX) {
        hw->word = a->w.on.word;
        hw->value = a->w.on.value;
    } else if (a->w.on.kind == SHK_WAITON_POLL) {
        hw->word = NULL; /* a timer */
    } else {
        shk_aio_give_up(hub, a, ECANCELED);
        a->end = SHK_AIO_NOT_AWAITABLE;
        return ENOTSUP;
    }
    hw->retry_ns = a->w.on.retry_ns;
    hw->deadline_ns = a->w.deadline_ns;
    int e = shk_hub_watch(hub, hw);
    if (e) {
        shk_aio_give_up(hub, a, ECANCELED);
        a->end = SHK_AIO_HUB_FAILED;
        return e;
    }
    a->watched = 1;
    return EAGAIN;
}

static int step(struct shk_hub *hub, struct shk_aio_wait *a, struct shk_loop_spin *spin,
                int live)
{
    /* normally READY and drained (IDLE) by now; stepped early, it leaves the hub first
     * (under the hub's mutex: then why is settled) */
    if (a->started)
        shk_hub_unwatch(hub, &a->hw);
    uint32_t why = a->hw.why;
    a->hw.why = SHK_HUB_NONE;
    if (why == SHK_HUB_CLOSED || !live) {
        shk_aio_give_up(hub, a, ECANCELED);
        return ECANCELED;
    }
    if (why == SHK_HUB_FAULT) {
        /* the kernel could not resolve the word: do not touch that memory again */
        a->started = 0;
        a->end = SHK_AIO_FAULT;
        return EFAULT;
    }
    shk_clear_detail();
    int r;
    if (!a->started) {
        r = first_attempt(a, spin);
    } else {
        shk_wait_disarm(&a->w);
        a->watched = 0;
        r = a->op->attempt(a->obj, &a->w);
    }
    /* ETIMEDOUT: an internal mutex met the deadline (wait.h), as a timeout */
    if (r == ETIMEDOUT || (r == EAGAIN && shk_wait_expired(&a->w)))
        return shk_aio_give_up(hub, a, ETIMEDOUT);
    if (r == EAGAIN)
        return watch(hub, a);
    shk_wait_disarm(&a->w);
    a->end = SHK_AIO_DONE;
    return r;
}

int shk_aio_hub_get(struct shk_aio_hub *h)
{
    if (h->pid == getpid())
        return 0;
    int r = shk_hub_init(&h->hub, h->mode, h->max_threads); /* (a parent's: forgotten) */
    h->pid = r ? 0 : getpid();
    return r;
}

int shk_aio_hub_here(const struct shk_aio_hub *h)
{
    return h->pid == getpid();
}

int shk_aio_hub_configure(struct shk_aio_hub *h, int mode, uint32_t max_threads)
{
    if (shk_aio_hub_here(h) && (mode != h->mode || max_threads != h->max_threads)) {
        struct shk_hub_stats st;
        shk_hub_get_stats(&h->hub, &st);
        if (st.waits)
            return EBUSY;
        shk_hub_destroy(&h->hub); /* nothing is watched: its threads stop */
        h->pid = 0;
    }
    h->mode = mode;
    h->max_threads = max_threads;
    return 0;
}

void shk_aio_stats(struct shk_hub *hub, const struct shk_loop_spin *spin,
                   struct shk_aio_stats *st)
{
    shk_hub_get_stats(hub, &st->hub);
    st->futex_waitv_supported = shk_hub_waitv_supported();
    st->spins = spin->spins;
    st->spins_won = spin->spins_won;
    st->spun_ns = spin->spun_ns;
}

#define AS(member, kind) SHK_FIELD_AS(#member, struct shk_aio_stats, hub.member, kind)
#define AL(member, kind) SHK_FIELD(struct shk_aio_stats, member, kind)
const struct shk_field shk_aio_stats_fields[] = {
    AS(threads, U32), AS(max_threads, U32), AS(slots, U64), AS(waits, U64), AS(watches, U64),
    AS(slots_shared, U64), AS(doorbells, U64), AS(sleeps, U64), AS(ready, U64),
    AS(retries, U64), AS(forwarded, U64), AS(faults, U64), AL(futex_waitv_supported, BOOL),
    AL(spins, U64), AL(spins_won, U64), AL(spun_ns, U64), {NULL, 0, 0},
};
#undef AS
#undef AL

int shk_aio_step(struct shk_hub *hub, struct shk_aio_wait *a, struct shk_loop_spin *spin,
                 int live)
{
    /* the attempts run in the event loop's thread: the internal mutexes they take honour
     * the wait's deadline (wait.h, shk_wait_ambient_ns) */
    uint64_t saved = shk_wait_ambient_push(a->w.deadline_ns);
    int r = step(hub, a, spin, live);
    shk_wait_ambient_pop(saved);
    return r;
}
