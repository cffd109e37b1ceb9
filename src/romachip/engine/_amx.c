/* The L-Unit product for prefill on Intel AMX (TDPBUSD: unsigned 8-bit codes times signed int8, int32 sums
 * of 16 x 16 x 64 products per instruction), the same integers and the same epilogue as _lunit.c's paths.
 *
 * Activations (|xi| <= 2^14) are split xi = 256 hi + lo (hi = floor((xi + 128) / 256) in [-64, 64], lo in
 * [-128, 127]), each an int8 operand; per group, sum q hi and sum q lo are int32 (<= 512 * 255 * 128 < 2^31)
 * and I_j = 256 sum q hi + sum q lo - z_j sum xi wraps in int32 to the exact value (|I_j| < 2^31), as the
 * AVX-512 path's. A unit of work is 32 outputs: their codes unpacked once to bytes, then every block of 16
 * tokens runs the groups in order; the float steps per group are the contract's, in its order. */
#include "_lunit.h"

#include <stdlib.h>

#if defined(LUNIT_X86) && defined(__linux__)
#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>
#define LUNIT_AMX 1
#endif

#define AMX_OUT 32 /* outputs per unit of work: two A tiles of 16 */
#define AMX_TOK 16 /* tokens per B tile: 16 x 4 bytes a row */

#ifdef LUNIT_AMX
#define ARCH_REQ_XCOMP_PERM 0x1023
#define XFEATURE_XTILEDATA 18

int lunit_amx_available(void) {
    static int cached = -1;
    if (cached < 0) {
        unsigned a, b, c, d;
        int hw = __get_cpuid_count(7, 0, &a, &b, &c, &d) && (d >> 24 & 1) && (d >> 25 & 1); /* AMX-TILE, -INT8 */
        /* Linux hands out the tile state only on request (once per process) */
        cached = hw && syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0;
    }
    return cached;
}

typedef struct __attribute__((packed)) {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} tilecfg_t;

#define TAMX __attribute__((target("avx2,avx512f,avx512bw,avx512vl,avx512dq,amx-tile,amx-int8")))

/* tiles 0-3: C, int32 [16 outputs][16 tokens] (lo: 0, 1; hi: 2, 3); 4, 5: A, codes [16 outputs][kb];
 * 6, 7: B, [kb / 4][16 tokens x 4 columns] (lo, hi) */
TAMX static void configure(int kb) {
    tilecfg_t cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int t = 0; t < 4; t++) cfg.colsb[t] = 64, cfg.rows[t] = 16;
    for (int t = 4; t < 6; t++) cfg.colsb[t] = (uint16_t)kb, cfg.rows[t] = 16;
    for (int t = 6; t < 8; t++) cfg.colsb[t] = 64, cfg.rows[t] = (uint8_t)(kb / 4);
    _tile_loadconfig(&cfg);
}

typedef struct { /* the activations of one call in the tiles' layouts, per block of 16 tokens */
    int64_t blocks;
    int8_t *lo, *hi; /* [blocks][in_p / 4][16][4] */
    int32_t *sumx; /* [blocks][groups][16] */
    double *a; /* [blocks][groups][16] */
    int any_hi; /* 0: every |xi| <= 127, the hi products are 0 and skipped */
} amx_act_t;

/* block b's activations as the B tiles read them (hi and lo, [in_p / 4][16 tokens][4]), its sums and scales;
 * returns whether any hi is nonzero */
TAMX static int split_block(const weight_t *w, const act_t *x, const amx_act_t *t, int64_t b) {
    const int64_t bytes = w->in_p * AMX_TOK;
    int8_t *lo = t->lo + b * bytes, *hi = t->hi + b * bytes;
    int32_t *sumx = t->sumx + b * w->groups * AMX_TOK;
    double *a = t->a + b * w->groups * AMX_TOK;
    memset(lo, 0, (size_t)bytes), memset(hi, 0, (size_t)bytes);
    for (int64_t j = 0; j < w->groups * AMX_TOK; j++) sumx[j] = 0, a[j] = 0.0;
    const __m256i quad = _mm256_setr_epi32(0, 64, 128, 192, 256, 320, 384, 448); /* 8 quads: 64 bytes apart */
    __m512i any = _mm512_setzero_si512();
    for (int n = 0; n < AMX_TOK && b * AMX_TOK + n < x->rows; n++) {
        const int64_t r = b * AMX_TOK + n;
        const int16_t *xr = x->xi + r * w->in_p;
        for (int64_t c = 0; c < w->in_p; c += 32) {
            __m512i v = _mm512_loadu_si512((const void *)(xr + c));
            __m512i h = _mm512_srai_epi16(_mm512_add_epi16(v, _mm512_set1_epi16(128)), 8); /* floor */
            __m512i l = _mm512_sub_epi16(v, _mm512_slli_epi16(h, 8));
            any = _mm512_or_si512(any, h);
            _mm256_i32scatter_epi32(hi + c * AMX_TOK + n * 4, quad, _mm512_cvtepi16_epi8(h), 1);
            _mm256_i32scatter_epi32(lo + c * AMX_TOK + n * 4, quad, _mm512_cvtepi16_epi8(l), 1);
        }
        for (int64_t j = 0; j < w->groups; j++) {
            sumx[j * AMX_TOK + n] = (int32_t)x->sumx[r * w->groups + j];
            a[j * AMX_TOK + n] = x->a[r * w->groups + j];
        }
    }
    return _mm512_test_epi16_mask(any, any) != 0;
}

/* the unit's 32 outputs' codes as bytes [32][in_p] (outputs past the last tile: zero codes) */
TAMX static void unpack_unit(const weight_t *w, int64_t t0, uint8_t *codes) {
    const int64_t tiles = (w->out_f + OUT_TILE - 1) / OUT_TILE;
    for (int o = 0; o < AMX_OUT; o++) {
        int64_t tile = t0 + o / OUT_TILE;
        uint8_t *dst = codes + o * w->in_p;
        if (tile >= tiles) {
            memset(dst, 0, (size_t)w->in_p);
            continue;
        }
        for (int64_t k = 0; k < w->chunks; k++)
            _mm256_storeu_si256((__m256i *)(dst + k * CHUNK), unpack_chunk(chunk_at(w, tile, k, o % OUT_TILE), w->bits));
    }
}

/* t_j = f64(f64(I_j a_j) s_oj) added in group order, for 32 outputs x 16 tokens: acc [32][16] */
TAMX static void epilogue(const weight_t *w, const amx_act_t *t, int64_t t0, int64_t b, int64_t j,
                          const int32_t *clo, const int32_t *chi, double *acc) {
    const __m512i sumx = _mm512_loadu_si512((const void *)(t->sumx + (b * w->groups + j) * AMX_TOK));
    const double *ap = t->a + (b * w->groups + j) * AMX_TOK;
    const __m512d a0 = _mm512_loadu_pd(ap), a1 = _mm512_loadu_pd(ap + 8);
    const int64_t tiles = (w->out_f + OUT_TILE - 1) / OUT_TILE;
    for (int o = 0; o < AMX_OUT; o++) {
        const int64_t gi = ((t0 + o / OUT_TILE) * w->groups + j) * OUT_TILE + o % OUT_TILE;
        const int valid = t0 + o / OUT_TILE < tiles;
        __m512i dot = _mm512_loadu_si512((const void *)(clo + o * AMX_TOK));
        if (chi) dot = _mm512_add_epi32(dot, _mm512_slli_epi32(_mm512_loadu_si512((const void *)(chi + o * AMX_TOK)), 8));
        dot = _mm512_sub_epi32(dot, _mm512_mullo_epi32(_mm512_set1_epi32(valid ? w->zeros[gi] : 0), sumx));
        const __m512d s = _mm512_set1_pd(valid ? (double)w->scales[gi] : 0.0);
        __m512d lo = _mm512_mul_pd(_mm512_mul_pd(_mm512_cvtepi32_pd(_mm512_castsi512_si256(dot)), a0), s);
        __m512d hi = _mm512_mul_pd(_mm512_mul_pd(_mm512_cvtepi32_pd(_mm512_extracti64x4_epi64(dot, 1)), a1), s);
        double *ar = acc + o * AMX_TOK;
        if (j) {
            lo = _mm512_add_pd(_mm512_loadu_pd(ar), lo);
            hi = _mm512_add_pd(_mm512_loadu_pd(ar + 8), hi);
        }
        _mm512_storeu_pd(ar, lo);
        _mm512_storeu_pd(ar + 8, hi);
    }
}

TAMX static void unit_amx(const weight_t *w, const act_t *x, const amx_act_t *t, int64_t u, int kb, uint8_t *codes,
                          int32_t *c, double *acc, float *y) {
    const int64_t t0 = u * (AMX_OUT / OUT_TILE), bytes = w->in_p * AMX_TOK;
    unpack_unit(w, t0, codes);
    for (int64_t b = 0; b < t->blocks; b++) {
        const int8_t *lo = t->lo + b * bytes, *hi = t->hi + b * bytes;
        for (int64_t j = 0; j < w->groups; j++) {
            int64_t c0 = j * w->glen / CHUNK * CHUNK, c1 = j + 1 == w->groups ? w->in_p : (j + 1) * w->glen;
            _tile_zero(0);
            _tile_zero(1);
            _tile_zero(2);
            _tile_zero(3);
            for (int64_t col = c0; col < c1; col += kb) {
                _tile_loadd(4, codes + col, w->in_p);
                _tile_loadd(5, codes + 16 * w->in_p + col, w->in_p);
                _tile_loadd(6, lo + col / 4 * 64, 64);
                _tile_dpbusd(0, 4, 6);
                _tile_dpbusd(1, 5, 6);
                if (t->any_hi) {
                    _tile_loadd(7, hi + col / 4 * 64, 64);
                    _tile_dpbusd(2, 4, 7);
                    _tile_dpbusd(3, 5, 7);
                }
            }
            _tile_stored(0, c, 64);
            _tile_stored(1, c + 256, 64);
            if (t->any_hi) {
                _tile_stored(2, c + 512, 64);
                _tile_stored(3, c + 768, 64);
            }
            epilogue(w, t, t0, b, j, c, t->any_hi ? c + 512 : NULL, acc);
        }
        const int64_t outs = w->out_f - t0 * OUT_TILE < AMX_OUT ? w->out_f - t0 * OUT_TILE : AMX_OUT;
        const __m256i stride = _mm256_setr_epi32(0, 16, 32, 48, 64, 80, 96, 112); /* acc[o][n], o = 0..7 */
        for (int n = 0; n < AMX_TOK && b * AMX_TOK + n < x->rows; n++) {
            float *yr = y + (b * AMX_TOK + n) * w->out_f + t0 * OUT_TILE;
            for (int64_t o = 0; o < outs; o += 8) {
                __m256 v = _mm512_cvtpd_ps(_mm512_i32gather_pd(stride, acc + o * AMX_TOK + n, 8));
                _mm256_mask_storeu_ps(yr + o, outs - o >= 8 ? 0xff : (__mmask8)((1u << (outs - o)) - 1), v);
            }
        }
    }
}

TAMX int lunit_linear_amx(const weight_t *w, const act_t *x, float *y, int threads) {
    const int64_t blocks = (x->rows + AMX_TOK - 1) / AMX_TOK, bytes = w->in_p * AMX_TOK;
    const int64_t units = (w->out_f + AMX_OUT - 1) / AMX_OUT;
    /* 64 columns a step where every group spans whole 64-column steps, else 32 */
    const int kb = w->glen % 64 == 0 && w->in_p % 64 == 0 ? 64 : w->groups == 1 && w->in_p % 64 == 0 ? 64 : 32;
    static __thread scratch_t lo_s, hi_s, sumx_s, a_s;
    amx_act_t t = {blocks, scratch(&lo_s, (size_t)(blocks * bytes)), scratch(&hi_s, (size_t)(blocks * bytes)),
                   scratch(&sumx_s, sizeof(int32_t) * (size_t)(blocks * w->groups * AMX_TOK)),
                   scratch(&a_s, sizeof(double) * (size_t)(blocks * w->groups * AMX_TOK)), 0};
    const int prepared = t.lo && t.hi && t.sumx && t.a;
    int failed = !prepared, any_hi = 0;
#pragma omp parallel num_threads(threads) if (threads > 1)
    {
        if (prepared) {
#pragma omp for schedule(dynamic, 1) reduction(| : any_hi)
            for (int64_t b = 0; b < blocks; b++) any_hi |= split_block(w, x, &t, b);
#pragma omp single
            t.any_hi = any_hi;
        }
        static __thread scratch_t codes_s, c_s, acc_s;
        uint8_t *codes = scratch(&codes_s, (size_t)(AMX_OUT * w->in_p));
        int32_t *c = scratch(&c_s, sizeof(int32_t) * 4 * 256);
        double *acc = scratch(&acc_s, sizeof(double) * AMX_OUT * AMX_TOK);
        int ok = prepared && codes && c && acc;
        if (!ok) {
#pragma omp atomic write
            failed = 1;
        }
        if (ok) configure(kb);
#pragma omp for schedule(dynamic, 1)
        for (int64_t u = 0; u < units; u++)
            if (ok) unit_amx(w, x, &t, u, kb, codes, c, acc, y);
        if (ok) _tile_release();
    }
    return failed ? -1 : 0;
}
#else
int lunit_amx_available(void) { return 0; }
int lunit_linear_amx(const weight_t *w, const act_t *x, float *y, int threads) {
    (void)w, (void)x, (void)y, (void)threads;
    return -1;
}
#endif
