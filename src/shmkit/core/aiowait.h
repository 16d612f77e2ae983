/*
 * aiowait.h - one awaited wait (wait.h's ASYNC CONTRACT) driven step by step from an
 * event loop's thread, with the readiness hub (waitv.h) doing the sleeping.  Issue 16.
 *
 * shk_aio_step() is the whole step: the first time an attempt, the loop's brief spin
 * (waitv.h), then an armed attempt that registers as a waiter (the driver's sequence,
 * without its sleep); later, out of the hub, disarm and attempt again.  When the attempt
 * says "not now" the (word, value) it would sleep on goes to the hub with its retry time
 * and the deadline, and the step returns EAGAIN: the caller awaits the wait's READY
 * report (its notifier) and steps again.  Anything else ends the wait with nothing
 * registered and nothing watched; a->end says why.
 *
 * shk_aio_give_up() ends it from outside (the coroutine was cancelled, the object was
 * dropped): out of the hub, registration and partial progress undone, and one wake-up
 * passed on to another waiter of the word, since the hub may have taken it for this wait.
 *
 * The caller keeps the word mapped while the wait lives (the binding holds an export of
 * its segment) and runs every step and give-up of one wait in one thread at a time.
 */
#ifndef SHK_AIOWAIT_H
#define SHK_AIOWAIT_H

#include <sys/types.h>

#include "fields.h"
#include "wait.h"
#include "waitv.h"

#ifdef __cplusplus
extern "C" {
#endif

/* struct shk_aio_wait.end: how a wait that is over ended */
enum {
    SHK_AIO_RUNNING = 0,    /* not over (EAGAIN: watched by the hub) */
    SHK_AIO_DONE,           /* the operation's result: 0, its own success code, ETIMEDOUT,
                               EBUSY (a wait that may not wait), or its error */
    SHK_AIO_CLOSED,         /* its handle or segment was closed (ECANCELED) */
    SHK_AIO_FAULT,          /* the hub could not read the word (EFAULT): its memory is
                               not touched again, not even to unregister */
    SHK_AIO_NOT_AWAITABLE,  /* the attempt named nothing the hub can watch (ENOTSUP) */
    SHK_AIO_HUB_FAILED,     /* the hub refused the watch: the result is its errno */
};

struct shk_aio_wait {
    const struct shk_wait_op *op;
    void *obj;                  /* op's object */
    struct shk_wait w;          /* from SHK_WAIT_INIT(deadline, flags) */
    struct shk_hub_wait hw;     /* the caller sets keys, notifier and owner once */
    int started;                /* the first attempt was made */
    int watched;                /* handed to the hub since the last attempt */
    int end;                    /* SHK_AIO_* once over */
};

/* One step (see above); live 0: the handle was closed meanwhile (the attempt is not
 * made).  spin NULL: no loop spin.  EAGAIN, or the wait's result with a->end set. */
int shk_aio_step(struct shk_hub *hub, struct shk_aio_wait *a, struct shk_loop_spin *spin,
                 int live);

/* Give up (why: ECANCELED or ETIMEDOUT): returns the result the wait ends with. */
int shk_aio_give_up(struct shk_hub *hub, struct shk_aio_wait *a, int why);

/* The process's hub as the asyncio side keeps it: set up at its first use, and anew in a
 * fork child (the parent's threads do not exist there and its mutex may be held: its hub
 * is forgotten, not destroyed; the waits and notifiers the child inherited stay inert).
 * mode and max_threads apply at the next set-up. */
struct shk_aio_hub {
    struct shk_hub hub;
    pid_t pid;                  /* the process it is set up in (0: none) */
    int mode;                   /* SHK_HUB_* for the next set-up */
    uint32_t max_threads;       /* for the next set-up (0: the default) */
};
/* Set up (in this process) if it is not: 0, or shk_hub_init's errno (ENOSYS: futex_waitv
 * asked for and missing). */
int shk_aio_hub_get(struct shk_aio_hub *h);
/* 1 if it is set up in this process (only then may its waits be closed, its stats read). */
int shk_aio_hub_here(const struct shk_aio_hub *h);
/* New settings for the next set-up.  A hub set up here with other settings is stopped now
 * when nothing is watched (set up again in place at the next use: notifiers point at the
 * struct, whose mutex is made anew); EBUSY, nothing changed, while coroutines wait. */
int shk_aio_hub_configure(struct shk_aio_hub *h, int mode, uint32_t max_threads);

/* A process's asyncio statistics: its hub's, the kernel's support, its loop spin's. */
struct shk_aio_stats {
    struct shk_hub_stats hub;
    int futex_waitv_supported;
    uint64_t spins, spins_won, spun_ns;
};
void shk_aio_stats(struct shk_hub *hub, const struct shk_loop_spin *spin,
                   struct shk_aio_stats *st);
/* Its fields by name (core/fields.h), but the hub's mode. */
extern const struct shk_field shk_aio_stats_fields[];

#ifdef __cplusplus
}
#endif
#endif
