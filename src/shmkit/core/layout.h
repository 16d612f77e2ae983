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
 *
 * Records.  A record is a 16-byte header followed by its payload, padded to 16 bytes;
 * the payload may wrap around the end of the ring (headers never do: they are 16-byte
 * aligned and the capacity is a multiple of 16).
 *
 * Producers claim space with one 16-byte CAS on `tail` {pos, owner|count} after
 * announcing (claim_pos, claim_size, claim_n) in their member slot, then write the
 * headers (the first one last), copy, and commit each header with a release store.
 * Consumers read the header at `head`, announce (take_pos, take_end), claim with one
 * 16-byte CAS on `head`, copy, then give the space back: the consumer of the oldest
 * record advances `free` itself; others mark their records CONSUMED and whoever is at
 * `free` advances it over them.  No lock on any of these paths.
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
 */

#define SHK_QUEUE_MAGIC 0x45554555514b4853ull  /* "SHKQUEUE" read as a little-endian u64 */
#define SHK_QUEUE_VERSION 1u
#define SHK_QUEUE_SLOTS 256                    /* handles open at once, all processes */
#define SHK_QUEUE_RESV 64                      /* zero-copy reservations alive at once */
#define SHK_QREC_HDR 16                        /* record header bytes */
#define SHK_QREC_ALIGN 16                      /* records start at multiples of this */
#define SHK_QUEUE_MIN_CAP 4096u
#define SHK_QUEUE_MAX_CAP (1ull << 31)         /* payload lengths are 32-bit */
#define SHK_QOWNER_SHIFT 48                    /* tail/head .hi: owner slot + 1 in [63..48] */
#define SHK_QCOUNT_MASK ((1ull << 48) - 1)     /*                messages so far in [47..0] */

/* Record states (header word bits [55..48]). 0 = the header is not written yet. */
enum shk_qrec_state {
    SHK_QS_CLAIMED = 1,     /* the producer (owner) is writing the payload */
    SHK_QS_COMMITTED = 2,   /* readable; taken once head moves past it */
    SHK_QS_CONSUMED = 3     /* given back by its consumer; space reclaimable */
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

/* A member slot: one per open handle (a process may hold several).  128 bytes. */
struct shk_qslot {
    int32_t pid;            /*   0  owner process; 0 = free (claimed by CAS) */
    uint32_t flags;         /*   4  reserved, 0 */
    uint64_t start;         /*   8  owner's start time (/proc/PID/stat field 22) */
    uint64_t claim_pos;     /*  16  producer announcement: position of the claim */
    uint64_t claim_size;    /*  24  bytes claimed */
    uint64_t claim_n;       /*  32  messages in the claim */
    uint64_t take_pos;      /*  40  consumer announcement: [take_pos, take_end) taken */
    uint64_t take_end;      /*  48 */
    uint64_t reserved0;     /*  56 */
    uint64_t reserved2[2];  /*  64  0 (puts and gets are derived from tail and head) */
    uint64_t waits;         /*  80  times it slept */
    uint64_t drops;         /*  88  messages it declared lost with a dead consumer */
    uint64_t recoveries;    /*  96  repairs it made */
    uint64_t pdrops;        /* 104  messages it declared lost with a dead producer */
    uint64_t reserved1[2];  /* 112 */
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
    uint32_t flags;         /*  52  reserved, 0 */
    uint64_t created_ns;    /*  56  CLOCK_REALTIME */

    uint64_t tail_pos;      /*  64  16-byte CAS {tail_pos, tail_hi} (producers) */
    uint64_t tail_hi;       /*  72  owner slot + 1 << 48 | messages claimed */
    uint8_t pad_tail[48];

    uint64_t head_pos;      /* 128  16-byte CAS {head_pos, head_hi} (consumers) */
    uint64_t head_hi;       /* 136  owner slot + 1 << 48 | messages taken */
    uint8_t pad_head[48];

    uint64_t free_pos;      /* 192  oldest position not given back */
    uint8_t pad_free[56];

    uint32_t data_seq;      /* 256  futex: bumped when data may have arrived */
    uint32_t data_waiters;  /* 260  consumers asleep on data_seq */
    uint32_t space_seq;     /* 264  futex: bumped when space may have been freed */
    uint32_t space_waiters; /* 268  producers asleep on space_seq */
    uint32_t closed;        /* 272  1 after close(): puts fail, gets drain then fail */
    uint32_t slot_hwm;      /* 276  slots ever used (scans stop here) */
    uint64_t reserved1[2];  /* 280  0 */
    uint64_t retired_waits; /* 296  counters of scrubbed or released slots */
    uint64_t retired_drops; /* 304 */
    uint64_t retired_recoveries; /* 312 */

    uint64_t retired_pdrops; /* 320 */
    uint64_t reserved[7];   /* 328 */
    pthread_mutex_t repair; /* 384  robust; repairs and slot scrubbing only */
    uint8_t pad_repair[128 - sizeof(pthread_mutex_t)];
};


/* ---------------------------------------------------------------------------------- */
/* Dict (dict.c): the lua_shared_dict surface with TTL, LRU and lists.                */
/* Section owned by the dict work (issue 7).                                          */
/* ---------------------------------------------------------------------------------- */

/* (structures of this section go here, each with _Static_asserts on size and offsets) */


/* ---------------------------------------------------------------------------------- */
/* Board (board.c), ndarray and SharedConfig: latest-value boards and arrays.         */
/* Section owned by the board work (issue 8).                                         */
/* ---------------------------------------------------------------------------------- */

/* (structures of this section go here, each with _Static_asserts on size and offsets) */


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
_Static_assert(sizeof(struct shk_qresv) == 32, "queue reservation is 32 bytes");
_Static_assert(offsetof(struct shk_queue_sh, tail_pos) == 64, "queue tail at 64");
_Static_assert(offsetof(struct shk_queue_sh, head_pos) == 128, "queue head at 128");
_Static_assert(offsetof(struct shk_queue_sh, free_pos) == 192, "queue free at 192");
_Static_assert(offsetof(struct shk_queue_sh, data_seq) == 256, "queue futex words at 256");
_Static_assert(offsetof(struct shk_queue_sh, retired_waits) == 296, "queue retired at 296");
_Static_assert(offsetof(struct shk_queue_sh, repair) == 384, "queue repair mutex at 384");
_Static_assert(sizeof(struct shk_queue_sh) == 512, "queue header is 512 bytes");

#endif
