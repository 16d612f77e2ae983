/*
 * zone.h - a segment with a header, a slab allocator and a directory of named objects.
 *
 * The nginx model (ngx_shared_memory_add + ngx_slab): a zone is identified by
 * (name, size, tag), initialised exactly once by whoever creates it, and everything in it
 * is allocated from the zone's allocator and found by name through its directory.  The
 * bytes are specified in layout.h.
 *
 * Open protocol (see shk_zone_try_open): an attempt either attaches to a READY zone,
 * makes the caller the initialiser (returns SHK_ZONE_MUST_INIT with the init lock held;
 * the caller runs its own init, then calls shk_zone_init_done), or reports EAGAIN while
 * someone else initialises (shk_zone_open_op waits and tries again).  For fd
 * backends the init lock is an OFD lock on SHK_LOCKBYTE_INIT, released by the kernel if
 * the initialiser dies; for SysV zones it is a CAS on header.init_owner checked with
 * (pid, start time).
 *
 * Locking: the zone mutex protects the allocator and the directory.  Structures that
 * allocate while holding their own lock take the zone mutex second: structure -> zone,
 * never the other way round.  Layers: zone.c -> directory.c -> slab.c -> zonemap.c,
 * never back up (zonemap.h draws them); the plain functions here are nginx's twins of
 * the _locked ones below them: lock, call _locked, unlock.
 */
#ifndef SHK_ZONE_H
#define SHK_ZONE_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "directory.h"
#include "layout.h"
#include "segment.h"
#include "slab.h"
#include "zonemap.h"

#ifdef __cplusplus
extern "C" {
#endif

struct shk_zone_params {
    size_t size;                    /* declared size; 0: attach to whatever exists */
    size_t max_size;                /* growth limit; 0: same as size (no growth) */
    const void *tag;                /* NULL: any tag is accepted when attaching */
    size_t tag_len;
};

enum { SHK_ZONE_ATTACHED = 0, SHK_ZONE_MUST_INIT = 1 };

/* Smallest zone: header page + one extent with at least a few pages. */
#define SHK_ZONE_MIN_SIZE (4u * SHK_PAGE)

/*
 * One non-blocking attempt to attach to or create the zone in `seg` (opened with
 * SHK_O_ALLOWEMPTY).  On 0, *status is SHK_ZONE_ATTACHED or SHK_ZONE_MUST_INIT.
 * EAGAIN: another process is initialising it; wait and try again (shk_zone_open_op),
 * passing waited = 1 so that the death of that initialiser is reported as
 * SHK_EINITDIED instead of silently re-initialising.
 * Errors: SHK_EMISMATCH, SHK_EVERSION, SHK_ECORRUPT, SHK_ENOTREADY (no such zone and
 * no size given), ENOSPC, ...
 */
int shk_zone_try_open(struct shk_zone *z, struct shk_segment *seg,
                      const struct shk_zone_params *p, int waited, int *status);

/* Finish initialising (ok: READY; else the zone goes back to UNINIT), release the init
 * lock and wake waiters. */
int shk_zone_init_done(struct shk_zone *z, int ok);

/* Opening with waiting for another process's initialisation: the one wait shape of
 * wait.h over shk_zone_try_open (0 with status set, an error, ETIMEDOUT, EINTR). */
struct shk_zone_opening {
    struct shk_zone *z;
    struct shk_segment *seg;
    const struct shk_zone_params *p;
    int status;             /* SHK_ZONE_ATTACHED or SHK_ZONE_MUST_INIT once done */
};
extern const struct shk_wait_op shk_zone_open_op; /* obj: struct shk_zone_opening */

/* Lock / unlock the zone mutex; a dead previous owner triggers recovery here. */
int shk_zone_lock(struct shk_zone *z);
void shk_zone_unlock(struct shk_zone *z);

/* --- allocator: the plain twins of slab.h's _locked functions ----------------------- */

/* Allocate n bytes (SHK_ALLOC_* flags); *off gets its offset. SHK_EFULL when no room
 * (detail says which limit). Chunks are aligned to their size class (8..2048), runs to
 * the page. */
int shk_zone_alloc(struct shk_zone *z, uint64_t n, int flags, uint64_t *off);
/* Free an allocation: SHK_EBADFREE ("outside of zone", "wrong chunk", "already free"). */
int shk_zone_free(struct shk_zone *z, uint64_t off);
/* Bytes really usable at off (the size class or the run), or 0 if not an allocation. */
uint64_t shk_zone_usable_size(struct shk_zone *z, uint64_t off);

/* Rebuild what a dead holder of the zone mutex may have left half-done: the allocator
 * from its page descriptors, then the directory.  Locked (shk_zone_lock calls it). */
int shk_zone_recover_locked(struct shk_zone *z);

int shk_zone_stats(struct shk_zone *z, struct shk_zone_stats *st);

/* The header's identity and history as Zone.header() shows them (read without the
 * mutex: hints), and the table of its fields by name (core/fields.h) but the tag. */
struct shk_zone_header_info {
    uint64_t magic, format;
    uint32_t state;         /* enum shk_zone_state */
    uint64_t size, declared_size, max_size, generation;
    int32_t creator_pid;
    uint64_t creator_start, created_ns, ready_ns, recoveries;
    uint32_t nextents;
    uint32_t tag_len;       /* capped at SHK_TAG_MAX */
    uint8_t tag[SHK_TAG_MAX];
};
extern const struct shk_field shk_zone_header_fields[];
void shk_zone_header_info(struct shk_zone *z, struct shk_zone_header_info *out);

/* Test hook of crash recovery, with the zone mutex held: leave the allocator the way a
 * crash in the middle would (mode 1: an allocation's bookkeeping half done, the free
 * list lost; mode 2: a create's allocation recorded as pending, never published).  The
 * caller then dies holding the mutex; the next locker recovers. */
void shk_zone_debug_half_done_locked(struct shk_zone *z, int mode);

/*
 * Walk every structure and verify every invariant.  Problems are appended to report
 * (one per line, NUL-terminated, truncated to cap).  Returns the number of problems
 * found (0: consistent) or a negative error.
 */
int shk_zone_check(struct shk_zone *z, char *report, size_t cap);

/* --- named objects: the plain twins of directory.h's _locked functions ------------- */

/*
 * Find the object `name`; with SHK_O_CREATE create it if missing (SHK_O_EXCL: it must
 * not exist): allocate `size` bytes (zeroed), run init (under the zone mutex: it must be
 * short and must not take other zone-level locks), then publish the entry.  A found
 * object of another type is SHK_ETYPE.  *out receives the entry; *created is set.
 */
int shk_zone_obj_get(struct shk_zone *z, const char *name, uint32_t type, uint64_t size,
                     uint64_t aux, int flags, shk_obj_init_fn init, void *arg,
                     struct shk_dirent *out, int *created);
int shk_zone_obj_find(struct shk_zone *z, const char *name, struct shk_dirent *out);
/* Remove the entry and free its memory. type 0 matches any type. */
int shk_zone_obj_destroy(struct shk_zone *z, const char *name, uint32_t type);
/* Copy up to cap entries into out; *n gets the number of live objects. */
int shk_zone_obj_list(struct shk_zone *z, struct shk_dirent *out, size_t cap, size_t *n);
/* Every entry, in one pass under the mutex: *out gets a malloc()ed array of *n entries
 * (NULL when there are none) that the caller free()s; ENOMEM. */
int shk_zone_obj_list_all(struct shk_zone *z, struct shk_dirent **out, size_t *n);

#ifdef __cplusplus
}
#endif
#endif
