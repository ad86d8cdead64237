/*
 * backend/cuda/smem.c: raising a kernel's dynamic shared-memory limit (cuda_common.h), once per device and size,
 * for every kernel that needs more than the default 48 KB.
 */
#include "backend/cuda/cuda_common.h"

int kiln_cuda__allow_smem(const void *kern, size_t bytes, size_t set[KILN_CUDA_MAX_DEVICES], int max_carveout) {
  int dev = 0;
  KILN_CUDA_CHECK(cudaGetDevice(&dev));
  if (dev < KILN_CUDA_MAX_DEVICES && set[dev] >= bytes) return 0;
  if (bytes > 48 * 1024)
    KILN_CUDA_CHECK(cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
  if (max_carveout)
    KILN_CUDA_CHECK(cudaFuncSetAttribute(kern, cudaFuncAttributePreferredSharedMemoryCarveout,
                                         cudaSharedmemCarveoutMaxShared));
  if (dev < KILN_CUDA_MAX_DEVICES) set[dev] = bytes;
  return 0;
}
