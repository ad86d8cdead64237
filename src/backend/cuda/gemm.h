/*
 * backend/cuda/gemm.h (internal): the prefill matrix product on the tensor cores through cuBLAS.
 */
#ifndef KILN_CUDA_GEMM_H
#define KILN_CUDA_GEMM_H

#include <stdint.h>

#include <cublas_v2.h>

#ifdef __cplusplus
extern "C" {
#endif

/* y f32 [n][out] = x bf16 [n][in] W^T, W bf16 [out][in] (nn.Linear layout); f32 accumulation. The handle carries
 * the stream and its workspace. */
int kiln_cuda_gemm(cublasHandle_t h, float *y, const uint16_t *x, const uint16_t *w, int64_t n, int64_t in,
                   int64_t out);
/* y f32 [n][out] += x W^T: the product added to what y holds (cuBLAS beta = 1), for projections whose output is a
 * residual update. */
int kiln_cuda_gemm_acc(cublasHandle_t h, float *y, const uint16_t *x, const uint16_t *w, int64_t n, int64_t in,
                       int64_t out);
/* The same product rounded to bf16 on the way out (y bf16 [n][out]): for outputs that only feed elementwise
 * kernels (q/k/v, gate/up), half the bytes to write and to read back. */
int kiln_cuda_gemm_bf16(cublasHandle_t h, uint16_t *y, const uint16_t *x, const uint16_t *w, int64_t n, int64_t in,
                        int64_t out);

#ifdef __cplusplus
}
#endif
#endif
