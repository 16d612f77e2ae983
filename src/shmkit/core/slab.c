/*
 * slab.c - the zone allocator, in the manner of nginx's ngx_slab.c, with offsets.
 *
 * Small requests (<= 2048 B) are served from slab pages of one size class; larger ones
 * get runs of whole pages, first fit, coalescing with free neighbours on free.
 *
 * Crash safety.  Every change is ordered so that the page descriptors alone always say
 * which memory is in use: a page is in use only if its descriptor says RUN (a run head,
 * with its length) or SLAB (with its bitmap); every other type means free.  alloc writes
 * RUN/SLAB *last*; free overwrites RUN/SLAB *first*.  The free list, the per-class lists
 * and the counters are derived data: after a process dies holding the zone mutex,
 * shk_zone_recover_locked() throws them away and rebuilds them by one walk over the
 * descriptors.  The worst a crash can do is leak the one allocation that was in flight
 * (allocated, but its owner never learnt the offset); allocations made on behalf of the
 * directory are tracked in header.pending_off and reclaimed too.
 *
 * Every index and offset read from the zone is range-checked; an inconsistency is
 * reported as SHK_ECORRUPT with the function and the broken invariant named.  Every such
 * comparison is written so that it cannot overflow: a length read from shared memory is
 * compared with the room that is left (`len > end - i`), never added to a position first
 * (`i + len > end` wraps around for a length near 2^64 and lets it through).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "atomics.h"
#include "errors.h"
#include "futex.h"
#include "report.h"
#include "segment.h"
#include "slab.h"

#define ZS(member) SHK_FIELD(struct shk_zone_stats, member, U64)
const struct shk_field shk_zone_stats_fields[] = {
    ZS(size), ZS(max_size), ZS(generation), ZS(total_pages), ZS(free_pages),
    ZS(largest_free_run), ZS(free_bytes), ZS(slab_free_bytes), ZS(page_reqs), ZS(page_fails),
    ZS(recoveries), ZS(grow_count), SHK_FIELD(struct shk_zone_stats, nextents, U32),
    SHK_FIELD(struct shk_zone_stats, nobjects, U32), {NULL, 0, 0},
};
#undef ZS

#define CORRUPT(...) shk_fail(SHK_ECORRUPT, __VA_ARGS__)

/* ---- geometry helpers ---------------------------------------------------------- */

static uint64_t round_up(uint64_t n, uint64_t a)
{
    return (n + a - 1) / a * a;
}


static struct shk_extent *extent_of_page(struct shk_zone *z, uint32_t idx)
{
    struct shk_zone_header *h = z->hdr;
    uint32_t n = h->nextents;
    if (n > SHK_MAX_EXTENTS)
        return NULL;
    for (uint32_t i = 0; i < n; i++) {
        struct shk_extent *e = &h->ext[i];
        if (idx >= e->first_page && idx - e->first_page < e->npages)
            return e;
    }
    return NULL;
}

static struct shk_page *desc(struct shk_zone *z, uint32_t idx)
{
    struct shk_extent *e = extent_of_page(z, idx);
    if (!e)
        return NULL;
    return (struct shk_page *)(z->base + e->desc_off) + (idx - e->first_page);
}

static uint64_t page_offset(struct shk_zone *z, uint32_t idx)
{
    struct shk_extent *e = extent_of_page(z, idx);
    return e->pages_off + (uint64_t)(idx - e->first_page) * SHK_PAGE;
}

/* Page index of the page holding `off`, or -1 if it lies in no extent's pages. */
static int64_t page_of_offset(struct shk_zone *z, uint64_t off)
{
    struct shk_zone_header *h = z->hdr;
    for (uint32_t i = 0; i < h->nextents && i < SHK_MAX_EXTENTS; i++) {
        struct shk_extent *e = &h->ext[i];
        if (off >= e->pages_off && off < e->pages_off + (uint64_t)e->npages * SHK_PAGE)
            return (int64_t)e->first_page + (int64_t)((off - e->pages_off) >> SHK_PAGE_SHIFT);
    }
    return -1;
}

/* Validate the extent table against the mapping. Called with the lock held. */
static int check_extents(struct shk_zone *z)
{
    struct shk_zone_header *h = z->hdr;
    uint32_t n = h->nextents;
    if (n == 0 || n > SHK_MAX_EXTENTS)
        return CORRUPT("zone: extent count %u out of range", n);
    uint64_t prev_end = SHK_PAGE, pages = 0;
    for (uint32_t i = 0; i < n; i++) {
        struct shk_extent *e = &h->ext[i];
        uint64_t desc_bytes = (uint64_t)e->npages * sizeof(struct shk_page);
        /* end is bounded by the mapping first; then start <= pages_off <= end keeps every
         * difference below meaningful (no sum of two shared values can wrap around) */
        if (e->end > z->mapped || e->end > h->size || e->start < prev_end ||
            e->start % SHK_PAGE || e->desc_off != e->start || e->pages_off % SHK_PAGE ||
            e->pages_off < e->start || e->pages_off > e->end ||
            desc_bytes > e->pages_off - e->desc_off || e->npages == 0 ||
            e->first_page != pages ||
            e->end - e->pages_off != (uint64_t)e->npages * SHK_PAGE)
            return CORRUPT("zone: extent %u [%llu, %llu) with %u pages is inconsistent", i,
                           (unsigned long long)e->start, (unsigned long long)e->end, e->npages);
        prev_end = e->end;
        pages += e->npages;
    }
    if (pages != h->total_pages)
        return CORRUPT("zone: extents hold %llu pages, header says %u",
                       (unsigned long long)pages, h->total_pages);
    return 0;
}

static int class_of(uint64_t n)
{
    int shift = SHK_SLAB_MIN_SHIFT;
    while (((uint64_t)1 << shift) < n)
        shift++;
    return shift - SHK_SLAB_MIN_SHIFT;
}

static uint32_t chunks_per_page(int shift)
{
    return SHK_PAGE >> shift;
}

/* Chunks at the start of an in-page-bitmap slab page that hold the bitmap itself. */
static uint32_t reserved_chunks(int shift)
{
    if (shift > SHK_SLAB_INPAGE_MAX_SHIFT)
        return 0;
    uint32_t map_bytes = chunks_per_page(shift) / 8;
    return (map_bytes + (1u << shift) - 1) >> shift;
}

/* ---- doubly linked lists of pages (free runs; slab pages per class) --------------- */

static int list_unlink(struct shk_zone *z, uint32_t *head, uint32_t idx)
{
    struct shk_page *d = desc(z, idx);
    if (!d)
        return CORRUPT("list_unlink(): page %u outside the zone", idx);
    if (d->prev) {
        struct shk_page *p = desc(z, d->prev - 1);
        if (!p)
            return CORRUPT("list_unlink(): page %u has prev link %u outside the zone", idx, d->prev - 1);
        p->next = d->next;
    } else {
        if (*head != idx + 1)
            return CORRUPT("list_unlink(): page %u has no prev but is not the list head", idx);
        *head = d->next;
    }
    if (d->next) {
        struct shk_page *n = desc(z, d->next - 1);
        if (!n)
            return CORRUPT("list_unlink(): page %u has next link %u outside the zone", idx, d->next - 1);
        n->prev = d->prev;
    }
    d->next = d->prev = 0;
    return 0;
}

static int list_push(struct shk_zone *z, uint32_t *head, uint32_t idx)
{
    struct shk_page *d = desc(z, idx);
    if (!d)
        return CORRUPT("list_push(): page %u outside the zone", idx);
    d->prev = 0;
    d->next = *head;
    if (*head) {
        struct shk_page *n = desc(z, *head - 1);
        if (!n)
            return CORRUPT("list_push(): list head %u outside the zone", *head - 1);
        n->prev = idx + 1;
    }
    *head = idx + 1;
    return 0;
}

/* ---- page runs ---------------------------------------------------------------- */

/* Describe [idx, idx + len) as one free run (not linked). */
static void mark_free_run(struct shk_zone *z, uint32_t idx, uint32_t len)
{
    struct shk_page *d = desc(z, idx);
    d->type = SHK_PT_FREE;
    d->shift = 0;
    d->slab = len;
    d->head = 0;
    if (len >= 2) {
        struct shk_page *t = desc(z, idx + len - 1);
        t->type = SHK_PT_FREE_TAIL;
        t->slab = 0;
        t->head = idx + 1;
        t->next = t->prev = 0;
    }
}

static int alloc_pages(struct shk_zone *z, uint32_t n, uint32_t *out)
{
    struct shk_zone_header *h = z->hdr;
    uint32_t guard = h->total_pages + 1;
    for (uint32_t p = h->free_head; p; guard--) {
        if (!guard)
            return CORRUPT("shk_zone_alloc(): free list has a cycle");
        uint32_t idx = p - 1;
        struct shk_page *d = desc(z, idx);
        if (!d)
            return CORRUPT("shk_zone_alloc(): free list points at page %u outside the zone", idx);
        if (d->type != SHK_PT_FREE)
            return CORRUPT("shk_zone_alloc(): free list holds page %u of type %u", idx, d->type);
        struct shk_extent *e = extent_of_page(z, idx);
        uint64_t len = d->slab;
        if (len == 0 || len > e->npages - (idx - e->first_page))
            return CORRUPT("shk_zone_alloc(): free run at page %u has length %llu beyond its extent",
                           idx, (unsigned long long)len);
        if (len >= n) {
            int r;
            if ((r = list_unlink(z, &h->free_head, idx)) != 0)
                return r;
            if (len > n) {
                uint32_t rest = idx + n;
                mark_free_run(z, rest, (uint32_t)(len - n));
                if ((r = list_push(z, &h->free_head, rest)) != 0)
                    return r;
            }
            for (uint32_t i = 1; i < n; i++) {
                struct shk_page *b = desc(z, idx + i);
                memset(b, 0, sizeof *b);
                b->type = SHK_PT_BODY;
            }
            d->slab = n;
            d->shift = 0;
            d->head = 0;
            shk_store_release(&d->type, SHK_PT_RUN); /* publish: in use */
            h->free_pages -= n;
            *out = idx;
            return 0;
        }
        p = d->next;
    }
    return SHK_EFULL;
}

static int free_pages(struct shk_zone *z, uint32_t idx, uint32_t n)
{
    struct shk_zone_header *h = z->hdr;
    struct shk_extent *e = extent_of_page(z, idx);
    struct shk_page *d = desc(z, idx);
    int r;
    /* logically free first: from here on a crash loses nothing */
    d->slab = n;
    d->next = d->prev = 0;
    shk_store_release(&d->type, SHK_PT_FREE);
    for (uint32_t i = 1; i < n; i++) {
        struct shk_page *b = desc(z, idx + i);
        memset(b, 0, sizeof *b);
        b->type = SHK_PT_BODY;
    }
    h->free_pages += n;
    uint32_t start = idx, len = n;
    uint32_t ext_end = e->first_page + e->npages;
    /* coalesce with the run after */
    if (start + len < ext_end) {
        uint32_t q = start + len;
        struct shk_page *qd = desc(z, q);
        if (qd->type == SHK_PT_FREE) {
            if (qd->slab == 0 || qd->slab > ext_end - q)
                return CORRUPT("shk_zone_free(): free run at page %u has bad length", q);
            if ((r = list_unlink(z, &h->free_head, q)) != 0)
                return r;
            len += (uint32_t)qd->slab;
            memset(qd, 0, sizeof *qd);
            qd->type = SHK_PT_BODY;
        }
    }
    /* coalesce with the run before */
    if (start > e->first_page) {
        struct shk_page *pd = desc(z, start - 1);
        uint32_t h_idx = UINT32_MAX;
        if (pd->type == SHK_PT_FREE_TAIL && pd->head)
            h_idx = pd->head - 1;
        else if (pd->type == SHK_PT_FREE && pd->slab == 1)
            h_idx = start - 1;
        if (h_idx != UINT32_MAX) {
            struct shk_page *hd = desc(z, h_idx);
            if (!hd || h_idx < e->first_page || h_idx >= start || hd->type != SHK_PT_FREE ||
                hd->slab != start - h_idx)
                return CORRUPT("shk_zone_free(): page %u claims to end a free run that does "
                               "not reach it", start - 1);
            if ((r = list_unlink(z, &h->free_head, h_idx)) != 0)
                return r;
            len += (uint32_t)hd->slab;
            /* our head becomes a body page of the merged run */
            d->type = SHK_PT_BODY;
            d->slab = 0;
            start = h_idx;
        }
    }
    /* the tail of a run merged from before is now a body page */
    if (start < idx) {
        struct shk_page *t = desc(z, idx - 1);
        if (t->type == SHK_PT_FREE_TAIL) {
            t->type = SHK_PT_BODY;
            t->head = 0;
        }
    }
    mark_free_run(z, start, len);
    return list_push(z, &h->free_head, start);
}

/* ---- slab pages ------------------------------------------------------------------ */

static uint64_t *inpage_bitmap(struct shk_zone *z, uint32_t idx)
{
    return (uint64_t *)(z->base + page_offset(z, idx));
}

/* Take one chunk from slab page idx of `shift`; returns chunk number or -1 when full. */
static int64_t slab_take(struct shk_zone *z, uint32_t idx, struct shk_page *d, int shift)
{
    uint32_t nch = chunks_per_page(shift);
    if (shift > SHK_SLAB_INPAGE_MAX_SHIFT) {
        uint64_t full = nch == 64 ? ~0ull : ((1ull << nch) - 1);
        uint64_t freebits = ~d->slab & full;
        if (!freebits)
            return -1;
        int bit = __builtin_ctzll(freebits);
        d->slab |= 1ull << bit;
        return bit;
    }
    uint64_t *map = inpage_bitmap(z, idx);
    for (uint32_t w = 0; w < nch / 64; w++) {
        if (map[w] != ~0ull) {
            int bit = __builtin_ctzll(~map[w]);
            map[w] |= 1ull << bit;
            return (int64_t)w * 64 + bit;
        }
    }
    return -1;
}

/* Number of used chunks (excluding the bitmap's own) and whether any is free. */
static uint32_t slab_used(struct shk_zone *z, uint32_t idx, struct shk_page *d, int shift)
{
    uint32_t nch = chunks_per_page(shift);
    if (shift > SHK_SLAB_INPAGE_MAX_SHIFT) {
        uint64_t full = nch == 64 ? ~0ull : ((1ull << nch) - 1);
        return (uint32_t)__builtin_popcountll(d->slab & full);
    }
    uint64_t *map = inpage_bitmap(z, idx);
    uint32_t used = 0;
    for (uint32_t w = 0; w < nch / 64; w++)
        used += (uint32_t)__builtin_popcountll(map[w]);
    return used - reserved_chunks(shift);
}

static uint32_t slab_capacity(int shift)
{
    return chunks_per_page(shift) - reserved_chunks(shift);
}

static int alloc_slab_chunk(struct shk_zone *z, int cls, uint64_t *off)
{
    struct shk_zone_header *h = z->hdr;
    int shift = cls + SHK_SLAB_MIN_SHIFT;
    struct shk_slab_stat *st = &h->stats[cls];
    int r;
    if (h->class_head[cls]) {
        uint32_t idx = h->class_head[cls] - 1;
        struct shk_page *d = desc(z, idx);
        if (!d || d->type != SHK_PT_SLAB || d->shift != shift)
            return CORRUPT("shk_zone_alloc(): class %d list holds page %u that is not a slab "
                           "page of that class", 1 << shift, idx);
        int64_t c = slab_take(z, idx, d, shift);
        if (c < 0)
            return CORRUPT("shk_zone_alloc(): full page %u is on the list of class %d", idx,
                           1 << shift);
        st->used++;
        if (slab_used(z, idx, d, shift) == slab_capacity(shift) &&
            (r = list_unlink(z, &h->class_head[cls], idx)) != 0)
            return r;
        *off = page_offset(z, idx) + ((uint64_t)c << shift);
        return 0;
    }
    uint32_t idx;
    if ((r = alloc_pages(z, 1, &idx)) != 0)
        return r;
    struct shk_page *d = desc(z, idx);
    /* alloc_pages published a RUN; turn it into a slab page (still "in use" throughout;
     * a crash before the SLAB store leaves a RUN of length 0, which recovery frees) */
    d->slab = 0;
    d->shift = (uint16_t)shift;
    if (shift <= SHK_SLAB_INPAGE_MAX_SHIFT) {
        uint64_t *map = inpage_bitmap(z, idx);
        uint32_t words = chunks_per_page(shift) / 64;
        memset(map, 0, words * 8);
        for (uint32_t i = 0; i < reserved_chunks(shift); i++)
            map[i / 64] |= 1ull << (i % 64);
    }
    shk_store_release(&d->type, SHK_PT_SLAB);
    int64_t c = slab_take(z, idx, d, shift);
    st->total += slab_capacity(shift);
    st->used++;
    if ((r = list_push(z, &h->class_head[cls], idx)) != 0)
        return r;
    *off = page_offset(z, idx) + ((uint64_t)c << shift);
    return 0;
}

/* ---- public allocator ------------------------------------------------------------ */

static int full_error(struct shk_zone *z, uint64_t n)
{
    struct shk_zone_header *h = z->hdr;
    if (n > SHK_SLAB_MAX)
        return shk_fail(SHK_EFULL, "zone is full: asked for %llu bytes (%llu pages); %u of %u "
                        "pages are free but no run of %llu free pages exists (zone size %llu, "
                        "max_size %llu)", (unsigned long long)n,
                        (unsigned long long)((n + SHK_PAGE - 1) / SHK_PAGE), h->free_pages,
                        h->total_pages, (unsigned long long)((n + SHK_PAGE - 1) / SHK_PAGE),
                        (unsigned long long)h->size, (unsigned long long)h->max_size);
    return shk_fail(SHK_EFULL, "zone is full: asked for %llu bytes (class %u); no free chunk "
                    "of that class and no free page (zone size %llu, max_size %llu)",
                    (unsigned long long)n, 1u << (class_of(n) + SHK_SLAB_MIN_SHIFT),
                    (unsigned long long)h->size, (unsigned long long)h->max_size);
}

int shk_zone_alloc_locked(struct shk_zone *z, uint64_t n, int flags, uint64_t *off)
{
    struct shk_zone_header *h = z->hdr;
    int r;
    if (n == 0)
        return shk_fail(EINVAL, "shk_zone_alloc(): size must be > 0");
    if (n > h->max_size || n > UINT64_MAX - SHK_PAGE) { /* n + SHK_PAGE - 1 must not wrap */
        if (n > SHK_SLAB_MAX)
            h->page_fails++;
        return shk_fail(SHK_EFULL, "zone is full: asked for %llu bytes, more than its "
                        "max_size of %llu", (unsigned long long)n,
                        (unsigned long long)h->max_size);
    }
    if ((r = check_extents(z)) != 0)
        return r;
    for (int attempt = 0;; attempt++) {
        if (n > SHK_SLAB_MAX) {
            uint64_t pages = (n + SHK_PAGE - 1) / SHK_PAGE;
            if (attempt == 0)
                h->page_reqs++;
            if (pages > h->total_pages + (uint64_t)(h->max_size / SHK_PAGE)) {
                h->page_fails++;
                return full_error(z, n);
            }
            uint32_t idx;
            r = alloc_pages(z, (uint32_t)pages, &idx);
            if (r == 0) {
                *off = page_offset(z, idx);
                if (flags & SHK_ALLOC_ZERO)
                    memset(z->base + *off, 0, n);
                return 0;
            }
        } else {
            int cls = class_of(n);
            if (attempt == 0)
                h->stats[cls].reqs++;
            r = alloc_slab_chunk(z, cls, off);
            if (r == 0) {
                if (flags & SHK_ALLOC_ZERO)
                    memset(z->base + *off, 0, n);
                return 0;
            }
        }
        if (r != SHK_EFULL)
            return r;
        if (attempt == 0 && !(flags & SHK_ALLOC_NOGROW) && h->size < h->max_size) {
            int g = shk_zone_grow_locked(z, n);
            if (g == 0)
                continue;
            if (g != SHK_EFULL && g != SHK_ENOGROW && g != ENOSPC)
                return g;
            if (g == ENOSPC)
                return g; /* the detail names the file system's free space */
        }
        if (n > SHK_SLAB_MAX)
            h->page_fails++;
        else
            h->stats[class_of(n)].fails++;
        return full_error(z, n);
    }
}

int shk_zone_free_locked(struct shk_zone *z, uint64_t off)
{
    struct shk_zone_header *h = z->hdr;
    int r;
    if ((r = check_extents(z)) != 0)
        return r;
    int64_t pi = page_of_offset(z, off);
    if (pi < 0)
        return shk_fail(SHK_EBADFREE, "shk_zone_free(): offset %llu is outside of the zone's "
                        "pages", (unsigned long long)off);
    uint32_t idx = (uint32_t)pi;
    struct shk_page *d = desc(z, idx);
    uint64_t poff = page_offset(z, idx);
    switch (d->type) {
    case SHK_PT_RUN: {
        if (off != poff)
            return shk_fail(SHK_EBADFREE, "shk_zone_free(): wrong chunk: offset %llu points "
                            "inside an allocated run", (unsigned long long)off);
        struct shk_extent *e = extent_of_page(z, idx);
        if (d->slab == 0 || d->slab > e->npages - (idx - e->first_page))
            return CORRUPT("shk_zone_free(): run at page %u has bad length %llu", idx,
                           (unsigned long long)d->slab);
        return free_pages(z, idx, (uint32_t)d->slab);
    }
    case SHK_PT_SLAB: {
        int shift = d->shift;
        if (shift < SHK_SLAB_MIN_SHIFT || shift > SHK_SLAB_MAX_SHIFT)
            return CORRUPT("shk_zone_free(): slab page %u has bad class shift %d", idx, shift);
        int cls = shift - SHK_SLAB_MIN_SHIFT;
        uint64_t rel = off - poff;
        if (rel & ((1ull << shift) - 1))
            return shk_fail(SHK_EBADFREE, "shk_zone_free(): wrong chunk: offset %llu is not at "
                            "the start of a %d-byte chunk", (unsigned long long)off, 1 << shift);
        uint32_t c = (uint32_t)(rel >> shift);
        if (c < reserved_chunks(shift))
            return shk_fail(SHK_EBADFREE, "shk_zone_free(): wrong chunk: offset %llu is the "
                            "page's own bitmap", (unsigned long long)off);
        int was_full = slab_used(z, idx, d, shift) == slab_capacity(shift);
        if (shift > SHK_SLAB_INPAGE_MAX_SHIFT) {
            if (!(d->slab & (1ull << c)))
                return shk_fail(SHK_EBADFREE, "shk_zone_free(): chunk is already free "
                                "(offset %llu)", (unsigned long long)off);
            d->slab &= ~(1ull << c);
        } else {
            uint64_t *map = inpage_bitmap(z, idx);
            if (!(map[c / 64] & (1ull << (c % 64))))
                return shk_fail(SHK_EBADFREE, "shk_zone_free(): chunk is already free "
                                "(offset %llu)", (unsigned long long)off);
            map[c / 64] &= ~(1ull << (c % 64));
        }
        struct shk_slab_stat *st = &h->stats[cls];
        if (st->used)
            st->used--;
        if (slab_used(z, idx, d, shift) == 0) {
            /* empty: give the page back (unlink unless it was full, i.e. not listed) */
            if (!was_full && (r = list_unlink(z, &h->class_head[cls], idx)) != 0)
                return r;
            st->total -= st->total >= slab_capacity(shift) ? slab_capacity(shift) : st->total;
            return free_pages(z, idx, 1);
        }
        if (was_full)
            return list_push(z, &h->class_head[cls], idx);
        return 0;
    }
    case SHK_PT_FREE:
    case SHK_PT_FREE_TAIL:
        return shk_fail(SHK_EBADFREE, "shk_zone_free(): page is already free (offset %llu)",
                        (unsigned long long)off);
    case SHK_PT_BODY:
        return shk_fail(SHK_EBADFREE, "shk_zone_free(): wrong chunk: offset %llu is inside a "
                        "run, not at its start", (unsigned long long)off);
    default:
        return CORRUPT("shk_zone_free(): page %u has unknown type %u", idx, d->type);
    }
}

uint64_t shk_zone_usable_size_locked(struct shk_zone *z, uint64_t off)
{
    uint64_t n = 0;
    int64_t pi = check_extents(z) == 0 ? page_of_offset(z, off) : -1;
    if (pi >= 0) {
        struct shk_page *d = desc(z, (uint32_t)pi);
        uint64_t poff = page_offset(z, (uint32_t)pi);
        if (d->type == SHK_PT_RUN && off == poff) {
            n = d->slab * SHK_PAGE;
        } else if (d->type == SHK_PT_SLAB && d->shift >= SHK_SLAB_MIN_SHIFT &&
                   d->shift <= SHK_SLAB_MAX_SHIFT && !((off - poff) & ((1ull << d->shift) - 1))) {
            uint32_t c = (uint32_t)((off - poff) >> d->shift);
            int used;
            if (d->shift > SHK_SLAB_INPAGE_MAX_SHIFT)
                used = (d->slab >> c) & 1;
            else
                used = c >= reserved_chunks(d->shift) &&
                       ((inpage_bitmap(z, (uint32_t)pi)[c / 64] >> (c % 64)) & 1);
            n = used ? 1ull << d->shift : 0;
        }
    }
    return n;
}

int shk_zone_grow_locked(struct shk_zone *z, uint64_t need)
{
    struct shk_zone_header *h = z->hdr;
    struct shk_segment *s = z->seg;
    int r;
    if (s->kind == SHK_SEG_SYSV || s->kind == SHK_SEG_ANON || s->fd < 0)
        return shk_fail(SHK_ENOGROW, "zone: %s zones cannot grow",
                        s->kind == SHK_SEG_SYSV ? "SysV" : "anonymous");
    uint64_t old = h->size;
    /* room for the request as one run in the new extent, plus that extent's page
     * descriptors and a page of slack; at least double the zone */
    uint64_t pages = (need + SHK_PAGE - 1) / SHK_PAGE + 1;
    uint64_t desc_bytes = (pages * sizeof(struct shk_page) + SHK_PAGE - 1) / SHK_PAGE * SHK_PAGE;
    uint64_t want = old + pages * SHK_PAGE + desc_bytes + SHK_PAGE;
    if (want < old * 2)
        want = old * 2;
    if (want > h->max_size)
        want = h->max_size;
    want = want / SHK_PAGE * SHK_PAGE;
    if (want <= old + 2 * SHK_PAGE)
        return shk_fail(SHK_ENOGROW, "zone has reached its max_size of %llu bytes",
                        (unsigned long long)h->max_size);
    if ((r = shk_seg_resize(s, want, 0)) != 0)
        return r;
    z->mapped = s->size;
    uint64_t start = old;
    if (h->nextents && h->ext[h->nextents - 1].end > start)
        start = h->ext[h->nextents - 1].end;
    /* the header's size must cover the new extent before add_extent checks it */
    uint64_t keep_size = h->size;
    h->size = want;
    r = shk_zone_add_extent_locked(z, start, want);
    if (r) {
        h->size = keep_size;
        return r;
    }
    h->generation++;
    h->grow_count++;
    return 0;
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

/* ---- recovery ----------------------------------------------------------------------- */

int shk_slab_recover_locked(struct shk_zone *z)
{
    struct shk_zone_header *h = z->hdr;
    int r;
    /* a growth interrupted after the extent was published may not have set the size */
    if (h->nextents >= 1 && h->nextents <= SHK_MAX_EXTENTS) {
        uint64_t last_end = h->ext[h->nextents - 1].end;
        if (last_end > h->size && last_end <= z->seg->size) {
            h->size = z->seg->size;
            z->mapped = z->seg->size;
        }
        uint64_t pages = 0;
        for (uint32_t i = 0; i < h->nextents; i++)
            pages += h->ext[i].npages;
        h->total_pages = (uint32_t)pages;
    }
    if ((r = check_extents(z)) != 0)
        return r;
    h->free_head = 0;
    memset(h->class_head, 0, sizeof h->class_head);
    h->free_pages = 0;
    for (int c = 0; c < SHK_NCLASSES; c++)
        h->stats[c].total = h->stats[c].used = 0;

    for (uint32_t ei = 0; ei < h->nextents; ei++) {
        struct shk_extent *e = &h->ext[ei];
        uint32_t end = e->first_page + e->npages;
        uint32_t i = e->first_page;
        while (i < end) {
            struct shk_page *d = desc(z, i);
            if (d->type == SHK_PT_RUN && d->slab >= 1 && d->slab <= end - i) {
                uint32_t n = (uint32_t)d->slab;
                d->next = d->prev = 0;
                for (uint32_t k = 1; k < n; k++) {
                    struct shk_page *b = desc(z, i + k);
                    memset(b, 0, sizeof *b);
                    b->type = SHK_PT_BODY;
                }
                i += n;
                continue;
            }
            if (d->type == SHK_PT_SLAB && d->shift >= SHK_SLAB_MIN_SHIFT &&
                d->shift <= SHK_SLAB_MAX_SHIFT) {
                int shift = d->shift, cls = shift - SHK_SLAB_MIN_SHIFT;
                if (shift <= SHK_SLAB_INPAGE_MAX_SHIFT) { /* the bitmap's own chunks */
                    uint64_t *map = inpage_bitmap(z, i);
                    for (uint32_t k = 0; k < reserved_chunks(shift); k++)
                        map[k / 64] |= 1ull << (k % 64);
                } else {
                    uint32_t nch = chunks_per_page(shift);
                    if (nch < 64)
                        d->slab &= (1ull << nch) - 1;
                }
                uint32_t used = slab_used(z, i, d, shift);
                d->next = d->prev = 0;
                if (used > 0) {
                    h->stats[cls].total += slab_capacity(shift);
                    h->stats[cls].used += used;
                    if (used < slab_capacity(shift))
                        list_push(z, &h->class_head[cls], i);
                    i++;
                    continue;
                }
                /* an empty slab page is a free page */
            }
            /* a free stretch: up to the next page that is in use */
            uint32_t j = i + 1;
            while (j < end) {
                struct shk_page *x = desc(z, j);
                if ((x->type == SHK_PT_RUN && x->slab >= 1 && x->slab <= end - j) ||
                    (x->type == SHK_PT_SLAB && x->shift >= SHK_SLAB_MIN_SHIFT &&
                     x->shift <= SHK_SLAB_MAX_SHIFT))
                    break;
                j++;
            }
            for (uint32_t k = i; k < j; k++) {
                struct shk_page *b = desc(z, k);
                memset(b, 0, sizeof *b);
                b->type = SHK_PT_BODY;
            }
            mark_free_run(z, i, j - i);
            list_push(z, &h->free_head, i);
            h->free_pages += j - i;
            i = j;
        }
    }
    return 0;
}

/* ---- statistics ------------------------------------------------------------------- */

int shk_slab_stats_locked(struct shk_zone *z, struct shk_zone_stats *st)
{
    struct shk_zone_header *h = z->hdr;
    int r;
    if ((r = shk_zone_check_size(z)) != 0 || (r = check_extents(z)) != 0)
        return r;
    st->size = h->size;
    st->max_size = h->max_size;
    st->generation = h->generation;
    st->total_pages = h->total_pages;
    st->free_pages = h->free_pages;
    st->page_reqs = h->page_reqs;
    st->page_fails = h->page_fails;
    st->recoveries = h->recoveries;
    st->grow_count = h->grow_count;
    st->nextents = h->nextents;
    memcpy(st->cls, h->stats, sizeof st->cls);
    uint32_t guard = h->total_pages + 1;
    for (uint32_t p = h->free_head; p; guard--) {
        struct shk_page *d = desc(z, p - 1);
        if (!guard || !d)
            return CORRUPT("shk_zone_stats(): free list is broken");
        if (d->slab > st->largest_free_run)
            st->largest_free_run = d->slab;
        p = d->next;
    }
    for (int c = 0; c < SHK_NCLASSES; c++) {
        uint64_t freec = h->stats[c].total - h->stats[c].used;
        if (h->stats[c].used <= h->stats[c].total)
            st->slab_free_bytes += freec << (c + SHK_SLAB_MIN_SHIFT);
    }
    st->free_bytes = (uint64_t)h->free_pages * SHK_PAGE + st->slab_free_bytes;
    return 0;
}

/* ---- consistency check -------------------------------------------------------------- */

int shk_slab_check_locked(struct shk_zone *z, struct shk_report *rp)
{
    struct shk_zone_header *h = z->hdr;
    int r;
    if ((r = shk_zone_check_size(z)) != 0 || (r = check_extents(z)) != 0) {
        shk_report_problem(rp, "%s", shk_error_detail());
        return r;
    }
    uint32_t total = h->total_pages;
    /* 1. walk the pages: runs, slab pages, free runs */
    uint8_t *in_free = calloc(total ? total : 1, 1);
    uint8_t *in_class = calloc(total ? total : 1, 1);
    if (!in_free || !in_class) {
        free(in_free);
        free(in_class);
        return ENOMEM;
    }
    uint64_t free_pages = 0, cls_total[SHK_NCLASSES] = {0}, cls_used[SHK_NCLASSES] = {0};
    for (uint32_t ei = 0; ei < h->nextents; ei++) {
        struct shk_extent *e = &h->ext[ei];
        uint32_t end = e->first_page + e->npages;
        uint32_t i = e->first_page;
        int prev_free = 0;
        while (i < end) {
            struct shk_page *d = desc(z, i);
            switch (d->type) {
            case SHK_PT_RUN:
                if (d->slab < 1 || d->slab > end - i) {
                    shk_report_problem(rp, "page %u: run of %llu pages does not fit its extent", i,
                            (unsigned long long)d->slab);
                    i++;
                    break;
                }
                for (uint32_t k = 1; k < d->slab; k++)
                    if (desc(z, i + k)->type != SHK_PT_BODY)
                        shk_report_problem(rp, "page %u: inside the run at %u but of type %u", i + k, i,
                                desc(z, i + k)->type);
                i += (uint32_t)d->slab;
                prev_free = 0;
                break;
            case SHK_PT_SLAB: {
                int shift = d->shift;
                if (shift < SHK_SLAB_MIN_SHIFT || shift > SHK_SLAB_MAX_SHIFT) {
                    shk_report_problem(rp, "page %u: slab page with class shift %d", i, shift);
                    i++;
                    break;
                }
                int c = shift - SHK_SLAB_MIN_SHIFT;
                uint32_t used = slab_used(z, i, d, shift);
                if (shift <= SHK_SLAB_INPAGE_MAX_SHIFT) {
                    uint64_t *map = inpage_bitmap(z, i);
                    for (uint32_t k = 0; k < reserved_chunks(shift); k++)
                        if (!(map[k / 64] & (1ull << (k % 64))))
                            shk_report_problem(rp, "page %u: bitmap chunk %u is not marked used", i, k);
                } else if (chunks_per_page(shift) < 64 &&
                           (d->slab >> chunks_per_page(shift)) != 0) {
                    shk_report_problem(rp, "page %u: bitmap has bits beyond its %u chunks", i,
                            chunks_per_page(shift));
                }
                if (used == 0)
                    shk_report_problem(rp, "page %u: empty slab page was not returned", i);
                cls_total[c] += slab_capacity(shift);
                cls_used[c] += used;
                i++;
                prev_free = 0;
                break;
            }
            case SHK_PT_FREE: {
                if (prev_free)
                    shk_report_problem(rp, "page %u: free run follows another free run (not coalesced)", i);
                if (d->slab < 1 || d->slab > end - i) {
                    shk_report_problem(rp, "page %u: free run of %llu pages does not fit its extent", i,
                            (unsigned long long)d->slab);
                    i++;
                    break;
                }
                uint32_t n = (uint32_t)d->slab;
                for (uint32_t k = 1; k + 1 < n; k++)
                    if (desc(z, i + k)->type != SHK_PT_BODY)
                        shk_report_problem(rp, "page %u: inside the free run at %u but of type %u", i + k,
                                i, desc(z, i + k)->type);
                if (n >= 2) {
                    struct shk_page *t = desc(z, i + n - 1);
                    if (t->type != SHK_PT_FREE_TAIL || t->head != i + 1)
                        shk_report_problem(rp, "page %u: last page of the free run at %u is not its tail",
                                i + n - 1, i);
                }
                in_free[i] = 1;
                free_pages += n;
                i += n;
                prev_free = 1;
                break;
            }
            default:
                shk_report_problem(rp, "page %u: type %u where a run, slab page or free run must start",
                        i, d->type);
                i++;
                break;
            }
        }
    }
    /* 2. the free list holds exactly the free runs */
    uint32_t guard = total + 1, listed = 0;
    for (uint32_t p = h->free_head, prev = 0; p; guard--) {
        struct shk_page *d = desc(z, p - 1);
        if (!guard || !d) {
            shk_report_problem(rp, "free list: %s", guard ? "link outside the zone" : "cycle");
            break;
        }
        if (d->prev != prev)
            shk_report_problem(rp, "free list: page %u has prev %u, expected %u", p - 1, d->prev, prev);
        if (!in_free[p - 1])
            shk_report_problem(rp, "free list: page %u is not the head of a free run", p - 1);
        else if (in_free[p - 1] == 2)
            shk_report_problem(rp, "free list: page %u is listed twice", p - 1);
        in_free[p - 1] = 2;
        listed++;
        prev = p;
        p = d->next;
    }
    for (uint32_t i = 0; i < total; i++)
        if (in_free[i] == 1)
            shk_report_problem(rp, "free run at page %u is missing from the free list", i);
    if (free_pages != h->free_pages)
        shk_report_problem(rp, "header counts %u free pages; the walk found %llu", h->free_pages,
                (unsigned long long)free_pages);
    /* 3. class lists hold exactly the partly used slab pages of their class */
    for (int c = 0; c < SHK_NCLASSES; c++) {
        int shift = c + SHK_SLAB_MIN_SHIFT;
        guard = total + 1;
        for (uint32_t p = h->class_head[c], prev = 0; p; guard--) {
            struct shk_page *d = desc(z, p - 1);
            if (!guard || !d) {
                shk_report_problem(rp, "class %d list: %s", 1 << shift, guard ? "link outside the zone" : "cycle");
                break;
            }
            if (d->type != SHK_PT_SLAB || d->shift != shift)
                shk_report_problem(rp, "class %d list: page %u is not a slab page of that class", 1 << shift, p - 1);
            else if (slab_used(z, p - 1, d, shift) >= slab_capacity(shift))
                shk_report_problem(rp, "class %d list: page %u is full", 1 << shift, p - 1);
            if (d->prev != prev)
                shk_report_problem(rp, "class %d list: page %u has prev %u, expected %u", 1 << shift, p - 1,
                        d->prev, prev);
            if (in_class[p - 1])
                shk_report_problem(rp, "class %d list: page %u is listed twice", 1 << shift, p - 1);
            in_class[p - 1] = 1;
            prev = p;
            p = d->next;
        }
        if (cls_total[c] != h->stats[c].total || cls_used[c] != h->stats[c].used)
            shk_report_problem(rp, "class %d statistics say %llu/%llu used; the pages hold %llu/%llu",
                    1 << shift, (unsigned long long)h->stats[c].used,
                    (unsigned long long)h->stats[c].total, (unsigned long long)cls_used[c],
                    (unsigned long long)cls_total[c]);
    }
    for (uint32_t ei = 0; ei < h->nextents; ei++) {
        struct shk_extent *e = &h->ext[ei];
        for (uint32_t i = e->first_page; i < e->first_page + e->npages; i++) {
            struct shk_page *d = desc(z, i);
            if (d->type == SHK_PT_SLAB && d->shift >= SHK_SLAB_MIN_SHIFT &&
                d->shift <= SHK_SLAB_MAX_SHIFT) {
                uint32_t used = slab_used(z, i, d, d->shift);
                if (used < slab_capacity(d->shift) && used > 0 && !in_class[i])
                    shk_report_problem(rp, "page %u: partly used slab page missing from its class list", i);
            }
        }
    }
    free(in_free);
    free(in_class);
    return 0;
}
