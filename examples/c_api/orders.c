/*
 * orders.c - the C side of examples/c_api: a C program in a Python worker pool, through
 * shmkit.h.
 *
 *     orders ZONE N
 *
 * It attaches to the zone Python declared, puts N orders on the queue "orders" for the
 * Python workers and takes their N answers from the queue "answers" (both at once: when
 * the orders queue is full it takes answers), checks each (every order answered once,
 * with the right price), then checks the totals the workers kept in
 * the dict "totals" (atomic incr from several processes), and finally, holding the lock
 * "ledger" (as the workers do when they write it), writes its own line to the dict.
 *
 * Built by run.py with the line docs/c.md gives:
 *     cc -o orders orders.c $(shmkit config --cflags --libs)
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <shmkit.h>

static int failed(const char *what, int r)
{
    fprintf(stderr, "orders: %s: %s (%s)\n", what, shmkit_strerror(r), shmkit_error_detail());
    return 1;
}

/* price of order i, in cents: what the workers must compute (quantity * unit price) */
static int64_t quantity(long i) { return 1 + i % 7; }
static int64_t unit_price(long i) { return 100 + (i * 7919) % 900; }

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: orders ZONE N\n");
        return 2;
    }
    long n = atol(argv[2]);
    shmkit_zone *zone;
    shmkit_queue *orders, *answers;
    shmkit_dict *totals;
    shmkit_lock *ledger;
    int r;
    if ((r = shmkit_zone_open(argv[1], 0, NULL, 0, NULL, &zone)))
        return failed("shmkit_zone_open", r);
    if ((r = shmkit_queue_open(zone, "orders", 0, SHMKIT_CREATE, &orders)) ||
        (r = shmkit_queue_open(zone, "answers", 0, SHMKIT_CREATE, &answers)) ||
        (r = shmkit_dict_open(zone, "totals", 0, SHMKIT_CREATE, &totals)) ||
        (r = shmkit_lock_open(zone, "ledger", SHMKIT_CREATE, &ledger)))
        return failed("opening the zone's objects", r);

    /* 1 and 2. orders out ("id quantity unit_price"), answers in ("id price pid"): put
     * orders while there is room; when the queue is full (or all are out), take an
     * answer, so that neither side ever waits for the other forever */
    int64_t expected = 0;
    char msg[64], buf[64];
    char *seen = calloc((size_t)n, 1);
    long sent = 0, got = 0, full = 0;
    long pids[64];
    int nworkers = 0;
    while (got < n) {
        if (sent < n) {
            int len = snprintf(msg, sizeof msg, "%ld %" PRId64 " %" PRId64, sent,
                               quantity(sent), unit_price(sent));
            r = shmkit_queue_try_put(orders, msg, (size_t)len);
            if (r == 0) {
                expected += quantity(sent) * unit_price(sent);
                sent++;
                continue;
            }
            if (r != SHMKIT_EFULLQ)
                return failed("shmkit_queue_try_put", r);
            full++;
        }
        size_t len;
        if ((r = shmkit_queue_get(answers, buf, sizeof buf - 1, &len, 30.0)))
            return failed("shmkit_queue_get", r);
        buf[len] = '\0';
        long id, pid;
        int64_t price;
        if (sscanf(buf, "%ld %" SCNd64 " %ld", &id, &price, &pid) != 3 || id < 0 || id >= sent)
            return fprintf(stderr, "orders: bad answer '%s'\n", buf), 1;
        if (seen[id]++)
            return fprintf(stderr, "orders: order %ld answered twice\n", id), 1;
        if (price != quantity(id) * unit_price(id))
            return fprintf(stderr, "orders: order %ld priced %" PRId64 "\n", id, price), 1;
        int w = 0;
        while (w < nworkers && pids[w] != pid)
            w++;
        if (w == nworkers && nworkers < 64)
            pids[nworkers++] = pid;
        got++;
    }
    free(seen);
    printf("C put %ld orders worth %" PRId64 " cents (the queue was full %ld times: C took "
           "answers meanwhile)\n", sent, expected, full);
    printf("C got %ld answers, each order once, every price right, from %d workers\n", got,
           nworkers);

    /* 3. the totals the workers kept: incr from several processes, exact */
    int64_t total = 0, count = 0;
    if ((r = shmkit_dict_get_int(totals, "cents", 5, &total)) ||
        (r = shmkit_dict_get_int(totals, "orders", 6, &count)))
        return failed("shmkit_dict_get_int", r);
    printf("C read the workers' totals: %" PRId64 " orders, %" PRId64 " cents\n", count, total);
    if (total != expected || count != n)
        return fprintf(stderr, "orders: the totals are wrong\n"), 1;

    /* 4. its line in the ledger, under the lock the workers use too */
    r = shmkit_lock_acquire(ledger, 10.0);
    if (r != 0 && r != SHMKIT_EOWNERDEAD)
        return failed("shmkit_lock_acquire", r);
    int len = snprintf(msg, sizeof msg, "C checked %ld orders", n);
    if ((r = shmkit_dict_set(totals, "ledger:c", 8, msg, (size_t)len, 0, 0)))
        return failed("shmkit_dict_set", r);
    shmkit_lock_release(ledger);

    shmkit_lock_close(ledger);
    shmkit_dict_close(totals);
    shmkit_queue_close(answers);
    shmkit_queue_close(orders);
    shmkit_zone_close(zone);
    printf("C done\n");
    return 0;
}
