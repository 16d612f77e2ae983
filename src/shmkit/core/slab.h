/*
 * slab.h - the zone allocator (slab.c): nginx's ngx_slab with offsets.  Every function
 * here assumes the caller holds the zone mutex (zone.h has the plain twins that take it).
 * It calls only zonemap.h and segment.h: see zonemap.h for the layers.
 */
#ifndef SHK_SLAB_H
#define SHK_SLAB_H

#include <stddef.h>
#include <stdint.h>

#include "fields.h"
#include "layout.h"
#include "zonemap.h"

#ifdef __cplusplus
extern "C" {
#endif

struct shk_report;

#define SHK_ALLOC_ZERO 0x1          /* zero the memory (calloc) */
#define SHK_ALLOC_NOGROW 0x2        /* fail instead of growing the zone */

/* Allocate n bytes; *off gets its offset. SHK_EFULL when no room (detail says which
 * limit). Chunks are aligned to their size class (8..2048), runs to the page. */
int shk_zone_alloc_locked(struct shk_zone *z, uint64_t n, int flags, uint64_t *off);
/* Free an allocation: SHK_EBADFREE ("outside of zone", "wrong chunk", "already free"). */
int shk_zone_free_locked(struct shk_zone *z, uint64_t off);
/* Bytes really usable at off (the size class or the run), or 0 if not an allocation. */
uint64_t shk_zone_usable_size_locked(struct shk_zone *z, uint64_t off);

/* Grow the backing object so that at least `need` more bytes can be allocated. */
int shk_zone_grow_locked(struct shk_zone *z, uint64_t need);

/* Lay out a new extent over [start, end) with all its pages free (or initialising). */
int shk_zone_add_extent_locked(struct shk_zone *z, uint64_t start, uint64_t end);

/* Rebuild the allocator's derived state (lists, counters) from the page descriptors. */
int shk_slab_recover_locked(struct shk_zone *z);

struct shk_zone_stats {
    uint64_t size, max_size, generation;
    uint64_t total_pages, free_pages, largest_free_run;     /* pages */
    uint64_t free_bytes;            /* free pages + free chunks inside slab pages */
    uint64_t slab_free_bytes;       /* free chunks inside partly used slab pages */
    uint64_t page_reqs, page_fails, recoveries, grow_count;
    uint32_t nextents, nobjects;
    struct shk_slab_stat cls[SHK_NCLASSES];
};
/* The fields of shk_zone_stats by name (core/fields.h), but cls. */
extern const struct shk_field shk_zone_stats_fields[];
/* Fill every field but nobjects (the directory's). */
int shk_slab_stats_locked(struct shk_zone *z, struct shk_zone_stats *st);

/* Verify every allocator invariant, appending problems to rp.  0, or an error when the
 * extents themselves cannot be trusted (reported too) or memory ran out. */
int shk_slab_check_locked(struct shk_zone *z, struct shk_report *rp);

#ifdef __cplusplus
}
#endif
#endif
