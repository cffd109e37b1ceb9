/* Attention split over the H-Units (docs/numerics.md, "Attention") after the exact q.k products: the
 * scores, each unit's max, exponentials, sum, 2^-21 grid and P.v integers, and the vector units' fold in
 * unit order, one IEEE operation each in the contract's order (attention.py's NumPy form gives the same
 * bits; tests hold them together). Threads split the (KV head, query row) pairs; each pair is formed by
 * one thread, in one order, so the bits do not depend on the thread count. */
#include "_native.h"

#include <stdlib.h>

#define P_BITS 21
#define PV_ROWS 4 /* query rows of one KV head attended together (one key per unit: each value load shared) */

PyObject *hunit_attention(PyObject *self, PyObject *args);
PyObject *hunit_scores(PyObject *self, PyObject *args);

typedef struct {
    int64_t kvh, rows, keys, d, tokens, start, units, slots, cap;
    const double *dots; /* [kvh, rows, keys]: S = qi . ki, exact integers */
    const double *sq; /* [kvh, rows] */
    const double *sk, *sv; /* [kvh, cap] the layer's key and value scales */
    const void *v; /* [kvh, cap, d] the layer's value integers: int8 or int32 */
    double *vd; /* [kvh, keys, d] the same as binary64 (exact), for the AVX-512 rows; NULL on the others */
    int v_bytes;
    double c; /* f64(1 / sqrt(d)) */
    float *out; /* [kvh, rows, d] */
} att_t;

typedef struct { /* one thread's scratch for one row */
    float *s, *m;
    double *z, *coef, *p, *acc, *ints;
    int *empty;
} row_t;

static inline double value_at(const att_t *a, int64_t h, int64_t j, int64_t e) {
    int64_t i = (h * a->cap + j) * a->d + e;
    return a->v_bytes == 1 ? (double)((const int8_t *)a->v)[i] : (double)((const int32_t *)a->v)[i];
}

/* acc[e] (+)= coef * X[e], X the value row of key j (one key per unit) or ints (the unit's A_u) */
static inline void add_terms(const att_t *a, int64_t h, int64_t j, const double *ints, double coef, double *acc,
                             int first) {
    const int64_t d = a->d;
    if (ints == NULL && a->v_bytes == 1) { /* the common case, left to the compiler's vectorizer */
        const int8_t *v = (const int8_t *)a->v + (h * a->cap + j) * d;
        if (first)
            for (int64_t e = 0; e < d; e++) acc[e] = coef * (double)v[e];
        else
            for (int64_t e = 0; e < d; e++) acc[e] = acc[e] + coef * (double)v[e];
        return;
    }
    for (int64_t e = 0; e < d; e++) {
        double t = coef * (ints ? ints[e] : value_at(a, h, j, e));
        acc[e] = first ? t : acc[e] + t;
    }
}

static inline int flog2d(double x) { /* floor(log2 x) as numpy's frexp gives it (x = 0: -1) */
    uint64_t b;
    memcpy(&b, &x, 8);
    int e = (int)((b >> 52) & 0x7ff), f;
    if (e != 0 && e != 0x7ff) return e - 1023;
    frexp(x, &f);
    return f - 1;
}

static inline double pow2d(int k) { return k >= -1022 && k <= 1023 ? pow2i(k) : ldexp(1.0, k); }

static inline __attribute__((always_inline)) void att_row(const att_t *a, int64_t h, int64_t r, const row_t *w) {
    const int64_t keys = a->keys, n = a->units, pos = a->start + r % a->tokens;
    const int64_t vis = pos + 1 < keys ? pos + 1 : keys; /* keys 0 .. vis-1 are visible (causal) */
    const double *dots = a->dots + (h * a->rows + r) * keys, sq = a->sq[h * a->rows + r];
    const double *sk = a->sk + h * a->cap, *sv = a->sv + h * a->cap;
    for (int64_t j = 0; j < vis; j++) w->s[j] = (float)(((dots[j] * sq) * sk[j]) * a->c);
    float mx = -INFINITY;
    for (int64_t u = 0; u < n; u++) { /* H-Unit u holds keys u, u + n, ...: its max */
        float m = -INFINITY;
        for (int64_t j = u; j < vis; j += n) m = w->s[j] > m ? w->s[j] : m;
        w->m[u] = m;
        w->empty[u] = m == -INFINITY;
        mx = m > mx ? m : mx;
    }
    for (int64_t u = 0; u < n; u++) { /* exponentials, their sum, the unit's own 2^-21 grid */
        if (w->empty[u]) continue;
        double z = 0.0, wmax = 0.0; /* 0 + e_0 = e_0: the fold's first term, exactly */
        for (int64_t j = u; j < vis; j += n) {
            float e = w->s[j] == w->m[u] ? 1.0f : (float)exp64((double)w->s[j] - (double)w->m[u]);
            z = z + (double)e;
            w->p[j] = (double)e * sv[j];
            wmax = w->p[j] > wmax ? w->p[j] : wmax;
        }
        int f = flog2d(wmax);
        double up = pow2d(P_BITS - f);
        for (int64_t j = u; j < vis; j += n) w->p[j] = rint(w->p[j] * up);
        double alpha = (double)(float)exp64((double)w->m[u] - (double)mx);
        w->z[u] = alpha * z;
        w->coef[u] = alpha * pow2d(f - P_BITS);
    }
    /* vector units: Z and O folded over the non-empty units in unit order (unit 0 holds key 0: never empty) */
    double z = 0.0;
    int first = 1;
    for (int64_t u = 0; u < n; u++) {
        if (w->empty[u]) continue;
        z = first ? w->z[u] : z + w->z[u];
        if (a->slots == 1) { /* f64(alpha 2^(F-21) P) is exact: one product by the value integer rounds once */
            add_terms(a, h, u, NULL, w->coef[u] * w->p[u], w->acc, first);
        } else {
            for (int64_t e = 0; e < a->d; e++) w->ints[e] = 0.0;
            for (int64_t j = u; j < vis; j += n) /* A_ud: exact integers below 2^52, any order */
                if (w->p[j] != 0.0)
                    for (int64_t e = 0; e < a->d; e++) w->ints[e] = w->ints[e] + w->p[j] * value_at(a, h, j, e);
            add_terms(a, h, u, w->ints, w->coef[u], w->acc, first);
        }
        first = 0;
    }
    float *out = a->out + (h * a->rows + r) * a->d;
    for (int64_t e = 0; e < a->d; e++) out[e] = (float)(w->acc[e] / z);
}


static void att_row_portable(const att_t *a, int64_t h, int64_t r, const row_t *w) { att_row(a, h, r, w); }

#ifdef LUNIT_X86
/* The same row with GCC's AVX-512 vectorizer on (IEEE semantics kept: no reassociation, no contraction). */
T512 static void att_row_avx512(const att_t *a, int64_t h, int64_t r, const row_t *w) { att_row(a, h, r, w); }

/* One key per unit (the chip's spread placement up to 256 keys): e = 1 and Z_u = 1 for every visible key,
 * so unit j's terms are alpha_j and C_j = f64(alpha_j 2^(F_j - 21) P_j), C_j v_j; eight keys at once.
 * Fills w->coef (C_j) and w->z (alpha_j) and returns the visible keys; 0 (having written nothing the row
 * needs) when a score is not finite, for att_row to handle as the contract says. */
T512 static int64_t one_key_coefs(const att_t *a, int64_t h, int64_t r, const row_t *w) {
    const int64_t keys = a->keys, pos = a->start + r % a->tokens;
    const int64_t vis = pos + 1 < keys ? pos + 1 : keys;
    const double *dots = a->dots + (h * a->rows + r) * keys;
    const double *sk = a->sk + h * a->cap, *sv = a->sv + h * a->cap;
    const __m512d sq = _mm512_set1_pd(a->sq[h * a->rows + r]), c = _mm512_set1_pd(a->c);
    __m256 mx8 = _mm256_set1_ps(-INFINITY);
    __mmask8 bad = 0;
    for (int64_t j = 0; j < vis; j += 8) {
        __mmask8 m = vis - j >= 8 ? 0xff : (__mmask8)((1u << (vis - j)) - 1);
        __m512d t = _mm512_mul_pd(_mm512_mul_pd(_mm512_maskz_loadu_pd(m, dots + j), sq), _mm512_maskz_loadu_pd(m, sk + j));
        __m256 s = _mm512_cvtpd_ps(_mm512_mul_pd(t, c));
        _mm256_mask_storeu_ps(w->s + j, m, s);
        /* +-inf or NaN: |s| < inf fails */
        bad |= m & ~_mm512_cmp_pd_mask(_mm512_abs_pd(_mm512_cvtps_pd(s)), _mm512_set1_pd(INFINITY), _CMP_LT_OQ);
        mx8 = _mm256_mask_max_ps(mx8, m, mx8, s);
    }
    if (bad) return 0;
    float mx = -INFINITY;
    float lanes[8];
    _mm256_storeu_ps(lanes, mx8);
    for (int i = 0; i < 8; i++) mx = lanes[i] > mx ? lanes[i] : mx;
    const __m512d mxd = _mm512_set1_pd((double)mx), one = _mm512_set1_pd(1.0);
    for (int64_t j = 0; j < vis; j += 8) {
        __mmask8 m = vis - j >= 8 ? 0xff : (__mmask8)((1u << (vis - j)) - 1);
        __m512d s = _mm512_cvtps_pd(_mm256_maskz_loadu_ps(m, w->s + j));
        __m512d alpha = _mm512_cvtps_pd(_mm512_cvtpd_ps(exp64_x8(_mm512_sub_pd(s, mxd))));
        __m512d v = _mm512_mask_loadu_pd(one, m, sv + j);
        __m512d f = _mm512_getexp_pd(v); /* flog2 of the positive scale, exact */
        __m512d p = _mm512_roundscale_pd(_mm512_mul_pd(v, _mm512_scalef_pd(one, _mm512_sub_pd(_mm512_set1_pd(P_BITS), f))),
                                         _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        __m512d coef = _mm512_mul_pd(_mm512_mul_pd(alpha, _mm512_scalef_pd(one, _mm512_sub_pd(f, _mm512_set1_pd(P_BITS)))), p);
        _mm512_mask_storeu_pd(w->z + j, m, alpha);
        _mm512_mask_storeu_pd(w->coef + j, m, coef);
    }
    return vis;
}

/* acc + C v over 8 lanes: one rounding either way where C v is exact (a fused multiply-add then gives the
 * same bits as the product and the sum, each rounded), else the two IEEE steps */
T512 static inline __m512d add_product(__m512d acc, __m512d coef, __m512d v, int exact) {
    return exact ? _mm512_fmadd_pd(coef, v, acc) : _mm512_add_pd(acc, _mm512_mul_pd(coef, v));
}

#define PV_LANES 32 /* value columns a pass: 4 registers per row */

/* O_d = sum_j C_j v_jd in key order for `n` rows, keys 0 .. common - 1 of all of them together (each value
 * row loaded once for all), then each row's own remaining keys; out = f32(O / Z).
 * C_j v_j is exact for int8 values: |C_j| has at most 24 + 22 significant bits (a float32 alpha times a
 * power of two times P_j <= 2^22) and |v| <= 127 < 2^7, so the product needs fewer than 53 bits. */
T512 static inline __attribute__((always_inline)) void one_key_body(const att_t *a, int64_t h, const int64_t *r,
                                                               row_t *const *w, const int64_t *vis, const int n,
                                                               const int exact) {
    const int64_t d = a->d;
    const double *v = a->vd + h * a->keys * d;
    int64_t common = vis[0];
    _Pragma("GCC unroll 8")
    for (int i = 1; i < n; i++) common = vis[i] < common ? vis[i] : common;
    for (int64_t e0 = 0; e0 < d; e0 += PV_LANES) {
        const int64_t lanes = d - e0 < PV_LANES ? d - e0 : PV_LANES;
        __mmask8 mk[PV_LANES / 8];
        _Pragma("GCC unroll 8")
        for (int k = 0; k < PV_LANES / 8; k++) {
            int64_t left = lanes - 8 * k;
            mk[k] = left >= 8 ? 0xff : left > 0 ? (__mmask8)((1u << left) - 1) : 0;
        }
        __m512d t[PV_ROWS][PV_LANES / 8];
        _Pragma("GCC unroll 8")
        for (int k = 0; k < PV_LANES / 8; k++) { /* the first key: a product alone (C v may be -0) */
            __m512d v0 = _mm512_maskz_loadu_pd(mk[k], v + e0 + 8 * k);
            _Pragma("GCC unroll 8")
            for (int i = 0; i < n; i++) t[i][k] = _mm512_mul_pd(_mm512_set1_pd(w[i]->coef[0]), v0);
        }
        for (int64_t j = 1; j < common; j++) {
            const double *vj = v + j * d + e0;
            __m512d c[PV_ROWS];
            _Pragma("GCC unroll 8")
            for (int i = 0; i < n; i++) c[i] = _mm512_set1_pd(w[i]->coef[j]);
            _Pragma("GCC unroll 8")
            for (int k = 0; k < PV_LANES / 8; k++) {
                __m512d x = _mm512_maskz_loadu_pd(mk[k], vj + 8 * k);
                _Pragma("GCC unroll 8")
                for (int i = 0; i < n; i++) t[i][k] = add_product(t[i][k], c[i], x, exact);
            }
        }
        _Pragma("GCC unroll 8")
        for (int i = 0; i < n; i++) {
            for (int64_t j = common; j < vis[i]; j++) {
                const __m512d c = _mm512_set1_pd(w[i]->coef[j]);
                _Pragma("GCC unroll 8")
                for (int k = 0; k < PV_LANES / 8; k++)
                    t[i][k] = add_product(t[i][k], c, _mm512_maskz_loadu_pd(mk[k], v + j * d + e0 + 8 * k), exact);
            }
            _Pragma("GCC unroll 8")
            for (int k = 0; k < PV_LANES / 8; k++) _mm512_mask_storeu_pd(w[i]->acc + e0 + 8 * k, mk[k], t[i][k]);
        }
    }
    _Pragma("GCC unroll 8")
    for (int i = 0; i < n; i++) {
        double z = w[i]->z[0];
        for (int64_t j = 1; j < vis[i]; j++) z = z + w[i]->z[j];
        float *out = a->out + (h * a->rows + r[i]) * d;
        for (int64_t e = 0; e < d; e++) out[e] = (float)(w[i]->acc[e] / z);
    }
}

/* one_key_body with its row count and exactness known to the compiler (the accumulators stay in registers) */
T512 static void one_key_values(const att_t *a, int64_t h, const int64_t *r, row_t *const *w, const int64_t *vis,
                                int n) {
    const int exact = a->v_bytes == 1;
    if (n == PV_ROWS) {
        if (exact) one_key_body(a, h, r, w, vis, PV_ROWS, 1);
        else one_key_body(a, h, r, w, vis, PV_ROWS, 0);
        return;
    }
    for (int i = 0; i < n; i++) {
        if (exact) one_key_body(a, h, r + i, w + i, vis + i, 1, 1);
        else one_key_body(a, h, r + i, w + i, vis + i, 1, 0);
    }
}
#endif

/* rows r0 .. r0 + n - 1 of KV head h, on the widest path allowed; w: one scratch per row */
static void att_rows_best(const att_t *a, int64_t h, int64_t r0, int n, row_t *const *w, int level) {
#ifdef LUNIT_X86
    if (level >= AVX512 && a->vd) {
        int64_t r[PV_ROWS], vis[PV_ROWS];
        int m = 0; /* rows kept for the shared pass, in w[0 .. m - 1] */
        for (int i = 0; i < n; i++) {
            int64_t v = one_key_coefs(a, h, r0 + i, w[m]);
            if (v) r[m] = r0 + i, vis[m] = v, m++;
            else att_row_avx512(a, h, r0 + i, w[m]);
        }
        if (m) one_key_values(a, h, r, w, vis, m);
        return;
    }
    if (level >= AVX512) {
        for (int i = 0; i < n; i++) att_row_avx512(a, h, r0 + i, w[0]);
        return;
    }
#endif
    (void)level;
    for (int i = 0; i < n; i++) att_row_portable(a, h, r0 + i, w[0]);
}

static int run_attention(att_t *a, int threads, int level) {
    static __thread scratch_t vd_s;
    int failed = 0;
    a->vd = level >= AVX512 && a->slots == 1 ? scratch(&vd_s, sizeof(double) * (size_t)(a->kvh * a->keys * a->d)) : NULL;
    if (level >= AVX512 && a->slots == 1 && !a->vd) return 1;
    const int64_t blocks = (a->rows + PV_ROWS - 1) / PV_ROWS;
#pragma omp parallel num_threads(threads) if (threads > 1)
    {
        if (a->vd) {
#pragma omp for schedule(dynamic, 8)
            for (int64_t hj = 0; hj < a->kvh * a->keys; hj++)
                for (int64_t e = 0; e < a->d; e++)
                    a->vd[hj * a->d + e] = value_at(a, hj / a->keys, hj % a->keys, e);
        }
        const int64_t n = a->units, keys = a->keys, d = a->d;
        const size_t row_bytes = (size_t)(keys * 4 + n * 4 + n * 16 + keys * 8 + d * 16 + n * sizeof(int) + 64) / 64 * 64;
        char *mem = malloc(PV_ROWS * row_bytes);
        row_t rows[PV_ROWS] = {{0}}, *w[PV_ROWS];
        for (int i = 0; i < PV_ROWS && mem; i++) {
            double *dp = (double *)(mem + i * row_bytes);
            rows[i].z = dp, rows[i].coef = dp + n, rows[i].p = dp + 2 * n, rows[i].acc = dp + 2 * n + keys;
            rows[i].ints = rows[i].acc + d;
            rows[i].s = (float *)(rows[i].ints + d), rows[i].m = rows[i].s + keys;
            rows[i].empty = (int *)(rows[i].m + n);
            w[i] = &rows[i];
        }
        if (!mem) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(dynamic, 4)
        for (int64_t b = 0; b < a->kvh * blocks; b++) {
            const int64_t h = b / blocks, r0 = b % blocks * PV_ROWS;
            if (mem) att_rows_best(a, h, r0, a->rows - r0 < PV_ROWS ? (int)(a->rows - r0) : PV_ROWS, w, level);
        }
        free(mem);
    }
    return failed;
}

/* attention(dots, sq, k_scale, v, v_scale, out, kvh, rows, keys, d, tokens, start, units, c, threads, widest) */
PyObject *hunit_attention(PyObject *self, PyObject *args) {
    PyObject *dots_o, *sq_o, *sk_o, *v_o, *sv_o, *out_o;
    long long kvh, rows, keys, d, tokens, start, units;
    double c;
    int threads, widest; /* widest: the widest vector path allowed (tests: 0 portable) */
    (void)self;
    if (!PyArg_ParseTuple(args, "OOOOOOLLLLLLLdii", &dots_o, &sq_o, &sk_o, &v_o, &sv_o, &out_o, &kvh, &rows, &keys,
                          &d, &tokens, &start, &units, &c, &threads, &widest))
        return NULL;
    if (kvh < 1 || rows < 1 || keys < 1 || d < 1 || tokens < 1 || rows % tokens || start < 0 ||
        start + tokens > keys || units < 1 || units > keys || threads < 1) {
        PyErr_SetString(PyExc_ValueError, "bad attention arguments");
        return NULL;
    }
    Py_buffer b[6];
    int got = 0;
    if (PyObject_GetBuffer(v_o, &b[3], PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) return NULL;
    Py_ssize_t v_bytes = b[3].itemsize, cap = b[3].len / (kvh * d * (v_bytes ? v_bytes : 1));
    PyBuffer_Release(&b[3]);
    if ((v_bytes != 1 && v_bytes != 4) || cap < keys) {
        PyErr_SetString(PyExc_ValueError, "attention: values must be int8 or int32 [kv_heads, capacity, d]");
        return NULL;
    }
    PyObject *objs[6] = {dots_o, sq_o, sk_o, v_o, sv_o, out_o};
    Py_ssize_t sizes[6] = {8, 8, 8, v_bytes, 8, 4};
    Py_ssize_t items[6] = {kvh * rows * keys, kvh * rows, kvh * cap, kvh * cap * d, kvh * cap, kvh * rows * d};
    const char *names[6] = {"dots", "sq", "k_scale", "v", "v_scale", "out"};
    for (; got < 6; got++)
        if (lunit_get(objs[got], &b[got], got == 5, sizes[got], items[got], names[got]) < 0) break;
    int failed = got < 6;
    if (!failed) {
        att_t a = {kvh, rows, keys, d, tokens, start, units, (keys + units - 1) / units, cap, b[0].buf, b[1].buf,
                   b[2].buf, b[4].buf, b[3].buf, NULL, (int)v_bytes, c, b[5].buf};
        Py_BEGIN_ALLOW_THREADS;
        int level = lunit_cpu_level();
        failed = run_attention(&a, threads, widest < level ? widest : level);
        Py_END_ALLOW_THREADS;
        if (failed) PyErr_NoMemory();
    }
    while (got-- > 0) PyBuffer_Release(&b[got]);
    if (failed) return NULL;
    Py_RETURN_NONE;
}

/* ---- q.k with int8 keys: S = sum_d qi ki exact in int32 (|qi| < 2^15, |ki| <= 127, d <= 256: |S| < 2^30) */

#define KEY_BLOCK 16
#define SCORE_D_MAX 256

#ifdef LUNIT_X86
#define SCORE_CHAINS 4 /* key blocks summed side by side (a vpdpwssd's latency is several of its issue slots) */

/* the 16 int32 sums of keys j0.. as binary64 (exact), up to the last key */
T512 static inline void store_scores(double *out, int64_t keys, int64_t j0, __m512i acc) {
    int64_t n = keys - j0 < KEY_BLOCK ? keys - j0 : KEY_BLOCK;
    __mmask8 m0 = n >= 8 ? 0xff : (__mmask8)((1u << n) - 1), m1 = n >= 16 ? 0xff : n > 8 ? (__mmask8)((1u << (n - 8)) - 1) : 0;
    _mm512_mask_storeu_pd(out + j0, m0, _mm512_cvtepi32_pd(_mm512_castsi512_si256(acc)));
    _mm512_mask_storeu_pd(out + j0 + 8, m1, _mm512_cvtepi32_pd(_mm512_extracti64x4_epi64(acc, 1)));
}

/* every |qi| < 2^15 (what the int16 pairs hold) */
T512 static int q_fits_int16(const double *q, int64_t n) {
    const __m512d lim = _mm512_set1_pd(32768.0);
    __mmask8 bad = 0;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) bad |= _mm512_cmp_pd_mask(_mm512_abs_pd(_mm512_loadu_pd(q + i)), lim, _CMP_NLT_UQ);
    for (; i < n; i++) bad |= !(fabs(q[i]) < 32768.0);
    return !bad;
}

/* keys packed [kvh][key block][d / 2][16 keys][2] as int16 (zero past the last key), so that one vpdpwssd
 * adds q_e k_je + q_e+1 k_je+1 for 16 keys */
T512 static void scores_avx512(const double *qi, const int8_t *k, double *dots, int64_t kvh, int64_t rows,
                               int64_t keys, int64_t d, int64_t cap, int64_t tokens, int64_t start, int threads,
                               int16_t *kp) {
    const int64_t blocks = (keys + KEY_BLOCK - 1) / KEY_BLOCK, d2 = (d + 1) / 2;
#pragma omp parallel num_threads(threads) if (threads > 1)
    {
#pragma omp for schedule(dynamic, 4)
        for (int64_t hb = 0; hb < kvh * blocks; hb++) {
            int16_t *dst = kp + hb * d2 * KEY_BLOCK * 2;
            const int64_t h = hb / blocks, j0 = hb % blocks * KEY_BLOCK;
            memset(dst, 0, sizeof(int16_t) * (size_t)(d2 * KEY_BLOCK * 2));
            for (int64_t n = 0; n < KEY_BLOCK && j0 + n < keys; n++)
                for (int64_t e = 0; e < d; e++) dst[(e / 2 * KEY_BLOCK + n) * 2 + e % 2] = k[(h * cap + j0 + n) * d + e];
        }
#pragma omp for schedule(dynamic, 16)
        for (int64_t hr = 0; hr < kvh * rows; hr++) {
            const int64_t h = hr / rows, r = hr % rows, pos = start + r % tokens;
            const int64_t vis = pos + 1 < keys ? pos + 1 : keys;
            const double *q = qi + hr * d;
            int32_t pairs[SCORE_D_MAX / 2];
            for (int64_t e2 = 0; e2 < d2; e2++) {
                int32_t lo = (int32_t)q[2 * e2], hi = 2 * e2 + 1 < d ? (int32_t)q[2 * e2 + 1] : 0;
                pairs[e2] = (int32_t)(((uint32_t)hi << 16) | ((uint32_t)lo & 0xffffu));
            }
            double *out = dots + hr * keys;
            const int16_t *kh = kp + h * blocks * d2 * KEY_BLOCK * 2;
            const int64_t vis_blocks = (vis + KEY_BLOCK - 1) / KEY_BLOCK;
            int64_t b = 0;
            for (; b + SCORE_CHAINS <= vis_blocks; b += SCORE_CHAINS) { /* independent sums: no latency chain */
                __m512i acc[SCORE_CHAINS];
                for (int c = 0; c < SCORE_CHAINS; c++) acc[c] = _mm512_setzero_si512();
                for (int64_t e2 = 0; e2 < d2; e2++) {
                    const __m512i qp = _mm512_set1_epi32(pairs[e2]);
                    for (int c = 0; c < SCORE_CHAINS; c++)
                        acc[c] = _mm512_dpwssd_epi32(
                            acc[c], _mm512_loadu_si512((const void *)(kh + ((b + c) * d2 + e2) * KEY_BLOCK * 2)), qp);
                }
                for (int c = 0; c < SCORE_CHAINS; c++) store_scores(out, keys, (b + c) * KEY_BLOCK, acc[c]);
            }
            for (; b < vis_blocks; b++) {
                __m512i acc = _mm512_setzero_si512();
                for (int64_t e2 = 0; e2 < d2; e2++)
                    acc = _mm512_dpwssd_epi32(acc, _mm512_loadu_si512((const void *)(kh + (b * d2 + e2) * KEY_BLOCK * 2)),
                                              _mm512_set1_epi32(pairs[e2]));
                store_scores(out, keys, b * KEY_BLOCK, acc);
            }
        }
    }
}
#endif

/* scores(qi, k, dots, kvh, rows, keys, d, tokens, start, threads, widest) -> whether it computed the visible
 * entries of dots (False: no AVX-512 VNNI allowed here, d too large or a |qi| >= 2^15; use BLAS) */
PyObject *hunit_scores(PyObject *self, PyObject *args) {
    PyObject *q_o, *k_o, *dots_o;
    long long kvh, rows, keys, d, tokens, start;
    int threads, widest;
    (void)self;
    if (!PyArg_ParseTuple(args, "OOOLLLLLLii", &q_o, &k_o, &dots_o, &kvh, &rows, &keys, &d, &tokens, &start, &threads,
                          &widest))
        return NULL;
    if (kvh < 1 || rows < 1 || keys < 1 || d < 1 || tokens < 1 || rows % tokens || start < 0 || start + tokens > keys ||
        threads < 1) {
        PyErr_SetString(PyExc_ValueError, "bad score arguments");
        return NULL;
    }
    int level = lunit_cpu_level();
    if ((widest < level ? widest : level) < AVX512 || d > SCORE_D_MAX) Py_RETURN_FALSE;
    Py_buffer qb, kb, db;
    if (PyObject_GetBuffer(k_o, &kb, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) return NULL;
    Py_ssize_t cap = kb.len / (kvh * d), itemsize = kb.itemsize;
    PyBuffer_Release(&kb);
    if (itemsize != 1 || cap < keys) {
        PyErr_SetString(PyExc_ValueError, "scores: keys must be int8 [kv_heads, capacity, d]");
        return NULL;
    }
    if (lunit_get(q_o, &qb, 0, 8, kvh * rows * d, "qi") < 0) return NULL;
    if (lunit_get(k_o, &kb, 0, 1, kvh * cap * d, "k") < 0) {
        PyBuffer_Release(&qb);
        return NULL;
    }
    if (lunit_get(dots_o, &db, 1, 8, kvh * rows * keys, "dots") < 0) {
        PyBuffer_Release(&kb), PyBuffer_Release(&qb);
        return NULL;
    }
    const double *q = qb.buf;
    int fits = 1, done = 0;
#ifdef LUNIT_X86
    fits = q_fits_int16(q, kvh * rows * d);
    static __thread scratch_t kp_s;
    const int64_t blocks = (keys + KEY_BLOCK - 1) / KEY_BLOCK;
    int16_t *kp = fits ? scratch(&kp_s, sizeof(int16_t) * (size_t)(kvh * blocks * (d + 1) / 2 * KEY_BLOCK * 2 + 64)) : NULL;
    if (kp) {
        Py_BEGIN_ALLOW_THREADS;
        scores_avx512(q, kb.buf, db.buf, kvh, rows, keys, d, cap, tokens, start, threads, kp);
        Py_END_ALLOW_THREADS;
        done = 1;
    }
#endif
    PyBuffer_Release(&db), PyBuffer_Release(&kb), PyBuffer_Release(&qb);
    if (fits && !done) return PyErr_NoMemory();
    if (done) Py_RETURN_TRUE;
    Py_RETURN_FALSE;
}
