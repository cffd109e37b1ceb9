/* The vector units' elementwise steps of docs/numerics.md in C: exp64, SwiGLU and RMSNorm, one IEEE
 * operation each, in the order detmath.py / model.py take them (tests hold them to those bit for bit).
 * exp64 runs eight lanes at once on AVX-512 (the same operations per lane, so the same bits). */
#include "_native.h"

PyObject *lunit_exp64(PyObject *self, PyObject *args);
PyObject *lunit_silu_mul(PyObject *self, PyObject *args);
PyObject *lunit_rms_norm(PyObject *self, PyObject *args);
PyObject *lunit_rope(PyObject *self, PyObject *args);
PyObject *lunit_encode(PyObject *self, PyObject *args);

#ifdef LUNIT_X86
T512 static void exp64_x8_array(const double *x, double *y, Py_ssize_t n) {
    for (Py_ssize_t i = 0; i + 8 <= n; i += 8) _mm512_storeu_pd(y + i, exp64_x8(_mm512_loadu_pd(x + i)));
}
#endif

static void exp64_array(const double *x, double *y, Py_ssize_t n) {
    Py_ssize_t i = 0;
#ifdef LUNIT_X86
    if (lunit_cpu_level() >= AVX512) {
        exp64_x8_array(x, y, n);
        i = n / 8 * 8;
    }
#endif
    for (; i < n; i++) y[i] = exp64(x[i]);
}

PyObject *lunit_exp64(PyObject *self, PyObject *args) {
    PyObject *xo, *yo;
    (void)self;
    if (!PyArg_ParseTuple(args, "OO", &xo, &yo)) return NULL;
    Py_buffer xb, yb;
    if (PyObject_GetBuffer(xo, &xb, PyBUF_C_CONTIGUOUS) < 0) return NULL;
    if (lunit_get(yo, &yb, 1, 8, xb.len / 8, "out") < 0 || xb.len % 8) {
        PyBuffer_Release(&xb);
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "exp64 takes float64 arrays");
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS;
    exp64_array(xb.buf, yb.buf, xb.len / 8);
    Py_END_ALLOW_THREADS;
    PyBuffer_Release(&yb), PyBuffer_Release(&xb);
    Py_RETURN_NONE;
}

#ifdef LUNIT_X86
T512 static void silu_x8(const float *g, const float *u, float *h, long long n) {
    for (long long i = 0; i + 8 <= n; i += 8) {
        __m512d gd = _mm512_cvtps_pd(_mm256_loadu_ps(g + i));
        __m512d e = exp64_x8(_mm512_sub_pd(_mm512_setzero_pd(), gd)); /* -g: exact */
        __m256 silu = _mm512_cvtpd_ps(_mm512_div_pd(gd, _mm512_add_pd(_mm512_set1_pd(1.0), e)));
        _mm256_storeu_ps(h + i, _mm256_mul_ps(silu, _mm256_loadu_ps(u + i)));
    }
}
#endif

/* A float32 [rows, cols] view whose columns are adjacent (a slice of a fused projection's output is one);
 * its row stride, in floats, goes to *ld. */
static int get_rows(PyObject *o, Py_buffer *b, int writable, long long rows, long long cols, long long *ld,
                    const char *what) {
    if (PyObject_GetBuffer(o, b, PyBUF_STRIDES | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0)) < 0) return -1;
    int ok = b->ndim == 2 && b->itemsize == 4 && b->format != NULL && strcmp(b->format, "f") == 0 &&
             b->shape[0] == rows && b->shape[1] == cols && (cols < 2 || b->strides[1] == 4) &&
             b->strides[0] % 4 == 0 && (rows < 2 || b->strides[0] >= 4 * cols);
    if (!ok) {
        PyBuffer_Release(b);
        PyErr_Format(PyExc_ValueError, "%s must be float32 [rows, cols] with adjacent columns", what);
        return -1;
    }
    *ld = rows > 1 ? b->strides[0] / 4 : cols;
    return 0;
}

static void silu_row(const float *g, const float *u, float *h, long long n) {
    long long i = 0;
#ifdef LUNIT_X86
    if (lunit_cpu_level() >= AVX512) {
        silu_x8(g, u, h, n);
        i = n / 8 * 8;
    }
#endif
    for (; i < n; i++) {
        double gd = (double)g[i];
        float silu = (float)(gd / (1.0 + exp64(-gd)));
        h[i] = silu * u[i];
    }
}

#define SILU_THREADED_MIN 65536 /* elements below which waking a second thread costs more than it saves */

/* SwiGLU: h = f32(f32(f64(g / f64(1 + exp64(-g)))) * u), elementwise (rows over threads: the same bits) */
PyObject *lunit_silu_mul(PyObject *self, PyObject *args) {
    PyObject *go, *uo, *ho;
    long long rows, cols, lg, lu, lh;
    int threads = 1;
    (void)self;
    if (!PyArg_ParseTuple(args, "OOOLL|i", &go, &uo, &ho, &rows, &cols, &threads)) return NULL;
    if (rows < 0 || cols < 0) {
        PyErr_SetString(PyExc_ValueError, "silu_mul: negative shape");
        return NULL;
    }
    Py_buffer gb, ub, hb;
    if (get_rows(go, &gb, 0, rows, cols, &lg, "g") < 0) return NULL;
    if (get_rows(uo, &ub, 0, rows, cols, &lu, "u") < 0) {
        PyBuffer_Release(&gb);
        return NULL;
    }
    if (get_rows(ho, &hb, 1, rows, cols, &lh, "h") < 0) {
        PyBuffer_Release(&ub), PyBuffer_Release(&gb);
        return NULL;
    }
    const float *g = gb.buf, *u = ub.buf;
    float *h = hb.buf;
    Py_BEGIN_ALLOW_THREADS;
#pragma omp parallel for num_threads(threads) if (threads > 1 && rows > 1 && rows * cols >= SILU_THREADED_MIN) \
    schedule(static)
    for (long long r = 0; r < rows; r++) silu_row(g + r * lg, u + r * lu, h + r * lh, cols);
    Py_END_ALLOW_THREADS;
    PyBuffer_Release(&hb), PyBuffer_Release(&ub), PyBuffer_Release(&gb);
    Py_RETURN_NONE;
}

#define NORM_ROWS 8 /* rows whose sequential sums run side by side (independent chains overlap) */
#define ROWS_THREADED_MIN 32768 /* elements below which one thread does a whole RMSNorm or RoPE (decode) */

/* RMSNorm: ss = Σseq f64(x_i)^2, r = f64(1 / sqrt(f64(ss / n) + eps)), y_i = f32(f32(x_i * f32(r)) * w_i) */
static inline __attribute__((always_inline)) void rms_rows_body(const float *x, const float *w, float *y, long long r0,
                                                                int m, long long n, double eps) {
    double ss[NORM_ROWS];
    for (int k = 0; k < m; k++) ss[k] = 0.0; /* 0 + x_0^2 = x_0^2: the fold's first term, exactly */
    for (long long i = 0; i < n; i++)
        for (int k = 0; k < m; k++) {
            double v = (double)x[(r0 + k) * n + i];
            ss[k] = ss[k] + v * v;
        }
    for (int k = 0; k < m; k++) {
        float r = (float)(1.0 / sqrt(ss[k] / (double)n + eps));
        const float *xr = x + (r0 + k) * n;
        float *yr = y + (r0 + k) * n;
        for (long long i = 0; i < n; i++) yr[i] = (xr[i] * r) * w[i];
    }
}

/* the same steps compiled for the widest vector path (GCC's vectorizer, IEEE semantics kept) */
static void rms_rows(const float *x, const float *w, float *y, long long r0, int m, long long n, double eps) {
    rms_rows_body(x, w, y, r0, m, n, eps);
}
#ifdef LUNIT_X86
T512 static void rms_rows_avx512(const float *x, const float *w, float *y, long long r0, int m, long long n, double eps) {
    rms_rows_body(x, w, y, r0, m, n, eps);
}
#endif

PyObject *lunit_rms_norm(PyObject *self, PyObject *args) {
    PyObject *xo, *wo, *yo;
    long long rows, n;
    double eps;
    int threads = 1;
    (void)self;
    if (!PyArg_ParseTuple(args, "OOOLLd|i", &xo, &wo, &yo, &rows, &n, &eps, &threads)) return NULL;
    if (rows < 0 || n < 1) {
        PyErr_SetString(PyExc_ValueError, "bad RMSNorm arguments");
        return NULL;
    }
    Py_buffer xb, wb, yb;
    if (lunit_get(xo, &xb, 0, 4, rows * n, "x") < 0) return NULL;
    if (lunit_get(wo, &wb, 0, 4, n, "weight") < 0) {
        PyBuffer_Release(&xb);
        return NULL;
    }
    if (lunit_get(yo, &yb, 1, 4, rows * n, "y") < 0) {
        PyBuffer_Release(&wb), PyBuffer_Release(&xb);
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS;
    const int wide = lunit_cpu_level() >= AVX512;
    /* each row's sum is its own: blocks of rows over threads give the same bits */
#pragma omp parallel for num_threads(threads) if (threads > 1 && rows * n >= ROWS_THREADED_MIN) schedule(static)
    for (long long r = 0; r < rows; r += NORM_ROWS) {
        const int m = rows - r < NORM_ROWS ? (int)(rows - r) : NORM_ROWS;
#ifdef LUNIT_X86
        if (wide) {
            rms_rows_avx512(xb.buf, wb.buf, yb.buf, r, m, n, eps);
            continue;
        }
#endif
        (void)wide;
        rms_rows(xb.buf, wb.buf, yb.buf, r, m, n, eps);
    }
    Py_END_ALLOW_THREADS;
    PyBuffer_Release(&yb), PyBuffer_Release(&wb), PyBuffer_Release(&xb);
    Py_RETURN_NONE;
}

/* RoPE, rotate_half layout: [f32(f32(x1 c) - f32(x2 s)), f32(f32(x2 c) + f32(x1 s))] per token and head */
static inline __attribute__((always_inline)) void rope_body(const float *x, const float *c, const float *s, float *y,
                                                            long long tokens, long long heads, long long d) {
    const long long h2 = d / 2;
    for (long long t = 0; t < tokens; t++)
        for (long long h = 0; h < heads; h++) {
            const float *x1 = x + (t * heads + h) * d, *x2 = x1 + h2, *ct = c + t * h2, *st = s + t * h2;
            float *y1 = y + (t * heads + h) * d, *y2 = y1 + h2;
            for (long long i = 0; i < h2; i++) {
                y1[i] = x1[i] * ct[i] - x2[i] * st[i];
                y2[i] = x2[i] * ct[i] + x1[i] * st[i];
            }
        }
}

static void rope_portable(const float *x, const float *c, const float *s, float *y, long long tokens, long long heads,
                          long long d) {
    rope_body(x, c, s, y, tokens, heads, d);
}
#ifdef LUNIT_X86
T512 static void rope_avx512(const float *x, const float *c, const float *s, float *y, long long tokens,
                             long long heads, long long d) { /* the same C, GCC's vectorizer on (IEEE kept) */
    rope_body(x, c, s, y, tokens, heads, d);
}
#endif

PyObject *lunit_rope(PyObject *self, PyObject *args) {
    PyObject *xo, *co, *so, *yo;
    long long tokens, heads, d;
    int threads = 1;
    (void)self;
    if (!PyArg_ParseTuple(args, "OOOOLLL|i", &xo, &co, &so, &yo, &tokens, &heads, &d, &threads)) return NULL;
    if (tokens < 0 || heads < 1 || d < 2 || d % 2) {
        PyErr_SetString(PyExc_ValueError, "bad RoPE arguments");
        return NULL;
    }
    Py_buffer b[4];
    PyObject *objs[4] = {xo, co, so, yo};
    Py_ssize_t items[4] = {tokens * heads * d, tokens * d / 2, tokens * d / 2, tokens * heads * d};
    const char *names[4] = {"x", "cos", "sin", "y"};
    long long ldx = heads * d; /* x may be rows of a wider array (q or k inside the fused q/k/v output) */
    int got = get_rows(xo, &b[0], 0, tokens, heads * d, &ldx, "x") < 0 ? 0 : 1;
    for (; got && got < 4; got++)
        if (lunit_get(objs[got], &b[got], got == 3, 4, items[got], names[got]) < 0) break;
    if (got == 4) {
        const float *x = b[0].buf, *c = b[1].buf, *s = b[2].buf;
        float *y = b[3].buf;
        Py_BEGIN_ALLOW_THREADS;
        const int wide = lunit_cpu_level() >= AVX512;
        const long long per = heads * d, half = d / 2;
        /* tokens over threads: each element is its own (the same bits) */
#pragma omp parallel for num_threads(threads) if (threads > 1 && tokens * per >= ROWS_THREADED_MIN) schedule(static)
        for (long long t = 0; t < tokens; t++) {
#ifdef LUNIT_X86
            if (wide) {
                rope_avx512(x + t * ldx, c + t * half, s + t * half, y + t * per, 1, heads, d);
                continue;
            }
#endif
            (void)wide;
            rope_portable(x + t * ldx, c + t * half, s + t * half, y + t * per, 1, heads, d);
        }
        Py_END_ALLOW_THREADS;
    }
    int failed = got < 4;
    while (got-- > 0) PyBuffer_Release(&b[got]);
    if (failed) return NULL;
    Py_RETURN_NONE;
}

/* The H-Unit's vector forms (kv.encode_vectors), per row of d values:
 *   mode 0, int8: m = max |v|, s = f32(m / 127) (1 if m = 0), vi = clamp(rne(f32(v / s)), +-127)
 *   mode 1, fp16: h = fp16(clamp(v, +-65504)) (nearest even), E = flog2(max |h|), vi = rne(h 2^(14 - E)),
 *                 s = 2^(E - 14) (a zero vector: vi = 0, s = 1)
 * vi into int8 (itemsize 1), int32 (4) or binary64 (8) storage, s as binary64. */
/* fp16(v) as a float32, nearest even (|v| <= 65504 after the clamp, so no overflow): 10 mantissa bits by
 * integer rounding in the normal range, the 2^-24 grid below 2^-14 */
static float to_fp16f(float v) {
    v = v > 65504.0f ? 65504.0f : v < -65504.0f ? -65504.0f : v;
    if (fabsf(v) < 0x1p-14f) return rintf(v * 0x1p24f) * 0x1p-24f; /* exact scalings, one rounding */
    uint32_t u;
    memcpy(&u, &v, 4);
    u = (u + 0x0FFFu + ((u >> 13) & 1u)) & ~0x1FFFu;
    memcpy(&v, &u, 4);
    return v;
}

static inline __attribute__((always_inline)) void encode_body(const float *x, void *out, double *scale,
                                                             long long rows, long long d, int mode, int itemsize) {
    float *h = malloc(sizeof(float) * (size_t)d);
    for (long long r = 0; r < rows && h; r++) {
        const float *xr = x + r * d;
        float m = 0.0f;
        double s;
        if (mode == 0) {
            for (long long i = 0; i < d; i++) h[i] = xr[i], m = fabsf(xr[i]) > m ? fabsf(xr[i]) : m;
            float sf = m > 0.0f ? m / 127.0f : 1.0f;
            for (long long i = 0; i < d; i++) h[i] = fminf(fmaxf(rintf(h[i] / sf), -127.0f), 127.0f);
            s = (double)sf;
        } else {
            for (long long i = 0; i < d; i++) h[i] = to_fp16f(xr[i]), m = fabsf(h[i]) > m ? fabsf(h[i]) : m;
            int e = 0;
            frexpf(m, &e); /* flog2(m) + 1; 0 for a zero vector */
            /* ldexpf(h, 15 - e) as h * 2^(15 - e): 15 - e lies in [-1, 38] for fp16 values, so the power is a
             * normal float and the product exact */
            uint32_t pb = (uint32_t)(15 - e + 127) << 23;
            float pw;
            memcpy(&pw, &pb, 4);
            for (long long i = 0; i < d; i++) h[i] = rintf(h[i] * pw);
            s = m > 0.0f ? ldexp(1.0, e - 15) : 1.0;
        }
        scale[r] = s;
        for (long long i = 0; i < d; i++) {
            if (itemsize == 1) ((int8_t *)out)[r * d + i] = (int8_t)h[i];
            else if (itemsize == 4) ((int32_t *)out)[r * d + i] = (int32_t)h[i];
            else ((double *)out)[r * d + i] = (double)h[i];
        }
    }
    free(h);
}

static void encode_portable(const float *x, void *out, double *scale, long long rows, long long d, int mode,
                            int itemsize) {
    encode_body(x, out, scale, rows, d, mode, itemsize);
}

#ifdef LUNIT_X86
/* to_fp16f on 16 lanes: the same clamp, the same integer rounding, the same 2^-24 grid below 2^-14 */
T512 static inline __m512 to_fp16_x16(__m512 v) {
    const __m512 top = _mm512_set1_ps(65504.0f), bottom = _mm512_set1_ps(-65504.0f);
    v = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(v, top, _CMP_GT_OQ), v, top);
    v = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(v, bottom, _CMP_LT_OQ), v, bottom);
    __m512i u = _mm512_castps_si512(v);
    __m512i odd = _mm512_and_si512(_mm512_srli_epi32(u, 13), _mm512_set1_epi32(1));
    u = _mm512_add_epi32(_mm512_add_epi32(u, _mm512_set1_epi32(0x0FFF)), odd);
    __m512 normal = _mm512_castsi512_ps(_mm512_and_si512(u, _mm512_set1_epi32(~0x1FFF)));
    __m512 tiny = _mm512_mul_ps(_mm512_roundscale_ps(_mm512_mul_ps(v, _mm512_set1_ps(0x1p24f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC),
                                _mm512_set1_ps(0x1p-24f));
    __mmask16 small = _mm512_cmp_ps_mask(_mm512_abs_ps(v), _mm512_set1_ps(0x1p-14f), _CMP_LT_OQ);
    return _mm512_mask_blend_ps(small, normal, tiny);
}

/* encode_body's steps, 16 values at a time: the max (order free: of magnitudes), one IEEE division or
 * exact product per value, rne, the clamp (NaN to -127 as fmaxf gives it) */
T512 static void encode_avx512(const float *x, void *out, double *scale, long long rows, long long d, int mode,
                               int itemsize) {
    const __m512 rne_lo = _mm512_set1_ps(-127.0f), rne_hi = _mm512_set1_ps(127.0f);
    for (long long r = 0; r < rows; r++) {
        const float *xr = x + r * d;
        __m512 mx = _mm512_setzero_ps();
        for (long long i = 0; i < d; i += 16) {
            __mmask16 k = d - i >= 16 ? 0xffff : (__mmask16)((1u << (d - i)) - 1);
            __m512 v = _mm512_maskz_loadu_ps(k, xr + i);
            if (mode == 1) v = to_fp16_x16(v);
            mx = _mm512_mask_max_ps(mx, k, _mm512_abs_ps(v), mx); /* a NaN lane keeps the max so far */
        }
        float m = _mm512_reduce_max_ps(mx);
        __m512 by;
        double s;
        if (mode == 0) {
            float sf = m > 0.0f ? m / 127.0f : 1.0f;
            by = _mm512_set1_ps(sf), s = (double)sf;
        } else {
            int e = 0;
            frexpf(m, &e);
            uint32_t pb = (uint32_t)(15 - e + 127) << 23;
            float pw;
            memcpy(&pw, &pb, 4);
            by = _mm512_set1_ps(pw), s = m > 0.0f ? ldexp(1.0, e - 15) : 1.0;
        }
        scale[r] = s;
        for (long long i = 0; i < d; i += 16) {
            __mmask16 k = d - i >= 16 ? 0xffff : (__mmask16)((1u << (d - i)) - 1);
            __m512 v = _mm512_maskz_loadu_ps(k, xr + i), h;
            if (mode == 0) {
                h = _mm512_roundscale_ps(_mm512_div_ps(v, by), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
                h = _mm512_min_ps(_mm512_max_ps(h, rne_lo), rne_hi);
            } else {
                h = _mm512_roundscale_ps(_mm512_mul_ps(to_fp16_x16(v), by), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
            }
            if (itemsize == 1) _mm_mask_storeu_epi8((int8_t *)out + r * d + i, k, _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(h)));
            else if (itemsize == 4) _mm512_mask_storeu_epi32((int32_t *)out + r * d + i, k, _mm512_cvtps_epi32(h));
            else {
                _mm512_mask_storeu_pd((double *)out + r * d + i, (__mmask8)k, _mm512_cvtps_pd(_mm512_castps512_ps256(h)));
                _mm512_mask_storeu_pd((double *)out + r * d + i + 8, (__mmask8)(k >> 8),
                                      _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(h), 1))));
            }
        }
    }
}
#endif

#define ENCODE_CHUNK_ROWS 16
#define ENCODE_THREADED_MIN 65536 /* elements below which one thread encodes them all */

PyObject *lunit_encode(PyObject *self, PyObject *args) {
    PyObject *xo, *oo, *so;
    long long rows, d;
    int mode, widest = AMX, threads = 1; /* widest: the widest vector path allowed (tests: 0 portable) */
    (void)self;
    if (!PyArg_ParseTuple(args, "OOOLLi|ii", &xo, &oo, &so, &rows, &d, &mode, &widest, &threads)) return NULL;
    if (rows < 0 || d < 1 || (mode != 0 && mode != 1)) {
        PyErr_SetString(PyExc_ValueError, "bad encode arguments");
        return NULL;
    }
    Py_buffer xb, ob, sb;
    if (lunit_get(xo, &xb, 0, 4, rows * d, "x") < 0) return NULL;
    if (PyObject_GetBuffer(oo, &ob, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | PyBUF_WRITABLE) < 0) {
        PyBuffer_Release(&xb);
        return NULL;
    }
    int itemsize = (int)ob.itemsize;
    if ((itemsize != 1 && itemsize != 4 && itemsize != 8) || ob.len != rows * d * itemsize ||
        lunit_get(so, &sb, 1, 8, rows, "scale") < 0) {
        PyBuffer_Release(&ob), PyBuffer_Release(&xb);
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "encode: out must be int8, int32 or float64 [rows, d]");
        return NULL;
    }
    int wide = 0;
#ifdef LUNIT_X86
    wide = lunit_cpu_level() >= AVX512 && widest >= AVX512;
#endif
    long long chunks = (rows + ENCODE_CHUNK_ROWS - 1) / ENCODE_CHUNK_ROWS;
    Py_BEGIN_ALLOW_THREADS;
    /* each row is encoded on its own (its own scale): chunks of rows over threads give the same bits */
#pragma omp parallel for num_threads(threads) if (threads > 1 && rows * d >= ENCODE_THREADED_MIN) schedule(static)
    for (long long c = 0; c < chunks; c++) {
        long long r0 = c * ENCODE_CHUNK_ROWS, n = rows - r0 < ENCODE_CHUNK_ROWS ? rows - r0 : ENCODE_CHUNK_ROWS;
        const float *xc = (const float *)xb.buf + r0 * d;
        char *oc = (char *)ob.buf + r0 * d * itemsize;
        double *sc = (double *)sb.buf + r0;
#ifdef LUNIT_X86
        if (wide) encode_avx512(xc, oc, sc, n, d, mode, itemsize);
        else
#endif
            encode_portable(xc, oc, sc, n, d, mode, itemsize);
    }
    Py_END_ALLOW_THREADS;
    PyBuffer_Release(&sb), PyBuffer_Release(&ob), PyBuffer_Release(&xb);
    Py_RETURN_NONE;
}
