/*
 * waitv.c - the readiness hub (see waitv.h): a few threads blocked in futex_waitv over
 * the (word, value) pairs of every pending asynchronous wait of the process, plus one
 * private doorbell word each, through which the set is changed.
 *
 * Structures, all under the hub's mutex:
 *   - a slot per distinct (word, value) pair (a hash table finds it), holding the list of
 *     waits on that pair and the earliest time one of them must be looked at;
 *   - a thread holds up to SHK_HUB_SLOTS slots in an array (order does not matter:
 *     removal moves the last one into the hole), plus, for thread 0, the timer slot of
 *     waits without a word;
 *   - a READY wait sits in its notifier's list until drained.
 * A thread's loop: look at every slot it holds (changed word -> all its waits READY;
 * time come -> READY(DEADLINE) / one READY(RETRY)), build the futex_waitv array from the
 * slots left, sleep, and on return mark the slot the kernel names (if it still exists;
 * else pass the wake-up on).  Reading a word is safe because a slot exists only while a
 * wait on it is watched, and the watcher keeps the word mapped until it unwatches, which
 * takes this mutex.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "waitv.h"

#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "atomics.h"
#include "futex.h"

#if defined(SYS_futex_waitv) && defined(FUTEX_32)
#define HAVE_WAITV 1
#else
#define HAVE_WAITV 0
#endif

#define FOREVER UINT64_MAX
#define THREAD_STACK (256u << 10)

struct shk_hub_slot {
    uint32_t *word;                  /* NULL: the timer slot */
    uint32_t value;
    uint64_t id;                     /* unique: the loop recognises its slots after sleeping */
    struct shk_hub_thread *thread;
    uint32_t index;                  /* in thread->slots */
    struct shk_hub_wait *head;       /* its waits (doubly linked) */
    uint32_t nwaits;
    uint64_t until;                  /* earliest retry or deadline among its waits */
    struct shk_hub_slot *hnext;      /* hash chain */
};

struct shk_hub_thread {
    struct shk_hub *hub;
    pthread_t tid;
    uint32_t doorbell;               /* private futex word: bumped to make it re-read */
    int sleeping;                    /* in its system call */
    uint32_t *sleeping_on;           /* fallback: the word it sleeps on */
    int stop;
    uint32_t nslots, cap, rr;
    struct shk_hub_slot **slots;
    struct shk_hub_slot *timer;      /* thread 0: waits without a word */
};

static uint64_t next_slot_id = 1;    /* ids only need to differ within a thread */

/* ---- the system calls ------------------------------------------------------------------ */

int shk_hub_waitv_supported(void)
{
#if HAVE_WAITV
    static int cached = -1;
    int c = shk_load_relaxed(&cached);
    if (c < 0) {
        /* nr_futexes = 0 is EINVAL where the call exists, ENOSYS (or EPERM under a
         * seccomp filter) where it does not */
        long r = syscall(SYS_futex_waitv, NULL, 0, 0, NULL, CLOCK_MONOTONIC);
        c = r < 0 && errno == EINVAL;
        shk_store_relaxed(&cached, c);
    }
    return c;
#else
    return 0;
#endif
}

static void ns_to_ts(uint64_t t, struct timespec *ts)
{
    if (t > (uint64_t)1 << 62)
        t = (uint64_t)1 << 62;
    ts->tv_sec = (time_t)(t / 1000000000ull);
    ts->tv_nsec = (long)(t % 1000000000ull);
}

static void wake_private(uint32_t *word)
{
    syscall(SYS_futex, word, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

/* ---- slots and waits (hub mutex held) -------------------------------------------------- */

static uint64_t wait_until(const struct shk_hub_wait *w)
{
    return w->retry_ns < w->deadline_ns ? w->retry_ns : w->deadline_ns;
}

static void slot_recompute(struct shk_hub_slot *s)
{
    uint64_t u = FOREVER;
    for (struct shk_hub_wait *w = s->head; w; w = w->next) {
        uint64_t x = wait_until(w);
        if (x < u)
            u = x;
    }
    s->until = u;
}

static uint32_t hash_of(const uint32_t *word, uint32_t value)
{
    uint64_t k = (uint64_t)(uintptr_t)word ^ ((uint64_t)value * 0x9e3779b97f4a7c15ull);
    k ^= k >> 29;
    k *= 0xbf58476d1ce4e5b9ull;
    k ^= k >> 32;
    return (uint32_t)(k % SHK_HUB_HASH);
}

static struct shk_hub_slot *slot_find(struct shk_hub *h, uint32_t *word, uint32_t value)
{
    for (struct shk_hub_slot *s = h->hash[hash_of(word, value)]; s; s = s->hnext)
        if (s->word == word && s->value == value)
            return s;
    return NULL;
}

/* Make thread t look at its set again (it sleeps with an older one). */
static void thread_ring(struct shk_hub *h, struct shk_hub_thread *t)
{
    shk_store_seq_cst(&t->doorbell, t->doorbell + 1);
    if (!t->sleeping)
        return; /* it re-reads everything before it sleeps again */
    h->st.doorbells++;
    if (h->mode == SHK_HUB_FALLBACK && t->sleeping_on && t->sleeping_on != &t->doorbell)
        /* asleep on a word of its own set: only a wake-up of that word reaches it (every
         * waiter of the word wakes and goes back to sleep; a mapping that went away
         * meanwhile gives EFAULT, harmless) */
        shk_futex_wake(t->sleeping_on, INT_MAX);
    else
        wake_private(&t->doorbell);
}

static void *thread_main(void *arg);

static int thread_start(struct shk_hub *h)
{
    if (h->nthreads == h->cap_threads) {
        uint32_t cap = h->cap_threads ? 2 * h->cap_threads : 8;
        struct shk_hub_thread **nt = realloc(h->threads, cap * sizeof *nt);
        if (!nt)
            return ENOMEM;
        h->threads = nt;
        h->cap_threads = cap;
    }
    struct shk_hub_thread *t = calloc(1, sizeof *t);
    if (!t)
        return ENOMEM;
    t->hub = h;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, THREAD_STACK);
    /* the thread inherits a mask blocking every signal: signals go to the threads that
     * handle them (the interpreter's main thread), never interrupt the hub */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int r = pthread_create(&t->tid, &attr, thread_main, t);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_attr_destroy(&attr);
    if (r) {
        free(t);
        return r == EAGAIN ? EAGAIN : r;
    }
    h->threads[h->nthreads++] = t;
    h->st.threads = h->nthreads;
    return 0;
}

static int thread_add_slot(struct shk_hub_thread *t, struct shk_hub_slot *s)
{
    if (t->nslots == t->cap) {
        uint32_t cap = t->cap ? 2 * t->cap : 8;
        struct shk_hub_slot **ns = realloc(t->slots, cap * sizeof *ns);
        if (!ns)
            return ENOMEM;
        t->slots = ns;
        t->cap = cap;
    }
    s->thread = t;
    s->index = t->nslots;
    t->slots[t->nslots++] = s;
    return 0;
}

/* The thread a new word slot goes to (starting one if need be). */
static int thread_for_slot(struct shk_hub *h, struct shk_hub_thread **out)
{
    struct shk_hub_thread *best = NULL;
    for (uint32_t i = 0; i < h->nthreads; i++) {
        struct shk_hub_thread *t = h->threads[i];
        if (h->mode == SHK_HUB_WAITV) {
            if (t->nslots < SHK_HUB_SLOTS) { /* fill the first that has room: few threads */
                *out = t;
                return 0;
            }
        } else if (!best || t->nslots < best->nslots) {
            best = t;
        }
    }
    if (best && best->nslots == 0) {
        *out = best;
        return 0;
    }
    if (h->nthreads < h->max_threads) {
        int r = thread_start(h);
        if (r == 0) {
            *out = h->threads[h->nthreads - 1];
            return 0;
        }
        if (!best)
            return r;
    }
    if (!best) /* futex_waitv: every thread full and no more allowed */
        return ENOSPC;
    *out = best; /* fallback: share a thread (it takes turns) */
    return 0;
}

static void slot_free(struct shk_hub *h, struct shk_hub_slot *s)
{
    struct shk_hub_thread *t = s->thread;
    if (s->word) {
        struct shk_hub_slot **pp = &h->hash[hash_of(s->word, s->value)];
        while (*pp != s)
            pp = &(*pp)->hnext;
        *pp = s->hnext;
        struct shk_hub_slot *last = t->slots[--t->nslots];
        t->slots[s->index] = last;
        last->index = s->index;
        thread_ring(h, t); /* it must not keep sleeping on this word */
    } else {
        t->timer = NULL;
    }
    h->st.slots--;
    free(s);
}

static void wait_unlink(struct shk_hub_slot *s, struct shk_hub_wait *w)
{
    if (w->prev)
        w->prev->next = w->next;
    else
        s->head = w->next;
    if (w->next)
        w->next->prev = w->prev;
    w->prev = w->next = NULL;
    w->slot = NULL;
    s->nwaits--;
}

/* w (WATCHING) becomes READY for `why`: out of its slot (the caller frees an emptied
 * slot), into its notifier's list; the first of a batch writes the eventfd (under the
 * mutex: a notifier is destroyed only under it, so its fd is still ours). */
static void make_ready(struct shk_hub *h, struct shk_hub_wait *w, uint32_t why)
{
    if (w->state == SHK_HUB_WATCHING)
        wait_unlink(w->slot, w);
    w->state = SHK_HUB_READY;
    w->why = why;
    h->st.waits--;
    h->st.ready++;
    if (why == SHK_HUB_RETRY)
        h->st.retries++;
    struct shk_hub_notifier *n = w->notifier;
    w->next = NULL;
    w->prev = n->tail;
    if (n->tail)
        n->tail->next = w;
    else
        n->head = w;
    n->tail = w;
    if (!n->signalled) {
        n->signalled = 1;
        uint64_t one = 1;
        ssize_t wr = write(n->efd, &one, sizeof one);
        (void)wr; /* EAGAIN only when the counter is full: it is readable then */
    }
}

static void slot_all_ready(struct shk_hub *h, struct shk_hub_slot *s, uint32_t why)
{
    while (s->head)
        make_ready(h, s->head, why);
    slot_free(h, s);
}

/* The slot's time came: waits past their deadline READY(DEADLINE); of those whose retry
 * came, the earliest READY(RETRY) and the others pushed back (see waitv.h). */
static void slot_timed(struct shk_hub *h, struct shk_hub_slot *s, uint64_t now)
{
    struct shk_hub_wait *best = NULL, *next;
    for (struct shk_hub_wait *w = s->head; w; w = next) {
        next = w->next;
        if (w->deadline_ns <= now)
            make_ready(h, w, SHK_HUB_DEADLINE);
        else if (w->retry_ns <= now && !s->word)
            make_ready(h, w, SHK_HUB_RETRY); /* timers are each their own */
        else if (w->retry_ns <= now && (!best || w->retry_ns < best->retry_ns))
            best = w;
    }
    if (best) {
        make_ready(h, best, SHK_HUB_RETRY);
        if (s->word) {
            uint64_t later = now + h->retry_push_ns;
            for (struct shk_hub_wait *w = s->head; w; w = w->next)
                if (w->retry_ns < later)
                    w->retry_ns = later;
        }
    }
    if (s->nwaits == 0)
        slot_free(h, s);
    else
        slot_recompute(s);
}

/* Look at every slot of t: returns the earliest time one must be looked at again. */
static uint64_t thread_scan(struct shk_hub *h, struct shk_hub_thread *t, uint64_t now)
{
    uint64_t earliest = FOREVER;
    for (uint32_t i = t->nslots; i-- > 0;) { /* downwards: removal fills holes from above */
        struct shk_hub_slot *s = t->slots[i];
        if (shk_load_relaxed(s->word) != s->value) {
            slot_all_ready(h, s, SHK_HUB_CHANGED);
            continue;
        }
        if (s->until <= now) {
            slot_timed(h, s, now);
            if (i < t->nslots && t->slots[i] == s && s->until < earliest)
                earliest = s->until;
        } else if (s->until < earliest) {
            earliest = s->until;
        }
    }
    struct shk_hub_slot *tm = t->timer;
    if (tm) {
        if (tm->until <= now)
            slot_timed(h, tm, now);
        if (t->timer && t->timer->until < earliest)
            earliest = t->timer->until;
    }
    return earliest;
}

static struct shk_hub_slot *slot_by_id(struct shk_hub_thread *t, uint64_t id)
{
    for (uint32_t i = 0; i < t->nslots; i++)
        if (t->slots[i]->id == id)
            return t->slots[i];
    return NULL;
}

/* The kernel woke the hub on a slot's word: its waits are READY; a slot that lost its
 * waits meanwhile passes the wake-up on (it may have been meant for one waiter). */
static void woken(struct shk_hub *h, struct shk_hub_thread *t, uint64_t id, uint32_t *word)
{
    struct shk_hub_slot *s = slot_by_id(t, id);
    if (s) {
        slot_all_ready(h, s, SHK_HUB_CHANGED);
    } else {
        h->st.forwarded++;
        shk_futex_wake(word, 1);
    }
}

/* The kernel could not read one of the words: find which, and report them. */
static void probe_faults(struct shk_hub *h, struct shk_hub_thread *t)
{
    for (uint32_t i = t->nslots; i-- > 0;) {
        struct shk_hub_slot *s = t->slots[i];
        /* FUTEX_WAKE of nobody still resolves the (shared) address: EFAULT when unmapped */
        long r = syscall(SYS_futex, s->word, FUTEX_WAKE, 0, NULL, NULL, 0);
        if (r < 0 && errno == EFAULT) {
            h->st.faults++;
            slot_all_ready(h, s, SHK_HUB_FAULT);
        }
    }
}

/* ---- the threads ------------------------------------------------------------------------- */

#if HAVE_WAITV
static void loop_waitv(struct shk_hub *h, struct shk_hub_thread *t)
{
    struct futex_waitv v[SHK_HUB_SLOTS + 1];
    uint64_t ids[SHK_HUB_SLOTS + 1];
    while (!t->stop) {
        uint64_t until = thread_scan(h, t, shk_now_ns());
        memset(v, 0, sizeof v);
        v[0].uaddr = (uintptr_t)&t->doorbell;
        v[0].val = t->doorbell;
        v[0].flags = FUTEX_32 | FUTEX_PRIVATE_FLAG;
        uint32_t n = 1;
        for (uint32_t i = 0; i < t->nslots && n <= SHK_HUB_SLOTS; i++) {
            struct shk_hub_slot *s = t->slots[i];
            v[n].uaddr = (uintptr_t)s->word;
            v[n].val = s->value;
            v[n].flags = FUTEX_32; /* shared words: never FUTEX_PRIVATE_FLAG */
            ids[n++] = s->id;
        }
        struct timespec ts;
        if (until != FOREVER)
            ns_to_ts(until, &ts);
        t->sleeping = 1;
        h->st.sleeps++;
        pthread_mutex_unlock(&h->mu);
        long r = syscall(SYS_futex_waitv, v, n, 0, until != FOREVER ? &ts : NULL,
                         CLOCK_MONOTONIC);
        int err = r < 0 ? errno : 0;
        pthread_mutex_lock(&h->mu);
        t->sleeping = 0;
        if (r >= 1 && r < (long)n)
            woken(h, t, ids[r], (uint32_t *)(uintptr_t)v[r].uaddr);
        else if (r < 0 && err == EFAULT)
            probe_faults(h, t);
        /* 0 (the doorbell), EAGAIN (a word had changed), ETIMEDOUT, EINTR: the next scan
         * finds whatever there is to find */
    }
}
#endif

static void loop_fallback(struct shk_hub *h, struct shk_hub_thread *t)
{
    while (!t->stop) {
        uint64_t now = shk_now_ns();
        uint64_t until = thread_scan(h, t, now);
        uint32_t *word = &t->doorbell, value = t->doorbell;
        uint64_t id = 0;
        uint32_t bell = t->doorbell;
        int shared = 0;
        if (t->nslots) {
            struct shk_hub_slot *s = t->slots[t->rr++ % t->nslots];
            word = s->word;
            value = s->value;
            id = s->id;
            shared = 1;
            uint64_t slice = now + (t->nslots > 1 ? SHK_HUB_SHARE_SLICE_NS
                                                  : SHK_HUB_FALLBACK_SLICE_NS);
            if (slice < until)
                until = slice;
        }
        struct timespec ts;
        if (until != FOREVER)
            ns_to_ts(until, &ts);
        t->sleeping = 1;
        t->sleeping_on = word;
        h->st.sleeps++;
        pthread_mutex_unlock(&h->mu);
        long r = syscall(SYS_futex, word, shared ? FUTEX_WAIT_BITSET : FUTEX_WAIT_BITSET_PRIVATE,
                         value, until != FOREVER ? &ts : NULL, NULL, FUTEX_BITSET_MATCH_ANY);
        int err = r < 0 ? errno : 0;
        pthread_mutex_lock(&h->mu);
        t->sleeping = 0;
        t->sleeping_on = NULL;
        if (shared && r == 0) {
            /* a kick (thread_ring) wakes us through the word itself: with the doorbell
             * moved and the word unchanged, it was most likely ours, not news.  When the
             * slot went away, the kick woke every waiter of the word: nothing to pass on */
            struct shk_hub_slot *s = slot_by_id(t, id);
            if (s && (t->doorbell == bell || shk_load_relaxed(word) != value))
                slot_all_ready(h, s, SHK_HUB_CHANGED);
            else if (!s && t->doorbell == bell)
                woken(h, t, id, word);
        } else if (shared && err == EFAULT)
            probe_faults(h, t);
    }
}

static void *thread_main(void *arg)
{
    struct shk_hub_thread *t = arg;
    struct shk_hub *h = t->hub;
    pthread_mutex_lock(&h->mu);
#if HAVE_WAITV
    if (h->mode == SHK_HUB_WAITV)
        loop_waitv(h, t);
    else
#endif
        loop_fallback(h, t);
    pthread_mutex_unlock(&h->mu);
    return NULL;
}

/* ---- the interface ------------------------------------------------------------------------ */

int shk_hub_init(struct shk_hub *h, int mode, uint32_t max_threads)
{
    memset(h, 0, sizeof *h);
    if (mode == SHK_HUB_AUTO)
        mode = shk_hub_waitv_supported() ? SHK_HUB_WAITV : SHK_HUB_FALLBACK;
    else if (mode == SHK_HUB_WAITV && !shk_hub_waitv_supported())
        return ENOSYS;
    else if (mode != SHK_HUB_WAITV && mode != SHK_HUB_FALLBACK)
        return EINVAL;
    h->hash = calloc(SHK_HUB_HASH, sizeof *h->hash);
    if (!h->hash)
        return ENOMEM;
    int r = pthread_mutex_init(&h->mu, NULL);
    if (r) {
        free(h->hash);
        return r;
    }
    h->mode = mode;
    h->pid = getpid();
    h->max_threads = max_threads ? max_threads : (mode == SHK_HUB_WAITV ? 256 : 64);
    h->retry_push_ns = 10000000ull;
    h->st.mode = (uint32_t)mode;
    h->st.max_threads = h->max_threads;
    return 0;
}

void shk_hub_destroy(struct shk_hub *h)
{
    pthread_mutex_lock(&h->mu);
    for (uint32_t i = 0; i < h->nthreads; i++) {
        h->threads[i]->stop = 1;
        thread_ring(h, h->threads[i]);
    }
    pthread_mutex_unlock(&h->mu);
    for (uint32_t i = 0; i < h->nthreads; i++) {
        struct shk_hub_thread *t = h->threads[i];
        pthread_join(t->tid, NULL);
        while (t->nslots)
            slot_all_ready(h, t->slots[t->nslots - 1], SHK_HUB_CLOSED);
        if (t->timer)
            slot_all_ready(h, t->timer, SHK_HUB_CLOSED);
        free(t->slots);
        free(t);
    }
    free(h->threads);
    free(h->hash);
    pthread_mutex_destroy(&h->mu);
    memset(h, 0, sizeof *h);
}

int shk_hub_notifier_init(struct shk_hub_notifier *n, struct shk_hub *h)
{
    memset(n, 0, sizeof *n);
    n->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (n->efd < 0)
        return errno;
    n->hub = h;
    return 0;
}

void shk_hub_notifier_destroy(struct shk_hub_notifier *n)
{
    if (n->hub) {
        pthread_mutex_lock(&n->hub->mu);
        int fd = n->efd;
        n->efd = -1;
        pthread_mutex_unlock(&n->hub->mu);
        if (fd >= 0)
            close(fd);
    }
    n->hub = NULL;
}

size_t shk_hub_drain(struct shk_hub_notifier *n, struct shk_hub_wait **out, size_t max)
{
    struct shk_hub *h = n->hub;
    uint64_t x;
    /* consume the eventfd first: a wait made READY after this writes it again */
    ssize_t rd = read(n->efd, &x, sizeof x);
    (void)rd;
    size_t k = 0;
    pthread_mutex_lock(&h->mu);
    while (n->head && k < max) {
        struct shk_hub_wait *w = n->head;
        n->head = w->next;
        if (n->head)
            n->head->prev = NULL;
        else
            n->tail = NULL;
        w->next = w->prev = NULL;
        w->state = SHK_HUB_IDLE;
        out[k++] = w;
    }
    if (n->head) { /* more than max: stay readable */
        uint64_t one = 1;
        ssize_t wr = write(n->efd, &one, sizeof one);
        (void)wr;
    } else {
        n->signalled = 0;
    }
    pthread_mutex_unlock(&h->mu);
    return k;
}

int shk_hub_watch(struct shk_hub *h, struct shk_hub_wait *w)
{
    int r = 0;
    pthread_mutex_lock(&h->mu);
    if (w->state != SHK_HUB_IDLE) {
        pthread_mutex_unlock(&h->mu);
        return EBUSY;
    }
    struct shk_hub_slot *s;
    if (w->word) {
        s = slot_find(h, w->word, w->value);
        if (s)
            h->st.slots_shared++;
    } else {
        if (h->nthreads == 0 && (r = thread_start(h)) != 0)
            goto out;
        s = h->threads[0]->timer;
    }
    if (!s) {
        s = calloc(1, sizeof *s);
        if (!s) {
            r = ENOMEM;
            goto out;
        }
        s->word = w->word;
        s->value = w->value;
        s->id = shk_fetch_add_relaxed(&next_slot_id, 1);
        s->until = FOREVER;
        if (w->word) {
            struct shk_hub_thread *t;
            if ((r = thread_for_slot(h, &t)) != 0 || (r = thread_add_slot(t, s)) != 0) {
                free(s);
                goto out;
            }
            uint32_t b = hash_of(s->word, s->value);
            s->hnext = h->hash[b];
            h->hash[b] = s;
            thread_ring(h, t);
        } else {
            s->thread = h->threads[0];
            h->threads[0]->timer = s;
        }
        h->st.slots++;
    }
    w->slot = s;
    w->prev = NULL;
    w->next = s->head;
    if (s->head)
        s->head->prev = w;
    s->head = w;
    s->nwaits++;
    w->state = SHK_HUB_WATCHING;
    w->why = SHK_HUB_NONE;
    h->st.waits++;
    h->st.watches++;
    uint64_t u = wait_until(w);
    if (u < s->until) {
        s->until = u;
        thread_ring(h, s->thread); /* it may sleep past this time */
    }
out:
    pthread_mutex_unlock(&h->mu);
    return r;
}

uint32_t shk_hub_unwatch(struct shk_hub *h, struct shk_hub_wait *w)
{
    pthread_mutex_lock(&h->mu);
    uint32_t state = w->state;
    if (state == SHK_HUB_WATCHING) {
        struct shk_hub_slot *s = w->slot;
        int was_first = wait_until(w) <= s->until;
        wait_unlink(s, w);
        h->st.waits--;
        if (s->nwaits == 0)
            slot_free(h, s);
        else if (was_first)
            slot_recompute(s);
    } else if (state == SHK_HUB_READY) {
        struct shk_hub_notifier *n = w->notifier;
        if (w->prev)
            w->prev->next = w->next;
        else
            n->head = w->next;
        if (w->next)
            w->next->prev = w->prev;
        else
            n->tail = w->prev;
        w->prev = w->next = NULL;
    }
    w->state = SHK_HUB_IDLE;
    pthread_mutex_unlock(&h->mu);
    return state;
}

static unsigned close_slot(struct shk_hub *h, struct shk_hub_slot *s, const void *key)
{
    unsigned k = 0;
    struct shk_hub_wait *next;
    for (struct shk_hub_wait *w = s->head; w; w = next) {
        next = w->next;
        if (w->keys[0] == key || w->keys[1] == key) {
            make_ready(h, w, SHK_HUB_CLOSED);
            k++;
        }
    }
    if (s->nwaits == 0)
        slot_free(h, s);
    else if (k)
        slot_recompute(s);
    return k;
}

unsigned shk_hub_close_group(struct shk_hub *h, const void *key)
{
    unsigned k = 0;
    if (!key)
        return 0;
    pthread_mutex_lock(&h->mu);
    for (uint32_t i = 0; i < h->nthreads; i++) {
        struct shk_hub_thread *t = h->threads[i];
        for (uint32_t j = t->nslots; j-- > 0;)
            k += close_slot(h, t->slots[j], key);
        if (t->timer)
            k += close_slot(h, t->timer, key);
    }
    pthread_mutex_unlock(&h->mu);
    return k;
}

void shk_hub_get_stats(struct shk_hub *h, struct shk_hub_stats *out)
{
    pthread_mutex_lock(&h->mu);
    *out = h->st;
    pthread_mutex_unlock(&h->mu);
}

/* ---- the event loop's spin (waitv.h) ----------------------------------------------------- */

void shk_loop_spin_reset(struct shk_loop_spin *s)
{
    memset(s->table, 0, sizeof s->table);
}

static uint32_t *spin_budget_of(struct shk_loop_spin *s, const uint32_t *word, uint64_t *budget)
{
    uintptr_t k = (uintptr_t)word;
    uint32_t i = (uint32_t)((k >> 2) ^ (k >> 12)) % SHK_LOOP_SPIN_TABLE;
    if (s->table[i].word != word) {
        s->table[i].word = word;
        s->table[i].budget_ns = (uint32_t)(s->max_ns / 2);
        s->table[i].waits = 0;
    }
    /* shmkit.sync.configure(spin_max=0) (no spinning at all) stops this one too */
    uint64_t cap = s->max_ns < shk_wait_cfg.spin_max_ns ? s->max_ns : shk_wait_cfg.spin_max_ns;
    uint64_t b = s->table[i].budget_ns;
    if (b < 1000 && (++s->table[i].waits & 15) == 0)
        b = cap; /* probe */
    *budget = b < cap ? b : cap;
    return &s->table[i].budget_ns;
}

int shk_loop_spin(struct shk_loop_spin *s, const struct shk_wait_op *op, void *obj,
                  struct shk_wait *w)
{
    uint64_t budget;
    uint32_t *learnt = spin_budget_of(s, w->on.word, &budget);
    if (budget == 0)
        return EAGAIN;
    uint64_t start = shk_now_ns(), end = start + budget;
    int r = EAGAIN;
    for (uint32_t k = 1; r == EAGAIN && w->on.kind == SHK_WAITON_FUTEX; k++) {
        if (shk_load_relaxed(w->on.word) != w->on.value) {
            r = op->attempt(obj, w);
            continue;
        }
        shk_cpu_relax();
        if ((k & 31) == 0 && shk_now_ns() >= end)
            break;
    }
    uint64_t took = shk_now_ns() - start;
    s->spins++;
    s->spun_ns += took;
    if (r != EAGAIN && r >= 0) {
        s->spins_won++;
        uint64_t t = 2 * took + 2000;
        if (t > s->max_ns)
            t = s->max_ns;
        if (t > *learnt)
            *learnt = (uint32_t)t;
    } else if (r == EAGAIN) {
        *learnt /= 2;
        if (*learnt < 1000)
            *learnt = 0;
    }
    return r;
}
