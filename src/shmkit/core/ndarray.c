/* ndarray.c - heads of shared NumPy arrays (see ndarray.h). */
#include "ndarray.h"

#include <errno.h>
#include <string.h>

#include "errors.h"

int shk_ndarray_check(const struct shk_ndarray_head *h, uint64_t size, int fresh)
{
    int code = fresh ? EINVAL : SHK_ECORRUPT;
    const char *what = fresh ? "requested array" : "array head in the zone";
    if (h->magic != SHK_NDARRAY_MAGIC)
        return shk_fail(code, "shk_ndarray_check(): %s has no magic", what);
    if (h->ndim > SHK_NDARRAY_MAX_DIMS)
        return shk_fail(code, "shk_ndarray_check(): %s has %u dimensions (at most %u)", what,
                        h->ndim, SHK_NDARRAY_MAX_DIMS);
    if (h->data_off != SHK_NDARRAY_HEAD_SIZE)
        return shk_fail(code, "shk_ndarray_check(): %s puts its data at %llu, not %u", what,
                        (unsigned long long)h->data_off, SHK_NDARRAY_HEAD_SIZE);
    if (memchr(h->descr, '\0', sizeof h->descr) == NULL || h->descr[0] == '\0')
        return shk_fail(code, "shk_ndarray_check(): %s has no dtype descriptor", what);
    if (h->itemsize == 0 && h->nbytes != 0)
        return shk_fail(code, "shk_ndarray_check(): %s has item size 0", what);
    uint64_t n = h->itemsize;
    for (uint32_t i = 0; i < h->ndim; i++) {
        if (h->shape[i] != 0 && n > UINT64_MAX / h->shape[i])
            return shk_fail(code, "shk_ndarray_check(): %s: shape overflows", what);
        n *= h->shape[i];
    }
    if (n != h->nbytes)
        return shk_fail(code, "shk_ndarray_check(): %s: nbytes %llu != product of shape x "
                        "itemsize (%llu)", what, (unsigned long long)h->nbytes,
                        (unsigned long long)n);
    if (size && (h->nbytes > size || SHK_NDARRAY_HEAD_SIZE > size - h->nbytes))
        return shk_fail(code, "shk_ndarray_check(): %s: %llu bytes of data do not fit its "
                        "allocation of %llu", what, (unsigned long long)h->nbytes,
                        (unsigned long long)size);
    return 0;
}

static int init_head(struct shk_zone *z, uint64_t off, uint64_t size, void *arg)
{
    struct shk_ndarray_head *h = shk_zone_ptr(z, off, SHK_NDARRAY_HEAD_SIZE);
    if (!h)
        return SHK_ECORRUPT;
    memcpy(h, arg, sizeof *h);
    return 0;
}

int shk_ndarray_open(struct shk_zone *z, const char *name, const struct shk_ndarray_head *want,
                     struct shk_dirent *e, int *created, struct shk_ndarray_head *head,
                     uint8_t **data)
{
    int r;
    uint64_t size = 0;
    shk_clear_detail();
    if (want) {
        if ((r = shk_ndarray_check(want, 0, 1)) != 0)
            return r;
        size = SHK_NDARRAY_HEAD_SIZE + want->nbytes;
        if (size < want->nbytes)
            return shk_fail(SHK_ETOOBIG, "shk_ndarray_open(): array of %llu bytes is too large",
                            (unsigned long long)want->nbytes);
    }
    r = shk_zone_obj_get(z, name, SHK_OBJ_NDARRAY, size, want ? want->nbytes : 0,
                         want ? SHK_O_CREATE : 0, init_head, (void *)want, e, created);
    if (r)
        return r;
    const struct shk_ndarray_head *h = shk_zone_ptr(z, e->offset, SHK_NDARRAY_HEAD_SIZE);
    if (!h)
        return SHK_ECORRUPT;
    memcpy(head, h, sizeof *head);
    if ((r = shk_ndarray_check(head, e->size, 0)) != 0)
        return r;
    *data = shk_zone_ptr(z, e->offset + head->data_off, head->nbytes);
    return *data ? 0 : SHK_ECORRUPT;
}
