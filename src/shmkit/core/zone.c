#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "zone.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <string.h>
#include <unistd.h>

#include "atomics.h"
#include "errors.h"
#include "futex.h"
#include "mutex.h"
#include "proc.h"


static uint64_t round_up(uint64_t n, uint64_t a)
{
    return (n + a - 1) / a * a;
}

/* Lay out one extent over [start, end) and put all its pages in one free run. */
int shk_zone_add_extent_locked(struct shk_zone *z, uint64_t start, uint64_t end)
{
    struct shk_zone_header *h = z->hdr;
    if (h->nextents >= SHK_MAX_EXTENTS)
        return shk_fail(SHK_ENOGROW, "zone already has %d extents, the most it can have",
                        SHK_MAX_EXTENTS);
    uint64_t len = end - start;
    uint64_t n = len / (SHK_PAGE + sizeof(struct shk_page));
    while (n > 0 && round_up(n * sizeof(struct shk_page), SHK_PAGE) + n * SHK_PAGE > len)
        n--;
    if (n == 0)
        return shk_fail(SHK_EFULL, "zone: %llu bytes are too few for a page and its descriptor",
                        (unsigned long long)len);
    if ((uint64_t)h->total_pages + n > UINT32_MAX - 1)
        return shk_fail(SHK_ENOGROW, "zone: too many pages");
    struct shk_extent e;
    e.start = start;
    e.desc_off = start;
    e.pages_off = start + round_up(n * sizeof(struct shk_page), SHK_PAGE);
    e.end = e.pages_off + n * SHK_PAGE;
    e.first_page = h->total_pages;
    e.npages = (uint32_t)n;
    if (e.end > z->mapped)
        return shk_fail(SHK_ECORRUPT, "zone: extent end %llu beyond mapping %zu",
                        (unsigned long long)e.end, z->mapped);
    struct shk_page *d = (struct shk_page *)(z->base + e.desc_off);
    memset(d, 0, n * sizeof *d);
    for (uint64_t i = 1; i < n; i++)
        d[i].type = SHK_PT_BODY;
    d[0].type = SHK_PT_FREE;
    d[0].slab = n;
    if (n >= 2) {
        d[n - 1].type = SHK_PT_FREE_TAIL;
        d[n - 1].head = e.first_page + 1;
    }
    /* publish: the extent is visible (and its pages free) once nextents counts it */
    h->ext[h->nextents] = e;
    shk_store_release(&h->nextents, h->nextents + 1);
    h->total_pages += (uint32_t)n;
    h->free_pages += (uint32_t)n;
    /* link the run at the front of the free list */
    uint32_t idx = e.first_page;
    d[0].next = h->free_head;
    d[0].prev = 0;
    if (h->free_head) {
        /* the old head is in an earlier extent; find its descriptor */
        for (uint32_t i = 0; i + 1 < h->nextents; i++) {
            struct shk_extent *x = &h->ext[i];
            uint32_t fh = h->free_head - 1;
            if (fh >= x->first_page && fh < x->first_page + x->npages) {
                struct shk_page *od = (struct shk_page *)(z->base + x->desc_off) + (fh - x->first_page);
                od->prev = idx + 1;
                break;
            }
        }
    }
    h->free_head = idx + 1;
    return 0;
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

int shk_zone_sync(struct shk_zone *z)
{
    struct shk_segment *s = z->seg;
    if (!s->base)
        return shk_fail(SHK_ECLOSED, "zone is closed");
    uint64_t want = shk_load_acquire(&z->hdr->size);
    if (want > z->mapped) {
        int r = shk_seg_refresh(s);
        if (r)
            return r;
        if (s->size < want)
            return shk_fail(SHK_ECORRUPT, "zone header says %llu bytes but the object has %zu",
                            (unsigned long long)want, s->size);
        z->mapped = want;
    }
    return 0;
}

void *shk_zone_ptr_slow(struct shk_zone *z, uint64_t off, uint64_t len)
{
    if (off < SHK_PAGE) {
        shk_fail(SHK_ECORRUPT, "offset %llu points into the zone header",
                 (unsigned long long)off);
        return NULL;
    }
    if (off + len < off) {
        shk_fail(SHK_ECORRUPT, "offset %llu + %llu overflows", (unsigned long long)off,
                 (unsigned long long)len);
        return NULL;
    }
    if (off + len > z->mapped && shk_load_acquire(&z->hdr->size) > z->mapped) {
        if (shk_zone_sync(z) != 0)
            return NULL;
    }
    if (off + len > z->mapped) {
        shk_fail(SHK_ECORRUPT, "offset %llu + %llu lies outside the zone (%zu bytes)",
                 (unsigned long long)off, (unsigned long long)len, z->mapped);
        return NULL;
    }
    return z->base + off;
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
        return shk_fail(SHK_ECORRUPT, "zone header says %llu bytes but the object has %zu",
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

int shk_zone_wait(struct shk_zone *z, const struct timespec *deadline)
{
    struct timespec slice;
    /* The initialiser's death does not change the state word, so sleep in short slices
     * and let the caller re-probe the init lock: a dead initialiser is noticed within
     * ~10 ms. */
    shk_deadline_slice(&slice, deadline, 10 * 1000 * 1000);
    struct shk_segment *s = z->seg;
    if (s->base && s->size >= SHK_PAGE) {
        struct shk_zone_header *h = (struct shk_zone_header *)s->base;
        uint32_t st = shk_load_acquire(&h->state);
        if (st == SHK_ZS_READY)
            return 0;
        shk_fetch_add_seq_cst(&h->state_waiters, 1);
        int r = 0;
        if (shk_load_acquire(&h->state) == st)
            r = shk_futex_wait(&h->state, st, &slice);
        shk_fetch_sub_seq_cst(&h->state_waiters, 1);
        if (r == EINTR)
            return EINTR;
    } else {
        struct timespec ms = {0, 1000 * 1000};
        if (nanosleep(&ms, NULL) != 0 && errno == EINTR)
            return EINTR;
    }
    if (deadline && shk_deadline_left_ns(deadline) == 0)
        return ETIMEDOUT;
    return 0;
}

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
