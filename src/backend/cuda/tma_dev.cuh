/*
 * backend/cuda/tma_dev.cuh (internal, device code, sm_90): a bulk copy from global into this block's shared memory
 * by the tensor memory accelerator, completed through an mbarrier. The copy travels outside the threads' load
 * path: it does not queue behind the loads the block's warps already have in flight.
 *
 * Use (one phase): kiln_mbar_init by one thread, kiln_mbar_init_fence, a block barrier; later one thread calls
 * kiln_bulk_g2s and every reader kiln_mbar_wait(bar, 0). Addresses and sizes: 16-byte aligned, multiples of 16.
 */
#ifndef KILN_CUDA_TMA_DEV_CUH
#define KILN_CUDA_TMA_DEV_CUH

#include "backend/cuda/cuda_common.h" /* kiln_smem_addr */

static __device__ __forceinline__ void kiln_mbar_init(uint64_t *bar, unsigned count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(kiln_smem_addr(bar)), "r"(count) : "memory");
}

/* Makes the initialised barrier visible to the copy engine; a block barrier must follow before other threads use
 * it. */
static __device__ __forceinline__ void kiln_mbar_init_fence(void) {
  asm volatile("fence.mbarrier_init.release.cluster;\n\tfence.proxy.async.shared::cta;" ::: "memory");
}

/* bytes from global src into shared dst, counted on bar (its one arrival, and the bytes it must see land). */
static __device__ __forceinline__ void kiln_bulk_g2s(void *dst, const void *src, uint32_t bytes, uint64_t *bar) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(kiln_smem_addr(bar)), "r"(bytes)
               : "memory");
  asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::"r"(
                   kiln_smem_addr(dst)),
               "l"(src), "r"(bytes), "r"(kiln_smem_addr(bar))
               : "memory");
}

/* Waits until the barrier's phase of the given parity has completed (the copy's bytes are in shared memory). */
static __device__ __forceinline__ void kiln_mbar_wait(uint64_t *bar, unsigned parity) {
  uint32_t done = 0;
  while (!done)
    asm volatile("{\n\t.reg .pred p;\n\tmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n\tselp.u32 %0, 1, 0, p;\n\t}"
                 : "=r"(done)
                 : "r"(kiln_smem_addr(bar)), "r"(parity)
                 : "memory");
}

#endif /* KILN_CUDA_TMA_DEV_CUH */
