/*
 * directory.h - named objects in a zone (directory.c): an open-addressing table of
 * (name -> type, offset, size).  Every function here assumes the caller holds the zone
 * mutex (zone.h has the plain twins that take it).  It calls slab.h, zonemap.h and
 * nothing above: see zonemap.h for the layers.
 */
#ifndef SHK_DIRECTORY_H
#define SHK_DIRECTORY_H

#include <stddef.h>
#include <stdint.h>

#include "layout.h"
#include "zonemap.h"

#ifdef __cplusplus
extern "C" {
#endif

struct shk_report;

typedef int (*shk_obj_init_fn)(struct shk_zone *z, uint64_t off, uint64_t size, void *arg);

/* Validate an object name: 1..63 bytes. */
int shk_obj_check_name(const char *name);

/* See shk_zone_obj_get (zone.h), which takes the lock and calls this. */
int shk_dir_get_locked(struct shk_zone *z, const char *name, uint32_t type, uint64_t size,
                       uint64_t aux, int flags, shk_obj_init_fn init, void *arg,
                       struct shk_dirent *out, int *created);
int shk_dir_destroy_locked(struct shk_zone *z, const char *name, uint32_t type);
int shk_dir_list_locked(struct shk_zone *z, struct shk_dirent *out, size_t cap, size_t *n);
/* Live objects (0 when the table cannot be read). */
uint32_t shk_dir_count_locked(struct shk_zone *z);

/* Free what an interrupted create or table rebuild left pending; recount the table.
 * Runs after the allocator's recovery. */
int shk_dir_recover_locked(struct shk_zone *z);
int shk_dir_contains_offset_locked(struct shk_zone *z, uint64_t off);
/* Append the directory's problems to rp; returns rp->problems. */
int shk_dir_check_locked(struct shk_zone *z, struct shk_report *rp);

#ifdef __cplusplus
}
#endif
#endif
