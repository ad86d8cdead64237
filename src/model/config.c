/*
 * config.json for Qwen3 and Llama, in the transformers 4 form (rope_theta / rope_scaling at the top level) and the
 * transformers 5 form (rope_parameters {rope_type, rope_theta, ...}); generation_config.json's token ids.
 *
 * Fields absent from the file take the defaults of transformers' Qwen3Config / LlamaConfig, so a config means here
 * what it means there: Qwen3 head_dim 128, num_key_value_heads 32, no bos/eos; Llama head_dim hidden/heads,
 * num_key_value_heads = heads, bos 1, eos 2; tie_word_embeddings false for both. A null head_dim or
 * num_key_value_heads is derived (hidden/heads, heads) as transformers does. Features the engine does not implement
 * (other rope types, sliding windows, MLP biases, other activations) are refused, never ignored.
 */
#include "model/config.h"

#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kiln/status.h"
#include "model/loader_io.h"

#define CONFIG_MAX_BYTES ((size_t)16 << 20)

/* Reads an integer field into *out when present and not null; 1 if read, 0 if absent, < 0 on error. A JSON real
 * with an integral value is accepted (some writers emit 4096.0). */
static int get_int(json_t *o, const char *key, int64_t lo, int64_t hi, int64_t *out, const char *path) {
  json_t *v = json_object_get(o, key);
  if (!v || json_is_null(v)) return 0;
  int64_t x;
  if (json_is_integer(v)) {
    x = (int64_t)json_integer_value(v);
  } else if (json_is_real(v) && json_real_value(v) == floor(json_real_value(v)) &&
             fabs(json_real_value(v)) < 9.0e15) {
    x = (int64_t)json_real_value(v);
  } else {
    return kiln_error(KILN_EFORMAT, "%s: '%s' is not an integer", path, key);
  }
  if (x < lo || x > hi)
    return kiln_error(KILN_ERANGE, "%s: '%s' = %lld is out of range [%lld, %lld]", path, key, (long long)x,
                      (long long)lo, (long long)hi);
  *out = x;
  return 1;
}

static int get_int32(json_t *o, const char *key, int lo, int hi, int *out, const char *path) {
  int64_t x = 0;
  int rc = get_int(o, key, lo, hi, &x, path);
  if (rc == 1) *out = (int)x;
  return rc;
}

static int get_num(json_t *o, const char *key, double *out, const char *path) {
  json_t *v = json_object_get(o, key);
  if (!v || json_is_null(v)) return 0;
  if (!json_is_number(v)) return kiln_error(KILN_EFORMAT, "%s: '%s' is not a number", path, key);
  *out = json_number_value(v);
  return 1;
}

static int get_bool(json_t *o, const char *key, bool *out, const char *path) {
  json_t *v = json_object_get(o, key);
  if (!v || json_is_null(v)) return 0;
  if (!json_is_boolean(v)) return kiln_error(KILN_EFORMAT, "%s: '%s' is not true or false", path, key);
  *out = json_is_true(v);
  return 1;
}

/* A string field, or NULL when absent or null; *bad set when present with another type. */
static const char *get_str(json_t *o, const char *key, bool *bad) {
  json_t *v = json_object_get(o, key);
  if (!v || json_is_null(v)) return NULL;
  if (!json_is_string(v)) {
    *bad = true;
    return NULL;
  }
  return json_string_value(v);
}

#define TRY(x)                                                                                                     \
  do {                                                                                                             \
    int rc_ = (x);                                                                                                 \
    if (rc_ < 0) return rc_;                                                                                       \
  } while (0)

/* eos_token_id: an int or a list of ints (unused slots become -1); null or absent leaves the ids as they are. */
static int get_token_ids(json_t *o, const char *key, int *ids, int *n, const char *path) {
  json_t *v = json_object_get(o, key);
  if (!v || json_is_null(v)) return 0;
  if (json_is_array(v)) {
    size_t k = json_array_size(v);
    if (k > KILN_MAX_EOS)
      return kiln_error(KILN_ERANGE, "%s: '%s' lists %zu ids (at most %d)", path, key, k, KILN_MAX_EOS);
    for (size_t i = 0; i < k; i++) {
      json_t *e = json_array_get(v, i);
      if (!json_is_integer(e) || json_integer_value(e) < 0 || json_integer_value(e) > INT32_MAX)
        return kiln_error(KILN_EFORMAT, "%s: '%s'[%zu] is not a token id", path, key, i);
      ids[i] = (int)json_integer_value(e);
    }
    for (size_t i = k; i < KILN_MAX_EOS; i++) ids[i] = -1;
    *n = (int)k;
    return 1;
  }
  int64_t x;
  TRY(get_int(o, key, 0, INT32_MAX, &x, path));
  ids[0] = (int)x;
  for (int i = 1; i < KILN_MAX_EOS; i++) ids[i] = -1;
  *n = 1;
  return 1;
}

static int parse_rope(kiln_config *c, json_t *root, const char *path) {
  double theta = 10000.0;
  TRY(get_num(root, "rope_theta", &theta, path));
  /* transformers 5 reads a transformers 4 rope_scaling as rope_parameters; rope_parameters wins when both exist. */
  const char *rp_key = "rope_parameters";
  json_t *rp = json_object_get(root, rp_key);
  if (!rp || json_is_null(rp)) {
    rp_key = "rope_scaling";
    rp = json_object_get(root, rp_key);
  }
  c->rope_type = KILN_ROPE_DEFAULT;
  c->rope_factor = 1.0;
  c->rope_low_freq_factor = c->rope_high_freq_factor = 0.0;
  c->rope_original_max_position = 0;
  if (rp && !json_is_null(rp)) {
    if (!json_is_object(rp)) return kiln_error(KILN_EFORMAT, "%s: '%s' is not an object", path, rp_key);
    /* Per-layer-type parameters ({"full_attention": {...}}): every layer here is full attention. */
    json_t *full = json_object_get(rp, "full_attention");
    if (json_is_object(full)) rp = full;
    TRY(get_num(rp, "rope_theta", &theta, path));
    bool bad = false;
    const char *type = get_str(rp, "rope_type", &bad);
    if (!type && !bad) type = get_str(rp, "type", &bad);
    if (bad) return kiln_error(KILN_EFORMAT, "%s: '%s' rope_type is not a string", path, rp_key);
    double prf = 1.0;
    TRY(get_num(rp, "partial_rotary_factor", &prf, path));
    if (prf != 1.0) return kiln_error(KILN_EUNSUPPORTED, "%s: partial_rotary_factor %g is not supported", path, prf);
    if (!type || strcmp(type, "default") == 0) {
      /* plain RoPE */
    } else if (strcmp(type, "llama3") == 0) {
      c->rope_type = KILN_ROPE_LLAMA3;
      static const char *need[] = {"factor", "low_freq_factor", "high_freq_factor"};
      double *dst[] = {&c->rope_factor, &c->rope_low_freq_factor, &c->rope_high_freq_factor};
      for (int i = 0; i < 3; i++) {
        int got;
        TRY(got = get_num(rp, need[i], dst[i], path));
        if (!got) return kiln_error(KILN_EFORMAT, "%s: llama3 rope scaling without '%s'", path, need[i]);
        if (!isfinite(*dst[i]) || *dst[i] <= 0)
          return kiln_error(KILN_ERANGE, "%s: llama3 rope '%s' = %g must be positive", path, need[i], *dst[i]);
      }
      if (c->rope_high_freq_factor <= c->rope_low_freq_factor)
        return kiln_error(KILN_ERANGE, "%s: llama3 rope high_freq_factor %g must exceed low_freq_factor %g", path,
                          c->rope_high_freq_factor, c->rope_low_freq_factor);
      int got;
      TRY(got = get_int32(rp, "original_max_position_embeddings", 1, INT32_MAX, &c->rope_original_max_position,
                          path));
      if (!got)
        TRY(got = get_int32(root, "original_max_position_embeddings", 1, INT32_MAX, &c->rope_original_max_position,
                            path));
      if (!got)
        return kiln_error(KILN_EFORMAT, "%s: llama3 rope scaling without 'original_max_position_embeddings'", path);
    } else {
      return kiln_error(KILN_EUNSUPPORTED, "%s: rope_type '%s' is not supported (default, llama3)", path, type);
    }
  }
  if (!isfinite(theta) || theta <= 0) return kiln_error(KILN_ERANGE, "%s: rope_theta %g must be positive", path, theta);
  c->rope_theta = theta;
  return KILN_OK;
}

/* Layers other than full attention (sliding windows) are refused. */
static int check_attention_kinds(const kiln_config *c, json_t *root, const char *path) {
  json_t *lt = json_object_get(root, "layer_types");
  if (lt && !json_is_null(lt)) {
    if (!json_is_array(lt)) return kiln_error(KILN_EFORMAT, "%s: 'layer_types' is not a list", path);
    for (size_t i = 0; i < json_array_size(lt); i++) {
      const char *s = json_string_value(json_array_get(lt, i));
      if (!s) return kiln_error(KILN_EFORMAT, "%s: 'layer_types'[%zu] is not a string", path, i);
      if (strcmp(s, "full_attention") != 0)
        return kiln_error(KILN_EUNSUPPORTED, "%s: layer %zu is '%s'; only full_attention is supported", path, i, s);
    }
    return KILN_OK;
  }
  bool sliding = false;
  TRY(get_bool(root, "use_sliding_window", &sliding, path));
  if (c->arch == KILN_ARCH_QWEN3 && sliding) {
    int mwl = 28;
    TRY(get_int32(root, "max_window_layers", 0, INT32_MAX, &mwl, path));
    json_t *sw = json_object_get(root, "sliding_window");
    bool has_window = !json_is_null(sw); /* absent: the default window 4096 */
    if (has_window && mwl < c->n_layers)
      return kiln_error(KILN_EUNSUPPORTED, "%s: use_sliding_window is not supported", path);
  }
  return KILN_OK;
}

int kiln_config_check(const kiln_config *c, const char *path) {
  if (c->vocab_size <= 0 || c->hidden_size <= 0 || c->intermediate_size <= 0 || c->n_layers <= 0 ||
      c->n_heads <= 0 || c->n_kv_heads <= 0 || c->head_dim <= 0 || c->max_position_embeddings <= 0)
    return kiln_error(KILN_ERANGE, "%s: sizes must be positive", path);
  if (c->vocab_size > (1 << 24) || c->hidden_size > (1 << 18) || c->intermediate_size > (1 << 20) ||
      c->n_layers > 4096 || c->n_heads > 4096 || c->n_kv_heads > 4096 || c->head_dim > 4096)
    return kiln_error(KILN_ERANGE, "%s: sizes too large", path);
  if (c->n_heads % c->n_kv_heads != 0)
    return kiln_error(KILN_EFORMAT, "%s: num_attention_heads %d is not a multiple of num_key_value_heads %d", path,
                      c->n_heads, c->n_kv_heads);
  if (c->head_dim % 2 != 0)
    return kiln_error(KILN_EFORMAT, "%s: head_dim %d is odd (RoPE rotates pairs)", path, c->head_dim);
  if (!(c->rms_norm_eps > 0) || !isfinite(c->rms_norm_eps))
    return kiln_error(KILN_ERANGE, "%s: rms_norm_eps must be positive", path);
  if (!(c->rope_theta > 0) || !isfinite(c->rope_theta))
    return kiln_error(KILN_ERANGE, "%s: rope_theta must be positive", path);
  if (c->n_eos < 0 || c->n_eos > KILN_MAX_EOS) return kiln_error(KILN_ERANGE, "%s: bad eos count", path);
  return KILN_OK;
}

static kiln_dtype dtype_from_torch(const char *s) {
  if (!s) return KILN_F32;
  if (strcmp(s, "bfloat16") == 0) return KILN_BF16;
  if (strcmp(s, "float16") == 0 || strcmp(s, "half") == 0) return KILN_F16;
  return KILN_F32;
}

static int parse_root(kiln_config *c, json_t *root, const char *path) {
  if (!json_is_object(root)) return kiln_error(KILN_EFORMAT, "%s: not a JSON object", path);
  bool bad = false;
  const char *mt = get_str(root, "model_type", &bad);
  if (bad) return kiln_error(KILN_EFORMAT, "%s: 'model_type' is not a string", path);
  if (!mt) return kiln_error(KILN_EFORMAT, "%s: no model_type", path);
  memset(c, 0, sizeof *c);
  for (int i = 0; i < KILN_MAX_EOS; i++) c->eos_token_ids[i] = -1; /* unused slots */
  if (strcmp(mt, "qwen3") == 0) {
    c->arch = KILN_ARCH_QWEN3;
    c->vocab_size = 151936;
    c->hidden_size = 4096;
    c->intermediate_size = 22016;
    c->n_layers = 32;
    c->n_heads = 32;
    c->n_kv_heads = 32;
    c->head_dim = 128;
    c->max_position_embeddings = 32768;
    c->qk_norm = true;
    c->bos_token_id = -1;
    c->n_eos = 0;
  } else if (strcmp(mt, "llama") == 0) {
    c->arch = KILN_ARCH_LLAMA;
    c->vocab_size = 32000;
    c->hidden_size = 4096;
    c->intermediate_size = 11008;
    c->n_layers = 32;
    c->n_heads = 32;
    c->n_kv_heads = -1; /* = heads */
    c->head_dim = -1;   /* = hidden / heads */
    c->max_position_embeddings = 2048;
    c->qk_norm = false;
    c->bos_token_id = 1;
    c->eos_token_ids[0] = 2;
    c->n_eos = 1;
  } else {
    return kiln_error(KILN_EUNSUPPORTED, "%s: model_type '%s' is not supported (qwen3, llama)", path, mt);
  }
  double eps = 1e-6;
  TRY(get_int32(root, "vocab_size", 1, 1 << 24, &c->vocab_size, path));
  TRY(get_int32(root, "hidden_size", 1, 1 << 18, &c->hidden_size, path));
  TRY(get_int32(root, "intermediate_size", 1, 1 << 20, &c->intermediate_size, path));
  TRY(get_int32(root, "num_hidden_layers", 1, 4096, &c->n_layers, path));
  TRY(get_int32(root, "num_attention_heads", 1, 4096, &c->n_heads, path));
  TRY(get_int32(root, "max_position_embeddings", 1, INT32_MAX, &c->max_position_embeddings, path));
  /* An explicit null means "derive"; absence means the class default (which for Llama is also "derive"). */
  json_t *kv = json_object_get(root, "num_key_value_heads");
  if (kv && json_is_null(kv)) c->n_kv_heads = -1;
  TRY(get_int32(root, "num_key_value_heads", 1, 4096, &c->n_kv_heads, path));
  if (c->n_kv_heads < 0) c->n_kv_heads = c->n_heads;
  json_t *hd = json_object_get(root, "head_dim");
  if (hd && json_is_null(hd)) c->head_dim = -1;
  TRY(get_int32(root, "head_dim", 1, 4096, &c->head_dim, path));
  if (c->head_dim < 0) {
    if (c->hidden_size % c->n_heads != 0)
      return kiln_error(KILN_EFORMAT, "%s: no head_dim and hidden_size %d is not a multiple of num_attention_heads %d",
                        path, c->hidden_size, c->n_heads);
    c->head_dim = c->hidden_size / c->n_heads;
  }
  TRY(get_num(root, "rms_norm_eps", &eps, path));
  c->rms_norm_eps = (float)eps;
  TRY(get_bool(root, "tie_word_embeddings", &c->tie_word_embeddings, path));
  TRY(get_bool(root, "attention_bias", &c->attention_bias, path));
  bool mlp_bias = false;
  TRY(get_bool(root, "mlp_bias", &mlp_bias, path));
  if (mlp_bias) return kiln_error(KILN_EUNSUPPORTED, "%s: mlp_bias is not supported", path);
  const char *act = get_str(root, "hidden_act", &bad);
  if (bad) return kiln_error(KILN_EFORMAT, "%s: 'hidden_act' is not a string", path);
  if (act && strcmp(act, "silu") != 0)
    return kiln_error(KILN_EUNSUPPORTED, "%s: hidden_act '%s' is not supported (silu)", path, act);
  TRY(parse_rope(c, root, path));
  TRY(check_attention_kinds(c, root, path));
  const char *dt = get_str(root, "dtype", &bad);
  if (!dt) dt = get_str(root, "torch_dtype", &bad);
  c->torch_dtype = dtype_from_torch(dt);
  json_t *bos = json_object_get(root, "bos_token_id");
  if (bos && json_is_null(bos)) c->bos_token_id = -1;
  TRY(get_int32(root, "bos_token_id", 0, INT32_MAX, &c->bos_token_id, path));
  json_t *eos = json_object_get(root, "eos_token_id");
  if (eos && json_is_null(eos)) c->n_eos = 0;
  TRY(get_token_ids(root, "eos_token_id", c->eos_token_ids, &c->n_eos, path));
  return kiln_config_check(c, path);
}

static json_t *load_json(const char *json, size_t len, const char *path, int *rc) {
  json_error_t err;
  json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &err);
  if (!root)
    *rc = kiln_error(KILN_EFORMAT, "%s: malformed JSON: %s (line %d, column %d)", path, err.text, err.line,
                     err.column);
  return root;
}

int kiln_config_parse(kiln_config *cfg, const char *json, size_t len, const char *path) {
  if (!cfg || (!json && len)) return kiln_error(KILN_EINVAL, "kiln_config_parse: NULL argument");
  if (!path) path = "config.json";
  int rc = KILN_OK;
  json_t *root = load_json(json ? json : "", len, path, &rc);
  if (!root) return rc;
  rc = parse_root(cfg, root, path);
  json_decref(root);
  return rc;
}

int kiln_genconfig_parse(kiln_config *cfg, const char *json, size_t len, const char *path) {
  if (!path) path = "generation_config.json";
  int rc = KILN_OK;
  json_t *root = load_json(json ? json : "", json ? len : 0, path, &rc);
  if (!root) return rc;
  if (!json_is_object(root)) {
    rc = kiln_error(KILN_EFORMAT, "%s: not a JSON object", path);
  } else {
    int ids[KILN_MAX_EOS], n = 0, bos = cfg->bos_token_id;
    rc = get_token_ids(root, "eos_token_id", ids, &n, path);
    if (rc > 0) {
      memcpy(cfg->eos_token_ids, ids, sizeof ids);
      cfg->n_eos = n;
    }
    if (rc >= 0) rc = get_int32(root, "bos_token_id", 0, INT32_MAX, &bos, path);
    if (rc >= 0) {
      cfg->bos_token_id = bos;
      rc = KILN_OK;
    }
  }
  json_decref(root);
  return rc;
}

int kiln_config_load_file(kiln_config *cfg, const char *path) {
  if (!cfg || !path) return kiln_error(KILN_EINVAL, "kiln_config_load_file: NULL argument");
  char *text = NULL;
  size_t len = 0;
  int rc = kiln_loader_read_file(path, CONFIG_MAX_BYTES, &text, &len);
  if (rc == KILN_OK) rc = kiln_config_parse(cfg, text, len, path);
  free(text);
  return rc;
}

int kiln_config_load(kiln_config *cfg, const char *dir) {
  if (!cfg || !dir) return kiln_error(KILN_EINVAL, "kiln_config_load: NULL argument");
  char *path = kiln_loader_join(dir, "config.json");
  char *gpath = kiln_loader_join(dir, "generation_config.json");
  char *text = NULL;
  size_t len = 0;
  int rc = KILN_OK;
  if (!path || !gpath) {
    rc = kiln_error(KILN_ENOMEM, "%s: out of memory", dir);
    goto done;
  }
  if ((rc = kiln_loader_read_file(path, CONFIG_MAX_BYTES, &text, &len)) != KILN_OK) goto done;
  if ((rc = kiln_config_parse(cfg, text, len, path)) != KILN_OK) goto done;
  free(text);
  text = NULL;
  rc = kiln_loader_read_file(gpath, CONFIG_MAX_BYTES, &text, &len);
  if (rc == KILN_ENOTFOUND) {
    kiln_clear_error();
    rc = KILN_OK;
    goto done;
  }
  if (rc != KILN_OK) goto done;
  rc = kiln_genconfig_parse(cfg, text, len, gpath);
done:
  free(text);
  free(path);
  free(gpath);
  return rc;
}
