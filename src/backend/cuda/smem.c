/*
 * backend/cuda/smem.c: a kernel's shared-memory attributes (cuda_common.h), once per device and size: the dynamic
 * limit for every kernel that needs more than the default 48 KB (static and dynamic together), and the carveout it
 * prefers.
 */
#include "backend/cuda/cuda_common.h"

/* The carveout every kernel that passes through here prefers (percent of the unified L1/shared memory; -1: the
 * driver's choice), unless it asks for the largest itself. Process-wide, as a kernel's attribute is; a kernel's
 * carveout is set with its first shared-memory size, so a later change reaches only kernels not yet launched. */
static int carveout_ = -1;

void kiln_cuda__set_carveout(int percent) { carveout_ = percent < 0 ? -1 : percent > 100 ? 100 : percent; }

int kiln_cuda__allow_smem(const void *kern, size_t bytes, size_t set[KILN_CUDA_MAX_DEVICES], int max_carveout) {
  int dev = 0;
  KILN_CUDA_CHECK(cudaGetDevice(&dev));
  /* set[dev]: the bytes allowed + 1; 0: nothing set yet */
  if (dev < KILN_CUDA_MAX_DEVICES && set[dev] > bytes) return 0;
  /* the 48 KB default covers static and dynamic shared memory together: a kernel with 48 KB of dynamic and a
   * few bytes of static shared memory needs the opt-in too */
  struct cudaFuncAttributes fa;
  KILN_CUDA_CHECK(cudaFuncGetAttributes(&fa, kern));
  if (bytes + fa.sharedSizeBytes > 48 * 1024)
    KILN_CUDA_CHECK(cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
  const int carveout = max_carveout ? cudaSharedmemCarveoutMaxShared : carveout_;
  if (carveout >= 0)
    KILN_CUDA_CHECK(cudaFuncSetAttribute(kern, cudaFuncAttributePreferredSharedMemoryCarveout, carveout));
  if (dev < KILN_CUDA_MAX_DEVICES) set[dev] = bytes + 1;
  return 0;
}
