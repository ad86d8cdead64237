/*
 * backend/cuda/tma_dev.cuh (internal, device code): Hopper's tensor memory accelerator (TMA) and the shared-memory
 * transaction barriers (mbarrier) that count its bytes in, as the prefill GEMM uses them (sm_90a).
 *
 * A TMA copy moves a 2-D box of a tensor described by a CUtensorMap (made on the host: gemm_tc.cu) into shared
 * memory, swizzled as the map says, and reports its bytes to a barrier ("complete_tx"). A stage's barrier
 * completes a phase when its expected arrivals have arrived and all the bytes announced with expect_tx have
 * landed; a waiter names the phase by its parity (0 for a barrier's first phase, then 1, 0, ...). Parts of a box
 * outside the tensor are filled with zeros and still counted, so edge tiles need no special case.
 *
 * Like wgmma_dev.cuh, everything compiles to nothing outside sm_90a (KILN_WG_OK 0).
 */
#ifndef KILN_CUDA_TMA_DEV_CUH
#define KILN_CUDA_TMA_DEV_CUH

#include <stdint.h>

#include "backend/cuda/wgmma_dev.cuh"

static __device__ __forceinline__ void kiln_mbar_init(uint32_t bar, unsigned arrivals) {
#if KILN_WG_OK
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(arrivals) : "memory");
#endif
}
/* Makes the initialisations visible to the async proxy (TMA) before any copy signals the barriers. */
static __device__ __forceinline__ void kiln_mbar_init_fence(void) {
#if KILN_WG_OK
  asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
#endif
}
/* One arrival that also announces `bytes` more to come from copies. */
static __device__ __forceinline__ void kiln_mbar_expect_tx(uint32_t bar, unsigned bytes) {
#if KILN_WG_OK
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes) : "memory");
#endif
}
static __device__ __forceinline__ void kiln_mbar_arrive(uint32_t bar) {
#if KILN_WG_OK
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(bar) : "memory");
#endif
}
/* Waits until the barrier's phase of parity `parity` has completed. */
static __device__ __forceinline__ void kiln_mbar_wait(uint32_t bar, unsigned parity) {
#if KILN_WG_OK
  asm volatile("{\n.reg .pred p;\nKILN_MBAR_WAIT:\n"
               "mbarrier.try_wait.parity.shared::cta.b64 p, [%0], %1;\n"
               "@!p bra KILN_MBAR_WAIT;\n}\n" ::"r"(bar),
               "r"(parity)
               : "memory");
#endif
}

/* Fetches a tensor map (a __grid_constant__ parameter) into the TMA unit's cache ahead of its first use. */
static __device__ __forceinline__ void kiln_tma_prefetch_map(const void *map) {
#if KILN_WG_OK
  asm volatile("prefetch.tensormap [%0];\n" ::"l"(map) : "memory");
#endif
}

/* The box at (c0 along the contiguous dimension, c1 along the rows) of the tensor `map` (the address of a
 * __grid_constant__ kernel parameter) into shared memory at dst, its bytes reported to barrier bar. */
static __device__ __forceinline__ void kiln_tma_load_2d(uint32_t dst, const void *map, uint32_t bar, int c0, int c1) {
#if KILN_WG_OK
  asm volatile("cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], "
               "[%4];\n" ::"r"(dst),
               "l"(map), "r"(c0), "r"(c1), "r"(bar)
               : "memory");
#else
  (void)dst, (void)map, (void)bar, (void)c0, (void)c1;
#endif
}

/* The same copy delivered to every block of the cluster in `mask` (bit r: rank r), at dst and signalling bar at
 * the same offsets in each: blocks that share an operand tile read it from L2 once. */
static __device__ __forceinline__ void kiln_tma_load_2d_mc(uint32_t dst, const void *map, uint32_t bar, int c0, int c1,
                                                           uint16_t mask) {
#if KILN_WG_OK
  asm volatile("cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes.multicast::cluster [%0], "
               "[%1, {%2, %3}], [%4], %5;\n" ::"r"(dst),
               "l"(map), "r"(c0), "r"(c1), "r"(bar), "h"(mask)
               : "memory");
#else
  (void)dst, (void)map, (void)bar, (void)c0, (void)c1, (void)mask;
#endif
}

/* One arrival on the barrier at shared offset bar in the cluster's block `rank` (this block's own included), with
 * the default (CTA-scope) semantics: it announces that this warp's tensor-core reads of a stage have retired and
 * publishes no data, and a cluster-scope release costs a memory barrier each time (H100: 9.5 cycles of stall an
 * instruction, half of the consumers' time, in the 128x128c2 tile). */
static __device__ __forceinline__ void kiln_mbar_arrive_cluster(uint32_t bar, unsigned rank) {
#if KILN_WG_OK
  asm volatile("{\n.reg .b32 ra;\nmapa.shared::cluster.u32 ra, %0, %1;\n"
               "mbarrier.arrive.shared::cluster.b64 _, [ra];\n}\n" ::"r"(bar),
               "r"(rank)
               : "memory");
#endif
}

/* Stores v at shared offset addr in the cluster's block `rank` (distributed shared memory). */
static __device__ __forceinline__ void kiln_dsmem_st4(uint32_t addr, unsigned rank, float4 v) {
#if KILN_WG_OK
  asm volatile("{\n.reg .b32 ra;\nmapa.shared::cluster.u32 ra, %0, %1;\n"
               "st.shared::cluster.v4.f32 [ra], {%2, %3, %4, %5};\n}\n" ::"r"(addr),
               "r"(rank), "f"(v.x), "f"(v.y), "f"(v.z), "f"(v.w)
               : "memory");
#else
  (void)addr, (void)rank, (void)v;
#endif
}

/* The 16 bytes at shared offset addr of this block (as kiln_dsmem_st4 leaves them). */
static __device__ __forceinline__ float4 kiln_smem_ld4(uint32_t addr) {
  float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
#if KILN_WG_OK
  asm volatile("ld.shared.v4.f32 {%0, %1, %2, %3}, [%4];\n" : "=f"(v.x), "=f"(v.y), "=f"(v.z), "=f"(v.w) : "r"(addr));
#else
  (void)addr;
#endif
  return v;
}

/* Every thread of every block of the cluster arrives, then waits for all: the blocks' barriers are initialised
 * before any copy signals them, and no block leaves while another may still arrive on its barriers. */
static __device__ __forceinline__ void kiln_cluster_sync(void) {
#if KILN_WG_OK
  asm volatile("barrier.cluster.arrive.release;\nbarrier.cluster.wait.acquire;\n" ::: "memory");
#endif
}

#endif
