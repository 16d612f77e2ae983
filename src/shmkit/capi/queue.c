/*
 * queue.c (C API) - handles on the core's MPMC queue (core/queue.h): put and get of byte
 * messages, blocking with a deadline, never returning EINTR.
 *
 * A get copies first and takes after (shk_queue_peek, then shk_queue_take_peeked: one
 * CAS), so a message that does not fit in the caller's buffer is left in the queue
 * (ENOBUFS with the size needed).  When that path is not open (another consumer's range
 * is out, or the message is a zero-copy block), the message is taken first; one that
 * then does not fit is kept by the handle and handed over by its next get, so that
 * nothing is lost and the ENOBUFS contract holds.  In an at-least-once queue every get
 * takes first (the record stays in the ring, this handle's until task_done): a message
 * that does not fit is kept the same way, and stays the handle's task.
 */
#include "capi.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "errors.h"
#include "futex.h"
#include "queue.h"

struct shmkit_queue {
    shmkit_zone *zone;
    struct shk_queue q;
    uint8_t *pending;           /* a message taken that did not fit (see above) */
    uint64_t pending_len;
};

SHMKIT_API int shmkit_queue_open(shmkit_zone *zone, const char *name, size_t capacity,
                                 int flags, shmkit_queue **out)
{
    int r;
    shk_clear_detail();
    if (!out)
        return shk_capi_null("shmkit_queue_open", "out");
    *out = NULL;
    if (!zone)
        return shk_capi_null("shmkit_queue_open", "zone");
    if ((r = shk_capi_check_flags("shmkit_queue_open", flags, SHMKIT_CREATE | SHMKIT_EXCL |
                                  SHMKIT_AT_MOST_ONCE | SHMKIT_AT_LEAST_ONCE)) ||
        (r = shk_capi_check_object_name(name)))
        return r;
    if ((flags & SHMKIT_AT_MOST_ONCE) && (flags & SHMKIT_AT_LEAST_ONCE))
        return shk_fail(EINVAL, "shmkit_queue_open(): SHMKIT_AT_MOST_ONCE and "
                        "SHMKIT_AT_LEAST_ONCE together");
    int delivery = (flags & SHMKIT_AT_LEAST_ONCE)  ? SHK_QDELIVERY_AT_LEAST_ONCE
                   : (flags & SHMKIT_AT_MOST_ONCE) ? SHK_QDELIVERY_AT_MOST_ONCE
                                                   : SHK_QDELIVERY_ANY;
    shmkit_queue *q = calloc(1, sizeof *q);
    if (!q)
        return shk_fail(ENOMEM, "shmkit_queue_open(): out of memory");
    int created = 0;
    pthread_mutex_lock(&zone->lock);
    r = shk_queue_open_delivery(&zone->zone, name, capacity, 0, delivery,
                                flags & (SHK_O_CREATE | SHK_O_EXCL), &q->q, &created);
    pthread_mutex_unlock(&zone->lock);
    if (r) {
        free(q);
        return shk_capi_object_mismatch(r);
    }
    shk_capi_zone_ref(zone);
    q->zone = zone;
    *out = q;
    return 0;
}

static int put(shmkit_queue *q, const void *data, size_t len, double timeout)
{
    if (!q)
        return shk_capi_null("shmkit_queue_put", "q");
    if (!data && len)
        return shk_capi_null("shmkit_queue_put", "data");
    if (timeout != timeout)
        return shk_fail(EINVAL, "timeout is NaN");
    shk_clear_detail();
    int r = shk_queue_ensure(&q->q); /* a member slot (again after fork) */
    if (r)
        return r;
    struct shk_wait w;
    if ((r = shk_capi_wait_init(&w, timeout)) != 0)
        return r;
    struct shk_queue_waiter qw = {.q = &q->q, .what = SHK_QW_SPACE, .need = shk_qrec_size(len)};
    for (;;) {
        r = shk_queue_put1(&q->q, data, len);
        if (r != SHK_EFULLQ || timeout == 0)
            return r;
        r = shk_capi_wait_run(&shk_queue_wait_op, &qw, &w);
        if (r == SHK_EFULLQ) { /* the deadline passed */
            r = shk_queue_put1(&q->q, data, len); /* a last look */
            return r == SHK_EFULLQ ? ETIMEDOUT : r;
        }
        if (r)
            return r;
        /* 0: room may have come; try again, same deadline */
    }
}

SHMKIT_API int shmkit_queue_put(shmkit_queue *q, const void *data, size_t len, double timeout)
{
    return put(q, data, len, timeout);
}

SHMKIT_API int shmkit_queue_try_put(shmkit_queue *q, const void *data, size_t len)
{
    return put(q, data, len, 0);
}

/* Hand a message over: into buf when it fits, else keep it for the next get. */
static int deliver(shmkit_queue *q, const void *src, uint64_t n, void *buf, size_t cap,
                   size_t *len)
{
    *len = (size_t)n;
    if (n <= cap) {
        if (n)
            memcpy(buf, src, n);
        return 0;
    }
    if (!(q->pending = malloc(n ? n : 1)))
        return shk_fail(ENOMEM, "shmkit_queue_get(): out of memory keeping a message of %llu "
                        "bytes", (unsigned long long)n);
    memcpy(q->pending, src, n);
    q->pending_len = n;
    return shk_fail(ENOBUFS, "shmkit_queue_get(): the message has %llu bytes, the buffer %zu",
                    (unsigned long long)n, cap);
}

/* Take the message at the head first, then copy it out (see the top of the file). */
static int take_then_copy(shmkit_queue *q, void *buf, size_t cap, size_t *len)
{
    struct shk_qmsg m;
    struct shk_qtake t;
    int r = shk_queue_take(&q->q, &m, 1, UINT64_MAX, &t);
    if (r)
        return r;
    if (m.kind == SHK_QK_REF) {
        uint32_t idx, gen;
        void *ptr;
        uint64_t n;
        r = shk_queue_accept_ref(&q->q, &m, &idx, &gen, &ptr, &n);
        shk_queue_finish(&q->q, &t);
        if (r)
            return r;
        r = deliver(q, ptr, n, buf, cap, len);
        shk_queue_release_ref(&q->q, idx, gen);
        return r;
    }
    if (m.len <= cap) {
        shk_queue_read(&q->q, m.pos, 0, buf, m.len);
        *len = (size_t)m.len;
        shk_queue_finish(&q->q, &t);
        return 0;
    }
    uint8_t *tmp = malloc(m.len ? m.len : 1);
    if (!tmp) {
        shk_queue_finish(&q->q, &t);
        return shk_fail(ENOMEM, "shmkit_queue_get(): out of memory keeping a message of %llu "
                        "bytes (it is lost)", (unsigned long long)m.len);
    }
    shk_queue_read(&q->q, m.pos, 0, tmp, m.len);
    shk_queue_finish(&q->q, &t);
    r = deliver(q, tmp, m.len, buf, cap, len);
    free(tmp);
    return r;
}

/* At-least-once: take (the record stays this handle's task), then copy out. */
static int take_owned(shmkit_queue *q, void *buf, size_t cap, size_t *len)
{
    struct shk_qmsg m;
    struct shk_qget g = {.msgs = &m, .max_msgs = 1, .max_bytes = UINT64_MAX};
    int r = shk_queue_get_begin(&q->q, &g);
    if (r)
        return r;
    if (m.kind == SHK_QK_REF) /* no reservation is ever committed to such a queue */
        r = shk_fail(SHK_ECORRUPT, "shmkit_queue_get(): a zero-copy block in an "
                     "at-least-once queue");
    else if (m.len <= cap) {
        shk_queue_read(&q->q, m.pos, 0, buf, m.len);
        *len = (size_t)m.len;
    } else {
        uint8_t *tmp = malloc(m.len);
        if (!tmp)
            r = shk_fail(ENOMEM, "shmkit_queue_get(): out of memory keeping a message of "
                         "%llu bytes (it stays this handle's task)", (unsigned long long)m.len);
        else {
            shk_queue_read(&q->q, m.pos, 0, tmp, m.len);
            r = deliver(q, tmp, m.len, buf, cap, len);
            free(tmp);
        }
    }
    shk_queue_get_end(&q->q, &g);
    return r;
}

static int try_get(shmkit_queue *q, void *buf, size_t cap, size_t *len)
{
    if (q->pending) {
        *len = (size_t)q->pending_len;
        if (q->pending_len > cap)
            return shk_fail(ENOBUFS, "shmkit_queue_get(): the message has %llu bytes, the "
                            "buffer %zu", (unsigned long long)q->pending_len, cap);
        memcpy(buf, q->pending, q->pending_len);
        free(q->pending);
        q->pending = NULL;
        return 0;
    }
    if (q->q.ack)
        return take_owned(q, buf, cap, len);
    for (;;) {
        struct shk_qmsg m;
        struct shk_qpeek pk;
        int r = shk_queue_peek(&q->q, &m, 1, UINT64_MAX, &pk);
        if (r)
            return r;
        if (m.kind != SHK_QK_REF && m.len > cap) {
            *len = (size_t)m.len; /* left in the queue */
            return shk_fail(ENOBUFS, "shmkit_queue_get(): the message has %llu bytes, the "
                            "buffer %zu", (unsigned long long)m.len, cap);
        }
        if (pk.direct && pk.n == 1 && m.kind != SHK_QK_REF) {
            shk_queue_read(&q->q, m.pos, 0, buf, m.len); /* copy first, take after */
            if (shk_queue_take_peeked(&q->q, &pk) == 0) {
                *len = (size_t)m.len;
                return 0;
            }
            continue; /* another consumer took it first */
        }
        r = take_then_copy(q, buf, cap, len);
        if (r != SHK_EEMPTY)
            return r;
        /* taken by another consumer meanwhile: look again */
    }
}

static int get(shmkit_queue *q, void *buf, size_t cap, size_t *len, double timeout)
{
    if (!q || !len)
        return shk_capi_null("shmkit_queue_get", q ? "len" : "q");
    if (!buf && cap)
        return shk_capi_null("shmkit_queue_get", "buf");
    if (timeout != timeout)
        return shk_fail(EINVAL, "timeout is NaN");
    shk_clear_detail();
    int r = shk_queue_ensure(&q->q);
    if (r)
        return r;
    struct shk_wait w;
    if ((r = shk_capi_wait_init(&w, timeout)) != 0)
        return r;
    struct shk_queue_waiter qw = {.q = &q->q, .what = SHK_QW_DATA};
    for (;;) {
        r = try_get(q, buf, cap, len);
        if (r != SHK_EEMPTY || timeout == 0)
            return r;
        r = shk_capi_wait_run(&shk_queue_wait_op, &qw, &w);
        if (r == SHK_EEMPTY) { /* the deadline passed */
            r = try_get(q, buf, cap, len); /* a last look */
            return r == SHK_EEMPTY ? ETIMEDOUT : r;
        }
        if (r)
            return r;
    }
}

SHMKIT_API int shmkit_queue_get(shmkit_queue *q, void *buf, size_t cap, size_t *len,
                                double timeout)
{
    return get(q, buf, cap, len, timeout);
}

SHMKIT_API int shmkit_queue_try_get(shmkit_queue *q, void *buf, size_t cap, size_t *len)
{
    return get(q, buf, cap, len, 0);
}

SHMKIT_API size_t shmkit_queue_depth(shmkit_queue *q)
{
    return q ? (size_t)shk_queue_depth(&q->q) + (q->pending != NULL) : 0;
}

SHMKIT_API int shmkit_queue_task_done(shmkit_queue *q, size_t count)
{
    if (!q)
        return shk_capi_null("shmkit_queue_task_done", "q");
    shk_clear_detail();
    int r = shk_queue_ensure(&q->q);
    return r ? r : shk_queue_task_done(&q->q, count);
}

SHMKIT_API int shmkit_queue_join(shmkit_queue *q, double timeout)
{
    if (!q)
        return shk_capi_null("shmkit_queue_join", "q");
    shk_clear_detail();
    int r = shk_queue_ensure(&q->q);
    if (r)
        return r;
    struct shk_wait w;
    if ((r = shk_capi_wait_init(&w, timeout)) != 0)
        return r;
    r = shk_capi_wait_run(&shk_queue_join_op, &q->q, &w);
    return r == EBUSY ? ETIMEDOUT : r; /* timeout 0: not finished now */
}

SHMKIT_API size_t shmkit_queue_unfinished_tasks(shmkit_queue *q)
{
    return q ? (size_t)shk_queue_unfinished(&q->q) : 0;
}

SHMKIT_API int shmkit_queue_close(shmkit_queue *q)
{
    if (!q)
        return 0;
    if (q->pending) {
        /* a message taken but never handed over: at-most-once, back into the queue (at
         * its tail); at-least-once, its record is still this handle's and goes back for
         * redelivery with the member slot below */
        if (!q->q.ack && shk_queue_ensure(&q->q) == 0)
            shk_queue_put1(&q->q, q->pending, q->pending_len);
        free(q->pending);
    }
    shk_queue_release(&q->q);
    shk_capi_zone_unref(q->zone);
    free(q);
    return 0;
}
