/*
 * directory.c - named objects inside a zone.
 *
 * An open-addressing hash table (struct shk_dir_table, layout.h) maps names to
 * (type, offset, size).  All of it is protected by the zone mutex.
 *
 * Crash safety: an entry is written in full and published by storing state = LIVE last;
 * the memory of an object being created is recorded in header.pending_off until its entry
 * is live, and a table being rebuilt larger in header.dir_pending until it is published
 * (one store to dir_off).  Recovery frees whichever of those did not get published and
 * recounts the table.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "atomics.h"
#include "directory.h"
#include "errors.h"
#include "futex.h"
#include "proc.h"
#include "report.h"
#include "slab.h"

static uint32_t fnv1a(const char *s)
{
    uint32_t h = 2166136261u;
    while (*s) {
        h ^= (uint8_t)*s++;
        h *= 16777619u;
    }
    return h ? h : 1;
}

/* The name users know an object type by (zone.objects() shows the same), for messages. */
static const char *type_name(uint32_t type, char *buf, size_t cap)
{
    static const char *const names[] = {
        [SHK_OBJ_RAW] = "raw", [SHK_OBJ_LOCK] = "lock", [SHK_OBJ_RLOCK] = "rlock",
        [SHK_OBJ_RWLOCK] = "rwlock", [SHK_OBJ_SEMAPHORE] = "semaphore",
        [SHK_OBJ_EVENT] = "event", [SHK_OBJ_CONDITION] = "condition",
        [SHK_OBJ_BARRIER] = "barrier", [SHK_OBJ_VALUE] = "value", [SHK_OBJ_ARRAY] = "array",
        [SHK_OBJ_COUNTER] = "counter", [SHK_OBJ_QUEUE] = "queue", [SHK_OBJ_DICT] = "dict",
        [SHK_OBJ_NDARRAY] = "ndarray", [SHK_OBJ_BOARD] = "board", [SHK_OBJ_CONFIG] = "config",
    };
    if (type < sizeof names / sizeof names[0] && names[type])
        return names[type];
    snprintf(buf, cap, type >= SHK_OBJ_USER ? "user type %u" : "unknown type %u", type);
    return buf;
}

static const char *article(const char *noun)
{
    return strchr("aeio", noun[0]) || !strncmp(noun, "un", 2) ? "an" : "a"; /* "a user type" */
}

int shk_obj_check_name(const char *name)
{
    size_t n = name ? strlen(name) : 0;
    if (n == 0)
        return shk_fail(SHK_ENAME, "object name is empty");
    if (n > SHK_OBJ_NAME_MAX)
        return shk_fail(SHK_ENAME, "object name is %zu bytes long; at most %d are allowed", n,
                        SHK_OBJ_NAME_MAX);
    return 0;
}

/* The table, validated; NULL with *err set if it is broken, NULL with *err = 0 if none. */
static struct shk_dir_table *table(struct shk_zone *z, uint64_t off, int *err)
{
    *err = 0;
    if (!off)
        return NULL;
    if (off % 8) { /* allocator memory is 8-aligned; the table is read as aligned words */
        *err = shk_fail(SHK_ECORRUPT, "zone directory offset %llu is misaligned",
                        (unsigned long long)off);
        return NULL;
    }
    struct shk_dir_table *t = shk_zone_ptr(z, off, sizeof *t);
    if (!t) {
        *err = SHK_ECORRUPT;
        return NULL;
    }
    uint32_t cap = t->cap;
    if (t->magic != SHK_DIR_MAGIC || cap < SHK_DIR_MIN_CAP || (cap & (cap - 1)) ||
        !shk_zone_ptr(z, off, sizeof *t + (uint64_t)cap * sizeof(struct shk_dirent))) {
        *err = shk_fail(SHK_ECORRUPT, "zone directory at offset %llu is corrupted",
                        (unsigned long long)off);
        return NULL;
    }
    return t;
}

/* Slot of `name`, or -1. */
static int64_t lookup(struct shk_dir_table *t, const char *name, uint32_t hash)
{
    uint32_t mask = t->cap - 1;
    for (uint32_t i = 0, s = hash & mask; i < t->cap; i++, s = (s + 1) & mask) {
        struct shk_dirent *e = &t->slot[s];
        uint32_t st = shk_load_acquire(&e->state);
        if (st == SHK_DE_EMPTY)
            return -1;
        if (st == SHK_DE_LIVE && e->hash == hash &&
            strncmp(e->name, name, SHK_OBJ_NAME_MAX + 1) == 0)
            return s;
    }
    return -1;
}

static struct shk_dirent *insert_slot(struct shk_dir_table *t, uint32_t hash)
{
    uint32_t mask = t->cap - 1;
    for (uint32_t i = 0, s = hash & mask; i < t->cap; i++, s = (s + 1) & mask) {
        uint32_t st = t->slot[s].state;
        if (st == SHK_DE_EMPTY || st == SHK_DE_TOMB)
            return &t->slot[s];
    }
    return NULL;
}

/* Make room for one more entry: a new table when the load (live + tombstones) is high. */
static int ensure_room(struct shk_zone *z)
{
    struct shk_zone_header *h = z->hdr;
    int err;
    struct shk_dir_table *old = table(z, h->dir_off, &err);
    if (err)
        return err;
    uint64_t cap = SHK_DIR_MIN_CAP;
    if (old) {
        /* counts read from shared memory: widened before any arithmetic, and the doubling
         * is bounded (a corrupted count would otherwise double a 32-bit cap until it
         * wrapped to 0 and loop forever) */
        uint64_t live = old->live, tombs = old->tombs;
        if ((live + tombs + 1) * 10 <= (uint64_t)old->cap * 7)
            return 0;
        cap = old->cap;
        while ((live + 1) * 10 > cap * 5) {
            cap *= 2;
            if (cap > ((uint64_t)1 << 31) || cap * sizeof(struct shk_dirent) > z->hdr->max_size)
                return shk_fail(SHK_ECORRUPT, "zone directory counts %llu live entries; no "
                                "table that large fits in the zone", (unsigned long long)live);
        }
    }
    uint64_t bytes = sizeof(struct shk_dir_table) + (uint64_t)cap * sizeof(struct shk_dirent);
    uint64_t off;
    int r = shk_zone_alloc_locked(z, bytes, SHK_ALLOC_ZERO, &off);
    if (r)
        return r;
    h->dir_pending = off;
    struct shk_dir_table *t = shk_zone_ptr(z, off, bytes);
    t->magic = SHK_DIR_MAGIC;
    t->cap = (uint32_t)cap;
    if (old) {
        for (uint32_t i = 0; i < old->cap; i++) {
            struct shk_dirent *e = &old->slot[i];
            if (e->state != SHK_DE_LIVE)
                continue;
            struct shk_dirent *d = insert_slot(t, e->hash);
            if (!d) { /* more live entries than its count said: leave the old table */
                h->dir_pending = 0;
                shk_zone_free_locked(z, off);
                return shk_fail(SHK_ECORRUPT, "zone directory holds more live entries than "
                                "it counts (%u)", old->live);
            }
            *d = *e;
            t->live++;
        }
    }
    uint64_t old_off = h->dir_off;
    shk_store_release(&h->dir_off, off); /* publish */
    h->dir_pending = 0;
    if (old_off)
        shk_zone_free_locked(z, old_off);
    return 0;
}

int shk_dir_get_locked(struct shk_zone *z, const char *name, uint32_t type, uint64_t size,
                       uint64_t aux, int flags, shk_obj_init_fn init, void *arg,
                       struct shk_dirent *out, int *created)
{
    int r, err;
    *created = 0;
    if ((r = shk_obj_check_name(name)) != 0)
        return r;
    uint32_t hash = fnv1a(name);
    struct shk_zone_header *h = z->hdr;
    if ((r = shk_zone_check_size(z)) != 0)
        goto out;
    struct shk_dir_table *t = table(z, h->dir_off, &err);
    if (err) {
        r = err;
        goto out;
    }
    int64_t s = t ? lookup(t, name, hash) : -1;
    if (s >= 0) {
        struct shk_dirent *e = &t->slot[s];
        if (flags & SHK_O_EXCL) {
            r = shk_fail(SHK_EEXISTS, "an object named '%s' already exists in the zone", name);
            goto out;
        }
        if (type && e->type != type) {
            char a[32], b[32];
            const char *have = type_name(e->type, a, sizeof a), *want = type_name(type, b, sizeof b);
            r = shk_fail(SHK_ETYPE, "'%s' exists in the zone as %s %s, not %s %s", name,
                         article(have), have, article(want), want);
            goto out;
        }
        if (!shk_zone_ptr(z, e->offset, e->size)) {
            r = shk_fail(SHK_ECORRUPT, "directory entry '%s' points outside the zone", name);
            goto out;
        }
        if (e->offset % 8) { /* the allocator hands out 8-aligned memory: structures read
                              * their headers as aligned words (and futexes need it) */
            r = shk_fail(SHK_ECORRUPT, "directory entry '%s' has the misaligned offset %llu",
                         name, (unsigned long long)e->offset);
            goto out;
        }
        *out = *e;
        out->name[SHK_OBJ_NAME_MAX] = '\0';
        goto out;
    }
    if (!(flags & SHK_O_CREATE)) {
        r = shk_fail(SHK_ENOTFOUND, "no object named '%s' in the zone", name);
        goto out;
    }
    if (size == 0) {
        r = shk_fail(EINVAL, "object '%s': size must be > 0", name);
        goto out;
    }
    if ((r = ensure_room(z)) != 0)
        goto out;
    t = table(z, h->dir_off, &err);
    uint64_t off;
    if ((r = shk_zone_alloc_locked(z, size, SHK_ALLOC_ZERO, &off)) != 0)
        goto out;
    h->pending_off = off;
    if (init && (r = init(z, off, size, arg)) != 0) {
        h->pending_off = 0;
        shk_zone_free_locked(z, off);
        goto out;
    }
    struct shk_dirent *e = insert_slot(t, hash);
    if (!e) { /* the counts said there was room: they were wrong */
        h->pending_off = 0;
        shk_zone_free_locked(z, off);
        r = shk_fail(SHK_ECORRUPT, "zone directory has no free slot although it counts %u "
                     "live entries and %u tombstones in %u slots", t->live, t->tombs, t->cap);
        goto out;
    }
    int was_tomb = e->state == SHK_DE_TOMB;
    memset(e->name, 0, sizeof e->name);
    strncpy(e->name, name, SHK_OBJ_NAME_MAX);
    e->type = type;
    e->offset = off;
    e->size = size;
    e->aux = aux;
    e->created_ns = shk_wall_ns();
    e->hash = hash;
    e->creator_pid = shk_self_pid();
    shk_store_release(&e->state, SHK_DE_LIVE); /* publish */
    h->pending_off = 0;
    t->live++;
    if (was_tomb && t->tombs)
        t->tombs--;
    *out = *e;
    *created = 1;
out:
    return r;
}

int shk_dir_destroy_locked(struct shk_zone *z, const char *name, uint32_t type)
{
    int r, err;
    if ((r = shk_obj_check_name(name)) != 0)
        return r;
    if ((r = shk_zone_check_size(z)) != 0)
        return r;
    struct shk_dir_table *t = table(z, z->hdr->dir_off, &err);
    int64_t s = t ? lookup(t, name, fnv1a(name)) : -1;
    if (err) {
        r = err;
    } else if (s < 0) {
        r = shk_fail(SHK_ENOTFOUND, "no object named '%s' in the zone", name);
    } else if (type && t->slot[s].type != type) {
        char a[32], b[32];
        const char *have = type_name(t->slot[s].type, a, sizeof a), *want = type_name(type, b, sizeof b);
        r = shk_fail(SHK_ETYPE, "'%s' is %s %s, not %s %s", name, article(have), have,
                     article(want), want);
    } else {
        struct shk_dirent *e = &t->slot[s];
        uint64_t off = e->offset;
        /* unpublish first: a crash after this leaks the memory at worst, never leaves a
         * live entry pointing at freed memory */
        shk_store_release(&e->state, SHK_DE_TOMB);
        t->live--;
        t->tombs++;
        r = shk_zone_free_locked(z, off);
    }
    return r;
}

int shk_dir_list_locked(struct shk_zone *z, struct shk_dirent *out, size_t cap, size_t *n)
{
    int r = 0, err;
    *n = 0;
    struct shk_dir_table *t = table(z, z->hdr->dir_off, &err);
    if ((r = shk_zone_check_size(z)) != 0) {
        /* reported below */
    } else if (err) {
        r = err;
    } else if (t) {
        for (uint32_t i = 0; i < t->cap; i++) {
            if (t->slot[i].state != SHK_DE_LIVE)
                continue;
            if (*n < cap) {
                out[*n] = t->slot[i];
                out[*n].name[SHK_OBJ_NAME_MAX] = '\0';
            }
            (*n)++;
        }
    }
    return r;
}

uint32_t shk_dir_count_locked(struct shk_zone *z)
{
    int err;
    struct shk_dir_table *t = table(z, z->hdr->dir_off, &err);
    shk_clear_detail();
    return t ? t->live : 0;
}

int shk_dir_contains_offset_locked(struct shk_zone *z, uint64_t off)
{
    int err;
    struct shk_dir_table *t = table(z, z->hdr->dir_off, &err);
    if (!t)
        return 0;
    for (uint32_t i = 0; i < t->cap; i++)
        if (t->slot[i].state == SHK_DE_LIVE && t->slot[i].offset == off)
            return 1;
    return 0;
}

int shk_dir_recover_locked(struct shk_zone *z)
{
    struct shk_zone_header *h = z->hdr;
    int err;
    /* a table built but never published */
    if (h->dir_pending && h->dir_pending != h->dir_off)
        shk_zone_free_locked(z, h->dir_pending);
    h->dir_pending = 0;
    struct shk_dir_table *t = table(z, h->dir_off, &err);
    if (err) {
        /* the directory cannot be trusted: start an empty one rather than stay broken */
        h->dir_off = 0;
        t = NULL;
    }
    if (t) {
        uint32_t live = 0, tombs = 0;
        for (uint32_t i = 0; i < t->cap; i++) {
            struct shk_dirent *e = &t->slot[i];
            if (e->state == SHK_DE_LIVE) {
                e->name[SHK_OBJ_NAME_MAX] = '\0';
                if (!shk_zone_ptr(z, e->offset, e->size ? e->size : 1) || e->offset % 8) {
                    e->state = SHK_DE_TOMB;
                    tombs++;
                    continue;
                }
                live++;
            } else if (e->state != SHK_DE_EMPTY) {
                e->state = SHK_DE_TOMB;
                tombs++;
            }
        }
        t->live = live;
        t->tombs = tombs;
    }
    /* an object whose creation did not finish */
    if (h->pending_off) {
        if (!shk_dir_contains_offset_locked(z, h->pending_off) && h->pending_off != h->dir_off)
            shk_zone_free_locked(z, h->pending_off);
        h->pending_off = 0;
    }
    shk_clear_detail();
    return 0;
}

int shk_dir_check_locked(struct shk_zone *z, struct shk_report *rp)
{
    struct shk_zone_header *h = z->hdr;
    int err;
    struct shk_dir_table *t = table(z, h->dir_off, &err);
    if (err) {
        shk_report_problem(rp, "directory: %s", shk_error_detail());
        return rp->problems;
    }
    if (h->pending_off)
        shk_report_problem(rp, "directory: an object creation is pending at offset %llu",
                (unsigned long long)h->pending_off);
    if (!t)
        return rp->problems;
    uint32_t live = 0, tombs = 0;
    for (uint32_t i = 0; i < t->cap; i++) {
        struct shk_dirent *e = &t->slot[i];
        if (e->state == SHK_DE_TOMB) {
            tombs++;
            continue;
        }
        if (e->state != SHK_DE_LIVE) {
            if (e->state != SHK_DE_EMPTY)
                shk_report_problem(rp, "directory slot %u: state %u", i, e->state);
            continue;
        }
        live++;
        if (memchr(e->name, 0, sizeof e->name) == NULL)
            shk_report_problem(rp, "directory slot %u: name is not terminated", i);
        else if (e->hash != fnv1a(e->name))
            shk_report_problem(rp, "directory entry '%s': stored hash does not match its name", e->name);
        else if (lookup(t, e->name, e->hash) != (int64_t)i)
            shk_report_problem(rp, "directory entry '%s': not reachable by lookup (or a duplicate)", e->name);
        if (!shk_zone_ptr(z, e->offset, e->size ? e->size : 1)) {
            shk_report_problem(rp, "directory entry '%.63s': offset %llu + %llu outside the zone", e->name,
                    (unsigned long long)e->offset, (unsigned long long)e->size);
            continue;
        }
        if (e->offset % 8) {
            shk_report_problem(rp, "directory entry '%.63s': offset %llu is not 8-aligned", e->name,
                    (unsigned long long)e->offset);
            continue;
        }
        uint64_t usable = shk_zone_usable_size_locked(z, e->offset);
        if (usable < e->size)
            shk_report_problem(rp, "directory entry '%.63s': offset %llu is not a live allocation of %llu "
                    "bytes (%llu usable)", e->name, (unsigned long long)e->offset,
                    (unsigned long long)e->size, (unsigned long long)usable);
    }
    if (live != t->live || tombs != t->tombs)
        shk_report_problem(rp, "directory counts %u live / %u tombstones; the table holds %u / %u", t->live,
                t->tombs, live, tombs);
    if ((uint64_t)(live + tombs) >= t->cap)
        shk_report_problem(rp, "directory has no empty slot (lookups cannot terminate early)");
    return rp->problems;
}
