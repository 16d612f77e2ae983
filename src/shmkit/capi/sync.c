/*
 * sync.c (C API) - locks and counters: handles on the core's sync objects (core/sync.h),
 * created with the parameters Python's shmkit.Lock and shmkit.Counter use.
 */
#include "capi.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "atomics.h"
#include "errors.h"
#include "sync.h"

struct shmkit_lock {
    shmkit_zone *zone;          /* a reference: the mapping stays while the handle lives */
    struct shk_lock_sh *sh;
    uint64_t next_live;         /* throttles the liveness checks of shmkit_lock_try (as
                                   the binding does per handle): a loop of tries reads
                                   /proc once per liveness interval, not at every call */
};

struct shmkit_counter {
    shmkit_zone *zone;
    struct shk_counter_sh *sh;
};

/* Find or create the sync object NAME of p->type and return a pointer to it. */
static int open_sync(const char *fn, shmkit_zone *zone, const char *name, int flags,
                     const struct shk_sync_params *p, void **sh)
{
    int r;
    if (!zone)
        return shk_capi_null(fn, "zone");
    if ((r = shk_capi_check_flags(fn, flags, SHMKIT_CREATE | SHMKIT_EXCL)) != 0)
        return r;
    if ((r = shk_capi_check_object_name(name)) != 0)
        return r;
    uint64_t off = 0;
    int created = 0, err = 0;
    pthread_mutex_lock(&zone->lock);
    r = shk_sync_open(&zone->zone, name, p, flags & (SHK_O_CREATE | SHK_O_EXCL), &off, &created);
    if (r == 0 && !(*sh = shk_sync_ptr(&zone->zone, off, p->type, &err)))
        r = err ? err : SHK_ECORRUPT;
    pthread_mutex_unlock(&zone->lock);
    return shk_capi_object_mismatch(r);
}

/* ---- locks ------------------------------------------------------------------------------------ */

SHMKIT_API int shmkit_lock_open(shmkit_zone *zone, const char *name, int flags, shmkit_lock **out)
{
    shk_clear_detail();
    if (!out)
        return shk_capi_null("shmkit_lock_open", "out");
    *out = NULL;
    struct shk_sync_params p;
    memset(&p, 0, sizeof p);
    p.type = SHK_OBJ_LOCK;
    void *sh = NULL;
    int r = open_sync("shmkit_lock_open", zone, name, flags, &p, &sh);
    if (r)
        return r;
    shmkit_lock *l = calloc(1, sizeof *l);
    if (!l)
        return shk_fail(ENOMEM, "shmkit_lock_open(): out of memory");
    shk_capi_zone_ref(zone);
    l->zone = zone;
    l->sh = sh;
    *out = l;
    return 0;
}

SHMKIT_API int shmkit_lock_acquire(shmkit_lock *lock, double timeout)
{
    if (!lock)
        return shk_capi_null("shmkit_lock_acquire", "lock");
    if (shk_lock_try_fast(lock->sh, 0) == 0) /* the uncontended case: one CAS */
        return 0;
    shk_clear_detail();
    struct shk_wait w;
    int r = shk_capi_wait_init(&w, timeout);
    if (r)
        return r;
    if (w.flags & SHK_WAIT_TRY) {
        w.next_live = lock->next_live;
        w.live_step = shk_wait_cfg.liveness_ns;
    }
    r = shk_capi_wait_run(&shk_lock_op, lock->sh, &w);
    if (w.flags & SHK_WAIT_TRY)
        lock->next_live = w.next_live;
    return r;
}

SHMKIT_API int shmkit_lock_try(shmkit_lock *lock)
{
    return shmkit_lock_acquire(lock, 0);
}

SHMKIT_API int shmkit_lock_release(shmkit_lock *lock)
{
    if (!lock)
        return shk_capi_null("shmkit_lock_release", "lock");
    if (shk_lock_release_fast(lock->sh) == 0) /* held here, nobody asleep */
        return 0;
    shk_clear_detail();
    return shk_lock_release(lock->sh, 0);
}

SHMKIT_API int shmkit_lock_close(shmkit_lock *lock)
{
    if (lock) {
        shk_capi_zone_unref(lock->zone);
        free(lock);
    }
    return 0;
}

/* ---- counters --------------------------------------------------------------------------------- */

SHMKIT_API int shmkit_counter_open(shmkit_zone *zone, const char *name, int64_t initial,
                                   int flags, shmkit_counter **out)
{
    shk_clear_detail();
    if (!out)
        return shk_capi_null("shmkit_counter_open", "out");
    *out = NULL;
    struct shk_sync_params p;
    memset(&p, 0, sizeof p);
    p.type = SHK_OBJ_COUNTER;
    p.a = (uint64_t)initial;
    void *sh = NULL;
    int r = open_sync("shmkit_counter_open", zone, name, flags, &p, &sh);
    if (r)
        return r;
    shmkit_counter *c = calloc(1, sizeof *c);
    if (!c)
        return shk_fail(ENOMEM, "shmkit_counter_open(): out of memory");
    shk_capi_zone_ref(zone);
    c->zone = zone;
    c->sh = sh;
    *out = c;
    return 0;
}

SHMKIT_API int64_t shmkit_counter_add(shmkit_counter *c, int64_t n)
{
    return shk_counter_add(c->sh, n);
}

SHMKIT_API int64_t shmkit_counter_load(shmkit_counter *c)
{
    return shk_counter_get(c->sh);
}

SHMKIT_API void shmkit_counter_store(shmkit_counter *c, int64_t value)
{
    shk_counter_set(c->sh, value);
}

SHMKIT_API int shmkit_counter_cas(shmkit_counter *c, int64_t *expected, int64_t desired)
{
    /* on failure the CAS itself copies the value it found into *expected */
    return shk_cas_seq_cst(&c->sh->value, expected, desired);
}

SHMKIT_API int shmkit_counter_close(shmkit_counter *c)
{
    if (c) {
        shk_capi_zone_unref(c->zone);
        free(c);
    }
    return 0;
}
