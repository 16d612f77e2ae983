/*
 * board.c - latest-value boards (see board.h for the guarantees, layout.h for the bytes).
 *
 * Memory ordering, in one place:
 *   writer   slot.seq = odd (relaxed); fence(release); payload + slot fields;
 *            slot.seq = even (release); latest = word (seq_cst); futex = version
 *            (seq_cst); if waiters: wake.
 *   copier   w = latest (acquire); s1 = slot.seq (acquire); fields + payload;
 *            fence(acquire); s2 = slot.seq; accept iff s1 even, s1 == s2 and
 *            slot.version == version of w.
 *   pinner   record.pin = w (seq_cst); accept iff latest == w (seq_cst).  The writer
 *            loads the pins (seq_cst) after its latest store moved away from w, so it
 *            sees the pin and never chooses that slot.
 *   waiter   f = futex; waiters++ (seq_cst); re-check the version; futex_wait(f).
 * The payload copies are plain memcpy, as in every seqlock: a copy that raced with the
 * writer is thrown away, never used.
 */
#include "board.h"

#include <errno.h>
#include <limits.h>
#include <sched.h>
#include <string.h>

#include "atomics.h"
#include "errors.h"
#include "futex.h"
#include "mutex.h"
#include "proc.h"
#include "wait.h"


/* Failed seqlock attempts before a copier pins the slot instead. */
#define COPY_ATTEMPTS_BEFORE_PIN 8
/* Values at least this large are copied from a pinned slot right away: a copy that long
 * is likely to be lapped by a writer publishing freely, and a thrown-away copy of
 * megabytes costs far more than writing the reader record. */
#define PIN_COPY_MIN (1ull << 20)
/* Adaptive spinning (wait.h, without SHK_SPIN_LEARN_SLEEPS): the budget starts at a
 * quarter of the caller's maximum and never drops below 2 µs. */
#define SPIN_UNSET UINT32_MAX
/* Longest single sleep of a waiter, so that closing its handle, and a signal that landed
 * just before it fell asleep, are noticed. */
#define CANCEL_SLICE_NS 100000000ull

#define BS(member, kind) SHK_FIELD(struct shk_board_stats, member, kind)
const struct shk_field shk_board_stats_fields[] = {
    BS(version, U64), BS(capacity, U64),
    SHK_FIELD_AS("buffers", struct shk_board_stats, nbuffers, U32),
    SHK_FIELD_AS("readers", struct shk_board_stats, nreaders, U32),
    BS(readers_in_use, U32), BS(waiters, U32), BS(last_publish_ns, U64), BS(pinned_skips, U64),
    BS(takeovers, U64), BS(reclaimed, U64), BS(writer_pid, I32), BS(writer_alive, BOOL),
    BS(is_writer, BOOL), BS(copies, U64), BS(retries, U64), BS(fallbacks, U64), BS(pins, U64),
    BS(waits, U64), BS(sleeps, U64), BS(spin_hits, U64), BS(spin_budget_ns, U64),
    {NULL, 0, 0},
};
#undef BS

static uint64_t round_up(uint64_t n, uint64_t a)
{
    return (n + a - 1) / a * a;
}

static uint64_t data_start(uint32_t nbuffers)
{
    uint64_t n = SHK_BOARD_HEADER_SIZE + (uint64_t)nbuffers * sizeof(struct shk_board_slot) +
                 (uint64_t)(nbuffers - 2) * sizeof(struct shk_board_reader);
    return round_up(n, SHK_BOARD_ALIGN);
}

uint64_t shk_board_size(uint32_t nbuffers, uint64_t capacity)
{
    if (nbuffers < SHK_BOARD_MIN_BUFFERS || nbuffers > SHK_BOARD_MAX_BUFFERS || capacity == 0 ||
        capacity > ((uint64_t)1 << 46))
        return 0;
    return data_start(nbuffers) + round_up(capacity, SHK_BOARD_ALIGN) * nbuffers;
}

int shk_board_init(struct shk_zone *z, uint64_t off, uint64_t size, void *arg)
{
    const struct shk_board_params *p = arg;
    uint64_t need = shk_board_size(p->nbuffers, p->capacity);
    if (!need)
        return shk_fail(EINVAL, "shk_board_init(): %u buffers of %llu bytes is out of range",
                        p->nbuffers, (unsigned long long)p->capacity);
    if (need > size)
        return shk_fail(EINVAL, "shk_board_init(): the allocation (%llu bytes) is smaller than "
                        "the board needs (%llu)", (unsigned long long)size,
                        (unsigned long long)need);
    struct shk_board_header *h = shk_zone_ptr(z, off, need);
    if (!h)
        return SHK_ECORRUPT;
    /* the allocation is zeroed: every slot has seq 0 (complete, empty), every reader
     * record is free, latest is 0 (nothing published) */
    h->nbuffers = p->nbuffers;
    h->capacity = p->capacity;
    h->stride = round_up(p->capacity, SHK_BOARD_ALIGN);
    h->data_off = data_start(p->nbuffers);
    h->nreaders = p->nbuffers - 2;
    h->created_ns = shk_wall_ns();
    int r = shk_mutex_init(&h->lock);
    if (r)
        return shk_fail(r, "shk_board_init(): pthread_mutex_init failed");
    shk_store_release(&h->magic, SHK_BOARD_MAGIC);
    return 0;
}

int shk_board_attach(struct shk_board *b, struct shk_zone *z, uint64_t off, uint64_t size)
{
    memset(b, 0, sizeof *b);
    b->record = -1;
    b->loan_slot = -1;
    b->spin_budget_ns = SPIN_UNSET;
    struct shk_board_header *h = shk_zone_ptr(z, off, SHK_BOARD_HEADER_SIZE);
    if (!h)
        return SHK_ECORRUPT;
    if (shk_load_acquire(&h->magic) != SHK_BOARD_MAGIC)
        return shk_fail(SHK_ECORRUPT, "shk_board_attach(): no board magic at offset %llu",
                        (unsigned long long)off);
    uint32_t nb = h->nbuffers;
    uint64_t cap = h->capacity;
    uint64_t need = shk_board_size(nb, cap);
    if (!need || h->stride != round_up(cap, SHK_BOARD_ALIGN) || h->data_off != data_start(nb) ||
        h->nreaders != nb - 2)
        return shk_fail(SHK_ECORRUPT, "shk_board_attach(): board header at offset %llu is "
                        "inconsistent (buffers %u, capacity %llu)", (unsigned long long)off, nb,
                        (unsigned long long)cap);
    if (need > size || !shk_zone_ptr(z, off, need))
        return shk_fail(SHK_ECORRUPT, "shk_board_attach(): board at offset %llu needs %llu "
                        "bytes but its allocation has %llu", (unsigned long long)off,
                        (unsigned long long)need, (unsigned long long)size);
    b->z = z;
    b->hdr = h;
    b->slots = (struct shk_board_slot *)((uint8_t *)h + SHK_BOARD_HEADER_SIZE);
    b->readers = (struct shk_board_reader *)(b->slots + nb);
    b->data = (uint8_t *)h + h->data_off;
    b->off = off;
    b->size = size;
    b->capacity = cap;
    b->stride = h->stride;
    b->nbuffers = nb;
    b->nreaders = nb - 2;
    pthread_mutex_init(&b->local, NULL);
    return 0;
}

/* The board mutex protects ownership and record claims: single stores, written in an
 * order whose every prefix is meaningful, so a dead holder leaves nothing to repair. */
static int board_lock(struct shk_board *b)
{
    int r = shk_mutex_lock(&b->hdr->lock, NULL);
    if (r == SHK_EOWNERDEAD) {
        shk_mutex_consistent(&b->hdr->lock);
        r = 0;
    }
    return r;
}

static void board_unlock(struct shk_board *b)
{
    shk_mutex_unlock(&b->hdr->lock);
}

/* --- writer ------------------------------------------------------------------------ */

static int is_writer_locked(struct shk_board *b)
{
    return b->writer_gen != 0 && b->writer_pid == shk_self_pid() &&
           shk_load_acquire(&b->hdr->writer_gen) == b->writer_gen;
}

int shk_board_is_writer(struct shk_board *b)
{
    pthread_mutex_lock(&b->local);
    int w = is_writer_locked(b);
    pthread_mutex_unlock(&b->local);
    return w;
}

void shk_board_writer(struct shk_board *b, pid_t *pid, int *alive)
{
    struct shk_board_header *h = b->hdr;
    *pid = shk_load_acquire(&h->writer_pid);
    *alive = *pid != 0 && shk_proc_alive(*pid, shk_load_relaxed(&h->writer_start));
}

/* A writer that died between commit's slot store and its latest store left a complete
 * slot that was never published; mark it incomplete so versions stay unique. */
static void forget_unpublished(struct shk_board *b)
{
    uint64_t w = shk_load_acquire(&b->hdr->latest);
    uint64_t ver = w >> SHK_BOARD_SLOT_BITS;
    for (uint32_t i = 0; i < b->nbuffers; i++) {
        struct shk_board_slot *s = &b->slots[i];
        uint64_t seq = shk_load_relaxed(&s->seq);
        if (!(seq & 1) && shk_load_relaxed(&s->version) > ver)
            shk_store_release(&s->seq, seq + 1);
    }
}

int shk_board_take_writer(struct shk_board *b)
{
    struct shk_board_header *h = b->hdr;
    shk_clear_detail();
    pthread_mutex_lock(&b->local);
    pid_t self = shk_self_pid();
    uint64_t start = shk_self_start();
    if (is_writer_locked(b)) {
        pthread_mutex_unlock(&b->local);
        return 0;
    }
    int r = board_lock(b);
    if (r) {
        pthread_mutex_unlock(&b->local);
        return r;
    }
    pid_t pid = h->writer_pid;
    int takeover = 0;
    if (pid != 0) {
        if (shk_proc_alive(pid, h->writer_start)) {
            board_unlock(b);
            pthread_mutex_unlock(&b->local);
            if (pid == self)
                return shk_fail(EBUSY, "shk_board_take_writer(): another handle of this "
                                       "process is the board's writer");
            return shk_fail(EBUSY, "shk_board_take_writer(): the board already has a live "
                                   "writer (pid %d)", (int)pid);
        }
        takeover = 1;
    }
    /* start before pid, generation last: a reader of these fields never pairs a pid with
     * another process's start time */
    shk_store_relaxed(&h->writer_start, start);
    shk_store_release(&h->writer_pid, self);
    uint64_t gen = h->writer_gen + 1;
    shk_store_release(&h->writer_gen, gen);
    if (takeover)
        h->takeovers++;
    forget_unpublished(b);
    board_unlock(b);
    b->writer_gen = gen;
    b->writer_pid = self;
    b->loan_slot = -1;
    uint64_t w = shk_load_acquire(&h->latest);
    b->next_slot = w ? (uint32_t)((w & SHK_BOARD_SLOT_MASK) + 1) % b->nbuffers : 0;
    pthread_mutex_unlock(&b->local);
    return 0;
}

int shk_board_release_writer(struct shk_board *b)
{
    struct shk_board_header *h = b->hdr;
    pthread_mutex_lock(&b->local);
    if (!is_writer_locked(b)) {
        b->writer_gen = 0;
        pthread_mutex_unlock(&b->local);
        return 0;
    }
    int r = board_lock(b);
    if (r == 0) {
        if (h->writer_gen == b->writer_gen && h->writer_pid == b->writer_pid)
            shk_store_release(&h->writer_pid, 0);
        board_unlock(b);
    }
    b->writer_gen = 0;
    b->loan_slot = -1;
    pthread_mutex_unlock(&b->local);
    return r;
}

static int not_writer(struct shk_board *b, const char *fn)
{
    if (b->writer_gen != 0 && b->writer_pid == shk_self_pid())
        return shk_fail(SHK_ENOTOWNER, "%s(): another process took over as the board's "
                        "writer (this handle's writer role ended)", fn);
    return shk_fail(SHK_ENOTOWNER, "%s(): this handle is not the board's writer", fn);
}

/* Is slot idx pinned by some reader record? */
static int slot_pinned(struct shk_board *b, uint32_t idx)
{
    for (uint32_t r = 0; r < b->nreaders; r++) {
        uint64_t p = shk_load_seq_cst(&b->readers[r].pin);
        if (p && (uint32_t)(p & SHK_BOARD_SLOT_MASK) == idx)
            return 1;
    }
    return 0;
}

int shk_board_begin(struct shk_board *b, void **buf)
{
    struct shk_board_header *h = b->hdr;
    shk_clear_detail();
    pthread_mutex_lock(&b->local);
    int r = 0;
    if (!is_writer_locked(b)) {
        r = not_writer(b, "shk_board_begin");
        goto out;
    }
    if (b->loan_slot >= 0) {
        r = shk_fail(EBUSY, "shk_board_begin(): a publication is already in progress on this "
                            "handle (another thread, or a loan that was never committed)");
        goto out;
    }
    /* Only this writer stores latest, so it cannot change under us. */
    uint64_t w = shk_load_seq_cst(&h->latest);
    uint32_t cur = w ? (uint32_t)(w & SHK_BOARD_SLOT_MASK) : UINT32_MAX;
    int32_t chosen = -1;
    for (uint32_t i = 0; i < b->nbuffers; i++) {
        uint32_t idx = (b->next_slot + i) % b->nbuffers;
        if (idx == cur)
            continue;
        if (slot_pinned(b, idx)) {
            shk_stat_add(&h->pinned_skips, 1);
            continue;
        }
        chosen = (int32_t)idx;
        break;
    }
    if (chosen < 0) {
        /* nreaders = nbuffers - 2 records pin at most nbuffers - 2 slots: impossible
         * unless the records were overwritten */
        r = shk_fail(SHK_ECORRUPT, "shk_board_begin(): every slot but the latest is pinned, "
                                   "more than %u reader records can pin", b->nreaders);
        goto out;
    }
    struct shk_board_slot *s = &b->slots[chosen];
    uint64_t seq = shk_load_relaxed(&s->seq) | 1; /* odd: being written (a dead writer may have
                                             left it odd already) */
    shk_store_relaxed(&s->seq, seq);
    shk_fence_release();
    b->loan_slot = chosen;
    b->loan_seq = seq;
    b->next_slot = (uint32_t)(chosen + 1) % b->nbuffers;
    *buf = b->data + (uint64_t)chosen * b->stride;
out:
    pthread_mutex_unlock(&b->local);
    return r;
}

void shk_board_abort(struct shk_board *b)
{
    /* the slot keeps its odd seq: it is not the latest, nobody reads it, and the next
     * begin may choose it again */
    pthread_mutex_lock(&b->local);
    b->loan_slot = -1;
    pthread_mutex_unlock(&b->local);
}

int shk_board_commit(struct shk_board *b, uint64_t len, uint32_t kind, uint64_t meta,
                     uint64_t *version)
{
    struct shk_board_header *h = b->hdr;
    shk_clear_detail();
    pthread_mutex_lock(&b->local);
    int r = 0;
    int32_t idx = b->loan_slot;
    if (idx < 0) {
        r = shk_fail(EINVAL, "shk_board_commit(): no publication in progress");
        goto out;
    }
    b->loan_slot = -1;
    if (!is_writer_locked(b)) {
        r = not_writer(b, "shk_board_commit");
        goto out;
    }
    if (len > b->capacity || meta > len) {
        r = shk_fail(SHK_ETOOBIG, "shk_board_commit(): %llu bytes (meta %llu) do not fit "
                     "the board's %llu", (unsigned long long)len, (unsigned long long)meta,
                     (unsigned long long)b->capacity);
        goto out;
    }
    uint64_t ver = (shk_load_relaxed(&h->latest) >> SHK_BOARD_SLOT_BITS) + 1;
    struct shk_board_slot *s = &b->slots[idx];
    uint64_t now = shk_wall_ns();
    shk_store_relaxed(&s->version, ver);
    shk_store_relaxed(&s->len, len);
    shk_store_relaxed(&s->meta, meta);
    shk_store_relaxed(&s->kind, kind);
    shk_store_relaxed(&s->published_ns, now);
    shk_store_release(&s->seq, b->loan_seq + 1);
    shk_store_seq_cst(&h->latest, (ver << SHK_BOARD_SLOT_BITS) | (uint64_t)idx);
    shk_store_relaxed(&h->last_publish_ns, now);
    /* seq_cst store then seq_cst load: the full fence that keeps a waiter that
     * registered after our store from being missed */
    shk_store_seq_cst(&h->futex, (uint32_t)ver);
    if (shk_load_seq_cst(&h->waiters))
        shk_futex_wake(&h->futex, INT_MAX);
    if (version)
        *version = ver;
out:
    pthread_mutex_unlock(&b->local);
    return r;
}

int shk_board_publish(struct shk_board *b, const void *src, uint64_t len, uint32_t kind,
                      uint64_t meta, uint64_t *version)
{
    if (len > b->capacity)
        return shk_fail(SHK_ETOOBIG, "shk_board_publish(): a value of %llu bytes does not fit "
                        "the board's %llu", (unsigned long long)len,
                        (unsigned long long)b->capacity);
    void *buf;
    int r = shk_board_begin(b, &buf);
    if (r)
        return r;
    if (len)
        memcpy(buf, src, len);
    return shk_board_commit(b, len, kind, meta, version);
}

/* --- readers ----------------------------------------------------------------------- */

static void fill_value(struct shk_board_value *out, uint64_t w, const struct shk_board_slot *s)
{
    out->version = w >> SHK_BOARD_SLOT_BITS;
    out->slot = (uint32_t)(w & SHK_BOARD_SLOT_MASK);
    out->len = shk_load_relaxed(&s->len);
    out->meta = shk_load_relaxed(&s->meta);
    out->kind = shk_load_relaxed(&s->kind);
    out->published_ns = shk_load_relaxed(&s->published_ns);
}

static int bad_slot(struct shk_board *b, uint64_t w)
{
    return shk_fail(SHK_ECORRUPT, "board at offset %llu: latest word names slot %llu of %u",
                    (unsigned long long)b->off,
                    (unsigned long long)(w & SHK_BOARD_SLOT_MASK), b->nbuffers);
}

int shk_board_peek(struct shk_board *b, struct shk_board_value *out)
{
    uint64_t w = shk_load_acquire(&b->hdr->latest);
    if (!w)
        return SHK_EEMPTY;
    if ((w & SHK_BOARD_SLOT_MASK) >= b->nbuffers)
        return bad_slot(b, w);
    fill_value(out, w, &b->slots[w & SHK_BOARD_SLOT_MASK]);
    if (out->len > b->capacity)
        out->len = b->capacity;
    return 0;
}

/* Copy payload [0, len) of the slot at src as c asks; sizes already validated. */
static void copy_out(const struct shk_board_copy *c, const uint8_t *src, uint64_t len,
                     uint64_t meta)
{
    if (c->head) {
        uint64_t h = meta < c->head_cap ? meta : c->head_cap;
        memcpy(c->head, src, h);
        memcpy(c->dst, src + meta, len - meta);
    } else {
        memcpy(c->dst, src, len);
    }
}

/* Claim a reader record for this handle (local held). */
static int ensure_record(struct shk_board *b)
{
    pid_t self = shk_self_pid();
    if (b->record >= 0 && b->record_pid == self)
        return 0;
    /* never set, or inherited through fork: the record belongs to the parent */
    b->record = -1;
    b->pinned = 0;
    if (b->nreaders == 0)
        return shk_fail(EBUSY, "board has %u buffers: zero-copy reads need at least 3 "
                               "(each concurrent zero-copy reader needs one more than 2)",
                        b->nbuffers);
    int r = board_lock(b);
    if (r)
        return r;
    int32_t found = -1;
    for (uint32_t i = 0; i < b->nreaders && found < 0; i++)
        if (shk_load_acquire(&b->readers[i].pid) == 0)
            found = (int32_t)i;
    for (uint32_t i = 0; i < b->nreaders && found < 0; i++) {
        struct shk_board_reader *rec = &b->readers[i];
        if (!shk_proc_alive(rec->pid, rec->start)) {
            shk_store_release(&rec->pin, 0);
            shk_store_release(&rec->pid, 0);
            b->hdr->reclaimed++;
            found = (int32_t)i;
        }
    }
    if (found >= 0) {
        struct shk_board_reader *rec = &b->readers[found];
        shk_store_release(&rec->pin, 0);
        shk_store_relaxed(&rec->start, shk_self_start());
        shk_store_release(&rec->pid, self); /* last: claims it */
        b->record = found;
        b->record_pid = self;
    }
    board_unlock(b);
    if (found < 0)
        return shk_fail(EBUSY, "all %u zero-copy reader records of the board are held by live "
                        "handles; a board with N buffers serves N - 2 concurrent zero-copy "
                        "readers (create it with more buffers, or read copies)", b->nreaders);
    return 0;
}

/* Pin the latest value if newer than `after` (local held, record claimed). */
static int pin_locked(struct shk_board *b, uint64_t after, struct shk_board_value *out,
                      const uint8_t **data)
{
    struct shk_board_header *h = b->hdr;
    struct shk_board_reader *rec = &b->readers[b->record];
    uint64_t w = shk_load_seq_cst(&h->latest);
    if (!w || (w >> SHK_BOARD_SLOT_BITS) <= after)
        return SHK_EEMPTY; /* the current pin (if any) stays */
    if (w != b->pinned) {
        for (;;) {
            shk_store_seq_cst(&rec->pin, w);
            uint64_t again = shk_load_seq_cst(&h->latest);
            if (again == w)
                break;
            w = again; /* versions only grow: still newer than `after` */
        }
        b->pinned = w;
        shk_stat_add(&rec->pins, 1);
        shk_stat_add(&b->pins, 1);
    }
    uint32_t idx = (uint32_t)(w & SHK_BOARD_SLOT_MASK);
    if (idx >= b->nbuffers) {
        shk_store_release(&rec->pin, 0);
        b->pinned = 0;
        return bad_slot(b, w);
    }
    struct shk_board_slot *s = &b->slots[idx];
    uint64_t seq = shk_load_acquire(&s->seq);
    fill_value(out, w, s);
    if ((seq & 1) || shk_load_relaxed(&s->version) != out->version || out->len > b->capacity ||
        out->meta > out->len) {
        shk_store_release(&rec->pin, 0);
        b->pinned = 0;
        return shk_fail(SHK_ECORRUPT, "board at offset %llu: the latest slot %u is not a "
                        "complete value (seq %llu, len %llu)", (unsigned long long)b->off, idx,
                        (unsigned long long)seq, (unsigned long long)out->len);
    }
    *data = b->data + (uint64_t)idx * b->stride;
    return 0;
}

int shk_board_pin(struct shk_board *b, uint64_t after, struct shk_board_value *out,
                  const uint8_t **data)
{
    shk_clear_detail();
    pthread_mutex_lock(&b->local);
    int r = ensure_record(b);
    if (r == 0)
        r = pin_locked(b, after, out, data);
    pthread_mutex_unlock(&b->local);
    return r;
}

void shk_board_unpin(struct shk_board *b, uint64_t word)
{
    pthread_mutex_lock(&b->local);
    if (b->pinned && (word == 0 || word == b->pinned) && b->record >= 0 &&
        b->record_pid == shk_self_pid())
        shk_store_release(&b->readers[b->record].pin, 0);
    if (word == 0 || word == b->pinned)
        b->pinned = 0;
    pthread_mutex_unlock(&b->local);
}

uint64_t shk_board_pinned(struct shk_board *b)
{
    return b->record_pid == shk_self_pid() ? b->pinned : 0;
}

/* Give this handle's reader record back (local held). */
static void release_record(struct shk_board *b)
{
    if (b->record < 0 || b->record_pid != shk_self_pid())
        return;
    struct shk_board_reader *rec = &b->readers[b->record];
    if (board_lock(b) == 0) {
        if (rec->pid == b->record_pid) {
            shk_store_release(&rec->pin, 0);
            shk_store_release(&rec->pid, 0);
        }
        board_unlock(b);
    }
    b->record = -1;
    b->pinned = 0;
}

/* Copy from a pinned slot: for large values, and for a copier lapped again and again by
 * the writer.  Only when this handle pins nothing itself (its pin belongs to a view it
 * handed out), and only with a record to spare: a record claimed for this copy is given
 * back, so copying readers never take zero-copy readers' places.  EAGAIN: copy with the
 * seqlock instead. */
static int copy_pinned(struct shk_board *b, uint64_t after, const struct shk_board_copy *c,
                       struct shk_board_value *out, int lapped)
{
    if (pthread_mutex_trylock(&b->local) != 0)
        return EAGAIN;
    int r = EAGAIN;
    int had_record = b->record >= 0 && b->record_pid == shk_self_pid();
    if (shk_board_pinned(b) != 0) {
        /* keep the pin of the view this handle handed out */
    } else if (ensure_record(b) != 0) {
        shk_clear_detail(); /* no record free: keep trying to copy */
    } else {
        const uint8_t *src;
        r = pin_locked(b, after, out, &src);
        if (r == 0) {
            uint64_t body = c->head ? out->len - out->meta : out->len;
            if (body > c->cap)
                r = ENOBUFS;
            else
                copy_out(c, src, out->len, out->meta);
            shk_store_release(&b->readers[b->record].pin, 0);
            b->pinned = 0;
            if (lapped)
                shk_stat_add(&b->fallbacks, 1);
        }
        if (!had_record)
            release_record(b);
    }
    pthread_mutex_unlock(&b->local);
    return r;
}

int shk_board_read(struct shk_board *b, uint64_t after, const struct shk_board_copy *c,
                   struct shk_board_value *out)
{
    struct shk_board_header *h = b->hdr;
    for (int attempt = 0;; attempt++) {
        uint64_t w = shk_load_acquire(&h->latest);
        if (!w || (w >> SHK_BOARD_SLOT_BITS) <= after)
            return SHK_EEMPTY;
        uint32_t idx = (uint32_t)(w & SHK_BOARD_SLOT_MASK);
        if (idx >= b->nbuffers)
            return bad_slot(b, w);
        struct shk_board_slot *s = &b->slots[idx];
        uint64_t s1 = shk_load_acquire(&s->seq);
        if (attempt == 0 && !(s1 & 1) && b->nreaders > 0 &&
            shk_load_relaxed(&s->len) >= PIN_COPY_MIN) {
            int r = copy_pinned(b, after, c, out, 0);
            if (r != EAGAIN) {
                if (r == 0)
                    shk_stat_add(&b->copies, 1);
                return r;
            }
        }
        if (!(s1 & 1)) {
            fill_value(out, w, s);
            int same_version = shk_load_relaxed(&s->version) == out->version;
            int sane = out->len <= b->capacity && out->meta <= out->len;
            uint64_t body = c->head ? out->len - out->meta : out->len;
            if (same_version && sane && body <= c->cap)
                copy_out(c, b->data + (uint64_t)idx * b->stride, out->len, out->meta);
            shk_fence_acquire();
            if (shk_load_relaxed(&s->seq) == s1 && same_version) {
                if (!sane)
                    return shk_fail(SHK_ECORRUPT, "board at offset %llu: slot %u holds %llu "
                                    "bytes (meta %llu), more than its %llu",
                                    (unsigned long long)b->off, idx,
                                    (unsigned long long)out->len,
                                    (unsigned long long)out->meta,
                                    (unsigned long long)b->capacity);
                if (body > c->cap)
                    return ENOBUFS;
                shk_stat_add(&b->copies, 1);
                return 0;
            }
        }
        shk_stat_add(&b->retries, 1);
        if (attempt >= COPY_ATTEMPTS_BEFORE_PIN && b->nreaders > 0) {
            int r = copy_pinned(b, after, c, out, 1);
            if (r != EAGAIN) {
                if (r == 0)
                    shk_stat_add(&b->copies, 1);
                return r;
            }
        }
        if (attempt >= 64)
            sched_yield();
        else
            shk_cpu_relax();
    }
}

int shk_board_intact(struct shk_board *b, uint64_t version)
{
    uint64_t p = shk_board_pinned(b);
    if (p && (p >> SHK_BOARD_SLOT_BITS) == version)
        return 1;
    for (uint32_t i = 0; i < b->nbuffers; i++) {
        struct shk_board_slot *s = &b->slots[i];
        uint64_t s1 = shk_load_acquire(&s->seq);
        if (s1 & 1)
            continue;
        uint64_t v = shk_load_relaxed(&s->version);
        shk_fence_acquire();
        if (v == version && shk_load_relaxed(&s->seq) == s1)
            return 1;
    }
    return 0;
}

/* --- waiting ----------------------------------------------------------------------- */

/* The waiter's side of the protocol (see the top): f = futex; register (armed); re-check
 * the version; sleep on f.  Armed, a wait is retried every CANCEL_SLICE_NS so that
 * shk_board_cancel_waits is noticed even if its wake-up found nobody asleep. */
static int board_wait_attempt(void *obj, struct shk_wait *w)
{
    struct shk_board_waiter *bw = obj;
    struct shk_board *b = bw->b;
    struct shk_board_header *h = b->hdr;
    uint32_t f = shk_load_seq_cst(&h->futex);
    if (shk_board_version(b) > bw->after)
        goto newer;
    if (w->phase == 0) {
        w->phase = 1;
        shk_stat_add(&b->waits, 1);
    }
    if (shk_load_acquire(&b->cancel))
        return ECANCELED;
    if ((w->flags & SHK_WAIT_ARMED) && w->phase == 1) {
        w->phase = 2; /* it sleeps */
        shk_stat_add(&b->sleeps, 1);
    }
    shk_wait_on_futex(w, &h->futex, f, &h->waiters);
    if (shk_board_version(b) > bw->after)
        goto newer;
    if (w->flags & SHK_WAIT_ARMED)
        shk_wait_retry_by(w, shk_now_ns() + CANCEL_SLICE_NS);
    return EAGAIN;
newer:
    if (w->phase == 1)
        shk_stat_add(&b->spin_hits, 1); /* waited, and the spin caught it */
    return 0;
}

/* The handle's adaptive spin: learnt per handle, grown only by spins that won. */
static void board_wait_spin(void *obj, struct shk_spin *out)
{
    struct shk_board_waiter *bw = obj;
    out->budget_ns = &bw->b->spin_budget_ns;
    out->gate_ms = NULL;
    out->max_ns = bw->max_spin_ns;
    out->policy = SHK_SPIN_YIELD;
}

const struct shk_wait_op shk_board_wait_op = {"Board.wait", board_wait_attempt, NULL,
                                              board_wait_spin};

int shk_board_wait(struct shk_board *b, uint64_t after, uint64_t max_spin_ns, struct shk_wait *w)
{
    struct shk_board_waiter bw = {b, after, max_spin_ns};
    return shk_wait_run(&shk_board_wait_op, &bw, w);
}

void shk_board_cancel_waits(struct shk_board *b)
{
    shk_store_seq_cst(&b->cancel, 1);
    shk_futex_wake(&b->hdr->futex, INT_MAX);
}

/* --- lifecycle and statistics ------------------------------------------------------- */

int shk_board_open(struct shk_board *b, struct shk_zone *z, const char *name, uint32_t objtype,
                   uint64_t capacity, uint32_t nbuffers, int *created)
{
    struct shk_board_params p = {nbuffers, capacity};
    uint64_t size = capacity ? shk_board_size(nbuffers, capacity) : 0;
    *created = 0;
    if (capacity && !size)
        return shk_fail(EINVAL, "a board needs %u..%u buffers and a capacity of 1 byte .. "
                        "64 TiB (got %u buffers of %llu bytes)", SHK_BOARD_MIN_BUFFERS,
                        SHK_BOARD_MAX_BUFFERS, nbuffers, (unsigned long long)capacity);
    struct shk_dirent e;
    int r = shk_zone_obj_get(z, name, objtype, size, capacity, capacity ? SHK_O_CREATE : 0,
                             shk_board_init, &p, &e, created);
    return r ? r : shk_board_attach(b, z, e.offset, e.size);
}

void shk_board_detach(struct shk_board *b)
{
    if (!b->hdr)
        return;
    shk_board_release_writer(b);
    pthread_mutex_lock(&b->local);
    release_record(b);
    b->record = -1;
    b->pinned = 0;
    pthread_mutex_unlock(&b->local);
    pthread_mutex_destroy(&b->local);
    b->hdr = NULL;
}

int shk_board_stats(struct shk_board *b, struct shk_board_stats *st)
{
    struct shk_board_header *h = b->hdr;
    memset(st, 0, sizeof *st);
    st->version = shk_board_version(b);
    st->capacity = b->capacity;
    st->nbuffers = b->nbuffers;
    st->nreaders = b->nreaders;
    st->last_publish_ns = shk_load_relaxed(&h->last_publish_ns);
    st->pinned_skips = shk_load_relaxed(&h->pinned_skips);
    st->takeovers = shk_load_relaxed(&h->takeovers);
    st->reclaimed = shk_load_relaxed(&h->reclaimed);
    st->waiters = shk_load_relaxed(&h->waiters);
    for (uint32_t i = 0; i < b->nreaders; i++)
        if (shk_load_acquire(&b->readers[i].pid) != 0)
            st->readers_in_use++;
    pid_t pid;
    int alive;
    shk_board_writer(b, &pid, &alive);
    st->writer_pid = pid;
    st->writer_alive = alive;
    st->is_writer = shk_board_is_writer(b);
    st->copies = shk_load_relaxed(&b->copies);
    st->retries = shk_load_relaxed(&b->retries);
    st->fallbacks = shk_load_relaxed(&b->fallbacks);
    st->pins = shk_load_relaxed(&b->pins);
    st->waits = shk_load_relaxed(&b->waits);
    st->sleeps = shk_load_relaxed(&b->sleeps);
    st->spin_hits = shk_load_relaxed(&b->spin_hits);
    uint32_t budget = shk_load_relaxed(&b->spin_budget_ns);
    st->spin_budget_ns = budget == SPIN_UNSET ? 0 : budget;
    return 0;
}
