/* One-row (decode) matrix-vector products for x86-64 CPUs with AVX2 and FMA.
 *
 * Every kernel computes y[o] = beta * y[o] + alpha * sum_i W[o, i] * x[i] for a weight stored
 * [out, in] row-major (each output's weights contiguous), x in fp32, accumulating in fp32; beta
 * is 0 or 1 ("accumulate"); OpenMP splits the output rows over threads (torch's thread count,
 * one thread below PAR_MIN_WORK weights). fp32 rows are read one after another (one sequential
 * stream); bf16, FP8 and INT4 compute four rows together (each load and conversion of x serves
 * four rows: their weight conversions make them compute-bound otherwise). Weight formats:
 *
 *   ar_gemv_f32   fp32 weights
 *   ar_gemv_f32t  fp32 weights stored [in, out] (the axpy form: y += x[i] * W[i, :])
 *   ar_gemv_bf16  bf16 weights (bf16 -> fp32 is a 16-bit left shift)
 *   ar_gemv_fp8   float8 e4m3fn weights with one fp32 scale per [bh, bw] block
 *   ar_gemv_int4  symmetric int4 (q in [-8, 7], stored u = q + 8) with one fp32 or bf16
 *                 (scale_bf16 = 1) scale per row and group of 32 inputs; per row, group g is
 *                 16 bytes: byte j holds input g*32+j in its low nibble and input g*32+16+j in
 *                 its high nibble (padding: u = 8); the activations are rounded to 15-bit
 *                 integers (see int4_range)
 *   ar_gemv_batched  fp32 or bf16, one [out, in] matrix per batch entry (attention heads)
 *
 * x is fp32, or bf16 (x_bf16 = 1: widened once into a scratch copy).
 * y is fp32, or bf16 (y_bf16 = 1: read and written as bf16, rounded to nearest even).
 * No torch headers: the Python side passes data pointers (model/cpu_kernels.py).
 */
#include <immintrin.h>
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_kernels.h"

#define ROWS 4
#define PAR_MIN_WORK (1 << 15) /* weights below which one thread does the whole product */

static inline float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

static inline void store_row(void *y, int y_bf16, int64_t o, float v, float alpha, int accumulate) {
    if (y_bf16) {
        uint16_t *yb = (uint16_t *)y;
        float prev = accumulate ? bf16_to_f32(yb[o]) : 0.0f;
        yb[o] = f32_to_bf16(prev + alpha * v);
    } else {
        float *yf = (float *)y;
        yf[o] = (accumulate ? yf[o] : 0.0f) + alpha * v;
    }
}

/* x as fp32: itself, or a widened (and zero-padded to n_pad) copy in `buf` (STACK_IN floats on
 * the caller's stack) or, for longer x, in memory the caller frees (*owned). */
#define STACK_IN 4096
static const float *x_f32(const void *x, int x_bf16, int64_t n, int64_t n_pad, float *buf,
                          float **owned) {
    *owned = NULL;
    if (!x_bf16 && n_pad == n) return (const float *)x;
    if (n_pad > STACK_IN) {
        buf = (float *)malloc((size_t)n_pad * sizeof(float));
        if (!buf) return NULL;
        *owned = buf;
    }
    if (x_bf16) {
        const uint16_t *xb = (const uint16_t *)x;
        for (int64_t i = 0; i < n; i++) buf[i] = bf16_to_f32(xb[i]);
    } else {
        memcpy(buf, x, (size_t)n * sizeof(float));
    }
    for (int64_t i = n; i < n_pad; i++) buf[i] = 0.0f;
    return buf;
}

/* The [r0, r1) row range thread t of n gets, in whole blocks of ROWS. Every parallel region
 * splits its work over the team OpenMP actually gave (omp_get_num_threads()), which may be
 * smaller than the count asked for (OMP_THREAD_LIMIT, a call from inside another parallel
 * region). */
static inline void split_rows(int64_t out, int t, int n, int64_t *r0, int64_t *r1) {
    int64_t blocks = (out + ROWS - 1) / ROWS;
    int64_t b0 = blocks * t / n, b1 = blocks * (t + 1) / n;
    *r0 = b0 * ROWS;
    *r1 = b1 * ROWS < out ? b1 * ROWS : out;
}

static inline int threads_for(int64_t work, int64_t out, int nthreads) {
    if (nthreads < 1 || work < PAR_MIN_WORK) return 1;
    int64_t blocks = (out + ROWS - 1) / ROWS;
    return blocks < nthreads ? (int)blocks : nthreads;
}

/* Masks for the last (in % 8) columns. */
static inline __m256i tail_mask(int64_t n) {
    const int32_t m[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
    return _mm256_loadu_si256((const __m256i *)(m + 8 - n));
}

/* ------------------------------------------------------------------------------------- fp32 */

/* Software prefetch (hints only). Decode calls these kernels back to back on different matrices
 * of 0.25-2 MB that are not in any cache, and the hardware prefetcher ramps up too slowly on
 * them (rows of 0.5-8 KB; four rows read at once look like four streams). So every kernel walks
 * a prefetch cursor over the bytes its rows occupy, in address order, PF_AHEAD bytes ahead of
 * what it reads: the cursor first issues the first PF_AHEAD bytes (the start of a matrix is
 * otherwise fetched on demand, one miss at a time), then one line per 64 bytes consumed. It
 * stops at the end of the thread's rows (never fetching the neighbouring matrix) and steps over
 * the gap of strided rows (ldw > in). The batched kernel's cursor runs on into the next head. */
#ifndef PF_AHEAD
#define PF_AHEAD 4096
#endif
#ifndef SEQ_PF_AHEAD
#define SEQ_PF_AHEAD 2048
#endif
/* Measured on an AMD EPYC (AVX2, one thread, 1 GiB sum ~32-34 GB/s), random 0.5-1 MB matrices of
 * a 768 MB bank: one-row fp32 reads 29-33 GB/s with T1 hints SEQ_PF_AHEAD ahead (T0 and longer
 * distances: 26-29); the four-row bf16 kernel 27-29 with T0 hints PF_AHEAD past the other rows
 * (T1: 17-23; the former per-row prefetch, 8 KB ahead, no prologue: 19-25). */
/* The four-row kernels read ROWS rows side by side: their cursor leads the first row by
 * PF_AHEAD plus the other rows' bytes. */
#define AHEAD4(width) ((ROWS - 1) * (width) + PF_AHEAD)

typedef struct {
    const char *row;   /* start of the row being prefetched */
    int64_t col;       /* next byte in it */
    int64_t width;     /* bytes used per row */
    int64_t ld;        /* bytes from one row to the next */
    int64_t rows_left; /* rows after this one in the current matrix */
    const char *first; /* first row of the current matrix */
    int64_t rows;      /* rows per matrix */
    int64_t stride;    /* bytes from one matrix to the next */
    int64_t mats_left; /* matrices after the current one */
    int t0;            /* prefetch into L1 (T0 hint), else into L2 (T1) */
} pf_cursor;

static inline void pf_next(pf_cursor *c) {
    if (c->rows_left < 0) return;
    if (c->t0)
        _mm_prefetch(c->row + c->col, _MM_HINT_T0);
    else
        _mm_prefetch(c->row + c->col, _MM_HINT_T1);
    c->col += 64;
    if (c->col < c->width) return;
    c->col = 0;
    c->row += c->ld;
    if (--c->rows_left >= 0) return;
    if (c->mats_left-- <= 0) return;
    c->first += c->stride;
    c->row = c->first;
    c->rows_left = c->rows - 1;
}

/* A cursor (T0 hints if `t0`) over `rows` rows of `width` bytes, `ld` bytes apart, from `base`, then over the same
 * rows of `mats - 1` further matrices `stride` bytes apart; the first PF_AHEAD bytes are
 * prefetched now. Contiguous rows count as one long row. */
static inline void pf_start(pf_cursor *c, const void *base, int64_t width, int64_t ld,
                            int64_t rows, int64_t stride, int64_t mats, int64_t ahead, int t0) {
    if (rows > 0 && ld == width && mats == 1) {
        width *= rows;
        rows = 1;
    }
    c->row = c->first = (const char *)base;
    c->col = 0;
    c->width = width > 0 ? width : 1;
    c->ld = ld;
    c->rows = rows;
    c->rows_left = rows > 0 && mats > 0 ? rows - 1 : -1;
    c->stride = stride;
    c->mats_left = mats - 1;
    c->t0 = t0;
    for (int64_t k = 0; k < ahead; k += 64) pf_next(c);
}

static void f32_range(const float *w, int64_t ldw, const float *x, int64_t in, void *y, int y_bf16,
                      int64_t r0, int64_t r1, float alpha, int accumulate, pf_cursor *pf) {
    int64_t main32 = in & ~(int64_t)31, main = in & ~(int64_t)7, rest = in - main;
    __m256i mask = tail_mask(rest);
    for (int64_t o = r0; o < r1; o++) {
        const float *a = w + o * ldw;
        __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
        int64_t i = 0;
        for (; i < main32; i += 32) {
            pf_next(pf);
            pf_next(pf);
            s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(x + i), s0);
            s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(x + i + 8), s1);
            s2 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 16), _mm256_loadu_ps(x + i + 16), s2);
            s3 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 24), _mm256_loadu_ps(x + i + 24), s3);
        }
        for (; i < main; i += 8)
            s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(x + i), s0);
        if (rest)
            s1 = _mm256_fmadd_ps(_mm256_maskload_ps(a + main, mask),
                                 _mm256_maskload_ps(x + main, mask), s1);
        float t = hsum8(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
        store_row(y, y_bf16, o, t, alpha, accumulate);
    }
}

/* Rows [r0, r1) of a single-weight kernel, with its prefetch cursor. */
static void f32_rows(const float *w, int64_t ldw, const float *x, int64_t in, void *y, int y_bf16,
                     int64_t r0, int64_t r1, float alpha, int accumulate) {
    pf_cursor pf;
    pf_start(&pf, w + r0 * ldw, in * 4, ldw * 4, r1 - r0, 0, 1, SEQ_PF_AHEAD, 0);
    f32_range(w, ldw, x, in, y, y_bf16, r0, r1, alpha, accumulate, &pf);
}

int ar_gemv_f32(const float *w, int64_t ldw, const void *xin, int x_bf16, void *y, int y_bf16,
                int64_t out, int64_t in, float alpha, int accumulate, int nthreads) {
    float buf[STACK_IN], *owned;
    const float *x = x_f32(xin, x_bf16, in, in, buf, &owned);
    if (!x) return -1;
    int nt = threads_for(out * in, out, nthreads);
    if (nt == 1) {
        f32_rows(w, ldw, x, in, y, y_bf16, 0, out, alpha, accumulate);
    } else {
#pragma omp parallel num_threads(nt)
        {
            int64_t r0, r1;
            split_rows(out, omp_get_thread_num(), omp_get_num_threads(), &r0, &r1);
            f32_rows(w, ldw, x, in, y, y_bf16, r0, r1, alpha, accumulate);
        }
    }
    free(owned);
    return 0;
}

/* ------------------------------------------------------------------ fp32, [in, out] storage */

#define COLS 1024 /* outputs per block: their partial sums stay in L1 */
#define AROWS 8 /* inputs per pass over a block */

static void f32t_range(const float *w, int64_t ldw, const float *x, int64_t in, float *y,
                       int64_t c0, int64_t c1, float alpha, int accumulate) {
    /* the cursor walks column block after column block: `in` rows of COLS floats each */
    pf_cursor pf;
    int64_t nblocks = (c1 - c0 + COLS - 1) / COLS;
    int64_t width = (c1 - c0 < COLS ? c1 - c0 : COLS) * 4;
    pf_start(&pf, w + c0, width, ldw * 4, in, COLS * 4, nblocks,
             (AROWS - 1) * width + PF_AHEAD, 1);
    for (int64_t cb = c0; cb < c1; cb += COLS) {
        int64_t n = c1 - cb < COLS ? c1 - cb : COLS;
        int64_t nv = n & ~(int64_t)7, rest = n - nv;
        __m256i mask = tail_mask(rest);
        float *yb = y + cb;
        if (!accumulate) memset(yb, 0, (size_t)n * sizeof(float));
        for (int64_t i = 0; i < in; i += AROWS) {
            int nr = in - i < AROWS ? (int)(in - i) : AROWS;
            const float *p[AROWS];
            __m256 a[AROWS];
            for (int r = 0; r < AROWS; r++) {
                int rr = r < nr ? r : 0;
                p[r] = w + (i + rr) * ldw + cb;
                a[r] = _mm256_set1_ps(r < nr ? alpha * x[i + r] : 0.0f);
            }
            if (nr == AROWS) {
                for (int64_t j = 0; j < nv; j += 8) {
                    /* AROWS * 32 bytes read: four lines */
                    pf_next(&pf);
                    pf_next(&pf);
                    pf_next(&pf);
                    pf_next(&pf);
                    __m256 t = _mm256_loadu_ps(yb + j);
                    for (int r = 0; r < AROWS; r++)
                        t = _mm256_fmadd_ps(_mm256_loadu_ps(p[r] + j), a[r], t);
                    _mm256_storeu_ps(yb + j, t);
                }
            } else {
                for (int64_t j = 0; j < nv; j += 8) {
                    __m256 t = _mm256_loadu_ps(yb + j);
                    for (int r = 0; r < nr; r++)
                        t = _mm256_fmadd_ps(_mm256_loadu_ps(p[r] + j), a[r], t);
                    _mm256_storeu_ps(yb + j, t);
                }
            }
            if (rest) {
                __m256 t = _mm256_maskload_ps(yb + nv, mask);
                for (int r = 0; r < nr; r++)
                    t = _mm256_fmadd_ps(_mm256_maskload_ps(p[r] + nv, mask), a[r], t);
                _mm256_maskstore_ps(yb + nv, mask, t);
            }
        }
    }
}

int ar_gemv_f32t(const float *w, int64_t ldw, const void *xin, int x_bf16, float *y, int64_t out,
                 int64_t in, float alpha, int accumulate, int nthreads) {
    float buf[STACK_IN], *owned;
    const float *x = x_f32(xin, x_bf16, in, in, buf, &owned);
    if (!x) return -1;
    int64_t chunks = (out + 15) / 16; /* whole cache lines of y per thread */
    int nt = nthreads < 1 || out * in < PAR_MIN_WORK ? 1 : nthreads;
    if (chunks < nt) nt = (int)chunks;
    if (nt <= 1) {
        f32t_range(w, ldw, x, in, y, 0, out, alpha, accumulate);
    } else {
#pragma omp parallel num_threads(nt)
        {
            int t = omp_get_thread_num(), team = omp_get_num_threads();
            int64_t c0 = chunks * t / team * 16, c1 = chunks * (t + 1) / team * 16;
            if (c1 > out) c1 = out;
            if (c0 < c1) f32t_range(w, ldw, x, in, y, c0, c1, alpha, accumulate);
        }
    }
    free(owned);
    return 0;
}

/* ------------------------------------------------------------------------------------- bf16 */

/* bf16 -> fp32 of 16 weights at once: one 256-bit load holds 8 (even, odd) pairs; the even
 * weights become fp32 by a 16-bit left shift of each 32-bit lane, the odd ones by clearing the
 * low half. They are multiplied with x split the same way (x_eo: per 16 inputs, the 8 even ones
 * then the 8 odd ones). */
static void bf16_range(const uint16_t *w, int64_t ldw, const float *x, const float *x_eo,
                       int64_t in, void *y, int y_bf16, int64_t r0, int64_t r1, float alpha,
                       int accumulate, pf_cursor *pf) {
    /* Four rows at a time (each x load and split serves four rows): one row at a time, the
     * conversion makes this compute-bound below the memory rate on an AVX2 host. */
    int64_t main = in & ~(int64_t)15;
    const __m256i hi = _mm256_set1_epi32((int)0xffff0000u);
    int64_t o = r0;
    for (; o + ROWS <= r1; o += ROWS) {
        const uint16_t *a = w + o * ldw, *b = a + ldw, *c = b + ldw, *d = c + ldw;
        __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
        __m256 u0 = s0, u1 = s0, u2 = s0, u3 = s0;
        for (int64_t i = 0; i < main; i += 16) {
            pf_next(pf); /* ROWS * 32 bytes read: two lines */
            pf_next(pf);
            __m256 xe = _mm256_loadu_ps(x_eo + i), xo = _mm256_loadu_ps(x_eo + i + 8);
            __m256i va = _mm256_loadu_si256((const __m256i *)(a + i));
            __m256i vb = _mm256_loadu_si256((const __m256i *)(b + i));
            __m256i vc = _mm256_loadu_si256((const __m256i *)(c + i));
            __m256i vd = _mm256_loadu_si256((const __m256i *)(d + i));
            s0 = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_slli_epi32(va, 16)), xe, s0);
            s1 = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_slli_epi32(vb, 16)), xe, s1);
            s2 = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_slli_epi32(vc, 16)), xe, s2);
            s3 = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_slli_epi32(vd, 16)), xe, s3);
            u0 = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_and_si256(va, hi)), xo, u0);
            u1 = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_and_si256(vb, hi)), xo, u1);
            u2 = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_and_si256(vc, hi)), xo, u2);
            u3 = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_and_si256(vd, hi)), xo, u3);
        }
        float t0 = hsum8(_mm256_add_ps(s0, u0)), t1 = hsum8(_mm256_add_ps(s1, u1));
        float t2 = hsum8(_mm256_add_ps(s2, u2)), t3 = hsum8(_mm256_add_ps(s3, u3));
        for (int64_t i = main; i < in; i++) {
            t0 += bf16_to_f32(a[i]) * x[i];
            t1 += bf16_to_f32(b[i]) * x[i];
            t2 += bf16_to_f32(c[i]) * x[i];
            t3 += bf16_to_f32(d[i]) * x[i];
        }
        store_row(y, y_bf16, o, t0, alpha, accumulate);
        store_row(y, y_bf16, o + 1, t1, alpha, accumulate);
        store_row(y, y_bf16, o + 2, t2, alpha, accumulate);
        store_row(y, y_bf16, o + 3, t3, alpha, accumulate);
    }
    for (; o < r1; o++) {
        const uint16_t *a = w + o * ldw;
        __m256 s0 = _mm256_setzero_ps(), u0 = s0;
        for (int64_t i = 0; i < main; i += 16) {
            if (i & 16) pf_next(pf);
            __m256i va = _mm256_loadu_si256((const __m256i *)(a + i));
            s0 = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_slli_epi32(va, 16)),
                                 _mm256_loadu_ps(x_eo + i), s0);
            u0 = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_and_si256(va, hi)),
                                 _mm256_loadu_ps(x_eo + i + 8), u0);
        }
        float t0 = hsum8(_mm256_add_ps(s0, u0));
        for (int64_t i = main; i < in; i++) t0 += bf16_to_f32(a[i]) * x[i];
        store_row(y, y_bf16, o, t0, alpha, accumulate);
    }
}

/* x split for bf16_range: per 16 inputs, the 8 even ones then the 8 odd ones (the first
 * in & ~15 inputs) */
static void split_even_odd(const float *x, int64_t main, float *x_eo) {
    for (int64_t i = 0; i < main; i += 16) {
        __m256 p = _mm256_loadu_ps(x + i), q = _mm256_loadu_ps(x + i + 8);
        /* within 128-bit lanes: evens (p0 p2 q0 q2 | p4 p6 q4 q6), odds likewise */
        __m256 e = _mm256_shuffle_ps(p, q, 0x88), o = _mm256_shuffle_ps(p, q, 0xdd);
        const __m256i order = _mm256_setr_epi32(0, 1, 4, 5, 2, 3, 6, 7);
        _mm256_storeu_ps(x_eo + i, _mm256_permutevar8x32_ps(e, order));
        _mm256_storeu_ps(x_eo + i + 8, _mm256_permutevar8x32_ps(o, order));
    }
}

static void bf16_rows(const uint16_t *w, int64_t ldw, const float *x, const float *x_eo,
                      int64_t in, void *y, int y_bf16, int64_t r0, int64_t r1, float alpha,
                      int accumulate) {
    pf_cursor pf;
    pf_start(&pf, w + r0 * ldw, in * 2, ldw * 2, r1 - r0, 0, 1, AHEAD4(in * 2), 1);
    bf16_range(w, ldw, x, x_eo, in, y, y_bf16, r0, r1, alpha, accumulate, &pf);
}

int ar_gemv_bf16(const uint16_t *w, int64_t ldw, const void *xin, int x_bf16, void *y, int y_bf16,
                 int64_t out, int64_t in, float alpha, int accumulate, int nthreads) {
    float buf[STACK_IN], eo_buf[STACK_IN], *owned;
    const float *x = x_f32(xin, x_bf16, in, in, buf, &owned);
    if (!x) return -1;
    int64_t main = in & ~(int64_t)15;
    float *x_eo = main > STACK_IN ? (float *)malloc((size_t)main * sizeof(float)) : eo_buf;
    if (!x_eo) {
        free(owned);
        return -1;
    }
    split_even_odd(x, main, x_eo);
    int nt = threads_for(out * in, out, nthreads);
    if (nt == 1) {
        bf16_rows(w, ldw, x, x_eo, in, y, y_bf16, 0, out, alpha, accumulate);
    } else {
#pragma omp parallel num_threads(nt)
        {
            int64_t r0, r1;
            split_rows(out, omp_get_thread_num(), omp_get_num_threads(), &r0, &r1);
            bf16_rows(w, ldw, x, x_eo, in, y, y_bf16, r0, r1, alpha, accumulate);
        }
    }
    if (x_eo != eo_buf) free(x_eo);
    free(owned);
    return 0;
}

/* ------------------------------------------------------------------------------- fp8 e4m3fn */

/* e4m3fn (no infinities; 0x7f/0xff are NaN, which callers exclude) -> fp32 in two integer ops
 * per 8 weights: with the byte in the top 8 bits of a 32-bit lane, an arithmetic shift right by 4
 * puts its exponent and mantissa in fp32 bits 26-20 and copies its sign into bits 31-27; clearing
 * bits 30-27 leaves the fp32 with the same sign, exponent field e and mantissa, i.e. the value
 * times 2^-120, e4m3 subnormals included (they become fp32 subnormals, exact; the kernel clears
 * DAZ/FTZ while it runs). x is prescaled by a power of two 2^k (max|x| * 2^k in [2^64, 2^65)), so
 * the products are normal fp32 numbers again; the sums are scaled back by 2^(120 - k).
 *
 * The four bytes of each lane are brought to the top by loading at p, p - 1, p - 2 and p - 3
 * (the first 32 bytes of a row: by shifting left 8, 16, 24 bits instead), so x is stored
 * permuted to match: per 32 inputs, the 8 inputs 4j + 3, then 4j + 2, 4j + 1, 4j (j = 0..7). */
#define FP8_W(v) _mm256_castsi256_ps(_mm256_and_si256(_mm256_srai_epi32(v, 4), fmask))
#define FP8_LOAD(p) _mm256_loadu_si256((const __m256i *)(p))

#define FP8_STEP(acc, acc2, p)                                                  \
    do {                                                                        \
        acc = _mm256_fmadd_ps(FP8_W(FP8_LOAD(p)), x0, acc);                     \
        acc2 = _mm256_fmadd_ps(FP8_W(FP8_LOAD((p) - 1)), x1, acc2);             \
        acc = _mm256_fmadd_ps(FP8_W(FP8_LOAD((p) - 2)), x2, acc);               \
        acc2 = _mm256_fmadd_ps(FP8_W(FP8_LOAD((p) - 3)), x3, acc2);             \
    } while (0)

#define FP8_STEP_FIRST(acc, acc2, p)                                            \
    do {                                                                        \
        __m256i v_ = FP8_LOAD(p);                                               \
        acc = _mm256_fmadd_ps(FP8_W(v_), x0, acc);                              \
        acc2 = _mm256_fmadd_ps(FP8_W(_mm256_slli_epi32(v_, 8)), x1, acc2);      \
        acc = _mm256_fmadd_ps(FP8_W(_mm256_slli_epi32(v_, 16)), x2, acc);       \
        acc2 = _mm256_fmadd_ps(FP8_W(_mm256_slli_epi32(v_, 24)), x3, acc2);     \
    } while (0)

static float fp8_table[256];

__attribute__((constructor)) static void fp8_init(void) {
    for (int b = 0; b < 256; b++) {
        int e = (b >> 3) & 15, m = b & 7;
        float v = e ? (1.0f + m / 8.0f) * (float)(1 << e) / 128.0f : m / 512.0f;
        fp8_table[b] = (b & 0x80) ? -v : v;
    }
}

/* 2^e as fp32, e in [-126, 127] */
static inline float pow2f(int e) {
    uint32_t u = (uint32_t)(e + 127) << 23;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static void fp8_range(const uint8_t *w, int64_t ldw, const float *scale, int64_t lds, int64_t bh,
                      int64_t bw, const float *x, const float *xp, float unscale, int64_t in,
                      void *y, int y_bf16, int64_t r0, int64_t r1, float alpha, int accumulate) {
    const __m256i fmask = _mm256_set1_epi32((int)0x87f00000u);
    unsigned csr = _mm_getcsr();
    _mm_setcsr(csr & ~0x8040u); /* no denormals-are-zero / flush-to-zero here */
    pf_cursor pf;
    pf_start(&pf, w + r0 * ldw, in, ldw, r1 - r0, 0, 1, AHEAD4(in), 1);
    for (int64_t o = r0; o < r1; o += ROWS) {
        int nr = r1 - o < ROWS ? (int)(r1 - o) : ROWS;
        const uint8_t *rows[ROWS];
        const float *srow[ROWS];
        for (int r = 0; r < ROWS; r++) {
            int64_t rr = o + (r < nr ? r : 0);
            rows[r] = w + rr * ldw;
            srow[r] = scale + (rr / bh) * lds;
        }
        const uint8_t *a = rows[0], *b = rows[1], *c = rows[2], *d = rows[3];
        /* per block: the vector sums times the block's scale into tot, the scalar tail into
         * tail */
        __m256 tot0 = _mm256_setzero_ps(), tot1 = tot0, tot2 = tot0, tot3 = tot0;
        float tail[ROWS] = {0, 0, 0, 0};
        for (int64_t k0 = 0, kb = 0; k0 < in; k0 += bw, kb++) {
            int64_t k1 = k0 + bw < in ? k0 + bw : in;
            int64_t vec_end = k0 + ((k1 - k0) & ~(int64_t)31);
            __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
            __m256 u0 = s0, u1 = s0, u2 = s0, u3 = s0;
            int64_t i = k0;
            if (i == 0 && vec_end > 0) {
                pf_next(&pf); /* ROWS * 32 bytes read: two lines */
                pf_next(&pf);
                __m256 x0 = _mm256_loadu_ps(xp), x1 = _mm256_loadu_ps(xp + 8);
                __m256 x2 = _mm256_loadu_ps(xp + 16), x3 = _mm256_loadu_ps(xp + 24);
                FP8_STEP_FIRST(s0, u0, a);
                FP8_STEP_FIRST(s1, u1, b);
                FP8_STEP_FIRST(s2, u2, c);
                FP8_STEP_FIRST(s3, u3, d);
                i = 32;
            }
            for (; i < vec_end; i += 32) {
                pf_next(&pf);
                pf_next(&pf);
                __m256 x0 = _mm256_loadu_ps(xp + i), x1 = _mm256_loadu_ps(xp + i + 8);
                __m256 x2 = _mm256_loadu_ps(xp + i + 16), x3 = _mm256_loadu_ps(xp + i + 24);
                FP8_STEP(s0, u0, a + i);
                FP8_STEP(s1, u1, b + i);
                FP8_STEP(s2, u2, c + i);
                FP8_STEP(s3, u3, d + i);
            }
            tot0 = _mm256_fmadd_ps(_mm256_add_ps(s0, u0), _mm256_set1_ps(srow[0][kb]), tot0);
            tot1 = _mm256_fmadd_ps(_mm256_add_ps(s1, u1), _mm256_set1_ps(srow[1][kb]), tot1);
            tot2 = _mm256_fmadd_ps(_mm256_add_ps(s2, u2), _mm256_set1_ps(srow[2][kb]), tot2);
            tot3 = _mm256_fmadd_ps(_mm256_add_ps(s3, u3), _mm256_set1_ps(srow[3][kb]), tot3);
            if (vec_end < k1)
                for (int r = 0; r < nr; r++) {
                    float t = 0.0f;
                    for (int64_t j = vec_end; j < k1; j++) t += fp8_table[rows[r][j]] * x[j];
                    tail[r] += t * srow[r][kb];
                }
        }
        float total[ROWS] = {hsum8(tot0), hsum8(tot1), hsum8(tot2), hsum8(tot3)};
        for (int r = 0; r < nr; r++)
            store_row(y, y_bf16, o + r, total[r] * unscale + tail[r], alpha, accumulate);
    }
    _mm_setcsr(csr);
}

int ar_gemv_fp8(const uint8_t *w, int64_t ldw, const float *scale, int64_t lds, int64_t bh,
                int64_t bw, const void *xin, int x_bf16, void *y, int y_bf16, int64_t out,
                int64_t in, float alpha, int accumulate, int nthreads) {
    float buf[STACK_IN], perm_buf[STACK_IN], *owned;
    const float *x = x_f32(xin, x_bf16, in, in, buf, &owned);
    if (!x) return -1;
    int64_t nv = in & ~(int64_t)31; /* inputs the vector loops read (whole 32s of each block) */
    float *xp = nv > STACK_IN ? (float *)malloc((size_t)nv * sizeof(float)) : perm_buf;
    if (!xp) {
        free(owned);
        return -1;
    }
    float amax = 0.0f;
    for (int64_t i = 0; i < in; i++) amax = fabsf(x[i]) > amax ? fabsf(x[i]) : amax;
    uint32_t bits;
    memcpy(&bits, &amax, 4);
    int e = (int)(bits >> 23) - 127, k = 64 - e; /* max|x| * 2^k in [2^64, 2^65) */
    k = k > 127 ? 127 : k < -7 ? -7 : k;
    float up = pow2f(k), unscale = pow2f(120 - k);
    for (int64_t i = 0; i < nv; i += 32)
        for (int j = 0; j < 8; j++)
            for (int q = 0; q < 4; q++) xp[i + 8 * q + j] = x[i + 4 * j + 3 - q] * up;
    int nt = threads_for(out * in, out, nthreads);
    if (nt == 1) {
        fp8_range(w, ldw, scale, lds, bh, bw, x, xp, unscale, in, y, y_bf16, 0, out, alpha,
                  accumulate);
    } else {
#pragma omp parallel num_threads(nt)
        {
            int64_t r0, r1;
            split_rows(out, omp_get_thread_num(), omp_get_num_threads(), &r0, &r1);
            fp8_range(w, ldw, scale, lds, bh, bw, x, xp, unscale, in, y, y_bf16, r0, r1, alpha,
                      accumulate);
        }
    }
    if (xp != perm_buf) free(xp);
    free(owned);
    return 0;
}

/* ------------------------------------------------------------------------------------- int4 */

/* Integer dot products: the activations become 15-bit integers, x ~ sx * (128 * xh + xl) with
 * xh in [-127, 127] and xl in [-64, 64] (sx = max|x| / 16256: a relative error of at most 2^-15 of
 * max|x| per element, against the 2^-9 of every element of the bf16 activations torch's INT4
 * kernel takes), so the sums over unsigned nibbles u = q + 8 are exact in integers:
 * maddubs(u, xh) and maddubs(u, xl) (pairs of u8 * s8, no saturation: 2 * 15 * 127 < 2^15).
 *
 * One 32-byte load holds two groups g, g + 1 (16 bytes each): its low nibbles are inputs 0-15
 * of g (low lane) and of g + 1 (high lane), its high nibbles inputs 16-31 of each. The quantised
 * x is stored in that order (per pair of groups: xh for the low nibbles, xh for the high ones, then
 * the same for xl; 128 bytes), so the low- and high-nibble products add in int16 (4 products of at
 * most 15 * 127 per lane) before one madd for xh (by 128) and one for xl (by 1): per row and 64
 * weights, 3 ops to split the nibbles, 4 maddubs, 2 adds, 2 madds, 1 add, then one conversion and
 * one FMA with the scales of g (lanes 0-3) and g + 1 (lanes 4-7), permuted from 8 scales loaded
 * once per 8 groups. The u = 8 offset (8 * sum of the group's quantised x, exact in fp32) is
 * taken off once per 8 groups in fp32: total -= scales . offsets. */
static inline float scale_at(const void *scale, int scale_bf16, int64_t i) {
    return scale_bf16 ? bf16_to_f32(((const uint16_t *)scale)[i]) : ((const float *)scale)[i];
}

/* Scales [at, at + n) of one row as fp32, zero past n (n <= 8). */
static inline __m256 scales8(const void *scale, int scale_bf16, int64_t at, int64_t n) {
    if (n >= 8) {
        if (!scale_bf16) return _mm256_loadu_ps((const float *)scale + at);
        __m128i h = _mm_loadu_si128((const __m128i *)((const uint16_t *)scale + at));
        return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
    }
    float t[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    for (int64_t k = 0; k < n; k++) t[k] = scale_at(scale, scale_bf16, at + k);
    return _mm256_loadu_ps(t);
}

/* One row's integer sums for a pair of groups (v: its 32 bytes; xq: its quantised x): lanes 0-3
 * sum to the first group's, lanes 4-7 to the second's. */
static inline __m256i int4_pair(__m256i v, const int8_t *xq) {
    const __m256i low = _mm256_set1_epi8(15), ones = _mm256_set1_epi16(1),
                  k128 = _mm256_set1_epi16(128);
    const __m256i *xv = (const __m256i *)xq;
    __m256i lo = _mm256_and_si256(v, low), hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), low);
    __m256i h = _mm256_add_epi16(_mm256_maddubs_epi16(lo, _mm256_load_si256(xv)),
                                 _mm256_maddubs_epi16(hi, _mm256_load_si256(xv + 1)));
    __m256i l = _mm256_add_epi16(_mm256_maddubs_epi16(lo, _mm256_load_si256(xv + 2)),
                                 _mm256_maddubs_epi16(hi, _mm256_load_si256(xv + 3)));
    return _mm256_add_epi32(_mm256_madd_epi16(h, k128), _mm256_madd_epi16(l, ones));
}

/* tot += the sums of a pair of groups (v) times their scales (picked from sc by sel) */
#define INT4_ACC(tot, v, xp, sc, sel)                                                    \
    tot = _mm256_fmadd_ps(_mm256_cvtepi32_ps(int4_pair(v, xp)),                        \
                          _mm256_permutevar8x32_ps(sc, sel), tot)

/* Inlined twice (int4_range): for fp32 and for bf16 scales, a constant in each (with the flag
 * known only at run time the loop ran at half the speed). */
static inline __attribute__((always_inline)) void int4_rows(
    const uint8_t *w, const void *scale, int scale_bf16, int64_t groups, const int8_t *xq,
    const float *offf, float sx, void *y, int y_bf16, int64_t r0, int64_t r1, float alpha,
    int accumulate) {
    const __m256i pick[4] = {_mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1),
                             _mm256_setr_epi32(2, 2, 2, 2, 3, 3, 3, 3),
                             _mm256_setr_epi32(4, 4, 4, 4, 5, 5, 5, 5),
                             _mm256_setr_epi32(6, 6, 6, 6, 7, 7, 7, 7)};
    int64_t row_bytes = groups * 16, ssz = scale_bf16 ? 2 : 4;
    /* cursors over the packed rows and over their scales (4 or 2 bytes per 16 packed bytes) */
    pf_cursor pf, ps;
    pf_start(&pf, w + r0 * row_bytes, row_bytes, row_bytes, r1 - r0, 0, 1, AHEAD4(row_bytes), 1);
    pf_start(&ps, (const char *)scale + r0 * groups * ssz, groups * ssz, groups * ssz, r1 - r0, 0,
             1, (ROWS - 1) * groups * ssz + PF_AHEAD / 4, 1);
    for (int64_t o = r0; o < r1; o += ROWS) {
        int nr = r1 - o < ROWS ? (int)(r1 - o) : ROWS;
        const uint8_t *row[ROWS];
        int64_t srow[ROWS];
        __m256 tot[ROWS], sc[ROWS];
        for (int r = 0; r < ROWS; r++) {
            int64_t rr = o + (r < nr ? r : 0);
            row[r] = w + rr * row_bytes;
            srow[r] = rr * groups;
            tot[r] = _mm256_setzero_ps();
        }
        for (int64_t g0 = 0; g0 < groups; g0 += 8) {
            int64_t nb = groups - g0 < 8 ? groups - g0 : 8;
            for (int64_t k = 0; k < ROWS * 8 * ssz; k += 64) pf_next(&ps);
            __m256 ov = _mm256_loadu_ps(offf + g0);
            for (int r = 0; r < ROWS; r++) {
                sc[r] = scales8(scale, scale_bf16, srow[r] + g0, nb);
                tot[r] = _mm256_fnmadd_ps(sc[r], ov, tot[r]);
            }
            if (nb == 8) { /* four whole pairs */
                for (int j = 0; j < 4; j++) {
                    int64_t g = g0 + 2 * j;
                    pf_next(&pf); /* ROWS * 32 bytes read: two lines */
                    pf_next(&pf);
                    for (int r = 0; r < ROWS; r++)
                        INT4_ACC(tot[r], _mm256_loadu_si256((const __m256i *)(row[r] + g * 16)),
                                 xq + g * 64, sc[r], pick[j]);
                }
                continue;
            }
            for (int64_t j = 0; j < nb; j += 2) {
                int64_t g = g0 + j;
                pf_next(&pf);
                pf_next(&pf);
                for (int r = 0; r < ROWS; r++) {
                    const uint8_t *p = row[r] + g * 16;
                    __m256i v = g + 1 < groups /* else a last odd group: x zero in the pair */
                                    ? _mm256_loadu_si256((const __m256i *)p)
                                    : _mm256_zextsi128_si256(_mm_loadu_si128((const __m128i *)p));
                    INT4_ACC(tot[r], v, xq + g * 64, sc[r], pick[j >> 1]);
                }
            }
        }
        for (int r = 0; r < nr; r++)
            store_row(y, y_bf16, o + r, hsum8(tot[r]) * sx, alpha, accumulate);
    }
}

static void int4_range(const uint8_t *w, const void *scale, int scale_bf16, int64_t groups,
                       const int8_t *xq, const float *offf, float sx, void *y, int y_bf16,
                       int64_t r0, int64_t r1, float alpha, int accumulate) {
    if (scale_bf16)
        int4_rows(w, scale, 1, groups, xq, offf, sx, y, y_bf16, r0, r1, alpha, accumulate);
    else
        int4_rows(w, scale, 0, groups, xq, offf, sx, y, y_bf16, r0, r1, alpha, accumulate);
}

int ar_gemv_int4(const uint8_t *w, const void *scale, int scale_bf16, int64_t groups,
                 const void *xin, int x_bf16, int64_t in, void *y, int y_bf16, int64_t out,
                 float alpha, int accumulate, int nthreads) {
    float buf[STACK_IN], *owned;
    const float *x = x_f32(xin, x_bf16, in, groups * 32, buf, &owned);
    if (!x) return -1;
    int64_t n = groups * 32, pairs = (groups + 1) / 2, noff = (groups + 7) & ~(int64_t)7;
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 vmax = _mm256_setzero_ps();
    for (int64_t i = 0; i < n; i += 8)
        vmax = _mm256_max_ps(vmax, _mm256_andnot_ps(sign, _mm256_loadu_ps(x + i)));
    __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(vmax), _mm256_extractf128_ps(vmax, 1));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    float amax = _mm_cvtss_f32(_mm_max_ss(m4, _mm_movehdup_ps(m4)));
    /* the quantised x (128 bytes per pair of groups) and the per-group offsets (fp32, zero-padded
     * to a multiple of 8), on the stack up to STACK_IN inputs */
    _Alignas(32) int8_t xq_buf[2 * STACK_IN + 64];
    float off_buf[STACK_IN / 32 + 8];
    int small = n <= STACK_IN;
    int8_t *xq = small ? xq_buf : (int8_t *)aligned_alloc(32, (size_t)pairs * 128);
    float *offf = small ? off_buf : (float *)malloc((size_t)noff * sizeof(float));
    if (!xq || !offf) {
        if (!small) {
            free(xq);
            free(offf);
        }
        free(owned);
        return -1;
    }
    float sx = amax > 0.0f ? amax / 16256.0f : 1.0f;
    const __m256 inv = _mm256_set1_ps(1.0f / sx);
    const __m256i lim = _mm256_set1_epi32(16256), nlim = _mm256_set1_epi32(-16256),
                  half = _mm256_set1_epi32(64), eight = _mm256_set1_epi8(8),
                  ones = _mm256_set1_epi16(1), order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (int64_t g = 0; g < groups; g++) {
        /* v = round(x / sx) (nearest even), clamped; h = floor((v + 64) / 128), l = v - 128 h
         * (h in [-127, 127], l in [-64, 63]); 32 of each packed to bytes in input order */
        __m256i h[4], l[4];
        for (int k = 0; k < 4; k++) {
            __m256i v = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + g * 32 + k * 8), inv));
            v = _mm256_max_epi32(_mm256_min_epi32(v, lim), nlim);
            h[k] = _mm256_srai_epi32(_mm256_add_epi32(v, half), 7);
            l[k] = _mm256_sub_epi32(v, _mm256_slli_epi32(h[k], 7));
        }
        __m256i hv = _mm256_permutevar8x32_epi32(
            _mm256_packs_epi16(_mm256_packs_epi32(h[0], h[1]), _mm256_packs_epi32(h[2], h[3])), order);
        __m256i lv = _mm256_permutevar8x32_epi32(
            _mm256_packs_epi16(_mm256_packs_epi32(l[0], l[1]), _mm256_packs_epi32(l[2], l[3])), order);
        int8_t *dst = xq + (g >> 1) * 128 + (g & 1) * 16;
        _mm_storeu_si128((__m128i *)dst, _mm256_castsi256_si128(hv));
        _mm_storeu_si128((__m128i *)(dst + 32), _mm256_extracti128_si256(hv, 1));
        _mm_storeu_si128((__m128i *)(dst + 64), _mm256_castsi256_si128(lv));
        _mm_storeu_si128((__m128i *)(dst + 96), _mm256_extracti128_si256(lv, 1));
        __m256i s = _mm256_add_epi32(
            _mm256_slli_epi32(_mm256_madd_epi16(_mm256_maddubs_epi16(eight, hv), ones), 7),
            _mm256_madd_epi16(_mm256_maddubs_epi16(eight, lv), ones));
        __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
        s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4e));
        s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xb1));
        offf[g] = (float)_mm_cvtsi128_si32(s4);
    }
    if (groups & 1) { /* the partner of a last odd group: zero */
        int8_t *dst = xq + (groups >> 1) * 128 + 16;
        for (int k = 0; k < 4; k++) memset(dst + k * 32, 0, 16);
    }
    for (int64_t g = groups; g < noff; g++) offf[g] = 0.0f;
    int nt = threads_for(out * n, out, nthreads);
    if (nt == 1) {
        int4_range(w, scale, scale_bf16, groups, xq, offf, sx, y, y_bf16, 0, out, alpha,
                   accumulate);
    } else {
#pragma omp parallel num_threads(nt)
        {
            int64_t r0, r1;
            split_rows(out, omp_get_thread_num(), omp_get_num_threads(), &r0, &r1);
            int4_range(w, scale, scale_bf16, groups, xq, offf, sx, y, y_bf16, r0, r1, alpha,
                       accumulate);
        }
    }
    if (!small) {
        free(offf);
        free(xq);
    }
    free(owned);
    return 0;
}

/* ---------------------------------------------------------------------- batched (per head) */

/* y[b] = W[b] x[b] for b < batch: fp32 (w_bf16 = 0) or bf16 weights, each [out, in] row-major
 * at w + b * w_stride (elements), x[b] at x + b * x_stride, y[b] at y + b * y_stride (fp32). The
 * heads of an attention layer: threads split the heads (each head's matrix is small). */
int ar_gemv_batched(const void *w, int w_bf16, int64_t w_stride, int64_t ldw, const float *x,
                    int64_t x_stride, float *y, int64_t y_stride, int64_t out, int64_t in,
                    int64_t batch, int nthreads) {
    int64_t main = in & ~(int64_t)15, es = w_bf16 ? 2 : 4;
    float eo_buf[STACK_IN], *x_eo = eo_buf;
    if (w_bf16) {
        if (batch * main > STACK_IN) x_eo = (float *)malloc((size_t)(batch * main) * sizeof(float));
        if (!x_eo) return -1;
        for (int64_t b = 0; b < batch; b++) split_even_odd(x + b * x_stride, main, x_eo + b * main);
    }
    int nt = nthreads < 1 || batch * out * in < PAR_MIN_WORK ? 1 : nthreads;
    if (nt > batch) nt = (int)batch;
    if (nt < 1) nt = 1;
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
        /* thread t: heads [b0, b1), one prefetch cursor running through all of them */
        int t = omp_get_thread_num(), team = omp_get_num_threads();
        int64_t b0 = batch * t / team, b1 = batch * (t + 1) / team;
        pf_cursor pf;
        pf_start(&pf, (const char *)w + b0 * w_stride * es, in * es, ldw * es, out, w_stride * es,
                 b1 - b0, w_bf16 ? AHEAD4(in * es) : SEQ_PF_AHEAD, w_bf16);
        for (int64_t b = b0; b < b1; b++) {
            if (w_bf16)
                bf16_range((const uint16_t *)w + b * w_stride, ldw, x + b * x_stride,
                           x_eo + b * main, in, y + b * y_stride, 0, 0, out, 1.0f, 0, &pf);
            else
                f32_range((const float *)w + b * w_stride, ldw, x + b * x_stride, in,
                          y + b * y_stride, 0, 0, out, 1.0f, 0, &pf);
        }
    }
    if (x_eo != eo_buf) free(x_eo);
    return 0;
}
