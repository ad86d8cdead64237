/*
 * backend/cuda/embed.cu: the token embedding lookup (one block per token, 16-byte loads when the row allows).
 */
#include "backend/cuda/cuda_common.h"
#include "backend/cuda/embed.h"

static __global__ void embed_kernel(float *x, const uint16_t *table, int64_t vocab, int64_t hidden,
                                    const int32_t *ids, unsigned long long *reset) {
  kiln_pdl_trigger();
  kiln_pdl_wait();
  int64_t t = blockIdx.x;
  int32_t id = ids[t];
  float *dst = x + t * hidden;
  if (reset && t == 0 && threadIdx.x == 0) *reset = 0ull;
  if (id < 0 || id >= vocab) {
    for (int64_t i = threadIdx.x; i < hidden; i += blockDim.x) dst[i] = __int_as_float(0x7fc00000);
    return;
  }
  const uint16_t *src = table + (int64_t)id * hidden;
  if (hidden % 8 == 0) {
    const uint4 *s8 = (const uint4 *)src;
    for (int64_t i = threadIdx.x; i < hidden / 8; i += blockDim.x) {
      uint4 v = s8[i];
      float4 a = make_float4(kiln_bf16_lo(v.x), kiln_bf16_hi(v.x), kiln_bf16_lo(v.y), kiln_bf16_hi(v.y));
      float4 b = make_float4(kiln_bf16_lo(v.z), kiln_bf16_hi(v.z), kiln_bf16_lo(v.w), kiln_bf16_hi(v.w));
      ((float4 *)dst)[2 * i] = a;
      ((float4 *)dst)[2 * i + 1] = b;
    }
  } else {
    for (int64_t i = threadIdx.x; i < hidden; i += blockDim.x) dst[i] = kiln_bf16_to_f32_dev(src[i]);
  }
}

static int embed_launch(float *x, const uint16_t *table, int64_t vocab, int64_t hidden, const int32_t *ids,
                        int64_t n, unsigned long long *reset, cudaStream_t stream) {
  static size_t smem_set[KILN_CUDA_MAX_DEVICES]; /* no shared memory: only the carveout (KILN_CUDA_CARVEOUT) */
  int rc = kiln_cuda__allow_smem((const void *)embed_kernel, 0, smem_set, 0);
  if (rc) return rc;
  embed_kernel<<<(unsigned)n, 128, 0, stream>>>(x, table, vocab, hidden, ids, reset);
  KILN_CUDA_LAUNCHED();
  return 0;
}

extern "C" int kiln_cuda_embed(float *x, const uint16_t *table, int64_t vocab, int64_t hidden, const int32_t *ids,
                               int64_t n, unsigned long long *reset, cudaStream_t stream) {
  if (n < 0 || n > 0x7fffffff || hidden <= 0 || vocab <= 0)
    return kiln_error(KILN_EINVAL, "cuda embed: bad size (n %lld, hidden %lld)", (long long)n, (long long)hidden);
  if (n == 0) return 0;
  return embed_launch(x, table, vocab, hidden, ids, n, reset, stream);
}
