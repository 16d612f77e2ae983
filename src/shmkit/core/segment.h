/*
 * segment.h - one mapping of shared memory, from any backend Linux offers.
 *
 *   posix   shm_open name in /dev/shm                      resizable
 *   sysv    shmget key or shmid (ipcs/ipcrm, C, PHP shmop)  fixed size
 *   file    a path mapped MAP_SHARED (refuses symlinks)     resizable
 *   memfd   memfd_create, optional seals, fd passed around  resizable unless sealed
 *   anon    MAP_SHARED|MAP_ANONYMOUS, inherited over fork   fixed size
 *
 * Space is reserved when the object is created or grown (posix_fallocate), so a full
 * file system is an ENOSPC error at creation, never a SIGBUS on first touch.
 *
 * A segment may reserve more address space than it maps (`reserve`): growing then
 * extends the mapping in place, so pointers and views taken before stay valid.  Zones
 * rely on this.
 *
 * Process liveness around a segment uses OFD locks on bytes far beyond any data
 * (SHK_LOCKBYTE_* in layout.h): the kernel releases them when the last fd of the
 * holder's open file description is closed, including when the process is killed.  A
 * posix or file object created here holds its creator's locks (write on
 * SHK_LOCKBYTE_CREATOR, read on SHK_LOCKBYTE_ATTACH) from the instant it exists, before
 * it is sized, so no one can ever see it without a live creator; where the file system
 * allows (O_TMPFILE), it has no name until it is complete (shk_seg_publish).
 */
#ifndef SHK_SEGMENT_H
#define SHK_SEGMENT_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "fields.h"
#include "wait.h"

#ifdef __cplusplus
extern "C" {
#endif

enum shk_seg_kind {
    SHK_SEG_POSIX = 1,
    SHK_SEG_SYSV = 2,
    SHK_SEG_FILE = 3,
    SHK_SEG_MEMFD = 4,
    SHK_SEG_ANON = 5
};

/* open flags */
#define SHK_O_CREATE 0x01     /* create if it does not exist */
#define SHK_O_EXCL 0x02       /* with CREATE: fail with EEXIST if it exists */
#define SHK_O_RDONLY 0x04     /* map read-only */
#define SHK_O_ANYOWNER 0x08   /* allow attaching to an object owned by another uid */
#define SHK_O_ALLOWEMPTY 0x10 /* accept/create an object of size 0 (zones size it later) */
#define SHK_O_PUBLISH_LATER 0x20 /* posix/file: a new object stays unnamed until the caller
                                  * calls shk_seg_publish (after writing its own records) */

struct shk_segment {
    int kind;
    int fd;          /* -1 for sysv and anon */
    int shmid;       /* sysv: the id; else -1 */
    int flags;       /* SHK_O_* it was opened with */
    int created;     /* 1 if this open created the object */
    uint8_t *base;   /* start of the mapping (NULL once closed) */
    size_t size;     /* bytes usable from base */
    size_t map_len;  /* bytes mapped from the object (page multiple >= size) */
    size_t reserved; /* address space reserved at base (page multiple >= map_len) */
    int own_reserve; /* 1 if base is a reservation we made (munmap reserved bytes) */
    char *publish_path; /* created without a name (O_TMPFILE): the path it gets when
                         * published; NULL once named (or opened) */
    int named_fd;       /* created without a name, then published: the object opened by
                         * its name, which mappings go through (segment.c, mapping_fd);
                         * 0: none */
    pthread_mutex_t remap_lock; /* process-private: serialises refresh/resize */
};

/* Valid POSIX name (no leading '/'): 0 or SHK_ENAME with a detail message. */
int shk_seg_check_name(const char *name);

int shk_seg_open_posix(struct shk_segment *s, const char *name, int flags, unsigned mode,
                       size_t size, size_t reserve);
int shk_seg_open_file(struct shk_segment *s, const char *path, int flags, unsigned mode,
                      size_t size, size_t reserve);
/*
 * posix and file objects are created without a name, complete (sized, reserved, with the
 * creator's locks), and then named with linkat(2), so that no opener ever sees one
 * half-made.  The open functions do it themselves unless SHK_O_PUBLISH_LATER is given;
 * then the caller writes what it records about the object first and publishes it with
 * this.  0, EEXIST (the name was taken meanwhile: close this one and open that), errno.
 */
int shk_seg_publish(struct shk_segment *s);
/* key is used when shmid < 0; with shmid >= 0 the segment is attached by id. */
int shk_seg_open_sysv(struct shk_segment *s, int key, int shmid, int flags, unsigned mode,
                      size_t size);
int shk_seg_create_memfd(struct shk_segment *s, const char *name, size_t size,
                         unsigned seals, size_t reserve);
/* Map an fd received from elsewhere (memfd, or any shareable fd). fd is duplicated. */
int shk_seg_open_fd(struct shk_segment *s, int fd, int flags, size_t reserve);
int shk_seg_create_anon(struct shk_segment *s, size_t size);

/*
 * Change the size of the object and of this mapping.  Growing reserves the space
 * (ENOSPC if it is not there, the object left as it was).  The mapping is extended in
 * place inside the reservation; beyond it, only if may_move (base changes), else
 * SHK_ENOGROW.  posix, file and memfd only (ENOTSUP otherwise).
 */
int shk_seg_resize(struct shk_segment *s, size_t new_size, int may_move);

/* Follow a size change made by another process: map up to the object's current size,
 * within the reservation (0, or SHK_ENOGROW when the new size does not fit); after a
 * shrink, map zeros over the pages past the new end (they would SIGBUS) and take the
 * new size.  One fstat. */
int shk_seg_refresh(struct shk_segment *s);

/* Move the mapping into a larger reservation of `reserve` bytes (base changes: only
 * while nothing points into the mapping). fd backends only. */
int shk_seg_rereserve(struct shk_segment *s, size_t reserve);

/*
 * Map the object again from s->fd at the same address (MAP_FIXED), after s->fd was
 * made to refer to another open file description of the same object (a fork child, or
 * an fd received over a socket, gets one of its own).  A mapping holds a reference to
 * the open file description it was made from, and with it that description's OFD
 * locks: without this, a fork child would keep its parent's creator lock alive.
 * Same object, same address, same pages: views stay valid.  fd backends only;
 * EBUSY if another thread is resizing (nothing done).
 */
int shk_seg_remap(struct shk_segment *s);

/* Current size of the underlying object (fstat / IPC_STAT), into *size. */
int shk_seg_object_size(const struct shk_segment *s, size_t *size);

/*
 * Attributes of a segment: IPC_STAT for SysV, fstat for the fd backends (what the
 * kernel knows; shmkit's own records - creator, lifecycle - are kept by the Python
 * layer in a `user.shmkit` xattr or a registry file, see docs/segments.md).
 */
struct shk_seg_stat {
    uint64_t size;      /* bytes in the object */
    uint32_t uid, gid;  /* owner */
    uint32_t cuid, cgid;/* creator (SysV); == uid/gid for the fd backends */
    uint32_t mode;      /* permission bits; SysV adds SHK_SHM_DEST / SHK_SHM_LOCKED */
    int32_t key;        /* SysV key (IPC_PRIVATE = 0 once removed); 0 elsewhere */
    int32_t cpid;       /* SysV creator pid; -1 elsewhere */
    int32_t lpid;       /* SysV pid of the last shmat/shmdt; -1 elsewhere */
    uint64_t nattch;    /* SysV attach count; 0 elsewhere (the kernel does not say) */
    int64_t atime;      /* SysV last attach; fd backends: st_atime (seconds) */
    int64_t dtime;      /* SysV last detach; fd backends: 0 */
    int64_t ctime;      /* SysV creation or last IPC_SET; fd backends: st_ctime */
    uint64_t dev, ino;  /* fd backends: the file's identity; 0 for SysV */
    int removed;        /* SysV: marked for destruction (IPC_RMID or ipcrm) */
};
/* The fields of shk_seg_stat by name (core/fields.h), in the order shown. */
extern const struct shk_field shk_seg_stat_fields[];
#define SHK_SHM_DEST 01000   /* SHM_DEST in shm_perm.mode: removed, dies at last detach */
#define SHK_SHM_LOCKED 02000 /* SHM_LOCKED: locked in memory (SHM_LOCK) */

int shk_seg_stat(const struct shk_segment *s, struct shk_seg_stat *st);
/* IPC_STAT of any SysV segment by id, without attaching to it. */
int shk_sysv_stat(int shmid, struct shk_seg_stat *st);
/* The id of the SysV segment with `key`, without attaching (ENOENT if none). */
int shk_sysv_find(int key, int *shmid);

/* Unmap and close (detach this process only). Safe to call twice. */
int shk_seg_close(struct shk_segment *s);

int shk_seg_unlink_posix(const char *name);
int shk_seg_rmid(int shmid);

/* OFD byte locks: type is F_RDLCK, F_WRLCK or F_UNLCK. Non-blocking unless wait.
 * 0, EAGAIN (held by another open file description), EINTR, or errno. */
int shk_ofd_lock(int fd, uint64_t offset, int type, int wait);
/* Waiting for an OFD byte lock in the one wait shape (wait.h): obj is a struct
 * shk_ofd_wait; done when the lock is taken. */
struct shk_ofd_wait {
    int fd;
    uint64_t offset;
    int type;
};
extern const struct shk_wait_op shk_ofd_lock_op;
/* *conflict = 1 if a lock of another open file description conflicts with `type`;
 * *holder_pid gets its pid when the kernel knows it (-1 for OFD locks). */
int shk_ofd_probe(int fd, uint64_t offset, int type, int *conflict);

/* Free bytes on the file system holding fd (for error messages). */
uint64_t shk_fs_free_bytes(int fd);

#ifdef __cplusplus
}
#endif
#endif
