/*
 * kiln/engine.h: a model bound to a backend (CPU or CUDA), with a KV cache for a fixed number of sequences.
 *
 * The engine runs forward passes; sampling and the generation loop are in kiln/sampler.h and kiln/generate.h.
 * An engine is used by one thread at a time (DESIGN.md decision 2: the engine thread owns the device); other
 * threads reach it through rings. All memory (KV cache, scratch) is allocated at creation: forward passes
 * allocate nothing.
 */
#ifndef KILN_ENGINE_H
#define KILN_ENGINE_H

#include <stdbool.h>
#include <stdint.h>

#include "kiln/model.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct kiln_engine kiln_engine;

typedef struct kiln_engine_opts {
  const char *device; /* "cpu", "cuda", "cuda:N"; NULL: cuda when a GPU is present, else cpu */
  int n_threads;      /* CPU backend threads; <= 0: all online cores */
  int n_ctx;          /* tokens of KV cache per sequence; <= 0: min(max_position_embeddings, 4096) */
  int n_seqs;         /* sequences held at once (KV slots); <= 0: 1 */
} kiln_engine_opts;

/* The model must outlive the engine. */
int kiln_engine_create(kiln_engine **out, const kiln_model *model, const kiln_engine_opts *opts);
void kiln_engine_free(kiln_engine *e);

const kiln_model *kiln_engine_model(const kiln_engine *e);
const char *kiln_engine_device(const kiln_engine *e); /* "cpu", "cuda:0", ... */
int kiln_engine_n_ctx(const kiln_engine *e);
int kiln_engine_n_seqs(const kiln_engine *e);

/* Empties a sequence's KV cache (its position becomes 0). */
int kiln_engine_seq_reset(kiln_engine *e, int seq);
/* Tokens held in a sequence's KV cache (the position the next token takes). */
int kiln_engine_seq_pos(const kiln_engine *e, int seq);

/* Appends `n` tokens to sequence `seq` (prefill when n > 1, decode when n == 1) and, when `logits` is not NULL,
 * writes f32 logits: [vocab] for the last token, or [n][vocab] when `all_logits`. KILN_ECONTEXT when the
 * sequence would pass n_ctx (nothing is appended then). */
int kiln_engine_forward(kiln_engine *e, int seq, const int32_t *tokens, int n, float *logits, bool all_logits);

#ifdef __cplusplus
}
#endif
#endif /* KILN_ENGINE_H */
