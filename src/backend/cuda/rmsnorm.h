/*
 * backend/cuda/rmsnorm.h (internal): RMSNorm fused with the residual add, the step between two blocks.
 */
#ifndef KILN_CUDA_RMSNORM_H
#define KILN_CUDA_RMSNORM_H

#include <stdint.h>

#include <cuda_runtime_api.h>

#ifdef __cplusplus
extern "C" {
#endif

/* For each of n rows of `dim` values: x += r + rb (r, the output of the layer before, and rb, its bias, may each be
 * NULL: a GEMM that accumulated into x leaves only its bias to add; with neither, x is only read), then
 * y = bf16(w * x / sqrt(mean(x^2) + eps)). x, r f32 [n][dim]; rb, w f32 [dim]; y bf16 [n][dim], the input of the
 * next matmul. */
int kiln_cuda_add_rmsnorm(uint16_t *y, float *x, const float *r, const float *rb, const float *w, int64_t n,
                          int64_t dim, float eps, cudaStream_t stream);

#ifdef __cplusplus
}
#endif
#endif
