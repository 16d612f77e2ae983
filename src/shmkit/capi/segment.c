/*
 * segment.c (C API) - POSIX segments, with the attach protocol of Python's Segment.
 *
 * The core maps the object; what Python's segment.py adds around it, a C process must
 * do too, or Python processes would misjudge it (docs/segments.md, shmkit/_lifecycle.py):
 *
 *   - every attached handle holds a read OFD lock on SHK_LOCKBYTE_ATTACH of its own open
 *     file description (the core takes it for a creator; an opener takes it here), so
 *     "is anybody attached?" (lifecycle unlink_on_last_close, `shmkit ls`) counts C
 *     processes too;
 *   - an opener waits on that lock while a remover holds it for writing, then checks
 *     that the name still refers to the object it opened (else it was removed under it:
 *     try again when creating, ENOENT otherwise);
 *   - a creator writes shmkit's record on the object (xattr user.shmkit: lifecycle
 *     "persist", creator pid and start time, creation time), so `shmkit ls` knows it as
 *     shmkit's; attaches and detaches are noted (user.shmkit.attach / .detach) where
 *     there is a record; a removal by shmkit is marked (user.shmkit.removed) just before
 *     the unlink, so that it is not reported as "vanished".
 * Where the file system refuses user xattrs (tmpfs before Linux 6.6), Python falls back
 * to a registry file for its records; this library then simply writes none (the
 * segment works, `shmkit ls` lists it as not shmkit's).  SHMKIT_XATTR=0 disables them,
 * as in Python.
 */
#include "capi.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "errors.h"
#include "futex.h"
#include "layout.h"
#include "proc.h"

#define SHM_DIR "/dev/shm/"
#define XATTR_RECORD "user.shmkit"
#define XATTR_ATTACH "user.shmkit.attach"
#define XATTR_DETACH "user.shmkit.detach"
#define XATTR_REMOVED "user.shmkit.removed"

static int xattrs_enabled(void)
{
    const char *v = getenv("SHMKIT_XATTR");
    return !(v && strcmp(v, "0") == 0);
}

/* "pid start time_ns": who attached, detached or removed last (best effort). */
static void note_event(int fd, const char *path, const char *attr)
{
    if (!xattrs_enabled())
        return;
    char v[80];
    int n = snprintf(v, sizeof v, "%d %llu %llu", (int)shk_self_pid(),
                     (unsigned long long)shk_self_start(), (unsigned long long)shk_wall_ns());
    if (fd >= 0)
        (void)fsetxattr(fd, attr, v, (size_t)n, 0);
    else
        (void)lsetxattr(path, attr, v, (size_t)n, 0);
}

/* The creator's record, as shmkit/_lifecycle.py encodes it (short keys, no spaces). */
static int write_record(int fd)
{
    if (!xattrs_enabled())
        return 0;
    char v[200];
    int n = snprintf(v, sizeof v,
                     "{\"shmkit\":1,\"lifecycle\":\"persist\",\"pid\":%d,\"start\":%llu,"
                     "\"ns\":%llu,\"uid\":%u}",
                     (int)shk_self_pid(), (unsigned long long)shk_self_start(),
                     (unsigned long long)shk_wall_ns(), (unsigned)geteuid());
    return fsetxattr(fd, XATTR_RECORD, v, (size_t)n, 0) == 0;
}

static int has_record(int fd)
{
    return xattrs_enabled() && fgetxattr(fd, XATTR_RECORD, NULL, 0) > 0;
}

static void path_of(char *path, size_t cap, const char *name)
{
    snprintf(path, cap, SHM_DIR "%s", name);
}

/* Does /dev/shm/NAME still refer to the object s opened? */
static int same_file(const struct shmkit_segment *s)
{
    char path[sizeof SHM_DIR + SHMKIT_SEGMENT_NAME_MAX];
    struct stat st;
    path_of(path, sizeof path, s->name);
    return lstat(path, &st) == 0 && st.st_dev == s->dev && st.st_ino == s->ino;
}

/* The opener's read lock on the attach byte (waits while a remover holds it: that lasts
 * microseconds).  File systems without OFD locks have none (as in Python). */
static int hold_attach(int fd)
{
    int r;
    do
        r = shk_ofd_lock(fd, SHK_LOCKBYTE_ATTACH, F_RDLCK, 1);
    while (r == EINTR);
    if (r == ENOLCK || r == EOPNOTSUPP || r == EINVAL)
        return 0;
    return r;
}

int shk_capi_segment_open(struct shmkit_segment *s, const char *name, int flags, size_t size,
                          unsigned mode, size_t reserve)
{
    int r;
    if (!name)
        return shk_fail(SHK_ENAME, "segment name is NULL");
    if (name[0] == '/')
        name++;
    if ((r = shk_seg_check_name(name)) != 0)
        return r;
    if (mode > 0777)
        return shk_fail(EINVAL, "mode 0%o is not permission bits (at most 0777)", mode);
    memset(s, 0, sizeof *s);
    strcpy(s->name, name); /* checked: at most SHMKIT_SEGMENT_NAME_MAX bytes */
    for (int attempt = 0; attempt < 100; attempt++) {
        r = shk_seg_open_posix(&s->seg, name, flags, mode ? mode : 0600, size, reserve);
        if (r == EINTR) /* waiting for a creator to size it was interrupted: again */
            continue;
        if (r)
            return r;
        struct stat st;
        if (fstat(s->seg.fd, &st) != 0) {
            r = shk_fail(errno, "POSIX segment '%s': fstat: %s", name, strerror(errno));
            shk_seg_close(&s->seg);
            return r;
        }
        s->dev = st.st_dev;
        s->ino = st.st_ino;
        if (s->seg.created) { /* the core took the creator's locks as it created it */
            s->has_record = write_record(s->seg.fd);
            if (s->has_record)
                note_event(s->seg.fd, NULL, XATTR_ATTACH);
            return 0;
        }
        if ((r = hold_attach(s->seg.fd)) != 0) {
            shk_seg_close(&s->seg);
            return shk_fail(r, "POSIX segment '%s': attach lock: %s", name, strerror(r));
        }
        if (!same_file(s)) {
            shk_seg_close(&s->seg);
            if (flags & SHK_O_CREATE)
                continue; /* removed under us: create a fresh one */
            return shk_fail(ENOENT, "POSIX segment '%s' was removed while it was being opened",
                            name);
        }
        s->has_record = has_record(s->seg.fd);
        if (s->has_record && !(flags & SHK_O_RDONLY))
            note_event(s->seg.fd, NULL, XATTR_ATTACH);
        return 0;
    }
    return shk_fail(EAGAIN, "POSIX segment '%s': lost every race to open it (it kept being "
                    "removed and created again)", name);
}

void shk_capi_segment_close(struct shmkit_segment *s)
{
    if (s->seg.fd >= 0 && s->has_record && !(s->seg.flags & SHK_O_RDONLY))
        note_event(s->seg.fd, NULL, XATTR_DETACH);
    shk_seg_close(&s->seg);
}

static int remove_name(const char *name)
{
    char path[sizeof SHM_DIR + SHMKIT_SEGMENT_NAME_MAX];
    path_of(path, sizeof path, name);
    note_event(-1, path, XATTR_REMOVED); /* shmkit removed it: not "vanished" */
    return shk_seg_unlink_posix(name);
}

int shk_capi_segment_remove(struct shmkit_segment *s)
{
    if (!same_file(s))
        return shk_fail(ENOENT, "POSIX segment '%s' was already removed (or its name now "
                        "refers to another segment)", s->name);
    return remove_name(s->name);
}

/* ---- the public functions ----------------------------------------------------------------- */

SHMKIT_API int shmkit_segment_open(const char *name, int flags, size_t size, unsigned mode,
                                   shmkit_segment **out)
{
    shk_clear_detail();
    if (!out)
        return shk_capi_null("shmkit_segment_open", "out");
    *out = NULL;
    shk_capi_init();
    int r = shk_capi_check_flags("shmkit_segment_open", flags,
                                 SHMKIT_CREATE | SHMKIT_EXCL | SHMKIT_RDONLY | SHMKIT_ANYOWNER);
    if (r)
        return r;
    if ((flags & SHMKIT_EXCL) && !(flags & SHMKIT_CREATE))
        return shk_fail(EINVAL, "shmkit_segment_open(): SHMKIT_EXCL needs SHMKIT_CREATE");
    struct shmkit_segment *s = malloc(sizeof *s);
    if (!s)
        return shk_fail(ENOMEM, "shmkit_segment_open(): out of memory");
    if ((r = shk_capi_segment_open(s, name, flags, size, mode, 0)) != 0) {
        free(s);
        return r;
    }
    *out = s;
    return 0;
}

SHMKIT_API void *shmkit_segment_ptr(const shmkit_segment *seg)
{
    return seg ? seg->seg.base : NULL;
}

SHMKIT_API size_t shmkit_segment_size(const shmkit_segment *seg)
{
    return seg ? seg->seg.size : 0;
}

SHMKIT_API int shmkit_segment_created(const shmkit_segment *seg)
{
    return seg ? seg->seg.created : 0;
}

SHMKIT_API int shmkit_segment_close(shmkit_segment *seg)
{
    if (seg) {
        shk_capi_segment_close(seg);
        pthread_mutex_destroy(&seg->seg.remap_lock);
        free(seg);
    }
    return 0;
}

SHMKIT_API int shmkit_segment_unlink(const char *name)
{
    shk_clear_detail();
    if (!name)
        return shk_fail(SHK_ENAME, "segment name is NULL");
    if (name[0] == '/')
        name++;
    int r = shk_seg_check_name(name);
    return r ? r : remove_name(name);
}
