/* The reference forward pass (see ref_model.h): Qwen3 / Llama decoder layers from the reference ops. */
#include "backend/cpu/ref_model.h"

#include <stdlib.h>

#include "backend/cpu/ref_ops.h"
#include "kiln/status.h"

int kiln_ref_model_forward(const kiln_model *m, const int32_t *tokens, int64_t n, float *logits) {
  const kiln_config *c = &m->cfg;
  const int64_t H = c->hidden_size, I = c->intermediate_size, V = c->vocab_size, hd = c->head_dim;
  const int64_t qd = (int64_t)c->n_heads * hd, kvd = (int64_t)c->n_kv_heads * hd;
  const float eps = c->rms_norm_eps;
  if (n <= 0 || hd <= 0 || hd % 2 || hd > KILN_REF_MAX_HEAD_DIM || c->n_kv_heads <= 0 || c->n_heads % c->n_kv_heads)
    return kiln_error(KILN_EINVAL, "ref: unsupported shape");
  for (int64_t t = 0; t < n; t++)
    if (tokens[t] < 0 || tokens[t] >= V) return kiln_error(KILN_EINVAL, "ref: token %d out of range", tokens[t]);

  int rc = KILN_OK;
  float *x = malloc(sizeof(float) * (size_t)(n * H)), *xn = malloc(sizeof(float) * (size_t)(n * H));
  float *q = malloc(sizeof(float) * (size_t)(n * qd)), *att = malloc(sizeof(float) * (size_t)(n * qd));
  float *k = malloc(sizeof(float) * (size_t)(n * kvd)), *v = malloc(sizeof(float) * (size_t)(n * kvd));
  float *g = malloc(sizeof(float) * (size_t)(n * I)), *u = malloc(sizeof(float) * (size_t)(n * I));
  float *tmp = malloc(sizeof(float) * (size_t)(n * H)), *inv_freq = malloc(sizeof(float) * (size_t)(hd / 2));
  int32_t *pos = malloc(sizeof(int32_t) * (size_t)n);
  if (!x || !xn || !q || !att || !k || !v || !g || !u || !tmp || !inv_freq || !pos) {
    rc = kiln_error(KILN_ENOMEM, "ref: out of memory");
    goto out;
  }
  for (int64_t t = 0; t < n; t++) pos[t] = (int32_t)t;
  kiln_ref_rope_inv_freq(inv_freq, c);
  kiln_ref_embed(x, m->embed.data, m->embed.dtype, H, tokens, n);
  for (int l = 0; l < c->n_layers; l++) {
    const kiln_layer_weights *L = &m->layers[l];
    kiln_ref_rmsnorm(xn, x, L->attn_norm.data, L->attn_norm.dtype, n, H, eps);
    kiln_ref_matmul(q, xn, L->wq.data, L->wq.dtype, n, H, qd);
    kiln_ref_matmul(k, xn, L->wk.data, L->wk.dtype, n, H, kvd);
    kiln_ref_matmul(v, xn, L->wv.data, L->wv.dtype, n, H, kvd);
    if (L->bq.data) kiln_ref_add_bias(q, L->bq.data, L->bq.dtype, n, qd);
    if (L->bk.data) kiln_ref_add_bias(k, L->bk.data, L->bk.dtype, n, kvd);
    if (L->bv.data) kiln_ref_add_bias(v, L->bv.data, L->bv.dtype, n, kvd);
    if (L->q_norm.data) kiln_ref_rmsnorm(q, q, L->q_norm.data, L->q_norm.dtype, n * c->n_heads, hd, eps);
    if (L->k_norm.data) kiln_ref_rmsnorm(k, k, L->k_norm.data, L->k_norm.dtype, n * c->n_kv_heads, hd, eps);
    kiln_ref_rope(q, pos, n, c->n_heads, hd, inv_freq);
    kiln_ref_rope(k, pos, n, c->n_kv_heads, hd, inv_freq);
    kiln_ref_attention(att, q, k, v, n, 0, c->n_heads, c->n_kv_heads, hd);
    kiln_ref_matmul(tmp, att, L->wo.data, L->wo.dtype, n, qd, H);
    if (L->bo.data) kiln_ref_add_bias(tmp, L->bo.data, L->bo.dtype, n, H);
    kiln_ref_add_rmsnorm(xn, x, tmp, L->ffn_norm.data, L->ffn_norm.dtype, n, H, eps);
    kiln_ref_matmul(g, xn, L->w_gate.data, L->w_gate.dtype, n, H, I);
    kiln_ref_matmul(u, xn, L->w_up.data, L->w_up.dtype, n, H, I);
    kiln_ref_swiglu(g, g, u, n * I);
    kiln_ref_matmul(tmp, g, L->w_down.data, L->w_down.dtype, n, I, H);
    kiln_ref_add(x, tmp, n * H);
  }
  kiln_ref_rmsnorm(xn, x, m->final_norm.data, m->final_norm.dtype, n, H, eps);
  const kiln_tensor *head = m->lm_head.data ? &m->lm_head : &m->embed;
  kiln_ref_matmul(logits, xn, head->data, head->dtype, n, H, V);
out:
  free(x);
  free(xn);
  free(q);
  free(att);
  free(k);
  free(v);
  free(g);
  free(u);
  free(tmp);
  free(inv_freq);
  free(pos);
  return rc;
}
