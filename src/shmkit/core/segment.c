#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "segment.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/mman.h>
#include <sys/shm.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/sysinfo.h>
#include <unistd.h>

#include "errors.h"
#include "futex.h"
#include "layout.h"

#define SHK_NAME_MAX 250 /* NAME_MAX less room for the prefixes shm_open adds */

#define SS(member, kind) SHK_FIELD(struct shk_seg_stat, member, kind)
const struct shk_field shk_seg_stat_fields[] = {
    SS(size, U64), SS(uid, U32), SS(gid, U32), SS(cuid, U32), SS(cgid, U32), SS(mode, U32),
    SS(key, I32), SS(cpid, I32), SS(lpid, I32), SS(nattch, U64), SS(atime, I64),
    SS(dtime, I64), SS(ctime, I64), SS(dev, U64), SS(ino, U64), SS(removed, BOOL),
    {NULL, 0, 0},
};
#undef SS

static size_t page_size(void)
{
    static size_t ps;
    if (!ps)
        ps = (size_t)sysconf(_SC_PAGESIZE);
    return ps;
}

static size_t round_page(size_t n)
{
    size_t ps = page_size();
    return (n + ps - 1) & ~(ps - 1);
}

static void seg_reset(struct shk_segment *s, int kind, int flags)
{
    memset(s, 0, sizeof *s);
    s->kind = kind;
    s->fd = -1;
    s->shmid = -1;
    s->flags = flags;
    pthread_mutex_init(&s->remap_lock, NULL);
}

uint64_t shk_fs_free_bytes(int fd)
{
    struct statvfs v;
    if (fstatvfs(fd, &v) != 0)
        return 0;
    return (uint64_t)v.f_bavail * (uint64_t)v.f_frsize;
}

int shk_seg_check_name(const char *name)
{
    size_t n = name ? strlen(name) : 0;
    if (n == 0)
        return shk_fail(SHK_ENAME, "segment name is empty");
    if (n > SHK_NAME_MAX)
        return shk_fail(SHK_ENAME, "segment name is %zu bytes long; at most %d are allowed", n,
                        SHK_NAME_MAX);
    if (strchr(name, '/'))
        return shk_fail(SHK_ENAME, "segment name '%s' contains '/'", name);
    if (!strcmp(name, ".") || !strcmp(name, ".."))
        return shk_fail(SHK_ENAME, "segment name '%s' is reserved", name);
    return 0;
}

/*
 * Memory-backed objects (posix on tmpfs, memfd, sysv, anonymous) of more bytes than the
 * machine has RAM and swap can never be held: refuse them before the kernel is asked.
 * (A memfd lives on an internal tmpfs without a size limit, so posix_fallocate would
 * otherwise allocate until the machine runs out; other backends fail later and less
 * clearly.)  0, or ENOSPC naming the sizes (and the free bytes of fd's file system when
 * fd >= 0).
 */
static int machine_memory(unsigned long long *ram, unsigned long long *swap)
{
    struct sysinfo si;
    if (sysinfo(&si) != 0)
        return -1;
    *ram = (unsigned long long)si.totalram * si.mem_unit;
    *swap = (unsigned long long)si.totalswap * si.mem_unit;
    return 0;
}

static int fits_in_memory(size_t size)
{
    unsigned long long ram, swap;
    return machine_memory(&ram, &swap) != 0 || size <= ram || size - ram <= swap;
}

static int check_memory_size(size_t size, const char *what, int fd)
{
    unsigned long long ram = 0, swap = 0;
    if (fits_in_memory(size))
        return 0;
    machine_memory(&ram, &swap);
    char fs[96] = "";
    if (fd >= 0)
        snprintf(fs, sizeof fs, "; %llu bytes are free on its file system",
                 (unsigned long long)shk_fs_free_bytes(fd));
    return shk_fail(ENOSPC, "%s: %zu bytes is more than this machine can hold (%llu bytes of "
                    "RAM and %llu bytes of swap%s)", what, size, ram, swap, fs);
}

/* Reserve the space of [from, to) in the object so later touches cannot SIGBUS. */
static int reserve_space(int fd, size_t from, size_t to, const char *what)
{
    if (to <= from)
        return 0;
    int r = posix_fallocate(fd, (off_t)from, (off_t)(to - from));
    if (r == 0)
        return 0;
    if (r == ENOSPC || r == EFBIG) {
        uint64_t free_b = shk_fs_free_bytes(fd);
        return shk_fail(ENOSPC, "%s: cannot reserve %zu bytes: only %llu bytes are free on its "
                        "file system", what, to - from, (unsigned long long)free_b);
    }
    if (r == EOPNOTSUPP || r == ENOSYS)
        return 0; /* file system cannot preallocate; glibc already emulated if it could */
    return shk_fail(r, "%s: posix_fallocate failed: %s", what, strerror(r));
}

/*
 * Make sure [from, to) of an object this handle did not size itself has its space.  A
 * sparse object (a creator SIGKILLed between sizing and reserving it, or a foreign one)
 * would SIGBUS on first touch once its file system is full: a read-write handle reserves
 * the range now, a read-only one (which cannot; on tmpfs even reads allocate) is refused
 * if the file system could not provide what is missing.  Objects without holes (blocks
 * cover the size) cost one fstat.
 */
static int ensure_space(struct shk_segment *s, size_t from, size_t to, const char *what)
{
    struct stat st;
    if (to <= from || fstat(s->fd, &st) != 0)
        return 0;
    uint64_t have = (uint64_t)st.st_blocks * 512;
    if (have >= (uint64_t)st.st_size)
        return 0;
    if (!(s->flags & SHK_O_RDONLY)) {
        char sparse[PATH_MAX + 160];
        snprintf(sparse, sizeof sparse, "%s is sparse (its creator died before reserving its "
                 "space, or it is not shmkit's)", what);
        return reserve_space(s->fd, from, to, sparse);
    }
    uint64_t missing = (uint64_t)st.st_size - have, free_b = shk_fs_free_bytes(s->fd);
    if (missing > to - from)
        missing = to - from;
    if (missing > free_b)
        return shk_fail(ENOSPC, "%s: up to %llu of its bytes have no space reserved (it is "
                        "sparse) and only %llu bytes are free on its file system; a read-only "
                        "handle cannot reserve them, and touching them would end in SIGBUS",
                        what, (unsigned long long)missing, (unsigned long long)free_b);
    return 0;
}

/* The fd mappings are made through.  An object created unnamed (O_TMPFILE) keeps its
 * first fd, which holds its OFD locks; but /proc/PID/maps and smaps (lsof, shmkit's
 * inventory, whoever looks for the name) would show what is mapped through it as
 * "/dev/shm/#INO (deleted)": once published it is mapped through an fd opened by its
 * name instead (the same inode, checked).  That fd holds no locks, so a mapping never
 * keeps a lock alive after its handle closed the fd that holds them. */
static int mapping_fd(const struct shk_segment *s)
{
    return s->named_fd > 0 ? s->named_fd : s->fd;
}

/* Map map_len bytes of the object inside a reservation of `reserve` bytes. */
static int seg_map(struct shk_segment *s, size_t size, size_t reserve)
{
    int prot = (s->flags & SHK_O_RDONLY) ? PROT_READ : PROT_READ | PROT_WRITE;
    size_t map_len = round_page(size);
    reserve = round_page(reserve);
    if (reserve < map_len)
        reserve = map_len;
    if (reserve == 0)
        reserve = page_size(); /* an empty object still gets a (PROT_NONE) reservation */

    void *base;
    if (reserve > map_len) {
        base = mmap(NULL, reserve, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (base == MAP_FAILED)
            return shk_fail(errno, "mmap: cannot reserve %zu bytes of address space: %s",
                            reserve, strerror(errno));
        if (map_len) {
            void *p = mmap(base, map_len, prot, MAP_SHARED | MAP_FIXED, mapping_fd(s), 0);
            if (p == MAP_FAILED) {
                int e = errno;
                munmap(base, reserve);
                return shk_fail(e, "mmap: %s", strerror(e));
            }
        }
        s->own_reserve = 1;
    } else {
        base = mmap(NULL, map_len, prot, MAP_SHARED, mapping_fd(s), 0);
        if (base == MAP_FAILED)
            return shk_fail(errno, "mmap of %zu bytes: %s", map_len, strerror(errno));
        s->own_reserve = 1;
    }
    s->base = base;
    s->size = size;
    s->map_len = map_len;
    s->reserved = reserve;
    return 0;
}

/* What a file that is not a regular file is, for the message that refuses it. */
static const char *file_type_name(mode_t m)
{
    if (S_ISFIFO(m))
        return "a FIFO";
    if (S_ISDIR(m))
        return "a directory";
    if (S_ISSOCK(m))
        return "a socket";
    if (S_ISCHR(m))
        return "a character device";
    if (S_ISBLK(m))
        return "a block device";
    if (S_ISLNK(m))
        return "a symbolic link";
    return "not a regular file";
}

/*
 * Only regular files are mapped.  Objects are opened with O_NONBLOCK, so that a FIFO (or
 * a device) planted under the name cannot block open(2); this refuses it, and clears
 * O_NONBLOCK again on what is kept.  0, or EINVAL with a message naming what it is.
 */
static int check_regular(int fd, const char *what)
{
    struct stat st;
    if (fstat(fd, &st) != 0)
        return shk_fail(errno, "%s: fstat: %s", what, strerror(errno));
    if (!S_ISREG(st.st_mode))
        return shk_fail(EINVAL, "%s is not a regular file (it is %s); shmkit maps only "
                        "regular files", what, file_type_name(st.st_mode));
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0 && (fl & O_NONBLOCK))
        fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
    return 0;
}

/* open(2) failed: if something that is not a regular file is in the way, say what it is
 * (glibc's shm_open turns EISDIR into EINVAL, hence the lstat of `fspath`). */
static int refuse_open_error(int e, const char *call, const char *path, const char *fspath,
                             const char *what)
{
    struct stat st;
    if ((e == EISDIR || e == EINVAL || e == ENXIO) && lstat(fspath, &st) == 0 &&
        !S_ISREG(st.st_mode))
        return shk_fail(EINVAL, "%s is not a regular file (it is %s); shmkit maps only "
                        "regular files", what, file_type_name(st.st_mode));
    return shk_fail(e, "%s(%s): %s", call, path, strerror(e));
}

static int check_owner(struct shk_segment *s, uid_t uid, const char *what)
{
    if (uid != geteuid() && !(s->flags & SHK_O_ANYOWNER))
        return shk_fail(EACCES, "%s is owned by uid %u, not by this user (uid %u); "
                        "pass allow_other_owner=True to attach anyway", what, (unsigned)uid,
                        (unsigned)geteuid());
    return 0;
}

/* A new object carries its creator's OFD locks from the instant it exists, before it
 * has a size: whoever can open it sees a live creator (SHK_LOCKBYTE_* in layout.h).
 * File systems without OFD locks simply have none. */
static void take_creator_locks(int fd)
{
    shk_ofd_lock(fd, SHK_LOCKBYTE_SIZING, F_WRLCK, 0);
    shk_ofd_lock(fd, SHK_LOCKBYTE_CREATOR, F_WRLCK, 0);
    shk_ofd_lock(fd, SHK_LOCKBYTE_ATTACH, F_RDLCK, 0);
}

/* Waiting for an OFD byte lock, in the one wait shape (wait.h). */
static int ofd_attempt(void *obj, struct shk_wait *w)
{
    struct shk_ofd_wait *o = obj;
    int r = shk_ofd_lock(o->fd, o->offset, o->type, 0);
    if (r != EAGAIN)
        return r;
    shk_wait_on_ofd(w, o->fd, o->offset, o->type);
    return EAGAIN;
}

const struct shk_wait_op shk_ofd_lock_op = {"OFD lock", ofd_attempt, NULL, NULL};

/* An opener found the object empty: if its creator is still sizing it, wait for that
 * (queued on the creator's SIZING lock: no polling), then look again.  EINTR lets the
 * caller check for signals and open again; the caller looked at its signals just
 * before, so no return is due before the first sleep. */
static int wait_for_size(int fd, struct stat *st)
{
    struct shk_ofd_wait o = {fd, SHK_LOCKBYTE_SIZING, F_RDLCK};
    struct shk_wait w = SHK_WAIT_INIT(SHK_FOREVER, 0);
    w.next_return = shk_now_ns() + shk_wait_cfg.recheck_ns;
    int r = shk_wait_run(&shk_ofd_lock_op, &o, &w);
    if (r == EINTR)
        return EINTR;
    if (r == 0)
        shk_ofd_lock(fd, SHK_LOCKBYTE_SIZING, F_UNLCK, 0);
    if (fstat(fd, st) != 0)
        return errno;
    return 0;
}

/* Common tail for the fd backends: size the new object or learn the old one's size. */
static int fd_finish_open(struct shk_segment *s, size_t size, size_t reserve, unsigned mode,
                          const char *what, int (*undo)(const char *), const char *undo_arg)
{
    int r;
    struct stat st;
    if (s->created) {
        /* umask must not weaken or widen what was asked for */
        if (fchmod(s->fd, mode) != 0) {
            r = shk_fail(errno, "%s: fchmod: %s", what, strerror(errno));
            goto undo;
        }
        if (size) {
            if (s->kind == SHK_SEG_POSIX && (r = check_memory_size(size, what, s->fd)) != 0)
                goto undo;
            if (size > (size_t)INT64_MAX) {
                r = shk_fail(ENOSPC, "%s: cannot set size %zu: more than a file can hold",
                             what, size);
                goto undo;
            }
            if (ftruncate(s->fd, (off_t)size) != 0) {
                r = errno == EFBIG || errno == ENOSPC
                        ? shk_fail(ENOSPC, "%s: cannot set size %zu: %s", what, size, strerror(errno))
                        : shk_fail(errno, "%s: ftruncate: %s", what, strerror(errno));
                goto undo;
            }
            if ((r = reserve_space(s->fd, 0, size, what)) != 0)
                goto undo;
        }
        shk_ofd_lock(s->fd, SHK_LOCKBYTE_SIZING, F_UNLCK, 0); /* openers may look now */
    } else {
        if (fstat(s->fd, &st) != 0)
            return shk_fail(errno, "%s: fstat: %s", what, strerror(errno));
        if ((r = check_owner(s, st.st_uid, what)) != 0)
            return r;
        if (st.st_size == 0 && !(s->flags & SHK_O_ALLOWEMPTY) && (r = wait_for_size(s->fd, &st)))
            return shk_fail(r, "%s: waiting for its creator to size it: %s", what, strerror(r));
        if (st.st_size == 0 && !(s->flags & SHK_O_ALLOWEMPTY))
            return shk_fail(EINVAL, "%s exists but has size 0 (its creator may not have "
                            "finished creating it)", what);
        if (size && (size_t)st.st_size < size)
            return shk_fail(EINVAL, "%s exists with size %lld, smaller than the %zu bytes "
                            "asked for", what, (long long)st.st_size, size);
        size = (size_t)st.st_size;
        if ((r = ensure_space(s, 0, size, what)) != 0)
            return r;
    }
    if ((r = seg_map(s, size, reserve)) != 0)
        goto undo;
    return 0;
undo:
    if (s->created && undo && !s->publish_path)
        undo(undo_arg);
    return r;
}

static int unlink_posix_quiet(const char *name)
{
    char path[SHK_NAME_MAX + 2];
    snprintf(path, sizeof path, "/%s", name);
    return shm_unlink(path);
}

static int unlink_file_quiet(const char *path)
{
    return unlink(path);
}

/*
 * Creating without a window.  A new posix or file object is made without a name
 * (O_TMPFILE in its directory), takes its creator's locks, is sized and reserved, and
 * only then gets its name with linkat(2), which fails with EEXIST if the name was taken
 * meanwhile (as O_EXCL would have).  Nobody can open a half-made object: openers used to
 * find it empty ("exists but has size 0") or without its creator's record and locks,
 * and a creator SIGKILLed half-way left a broken object behind (now it leaves nothing).
 * File systems without O_TMPFILE get the old way: open(O_CREAT | O_EXCL) in place, the
 * creator's locks taken at once, openers waiting on the SIZING lock.
 */
struct fd_target {
    const char *what;       /* "POSIX segment 'x'", for messages */
    const char *call;       /* "shm_open" or "open" */
    const char *arg;        /* what `open_named` takes: "/x" (shm_open) or the path */
    const char *fspath;     /* the object's path in the file system */
    char dir[PATH_MAX];     /* its directory, where an unnamed object is made */
    int (*open_named)(const char *arg, int oflag, mode_t mode);
};

static int open_file_named(const char *path, int oflag, mode_t mode)
{
    return open(path, oflag | O_NOFOLLOW, mode);
}

/* After publishing: open the object by its name and map again through that fd what is
 * mapped (the same pages, MAP_FIXED over the old mapping, before anything else in this
 * process uses it).  Cosmetic: failing leaves the old mapping, which works the same. */
static void map_through_name(struct shk_segment *s)
{
    int fd = open(s->publish_path, ((s->flags & SHK_O_RDONLY) ? O_RDONLY : O_RDWR) |
                                       O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
    if (fd <= 0) /* 0: stdin was closed; not worth keeping */
        return;
    struct stat a, b;
    if (fstat(fd, &a) != 0 || fstat(s->fd, &b) != 0 || a.st_dev != b.st_dev ||
        a.st_ino != b.st_ino) {
        close(fd);
        return;
    }
    s->named_fd = fd;
    if (s->base && s->map_len) {
        int prot = (s->flags & SHK_O_RDONLY) ? PROT_READ : PROT_READ | PROT_WRITE;
        mmap(s->base, s->map_len, prot, MAP_SHARED | MAP_FIXED, fd, 0); /* same pages */
    }
}

/* Give an object made without a name its name.  0, EEXIST if the name is taken, errno. */
int shk_seg_publish(struct shk_segment *s)
{
    if (!s->publish_path)
        return 0;
    char proc[64];
    snprintf(proc, sizeof proc, "/proc/self/fd/%d", s->fd);
    if (linkat(AT_FDCWD, proc, AT_FDCWD, s->publish_path, AT_SYMLINK_FOLLOW) != 0) {
        int e = errno;
        if (e == EEXIST)
            return shk_fail(EEXIST, "%s: File exists (another process created it first)",
                            s->publish_path);
        return shk_fail(e, "linkat(%s): cannot give the new segment its name: %s",
                        s->publish_path, strerror(e));
    }
    map_through_name(s);
    free(s->publish_path);
    s->publish_path = NULL;
    return 0;
}

/* An unnamed new object in t->dir; -1 (errno) when the file system cannot make one. */
static int create_unnamed(struct shk_segment *s, const struct fd_target *t, unsigned mode)
{
    if (access("/proc/self/fd", X_OK) != 0) { /* publishing goes through /proc */
        errno = EOPNOTSUPP;
        return -1;
    }
    int fd = open(t->dir, O_TMPFILE | O_RDWR | O_CLOEXEC, mode & 0777);
    if (fd < 0)
        return -1;
    s->publish_path = strdup(t->fspath);
    if (!s->publish_path) {
        close(fd);
        errno = ENOMEM;
        return -1;
    }
    return fd;
}

/* One attempt to open or create; 0 with s->fd set (s->created, s->publish_path). */
static int open_or_create(struct shk_segment *s, const struct fd_target *t, int flags,
                          unsigned mode, int oflag)
{
    for (int attempt = 0; attempt < 100; attempt++) {
        if (!(flags & SHK_O_CREATE) || !(flags & SHK_O_EXCL)) {
            /* open what exists ("c" tries this first: the common case) */
            s->fd = t->open_named(t->arg, oflag, 0);
            if (s->fd >= 0)
                return 0;
            if (errno != ENOENT || !(flags & SHK_O_CREATE))
                return refuse_open_error(errno, t->call, t->arg, t->fspath, t->what);
        } else {
            struct stat st;
            if (lstat(t->fspath, &st) == 0) /* "x": fail before making anything */
                return shk_fail(EEXIST, "%s(%s): %s", t->call, t->arg, strerror(EEXIST));
        }
        s->fd = create_unnamed(s, t, mode);
        if (s->fd >= 0) {
            s->created = 1;
            take_creator_locks(s->fd);
            return 0;
        }
        if (errno != EOPNOTSUPP && errno != EISDIR && errno != EINVAL && errno != ENOENT)
            return shk_fail(errno, "open(%s, O_TMPFILE): %s", t->dir, strerror(errno));
        /* no O_TMPFILE here: create in place */
        s->fd = t->open_named(t->arg, oflag | O_CREAT | O_EXCL, mode & 0777);
        if (s->fd >= 0) {
            s->created = 1;
            take_creator_locks(s->fd);
            return 0;
        }
        if (errno != EEXIST || (flags & SHK_O_EXCL))
            return refuse_open_error(errno, t->call, t->arg, t->fspath, t->what);
        /* created by someone else between our two calls: open it */
    }
    return shk_fail(EAGAIN, "%s(%s): lost every race to create or open it", t->call, t->arg);
}

/* The common part of shk_seg_open_posix and shk_seg_open_file. */
static int open_fd_backend(struct shk_segment *s, const struct fd_target *t, int flags,
                           unsigned mode, size_t size, size_t reserve,
                           int (*undo)(const char *), const char *undo_arg)
{
    int r;
    int oflag = ((flags & SHK_O_RDONLY) ? O_RDONLY : O_RDWR) | O_CLOEXEC | O_NONBLOCK;
    if ((flags & SHK_O_CREATE) && size == 0 && !(flags & SHK_O_ALLOWEMPTY))
        return shk_fail(EINVAL, "%s: size must be > 0 to create it", t->what);
    if ((flags & SHK_O_CREATE) && (flags & SHK_O_RDONLY))
        return shk_fail(EINVAL, "%s: cannot create a segment read-only", t->what);
    for (int attempt = 0; attempt < 100; attempt++) {
        if ((r = open_or_create(s, t, flags, mode, oflag)) != 0)
            return r;
        r = check_regular(s->fd, t->what);
        if (r == 0)
            r = fd_finish_open(s, size, reserve, mode & 0777, t->what, undo, undo_arg);
        if (r == 0 && s->publish_path && !(flags & SHK_O_PUBLISH_LATER)) {
            r = shk_seg_publish(s);
            if (r == EEXIST && !(flags & SHK_O_EXCL)) {
                shk_seg_close(s); /* someone else's is there now: open that one */
                s->created = 0;
                shk_clear_detail();
                continue;
            }
        }
        if (r) {
            shk_seg_close(s);
            s->created = 0;
        }
        return r;
    }
    return shk_fail(EAGAIN, "%s(%s): lost every race to create or open it", t->call, t->arg);
}

int shk_seg_open_posix(struct shk_segment *s, const char *name, int flags, unsigned mode,
                       size_t size, size_t reserve)
{
    int r;
    char path[SHK_NAME_MAX + 2], what[SHK_NAME_MAX + 32], fspath[SHK_NAME_MAX + 16];
    seg_reset(s, SHK_SEG_POSIX, flags);
    shk_clear_detail();
    if ((r = shk_seg_check_name(name)) != 0)
        return r;
    snprintf(path, sizeof path, "/%s", name);
    snprintf(what, sizeof what, "POSIX segment '%s'", name);
    snprintf(fspath, sizeof fspath, "/dev/shm/%s", name); /* where glibc's shm_open puts it */
    struct fd_target t = {what, "shm_open", path, fspath, "/dev/shm", shm_open};
    return open_fd_backend(s, &t, flags, mode, size, reserve, unlink_posix_quiet, name);
}

int shk_seg_open_file(struct shk_segment *s, const char *path, int flags, unsigned mode,
                      size_t size, size_t reserve)
{
    char what[PATH_MAX + 32];
    seg_reset(s, SHK_SEG_FILE, flags);
    shk_clear_detail();
    if (!path || !*path)
        return shk_fail(SHK_ENAME, "file path is empty");
    snprintf(what, sizeof what, "file segment '%s'", path);
    struct fd_target t = {what, "open", path, path, "", open_file_named};
    const char *slash = strrchr(path, '/');
    if (!slash)
        snprintf(t.dir, sizeof t.dir, ".");
    else if (slash == path)
        snprintf(t.dir, sizeof t.dir, "/");
    else
        snprintf(t.dir, sizeof t.dir, "%.*s", (int)(slash - path), path);
    int r = open_fd_backend(s, &t, flags, mode, size, reserve, unlink_file_quiet, path);
    if (r == ELOOP)
        return shk_fail(ELOOP, "%s is a symbolic link; shmkit does not follow links", what);
    return r;
}

static unsigned long long read_proc_ull(const char *path)
{
    unsigned long long v = 0;
    FILE *f = fopen(path, "r");
    if (f) {
        if (fscanf(f, "%llu", &v) != 1)
            v = 0;
        fclose(f);
    }
    return v;
}

/* Segments and pages of SysV shared memory in use now (from /proc/sysvipc/shm). */
static void sysv_usage(unsigned long long *segments, unsigned long long *pages)
{
    char line[512];
    unsigned long long n = 0, bytes = 0;
    FILE *f = fopen("/proc/sysvipc/shm", "r");
    if (f) {
        if (fgets(line, sizeof line, f)) { /* header */
            while (fgets(line, sizeof line, f)) {
                long long key;
                int id;
                unsigned perms;
                unsigned long long size;
                if (sscanf(line, "%lld %d %o %llu", &key, &id, &perms, &size) == 4) {
                    n++;
                    bytes += size;
                }
            }
        }
        fclose(f);
    }
    *segments = n;
    *pages = (bytes + page_size() - 1) / page_size();
}

/* The error for a shmget() that a system limit refused: names every limit with its
 * current value, so the fix (sysctl kernel.shm*) is obvious from the message. */
static int sysv_limit_error(int e, size_t size)
{
    unsigned long long shmmax = read_proc_ull("/proc/sys/kernel/shmmax");
    unsigned long long shmall = read_proc_ull("/proc/sys/kernel/shmall");
    unsigned long long shmmni = read_proc_ull("/proc/sys/kernel/shmmni");
    unsigned long long nseg, npages;
    sysv_usage(&nseg, &npages);
    const char *why;
    char machine[160];
    int code;
    switch (e) {
    case 0: { /* refused before asking: more than RAM + swap */
        unsigned long long ram = 0, swap = 0;
        machine_memory(&ram, &swap);
        snprintf(machine, sizeof machine, "it is more than this machine can hold (%llu bytes "
                 "of RAM and %llu bytes of swap)", ram, swap);
        why = machine;
        code = ENOSPC;
        break;
    }
    case EINVAL:
        why = "the size is outside [SHMMIN = 1, kernel.shmmax]";
        code = EINVAL;
        break;
    case ENOMEM:
        why = "the kernel cannot commit that much memory (see vm.overcommit_memory)";
        code = ENOMEM;
        break;
    default:
        why = "a system-wide limit (kernel.shmmni segments or kernel.shmall pages) would be "
              "exceeded";
        code = ENOSPC;
        break;
    }
    return shk_fail(code, "shmget: cannot create a SysV segment of %zu bytes: %s; limits: "
                    "kernel.shmmax = %llu bytes per segment, kernel.shmall = %llu pages in all "
                    "(%llu in use), kernel.shmmni = %llu segments (%llu in use)",
                    size, why, shmmax, shmall, npages, shmmni, nseg);
}

/* The segment shmid was removed (and destroyed at its last detach) between finding it
 * by key and using it: IPC_STAT and shmat then fail with EINVAL or EIDRM. */
static int vanished(int e, const struct shk_segment *s, int by_key)
{
    return by_key && !s->created && (e == EINVAL || e == EIDRM);
}

int shk_seg_open_sysv(struct shk_segment *s, int key, int shmid, int flags, unsigned mode,
                      size_t size)
{
    int r;
    char what[64];
    seg_reset(s, SHK_SEG_SYSV, flags);
    shk_clear_detail();
    int by_key = shmid < 0;
    if (by_key)
        snprintf(what, sizeof what, "SysV segment key 0x%08x", (unsigned)key);
    else
        snprintf(what, sizeof what, "SysV segment id %d", shmid);
    /* opening by key races with its removal: a segment found by shmget may be gone a
     * moment later; look it up again (a removed key is then ENOENT, or created anew) */
    for (int attempt = 0; attempt < 100; attempt++) {
        s->shmid = shmid;
        s->created = 0;
        if (by_key) {
            if (flags & SHK_O_CREATE) {
                if (size == 0)
                    return shk_fail(EINVAL, "%s: size must be > 0 to create it", what);
                if (!fits_in_memory(size))
                    return sysv_limit_error(0, size);
                s->shmid = shmget((key_t)key, size, IPC_CREAT | IPC_EXCL | (int)(mode & 0777));
                if (s->shmid >= 0)
                    s->created = 1;
                else if (errno == EINVAL || errno == ENOSPC || errno == ENOMEM)
                    return sysv_limit_error(errno, size);
                else if (errno != EEXIST || (flags & SHK_O_EXCL))
                    return shk_fail(errno, "shmget(%s): %s", what, strerror(errno));
            }
            if (s->shmid < 0) {
                s->shmid = shmget((key_t)key, 0, 0);
                if (s->shmid < 0) {
                    if (errno == ENOENT && (flags & SHK_O_CREATE))
                        continue; /* removed between our two calls: create it */
                    return shk_fail(errno, "shmget(%s): %s", what, strerror(errno));
                }
            }
        }
        struct shmid_ds ds;
        if (shmctl(s->shmid, IPC_STAT, &ds) != 0) {
            if (vanished(errno, s, by_key))
                continue;
            r = shk_fail(errno, "shmctl(%s, IPC_STAT): %s", what, strerror(errno));
            goto fail;
        }
        if (!s->created) {
            if ((r = check_owner(s, ds.shm_perm.uid, what)) != 0)
                goto fail;
            if (size && ds.shm_segsz < size) {
                r = shk_fail(EINVAL, "%s exists with size %zu, smaller than the %zu bytes "
                             "asked for", what, (size_t)ds.shm_segsz, size);
                goto fail;
            }
        }
        void *base = shmat(s->shmid, NULL, (flags & SHK_O_RDONLY) ? SHM_RDONLY : 0);
        if (base == (void *)-1) {
            if (vanished(errno, s, by_key))
                continue;
            r = shk_fail(errno, "shmat(%s): %s", what, strerror(errno));
            goto fail;
        }
        s->base = base;
        s->size = ds.shm_segsz;
        s->map_len = round_page(ds.shm_segsz);
        s->reserved = s->map_len;
        return 0;
    }
    return shk_fail(EAGAIN, "%s: it kept being removed and created again while it was "
                    "being opened", what);
fail:
    if (s->created)
        shmctl(s->shmid, IPC_RMID, NULL);
    s->shmid = -1;
    return r;
}

int shk_seg_create_memfd(struct shk_segment *s, const char *name, size_t size,
                         unsigned seals, size_t reserve)
{
    int r;
    seg_reset(s, SHK_SEG_MEMFD, SHK_O_CREATE);
    shk_clear_detail();
    if (size == 0)
        return shk_fail(EINVAL, "memfd segment: size must be > 0");
    if ((r = check_memory_size(size, "memfd segment", -1)) != 0)
        return r;
    s->fd = memfd_create(name && *name ? name : "shmkit", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (s->fd < 0)
        return shk_fail(errno, "memfd_create: %s", strerror(errno));
    s->created = 1;
    if (ftruncate(s->fd, (off_t)size) != 0) {
        r = shk_fail(errno == EFBIG ? ENOSPC : errno, "memfd segment: ftruncate(%zu): %s", size,
                     strerror(errno));
        goto fail;
    }
    if ((r = reserve_space(s->fd, 0, size, "memfd segment")) != 0)
        goto fail;
    /* write seals must come after mapping (a shared writable mapping blocks F_SEAL_WRITE),
     * so a write-sealed memfd is mapped read-only by everyone, creator included */
    if (seals & F_SEAL_WRITE)
        s->flags |= SHK_O_RDONLY;
    if (seals && fcntl(s->fd, F_ADD_SEALS, (int)seals) != 0) {
        r = shk_fail(errno, "memfd segment: F_ADD_SEALS: %s", strerror(errno));
        goto fail;
    }
    if ((r = seg_map(s, size, reserve)) != 0)
        goto fail;
    return 0;
fail:
    close(s->fd);
    s->fd = -1;
    return r;
}

int shk_seg_open_fd(struct shk_segment *s, int fd, int flags, size_t reserve)
{
    int r;
    struct stat st;
    seg_reset(s, SHK_SEG_MEMFD, flags & ~(SHK_O_CREATE | SHK_O_EXCL));
    shk_clear_detail();
    if (fstat(fd, &st) != 0)
        return shk_fail(errno, "fstat(fd %d): %s", fd, strerror(errno));
    if (!S_ISREG(st.st_mode))
        return shk_fail(EINVAL, "fd %d is not a memory file or regular file", fd);
    if (st.st_size == 0)
        return shk_fail(EINVAL, "fd %d refers to an object of size 0", fd);
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0 && (fl & O_ACCMODE) == O_RDONLY)
        s->flags |= SHK_O_RDONLY;
    int sealed = fcntl(fd, F_GET_SEALS);
    if (sealed > 0 && (sealed & (F_SEAL_WRITE | F_SEAL_FUTURE_WRITE)))
        s->flags |= SHK_O_RDONLY;
    s->fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (s->fd < 0)
        return shk_fail(errno, "dup(fd %d): %s", fd, strerror(errno));
    if ((r = seg_map(s, (size_t)st.st_size, reserve)) != 0) {
        close(s->fd);
        s->fd = -1;
    }
    return r;
}

int shk_seg_create_anon(struct shk_segment *s, size_t size)
{
    seg_reset(s, SHK_SEG_ANON, SHK_O_CREATE);
    shk_clear_detail();
    if (size == 0)
        return shk_fail(EINVAL, "anonymous segment: size must be > 0");
    int r = check_memory_size(size, "anonymous segment", -1);
    if (r)
        return r;
    size_t map_len = round_page(size);
    void *base = mmap(NULL, map_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (base == MAP_FAILED)
        return shk_fail(errno, "mmap(anonymous, %zu): %s", size, strerror(errno));
    s->created = 1;
    s->base = base;
    s->size = size;
    s->map_len = map_len;
    s->reserved = map_len;
    s->own_reserve = 1;
    return 0;
}

int shk_seg_object_size(const struct shk_segment *s, size_t *size)
{
    if (s->kind == SHK_SEG_SYSV) {
        struct shmid_ds ds;
        if (shmctl(s->shmid, IPC_STAT, &ds) != 0)
            return shk_fail(errno, "shmctl(IPC_STAT): %s", strerror(errno));
        *size = ds.shm_segsz;
        return 0;
    }
    if (s->fd < 0) {
        *size = s->size;
        return 0;
    }
    struct stat st;
    if (fstat(s->fd, &st) != 0)
        return shk_fail(errno, "fstat: %s", strerror(errno));
    *size = (size_t)st.st_size;
    return 0;
}

int shk_sysv_stat(int shmid, struct shk_seg_stat *st)
{
    struct shmid_ds ds;
    memset(st, 0, sizeof *st);
    if (shmctl(shmid, IPC_STAT, &ds) != 0)
        return shk_fail(errno, "shmctl(%d, IPC_STAT): %s%s", shmid, strerror(errno),
                        errno == EINVAL || errno == EIDRM
                            ? " (no such segment: it was removed, e.g. by ipcrm)" : "");
    st->size = ds.shm_segsz;
    st->uid = ds.shm_perm.uid;
    st->gid = ds.shm_perm.gid;
    st->cuid = ds.shm_perm.cuid;
    st->cgid = ds.shm_perm.cgid;
    st->mode = ds.shm_perm.mode & 07777;
    st->key = (int32_t)ds.shm_perm.__key;
    st->cpid = ds.shm_cpid;
    st->lpid = ds.shm_lpid;
    st->nattch = ds.shm_nattch;
    st->atime = ds.shm_atime;
    st->dtime = ds.shm_dtime;
    st->ctime = ds.shm_ctime;
    st->removed = (ds.shm_perm.mode & SHK_SHM_DEST) != 0;
    return 0;
}

int shk_sysv_find(int key, int *shmid)
{
    int id = shmget((key_t)key, 0, 0);
    if (id < 0)
        return shk_fail(errno, "shmget(key 0x%08x): %s", (unsigned)key, strerror(errno));
    *shmid = id;
    return 0;
}

int shk_seg_stat(const struct shk_segment *s, struct shk_seg_stat *st)
{
    if (!s->base)
        return shk_fail(SHK_ECLOSED, "segment is closed");
    if (s->kind == SHK_SEG_SYSV)
        return shk_sysv_stat(s->shmid, st);
    memset(st, 0, sizeof *st);
    st->cpid = st->lpid = -1;
    if (s->fd < 0) { /* anonymous: only what this process knows */
        st->size = s->size;
        st->uid = st->cuid = geteuid();
        st->gid = st->cgid = getegid();
        st->mode = 0600;
        return 0;
    }
    struct stat fs;
    if (fstat(s->fd, &fs) != 0)
        return shk_fail(errno, "fstat: %s", strerror(errno));
    st->size = (uint64_t)fs.st_size;
    st->uid = st->cuid = fs.st_uid;
    st->gid = st->cgid = fs.st_gid;
    st->mode = fs.st_mode & 07777;
    st->atime = fs.st_atime;
    st->ctime = fs.st_ctime;
    st->dev = fs.st_dev;
    st->ino = fs.st_ino;
    return 0;
}

/* Map [s->map_len, round_page(new_size)) in place. Caller holds remap_lock. */
static int extend_in_place(struct shk_segment *s, size_t new_size)
{
    size_t new_len = round_page(new_size);
    if (new_len > s->map_len) {
        if (new_len > s->reserved)
            return shk_fail(SHK_ENOGROW, "segment: %zu bytes do not fit in the %zu bytes of "
                            "address space reserved when it was mapped", new_size, s->reserved);
        int prot = (s->flags & SHK_O_RDONLY) ? PROT_READ : PROT_READ | PROT_WRITE;
        void *p = mmap(s->base + s->map_len, new_len - s->map_len, prot, MAP_SHARED | MAP_FIXED,
                       mapping_fd(s), (off_t)s->map_len);
        if (p == MAP_FAILED)
            return shk_fail(errno, "mmap (extend): %s", strerror(errno));
        s->map_len = new_len;
    }
    s->size = new_size;
    return 0;
}

/*
 * Follow a shrink made by another process.  The pages past the new end would kill this
 * process with SIGBUS on their next touch (a view, a zone's structure): map zeros over
 * them instead (private, anonymous), so a stale view reads zeros and nothing dies; the
 * handle's size becomes the object's.  Growing again maps the object back over them.
 * Caller holds remap_lock.
 */
static int follow_shrink(struct shk_segment *s, size_t now)
{
    size_t keep = round_page(now);
    if (keep < s->map_len) {
        int prot = (s->flags & SHK_O_RDONLY) ? PROT_READ : PROT_READ | PROT_WRITE;
        void *p = mmap(s->base + keep, s->map_len - keep, prot,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED, -1, 0);
        if (p == MAP_FAILED)
            return shk_fail(errno, "segment: mapping zeros over the %zu bytes another process "
                            "cut off: %s", s->map_len - keep, strerror(errno));
        s->map_len = keep;
    }
    s->size = now;
    return 0;
}

int shk_seg_refresh(struct shk_segment *s)
{
    size_t now;
    int r;
    if (!s->base)
        return shk_fail(SHK_ECLOSED, "segment is closed");
    if (s->kind == SHK_SEG_SYSV || s->kind == SHK_SEG_ANON)
        return 0;
    if ((r = shk_seg_object_size(s, &now)) != 0)
        return r;
    pthread_mutex_lock(&s->remap_lock);
    if (now > s->size) {
        /* grown by another process: its grower reserved the space, unless it died in
         * between (then we reserve it, or refuse a read-only extension) */
        r = ensure_space(s, s->size, now, "segment (following its growth by another process)");
        if (r == 0)
            r = extend_in_place(s, now);
    } else if (now < s->size) {
        r = follow_shrink(s, now);
    }
    pthread_mutex_unlock(&s->remap_lock);
    return r;
}

int shk_seg_resize(struct shk_segment *s, size_t new_size, int may_move)
{
    int r = 0;
    shk_clear_detail();
    if (!s->base)
        return shk_fail(SHK_ECLOSED, "segment is closed");
    if (s->kind == SHK_SEG_SYSV || s->kind == SHK_SEG_ANON)
        return shk_fail(ENOTSUP, "%s segments have a fixed size",
                        s->kind == SHK_SEG_SYSV ? "SysV" : "anonymous");
    if (s->flags & SHK_O_RDONLY)
        return shk_fail(EBADF, "segment is mapped read-only; it cannot be resized");
    if (new_size == 0)
        return shk_fail(EINVAL, "segment size must be > 0");
    pthread_mutex_lock(&s->remap_lock);
    size_t old = 0;
    if ((r = shk_seg_object_size(s, &old)) != 0)
        goto out;
    /* this handle knows that [0, s->size) has its space (it reserved or checked it); the
     * object may be larger, grown by a process that died before reserving */
    size_t known = old < s->size ? old : s->size;
    if (new_size > old) {
        if (s->kind != SHK_SEG_FILE && (r = check_memory_size(new_size, "segment resize", s->fd)) != 0)
            goto out;
        if (new_size > (size_t)INT64_MAX) {
            r = shk_fail(ENOSPC, "segment resize: %zu bytes is more than a file can hold",
                         new_size);
            goto out;
        }
        if (round_page(new_size) > s->reserved && !may_move) {
            r = shk_fail(SHK_ENOGROW, "segment: %zu bytes do not fit in the %zu bytes of address "
                         "space reserved when it was mapped", new_size, s->reserved);
            goto out;
        }
        if (ftruncate(s->fd, (off_t)new_size) != 0) {
            r = shk_fail(errno == EPERM ? EPERM : errno, "ftruncate(%zu): %s%s", new_size,
                         strerror(errno), errno == EPERM ? " (the memfd is sealed)" : "");
            goto out;
        }
        if ((r = reserve_space(s->fd, old, new_size, "segment resize")) != 0 ||
            (r = ensure_space(s, known, old, "segment resize")) != 0) {
            if (ftruncate(s->fd, (off_t)old) != 0) { /* leave it as it was */ }
            goto out;
        }
    } else {
        if (new_size < old && ftruncate(s->fd, (off_t)new_size) != 0) {
            r = shk_fail(errno, "ftruncate(%zu): %s%s", new_size, strerror(errno),
                         errno == EPERM ? " (the memfd is sealed)" : "");
            goto out;
        }
        if ((r = ensure_space(s, known, new_size, "segment resize")) != 0)
            goto out;
    }
    size_t new_len = round_page(new_size);
    if (new_len <= s->reserved) {
        if (new_len < s->map_len) {
            /* give the tail back to the reservation: PROT_NONE, so a stray touch faults
             * here and now instead of as a SIGBUS somewhere later */
            void *p = mmap(s->base + new_len, s->map_len - new_len, PROT_NONE,
                           MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED, -1, 0);
            if (p == MAP_FAILED) {
                r = shk_fail(errno, "mmap (shrink): %s", strerror(errno));
                goto out;
            }
            s->map_len = new_len;
            s->size = new_size;
        } else {
            r = extend_in_place(s, new_size);
        }
    } else {
        /* beyond the reservation: the mapping moves (caller made sure nothing points in) */
        int prot = (s->flags & SHK_O_RDONLY) ? PROT_READ : PROT_READ | PROT_WRITE;
        void *p = mmap(NULL, new_len, prot, MAP_SHARED, mapping_fd(s), 0);
        if (p == MAP_FAILED) {
            r = shk_fail(errno, "mmap (move): %s", strerror(errno));
            goto out;
        }
        munmap(s->base, s->reserved);
        s->base = p;
        s->map_len = s->reserved = new_len;
        s->size = new_size;
    }
out:
    pthread_mutex_unlock(&s->remap_lock);
    return r;
}

int shk_seg_remap(struct shk_segment *s)
{
    shk_clear_detail();
    if (!s->base)
        return shk_fail(SHK_ECLOSED, "segment is closed");
    if (s->fd < 0 || s->map_len == 0)
        return 0;
    if (pthread_mutex_trylock(&s->remap_lock) != 0)
        return shk_fail(EBUSY, "segment: remap while another thread resizes it");
    int prot = (s->flags & SHK_O_RDONLY) ? PROT_READ : PROT_READ | PROT_WRITE;
    int r = 0;
    void *p = mmap(s->base, s->map_len, prot, MAP_SHARED | MAP_FIXED, mapping_fd(s), 0);
    if (p == MAP_FAILED)
        r = shk_fail(errno, "mmap (remap): %s", strerror(errno));
    pthread_mutex_unlock(&s->remap_lock);
    return r;
}

int shk_seg_rereserve(struct shk_segment *s, size_t reserve)
{
    if (!s->base)
        return shk_fail(SHK_ECLOSED, "segment is closed");
    if (s->fd < 0)
        return shk_fail(ENOTSUP, "only fd-backed segments can be re-reserved");
    if (round_page(reserve) <= s->reserved)
        return 0;
    struct shk_segment t = *s;
    t.base = NULL;
    int r = seg_map(&t, s->size, reserve);
    if (r)
        return r;
    munmap(s->base, s->reserved);
    s->base = t.base;
    s->map_len = t.map_len;
    s->reserved = t.reserved;
    s->own_reserve = t.own_reserve;
    return 0;
}

int shk_seg_close(struct shk_segment *s)
{
    if (s->base) {
        if (s->kind == SHK_SEG_SYSV)
            shmdt(s->base);
        else
            munmap(s->base, s->reserved);
        s->base = NULL;
    }
    if (s->fd >= 0) {
        close(s->fd);
        s->fd = -1;
    }
    if (s->named_fd > 0)
        close(s->named_fd);
    s->named_fd = 0;
    free(s->publish_path); /* never published: the object goes with its last fd */
    s->publish_path = NULL;
    s->size = s->map_len = s->reserved = 0;
    return 0;
}

int shk_seg_unlink_posix(const char *name)
{
    int r;
    char path[SHK_NAME_MAX + 2];
    shk_clear_detail();
    if ((r = shk_seg_check_name(name)) != 0)
        return r;
    snprintf(path, sizeof path, "/%s", name);
    if (shm_unlink(path) != 0)
        return shk_fail(errno, "shm_unlink(%s): %s", path, strerror(errno));
    return 0;
}

int shk_seg_rmid(int shmid)
{
    shk_clear_detail();
    if (shmctl(shmid, IPC_RMID, NULL) != 0)
        return shk_fail(errno, "shmctl(%d, IPC_RMID): %s", shmid, strerror(errno));
    return 0;
}

int shk_ofd_lock(int fd, uint64_t offset, int type, int wait)
{
    struct flock fl;
    memset(&fl, 0, sizeof fl);
    fl.l_type = (short)type;
    fl.l_whence = SEEK_SET;
    fl.l_start = (off_t)offset;
    fl.l_len = 1;
    if (fcntl(fd, wait ? F_OFD_SETLKW : F_OFD_SETLK, &fl) == 0)
        return 0;
    if (errno == EAGAIN || errno == EACCES)
        return EAGAIN;
    return errno;
}

int shk_ofd_probe(int fd, uint64_t offset, int type, int *conflict)
{
    struct flock fl;
    memset(&fl, 0, sizeof fl);
    fl.l_type = (short)type;
    fl.l_whence = SEEK_SET;
    fl.l_start = (off_t)offset;
    fl.l_len = 1;
    if (fcntl(fd, F_OFD_GETLK, &fl) != 0)
        return errno;
    *conflict = fl.l_type != F_UNLCK;
    return 0;
}
