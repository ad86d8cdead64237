/*
 * backend/cuda/swiglu.cu: act = bf16(silu(gate) * up) over interleaved (gate, up) bf16 pairs. The prefill's gate/up
 * output was just written and mostly sits in L2, so the kernel is bound by how many bytes each SM has in flight:
 * a thread reads four pairs with one 16-byte load, SW_U of them before it uses any, and writes four results with one
 * 8-byte store (the 0.6B prefill of 1,024 tokens traced 8.2 us a layer with one 8-byte load a thread). Buffers
 * without that alignment take the 8-byte form.
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

#define SW_U 2 /* 16-byte loads a thread has in flight */

static __device__ __forceinline__ uint32_t swiglu_pair_(uint32_t p, uint32_t q) {
  return kiln_pack_bf16x2(silu_mul_(kiln_bf16_lo(p), kiln_bf16_hi(p)), silu_mul_(kiln_bf16_lo(q), kiln_bf16_hi(q)));
}

/* gu 16-byte and act 8-byte aligned: quads of outputs, then the total % 4 last ones by block 0. */
static __global__ void swiglu4_kernel(uint16_t *act, const uint4 *gu, int64_t total) {
  kiln_pdl_trigger();
  kiln_pdl_wait();
  const int64_t quads = total / 4, stride = (int64_t)gridDim.x * blockDim.x;
  uint2 *out = (uint2 *)act;
  for (int64_t i0 = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i0 < quads; i0 += SW_U * stride) {
    uint4 p[SW_U];
#pragma unroll
    for (int u = 0; u < SW_U; u++)
      if (i0 + u * stride < quads) p[u] = gu[i0 + u * stride];
#pragma unroll
    for (int u = 0; u < SW_U; u++)
      if (i0 + u * stride < quads)
        out[i0 + u * stride] = make_uint2(swiglu_pair_(p[u].x, p[u].y), swiglu_pair_(p[u].z, p[u].w));
  }
  if (blockIdx.x == 0 && threadIdx.x < (unsigned)(total & 3)) {
    const int64_t i = quads * 4 + threadIdx.x;
    const uint32_t p = ((const uint32_t *)gu)[i];
    act[i] = kiln_f32_to_bf16_dev(silu_mul_(kiln_bf16_lo(p), kiln_bf16_hi(p)));
  }
}

extern "C" int kiln_cuda_swiglu(uint16_t *act, const uint16_t *gu, int64_t n, int64_t inter, cudaStream_t stream) {
  if (n < 0 || inter <= 0) return kiln_error(KILN_EINVAL, "cuda swiglu: bad size (n %lld)", (long long)n);
  if (((uintptr_t)gu & 7) || ((uintptr_t)act & 3))
    return kiln_error(KILN_EINVAL, "cuda swiglu: misaligned buffers");
  if (n == 0) return 0;
  if ((uintptr_t)gu % 16 == 0 && (uintptr_t)act % 8 == 0) {
    const int64_t work = (n * inter / 4 + SW_U - 1) / SW_U, blocks = (work + 255) / 256;
    KILN_CUDA_CHECK(kiln_launch(swiglu4_kernel, dim3((unsigned)(blocks < 1 ? 1 : blocks > 65535 ? 65535 : blocks)),
                                dim3(256), 0, stream, act, (const uint4 *)gu, n * inter));
    return 0;
  }
  const int64_t work = (n * inter + 1) / 2;
  const int64_t blocks = (work + 255) / 256;
  KILN_CUDA_CHECK(kiln_launch(swiglu_kernel, dim3((unsigned)(blocks > 65535 ? 65535 : blocks)), dim3(256), 0, stream,
                              act, (const uint2 *)gu, n * inter));
  return 0;
}
