/*
 * strict.c - the header under -std=c99 -pedantic -Wall -Wextra -Werror, and every function
 * of it linked (each called once, behind a condition the test never meets: this program
 * is built, not run).
 */
#include <shmkit.h>
#include <stdio.h>

int main(int argc, char **argv)
{
    shmkit_segment *s = NULL;
    shmkit_zone *z = NULL;
    shmkit_queue *q = NULL;
    shmkit_dict *d = NULL;
    shmkit_lock *l = NULL;
    shmkit_counter *c = NULL;
    struct shmkit_zone_options o = {0, 0600, 0, SHMKIT_FOREVER, NULL, NULL};
    char buf[64];
    size_t len = 0;
    int64_t v = 0, init = 0;
    double t = 0;
    (void)argv;
    printf("%s %s\n", shmkit_version(NULL, NULL, NULL), shmkit_strerror(SHMKIT_ECORRUPT));
    if (argc < 1000)
        return 0;
    shmkit_segment_open("x", SHMKIT_CREATE | SHMKIT_EXCL | SHMKIT_RDONLY | SHMKIT_ANYOWNER, 1, 0, &s);
    (void)shmkit_segment_ptr(s);
    (void)shmkit_segment_size(s);
    (void)shmkit_segment_created(s);
    shmkit_segment_close(s);
    shmkit_segment_unlink("x");
    shmkit_zone_open("x", 1 << 20, "t", 1, &o, &z);
    (void)shmkit_zone_created(z);
    (void)shmkit_zone_size(z);
    shmkit_zone_destroy_object(z, "q");
    shmkit_queue_open(z, "q", SHMKIT_QUEUE_DEFAULT_CAPACITY, SHMKIT_CREATE | SHMKIT_AT_LEAST_ONCE, &q);
    shmkit_queue_put(q, "m", 1, SHMKIT_FOREVER);
    shmkit_queue_try_put(q, "m", 1);
    shmkit_queue_get(q, buf, sizeof buf, &len, 1.5);
    shmkit_queue_try_get(q, buf, sizeof buf, &len);
    (void)shmkit_queue_depth(q);
    shmkit_queue_task_done(q, 1);
    shmkit_queue_join(q, 0.5);
    (void)shmkit_queue_unfinished_tasks(q);
    shmkit_queue_close(q);
    shmkit_dict_open(z, "d", SHMKIT_DICT_DEFAULT_CAPACITY, SHMKIT_CREATE, &d);
    shmkit_dict_get(d, "k", 1, buf, sizeof buf, &len);
    shmkit_dict_get_int(d, "k", 1, &v);
    shmkit_dict_set(d, "k", 1, "v", 1, 0, SHMKIT_DICT_ADD | SHMKIT_DICT_REPLACE | SHMKIT_DICT_SAFE);
    shmkit_dict_set_int(d, "k", 1, 1, 0, 0);
    shmkit_dict_delete(d, "k", 1);
    shmkit_dict_incr(d, "k", 1, 1, &init, 0, &v);
    shmkit_dict_ttl(d, "k", 1, &t);
    shmkit_dict_close(d);
    shmkit_lock_open(z, "l", SHMKIT_CREATE, &l);
    shmkit_lock_acquire(l, 1);
    shmkit_lock_try(l);
    shmkit_lock_release(l);
    shmkit_lock_close(l);
    shmkit_counter_open(z, "c", 0, SHMKIT_CREATE, &c);
    v = shmkit_counter_add(c, 1) + shmkit_counter_load(c);
    shmkit_counter_store(c, v);
    shmkit_counter_cas(c, &v, 0);
    shmkit_counter_close(c);
    shmkit_zone_close(z);
    shmkit_zone_unlink("x");
    return *shmkit_error_detail();
}
