/*
 * board.h - latest-value boards: one writer publishes, any number of readers read the
 * newest complete value.  The bytes are specified in layout.h ("Board").
 *
 * Guarantees
 *   - The writer never waits for readers: it writes a slot that is neither the latest
 *     nor pinned, and there are always such slots (nreaders = nbuffers - 2).
 *   - A reader never returns a torn value: copies are validated by the slot's seqlock
 *     and retried; zero-copy views are of pinned slots, which the writer never touches.
 *   - Readers write no shared memory when they copy (and nothing at all when nothing
 *     changed); only pinning writes the reader's own record.
 *   - A reader starved by a writer that laps it (tiny values published in a loop while
 *     the reader is descheduled) falls back to pinning after a few attempts, so a copy
 *     always completes.  Values of 1 MiB and more are copied from a pinned slot at once
 *     (a lapped copy of megabytes wastes more than the record write costs).  Copies give
 *     the record back, so they never take a zero-copy reader's place.
 *   - A dead writer does not block anyone: `latest` always names a complete slot.  A
 *     new writer takes over once the old one (pid + start time) is gone.
 *
 * Handles are per process.  After fork() a child's copy of a handle is neither the
 * writer nor a pinning reader: the core notices the pid change and re-registers.
 *
 * Thread safety: copies, version() and wait() may run concurrently on one handle; the
 * per-handle state used by publish/pin/take_writer is protected by `local`.
 */
#ifndef SHK_BOARD_H
#define SHK_BOARD_H

#include <pthread.h>
#include <stdint.h>
#include <time.h>

#include "atomics.h"
#include "fields.h"
#include "layout.h"
#include "wait.h"
#include "zone.h"

#ifdef __cplusplus
extern "C" {
#endif

struct shk_board {
    struct shk_zone *z;
    struct shk_board_header *hdr;
    struct shk_board_slot *slots;
    struct shk_board_reader *readers;
    uint8_t *data;                  /* slot 0's data area */
    uint64_t off, size;             /* the allocation */
    uint64_t capacity, stride;      /* copied from the header at attach, then trusted */
    uint32_t nbuffers, nreaders;

    pthread_mutex_t local;          /* per-process state below (not shared memory) */
    /* writer */
    uint64_t writer_gen;            /* 0 = not the writer */
    pid_t writer_pid;
    uint32_t next_slot;             /* round-robin start of the next slot choice */
    int32_t loan_slot;              /* slot being filled between begin and commit, or -1 */
    uint64_t loan_seq;
    /* reader */
    int32_t record;                 /* claimed reader record, or -1 */
    pid_t record_pid;
    uint64_t pinned;                /* latest word pinned through the record (0: none) */
    /* adaptive spinning before sleeping in shk_board_wait (wait.h; UINT32_MAX: unset) */
    uint32_t spin_budget_ns;
    int cancel;                     /* set by shk_board_cancel_waits: waits return ECANCELED */
    /* statistics of this handle */
    uint64_t copies, retries, fallbacks, pins, waits, sleeps, spin_hits;
};

/* What a read found. */
struct shk_board_value {
    uint64_t version, len, meta, published_ns;
    uint32_t kind, slot;
};

/* Where a copy goes: the whole payload into dst (cap bytes); or, when head != NULL,
 * payload[0, min(meta, head_cap)) into head and payload[meta, len) into dst. */
struct shk_board_copy {
    void *dst;
    uint64_t cap;
    void *head;
    uint64_t head_cap;
};

/* Bytes of a board object with these parameters (0 if they are out of range). */
uint64_t shk_board_size(uint32_t nbuffers, uint64_t capacity);

/* Lay out a board in a fresh (zeroed) allocation: an shk_obj_init_fn whose arg points
 * to struct shk_board_params. */
struct shk_board_params {
    uint32_t nbuffers;
    uint64_t capacity;
};
int shk_board_init(struct shk_zone *z, uint64_t off, uint64_t size, void *arg);

/* Attach a handle to the board at [off, off + size): validates the header. */
int shk_board_attach(struct shk_board *b, struct shk_zone *z, uint64_t off, uint64_t size);
/* Release what the handle holds in shared memory (pin, reader record, writer role). */
void shk_board_detach(struct shk_board *b);
/* Find the board `name` (an object of type objtype: SHK_OBJ_BOARD or a type built on a
 * board) in zone z and attach b to it.  With capacity > 0 it is created if missing, with
 * nbuffers slots of capacity bytes (EINVAL, the detail naming the ranges, when they are
 * out of range); with 0 it must exist.  *created is set.  Errors of shk_zone_obj_get and
 * shk_board_attach. */
int shk_board_open(struct shk_board *b, struct shk_zone *z, const char *name, uint32_t objtype,
                   uint64_t capacity, uint32_t nbuffers, int *created);

/* Latest published version (0: none). One load, no shared write. */
static inline uint64_t shk_board_version(const struct shk_board *b)
{
    return shk_load_acquire(&b->hdr->latest) >> SHK_BOARD_SLOT_BITS;
}

/* --- writer ---------------------------------------------------------------------- */

/* Become the writer. 0; EBUSY (detail names the live writer) if another live process
 * (or another handle of this one) is the writer.  Taking over from a dead writer counts
 * in header.takeovers. */
int shk_board_take_writer(struct shk_board *b);
/* Give the writer role up (no-op if this handle is not the writer). */
int shk_board_release_writer(struct shk_board *b);
/* 1 if this handle is the current writer. */
int shk_board_is_writer(struct shk_board *b);
/* The current writer: pid (0 if none) and whether it is alive. */
void shk_board_writer(struct shk_board *b, pid_t *pid, int *alive);

/* Two-phase publication, so payloads can be built straight in shared memory:
 * begin chooses a free slot, marks it being written and returns its data area
 * (capacity bytes); commit publishes it as the next version; abort gives it up (the
 * slot stays unpublished).  SHK_ENOTOWNER if this handle is not the writer; EBUSY if a
 * loan is already open. */
int shk_board_begin(struct shk_board *b, void **buf);
int shk_board_commit(struct shk_board *b, uint64_t len, uint32_t kind, uint64_t meta,
                     uint64_t *version);
void shk_board_abort(struct shk_board *b);
/* begin + memcpy + commit. SHK_ETOOBIG if len > capacity. */
int shk_board_publish(struct shk_board *b, const void *src, uint64_t len, uint32_t kind,
                      uint64_t meta, uint64_t *version);

/* --- readers ----------------------------------------------------------------------- */

/* Metadata of the latest value without copying it (len may be stale by the time it is
 * used: a sizing hint). SHK_EEMPTY if nothing was published. */
int shk_board_peek(struct shk_board *b, struct shk_board_value *out);

/* Copy the latest value if its version is > after. 0: copied (out filled);
 * SHK_EEMPTY: nothing newer; ENOBUFS: it does not fit (out->len and out->meta tell the
 * sizes needed, nothing was copied); SHK_ECORRUPT. */
int shk_board_read(struct shk_board *b, uint64_t after, const struct shk_board_copy *c,
                   struct shk_board_value *out);

/* Pin the latest value if its version is > after; *data points at its payload, which
 * the writer will not touch until shk_board_unpin (or the next pin) on this handle.
 * Releases the previous pin.  SHK_EEMPTY: nothing newer (the previous pin is kept);
 * EBUSY: every reader record is taken by live processes (create the board with more
 * buffers). */
int shk_board_pin(struct shk_board *b, uint64_t after, struct shk_board_value *out,
                  const uint8_t **data);
/* Drop this handle's pin if it is still `word` (0: whatever it is). */
void shk_board_unpin(struct shk_board *b, uint64_t word);
/* The pinned latest word of this handle (0: none). */
uint64_t shk_board_pinned(struct shk_board *b);

/* 1 if the value of `version` is still complete in its slot (pinned values always are). */
int shk_board_intact(struct shk_board *b, uint64_t version);

/*
 * Wait until a version > after is published: the one wait shape of wait.h.  The
 * operation's object is a struct shk_board_waiter; shk_board_wait runs it to completion
 * in C (EINTR: call again with the same w).  Spins first for up to the handle's adaptive
 * budget (at most max_spin_ns; 0 never spins), then sleeps on the header's futex word.
 * 0, ETIMEDOUT (w's deadline), EBUSY (SHK_WAIT_TRY), ECANCELED after
 * shk_board_cancel_waits on this handle, or EINTR (run the signal handlers, call again).
 */
struct shk_board_waiter {
    struct shk_board *b;
    uint64_t after;
    uint64_t max_spin_ns;
};
extern const struct shk_wait_op shk_board_wait_op;
int shk_board_wait(struct shk_board *b, uint64_t after, uint64_t max_spin_ns, struct shk_wait *w);
/* Make every wait on this handle return ECANCELED (the handle is being closed). Other
 * processes' waiters are woken too, find nothing new and sleep again. */
void shk_board_cancel_waits(struct shk_board *b);

/* --- statistics ------------------------------------------------------------------- */

struct shk_board_stats {
    uint64_t version, capacity, last_publish_ns, pinned_skips, takeovers, reclaimed;
    uint32_t nbuffers, nreaders, readers_in_use, waiters;
    int32_t writer_pid;
    int writer_alive;
    /* this handle's */
    int is_writer;
    uint64_t copies, retries, fallbacks, pins, waits, sleeps, spin_hits;
    uint64_t spin_budget_ns;    /* adapted spin budget of waits (0: not adapted yet) */
};
/* The fields of shk_board_stats by name (core/fields.h), in the order shown. */
extern const struct shk_field shk_board_stats_fields[];
int shk_board_stats(struct shk_board *b, struct shk_board_stats *st);

#ifdef __cplusplus
}
#endif
#endif
