/* Random-weight models in memory (see rand_model.h). */
#include "rand_model.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu/ref_ops.h"
#include "kiln/status.h"

uint64_t rand_u64(uint64_t *s) {
  uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

float rand_uniform(uint64_t *s) { return (float)(rand_u64(s) >> 40) / (float)(1u << 24); }

float rand_normal(uint64_t *s) {
  double u1 = ((double)(rand_u64(s) >> 11) + 0.5) / 9007199254740992.0;
  double u2 = (double)(rand_u64(s) >> 11) / 9007199254740992.0;
  return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

rand_model_spec rand_model_qwen3(kiln_dtype dt) {
  rand_model_spec s = {.arch = KILN_ARCH_QWEN3, .dtype = dt, .vocab = 300, .hidden = 64, .inter = 96, .layers = 2,
                       .heads = 4, .kv_heads = 2, .head_dim = 24, .max_pos = 512, .tie = false, .bias = false,
                       .qk_norm = true, .llama3_rope = false, .std = 0.15f, .seed = 1};
  return s;
}

rand_model_spec rand_model_llama(kiln_dtype dt) {
  rand_model_spec s = {.arch = KILN_ARCH_LLAMA, .dtype = dt, .vocab = 263, .hidden = 48, .inter = 75, .layers = 2,
                       .heads = 6, .kv_heads = 2, .head_dim = 16, .max_pos = 512, .tie = true, .bias = true,
                       .qk_norm = false, .llama3_rope = true, .std = 0.15f, .seed = 2};
  return s;
}

typedef struct arena {
  char *base;
  size_t used, cap;
} arena;

static void fill_(arena *a, kiln_tensor *t, kiln_dtype dt, int64_t d0, int64_t d1, uint64_t *rs, float mean,
                  float std) {
  int64_t n = d0 * (d1 > 0 ? d1 : 1);
  size_t bytes = (size_t)n * kiln_dtype_size(dt);
  t->data = a->base + a->used;
  t->dtype = dt;
  t->ndim = d1 > 0 ? 2 : 1;
  t->shape[0] = d0;
  t->shape[1] = d1 > 0 ? d1 : 0;
  for (int64_t i = 0; i < n; i++) {
    float v = mean + std * rand_normal(rs);
    if (dt == KILN_F32) ((float *)(a->base + a->used))[i] = v;
    else if (dt == KILN_BF16) ((uint16_t *)(a->base + a->used))[i] = kiln_f32_to_bf16(v);
    else {
      /* f16 through f32 -> f16 by rounding the mantissa; values here are small and normal */
      float f = v;
      uint32_t u;
      memcpy(&u, &f, 4);
      uint32_t sign = (u >> 16) & 0x8000u;
      int32_t e = (int32_t)((u >> 23) & 0xff) - 127 + 15;
      uint32_t man = u & 0x7fffffu;
      uint16_t h;
      if (e <= 0) h = (uint16_t)sign; /* flush tiny values */
      else {
        uint32_t r = (man >> 13) + ((man >> 12) & 1u);
        if (r == 0x400u) { r = 0; e++; }
        h = (uint16_t)(sign | ((uint32_t)e << 10) | r);
      }
      ((uint16_t *)(a->base + a->used))[i] = h;
    }
  }
  a->used += (bytes + 63) & ~(size_t)63;
}

int rand_model_create(kiln_model **out, const rand_model_spec *s) {
  *out = NULL;
  kiln_model *m = calloc(1, sizeof *m);
  if (!m) return KILN_ENOMEM;
  kiln_config *c = &m->cfg;
  c->arch = s->arch;
  c->vocab_size = s->vocab;
  c->hidden_size = s->hidden;
  c->intermediate_size = s->inter;
  c->n_layers = s->layers;
  c->n_heads = s->heads;
  c->n_kv_heads = s->kv_heads;
  c->head_dim = s->head_dim;
  c->max_position_embeddings = s->max_pos;
  c->rms_norm_eps = 1e-6f;
  c->rope_theta = s->llama3_rope ? 500000.0 : 1000000.0;
  c->rope_type = s->llama3_rope ? KILN_ROPE_LLAMA3 : KILN_ROPE_DEFAULT;
  c->rope_factor = 8.0;
  c->rope_low_freq_factor = 1.0;
  c->rope_high_freq_factor = 4.0;
  c->rope_original_max_position = 64;
  c->tie_word_embeddings = s->tie;
  c->attention_bias = s->bias;
  c->qk_norm = s->qk_norm;
  c->torch_dtype = s->dtype;
  c->bos_token_id = -1;
  c->n_eos = 1;
  c->eos_token_ids[0] = 0;
  const int64_t H = s->hidden, I = s->inter, V = s->vocab, hd = s->head_dim;
  const int64_t qd = (int64_t)s->heads * hd, kvd = (int64_t)s->kv_heads * hd;
  size_t es = kiln_dtype_size(s->dtype);
  size_t cap = (size_t)(2 * V * H + 4 * H + s->layers * (3 * H + qd * H * 2 + kvd * H * 2 + qd + 2 * kvd + 2 * hd +
                                                       3 * I * H)) * es + (size_t)(40 + 20 * s->layers) * 64;
  arena a = {malloc(cap), 0, cap};
  m->layers = calloc((size_t)s->layers, sizeof *m->layers);
  if (!a.base || !m->layers) {
    free(a.base);
    free(m->layers);
    free(m);
    return KILN_ENOMEM;
  }
  m->impl = a.base;
  uint64_t rs = s->seed;
  fill_(&a, &m->embed, s->dtype, V, H, &rs, 0, s->std * 4);
  for (int l = 0; l < s->layers; l++) {
    kiln_layer_weights *L = &m->layers[l];
    fill_(&a, &L->attn_norm, s->dtype, H, 0, &rs, 1, 0.2f);
    fill_(&a, &L->wq, s->dtype, qd, H, &rs, 0, s->std);
    fill_(&a, &L->wk, s->dtype, kvd, H, &rs, 0, s->std);
    fill_(&a, &L->wv, s->dtype, kvd, H, &rs, 0, s->std);
    fill_(&a, &L->wo, s->dtype, H, qd, &rs, 0, s->std);
    if (s->bias) fill_(&a, &L->bo, s->dtype, H, 0, &rs, 0, 0.1f);
    if (s->bias) {
      fill_(&a, &L->bq, s->dtype, qd, 0, &rs, 0, 0.1f);
      fill_(&a, &L->bk, s->dtype, kvd, 0, &rs, 0, 0.1f);
      fill_(&a, &L->bv, s->dtype, kvd, 0, &rs, 0, 0.1f);
    }
    if (s->qk_norm) {
      fill_(&a, &L->q_norm, s->dtype, hd, 0, &rs, 1, 0.2f);
      fill_(&a, &L->k_norm, s->dtype, hd, 0, &rs, 1, 0.2f);
    }
    fill_(&a, &L->ffn_norm, s->dtype, H, 0, &rs, 1, 0.2f);
    fill_(&a, &L->w_gate, s->dtype, I, H, &rs, 0, s->std);
    fill_(&a, &L->w_up, s->dtype, I, H, &rs, 0, s->std);
    fill_(&a, &L->w_down, s->dtype, H, I, &rs, 0, s->std);
  }
  fill_(&a, &m->final_norm, s->dtype, H, 0, &rs, 1, 0.2f);
  if (s->tie) m->lm_head = m->embed;
  else fill_(&a, &m->lm_head, s->dtype, V, H, &rs, 0, s->std);
  m->weight_bytes = a.used;
  *out = m;
  return KILN_OK;
}

void rand_model_free(kiln_model *m) {
  if (!m) return;
  free(m->impl);
  free(m->layers);
  free(m);
}
