/* Philox4x64-10 words straight to float32 parameters, in one pass (engine/native.py loads it).

   The same function as numpy's C Philox and benchsuite/engine/random.py: block b of the stream is
   philox4x64_10(counter = (b, 0, 0, 0), key = (key0, key1)); each 64-bit word gives two numbers,
   its low 32 bits first; a 32-bit half read as a signed int32 s becomes the odd integer
   t = (s >> 7) | 1, and a number of segment k is stored as fl32((float)t * factor[k]): an exact
   int32 -> float32 conversion and one rounded float32 product (factor 1 keeps t itself). Nothing
   here adds, so no multiply-add can be contracted; build with -ffp-contract=off all the same.

   Draw d (0 <= d < draws) is the blocks first_block + d * blocks_per_draw, ...; its number i goes
   to segment k when start[k] <= i < start[k] + count[k] (segments sorted by start, disjoint),
   at dest[k][d * stride[k] + i - start[k]]; numbers in no segment are never computed. A block
   shared by two segments is computed once for each (a few blocks a draw). */

#include <stddef.h>
#include <stdint.h>

#define PHILOX_M0 0xD2E7470EE14C6C93ULL
#define PHILOX_M1 0xCA5A826395121157ULL
#define PHILOX_W0 0x9E3779B97F4A7C15ULL
#define PHILOX_W1 0xBB67AE8584CAA73BULL

static inline void philox_words(uint64_t counter, uint64_t key0, uint64_t key1, uint64_t w[4]) {
    uint64_t c0 = counter, c1 = 0, c2 = 0, c3 = 0;
    for (int round = 0; round < 10; round++) {
        __uint128_t p0 = (__uint128_t)PHILOX_M0 * c0;
        __uint128_t p1 = (__uint128_t)PHILOX_M1 * c2;
        uint64_t n0 = (uint64_t)(p1 >> 64) ^ c1 ^ key0;
        uint64_t n2 = (uint64_t)(p0 >> 64) ^ c3 ^ key1;
        c1 = (uint64_t)p1;
        c3 = (uint64_t)p0;
        c0 = n0;
        c2 = n2;
        key0 += PHILOX_W0;
        key1 += PHILOX_W1;
    }
    w[0] = c0;
    w[1] = c1;
    w[2] = c2;
    w[3] = c3;
}

/* t = (s >> 7) | 1 as a float (exact); >> of a negative int32 is arithmetic in gcc and clang */
static inline float odd(uint32_t half) { return (float)(((int32_t)half >> 7) | 1); }

/* Numbers of n whole blocks from `counter` on, times f, into out[0 .. 8n). The hot loop: kept
   this simple so that the compiler schedules it like a bare Philox loop (measured: a loop that
   also tested segment bounds per block ran 1.3x slower). */
static void whole_blocks(uint64_t counter, int64_t n, uint64_t key0, uint64_t key1, float f,
                         float *out) {
    for (int64_t b = 0; b < n; b++) {
        uint64_t w[4];
        philox_words(counter + (uint64_t)b, key0, key1, w);
        for (int j = 0; j < 4; j++) {
            out[8 * b + 2 * j] = odd((uint32_t)w[j]) * f;
            out[8 * b + 2 * j + 1] = odd((uint32_t)(w[j] >> 32)) * f;
        }
    }
}

/* Numbers [from, to) of the draw whose first block is `base`, all in one block, into out[0..). */
static void part_block(uint64_t base, int64_t from, int64_t to, uint64_t key0, uint64_t key1,
                       float f, float *out) {
    uint64_t w[4];
    philox_words(base + (uint64_t)(from / 8), key0, key1, w);
    for (int64_t i = from; i < to; i++) {
        uint64_t word = w[(i % 8) / 2];
        out[i - from] = odd(i % 2 ? (uint32_t)(word >> 32) : (uint32_t)word) * f;
    }
}

int64_t bs_philox_version(void) { return 1; }

void bs_philox_segments(uint64_t key0, uint64_t key1, uint64_t first_block, int64_t draws,
                        int64_t blocks_per_draw, int64_t segments, const int64_t *start,
                        const int64_t *count, const float *factor, float *const *dest,
                        const int64_t *stride) {
    for (int64_t d = 0; d < draws; d++) {
        uint64_t base = first_block + (uint64_t)d * (uint64_t)blocks_per_draw;
        for (int64_t k = 0; k < segments; k++) {
            int64_t i = start[k], end = start[k] + count[k];
            float *row = dest[k] + d * stride[k]; /* row[i - start[k]]: number i */
            float f = factor[k];
            if (i % 8) { /* the head, up to the first block boundary */
                int64_t stop = (i / 8 + 1) * 8 < end ? (i / 8 + 1) * 8 : end;
                part_block(base, i, stop, key0, key1, f, row + (i - start[k]));
                i = stop;
            }
            int64_t n = (end - i) / 8;
            if (n > 0)
                whole_blocks(base + (uint64_t)(i / 8), n, key0, key1, f, row + (i - start[k]));
            i += 8 * n;
            if (i < end) /* the tail, in the block after the whole ones */
                part_block(base, i, end, key0, key1, f, row + (i - start[k]));
        }
    }
}
