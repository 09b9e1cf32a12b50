/* One decode step of the decoder layers in one call: the absorbed MLA attention and the MoE (or
 * dense) MLP of every layer for one token of one sequence, with no Python between the products.
 *
 * model/decode_step.py describes each layer once (pointers to its weights, in the layouts and
 * formats the model holds them, see ar_mat) and calls ar_decode_step per token (ar_step: the
 * residual row, the latent cache rows of each layer, the position's rotary cos/sin, and the final
 * norm and lm_head when the call should end with the logits). The products run through the GEMV
 * kernels of cpu_kernels.c (same library); the rest (RMSNorm, RoPE, attention over the latent
 * cache, sigmoid routing with group-limited top-k, SwiGLU, residual adds) is computed here, in
 * fp32, rounding to bf16 at the points where
 * the torch path (model/mla.py _decode_one, model/moe.py _one_token) holds a bf16 tensor:
 * projection outputs, normalised rows, the SwiGLU factors and product, the MLP and attention
 * outputs and the residual, so a bf16 model gives the torch path's results up to the order of
 * fp32 sums. Attention itself runs in fp32 over the cache rows (widened from bf16), as there.
 * On several threads: the kernels split each product's rows, the attention splits the cached
 * rows on long contexts, and the MoE gives whole experts to threads (experts_parallel).
 */
#include <immintrin.h>
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_kernels.h"

/* A weight seen as y = x @ W^T with W [out, in] (see decode_step.py's describe functions):
 *   MAT_F32 / MAT_BF16: row o at w + o * ldw (elements)
 *   MAT_F32T: fp32 stored [in, out], row i at w + i * ldw (y must be fp32)
 *   MAT_FP8: e4m3 bytes [out, in] (ldw bytes a row), fp32 scales [ceil(out/bh), lds] per block
 *   MAT_INT4: cpu_kernels.c's INT4 layout, lds groups a row, scale fp32 or bf16 (bh = 1)
 *   MAT_STACK: lds matrices of the same input (ar_mat array at w), outputs one after another */
enum { MAT_F32 = 0, MAT_F32T = 1, MAT_BF16 = 2, MAT_FP8 = 3, MAT_INT4 = 4, MAT_STACK = 5 };

typedef struct {
    int64_t fmt, out, in, ldw, lds, bh, bw;
    const void *w, *scale;
} ar_mat;

typedef struct {
    int64_t bf16; /* the model dtype: 1 bf16, 0 fp32 (weights of the norms, residual, cache) */
    int64_t hidden, heads, nope, rope, v_dim, kv_lora, q_lora, q_in, qk_dim;
    double eps, scale;
    const void *attn_norm, *mlp_norm, *q_norm, *kv_norm;
    ar_mat w_a, w_qb, w_o;
    /* per head [out, in] row-major: key half [kv_lora <- nope], value half [v <- kv_lora] */
    const void *wk, *wv;
    int64_t wk_bf16, wk_stride, wk_ld, wv_bf16, wv_stride, wv_ld;
    /* MLP: dense (moe = 0: mlp13/mlp2 are the MLP) or MoE (mlp13/mlp2 the shared experts when
     * has_shared) */
    int64_t moe, has_shared, mlp_inter;
    ar_mat mlp13, mlp2;
    int64_t n_experts, top_k, n_group, topk_group, inter, norm_topk;
    double scaling;
    ar_mat gate;            /* router [E <- H], fp32 */
    const float *gate_bias; /* [E] */
    const ar_mat *w13, *w2; /* per expert: gate_up [2I <- H], down [H <- I] */
} ar_layer;

static inline float dot(const float *a, const float *b, int64_t n) {
    __m256 s0 = _mm256_setzero_ps(), s1 = s0;
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
    }
    __m256 v = _mm256_add_ps(s0, s1);
    __m128 q = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    q = _mm_add_ps(q, _mm_movehl_ps(q, q));
    q = _mm_add_ss(q, _mm_movehdup_ps(q));
    float d = _mm_cvtss_f32(q);
    for (; i < n; i++) d += a[i] * b[i];
    return d;
}

/* bf16 rounding of an fp32 value, kept in fp32 (what a bf16 tensor would hold) */
static inline float round_bf(float f) { return bf16_to_f32(f32_to_bf16(f)); }

static inline float load(const void *p, int bf16, int64_t i) {
    return bf16 ? bf16_to_f32(((const uint16_t *)p)[i]) : ((const float *)p)[i];
}

static inline void store(void *p, int bf16, int64_t i, float v) {
    if (bf16)
        ((uint16_t *)p)[i] = f32_to_bf16(v);
    else
        ((float *)p)[i] = v;
}

static int mat_xw(const ar_mat *m, const void *x, int x_bf16, void *y, int y_bf16, float alpha,
                  int acc, int nt) {
    switch (m->fmt) {
    case MAT_F32:
        return ar_gemv_f32((const float *)m->w, m->ldw, x, x_bf16, y, y_bf16, m->out, m->in, alpha,
                           acc, nt);
    case MAT_F32T:
        if (y_bf16) return -1;
        return ar_gemv_f32t((const float *)m->w, m->ldw, x, x_bf16, (float *)y, m->out, m->in,
                            alpha, acc, nt);
    case MAT_BF16:
        return ar_gemv_bf16((const uint16_t *)m->w, m->ldw, x, x_bf16, y, y_bf16, m->out, m->in,
                            alpha, acc, nt);
    case MAT_FP8:
        return ar_gemv_fp8((const uint8_t *)m->w, m->ldw, (const float *)m->scale, m->lds, m->bh,
                           m->bw, x, x_bf16, y, y_bf16, m->out, m->in, alpha, acc, nt);
    case MAT_INT4:
        return ar_gemv_int4((const uint8_t *)m->w, m->scale, (int)m->bh, m->lds, x, x_bf16, m->in,
                            y, y_bf16, m->out, alpha, acc, nt);
    case MAT_STACK: {
        const ar_mat *parts = (const ar_mat *)m->w;
        char *yp = (char *)y;
        for (int64_t i = 0; i < m->lds; i++) {
            if (parts[i].fmt == MAT_STACK) return -1;
            if (mat_xw(&parts[i], x, x_bf16, yp, y_bf16, alpha, acc, nt)) return -1;
            yp += parts[i].out * (y_bf16 ? 2 : 4);
        }
        return 0;
    }
    default:
        return -1;
    }
}

/* RMSNorm of n values of x into out (both in the model dtype): fp32 sum of squares; fp32 models
 * (x * r) * w, bf16 models bf16(w * bf16(x * r)) (the torch path's order). */
static void rms_norm(const void *x, const void *w, int bf16, int64_t n, double eps, void *out) {
    float ss = 0.0f;
    for (int64_t i = 0; i < n; i++) {
        float v = load(x, bf16, i);
        ss += v * v;
    }
    float r = 1.0f / sqrtf((float)eps + ss / (float)n);
    for (int64_t i = 0; i < n; i++) {
        float v = load(x, bf16, i) * r;
        if (bf16) v = round_bf(v);
        store(out, bf16, i, load(w, bf16, i) * v);
    }
}

/* The rotary embedding of one position on n values: pairs (2i, 2i+1) when interleaved, else
 * (i, i + n/2), each rotated by the i-th cos/sin (n/2 values, fp32 or bf16 as c_bf16). */
typedef struct {
    const void *cos, *sin;
    int c_bf16, interleave;
} rotary;

static void rotate(const float *x, const rotary *r, int64_t n, float *y) {
    int64_t half = n / 2;
    for (int64_t i = 0; i < half; i++) {
        int64_t a = r->interleave ? 2 * i : i, b = r->interleave ? 2 * i + 1 : i + half;
        float c = load(r->cos, r->c_bf16, i), s = load(r->sin, r->c_bf16, i);
        y[a] = x[a] * c - x[b] * s;
        y[b] = x[a] * s + x[b] * c;
    }
}

static inline float silu(float g) { return g / (1.0f + expf(-g)); }

/* act (model dtype, len inter) = silu(gu[:inter]) * gu[inter:] with the bf16 roundings */
static void swiglu(const void *gu, int bf16, int64_t inter, void *act) {
    for (int64_t i = 0; i < inter; i++) {
        float g = load(gu, bf16, i), u = load(gu, bf16, inter + i);
        float s = silu(g);
        if (bf16) s = round_bf(s);
        store(act, bf16, i, s * u);
    }
}

typedef struct {
    void *h, *a, *q, *row, *gu, *act, *out; /* model dtype */
    char *par;         /* per thread (experts_parallel): gate_up and act rows, an fp32 sum */
    size_t par_stride; /* bytes per thread in par */
    size_t par_rows;   /* bytes of each of the two rows; the sum follows them */
    float *qf, *qfull, *rope_in, *scores, *olat, *olat_part, *o, *router;
} scratch;

/* ------------------------------------------------------------------------------ attention */

#define MAX_WIDTH 4096 /* kv_lora + rope of a latent cache row (DeepSeek-V3 / K2: 576) */

/* Cache row t as fp32: the row itself, or widened from bf16 into buf. */
static inline const float *cache_row(const void *cache, int bf, int64_t t, int64_t width,
                                     float *buf) {
    if (!bf) return (const float *)cache + t * width;
    const uint16_t *c = (const uint16_t *)cache + t * width;
    for (int64_t i = 0; i < width; i++) buf[i] = bf16_to_f32(c[i]);
    return buf;
}

/* x (model dtype, hidden) -> attn_out (model dtype, hidden); writes the cache row at pos. */
static int attention(const ar_layer *L, const void *x, void *cache, int64_t pos, const rotary *rot,
                     scratch *s, void *attn_out, int nt) {
    int bf = (int)L->bf16;
    int64_t hd = L->heads, kvl = L->kv_lora, rope = L->rope, nope = L->nope, qk = L->qk_dim;
    int64_t width = kvl + rope, ctx = pos + 1, off = L->q_in;
    rms_norm(x, L->attn_norm, bf, L->hidden, L->eps, s->h);
    if (mat_xw(&L->w_a, s->h, bf, s->a, bf, 1.0f, 0, nt)) return -1;
    /* the cache row: normalised latent, then the rotated key */
    char *crow = (char *)cache + (size_t)(pos * width) * (bf ? 2 : 4);
    char *a_lat = (char *)s->a + (size_t)off * (bf ? 2 : 4);
    rms_norm(a_lat, L->kv_norm, bf, kvl, L->eps, crow);
    for (int64_t i = 0; i < rope; i++) s->rope_in[i] = load(s->a, bf, off + kvl + i);
    float *krot = s->o; /* scratch of >= rope floats, free here */
    rotate(s->rope_in, rot, rope, krot);
    for (int64_t i = 0; i < rope; i++) store(crow, bf, kvl + i, krot[i]);
    /* the query [hd, qk] */
    const void *q;
    if (L->q_lora) {
        rms_norm(s->a, L->q_norm, bf, L->q_lora, L->eps, s->row);
        if (mat_xw(&L->w_qb, s->row, bf, s->q, bf, 1.0f, 0, nt)) return -1;
        q = s->q;
    } else {
        q = s->a;
    }
    for (int64_t i = 0; i < hd * qk; i++) s->qf[i] = load(q, bf, i);
    /* absorbed query laid out like a cache row: [q_nope @ W_k | rot(q_pe)] */
    for (int64_t h = 0; h < hd; h++)
        rotate(s->qf + h * qk + nope, rot, rope, s->qfull + h * width + kvl);
    if (ar_gemv_batched(L->wk, (int)L->wk_bf16, L->wk_stride, L->wk_ld, s->qf, qk, s->qfull,
                        width, kvl, nope, hd, nt))
        return -1;
    /* Attention over rows [0, ctx), each row read once per pass for all heads (rows in bf16
     * are widened into a small buffer: no fp32 copy of the cache): scores, then a softmax per
     * head, then the probability-weighted sum of the latent parts (threads take row ranges,
     * each into its own partial sum, added at the end). */
    float scale = (float)L->scale;
    int par = ctx * hd * width > (1 << 17) ? nt : 1, team = 1;
#pragma omp parallel num_threads(par)
    {
        float buf[MAX_WIDTH];
        int t_id = omp_get_thread_num(), n_th = omp_get_num_threads();
        if (t_id == 0) team = n_th; /* (at most par: OpenMP may give fewer) */
        int64_t t0 = ctx * t_id / n_th, t1 = ctx * (t_id + 1) / n_th;
        for (int64_t t = t0; t < t1; t++) {
            const float *r = cache_row(cache, bf, t, width, buf);
            for (int64_t h = 0; h < hd; h++)
                s->scores[h * ctx + t] = dot(s->qfull + h * width, r, width) * scale;
        }
#pragma omp barrier
#pragma omp for
        for (int64_t h = 0; h < hd; h++) {
            float *sc = s->scores + h * ctx, mx = -INFINITY, sum = 0.0f;
            for (int64_t t = 0; t < ctx; t++) mx = sc[t] > mx ? sc[t] : mx;
            for (int64_t t = 0; t < ctx; t++) {
                sc[t] = expf(sc[t] - mx);
                sum += sc[t];
            }
            float inv = 1.0f / sum;
            for (int64_t t = 0; t < ctx; t++) sc[t] *= inv;
        }
        /* (the implicit barrier of the for) */
        float *ol = t_id == 0 ? s->olat : s->olat_part + (t_id - 1) * hd * kvl;
        for (int64_t i = 0; i < hd * kvl; i++) ol[i] = 0.0f;
        for (int64_t t = t0; t < t1; t++) {
            const float *r = cache_row(cache, bf, t, width, buf);
            for (int64_t h = 0; h < hd; h++) {
                float p = s->scores[h * ctx + t];
                float *o = ol + h * kvl;
                for (int64_t i = 0; i < kvl; i++) o[i] += p * r[i];
            }
        }
    }
    for (int th = 1; th < team; th++) {
        const float *part = s->olat_part + (th - 1) * hd * kvl;
        for (int64_t i = 0; i < hd * kvl; i++) s->olat[i] += part[i];
    }
    /* per head value projection, then the output projection */
    if (ar_gemv_batched(L->wv, (int)L->wv_bf16, L->wv_stride, L->wv_ld, s->olat, kvl, s->o,
                        L->v_dim, L->v_dim, kvl, hd, nt))
        return -1;
    int64_t nv = hd * L->v_dim;
    if (bf) {
        for (int64_t i = 0; i < nv; i++) ((uint16_t *)s->row)[i] = f32_to_bf16(s->o[i]);
        return mat_xw(&L->w_o, s->row, 1, attn_out, 1, 1.0f, 0, nt);
    }
    return mat_xw(&L->w_o, s->o, 0, attn_out, 0, 1.0f, 0, nt);
}

/* ---------------------------------------------------------------------------------- routing */

/* The top_k expert ids of biased sigmoid scores, group-limited: groups ranked by the sum of
 * their two best biased scores, the best topk_group kept. */
static void select_experts(const ar_layer *L, const float *scores, int64_t *ids, float *tmp) {
    int64_t E = L->n_experts, k = L->top_k;
    for (int64_t e = 0; e < E; e++) tmp[e] = scores[e] + L->gate_bias[e];
    if (L->n_group > 1) {
        int64_t per = E / L->n_group;
        float gs[256];
        int keep[256];
        for (int64_t g = 0; g < L->n_group; g++) {
            float b1 = -INFINITY, b2 = -INFINITY;
            for (int64_t j = 0; j < per; j++) {
                float v = tmp[g * per + j];
                if (v > b1) {
                    b2 = b1;
                    b1 = v;
                } else if (v > b2) {
                    b2 = v;
                }
            }
            gs[g] = b1 + b2;
            keep[g] = 0;
        }
        for (int64_t r = 0; r < L->topk_group; r++) {
            int64_t best = -1;
            for (int64_t g = 0; g < L->n_group; g++)
                if (!keep[g] && (best < 0 || gs[g] > gs[best])) best = g;
            if (best < 0) break;
            keep[best] = 1;
        }
        for (int64_t g = 0; g < L->n_group; g++)
            if (!keep[g])
                for (int64_t j = 0; j < per; j++) tmp[g * per + j] = -INFINITY;
    }
    for (int64_t r = 0; r < k; r++) {
        int64_t best = -1;
        for (int64_t e = 0; e < E; e++)
            if (best < 0 || tmp[e] > tmp[best]) best = e;
        ids[r] = best;
        tmp[best] = -INFINITY;
    }
}

/* --------------------------------------------------------------------------------------- mlp */

/* SwiGLU MLP of h (model dtype) with gate_up m13 and down m2 -> out (model dtype) */
static int swiglu_mlp(const ar_mat *m13, const ar_mat *m2, int64_t inter, const void *h, int bf,
                      scratch *s, void *out, int nt) {
    if (mat_xw(m13, h, bf, s->gu, bf, 1.0f, 0, nt)) return -1;
    swiglu(s->gu, bf, inter, s->act);
    return mat_xw(m2, s->act, bf, out, bf, 1.0f, 0, nt);
}

/* Expert j of a token: one of its routed experts (j < top_k) or the shared one (j == top_k). */
typedef struct {
    const ar_mat *m13, *m2;
    int64_t inter;
    float coef;
} expert_job;

static expert_job job(const ar_layer *L, const int64_t *ids, const double *picked, double norm,
                      int64_t j) {
    if (j == L->top_k) return (expert_job){&L->mlp13, &L->mlp2, L->mlp_inter, 1.0f};
    return (expert_job){&L->w13[ids[j]], &L->w2[ids[j]], L->inter, (float)(picked[j] * norm)};
}

static inline float *thread_sum(const scratch *s, int t) {
    return (float *)(s->par + (size_t)t * s->par_stride + 2 * s->par_rows);
}

/* The routed experts (and the shared one) with threads splitting experts, not rows: each thread
 * runs whole experts on one core (gate_up, SwiGLU, down: no join in between) into its own fp32
 * sum; the experts left over when they do not divide evenly are split by rows over all threads
 * as usual; the sums are added once and rounded to the model dtype (the sequential path rounds
 * after every expert, so bf16 results differ from it by about one rounding). Measured on two
 * threads of the large config: 4-6% faster a step than splitting every product by rows. */
static int experts_parallel(const ar_layer *L, const void *h, const int64_t *ids,
                            const double *picked, double norm, scratch *s, void *out, int nt) {
    int bf = (int)L->bf16;
    int64_t H = L->hidden, items = L->top_k + (L->has_shared ? 1 : 0);
    int64_t paired = items - items % nt;
    int failed = 0, team = 1; /* team: the threads OpenMP actually gave (at most nt) */
#pragma omp parallel num_threads(nt) reduction(| : failed)
    {
        int t = omp_get_thread_num(), n_th = omp_get_num_threads();
        if (t == 0) team = n_th;
        void *gu = s->par + (size_t)t * s->par_stride, *act = (char *)gu + s->par_rows;
        float *sum = thread_sum(s, t);
        for (int64_t i = 0; i < H; i++) sum[i] = 0.0f;
        for (int64_t j = t; j < paired && !failed; j += n_th) {
            expert_job e = job(L, ids, picked, norm, j);
            failed |= mat_xw(e.m13, h, bf, gu, bf, 1.0f, 0, 1) != 0;
            if (failed) break;
            swiglu(gu, bf, e.inter, act);
            failed |= mat_xw(e.m2, act, bf, sum, 0, e.coef, 1, 1) != 0;
        }
    }
    if (failed) return -1;
    for (int64_t j = paired; j < items; j++) {
        expert_job e = job(L, ids, picked, norm, j);
        if (mat_xw(e.m13, h, bf, s->gu, bf, 1.0f, 0, nt)) return -1;
        swiglu(s->gu, bf, e.inter, s->act);
        if (mat_xw(e.m2, s->act, bf, thread_sum(s, 0), 0, e.coef, 1, nt)) return -1;
    }
    for (int64_t i = 0; i < H; i++) {
        float v = 0.0f;
        for (int t = 0; t < team; t++) v += thread_sum(s, t)[i];
        store(out, bf, i, v);
    }
    return 0;
}

static int mlp(const ar_layer *L, const void *h, scratch *s, void *out, int nt) {
    int bf = (int)L->bf16;
    int64_t H = L->hidden;
    if (!L->moe) return swiglu_mlp(&L->mlp13, &L->mlp2, L->mlp_inter, h, bf, s, out, nt);
    /* route: fp32 sigmoid scores of the fp32-widened row */
    if (mat_xw(&L->gate, h, bf, s->router, 0, 1.0f, 0, 1)) return -1;
    int64_t E = L->n_experts, k = L->top_k;
    for (int64_t e = 0; e < E; e++) s->router[e] = 1.0f / (1.0f + expf(-s->router[e]));
    int64_t ids[64];
    select_experts(L, s->router, ids, s->router + E);
    double picked[64], total = 0.0;
    for (int64_t j = 0; j < k; j++) {
        picked[j] = s->router[ids[j]];
        total += picked[j];
    }
    double norm = L->norm_topk ? L->scaling / (total + 1e-20) : L->scaling;
    if (nt > 1 && s->par) return experts_parallel(L, h, ids, picked, norm, s, out, nt);
    if (L->has_shared) {
        if (swiglu_mlp(&L->mlp13, &L->mlp2, L->mlp_inter, h, bf, s, out, nt)) return -1;
    } else {
        for (int64_t i = 0; i < H; i++) store(out, bf, i, 0.0f);
    }
    for (int64_t j = 0; j < k; j++) {
        const ar_mat *m13 = &L->w13[ids[j]], *m2 = &L->w2[ids[j]];
        if (mat_xw(m13, h, bf, s->gu, bf, 1.0f, 0, nt)) return -1;
        swiglu(s->gu, bf, L->inter, s->act);
        if (mat_xw(m2, s->act, bf, out, bf, (float)(picked[j] * norm), 1, nt)) return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------------------------ entry */

static void residual_add(void *x, const void *y, int bf, int64_t n) {
    for (int64_t i = 0; i < n; i++) store(x, bf, i, load(x, bf, i) + load(y, bf, i));
}

/* One decode step: the inputs and, optionally, the final norm and lm_head. */
typedef struct {
    int64_t n_layers;
    const ar_layer *layers;
    void *x;              /* the residual row ([hidden], model dtype), updated in place */
    void *const *caches;  /* per layer: latent row 0 ([capacity, kv_lora + rope], model dtype) */
    int64_t pos;          /* the token's position: cache row written, rows [0, pos] attended */
    const void *cos, *sin; /* the position's rotary values (rope/2 each) */
    int64_t rope_bf16, interleave;
    int64_t bf16;         /* model dtype */
    const void *final_norm; /* NULL: stop after the layers (x holds the result) */
    double eps;
    ar_mat lm_head;
    float *logits;        /* [lm_head.out] fp32: the model-dtype logits, widened */
} ar_step;

/* Returns 0, or -1 when a kernel or an allocation failed (x and the logits are then undefined;
 * the cache rows at pos may be written). */
int ar_decode_step(const ar_step *st, int nthreads) {
    const ar_layer *layers = st->layers;
    int64_t n = st->n_layers, pos = st->pos;
    void *x = st->x;
    rotary rot = {st->cos, st->sin, (int)st->rope_bf16, (int)st->interleave};
    int64_t big = st->final_norm ? st->lm_head.in : 0, hd_max = 0, kvl_max = 0, width_max = 0, e_max = 0;
    for (int64_t l = 0; l < n; l++) {
        const ar_layer *L = &layers[l];
        int64_t cand[] = {L->hidden, L->w_a.out, L->w_qb.out, L->heads * L->qk_dim,
                          L->heads * L->v_dim, 2 * L->mlp_inter, 2 * L->inter, L->q_lora};
        for (size_t i = 0; i < sizeof cand / sizeof cand[0]; i++)
            if (cand[i] > big) big = cand[i];
        if (L->heads > hd_max) hd_max = L->heads;
        if (L->kv_lora > kvl_max) kvl_max = L->kv_lora;
        if (L->kv_lora + L->rope > width_max) width_max = L->kv_lora + L->rope;
        if (L->moe && L->n_experts > e_max) e_max = L->n_experts;
        if (L->moe && (L->top_k > 64 || L->n_group > 256)) return -1;
        if (L->kv_lora + L->rope > MAX_WIDTH) return -1;
    }
    int64_t ctx = pos + 1;
    size_t model_bytes = (size_t)big * 4; /* room for any row in either dtype */
    size_t f = (size_t)(hd_max * width_max * 2 + big * 2 + hd_max * ctx + hd_max * kvl_max +
                        2 * e_max + width_max + 64);
    size_t head_bytes = st->final_norm ? (size_t)st->lm_head.out * 4 : 0;
    size_t parts = (size_t)((nthreads > 1 ? nthreads - 1 : 0) * hd_max * kvl_max) * 4;
    int any_moe = 0; /* then experts_parallel's per-thread space, on several threads */
    for (int64_t l = 0; l < n; l++) any_moe |= layers[l].moe != 0;
    size_t par_rows = (model_bytes + 63) & ~(size_t)63;
    size_t par_stride = 2 * par_rows + (((size_t)big * 4 + 63) & ~(size_t)63);
    size_t par_bytes = nthreads > 1 && any_moe ? (size_t)nthreads * par_stride : 0;
    size_t total =
        7 * model_bytes + f * sizeof(float) + parts + 64 * 16 + head_bytes + par_bytes + 64;
    char *mem = (char *)malloc(total);
    if (!mem) return -1;
    scratch s;
    char *p = mem;
#define TAKE(field, bytes)                                                                         \
    do {                                                                                           \
        s.field = (void *)p;                                                                       \
        p += ((bytes) + 63) & ~(size_t)63;                                                         \
    } while (0)
    TAKE(h, model_bytes);
    TAKE(a, model_bytes);
    TAKE(q, model_bytes);
    TAKE(row, model_bytes);
    TAKE(gu, model_bytes);
    TAKE(act, model_bytes);
    TAKE(out, model_bytes);
    TAKE(qf, (size_t)big * 4);
    TAKE(qfull, (size_t)(hd_max * width_max) * 4);
    TAKE(rope_in, (size_t)width_max * 4);
    TAKE(scores, (size_t)(hd_max * ctx) * 4);
    TAKE(olat, (size_t)(hd_max * kvl_max) * 4);
    TAKE(o, (size_t)big * 4);
    TAKE(router, (size_t)(2 * e_max + 1) * 4);
    TAKE(olat_part, (size_t)((nthreads > 1 ? nthreads - 1 : 0) * hd_max * kvl_max) * 4);
    s.par = par_bytes ? p : NULL;
    s.par_stride = par_stride;
    s.par_rows = par_rows;
    p += par_bytes;
    void *head = p;
#undef TAKE
    int rc = 0;
    for (int64_t l = 0; l < n && rc == 0; l++) {
        const ar_layer *L = &layers[l];
        int bf = (int)L->bf16;
        rc = attention(L, x, st->caches[l], pos, &rot, &s, s.out, nthreads);
        if (rc) break;
        residual_add(x, s.out, bf, L->hidden);
        rms_norm(x, L->mlp_norm, bf, L->hidden, L->eps, s.h);
        /* s.h is read by every product of the MLP; s.out receives its result */
        rc = mlp(L, s.h, &s, s.out, nthreads);
        if (rc) break;
        residual_add(x, s.out, bf, L->hidden);
    }
    if (rc == 0 && st->final_norm) {
        /* logits in the model dtype (as the torch path's lm_head product), then widened */
        int bf = (int)st->bf16;
        rms_norm(x, st->final_norm, bf, st->lm_head.in, st->eps, s.h);
        void *y = bf ? head : (void *)st->logits;
        rc = mat_xw(&st->lm_head, s.h, bf, y, bf, 1.0f, 0, nthreads);
        if (rc == 0 && bf)
            for (int64_t i = 0; i < st->lm_head.out; i++)
                st->logits[i] = bf16_to_f32(((const uint16_t *)head)[i]);
    }
    free(mem);
    return rc;
}
