/*
 * dict.c (C API) - handles on the core's dict (core/dict.h) with bytes keys and values.
 *
 * Each call is one core call: first without SHK_DWAIT (it never sleeps: EBUSY when its
 * shard's lock stays held after a short spin), then, on EBUSY, again with SHK_DWAIT,
 * which sleeps for the lock - the Python binding's order, minus the GIL.  Keys are
 * SHK_DK_BYTES (Python's bytes keys); values SHK_DV_BYTES, or SHK_DV_INT for the int
 * calls.
 */
#include "capi.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "dict.h"
#include "errors.h"

struct shmkit_dict {
    shmkit_zone *zone;
    struct shk_dict d;
};

/* r = CALL, where CALL uses `wait` as its flags: without waiting, then waiting. */
#define DICT_CALL(r, call)                                                                 \
    do {                                                                                   \
        int wait = 0;                                                                      \
        r = (call);                                                                        \
        if (r == EBUSY) {                                                                  \
            wait = SHK_DWAIT;                                                              \
            r = (call);                                                                    \
        }                                                                                  \
    } while (0)

SHMKIT_API int shmkit_dict_open(shmkit_zone *zone, const char *name, size_t capacity,
                                int flags, shmkit_dict **out)
{
    int r;
    shk_clear_detail();
    if (!out)
        return shk_capi_null("shmkit_dict_open", "out");
    *out = NULL;
    if (!zone)
        return shk_capi_null("shmkit_dict_open", "zone");
    if ((r = shk_capi_check_flags("shmkit_dict_open", flags, SHMKIT_CREATE | SHMKIT_EXCL)) ||
        (r = shk_capi_check_object_name(name)))
        return r;
    shmkit_dict *d = calloc(1, sizeof *d);
    if (!d)
        return shk_fail(ENOMEM, "shmkit_dict_open(): out of memory");
    /* as Python's Dict: the default capacity when creating; a capacity given must match */
    int oflags = ((flags & SHMKIT_CREATE) ? SHK_DOPEN_CREATE : 0) |
                 (capacity ? SHK_DOPEN_STRICT : 0);
    int created = 0;
    pthread_mutex_lock(&zone->lock);
    r = shk_dict_open(&d->d, &zone->zone, name,
                      capacity ? capacity : SHMKIT_DICT_DEFAULT_CAPACITY, 0, oflags, &created);
    pthread_mutex_unlock(&zone->lock);
    if (r == 0 && (flags & SHMKIT_EXCL) && !created)
        r = shk_fail(SHK_EEXISTS, "dict '%s' already exists", name);
    if (r) {
        free(d);
        return shk_capi_object_mismatch(r);
    }
    shk_capi_zone_ref(zone);
    d->zone = zone;
    *out = d;
    return 0;
}

static int key_of(const char *fn, shmkit_dict *d, const void *key, size_t klen,
                  struct shk_dkey *k)
{
    if (!d)
        return shk_capi_null(fn, "d");
    if (!key)
        return shk_capi_null(fn, "key");
    shk_clear_detail();
    return shk_dict_key(k, SHK_DK_BYTES, key, klen);
}

/* A lookup into (buf, cap): the inline fast path, then the full one. */
static int lookup(shmkit_dict *d, const struct shk_dkey *k, void *buf, size_t cap,
                  struct shk_dict_found *f)
{
    int r = SHK_DICT_SLOW;
    if (cap <= UINT32_MAX)
        r = shk_dict_get_fast(&d->d, k, buf, (uint32_t)cap, f);
    if (r == SHK_DICT_SLOW)
        DICT_CALL(r, shk_dict_get(&d->d, k, wait, buf, cap, f));
    return r;
}

SHMKIT_API int shmkit_dict_get(shmkit_dict *d, const void *key, size_t klen, void *buf,
                               size_t cap, size_t *len)
{
    struct shk_dkey k;
    struct shk_dict_found f;
    int r = key_of("shmkit_dict_get", d, key, klen, &k);
    if (r)
        return r;
    if (!len || (!buf && cap))
        return shk_capi_null("shmkit_dict_get", len ? "buf" : "len");
    memset(&f, 0, sizeof f);
    r = lookup(d, &k, buf, cap, &f);
    if (r != 0 && r != ENOBUFS)
        return r;
    if (f.vtype != SHK_DV_BYTES && f.vtype != SHK_DV_STR)
        return shk_fail(SHK_ETYPE, "shmkit_dict_get(): the value is of type %u (not bytes or "
                        "str%s)", f.vtype, f.vtype == SHK_DV_INT ? "; shmkit_dict_get_int "
                        "reads ints" : "");
    *len = (size_t)f.len;
    if (r == ENOBUFS)
        return shk_fail(ENOBUFS, "shmkit_dict_get(): the value has %llu bytes, the buffer %zu",
                        (unsigned long long)f.len, cap);
    return 0;
}

SHMKIT_API int shmkit_dict_get_int(shmkit_dict *d, const void *key, size_t klen, int64_t *value)
{
    struct shk_dkey k;
    struct shk_dict_found f;
    int r = key_of("shmkit_dict_get_int", d, key, klen, &k);
    if (r)
        return r;
    if (!value)
        return shk_capi_null("shmkit_dict_get_int", "value");
    uint64_t buf[8];
    memset(&f, 0, sizeof f);
    r = lookup(d, &k, buf, sizeof buf, &f);
    if (r != 0 && r != ENOBUFS)
        return r;
    if (f.vtype == SHK_DV_BIGINT)
        return shk_fail(ERANGE, "shmkit_dict_get_int(): the int does not fit in 64 bits");
    if (f.vtype != SHK_DV_INT || r != 0 || f.len != 8)
        return shk_fail(SHK_ETYPE, "shmkit_dict_get_int(): the value is of type %u, not an "
                        "int", f.vtype);
    memcpy(value, buf, 8);
    return 0;
}

static int store(const char *fn, shmkit_dict *d, const void *key, size_t klen, uint8_t vtype,
                 const void *value, size_t vlen, double ttl, int flags)
{
    struct shk_dkey k;
    uint64_t ttl_ms;
    int r = key_of(fn, d, key, klen, &k);
    if (r)
        return r;
    if (!value && vlen)
        return shk_capi_null(fn, "value");
    if ((r = shk_capi_check_flags(fn, flags, SHMKIT_DICT_ADD | SHMKIT_DICT_REPLACE |
                                                 SHMKIT_DICT_SAFE)))
        return r;
    if ((flags & SHMKIT_DICT_ADD) && (flags & SHMKIT_DICT_REPLACE))
        return shk_fail(EINVAL, "%s(): SHMKIT_DICT_ADD and SHMKIT_DICT_REPLACE together", fn);
    if ((r = shk_capi_ttl_ms(fn, ttl, &ttl_ms)))
        return r;
    int mode = (flags & SHMKIT_DICT_ADD) ? SHK_DADD : (flags & SHMKIT_DICT_REPLACE) ? SHK_DREPLACE
                                                                                  : SHK_DSET;
    if (flags & SHMKIT_DICT_SAFE)
        mode |= SHK_DSAFE;
    uint32_t evicted = 0;
    DICT_CALL(r, shk_dict_store(&d->d, &k, vtype, value ? value : "", vlen, 0, ttl_ms,
                                mode | wait, 0, &evicted));
    return r;
}

SHMKIT_API int shmkit_dict_set(shmkit_dict *d, const void *key, size_t klen, const void *value,
                               size_t vlen, double ttl, int flags)
{
    return store("shmkit_dict_set", d, key, klen, SHK_DV_BYTES, value, vlen, ttl, flags);
}

SHMKIT_API int shmkit_dict_set_int(shmkit_dict *d, const void *key, size_t klen, int64_t value,
                                   double ttl, int flags)
{
    return store("shmkit_dict_set_int", d, key, klen, SHK_DV_INT, &value, 8, ttl, flags);
}

SHMKIT_API int shmkit_dict_delete(shmkit_dict *d, const void *key, size_t klen)
{
    struct shk_dkey k;
    int r = key_of("shmkit_dict_delete", d, key, klen, &k);
    if (r)
        return r;
    DICT_CALL(r, shk_dict_delete(&d->d, &k, wait));
    return r;
}

SHMKIT_API int shmkit_dict_incr(shmkit_dict *d, const void *key, size_t klen, int64_t step,
                                const int64_t *init, double init_ttl, int64_t *result)
{
    struct shk_dkey k;
    uint64_t ttl_ms;
    int r = key_of("shmkit_dict_incr", d, key, klen, &k);
    if (r)
        return r;
    if ((r = shk_capi_ttl_ms("shmkit_dict_incr", init_ttl, &ttl_ms)))
        return r;
    struct shk_dval sv = {SHK_DV_INT, &step, 8};
    struct shk_dval iv = {SHK_DV_INT, init, 8};
    struct shk_dict_found f;
    uint64_t small[2], *buf = small;
    uint64_t cap = sizeof small;
    for (int round = 0; round < 8; round++) {
        memset(&f, 0, sizeof f);
        DICT_CALL(r, shk_dict_incr(&d->d, &k, &sv, init ? &iv : NULL, ttl_ms, wait, buf, cap, &f));
        if (r != ENOBUFS)
            break;
        /* the sum is a big int (a value Python stored): room for it, and again */
        if (buf != small)
            free(buf);
        cap = (f.len + 7) & ~(uint64_t)7;
        if (!(buf = malloc(cap)))
            return shk_fail(ENOMEM, "shmkit_dict_incr(): out of memory");
    }
    if (r == 0 && f.vtype == SHK_DV_INT && f.len == 8) {
        if (result)
            memcpy(result, buf, 8);
    } else if (r == 0 && f.vtype == SHK_DV_BIGINT) {
        r = shk_fail(ERANGE, "shmkit_dict_incr(): the sum does not fit in 64 bits; it was "
                     "stored exactly (Python reads the big int)");
    } else if (r == 0) {
        r = shk_fail(SHK_ETYPE, "shmkit_dict_incr(): the value was a float; the sum was stored "
                     "as a float (Python's incr); use ints from C");
    }
    if (buf != small)
        free(buf);
    return r;
}

SHMKIT_API int shmkit_dict_ttl(shmkit_dict *d, const void *key, size_t klen, double *ttl)
{
    struct shk_dkey k;
    int64_t ms = 0;
    int r = key_of("shmkit_dict_ttl", d, key, klen, &k);
    if (r)
        return r;
    if (!ttl)
        return shk_capi_null("shmkit_dict_ttl", "ttl");
    DICT_CALL(r, shk_dict_ttl(&d->d, &k, wait, &ms));
    if (r == 0)
        *ttl = ms < 0 ? -1.0 : (double)ms / 1000.0;
    return r;
}

SHMKIT_API int shmkit_dict_close(shmkit_dict *d)
{
    if (d) {
        shk_dict_publish_counts(&d->d); /* this handle's hits and misses, into the totals */
        shk_capi_zone_unref(d->zone);
        free(d);
    }
    return 0;
}
