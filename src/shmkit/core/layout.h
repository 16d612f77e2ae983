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

/* (structures of this section go here, each with _Static_asserts on size and offsets) */


/* ---------------------------------------------------------------------------------- */
/* Queue (queue.c): multi-producer multi-consumer ring of variable-size records.      */
/* Section owned by the queue work (issue 6).                                         */
/* ---------------------------------------------------------------------------------- */

/* (structures of this section go here, each with _Static_asserts on size and offsets) */


/* ---------------------------------------------------------------------------------- */
/* Dict (dict.c): the lua_shared_dict surface with TTL, LRU and lists.                */
/* Section owned by the dict work (issue 7).                                          */
/* ---------------------------------------------------------------------------------- */

/* (structures of this section go here, each with _Static_asserts on size and offsets) */


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

#endif
