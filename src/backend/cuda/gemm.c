/*
 * backend/cuda/gemm.c: y = x W^T (or y += x W^T) with cublasGemmEx. cuBLAS is column-major; a row-major
 * y[n][out] is the column-major out x n matrix y^T = W x^T, where W (row-major [out][in]) is the column-major
 * in x out matrix transposed (op T, lda = in) and x (row-major [n][in]) is the column-major in x n matrix (op N,
 * ldb = in).
 */
#include "backend/cuda/cuda_common.h"
#include "backend/cuda/gemm.h"

static int gemm_(cublasHandle_t h, void *y, cudaDataType_t yt, float beta, const uint16_t *x, const uint16_t *w,
                 int64_t n, int64_t in, int64_t out) {
  if (n < 0 || in <= 0 || out <= 0 || n > 0x7fffffff || in > 0x7fffffff || out > 0x7fffffff)
    return kiln_error(KILN_EINVAL, "cuda gemm: bad shape %lld x %lld x %lld", (long long)n, (long long)in,
                      (long long)out);
  if (n == 0) return 0;
  const float one = 1.f;
  KILN_CUBLAS_CHECK(cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, (int)out, (int)n, (int)in, &one, w, CUDA_R_16BF,
                                 (int)in, x, CUDA_R_16BF, (int)in, &beta, y, yt, (int)out, CUBLAS_COMPUTE_32F,
                                 CUBLAS_GEMM_DEFAULT));
  return 0;
}

int kiln_cuda_gemm(cublasHandle_t h, float *y, const uint16_t *x, const uint16_t *w, int64_t n, int64_t in,
                   int64_t out) {
  return gemm_(h, y, CUDA_R_32F, 0.f, x, w, n, in, out);
}

int kiln_cuda_gemm_acc(cublasHandle_t h, float *y, const uint16_t *x, const uint16_t *w, int64_t n, int64_t in,
                       int64_t out) {
  return gemm_(h, y, CUDA_R_32F, 1.f, x, w, n, in, out);
}

int kiln_cuda_gemm_bf16(cublasHandle_t h, uint16_t *y, const uint16_t *x, const uint16_t *w, int64_t n, int64_t in,
                        int64_t out) {
  return gemm_(h, y, CUDA_R_16BF, 0.f, x, w, n, in, out);
}
