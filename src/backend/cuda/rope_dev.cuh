/*
 * backend/cuda/rope_dev.cuh (internal, device code): per-head RMSNorm and RoPE of one head into shared memory by
 * one warp, shared by the q/k/v kernel of prefill (rope.cu) and decode attention (attn_decode_dev.cuh).
 */
#ifndef KILN_CUDA_ROPE_DEV_CUH
#define KILN_CUDA_ROPE_DEV_CUH

#include "backend/cuda/cuda_common.h"

#define KILN_ROPE_DEV_MAX_HD 256

/* buf[0..hd) = RoPE(RMSNorm(src + bias)) * scale for one head (norm skipped when nw == NULL, bias when NULL),
 * run by the calling warp, which owns buf. Every input (the head, its bias, the norm weights, the frequencies)
 * is requested at once, so the head costs one memory latency, not one per dependent step. src (f32 or bf16) is
 * read through L2 (another kernel or block wrote it). hd <= KILN_ROPE_DEV_MAX_HD. */
/* One activation read through L2, from an f32 or a bf16 buffer. */
static __device__ __forceinline__ float kiln_ld_act(const float *p) { return __ldcg(p); }
static __device__ __forceinline__ float kiln_ld_act(const uint16_t *p) {
  return __uint_as_float((uint32_t)__ldcg((const unsigned short *)p) << 16);
}

template <typename T>
static __device__ __forceinline__ void kiln_norm_rotate(float *buf, const T *src, const float *bias, int hd,
                                                        const float *nw, float eps, const float *inv_freq, int pos,
                                                        float scale) {
  constexpr int NV = KILN_ROPE_DEV_MAX_HD / 32;
  const int lane = threadIdx.x & 31, h = hd / 2;
  float x[NV], w[NV], f[NV / 2];
#pragma unroll
  for (int k = 0; k < NV; k++) {
    const int i = lane + 32 * k;
    x[k] = i < hd ? kiln_ld_act(src + i) + (bias ? bias[i] : 0.f) : 0.f;
    w[k] = nw && i < hd ? nw[i] : 1.f;
  }
#pragma unroll
  for (int k = 0; k < NV / 2; k++) {
    const int i = lane + 32 * k;
    f[k] = i < h ? inv_freq[i] : 0.f;
  }
  float inv = 1.f;
  if (nw) {
    float ss = 0.f;
#pragma unroll
    for (int k = 0; k < NV; k++) ss = fmaf(x[k], x[k], ss);
    ss = kiln_warp_sum(ss);
    inv = rsqrtf(ss / (float)hd + eps);
  }
#pragma unroll
  for (int k = 0; k < NV; k++) {
    const int i = lane + 32 * k;
    if (i < hd) buf[i] = nw ? w[k] * (x[k] * inv) : x[k];
  }
  __syncwarp();
  const float fp = (float)pos;
  /* Each lane reads and writes only its own pairs (i, i + h): no lane touches another lane's pair. */
#pragma unroll
  for (int k = 0; k < NV / 2; k++) {
    const int i = lane + 32 * k;
    if (i < h) {
      float sn, cs;
      sincosf(f[k] * fp, &sn, &cs);
      const float x1 = buf[i], x2 = buf[i + h];
      buf[i] = (x1 * cs - x2 * sn) * scale;
      buf[i + h] = (x2 * cs + x1 * sn) * scale;
    }
  }
  __syncwarp();
}

#endif /* KILN_CUDA_ROPE_DEV_CUH */
