/*
 * ndarray.h - NumPy arrays living in a zone (SHK_OBJ_NDARRAY).
 *
 * The object is a 512-byte head (struct shk_ndarray_head, layout.h) recording the
 * shape, the item size and the dtype descriptor, followed by the elements.  The head is
 * written by the creator under the zone mutex before the directory entry is published
 * and never changes, so every process that finds the name sees the same array.  The
 * core only validates heads; NumPy is the Python layer's business.
 */
#ifndef SHK_NDARRAY_H
#define SHK_NDARRAY_H

#include <stdint.h>

#include "layout.h"
#include "zone.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Check a head against the allocation it lives in (size bytes): magic, ndim, data
 * offset, descriptor termination, nbytes == product(shape) * itemsize without overflow.
 * 0 or SHK_ECORRUPT (detail names the broken invariant); EINVAL when `fresh` (a head
 * proposed by a caller rather than read from shared memory). */
int shk_ndarray_check(const struct shk_ndarray_head *h, uint64_t size, int fresh);

/*
 * Find the array `name`; when `want` is not NULL and it does not exist, create it with
 * that head (elements zeroed).  *head receives a validated copy of the head (a copy, so
 * that a later stray write to the zone cannot change what was checked), *e the directory
 * entry, *data the elements (head->nbytes of them, at e->offset + head->data_off, checked
 * to lie inside the zone).
 * SHK_ENOTFOUND, SHK_ETYPE, SHK_ECORRUPT, SHK_EFULL, EINVAL (bad `want`), ...
 */
int shk_ndarray_open(struct shk_zone *z, const char *name, const struct shk_ndarray_head *want,
                     struct shk_dirent *e, int *created, struct shk_ndarray_head *head,
                     uint8_t **data);

#ifdef __cplusplus
}
#endif
#endif
