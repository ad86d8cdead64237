/*
 * backend/cpu/ref_ops.h (internal): the plain reference of every op of the forward pass.
 *
 * These functions are the definition of what each op computes. They are written to be read, not to be fast:
 * one loop nest per op, sums accumulated in double, no threads, no SIMD. The fast CPU kernels (cpu_kernels.h)
 * and the CUDA kernels are tested against them on random inputs; tests/engine/ also runs a whole model through
 * them (ref_model.h).
 *
 * Conventions
 *  - Activations are f32, row-major: a batch of n token rows of `dim` values is x[n][dim].
 *  - Weights keep the checkpoint's dtype (F32, BF16 or F16), passed as (const void *, kiln_dtype); a projection
 *    from `in` to `out` features is nn.Linear's row-major W[out][in], so y = x W^T.
 *  - Sizes are int64_t; every function accepts n == 0.
 *  - The Hugging Face semantics followed are named at each op (transformers' modeling_qwen3.py / modeling_llama.py,
 *    run with the model upcast to float32).
 */
#ifndef KILN_REF_OPS_H
#define KILN_REF_OPS_H

#include <stdint.h>
#include <string.h>

#include "kiln/half.h"
#include "kiln/model.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- element conversions: kiln/half.h (exact; bf16 rounds to nearest even, NaN kept NaN) ---- */

/* Element i of a weight array of dtype dt, as f32. */
static inline float kiln_weight_at(const void *w, kiln_dtype dt, int64_t i) {
  switch (dt) {
  case KILN_BF16: return kiln_bf16_to_f32(((const uint16_t *)w)[i]);
  case KILN_F16: return kiln_f16_to_f32(((const uint16_t *)w)[i]);
  default: return ((const float *)w)[i];
  }
}

/* ---- ops ---- */

/* out[t][:] = table[ids[t]][:] as f32 (model.embed_tokens). ids must lie in [0, vocab). */
void kiln_ref_embed(float *out, const void *table, kiln_dtype dt, int64_t hidden, const int32_t *ids, int64_t n);

/* RMSNorm over each of n rows of `dim` values (Qwen3RMSNorm / LlamaRMSNorm):
 *   out = w * (x * 1/sqrt(mean(x^2) + eps)).
 * In place when out == x. Also the per-head q/k norm: rows = tokens * heads, dim = head_dim. */
void kiln_ref_rmsnorm(float *out, const float *x, const void *w, kiln_dtype wdt, int64_t n, int64_t dim,
                      float eps);

/* The residual step between blocks: x += r, then out = rmsnorm(x) (x is updated in place). */
void kiln_ref_add_rmsnorm(float *out, float *x, const float *r, const void *w, kiln_dtype wdt, int64_t n,
                          int64_t dim, float eps);

/* y[n][out] = x[n][in] W^T with W[out][in] of dtype wdt. y must not alias x. */
void kiln_ref_matmul(float *y, const float *x, const void *w, kiln_dtype wdt, int64_t n, int64_t in, int64_t out);

/* y[t][j] += b[j] for n rows of `dim` (the q/k/v biases of attention_bias models). */
void kiln_ref_add_bias(float *y, const void *b, kiln_dtype bdt, int64_t n, int64_t dim);

/* x[i] += r[i] for i < n. */
void kiln_ref_add(float *x, const float *r, int64_t n);

/* The RoPE inverse frequencies inv_freq[head_dim/2] of a config, computed in f32 exactly as transformers does
 * (_compute_default_rope_parameters: 1 / base^(arange(0, d, 2) / d); _compute_llama3_parameters for
 * KILN_ROPE_LLAMA3: low frequencies divided by `factor`, the middle band interpolated). */
void kiln_ref_rope_inv_freq(float *inv_freq, const kiln_config *cfg);

/* Rotates x[n][n_heads][head_dim] in place, token t at position pos[t], HF's rotate_half convention: with
 * h = head_dim/2 and angle a_i = f32(inv_freq[i] * f32(pos)),
 *   x'[i]   = x[i]   cos a_i - x[i+h] sin a_i
 *   x'[i+h] = x[i+h] cos a_i + x[i]   sin a_i      for i < h. */
void kiln_ref_rope(float *x, const int32_t *pos, int64_t n, int64_t n_heads, int64_t head_dim,
                   const float *inv_freq);

/* Causal grouped-query attention over a KV cache.
 *   q      [n][n_heads][head_dim]: the queries of n new tokens at positions pos0 .. pos0+n-1
 *   k, v   [>= pos0+n][n_kv_heads][head_dim]: the cache rows of positions 0 .. pos0+n-1 (the new tokens' keys and
 *          values already written)
 *   out    [n][n_heads][head_dim]
 * Query head h reads kv head h / (n_heads / n_kv_heads). Token t attends to positions 0 .. pos0+t with
 * softmax(q.k / sqrt(head_dim)) in f32 semantics (max-subtracted, sums in double here). head_dim must be at most
 * KILN_REF_MAX_HEAD_DIM. */
#define KILN_REF_MAX_HEAD_DIM 512
void kiln_ref_attention(float *out, const float *q, const float *k, const float *v, int64_t n, int64_t pos0,
                        int64_t n_heads, int64_t n_kv_heads, int64_t head_dim);

/* out[i] = silu(gate[i]) * up[i], silu(x) = x / (1 + e^-x). In place when out == gate or out == up. */
void kiln_ref_swiglu(float *out, const float *gate, const float *up, int64_t n);

/* Softmax and log-softmax of n logits (max-subtracted; sums in double). In place when out == x. */
void kiln_ref_softmax(float *out, const float *x, int64_t n);
void kiln_ref_log_softmax(float *out, const float *x, int64_t n);

/* Index of the largest value, the lowest index on ties; NaN never wins. -1 when n == 0. */
int64_t kiln_ref_argmax(const float *x, int64_t n);

#ifdef __cplusplus
}
#endif
#endif /* KILN_REF_OPS_H */
