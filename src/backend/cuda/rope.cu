/*
 * backend/cuda/rope.cu: bias + per-head RMSNorm + RoPE + KV-cache store. One warp per (token, head): the head's
 * values pass through the warp's slice of shared memory, because RoPE pairs element i with i + head_dim/2, which
 * for head_dim < 64 lives in another lane. That scalar form stays for other head sizes (and KILN_CUDA_ROPE_VEC=0);
 * for head sizes 8-128 (powers of two) the warp holds 4 elements a lane in registers and takes the partner by a
 * shuffle instead (kiln_norm_rotate4): 8-byte loads and stores where the scalar form moves 2 bytes a lane. The
 * vector form runs one warp per (token, group of heads): it requests every head of its group (and their values)
 * at once, so a warp has several loads in flight where one head alone would leave it waiting, and it loads
 * RoPE's cosines and sines (the backend's table, rope_dev.cuh) once for the group, since they depend only on the
 * token's position. Heads per warp: KILN_CUDA_ROPE_HEADS (auto, 1, 2, 4 or 8; the arithmetic per element is the
 * same for each).
 */
#include <stdlib.h>
#include <string.h>

#include "backend/cuda/cuda_common.h"
#include "backend/cuda/rope.h"
#include "backend/cuda/rope_dev.cuh"

#define ROPE_WARPS 4
#define ROPE_MAX_HD 256
#define ROPE_MAX_G 8 /* heads a warp, at most */
/* Blocks an SM must hold: caps the vector form at 64 registers a thread, so that 8 blocks (32 warps) fit where 80
 * registers (4 heads a warp) let 6 in; its 1,536 blocks at Qwen3-0.6B's 1,024-token chunk then run in 1.45 waves
 * instead of 1.94 (and 8 heads a warp in one). The kernel waits on its loads: the warps in flight are its speed. */
#define ROPE_MIN_BLOCKS 8

static int rope_vec_ = -1, rope_heads_env_ = -1;
extern "C" int kiln_cuda_rope_vec_env(const char *v) {
  if (!v || !*v || !strcmp(v, "1")) return 1;
  return !strcmp(v, "0") ? 0 : -1;
}
extern "C" int kiln_cuda_rope_vec(void) {
  if (rope_vec_ < 0) rope_vec_ = kiln_cuda_rope_vec_env(getenv("KILN_CUDA_ROPE_VEC")) == 1;
  return rope_vec_;
}

extern "C" int kiln_cuda_rope_heads_env(const char *v) {
  if (!v || !*v || !strcmp(v, "auto")) return 0;
  return !strcmp(v, "1") ? 1 : !strcmp(v, "2") ? 2 : !strcmp(v, "4") ? 4 : !strcmp(v, "8") ? 8 : -1;
}

/* Heads a warp when the caller leaves it to us: KILN_CUDA_ROPE_HEADS, or by the chunk (auto). Grouping saves
 * instructions (the cosines and sines loaded once a group) and puts a warp's loads in flight together, but leaves
 * fewer warps: the most heads a warp (up to 4) that still leave half of the warps the GPU holds at once (64 an SM)
 * busy; 1 where even one head a warp does not (H100, Qwen3-0.6B: at 1,024 tokens the kernel took 10.2 us with 4
 * heads a warp, 11.5 with one, 7.9 with 4 at 64 registers; at 128 tokens 4 heads a warp made the time to first token
 * 3% longer; 8 heads a warp: docs/cuda.md, log). */
static int rope_heads_(int64_t n, int heads, int n_sm) {
  if (rope_heads_env_ < 0) {
    const int g = kiln_cuda_rope_heads_env(getenv("KILN_CUDA_ROPE_HEADS"));
    rope_heads_env_ = g < 0 ? 0 : g; /* refused at backend creation */
  }
  if (rope_heads_env_) return rope_heads_env_;
  const int64_t half = (int64_t)32 * n_sm;
  int g = 4;
  while (g > 1 && n * ((heads + g - 1) / g) < half) g /= 2;
  return g;
}

/* The vector form: warp = (token t, heads G j .. G j + G - 1 of the n_heads q heads then the n_kv_heads k heads;
 * a group may hold both kinds, and the last may run past the end). */
template <int G>
static __global__ void __launch_bounds__(ROPE_WARPS * 32, ROPE_MIN_BLOCKS)
    qkv_rope_vec_kernel(uint16_t *q_out, uint16_t *k_cache, uint16_t *v_cache, const uint16_t *qkv,
                        const float *bias, const float *q_norm, const float *k_norm, float eps,
                        const float *rope, const kiln_cuda_step *step, int64_t n, kiln_cuda_attn_shape sh) {
  kiln_pdl_trigger();
  kiln_pdl_wait();
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int heads = sh.n_heads + sh.n_kv_heads, groups = (heads + G - 1) / G;
  const int64_t job = (int64_t)blockIdx.x * ROPE_WARPS + warp;
  if (job >= n * groups) return;
  const int64_t t = job / groups;
  const int h0 = (int)(job % groups) * G, hd = sh.head_dim;
  const int64_t vbase = (int64_t)(sh.n_heads + sh.n_kv_heads) * hd; /* the v heads in a row */
  const uint16_t *row = qkv + t * (vbase + (int64_t)sh.n_kv_heads * hd);
  const int pos = step->pos + (int)t;
  /* every load of the group first: heads and values, kept as the 4 bf16 they are (2 registers a head, not 4, so
   * that more warps fit an SM) until their turn; the biases are added then */
  uint2 x[G], v[G];
  const bool on = lane < hd / 4;
#pragma unroll
  for (int i = 0; i < G; i++) {
    v[i] = x[i] = make_uint2(0u, 0u);
    const int head = min(h0 + i, heads - 1); /* past the end: a repeat, never stored */
    const int64_t off = (int64_t)head * hd;
    if (on) x[i] = __ldcg((const uint2 *)(row + off) + lane);
    if (on && head >= sh.n_heads) v[i] = __ldcg((const uint2 *)(row + vbase + off - (int64_t)sh.n_heads * hd) + lane);
  }
  const float4 wq = kiln_norm_w4(q_norm, hd), wk = kiln_norm_w4(k_norm, hd);
  const kiln_rope4 r = kiln_rope4_at(rope, hd, pos);
  const int64_t cache = (int64_t)step->seq * sh.n_kv_heads * sh.n_ctx * hd;
#pragma unroll
  for (int i = 0; i < G; i++) {
    const int head = h0 + i;
    if (head >= heads) break; /* the same for the whole warp */
    const bool isq = head < sh.n_heads;
    const int64_t off = (int64_t)head * hd;
    const float4 xi = kiln_bf16x4_bias(x[i], bias ? bias + off + 4 * lane : NULL, on);
    const float4 o = kiln_norm_rotate4_x(xi, isq ? wq : wk, hd, (isq ? q_norm : k_norm) != NULL, eps, r, 1.f);
    if (!on) continue;
    if (isq) {
      *(uint2 *)(q_out + (t * sh.n_heads + head) * hd + 4 * lane) = kiln_pack_bf16x4(o);
      continue;
    }
    const int64_t at = cache + ((int64_t)(head - sh.n_heads) * sh.n_ctx + pos) * hd + 4 * lane;
    *(uint2 *)(k_cache + at) = kiln_pack_bf16x4(o);
    /* the value as it came, or with its bias added */
    *(uint2 *)(v_cache + at) =
        bias ? kiln_pack_bf16x4(kiln_bf16x4_bias(v[i], bias + vbase + off - (int64_t)sh.n_heads * hd + 4 * lane, on))
             : v[i];
  }
}

/* The scalar form: one warp per (token, head), through shared memory (kiln_norm_rotate). */
static __global__ void __launch_bounds__(ROPE_WARPS * 32)
    qkv_rope_kernel(uint16_t *q_out, uint16_t *k_cache, uint16_t *v_cache, const uint16_t *qkv, const float *bias,
                    const float *q_norm, const float *k_norm, float eps, const float *rope,
                    const kiln_cuda_step *step, int64_t n, kiln_cuda_attn_shape sh) {
  __shared__ float bufs[ROPE_WARPS][ROPE_MAX_HD];
  kiln_pdl_trigger();
  kiln_pdl_wait();
  int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  int heads = sh.n_heads + sh.n_kv_heads;
  int64_t job = (int64_t)blockIdx.x * ROPE_WARPS + warp;
  if (job >= n * heads) return;
  int64_t t = job / heads;
  int head = (int)(job % heads);
  int hd = sh.head_dim;
  int64_t row_len = (int64_t)(sh.n_heads + 2 * sh.n_kv_heads) * hd;
  const uint16_t *row = qkv + t * row_len;
  int pos = step->pos + (int)t;
  float *buf = bufs[warp];
  int64_t off = (int64_t)head * hd; /* q head h, or k head (head - n_heads) */
  if (head < sh.n_heads) {
    kiln_norm_rotate(buf, row + off, bias ? bias + off : NULL, hd, q_norm, eps, rope, pos, 1.f);
    uint16_t *dst = q_out + (t * sh.n_heads + head) * hd;
    for (int i = lane; i < hd; i += 32) dst[i] = kiln_f32_to_bf16_dev(buf[i]);
    return;
  }
  int kh = head - sh.n_heads;
  kiln_norm_rotate(buf, row + off, bias ? bias + off : NULL, hd, k_norm, eps, rope, pos, 1.f);
  int64_t slot = (int64_t)step->seq * sh.n_kv_heads * sh.n_ctx * hd;
  int64_t at = slot + ((int64_t)kh * sh.n_ctx + pos) * hd;
  for (int i = lane; i < hd; i += 32) k_cache[at + i] = kiln_f32_to_bf16_dev(buf[i]);
  int64_t voff = (int64_t)(sh.n_heads + sh.n_kv_heads) * hd + (int64_t)kh * hd;
  for (int i = lane; i < hd; i += 32)
    v_cache[at + i] = kiln_f32_to_bf16_dev(kiln_ld_act(row + voff + i) + (bias ? bias[voff + i] : 0.f));
}

/* One thread per (position, frequency): the angle as an f32 product, its cosine and sine in f64, rounded to f32,
 * exactly as the CPU reference (kiln_ref_rope) computes them. */
static __global__ void rope_table_kernel(float *rope, const float *inv_freq, int hd, int64_t n_pos) {
  const int h = hd / 2;
  const int64_t idx = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (idx >= n_pos * h) return;
  const int64_t p = idx / h;
  const int i = (int)(idx % h);
  const float a = __fmul_rn(inv_freq[i], (float)p); /* no contraction: the reference's rounded product */
  double sn, cs;
  sincos((double)a, &sn, &cs);
  rope[p * hd + i] = (float)cs;
  rope[p * hd + h + i] = (float)sn;
}

extern "C" int kiln_cuda_rope_table(float *rope, const float *inv_freq, int head_dim, int64_t n_pos,
                                    cudaStream_t stream) {
  if (head_dim <= 0 || head_dim % 2 || head_dim > ROPE_MAX_HD || n_pos <= 0 || n_pos > (1 << 24))
    return kiln_error(KILN_EINVAL, "cuda rope table: bad shape (head_dim %d, %lld positions)", head_dim,
                      (long long)n_pos);
  const int64_t n = n_pos * (head_dim / 2);
  rope_table_kernel<<<(unsigned)((n + 255) / 256), 256, 0, stream>>>(rope, inv_freq, head_dim, n_pos);
  KILN_CUDA_LAUNCHED();
  return 0;
}

template <int G>
static int qkv_rope_vec_launch(uint16_t *q_out, uint16_t *k_cache, uint16_t *v_cache, const uint16_t *qkv,
                               const float *bias, const float *q_norm, const float *k_norm, float eps,
                               const float *rope, const kiln_cuda_step *step, int64_t n,
                               const kiln_cuda_attn_shape *sh, cudaStream_t stream) {
  const int64_t jobs = n * ((sh->n_heads + sh->n_kv_heads + G - 1) / G);
  const unsigned blocks = (unsigned)((jobs + ROPE_WARPS - 1) / ROPE_WARPS);
  KILN_CUDA_CHECK(kiln_launch(qkv_rope_vec_kernel<G>, dim3(blocks), dim3(ROPE_WARPS * 32), 0, stream, q_out, k_cache,
                              v_cache, qkv, bias, q_norm, k_norm, eps, rope, step, n, *sh));
  return 0;
}

extern "C" int kiln_cuda_qkv_rope(uint16_t *q_out, uint16_t *k_cache, uint16_t *v_cache, const uint16_t *qkv,
                                  const float *bias, const float *q_norm, const float *k_norm, float eps,
                                  const float *rope, const kiln_cuda_step *step, int64_t n,
                                  const kiln_cuda_attn_shape *shape, int n_sm, int heads_per_warp,
                                  cudaStream_t stream) {
  if (n < 0 || n > (1 << 24) || shape->head_dim <= 0 || shape->head_dim % 2 || shape->head_dim > ROPE_MAX_HD ||
      shape->n_heads <= 0 || shape->n_kv_heads <= 0 || n_sm <= 0)
    return kiln_error(KILN_EINVAL, "cuda qkv_rope: bad shape (n %lld, head_dim %d, %d SMs)", (long long)n,
                      shape->head_dim, n_sm);
  const int g = heads_per_warp ? heads_per_warp : rope_heads_(n, shape->n_heads + shape->n_kv_heads, n_sm);
  if (g != 1 && g != 2 && g != 4 && g != ROPE_MAX_G)
    return kiln_error(KILN_EINVAL, "cuda qkv_rope: %d heads a warp (1, 2, 4 or 8)", g);
  if (n == 0) return 0;
  if (kiln_cuda_rope_vec() && kiln_rope_vec_ok(shape->head_dim)) {
    switch (g) {
    case 1: return qkv_rope_vec_launch<1>(q_out, k_cache, v_cache, qkv, bias, q_norm, k_norm, eps, rope, step, n,
                                          shape, stream);
    case 2: return qkv_rope_vec_launch<2>(q_out, k_cache, v_cache, qkv, bias, q_norm, k_norm, eps, rope, step, n,
                                          shape, stream);
    case 4: return qkv_rope_vec_launch<4>(q_out, k_cache, v_cache, qkv, bias, q_norm, k_norm, eps, rope, step, n,
                                          shape, stream);
    default: return qkv_rope_vec_launch<ROPE_MAX_G>(q_out, k_cache, v_cache, qkv, bias, q_norm, k_norm, eps, rope,
                                                    step, n, shape, stream);
    }
  }
  const int64_t jobs = n * (shape->n_heads + shape->n_kv_heads);
  const unsigned blocks = (unsigned)((jobs + ROPE_WARPS - 1) / ROPE_WARPS);
  KILN_CUDA_CHECK(kiln_launch(qkv_rope_kernel, dim3(blocks), dim3(ROPE_WARPS * 32), 0, stream, q_out, k_cache,
                              v_cache, qkv, bias, q_norm, k_norm, eps, rope, step, n, *shape));
  return 0;
}
