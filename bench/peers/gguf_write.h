/*
 * bench/peers/gguf_write.h: a GGUF (version 3) file writer, enough to hand llama.cpp the weights kiln runs
 * (gguf_export.c). The file is: magic "GGUF", version, tensor count, key/value count, the key/value pairs, the
 * tensor table (name, dimensions innermost first, ggml type, offset into the data section), padding to the
 * alignment, then the tensor data, each tensor starting at a multiple of the alignment. Every number is
 * little-endian.
 *
 * Use: gguf_w_init, any number of gguf_w_kv_* calls and gguf_w_tensor calls (metadata only: the data comes from a
 * callback when the file is written), then gguf_w_write, then gguf_w_free. Errors are returned (kiln_error).
 */
#ifndef KILN_BENCH_GGUF_WRITE_H
#define KILN_BENCH_GGUF_WRITE_H

#include <stddef.h>
#include <stdint.h>

#define GGUF_ALIGNMENT 32

/* ggml's tensor types that the exporter writes */
enum { GGUF_TYPE_F32 = 0, GGUF_TYPE_F16 = 1, GGUF_TYPE_BF16 = 30 };

/* A tensor's data source: writes exactly the tensor's bytes with gguf_w_bytes; returns 0 or an error. */
typedef struct gguf_w gguf_w;
typedef int (*gguf_data_fn)(void *user, gguf_w *w, const void *arg);

typedef struct gguf_w_tensor {
  char *name;
  int n_dims;
  uint64_t ne[4]; /* innermost first: a row-major [rows][cols] matrix is {cols, rows} */
  uint32_t type;
  uint64_t bytes, offset;
  gguf_data_fn data;
  const void *arg;
} gguf_w_tensor;

struct gguf_w {
  unsigned char *kv; /* the encoded key/value pairs */
  size_t kv_len, kv_cap;
  uint64_t n_kv;
  gguf_w_tensor *t;
  size_t n_t, cap_t;
  void *file; /* FILE * while writing */
  uint64_t written;
  int oom;
};

void gguf_w_init(gguf_w *w);
void gguf_w_free(gguf_w *w);

int gguf_w_kv_u32(gguf_w *w, const char *key, uint32_t v);
int gguf_w_kv_i32(gguf_w *w, const char *key, int32_t v);
int gguf_w_kv_f32(gguf_w *w, const char *key, float v);
int gguf_w_kv_bool(gguf_w *w, const char *key, int v);
int gguf_w_kv_str(gguf_w *w, const char *key, const char *v);
/* Arrays: n strings (each NUL-terminated), or n int32. */
int gguf_w_kv_strs(gguf_w *w, const char *key, const char *const *v, size_t n);
int gguf_w_kv_i32s(gguf_w *w, const char *key, const int32_t *v, size_t n);

/* Adds a tensor of `type` with dimensions ne[0..n_dims-1] (innermost first); data(user, w, arg) writes its bytes
 * with gguf_w_bytes when the file is written. */
int gguf_w_tensor_add(gguf_w *w, const char *name, int n_dims, const uint64_t *ne, uint32_t type, gguf_data_fn data,
                      const void *arg);

/* Appends bytes of the current tensor's data (only inside a data callback). */
int gguf_w_bytes(gguf_w *w, const void *p, size_t n);

/* Writes the whole file to path.tmp, then renames it to path: a failed export leaves no partial file behind. */
int gguf_w_write(gguf_w *w, const char *path, void *user);

#endif
