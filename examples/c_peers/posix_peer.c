/* A C program using POSIX shared memory (shm_open/ftruncate/mmap), the peer of run.py.
 *
 *   posix_peer attach NAME        open /dev/shm/NAME that Python created, map it, check
 *                                 Python's message (first half), write ours in the second
 *                                 half, unmap
 *   posix_peer create NAME SIZE SEED
 *                                 shm_open(O_CREAT | O_EXCL, 0600), ftruncate to SIZE, map,
 *                                 write our message in the first half, print "ready",
 *                                 wait for a line on stdin, check Python's reply (second
 *                                 half), shm_unlink, unmap
 *
 * See exchange.h for the layout. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include "exchange.h"

static int attach(const char *name)
{
    int fd = shm_open(name, O_RDWR, 0);
    if (fd < 0) { perror("shm_open"); return 2; }
    struct stat st;
    if (fstat(fd, &st) != 0) { perror("fstat"); return 2; }
    unsigned char *p = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);                       /* the mapping stays */
    if (p == MAP_FAILED) { perror("mmap"); return 2; }
    size_t half = (size_t)st.st_size / 2;
    printf("C (posix) mapped /dev/shm%s, %zu bytes\n", name, (size_t)st.st_size);
    int bad = ex_check(p, half, "C (posix) read Python's message");
    ex_write(p + half, half, 54321);
    printf("C (posix) wrote its reply\n");
    munmap(p, (size_t)st.st_size);
    return bad;
}

static int create(const char *name, size_t size, uint32_t seed)
{
    int fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL, 0600);
    if (fd < 0) { perror("shm_open(O_CREAT|O_EXCL)"); return 2; }
    if (ftruncate(fd, (off_t)size) != 0) { perror("ftruncate"); shm_unlink(name); return 2; }
    unsigned char *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (p == MAP_FAILED) { perror("mmap"); shm_unlink(name); return 2; }
    size_t half = size / 2;
    ex_write(p, half, seed);
    printf("ready\n");
    fflush(stdout);
    char line[64];
    int bad = 1;
    if (fgets(line, sizeof line, stdin))
        bad = ex_check(p + half, half, "C (posix) read Python's reply");
    shm_unlink(name);
    munmap(p, size);
    return bad;
}

int main(int argc, char **argv)
{
    if (argc == 3 && !strcmp(argv[1], "attach"))
        return attach(argv[2]);
    if (argc == 5 && !strcmp(argv[1], "create"))
        return create(argv[2], strtoul(argv[3], NULL, 0), (uint32_t)strtoul(argv[4], NULL, 0));
    fprintf(stderr, "usage: %s attach NAME | create NAME SIZE SEED\n", argv[0]);
    return 2;
}
