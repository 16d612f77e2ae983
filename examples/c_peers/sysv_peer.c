/* A C program using System V shared memory (shmget/shmat), the peer of run.py.
 *
 *   sysv_peer attach PATH         attach the segment Python created under ftok(PATH, 'C'),
 *                                 check Python's message (first half), write ours in the
 *                                 second half, detach
 *   sysv_peer create PATH SIZE SEED
 *                                 create a segment under ftok(PATH, 'C') (IPC_CREAT |
 *                                 IPC_EXCL, 0600), write our message in the first half,
 *                                 print "ready SHMID", wait for a line on stdin, check
 *                                 Python's reply (second half), remove the segment
 *                                 (IPC_RMID: destroyed at the last detach), detach
 *
 * The key comes from ftok(3) on a file both sides know: shmkit.ftok() computes the same
 * key in Python.  See exchange.h for the layout. */
#define _GNU_SOURCE
#include <stdlib.h>
#include <sys/ipc.h>
#include <sys/shm.h>

#include "exchange.h"

static int attach(const char *path)
{
    key_t key = ftok(path, 'C');
    if (key == -1) { perror("ftok"); return 2; }
    int id = shmget(key, 0, 0);
    if (id < 0) { perror("shmget"); return 2; }
    struct shmid_ds ds;
    if (shmctl(id, IPC_STAT, &ds) != 0) { perror("shmctl(IPC_STAT)"); return 2; }
    unsigned char *p = shmat(id, NULL, 0);
    if (p == (void *)-1) { perror("shmat"); return 2; }
    size_t half = ds.shm_segsz / 2;
    printf("C (sysv) attached key 0x%08x id %d, %zu bytes, created by pid %d\n",
           (unsigned)key, id, (size_t)ds.shm_segsz, (int)ds.shm_cpid);
    int bad = ex_check(p, half, "C (sysv) read Python's message");
    ex_write(p + half, half, 12345);
    printf("C (sysv) wrote its reply\n");
    shmdt(p);
    return bad;
}

static int create(const char *path, size_t size, uint32_t seed)
{
    key_t key = ftok(path, 'C');
    if (key == -1) { perror("ftok"); return 2; }
    int id = shmget(key, size, IPC_CREAT | IPC_EXCL | 0600);
    if (id < 0) { perror("shmget(IPC_CREAT|IPC_EXCL)"); return 2; }
    unsigned char *p = shmat(id, NULL, 0);
    if (p == (void *)-1) { perror("shmat"); shmctl(id, IPC_RMID, NULL); return 2; }
    size_t half = size / 2;
    ex_write(p, half, seed);
    printf("ready %d\n", id);
    fflush(stdout);
    char line[64];
    int bad = 1;
    if (fgets(line, sizeof line, stdin))
        bad = ex_check(p + half, half, "C (sysv) read Python's reply");
    shmctl(id, IPC_RMID, NULL);
    shmdt(p);
    return bad;
}

int main(int argc, char **argv)
{
    if (argc == 3 && !strcmp(argv[1], "attach"))
        return attach(argv[2]);
    if (argc == 5 && !strcmp(argv[1], "create"))
        return create(argv[2], strtoul(argv[3], NULL, 0), (uint32_t)strtoul(argv[4], NULL, 0));
    fprintf(stderr, "usage: %s attach PATH | create PATH SIZE SEED\n", argv[0]);
    return 2;
}
