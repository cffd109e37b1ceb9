/* What the native module's C files share: the buffer check, the CPU's vector level and exp64 (scalar and
 * eight lanes at once, the same IEEE operations in the same order, so the same bits).
 *
 * Every file of the module is compiled with -ffp-contract=off and without -ffast-math (setup.py): each
 * float step below is one IEEE operation, rounded once, as docs/numerics.md writes it. */
#ifndef ROMACHIP_NATIVE_H
#define ROMACHIP_NATIVE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define LUNIT_X86 1
#endif

/* The functions and arguments this module offers, as a number (the module's ABI attribute): bump it, and
 * detmath.NATIVE_ABI with it, whenever a function is added or its arguments change, so that Python built
 * against a stale module takes the NumPy path instead of calling what the module lacks. */
#define ROMACHIP_NATIVE_ABI 4

enum { PORTABLE = 0, AVX2 = 1, AVX512 = 2, AMX = 3 };

/* the widest vector path this CPU runs (AVX512: F, BW, VL, DQ and VNNI); every path gives the same bits */
int lunit_cpu_level(void);

#define T512 __attribute__((target("avx2,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")))

/* A C-contiguous buffer of `items` items of `itemsize` bytes (writable if asked), else a ValueError. */
static inline int lunit_get(PyObject *obj, Py_buffer *view, int writable, Py_ssize_t itemsize, Py_ssize_t items,
                            const char *what) {
    if (PyObject_GetBuffer(obj, view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0)) < 0)
        return -1;
    if (view->itemsize != itemsize || view->len != items * itemsize) {
        PyErr_Format(PyExc_ValueError, "%s: expected %zd items of %zd bytes, got %zd bytes of %zd", what, items,
                     itemsize, view->len, view->itemsize);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

/* A grow-only buffer kept per thread (declare `static __thread scratch_t`): the kernels' temporaries are
 * reused from call to call instead of fresh pages (zeroed by the OS) each time. NULL when out of memory. */
typedef struct {
    void *p;
    size_t bytes;
} scratch_t;

static inline void *scratch(scratch_t *s, size_t bytes) { /* 64-byte aligned: AMX tile rows split no line */
    if (bytes > s->bytes) {
        void *p = NULL;
        if (posix_memalign(&p, 64, bytes)) return NULL;
        free(s->p);
        s->p = p, s->bytes = bytes;
    }
    return s->p;
}

/* ---- exp64 (docs/numerics.md, "Vector-unit arithmetic") ------------------------------------------ */

#define LN2_HI 6.93147180369123816490e-01
#define LN2_LO 1.90821492927058770002e-10
#define INV_LN2 1.44269504088896338700e00
#define EXP_HI 709.78
#define EXP_LO -745.2
#define EXP_SHIFT 6755399441055744.0 /* 1.5 * 2^52: (v + shift) - shift is rne(v) for |v| < 2^51 */

/* f64(1/n!), n = 9 .. 0: n! is exact and the compiler folds each division correctly rounded, as Python's
 * int / int is (detmath._EXP_COEFFS) */
static const double EXP_COEFFS[10] = {1.0 / 362880.0, 1.0 / 40320.0, 1.0 / 5040.0, 1.0 / 720.0, 1.0 / 120.0,
                                      1.0 / 24.0,     1.0 / 6.0,     1.0 / 2.0,    1.0,         1.0};

static inline double pow2i(int64_t n) { /* 2^n exactly, for n in [-1022, 1023] */
    uint64_t bits = (uint64_t)(n + 1023) << 52;
    double v;
    memcpy(&v, &bits, 8);
    return v;
}

/* No libm call (so that independent elements overlap): rne by the shift, and ldexp(ldexp(p, h), k - h)
 * as two multiplications by exact powers of two (h, k - h lie in [-538, 512]), which round as ldexp does. */
static inline double exp64(double x) {
    if (x != x) return x;
    if (x >= EXP_HI) return HUGE_VAL;
    if (x <= EXP_LO) return 0.0;
    double k = (x * INV_LN2 + EXP_SHIFT) - EXP_SHIFT;
    double r = x - k * LN2_HI; /* k * LN2_HI is exact (Cody-Waite) */
    r = r - k * LN2_LO;
    double p = EXP_COEFFS[0];
    for (int i = 1; i < 10; i++) {
        p = p * r;
        p = p + EXP_COEFFS[i];
    }
    int64_t ki = (int64_t)k, half = ki / 2 - (ki < 0 && ki % 2 != 0); /* floor(k / 2) */
    return (p * pow2i(half)) * pow2i(ki - half);
}

#ifdef LUNIT_X86
/* exp64 of eight lanes: the scalar steps lane by lane; out-of-range lanes are computed, then replaced */
T512 static inline __m512d exp64_x8(__m512d x) {
    const __m512d shift = _mm512_set1_pd(EXP_SHIFT);
    __m512d k = _mm512_sub_pd(_mm512_add_pd(_mm512_mul_pd(x, _mm512_set1_pd(INV_LN2)), shift), shift);
    __m512d r = _mm512_sub_pd(x, _mm512_mul_pd(k, _mm512_set1_pd(LN2_HI)));
    r = _mm512_sub_pd(r, _mm512_mul_pd(k, _mm512_set1_pd(LN2_LO)));
    __m512d p = _mm512_set1_pd(EXP_COEFFS[0]);
    for (int i = 1; i < 10; i++) p = _mm512_add_pd(_mm512_mul_pd(p, r), _mm512_set1_pd(EXP_COEFFS[i]));
    __m512i ki = _mm512_cvtpd_epi64(k); /* k is an integer: exact */
    __m512i half = _mm512_srai_epi64(ki, 1); /* floor(k / 2) */
    const __m512i bias = _mm512_set1_epi64(1023);
    __m512d s0 = _mm512_castsi512_pd(_mm512_slli_epi64(_mm512_add_epi64(half, bias), 52));
    __m512d s1 = _mm512_castsi512_pd(_mm512_slli_epi64(_mm512_add_epi64(_mm512_sub_epi64(ki, half), bias), 52));
    __m512d y = _mm512_mul_pd(_mm512_mul_pd(p, s0), s1);
    y = _mm512_mask_blend_pd(_mm512_cmp_pd_mask(x, _mm512_set1_pd(EXP_LO), _CMP_LE_OQ), y, _mm512_setzero_pd());
    y = _mm512_mask_blend_pd(_mm512_cmp_pd_mask(x, _mm512_set1_pd(EXP_HI), _CMP_GE_OQ), y,
                             _mm512_set1_pd(HUGE_VAL));
    return _mm512_mask_blend_pd(_mm512_cmp_pd_mask(x, x, _CMP_UNORD_Q), y, x);
}
#endif

#endif
