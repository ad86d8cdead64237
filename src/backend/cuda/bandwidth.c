/*
 * backend/cuda/bandwidth.c: device copy bandwidth (bandwidth.h).
 */
#include "backend/cuda/bandwidth.h"

#include "backend/cuda/cuda_common.h"

int kiln_cuda_copy_bandwidth(size_t bytes, int reps, cudaStream_t stream, double *bytes_per_s) {
  void *a = NULL, *b = NULL;
  cudaEvent_t e0 = NULL, e1 = NULL;
  int rc = 0;
  *bytes_per_s = 0;
  for (;;) {
    cudaError_t ea = cudaMalloc(&a, bytes), eb = ea == cudaSuccess ? cudaMalloc(&b, bytes) : ea;
    if (ea == cudaSuccess && eb == cudaSuccess) break;
    if (a) (void)cudaFree(a);
    a = NULL;
    (void)cudaGetLastError(); /* an allocation failure is not sticky: clear it and try less */
    if (eb != cudaErrorMemoryAllocation || bytes <= ((size_t)64 << 20))
      return kiln_error(KILN_EDEVICE, "cuda: copy bandwidth: cannot allocate 2 x %zu MiB: %s", bytes >> 20,
                        cudaGetErrorString(eb));
    bytes /= 2;
  }
  KILN_CUDA_TRY(cudaMemsetAsync(a, 0x5a, bytes, stream));
  KILN_CUDA_TRY(cudaEventCreate(&e0));
  KILN_CUDA_TRY(cudaEventCreate(&e1));
  for (int i = 0; i < reps + 2; i++) {
    float ms = 0;
    KILN_CUDA_TRY(cudaEventRecord(e0, stream));
    KILN_CUDA_TRY(cudaMemcpyAsync(i % 2 ? a : b, i % 2 ? b : a, bytes, cudaMemcpyDeviceToDevice, stream));
    KILN_CUDA_TRY(cudaEventRecord(e1, stream));
    KILN_CUDA_TRY(cudaEventSynchronize(e1));
    KILN_CUDA_TRY(cudaEventElapsedTime(&ms, e0, e1));
    const double rate = 2.0 * (double)bytes / (ms * 1e-3);
    if (i >= 2 && ms > 0 && rate > *bytes_per_s) *bytes_per_s = rate;
  }
out:
  if (e0) (void)cudaEventDestroy(e0);
  if (e1) (void)cudaEventDestroy(e1);
  (void)cudaFree(a);
  (void)cudaFree(b);
  return rc;
}
