/* The L-Unit product's data as the C files see it: the packed weight, the quantized activations, and the
 * unpacking of one 32-column chunk of codes (the layout is described in _lunit.c and packed.py). */
#ifndef ROMACHIP_LUNIT_H
#define ROMACHIP_LUNIT_H

#include "_native.h"

#define CHUNK 32
#define SIMD_GROUP_MAX 512 /* columns: |sum q xi|, |z sum xi| <= 512 * 255 * 2^14 < 2^31 */
#define OUT_TILE 8
#define BF16_WINDOW_BITS 13

typedef struct { /* codes [tiles][chunks][OUT_TILE][chunk_bytes]; scales, zeros [tiles][groups][OUT_TILE] */
    int64_t in_f, in_p, out_f, groups, glen, bits, chunk_bytes, chunks;
    const uint8_t *codes;
    const float *scales;
    const uint8_t *zeros;
} weight_t;

typedef struct {
    int64_t rows;
    const int16_t *xi; /* [rows, in_p], zero padded */
    const int64_t *sumx; /* [rows, groups] */
    const double *a; /* [rows, groups] */
} act_t;

#define AMX_ROWS_MIN 16 /* rows from which the AMX path (_amx.c) beats AVX-512 */

static inline const uint8_t *chunk_at(const weight_t *w, int64_t tile, int64_t chunk, int lane) {
    return w->codes + ((tile * w->chunks + chunk) * OUT_TILE + lane) * w->chunk_bytes;
}

#ifdef LUNIT_X86
__attribute__((target("avx2"))) static inline __m256i unpack_chunk(const uint8_t *p, int64_t bits) {
    if (bits == 8) return _mm256_loadu_si256((const __m256i *)p);
    if (bits == 4) {
        __m256i v = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)p));
        return _mm256_and_si256(_mm256_srlv_epi64(v, _mm256_set_epi64x(4, 4, 0, 0)), _mm256_set1_epi8(15));
    }
    uint64_t lo;
    memcpy(&lo, p, 8);
    __m256i v = _mm256_srlv_epi64(_mm256_set1_epi64x((long long)lo), _mm256_set_epi64x(6, 4, 2, 0));
    v = _mm256_and_si256(v, _mm256_set1_epi8(3));
    if (bits == 2) return v;
    uint32_t hi;
    memcpy(&hi, p + 8, 4);
    const __m256i pick = _mm256_set_epi8(3, 3, 3, 3, 3, 3, 3, 3, 2, 2, 2, 2, 2, 2, 2, 2, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0,
                                         0, 0, 0, 0, 0, 0);
    const __m256i bit = _mm256_set1_epi64x((long long)0x8040201008040201ULL);
    __m256i h = _mm256_and_si256(_mm256_shuffle_epi8(_mm256_set1_epi32((int)hi), pick), bit);
    h = _mm256_and_si256(_mm256_cmpeq_epi8(h, bit), _mm256_set1_epi8(4));
    return _mm256_or_si256(v, h);
}
#endif

/* AMX (_amx.c): whether this CPU and OS run it, and the product on it (0: done; -1: out of memory) */
int lunit_amx_available(void);
int lunit_linear_amx(const weight_t *w, const act_t *x, float *y, int threads);

#endif
