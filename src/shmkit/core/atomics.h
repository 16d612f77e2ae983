/*
 * atomics.h - the one set of atomic operations of the shmkit core.
 *
 * Every name says its memory order, so a reader never has to look up what a LOAD means
 * in this file (it used to mean seq_cst in one file and acquire in another).  They are
 * thin macros over the GCC/Clang __atomic builtins, which are type-generic: they work
 * on the 32- and 64-bit words of layout.h alike (pointers to naturally aligned objects
 * of 1, 2, 4 or 8 bytes).
 *
 * Which order to use (the rules every protocol of the core follows):
 *   - publishing data for another process: write it, then shk_store_release the word
 *     that says it is there; the reader shk_load_acquire's that word, then reads;
 *   - futex hand-off (futex.h): the waker publishes with a seq_cst store or
 *     read-modify-write, then reads the waiter registration (seq_cst); the waiter
 *     registers (seq_cst), then sleeps on the value it saw.  Anything weaker loses
 *     wake-ups;
 *   - statistics nobody synchronises on: relaxed (shk_stat_add, shk_single_writer_inc).
 *
 * The dict still uses its own spellings of the same builtins; it adopts these names in
 * its own redesign phase.
 */
#ifndef SHK_ATOMICS_H
#define SHK_ATOMICS_H

#include <stdint.h>

/* loads */
#define shk_load_relaxed(p) __atomic_load_n((p), __ATOMIC_RELAXED)
#define shk_load_acquire(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define shk_load_seq_cst(p) __atomic_load_n((p), __ATOMIC_SEQ_CST)

/* stores */
#define shk_store_relaxed(p, v) __atomic_store_n((p), (v), __ATOMIC_RELAXED)
#define shk_store_release(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)
#define shk_store_seq_cst(p, v) __atomic_store_n((p), (v), __ATOMIC_SEQ_CST)

/* Strong compare-and-swap: if *p == *expp, store des and return 1; else copy *p into
 * *expp and return 0.  The name gives the order on success; on failure the load is
 * seq_cst for shk_cas_seq_cst, acquire for shk_cas_acq_rel, relaxed for
 * shk_cas_seq_cst_fail_relaxed (a failed fast attempt that starts over anyway). */
#define shk_cas_seq_cst(p, expp, des) \
    __atomic_compare_exchange_n((p), (expp), (des), 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)
#define shk_cas_seq_cst_fail_relaxed(p, expp, des) \
    __atomic_compare_exchange_n((p), (expp), (des), 0, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED)
#define shk_cas_acq_rel(p, expp, des) \
    __atomic_compare_exchange_n((p), (expp), (des), 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)

/* read-modify-write; the fetch_* forms return the old value, the *_fetch forms the new */
#define shk_fetch_add_seq_cst(p, v) __atomic_fetch_add((p), (v), __ATOMIC_SEQ_CST)
#define shk_fetch_sub_seq_cst(p, v) __atomic_fetch_sub((p), (v), __ATOMIC_SEQ_CST)
#define shk_add_fetch_seq_cst(p, v) __atomic_add_fetch((p), (v), __ATOMIC_SEQ_CST)
#define shk_sub_fetch_seq_cst(p, v) __atomic_sub_fetch((p), (v), __ATOMIC_SEQ_CST)
#define shk_exchange_seq_cst(p, v) __atomic_exchange_n((p), (v), __ATOMIC_SEQ_CST)
#define shk_fetch_add_relaxed(p, v) __atomic_fetch_add((p), (v), __ATOMIC_RELAXED)
#define shk_fetch_or_relaxed(p, v) __atomic_fetch_or((p), (v), __ATOMIC_RELAXED)
#define shk_fetch_and_relaxed(p, v) __atomic_fetch_and((p), (v), __ATOMIC_RELAXED)

/* fences */
#define shk_fence_acquire() __atomic_thread_fence(__ATOMIC_ACQUIRE)
#define shk_fence_release() __atomic_thread_fence(__ATOMIC_RELEASE)
#define shk_fence_seq_cst() __atomic_thread_fence(__ATOMIC_SEQ_CST)

/* Statistics: a relaxed atomic add, for counters several processes bump. */
#define shk_stat_add(p, v) ((void)__atomic_fetch_add((p), (v), __ATOMIC_RELAXED))
/* Statistics only the current holder of a lock writes: a plain increment with relaxed
 * accesses (no locked instruction); readers may see a slightly stale value. */
#define shk_single_writer_inc(p) shk_store_relaxed((p), shk_load_relaxed(p) + 1)

/* 16-byte compare-and-swap of the pair {p[0], p[1]} (16-byte aligned), seq_cst: if it holds
 * {*elo, *ehi}, store {nlo, nhi} and return 1; else copy the pair (an atomic snapshot) into
 * *elo, *ehi and return 0.  The queue's head and tail pairs and its record headers move
 * only this way.  x86-64: lock cmpxchg16b (the builtin would need libatomic there). */
static inline int shk_cas16_seq_cst(uint64_t *p, uint64_t *elo, uint64_t *ehi, uint64_t nlo,
                                    uint64_t nhi)
{
#if defined(__x86_64__)
    unsigned char ok;
    __asm__ __volatile__("lock cmpxchg16b %1\n\tsete %0"
                         : "=q"(ok), "+m"(*(volatile unsigned __int128 *)p), "+a"(*elo),
                           "+d"(*ehi)
                         : "b"(nlo), "c"(nhi)
                         : "memory", "cc");
    return ok;
#else
    unsigned __int128 e = ((unsigned __int128)*ehi << 64) | *elo;
    unsigned __int128 n = ((unsigned __int128)nhi << 64) | nlo;
    int ok = __atomic_compare_exchange_n((unsigned __int128 *)p, &e, n, 0, __ATOMIC_SEQ_CST,
                                         __ATOMIC_SEQ_CST);
    *elo = (uint64_t)e;
    *ehi = (uint64_t)(e >> 64);
    return ok;
#endif
}

/* An atomic snapshot of a 16-byte pair (it takes the cache line: slow paths only). */
static inline void shk_load16_seq_cst(uint64_t *p, uint64_t *lo, uint64_t *hi)
{
    *lo = shk_load_relaxed(&p[0]);
    *hi = shk_load_relaxed(&p[1]);
    shk_cas16_seq_cst(p, lo, hi, *lo, *hi);
}

/* A pause in a spin loop: tells the CPU we are spinning (frees the sibling hyperthread,
 * saves power); a compiler barrier elsewhere. */
static inline void shk_cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield" ::: "memory");
#else
    __asm__ __volatile__("" ::: "memory");
#endif
}

#endif
