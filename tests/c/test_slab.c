/* The zone allocator against a simple model: random alloc/free, every invariant checked
 * by shk_zone_check(), crash recovery rebuilds a consistent allocator, and bad frees are
 * reported, not followed. */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <sys/mman.h>
#include <unistd.h>

#include "check.h"
#include "futex.h"
#include "wait.h"
#include "zone.h"

#define NLIVE 4096

static struct shk_segment seg;
static struct shk_zone z;

static void open_zone(size_t size, size_t max_size, int backend_posix, const char *name)
{
    int status = -1, r;
    if (backend_posix) {
        shk_seg_unlink_posix(name);
        r = shk_seg_open_posix(&seg, name, SHK_O_CREATE | SHK_O_ALLOWEMPTY, 0600, 0, max_size);
    } else {
        r = shk_seg_create_anon(&seg, size);
    }
    CHECK_EQ(r, 0);
    struct shk_zone_params p = {size, max_size, "t", 1};
    r = shk_zone_try_open(&z, &seg, &p, 0, &status);
    CHECK_EQ(r, 0);
    CHECK_EQ(status, SHK_ZONE_MUST_INIT);
    CHECK_EQ(shk_zone_init_done(&z, 1), 0);
}

static void expect_consistent(const char *when)
{
    char report[4096];
    int n = shk_zone_check(&z, report, sizeof report);
    if (n != 0)
        fprintf(stderr, "inconsistent %s:\n%s\n", when, report);
    CHECK_EQ(n, 0);
}

static void test_random(void)
{
    open_zone(4 << 20, 0, 0, NULL);
    static uint64_t off[NLIVE], len[NLIVE];
    int live = 0;
    unsigned seed = 12345;
    for (int step = 0; step < 200000; step++) {
        seed = seed * 1103515245u + 12345u;
        int do_alloc = live == 0 || (live < NLIVE && (seed >> 16) % 100 < 55);
        if (do_alloc) {
            seed = seed * 1103515245u + 12345u;
            uint64_t n = (seed >> 16) % 5 == 0 ? 1 + (seed >> 8) % 40000 : 1 + (seed >> 12) % 2048;
            uint64_t o;
            int r = shk_zone_alloc(&z, n, 0, &o);
            if (r == SHK_EFULL)
                continue;
            CHECK_EQ(r, 0);
            CHECK(shk_zone_usable_size(&z, o) >= n);
            /* no overlap with what is live: fill with a pattern, verify at free */
            memset(z.base + o, (int)(live & 0xff), n);
            off[live] = o;
            len[live] = n;
            live++;
        } else {
            int i = (int)((seed >> 16) % (unsigned)live);
            uint8_t *p = z.base + off[i];
            uint8_t want = p[0];
            for (uint64_t k = 0; k < len[i]; k++)
                if (p[k] != want) {
                    CHECK(!"allocation overwritten by another");
                    break;
                }
            CHECK_EQ(shk_zone_free(&z, off[i]), 0);
            off[i] = off[live - 1];
            len[i] = len[live - 1];
            /* re-stamp the moved one so patterns stay per-allocation */
            live--;
            if (i < live)
                memset(z.base + off[i], z.base[off[i]], len[i]);
        }
        if (step % 20000 == 0)
            expect_consistent("during random alloc/free");
    }
    expect_consistent("after random alloc/free");
    while (live)
        CHECK_EQ(shk_zone_free(&z, off[--live]), 0);
    expect_consistent("after freeing everything");
    struct shk_zone_stats st;
    CHECK_EQ(shk_zone_stats(&z, &st), 0);
    CHECK_EQ(st.free_pages, st.total_pages);
    CHECK_EQ(st.largest_free_run, st.total_pages);
    shk_seg_close(&seg);
}

static void test_bad_frees(void)
{
    open_zone(1 << 20, 0, 0, NULL);
    uint64_t a, b;
    CHECK_EQ(shk_zone_alloc(&z, 100, 0, &a), 0);
    CHECK_EQ(shk_zone_alloc(&z, 10000, 0, &b), 0);
    CHECK_EQ(shk_zone_free(&z, 12), SHK_EBADFREE);                  /* header */
    CHECK_EQ(shk_zone_free(&z, (1 << 20) + 4096), SHK_EBADFREE);   /* outside */
    CHECK_EQ(shk_zone_free(&z, a + 8), SHK_EBADFREE);              /* wrong chunk */
    CHECK_EQ(shk_zone_free(&z, b + 4096), SHK_EBADFREE);           /* inside a run */
    CHECK_EQ(shk_zone_free(&z, a), 0);
    CHECK_EQ(shk_zone_free(&z, a), SHK_EBADFREE);                  /* twice */
    CHECK(strstr(shk_error_detail(), "already free") != NULL);
    CHECK_EQ(shk_zone_free(&z, b), 0);
    CHECK_EQ(shk_zone_free(&z, b), SHK_EBADFREE);
    expect_consistent("after bad frees");
    shk_seg_close(&seg);
}

static void test_fragmentation(void)
{
    open_zone(1 << 20, 0, 0, NULL);
    uint64_t small[4096];
    int n = 0;
    while (n < 4096 && shk_zone_alloc(&z, 2048, SHK_ALLOC_NOGROW, &small[n]) == 0)
        n++;
    uint64_t big;
    CHECK_EQ(shk_zone_alloc(&z, 64 * 1024, 0, &big), SHK_EFULL);
    for (int i = 0; i < n; i++)
        CHECK_EQ(shk_zone_free(&z, small[i]), 0);
    CHECK_EQ(shk_zone_alloc(&z, 512 * 1024, 0, &big), 0);
    expect_consistent("after fragmentation");
    shk_seg_close(&seg);
}

static void test_recovery(void)
{
    open_zone(1 << 20, 0, 0, NULL);
    uint64_t o[64];
    for (int i = 0; i < 64; i++)
        CHECK_EQ(shk_zone_alloc(&z, (uint64_t)(i * 331 % 9000) + 1, 0, &o[i]), 0);
    for (int i = 0; i < 64; i += 3)
        CHECK_EQ(shk_zone_free(&z, o[i]), 0);
    /* scramble the derived data, as a crash in the middle could leave it */
    z.hdr->free_head = 0;
    z.hdr->free_pages = 7;
    memset(z.hdr->class_head, 0, sizeof z.hdr->class_head);
    z.hdr->stats[2].used = 999;
    CHECK(shk_zone_check(&z, NULL, 0) > 0);
    CHECK_EQ(shk_zone_lock(&z), 0);
    CHECK_EQ(shk_zone_recover_locked(&z), 0);
    shk_zone_unlock(&z);
    expect_consistent("after recovery");
    for (int i = 1; i < 64; i++)
        if (i % 3)
            CHECK_EQ(shk_zone_free(&z, o[i]), 0);
    expect_consistent("after freeing the survivors");
    shk_seg_close(&seg);
}

static void test_growth(void)
{
    char name[64];
    snprintf(name, sizeof name, "shmkit-ctest-grow-%d", (int)getpid());
    open_zone(64 << 10, 8 << 20, 1, name);
    uint8_t *base = z.base;
    uint64_t first;
    CHECK_EQ(shk_zone_alloc(&z, 1000, 0, &first), 0);
    memset(z.base + first, 0x5a, 1000);
    uint64_t o;
    int count = 0;
    while (shk_zone_alloc(&z, 16384, 0, &o) == 0)
        count++;
    CHECK(count > 300);            /* grew well past the initial 64 KiB */
    CHECK(z.hdr->generation > 0);
    CHECK(z.base == base);          /* the mapping did not move */
    CHECK_EQ(z.base[first + 999], 0x5a);
    expect_consistent("after growth");
    shk_seg_close(&seg);
    shk_seg_unlink_posix(name);
}

/* The directory listed in one pass, the header record, the crash hook of the Python tests
 * (a holder dies with the bookkeeping half done: the next locker recovers), and an open
 * that times out while another process initialises the zone (the core's detail says so). */
static void test_zone_views(void)
{
    struct shk_segment s2;
    struct shk_zone z2;
    int status = -1;
    CHECK_EQ(shk_seg_create_anon(&s2, 1 << 20), 0);
    struct shk_segment shared = s2;
    shared.created = 0; /* as if inherited: initialisers claim the zone in its header */
    struct shk_zone_params p = {1 << 20, 0, "views", 5};
    CHECK_EQ(shk_zone_try_open(&z2, &shared, &p, 0, &status), 0);
    CHECK_EQ(status, SHK_ZONE_MUST_INIT);
    pid_t pid = fork();
    if (pid == 0) {
        struct shk_zone z3;
        struct shk_zone_opening o = {&z3, &shared, &p, 0};
        struct shk_wait w = SHK_WAIT_INIT(shk_now_ns() + 50 * 1000 * 1000, 0);
        int r;
        do
            r = shk_wait_run(&shk_zone_open_op, &o, &w);
        while (r == EINTR);
        _exit(r == ETIMEDOUT && strstr(shk_error_detail(), "still being initialised") ? 0 : 1);
    }
    int st = -1;
    waitpid(pid, &st, 0);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    CHECK_EQ(shk_zone_init_done(&z2, 1), 0);

    struct shk_dirent *all = (struct shk_dirent *)1;
    size_t n = 99;
    CHECK_EQ(shk_zone_obj_list_all(&z2, &all, &n), 0);
    CHECK(all == NULL && n == 0);
    char name[16];
    struct shk_dirent e;
    int created;
    for (int i = 0; i < 100; i++) { /* more than a first guess of the caller's would hold */
        snprintf(name, sizeof name, "o%d", i);
        CHECK_EQ(shk_zone_obj_get(&z2, name, SHK_OBJ_RAW, 64, 0, SHK_O_CREATE, NULL, NULL, &e,
                                  &created), 0);
    }
    CHECK_EQ(shk_zone_obj_list_all(&z2, &all, &n), 0);
    CHECK_EQ(n, 100);
    int seen = 0;
    for (size_t i = 0; i < n; i++)
        seen += strcmp(all[i].name, "o42") == 0;
    CHECK_EQ(seen, 1);
    free(all);

    struct shk_zone_header_info h;
    shk_zone_header_info(&z2, &h);
    CHECK_EQ(h.magic, SHK_ZONE_MAGIC);
    CHECK_EQ(h.state, SHK_ZS_READY);
    CHECK_EQ(h.declared_size, 1 << 20);
    CHECK_EQ(h.creator_pid, getpid());
    CHECK_EQ(h.tag_len, 5);
    CHECK(memcmp(h.tag, "views", 5) == 0);
    CHECK(strcmp(shk_zone_header_fields[0].name, "magic") == 0);

    for (int mode = 1; mode <= 2; mode++) {
        pid = fork();
        if (pid == 0) {
            if (shk_zone_lock(&z2) != 0)
                _exit(1);
            shk_zone_debug_half_done_locked(&z2, mode);
            kill(getpid(), SIGKILL);
        }
        waitpid(pid, &st, 0);
        CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
        uint64_t before = z2.hdr->recoveries;
        CHECK_EQ(shk_zone_lock(&z2), 0); /* the dead holder's mess is rebuilt here */
        shk_zone_unlock(&z2);
        CHECK_EQ(z2.hdr->recoveries, before + 1);
        char report[4096];
        int bad = shk_zone_check(&z2, report, sizeof report);
        if (bad)
            fprintf(stderr, "after half-done mode %d:\n%s\n", mode, report);
        CHECK_EQ(bad, 0);
    }
    shk_seg_close(&s2);
}

int main(void)
{
    test_random();
    test_bad_frees();
    test_fragmentation();
    test_recovery();
    test_growth();
    test_zone_views();
    TEST_MAIN_END();
}
