/*
 * backend/cuda/gemm.c: y = x W^T (or y += x W^T) with cublasGemmEx or a planned cublasLt algorithm. cuBLAS is
 * column-major; a row-major y[n][out] is the column-major out x n matrix y^T = W x^T, where W (row-major
 * [out][in]) is the column-major in x out matrix transposed (op T, lda = in) and x (row-major [n][in]) is the
 * column-major in x n matrix (op N, ldb = in).
 */
#include "backend/cuda/cuda_common.h"
#include "backend/cuda/gemm.h"
#include "backend/cuda/gemm_lt.h"

static int shape_ok_(int64_t n, int64_t in, int64_t out) {
  if (n < 0 || in <= 0 || out <= 0 || n > 0x7fffffff || in > 0x7fffffff || out > 0x7fffffff)
    return kiln_error(KILN_EINVAL, "cuda gemm: bad shape %lld x %lld x %lld", (long long)n, (long long)in,
                      (long long)out);
  return 0;
}

static int gemmex_(cublasHandle_t h, kiln_gemm_out kind, void *y, const uint16_t *x, const uint16_t *w, int64_t n,
                   int64_t in, int64_t out) {
  const float one = 1.f, beta = kind == KILN_GEMM_ACC ? 1.f : 0.f;
  KILN_CUBLAS_CHECK(cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, (int)out, (int)n, (int)in, &one, w, CUDA_R_16BF,
                                 (int)in, x, CUDA_R_16BF, (int)in, &beta, y,
                                 kind == KILN_GEMM_BF16 ? CUDA_R_16BF : CUDA_R_32F, (int)out, CUBLAS_COMPUTE_32F,
                                 CUBLAS_GEMM_DEFAULT));
  return 0;
}

int kiln_cuda__gemm_lt_desc(kiln_cuda_gemm_lt *d, kiln_gemm_out kind, int64_t n, int64_t in, int64_t out) {
  *d = (kiln_cuda_gemm_lt){0};
  const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
  int rc = 0;
#define LT_TRY(stmt)                                                                           \
  do {                                                                                         \
    int s_ = (int)(stmt);                                                                      \
    if (s_) {                                                                                  \
      rc = kiln_cublas__check(s_, #stmt, __FILE__, __LINE__);                                  \
      goto out;                                                                                \
    }                                                                                          \
  } while (0)
  LT_TRY(cublasLtMatmulDescCreate(&d->op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  LT_TRY(cublasLtMatmulDescSetAttribute(d->op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
  LT_TRY(cublasLtMatmulDescSetAttribute(d->op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
  LT_TRY(cublasLtMatrixLayoutCreate(&d->a, CUDA_R_16BF, (uint64_t)in, (uint64_t)out, in));
  LT_TRY(cublasLtMatrixLayoutCreate(&d->b, CUDA_R_16BF, (uint64_t)in, (uint64_t)n, in));
  LT_TRY(cublasLtMatrixLayoutCreate(&d->c, kind == KILN_GEMM_BF16 ? CUDA_R_16BF : CUDA_R_32F, (uint64_t)out,
                                    (uint64_t)n, out));
#undef LT_TRY
out:
  if (rc) kiln_cuda__gemm_lt_free(d);
  return rc;
}

void kiln_cuda__gemm_lt_free(kiln_cuda_gemm_lt *d) {
  if (d->c) (void)cublasLtMatrixLayoutDestroy(d->c);
  if (d->b) (void)cublasLtMatrixLayoutDestroy(d->b);
  if (d->a) (void)cublasLtMatrixLayoutDestroy(d->a);
  if (d->op) (void)cublasLtMatmulDescDestroy(d->op);
  *d = (kiln_cuda_gemm_lt){0};
}

int kiln_cuda__gemm_lt_run(const kiln_cuda_gemm_env *e, const kiln_cuda_gemm_lt *d, const cublasLtMatmulAlgo_t *algo,
                           kiln_gemm_out kind, void *y, const uint16_t *x, const uint16_t *w) {
  const float one = 1.f, beta = kind == KILN_GEMM_ACC ? 1.f : 0.f;
  return (int)cublasLtMatmul(e->lt, d->op, &one, w, d->a, x, d->b, &beta, y, d->c, y, d->c, algo, e->ws,
                             e->ws_bytes, e->stream);
}

int kiln_cuda_gemm_run(const kiln_cuda_gemm_env *e, const kiln_cuda_gemm_algo *a, kiln_gemm_out kind, void *y,
                       const uint16_t *x, const uint16_t *w, int64_t n, int64_t in, int64_t out) {
  int rc = shape_ok_(n, in, out);
  if (rc || n == 0) return rc;
  if (kind >= KILN_GEMM_SWIGLU) return kiln_error(KILN_EINVAL, "cuda gemm: cuBLAS has no fused output");
  if (!a || !a->lt) return gemmex_(e->h, kind, y, x, w, n, in, out);
  kiln_cuda_gemm_lt d;
  if ((rc = kiln_cuda__gemm_lt_desc(&d, kind, n, in, out))) return rc;
  const int s = kiln_cuda__gemm_lt_run(e, &d, &a->algo, kind, y, x, w);
  kiln_cuda__gemm_lt_free(&d);
  return s ? kiln_cublas__check(s, "cublasLtMatmul(plan)", __FILE__, __LINE__) : 0;
}

/* The default algorithm on h's stream and workspace. */
static int gemm_(cublasHandle_t h, kiln_gemm_out kind, void *y, const uint16_t *x, const uint16_t *w, int64_t n,
                 int64_t in, int64_t out) {
  const kiln_cuda_gemm_env e = {.h = h};
  return kiln_cuda_gemm_run(&e, NULL, kind, y, x, w, n, in, out);
}

int kiln_cuda_gemm(cublasHandle_t h, float *y, const uint16_t *x, const uint16_t *w, int64_t n, int64_t in,
                   int64_t out) {
  return gemm_(h, KILN_GEMM_F32, y, x, w, n, in, out);
}

int kiln_cuda_gemm_acc(cublasHandle_t h, float *y, const uint16_t *x, const uint16_t *w, int64_t n, int64_t in,
                       int64_t out) {
  return gemm_(h, KILN_GEMM_ACC, y, x, w, n, in, out);
}

int kiln_cuda_gemm_bf16(cublasHandle_t h, uint16_t *y, const uint16_t *x, const uint16_t *w, int64_t n, int64_t in,
                        int64_t out) {
  return gemm_(h, KILN_GEMM_BF16, y, x, w, n, in, out);
}
