/*
 * backend/cuda/swiglu.cu: act = bf16(silu(gate) * up) over interleaved (gate, up) pairs, one float2 per element.
 */
#include "backend/cuda/cuda_common.h"
#include "backend/cuda/swiglu.h"

static __global__ void swiglu_kernel(uint16_t *act, const float2 *gu, int64_t total) {
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
    float2 p = gu[i];
    act[i] = kiln_f32_to_bf16_dev(p.x / (1.f + expf(-p.x)) * p.y);
  }
}

static int swiglu_launch(uint16_t *act, const float *gu, int64_t total, cudaStream_t stream) {
  int64_t blocks = (total + 255) / 256;
  if (blocks > 65535) blocks = 65535;
  swiglu_kernel<<<(unsigned)blocks, 256, 0, stream>>>(act, (const float2 *)gu, total);
  KILN_CUDA_LAUNCHED();
  return 0;
}

extern "C" int kiln_cuda_swiglu(uint16_t *act, const float *gu, int64_t n, int64_t inter, cudaStream_t stream) {
  if (n < 0 || inter <= 0) return kiln_error(KILN_EINVAL, "cuda swiglu: bad size (n %lld)", (long long)n);
  if (n == 0) return 0;
  return swiglu_launch(act, gu, n * inter, stream);
}
