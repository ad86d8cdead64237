/*
 * backend/cuda/random_fill.cu: device-side random weights (see random_fill.h).
 */
#include "backend/cuda/cuda_common.h"
#include "backend/cuda/random_fill.h"

static __global__ void fill_kernel(uint16_t *p16, float *p32, int64_t n, uint64_t seed, float mean, float std) {
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    uint64_t z = seed + (uint64_t)(i + 1) * 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    uint32_t s = (uint32_t)(z & 0xffff) + (uint32_t)((z >> 16) & 0xffff) + (uint32_t)((z >> 32) & 0xffff) +
                 (uint32_t)(z >> 48);
    float v = mean + std * (((float)s - 131070.0f) * (1.7320508f / 65536.0f));
    if (p16) p16[i] = kiln_f32_to_bf16_dev(v);
    else p32[i] = v;
  }
}

static int fill_launch(uint16_t *p16, float *p32, int64_t n, uint64_t seed, float mean, float std,
                       cudaStream_t stream) {
  fill_kernel<<<2048, 256, 0, stream>>>(p16, p32, n, seed, mean, std);
  KILN_CUDA_LAUNCHED();
  return 0;
}

extern "C" int kiln_cuda_fill_random(uint16_t *p16, float *p32, int64_t n, uint64_t seed, float mean, float std,
                                     cudaStream_t stream) {
  if (n < 0 || (!p16 && !p32)) return kiln_error(KILN_EINVAL, "cuda fill_random: bad arguments");
  if (n == 0) return 0;
  return fill_launch(p16, p32, n, seed, mean, std, stream);
}
