/*
 * backend/cuda/cuda_check.c: turning CUDA and cuBLAS errors into kiln_status values with a one-line message.
 */
#include <cublas_v2.h>

#include "backend/cuda/cuda_common.h"

static const char *base_name(const char *path) {
  const char *s = path;
  for (const char *p = path; *p; p++)
    if (*p == '/') s = p + 1;
  return s;
}

int kiln_cuda__check(cudaError_t e, const char *stmt, const char *file, int line) {
  if (e == cudaSuccess) return 0;
  int dev = -1;
  (void)cudaGetLastError(); /* clear a non-sticky error so that the next call starts clean */
  if (cudaGetDevice(&dev) != cudaSuccess) dev = -1;
  int code = e == cudaErrorMemoryAllocation ? KILN_ENOMEM : KILN_EDEVICE;
  return kiln_error(code, "cuda:%d: %s: %s (%s:%d)", dev, stmt, cudaGetErrorString(e), base_name(file), line);
}

int kiln_cublas__check(int status, const char *stmt, const char *file, int line) {
  if (status == CUBLAS_STATUS_SUCCESS) return 0;
  int dev = -1;
  if (cudaGetDevice(&dev) != cudaSuccess) dev = -1;
  int code = status == CUBLAS_STATUS_ALLOC_FAILED ? KILN_ENOMEM : KILN_EDEVICE;
  return kiln_error(code, "cuda:%d: %s: %s (%s:%d)", dev, stmt, cublasGetStatusString((cublasStatus_t)status),
                    base_name(file), line);
}
