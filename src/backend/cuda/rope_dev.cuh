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

/* The vector form (the default; KILN_CUDA_ROPE_VEC=0 turns it off: kiln_cuda_rope_vec), for head_dim a power of
 * two from 8 to 128: lane l holds elements 4l .. 4l+3 (lanes at or past hd/4 hold nothing and return zeros); the
 * RoPE partner of an element (i + hd/2, or i - hd/2) is in the lane hd/8 away and comes by one xor shuffle. No
 * shared memory, no barrier, one 16-byte (f32) or 8-byte (bf16) load of the head a lane, and half the instructions
 * of the scalar form at head_dim 128. Same arithmetic per element; the sum of squares adds in another order. Every
 * lane of the warp must call it (the shuffles). */
static __device__ __forceinline__ bool kiln_rope_vec_ok(int hd) { return hd >= 8 && hd <= 128 && !(hd & (hd - 1)); }

static __device__ __forceinline__ float4 kiln_ld_act4(const float *p) { return __ldcg((const float4 *)p); }
static __device__ __forceinline__ float4 kiln_ld_act4(const uint16_t *p) {
  const uint2 u = __ldcg((const uint2 *)p);
  return make_float4(kiln_bf16_lo(u.x), kiln_bf16_hi(u.x), kiln_bf16_lo(u.y), kiln_bf16_hi(u.y));
}

template <typename T>
static __device__ __forceinline__ float4 kiln_norm_rotate4(const T *src, const float *bias, int hd, const float *nw,
                                                           float eps, const float *inv_freq, int pos, float scale) {
  const int lane = threadIdx.x & 31, half = hd / 8; /* lanes of each half of the head */
  const bool on = lane < hd / 4;
  const int i0 = 4 * lane;
  const float4 zero = make_float4(0.f, 0.f, 0.f, 0.f);
  float4 x = on ? kiln_ld_act4(src + i0) : zero;
  const float4 b = on && bias ? *(const float4 *)(bias + i0) : zero;
  const float4 w = on && nw ? *(const float4 *)(nw + i0) : make_float4(1.f, 1.f, 1.f, 1.f);
  const float4 f = on ? *(const float4 *)(inv_freq + 4 * (lane & (half - 1))) : zero;
  x = make_float4(x.x + b.x, x.y + b.y, x.z + b.z, x.w + b.w);
  if (nw) {
    float ss = fmaf(x.x, x.x, fmaf(x.y, x.y, fmaf(x.z, x.z, x.w * x.w)));
    ss = kiln_warp_sum(ss);
    const float inv = rsqrtf(ss / (float)hd + eps);
    x = make_float4(w.x * (x.x * inv), w.y * (x.y * inv), w.z * (x.z * inv), w.w * (x.w * inv));
  }
  float4 p;
  p.x = __shfl_xor_sync(0xffffffffu, x.x, half);
  p.y = __shfl_xor_sync(0xffffffffu, x.y, half);
  p.z = __shfl_xor_sync(0xffffffffu, x.z, half);
  p.w = __shfl_xor_sync(0xffffffffu, x.w, half);
  if (!on) return zero;
  /* first half: x1 cos - x2 sin; second half: x2 cos + x1 sin (x1 the first-half element of the pair) */
  const float sg = lane & half ? 1.f : -1.f, fp = (float)pos;
  float sn, cs;
  float4 o;
  sincosf(f.x * fp, &sn, &cs);
  o.x = (x.x * cs + sg * (p.x * sn)) * scale;
  sincosf(f.y * fp, &sn, &cs);
  o.y = (x.y * cs + sg * (p.y * sn)) * scale;
  sincosf(f.z * fp, &sn, &cs);
  o.z = (x.z * cs + sg * (p.z * sn)) * scale;
  sincosf(f.w * fp, &sn, &cs);
  o.w = (x.w * cs + sg * (p.w * sn)) * scale;
  return o;
}

#endif /* KILN_CUDA_ROPE_DEV_CUH */
