#include "futex.h"

#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

int shk_futex_wait(uint32_t *word, uint32_t expected, const struct timespec *deadline)
{
    /* FUTEX_WAIT_BITSET takes an absolute timeout, measured on CLOCK_MONOTONIC unless
     * FUTEX_CLOCK_REALTIME is given: exactly the one-deadline model we want. */
    long r = syscall(SYS_futex, word, FUTEX_WAIT_BITSET, expected, deadline, NULL,
                     FUTEX_BITSET_MATCH_ANY);
    if (r == 0)
        return 0;
    switch (errno) {
    case EAGAIN: return 0;          /* value already changed */
    case ETIMEDOUT: return ETIMEDOUT;
    case EINTR: return EINTR;
    default: return errno;
    }
}

int shk_futex_wake(uint32_t *word, int n)
{
    long r = syscall(SYS_futex, word, FUTEX_WAKE, n, NULL, NULL, 0);
    return r < 0 ? 0 : (int)r;
}

uint64_t shk_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

uint64_t shk_wall_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

void shk_deadline_after(struct timespec *deadline, double seconds)
{
    if (seconds < 0)
        seconds = 0;
    if (seconds > 1e9) /* ~31 years: treat as "practically forever" without overflow */
        seconds = 1e9;
    uint64_t t = shk_now_ns() + (uint64_t)(seconds * 1e9);
    deadline->tv_sec = (time_t)(t / 1000000000ull);
    deadline->tv_nsec = (long)(t % 1000000000ull);
}

uint64_t shk_deadline_left_ns(const struct timespec *deadline)
{
    uint64_t d = (uint64_t)deadline->tv_sec * 1000000000ull + (uint64_t)deadline->tv_nsec;
    uint64_t now = shk_now_ns();
    return d > now ? d - now : 0;
}

void shk_deadline_slice(struct timespec *out, const struct timespec *deadline, uint64_t slice_ns)
{
    uint64_t t = shk_now_ns() + slice_ns;
    if (deadline) {
        uint64_t d = (uint64_t)deadline->tv_sec * 1000000000ull + (uint64_t)deadline->tv_nsec;
        if (d < t)
            t = d;
    }
    out->tv_sec = (time_t)(t / 1000000000ull);
    out->tv_nsec = (long)(t % 1000000000ull);
}
