/*
 * zone.c (C API) - declaring zones (name, size, tag), as Python's shmkit.Zone does, and
 * the reference count that keeps a zone mapped while object handles use it.
 */
#include "capi.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "atomics.h"
#include "errors.h"

#define DEFAULT_INIT_TIMEOUT 30.0 /* seconds: Python's Zone(timeout=30.0) */

void shk_capi_zone_ref(shmkit_zone *z)
{
    shk_fetch_add_seq_cst(&z->refs, 1);
}

void shk_capi_zone_unref(shmkit_zone *z)
{
    if (shk_sub_fetch_seq_cst(&z->refs, 1) != 0)
        return;
    if (z->zone.holds_init) /* dropped while initialising: not ready */
        shk_zone_init_done(&z->zone, 0);
    shk_capi_segment_close(&z->s);
    pthread_mutex_destroy(&z->s.seg.remap_lock);
    pthread_mutex_destroy(&z->lock);
    free(z);
}

/* Opening failed: if this handle created an object that never became a zone (still
 * empty), remove it so nothing is left behind (Python: Zone._discard_failed_creation). */
static void discard(shmkit_zone *z)
{
    size_t size = 1;
    if (z->s.seg.created && shk_seg_object_size(&z->s.seg, &size) == 0 && size == 0) {
        char keep[512];
        snprintf(keep, sizeof keep, "%s", shk_error_detail()); /* the real failure */
        shk_capi_segment_remove(&z->s);
        shk_fail(0, "%s", keep);
    }
    shk_capi_segment_close(&z->s);
    pthread_mutex_destroy(&z->s.seg.remap_lock);
    pthread_mutex_destroy(&z->lock);
    free(z);
}

SHMKIT_API int shmkit_zone_open(const char *name, size_t size, const void *tag, size_t tag_len,
                                const struct shmkit_zone_options *opts, shmkit_zone **out)
{
    static const struct shmkit_zone_options defaults;
    int r;
    shk_clear_detail();
    if (!out)
        return shk_capi_null("shmkit_zone_open", "out");
    *out = NULL;
    shk_capi_init();
    if (!opts)
        opts = &defaults;
    if ((r = shk_capi_check_flags("shmkit_zone_open", opts->flags, SHMKIT_EXCL | SHMKIT_ANYOWNER)))
        return r;
    if (size && size < SHK_ZONE_MIN_SIZE)
        return shk_fail(EINVAL, "zone size %zu is below the minimum of %u bytes", size,
                        SHK_ZONE_MIN_SIZE);
    if (opts->max_size && opts->max_size < size)
        return shk_fail(EINVAL, "max_size %zu is below the zone size %zu", opts->max_size, size);
    if (tag_len > SHK_TAG_MAX)
        return shk_fail(EINVAL, "zone tag is %zu bytes; at most %d are allowed", tag_len,
                        SHK_TAG_MAX);
    if (!tag && tag_len)
        return shk_fail(EINVAL, "zone tag is NULL but tag_len is %zu", tag_len);
    if ((opts->flags & SHMKIT_EXCL) && !size)
        return shk_fail(EINVAL, "shmkit_zone_open(): SHMKIT_EXCL needs a size to create the zone");
    struct shk_wait w;
    double timeout = opts->timeout == 0 ? DEFAULT_INIT_TIMEOUT : opts->timeout;
    if ((r = shk_capi_wait_init(&w, timeout)) != 0)
        return r;
    w.flags &= ~SHK_WAIT_TRY; /* a zone being initialised is always waited for */

    shmkit_zone *z = calloc(1, sizeof *z);
    if (!z)
        return shk_fail(ENOMEM, "shmkit_zone_open(): out of memory");
    pthread_mutex_init(&z->lock, NULL);
    z->refs = 1;
    /* without a size there is nothing to create: open only, leave no empty file */
    int flags = SHK_O_ALLOWEMPTY | (opts->flags & (SHK_O_EXCL | SHK_O_ANYOWNER)) |
                (size ? SHK_O_CREATE : 0);
    size_t reserve = opts->max_size > size ? opts->max_size : size;
    if ((r = shk_capi_segment_open(&z->s, name, flags, 0, opts->mode, reserve)) != 0) {
        pthread_mutex_destroy(&z->lock);
        free(z);
        return r;
    }
    struct shk_zone_params p = {size, opts->max_size, tag, tag_len};
    struct shk_zone_opening o = {&z->zone, &z->s.seg, &p, 0};
    r = shk_capi_wait_run(&shk_zone_open_op, &o, &w);
    if (r == ETIMEDOUT)
        r = shk_fail(ETIMEDOUT, "zone '%s' is still being initialised by another process; "
                     "gave up waiting for it to become ready", z->s.name);
    if (r) {
        discard(z);
        return r;
    }
    if (o.status == SHK_ZONE_MUST_INIT) {
        z->created = 1;
        int ir = opts->init ? opts->init(z, opts->init_arg) : 0;
        shk_zone_init_done(&z->zone, ir == 0);
        if (ir) {
            if (!*shk_error_detail())
                shk_fail(ir, "zone '%s': its init function returned %d (%s)", z->s.name, ir,
                         shk_strerror(ir));
            shk_capi_zone_unref(z);
            return ir;
        }
    }
    *out = z;
    return 0;
}

SHMKIT_API int shmkit_zone_created(const shmkit_zone *zone)
{
    return zone ? zone->created : 0;
}

SHMKIT_API size_t shmkit_zone_size(const shmkit_zone *zone)
{
    return zone ? (size_t)shk_load_acquire(&zone->zone.hdr->size) : 0;
}

SHMKIT_API int shmkit_zone_destroy_object(shmkit_zone *zone, const char *name)
{
    shk_clear_detail();
    if (!zone)
        return shk_capi_null("shmkit_zone_destroy_object", "zone");
    int r = shk_capi_check_object_name(name);
    if (r)
        return r;
    pthread_mutex_lock(&zone->lock);
    r = shk_zone_obj_destroy(&zone->zone, name, 0);
    pthread_mutex_unlock(&zone->lock);
    return r;
}

SHMKIT_API int shmkit_zone_close(shmkit_zone *zone)
{
    if (zone && !shk_exchange_seq_cst(&zone->closed, 1))
        shk_capi_zone_unref(zone);
    return 0;
}

SHMKIT_API int shmkit_zone_unlink(const char *name)
{
    return shmkit_segment_unlink(name);
}
