/*
 * Checkpoint loading: config.json + generation_config.json + safetensors (one file, or shards listed in
 * model.safetensors.index.json), every needed tensor bound by its Hugging Face name and checked against the config.
 *
 * As in transformers, a single model.safetensors is preferred over an index when both exist, tensors the
 * architecture does not use (rotary inv_freq buffers and the like) are ignored, and tied embeddings mean
 * lm_head = embed_tokens whatever the file holds. After binding, the mapped pages are read in once, in chunks,
 * reporting progress, so the first forward pass does not pay for page faults and a progress bar shows real work.
 */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "kiln/model.h"
#include "kiln/status.h"
#include "model/loader_io.h"
#include "model/model_impl.h"
#include "model/safetensors.h"

#define INDEX_MAX_BYTES ((size_t)64 << 20)
#define PREFAULT_CHUNK ((size_t)32 << 20)

kiln_model *kiln_model_alloc_(const kiln_config *cfg) {
  kiln_model *m = calloc(1, sizeof *m);
  kiln_model_impl *impl = calloc(1, sizeof *impl);
  kiln_layer_weights *layers = cfg->n_layers > 0 ? calloc((size_t)cfg->n_layers, sizeof *layers) : NULL;
  if (!m || !impl || (cfg->n_layers > 0 && !layers)) {
    free(m);
    free(impl);
    free(layers);
    kiln_error(KILN_ENOMEM, "model: out of memory");
    return NULL;
  }
  m->cfg = *cfg;
  m->impl = impl;
  m->layers = layers;
  return m;
}

static void spec_set(kiln_wspec *s, kiln_tensor *slot, int ndim, int64_t d0, int64_t d1, bool norm, const char *fmt,
                     int layer) {
  snprintf(s->name, sizeof s->name, fmt, layer);
  s->slot = slot;
  s->ndim = ndim;
  s->shape[0] = d0;
  s->shape[1] = d1;
  s->is_norm = norm;
}

int kiln_model_specs_(kiln_model *m, kiln_wspec **out, size_t *n) {
  const kiln_config *c = &m->cfg;
  size_t cap = 3 + (size_t)c->n_layers * 15, k = 0;
  kiln_wspec *s = calloc(cap, sizeof *s);
  if (!s) return kiln_error(KILN_ENOMEM, "model: out of memory");
  int64_t H = c->hidden_size, V = c->vocab_size, I = c->intermediate_size, D = c->head_dim;
  int64_t Q = (int64_t)c->n_heads * D, KV = (int64_t)c->n_kv_heads * D;
  spec_set(&s[k++], &m->embed, 2, V, H, false, "model.embed_tokens.weight", 0);
  for (int l = 0; l < c->n_layers; l++) {
    kiln_layer_weights *w = &m->layers[l];
    spec_set(&s[k++], &w->attn_norm, 1, H, 0, true, "model.layers.%d.input_layernorm.weight", l);
    spec_set(&s[k++], &w->wq, 2, Q, H, false, "model.layers.%d.self_attn.q_proj.weight", l);
    spec_set(&s[k++], &w->wk, 2, KV, H, false, "model.layers.%d.self_attn.k_proj.weight", l);
    spec_set(&s[k++], &w->wv, 2, KV, H, false, "model.layers.%d.self_attn.v_proj.weight", l);
    if (c->attention_bias) {
      spec_set(&s[k++], &w->bq, 1, Q, 0, false, "model.layers.%d.self_attn.q_proj.bias", l);
      spec_set(&s[k++], &w->bk, 1, KV, 0, false, "model.layers.%d.self_attn.k_proj.bias", l);
      spec_set(&s[k++], &w->bv, 1, KV, 0, false, "model.layers.%d.self_attn.v_proj.bias", l);
    }
    if (c->qk_norm) {
      spec_set(&s[k++], &w->q_norm, 1, D, 0, true, "model.layers.%d.self_attn.q_norm.weight", l);
      spec_set(&s[k++], &w->k_norm, 1, D, 0, true, "model.layers.%d.self_attn.k_norm.weight", l);
    }
    spec_set(&s[k++], &w->wo, 2, H, Q, false, "model.layers.%d.self_attn.o_proj.weight", l);
    /* transformers gives o_proj a bias too when attention_bias is set (LlamaAttention, Qwen3Attention) */
    if (c->attention_bias)
      spec_set(&s[k++], &w->bo, 1, H, 0, false, "model.layers.%d.self_attn.o_proj.bias", l);
    spec_set(&s[k++], &w->ffn_norm, 1, H, 0, true, "model.layers.%d.post_attention_layernorm.weight", l);
    spec_set(&s[k++], &w->w_gate, 2, I, H, false, "model.layers.%d.mlp.gate_proj.weight", l);
    spec_set(&s[k++], &w->w_up, 2, I, H, false, "model.layers.%d.mlp.up_proj.weight", l);
    spec_set(&s[k++], &w->w_down, 2, H, I, false, "model.layers.%d.mlp.down_proj.weight", l);
  }
  spec_set(&s[k++], &m->final_norm, 1, H, 0, true, "model.norm.weight", 0);
  if (!c->tie_word_embeddings) spec_set(&s[k++], &m->lm_head, 2, V, H, false, "lm_head.weight", 0);
  *out = s;
  *n = k;
  return KILN_OK;
}

void kiln_model_free(kiln_model *m) {
  if (!m) return;
  kiln_model_impl *impl = m->impl;
  if (impl) {
    for (size_t i = 0; i < impl->n_files; i++) kiln_st_close(&impl->files[i]);
    free(impl->files);
    for (size_t i = 0; i < impl->n_copies; i++) free(impl->copies[i]);
    free(impl->copies);
    free(impl->owned);
    free(impl);
  }
  free(m->layers);
  free(m->dir);
  free(m);
}

/* ---- loading ---- */

typedef struct load_ctx {
  kiln_model *m;
  kiln_model_impl *impl;
  const char *dir;
  char *index_path;   /* set when sharded */
  json_t *index;      /* the parsed index (owns weight_map) */
  json_t *weight_map;
  const char **shard_names; /* [n_files], pointing into `index` */
} load_ctx;

static int shard_name_ok(const char *s) {
  return s[0] != '\0' && strchr(s, '/') == NULL && strchr(s, '\\') == NULL && strcmp(s, ".") != 0 &&
         strcmp(s, "..") != 0;
}

static int open_single(load_ctx *x, const char *path) {
  x->impl->files = calloc(1, sizeof *x->impl->files);
  if (!x->impl->files) return kiln_error(KILN_ENOMEM, "%s: out of memory", path);
  int rc = kiln_st_open(&x->impl->files[0], path);
  if (rc == KILN_OK) x->impl->n_files = 1;
  return rc;
}

static int open_sharded(load_ctx *x) {
  const char *ip = x->index_path;
  char *text = NULL;
  size_t len = 0;
  int rc = kiln_loader_read_file(ip, INDEX_MAX_BYTES, &text, &len);
  if (rc != KILN_OK) return rc;
  json_error_t err;
  x->index = json_loadb(text, len, JSON_REJECT_DUPLICATES, &err);
  free(text);
  if (!x->index)
    return kiln_error(KILN_EFORMAT, "%s: malformed JSON: %s (line %d, column %d)", ip, err.text, err.line, err.column);
  x->weight_map = json_is_object(x->index) ? json_object_get(x->index, "weight_map") : NULL;
  if (!json_is_object(x->weight_map)) return kiln_error(KILN_EFORMAT, "%s: no weight_map object", ip);
  size_t n = json_object_size(x->weight_map);
  x->shard_names = calloc(n ? n : 1, sizeof *x->shard_names);
  x->impl->files = calloc(n ? n : 1, sizeof *x->impl->files);
  if (!x->shard_names || !x->impl->files) return kiln_error(KILN_ENOMEM, "%s: out of memory", ip);
  const char *key;
  json_t *v;
  json_object_foreach(x->weight_map, key, v) {
    const char *s = json_string_value(v);
    if (!s) return kiln_error(KILN_EFORMAT, "%s: weight_map entry '%s' is not a file name", ip, key);
    if (!shard_name_ok(s)) return kiln_error(KILN_EFORMAT, "%s: shard name '%s' is not a plain file name", ip, s);
    size_t i = 0;
    while (i < x->impl->n_files && strcmp(x->shard_names[i], s) != 0) i++;
    if (i < x->impl->n_files) continue;
    char *sp = kiln_loader_join(x->dir, s);
    if (!sp) return kiln_error(KILN_ENOMEM, "%s: out of memory", ip);
    rc = kiln_st_open(&x->impl->files[i], sp);
    if (rc == KILN_ENOTFOUND) rc = kiln_error(rc, "%s: shard listed in %s does not exist", sp, ip);
    free(sp);
    if (rc != KILN_OK) return rc;
    x->shard_names[i] = s;
    x->impl->n_files++;
  }
  /* Every entry must be where the index says it is. */
  json_object_foreach(x->weight_map, key, v) {
    const char *s = json_string_value(v);
    size_t i = 0;
    while (strcmp(x->shard_names[i], s) != 0) i++;
    if (!kiln_st_find(&x->impl->files[i], key))
      return kiln_error(KILN_EFORMAT, "%s: tensor '%s' listed in %s is not in it", x->impl->files[i].path, key, ip);
  }
  return KILN_OK;
}

/* The file that holds `name` (NULL with a message when it is nowhere). */
static const kiln_st_file *locate(load_ctx *x, const char *name, const kiln_st_tensor **t) {
  const kiln_st_file *f = &x->impl->files[0];
  if (x->weight_map) {
    const char *s = json_string_value(json_object_get(x->weight_map, name));
    if (!s) {
      kiln_error(KILN_ENOTFOUND, "%s: missing tensor '%s'", x->index_path, name);
      return NULL;
    }
    size_t i = 0;
    while (strcmp(x->shard_names[i], s) != 0) i++;
    f = &x->impl->files[i];
  }
  *t = kiln_st_find(f, name);
  if (!*t) {
    kiln_error(KILN_ENOTFOUND, "%s: missing tensor '%s'", f->path, name);
    return NULL;
  }
  return f;
}

static void format_shape(char *buf, size_t cap, int ndim, const int64_t *shape) {
  size_t n = (size_t)snprintf(buf, cap, "[");
  for (int i = 0; i < ndim && n < cap; i++)
    n += (size_t)snprintf(buf + n, cap - n, "%s%lld", i ? ", " : "", (long long)shape[i]);
  if (n < cap) snprintf(buf + n, cap - n, "]");
}

static int bind_one(load_ctx *x, const kiln_wspec *s) {
  const kiln_st_tensor *t = NULL;
  const kiln_st_file *f = locate(x, s->name, &t);
  if (!f) return KILN_ENOTFOUND;
  kiln_dtype dt;
  switch (t->dtype) {
  case KILN_ST_F32: dt = KILN_F32; break;
  case KILN_ST_F16: dt = KILN_F16; break;
  case KILN_ST_BF16: dt = KILN_BF16; break;
  default:
    return kiln_error(KILN_EUNSUPPORTED, "%s: tensor '%s' has dtype %s (F32, BF16 or F16 needed)", f->path, s->name,
                      kiln_st_dtype_name(t->dtype));
  }
  bool same = t->ndim == s->ndim;
  for (int i = 0; same && i < s->ndim; i++) same = t->shape[i] == s->shape[i];
  if (!same) {
    char got[160], want[64];
    format_shape(got, sizeof got, t->ndim, t->shape);
    format_shape(want, sizeof want, s->ndim, s->shape);
    return kiln_error(KILN_EFORMAT, "%s: tensor '%s' has shape %s, config.json implies %s", f->path, s->name, got,
                      want);
  }
  const uint8_t *data = kiln_st_data(f, t);
  size_t bytes = (size_t)(t->end - t->begin);
  size_t esz = kiln_dtype_size(dt);
  if ((uintptr_t)data % esz != 0) {
    /* Writers pad the header so that data is aligned; a file that does not is read through an aligned copy
     * rather than handing out pointers that are UB to dereference. */
    void **nc = realloc(x->impl->copies, (x->impl->n_copies + 1) * sizeof *nc);
    if (!nc) return kiln_error(KILN_ENOMEM, "%s: out of memory", f->path);
    x->impl->copies = nc;
    void *copy = malloc(bytes ? bytes : 1);
    if (!copy) return kiln_error(KILN_ENOMEM, "%s: out of memory copying '%s'", f->path, s->name);
    memcpy(copy, data, bytes);
    x->impl->copies[x->impl->n_copies++] = copy;
    data = copy;
  }
  s->slot->data = data;
  s->slot->dtype = dt;
  s->slot->ndim = s->ndim;
  memset(s->slot->shape, 0, sizeof s->slot->shape);
  for (int i = 0; i < s->ndim && i < 2; i++) s->slot->shape[i] = s->shape[i];
  x->m->weight_bytes += bytes;
  return KILN_OK;
}

/* Reads every mapped page once, reporting progress. Where MADV_POPULATE_READ is missing (EINVAL: kernels before
 * 5.14) each page is touched instead; any other failure (an I/O error, a file shrunk under us) is reported rather
 * than touched, which would raise SIGBUS. */
static int prefault(kiln_model_impl *impl, kiln_progress_fn progress, void *user) {
  uint64_t total = 0, done = 0;
  for (size_t i = 0; i < impl->n_files; i++) total += impl->files[i].map_len;
  if (progress) progress(user, 0, total);
  long pg = sysconf(_SC_PAGESIZE);
  size_t page = pg > 0 ? (size_t)pg : 4096;
  bool populate = true;
  for (size_t i = 0; i < impl->n_files; i++) {
    const kiln_st_file *f = &impl->files[i];
    for (size_t off = 0; off < f->map_len; off += PREFAULT_CHUNK) {
      size_t len = f->map_len - off < PREFAULT_CHUNK ? f->map_len - off : PREFAULT_CHUNK;
      uint8_t *p = (uint8_t *)f->map + off;
#ifdef MADV_POPULATE_READ
      if (populate && madvise(p, len, MADV_POPULATE_READ) != 0) {
        if (errno != EINVAL) return kiln_error(KILN_EIO, "%s: reading the weights: %s", f->path, strerror(errno));
        populate = false;
      }
#else
      populate = false;
#endif
      if (!populate) {
        volatile uint8_t sink = 0;
        for (size_t o = 0; o < len; o += page) sink ^= p[o];
        (void)sink;
      }
      done += len;
      if (progress) progress(user, done, total);
    }
  }
  return KILN_OK;
}

int kiln_model_load(kiln_model **out, const char *dir, kiln_progress_fn progress, void *user) {
  if (!out) return kiln_error(KILN_EINVAL, "kiln_model_load: NULL argument");
  *out = NULL;
  if (!dir) return kiln_error(KILN_EINVAL, "kiln_model_load: NULL directory");
  kiln_config cfg;
  int rc = kiln_config_load(&cfg, dir);
  if (rc != KILN_OK) return rc;
  kiln_model *m = kiln_model_alloc_(&cfg);
  if (!m) return KILN_ENOMEM;
  load_ctx x = {.m = m, .impl = m->impl, .dir = dir};
  kiln_wspec *specs = NULL;
  size_t n_specs = 0;
  char *single = kiln_loader_join(dir, "model.safetensors");
  x.index_path = kiln_loader_join(dir, "model.safetensors.index.json");
  m->dir = strdup(dir);
  if (!single || !x.index_path || !m->dir) {
    rc = kiln_error(KILN_ENOMEM, "%s: out of memory", dir);
    goto done;
  }
  if (kiln_loader_exists(single)) {
    rc = open_single(&x, single);
    free(x.index_path);
    x.index_path = NULL;
  } else if (kiln_loader_exists(x.index_path)) {
    rc = open_sharded(&x);
  } else {
    rc = kiln_error(KILN_ENOTFOUND, "%s: no model.safetensors or model.safetensors.index.json", dir);
  }
  if (rc != KILN_OK) goto done;
  if ((rc = kiln_model_specs_(m, &specs, &n_specs)) != KILN_OK) goto done;
  for (size_t i = 0; i < n_specs && rc == KILN_OK; i++) rc = bind_one(&x, &specs[i]);
  if (rc != KILN_OK) goto done;
  if (cfg.tie_word_embeddings) m->lm_head = m->embed;
  rc = prefault(m->impl, progress, user);
done:
  free(specs);
  free(single);
  free(x.index_path);
  free(x.shard_names);
  json_decref(x.index);
  if (rc != KILN_OK) {
    kiln_model_free(m);
    return rc;
  }
  *out = m;
  return KILN_OK;
}
