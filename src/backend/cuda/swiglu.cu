/*
 * backend/cuda/swiglu.cu: act = bf16(silu(gate) * up) over interleaved (gate, up) bf16 pairs: a thread reads two
 * pairs with one 8-byte load and writes two results with one 4-byte store.
 */
#include "backend/cuda/cuda_common.h"
#include "backend/cuda/swiglu.h"

static __device__ __forceinline__ float silu_mul_(float g, float u) { return g / (1.f + expf(-g)) * u; }

static __global__ void swiglu_kernel(uint16_t *act, const uint2 *gu, int64_t total) {
  kiln_pdl_trigger();
  kiln_pdl_wait();
  const int64_t half = total / 2;
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < half; i += (int64_t)gridDim.x * blockDim.x) {
    uint2 p = gu[i];
    ((uint32_t *)act)[i] = kiln_pack_bf16x2(silu_mul_(kiln_bf16_lo(p.x), kiln_bf16_hi(p.x)),
                                            silu_mul_(kiln_bf16_lo(p.y), kiln_bf16_hi(p.y)));
  }
  if (total & 1 && blockIdx.x == 0 && threadIdx.x == 0) { /* an odd last element */
    uint32_t p = ((const uint32_t *)gu)[total - 1];
    act[total - 1] = kiln_f32_to_bf16_dev(silu_mul_(kiln_bf16_lo(p), kiln_bf16_hi(p)));
  }
}

extern "C" int kiln_cuda_swiglu(uint16_t *act, const uint16_t *gu, int64_t n, int64_t inter, cudaStream_t stream) {
  if (n < 0 || inter <= 0) return kiln_error(KILN_EINVAL, "cuda swiglu: bad size (n %lld)", (long long)n);
  if (((uintptr_t)gu & 7) || ((uintptr_t)act & 3))
    return kiln_error(KILN_EINVAL, "cuda swiglu: misaligned buffers");
  if (n == 0) return 0;
  const int64_t work = (n * inter + 1) / 2;
  const int64_t blocks = (work + 255) / 256;
  KILN_CUDA_CHECK(kiln_launch(swiglu_kernel, dim3((unsigned)(blocks > 65535 ? 65535 : blocks)), dim3(256), 0, stream,
                              act, (const uint2 *)gu, n * inter));
  return 0;
}
