/* Shared by the native CPU kernels (cpu_kernels.c) and the fused decode step (decode_step.c):
 * the exported one-row GEMV entry points and the bf16 <-> fp32 conversions. */
#ifndef AGENT_RUNTIME_CPU_KERNELS_H
#define AGENT_RUNTIME_CPU_KERNELS_H

#include <stdint.h>
#include <string.h>

int ar_gemv_f32(const float *w, int64_t ldw, const void *xin, int x_bf16, void *y, int y_bf16,
                int64_t out, int64_t in, float alpha, int accumulate, int nthreads);
int ar_gemv_f32t(const float *w, int64_t ldw, const void *xin, int x_bf16, float *y, int64_t out,
                 int64_t in, float alpha, int accumulate, int nthreads);
int ar_gemv_bf16(const uint16_t *w, int64_t ldw, const void *xin, int x_bf16, void *y, int y_bf16,
                 int64_t out, int64_t in, float alpha, int accumulate, int nthreads);
int ar_gemv_fp8(const uint8_t *w, int64_t ldw, const float *scale, int64_t lds, int64_t bh,
                int64_t bw, const void *xin, int x_bf16, void *y, int y_bf16, int64_t out,
                int64_t in, float alpha, int accumulate, int nthreads);
int ar_gemv_int4(const uint8_t *w, const void *scale, int scale_bf16, int64_t groups,
                 const void *xin, int x_bf16, int64_t in, void *y, int y_bf16, int64_t out,
                 float alpha, int accumulate, int nthreads);
int ar_gemv_batched(const void *w, int w_bf16, int64_t w_stride, int64_t ldw, const float *x,
                    int64_t x_stride, float *y, int64_t y_stride, int64_t out, int64_t in,
                    int64_t batch, int nthreads);

static inline float bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* round to nearest even; NaN stays a (quiet) NaN */
static inline uint16_t f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

#endif
