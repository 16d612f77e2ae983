/* minimal.c - the smallest whole program: a zone NAME, a counter in it, removed at the
 * end.  Prints the library's version and the counter.  (tests/test_capi_packaging.py
 * builds it against an unpacked wheel.) */
#include <shmkit.h>
#include <stdio.h>

int main(int argc, char **argv)
{
    shmkit_zone *zone;
    shmkit_counter *hits;
    int r;
    if (argc != 2)
        return 2;
    if ((r = shmkit_zone_open(argv[1], 1 << 20, NULL, 0, NULL, &zone)) != 0 ||
        (r = shmkit_counter_open(zone, "hits", 0, SHMKIT_CREATE, &hits)) != 0) {
        fprintf(stderr, "%s: %s\n", shmkit_strerror(r), shmkit_error_detail());
        return 1;
    }
    shmkit_counter_add(hits, 1);
    printf("version %s\ncounter %lld\n", shmkit_version(NULL, NULL, NULL),
           (long long)shmkit_counter_add(hits, 1));
    shmkit_counter_close(hits);
    shmkit_zone_close(zone);
    return shmkit_zone_unlink(argv[1]);
}
