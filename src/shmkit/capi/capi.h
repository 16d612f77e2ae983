/*
 * capi.h (private) - what the files of the C API (libshmkit.so) share.
 *
 * The C API is the C twin of the Python binding (_binding/): a thin layer over the core
 * that checks arguments, converts (timeouts into deadlines, the handles' object types),
 * runs blocking core calls through core/wait.h's driver without ever returning EINTR,
 * and nothing else: every protocol lives in the core.  One file per primitive, as in
 * the binding: common.c (init, errors, waiting, object names), segment.c (segments and
 * the attach protocol the Python layer follows), zone.c, sync.c (locks, counters),
 * queue.c, dict.c.  Only the functions of include/shmkit.h are exported
 * (-fvisibility=hidden; SHMKIT_API marks them).
 */
#ifndef SHK_CAPI_H
#define SHK_CAPI_H

#include <pthread.h>
#include <stdint.h>
#include <sys/types.h>

#include "shmkit.h"
#include "wait.h"
#include "zone.h"

/* The library's own process-wide set-up (wait tuning from the environment); every open
 * calls it. */
void shk_capi_init(void);

/* ---- segments: the POSIX backend with the attach protocol of the Python layer --------- */

struct shmkit_segment {
    struct shk_segment seg;
    char name[SHMKIT_SEGMENT_NAME_MAX + 1];
    dev_t dev;                  /* identity of the object opened (fstat) */
    ino_t ino;
    int has_record;             /* the object carries shmkit's creator record (xattr) */
};

/* Open or create /dev/shm/NAME (flags: SHK_O_*), then take part in the attach protocol
 * Python's Segment follows (docs/segments.md): the creator writes shmkit's record;
 * an opener takes its read lock on SHK_LOCKBYTE_ATTACH and checks that the name still
 * refers to what it opened (else, when creating, it tries again). */
int shk_capi_segment_open(struct shmkit_segment *s, const char *name, int flags, size_t size,
                          unsigned mode, size_t reserve);
/* Close (recording the detach where shmkit keeps such records). */
void shk_capi_segment_close(struct shmkit_segment *s);
/* Remove the name if it still refers to the object s opened: 0, ENOENT. */
int shk_capi_segment_remove(struct shmkit_segment *s);

/* ---- zones and the object handles that keep them mapped --------------------------------- */

struct shmkit_zone {
    struct shmkit_segment s;
    struct shk_zone zone;
    uint32_t refs;              /* the zone handle + each object handle (atomic) */
    int created;
    int closed;                 /* shmkit_zone_close was called */
    pthread_mutex_t lock;       /* process-private: serialises opens of objects (they may
                                   follow the zone's growth, which updates zone.mapped) */
};

void shk_capi_zone_ref(shmkit_zone *z);
void shk_capi_zone_unref(shmkit_zone *z);

/* ---- arguments ------------------------------------------------------------------------------- */

/* A valid object name (1..SHMKIT_NAME_MAX bytes): 0 or SHK_ENAME with the detail set. */
int shk_capi_check_object_name(const char *name);
/* Check flags against what a call accepts: 0 or EINVAL with the detail set. */
int shk_capi_check_flags(const char *fn, int flags, int allowed);
/* SHK_EMISMATCH of an object's open ("exists with other parameters") becomes
 * SHK_EOBJMISMATCH, the code the header documents (the zone keeps SHK_EMISMATCH). */
int shk_capi_object_mismatch(int r);
/* NULL handle or pointer argument: EINVAL with the detail set. */
int shk_capi_null(const char *fn, const char *what);

/* ---- waiting ----------------------------------------------------------------------------------- */

/*
 * Start a wait with a timeout in seconds (< 0: forever, 0: one try, SHK_WAIT_TRY).
 * EINVAL for NaN.  The wait takes no signal slices (SHK_WAIT_NOSIGNALS): nothing here
 * runs signal handlers, the program's own run asynchronously.
 */
int shk_capi_wait_init(struct shk_wait *w, double timeout);

/* Run op to completion: the driver again after each EINTR (a signal handler of the
 * program ran), so callers never see EINTR; the deadline stays the one computed once. */
int shk_capi_wait_run(const struct shk_wait_op *op, void *obj, struct shk_wait *w);

/* Milliseconds of a ttl in seconds (0: none; any positive ttl is at least 1 ms). EINVAL
 * for negative or NaN values. */
int shk_capi_ttl_ms(const char *fn, double ttl, uint64_t *ms);

#endif
