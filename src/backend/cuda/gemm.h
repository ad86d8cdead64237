/*
 * backend/cuda/gemm.h (internal): the prefill matrix product on the tensor cores through cuBLAS / cublasLt.
 *
 * A kiln_cuda_gemm_ctx holds the handles, the stream, the workspace and one plan per product shape, made at the
 * shape's first use (host memory only, no device work, so it may happen during graph capture): a short chunk has
 * too few output tiles to fill the GPU, and the plan then cuts k over several blocks (split-k, reduced in a fixed
 * order, so a plan's result is the same at every call). See gemm.c for the choice.
 */
#ifndef KILN_CUDA_GEMM_H
#define KILN_CUDA_GEMM_H

#include <stddef.h>
#include <stdint.h>

#include <cuda_runtime_api.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct kiln_cuda_gemm_ctx kiln_cuda_gemm_ctx;

/* The handles on `stream`, with `ws` (ws_bytes of device memory, used by one product at a time) as their
 * workspace. KILN_CUDA_GEMM (read here; a bad value is refused): auto (or unset), gemmex (cublasGemmEx with its
 * default algorithm for every shape, as before plans) or lt (cublasLt's first offer, never split). */
int kiln_cuda_gemm_create(kiln_cuda_gemm_ctx **g, cudaStream_t stream, void *ws, size_t ws_bytes);
void kiln_cuda_gemm_free(kiln_cuda_gemm_ctx *g);

/* y f32 [n][out] = x bf16 [n][in] W^T, W bf16 [out][in] (nn.Linear layout); f32 accumulation. */
int kiln_cuda_gemm(kiln_cuda_gemm_ctx *g, float *y, const uint16_t *x, const uint16_t *w, int64_t n, int64_t in,
                   int64_t out);
/* y f32 [n][out] += x W^T: the product added to what y holds (beta = 1), for projections whose output is a
 * residual update. */
int kiln_cuda_gemm_acc(kiln_cuda_gemm_ctx *g, float *y, const uint16_t *x, const uint16_t *w, int64_t n, int64_t in,
                       int64_t out);
/* The same product rounded to bf16 on the way out (y bf16 [n][out]): for outputs that only feed elementwise
 * kernels (q/k/v, gate/up), half the bytes to write and to read back. */
int kiln_cuda_gemm_bf16(kiln_cuda_gemm_ctx *g, uint16_t *y, const uint16_t *x, const uint16_t *w, int64_t n, int64_t in,
                        int64_t out);

/* How the product of a shape runs (for tests and benchmarks): 0 cublasGemmEx, else cublasLt with this split-k
 * (1: none); the plan is made if it does not exist yet. -1 on error. */
int kiln_cuda_gemm_plan_splitk(kiln_cuda_gemm_ctx *g, int64_t n, int64_t in, int64_t out, int y_bf16, int acc);

#ifdef __cplusplus
}
#endif
#endif
