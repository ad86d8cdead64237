/*
 * backend/cuda/gemm_lt.h (internal): the cublasLt descriptors of one product shape, shared by gemm.c (running a
 * plan) and gemm_plan.c (making one).
 */
#ifndef KILN_CUDA_GEMM_LT_H
#define KILN_CUDA_GEMM_LT_H

#include "backend/cuda/gemm.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct kiln_cuda_gemm_lt {
  cublasLtMatmulDesc_t op;
  cublasLtMatrixLayout_t a, b, c; /* W, x, y (y is also cublasLt's C) */
} kiln_cuda_gemm_lt;

/* The descriptors of y = x W^T for n x in x out (see gemm.c for the column-major mapping); freed on error. */
int kiln_cuda__gemm_lt_desc(kiln_cuda_gemm_lt *d, kiln_gemm_out kind, int64_t n, int64_t in, int64_t out);
void kiln_cuda__gemm_lt_free(kiln_cuda_gemm_lt *d);
/* One product with `algo` on e's stream and workspace; returns cublasLtMatmul's status, recording no error (the
 * planner drops an offer that cannot run; kiln_cuda_gemm_run reports it). */
int kiln_cuda__gemm_lt_run(const kiln_cuda_gemm_env *e, const kiln_cuda_gemm_lt *d, const cublasLtMatmulAlgo_t *algo,
                           kiln_gemm_out kind, void *y, const uint16_t *x, const uint16_t *w);

#ifdef __cplusplus
}
#endif
#endif
