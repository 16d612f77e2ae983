/*
 * queue.h - a multi-producer multi-consumer ring of variable-size records in a zone.
 *
 * The bytes are specified in layout.h ("Queue").  In short: producers claim space with
 * one 16-byte CAS on the tail, write, then commit each record with a release store of
 * its header; consumers claim committed records with one 16-byte CAS on the head, copy
 * them out, and give the space back.  No lock on those paths: the robust `repair`
 * mutex only serialises the repair of what dead processes left behind.
 *
 * Handles.  A struct shk_queue is one process's (one thread's) handle: it owns a member
 * slot in the queue, where it announces what it is claiming so that others can tell,
 * from its pid and start time, whether a half-done operation will ever finish.  A
 * handle's operations (put, take, get_begin/get_end, commit) are used by one thread at a
 * time (the Python binding holds the GIL on every path that touches its slot); waits
 * (shk_queue_wait_op, shk_queue_reserve_op) touch no slot and run in any thread.  A fork
 * child must call shk_queue_register() again (shk_queue_ensure does it when the fork
 * generation changed).
 *
 * Operations never block: they return 0, SHK_EEMPTY / SHK_EFULLQ (not now: wait with
 * shk_queue_wait_op, then call again), SHK_ECLOSED, SHK_ETOOBIG (can never fit),
 * SHK_ECORRUPT (the shared state is impossible: every position, length and count read
 * from shared memory is checked, and every loop over it has a bound).
 */
#ifndef SHK_QUEUE_H
#define SHK_QUEUE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include "errors.h"
#include "fields.h"
#include "layout.h"
#include "wait.h"
#include "zone.h"

#ifdef __cplusplus
extern "C" {
#endif

#define SHK_QNOSLOT 0xffffffffu

struct shk_queue {
    struct shk_zone *z;
    struct shk_queue_sh *sh;
    uint64_t obj_off;           /* zone offset of the queue object */
    uint8_t *ring;
    uint64_t cap, mask;
    uint64_t hmask;             /* mask without the low bits: where a record header starts */
    uint64_t max_messages;
    uint32_t slot;              /* member slot index, SHK_QNOSLOT when none */
    uint32_t me;                /* slot + 1: the owner id written into shared words */
    struct shk_qslot *ms;       /* my slot */
    uint64_t free_cache;        /* producer: last free position seen */
    uint64_t hcount_cache;      /* producer: last head message count seen (low 32 bits) */
    uint64_t spin_ns;           /* a wait spins at most this long before it sleeps */
    uint32_t spin_cur;          /* the adaptive budget, 0 .. spin_ns (learnt by the driver) */
    uint32_t busy;              /* waits left that skip spinning (the driver's probe found
                                   the CPUs oversubscribed) */
    unsigned fork_gen;          /* fork generation when the slot was taken */
    int ack;                    /* at-least-once delivery (sh->flags, fixed at creation) */
    uint32_t taker;             /* at-least-once: the owner id of records this handle takes */
    uint64_t *fifo;             /* at-least-once: positions of records taken, not yet acked, */
    uint32_t fifo_cap;          /*   oldest first (process memory: the records themselves */
    uint32_t fifo_head;         /*   are the truth, this is the handle's index of them) */
    uint32_t fifo_len;
};

/* Find the queue `name` in the zone, or create it (flags SHK_O_CREATE[|SHK_O_EXCL])
 * with `capacity` ring bytes (rounded up to a power of two, at least 4096) and an
 * optional message limit (0: none).  Takes a member slot.  *created says which. */
int shk_queue_open(struct shk_zone *z, const char *name, uint64_t capacity,
                   uint64_t max_messages, int flags, struct shk_queue *q, int *created);

/* The same with a delivery mode (SHK_QDELIVERY_*): ANY takes what exists (at-most-once
 * when creating); another mode than the existing queue's is SHK_EOBJMISMATCH. */
enum { SHK_QDELIVERY_ANY = 0, SHK_QDELIVERY_AT_MOST_ONCE = 1, SHK_QDELIVERY_AT_LEAST_ONCE = 2 };
int shk_queue_open_delivery(struct shk_zone *z, const char *name, uint64_t capacity,
                            uint64_t max_messages, int delivery, int flags,
                            struct shk_queue *q, int *created);
/* The same with what the messages are (SHK_QMODE_*), recorded at creation (ANY creates
 * BYTES).  Opening: ANY takes what exists; another mode than the recorded one is
 * SHK_EOBJMISMATCH (a queue that recorded none takes any: SHK_QMODE_ANY from
 * shk_queue_mode). */
enum { SHK_QMODE_ANY = 0, SHK_QMODE_BYTES = 1, SHK_QMODE_OBJECTS = 2 };
int shk_queue_open_mode(struct shk_zone *z, const char *name, uint64_t capacity,
                        uint64_t max_messages, int delivery, int mode, int flags,
                        struct shk_queue *q, int *created);
int shk_queue_mode(const struct shk_queue *q);
static inline int shk_queue_delivery(const struct shk_queue *q)
{
    return q->ack ? SHK_QDELIVERY_AT_LEAST_ONCE : SHK_QDELIVERY_AT_MOST_ONCE;
}

/* Give the member slot back (counters are kept in the queue's totals).  Tasks this
 * handle still holds: at-least-once, its records go back for redelivery at once;
 * at-most-once, they are released (abandoned_tasks). */
void shk_queue_release(struct shk_queue *q);

/* Take a member slot (again): after fork, or when none was free at open. */
int shk_queue_register(struct shk_queue *q);

/* Current fork generation (bumped in the child by pthread_atfork). */
extern unsigned shk_queue_fork_generation;
static inline unsigned shk_queue_fork_gen(void)
{
    return shk_queue_fork_generation;
}

static inline int shk_queue_ensure(struct shk_queue *q)
{
    if (q->slot == SHK_QNOSLOT || q->fork_gen != shk_queue_fork_gen())
        return shk_queue_register(q);
    return 0;
}

/* Largest payload that can ever fit. */
static inline uint64_t shk_queue_max_payload(const struct shk_queue *q)
{
    return q->cap - SHK_QREC_HDR;
}

static inline uint64_t shk_qrec_size(uint64_t len)
{
    return SHK_QREC_HDR + ((len + SHK_QREC_ALIGN - 1) & ~(uint64_t)(SHK_QREC_ALIGN - 1));
}

/* --- producing ----------------------------------------------------------------------- */

struct shk_qpart {
    const void *p;
    uint64_t n;
};

/* Put one message whose payload is the concatenation of parts (kind DATA), or, with
 * kind SHK_QK_FRAMED, a frame of the parts (each 64-byte aligned, see layout.h). */
int shk_queue_put(struct shk_queue *q, const struct shk_qpart *parts, int nparts,
                  uint32_t kind);

/* The same for one DATA message of one part (the common case, without the generality). */
int shk_queue_put1(struct shk_queue *q, const void *p, uint64_t len);

/* Put msgs[0..n) as n messages with as few claims as possible; *done gets how many were
 * put (possibly fewer than n when space ran out: then SHK_EFULLQ if *done == 0, else 0).
 * A message that can never fit gives SHK_ETOOBIG before any is put. */
int shk_queue_put_many(struct shk_queue *q, const struct shk_qpart *msgs, size_t n,
                       size_t *done);
/* put_many's round: put msgs[*total..n) as shk_queue_put_many does, adding to *total.  0
 * when all are put (some: when at least one is, the answer of a call that does not wait);
 * SHK_EFULLQ when the caller must wait for room for *need record bytes (the next message's,
 * SHK_QW_SPACE), then call again; an error (SHK_ETOOBIG: nothing more was put). */
int shk_queue_put_more(struct shk_queue *q, const struct shk_qpart *msgs, size_t n,
                       size_t *total, int some, uint64_t *need);

/* Record bytes (header, payload, padding) of one message: what a waiting put needs.
 * SHK_QK_REF: what shk_queue_commit_ref needs (parts are not read). */
uint64_t shk_queue_record_size(const struct shk_qpart *parts, int nparts, uint32_t kind);

/* --- consuming ----------------------------------------------------------------------- */

struct shk_qmsg {
    uint64_t pos;               /* of the record */
    uint64_t len;               /* payload bytes */
    uint32_t kind;              /* SHK_QK_DATA, SHK_QK_REF or SHK_QK_FRAMED */
};

struct shk_qtake {
    uint64_t start, end;        /* the range taken: give it back with shk_queue_finish */
    size_t n;                   /* messages in msgs[] */
};

/* Take up to max_msgs committed messages (at least one), stopping before the payload
 * total would exceed max_bytes (the first message is always taken).  Records of dead
 * producers in the way are stepped over.  0, SHK_EEMPTY, SHK_ECLOSED (empty and
 * closed), SHK_ECORRUPT. */
int shk_queue_take(struct shk_queue *q, struct shk_qmsg *msgs, size_t max_msgs,
                   uint64_t max_bytes, struct shk_qtake *t);

/*
 * Copy first, take after (the fast way for messages the caller copies out): look at up to
 * max_msgs committed messages at the head without taking them (as shk_queue_take, but
 * stopping before a REF record that is not the first), copy them out, then take them with
 * shk_queue_take_peeked, which moves the head and gives the space back in one CAS.  While
 * a message is not taken it cannot be reclaimed, so the copy is good if the take succeeds;
 * EAGAIN means another consumer took them first: drop the copies and look again.
 *
 * This works only when no other range is taken and not yet given back (pk->direct)
 * and for messages the caller does not need to accept first (not REF): otherwise take them
 * with shk_queue_take / shk_queue_finish.  A consumer killed before the take loses nothing;
 * after it, the messages were already in its memory (they count as gets).
 */
struct shk_qpeek {
    uint64_t lo, hi;            /* the head pair seen */
    uint64_t end;               /* position after the messages looked at */
    uint64_t cnt;               /* messages they stand for (SKIP records count theirs) */
    size_t n;                   /* messages in msgs[] */
    int direct;                 /* nothing else is out: shk_queue_take_peeked may take them */
};

int shk_queue_peek(struct shk_queue *q, struct shk_qmsg *msgs, size_t max_msgs,
                   uint64_t max_bytes, struct shk_qpeek *pk);
int shk_queue_take_peeked(struct shk_queue *q, const struct shk_qpeek *pk);

/* Copy n payload bytes of the record at pos, from byte `at` of its payload. */
static inline void shk_queue_read(struct shk_queue *q, uint64_t pos, uint64_t at, void *dst,
                                  uint64_t n)
{
    uint64_t o = (pos + SHK_QREC_HDR + at) & q->mask, first = q->cap - o;
    if (n <= first) {
        memcpy(dst, q->ring + o, n);
    } else {
        memcpy(dst, q->ring + o, first);
        memcpy((uint8_t *)dst + first, q->ring, n - first);
    }
}

/* Give a taken range back (the space becomes reusable). */
void shk_queue_finish(struct shk_queue *q, const struct shk_qtake *t);

/*
 * One get, the way the binding makes it: shk_queue_get_begin looks at up to max_msgs
 * messages (payload total up to max_bytes, the first always counts) and chooses how to
 * take them.  copy_first = 1 (small messages, nothing else out): copy msgs[0..n) out,
 * then shk_queue_get_end takes them, or says EAGAIN when another consumer took them first
 * (drop the copies and begin again).  copy_first = 0: they are taken (claim first):
 * read them (accept REF records), then shk_queue_get_end gives the range back (always
 * call it, even when reading failed).  begin: 0, SHK_EEMPTY, SHK_ECLOSED, SHK_ECORRUPT.
 */
struct shk_qget {
    struct shk_qmsg *msgs;      /* in: room for max_msgs */
    size_t max_msgs;            /* in: >= 1 */
    uint64_t max_bytes;         /* in: UINT64_MAX for no limit */
    size_t n;                   /* out: messages in msgs[] */
    int copy_first;             /* out: see above */
    struct shk_qpeek pk;        /* the core's */
    struct shk_qtake t;         /* the core's */
};
int shk_queue_get_begin(struct shk_queue *q, struct shk_qget *g);
int shk_queue_get_end(struct shk_queue *q, struct shk_qget *g);

/* The parts of a FRAMED payload, copied out (layout.h): begin checks the part count, next
 * gives each part's offset and length in turn; SHK_ECORRUPT for a frame that does not
 * hold together.  No judgement before the take succeeded: a copy made first may be torn. */
struct shk_qframe {
    const uint8_t *base;
    uint64_t len, at;
    uint32_t nparts, i;
};
static inline int shk_qframe_begin(struct shk_qframe *f, const void *frame, uint64_t len)
{
    uint32_t head[2] = {0, 0};
    f->base = (const uint8_t *)frame;
    f->len = len;
    f->i = 0;
    if (len >= 8)
        memcpy(head, frame, 8);
    f->nparts = head[0];
    f->at = 8 + 8 * (uint64_t)head[0];
    if (len < 8 || head[0] == 0 || head[0] > SHK_QFRAME_MAX_PARTS || f->at > len)
        return SHK_ECORRUPT;
    return 0;
}
static inline int shk_qframe_next(struct shk_qframe *f, uint64_t *off, uint64_t *n)
{
    uint64_t size, o = (f->at + SHK_QFRAME_ALIGN - 1) & ~(uint64_t)(SHK_QFRAME_ALIGN - 1);
    if (f->i >= f->nparts)
        return SHK_ECORRUPT;
    memcpy(&size, f->base + 8 + 8 * (uint64_t)f->i, 8);
    if (o > f->len || size > f->len - o)
        return SHK_ECORRUPT;
    *off = o;
    *n = size;
    f->at = o + size;
    f->i++;
    return 0;
}

/* --- task accounting (layout.h "Delivery modes and task accounting") ---------------- */

/* Mark the `count` oldest messages this handle took and has not marked done as done
 * (at-least-once: acknowledge them, one CAS each).  EINVAL with "task_done() called too
 * many times" when the handle holds fewer (nothing is marked then). */
int shk_queue_task_done(struct shk_queue *q, uint64_t count);
/* Messages this handle took and has not marked done. */
uint64_t shk_queue_outstanding(struct shk_queue *q);
/* Messages put and not yet marked done (nor released with a dead consumer). */
uint64_t shk_queue_unfinished(struct shk_queue *q);
/* join(): obj is the struct shk_queue.  Waits until nothing is unfinished, on done_seq
 * (no polling: task_done wakes it), repairing what dead consumers left at each liveness
 * check.  0, or on giving up ETIMEDOUT / EBUSY (SHK_WAIT_TRY) / ECANCELED. */
extern const struct shk_wait_op shk_queue_join_op;

/* --- waiting (core/wait.h) ----------------------------------------------------------- */

enum { SHK_QW_DATA = 0, SHK_QW_SPACE = 1, SHK_QW_RESV = 2 /* a free reservation entry */ };

/*
 * The object of the queue's two wait operations (set q, what and its inputs; zero the
 * rest).  shk_queue_wait_op waits until the call it stands for may succeed: a get
 * (SHK_QW_DATA), a put of `need` record bytes (SHK_QW_SPACE, need from
 * shk_queue_record_size or shk_qrec_size), a reservation (SHK_QW_RESV); then the caller
 * makes its operation, and waits again if it says "not now".  Results: 0 (call again),
 * or on giving up SHK_EEMPTY / SHK_EFULLQ (SHK_WAIT_TRY, or "(timed out)" at the
 * deadline; the detail says which), ECANCELED (w->cancel), an error.
 * shk_queue_reserve_op reserves `len` bytes itself (index, gen, ptr: see
 * shk_queue_reserve).  The attempts spin on the handle's own adaptive budget (at most
 * spin_ns), register in the queue's waiter counts only when armed and retry by the next
 * stuck-repair check (queue.c, "waiting").
 */
struct shk_queue_waiter {
    struct shk_queue *q;
    int what;                   /* SHK_QW_* */
    uint64_t need;              /* SHK_QW_SPACE: record bytes wanted */
    uint64_t len;               /* reserve: bytes */
    uint32_t index, gen;        /* reserve: the reservation made */
    void *ptr;
    uint64_t seen_free;         /* the wait's own: free position at its last look */
    uint32_t spins;             /* the wait's own: looks made while spinning */
    uint32_t last_try;          /* the wait's own: timed out with room, the put tried again */
    int nospin;                 /* the wait's own: skip the spin (busy machine) */
};
extern const struct shk_wait_op shk_queue_wait_op;
/* Before setting up shk_queue_wait_op's wait: look up to `looks` times, a pause apart
 * (~40 ns each here), whether the call may succeed now; 1 if so.  Nothing is registered
 * and no clock is read: the other side of a hand-off is often a few hundred ns away, and
 * the wait's set-up and return would sit on its path.  0 at once when the handle does not
 * spin (spin=0, or the CPUs were lately found oversubscribed). */
int shk_queue_poll(struct shk_queue_waiter *qw, unsigned looks);
extern const struct shk_wait_op shk_queue_reserve_op;

/* A queue wait that needs no waiting: its answer, or EAGAIN when the caller must wait (with
 * shk_wait_run, or a driver of its own).  A wait for data or space (shk_queue_wait_op) that
 * may not wait (SHK_WAIT_TRY) answers "not now" (SHK_EEMPTY / SHK_EFULLQ), and one whose
 * deadline has passed "(timed out)" even if it would say "ready" (the operation that said
 * "not now" could say it forever); join (shk_queue_join_op) at or after its deadline looks
 * once (0 when nothing is unfinished, else ETIMEDOUT).  Reserve's wait always runs. */
int shk_queue_wait_now(const struct shk_wait_op *op, void *obj, struct shk_wait *w);
/* A queue wait its caller cancelled (the handle detached, the zone closed: w->cancel) that
 * ended with r all the same: what it did is undone (reserve's wait gives back the
 * reservation it made).  Returns ECANCELED. */
int shk_queue_wait_cancelled(const struct shk_wait_op *op, void *obj, int r);

/* Queue.spin: a wait spins at most ns before it sleeps (the budget adapts below it). */
void shk_queue_set_spin(struct shk_queue *q, uint64_t ns);

/* --- state --------------------------------------------------------------------------- */

int shk_queue_close(struct shk_queue *q);       /* puts fail; gets drain, then fail */
int shk_queue_reopen(struct shk_queue *q);
int shk_queue_is_closed(struct shk_queue *q);
uint64_t shk_queue_depth(struct shk_queue *q);  /* messages claimed, not yet taken */
uint64_t shk_queue_bytes_used(struct shk_queue *q);
/* 1 if a put of `len` payload bytes would not fit now. */
int shk_queue_is_full(struct shk_queue *q, uint64_t len);

struct shk_queue_stats {
    uint64_t capacity, max_messages, depth, bytes_used;
    uint64_t puts;              /* messages committed (claims not lost to a crash) */
    uint64_t gets;              /* messages handed over (taken, not lost to a crash) */
    uint64_t waits;             /* sleeps */
    uint64_t dropped_puts;      /* claimed by producers that died before committing */
    uint64_t dropped_gets;      /* committed, taken by consumers that died holding them */
    uint64_t drops;             /* dropped_puts + dropped_gets */
    uint64_t recoveries;
    uint64_t unfinished_tasks;  /* put, not yet marked done (nor released) */
    uint64_t in_flight;         /* taken, not yet marked done */
    uint64_t redeliveries;      /* at-least-once: given back by dead or detached takers */
    uint64_t abandoned_tasks;   /* at-most-once: released with dead or detached takers */
    uint64_t acknowledged;      /* marked done (task_done) */
    int delivery;               /* SHK_QDELIVERY_* */
    uint32_t members, reservations;
    int closed;
};
int shk_queue_stats(struct shk_queue *q, struct shk_queue_stats *st);
/* The fields of shk_queue_stats by name (core/fields.h), as statistics() shows them (not
 * delivery: the handle's delivery property says it). */
extern const struct shk_field shk_queue_stats_fields[];

/* Look for work dead processes left behind and repair it (also done by waiters).
 * Returns the number of repairs made, or a negative error. */
int shk_queue_repair(struct shk_queue *q);

/* --- zero-copy reservations --------------------------------------------------------- */

/* Allocate a block of len bytes in the zone for this producer; *index and *gen name it.
 * SHK_EFULLQ when all reservation entries are in use (wait with SHK_QW_RESV). */
int shk_queue_reserve(struct shk_queue *q, uint64_t len, uint32_t *index, uint32_t *gen,
                      void **ptr);
/* Enqueue a reserved block (a REF record); the block now belongs to the consumers. */
int shk_queue_commit_ref(struct shk_queue *q, uint32_t index, uint32_t gen);
/* A REF message taken with shk_queue_take: make this handle its owner; *ptr, *len. */
int shk_queue_accept_ref(struct shk_queue *q, const struct shk_qmsg *m, uint32_t *index,
                         uint32_t *gen, void **ptr, uint64_t *len);
/* Give a reserved (uncommitted) or accepted block back to the zone. 0 if it was ours. */
int shk_queue_release_ref(struct shk_queue *q, uint32_t index, uint32_t gen);

/* Test hook: SIGKILL this process at a chosen point of the next put/take (0 = off). */
enum {
    SHK_QDIE_NONE = 0,
    SHK_QDIE_AFTER_CLAIM = 1,   /* tail claimed, no header written */
    SHK_QDIE_MID_COPY = 2,      /* headers CLAIMED, half the payload copied */
    SHK_QDIE_AFTER_TAKE = 3,    /* head claimed, nothing given back */
    SHK_QDIE_AFTER_RESERVE = 4, /* zero-copy block reserved, never committed */
    SHK_QDIE_COPIED = 5,        /* copy-first get: payload copied out, head not moved */
    SHK_QDIE_ACK_TAKEN = 6,     /* at-least-once get: a record TAKEN, head not moved */
    SHK_QDIE_ACK_DONE = 7,      /* at-least-once task_done(n): after the first ack CAS */
    SHK_QDIE_REDELIVER = 8      /* giving back: after the first record CAS, before counting */
};
void shk_queue_debug_die(int where);

#ifdef __cplusplus
}
#endif
#endif
