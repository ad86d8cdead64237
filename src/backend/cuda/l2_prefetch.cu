/*
 * backend/cuda/l2_prefetch.cu: the L2 prefetch kernel (see l2_prefetch.h).
 *
 * Why a kernel of its own: when decode attention's blocks issued the same prefetch (KILN_CUDA_ATTN_L2PF), the
 * attention kernel itself took up to 4 us longer on an H100, whether the prefetch went out at its entry or after
 * its last cache load. Here the prefetch runs beside attention, on SMs and in blocks attention does not need, and
 * nothing on the step's critical path waits for it. (On an H100 the step was still 0.2-2.8% slower with it: the
 * traffic itself delays attention. Whether it pays is chosen per card at create, tune.c.)
 */
#include "backend/cuda/cuda_common.h"
#include "backend/cuda/l2_prefetch.h"

static __global__ void __launch_bounds__(32) l2_prefetch_kernel(const void *p0, int64_t b0, const void *p1,
                                                                int64_t b1) {
  kiln_l2_prefetch_share(p0, b0);
  kiln_l2_prefetch_share(p1, b1);
}

extern "C" int kiln_cuda_l2_prefetch(const void *p0, int64_t b0, const void *p1, int64_t b1, int blocks,
                                     cudaStream_t stream) {
  if (blocks < 1 || b0 < 0 || b1 < 0 || b0 % 16 || b1 % 16 || (uintptr_t)p0 % 16 || (uintptr_t)p1 % 16)
    return kiln_error(KILN_EINVAL, "cuda l2 prefetch: bad range or block count");
  l2_prefetch_kernel<<<blocks, 32, 0, stream>>>(p0, b0, p1, b1);
  KILN_CUDA_CHECK(cudaGetLastError());
  return 0;
}
