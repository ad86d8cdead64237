/*
 * backend/cuda/cuda_common.h (internal): what every file of the CUDA backend shares: the checks that turn a CUDA or
 * cuBLAS error into a kiln_status with a one-line message, the device-side step parameters, and (for .cu files)
 * the bf16 helpers of the kernels.
 *
 * Every CUDA call goes through KILN_CUDA_CHECK (return on error) or KILN_CUDA_TRY (set rc, goto out). The message
 * names the device, the failing statement, the CUDA error and the source line:
 *   "cuda:0: cudaMalloc(&p, n): out of memory (arena.c:41)".
 * Kernel launches are followed by KILN_CUDA_CHECK(cudaGetLastError()). Nothing here exits.
 */
#ifndef KILN_CUDA_COMMON_H
#define KILN_CUDA_COMMON_H

#include <stdint.h>

#include <cuda_runtime_api.h>

#include "kiln/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Records the error (statement, file, line, device) and returns its kiln_status (KILN_ENOMEM for an allocation
 * failure, else KILN_EDEVICE); returns 0 for cudaSuccess. The sticky last error is cleared. */
int kiln_cuda__check(cudaError_t e, const char *stmt, const char *file, int line);
/* The same for a cublasStatus_t (an int here, so this header needs no cuBLAS include). */
int kiln_cublas__check(int status, const char *stmt, const char *file, int line);

#define KILN_CUDA_CHECK(stmt)                                                                  \
  do {                                                                                         \
    cudaError_t kiln_e_ = (stmt);                                                              \
    if (kiln_e_ != cudaSuccess) return kiln_cuda__check(kiln_e_, #stmt, __FILE__, __LINE__);  \
  } while (0)

#define KILN_CUDA_TRY(stmt)                                                                    \
  do {                                                                                         \
    cudaError_t kiln_e_ = (stmt);                                                              \
    if (kiln_e_ != cudaSuccess) {                                                              \
      rc = kiln_cuda__check(kiln_e_, #stmt, __FILE__, __LINE__);                               \
      goto out;                                                                                \
    }                                                                                          \
  } while (0)

#define KILN_CUBLAS_CHECK(stmt)                                                                \
  do {                                                                                         \
    int kiln_s_ = (int)(stmt);                                                                 \
    if (kiln_s_ != 0) return kiln_cublas__check(kiln_s_, #stmt, __FILE__, __LINE__);          \
  } while (0)

/* Checks the launch just made (configuration errors show here; faults show at the next synchronisation). */
#define KILN_CUDA_LAUNCHED() KILN_CUDA_CHECK(cudaGetLastError())

/* The parameters of one forward step, in device memory so that a captured CUDA graph replays with new values:
 * the host writes them into pinned memory and the graph's first node copies them over. */
typedef struct kiln_cuda_step {
  int32_t seq;         /* KV slot */
  int32_t pos;         /* position of the step's first token */
  int32_t n;           /* tokens in the step */
  int32_t token;       /* decode: the input token */
  float temperature;   /* <= 0: greedy */
  int32_t top_k;       /* <= 0: off */
  float top_p;         /* >= 1: off */
  float min_p;         /* <= 0: off */
  uint64_t seed;       /* with `step`, chooses the uniform draw */
  uint64_t step;
} kiln_cuda_step;

/* Programmatic dependent launch for the calling thread's launches: while on, the ops launch their kernels with
 * cudaLaunchAttributeProgrammaticStreamSerialization, so a kernel starts while its predecessor drains (its
 * weight loads overlap the predecessor's tail) and waits (griddepcontrol.wait) before it reads anything the
 * predecessor wrote. The decode step turns it on; everything else launches plainly. */
void kiln_cuda__set_pdl(int on);
int kiln_cuda__pdl(void);

/* Allows `kern` `bytes` of dynamic shared memory on the current device (needed past 48 KB with its static shared
 * memory); `set` is the kernel's own record of what each device already allows, so the attribute is set once per
 * device and size. max_carveout: also prefer the largest shared-memory carveout (more blocks per SM, less L1).
 * Returns 0 or KILN_EDEVICE. */
#define KILN_CUDA_MAX_DEVICES 64
int kiln_cuda__allow_smem(const void *kern, size_t bytes, size_t set[KILN_CUDA_MAX_DEVICES], int max_carveout);
/* The shared-memory carveout (percent) that kiln_cuda__allow_smem asks for every kernel that does not ask for the
 * largest itself; -1: the driver's choice. Set from KILN_CUDA_CARVEOUT before the graphs are captured. */
void kiln_cuda__set_carveout(int percent);

/* Round up to a multiple of m (m > 0). */
static inline int64_t kiln_cuda__round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

#ifdef __cplusplus
}
#endif

#ifdef __CUDACC__
#include <cuda_bf16.h>

/* bf16 is the top half of an f32: unpacking is a shift or a mask, no conversion instruction. */
static __device__ __forceinline__ float kiln_bf16_lo(uint32_t u) { return __uint_as_float(u << 16); }
static __device__ __forceinline__ float kiln_bf16_hi(uint32_t u) { return __uint_as_float(u & 0xffff0000u); }
/* Round to nearest even, as kiln_f32_to_bf16 on the host (the intrinsic also keeps NaN a NaN). */
static __device__ __forceinline__ uint16_t kiln_f32_to_bf16_dev(float f) {
  return __bfloat16_as_ushort(__float2bfloat16_rn(f));
}
static __device__ __forceinline__ float kiln_bf16_to_f32_dev(uint16_t h) { return __uint_as_float((uint32_t)h << 16); }
/* Two f32 packed as two bf16 (x in the low half). */
static __device__ __forceinline__ uint32_t kiln_pack_bf16x2(float x, float y) {
  return (uint32_t)kiln_f32_to_bf16_dev(x) | ((uint32_t)kiln_f32_to_bf16_dev(y) << 16);
}
/* Four f32 as four bf16 in 8 bytes, in order. */
static __device__ __forceinline__ uint2 kiln_pack_bf16x4(float4 v) {
  return make_uint2(kiln_pack_bf16x2(v.x, v.y), kiln_pack_bf16x2(v.z, v.w));
}
/* The 8 products of a 16-byte vector of bf16 weights with one of bf16 activations, summed into acc. */
static __device__ __forceinline__ float kiln_dot8_bf16(uint4 w, uint4 x, float acc) {
  acc = fmaf(kiln_bf16_lo(w.x), kiln_bf16_lo(x.x), acc);
  acc = fmaf(kiln_bf16_hi(w.x), kiln_bf16_hi(x.x), acc);
  acc = fmaf(kiln_bf16_lo(w.y), kiln_bf16_lo(x.y), acc);
  acc = fmaf(kiln_bf16_hi(w.y), kiln_bf16_hi(x.y), acc);
  acc = fmaf(kiln_bf16_lo(w.z), kiln_bf16_lo(x.z), acc);
  acc = fmaf(kiln_bf16_hi(w.z), kiln_bf16_hi(x.z), acc);
  acc = fmaf(kiln_bf16_lo(w.w), kiln_bf16_lo(x.w), acc);
  acc = fmaf(kiln_bf16_hi(w.w), kiln_bf16_hi(x.w), acc);
  return acc;
}
/* PDL inside a kernel: `trigger` lets the next kernel launch now (it still waits for this one to finish before
 * reading its results); `wait` blocks until every earlier kernel has completed and its writes are visible.
 * Every kernel of a PDL chain calls wait before its first dependent access, so completion is transitive. Both
 * are no-ops for a kernel launched without the attribute. */
static __device__ __forceinline__ void kiln_pdl_trigger(void) {
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
}
static __device__ __forceinline__ void kiln_pdl_wait(void) { asm volatile("griddepcontrol.wait;" ::: "memory"); }

/* This block's share of [p, p + bytes) prefetched into L2 (bytes a multiple of 16, p 16-byte aligned): the grid's
 * blocks cut the range into equal runs of 16-byte units, and a block's threads issue one bulk prefetch of up to
 * 16 KB each. Fire and forget: for a latency-bound kernel to pull in the weights the next kernel streams, while
 * HBM would otherwise idle. */
static __device__ __noinline__ void kiln_l2_prefetch_share_run_(const void *p, int64_t bytes) {
  const int64_t nb = (int64_t)gridDim.x * gridDim.y * gridDim.z;
  const int64_t b = blockIdx.x + (int64_t)gridDim.x * (blockIdx.y + (int64_t)gridDim.y * blockIdx.z);
  const int64_t units = bytes / 16, per = (units + nb - 1) / nb, piece = 1024;
  const int64_t u1 = units < (b + 1) * per ? units : (b + 1) * per;
  for (int64_t u = b * per + (int64_t)threadIdx.x * piece; u < u1; u += (int64_t)blockDim.x * piece) {
    const int64_t n = u1 - u < piece ? u1 - u : piece;
    const char *at = (const char *)p + u * 16;
    asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(at), "r"((unsigned)(n * 16)) : "memory");
  }
}
/* Tested inline, run out of line: the prefetch is off in most launches, and callers run once per token with their
 * instructions fetched cold, so the loop stays out of their path. */
static __device__ __forceinline__ void kiln_l2_prefetch_share(const void *p, int64_t bytes) {
  if (p && bytes >= 16) kiln_l2_prefetch_share_run_(p, bytes);
}

/* Asynchronous 16-byte copies global -> shared through L2 (cp.async.cg): src_bytes 0 reads nothing and writes
 * zeros; commit closes a group, wait_all waits for every group of the thread (a barrier then publishes them). */
static __device__ __forceinline__ uint32_t kiln_smem_addr(const void *p) {
  return (uint32_t)__cvta_generic_to_shared(p);
}
static __device__ __forceinline__ void kiln_cp16(uint32_t dst, const void *src, int src_bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(src_bytes) : "memory");
}
static __device__ __forceinline__ void kiln_cp_commit(void) { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
static __device__ __forceinline__ void kiln_cp_wait_all(void) { asm volatile("cp.async.wait_group 0;\n" ::: "memory"); }

/* Launches kern<<<grid, block, smem, stream>>>(args...), with the PDL attribute when the thread asked for it, as
 * thread-block clusters of cluster.x x cluster.y x 1 blocks when cluster.x > 0 (the grid a multiple of it). */
template <typename... K, typename... A>
static cudaError_t kiln_launch_cluster2(void (*kern)(K...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
                                        dim3 cluster, A... args) {
  cudaLaunchConfig_t cfg = {};
  cudaLaunchAttribute at[2];
  int n = 0;
  if (kiln_cuda__pdl()) {
    at[n].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    at[n++].val.programmaticStreamSerializationAllowed = 1;
  }
  if (cluster.x > 0) {
    at[n].id = cudaLaunchAttributeClusterDimension;
    at[n].val.clusterDim.x = cluster.x;
    at[n].val.clusterDim.y = cluster.y;
    at[n++].val.clusterDim.z = 1;
  }
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream;
  cfg.attrs = at;
  cfg.numAttrs = (unsigned)n;
  return cudaLaunchKernelEx(&cfg, kern, args...);
}
/* The same with clusters of cluster_x x 1 x 1 blocks (none when 0). */
template <typename... K, typename... A>
static cudaError_t kiln_launch_cluster(void (*kern)(K...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
                                       unsigned cluster_x, A... args) {
  return kiln_launch_cluster2(kern, grid, block, smem, stream, dim3(cluster_x, 1, 1), args...);
}
template <typename... K, typename... A>
static cudaError_t kiln_launch(void (*kern)(K...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
                               A... args) {
  return kiln_launch_cluster(kern, grid, block, smem, stream, 0u, args...);
}

static __device__ __forceinline__ float kiln_warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
static __device__ __forceinline__ float kiln_warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
#endif /* __CUDACC__ */

#endif /* KILN_CUDA_COMMON_H */
