/* The L-Unit linear layer of docs/numerics.md on packed codes: activation quantization, the exact
 * per-group integer products and the binary64 epilogue, in one call.
 *
 * Exactness: every group product I_j = sum_i (q_i - z_j) xi_i is formed as sum_i q_i xi_i - z_j sum_i xi_i
 * in integers (int32 within blocks of <= 512 columns, whose partial sums stay below 2^31, then int64), so
 * the vector order does not matter. The float steps are the contract's, in its order, one IEEE operation
 * each: this file is compiled with -ffp-contract=off and without -ffast-math (setup.py), so no fused
 * multiply-add can appear. Threads split the output rows; every output is computed by one thread the same
 * way, so the bits do not depend on the thread count.
 *
 * Packed layout (romachip.engine.packed): rows padded to a multiple of 32 columns and grouped in tiles of
 * 8 outputs, stored [tile][chunk][output][chunk bytes]; a chunk of 32 columns takes 4*bits bytes, column k
 * at
 *   8 bits: byte k                     4 bits: byte k % 16, nibble k / 16
 *   2 bits: byte k % 8, bits 2*(k / 8)  3 bits: its low 2 bits as the 2-bit layout, bit 2 at bit k of
 *                                               the little-endian 32-bit word in bytes 8..11
 */
#include "_native.h"

#include <stdlib.h>

PyObject *lunit_exp64(PyObject *self, PyObject *args); /* _vector.c */
PyObject *lunit_silu_mul(PyObject *self, PyObject *args);
PyObject *lunit_rms_norm(PyObject *self, PyObject *args);
PyObject *lunit_rope(PyObject *self, PyObject *args);
PyObject *lunit_encode(PyObject *self, PyObject *args);
PyObject *hunit_attention(PyObject *self, PyObject *args); /* _hunit.c */
PyObject *hunit_scores(PyObject *self, PyObject *args);

#include "_lunit.h"

/* ---- activations ------------------------------------------------------------------------------- */

static float to_bf16(float v) {
    uint32_t u;
    memcpy(&u, &v, 4);
    u = (u + 0x7FFFu + ((u >> 16) & 1u)) & 0xFFFF0000u;
    memcpy(&v, &u, 4);
    return v;
}

static void quantize_row(const float *x, const weight_t *w, int mode, int16_t *xi, int64_t *sumx, double *a) {
    memset(xi, 0, sizeof(int16_t) * w->in_p);
    if (mode == 0) { /* int8 per token: a = m / 127, xi = clamp(rne(x / a), +-127) */
        float m = 0.0f;
        for (int64_t i = 0; i < w->in_f; i++) m = fmaxf(m, fabsf(x[i]));
        float s = m > 0.0f ? m / 127.0f : 1.0f;
        for (int64_t i = 0; i < w->in_f; i++) xi[i] = (int16_t)fminf(fmaxf(rintf(x[i] / s), -127.0f), 127.0f);
        for (int64_t j = 0; j < w->groups; j++) a[j] = (double)s;
    }
    for (int64_t j = 0; j < w->groups; j++) {
        int64_t c0 = j * w->glen, c1 = c0 + w->glen < w->in_f ? c0 + w->glen : w->in_f, total = 0;
        if (mode == 1) { /* bf16, aligned per group to 2^(E-13) */
            float m = 0.0f;
            for (int64_t i = c0; i < c1; i++) m = fmaxf(m, fabsf(to_bf16(x[i])));
            int e = 0;
            frexpf(m, &e); /* flog2(m) + 1; a zero group has xi = 0 whatever its scale */
            for (int64_t i = c0; i < c1; i++) xi[i] = (int16_t)rintf(ldexpf(to_bf16(x[i]), BF16_WINDOW_BITS + 1 - e));
            a[j] = ldexp(1.0, e - 1 - BF16_WINDOW_BITS);
        }
        for (int64_t i = c0; i < c1; i++) total += xi[i];
        sumx[j] = total;
    }
}

#ifdef LUNIT_X86
/* quantize_row on AVX-512, the same steps per element: bf16(x) by integer rounding, the group's max, and
 * x * 2^k for ldexpf(x, k) (one correctly rounded product, as ldexpf is, while 2^k is a normal float; other
 * groups take the scalar loop) */
T512 static void quantize_row_avx512(const float *x, const weight_t *w, int mode, int16_t *xi, int64_t *sumx,
                                     double *a) {
    memset(xi, 0, sizeof(int16_t) * w->in_p);
    const __m512 absmask = _mm512_castsi512_ps(_mm512_set1_epi32(0x7fffffff));
    float s = 1.0f;
    if (mode == 0) {
        __m512 m = _mm512_setzero_ps();
        for (int64_t i = 0; i < w->in_f; i += 16) {
            __mmask16 k = w->in_f - i >= 16 ? 0xffff : (__mmask16)((1u << (w->in_f - i)) - 1);
            m = _mm512_max_ps(m, _mm512_and_ps(_mm512_maskz_loadu_ps(k, x + i), absmask));
        }
        float mx = _mm512_reduce_max_ps(m);
        s = mx > 0.0f ? mx / 127.0f : 1.0f;
    }
    for (int64_t j = 0; j < w->groups; j++) {
        int64_t c0 = j * w->glen, c1 = c0 + w->glen < w->in_f ? c0 + w->glen : w->in_f, total = 0;
        __m512 scale = _mm512_set1_ps(s);
        __m512i lanes = _mm512_setzero_si512();
        if (mode == 1) {
            __m512 m = _mm512_setzero_ps();
            for (int64_t i = c0; i < c1; i += 16) {
                __mmask16 k = c1 - i >= 16 ? 0xffff : (__mmask16)((1u << (c1 - i)) - 1);
                __m512i u = _mm512_castps_si512(_mm512_maskz_loadu_ps(k, x + i));
                u = _mm512_add_epi32(u, _mm512_add_epi32(_mm512_set1_epi32(0x7FFF),
                                                         _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1))));
                m = _mm512_max_ps(m, _mm512_and_ps(_mm512_castsi512_ps(_mm512_and_si512(u, _mm512_set1_epi32((int)0xFFFF0000u))), absmask));
            }
            int e = 0;
            frexpf(_mm512_reduce_max_ps(m), &e);
            int pw = BF16_WINDOW_BITS + 1 - e;
            a[j] = ldexp(1.0, e - 1 - BF16_WINDOW_BITS);
            if (pw < -126 || pw > 127) { /* 2^pw is no normal float: the scalar steps */
                for (int64_t i = c0; i < c1; i++) total += xi[i] = (int16_t)rintf(ldexpf(to_bf16(x[i]), pw));
                sumx[j] = total;
                continue;
            }
            uint32_t bits = (uint32_t)(pw + 127) << 23;
            float f;
            memcpy(&f, &bits, 4);
            scale = _mm512_set1_ps(f);
        } else {
            a[j] = (double)s;
        }
        for (int64_t i = c0; i < c1; i += 16) {
            __mmask16 k = c1 - i >= 16 ? 0xffff : (__mmask16)((1u << (c1 - i)) - 1);
            __m512 v = _mm512_maskz_loadu_ps(k, x + i), r;
            if (mode == 1) {
                __m512i u = _mm512_castps_si512(v);
                u = _mm512_add_epi32(u, _mm512_add_epi32(_mm512_set1_epi32(0x7FFF),
                                                         _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1))));
                v = _mm512_castsi512_ps(_mm512_and_si512(u, _mm512_set1_epi32((int)0xFFFF0000u)));
                r = _mm512_roundscale_ps(_mm512_mul_ps(v, scale), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
            } else {
                r = _mm512_roundscale_ps(_mm512_div_ps(v, scale), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
                r = _mm512_min_ps(_mm512_max_ps(r, _mm512_set1_ps(-127.0f)), _mm512_set1_ps(127.0f));
            }
            __m512i q = _mm512_maskz_mov_epi32(k, _mm512_cvtps_epi32(r));
            _mm256_mask_storeu_epi16(xi + i, k, _mm512_cvtepi32_epi16(q));
            lanes = _mm512_add_epi32(lanes, q); /* one |xi| <= 2^14 a lane per 16 columns: no wrap */
        }
        sumx[j] = total + _mm512_reduce_add_epi32(lanes);
    }
}
#endif

/* ---- integer products and epilogue: portable path (any group length) ---------------------------- */

static inline int code_at(const weight_t *w, int64_t tile, int lane, int64_t c) {
    const uint8_t *p = chunk_at(w, tile, c / CHUNK, lane);
    int k = (int)(c % CHUNK);
    switch (w->bits) {
    case 8: return p[k];
    case 4: return (p[k % 16] >> (4 * (k / 16))) & 15;
    case 2: return (p[k % 8] >> (2 * (k / 8))) & 3;
    default: return ((p[k % 8] >> (2 * (k / 8))) & 3) | (((p[8 + k / 8] >> (k % 8)) & 1) << 2);
    }
}

static void tile_portable(const weight_t *w, const act_t *x, int64_t tile, double *acc) {
    for (int64_t j = 0; j < w->groups; j++) {
        int64_t c0 = j * w->glen, c1 = c0 + w->glen < w->in_f ? c0 + w->glen : w->in_f;
        for (int lane = 0; lane < OUT_TILE; lane++) {
            int64_t z = w->zeros[(tile * w->groups + j) * OUT_TILE + lane];
            double s = (double)w->scales[(tile * w->groups + j) * OUT_TILE + lane];
            for (int64_t r = 0; r < x->rows; r++) {
                const int16_t *xr = x->xi + r * w->in_p;
                int64_t dot = 0;
                for (int64_t c = c0; c < c1; c++) dot += (int64_t)code_at(w, tile, lane, c) * xr[c];
                int64_t g = r * w->groups + j;
                double t = (double)(dot - z * x->sumx[g]); /* I_j: exact, |I_j| < 2^53 */
                t = t * x->a[g]; /* exact: a_j is a power of two or the int8 scale (24 bits) */
                t = t * s;
                acc[r * OUT_TILE + lane] = j == 0 ? t : acc[r * OUT_TILE + lane] + t; /* Σseq over j */
            }
        }
    }
}

/* ---- the same with AVX2: groups of whole chunks, <= 512 columns (int32 sums exact) ---------------- */
#ifdef LUNIT_X86
/* lane l of the result: the sum of the 8 lanes of v[l] (wrapping int32: exact when the true sum fits) */
__attribute__((target("avx2"))) static inline __m256i hsum8(const __m256i *v) {
    __m256i h01 = _mm256_hadd_epi32(v[0], v[1]), h23 = _mm256_hadd_epi32(v[2], v[3]);
    __m256i h45 = _mm256_hadd_epi32(v[4], v[5]), h67 = _mm256_hadd_epi32(v[6], v[7]);
    __m256i a = _mm256_hadd_epi32(h01, h23), b = _mm256_hadd_epi32(h45, h67);
    return _mm256_add_epi32(_mm256_permute2x128_si256(a, b, 0x20), _mm256_permute2x128_si256(a, b, 0x31));
}

__attribute__((target("avx2"))) static void tile_avx2(const weight_t *w, const act_t *x, int64_t tile, double *acc,
                                                      int16_t *wbuf) {
    for (int64_t j = 0; j < w->groups; j++) {
        int64_t k0 = j * w->glen / CHUNK, k1 = j + 1 == w->groups ? w->chunks : (j + 1) * w->glen / CHUNK;
        int64_t span = (k1 - k0) * CHUNK;
        for (int lane = 0; lane < OUT_TILE && x->rows > 1; lane++) { /* 8 outputs' codes as int16, once */
            for (int64_t k = k0; k < k1; k++) {
                __m256i q = unpack_chunk(chunk_at(w, tile, k, lane), w->bits);
                int16_t *dst = wbuf + lane * span + (k - k0) * CHUNK;
                _mm256_storeu_si256((__m256i *)dst, _mm256_cvtepu8_epi16(_mm256_castsi256_si128(q)));
                _mm256_storeu_si256((__m256i *)(dst + 16), _mm256_cvtepu8_epi16(_mm256_extracti128_si256(q, 1)));
            }
        }
        const int64_t gi = (tile * w->groups + j) * OUT_TILE;
        __m256i z = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(w->zeros + gi)));
        __m256d s_lo = _mm256_cvtps_pd(_mm_loadu_ps(w->scales + gi));
        __m256d s_hi = _mm256_cvtps_pd(_mm_loadu_ps(w->scales + gi + 4));
        for (int64_t r = 0; r < x->rows; r++) {
            const int16_t *xr = x->xi + r * w->in_p + k0 * CHUNK;
            __m256i d[OUT_TILE];
            for (int lane = 0; lane < OUT_TILE; lane++) d[lane] = _mm256_setzero_si256();
            for (int64_t k = k0; k < k1 && x->rows == 1; k++) { /* one row (decode): codes straight from ROM */
                __m256i x0 = _mm256_loadu_si256((const __m256i *)(xr + (k - k0) * CHUNK));
                __m256i x1 = _mm256_loadu_si256((const __m256i *)(xr + (k - k0) * CHUNK + 16));
                for (int lane = 0; lane < OUT_TILE; lane++) {
                    __m256i q = unpack_chunk(chunk_at(w, tile, k, lane), w->bits);
                    __m256i p0 = _mm256_madd_epi16(_mm256_cvtepu8_epi16(_mm256_castsi256_si128(q)), x0);
                    __m256i p1 = _mm256_madd_epi16(_mm256_cvtepu8_epi16(_mm256_extracti128_si256(q, 1)), x1);
                    d[lane] = _mm256_add_epi32(d[lane], _mm256_add_epi32(p0, p1));
                }
            }
            for (int64_t c = 0; c < span && x->rows > 1; c += 16) {
                __m256i xv = _mm256_loadu_si256((const __m256i *)(xr + c));
                for (int lane = 0; lane < OUT_TILE; lane++) {
                    __m256i wv = _mm256_loadu_si256((const __m256i *)(wbuf + lane * span + c));
                    d[lane] = _mm256_add_epi32(d[lane], _mm256_madd_epi16(wv, xv));
                }
            }
            int64_t g = r * w->groups + j;
            __m256i dot = _mm256_sub_epi32(hsum8(d), _mm256_mullo_epi32(z, _mm256_set1_epi32((int)x->sumx[g])));
            __m256d a = _mm256_set1_pd(x->a[g]);
            __m256d t_lo = _mm256_mul_pd(_mm256_mul_pd(_mm256_cvtepi32_pd(_mm256_castsi256_si128(dot)), a), s_lo);
            __m256d t_hi = _mm256_mul_pd(_mm256_mul_pd(_mm256_cvtepi32_pd(_mm256_extracti128_si256(dot, 1)), a), s_hi);
            double *ar = acc + r * OUT_TILE;
            if (j) {
                t_lo = _mm256_add_pd(_mm256_loadu_pd(ar), t_lo);
                t_hi = _mm256_add_pd(_mm256_loadu_pd(ar + 4), t_hi);
            }
            _mm256_storeu_pd(ar, t_lo);
            _mm256_storeu_pd(ar + 4, t_hi);
        }
    }
}

/* The same on AVX-512 with VNNI (vpdpwssd: 32 int16 products summed into int32 lanes per instruction). */
T512 static inline __m256i fold512(__m512i v) {
    return _mm256_add_epi32(_mm512_castsi512_si256(v), _mm512_extracti64x4_epi64(v, 1));
}

T512 static inline void epilogue(const weight_t *w, const act_t *x, int64_t tile, int64_t j, int64_t r,
                                 const __m512i *d, double *acc) {
    __m256i f[OUT_TILE];
    for (int lane = 0; lane < OUT_TILE; lane++) f[lane] = fold512(d[lane]);
    const int64_t gi = (tile * w->groups + j) * OUT_TILE, g = r * w->groups + j;
    __m256i z = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(w->zeros + gi)));
    __m256i dot = _mm256_sub_epi32(hsum8(f), _mm256_mullo_epi32(z, _mm256_set1_epi32((int)x->sumx[g])));
    __m512d t = _mm512_mul_pd(_mm512_cvtepi32_pd(dot), _mm512_set1_pd(x->a[g])); /* exact */
    t = _mm512_mul_pd(t, _mm512_cvtps_pd(_mm256_loadu_ps(w->scales + gi)));
    double *ar = acc + r * OUT_TILE;
    _mm512_storeu_pd(ar, j ? _mm512_add_pd(_mm512_loadu_pd(ar), t) : t); /* Σseq over j, binary64 */
}

T512 static void tile_avx512(const weight_t *w, const act_t *x, int64_t tile, double *acc, int16_t *wbuf) {
    for (int64_t j = 0; j < w->groups; j++) {
        int64_t k0 = j * w->glen / CHUNK, k1 = j + 1 == w->groups ? w->chunks : (j + 1) * w->glen / CHUNK;
        int64_t span = (k1 - k0) * CHUNK;
        __m512i d[OUT_TILE], e[OUT_TILE];
        if (x->rows == 1) { /* decode: codes straight from ROM into registers */
            const int16_t *xr = x->xi + k0 * CHUNK;
            for (int lane = 0; lane < OUT_TILE; lane++) d[lane] = _mm512_setzero_si512();
            for (int64_t k = k0; k < k1; k++) {
                __m512i xv = _mm512_loadu_si512((const void *)(xr + (k - k0) * CHUNK));
                for (int lane = 0; lane < OUT_TILE; lane++) {
                    __m512i q = _mm512_cvtepu8_epi16(unpack_chunk(chunk_at(w, tile, k, lane), w->bits));
                    d[lane] = _mm512_dpwssd_epi32(d[lane], q, xv);
                }
            }
            epilogue(w, x, tile, j, 0, d, acc);
            continue;
        }
        for (int lane = 0; lane < OUT_TILE; lane++) /* prefill: 8 outputs' codes as int16, once per group */
            for (int64_t k = k0; k < k1; k++)
                _mm512_storeu_si512((void *)(wbuf + lane * span + (k - k0) * CHUNK),
                                    _mm512_cvtepu8_epi16(unpack_chunk(chunk_at(w, tile, k, lane), w->bits)));
        int64_t r = 0;
        for (; r + 1 < x->rows; r += 2) { /* two rows share every code load */
            const int16_t *x0 = x->xi + r * w->in_p + k0 * CHUNK, *x1 = x0 + w->in_p;
            for (int lane = 0; lane < OUT_TILE; lane++) d[lane] = e[lane] = _mm512_setzero_si512();
            for (int64_t c = 0; c < span; c += CHUNK) {
                __m512i a = _mm512_loadu_si512((const void *)(x0 + c)), b = _mm512_loadu_si512((const void *)(x1 + c));
                for (int lane = 0; lane < OUT_TILE; lane++) {
                    __m512i q = _mm512_loadu_si512((const void *)(wbuf + lane * span + c));
                    d[lane] = _mm512_dpwssd_epi32(d[lane], q, a);
                    e[lane] = _mm512_dpwssd_epi32(e[lane], q, b);
                }
            }
            epilogue(w, x, tile, j, r, d, acc);
            epilogue(w, x, tile, j, r + 1, e, acc);
        }
        for (; r < x->rows; r++) {
            const int16_t *x0 = x->xi + r * w->in_p + k0 * CHUNK;
            for (int lane = 0; lane < OUT_TILE; lane++) d[lane] = _mm512_setzero_si512();
            for (int64_t c = 0; c < span; c += CHUNK) {
                __m512i a = _mm512_loadu_si512((const void *)(x0 + c));
                for (int lane = 0; lane < OUT_TILE; lane++)
                    d[lane] = _mm512_dpwssd_epi32(d[lane], _mm512_loadu_si512((const void *)(wbuf + lane * span + c)), a);
            }
            epilogue(w, x, tile, j, r, d, acc);
        }
    }
}

/* Prefill on AVX-512: 16 outputs (two tiles) in the 16 int32 lanes of one register, so no horizontal sums:
 * the group's codes are laid out [column pair][output][2] as int16 once, then each vpdpwssd adds
 * w(o, c) x_c + w(o, c+1) x_{c+1} for all 16 outputs o, the activation pair broadcast. */
#define PAIR 16
#define ROW_BLOCK 8

T512 static inline __attribute__((always_inline)) void pair_rows(const weight_t *w, const act_t *x, int64_t j,
                                                                 const int16_t *xs, int64_t span, int64_t r0, const int n,
                                                                 const int16_t *wb, __m512i z, __m512d s_lo,
                                                                 __m512d s_hi, double *acc) {
    __m512i d[ROW_BLOCK];
    for (int r = 0; r < n; r++) d[r] = _mm512_setzero_si512();
    for (int64_t c = 0; c < span; c += 2) {
        __m512i wv = _mm512_loadu_si512((const void *)(wb + c * PAIR));
        for (int r = 0; r < n; r++) {
            int32_t pair;
            memcpy(&pair, xs + (r0 + r) * w->in_p + c, 4);
            d[r] = _mm512_dpwssd_epi32(d[r], wv, _mm512_set1_epi32(pair));
        }
    }
    for (int r = 0; r < n; r++) {
        int64_t g = (r0 + r) * w->groups + j;
        __m512i dot = _mm512_sub_epi32(d[r], _mm512_mullo_epi32(z, _mm512_set1_epi32((int)x->sumx[g])));
        __m512d a = _mm512_set1_pd(x->a[g]);
        __m512d t_lo = _mm512_mul_pd(_mm512_mul_pd(_mm512_cvtepi32_pd(_mm512_castsi512_si256(dot)), a), s_lo);
        __m512d t_hi = _mm512_mul_pd(_mm512_mul_pd(_mm512_cvtepi32_pd(_mm512_extracti64x4_epi64(dot, 1)), a), s_hi);
        double *ar = acc + (r0 + r) * PAIR;
        if (j) {
            t_lo = _mm512_add_pd(_mm512_loadu_pd(ar), t_lo);
            t_hi = _mm512_add_pd(_mm512_loadu_pd(ar + 8), t_hi);
        }
        _mm512_storeu_pd(ar, t_lo);
        _mm512_storeu_pd(ar + 8, t_hi);
    }
}

T512 static void pair_avx512(const weight_t *w, const act_t *x, int64_t t0, double *acc, int16_t *wb) {
    uint8_t codes[CHUNK];
    for (int64_t j = 0; j < w->groups; j++) {
        int64_t k0 = j * w->glen / CHUNK, k1 = j + 1 == w->groups ? w->chunks : (j + 1) * w->glen / CHUNK;
        int64_t span = (k1 - k0) * CHUNK;
        for (int o = 0; o < PAIR; o++)
            for (int64_t k = k0; k < k1; k++) {
                _mm256_storeu_si256((__m256i *)codes, unpack_chunk(chunk_at(w, t0 + o / OUT_TILE, k, o % OUT_TILE), w->bits));
                for (int i = 0; i < CHUNK; i++) {
                    int64_t c = (k - k0) * CHUNK + i;
                    wb[(c / 2) * 2 * PAIR + 2 * o + (c & 1)] = codes[i];
                }
            }
        const int64_t g0 = (t0 * w->groups + j) * OUT_TILE, g1 = ((t0 + 1) * w->groups + j) * OUT_TILE;
        __m128i z8 = _mm_unpacklo_epi64(_mm_loadl_epi64((const __m128i *)(w->zeros + g0)),
                                        _mm_loadl_epi64((const __m128i *)(w->zeros + g1)));
        __m512i z = _mm512_cvtepu8_epi32(z8);
        __m512d s_lo = _mm512_cvtps_pd(_mm256_loadu_ps(w->scales + g0));
        __m512d s_hi = _mm512_cvtps_pd(_mm256_loadu_ps(w->scales + g1));
        const int16_t *xs = x->xi + k0 * CHUNK;
        int64_t r = 0;
        for (; r + ROW_BLOCK <= x->rows; r += ROW_BLOCK) pair_rows(w, x, j, xs, span, r, ROW_BLOCK, wb, z, s_lo, s_hi, acc);
        for (; r < x->rows; r++) pair_rows(w, x, j, xs, span, r, 1, wb, z, s_lo, s_hi, acc);
    }
}
#endif

int lunit_cpu_level(void) { /* the widest vector path this CPU runs; every path gives the same integers */
#ifdef LUNIT_X86
    static int cached = -1;
    if (cached < 0) {
        __builtin_cpu_init();
        cached = !__builtin_cpu_supports("avx2") ? PORTABLE
                 : __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
                         __builtin_cpu_supports("avx512vnni")
                     ? AVX512
                     : AVX2;
        if (cached == AVX512 && lunit_amx_available()) cached = AMX;
    }
    return cached;
#else
    return PORTABLE;
#endif
}

#define PAIR_ROWS_MIN 4 /* rows from which two tiles at once (pair_avx512) beat one tile at a time */

static int run_linear(const weight_t *w, const act_t *x, float *y, int threads, int simd) {
    if (simd == AMX) {
        if (x->rows >= AMX_ROWS_MIN) return lunit_linear_amx(w, x, y, threads);
        simd = AVX512; /* decode and short prompts: AMX tiles would be mostly padding */
    }
    int64_t tiles = (w->out_f + OUT_TILE - 1) / OUT_TILE;
    int per = simd == AVX512 && x->rows >= PAIR_ROWS_MIN ? 2 : 1; /* tiles per unit of work */
    int64_t units = (tiles + per - 1) / per;
    (void)threads;
#pragma omp parallel num_threads(threads) if (threads > 1)
    {
        double *acc = malloc(sizeof(double) * (size_t)(x->rows * OUT_TILE * per));
        int16_t *wbuf = malloc(sizeof(int16_t) * (size_t)(OUT_TILE * per * ((w->glen < w->in_p ? w->glen : w->in_p) + CHUNK)));
#pragma omp for schedule(static) /* decode: many tiny units */
        for (int64_t u = 0; u < units; u++) {
            if (!acc || !wbuf) continue;
            int64_t t = u * per;
            int width = per == 2 && t + 1 < tiles ? 2 * OUT_TILE : OUT_TILE; /* outputs in acc's rows */
#ifdef LUNIT_X86
            if (width == 2 * OUT_TILE)
                pair_avx512(w, x, t, acc, wbuf);
            else if (simd == AVX512)
                tile_avx512(w, x, t, acc, wbuf);
            else if (simd == AVX2)
                tile_avx2(w, x, t, acc, wbuf);
            else
#endif
                tile_portable(w, x, t, acc);
            int lanes = w->out_f - t * OUT_TILE < width ? (int)(w->out_f - t * OUT_TILE) : width;
            for (int64_t r = 0; r < x->rows; r++)
                for (int lane = 0; lane < lanes; lane++)
                    y[r * w->out_f + t * OUT_TILE + lane] = (float)acc[r * width + lane];
        }
        free(acc);
        free(wbuf);
    }
    return 0;
}

/* ---- Python entry point ------------------------------------------------------------------------- */

static PyObject *lunit_linear(PyObject *self, PyObject *args) {
    PyObject *xo, *co, *so, *zo, *yo;
    long long rows, in_f, out_f, glen, bits;
    int mode, threads, portable; /* portable: the widest path allowed (0, 1, 2) */
    (void)self;
    if (!PyArg_ParseTuple(args, "OOOOOLLLLLiii", &xo, &co, &so, &zo, &yo, &rows, &in_f, &out_f, &glen, &bits, &mode,
                          &threads, &portable))
        return NULL;
    if (!(bits == 2 || bits == 3 || bits == 4 || bits == 8) || rows < 0 || in_f < 1 || out_f < 1 || glen < 1 ||
        (mode != 0 && mode != 1) || threads < 1) {
        PyErr_SetString(PyExc_ValueError, "bad L-Unit product arguments");
        return NULL;
    }
    weight_t w = {in_f, (in_f + CHUNK - 1) / CHUNK * CHUNK, out_f, (in_f + glen - 1) / glen, glen, bits, 4 * bits, 0,
                  NULL, NULL, NULL};
    w.chunks = w.in_p / CHUNK;
    int64_t tiles = (out_f + OUT_TILE - 1) / OUT_TILE;
    Py_buffer xb, cb, sb, zb, yb;
    if (lunit_get(xo, &xb, 0, 4, rows * in_f, "x") < 0) return NULL;
    if (lunit_get(co, &cb, 0, 1, tiles * OUT_TILE * w.chunks * w.chunk_bytes, "codes") < 0) goto fail_x;
    if (lunit_get(so, &sb, 0, 4, tiles * OUT_TILE * w.groups, "scales") < 0) goto fail_c;
    if (lunit_get(zo, &zb, 0, 1, tiles * OUT_TILE * w.groups, "zeros") < 0) goto fail_s;
    if (lunit_get(yo, &yb, 1, 4, rows * out_f, "y") < 0) goto fail_z;
    w.codes = cb.buf;
    w.scales = sb.buf;
    w.zeros = zb.buf;
    static __thread scratch_t xi_s, sumx_s, a_s; /* each row is written in full by quantize_row */
    int16_t *xi = scratch(&xi_s, sizeof(int16_t) * (size_t)(rows * w.in_p + 16));
    int64_t *sumx = scratch(&sumx_s, sizeof(int64_t) * (size_t)(rows * w.groups + 1));
    double *a = scratch(&a_s, sizeof(double) * (size_t)(rows * w.groups + 1));
    if (!xi || !sumx || !a) {
        PyErr_NoMemory();
        goto fail_y;
    }
    int64_t span = w.groups == 1 ? w.in_p : glen;
    int simd = (w.groups == 1 || glen % CHUNK == 0) && span <= SIMD_GROUP_MAX ? lunit_cpu_level() : PORTABLE;
    if (portable < simd) simd = portable; /* tests: force a narrower path (0 portable, 1 AVX2, 2 AVX-512) */
    int failed;
    Py_BEGIN_ALLOW_THREADS;
    const float *xf = xb.buf;
    const int vector_rows = lunit_cpu_level() >= AVX512 && portable >= AVX512;
#pragma omp parallel for num_threads(threads) if (threads > 1 && rows > 1) schedule(dynamic, 8)
    for (int64_t r = 0; r < rows; r++) { /* each row by one thread */
#ifdef LUNIT_X86
        if (vector_rows) {
            quantize_row_avx512(xf + r * in_f, &w, mode, xi + r * w.in_p, sumx + r * w.groups, a + r * w.groups);
            continue;
        }
#endif
        quantize_row(xf + r * in_f, &w, mode, xi + r * w.in_p, sumx + r * w.groups, a + r * w.groups);
    }
    memset(xi + rows * w.in_p, 0, 16 * sizeof(int16_t));
    act_t act = {rows, xi, sumx, a};
    failed = run_linear(&w, &act, yb.buf, threads, simd);
    Py_END_ALLOW_THREADS;
    if (failed) PyErr_NoMemory();
    PyBuffer_Release(&yb), PyBuffer_Release(&zb), PyBuffer_Release(&sb), PyBuffer_Release(&cb), PyBuffer_Release(&xb);
    if (failed) return NULL;
    Py_RETURN_NONE;
fail_y:
    PyBuffer_Release(&yb);
fail_z:
    PyBuffer_Release(&zb);
fail_s:
    PyBuffer_Release(&sb);
fail_c:
    PyBuffer_Release(&cb);
fail_x:
    PyBuffer_Release(&xb);
    return NULL;
}

static PyObject *lunit_simd(PyObject *self, PyObject *unused) {
    (void)self, (void)unused;
    static const char *names[] = {"portable", "avx2", "avx512", "amx"};
    return PyUnicode_FromString(names[lunit_cpu_level()]);
}

static PyMethodDef methods[] = {
    {"linear", lunit_linear, METH_VARARGS,
     "linear(x, codes, scales, zeros, y, rows, in, out, group_len, bits, mode, threads, widest): "
     "y = the L-Unit product of docs/numerics.md (mode 0 int8, 1 bf16)"},
    {"exp64", lunit_exp64, METH_VARARGS, "exp64(x, out): detmath.exp64 of float64 x into out, the same bits"},
    {"silu_mul", lunit_silu_mul, METH_VARARGS, "silu_mul(g, u, h, rows, cols[, threads]): SwiGLU of float32 [rows, cols] g, u (adjacent columns) into h"},
    {"rms_norm", lunit_rms_norm, METH_VARARGS, "rms_norm(x, weight, y, rows, n, eps[, threads]): RMSNorm of float32 rows"},
    {"encode", lunit_encode, METH_VARARGS,
     "encode(x, out, scale, rows, d, mode[, widest, threads]): kv.encode_vectors of float32 rows (mode 0 int8, 1 fp16) into int8, "
     "int32 or float64 out and float64 scale"},
    {"rope", lunit_rope, METH_VARARGS, "rope(x, cos, sin, y, tokens, heads, d[, threads]): RoPE of float32 x [tokens, heads, d]"},
    {"attention", hunit_attention, METH_VARARGS,
     "attention(dots, sq, k_scale, v, v_scale, out, kv_heads, rows, keys, d, tokens, start, units, c, threads, widest): "
     "split-softmax attention after the q.k products (attention.py)"},
    {"scores", hunit_scores, METH_VARARGS,
     "scores(qi, k, dots, kv_heads, rows, keys, d, tokens, start, threads, widest): the visible q.k products "
     "of int8 keys into dots; False where this CPU or the data cannot (take BLAS)"},
    {"simd", lunit_simd, METH_NOARGS, "the widest vector path this CPU takes: 'portable', 'avx2', 'avx512' or 'amx'"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_lunit", "The L-Unit product on packed codes.", -1,
                                    methods};

PyMODINIT_FUNC PyInit__lunit(void) {
    PyObject *m = PyModule_Create(&module);
    if (m != NULL && PyModule_AddIntConstant(m, "ABI", ROMACHIP_NATIVE_ABI) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
