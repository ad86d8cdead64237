/*
 * bench/peers/gguf_export.c: writes a Qwen3 model as a GGUF file that llama.cpp loads, so that llama.cpp runs the
 * very weights kiln runs (bench/peers/llama_cpp.sh):
 *
 *   gguf_export --out FILE.gguf --model DIR [--tokenizer tokenizer.json]
 *   gguf_export --out FILE.gguf --config CONFIG.json --tokenizer tokenizer.json [--dtype bf16|f16|f32] [--seed N]
 *
 * --model: a checkpoint as kiln loads it (weights written as stored). --config: random weights of that shape
 * (kiln_model_random, the benchmark's shapes). Matrices keep their dtype and bytes (a row-major [out][in] matrix
 * is the GGUF tensor {in, out}); norm weights are written as f32, as llama.cpp's own converter does. The
 * tokenizer's vocabulary, added tokens and merges become llama.cpp's "gpt2" (byte-level BPE) vocabulary with the
 * Qwen2 pre-tokenizer; ids past the tokenizer's up to the model's vocab_size are unused padding tokens.
 *
 * Exit status 0 on success; on bad input one line on stderr and status 1.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf_write.h"
#include "kiln/half.h"
#include "kiln/kiln.h"

/* llama.cpp's token types */
enum { TT_NORMAL = 1, TT_CONTROL = 3, TT_USER_DEFINED = 4, TT_UNUSED = 5 };

typedef struct vocab {
  char **tokens; /* [n]: owned strings */
  int32_t *types;
  size_t n;
  char **merges;
  size_t n_merges;
} vocab;

static void vocab_free(vocab *v) {
  for (size_t i = 0; v->tokens && i < v->n; i++) free(v->tokens[i]);
  for (size_t i = 0; v->merges && i < v->n_merges; i++) free(v->merges[i]);
  free(v->tokens), free(v->types), free(v->merges);
  memset(v, 0, sizeof *v);
}

static int set_token_(vocab *v, const char *path, json_int_t id, const char *text, int32_t type) {
  if (id < 0 || (size_t)id >= v->n)
    return kiln_error(KILN_ERANGE, "%s: token id %lld outside the model's vocabulary of %zu", path, (long long)id,
                      v->n);
  free(v->tokens[id]);
  if (!(v->tokens[id] = strdup(text))) return kiln_error(KILN_ENOMEM, "out of memory");
  v->types[id] = type;
  return 0;
}

/* Reads a byte-level BPE tokenizer.json into n_vocab tokens (padding the ids it does not name) and its merges. */
static int vocab_load(vocab *v, const char *path, size_t n_vocab) {
  json_error_t je;
  json_t *root = json_load_file(path, 0, &je);
  if (!root) return kiln_error(KILN_EFORMAT, "%s: line %d: %s", path, je.line, je.text);
  int rc = 0;
  json_t *model = json_object_get(root, "model");
  json_t *jv = json_object_get(model, "vocab"), *jm = json_object_get(model, "merges");
  const char *type = json_string_value(json_object_get(model, "type"));
  if (!type || strcmp(type, "BPE") || !json_is_object(jv) || !json_is_array(jm)) {
    rc = kiln_error(KILN_EUNSUPPORTED, "%s: not a byte-level BPE tokenizer (model.type BPE with vocab and merges)",
                    path);
    goto out;
  }
  v->n = n_vocab;
  v->tokens = calloc(n_vocab, sizeof *v->tokens);
  v->types = calloc(n_vocab, sizeof *v->types);
  v->n_merges = json_array_size(jm);
  v->merges = calloc(v->n_merges ? v->n_merges : 1, sizeof *v->merges);
  if (!v->tokens || !v->types || !v->merges) {
    rc = kiln_error(KILN_ENOMEM, "out of memory");
    goto out;
  }
  const char *key;
  json_t *val;
  json_object_foreach(jv, key, val) {
    if (!json_is_integer(val)) {
      rc = kiln_error(KILN_EFORMAT, "%s: vocab entry \"%s\" is not an integer id", path, key);
      goto out;
    }
    if ((rc = set_token_(v, path, json_integer_value(val), key, TT_NORMAL))) goto out;
  }
  size_t i;
  json_t *at;
  json_array_foreach(json_object_get(root, "added_tokens"), i, at) {
    const char *content = json_string_value(json_object_get(at, "content"));
    json_t *id = json_object_get(at, "id");
    if (!content || !json_is_integer(id)) {
      rc = kiln_error(KILN_EFORMAT, "%s: added token %zu without content and id", path, i);
      goto out;
    }
    int32_t tt = json_is_true(json_object_get(at, "special")) ? TT_CONTROL : TT_USER_DEFINED;
    if ((rc = set_token_(v, path, json_integer_value(id), content, tt))) goto out;
  }
  for (size_t id = 0; id < n_vocab; id++) {
    if (v->tokens[id]) continue;
    char pad[32];
    snprintf(pad, sizeof pad, "[PAD%zu]", id);
    if ((rc = set_token_(v, path, (json_int_t)id, pad, TT_UNUSED))) goto out;
  }
  /* merges: "a b" strings (older files) or ["a", "b"] pairs */
  json_array_foreach(jm, i, at) {
    const char *s = json_string_value(at);
    if (s) {
      v->merges[i] = strdup(s);
    } else {
      const char *a = json_string_value(json_array_get(at, 0)), *b = json_string_value(json_array_get(at, 1));
      if (!a || !b || json_array_size(at) != 2) {
        rc = kiln_error(KILN_EFORMAT, "%s: merge %zu is neither \"a b\" nor [a, b]", path, i);
        goto out;
      }
      size_t la = strlen(a), lb = strlen(b);
      if ((v->merges[i] = malloc(la + lb + 2))) {
        memcpy(v->merges[i], a, la);
        v->merges[i][la] = ' ';
        memcpy(v->merges[i] + la + 1, b, lb + 1);
      }
    }
    if (!v->merges[i]) {
      rc = kiln_error(KILN_ENOMEM, "out of memory");
      goto out;
    }
  }
out:
  json_decref(root);
  return rc;
}

/* ---- tensor data sources ---- */

static int write_raw_(void *user, gguf_w *w, const void *arg) {
  (void)user;
  const kiln_tensor *t = arg;
  const char *p = t->data;
  uint64_t n = (uint64_t)kiln_tensor_numel(t) * kiln_dtype_size(t->dtype);
  for (uint64_t o = 0; o < n; o += 1u << 26) { /* 64 MiB at a time */
    size_t len = n - o < (1u << 26) ? (size_t)(n - o) : (size_t)1 << 26;
    int rc = gguf_w_bytes(w, p + o, len);
    if (rc) return rc;
  }
  return 0;
}

static float elem_f32_(const kiln_tensor *t, int64_t i) {
  switch (t->dtype) {
  case KILN_F32: return ((const float *)t->data)[i];
  case KILN_F16: return kiln_f16_to_f32(((const uint16_t *)t->data)[i]);
  default: return kiln_bf16_to_f32(((const uint16_t *)t->data)[i]);
  }
}

static int write_f32_(void *user, gguf_w *w, const void *arg) {
  (void)user;
  const kiln_tensor *t = arg;
  float buf[256];
  const int64_t n = kiln_tensor_numel(t);
  for (int64_t i = 0; i < n;) {
    int k = 0;
    for (; k < 256 && i < n; k++, i++) buf[k] = elem_f32_(t, i);
    int rc = gguf_w_bytes(w, buf, (size_t)k * sizeof(float));
    if (rc) return rc;
  }
  return 0;
}

static uint32_t gguf_type_(kiln_dtype dt) {
  return dt == KILN_F32 ? GGUF_TYPE_F32 : dt == KILN_F16 ? GGUF_TYPE_F16 : GGUF_TYPE_BF16;
}

/* A matrix [rows][cols] as the GGUF tensor {cols, rows}, its bytes as stored. */
static int add_matrix_(gguf_w *w, const char *name, const kiln_tensor *t) {
  if (!t->data || t->ndim != 2) return kiln_error(KILN_EINVAL, "tensor %s: expected a matrix", name);
  const uint64_t ne[2] = {(uint64_t)t->shape[1], (uint64_t)t->shape[0]};
  return gguf_w_tensor_add(w, name, 2, ne, gguf_type_(t->dtype), write_raw_, t);
}
static int add_vector_(gguf_w *w, const char *name, const kiln_tensor *t) {
  if (!t->data || t->ndim != 1) return kiln_error(KILN_EINVAL, "tensor %s: expected a vector", name);
  const uint64_t ne[1] = {(uint64_t)t->shape[0]};
  return gguf_w_tensor_add(w, name, 1, ne, GGUF_TYPE_F32, write_f32_, t);
}

/* Every key llama.cpp's qwen3 loader and its gpt2 vocabulary read, then the tensors, named as llama.cpp names them. */
static int describe_(gguf_w *w, const kiln_model *m, const vocab *v, const char *name) {
  const kiln_config *c = &m->cfg;
  const uint32_t ftype = m->embed.dtype == KILN_F32 ? 0 : m->embed.dtype == KILN_F16 ? 1 : 32;
  int rc = 0;
#define TRY(x) \
  if ((rc = (x))) return rc
  TRY(gguf_w_kv_str(w, "general.architecture", "qwen3"));
  TRY(gguf_w_kv_str(w, "general.name", name));
  TRY(gguf_w_kv_u32(w, "general.alignment", GGUF_ALIGNMENT));
  TRY(gguf_w_kv_u32(w, "general.file_type", ftype));
  TRY(gguf_w_kv_u32(w, "qwen3.context_length", (uint32_t)c->max_position_embeddings));
  TRY(gguf_w_kv_u32(w, "qwen3.embedding_length", (uint32_t)c->hidden_size));
  TRY(gguf_w_kv_u32(w, "qwen3.block_count", (uint32_t)c->n_layers));
  TRY(gguf_w_kv_u32(w, "qwen3.feed_forward_length", (uint32_t)c->intermediate_size));
  TRY(gguf_w_kv_u32(w, "qwen3.attention.head_count", (uint32_t)c->n_heads));
  TRY(gguf_w_kv_u32(w, "qwen3.attention.head_count_kv", (uint32_t)c->n_kv_heads));
  TRY(gguf_w_kv_u32(w, "qwen3.attention.key_length", (uint32_t)c->head_dim));
  TRY(gguf_w_kv_u32(w, "qwen3.attention.value_length", (uint32_t)c->head_dim));
  TRY(gguf_w_kv_u32(w, "qwen3.rope.dimension_count", (uint32_t)c->head_dim));
  TRY(gguf_w_kv_f32(w, "qwen3.rope.freq_base", (float)c->rope_theta));
  TRY(gguf_w_kv_f32(w, "qwen3.attention.layer_norm_rms_epsilon", c->rms_norm_eps));
  TRY(gguf_w_kv_str(w, "tokenizer.ggml.model", "gpt2"));
  TRY(gguf_w_kv_str(w, "tokenizer.ggml.pre", "qwen2"));
  TRY(gguf_w_kv_strs(w, "tokenizer.ggml.tokens", (const char *const *)v->tokens, v->n));
  TRY(gguf_w_kv_i32s(w, "tokenizer.ggml.token_type", v->types, v->n));
  TRY(gguf_w_kv_strs(w, "tokenizer.ggml.merges", (const char *const *)v->merges, v->n_merges));
  if (c->bos_token_id >= 0) TRY(gguf_w_kv_u32(w, "tokenizer.ggml.bos_token_id", (uint32_t)c->bos_token_id));
  if (c->n_eos > 0) TRY(gguf_w_kv_u32(w, "tokenizer.ggml.eos_token_id", (uint32_t)c->eos_token_ids[0]));
  TRY(gguf_w_kv_bool(w, "tokenizer.ggml.add_bos_token", 0));

  TRY(add_matrix_(w, "token_embd.weight", &m->embed));
  TRY(add_vector_(w, "output_norm.weight", &m->final_norm));
  if (!c->tie_word_embeddings && m->lm_head.data != m->embed.data) TRY(add_matrix_(w, "output.weight", &m->lm_head));
  for (int l = 0; l < c->n_layers; l++) {
    const kiln_layer_weights *L = &m->layers[l];
    char n[64];
#define NAME(s) (snprintf(n, sizeof n, "blk.%d." s ".weight", l), n)
    TRY(add_vector_(w, NAME("attn_norm"), &L->attn_norm));
    TRY(add_matrix_(w, NAME("attn_q"), &L->wq));
    TRY(add_matrix_(w, NAME("attn_k"), &L->wk));
    TRY(add_matrix_(w, NAME("attn_v"), &L->wv));
    TRY(add_matrix_(w, NAME("attn_output"), &L->wo));
    TRY(add_vector_(w, NAME("attn_q_norm"), &L->q_norm));
    TRY(add_vector_(w, NAME("attn_k_norm"), &L->k_norm));
    TRY(add_vector_(w, NAME("ffn_norm"), &L->ffn_norm));
    TRY(add_matrix_(w, NAME("ffn_gate"), &L->w_gate));
    TRY(add_matrix_(w, NAME("ffn_up"), &L->w_up));
    TRY(add_matrix_(w, NAME("ffn_down"), &L->w_down));
#undef NAME
  }
#undef TRY
  return 0;
}

static int usage_(void) {
  fprintf(stderr, "usage: gguf_export --out FILE.gguf (--model DIR | --config CONFIG.json) [--tokenizer FILE] "
                  "[--dtype bf16|f16|f32] [--seed N]\n");
  return 1;
}

int main(int argc, char **argv) {
  const char *out = NULL, *dir = NULL, *config = NULL, *tok = NULL, *dtype = "bf16";
  unsigned long long seed = 1;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
    if (!val) return usage_();
    if (!strcmp(a, "--out")) out = val;
    else if (!strcmp(a, "--model")) dir = val;
    else if (!strcmp(a, "--config")) config = val;
    else if (!strcmp(a, "--tokenizer")) tok = val;
    else if (!strcmp(a, "--dtype")) dtype = val;
    else if (!strcmp(a, "--seed")) seed = strtoull(val, NULL, 10);
    else return usage_();
    i++;
  }
  if (!out || !dir == !config || (config && !tok)) return usage_();
  kiln_dtype dt = !strcmp(dtype, "bf16") ? KILN_BF16 : !strcmp(dtype, "f16") ? KILN_F16 : KILN_F32;
  if (strcmp(dtype, "bf16") && strcmp(dtype, "f16") && strcmp(dtype, "f32")) return usage_();

  kiln_model *m = NULL;
  vocab v = {0};
  gguf_w w;
  gguf_w_init(&w);
  char tok_path[4096];
  int rc;
  if (dir) {
    rc = kiln_model_load(&m, dir, NULL, NULL);
    if (!tok) {
      snprintf(tok_path, sizeof tok_path, "%s/tokenizer.json", dir);
      tok = tok_path;
    }
  } else {
    kiln_config cfg;
    rc = kiln_config_load_file(&cfg, config);
    if (!rc) rc = kiln_model_random(&m, &cfg, dt, seed);
  }
  if (!rc && m->cfg.arch != KILN_ARCH_QWEN3)
    rc = kiln_error(KILN_EUNSUPPORTED, "only Qwen3 models are exported (llama.cpp's llama architecture also "
                                       "wants q/k rows permuted for its RoPE layout)");
  if (!rc && (m->cfg.attention_bias || !m->cfg.qk_norm))
    rc = kiln_error(KILN_EUNSUPPORTED, "a Qwen3 model with attention biases or without q/k norms");
  if (!rc) rc = vocab_load(&v, tok, (size_t)m->cfg.vocab_size);
  if (!rc) rc = describe_(&w, m, &v, dir ? dir : config);
  if (!rc) rc = gguf_w_write(&w, out, NULL);
  if (rc) fprintf(stderr, "gguf_export: %s\n", kiln_last_error());
  gguf_w_free(&w);
  vocab_free(&v);
  kiln_model_free(m);
  return rc ? 1 : 0;
}
