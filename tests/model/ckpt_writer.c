/* Test-only safetensors and checkpoint writers (see ckpt_writer.h). */
#include "model/ckpt_writer.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "model/model_impl.h"

static int write_all(FILE *fp, const void *p, size_t n) { return n == 0 || fwrite(p, 1, n, fp) == n ? 0 : -1; }

int stw_write_raw(const char *path, uint64_t hlen, const char *header, const void *data, size_t data_len) {
  FILE *fp = fopen(path, "wb");
  if (!fp) return -1;
  uint8_t len[8];
  for (int i = 0; i < 8; i++) len[i] = (uint8_t)(hlen >> (8 * i));
  int rc = write_all(fp, len, 8) | write_all(fp, header, strlen(header)) | write_all(fp, data, data_len);
  return fclose(fp) != 0 ? -1 : rc;
}

int stw_write_text(const char *path, const char *text) {
  FILE *fp = fopen(path, "wb");
  if (!fp) return -1;
  int rc = write_all(fp, text, strlen(text));
  return fclose(fp) != 0 ? -1 : rc;
}

int stw_write(const char *path, const stw_entry *e, size_t n, const char *metadata_json) {
  size_t cap = 256 + n * 256, len = 0, data_len = 0;
  char *h = malloc(cap);
  if (!h) return -1;
  len += (size_t)snprintf(h + len, cap - len, "{");
  if (metadata_json) len += (size_t)snprintf(h + len, cap - len, "\"__metadata__\":%s", metadata_json);
  for (size_t i = 0; i < n; i++) {
    const char *sep = (i || metadata_json) ? "," : "";
    len += (size_t)snprintf(h + len, cap - len, "%s\"%s\":{\"dtype\":\"%s\",\"shape\":[", sep, e[i].name, e[i].dtype);
    for (int d = 0; d < e[i].ndim; d++)
      len += (size_t)snprintf(h + len, cap - len, "%s%lld", d ? "," : "", (long long)e[i].shape[d]);
    len += (size_t)snprintf(h + len, cap - len, "],\"data_offsets\":[%zu,%zu]}", data_len, data_len + e[i].bytes);
    data_len += e[i].bytes;
  }
  len += (size_t)snprintf(h + len, cap - len, "}");
  while (len % 8) h[len++] = ' ';
  h[len] = '\0';
  uint8_t *data = malloc(data_len ? data_len : 1);
  if (!data) {
    free(h);
    return -1;
  }
  size_t off = 0;
  for (size_t i = 0; i < n; i++) {
    memcpy(data + off, e[i].data, e[i].bytes);
    off += e[i].bytes;
  }
  int rc = stw_write_raw(path, len, h, data, data_len);
  free(h);
  free(data);
  return rc;
}

static char *join(const char *dir, const char *name) {
  size_t n = strlen(dir) + strlen(name) + 2;
  char *p = malloc(n);
  if (p) snprintf(p, n, "%s/%s", dir, name);
  return p;
}

int ckpt_write(const char *dir, const char *cfg_json, const kiln_model *m, const ckpt_opts *o) {
  static const ckpt_opts none;
  if (!o) o = &none;
  char *cp = join(dir, "config.json");
  int rc = stw_write_text(cp, cfg_json);
  free(cp);
  if (rc) return rc;
  kiln_wspec *specs = NULL;
  size_t n = 0;
  /* The spec list needs a mutable model only to point its slots; the slots are read, never written, here. */
  if (kiln_model_specs_((kiln_model *)m, &specs, &n) != 0) return -1;
  stw_entry *e = calloc(n + 2, sizeof *e);
  float *extra = calloc(8, sizeof *extra);
  if (!e || !extra) {
    free(specs);
    free(e);
    free(extra);
    return -1;
  }
  size_t k = 0;
  for (size_t i = 0; i < n; i++) {
    const kiln_tensor *t = specs[i].slot;
    if (o->skip && strcmp(o->skip, specs[i].name) == 0) continue;
    e[k].name = specs[i].name;
    e[k].dtype = kiln_dtype_name(t->dtype);
    e[k].ndim = t->ndim;
    memcpy(e[k].shape, t->shape, sizeof t->shape);
    e[k].data = t->data;
    e[k].bytes = (size_t)kiln_tensor_numel(t) * kiln_dtype_size(t->dtype);
    if (o->bad_shape && strcmp(o->bad_shape, specs[i].name) == 0) {
      /* Same bytes, another shape: [d0 * d1] flattened, so only the shape check can catch it. */
      e[k].ndim = 1;
      e[k].shape[0] = kiln_tensor_numel(t);
    }
    if (o->bad_dtype && strcmp(o->bad_dtype, specs[i].name) == 0) e[k].dtype = t->dtype == KILN_F32 ? "I32" : "I16";
    k++;
  }
  if (o->write_lm_head && m->cfg.tie_word_embeddings) {
    e[k] = (stw_entry){"lm_head.weight", kiln_dtype_name(m->embed.dtype), 2,
                       {m->embed.shape[0], m->embed.shape[1]}, m->embed.data,
                       (size_t)kiln_tensor_numel(&m->embed) * kiln_dtype_size(m->embed.dtype)};
    k++;
  }
  if (o->extra) {
    e[k++] = (stw_entry){o->extra, "F32", 1, {8}, extra, 8 * sizeof(float)};
  }
  rc = 0;
  if (o->shards <= 1) {
    char *p = join(dir, "model.safetensors");
    rc = p ? stw_write(p, e, k, "{\"format\":\"pt\"}") : -1;
    free(p);
  } else {
    /* Consecutive blocks of tensors, one per shard. */
    size_t per = (k + (size_t)o->shards - 1) / (size_t)o->shards;
    size_t icap = 256 + k * 160, ilen = 0;
    char *idx = malloc(icap);
    int first = 1;
    rc = idx ? 0 : -1;
    if (idx) ilen += (size_t)snprintf(idx, icap, "{\"metadata\":{\"total_size\":0},\"weight_map\":{");
    for (int s = 0; s < o->shards && rc == 0; s++) {
      char name[64];
      snprintf(name, sizeof name, "model-%05d-of-%05d.safetensors", s + 1, o->shards);
      size_t b = (size_t)s * per < k ? (size_t)s * per : k, end = b + per < k ? b + per : k;
      const char *listed = o->missing_shard && s == o->shards - 1 ? o->missing_shard : name;
      for (size_t i = b; i < end; i++) {
        ilen += (size_t)snprintf(idx + ilen, icap - ilen, "%s\"%s\":\"%s\"", first ? "" : ",", e[i].name, listed);
        first = 0;
      }
      if (o->missing_shard && s == o->shards - 1) continue;
      char *p = join(dir, name);
      rc = p ? stw_write(p, e + b, end - b, NULL) : -1;
      free(p);
    }
    if (rc == 0) {
      snprintf(idx + ilen, icap - ilen, "}}");
      char *p = join(dir, "model.safetensors.index.json");
      rc = p ? stw_write_text(p, idx) : -1;
      free(p);
    }
    free(idx);
  }
  free(specs);
  free(e);
  free(extra);
  return rc;
}

int cfg_equal(const kiln_config *a, const kiln_config *b) {
#define EQ(f) (a->f == b->f)
  int eq = EQ(arch) && EQ(vocab_size) && EQ(hidden_size) && EQ(intermediate_size) && EQ(n_layers) && EQ(n_heads) &&
           EQ(n_kv_heads) && EQ(head_dim) && EQ(max_position_embeddings) && EQ(rms_norm_eps) && EQ(rope_theta) &&
           EQ(rope_type) && EQ(rope_factor) && EQ(rope_low_freq_factor) && EQ(rope_high_freq_factor) &&
           EQ(rope_original_max_position) && EQ(tie_word_embeddings) && EQ(attention_bias) && EQ(qk_norm) &&
           EQ(torch_dtype) && EQ(bos_token_id) && EQ(n_eos);
  for (int i = 0; eq && i < a->n_eos; i++) eq = EQ(eos_token_ids[i]);
#undef EQ
  return eq;
}

char *ckpt_tmpdir(void) {
  const char *base = getenv("TMPDIR");
  if (!base || !*base) base = "/tmp";
  size_t n = strlen(base) + 32;
  char *p = malloc(n);
  if (!p) return NULL;
  snprintf(p, n, "%s/kiln-model-XXXXXX", base);
  if (!mkdtemp(p)) {
    free(p);
    return NULL;
  }
  return p;
}

void ckpt_rmdir(char *dir) {
  if (!dir) return;
  DIR *d = opendir(dir);
  if (d) {
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
      if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0) continue;
      char *p = join(dir, de->d_name);
      if (p) unlink(p);
      free(p);
    }
    closedir(d);
  }
  rmdir(dir);
  free(dir);
}
