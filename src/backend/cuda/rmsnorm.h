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

/* For each of n rows of `dim` values: x += r + rb (when r is not NULL; rb, a bias of the layer that produced r,
 * may be NULL; x is updated in place), then y = bf16(w * x / sqrt(mean(x^2) + eps)). x, r f32 [n][dim];
 * rb, w f32 [dim]; y bf16 [n][dim], the input of the next matmul. */
int kiln_cuda_add_rmsnorm(uint16_t *y, float *x, const float *r, const float *rb, const float *w, int64_t n,
                          int64_t dim, float eps, cudaStream_t stream);

#ifdef __cplusplus
}
#endif
#endif
