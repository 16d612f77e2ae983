/*
 * futex.h - wait/wake on 32-bit words in shared memory, with one absolute deadline.
 *
 * Every blocking primitive of shmkit is built on these two calls.  Rules they assume
 * (see docs/ARCHITECTURE.md, "waiting"):
 *   - shared words never use FUTEX_PRIVATE_FLAG: the waiters are in other processes;
 *   - a deadline is an absolute CLOCK_MONOTONIC time computed once before looping, so
 *     spurious wake-ups and EINTR retries do not stretch the timeout;
 *   - the waker publishes its state, then issues a full fence before reading the waiter
 *     count; the waiter registers (seq_cst), re-checks the condition, then sleeps.
 *     Otherwise wake-ups are lost.
 */
#ifndef SHK_FUTEX_H
#define SHK_FUTEX_H

#include <stdint.h>
#include <time.h>

#include "atomics.h" /* shk_cpu_relax, and the orders the rules above name */

#ifdef __cplusplus
extern "C" {
#endif

/*
 * Sleep while *word == expected, until woken or `deadline` (absolute CLOCK_MONOTONIC;
 * NULL waits forever).  Returns 0 when woken or when *word already differed (the caller
 * re-checks its condition either way), ETIMEDOUT, or EINTR when a signal arrived (the
 * caller runs its signal handlers and decides whether to go on).
 */
int shk_futex_wait(uint32_t *word, uint32_t expected, const struct timespec *deadline);

/* Wake up to n waiters (INT32_MAX for all). Returns the number woken, or 0 on error. */
int shk_futex_wake(uint32_t *word, int n);

/* Monotonic clock in nanoseconds. */
uint64_t shk_now_ns(void);

/* Realtime clock in nanoseconds since the epoch (for timestamps people read). */
uint64_t shk_wall_ns(void);

/* deadline = now + seconds (CLOCK_MONOTONIC). */
void shk_deadline_after(struct timespec *deadline, double seconds);

/* Nanoseconds left until deadline (0 if passed). */
uint64_t shk_deadline_left_ns(const struct timespec *deadline);

/* The earlier of deadline and now+slice_ns, into out. deadline may be NULL. */
void shk_deadline_slice(struct timespec *out, const struct timespec *deadline, uint64_t slice_ns);


#ifdef __cplusplus
}
#endif
#endif
