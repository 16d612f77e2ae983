#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "zone.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "atomics.h"
#include "errors.h"
#include "report.h"
#include "wait.h"
#include "futex.h"
#include "mutex.h"
#include "proc.h"
#include "slab.h"


static uint64_t round_up(uint64_t n, uint64_t a)
{
    return (n + a - 1) / a * a;
}

/* Write a fresh header and allocator over the whole segment. Init lock held. */
static int format_zone(struct shk_zone *z, const struct shk_zone_params *p, size_t size)
{
    struct shk_zone_header *h = z->hdr;
    int r;
    /* clear everything but init_owner, which may be another process's CAS target */
    memset(h, 0, offsetof(struct shk_zone_header, init_owner));
    memset((uint8_t *)h + offsetof(struct shk_zone_header, creator_start), 0,
           sizeof *h - offsetof(struct shk_zone_header, creator_start));
    h->init_start = shk_self_start();
    h->magic = SHK_ZONE_MAGIC;
    h->format = SHK_FORMAT_WORD;
    h->declared_size = p->size ? p->size : size;
    h->size = size;
    h->max_size = p->max_size > size ? round_up(p->max_size, SHK_PAGE) : size;
    if (p->tag && p->tag_len) {
        h->tag_len = (uint32_t)p->tag_len;
        memcpy(h->tag, p->tag, p->tag_len);
    }
    h->creator_pid = shk_self_pid();
    h->creator_start = shk_self_start();
    h->created_ns = shk_wall_ns();
    if ((r = shk_mutex_init(&h->lock)) != 0)
        return shk_fail(r, "zone: cannot initialise its mutex: %s", strerror(r));
    if ((r = shk_zone_add_extent_locked(z, SHK_PAGE, size)) != 0)
        return r;
    shk_store_release(&h->state, SHK_ZS_INITIALIZING);
    return 0;
}

static int check_identity(struct shk_zone *z, const struct shk_zone_params *p)
{
    struct shk_zone_header *h = z->hdr;
    if (p->size && p->size != h->declared_size)
        return shk_fail(SHK_EMISMATCH, "zone exists with size %llu; it was declared again "
                        "with size %zu", (unsigned long long)h->declared_size, p->size);
    if (p->tag) {
        if (h->tag_len > SHK_TAG_MAX)
            return shk_fail(SHK_ECORRUPT, "zone header: tag length %u > %d", h->tag_len, SHK_TAG_MAX);
        if (p->tag_len != h->tag_len || memcmp(p->tag, h->tag, p->tag_len) != 0)
            return shk_fail(SHK_EMISMATCH, "zone exists with tag '%.*s'; it was declared "
                            "again with tag '%.*s'", (int)h->tag_len, (const char *)h->tag,
                            (int)p->tag_len, (const char *)p->tag);
    }
    return 0;
}

/* Checks on a header that claims to be a ready zone. */
static int check_header(struct shk_zone *z)
{
    struct shk_zone_header *h = z->hdr;
    if (h->magic != SHK_ZONE_MAGIC) {
        if (h->magic == __builtin_bswap64(SHK_ZONE_MAGIC))
            return shk_fail(SHK_EVERSION, "zone was made on a machine of the other byte order");
        return shk_fail(SHK_ECORRUPT, "not a shmkit zone (magic 0x%016llx)",
                        (unsigned long long)h->magic);
    }
    if (h->format != SHK_FORMAT_WORD) {
        uint64_t f = h->format;
        return shk_fail(SHK_EVERSION, "zone has format word 0x%016llx (layout version %llu, "
                        "mutex %llu bytes); this build expects 0x%016llx (layout version %u, "
                        "mutex %zu bytes)", (unsigned long long)f,
                        (unsigned long long)(f >> 48), (unsigned long long)((f >> 40) & 0xff),
                        (unsigned long long)SHK_FORMAT_WORD, SHK_LAYOUT_VERSION,
                        sizeof(pthread_mutex_t));
    }
    uint32_t st = shk_load_acquire(&h->state);
    if (st == SHK_ZS_CORRUPT)
        return shk_fail(SHK_ECORRUPT, "zone is marked corrupt");
    if (st > SHK_ZS_CORRUPT)
        return shk_fail(SHK_ECORRUPT, "zone header: state %u is not a state", st);
    if (h->size < SHK_ZONE_MIN_SIZE || h->size % SHK_PAGE)
        return shk_fail(SHK_ECORRUPT, "zone header: size %llu is not a valid zone size",
                        (unsigned long long)h->size);
    if (h->max_size < h->size)
        return shk_fail(SHK_ECORRUPT, "zone header: max_size %llu < size %llu",
                        (unsigned long long)h->max_size, (unsigned long long)h->size);
    if (h->tag_len > SHK_TAG_MAX)
        return shk_fail(SHK_ECORRUPT, "zone header: tag length %u > %d", h->tag_len, SHK_TAG_MAX);
    if (h->nextents == 0 || h->nextents > SHK_MAX_EXTENTS)
        return shk_fail(SHK_ECORRUPT, "zone header: %u extents", h->nextents);
    return 0;
}

/* Make sure the mapping can hold the zone's maximum size (re-reserve if it cannot:
 * only ever done while opening, before anything points into the mapping). */
static int fit_reservation(struct shk_zone *z)
{
    struct shk_segment *s = z->seg;
    uint64_t want = z->hdr->max_size;
    if (want > s->reserved && s->fd >= 0) {
        int r = shk_seg_rereserve(s, want);
        if (r)
            return r;
        z->hdr = (struct shk_zone_header *)s->base;
        z->base = s->base;
    }
    return 0;
}

static int attach_ready(struct shk_zone *z, const struct shk_zone_params *p)
{
    int r;
    if ((r = check_header(z)) != 0)
        return r;
    if ((r = check_identity(z, p)) != 0)
        return r;
    if ((r = fit_reservation(z)) != 0)
        return r;
    if ((r = shk_seg_refresh(z->seg)) != 0)
        return r;
    if (z->seg->size < z->hdr->size)
        return shk_fail(SHK_ECORRUPT, "zone header says %llu bytes but the object has %zu "
                        "(was it shrunk by another process?)",
                        (unsigned long long)z->hdr->size, z->seg->size);
    z->mapped = z->hdr->size;
    return 0;
}

/* We are the initialiser: size the object and lay the zone out. */
static int become_initialiser(struct shk_zone *z, const struct shk_zone_params *p, int *status)
{
    int r;
    struct shk_segment *s = z->seg;
    size_t size = p->size;
    if (s->kind == SHK_SEG_SYSV || s->kind == SHK_SEG_ANON)
        size = s->size;
    if (!size)
        return shk_fail(SHK_ENOTREADY, "zone does not exist (or was never initialised) and no "
                        "size was given to create it");
    size = round_up(size, SHK_PAGE);
    if (size < SHK_ZONE_MIN_SIZE)
        return shk_fail(EINVAL, "zone size %zu is below the minimum of %u bytes", p->size,
                        SHK_ZONE_MIN_SIZE);
    if (p->tag_len > SHK_TAG_MAX)
        return shk_fail(EINVAL, "zone tag is %zu bytes; at most %d are allowed", p->tag_len,
                        SHK_TAG_MAX);
    if (s->fd >= 0 && s->kind != SHK_SEG_MEMFD) {
        size_t reserve = p->max_size > size ? p->max_size : size;
        if ((r = shk_seg_rereserve(s, reserve)) != 0)
            return r;
        if ((r = shk_seg_resize(s, size, 0)) != 0)
            return r;
    } else if (s->size < size) {
        return shk_fail(EINVAL, "segment of %zu bytes is too small for a zone of %zu", s->size, size);
    }
    z->hdr = (struct shk_zone_header *)s->base;
    z->base = s->base;
    z->mapped = size;
    if ((r = format_zone(z, p, size)) != 0)
        return r;
    z->holds_init = 1;
    *status = SHK_ZONE_MUST_INIT;
    return 0;
}

static int try_open_fd(struct shk_zone *z, const struct shk_zone_params *p, int waited,
                       int *status)
{
    struct shk_segment *s = z->seg;
    int r;
    for (int pass = 0; pass < 2; pass++) {
        if ((r = shk_seg_refresh(s)) != 0)
            return r;
        z->hdr = (struct shk_zone_header *)s->base;
        z->base = s->base;
        if (s->size >= SHK_PAGE) {
            struct shk_zone_header *h = z->hdr;
            uint64_t magic = shk_load_acquire(&h->magic);
            uint32_t st = shk_load_acquire(&h->state);
            if (magic == SHK_ZONE_MAGIC && st == SHK_ZS_READY) {
                if ((r = attach_ready(z, p)) != 0)
                    return r;
                *status = SHK_ZONE_ATTACHED;
                return 0;
            }
            if (magic == SHK_ZONE_MAGIC && (r = check_header(z)) != 0 && r == SHK_EVERSION)
                return r;
            if (magic == SHK_ZONE_MAGIC && st == SHK_ZS_CORRUPT)
                return shk_fail(SHK_ECORRUPT, "zone is marked corrupt");
            if (magic != 0 && magic != SHK_ZONE_MAGIC)
                return check_header(z); /* byte order or not a zone at all */
        } else if (s->size > 0) {
            return shk_fail(SHK_ECORRUPT, "object of %zu bytes is too small to be a zone", s->size);
        }
        if (pass == 1)
            break;
        /* not ready: whoever holds the init lock is initialising it */
        r = shk_ofd_lock(s->fd, SHK_LOCKBYTE_INIT, F_WRLCK, 0);
        if (r == EAGAIN)
            return EAGAIN;
        if (r)
            return shk_fail(r, "zone: taking the init lock: %s", strerror(r));
        /* we hold it: look again, it may have become ready just before */
        if ((r = shk_seg_refresh(s)) != 0)
            goto unlock;
        z->hdr = (struct shk_zone_header *)s->base;
        z->base = s->base;
        if (s->size >= SHK_PAGE && shk_load_acquire(&z->hdr->magic) == SHK_ZONE_MAGIC &&
            shk_load_acquire(&z->hdr->state) == SHK_ZS_READY) {
            shk_ofd_lock(s->fd, SHK_LOCKBYTE_INIT, F_UNLCK, 0);
            continue; /* pass 2 attaches */
        }
        if (waited) {
            int pid = s->size >= SHK_PAGE ? z->hdr->creator_pid : 0;
            r = shk_fail(SHK_EINITDIED, "the process initialising the zone (pid %d) died or "
                         "failed before the zone was ready; declare the zone again to "
                         "re-initialise it", pid);
            goto unlock;
        }
        if ((r = become_initialiser(z, p, status)) != 0)
            goto unlock;
        return 0;
    unlock:
        shk_ofd_lock(s->fd, SHK_LOCKBYTE_INIT, F_UNLCK, 0);
        return r;
    }
    return shk_fail(EAGAIN, "zone: state changed while opening");
}

/* SysV zones have no fd to lock: claim initialisation with a CAS on init_owner. */
static int try_open_claim(struct shk_zone *z, const struct shk_zone_params *p, int waited,
                          int *status)
{
    struct shk_segment *s = z->seg;
    struct shk_zone_header *h = (struct shk_zone_header *)s->base;
    int r;
    z->hdr = h;
    z->base = s->base;
    z->mapped = s->size;
    if (s->size < SHK_ZONE_MIN_SIZE)
        return shk_fail(EINVAL, "segment of %zu bytes is too small for a zone", s->size);
    if (shk_load_acquire(&h->magic) == SHK_ZONE_MAGIC && shk_load_acquire(&h->state) == SHK_ZS_READY) {
        if ((r = attach_ready(z, p)) != 0)
            return r;
        *status = SHK_ZONE_ATTACHED;
        return 0;
    }
    uint64_t magic = shk_load_acquire(&h->magic);
    if (magic != 0 && magic != SHK_ZONE_MAGIC)
        return check_header(z);
    uint32_t owner = shk_load_acquire(&h->init_owner);
    if (owner) {
        if (shk_proc_alive((pid_t)owner, shk_load_acquire(&h->init_start)))
            return EAGAIN;
        if (waited)
            return shk_fail(SHK_EINITDIED, "the process initialising the zone (pid %u) died "
                            "before the zone was ready; declare the zone again to "
                            "re-initialise it", owner);
    }
    uint32_t me = (uint32_t)shk_self_pid();
    if (!shk_cas_acq_rel(&h->init_owner, &owner, me))
        return EAGAIN;
    shk_store_release(&h->init_start, shk_self_start());
    if (shk_load_acquire(&h->state) == SHK_ZS_READY) { /* finished just before our claim */
        shk_store_release(&h->init_owner, 0);
        return EAGAIN;
    }
    if ((r = become_initialiser(z, p, status)) != 0) {
        shk_store_release(&h->init_owner, 0);
        return r;
    }
    return 0;
}

int shk_zone_try_open(struct shk_zone *z, struct shk_segment *seg,
                      const struct shk_zone_params *p, int waited, int *status)
{
    shk_clear_detail();
    memset(z, 0, sizeof *z);
    z->seg = seg;
    z->hdr = (struct shk_zone_header *)seg->base;
    z->base = seg->base;
    if (!seg->base)
        return shk_fail(SHK_ECLOSED, "segment is closed");
    if (p->tag_len > SHK_TAG_MAX)
        return shk_fail(EINVAL, "zone tag is %zu bytes; at most %d are allowed", p->tag_len,
                        SHK_TAG_MAX);
    if (seg->flags & SHK_O_RDONLY)
        return shk_fail(EINVAL, "zones need a read-write mapping");
    /* objects only this process can have created: initialise straight away */
    if (seg->created && (seg->kind == SHK_SEG_ANON || seg->kind == SHK_SEG_MEMFD)) {
        z->mapped = seg->size;
        return become_initialiser(z, p, status);
    }
    if (seg->fd >= 0)
        return try_open_fd(z, p, waited, status);
    return try_open_claim(z, p, waited, status);
}

int shk_zone_init_done(struct shk_zone *z, int ok)
{
    struct shk_zone_header *h = z->hdr;
    if (!z->holds_init)
        return shk_fail(EINVAL, "zone: init_done() without initialising");
    if (ok)
        shk_store_release(&h->ready_ns, shk_wall_ns());
    shk_store_release(&h->state, ok ? SHK_ZS_READY : SHK_ZS_UNINIT);
    z->holds_init = 0;
    if (z->seg->fd >= 0 && !(z->seg->created && z->seg->kind == SHK_SEG_MEMFD))
        shk_ofd_lock(z->seg->fd, SHK_LOCKBYTE_INIT, F_UNLCK, 0);
    else
        shk_store_release(&h->init_owner, 0);
    /* full fence between publishing the state and reading the waiter count */
    shk_fence_seq_cst();
    if (shk_load_acquire(&h->state_waiters))
        shk_futex_wake(&h->state, INT32_MAX);
    return 0;
}

/* Opening as an operation of the one wait shape: one try; while another process
 * initialises the zone, wait on the state word (woken by init_done), retried every
 * 10 ms because the initialiser's death does not change that word (the next try probes
 * its init lock); before the object has a header, poll every millisecond. */
static int zone_open_attempt(void *obj, struct shk_wait *w)
{
    struct shk_zone_opening *o = obj;
    int r = shk_zone_try_open(o->z, o->seg, o->p, w->phase != 0, &o->status);
    if (r != EAGAIN)
        return r;
    w->phase = 1; /* from now on an initialiser's death is reported, not taken over */
    struct shk_segment *s = o->seg;
    uint64_t now = shk_now_ns();
    if (s->base && s->size >= SHK_PAGE) {
        struct shk_zone_header *h = (struct shk_zone_header *)s->base;
        uint32_t st = shk_load_acquire(&h->state);
        if (st == SHK_ZS_READY) {
            shk_wait_on_poll(w, now); /* became ready meanwhile: try again at once */
            return EAGAIN;
        }
        shk_wait_on_futex(w, &h->state, st, &h->state_waiters);
        shk_wait_retry_by(w, now + 10 * 1000 * 1000);
    } else {
        shk_wait_on_poll(w, now + 1000 * 1000);
    }
    return EAGAIN;
}

/* Gave up: the caller's timeout passed, or it stopped (nothing to undo either way). */
static int zone_open_give_up(void *obj, struct shk_wait *w, int why)
{
    if (why == ETIMEDOUT)
        return shk_fail(ETIMEDOUT, "zone is still being initialised by another process; gave "
                        "up waiting for it to become ready");
    return why;
}

const struct shk_wait_op shk_zone_open_op = {"Zone open", zone_open_attempt, zone_open_give_up,
                                             NULL};

int shk_zone_lock(struct shk_zone *z)
{
    struct shk_zone_header *h = z->hdr;
    int r = shk_mutex_lock(&h->lock, NULL);
    if (r == SHK_EOWNERDEAD) {
        if ((r = shk_zone_sync(z)) == 0)
            r = shk_zone_recover_locked(z);
        if (r == 0) {
            shk_mutex_consistent(&h->lock);
            return 0;
        }
        /* cannot repair: leave the mutex unrecoverable and say so */
        int saved = r;
        shk_store_release(&h->state, SHK_ZS_CORRUPT);
        shk_mutex_consistent(&h->lock);
        shk_mutex_unlock(&h->lock);
        return saved;
    }
    if (r)
        return r;
    if (shk_load_acquire(&h->size) > z->mapped && (r = shk_zone_sync(z)) != 0) {
        shk_mutex_unlock(&h->lock);
        return r;
    }
    return 0;
}

void shk_zone_unlock(struct shk_zone *z)
{
    shk_mutex_unlock(&z->hdr->lock);
}

/* ---- the plain twins: lock, call the _locked function below, unlock ---------------- */

int shk_zone_recover_locked(struct shk_zone *z)
{
    /* the allocator first: the directory's recovery frees what was left pending */
    int r = shk_slab_recover_locked(z);
    if (r == 0)
        r = shk_dir_recover_locked(z);
    if (r == 0) {
        z->hdr->recoveries++;
        z->hdr->last_recovery_ns = shk_wall_ns();
    }
    return r;
}

int shk_zone_alloc(struct shk_zone *z, uint64_t n, int flags, uint64_t *off)
{
    shk_clear_detail();
    int r = shk_zone_lock(z);
    if (r)
        return r;
    r = shk_zone_alloc_locked(z, n, flags, off);
    shk_zone_unlock(z);
    return r;
}

int shk_zone_free(struct shk_zone *z, uint64_t off)
{
    shk_clear_detail();
    int r = shk_zone_lock(z);
    if (r)
        return r;
    r = shk_zone_free_locked(z, off);
    shk_zone_unlock(z);
    return r;
}

uint64_t shk_zone_usable_size(struct shk_zone *z, uint64_t off)
{
    if (shk_zone_lock(z) != 0)
        return 0;
    uint64_t n = shk_zone_usable_size_locked(z, off);
    shk_zone_unlock(z);
    return n;
}

int shk_zone_obj_get(struct shk_zone *z, const char *name, uint32_t type, uint64_t size,
                     uint64_t aux, int flags, shk_obj_init_fn init, void *arg,
                     struct shk_dirent *out, int *created)
{
    shk_clear_detail();
    *created = 0;
    int r = shk_obj_check_name(name);
    if (r == 0 && (r = shk_zone_lock(z)) == 0) {
        r = shk_dir_get_locked(z, name, type, size, aux, flags, init, arg, out, created);
        /* a directory entry is shared input: the object it names must be a block the
         * allocator handed out, or its header would be read from a free page or another
         * object's memory */
        if (r == 0 && !*created && shk_zone_usable_size_locked(z, out->offset) < out->size)
            r = shk_fail(SHK_ECORRUPT, "directory entry '%s': offset %llu, %llu bytes is not "
                         "an allocated block of the zone (corrupted)", name,
                         (unsigned long long)out->offset, (unsigned long long)out->size);
        shk_zone_unlock(z);
    }
    return r;
}

int shk_zone_obj_find(struct shk_zone *z, const char *name, struct shk_dirent *out)
{
    int created;
    return shk_zone_obj_get(z, name, 0, 0, 0, 0, NULL, NULL, out, &created);
}

int shk_zone_obj_destroy(struct shk_zone *z, const char *name, uint32_t type)
{
    shk_clear_detail();
    int r = shk_obj_check_name(name);
    if (r == 0 && (r = shk_zone_lock(z)) == 0) {
        r = shk_dir_destroy_locked(z, name, type);
        shk_zone_unlock(z);
    }
    return r;
}

int shk_zone_obj_list(struct shk_zone *z, struct shk_dirent *out, size_t cap, size_t *n)
{
    *n = 0;
    int r = shk_zone_lock(z);
    if (r == 0) {
        r = shk_dir_list_locked(z, out, cap, n);
        shk_zone_unlock(z);
    }
    return r;
}

int shk_zone_obj_list_all(struct shk_zone *z, struct shk_dirent **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    int r = shk_zone_lock(z);
    if (r)
        return r;
    size_t cap = 0; /* counted by the same walk, not from a count that could be off */
    r = shk_dir_list_locked(z, NULL, 0, &cap);
    if (r == 0 && cap) {
        *out = malloc(cap * sizeof **out);
        r = *out ? shk_dir_list_locked(z, *out, cap, n) : ENOMEM;
    }
    shk_zone_unlock(z);
    if (r) {
        free(*out);
        *out = NULL;
    }
    return r;
}

#define ZH(member, kind) SHK_FIELD(struct shk_zone_header_info, member, kind)
const struct shk_field shk_zone_header_fields[] = {
    ZH(magic, U64), ZH(format, U64), ZH(state, U32), ZH(size, U64), ZH(declared_size, U64),
    ZH(max_size, U64), ZH(generation, U64), ZH(creator_pid, I32), ZH(creator_start, U64),
    ZH(created_ns, U64), ZH(ready_ns, U64), ZH(recoveries, U64), ZH(nextents, U32),
    {NULL, 0, 0},
};
#undef ZH

void shk_zone_header_info(struct shk_zone *z, struct shk_zone_header_info *out)
{
    struct shk_zone_header *h = z->hdr;
    memset(out, 0, sizeof *out);
    out->magic = h->magic;
    out->format = h->format;
    out->state = shk_load_acquire(&h->state);
    out->size = h->size;
    out->declared_size = h->declared_size;
    out->max_size = h->max_size;
    out->generation = h->generation;
    out->creator_pid = h->creator_pid;
    out->creator_start = h->creator_start;
    out->created_ns = h->created_ns;
    out->ready_ns = h->ready_ns;
    out->recoveries = h->recoveries;
    out->nextents = h->nextents;
    out->tag_len = h->tag_len > SHK_TAG_MAX ? SHK_TAG_MAX : h->tag_len;
    memcpy(out->tag, h->tag, out->tag_len);
}

void shk_zone_debug_half_done_locked(struct shk_zone *z, int mode)
{
    struct shk_zone_header *h = z->hdr;
    if (mode == 1) {
        /* mid-allocation: the free list lost its head, counters off */
        h->free_head = 0;
        h->free_pages = 1;
        memset(h->class_head, 0, sizeof h->class_head);
    } else if (mode == 2) {
        /* mid-create: an allocation recorded as pending, never published */
        uint64_t off;
        if (shk_zone_alloc_locked(z, 512, 0, &off) == 0)
            h->pending_off = off;
    }
}

int shk_zone_stats(struct shk_zone *z, struct shk_zone_stats *st)
{
    memset(st, 0, sizeof *st);
    int r = shk_zone_lock(z);
    if (r)
        return r;
    r = shk_slab_stats_locked(z, st);
    if (r == 0)
        st->nobjects = shk_dir_count_locked(z);
    shk_zone_unlock(z);
    return r;
}

int shk_zone_check(struct shk_zone *z, char *buf, size_t cap)
{
    struct shk_report rp;
    shk_report_init(&rp, buf, cap);
    int r = shk_zone_lock(z);
    if (r)
        return r;
    r = shk_slab_check_locked(z, &rp);
    if (r == 0)
        shk_dir_check_locked(z, &rp);
    shk_zone_unlock(z);
    return r ? r : rp.problems;
}
