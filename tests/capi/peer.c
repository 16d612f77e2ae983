/*
 * peer.c - the C side of tests/test_capi*.py: one program, a subcommand per role, built
 * by the tests with exactly the command docs/c.md gives.  Each prints what it saw on
 * stdout (one line per fact, "key value") and exits 0, or prints the failing call with
 * its code and detail on stderr and exits 1.
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <shmkit.h>

#define CHECK(call)                                                                       \
    do {                                                                                  \
        int r_ = (call);                                                                  \
        if (r_ != 0) {                                                                    \
            fprintf(stderr, "%s:%d: %s -> %d (%s): %s\n", __FILE__, __LINE__, #call, r_,  \
                    shmkit_strerror(r_), shmkit_error_detail());                          \
            exit(1);                                                                      \
        }                                                                                 \
    } while (0)

#define FAIL(...)                                                                         \
    do {                                                                                  \
        fprintf(stderr, __VA_ARGS__);                                                     \
        fputc('\n', stderr);                                                              \
        exit(1);                                                                          \
    } while (0)

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static const char *code_name(int r)
{
    switch (r) {
    case 0: return "OK";
    case EBUSY: return "EBUSY";
    case ETIMEDOUT: return "ETIMEDOUT";
    case EINTR: return "EINTR";
    case ENOBUFS: return "ENOBUFS";
    case SHMKIT_EOWNERDEAD: return "EOWNERDEAD";
    case SHMKIT_ENOTOWNER: return "ENOTOWNER";
    case SHMKIT_EEMPTY: return "EEMPTY";
    case SHMKIT_EFULLQ: return "EFULLQ";
    case SHMKIT_ENOTFOUND: return "ENOTFOUND";
    case SHMKIT_EEXISTS: return "EEXISTS";
    case SHMKIT_ETYPE: return "ETYPE";
    case SHMKIT_EFULL: return "EFULL";
    case SHMKIT_ETOOBIG: return "ETOOBIG";
    case ERANGE: return "ERANGE";
    case EINVAL: return "EINVAL";
    default: return shmkit_strerror(r);
    }
}

static shmkit_zone *attach(const char *name)
{
    shmkit_zone *z;
    CHECK(shmkit_zone_open(name, 0, NULL, 0, NULL, &z));
    return z;
}

/* ---- signals: a handler that runs often, and counts ---------------------------------------- */

static volatile sig_atomic_t signals_seen;

static void on_alarm(int sig)
{
    (void)sig;
    signals_seen++;
}

/* SIGALRM every `us` microseconds, without SA_RESTART: every sleep gets interrupted. */
static void signal_storm(long us)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGALRM, &sa, NULL) != 0)
        FAIL("sigaction: %s", strerror(errno));
    struct itimerval it = {{0, us}, {0, us}};
    if (setitimer(ITIMER_REAL, &it, NULL) != 0)
        FAIL("setitimer: %s", strerror(errno));
}

static void signal_calm(void)
{
    struct itimerval it = {{0, 0}, {0, 0}};
    setitimer(ITIMER_REAL, &it, NULL);
}

/* ---- segments -------------------------------------------------------------------------------- */

/* segment-create NAME TEXT: create it exclusively, write TEXT (NUL-terminated), keep it */
static int segment_create(char **a)
{
    shmkit_segment *s;
    CHECK(shmkit_segment_open(a[0], SHMKIT_CREATE | SHMKIT_EXCL, 4096, 0600, &s));
    strcpy(shmkit_segment_ptr(s), a[1]);
    printf("created %d\nsize %zu\n", shmkit_segment_created(s), shmkit_segment_size(s));
    return shmkit_segment_close(s);
}

/* segment-read NAME: print the NUL-terminated text at its start, and its size */
static int segment_read(char **a)
{
    shmkit_segment *s;
    CHECK(shmkit_segment_open(a[0], SHMKIT_RDONLY, 0, 0, &s));
    printf("size %zu\ntext %s\ncreated %d\n", shmkit_segment_size(s),
           (const char *)shmkit_segment_ptr(s), shmkit_segment_created(s));
    return shmkit_segment_close(s);
}

/* segment-unlink NAME */
static int segment_unlink(char **a)
{
    int r = shmkit_segment_unlink(a[0]);
    printf("unlink %s\n", code_name(r));
    return 0;
}

/* segment-hold NAME: open it, say so, stay attached until killed */
static int segment_hold(char **a)
{
    shmkit_segment *s;
    CHECK(shmkit_segment_open(a[0], 0, 0, 0, &s));
    printf("attached\n");
    fflush(stdout);
    for (;;)
        pause();
}

/* ---- zones ----------------------------------------------------------------------------------- */

static int init_calls;

static int make_objects(shmkit_zone *z, void *arg)
{
    shmkit_counter *c;
    init_calls++;
    int r = shmkit_counter_open(z, "made-by-init", 42, SHMKIT_CREATE, &c);
    if (r == 0)
        shmkit_counter_close(c);
    return r ? r : *(int *)arg;
}

/* zone-open NAME SIZE TAG|- INITRESULT: declare it, with an init that makes a counter and
 * returns INITRESULT; print created, size, or the error */
static int zone_open(char **a)
{
    shmkit_zone *z;
    int init_result = atoi(a[3]);
    struct shmkit_zone_options o;
    memset(&o, 0, sizeof o);
    o.init = make_objects;
    o.init_arg = &init_result;
    o.max_size = 8u << 20;
    const char *tag = strcmp(a[2], "-") ? a[2] : NULL;
    int r = shmkit_zone_open(a[0], strtoull(a[1], NULL, 0), tag, tag ? strlen(tag) : 0, &o, &z);
    if (r) {
        printf("error %d\ndetail %s\n", r, shmkit_error_detail());
        return 0;
    }
    printf("created %d\ninit_calls %d\nsize %zu\n", shmkit_zone_created(z), init_calls,
           shmkit_zone_size(z));
    return shmkit_zone_close(z);
}

/* ---- locks ----------------------------------------------------------------------------------- */

/* lock-hold ZONE LOCK: acquire, say so, hold it until killed */
static int lock_hold(char **a)
{
    shmkit_zone *z = attach(a[0]);
    shmkit_lock *l;
    CHECK(shmkit_lock_open(z, a[1], SHMKIT_CREATE, &l));
    int r = shmkit_lock_acquire(l, SHMKIT_FOREVER);
    printf("held %s\n", code_name(r));
    fflush(stdout);
    for (;;)
        pause();
}

/* lock-acquire ZONE LOCK TIMEOUT [storm]: acquire (SIGALRM every 500 us meanwhile when
 * "storm"), print the result and how long it took; release if acquired */
static int lock_acquire(char **a)
{
    shmkit_zone *z = attach(a[0]);
    shmkit_lock *l;
    CHECK(shmkit_lock_open(z, a[1], 0, &l));
    if (a[3] && !strcmp(a[3], "storm"))
        signal_storm(500);
    double t0 = now();
    int r = shmkit_lock_acquire(l, atof(a[2]));
    double dt = now() - t0;
    signal_calm();
    printf("result %s\nelapsed %.6f\nsignals %d\n", code_name(r), dt, (int)signals_seen);
    if (r == 0 || r == SHMKIT_EOWNERDEAD) {
        CHECK(shmkit_lock_release(l));
        printf("release_again %s\n", code_name(shmkit_lock_release(l)));
    }
    shmkit_lock_close(l);
    return shmkit_zone_close(z);
}

/* ---- counters -------------------------------------------------------------------------------- */

/* counter-add ZONE NAME N: N increments of 1; counter-cas: the same with a CAS loop */
static int counter_add(char **a, int cas)
{
    shmkit_zone *z = attach(a[0]);
    shmkit_counter *c;
    CHECK(shmkit_counter_open(z, a[1], 0, SHMKIT_CREATE, &c));
    shmkit_zone_close(z); /* the counter keeps the zone mapped */
    long n = atol(a[2]);
    long retries = 0;
    for (long i = 0; i < n; i++) {
        if (!cas) {
            shmkit_counter_add(c, 1);
            continue;
        }
        int64_t v = shmkit_counter_load(c);
        while (!shmkit_counter_cas(c, &v, v + 1))
            retries++; /* v now holds the value seen */
    }
    printf("value %" PRId64 "\nretries %ld\n", shmkit_counter_load(c), retries);
    return shmkit_counter_close(c);
}

/* ---- errors ---------------------------------------------------------------------------------- */

/* strerror CODE...: "code text" per code */
static int print_strerror(char **a, int n)
{
    for (int i = 0; i < n; i++)
        printf("%s %s\n", a[i], shmkit_strerror(atoi(a[i])));
    return 0;
}

/* ---- queue ------------------------------------------------------------------------------------- */

/* A test message: producer id and sequence number (little-endian uint64 each, x86),
 * padded with a byte pattern up to its size. */
struct msg {
    uint64_t id, seq;
};

static void fill(uint8_t *buf, size_t size, uint64_t id, uint64_t seq)
{
    struct msg m = {id, seq};
    memcpy(buf, &m, sizeof m);
    for (size_t i = sizeof m; i < size; i++)
        buf[i] = (uint8_t)(seq + i);
}

static shmkit_queue *open_queue(const char *zone, const char *name, shmkit_zone **z)
{
    shmkit_queue *q;
    *z = attach(zone);
    CHECK(shmkit_queue_open(*z, name, 0, SHMKIT_CREATE, &q));
    return q;
}

/* queue-produce ZONE QUEUE N ID [SIZE]: put N messages of SIZE (>= 16) bytes */
static int queue_produce(char **a, int n)
{
    shmkit_zone *z;
    shmkit_queue *q = open_queue(a[0], a[1], &z);
    long count = atol(a[2]);
    uint64_t id = strtoull(a[3], NULL, 0);
    size_t size = n > 4 ? strtoul(a[4], NULL, 0) : sizeof(struct msg);
    uint8_t *buf = malloc(size);
    double t0 = now();
    for (long i = 0; i < count; i++) {
        fill(buf, size, id, (uint64_t)i);
        int r = shmkit_queue_put(q, buf, size, 120);
        if (r)
            FAIL("put %ld: %s (%s)", i, code_name(r), shmkit_error_detail());
    }
    printf("sent %ld\nelapsed %.6f\n", count, now() - t0);
    free(buf);
    shmkit_queue_close(q);
    return shmkit_zone_close(z);
}

/* queue-consume ZONE QUEUE N NPRODUCERS [LOGFILE]: get N messages (120 s each at most);
 * check each producer's come in order, none twice, none missing of what arrived, and
 * that nothing is left; with LOGFILE (consumers beside it) write the (id, seq) of each
 * there instead, for the test to check */
static int queue_consume(char **a, int n)
{
    shmkit_zone *z;
    shmkit_queue *q = open_queue(a[0], a[1], &z);
    long count = atol(a[2]);
    int np = atoi(a[3]);
    FILE *log = n > 4 ? fopen(a[4], "wb") : NULL;
    int64_t *next = calloc((size_t)np, sizeof *next);
    size_t cap = 16, len;
    uint8_t *buf = malloc(cap);
    long enobufs = 0;
    double t0 = now();
    for (long i = 0; i < count;) {
        int r = shmkit_queue_get(q, buf, cap, &len, 120);
        if (r == ENOBUFS) { /* grow and call again: the message is not lost */
            enobufs++;
            cap = len;
            buf = realloc(buf, cap);
            continue;
        }
        if (r)
            FAIL("get %ld: %s (%s)", i, code_name(r), shmkit_error_detail());
        struct msg m;
        if (len < sizeof m)
            FAIL("message %ld has %zu bytes", i, len);
        memcpy(&m, buf, sizeof m);
        if (m.id >= (uint64_t)np)
            FAIL("message %ld: producer %llu of %d", i, (unsigned long long)m.id, np);
        if (log)
            fwrite(&m, sizeof m, 1, log);
        else if ((int64_t)m.seq != next[m.id])
            FAIL("message %ld: producer %llu sent %llu, expected %lld", i,
                 (unsigned long long)m.id, (unsigned long long)m.seq, (long long)next[m.id]);
        next[m.id] = (int64_t)m.seq + 1;
        for (size_t j = sizeof m; j < len; j++)
            if (buf[j] != (uint8_t)(m.seq + j))
                FAIL("message %ld: byte %zu is wrong", i, j);
        i++;
    }
    double dt = now() - t0;
    if (log)
        fclose(log);
    printf("received %ld\nelapsed %.6f\nenobufs %ld\n", count, dt, enobufs);
    if (!log) { /* the only consumer: nothing may be left (with others, this would take) */
        size_t left = 0;
        printf("after %s\n", code_name(shmkit_queue_try_get(q, buf, cap, &left)));
    }
    free(buf);
    free(next);
    shmkit_queue_close(q);
    return shmkit_zone_close(z);
}

/* queue-get ZONE QUEUE CAP TIMEOUT [storm]: one get into a CAP-byte buffer */
static int queue_get(char **a, int n)
{
    shmkit_zone *z;
    shmkit_queue *q = open_queue(a[0], a[1], &z);
    size_t cap = strtoul(a[2], NULL, 0), len = 0;
    char *buf = calloc(1, cap + 1);
    if (n > 4 && !strcmp(a[4], "storm"))
        signal_storm(500);
    double t0 = now();
    int r = shmkit_queue_get(q, buf, cap, &len, atof(a[3]));
    double dt = now() - t0;
    signal_calm();
    printf("result %s\nlen %zu\nelapsed %.6f\nsignals %d\n", code_name(r), len, dt,
           (int)signals_seen);
    if (r == 0)
        printf("text %.*s\n", (int)len, buf);
    if (r == ENOBUFS) { /* the message is not lost: again with room for it */
        buf = realloc(buf, len + 1);
        r = shmkit_queue_get(q, buf, len, &len, 0);
        printf("again %s\ntext %.*s\n", code_name(r), (int)len, buf);
    }
    printf("depth %zu\n", shmkit_queue_depth(q));
    free(buf);
    shmkit_queue_close(q);
    return shmkit_zone_close(z);
}

/* queue-put ZONE QUEUE TEXT TIMEOUT [storm] */
static int queue_put(char **a, int n)
{
    shmkit_zone *z;
    shmkit_queue *q = open_queue(a[0], a[1], &z);
    if (n > 4 && !strcmp(a[4], "storm"))
        signal_storm(500);
    double t0 = now();
    int r = shmkit_queue_put(q, a[2], strlen(a[2]), atof(a[3]));
    double dt = now() - t0;
    signal_calm();
    printf("result %s\nelapsed %.6f\nsignals %d\n", code_name(r), dt, (int)signals_seen);
    shmkit_queue_close(q);
    return shmkit_zone_close(z);
}

/* queue-work ZONE QUEUE DONE HOLD MODE: open with MODE (least, most or any), then get
 * DONE messages, marking each done ("done TEXT"), then HOLD more without marking them
 * ("held TEXT") and die by SIGKILL (HOLD 0: close and exit).  A get waits up to 10 s. */
static int queue_work(char **a)
{
    shmkit_zone *z = attach(a[0]);
    shmkit_queue *q;
    int mode = !strcmp(a[4], "least") ? SHMKIT_AT_LEAST_ONCE
               : !strcmp(a[4], "most") ? SHMKIT_AT_MOST_ONCE : 0;
    CHECK(shmkit_queue_open(z, a[1], 0, SHMKIT_CREATE | mode, &q));
    long done = atol(a[2]), hold = atol(a[3]);
    char buf[256];
    size_t len;
    for (long i = 0; i < done + hold; i++) {
        CHECK(shmkit_queue_get(q, buf, sizeof buf, &len, 10.0));
        printf("%s %.*s\n", i < done ? "done" : "held", (int)len, buf);
        if (i < done)
            CHECK(shmkit_queue_task_done(q, 1));
    }
    if (hold) {
        fflush(stdout);
        raise(SIGKILL); /* the held messages are this handle's tasks, never marked done */
    }
    printf("unfinished %zu\n", shmkit_queue_unfinished_tasks(q));
    shmkit_queue_close(q);
    return shmkit_zone_close(z);
}

/* queue-join ZONE QUEUE TIMEOUT: task_done on a handle that took nothing, then join */
static int queue_join(char **a)
{
    shmkit_zone *z = attach(a[0]);
    shmkit_queue *q;
    CHECK(shmkit_queue_open(z, a[1], 0, 0, &q));
    printf("task_done_extra %s\n", code_name(shmkit_queue_task_done(q, 1)));
    printf("unfinished_before %zu\n", shmkit_queue_unfinished_tasks(q));
    double t0 = now();
    int r = shmkit_queue_join(q, atof(a[2]));
    printf("result %s\nelapsed %.6f\nunfinished %zu\n", code_name(r), now() - t0,
           shmkit_queue_unfinished_tasks(q));
    shmkit_queue_close(q);
    return shmkit_zone_close(z);
}

/* ---- dict ---------------------------------------------------------------------------------------- */

static shmkit_dict *open_dict(const char *zone, const char *name, shmkit_zone **z)
{
    shmkit_dict *d;
    *z = attach(zone);
    CHECK(shmkit_dict_open(*z, name, 0, SHMKIT_CREATE, &d));
    return d;
}

/* dict-incr ZONE DICT KEY N: N increments of 1 (init 0) */
static int dict_incr(char **a)
{
    shmkit_zone *z;
    shmkit_dict *d = open_dict(a[0], a[1], &z);
    long count = atol(a[3]);
    int64_t zero = 0, v = 0;
    double t0 = now();
    for (long i = 0; i < count; i++)
        CHECK(shmkit_dict_incr(d, a[2], strlen(a[2]), 1, &zero, 0, &v));
    printf("last %" PRId64 "\nelapsed %.6f\n", v, now() - t0);
    shmkit_dict_close(d);
    return shmkit_zone_close(z);
}

/* dict OP ZONE DICT KEY [ARGS]: one operation, its result and what it returned
 *   get CAP | get-int | set VALUE TTL FLAGS | set-int VALUE TTL FLAGS | delete | ttl |
 *   incr STEP [INIT] */
static int dict_op(char **a, int n)
{
    shmkit_zone *z;
    shmkit_dict *d = open_dict(a[1], a[2], &z);
    const char *op = a[0], *key = a[3];
    size_t klen = strlen(key);
    int r;
    if (!strcmp(op, "get")) {
        size_t cap = n > 4 ? strtoul(a[4], NULL, 0) : 4096, len = 0;
        char *buf = calloc(1, cap + 1);
        r = shmkit_dict_get(d, key, klen, buf, cap, &len);
        printf("result %s\nlen %zu\n", code_name(r), len);
        if (r == 0)
            printf("value %.*s\n", (int)len, buf);
        free(buf);
    } else if (!strcmp(op, "get-int")) {
        int64_t v = 0;
        r = shmkit_dict_get_int(d, key, klen, &v);
        printf("result %s\nvalue %" PRId64 "\n", code_name(r), v);
    } else if (!strcmp(op, "set") || !strcmp(op, "set-int")) {
        int flags = 0;
        for (const char *f = a[6]; *f; f++)
            flags |= *f == 'a' ? SHMKIT_DICT_ADD : *f == 'r' ? SHMKIT_DICT_REPLACE
                   : *f == 's' ? SHMKIT_DICT_SAFE : 0;
        if (!strcmp(op, "set"))
            r = shmkit_dict_set(d, key, klen, a[4], strlen(a[4]), atof(a[5]), flags);
        else
            r = shmkit_dict_set_int(d, key, klen, strtoll(a[4], NULL, 0), atof(a[5]), flags);
        printf("result %s\n", code_name(r));
    } else if (!strcmp(op, "delete")) {
        r = shmkit_dict_delete(d, key, klen);
        printf("result %s\n", code_name(r));
    } else if (!strcmp(op, "ttl")) {
        double t = 0;
        r = shmkit_dict_ttl(d, key, klen, &t);
        printf("result %s\nttl %.3f\n", code_name(r), t);
    } else if (!strcmp(op, "incr")) {
        int64_t init = n > 5 ? strtoll(a[5], NULL, 0) : 0, v = 0;
        r = shmkit_dict_incr(d, key, klen, strtoll(a[4], NULL, 0), n > 5 ? &init : NULL, 0, &v);
        printf("result %s\nvalue %" PRId64 "\n", code_name(r), v);
    } else {
        FAIL("unknown dict operation %s", op);
    }
    if (r && r != ENOBUFS)
        printf("detail %s\n", shmkit_error_detail());
    shmkit_dict_close(d);
    return shmkit_zone_close(z);
}

/* open KIND ZONE NAME CAPACITY FLAGS: open a queue, dict, lock or counter with flags "c"
 * (SHMKIT_CREATE), "x" (SHMKIT_CREATE | SHMKIT_EXCL) or "-"; print the result */
static int open_object(char **a)
{
    shmkit_zone *z = attach(a[1]);
    size_t cap = strtoul(a[3], NULL, 0);
    int flags = !strcmp(a[4], "c") ? SHMKIT_CREATE : !strcmp(a[4], "x") ? SHMKIT_CREATE | SHMKIT_EXCL : 0;
    int r;
    if (!strcmp(a[0], "queue")) {
        shmkit_queue *q = NULL;
        r = shmkit_queue_open(z, a[2], cap, flags, &q);
        shmkit_queue_close(q);
    } else if (!strcmp(a[0], "dict")) {
        shmkit_dict *d = NULL;
        r = shmkit_dict_open(z, a[2], cap, flags, &d);
        shmkit_dict_close(d);
    } else if (!strcmp(a[0], "lock")) {
        shmkit_lock *l = NULL;
        r = shmkit_lock_open(z, a[2], flags, &l);
        shmkit_lock_close(l);
    } else {
        shmkit_counter *c = NULL;
        r = shmkit_counter_open(z, a[2], (int64_t)cap, flags, &c);
        shmkit_counter_close(c);
    }
    printf("result %d\ndetail %s\n", r, r ? shmkit_error_detail() : "");
    return shmkit_zone_close(z);
}

static int enough(const char *name, int n, int nargs)
{
    if (n < nargs)
        FAIL("%s: %d arguments", name, nargs);
    return 1;
}

int main(int argc, char **argv)
{
    if (argc < 2)
        FAIL("usage: peer COMMAND ARGS...");
    const char *cmd = argv[1];
    char **a = argv + 2;
    int n = argc - 2;
    setvbuf(stdout, NULL, _IOLBF, 0);
#define IS(name, nargs) (!strcmp(cmd, name) && enough(name, n, nargs))
    if (IS("segment-create", 2))
        return segment_create(a);
    if (IS("segment-read", 1))
        return segment_read(a);
    if (IS("segment-unlink", 1))
        return segment_unlink(a);
    if (IS("segment-hold", 1))
        return segment_hold(a);
    if (IS("zone-open", 4))
        return zone_open(a);
    if (IS("lock-hold", 2))
        return lock_hold(a);
    if (IS("lock-acquire", 3))
        return lock_acquire(a);
    if (IS("counter-add", 3))
        return counter_add(a, 0);
    if (IS("counter-cas", 3))
        return counter_add(a, 1);
    if (IS("strerror", 0))
        return print_strerror(a, n);
    if (IS("queue-produce", 4))
        return queue_produce(a, n);
    if (IS("queue-consume", 4))
        return queue_consume(a, n);
    if (IS("queue-get", 4))
        return queue_get(a, n);
    if (IS("queue-put", 4))
        return queue_put(a, n);
    if (IS("queue-work", 5))
        return queue_work(a);
    if (IS("queue-join", 3))
        return queue_join(a);
    if (IS("dict-incr", 4))
        return dict_incr(a);
    if (IS("dict", 4))
        return dict_op(a, n);
    if (IS("open", 5))
        return open_object(a);
    FAIL("unknown command %s", cmd);
}
