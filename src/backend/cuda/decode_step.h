/*
 * backend/cuda/decode_step.h (internal): the whole decode step of one token as one persistent kernel.
 *
 * One block per SM stays resident for the whole step and walks the model phase by phase: per layer the q/k/v
 * GEMV (RMSNorm prologue, bias), attention (q/k norm, RoPE and the KV store folded into the units that need
 * them), the o GEMV (+= residual), the gate/up GEMV (RMSNorm prologue, SwiGLU) and the down GEMV (+= residual);
 * then the final norm and the lm_head GEMV with its argmax. Phases meet at a grid-wide barrier (5 per layer)
 * instead of at kernel boundaries, and every warp issues its first weight loads of a phase before it waits at
 * the barrier, so the memory system streams through the phase changes. The kernel computes what the
 * kernel-per-op graph computes, with the same device code (the GEMV row loop of gemv_dev.cuh, the attention
 * unit of attn_decode_dev.cuh). It is selected with KILN_CUDA_DECODE=persistent; the kernel-per-op graph is the
 * default because it is still faster (each phase change costs a few microseconds of barrier, input and drain,
 * 141 to 181 of them per token: docs/cuda.md has the measurements).
 */
#ifndef KILN_CUDA_DECODE_STEP_H
#define KILN_CUDA_DECODE_STEP_H

#include <stdint.h>

#include <cuda_runtime_api.h>

#include "backend/cuda/cuda_common.h"
#include "backend/cuda/rope.h"

#ifdef __cplusplus
extern "C" {
#endif

/* One layer's device pointers. */
typedef struct kiln_cuda_layer {
  uint16_t *wqkv;              /* [(nh + 2 nkv) hd][H] */
  float *bqkv;                 /* [(nh + 2 nkv) hd] or NULL */
  uint16_t *wo;                /* [H][nh hd] */
  float *bo;                   /* [H] or NULL (o_proj bias when attention_bias) */
  uint16_t *wgu;               /* [2 I][H], gate and up rows interleaved */
  uint16_t *wdown;             /* [H][I] */
  float *attn_norm, *ffn_norm; /* [H] */
  float *q_norm, *k_norm;      /* [hd] or NULL */
  uint16_t *k_cache, *v_cache; /* [n_seqs][nkv][n_ctx][hd] */
} kiln_cuda_layer;

typedef struct kiln_cuda_decode_args {
  const kiln_cuda_layer *layers; /* device array [n_layers] */
  int n_layers;
  int64_t hidden, inter, vocab, qkv_dim;
  float eps;
  kiln_cuda_attn_shape shape;
  int n_splits;                  /* attention key chunks (kiln_cuda_attn_decode_splits) */
  const uint16_t *embed, *lm_head;
  const float *final_norm, *rope; /* rope: RoPE's table (kiln_cuda_rope_table) */
  const kiln_cuda_step *step;    /* seq, pos, token */
  float *x;                      /* f32 [hidden]: the residual stream */
  float *qkv;                    /* f32 [qkv_dim] */
  uint16_t *hbuf;                /* bf16 [max(nh hd, inter)] */
  float *logits;                 /* f32 [vocab] */
  float *part;                   /* attention scratch (attn_decode.h), counters zeroed */
  unsigned long long *argmax;    /* the argmax cell of the logits (gemv.h) */
  unsigned *barrier;             /* one word, zero before the first step; every step leaves it consistent */
  int prefetch;                  /* GEMV chunks each warp keeps prefetched into L2 ahead of its loads */
  unsigned long long *prof;      /* NULL, or KILN_CUDA_DS_PROF_WORDS words: block 0's barrier timeline */
} kiln_cuda_decode_args;

/* The profile (tuning only, KILN_CUDA_DS_PROFILE=1 at create): word 0 counts the barriers, 1 and 2 hold the
 * step's start and end in SM clocks, 3 and 4 in globaltimer nanoseconds (to convert), then for barrier k words
 * 5 + 2k and 6 + 2k: the clock when block 0 arrived and when it was released. */
#define KILN_CUDA_DS_PROF_WORDS 2048

/* Checks the shapes, lowers a->n_splits to one round of attention units over the grid, sets the kernel's
 * shared-memory limit on the current device and returns in *blocks the grid the kernel runs with (one block per
 * SM). KILN_EUNSUPPORTED when the kernel cannot be resident on every SM. */
int kiln_cuda_decode_step_prepare(kiln_cuda_decode_args *a, int *blocks);

/* Enqueues one step (cooperative launch: all blocks resident, or the launch fails). */
int kiln_cuda_decode_step(const kiln_cuda_decode_args *a, int blocks, cudaStream_t stream);

#ifdef __cplusplus
}
#endif
#endif
