/*
 * backend/cuda/rope_dev.cuh (internal, device code): per-head RMSNorm and RoPE of one head by one warp, through
 * shared memory (scalar form) or in registers (vector form, in pieces: the angles of a position, a head's load,
 * its norm and rotation), shared by the q/k/v kernel of prefill (rope.cu) and decode attention
 * (attn_decode_dev.cuh).
 *
 * RoPE's cosines and sines come from a table computed once per backend (kiln_cuda_rope_table, rope.h): row p holds
 * cos(a) for the head_dim/2 frequencies, then sin(a), with a = f32(inv_freq[i] * f32(p)) and the cosine and sine
 * taken in f64 and rounded, as the CPU reference does. A row is one or two 16-byte loads a lane, where sincosf
 * cost ~40 dependent instructions per angle in every warp of every layer.
 */
#ifndef KILN_CUDA_ROPE_DEV_CUH
#define KILN_CUDA_ROPE_DEV_CUH

#include "backend/cuda/cuda_common.h"

#define KILN_ROPE_DEV_MAX_HD 256

/* One activation read through L2, from an f32 or a bf16 buffer. */
static __device__ __forceinline__ float kiln_ld_act(const float *p) { return __ldcg(p); }
static __device__ __forceinline__ float kiln_ld_act(const uint16_t *p) {
  return __uint_as_float((uint32_t)__ldcg((const unsigned short *)p) << 16);
}

/* buf[0..hd) = RoPE(RMSNorm(src + bias)) * scale for one head at position pos (norm skipped when nw == NULL, bias
 * when NULL; rope: the table), run by the calling warp, which owns buf. Every input (the head, its bias, the norm
 * weights, the cosines and sines) is requested at once, so the head costs one memory latency, not one per
 * dependent step. src (f32 or bf16) is read through L2 (another kernel or block wrote it). hd <=
 * KILN_ROPE_DEV_MAX_HD. */
template <typename T>
static __device__ __forceinline__ void kiln_norm_rotate(float *buf, const T *src, const float *bias, int hd,
                                                        const float *nw, float eps, const float *rope, int pos,
                                                        float scale) {
  constexpr int NV = KILN_ROPE_DEV_MAX_HD / 32;
  const int lane = threadIdx.x & 31, h = hd / 2;
  const float *cs = rope + (int64_t)pos * hd;
  float x[NV], w[NV], c[NV / 2], sn[NV / 2];
#pragma unroll
  for (int k = 0; k < NV; k++) {
    const int i = lane + 32 * k;
    x[k] = i < hd ? kiln_ld_act(src + i) + (bias ? bias[i] : 0.f) : 0.f;
    w[k] = nw && i < hd ? nw[i] : 1.f;
  }
#pragma unroll
  for (int k = 0; k < NV / 2; k++) {
    const int i = lane + 32 * k;
    c[k] = i < h ? __ldg(cs + i) : 0.f;
    sn[k] = i < h ? __ldg(cs + h + i) : 0.f;
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
  /* Each lane reads and writes only its own pairs (i, i + h): no lane touches another lane's pair. */
#pragma unroll
  for (int k = 0; k < NV / 2; k++) {
    const int i = lane + 32 * k;
    if (i < h) {
      const float x1 = buf[i], x2 = buf[i + h];
      buf[i] = (x1 * c[k] - x2 * sn[k]) * scale;
      buf[i + h] = (x2 * c[k] + x1 * sn[k]) * scale;
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
static __host__ __device__ __forceinline__ bool kiln_rope_vec_ok(int hd) {
  return hd >= 8 && hd <= 128 && !(hd & (hd - 1));
}

static __device__ __forceinline__ float4 kiln_ld_act4(const float *p) { return __ldcg((const float4 *)p); }
static __device__ __forceinline__ float4 kiln_ld_act4(const uint16_t *p) {
  const uint2 u = __ldcg((const uint2 *)p);
  return make_float4(kiln_bf16_lo(u.x), kiln_bf16_hi(u.x), kiln_bf16_lo(u.y), kiln_bf16_hi(u.y));
}

/* Lane l's share of RoPE's cosines and sines at `pos` (from the table) for its elements i = 4l .. 4l+3 (a
 * second-half element takes its first-half partner's angle). The same for every head of a token, so a warp that
 * rotates several heads of one token loads them once. */
typedef struct kiln_rope4 {
  float4 c, s;
} kiln_rope4;

static __device__ __forceinline__ kiln_rope4 kiln_rope4_at(const float *rope, int hd, int pos) {
  const int lane = threadIdx.x & 31, half = hd / 8;
  kiln_rope4 r = {make_float4(0.f, 0.f, 0.f, 0.f), make_float4(0.f, 0.f, 0.f, 0.f)};
  if (lane < hd / 4) {
    const float *cs = rope + (int64_t)pos * hd + 4 * (lane & (half - 1));
    r.c = __ldg((const float4 *)cs);
    r.s = __ldg((const float4 *)(cs + hd / 2));
  }
  return r;
}

/* The norm weights of a lane's 4 elements (ones when nw == NULL). */
static __device__ __forceinline__ float4 kiln_norm_w4(const float *nw, int hd) {
  const int lane = threadIdx.x & 31;
  return lane < hd / 4 && nw ? *(const float4 *)(nw + 4 * lane) : make_float4(1.f, 1.f, 1.f, 1.f);
}

/* RoPE(RMSNorm(x)) * scale of one head whose lane share x (bias added) is in registers: the norm with weights w
 * when `norm`, the angles r (kiln_rope4_at). Every lane of the warp must call it (the shuffles). */
static __device__ __forceinline__ float4 kiln_norm_rotate4_x(float4 x, float4 w, int hd, bool norm, float eps,
                                                             const kiln_rope4 &r, float scale) {
  const int lane = threadIdx.x & 31, half = hd / 8; /* lanes of each half of the head */
  if (norm) {
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
  if (lane >= hd / 4) return make_float4(0.f, 0.f, 0.f, 0.f);
  /* first half: x1 cos - x2 sin; second half: x2 cos + x1 sin (x1 the first-half element of the pair) */
  const float sg = lane & half ? 1.f : -1.f;
  float4 o;
  o.x = (x.x * r.c.x + sg * (p.x * r.s.x)) * scale;
  o.y = (x.y * r.c.y + sg * (p.y * r.s.y)) * scale;
  o.z = (x.z * r.c.z + sg * (p.z * r.s.z)) * scale;
  o.w = (x.w * r.c.w + sg * (p.w * r.s.w)) * scale;
  return o;
}

/* 4 bf16 as loaded (u), as f32, plus 4 biases (b; none when NULL); zeros for a lane that holds none (on false). */
static __device__ __forceinline__ float4 kiln_bf16x4_bias(uint2 u, const float *b, bool on) {
  float4 x = make_float4(kiln_bf16_lo(u.x), kiln_bf16_hi(u.x), kiln_bf16_lo(u.y), kiln_bf16_hi(u.y));
  if (on && b) {
    const float4 c = *(const float4 *)b;
    x = make_float4(x.x + c.x, x.y + c.y, x.z + c.z, x.w + c.w);
  }
  return x;
}
/* Lane l's 4 elements of a head (src + 4l) plus its bias (bias + 4l, or none); zeros for lanes past hd / 4. */
template <typename T>
static __device__ __forceinline__ float4 kiln_ld_head4(const T *src, const float *bias, int hd) {
  const int lane = threadIdx.x & 31;
  if (lane >= hd / 4) return make_float4(0.f, 0.f, 0.f, 0.f);
  float4 x = kiln_ld_act4(src + 4 * lane);
  if (bias) {
    const float4 b = *(const float4 *)(bias + 4 * lane);
    x = make_float4(x.x + b.x, x.y + b.y, x.z + b.z, x.w + b.w);
  }
  return x;
}

/* One head, loaded, normed and rotated (the three pieces above). */
template <typename T>
static __device__ __forceinline__ float4 kiln_norm_rotate4(const T *src, const float *bias, int hd, const float *nw,
                                                           float eps, const float *rope, int pos, float scale) {
  const float4 x = kiln_ld_head4(src, bias, hd), w = kiln_norm_w4(nw, hd);
  return kiln_norm_rotate4_x(x, w, hd, nw != NULL, eps, kiln_rope4_at(rope, hd, pos), scale);
}

#endif /* KILN_CUDA_ROPE_DEV_CUH */
