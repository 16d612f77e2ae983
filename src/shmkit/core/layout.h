/*
 * layout.h - THE specification of the bytes shmkit puts in shared memory.
 *
 * Someone should be able to write a reader for a shmkit zone in any language from this
 * file alone.  Everything here is shared between processes that may map the zone at
 * different addresses, built by different compilers, at different times.  Hence:
 *
 *   - Fixed-width integers only, native byte order (the magic detects a mismatch).
 *   - No pointers.  A location inside a zone is an *offset* from the zone's first byte
 *     (uint64_t).  Offset 0 is the zone header, so 0 doubles as "null".
 *   - Pages are numbered globally across extents; page links store index + 1 (0 = none).
 *   - Every offset or index read from shared memory is bounds-checked before use: a
 *     corrupted or hostile zone produces SHK_ECORRUPT, never a wild access.
 *   - The only non-fixed-width type is pthread_mutex_t; its size is part of the format
 *     word, so a process built against a different libc layout refuses to attach.
 *
 * A zone:
 *
 *   offset 0        struct shk_zone_header (4096 bytes, one page)
 *   offset 4096     extent 0: page descriptors (struct shk_page[npages], rounded up to
 *                   a page) followed by npages pages of SHK_PAGE bytes
 *   ...             extents 1..n, added when the zone grows (each one the same shape)
 *
 * Pages are handed out by a slab allocator in the manner of nginx's ngx_slab.c:
 *   - requests up to SHK_SLAB_MAX (half a page) come from "slab pages" of one size class
 *     (8, 16, ... 2048 bytes); which chunks are used is a bitmap;
 *   - larger requests get a run of whole pages (first fit; freed runs coalesce with free
 *     neighbours inside the same extent).
 * The allocator and the directory of named objects are protected by the header's robust
 * mutex.  After a crash inside them the next locker rebuilds every derived structure
 * (free lists, per-class lists, counts) from the page descriptors, which are written in
 * an order that keeps each of them meaningful at every instant (see slab.c).
 *
 * Cross-process locks on the backing file (OFD byte locks, released by the kernel when
 * the holder dies) live at these offsets, far beyond any data:
 */
#ifndef SHK_LAYOUT_H
#define SHK_LAYOUT_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define SHK_LOCKBYTE_INIT    ((uint64_t)1 << 62)          /* held (write) while initialising a zone */
#define SHK_LOCKBYTE_ATTACH  (((uint64_t)1 << 62) + 1)    /* held (read) by every attached handle */
#define SHK_LOCKBYTE_CREATOR (((uint64_t)1 << 62) + 2)    /* held (write) by the creator while open */
#define SHK_LOCKBYTE_SIZING  (((uint64_t)1 << 62) + 3)    /* held (write) by the creator of a posix or
                                                             file object until it has its size */

/* ---------------------------------------------------------------------------------- */
/* Identity: magic and format word                                                      */
/* ---------------------------------------------------------------------------------- */

/* "SHKZONE1" read as a little-endian u64; on a big-endian reader it reads reversed. */
#define SHK_ZONE_MAGIC 0x31454e4f5a4b4853ull

/* Bump when any struct in this file changes in a way old readers cannot handle. */
#define SHK_LAYOUT_VERSION 1u

#define SHK_CACHELINE 64

/*
 * format word: [63..48] layout version  [47..40] sizeof(pthread_mutex_t)
 *              [39..32] sizeof(pid_t)   [31..24] cache line  [23..16] sizeof(void *)
 *              [15..8]  alignof(uint64_t)  [7..0] SHK_PAGE_SHIFT
 */
#define SHK_FORMAT_WORD                                                                    \
    (((uint64_t)SHK_LAYOUT_VERSION << 48) | ((uint64_t)sizeof(pthread_mutex_t) << 40) |   \
     ((uint64_t)sizeof(pid_t) << 32) | ((uint64_t)SHK_CACHELINE << 24) |                  \
     ((uint64_t)sizeof(void *) << 16) | ((uint64_t)_Alignof(uint64_t) << 8) |             \
     (uint64_t)SHK_PAGE_SHIFT)

/* ---------------------------------------------------------------------------------- */
/* Allocator geometry                                                                   */
/* ---------------------------------------------------------------------------------- */

#define SHK_PAGE_SHIFT 12
#define SHK_PAGE (1u << SHK_PAGE_SHIFT)              /* 4096 */
#define SHK_SLAB_MIN_SHIFT 3                         /* 8-byte chunks */
#define SHK_SLAB_MAX_SHIFT (SHK_PAGE_SHIFT - 1)      /* 2048-byte chunks: half a page */
#define SHK_SLAB_MAX (1u << SHK_SLAB_MAX_SHIFT)
#define SHK_NCLASSES (SHK_SLAB_MAX_SHIFT - SHK_SLAB_MIN_SHIFT + 1) /* 9 */
/* Classes whose pages hold more than 64 chunks keep their bitmap in the page itself, in
 * its first chunks (which are therefore never handed out); the others keep it in the
 * descriptor's `slab` word. */
#define SHK_SLAB_INPAGE_MAX_SHIFT 5                  /* 8, 16, 32 B: in-page bitmap */
#define SHK_MAX_EXTENTS 48

/* Page descriptor types (struct shk_page.type). Anything not RUN or SLAB is free. */
enum shk_page_type {
    SHK_PT_FREE = 0,      /* first page of a free run: slab = run length in pages */
    SHK_PT_FREE_TAIL = 1, /* last page of a free run of >= 2 pages: head = first page + 1 */
    SHK_PT_BODY = 2,      /* other page of a run (free or busy); carries nothing */
    SHK_PT_RUN = 3,       /* first page of an allocated run: slab = run length in pages */
    SHK_PT_SLAB = 4       /* slab page: shift = class shift; slab = bitmap (shift > 5) */
};

/* One per page, 24 bytes. */
struct shk_page {
    uint64_t slab;        /* run length, or the occupancy bitmap of a slab page */
    uint32_t next;        /* list link: page index + 1, 0 = none (free list / class list) */
    uint32_t prev;        /* list link: page index + 1, 0 = none */
    uint16_t type;        /* enum shk_page_type */
    uint16_t shift;       /* SLAB: chunk size is 1 << shift */
    uint32_t head;        /* FREE_TAIL: index + 1 of the run's first page */
};

/* A contiguous stretch of the zone with its own descriptors. Zone growth adds one. */
struct shk_extent {
    uint64_t start;       /* byte offset of the extent (page aligned) */
    uint64_t end;         /* byte offset one past its last page */
    uint64_t desc_off;    /* offset of its struct shk_page[npages] (== start) */
    uint64_t pages_off;   /* offset of its first page (page aligned) */
    uint32_t first_page;  /* global index of its first page */
    uint32_t npages;
};

/* Per size class statistics, kept in the zone (nginx's ngx_slab_stat_t). */
struct shk_slab_stat {
    uint64_t total;       /* chunks in pages of this class */
    uint64_t used;        /* chunks handed out */
    uint64_t reqs;        /* allocation requests */
    uint64_t fails;       /* requests that failed for lack of memory */
};

/* Zone states (shk_zone_header.state, a futex word). */
enum shk_zone_state {
    SHK_ZS_UNINIT = 0,
    SHK_ZS_INITIALIZING = 1,
    SHK_ZS_READY = 2,
    SHK_ZS_CORRUPT = 3
};

#define SHK_TAG_MAX 64

/* ---------------------------------------------------------------------------------- */
/* Zone header, at offset 0                                                             */
/* ---------------------------------------------------------------------------------- */

struct shk_zone_header {
    /* identity: written first when initialising, checked on every attach */
    uint64_t magic;                 /*    0  SHK_ZONE_MAGIC */
    uint64_t format;                /*    8  SHK_FORMAT_WORD of the creator */
    uint32_t state;                 /*   16  enum shk_zone_state; futex word */
    uint32_t state_waiters;         /*   20  processes waiting for READY */
    uint64_t size;                  /*   24  current size in bytes (grows; never shrinks) */
    uint64_t declared_size;         /*   32  size the zone was declared with (identity) */
    uint64_t max_size;              /*   40  growth limit in bytes (== declared if fixed) */
    uint64_t generation;            /*   48  bumped on every growth */
    uint32_t tag_len;               /*   56  bytes used in tag */
    uint32_t flags;                 /*   60  reserved, 0 */
    uint8_t tag[SHK_TAG_MAX];       /*   64  tag (identity), arbitrary bytes */
    int32_t creator_pid;            /*  128  process that initialised the zone */
    uint32_t init_owner;            /*  132  pid initialising now (CAS claim, fd-less backends) */
    uint64_t creator_start;         /*  136  its start time (clock ticks, /proc/PID/stat) */
    uint64_t created_ns;            /*  144  CLOCK_REALTIME at creation */
    uint64_t init_start;            /*  152  start time of init_owner */
    uint64_t ready_ns;              /*  160  CLOCK_REALTIME when it became READY */
    uint64_t reserved0[3];          /*  168 */

    /* allocator (protected by `lock`) */
    uint32_t nextents;              /*  192  extents in use */
    uint32_t free_head;             /*  196  first free run (page index + 1) */
    uint32_t class_head[SHK_NCLASSES]; /* 200  slab pages with a free chunk, per class */
    uint32_t total_pages;           /*  236  pages in all extents */
    uint32_t free_pages;            /*  240  pages in free runs */
    uint32_t reserved1;             /*  244 */
    uint64_t pending_off;           /*  248  allocation in flight for the directory or an
                                             object being created; freed by recovery if no
                                             directory entry points at it */
    uint64_t dir_off;               /*  256  directory table (struct shk_dir_table) or 0 */
    uint64_t dir_pending;           /*  264  directory table being built during a resize */
    uint64_t recoveries;            /*  272  times the allocator was rebuilt after a crash */
    uint64_t last_recovery_ns;      /*  280  CLOCK_REALTIME of the last rebuild */
    uint64_t page_reqs;             /*  288  requests for page runs (> SHK_SLAB_MAX) */
    uint64_t page_fails;            /*  296  of which failed */
    uint64_t grow_count;            /*  304  growths so far */
    uint64_t reserved2[1];          /*  312 */

    struct shk_slab_stat stats[SHK_NCLASSES]; /* 320 .. 608 */
    uint8_t pad0[640 - 608];

    pthread_mutex_t lock;           /*  640  robust, process-shared; allocator + directory */
    uint8_t pad1[768 - 640 - sizeof(pthread_mutex_t)];

    struct shk_extent ext[SHK_MAX_EXTENTS]; /* 768 .. 768 + 48 * 40 = 2688 */
    uint8_t pad2[4096 - 2688];
};

/* ---------------------------------------------------------------------------------- */
/* Directory of named objects                                                           */
/* ---------------------------------------------------------------------------------- */

#define SHK_OBJ_NAME_MAX 63          /* bytes, excluding the terminating NUL */
#define SHK_DIR_MAGIC 0x52494448u    /* "HDIR" */
#define SHK_DIR_MIN_CAP 16

enum shk_dirent_state { SHK_DE_EMPTY = 0, SHK_DE_LIVE = 1, SHK_DE_TOMB = 2 };

/* Object types registered in the directory. Values are part of the layout. */
enum shk_obj_type {
    SHK_OBJ_RAW = 1,        /* zone.alloc() region registered by name */
    SHK_OBJ_LOCK = 2,
    SHK_OBJ_RLOCK = 3,
    SHK_OBJ_RWLOCK = 4,
    SHK_OBJ_SEMAPHORE = 5,
    SHK_OBJ_EVENT = 6,
    SHK_OBJ_CONDITION = 7,
    SHK_OBJ_BARRIER = 8,
    SHK_OBJ_VALUE = 9,
    SHK_OBJ_ARRAY = 10,
    SHK_OBJ_COUNTER = 11,
    SHK_OBJ_QUEUE = 12,
    SHK_OBJ_DICT = 13,
    SHK_OBJ_NDARRAY = 14,
    SHK_OBJ_BOARD = 15,
    SHK_OBJ_CONFIG = 16,
    SHK_OBJ_USER = 1000     /* first value free for users' own types */
};

/* One directory slot, 128 bytes. Written in full, then `state` = LIVE last. */
struct shk_dirent {
    char name[SHK_OBJ_NAME_MAX + 1]; /*   0  NUL-terminated */
    uint32_t state;                  /*  64  enum shk_dirent_state */
    uint32_t type;                   /*  68  enum shk_obj_type */
    uint64_t offset;                 /*  72  object's allocation */
    uint64_t size;                   /*  80  bytes allocated */
    uint64_t created_ns;             /*  88  CLOCK_REALTIME */
    uint32_t hash;                   /*  96  FNV-1a of the name */
    int32_t creator_pid;             /* 100 */
    uint64_t aux;                    /* 104  type-specific (e.g. element type code) */
    uint64_t reserved[2];            /* 112 */
};

/* Open-addressing hash table (linear probing, tombstones). Replaced as a whole when it
 * grows: built at dir_pending, then published with one store to dir_off. */
struct shk_dir_table {
    uint32_t magic;                  /*   0  SHK_DIR_MAGIC */
    uint32_t cap;                    /*   4  slots, a power of two */
    uint32_t live;                   /*   8  LIVE slots */
    uint32_t tombs;                  /*  12  TOMB slots */
    uint64_t reserved[6];            /*  16 */
    struct shk_dirent slot[];        /*  64 */
};

/* ---------------------------------------------------------------------------------- */
/* Synchronisation objects (sync.c): Lock, RLock, RWLock, Semaphore, Event, Condition, */
/* Barrier, Value/Array, Counter. Section owned by the sync work (issue 4).           */
/* ---------------------------------------------------------------------------------- */

/*
 * Every sync object starts with a struct shk_sync_head.  Waiting is done on 32-bit futex
 * words (shared, never FUTEX_PRIVATE_FLAG) with one absolute CLOCK_MONOTONIC deadline.
 *
 * Owners.  Whoever holds something that must be given back when it dies is recorded as
 * an *identity*: a 64-bit value, CASed as a whole, made of
 *     word  (u32, the futex word, at the lower address)
 *           bits 0..29  the owner's id: a pid (process-owned things) or a kernel thread
 *                       id (thread-owned things: RLock); 0 = nobody
 *           bit  30     SHK_ID_RECLAIM: a slot being reclaimed from a dead owner by the
 *                       process named in bits 0..29
 *           bit  31     SHK_ID_WAITERS: someone may sleep on this word; wake on release
 *     start (u32, next to it) the low 32 bits of the owner's start time (clock ticks
 *           after boot, field 22 of /proc/ID/stat); 0 when /proc was unreadable.
 * Identity and start are published by the same CAS, so a reader never sees an id with
 * another process's start time.  An owner is dead when /proc/ID/stat is gone, shows a
 * zombie, or shows another start time (the pid was reused).  Liveness is only checked
 * on the slow path: by waiters, every SHK_SYNC_LIVENESS_NS (configurable), so a waiter
 * recovers a dead owner's hold within that interval plus the kernel's teardown.
 *
 * Structures whose update touches several words (undo semaphores, barriers) keep them
 * under the object's own robust pthread mutex, held only inside one C call; a journal
 * written before each multi-word update lets the next locker roll it back when the
 * previous one died inside (EOWNERDEAD).
 */

#define SHK_SYNC_MAGIC 0x434e5953u        /* "SYNC" */
#define SHK_ID_MASK 0x3fffffffu
#define SHK_ID_RECLAIM 0x40000000u
#define SHK_ID_WAITERS 0x80000000u

/* An owner identity (see above). `all` is what is CASed; `f.word` is the futex word. */
union shk_ident {
    uint64_t all;
    struct {
        uint32_t word;                   /*   0  id | flags; futex word */
        uint32_t start;                  /*   4  low 32 bits of the owner's start time */
    } f;
};

/* sync head flags (shk_sync_head.flags) */
#define SHK_SYNCF_BOUNDED 0x1             /* Semaphore: BoundedSemaphore */
#define SHK_SYNCF_UNDO 0x2                /* Semaphore: dead processes' units come back */
#define SHK_SYNCF_LOCKED 0x4              /* Value/Array: has its embedded RLock */
#define SHK_SYNCF_EXTLOCK 0x8             /* Value/Array/Condition: uses a named lock */

/* 16 bytes at the start of every sync object. */
struct shk_sync_head {
    uint32_t magic;                       /*   0  SHK_SYNC_MAGIC */
    uint16_t type;                        /*   4  enum shk_obj_type (SHK_OBJ_LOCK, ...) */
    uint16_t flags;                       /*   6  SHK_SYNCF_* */
    uint32_t spin_ns;                     /*   8  adaptive spin budget (a hint; racy) */
    uint32_t spin_busy;                   /*  12  CLOCK_MONOTONIC ms (low 32 bits) until
                                                    which someone spins: on 2 cores only
                                                    one process spins at a time */
};

/* Lock and RLock: 128 bytes.  Lock: owner.word holds a pid (any thread of the owning
 * process may release).  RLock: a kernel thread id, count is the recursion depth. */
struct shk_lock_sh {
    struct shk_sync_head head;            /*   0 */
    union shk_ident owner;                /*  16  holder; 0 = free */
    uint32_t count;                       /*  24  RLock recursion depth (holder only) */
    int32_t owner_pid;                    /*  28  RLock: process of the holding thread */
    uint64_t acquisitions;                /*  32  successful acquires (holder increments) */
    uint32_t sleepers;                    /*  40  waiters asleep in the kernel (approximate:
                                                    a process killed asleep stays counted) */
    uint32_t reserved0;                   /*  44 */
    uint64_t reserved1[2];                /*  48 */
    uint64_t contentions;                 /*  64  acquires that found it held */
    uint64_t owner_deaths;                /*  72  holds taken over from a dead owner */
    uint64_t last_death_ns;               /*  80  CLOCK_REALTIME of the last take-over */
    int32_t last_dead_pid;                /*  88  id recorded by the dead owner */
    uint32_t reserved2;                   /*  92 */
    uint64_t reserved3[4];                /*  96 */
};

/* Event: 64 bytes.  state bit 0 = set; bits 1..31 count the set() calls that changed
 * it, so a waiter wakes (and returns True) even if clear() follows set() at once. */
struct shk_event_sh {
    struct shk_sync_head head;            /*   0 */
    uint32_t state;                       /*  16  futex word: gen << 1 | set */
    uint32_t sleepers;                    /*  20  waiters asleep (approximate) */
    uint64_t sets;                        /*  24  set() calls that changed the state */
    uint64_t waits;                       /*  32  wait() calls that had to wait */
    uint64_t reserved[3];                 /*  40 */
};

/* One per process holding units of an undo semaphore (16 bytes). */
struct shk_undo_slot {
    union shk_ident owner;                /*   0  the process; 0 = free */
    uint32_t count;                       /*   8  units it holds */
    uint32_t reserved;                    /*  12 */
};

/* Semaphore and BoundedSemaphore: 192 bytes + nslots undo slots (undo only).  Without
 * undo, value is changed by CAS alone; with undo, value and the slots change together
 * under `mutex`, the journal making a half-done change undoable. */
struct shk_sem_sh {
    struct shk_sync_head head;            /*   0  flags: BOUNDED, UNDO */
    uint32_t value;                       /*  16  futex word: units available */
    uint32_t sleepers;                    /*  20  waiters asleep (approximate) */
    uint32_t bound;                       /*  24  initial value; the cap if BOUNDED */
    uint32_t nslots;                      /*  28  undo slots that follow (0 if not UNDO) */
    uint64_t acquisitions;                /*  32 */
    uint64_t contentions;                 /*  40 */
    uint64_t reclaimed;                   /*  48  units given back from dead processes */
    uint64_t dead_owners;                 /*  56  dead processes whose units came back */
    pthread_mutex_t mutex;                /*  64  robust; UNDO only */
    uint8_t pad0[128 - 64 - sizeof(pthread_mutex_t)];
    uint32_t j_valid;                     /* 128  journal: 1 while an update is half done */
    uint32_t j_slot;                      /* 132  slot touched */
    uint32_t j_value;                     /* 136  value before the update */
    uint32_t j_count;                     /* 140  slot count before the update */
    union shk_ident j_owner;              /* 144  slot owner before the update */
    uint64_t reserved[5];                 /* 152 */
    struct shk_undo_slot slot[];          /* 192 */
};

/* One cache line per reader process of an RWLock. */
struct shk_rw_slot {
    union shk_ident owner;                /*   0  the process; 0 = free; RECLAIM = being
                                                    taken back from a dead process */
    uint32_t count;                       /*   8  read holds of that process */
    uint32_t reserved0;                   /*  12 */
    uint64_t acquisitions;                /*  16  read acquisitions by that process */
    uint64_t reserved[5];                 /*  24 */
};

/* RWLock: 128 bytes + nslots reader slots.  A writer takes `writer` (like a Lock; new
 * readers then stay out: writers are not starved), then waits for every slot count to
 * reach 0 (sleeping on drain_seq, which readers bump when they leave while a writer
 * waits).  A reader bumps its process's slot, then looks at `writer`; if a writer is
 * there it backs off.  A dead reader's slot is reclaimed whole; a dead writer's hold
 * is taken over like a Lock's. */
struct shk_rwlock_sh {
    struct shk_sync_head head;            /*   0 */
    union shk_ident writer;               /*  16  writing process; 0 = none */
    uint32_t drain_seq;                   /*  24  futex word for the draining writer */
    uint32_t drain_sleeping;              /*  28  1 while the writer sleeps on drain_seq */
    uint32_t sleepers;                    /*  32  asleep on writer.word (approximate) */
    uint32_t nslots;                      /*  36  reader slots that follow */
    uint64_t write_acquisitions;          /*  40 */
    uint64_t contentions;                 /*  48 */
    uint64_t owner_deaths;                /*  56  dead writers taken over */
    uint64_t reader_deaths;               /*  64  dead readers' slots reclaimed */
    uint64_t reserved[7];                 /*  72 */
    struct shk_rw_slot slot[];            /* 128 */
};

/* Condition: 256 bytes.  notify() bumps seq and wakes n sleepers in the kernel: a
 * waiter killed while waiting is simply not in the kernel's queue any more, so it
 * cannot swallow a notification.  The lock is the embedded RLock, or the named Lock or
 * RLock of lock_name (SHK_SYNCF_EXTLOCK). */
struct shk_cond_sh {
    struct shk_sync_head head;            /*   0 */
    uint32_t seq;                         /*  16  futex word: notifications so far */
    uint32_t sleepers;                    /*  20  registered waiters (approximate) */
    uint32_t lock_type;                   /*  24  SHK_OBJ_LOCK / SHK_OBJ_RLOCK */
    uint32_t reserved0;                   /*  28 */
    uint64_t notifies;                    /*  32  notify() calls that woke someone */
    uint64_t waits;                       /*  40 */
    uint64_t reserved1[2];                /*  48 */
    char lock_name[SHK_OBJ_NAME_MAX + 1]; /*  64  external lock's name, NUL-terminated */
    struct shk_lock_sh lock;              /* 128  embedded RLock (unused if EXTLOCK) */
};

/* Barrier: 128 bytes + parties arrival identities.  Everything but gen's futex waits is
 * under `mutex`; a party that dies inside it, or while waiting, breaks the barrier. */
struct shk_barrier_sh {
    struct shk_sync_head head;            /*   0 */
    uint32_t gen;                         /*  16  futex word: generation */
    uint32_t count;                       /*  20  parties arrived in this generation */
    uint32_t parties;                     /*  24 */
    uint32_t broken;                      /*  28  1: broken until reset() */
    uint64_t broken_hist;                 /*  32  bit g % 64 set: generation g ended broken */
    uint32_t sleepers;                    /*  40 */
    uint32_t reserved0;                   /*  44 */
    uint64_t passed;                      /*  48  generations completed */
    uint64_t breaks;                      /*  56  times it broke (abort, timeout, death) */
    pthread_mutex_t mutex;                /*  64  robust */
    uint8_t pad0[128 - 64 - sizeof(pthread_mutex_t)];
    union shk_ident arrived[];            /* 128  identities of the arrived parties */
};

/* Value and Array: 256 bytes + data.  The data are ctypes bytes (native layout),
 * 64-byte aligned; the embedded RLock is used when SHK_SYNCF_LOCKED. */
#define SHK_VALUE_TYPENAME_MAX 47
struct shk_value_sh {
    struct shk_sync_head head;            /*   0  flags: LOCKED, EXTLOCK */
    uint64_t elem_size;                   /*  16  sizeof one element */
    uint64_t length;                      /*  24  elements (1 for Value) */
    uint64_t data_size;                   /*  32  bytes of data */
    uint64_t reserved0;                   /*  40 */
    char type_name[SHK_VALUE_TYPENAME_MAX + 1]; /* 48  typecode or ctypes type name */
    uint64_t reserved1[2];                /*  96 */
    struct shk_lock_sh lock;              /* 112  embedded RLock (used if LOCKED) */
};

/* Counter: 64 bytes, one cache line. */
struct shk_counter_sh {
    struct shk_sync_head head;            /*   0 */
    int64_t value;                        /*  16  changed by atomic instructions only */
    uint64_t reserved[5];                 /*  24 */
};

#define SHK_VALUE_DATA_OFF 256            /* data of a Value/Array, from its object start */


/* ---------------------------------------------------------------------------------- */
/* Queue (queue.c): multi-producer multi-consumer ring of variable-size records.      */
/* Section owned by the queue work (issue 6).                                         */
/* ---------------------------------------------------------------------------------- */
/*
 * A queue is one named object (SHK_OBJ_QUEUE) laid out as
 *
 *   +0        struct shk_queue_sh                          (512 bytes)
 *   +512      struct shk_qslot[SHK_QUEUE_SLOTS]            (members: one per open handle)
 *   +...      struct shk_qresv[SHK_QUEUE_RESV]             (zero-copy reservations)
 *   +ring_rel the ring: `capacity` bytes, a power of two, page aligned
 *
 * Positions.  Every byte ever written to the ring has an absolute 64-bit position that
 * only grows; its place in the ring is (pos & (capacity - 1)).  The first position is a
 * random multiple of the capacity (`base`), so stale bytes can never pass for the header
 * of a record at a later position (see struct shk_qrec).  Three positions move:
 *     free <= head <= tail
 * [free, head)  records taken by consumers, not yet given back;
 * [head, tail)  records claimed by producers (being written or committed);
 * [tail, free + capacity)  free space.
 * free is not stored itself: the head pair holds head_pos and lag = head - free, so one
 * 16-byte CAS can take records and give their space back together (see below).
 *
 * Records.  A record is a 16-byte header followed by its payload, padded to 16 bytes;
 * the payload may wrap around the end of the ring (headers never do: they are 16-byte
 * aligned and the capacity is a multiple of 16).
 *
 * Producers claim space with one 16-byte CAS on `tail` {pos, owner|count} after
 * announcing (claim_pos, claim_size, claim_n) in their member slot, then write the
 * headers (the first one last), copy, and commit each header with a release store.
 * Consumers take in one of two ways.  Copy first (messages copied out, when lag is 0):
 * read the headers at `head`, copy the payloads, then one 16-byte CAS {head, 0|count} ->
 * {end, 0|count + n} takes them and gives their space back at once (a record nobody has
 * taken cannot be reclaimed, so the copy is good when the CAS succeeds; nothing is
 * outstanding at any moment, so there is nothing to announce or repair).  Claim first
 * (zero-copy REF records, large messages, or when another range is out): announce
 * (take_pos, take_end), CAS {head, lag|count} -> {end, lag + (end - head)|count + n}, copy,
 * then give the space back: the consumer of the oldest range shrinks the lag by CAS;
 * others mark their records CONSUMED and whoever needs space shrinks the lag over them.
 * No lock on any of these paths.
 *
 * Crash rules (the robust `repair` mutex serialises repairs, never normal operations):
 *   - a producer never claims past another producer's claim whose first header is not
 *     yet written; so only the latest claim (named by tail's owner) can be headerless;
 *   - a claim whose producer died (pid + start time) becomes one SKIP record covering
 *     it (headerless), or its CLAIMED headers become SKIP: consumers step over them and
 *     the messages count as drops;
 *   - a record taken (head moved past it) by consumers that all died before giving it
 *     back is marked CONSUMED by the repairer and counts as a drop;
 *   - a member slot of a dead process is scrubbed (the above, plus its reservations
 *     freed) before it is reused.
 *
 * Delivery modes and task accounting (docs/queue.md, docs/design/delivery.md).  The mode
 * is chosen at creation: flags & SHK_QF_AT_LEAST_ONCE.
 *
 *   at-most-once (flag clear): put/get as above, unchanged.  Each handle counts in its
 *   own slot (own cache lines, no shared write) `got` (messages handed to it; counted
 *   before the take, taken back if the take fails) and `done` (task_done() calls).
 *   unfinished_tasks = puts - sum(done) - retired_done - abandoned, where a slot whose
 *   owner died or detached adds its (got - done) to `abandoned` and its done to
 *   retired_done when it is scrubbed/released.  A consumer killed in the instant between
 *   counting a get and its take leaves the count one get low (never high: join cannot
 *   hang on a dead consumer).
 *
 *   at-least-once (flag set): a record taken is not given back: consumers claim records
 *   one by one with a 16-byte CAS of the header {word, pos} from COMMITTED to
 *   TAKEN(taker id), the one step that makes a message theirs; head is only a hint ("no
 *   COMMITTED data record before it, except redelivered ones") that anyone advances over
 *   TAKEN, CONSUMED and SKIP records; task_done() CASes TAKEN(me) -> CONSUMED (= acked);
 *   the free position moves only over CONSUMED and SKIP records behind head.  So:
 *     [free, head)   TAKEN (in flight), CONSUMED (acked, not yet reclaimed), SKIP, and
 *                    COMMITTED data records given back for redelivery;
 *     [head, tail)   CLAIMED, COMMITTED, and TAKEN/CONSUMED ones head has not passed yet.
 *   A taker id is slot + 1 (bits 0..8) | (slot generation & 0x7f) << 9: a record can
 *   never pass for the next owner's of a reused slot.  When a taker dies (pid + start
 *   time) or detaches, its TAKEN records are CASed back to COMMITTED (each one step: a
 *   crash between two loses nothing), counted in `redeliveries`, and `redeliverable` is
 *   raised: a hint that makes getters look in [free, head) before the head (a getter that
 *   finds nothing there CASes the value it read back to 0).  unfinished_tasks is derived
 *   from the ring alone: records in [free, tail) that are not CONSUMED or SKIP (plus
 *   claims whose headers are not written), so no crash can make it drift; join() waits
 *   for it to be 0.  Zero-copy REF records are refused in this mode.
 *
 *   join() sleeps on done_seq (registered in done_waiters): task_done, abandoning and
 *   redelivering bump it (and wake) only when a joiner is registered.
 */

#define SHK_QUEUE_MAGIC 0x45554555514b4853ull  /* "SHKQUEUE" read as a little-endian u64 */
#define SHK_QUEUE_VERSION 3u                   /* 2: the free position lives in head_hi;
                                                  3: delivery modes, task accounting */
#define SHK_QF_AT_LEAST_ONCE 0x1u              /* shk_queue_sh.flags: the delivery mode */
/* shk_queue_sh.flags bits 1-2: what the messages are, recorded at creation by a caller
 * that says (the Python binding always does): SHK_QF_MODE_BYTES raw bytes, SHK_QF_MODE_
 * OBJECTS serialised objects.  0: not recorded (queues made before the mode was kept,
 * version 3 all the same, or by a C caller that did not say): any mode may open it, as
 * before.  3 is corrupt. */
#define SHK_QF_MODE_MASK 0x6u
#define SHK_QF_MODE_BYTES 0x2u
#define SHK_QF_MODE_OBJECTS 0x4u
#define SHK_QF_KNOWN (SHK_QF_AT_LEAST_ONCE | SHK_QF_MODE_MASK)
#define SHK_QTAKER_SLOT_BITS 9                 /* TAKEN owner field: slot + 1 | gen << 9 */
#define SHK_QUEUE_SLOTS 256                    /* handles open at once, all processes */
#define SHK_QUEUE_RESV 64                      /* zero-copy reservations alive at once */
#define SHK_QREC_HDR 16                        /* record header bytes */
#define SHK_QREC_ALIGN 16                      /* records start at multiples of this */
#define SHK_QUEUE_MIN_CAP 4096u
#define SHK_QUEUE_MAX_CAP (1ull << 31)         /* payload lengths are 32-bit */
#define SHK_QOWNER_SHIFT 48                    /* tail_hi: owner slot + 1 in [63..48] */
#define SHK_QCOUNT_MASK ((1ull << 48) - 1)     /*                messages so far in [47..0] */

/* Record states (header word bits [55..48]). 0 = the header is not written yet. */
enum shk_qrec_state {
    SHK_QS_CLAIMED = 1,     /* the producer (owner) is writing the payload */
    SHK_QS_COMMITTED = 2,   /* readable; taken once head moves past it */
    SHK_QS_CONSUMED = 3,    /* given back by its consumer (at-least-once: acknowledged);
                               space reclaimable */
    SHK_QS_TAKEN = 4        /* at-least-once: owned by the taker in [47..32] until acked */
};
/* Record kinds (header word bits [63..56]). */
enum shk_qrec_kind {
    SHK_QK_DATA = 0,        /* payload = the message bytes */
    SHK_QK_SKIP = 1,        /* stands for `count` messages lost with a dead producer */
    SHK_QK_REF = 2,         /* payload = struct shk_qref: a zero-copy block in the zone */
    SHK_QK_FRAMED = 3       /* payload = frame of parts (objects mode, out-of-band buffers) */
};

/*
 * Record header, 16 bytes.  `pos` is written after `word` with a release store and is
 * read first with an acquire load: a header is valid only if pos equals the position it
 * is read at; anything else (zeroes, or bytes of an earlier lap) means "not written".
 *   word: [31..0] payload length  [47..32] owner slot + 1 (DATA, REF, FRAMED) or
 *         message count (SKIP)  [55..48] enum shk_qrec_state  [63..56] enum shk_qrec_kind
 */
struct shk_qrec {
    uint64_t word;
    uint64_t pos;
};

/* Payload of a SHK_QK_REF record. */
struct shk_qref {
    uint32_t index;         /* reservation entry */
    uint32_t gen;           /* its generation when committed */
    uint64_t len;           /* bytes */
};

/*
 * Frame of a SHK_QK_FRAMED payload: u32 nparts, u32 0, u64 length[nparts], then each
 * part starting at a multiple of 64 bytes from the start of the payload.
 */
#define SHK_QFRAME_ALIGN 64
#define SHK_QFRAME_MAX_PARTS 4096                /* parts of one frame, at most */

/* A member slot: one per open handle (a process may hold several).  128 bytes. */
struct shk_qslot {
    int32_t pid;            /*   0  owner process; 0 = free (claimed by CAS) */
    uint32_t gen;           /*   4  bumped each time the slot is taken (taker ids) */
    uint64_t start;         /*   8  owner's start time (/proc/PID/stat field 22) */
    uint64_t claim_pos;     /*  16  producer announcement: position of the claim */
    uint64_t claim_size;    /*  24  bytes claimed */
    uint64_t claim_n;       /*  32  messages in the claim */
    uint64_t take_pos;      /*  40  consumer announcement: [take_pos, take_end) taken */
    uint64_t take_end;      /*  48 */
    uint64_t reserved0;     /*  56 */
    uint64_t got;           /*  64  at-most-once: messages handed to this handle */
    uint64_t done;          /*  72  task_done() count of this handle (both modes) */
    uint64_t waits;         /*  80  times it slept */
    uint64_t drops;         /*  88  messages it declared lost with a dead consumer */
    uint64_t recoveries;    /*  96  repairs it made */
    uint64_t pdrops;        /* 104  messages it declared lost with a dead producer */
    uint64_t redeliveries;  /* 112  messages it gave back for redelivery (at-least-once) */
    uint64_t reserved1;     /* 120 */
};

/* Reservation entry states (ctl bits [31..0]). */
enum shk_qresv_state {
    SHK_QR_FREE = 0,
    SHK_QR_ALLOCATING = 1,  /* owner is allocating the block (off set once allocated) */
    SHK_QR_RESERVED = 2,    /* owner (producer) is filling it */
    SHK_QR_QUEUED = 3,      /* a REF record in the ring points at it */
    SHK_QR_TAKEN = 4        /* owner (consumer) holds views of it */
};

/* A zero-copy reservation, 32 bytes.
 *   ctl: [31..0] state  [47..32] owner slot + 1  [63..48] generation */
struct shk_qresv {
    uint64_t ctl;
    uint64_t off;           /* zone offset of the block, 0 while unknown */
    uint64_t len;           /* bytes asked for */
    uint64_t reserved;
};

/* The queue header, 512 bytes; the hot words each have their own cache line. */
struct shk_queue_sh {
    uint64_t magic;         /*   0  SHK_QUEUE_MAGIC */
    uint32_t version;       /*   8  SHK_QUEUE_VERSION */
    uint32_t nslots;        /*  12  SHK_QUEUE_SLOTS */
    uint64_t capacity;      /*  16  ring bytes, a power of two */
    uint64_t max_messages;  /*  24  0 = limited by bytes only */
    uint64_t ring_rel;      /*  32  ring offset from the start of this object */
    uint64_t base;          /*  40  first position (random multiple of capacity) */
    uint32_t nresv;         /*  48  SHK_QUEUE_RESV */
    uint32_t flags;         /*  52  SHK_QF_*: the delivery mode and what the messages
                                       are, fixed at creation */
    uint64_t created_ns;    /*  56  CLOCK_REALTIME */

    uint64_t tail_pos;      /*  64  16-byte CAS {tail_pos, tail_hi} (producers) */
    uint64_t tail_hi;       /*  72  owner slot + 1 << 48 | messages claimed */
    uint8_t pad_tail[48];

    uint64_t head_pos;      /* 128  16-byte CAS {head_pos, head_hi} (consumers) */
    uint64_t head_hi;       /* 136  lag << 32 | messages taken (mod 2^32); the free
                                    position is head_pos - lag */
    uint8_t pad_head[48];

    uint64_t reserved2;     /* 192  0 (version 1 kept free_pos here) */
    uint8_t pad_reserved2[56];

    uint32_t data_seq;      /* 256  futex: bumped when data may have arrived */
    uint32_t data_waiters;  /* 260  consumers asleep on data_seq */
    uint32_t space_seq;     /* 264  futex: bumped when space may have been freed */
    uint32_t space_waiters; /* 268  producers asleep on space_seq */
    uint32_t closed;        /* 272  1 after close(): puts fail, gets drain then fail */
    uint32_t slot_hwm;      /* 276  slots ever used (scans stop here) */
    uint32_t data_armed;    /* 280  the data_seq value sleepers last armed (only grows) */
    uint32_t space_armed;   /* 284  the same for space_seq */
    uint64_t reserved1;     /* 288  0 */
    uint64_t retired_waits; /* 296  counters of scrubbed or released slots */
    uint64_t retired_drops; /* 304 */
    uint64_t retired_recoveries; /* 312 */

    uint64_t retired_pdrops; /* 320 */
    uint32_t done_seq;      /* 328  futex: bumped (when done_waiters) as tasks finish */
    uint32_t done_waiters;  /* 332  join() calls asleep on done_seq */
    uint64_t retired_done;  /* 336  task_done() counts of released/scrubbed slots */
    uint64_t abandoned;     /* 344  at-most-once: tasks released with their handle */
    uint64_t retired_redeliveries; /* 352 */
    uint64_t redeliverable; /* 360  at-least-once: hint, records given back (see above) */
    uint64_t reserved[2];   /* 368 */
    pthread_mutex_t repair; /* 384  robust; repairs and slot scrubbing only */
    uint8_t pad_repair[128 - sizeof(pthread_mutex_t)];
};


/* ---------------------------------------------------------------------------------- */
/* Dict (dict.c): the lua_shared_dict surface with TTL, LRU and lists.                */
/* Section owned by the dict work (issue 7).                                          */
/* ---------------------------------------------------------------------------------- */

/*
 * A dict is ONE zone allocation (directory type SHK_OBJ_DICT, dirent.aux = capacity),
 * split into `nshards` independent shards.  A key lives in the shard chosen by its hash;
 * everything about it (its bucket chain, its cells, its place in the eviction queue) is
 * inside that shard, so a shard is a small complete dict with its own lock.  All offsets
 * below are relative to the dict's first byte; cells are numbered per shard from 0, and
 * every link stores cell + 1 (0 = none).
 *
 *   0                               struct shk_dict_header (256 bytes)
 *   header.shards_off               struct shk_dict_shard[nshards] (512 bytes each)
 *   header.data_off + s * stride    the data block of shard s:
 *       + 0                         uint32_t buckets[buckets_per_shard]: chain heads
 *       + header.used_off           uint64_t used[ceil(cells/64)]: bit c set <=> cell c
 *                                   belongs to an item, a fragment or a list node
 *       + header.ref_off            uint64_t ref[ceil(cells/64)]: bit c set <=> the item
 *                                   whose first cell is c was used since the eviction
 *                                   hand last passed it (CLOCK reference bit)
 *       + header.undo_off           SHK_DICT_UNDO bytes: a copy of the item being
 *                                   updated in place (see shard.undo_cell)
 *       + header.cells_off          cells_per_shard cells of SHK_DICT_CELL bytes
 *
 * Placement.  h = shk_dict_hash(key type, key bytes) (below); hi = h >> 32;
 * shard = hi & (nshards - 1); bucket = (hi >> log2(nshards)) & (buckets_per_shard - 1);
 * the item stores (uint32_t)h as its tag.  Chains are singly linked through item.next.
 *
 * The hash, exactly (all arithmetic modulo 2^64; le64 reads 8 bytes little-endian;
 * a tail of fewer than 8 bytes is read as a little-endian number zero-padded on top;
 * mum(a, b) = low64(a * b) ^ high64(a * b) of the 128-bit product):
 *     h = mum(SHK_DICT_SEED ^ type, SHK_DICT_K0 ^ len)
 *     while 16 or more bytes remain: h = mum(le64(p) ^ SHK_DICT_K1, le64(p + 8) ^ h); p += 16
 *     a = next 8 bytes (or fewer), b = the 0..7 after them (0 if none)
 *     h = mum(a ^ SHK_DICT_K1, b ^ h ^ SHK_DICT_K2)
 *
 * Items.  An item is a run of cells starting with struct shk_ditem, then the key, then
 * (from the next multiple of 8) the value.  When no single free run is large enough the
 * rest of the value continues in fragments: runs that start with struct shk_dfrag,
 * chained from item.frag.  The header and the key are always in the first run, and so is
 * any value of 8 bytes or less.  Values by type (item.vtype, enum shk_dict_vtype):
 * BYTES raw; STR UTF-8; INT int64 (native order, 8-aligned: incr() updates it with one
 * store); BIGINT little-endian two's complement, minimal length; FLOAT IEEE-754 binary64
 * (native order); TRUE / FALSE / NONE no bytes; OBJECT the bytes of the serializer of
 * the process that stored it (pickle by default); LIST a struct shk_dlist whose
 * elements are nodes (struct shk_dnode, then the element's bytes, typed like values).
 *
 * Free memory is kept as runs of free cells: struct shk_dfree in the first cell, the
 * run length again in the last 4 bytes of its last cell, linked into bins[bin(len)]
 * (bin(n) = n - 1 for n <= 32, else 32 + floor(log2 n) - 5).
 *
 * Concurrency.  Writers take the shard's robust mutex and keep `seq` odd while they
 * change anything; readers take no lock: they read seq (even), follow the chain, copy
 * the value, and keep the copy only if seq has not changed.  Every offset and length read
 * that way is bounds-checked against the shard before use.  Reading sets the item's ref
 * bit (a separate bitmap, so a stale reader can never damage an item); eviction is a
 * CLOCK / second-chance FIFO over the queue lru_head..lru_tail: expired items at the hand
 * are reclaimed, referenced ones get their bit cleared and go to the tail, the first
 * unreferenced one is evicted.  A new key joins the tail unreferenced; a write to an
 * existing key keeps its place in the queue and sets its bit (a write is a use).
 *
 * Crash safety.  Published state is: the bucket chains, each item's bytes, and each
 * list's forward chain.  Every write prepares new cells off to the side and publishes
 * them with one aligned store (a chain link, a list link, an int64 value, an expiry),
 * then frees what it replaced -- except an update whose new value takes exactly the
 * cells of the old one (and at most SHK_DICT_UNDO bytes): that one first copies the
 * item to the shard's undo area and sets shard.undo_cell, then overwrites the item in
 * place, then clears undo_cell; recovery copies the old bytes back when it is set.  Everything else (used bitmap, free runs, bins, counters,
 * the eviction queue, list tails and counts, seq) is derived: after an owner died, the
 * next locker walks the chains, drops anything that fails a check, and rebuilds the
 * rest (dict.c, shard_rebuild).  Memory allocated by a write that never got published
 * is free again after that walk.
 */

#define SHK_DICT_MAGIC 0x54434944u   /* "DICT" */
#define SHK_DICT_VERSION 1u
#define SHK_DICT_CELL 32u            /* bytes per cell */
#define SHK_DICT_CELL_SHIFT 5
#define SHK_DICT_MAX_SHARDS 256u
#define SHK_DICT_NBINS 64
#define SHK_DICT_KEY_MAX 65535u      /* bytes */
#define SHK_DICT_UNDO 1024u          /* bytes of a shard's undo area: in-place updates */
#define SHK_DICT_FREE_MAGIC 0x45455246u /* "FREE": first word of a free run */
#define SHK_DICT_SEED 0x736b6d68646b6974ull /* "tikdhmks" */
#define SHK_DICT_K0 0x9e3779b97f4a7c15ull
#define SHK_DICT_K1 0xbf58476d1ce4e5b9ull
#define SHK_DICT_K2 0x94d049bb133111ebull

enum shk_dict_ktype { SHK_DK_BYTES = 1, SHK_DK_STR = 2 };

enum shk_dict_vtype {
    SHK_DV_BYTES = 1,
    SHK_DV_STR = 2,
    SHK_DV_INT = 3,
    SHK_DV_BIGINT = 4,
    SHK_DV_FLOAT = 5,
    SHK_DV_FALSE = 6,
    SHK_DV_TRUE = 7,
    SHK_DV_NONE = 8,
    SHK_DV_OBJECT = 9,
    SHK_DV_LIST = 10
};

struct shk_dict_header {
    uint32_t magic;             /*   0 SHK_DICT_MAGIC */
    uint32_t version;           /*   4 SHK_DICT_VERSION */
    uint32_t cell_size;         /*   8 SHK_DICT_CELL */
    uint32_t nshards;           /*  12 power of two, 1 .. SHK_DICT_MAX_SHARDS */
    uint32_t cells_per_shard;   /*  16 */
    uint32_t buckets_per_shard; /*  20 power of two */
    uint64_t capacity;          /*  24 bytes of cells: nshards * cells_per_shard * cell */
    uint64_t total_size;        /*  32 bytes of the whole dict object */
    uint64_t shards_off;        /*  40 struct shk_dict_shard[nshards] */
    uint64_t data_off;          /*  48 data block of shard 0 (64-aligned) */
    uint64_t shard_stride;      /*  56 bytes from one data block to the next */
    uint64_t used_off;          /*  64 inside a data block: the used bitmap */
    uint64_t ref_off;           /*  72 inside a data block: the ref bitmap */
    uint64_t cells_off;         /*  80 inside a data block: cell 0 (64-aligned) */
    uint64_t created_ns;        /*  88 CLOCK_REALTIME */
    uint64_t hits;              /*  96 lookups that found a value; each process adds its */
    uint64_t misses;            /* 104   own counts in batches (atomic add) */
    uint64_t undo_off;          /* 112 inside a data block: the undo area (64-aligned) */
    uint64_t reserved[17];      /* 120 .. 256 */
};

struct shk_dict_shard {
    pthread_mutex_t lock;       /*   0 robust, process-shared: held by every write */
    uint8_t pad0[64 - sizeof(pthread_mutex_t)];
    /* the line readers look at; writers change it with every write */
    uint32_t seq;               /*  64 even: stable; odd: a writer is changing the shard */
    uint32_t items;             /*  68 keys held (expired ones until they are reclaimed) */
    uint32_t lru_head;          /*  72 eviction queue: oldest item, cell + 1 */
    uint32_t lru_tail;          /*  76 newest item */
    uint32_t free_cells;        /*  80 cells in free runs */
    uint32_t ttl_items;         /*  84 items that have an expiry time */
    uint64_t min_expire;        /*  88 no item expires before this (ms; a lower bound) */
    uint64_t bin_mask;          /*  96 bit b set <=> bins[b] is not empty */
    uint32_t version;           /* 104 stamped into each new item (compare-and-set) */
    uint32_t expire_cursor;     /* 108 next bucket the expired-item sweep looks at */
    uint32_t reserved0;         /* 112 */
    uint32_t reserved1;         /* 116 */
    uint64_t sweep_min;         /* 120 earliest expiry seen by the sweep pass in progress
                                       (and of items given one since it began) */
    /* statistics (protected by the lock; read without it) */
    uint64_t evictions;         /* 128 unexpired items removed to make room */
    uint64_t expirations;       /* 136 expired items reclaimed */
    uint64_t recoveries;        /* 144 times a dead owner's state was rebuilt */
    uint64_t reserved2[5];      /* 152 */
    uint32_t bins[SHK_DICT_NBINS]; /* 192 free runs by size: first run, cell + 1 */
    uint32_t undo_cell;         /* 448 item being updated in place (cell + 1), its old
                                       bytes in the undo area; 0 = none */
    uint32_t undo_ncells;       /* 452 cells saved there */
    uint8_t pad1[512 - 456];
};

/* First cell(s) of an item, 48 bytes; then the key; then the value from offset
 * 48 + round_up(klen, 8). */
struct shk_ditem {
    uint32_t next;              /*   0 next item of the bucket chain (cell + 1) */
    uint32_t tag;               /*   4 low 32 bits of the key's hash */
    uint32_t lru_prev;          /*   8 eviction queue: older neighbour (cell + 1) */
    uint32_t lru_next;          /*  12 younger neighbour (cell + 1) */
    uint64_t expire;            /*  16 ms since the epoch when it expires; 0 = never */
    uint32_t ncells;            /*  24 cells of this first run (>= 2) */
    uint32_t frag;              /*  28 first fragment (struct shk_dfrag) of the rest */
    uint32_t vlen;              /*  32 value bytes (LIST: sizeof(struct shk_dlist)) */
    uint32_t flags;             /*  36 the user's flags */
    uint16_t klen;              /*  40 key bytes */
    uint8_t ktype;              /*  42 enum shk_dict_ktype */
    uint8_t vtype;              /*  43 enum shk_dict_vtype */
    uint32_t version;           /*  44 shard.version when written */
};

/* A further run of an item's or a node's value. */
struct shk_dfrag {
    uint32_t ncells;            /*   0 cells of this run */
    uint32_t next;              /*   4 next fragment (cell + 1) */
};

/* The value of a LIST item. Elements are nodes; the forward chain from `head` is the
 * published truth, `tail`, `count` and the nodes' `prev` are rebuilt after a crash. */
struct shk_dlist {
    uint32_t head;              /*   0 first node (cell + 1) */
    uint32_t tail;              /*   4 last node */
    uint64_t count;             /*   8 elements (a list is never empty: it goes away) */
};

/* First cell(s) of a list element, 24 bytes, then the element's bytes. */
struct shk_dnode {
    uint32_t next;              /*   0 toward the tail (cell + 1) */
    uint32_t prev;              /*   4 toward the head */
    uint32_t ncells;            /*   8 cells of this first run (>= 1) */
    uint32_t frag;              /*  12 first fragment of the rest */
    uint32_t vlen;              /*  16 element bytes */
    uint8_t vtype;              /*  20 enum shk_dict_vtype (never LIST) */
    uint8_t reserved[3];        /*  21 */
};

/* First cell of a run of free cells; the run's last 4 bytes repeat ncells. */
struct shk_dfree {
    uint32_t magic;             /*   0 SHK_DICT_FREE_MAGIC */
    uint32_t ncells;            /*   4 */
    uint32_t next;              /*   8 next run of the same bin (cell + 1) */
    uint32_t prev;              /*  12 */
};


/* ---------------------------------------------------------------------------------- */
/* Board (board.c), ndarray and SharedConfig: latest-value boards and arrays.         */
/* Section owned by the board work (issue 8).                                         */
/* ---------------------------------------------------------------------------------- */

/*
 * A Board (SHK_OBJ_BOARD; SharedConfig uses SHK_OBJ_CONFIG with the same layout) is one
 * allocation:
 *
 *   +0                     struct shk_board_header (320 bytes)
 *   +320                   struct shk_board_slot[nbuffers]      (64 bytes each)
 *   +320 + 64*nbuffers     struct shk_board_reader[nreaders]    (64 bytes each)
 *   +data_off              nbuffers data areas of `stride` bytes (capacity rounded up
 *                          to 64); area i is slot i's payload
 *
 * One writer, any number of readers.  Values are published by writing a slot that is
 * neither the latest one nor pinned by a reader, under the slot's seqlock (`seq` odd
 * while it is written, even when complete), then storing `latest` = (version << 8) |
 * slot with one seq_cst store.  Readers copy the latest slot and accept the copy only if
 * its `seq` was even and unchanged around the copy (and `version` matched): they never
 * write shared memory on that path.  A reader that wants a zero-copy view *pins* the
 * latest value in its reader record (store pin = latest word, then check that `latest`
 * still equals it); the writer never chooses a pinned slot.  At most nreaders =
 * nbuffers - 2 records exist, so at least one slot is always free for the writer: the
 * writer never waits for readers.
 *
 * Versions start at 1 and grow by one per publication; `latest` == 0 means nothing was
 * published yet.  Waiters sleep on the futex word `futex` (the low 32 bits of the
 * latest version) after incrementing `waiters`; the writer wakes them only when
 * `waiters` != 0 (after a full fence).
 *
 * Writer ownership (pid + start time, generation) and the claiming of reader records are
 * protected by the robust mutex `lock`, never held while publishing or reading.  A dead
 * writer leaves at most one slot with an odd `seq`; it is not the latest, so readers
 * never see it, and the next writer simply rewrites it.
 *
 * Payload formats (slot.kind) are written and read by the Python layer:
 *   SHK_BOARD_KIND_BYTES   raw bytes, meta = 0
 *   SHK_BOARD_KIND_STR     UTF-8 text, meta = 0
 *   SHK_BOARD_KIND_NDARRAY a NumPy array: struct shk_board_ndarray_head, then the dtype
 *                          descriptor (UTF-8), then at `meta` (64-aligned) the C-order
 *                          elements
 *   SHK_BOARD_KIND_PICKLE  pickle protocol 5: struct shk_board_pickle_head, then nbufs
 *                          (offset, length) u64 pairs, the pickle stream at pickle_off,
 *                          and out-of-band buffers at their (64-aligned) offsets; meta =
 *                          pickle_off
 *   >= SHK_BOARD_KIND_USER free for applications
 */
#define SHK_BOARD_MAGIC 0x44524f42u          /* "BORD" */
#define SHK_BOARD_MIN_BUFFERS 2u
#define SHK_BOARD_MAX_BUFFERS 64u            /* the slot index lives in 8 bits of `latest` */
#define SHK_BOARD_HEADER_SIZE 320u
#define SHK_BOARD_ALIGN 64u                  /* data areas and array elements */
#define SHK_BOARD_SLOT_BITS 8u
#define SHK_BOARD_SLOT_MASK 0xffull

enum shk_board_kind {
    SHK_BOARD_KIND_BYTES = 1,
    SHK_BOARD_KIND_STR = 2,
    SHK_BOARD_KIND_NDARRAY = 3,
    SHK_BOARD_KIND_PICKLE = 4,
    SHK_BOARD_KIND_USER = 1000
};

struct shk_board_header {
    /* identity, written once at creation */
    uint32_t magic;                 /*   0  SHK_BOARD_MAGIC */
    uint32_t nbuffers;              /*   4  slots, SHK_BOARD_MIN_BUFFERS..MAX_BUFFERS */
    uint64_t capacity;              /*   8  largest payload in bytes (max_bytes) */
    uint64_t stride;                /*  16  bytes between data areas: capacity rounded up to 64 */
    uint64_t data_off;              /*  24  first data area, from the header (64-aligned) */
    uint32_t nreaders;              /*  32  reader records: nbuffers - 2 */
    uint32_t flags;                 /*  36  reserved, 0 */
    uint64_t created_ns;            /*  40  CLOCK_REALTIME */
    uint64_t reserved0[2];          /*  48 */

    /* publication: written by the writer on every publish (its own cache line) */
    uint64_t latest;                /*  64  (version << 8) | slot; 0 = nothing yet */
    uint32_t futex;                 /*  72  low 32 bits of the latest version; futex word */
    uint32_t waiters;               /*  76  readers sleeping on `futex` */
    uint64_t last_publish_ns;       /*  80  CLOCK_REALTIME of the latest publication */
    uint64_t pinned_skips;          /*  88  slots the writer skipped because they were pinned */
    uint64_t reserved1[4];          /*  96 */

    /* ownership: protected by `lock` */
    int32_t writer_pid;             /* 128  0 = no writer */
    uint32_t reserved2;             /* 132 */
    uint64_t writer_start;          /* 136  its start time (proc.h) */
    uint64_t writer_gen;            /* 144  bumped by every take-over; a handle publishes
                                            only while this equals the value it took */
    uint64_t takeovers;             /* 152  writers that replaced a dead writer */
    uint64_t reclaimed;             /* 160  reader records taken back from dead processes */
    uint64_t reserved3[3];          /* 168 */
    pthread_mutex_t lock;           /* 192  robust, process-shared */
    uint8_t pad0[SHK_BOARD_HEADER_SIZE - 192 - sizeof(pthread_mutex_t)];
};

/* One per buffer, one cache line each. Fields other than seq are valid while seq is
 * even (and unchanged). */
struct shk_board_slot {
    uint64_t seq;                   /*   0  seqlock: odd while the writer fills the slot */
    uint64_t version;               /*   8  version held */
    uint64_t len;                   /*  16  payload bytes, <= capacity */
    uint64_t meta;                  /*  24  kind-specific offset inside the payload */
    uint32_t kind;                  /*  32  enum shk_board_kind */
    uint32_t reserved0;             /*  36 */
    uint64_t published_ns;          /*  40  CLOCK_REALTIME when published */
    uint64_t reserved1[2];          /*  48 */
};

/* A reader that holds (or held) zero-copy views. Claimed under `lock`; `pin` is written
 * only by its owner. A record whose owner (pid, start) is dead is reclaimed. */
struct shk_board_reader {
    int32_t pid;                    /*   0  owner; 0 = free (written last when claiming) */
    uint32_t reserved0;             /*   4 */
    uint64_t start;                 /*   8  owner's start time */
    uint64_t pin;                   /*  16  pinned `latest` word; 0 = none */
    uint64_t pins;                  /*  24  views taken through this record (statistics) */
    uint64_t reserved1[4];          /*  32 */
};

/* Payload head of SHK_BOARD_KIND_NDARRAY values. */
#define SHK_BOARD_NDARRAY_MAGIC 0x5941524eu  /* "NRAY" */
#define SHK_NDARRAY_MAX_DIMS 32u
struct shk_board_ndarray_head {
    uint32_t magic;                 /*   0  SHK_BOARD_NDARRAY_MAGIC */
    uint16_t ndim;                  /*   4  <= SHK_NDARRAY_MAX_DIMS */
    uint16_t descr_len;             /*   6  bytes of the dtype descriptor after the shape */
    uint64_t nbytes;                /*   8  element bytes at `meta` */
    /* followed by uint64_t shape[ndim], then descr_len bytes of descriptor */
};

/* Payload head of SHK_BOARD_KIND_PICKLE values. */
#define SHK_BOARD_PICKLE_MAGIC 0x354c4b50u   /* "PKL5" */
struct shk_board_pickle_head {
    uint32_t magic;                 /*   0  SHK_BOARD_PICKLE_MAGIC */
    uint32_t nbufs;                 /*   4  out-of-band buffers */
    uint64_t pickle_off;            /*   8  offset of the pickle stream */
    uint64_t pickle_len;            /*  16  its length */
    /* followed by nbufs pairs (uint64_t offset, uint64_t length) */
};

/*
 * A shared NumPy array (SHK_OBJ_NDARRAY): a 512-byte head recording what the array is,
 * then the elements (C order) at data_off.  Written in full by the creator under the
 * zone mutex before the directory entry is published, never changed afterwards.
 */
#define SHK_NDARRAY_MAGIC 0x4152444eu        /* "NDRA" */
#define SHK_NDARRAY_HEAD_SIZE 512u
#define SHK_NDARRAY_DESCR_MAX 160u
struct shk_ndarray_head {
    uint32_t magic;                 /*   0  SHK_NDARRAY_MAGIC */
    uint32_t ndim;                  /*   4  <= SHK_NDARRAY_MAX_DIMS */
    uint64_t data_off;              /*   8  elements, from the head (== 512) */
    uint64_t nbytes;                /*  16  product(shape) * itemsize */
    uint64_t itemsize;              /*  24 */
    uint64_t shape[SHK_NDARRAY_MAX_DIMS]; /* 32 */
    char descr[SHK_NDARRAY_DESCR_MAX];    /* 288  dtype descriptor (numpy.lib.format's
                                                  dtype_to_descr, repr'd), NUL-terminated */
    uint8_t reserved[SHK_NDARRAY_HEAD_SIZE - 448]; /* 448 */
};


/* ---------------------------------------------------------------------------------- */
/* Compile-time checks: the offsets above are the specification                         */
/* ---------------------------------------------------------------------------------- */

_Static_assert(sizeof(struct shk_page) == 24, "shk_page is 24 bytes");
_Static_assert(sizeof(struct shk_extent) == 40, "shk_extent is 40 bytes");
_Static_assert(sizeof(struct shk_slab_stat) == 32, "shk_slab_stat is 32 bytes");
_Static_assert(sizeof(pthread_mutex_t) <= 128, "the zone lock must fit in 128 bytes");
_Static_assert(offsetof(struct shk_zone_header, state) == 16, "state at 16");
_Static_assert(offsetof(struct shk_zone_header, tag) == 64, "tag at 64");
_Static_assert(offsetof(struct shk_zone_header, creator_pid) == 128, "creator_pid at 128");
_Static_assert(offsetof(struct shk_zone_header, nextents) == 192, "nextents at 192");
_Static_assert(offsetof(struct shk_zone_header, pending_off) == 248, "pending_off at 248");
_Static_assert(offsetof(struct shk_zone_header, stats) == 320, "stats at 320");
_Static_assert(offsetof(struct shk_zone_header, lock) == 640, "lock at 640");
_Static_assert(offsetof(struct shk_zone_header, ext) == 768, "extents at 768");
_Static_assert(sizeof(struct shk_zone_header) == SHK_PAGE, "zone header is one page");
_Static_assert(sizeof(struct shk_dirent) == 128, "dirent is 128 bytes");
_Static_assert(offsetof(struct shk_dir_table, slot) == 64, "dir slots at 64");
_Static_assert(sizeof(struct shk_qrec) == SHK_QREC_HDR, "queue record header is 16 bytes");
_Static_assert(sizeof(struct shk_qref) == 16, "queue ref payload is 16 bytes");
_Static_assert(sizeof(struct shk_qslot) == 128, "queue slot is 128 bytes");
_Static_assert(offsetof(struct shk_qslot, waits) == 80, "queue slot counters at 80");
_Static_assert(offsetof(struct shk_qslot, got) == 64, "queue slot task counts at 64");
_Static_assert(sizeof(struct shk_qresv) == 32, "queue reservation is 32 bytes");
_Static_assert(offsetof(struct shk_queue_sh, tail_pos) == 64, "queue tail at 64");
_Static_assert(offsetof(struct shk_queue_sh, head_pos) == 128, "queue head at 128");
_Static_assert(offsetof(struct shk_queue_sh, reserved2) == 192, "queue reserved word at 192");
_Static_assert(offsetof(struct shk_queue_sh, data_seq) == 256, "queue futex words at 256");
_Static_assert(offsetof(struct shk_queue_sh, data_armed) == 280, "queue armed words at 280");
_Static_assert(offsetof(struct shk_queue_sh, retired_waits) == 296, "queue retired at 296");
_Static_assert(offsetof(struct shk_queue_sh, done_seq) == 328, "queue join word at 328");
_Static_assert(offsetof(struct shk_queue_sh, redeliverable) == 360, "queue hint at 360");
_Static_assert(offsetof(struct shk_queue_sh, repair) == 384, "queue repair mutex at 384");
_Static_assert(sizeof(struct shk_queue_sh) == 512, "queue header is 512 bytes");
_Static_assert(sizeof(struct shk_board_header) == SHK_BOARD_HEADER_SIZE, "board header is 320 bytes");
_Static_assert(offsetof(struct shk_board_header, latest) == 64, "board latest at 64");
_Static_assert(offsetof(struct shk_board_header, futex) == 72, "board futex at 72");
_Static_assert(offsetof(struct shk_board_header, writer_pid) == 128, "board writer_pid at 128");
_Static_assert(offsetof(struct shk_board_header, lock) == 192, "board lock at 192");
_Static_assert(sizeof(pthread_mutex_t) <= SHK_BOARD_HEADER_SIZE - 192, "board lock fits");
_Static_assert(sizeof(struct shk_board_slot) == 64, "board slot is one cache line");
_Static_assert(offsetof(struct shk_board_slot, kind) == 32, "slot kind at 32");
_Static_assert(offsetof(struct shk_board_slot, published_ns) == 40, "slot published_ns at 40");
_Static_assert(sizeof(struct shk_board_reader) == 64, "board reader record is one cache line");
_Static_assert(offsetof(struct shk_board_reader, pin) == 16, "reader pin at 16");
_Static_assert(sizeof(struct shk_board_ndarray_head) == 16, "board ndarray head is 16 bytes");
_Static_assert(sizeof(struct shk_board_pickle_head) == 24, "board pickle head is 24 bytes");
_Static_assert(sizeof(struct shk_ndarray_head) == SHK_NDARRAY_HEAD_SIZE, "ndarray head is 512 bytes");
_Static_assert(offsetof(struct shk_ndarray_head, shape) == 32, "ndarray shape at 32");
_Static_assert(offsetof(struct shk_ndarray_head, descr) == 288, "ndarray descr at 288");

_Static_assert(sizeof(union shk_ident) == 8, "an identity is one 64-bit word");
_Static_assert(sizeof(struct shk_sync_head) == 16, "sync head is 16 bytes");
_Static_assert(offsetof(struct shk_lock_sh, owner) == 16, "lock owner at 16");
_Static_assert(offsetof(struct shk_lock_sh, contentions) == 64, "lock stats at 64");
_Static_assert(sizeof(struct shk_lock_sh) == 128, "lock is 128 bytes");
_Static_assert(sizeof(struct shk_event_sh) == 64, "event is 64 bytes");
_Static_assert(sizeof(struct shk_undo_slot) == 16, "undo slot is 16 bytes");
_Static_assert(sizeof(pthread_mutex_t) <= 64, "a sync mutex must fit in 64 bytes");
_Static_assert(offsetof(struct shk_sem_sh, mutex) == 64, "semaphore mutex at 64");
_Static_assert(offsetof(struct shk_sem_sh, j_valid) == 128, "semaphore journal at 128");
_Static_assert(offsetof(struct shk_sem_sh, slot) == 192, "semaphore slots at 192");
_Static_assert(sizeof(struct shk_rw_slot) == 64, "reader slot is one cache line");
_Static_assert(offsetof(struct shk_rwlock_sh, slot) == 128, "reader slots at 128");
_Static_assert(offsetof(struct shk_cond_sh, lock_name) == 64, "condition lock name at 64");
_Static_assert(offsetof(struct shk_cond_sh, lock) == 128, "condition lock at 128");
_Static_assert(sizeof(struct shk_cond_sh) == 256, "condition is 256 bytes");
_Static_assert(offsetof(struct shk_barrier_sh, mutex) == 64, "barrier mutex at 64");
_Static_assert(offsetof(struct shk_barrier_sh, arrived) == 128, "barrier arrivals at 128");
_Static_assert(offsetof(struct shk_value_sh, type_name) == 48, "value type name at 48");
_Static_assert(offsetof(struct shk_value_sh, lock) == 112, "value lock at 112");
_Static_assert(sizeof(struct shk_value_sh) <= SHK_VALUE_DATA_OFF, "value header fits");
_Static_assert(sizeof(struct shk_counter_sh) == 64, "counter is one cache line");

_Static_assert(sizeof(struct shk_dict_header) == 256, "dict header is 256 bytes");
_Static_assert(offsetof(struct shk_dict_header, hits) == 96, "dict hits at 96");
_Static_assert(sizeof(pthread_mutex_t) <= 64, "a dict shard's lock must fit in 64 bytes");
_Static_assert(offsetof(struct shk_dict_shard, seq) == 64, "dict shard seq at 64");
_Static_assert(offsetof(struct shk_dict_shard, min_expire) == 88, "dict min_expire at 88");
_Static_assert(offsetof(struct shk_dict_shard, evictions) == 128, "dict evictions at 128");
_Static_assert(offsetof(struct shk_dict_shard, bins) == 192, "dict bins at 192");
_Static_assert(offsetof(struct shk_dict_shard, undo_cell) == 448, "dict undo_cell at 448");
_Static_assert(offsetof(struct shk_dict_header, undo_off) == 112, "dict undo_off at 112");
_Static_assert(sizeof(struct shk_dict_shard) == 512, "dict shard is 512 bytes");
_Static_assert(sizeof(struct shk_ditem) == 48, "dict item header is 48 bytes");
_Static_assert(offsetof(struct shk_ditem, expire) == 16, "item expire at 16 (8-aligned)");
_Static_assert(offsetof(struct shk_ditem, klen) == 40, "item klen at 40");
/* dict.h's inline lookup reads the header as whole words at these offsets */
_Static_assert(offsetof(struct shk_ditem, next) == 0 && offsetof(struct shk_ditem, tag) == 4,
               "item word 0: next | tag << 32");
_Static_assert(offsetof(struct shk_ditem, ncells) == 24 && offsetof(struct shk_ditem, frag) == 28,
               "item word 3: ncells | frag << 32");
_Static_assert(offsetof(struct shk_ditem, vlen) == 32 && offsetof(struct shk_ditem, flags) == 36,
               "item word 4: vlen | flags << 32");
_Static_assert(offsetof(struct shk_ditem, ktype) == 42 && offsetof(struct shk_ditem, vtype) == 43 &&
               offsetof(struct shk_ditem, version) == 44,
               "item word 5: klen | ktype << 16 | vtype << 24 | version << 32");
_Static_assert(sizeof(struct shk_dfrag) == 8, "dict fragment header is 8 bytes");
_Static_assert(sizeof(struct shk_dlist) == 16, "dict list is 16 bytes");
_Static_assert(sizeof(struct shk_dnode) == 24, "dict list node is 24 bytes");
_Static_assert(sizeof(struct shk_dfree) == 16, "dict free run header is 16 bytes");
_Static_assert(SHK_DICT_CELL == 1u << SHK_DICT_CELL_SHIFT, "cell shift");

#endif
