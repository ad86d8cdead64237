/*
 * backend/backend.h (internal): what a compute backend provides to the engine (DESIGN.md decision 3).
 *
 * A backend owns the weights in its own memory (the CPU backend reads the mmap'd checkpoint in place; the CUDA
 * backend uploads bf16 copies), a KV cache of n_seqs x n_ctx tokens, and all scratch, allocated in create():
 * forward passes allocate nothing. The engine (src/engine/engine.c) checks arguments and positions and then calls
 * these entries; a backend may assume them valid.
 *
 * The per-op reference implementations every backend is tested against live in src/backend/cpu/ref_ops.h.
 */
#ifndef KILN_BACKEND_H
#define KILN_BACKEND_H

#include <stdbool.h>
#include <stdint.h>

#include "kiln/engine.h"
#include "kiln/model.h"
#include "kiln/sampler.h"

typedef struct kiln_backend kiln_backend; /* each backend defines its own struct */

typedef struct kiln_backend_vtbl {
  const char *name; /* "cpu", "cuda" */
  /* Binds the model. `device_index` is N of "cuda:N" (0 for cpu). */
  int (*create)(kiln_backend **out, const kiln_model *m, const kiln_engine_opts *opts, int device_index);
  void (*destroy)(kiln_backend *b);
  /* Appends n tokens at positions pos..pos+n-1 of sequence `seq` (the engine tracks positions) and writes f32
   * logits to host memory: [vocab] for the last token, or [n][vocab] when all_logits; none when logits == NULL. */
  int (*forward)(kiln_backend *b, int seq, int pos, const int32_t *tokens, int n, float *logits, bool all_logits);
  /* Optional (NULL when absent): one decode step with sampling on the device. Appends `token` at `pos` and writes
   * the sampled next token. `step` is the index of the token being sampled within its generation (it seeds the
   * draw together with s->seed). Only used when no penalties and no logprobs are asked for. */
  int (*decode_sample)(kiln_backend *b, int seq, int pos, int32_t token, const kiln_sampling *s, uint64_t step,
                       int32_t *next);
  /* Device name for display ("cpu", "cuda:0 NVIDIA H200"). */
  const char *(*describe)(kiln_backend *b);
  /* Bytes one decode step reads from memory when its token sits at position `pos`: every weight once as this
   * backend stores it, one embedding row, and the K and V cache rows 0 .. pos of every layer (the floor's
   * numerator, PERF.md). */
  int64_t (*step_bytes)(kiln_backend *b, int pos);
  /* Optional (NULL when the backend computes in host memory, whose bandwidth the caller measures itself): the
   * copy bandwidth of the backend's device memory, bytes read + written per second, measured now. */
  int (*copy_bandwidth)(kiln_backend *b, double *bytes_per_s);
} kiln_backend_vtbl;

/* The weights one decode step reads, as element counts: `matrix` of the projections and the head (the embedding
 * table when tied) plus one embedding row, `vector` of the norms and biases. Backends weigh them by the dtypes
 * they store (step_bytes). */
static inline void kiln_backend_step_elems(const kiln_config *c, int64_t *matrix, int64_t *vector) {
  const int64_t H = c->hidden_size, I = c->intermediate_size, q = (int64_t)c->n_heads * c->head_dim,
                kv = (int64_t)c->n_kv_heads * c->head_dim;
  const int64_t mat = H * (q + 2 * kv) + q * H + 3 * H * I;
  const int64_t vec = 2 * H + (c->qk_norm ? 2 * (int64_t)c->head_dim : 0) + (c->attention_bias ? q + 2 * kv + H : 0);
  *matrix = c->n_layers * mat + (int64_t)c->vocab_size * H + H;
  *vector = c->n_layers * vec + H;
}

/* K and V cache elements of positions 0 .. pos over all layers. */
static inline int64_t kiln_backend_kv_elems(const kiln_config *c, int pos) {
  return 2 * (int64_t)c->n_layers * c->n_kv_heads * c->head_dim * (int64_t)(pos + 1);
}

extern const kiln_backend_vtbl kiln_backend_cpu;
#ifdef KILN_HAVE_CUDA
extern const kiln_backend_vtbl kiln_backend_cuda;
/* Number of CUDA devices usable (0 when no driver or GPU: never an error). */
int kiln_cuda_device_count(void);
#endif

#endif /* KILN_BACKEND_H */
