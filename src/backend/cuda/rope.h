/*
 * backend/cuda/rope.h (internal): what happens between the q/k/v projection and attention, in one kernel: the
 * q/k/v biases, the per-head q/k RMSNorm (Qwen3), RoPE (default or llama3 inverse frequencies, precomputed), and
 * the store of the new keys and values into the KV cache.
 */
#ifndef KILN_CUDA_ROPE_H
#define KILN_CUDA_ROPE_H

#include <stdint.h>

#include <cuda_runtime_api.h>

#include "backend/cuda/cuda_common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The shape of attention in one layer, and of its KV cache: per layer, per sequence slot, k and v are each
 * [n_kv_heads][n_ctx][head_dim] bf16, slot s at k_cache + s * n_kv_heads * n_ctx * head_dim. */
typedef struct kiln_cuda_attn_shape {
  int n_heads, n_kv_heads, head_dim, n_ctx;
} kiln_cuda_attn_shape;

/* For the n tokens of `step` (token t at position step->pos + t, slot step->seq):
 *   qkv   bf16 [n][(n_heads + 2 n_kv_heads) head_dim]: the projection output, q heads then k heads then v heads
 *   bias  f32 [(n_heads + 2 n_kv_heads) head_dim], or NULL: added first
 *   q_norm, k_norm  f32 [head_dim], or NULL: per-head RMSNorm of q and of k (eps)
 *   rope  f32 [n_ctx][head_dim]: RoPE's table (kiln_cuda_rope_table), rotate_half convention
 * writes q_out bf16 [n][n_heads][head_dim] (what attention feeds the tensor cores) and the keys (normed, rotated)
 * and values into the cache as bf16, all rounded to nearest even.
 * head_dim must be even and at most 256. heads_per_warp: the vector form's heads a warp (1, 2, 4 or 8; 0:
 * KILN_CUDA_ROPE_HEADS, read at the first call, and when unset or auto by the chunk and the device's n_sm SMs, see
 * rope.cu). Every choice gives the same bits; more heads a warp put more loads in flight and load RoPE's cosines
 * and sines once for the group, but leave fewer warps. */
int kiln_cuda_qkv_rope(uint16_t *q_out, uint16_t *k_cache, uint16_t *v_cache, const uint16_t *qkv,
                       const float *bias, const float *q_norm, const float *k_norm, float eps, const float *rope,
                       const kiln_cuda_step *step, int64_t n, const kiln_cuda_attn_shape *shape, int n_sm,
                       int heads_per_warp, cudaStream_t stream);

/* RoPE's table for positions 0 .. n_pos-1: row p holds cos(a_i), then sin(a_i), for i < head_dim/2, where
 * a_i = f32(inv_freq[i] * f32(p)) and the cosine and sine are taken in f64 and rounded to f32 (kiln_ref_rope's
 * values). The backend fills it once for every position of its context; the q/k/v kernel above and decode
 * attention read their position's row instead of computing sincosf in every warp. head_dim even, at most 256;
 * rope holds n_pos * head_dim floats. */
int kiln_cuda_rope_table(float *rope, const float *inv_freq, int head_dim, int64_t n_pos, cudaStream_t stream);

/* Whether q/k norm + RoPE run in their vector form (rope_dev.cuh, kiln_norm_rotate4; head sizes 8-128, powers of
 * two; other sizes take the scalar form) in the prefill kernel above and in decode attention's prologue: on unless
 * KILN_CUDA_ROPE_VEC=0 (H100: decode -0.6 to -1.5%, TTFT of 128 tokens -1 to -3.4% at every size; docs/cuda.md),
 * read at the first call. kiln_cuda_rope_vec_env: 0 or 1 for a value of the variable (unset: 1), -1 for any
 * other. */
int kiln_cuda_rope_vec(void);
int kiln_cuda_rope_vec_env(const char *value);

/* KILN_CUDA_ROPE_HEADS's value: the heads a warp (0 for unset or auto), -1 for any other. */
int kiln_cuda_rope_heads_env(const char *value);

#ifdef __cplusplus
}
#endif
#endif
