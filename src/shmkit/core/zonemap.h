/*
 * zonemap.h - a zone as this process maps it: the handle every layer of the zone shares,
 * and bounds-checked access to its bytes.
 *
 * The zone's layers call only downwards:
 *
 *     zone.c       open/initialise, the zone mutex and its recovery, and the plain
 *                  (locking) twins of everything below: lock, call _locked, unlock
 *       directory.c   named objects (_locked functions only)
 *         slab.c        the allocator (_locked functions only)
 *           zonemap.c     this file: pointers into the mapping, following growth
 *             segment.c     the mapping itself
 *
 * A _locked function never takes the zone mutex; its caller holds it.
 */
#ifndef SHK_ZONEMAP_H
#define SHK_ZONEMAP_H

#include <stddef.h>
#include <stdint.h>

#include "layout.h"
#include "segment.h"

#ifdef __cplusplus
extern "C" {
#endif

struct shk_zone {
    struct shk_segment *seg;        /* mapping; owned by the caller */
    struct shk_zone_header *hdr;    /* == seg->base */
    uint8_t *base;                  /* == seg->base; never moves while the zone is open */
    size_t mapped;                  /* bytes of the zone usable in this process */
    int holds_init;                 /* 1 while this handle is initialising the zone */
};

/* Bounds-checked access: pointer to [off, off + len) or NULL (detail set) if it does not
 * lie inside the zone.  Follows growth made by other processes. */
void *shk_zone_ptr_slow(struct shk_zone *z, uint64_t off, uint64_t len);
static inline void *shk_zone_ptr(struct shk_zone *z, uint64_t off, uint64_t len)
{
    if (off >= SHK_PAGE && len <= z->mapped && off <= z->mapped - len)
        return z->base + off;
    return shk_zone_ptr_slow(z, off, len);
}

/* Follow growth made by another process (maps up to header.size). */
int shk_zone_sync(struct shk_zone *z);

/* A zone never shrinks: SHK_ECORRUPT if another process cut its backing object below
 * the zone's size (one fstat; called by the slow paths: lookups, stats, check). */
int shk_zone_check_size(struct shk_zone *z);

#ifdef __cplusplus
}
#endif
#endif
