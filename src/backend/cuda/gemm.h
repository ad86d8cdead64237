/*
 * backend/cuda/gemm.h (internal): the prefill matrix product on the tensor cores through cuBLAS, and its plan: the
 * algorithm a product of one shape runs, chosen by timing (gemm_plan.c).
 */
#ifndef KILN_CUDA_GEMM_H
#define KILN_CUDA_GEMM_H

#include <stdbool.h>
#include <stdint.h>

#include <cublasLt.h>
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

/* What y is: f32 written, f32 added to (beta = 1), or bf16 written; kiln's own product only (gemm_tc.h): SwiGLU
 * of (gate, up) column pairs, bf16, or q/k/v heads normed, rotated and stored where attention reads them. */
typedef enum kiln_gemm_out {
  KILN_GEMM_F32,
  KILN_GEMM_ACC,
  KILN_GEMM_BF16,
  KILN_GEMM_SWIGLU,
  KILN_GEMM_QKV
} kiln_gemm_out;

/* Where a planned product runs: both cuBLAS handles on one stream, and the workspace cublasLt may use (the one set
 * on h, so that at most one product uses it at a time). */
typedef struct kiln_cuda_gemm_env {
  cublasHandle_t h;
  cublasLtHandle_t lt;
  void *ws;
  size_t ws_bytes;
  cudaStream_t stream;
} kiln_cuda_gemm_env;

/* The algorithm of one product shape: cublasGemmEx's default (lt false) or a cublasLt algorithm whose result was
 * the default's bit for bit when planned. us and us_default: the planning's timings (µs, best of its rounds). */
typedef struct kiln_cuda_gemm_algo {
  bool lt;
  cublasLtMatmulAlgo_t algo;
  float us, us_default;
  int candidates, identical; /* cublasLt offers timed, and those whose result matched */
} kiln_cuda_gemm_algo;

/* y = x W^T (or += for KILN_GEMM_ACC) with the planned algorithm (NULL or !a->lt: cublasGemmEx). Only stream work,
 * so it can be captured into a graph. */
int kiln_cuda_gemm_run(const kiln_cuda_gemm_env *e, const kiln_cuda_gemm_algo *a, kiln_gemm_out kind, void *y,
                       const uint16_t *x, const uint16_t *w, int64_t n, int64_t in, int64_t out);

/* Device buffers a plan may overwrite: x of n * in bf16, y, ref and y0 of n * out elements of the output type each
 * (y0 only for KILN_GEMM_ACC), and diff of KILN_GEMM_PLAN_MAX words. */
#define KILN_GEMM_PLAN_MAX 16
typedef struct kiln_cuda_gemm_scratch {
  uint16_t *x;
  void *y, *ref, *y0;
  unsigned *diff;
} kiln_cuda_gemm_scratch;

/* Plans the product of n x in x out: times cublasGemmEx's default and each cublasLt offer that does not split k,
 * on random x (and random y for KILN_GEMM_ACC) against the weights w[0..n_w) in turn (so the timed runs read
 * them from memory, as a model's layers do), checks each offer's result against the default's bit for bit, and
 * keeps the fastest of the default and the offers that matched. So a plan changes the time of a product, never
 * its result. Not capturable: synchronises the stream. */
int kiln_cuda_gemm_plan(const kiln_cuda_gemm_env *e, const kiln_cuda_gemm_scratch *s, kiln_gemm_out kind,
                        const uint16_t *const *w, int n_w, int64_t n, int64_t in, int64_t out,
                        kiln_cuda_gemm_algo *plan);

#ifdef __cplusplus
}
#endif
#endif
