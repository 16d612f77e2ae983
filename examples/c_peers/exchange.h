/* The layout both sides agree on (C here, Python in run.py): a segment holds two
 * messages, one in each half.  Each message: a 64-byte header, then the payload.
 *
 *   offset  size  field
 *   0       4     magic    0x4D4B4853 ("SHKM" in memory order: S H K M)
 *   4       4     length   payload bytes
 *   8       4     crc32    of the payload (zlib's CRC-32, the one Python's zlib.crc32 computes)
 *   12      4     writer   pid of the process that wrote it
 *   64      ...   payload
 *
 * The first half is written by the segment's creator, the second half by its peer.
 * All integers are little-endian (x86-64, arm64).  Who writes when is decided outside the
 * segment (the peer reads only after the creator said "ready" on a pipe, and vice versa),
 * so no lock is needed. */
#ifndef EXCHANGE_H
#define EXCHANGE_H

#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define EX_MAGIC 0x4D4B4853u
#define EX_HEADER 64

struct ex_header {
    uint32_t magic;
    uint32_t length;
    uint32_t crc32;
    uint32_t writer;
};

static uint32_t ex_crc32(const unsigned char *p, size_t n)
{
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++)
            c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1u)));
    }
    return ~c;
}

/* a payload that is not all zeros or one repeated byte: xorshift32 from a seed */
static void ex_fill(unsigned char *p, size_t n, uint32_t seed)
{
    uint32_t x = seed ? seed : 1;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        p[i] = (unsigned char)x;
    }
}

static void ex_write(unsigned char *half, size_t capacity, uint32_t seed)
{
    struct ex_header h = {EX_MAGIC, (uint32_t)(capacity - EX_HEADER), 0, (uint32_t)getpid()};
    ex_fill(half + EX_HEADER, h.length, seed);
    h.crc32 = ex_crc32(half + EX_HEADER, h.length);
    memcpy(half, &h, sizeof h);
}

/* 0 if the message in this half is whole; prints what it found either way */
static int ex_check(const unsigned char *half, size_t capacity, const char *who)
{
    struct ex_header h;
    memcpy(&h, half, sizeof h);
    if (h.magic != EX_MAGIC || h.length > capacity - EX_HEADER) {
        fprintf(stderr, "%s: no message (magic 0x%08x, length %u)\n", who, h.magic, h.length);
        return 1;
    }
    uint32_t crc = ex_crc32(half + EX_HEADER, h.length);
    printf("%s: %u bytes from pid %u, crc32 %08x %s\n", who, h.length, h.writer, crc,
           crc == h.crc32 ? "matches" : "DOES NOT MATCH");
    return crc == h.crc32 ? 0 : 1;
}

#endif
