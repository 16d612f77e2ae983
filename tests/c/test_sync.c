/* The sync core without Python: mutual exclusion with threads and fork()ed processes,
 * holders killed by SIGKILL (recovery and its latency), RLock ownership, semaphores with
 * undo, events, readers-writer locks, conditions, barriers, timeouts. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <linux/futex.h>
#include <sys/syscall.h>

#include "check.h"
#include "futex.h"
#include "sync.h"
#include "zone.h"

static struct shk_segment seg;
static struct shk_zone z;

static void open_zone(void)
{
    int status = -1;
    CHECK_EQ(shk_seg_create_anon(&seg, 8u << 20), 0);
    struct shk_zone_params p = {8u << 20, 0, "sync", 4};
    CHECK_EQ(shk_zone_try_open(&z, &seg, &p, 0, &status), 0);
    CHECK_EQ(status, SHK_ZONE_MUST_INIT);
    CHECK_EQ(shk_zone_init_done(&z, 1), 0);
}

static void *obj(const char *name, uint32_t type, uint64_t a, uint64_t b, uint32_t flags)
{
    struct shk_sync_params p;
    memset(&p, 0, sizeof p);
    p.type = type;
    p.a = a;
    p.b = b;
    p.flags = flags;
    uint64_t off = 0;
    int created = 0, err = 0;
    int r = shk_sync_open(&z, name, &p, SHK_O_CREATE, &off, &created);
    CHECK_EQ(r, 0);
    void *ptr = shk_sync_ptr(&z, off, type, &err);
    CHECK(ptr != NULL);
    return ptr;
}

static struct shk_wait wait_for(struct timespec *d, double timeout)
{
    struct shk_wait w = SHK_WAIT_INIT(SHK_FOREVER, 0);
    if (timeout >= 0) {
        shk_deadline_after(d, timeout);
        w.deadline_ns = shk_wait_deadline(d);
    }
    return w;
}

/* Blocking calls return EINTR to let a caller run signal handlers: loop. */
static int lock_acq(struct shk_lock_sh *l, int rec, double timeout)
{
    struct timespec d;
    struct shk_wait w = wait_for(&d, timeout);
    int r;
    do
        r = shk_lock_acquire(l, rec, &w);
    while (r == EINTR);
    return r;
}

static int sem_acq(struct shk_sem_sh *s, double timeout)
{
    struct timespec d;
    struct shk_wait w = wait_for(&d, timeout);
    int r;
    do
        r = shk_sem_acquire(s, &w);
    while (r == EINTR);
    return r;
}

static int event_wait(struct shk_event_sh *e, double timeout)
{
    struct timespec d;
    struct shk_wait w = wait_for(&d, timeout);
    int r;
    do
        r = shk_event_wait(e, &w);
    while (r == EINTR);
    return r;
}

static int rw_read(struct shk_rwlock_sh *rw, uint32_t *slot, double timeout)
{
    struct timespec d;
    struct shk_wait w = wait_for(&d, timeout);
    int r;
    do
        r = shk_rw_acquire_read(rw, slot, &w);
    while (r == EINTR);
    return r;
}

static int rw_write(struct shk_rwlock_sh *rw, double timeout)
{
    struct timespec d;
    struct shk_wait w = wait_for(&d, timeout);
    int r;
    do
        r = shk_rw_acquire_write(rw, &w);
    while (r == EINTR);
    return r;
}

static int barrier_wait(struct shk_barrier_sh *b, double timeout, uint32_t *index)
{
    struct timespec d;
    struct shk_wait w = wait_for(&d, timeout);
    int r, last;
    do
        r = shk_barrier_wait(b, &w, index, &last);
    while (r == EINTR);
    if (r == 0 && last)
        r = shk_barrier_complete(b, w.aux);
    return r;
}

static double now_s(void)
{
    return (double)shk_now_ns() / 1e9;
}

/* ---- Lock: threads and processes ------------------------------------------------------ */

static struct shk_lock_sh *g_lock;
static volatile uint64_t *g_plain;

static void *thread_increments(void *arg)
{
    long n = (long)arg;
    for (long i = 0; i < n; i++) {
        CHECK_EQ(lock_acq(g_lock, 0, -1), 0);
        (*g_plain)++;
        CHECK_EQ(shk_lock_release(g_lock, 0), 0);
    }
    return NULL;
}

static void test_lock_mutual_exclusion(void)
{
    g_lock = obj("lock", SHK_OBJ_LOCK, 0, 0, 0);
    struct shk_counter_sh *c = obj("plain", SHK_OBJ_COUNTER, 0, 0, 0);
    g_plain = (volatile uint64_t *)&c->value;
    *g_plain = 0;
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        pthread_create(&t[i], NULL, thread_increments, (void *)100000L);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    CHECK_EQ(*g_plain, 400000);
    /* three processes */
    pid_t pids[3];
    for (int i = 0; i < 3; i++) {
        pids[i] = fork();
        if (pids[i] == 0) {
            thread_increments((void *)100000L);
            _exit(checks_failed ? 1 : 0);
        }
    }
    for (int i = 0; i < 3; i++) {
        int st;
        waitpid(pids[i], &st, 0);
        CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    }
    CHECK_EQ(*g_plain, 700000);
    CHECK_EQ(g_lock->acquisitions, 700000);
    /* errors */
    CHECK_EQ(shk_lock_release(g_lock, 0), SHK_ENOTOWNER);
    CHECK_EQ(lock_acq(g_lock, 0, -1), 0);
    struct shk_wait w = SHK_WAIT_INIT(SHK_FOREVER, SHK_WAIT_TRY);
    CHECK_EQ(shk_lock_acquire(g_lock, 0, &w), EBUSY);
    double t0 = now_s();
    CHECK_EQ(lock_acq(g_lock, 0, 0.05), ETIMEDOUT);
    double took = now_s() - t0;
    CHECK(took >= 0.05 && took < 0.5);
    CHECK_EQ(shk_lock_release(g_lock, 0), 0);
}

/* ---- owner death ---------------------------------------------------------------------- */

struct waiter_arg {
    struct shk_lock_sh *l;
    int rec;
    int result;
    double when;
    uint32_t count;
    int released;
};

static void *waiter_thread(void *p)
{
    struct waiter_arg *a = p;
    a->result = lock_acq(a->l, a->rec, 10);
    a->when = now_s();
    a->count = a->l->count;
    a->released = shk_lock_release(a->l, a->rec); /* an RLock belongs to this thread */
    return NULL;
}

/* A child process that takes lock l (rec: an RLock) `times` times and then waits to be
 * killed; returns once it holds it. */
static pid_t fork_holder(struct shk_lock_sh *l, int rec, int times)
{
    int pfd[2];
    CHECK_EQ(pipe(pfd), 0);
    pid_t pid = fork();
    if (pid == 0) {
        for (int i = 0; i < times; i++)
            lock_acq(l, rec, -1);
        char c = 'x';
        if (write(pfd[1], &c, 1) != 1)
            _exit(2);
        for (;;)
            pause();
    }
    char c;
    CHECK_EQ(read(pfd[0], &c, 1), 1);
    close(pfd[0]);
    close(pfd[1]);
    return pid;
}

static void test_killed_owner(int rec, int rounds)
{
    struct shk_lock_sh *l = obj(rec ? "dead-rlock" : "dead-lock", rec ? SHK_OBJ_RLOCK : SHK_OBJ_LOCK,
                                0, 0, 0);
    double worst = 0;
    for (int i = 0; i < rounds; i++) {
        pid_t pid = fork_holder(l, rec, rec ? 2 : 1); /* twice: the count must not survive */
        struct waiter_arg a = {l, rec, -1, 0, 0, -1};
        pthread_t t;
        pthread_create(&t, NULL, waiter_thread, &a);
        /* let the waiter go to sleep on some rounds, kill at once on others */
        if (i % 2)
            while (__atomic_load_n(&l->sleepers, __ATOMIC_ACQUIRE) == 0)
                usleep(100);
        double killed = now_s();
        kill(pid, SIGKILL);
        pthread_join(t, NULL);
        waitpid(pid, NULL, 0);
        CHECK_EQ(a.result, SHK_EOWNERDEAD);
        double lat = a.when - killed;
        if (lat > worst)
            worst = lat;
        if (rec)
            CHECK_EQ(a.count, 1);
        CHECK_EQ(a.released, 0);
    }
    CHECK_EQ(l->owner_deaths, rounds);
    printf("  %s: %d holders killed, worst recovery %.2f ms\n", rec ? "RLock" : "Lock", rounds,
           worst * 1e3);
    CHECK(worst < 0.1 * 5); /* 100 ms is the promise; a loaded CI box gets slack */
}

static void *release_other_thread(void *p)
{
    return (void *)(long)shk_lock_release(p, 1);
}

static void test_rlock(void)
{
    struct shk_lock_sh *r = obj("rlock", SHK_OBJ_RLOCK, 0, 0, 0);
    CHECK_EQ(lock_acq(r, 1, -1), 0);
    CHECK_EQ(lock_acq(r, 1, -1), 0);
    CHECK_EQ(r->count, 2);
    pthread_t t;
    void *res;
    pthread_create(&t, NULL, release_other_thread, r);
    pthread_join(t, &res);
    CHECK_EQ((long)res, SHK_ENOTOWNER);
    CHECK_EQ(shk_lock_release(r, 1), 0);
    CHECK(shk_lock_is_mine(r, 1));
    CHECK_EQ(shk_lock_release(r, 1), 0);
    CHECK(!shk_lock_is_mine(r, 1));
    CHECK_EQ(shk_lock_release(r, 1), SHK_ENOTOWNER);
    /* released completely, levels counted (Condition, _release_save), then restored */
    uint32_t count = 0;
    for (int i = 0; i < 3; i++)
        CHECK_EQ(lock_acq(r, 1, -1), 0);
    CHECK_EQ(shk_lock_release_all(r, 1, &count), 0);
    CHECK_EQ(count, 3);
    CHECK(!shk_lock_locked(r));
    CHECK_EQ(lock_acq(r, 1, -1), 0);
    shk_rlock_restore(r, count);
    CHECK_EQ(shk_lock_owned_count(r, 1), 3);
    CHECK_EQ(shk_lock_release_all(r, 1, &count), 0);
    CHECK_EQ(shk_lock_release_all(r, 1, &count), SHK_ENOTOWNER);
    struct shk_lock_sh *l = obj("lock-all", SHK_OBJ_LOCK, 0, 0, 0);
    CHECK_EQ(lock_acq(l, 0, -1), 0);
    CHECK_EQ(shk_lock_release_all(l, 0, &count), 0);
    CHECK_EQ(count, 1);
    CHECK(!shk_lock_locked(l));
}

/* ---- semaphores ----------------------------------------------------------------------- */

static void test_semaphore(void)
{
    struct shk_sem_sh *s = obj("sem", SHK_OBJ_SEMAPHORE, 2, 0, 0);
    CHECK_EQ(sem_acq(s, -1), 0);
    CHECK_EQ(sem_acq(s, -1), 0);
    CHECK_EQ(sem_acq(s, 0.02), ETIMEDOUT);
    CHECK_EQ(shk_sem_release(s, 2), 0);
    CHECK_EQ(s->value, 2);
    struct shk_sem_sh *b = obj("bsem", SHK_OBJ_SEMAPHORE, 1, 0, SHK_SYNCF_BOUNDED);
    CHECK_EQ(shk_sem_release(b, 1), SHK_ETOOBIG);
    CHECK(strstr(shk_error_detail(), "released too many times") != NULL);
    /* more than a semaphore can count, whatever its width: refused, nothing changed (a
     * 32-bit n of 2**32 + 1 would have been 1) */
    CHECK_EQ(shk_sem_release(s, (1ull << 32) + 1), SHK_ETOOBIG);
    CHECK(strstr(shk_error_detail(), "would overflow") != NULL);
    CHECK_EQ(shk_sem_release(s, UINT64_MAX), SHK_ETOOBIG);
    CHECK_EQ(shk_sem_release(b, UINT64_MAX), SHK_ETOOBIG);
    CHECK_EQ(shk_sem_release(s, SHK_SEM_VALUE_MAX - 1), SHK_ETOOBIG); /* 2 + that: one over */
    CHECK_EQ(s->value, 2);
    CHECK_EQ(shk_sem_release(s, SHK_SEM_VALUE_MAX - 2), 0); /* exactly the most it holds */
    CHECK_EQ(s->value, SHK_SEM_VALUE_MAX);
    CHECK_EQ(shk_sem_release(s, 1), SHK_ETOOBIG);
    s->value = 2;
    /* undo: a killed holder's units come back to a waiter */
    struct shk_sem_sh *u = obj("usem", SHK_OBJ_SEMAPHORE, 2, 4, SHK_SYNCF_UNDO);
    for (int round = 0; round < 20; round++) {
        pid_t pid = fork();
        if (pid == 0) {
            sem_acq(u, -1);
            sem_acq(u, -1);
            for (;;)
                pause();
        }
        while (__atomic_load_n(&u->value, __ATOMIC_ACQUIRE) != 0)
            usleep(100);
        kill(pid, SIGKILL);
        CHECK_EQ(sem_acq(u, 5), 0);
        waitpid(pid, NULL, 0);
        CHECK_EQ(shk_sem_held(u), 1);
        CHECK_EQ(shk_sem_release(u, 1), 0);
        CHECK_EQ(u->value, 2);
    }
    CHECK_EQ(u->reclaimed, 40);
    CHECK_EQ(u->dead_owners, 20);
}

/* ---- event ---------------------------------------------------------------------------- */

static void test_event(void)
{
    struct shk_event_sh *e = obj("event", SHK_OBJ_EVENT, 0, 0, 0);
    struct shk_event_sh *back = obj("event-back", SHK_OBJ_EVENT, 0, 0, 0);
    CHECK_EQ(event_wait(e, 0.02), ETIMEDOUT);
    pid_t pid = fork();
    if (pid == 0) {
        /* ping-pong 1000 times */
        for (int i = 0; i < 1000; i++) {
            if (event_wait(e, 10) != 0)
                _exit(1);
            shk_event_clear(e);
            shk_event_set(back);
        }
        _exit(0);
    }
    for (int i = 0; i < 1000; i++) {
        shk_event_set(e);
        CHECK_EQ(event_wait(back, 10), 0);
        shk_event_clear(back);
    }
    int st;
    waitpid(pid, &st, 0);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

/* ---- RWLock --------------------------------------------------------------------------- */

static struct shk_rwlock_sh *g_rw;
static int g_inside, g_bad, g_peak;

static void *rw_reader_thread(void *p)
{
    uint32_t slot = UINT32_MAX;
    for (int i = 0; i < 200; i++) {
        CHECK_EQ(rw_read(g_rw, &slot, 10), 0);
        int now = __atomic_add_fetch(&g_inside, 1, __ATOMIC_SEQ_CST);
        if (now > __atomic_load_n(&g_peak, __ATOMIC_RELAXED))
            __atomic_store_n(&g_peak, now, __ATOMIC_RELAXED);
        usleep(50);
        __atomic_sub_fetch(&g_inside, 1, __ATOMIC_SEQ_CST);
        CHECK_EQ(shk_rw_release_read(g_rw, &slot), 0);
    }
    return NULL;
}

static void *rw_writer_thread(void *p)
{
    for (int i = 0; i < 100; i++) {
        CHECK_EQ(rw_write(g_rw, 10), 0);
        if (__atomic_add_fetch(&g_inside, 100, __ATOMIC_SEQ_CST) != 100)
            __atomic_add_fetch(&g_bad, 1, __ATOMIC_SEQ_CST);
        usleep(20);
        __atomic_sub_fetch(&g_inside, 100, __ATOMIC_SEQ_CST);
        CHECK_EQ(shk_rw_release_write(g_rw), 0);
    }
    return NULL;
}

static void test_rwlock(void)
{
    g_rw = obj("rw", SHK_OBJ_RWLOCK, 4, 0, 0);
    pthread_t t[5];
    for (int i = 0; i < 3; i++)
        pthread_create(&t[i], NULL, rw_reader_thread, NULL);
    for (int i = 3; i < 5; i++)
        pthread_create(&t[i], NULL, rw_writer_thread, NULL);
    for (int i = 0; i < 5; i++)
        pthread_join(t[i], NULL);
    CHECK_EQ(g_bad, 0);
    CHECK(g_peak >= 2);
    CHECK_EQ(g_rw->write_acquisitions, 200);
    /* dead readers and writers */
    for (int round = 0; round < 20; round++) {
        int writer = round % 2;
        pid_t pid = fork();
        if (pid == 0) {
            uint32_t slot = UINT32_MAX;
            if (writer)
                rw_write(g_rw, -1);
            else
                rw_read(g_rw, &slot, -1);
            for (;;)
                pause();
        }
        if (writer)
            while ((__atomic_load_n(&g_rw->writer.f.word, __ATOMIC_ACQUIRE) & SHK_ID_MASK) == 0)
                usleep(100);
        else
            while (shk_rw_readers(g_rw, NULL) == 0)
                usleep(100);
        kill(pid, SIGKILL);
        int r = rw_write(g_rw, 5);
        CHECK(r == 0 || r == SHK_EOWNERDEAD);
        CHECK_EQ(shk_rw_release_write(g_rw), 0);
        uint32_t slot = UINT32_MAX;
        CHECK_EQ(rw_read(g_rw, &slot, 5), 0);
        CHECK_EQ(shk_rw_release_read(g_rw, &slot), 0);
        waitpid(pid, NULL, 0);
    }
    CHECK_EQ(g_rw->owner_deaths, 10);
    CHECK_EQ(g_rw->reader_deaths, 10);
    CHECK_EQ(shk_rw_readers(g_rw, NULL), 0);
}

/* ---- Condition ------------------------------------------------------------------------ */

static struct shk_cond_sh *g_cond;
static int g_items, g_got;

static void *consumer_thread(void *p)
{
    for (int i = 0; i < 1000; i++) {
        CHECK_EQ(lock_acq(&g_cond->lock, 1, -1), 0);
        while (g_items == 0) {
            uint32_t seq = shk_cond_prepare(g_cond);
            uint32_t count;
            CHECK_EQ(shk_rlock_release_all(&g_cond->lock, &count), 0);
            struct timespec d;
            struct shk_wait w = wait_for(&d, 10);
            int r;
            do
                r = shk_cond_wait(g_cond, seq, &w);
            while (r == EINTR);
            shk_cond_finish(g_cond);
            CHECK_EQ(r, 0);
            CHECK_EQ(lock_acq(&g_cond->lock, 1, -1), 0);
            g_cond->lock.count = count;
        }
        g_items--;
        g_got++;
        CHECK_EQ(shk_lock_release(&g_cond->lock, 1), 0);
    }
    return NULL;
}

static void *producer_thread(void *p)
{
    for (int i = 0; i < 1000; i++) {
        CHECK_EQ(lock_acq(&g_cond->lock, 1, -1), 0);
        g_items++;
        shk_cond_notify(g_cond, 1);
        CHECK_EQ(shk_lock_release(&g_cond->lock, 1), 0);
    }
    return NULL;
}

static void test_condition(void)
{
    g_cond = obj("cond", SHK_OBJ_CONDITION, 0, 0, 0);
    pthread_t t[4];
    for (int i = 0; i < 2; i++)
        pthread_create(&t[i], NULL, consumer_thread, NULL);
    for (int i = 2; i < 4; i++)
        pthread_create(&t[i], NULL, producer_thread, NULL);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    CHECK_EQ(g_got, 2000);
    CHECK_EQ(g_items, 0);
}

/* ---- Barrier -------------------------------------------------------------------------- */

static void test_barrier(void)
{
    struct shk_barrier_sh *b = obj("barrier", SHK_OBJ_BARRIER, 4, 0, 0);
    pid_t pids[3];
    for (int i = 0; i < 3; i++) {
        pids[i] = fork();
        if (pids[i] == 0) {
            uint32_t idx;
            for (int r = 0; r < 200; r++)
                if (barrier_wait(b, 10, &idx) != 0)
                    _exit(1);
            _exit(0);
        }
    }
    uint32_t idx;
    for (int r = 0; r < 200; r++)
        CHECK_EQ(barrier_wait(b, 10, &idx), 0);
    for (int i = 0; i < 3; i++) {
        int st;
        waitpid(pids[i], &st, 0);
        CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    }
    CHECK_EQ(b->passed, 200);
    /* a party dies while waiting: the others see the barrier broken */
    pid_t pid = fork();
    if (pid == 0) {
        barrier_wait(b, -1, &idx);
        _exit(0);
    }
    while (__atomic_load_n(&b->count, __ATOMIC_ACQUIRE) == 0)
        usleep(100);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    double t0 = now_s();
    CHECK_EQ(barrier_wait(b, 10, &idx), SHK_EBROKEN);
    CHECK(now_s() - t0 < 1.0);
    CHECK(b->broken);
    shk_barrier_reset(b);
    CHECK(!b->broken);
    /* a timed-out wait breaks it */
    CHECK_EQ(barrier_wait(b, 0.02, &idx), SHK_EBROKEN);
    CHECK(b->broken);
}

/* An internal mutex whose lock word names a live thread of another process that never
 * unlocks (corruption, issue 13 #6): a call with a timeout returns its timeout result
 * within its timeout (the deadline reaches shk_mutex_lock(m, NULL)), having taken nothing;
 * a non-blocking call within SHK_WAIT_TRY_GRACE_NS; the word put back, the object works. */
static void test_live_impostor(void)
{
    pid_t live = fork();
    if (live == 0) {
        for (;;)
            pause();
    }
    struct shk_sem_sh *u = obj("impostor-sem", SHK_OBJ_SEMAPHORE, 1, 4, SHK_SYNCF_UNDO);
    struct shk_barrier_sh *b = obj("impostor-barrier", SHK_OBJ_BARRIER, 2, 0, 0);
    uint32_t *sem_word = (uint32_t *)&u->mutex, *bar_word = (uint32_t *)&b->mutex;
    __atomic_store_n(sem_word, (uint32_t)live, __ATOMIC_SEQ_CST);
    __atomic_store_n(bar_word, (uint32_t)live, __ATOMIC_SEQ_CST);
    for (int round = 0; round < 3; round++) {
        double t0 = now_s();
        CHECK_EQ(sem_acq(u, 0.1), ETIMEDOUT);
        double took = now_s() - t0;
        CHECK(took >= 0.09 && took < 1.0);
        CHECK_EQ(u->value, 1); /* nothing taken, nothing half done */
        CHECK_EQ(u->j_valid, 0);
        CHECK_EQ(shk_sem_held(u), 0);
        t0 = now_s();
        struct shk_wait w = SHK_WAIT_INIT(SHK_FOREVER, SHK_WAIT_TRY);
        CHECK_EQ(shk_sem_acquire(u, &w), ETIMEDOUT);
        took = now_s() - t0;
        CHECK(took < 1.0);
        uint32_t idx;
        t0 = now_s();
        CHECK_EQ(barrier_wait(b, 0.05, &idx), ETIMEDOUT); /* the binding: BrokenBarrierError */
        took = now_s() - t0;
        CHECK(took >= 0.04 && took < 1.0);
        CHECK_EQ(b->count, 0); /* did not arrive */
        CHECK_EQ(shk_wait_ambient_ns, 0); /* nothing left behind for the next call */
    }
    CHECK_EQ(__atomic_load_n(sem_word, __ATOMIC_SEQ_CST) & FUTEX_TID_MASK, (uint32_t)live); /* not taken over */
    kill(live, SIGKILL);
    waitpid(live, NULL, 0);
    /* put back: both work again */
    __atomic_store_n(sem_word, 0, __ATOMIC_SEQ_CST);
    __atomic_store_n(bar_word, 0, __ATOMIC_SEQ_CST);
    CHECK_EQ(sem_acq(u, 1), 0);
    CHECK_EQ(shk_sem_held(u), 1);
    CHECK_EQ(shk_sem_release(u, 1), 0);
    pid_t party = fork();
    if (party == 0) {
        uint32_t idx;
        _exit(barrier_wait(b, 10, &idx) == 0 ? 0 : 1);
    }
    uint32_t idx;
    CHECK_EQ(barrier_wait(b, 10, &idx), 0);
    int st;
    waitpid(party, &st, 0);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

/* The protocols the binding used to repeat, now inline in sync.h or in sync.c: the
 * Lock/RLock fast paths, the counter, the size extents and the reader statistics. */
static void test_fast_paths(void)
{
    struct shk_lock_sh *l = obj("fast-lock", SHK_OBJ_LOCK, 0, 0, 0);
    uint64_t acq = l->acquisitions;
    CHECK_EQ(shk_lock_try_fast(l, 0), 0);
    CHECK(shk_lock_locked(l));
    CHECK_EQ(shk_lock_owned_count(l, 0), 1);
    CHECK_EQ(shk_lock_try_fast(l, 0), EBUSY); /* a Lock is not reentrant */
    CHECK_EQ(shk_lock_release_fast(l), 0);
    CHECK(!shk_lock_locked(l));
    CHECK_EQ(shk_lock_release_fast(l), EAGAIN); /* not held: the slow path says why */
    CHECK_EQ(shk_lock_release(l, 0), SHK_ENOTOWNER);
    CHECK_EQ(l->acquisitions, acq + 1);
    struct shk_lock_sh *r = obj("fast-rlock", SHK_OBJ_RLOCK, 0, 0, 0);
    CHECK_EQ(shk_lock_try_fast(r, 1), 0);
    CHECK_EQ(shk_lock_try_fast(r, 1), 0);
    CHECK_EQ(shk_lock_owned_count(r, 1), 2);
    uint32_t count = 0;
    CHECK_EQ(shk_rlock_release_all(r, &count), 0);
    CHECK_EQ(count, 2);
    CHECK_EQ(shk_lock_owned_count(r, 1), 0);
    struct shk_wait w = SHK_WAIT_INIT(SHK_FOREVER, 0);
    CHECK_EQ(shk_lock_acquire(r, 1, &w), 0);
    shk_rlock_restore(r, count);
    CHECK_EQ(shk_lock_owned_count(r, 1), 2);
    CHECK_EQ(shk_lock_release(r, 1), 0);
    CHECK_EQ(shk_lock_release(r, 1), 0);
    r->count = UINT32_MAX; /* recursion at its limit: refused, not waited for */
    CHECK_EQ(shk_lock_try_fast(r, 1), 0);
    r->count = UINT32_MAX;
    w = SHK_WAIT_INIT(SHK_FOREVER, 0);
    CHECK_EQ(shk_lock_acquire(r, 1, &w), EOVERFLOW);
    r->count = 1;
    CHECK_EQ(shk_lock_release(r, 1), 0);

    struct shk_counter_sh *c = obj("fast-counter", SHK_OBJ_COUNTER, 5, 0, 0);
    CHECK_EQ(shk_counter_get(c), 5);
    CHECK_EQ(shk_counter_add(c, -7), -2);
    CHECK_EQ(shk_counter_exchange(c, INT64_MAX), -2);
    CHECK_EQ(shk_counter_add(c, 1), INT64_MIN); /* wraps, never traps */
    CHECK(!shk_counter_cas(c, 0, 1));
    CHECK(shk_counter_cas(c, INT64_MIN, 9));
    shk_counter_set(c, 3);
    CHECK_EQ(shk_counter_get(c), 3);

    struct shk_rwlock_sh *rw = obj("fast-rw", SHK_OBJ_RWLOCK, 4, 0, 0);
    CHECK_EQ(shk_sync_extent(rw, SHK_OBJ_RWLOCK), 4);
    CHECK_EQ(shk_sync_extent(c, SHK_OBJ_COUNTER), 0);
    uint32_t slot = UINT32_MAX;
    w = SHK_WAIT_INIT(SHK_FOREVER, 0);
    CHECK_EQ(shk_rw_acquire_read(rw, &slot, &w), 0);
    CHECK(slot < 4);
    CHECK_EQ(shk_rw_held_here(rw, slot), 1);
    CHECK_EQ(shk_rw_held_here(rw, 99), 0);
    CHECK_EQ(shk_rw_read_acquisitions(rw), 1);
    CHECK(!shk_rw_is_writer(rw));
    CHECK_EQ(shk_rw_release_read(rw, &slot), 0);
    w = SHK_WAIT_INIT(SHK_FOREVER, 0);
    CHECK_EQ(shk_rw_acquire_write(rw, &w), 0);
    CHECK(shk_rw_is_writer(rw));
    CHECK_EQ(shk_rw_release_write(rw), 0);

    struct shk_sem_sh *sem = obj("fast-sem", SHK_OBJ_SEMAPHORE, 2, 3, SHK_SYNCF_UNDO);
    w = SHK_WAIT_INIT(SHK_FOREVER, 0);
    CHECK_EQ(shk_sem_acquire(sem, &w), 0);
    CHECK_EQ(shk_sem_value(sem), 1);
    CHECK_EQ(shk_sem_holders(sem), 1);
    CHECK_EQ(shk_sem_held(sem), 1);
    CHECK_EQ(shk_sem_release(sem, 1), 0);
    CHECK_EQ(shk_sem_holders(sem), 0);
}

/* The asyncio contract of wait.h, with real operations: one thread arms two waits (an
 * Event nobody set, a Lock another thread holds), waits on both words at once with
 * futex_waitv, is woken by the set(), finishes that wait by attempting again, and
 * cancels the other: nothing stays registered, the lock is not taken. */
static void *set_later(void *arg)
{
    struct timespec d = {0, 30000000};
    nanosleep(&d, NULL);
    shk_event_set(arg);
    return NULL;
}

static void *hold_lock(void *arg)
{
    struct shk_lock_sh *l = arg;
    struct shk_wait w = SHK_WAIT_INIT(SHK_FOREVER, 0);
    while (shk_lock_acquire(l, 1, &w) == EINTR) /* an RLock: held by that thread */
        ;
    struct timespec d = {0, 300000000};
    nanosleep(&d, NULL);
    shk_lock_release(l, 1);
    return NULL;
}

static void test_async_contract(void)
{
#ifdef SYS_futex_waitv
    struct shk_event_sh *e = obj("async-event", SHK_OBJ_EVENT, 0, 0, 0);
    struct shk_lock_sh *l = obj("async-lock", SHK_OBJ_RLOCK, 0, 0, 0);
    pthread_t holder, setter;
    pthread_create(&holder, NULL, hold_lock, l);
    while (!shk_lock_locked(l))
        shk_cpu_relax();
    uint32_t flags = SHK_WAIT_ARMED | SHK_WAIT_NOSIGNALS;
    struct shk_wait we = SHK_WAIT_INIT(SHK_FOREVER, flags), wl = SHK_WAIT_INIT(SHK_FOREVER, flags);
    CHECK_EQ(shk_event_op.attempt(e, &we), EAGAIN);
    CHECK_EQ(shk_rlock_op.attempt(l, &wl), EAGAIN);
    CHECK_EQ(e->sleepers, 1);
    CHECK_EQ(l->sleepers, 1);
    pthread_create(&setter, NULL, set_later, e);
    struct futex_waitv v[2];
    memset(v, 0, sizeof v);
    v[0].uaddr = (uintptr_t)we.on.word;
    v[0].val = we.on.value;
    v[0].flags = FUTEX_32; /* shared words: never FUTEX_PRIVATE_FLAG */
    v[1].uaddr = (uintptr_t)wl.on.word;
    v[1].val = wl.on.value;
    v[1].flags = FUTEX_32;
    struct timespec d;
    shk_deadline_after(&d, 10);
    long r;
    do
        r = syscall(SYS_futex_waitv, v, 2, 0, &d, CLOCK_MONOTONIC);
    while (r < 0 && errno == EINTR);
    CHECK(r == 0 || (r < 0 && errno == EAGAIN)); /* woken on the event's word (or it had moved) */
    shk_wait_disarm(&we);
    CHECK_EQ(shk_event_op.attempt(e, &we), 0);
    CHECK_EQ(shk_wait_cancel(&shk_rlock_op, l, &wl, ECANCELED), ECANCELED);
    CHECK_EQ(e->sleepers, 0);
    CHECK_EQ(l->sleepers, 0);
    CHECK_EQ(shk_lock_owned_count(l, 1), 0);
    pthread_join(setter, NULL);
    pthread_join(holder, NULL);
    CHECK(!shk_lock_locked(l));
#endif
}

/* Condition.wait's sequence as one core call: an RLock held twice is released whole and
 * held twice again after a timeout; a Lock is taken again after a notification; waiting
 * on a lock one does not hold is refused with nothing left registered. */
static struct shk_cond_sh *g_cw;
static struct shk_lock_sh *g_cw_lock;
static volatile int g_cw_woken;

static void *cw_waiter(void *unused)
{
    struct timespec d;
    struct shk_wait w = wait_for(&d, 10);
    CHECK_EQ(lock_acq(g_cw_lock, 0, -1), 0);
    int r = shk_cond_wait_lock(g_cw, g_cw_lock, 0, &w);
    CHECK(shk_lock_is_mine(g_cw_lock, 0));
    __atomic_store_n(&g_cw_woken, 1, __ATOMIC_RELEASE);
    CHECK_EQ(shk_lock_release(g_cw_lock, 0), 0);
    return (void *)(long)r;
}

static void test_cond_wait_lock(void)
{
    struct shk_cond_sh *c = obj("cw", SHK_OBJ_CONDITION, 0, 0, 0);
    struct shk_lock_sh *r = &c->lock; /* the embedded RLock */
    struct timespec d;
    struct shk_wait w = wait_for(&d, 0.05);
    CHECK_EQ(shk_cond_wait_lock(c, r, 1, &w), SHK_ENOTOWNER);
    CHECK_EQ(c->sleepers, 0);
    CHECK_EQ(lock_acq(r, 1, -1), 0);
    CHECK_EQ(lock_acq(r, 1, -1), 0);
    double t0 = now_s();
    w = wait_for(&d, 0.05);
    CHECK_EQ(shk_cond_wait_lock(c, r, 1, &w), ETIMEDOUT);
    CHECK(now_s() - t0 >= 0.04);
    CHECK_EQ(shk_lock_owned_count(r, 1), 2);
    CHECK_EQ(c->sleepers, 0);
    CHECK_EQ(shk_lock_release(r, 1), 0);
    CHECK_EQ(shk_lock_release(r, 1), 0);

    g_cw = c;
    g_cw_lock = obj("cw-lock", SHK_OBJ_LOCK, 0, 0, 0);
    pthread_t t;
    pthread_create(&t, NULL, cw_waiter, NULL);
    while (__atomic_load_n(&c->sleepers, __ATOMIC_ACQUIRE) == 0) /* registered: unlocked */
        usleep(100);
    CHECK_EQ(lock_acq(g_cw_lock, 0, 5), 0);
    shk_cond_notify(c, 1);
    CHECK(!__atomic_load_n(&g_cw_woken, __ATOMIC_ACQUIRE)); /* it needs the lock back */
    CHECK_EQ(shk_lock_release(g_cw_lock, 0), 0);
    void *res;
    pthread_join(t, &res);
    CHECK_EQ((long)res, 0);
    CHECK(g_cw_woken);
}

/* The binding's one attempt with the GIL held: takes a free unit (and an undo
 * semaphore's slot), and reports a contention without waiting when there is none. */
static void test_sem_try_now(void)
{
    struct shk_sem_sh *s = obj("try-now", SHK_OBJ_SEMAPHORE, 1, 0, 0);
    CHECK_EQ(shk_sem_try_now(s), 0);
    double t0 = now_s();
    CHECK_EQ(shk_sem_try_now(s), EAGAIN);
    CHECK(now_s() - t0 < 0.05);
    CHECK_EQ(s->contentions, 1);
    CHECK_EQ(shk_sem_release(s, 1), 0);
    struct shk_sem_sh *u = obj("try-now-undo", SHK_OBJ_SEMAPHORE, 1, 2, SHK_SYNCF_UNDO);
    CHECK_EQ(shk_sem_try_now(u), 0);
    CHECK_EQ(shk_sem_held(u), 1);
    CHECK_EQ(shk_sem_try_now(u), EAGAIN);
    CHECK_EQ(shk_sem_release(u, 1), 0);
    CHECK_EQ(shk_sem_held(u), 0);
}

/* ---- statistics and tuning ----------------------------------------------------------- */

/* The value of field `name` in a statistics record, read through its table. */
static long long field(const void *rec, const struct shk_field *f, const char *name)
{
    for (; f->name; f++) {
        if (strcmp(f->name, name) != 0)
            continue;
        const char *p = (const char *)rec + f->off;
        switch (f->kind) {
        case SHK_FIELD_U64: return (long long)*(const uint64_t *)p;
        case SHK_FIELD_U32: return *(const uint32_t *)p;
        case SHK_FIELD_I32: return *(const int32_t *)p;
        default: return *(const int *)p;
        }
    }
    fprintf(stderr, "no field %s\n", name);
    checks_failed++;
    return -999;
}

/* What statistics() shows: the owner pid/tid split of Lock and RLock, owner_alive of a
 * killed holder (and the take-over recorded), undo holders, this process's read holds. */
static void test_stats(void)
{
    union shk_sync_stats st;
    const struct shk_field *f;
    struct shk_lock_sh *l = obj("st-lock", SHK_OBJ_LOCK, 0, 0, 0);
    f = shk_sync_stats(l, SHK_OBJ_LOCK, 0, &st);
    CHECK_EQ(field(&st, f, "owner_pid"), 0);
    CHECK_EQ(field(&st, f, "count"), 0);
    CHECK_EQ(field(&st, f, "owner_alive"), -1); /* free: None */
    CHECK_EQ(lock_acq(l, 0, -1), 0);
    f = shk_sync_stats(l, SHK_OBJ_LOCK, 0, &st);
    CHECK_EQ(field(&st, f, "owner_pid"), getpid());
    CHECK_EQ(field(&st, f, "owner_tid"), 0);
    CHECK_EQ(field(&st, f, "count"), 1);
    CHECK_EQ(field(&st, f, "owner_alive"), 1);
    CHECK_EQ(field(&st, f, "acquisitions"), 1);
    CHECK_EQ(shk_lock_release(l, 0), 0);

    struct shk_lock_sh *r = obj("st-rlock", SHK_OBJ_RLOCK, 0, 0, 0);
    CHECK_EQ(lock_acq(r, 1, -1), 0);
    CHECK_EQ(lock_acq(r, 1, -1), 0);
    f = shk_sync_stats(r, SHK_OBJ_RLOCK, 0, &st);
    CHECK_EQ(field(&st, f, "owner_pid"), getpid());
    CHECK_EQ(field(&st, f, "owner_tid"), syscall(SYS_gettid));
    CHECK_EQ(field(&st, f, "count"), 2);
    CHECK_EQ(shk_lock_release(r, 1), 0);
    CHECK_EQ(shk_lock_release(r, 1), 0);

    /* a holder killed: not alive, named; the next acquire takes over and says so */
    pid_t pid = fork_holder(l, 0, 1);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    f = shk_sync_stats(l, SHK_OBJ_LOCK, 0, &st);
    CHECK_EQ(field(&st, f, "owner_pid"), pid);
    CHECK_EQ(field(&st, f, "owner_alive"), 0);
    CHECK_EQ(lock_acq(l, 0, 5), SHK_EOWNERDEAD);
    f = shk_sync_stats(l, SHK_OBJ_LOCK, 0, &st);
    CHECK_EQ(field(&st, f, "owner_deaths"), 1);
    CHECK_EQ(field(&st, f, "last_dead_pid"), pid);
    CHECK_EQ(field(&st, f, "owner_alive"), 1);
    CHECK_EQ(shk_lock_release(l, 0), 0);

    struct shk_sem_sh *s = obj("st-usem", SHK_OBJ_SEMAPHORE, 3, 4, SHK_SYNCF_UNDO);
    CHECK_EQ(sem_acq(s, -1), 0);
    CHECK_EQ(sem_acq(s, -1), 0);
    f = shk_sync_stats(s, SHK_OBJ_SEMAPHORE, 0, &st);
    CHECK_EQ(field(&st, f, "value"), 1);
    CHECK_EQ(field(&st, f, "initial"), 3);
    CHECK_EQ(field(&st, f, "undo"), 1);
    CHECK_EQ(field(&st, f, "bounded"), 0);
    CHECK_EQ(field(&st, f, "slots"), 4);
    CHECK_EQ(field(&st, f, "holders"), 1);
    CHECK_EQ(field(&st, f, "held_here"), 2);
    CHECK_EQ(shk_sem_release(s, 2), 0);

    struct shk_rwlock_sh *rw = obj("st-rw", SHK_OBJ_RWLOCK, 8, 0, 0);
    uint32_t slot = UINT32_MAX;
    CHECK_EQ(rw_read(rw, &slot, -1), 0);
    f = shk_sync_stats(rw, SHK_OBJ_RWLOCK, slot, &st);
    CHECK_EQ(field(&st, f, "readers"), 1);
    CHECK_EQ(field(&st, f, "reader_processes"), 1);
    CHECK_EQ(field(&st, f, "max_readers"), 8);
    CHECK_EQ(field(&st, f, "held_here"), 1);
    CHECK_EQ(field(&st, f, "writer_pid"), 0);
    f = shk_sync_stats(rw, SHK_OBJ_RWLOCK, UINT32_MAX, &st); /* no slot cached: none here */
    CHECK_EQ(field(&st, f, "held_here"), 0);
    CHECK_EQ(shk_rw_release_read(rw, &slot), 0);
    CHECK_EQ(rw_write(rw, -1), 0);
    f = shk_sync_stats(rw, SHK_OBJ_RWLOCK, slot, &st);
    CHECK_EQ(field(&st, f, "writer_pid"), getpid());
    CHECK_EQ(shk_rw_release_write(rw), 0);

    struct shk_event_sh *e = obj("st-event", SHK_OBJ_EVENT, 0, 0, 0);
    shk_event_set(e);
    f = shk_sync_stats(e, SHK_OBJ_EVENT, 0, &st);
    CHECK_EQ(field(&st, f, "is_set"), 1);
    CHECK_EQ(field(&st, f, "sets"), 1);

    struct shk_cond_sh *cv = obj("st-cond", SHK_OBJ_CONDITION, 0, 0, 0);
    f = shk_sync_stats(cv, SHK_OBJ_CONDITION, 0, &st);
    CHECK_EQ(field(&st, f, "lock_offset"), 128);
    CHECK_EQ(st.cond.lock_name[0], '\0');

    struct shk_barrier_sh *b = obj("st-barrier", SHK_OBJ_BARRIER, 3, 0, 0);
    shk_barrier_abort(b);
    f = shk_sync_stats(b, SHK_OBJ_BARRIER, 0, &st);
    CHECK_EQ(field(&st, f, "parties"), 3);
    CHECK_EQ(field(&st, f, "broken"), 1);
    CHECK_EQ(field(&st, f, "n_waiting"), 0);
    CHECK_EQ(field(&st, f, "breaks"), 1);

    struct shk_counter_sh *cn = obj("st-counter", SHK_OBJ_COUNTER, 0, 0, 0);
    CHECK(shk_sync_stats(cn, SHK_OBJ_COUNTER, 0, &st) == NULL);
}

static void test_configure(void)
{
    struct shk_wait_config saved = shk_wait_cfg;
    CHECK_EQ(shk_sync_configure(-1, 99999, -1), EINVAL);
    CHECK_EQ(shk_sync_configure(5, -1, 999999), EINVAL);
    CHECK_EQ(shk_wait_cfg.spin_max_ns, saved.spin_max_ns); /* refused: nothing changed */
    CHECK_EQ(shk_sync_configure(5, 100000, -1), 0);
    CHECK_EQ(shk_wait_cfg.spin_max_ns, 5);
    CHECK_EQ(shk_wait_cfg.liveness_ns, 100000);
    CHECK_EQ(shk_wait_cfg.recheck_ns, saved.recheck_ns);
    shk_wait_cfg = saved;
}

/* shk_sync_acquire_op: the op of each lock kind takes that kind (one attempt, the object
 * it names), a second attempt finds it held, and the types without an acquire get none. */
static int try_op(const struct shk_wait_op *op, void *o)
{
    struct shk_wait w = SHK_WAIT_INIT(SHK_FOREVER, SHK_WAIT_TRY);
    return shk_wait_run(op, o, &w);
}

static void test_acquire_op(void)
{
    struct shk_lock_sh *l = obj("op-lock", SHK_OBJ_LOCK, 0, 0, 0);
    struct shk_lock_sh *rl = obj("op-rlock", SHK_OBJ_RLOCK, 0, 0, 0);
    struct shk_sem_sh *s = obj("op-sem", SHK_OBJ_SEMAPHORE, 1, 0, 0);
    struct shk_rwlock_sh *rw = obj("op-rw", SHK_OBJ_RWLOCK, 8, 0, 0);
    CHECK(shk_sync_acquire_op(SHK_OBJ_LOCK, 0) == &shk_lock_op);
    CHECK(shk_sync_acquire_op(SHK_OBJ_RLOCK, 1) == &shk_rlock_op);
    CHECK(shk_sync_acquire_op(SHK_OBJ_SEMAPHORE, 0) == &shk_sem_op);
    CHECK_EQ(try_op(shk_sync_acquire_op(SHK_OBJ_LOCK, 0), l), 0);
    CHECK(shk_lock_is_mine(l, 0));
    CHECK_EQ(try_op(shk_sync_acquire_op(SHK_OBJ_LOCK, 0), l), EBUSY);
    CHECK_EQ(shk_lock_release(l, 0), 0);
    CHECK_EQ(try_op(shk_sync_acquire_op(SHK_OBJ_RLOCK, 0), rl), 0);
    CHECK_EQ(try_op(shk_sync_acquire_op(SHK_OBJ_RLOCK, 0), rl), 0); /* re-entered */
    CHECK_EQ(shk_lock_owned_count(rl, 1), 2);
    uint32_t count = 0;
    CHECK_EQ(shk_lock_release_all(rl, 1, &count), 0);
    CHECK_EQ(try_op(shk_sync_acquire_op(SHK_OBJ_SEMAPHORE, 0), s), 0);
    CHECK_EQ(try_op(shk_sync_acquire_op(SHK_OBJ_SEMAPHORE, 0), s), EBUSY);
    CHECK_EQ(shk_sem_release(s, 1), 0);
    /* an RWLock: the read side runs on a reader, the write side on the lock */
    const struct shk_wait_op *rd_op = shk_sync_acquire_op(SHK_OBJ_RWLOCK, 0);
    const struct shk_wait_op *wr_op = shk_sync_acquire_op(SHK_OBJ_RWLOCK, 1);
    CHECK(rd_op == &shk_rw_read_op && wr_op == &shk_rw_write_op);
    struct shk_rw_reader rd = {rw, UINT32_MAX};
    CHECK_EQ(try_op(rd_op, &rd), 0);
    CHECK(rd.slot != UINT32_MAX);
    CHECK_EQ(shk_rw_held_here(rw, rd.slot), 1);
    CHECK_EQ(try_op(wr_op, rw), EBUSY);
    CHECK_EQ(shk_rw_release_read(rw, &rd.slot), 0);
    CHECK_EQ(try_op(wr_op, rw), 0);
    CHECK_EQ(try_op(rd_op, &rd), EBUSY);
    CHECK_EQ(shk_rw_release_write(rw), 0);
    const uint32_t none[] = {SHK_OBJ_EVENT, SHK_OBJ_CONDITION, SHK_OBJ_BARRIER,
                             SHK_OBJ_COUNTER, SHK_OBJ_VALUE, SHK_OBJ_RAW};
    for (size_t i = 0; i < sizeof none / sizeof none[0]; i++) {
        CHECK(shk_sync_acquire_op(none[i], 0) == NULL);
        CHECK(shk_sync_acquire_op(none[i], 1) == NULL);
    }
}

int main(void)
{
    open_zone();
    test_lock_mutual_exclusion();
    test_killed_owner(0, 200);
    test_killed_owner(1, 100);
    test_rlock();
    test_semaphore();
    test_event();
    test_rwlock();
    test_condition();
    test_barrier();
    test_live_impostor();
    test_fast_paths();
    test_async_contract();
    test_cond_wait_lock();
    test_sem_try_now();
    test_stats();
    test_configure();
    test_acquire_op();
    char report[4096];
    CHECK_EQ(shk_zone_check(&z, report, sizeof report), 0);
    shk_seg_close(&seg);
    TEST_MAIN_END();
}
