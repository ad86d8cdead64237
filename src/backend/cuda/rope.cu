/*
 * backend/cuda/rope.cu: bias + per-head RMSNorm + RoPE + KV-cache store. One warp per (token, head): the head's
 * values pass through the warp's slice of shared memory, because RoPE pairs element i with i + head_dim/2, which
 * for head_dim < 64 lives in another lane. That scalar form stays for other head sizes (and KILN_CUDA_ROPE_VEC=0);
 * for head sizes 8-128 (powers of two) the warp holds 4 elements a lane in registers and takes the partner by a
 * shuffle instead (kiln_norm_rotate4): 8-byte loads and stores where the scalar form moves 2 bytes a lane.
 */
#include <stdlib.h>
#include <string.h>

#include "backend/cuda/cuda_common.h"
#include "backend/cuda/rope.h"
#include "backend/cuda/rope_dev.cuh"

#define ROPE_WARPS 4
#define ROPE_MAX_HD 256

static int rope_vec_ = -1;
extern "C" int kiln_cuda_rope_vec_env(const char *v) {
  if (!v || !*v || !strcmp(v, "1")) return 1;
  return !strcmp(v, "0") ? 0 : -1;
}
extern "C" int kiln_cuda_rope_vec(void) {
  if (rope_vec_ < 0) rope_vec_ = kiln_cuda_rope_vec_env(getenv("KILN_CUDA_ROPE_VEC")) == 1;
  return rope_vec_;
}

static __global__ void __launch_bounds__(ROPE_WARPS * 32)
    qkv_rope_kernel(uint16_t *q_out, uint16_t *k_cache, uint16_t *v_cache, const uint16_t *qkv, const float *bias,
                    const float *q_norm, const float *k_norm, float eps, const float *inv_freq,
                    const kiln_cuda_step *step, int64_t n, kiln_cuda_attn_shape sh, int vec) {
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
  if (vec && kiln_rope_vec_ok(hd)) { /* 4 elements a lane, the partner by a shuffle (rope_dev.cuh) */
    const bool q = head < sh.n_heads, on = lane < hd / 4;
    const float4 o = kiln_norm_rotate4(row + off, bias ? bias + off : NULL, hd, q ? q_norm : k_norm, eps, inv_freq,
                                       pos, 1.f);
    if (!on) return;
    if (q) {
      *(uint2 *)(q_out + (t * sh.n_heads + head) * hd + 4 * lane) = kiln_pack_bf16x4(o);
      return;
    }
    const int kh = head - sh.n_heads;
    const int64_t at = (int64_t)step->seq * sh.n_kv_heads * sh.n_ctx * hd + ((int64_t)kh * sh.n_ctx + pos) * hd;
    *(uint2 *)(k_cache + at + 4 * lane) = kiln_pack_bf16x4(o);
    const int64_t voff = (int64_t)(sh.n_heads + sh.n_kv_heads) * hd + (int64_t)kh * hd + 4 * lane;
    float4 v = kiln_ld_act4(row + voff);
    if (bias) {
      const float4 b = *(const float4 *)(bias + voff);
      v = make_float4(v.x + b.x, v.y + b.y, v.z + b.z, v.w + b.w);
    }
    *(uint2 *)(v_cache + at + 4 * lane) = kiln_pack_bf16x4(v);
    return;
  }
  if (head < sh.n_heads) {
    kiln_norm_rotate(buf, row + off, bias ? bias + off : NULL, hd, q_norm, eps, inv_freq, pos, 1.f);
    uint16_t *dst = q_out + (t * sh.n_heads + head) * hd;
    for (int i = lane; i < hd; i += 32) dst[i] = kiln_f32_to_bf16_dev(buf[i]);
    return;
  }
  int kh = head - sh.n_heads;
  kiln_norm_rotate(buf, row + off, bias ? bias + off : NULL, hd, k_norm, eps, inv_freq, pos, 1.f);
  int64_t slot = (int64_t)step->seq * sh.n_kv_heads * sh.n_ctx * hd;
  int64_t at = slot + ((int64_t)kh * sh.n_ctx + pos) * hd;
  for (int i = lane; i < hd; i += 32) k_cache[at + i] = kiln_f32_to_bf16_dev(buf[i]);
  int64_t voff = (int64_t)(sh.n_heads + sh.n_kv_heads) * hd + (int64_t)kh * hd;
  for (int i = lane; i < hd; i += 32)
    v_cache[at + i] = kiln_f32_to_bf16_dev(kiln_ld_act(row + voff + i) + (bias ? bias[voff + i] : 0.f));
}

static int qkv_rope_launch(uint16_t *q_out, uint16_t *k_cache, uint16_t *v_cache, const uint16_t *qkv,
                           const float *bias, const float *q_norm, const float *k_norm, float eps,
                           const float *inv_freq, const kiln_cuda_step *step, int64_t n,
                           const kiln_cuda_attn_shape *sh, cudaStream_t stream) {
  int64_t jobs = n * (sh->n_heads + sh->n_kv_heads);
  unsigned blocks = (unsigned)((jobs + ROPE_WARPS - 1) / ROPE_WARPS);
  KILN_CUDA_CHECK(kiln_launch(qkv_rope_kernel, dim3(blocks), dim3(ROPE_WARPS * 32), 0, stream, q_out, k_cache,
                              v_cache, qkv, bias, q_norm, k_norm, eps, inv_freq, step, n, *sh, kiln_cuda_rope_vec()));
  return 0;
}

extern "C" int kiln_cuda_qkv_rope(uint16_t *q_out, uint16_t *k_cache, uint16_t *v_cache, const uint16_t *qkv,
                                  const float *bias, const float *q_norm, const float *k_norm, float eps,
                                  const float *inv_freq, const kiln_cuda_step *step, int64_t n,
                                  const kiln_cuda_attn_shape *shape, cudaStream_t stream) {
  if (n < 0 || n > (1 << 24) || shape->head_dim <= 0 || shape->head_dim % 2 || shape->head_dim > ROPE_MAX_HD ||
      shape->n_heads <= 0 || shape->n_kv_heads <= 0)
    return kiln_error(KILN_EINVAL, "cuda qkv_rope: bad shape (n %lld, head_dim %d)", (long long)n,
                      shape->head_dim);
  if (n == 0) return 0;
  return qkv_rope_launch(q_out, k_cache, v_cache, qkv, bias, q_norm, k_norm, eps, inv_freq, step, n, shape, stream);
}
