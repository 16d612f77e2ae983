/*
 * zonemap.c - a zone as mapped in this process: bounds-checked pointers into it, and
 * following the growth other processes make.  The bottom of the zone layers (see
 * zonemap.h): slab.c, directory.c and zone.c use it; it uses only the segment.
 */
#include "zonemap.h"

#include "atomics.h"
#include "errors.h"

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

/* The shrink itself is followed by shk_seg_refresh (zeros are mapped over the pages cut
 * off, so nothing here dies of SIGBUS); this reports it.  Not on alloc/free: an fstat
 * costs more than they do. */
int shk_zone_check_size(struct shk_zone *z)
{
    struct shk_segment *s = z->seg;
    if (s->kind == SHK_SEG_SYSV || s->kind == SHK_SEG_ANON)
        return 0;
    int r = shk_seg_refresh(s);
    if (r && r != SHK_ENOGROW)
        return r;
    if (s->size < z->mapped)
        return shk_fail(SHK_ECORRUPT, "zone: its backing object was shrunk to %zu bytes by "
                        "another process; the zone has %zu bytes (its pages past the new end "
                        "read zeros here: the zone cannot be used)", s->size, z->mapped);
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
