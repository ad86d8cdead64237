/*
 * bench/peers/gguf_write.c: the GGUF writer (gguf_write.h).
 */
#include "gguf_write.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kiln/status.h"

/* GGUF value types */
enum { V_U32 = 4, V_I32 = 5, V_F32 = 6, V_BOOL = 7, V_STR = 8, V_ARR = 9 };

void gguf_w_init(gguf_w *w) { memset(w, 0, sizeof *w); }

void gguf_w_free(gguf_w *w) {
  free(w->kv);
  for (size_t i = 0; i < w->n_t; i++) free(w->t[i].name);
  free(w->t);
  memset(w, 0, sizeof *w);
}

/* Appends to the key/value buffer; an allocation failure is remembered and reported by the kv call. */
static void put_(gguf_w *w, const void *p, size_t n) {
  if (w->oom) return;
  if (w->kv_len + n > w->kv_cap) {
    size_t cap = w->kv_cap ? w->kv_cap : 4096;
    while (cap < w->kv_len + n) cap *= 2;
    unsigned char *nb = realloc(w->kv, cap);
    if (!nb) {
      w->oom = 1;
      return;
    }
    w->kv = nb, w->kv_cap = cap;
  }
  memcpy(w->kv + w->kv_len, p, n);
  w->kv_len += n;
}
static void put_u32_(gguf_w *w, uint32_t v) {
  unsigned char b[4] = {(unsigned char)v, (unsigned char)(v >> 8), (unsigned char)(v >> 16), (unsigned char)(v >> 24)};
  put_(w, b, 4);
}
static void put_u64_(gguf_w *w, uint64_t v) {
  put_u32_(w, (uint32_t)v);
  put_u32_(w, (uint32_t)(v >> 32));
}
static void put_str_(gguf_w *w, const char *s) {
  size_t n = strlen(s);
  put_u64_(w, n);
  put_(w, s, n);
}
static int key_(gguf_w *w, const char *key, uint32_t type) {
  put_str_(w, key);
  put_u32_(w, type);
  w->n_kv++;
  return 0;
}
static int done_(gguf_w *w, const char *key) {
  return w->oom ? kiln_error(KILN_ENOMEM, "gguf: out of memory at key %s", key) : 0;
}

int gguf_w_kv_u32(gguf_w *w, const char *key, uint32_t v) {
  key_(w, key, V_U32);
  put_u32_(w, v);
  return done_(w, key);
}
int gguf_w_kv_i32(gguf_w *w, const char *key, int32_t v) {
  key_(w, key, V_I32);
  put_u32_(w, (uint32_t)v);
  return done_(w, key);
}
int gguf_w_kv_f32(gguf_w *w, const char *key, float v) {
  uint32_t u;
  memcpy(&u, &v, 4);
  key_(w, key, V_F32);
  put_u32_(w, u);
  return done_(w, key);
}
int gguf_w_kv_bool(gguf_w *w, const char *key, int v) {
  unsigned char b = v ? 1 : 0;
  key_(w, key, V_BOOL);
  put_(w, &b, 1);
  return done_(w, key);
}
int gguf_w_kv_str(gguf_w *w, const char *key, const char *v) {
  key_(w, key, V_STR);
  put_str_(w, v);
  return done_(w, key);
}
int gguf_w_kv_strs(gguf_w *w, const char *key, const char *const *v, size_t n) {
  key_(w, key, V_ARR);
  put_u32_(w, V_STR);
  put_u64_(w, n);
  for (size_t i = 0; i < n; i++) put_str_(w, v[i]);
  return done_(w, key);
}
int gguf_w_kv_i32s(gguf_w *w, const char *key, const int32_t *v, size_t n) {
  key_(w, key, V_ARR);
  put_u32_(w, V_I32);
  put_u64_(w, n);
  for (size_t i = 0; i < n; i++) put_u32_(w, (uint32_t)v[i]);
  return done_(w, key);
}

static uint64_t type_size_(uint32_t type) { return type == GGUF_TYPE_F32 ? 4 : 2; }

int gguf_w_tensor_add(gguf_w *w, const char *name, int n_dims, const uint64_t *ne, uint32_t type, gguf_data_fn data,
                      const void *arg) {
  if (n_dims < 1 || n_dims > 4 || (type != GGUF_TYPE_F32 && type != GGUF_TYPE_F16 && type != GGUF_TYPE_BF16))
    return kiln_error(KILN_EINVAL, "gguf: tensor %s: %d dimensions of type %u not supported", name, n_dims, type);
  if (w->n_t == w->cap_t) {
    size_t cap = w->cap_t ? 2 * w->cap_t : 64;
    gguf_w_tensor *nt = realloc(w->t, cap * sizeof *nt);
    if (!nt) return kiln_error(KILN_ENOMEM, "gguf: out of memory");
    w->t = nt, w->cap_t = cap;
  }
  gguf_w_tensor *t = &w->t[w->n_t];
  memset(t, 0, sizeof *t);
  if (!(t->name = strdup(name))) return kiln_error(KILN_ENOMEM, "gguf: out of memory");
  t->n_dims = n_dims;
  t->bytes = type_size_(type);
  for (int d = 0; d < n_dims; d++) {
    t->ne[d] = ne[d];
    t->bytes *= ne[d];
  }
  t->type = type;
  t->data = data;
  t->arg = arg;
  uint64_t end = w->n_t ? w->t[w->n_t - 1].offset + w->t[w->n_t - 1].bytes : 0;
  t->offset = (end + GGUF_ALIGNMENT - 1) / GGUF_ALIGNMENT * GGUF_ALIGNMENT;
  w->n_t++;
  return 0;
}

int gguf_w_bytes(gguf_w *w, const void *p, size_t n) {
  if (!w->file) return kiln_error(KILN_EINVAL, "gguf: bytes outside a tensor");
  if (n && fwrite(p, 1, n, (FILE *)w->file) != n) return kiln_error(KILN_EIO, "gguf: write: %s", strerror(errno));
  w->written += n;
  return 0;
}

static int pad_(gguf_w *w, uint64_t at) {
  static const unsigned char zeros[GGUF_ALIGNMENT];
  uint64_t n = (GGUF_ALIGNMENT - at % GGUF_ALIGNMENT) % GGUF_ALIGNMENT;
  return gguf_w_bytes(w, zeros, (size_t)n);
}

int gguf_w_write(gguf_w *w, const char *path, void *user) {
  /* the header and tensor table go through the key/value buffer's encoder, after the pairs */
  gguf_w head;
  gguf_w_init(&head);
  put_(&head, "GGUF", 4);
  put_u32_(&head, 3);
  put_u64_(&head, w->n_t);
  put_u64_(&head, w->n_kv);
  put_(&head, w->kv, w->kv_len);
  for (size_t i = 0; i < w->n_t; i++) {
    const gguf_w_tensor *t = &w->t[i];
    put_str_(&head, t->name);
    put_u32_(&head, (uint32_t)t->n_dims);
    for (int d = 0; d < t->n_dims; d++) put_u64_(&head, t->ne[d]);
    put_u32_(&head, t->type);
    put_u64_(&head, t->offset);
  }
  if (head.oom || w->oom) {
    gguf_w_free(&head);
    return kiln_error(KILN_ENOMEM, "gguf: out of memory");
  }
  size_t plen = strlen(path);
  char *tmp = malloc(plen + 5);
  if (!tmp) {
    gguf_w_free(&head);
    return kiln_error(KILN_ENOMEM, "gguf: out of memory");
  }
  memcpy(tmp, path, plen);
  memcpy(tmp + plen, ".tmp", 5);
  FILE *f = fopen(tmp, "wb");
  int rc = 0;
  if (!f) {
    rc = kiln_error(KILN_EIO, "gguf: %s: %s", tmp, strerror(errno));
    goto out;
  }
  w->file = f;
  w->written = 0;
  if ((rc = gguf_w_bytes(w, head.kv, head.kv_len)) || (rc = pad_(w, w->written))) goto out;
  const uint64_t base = w->written;
  for (size_t i = 0; i < w->n_t; i++) {
    const gguf_w_tensor *t = &w->t[i];
    if ((rc = pad_(w, w->written - base))) goto out;
    if (w->written - base != t->offset) {
      rc = kiln_error(KILN_EINVAL, "gguf: tensor %s lands at %llu, not at its offset %llu", t->name,
                      (unsigned long long)(w->written - base), (unsigned long long)t->offset);
      goto out;
    }
    if ((rc = t->data(user, w, t->arg))) goto out;
    if (w->written - base != t->offset + t->bytes) {
      rc = kiln_error(KILN_EINVAL, "gguf: tensor %s: %llu bytes written, %llu expected", t->name,
                      (unsigned long long)(w->written - base - t->offset), (unsigned long long)t->bytes);
      goto out;
    }
  }
out:
  if (f) {
    if (fclose(f) && !rc) rc = kiln_error(KILN_EIO, "gguf: %s: %s", tmp, strerror(errno));
    if (!rc && rename(tmp, path)) rc = kiln_error(KILN_EIO, "gguf: rename to %s: %s", path, strerror(errno));
    if (rc) remove(tmp);
  }
  w->file = NULL;
  free(tmp);
  gguf_w_free(&head);
  return rc;
}
