/* Segments in C: attributes (fstat / IPC_STAT without attaching), SysV limit errors that
 * name the limits, OFD lock semantics the lifecycles rely on (per open file description,
 * released by the kernel, pinned by mappings), and remapping from a new description. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/mman.h>
#include <sys/shm.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "layout.h"
#include "segment.h"

static char name[64];

static void test_posix_stat(void)
{
    struct shk_segment s;
    struct shk_seg_stat st;
    shk_seg_unlink_posix(name);
    CHECK_EQ(shk_seg_open_posix(&s, name, SHK_O_CREATE | SHK_O_EXCL, 0640, 10000, 0), 0);
    CHECK_EQ(shk_seg_stat(&s, &st), 0);
    CHECK_EQ(st.size, 10000);
    CHECK_EQ(st.mode, 0640);
    CHECK_EQ(st.uid, geteuid());
    CHECK(st.ino != 0);
    CHECK_EQ(st.cpid, -1);
    /* the field table: every field of the record once, each inside it */
    int nfields = 0;
    for (const struct shk_field *f = shk_seg_stat_fields; f->name; f++, nfields++)
        CHECK(f->off < sizeof st);
    CHECK_EQ(nfields, 16);
    CHECK_EQ(shk_seg_close(&s), 0);
    CHECK_EQ(shk_seg_stat(&s, &st), SHK_ECLOSED);
    CHECK_EQ(shk_seg_unlink_posix(name), 0);
}

static void test_sysv_stat_find_and_removal(void)
{
    struct shk_segment s;
    struct shk_seg_stat st;
    int key = 0x5e000000 | (getpid() & 0xffffff), id = -1;
    int r = shk_seg_open_sysv(&s, key, -1, SHK_O_CREATE | SHK_O_EXCL, 0600, 5000);
    CHECK_EQ(r, 0);
    if (r)
        return;
    CHECK_EQ(shk_sysv_find(key, &id), 0);
    CHECK_EQ(id, s.shmid);
    CHECK_EQ(shk_sysv_stat(id, &st), 0);
    CHECK_EQ(st.size, 5000);
    CHECK_EQ(st.nattch, 1);
    CHECK_EQ(st.cpid, getpid());
    CHECK_EQ(st.key, key);
    CHECK_EQ(st.removed, 0);
    CHECK_EQ(shk_seg_rmid(id), 0);
    CHECK_EQ(shk_sysv_stat(id, &st), 0); /* still attached: it lives on, marked */
    CHECK_EQ(st.removed, 1);
    CHECK_EQ(st.key, 0);
    CHECK_EQ(shk_sysv_find(key, &id), ENOENT);
    shk_seg_close(&s);
    CHECK_EQ(shk_sysv_stat(s.shmid, &st), EINVAL);
    CHECK(strstr(shk_error_detail(), "removed") != NULL);
}

static void test_sysv_limit_message(void)
{
    struct shk_segment s;
    int key = 0x5f000000 | (getpid() & 0xffffff);
    int r = shk_seg_open_sysv(&s, key, -1, SHK_O_CREATE | SHK_O_EXCL, 0600, (size_t)1 << 62);
    CHECK(r == ENOMEM || r == ENOSPC || r == EINVAL);
    const char *d = shk_error_detail();
    CHECK(strstr(d, "kernel.shmmax = ") != NULL);
    CHECK(strstr(d, "kernel.shmall = ") != NULL);
    CHECK(strstr(d, "kernel.shmmni = ") != NULL);
    if (r == 0) {
        shk_seg_rmid(s.shmid);
        shk_seg_close(&s);
    }
}

static int reopen(int fd)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    return open(path, O_RDWR | O_CLOEXEC);
}

/* What the lifecycles stand on. */
static void test_ofd_locks(void)
{
    struct shk_segment s;
    int conflict = -1;
    shk_seg_unlink_posix(name);
    CHECK_EQ(shk_seg_open_posix(&s, name, SHK_O_CREATE | SHK_O_EXCL, 0600, 4096, 0), 0);
    int other = reopen(s.fd); /* a second open file description of the same object */
    CHECK(other >= 0);
    /* a created object carries its creator's locks from the start */
    CHECK_EQ(shk_ofd_probe(other, SHK_LOCKBYTE_CREATOR, F_WRLCK, &conflict), 0);
    CHECK_EQ(conflict, 1);
    CHECK_EQ(shk_ofd_probe(other, SHK_LOCKBYTE_ATTACH, F_WRLCK, &conflict), 0);
    CHECK_EQ(conflict, 1);
    CHECK_EQ(shk_ofd_probe(other, SHK_LOCKBYTE_SIZING, F_WRLCK, &conflict), 0);
    CHECK_EQ(conflict, 0); /* sized: released */
    CHECK_EQ(shk_ofd_lock(s.fd, SHK_LOCKBYTE_CREATOR, F_UNLCK, 0), 0);
    CHECK_EQ(shk_ofd_lock(s.fd, SHK_LOCKBYTE_ATTACH, F_UNLCK, 0), 0);
    /* readers share, a writer is refused while a reader holds it */
    CHECK_EQ(shk_ofd_lock(s.fd, SHK_LOCKBYTE_ATTACH, F_RDLCK, 0), 0);
    CHECK_EQ(shk_ofd_lock(other, SHK_LOCKBYTE_ATTACH, F_RDLCK, 0), 0);
    CHECK_EQ(shk_ofd_lock(other, SHK_LOCKBYTE_ATTACH, F_UNLCK, 0), 0);
    CHECK_EQ(shk_ofd_lock(other, SHK_LOCKBYTE_ATTACH, F_WRLCK, 0), EAGAIN);
    CHECK_EQ(shk_ofd_probe(other, SHK_LOCKBYTE_ATTACH, F_WRLCK, &conflict), 0);
    CHECK_EQ(conflict, 1);
    /* our own locks never conflict with us */
    CHECK_EQ(shk_ofd_probe(s.fd, SHK_LOCKBYTE_ATTACH, F_WRLCK, &conflict), 0);
    CHECK_EQ(conflict, 0);
    /* the creator lock of a killed child is released by the kernel */
    pid_t pid = fork();
    if (pid == 0) {
        int mine = reopen(s.fd);
        shk_ofd_lock(mine, SHK_LOCKBYTE_CREATOR, F_WRLCK, 0);
        pause();
        _exit(0);
    }
    for (int i = 0; i < 2000; i++) { /* until the child holds it */
        CHECK_EQ(shk_ofd_probe(other, SHK_LOCKBYTE_CREATOR, F_WRLCK, &conflict), 0);
        if (conflict)
            break;
        usleep(1000);
    }
    CHECK_EQ(conflict, 1);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    CHECK_EQ(shk_ofd_lock(other, SHK_LOCKBYTE_CREATOR, F_WRLCK, 1), 0); /* granted */
    CHECK_EQ(shk_ofd_lock(other, SHK_LOCKBYTE_CREATOR, F_UNLCK, 0), 0);
    close(other);
    shk_seg_close(&s);
    shk_seg_unlink_posix(name);
}

/* A mapping pins the open file description it was made from, and its locks, even with
 * every fd closed; remapping from a new description lets them go.  (An opener's: a
 * creator's mapping is made through a description of its own, opened by the name once
 * published, which holds no locks.) */
static void test_mapping_pins_locks_and_remap_releases_them(void)
{
    struct shk_segment c, s;
    int conflict = -1;
    const uint64_t PIN_BYTE = 1000; /* a byte no lifecycle lock uses */
    shk_seg_unlink_posix(name);
    CHECK_EQ(shk_seg_open_posix(&c, name, SHK_O_CREATE | SHK_O_EXCL, 0600, 8192, 0), 0);
    CHECK_EQ(shk_seg_open_posix(&s, name, 0, 0600, 0, 0), 0);
    memcpy(s.base + 100, "remapped", 8);
    uint8_t *base = s.base;
    CHECK_EQ(shk_ofd_lock(s.fd, PIN_BYTE, F_WRLCK, 0), 0);
    int observer = reopen(s.fd);
    /* replace the fd by another description: the mapping still holds the first one */
    int fresh = reopen(s.fd);
    CHECK(dup2(fresh, s.fd) == s.fd);
    close(fresh);
    CHECK_EQ(shk_ofd_probe(observer, PIN_BYTE, F_WRLCK, &conflict), 0);
    CHECK_EQ(conflict, 1);
    CHECK_EQ(shk_seg_remap(&s), 0);
    CHECK(s.base == base);
    CHECK(memcmp(s.base + 100, "remapped", 8) == 0);
    CHECK_EQ(shk_ofd_probe(observer, PIN_BYTE, F_WRLCK, &conflict), 0);
    CHECK_EQ(conflict, 0);
    close(observer);
    shk_seg_close(&s);
    CHECK_EQ(shk_seg_remap(&s), SHK_ECLOSED);
    shk_seg_close(&c);
    shk_seg_unlink_posix(name);
}

/* An opener that finds the object still empty waits for its creator to size it
 * (blocking on the creator's SIZING lock), instead of failing with "size 0". */
static void test_opener_waits_for_the_creator_to_size_it(void)
{
    char path[80];
    int go[2];
    snprintf(path, sizeof path, "/%s", name);
    shk_seg_unlink_posix(name);
    CHECK_EQ(pipe(go), 0);
    pid_t pid = fork();
    if (pid == 0) { /* a creator caught between O_EXCL and ftruncate */
        int fd = shm_open(path, O_RDWR | O_CREAT | O_EXCL, 0600);
        shk_ofd_lock(fd, SHK_LOCKBYTE_SIZING, F_WRLCK, 0);
        if (write(go[1], "x", 1) != 1)
            _exit(1);
        usleep(100 * 1000);
        if (ftruncate(fd, 12345) != 0)
            _exit(1);
        shk_ofd_lock(fd, SHK_LOCKBYTE_SIZING, F_UNLCK, 0);
        pause();
        _exit(0);
    }
    char c;
    CHECK_EQ(read(go[0], &c, 1), 1);
    struct shk_segment s;
    CHECK_EQ(shk_seg_open_posix(&s, name, 0, 0, 0, 0), 0);
    CHECK_EQ(s.size, 12345);
    shk_seg_close(&s);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    close(go[0]);
    close(go[1]);
    shk_seg_unlink_posix(name);
}

int main(void)
{
    snprintf(name, sizeof name, "shmkit-ctest-seg-%d", (int)getpid());
    test_posix_stat();
    test_sysv_stat_find_and_removal();
    test_sysv_limit_message();
    test_ofd_locks();
    test_mapping_pins_locks_and_remap_releases_them();
    test_opener_waits_for_the_creator_to_size_it();
    TEST_MAIN_END();
}
