/*
 * backend/cuda/cuda_impl.h (internal): the CUDA backend's state, shared by its files, its tests and its benchmark.
 *
 * Device layout (all from one arena): weights in bf16 with q/k/v fused into one matrix and gate/up fused row by
 * row (gate_0, up_0, gate_1, ...), norms and biases in f32; the KV cache; scratch for a prefill chunk of up to
 * `chunk` tokens. The residual stream is f32; every matmul input is bf16.
 */
#ifndef KILN_CUDA_IMPL_H
#define KILN_CUDA_IMPL_H

#include <stdbool.h>
#include <stdint.h>

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include "backend/backend.h"
#include "backend/cuda/arena.h"
#include "backend/cuda/cuda_common.h"
#include "backend/cuda/decode_step.h"
#include "backend/cuda/gemm.h"
#include "backend/cuda/rope.h"
#include "backend/cuda/sample.h"

#define KILN_CUDA_MAX_CHUNK 1024 /* the most tokens a prefill chunk has */
#define KILN_CUDA_SHORT_LEVELS 3 /* short-context decode graph pairs at most (cluster sizes cmax, cmax/2, cmax/4) */
#define KILN_CUDA_L2PF_CHOICES 5 /* what the decode step may prefetch into L2 under attention (tune.c) */
/* Prefill graph buckets: chunk sizes padded to a multiple of KILN_CUDA_PREFILL_STEP up to KILN_CUDA_PREFILL_SHORT
 * tokens, of KILN_CUDA_PREFILL_LSTEP above it (a few % of padding, against 16 buckets more) */
#define KILN_CUDA_PREFILL_STEP 16
#define KILN_CUDA_PREFILL_SHORT 256
#define KILN_CUDA_PREFILL_LSTEP 64
#define KILN_CUDA_PREFILL_BUCKETS                                                                                      \
  (KILN_CUDA_PREFILL_SHORT / KILN_CUDA_PREFILL_STEP +                                                                  \
   (KILN_CUDA_MAX_CHUNK - KILN_CUDA_PREFILL_SHORT) / KILN_CUDA_PREFILL_LSTEP)

/* The prefill GEMMs of a layer, in the order of their plans */
enum { KILN_PF_QKV, KILN_PF_O, KILN_PF_GATE_UP, KILN_PF_DOWN, KILN_PF_GEMMS };

struct kiln_backend {
  kiln_config cfg;
  int dev, n_sm;
  char desc[320];
  int n_ctx, n_seqs;
  int chunk;        /* most tokens of one prefill pass */
  int logit_rows;   /* rows of `logits` (all_logits prefill goes through it in pieces) */
  int n_splits;     /* decode attention key chunks */
  int64_t qkv_dim;  /* (nh + 2 nkv) hd */
  kiln_cuda_attn_shape shape;
  cudaStream_t stream;
  cublasHandle_t cublas;
  cublasLtHandle_t cublaslt; /* the planned prefill products (gemm_plan.c) */
  kiln_cuda_arena arena;

  /* weights */
  uint16_t *embed, *lm_head; /* [V][H]; lm_head == embed when tied */
  float *final_norm;         /* [H] */
  float *inv_freq;           /* [hd / 2] */
  float *rope;               /* [n_ctx][hd]: RoPE's cosines and sines (kiln_cuda_rope_table) */
  kiln_cuda_layer *layers;   /* host array [n_layers] of device pointers */
  int64_t weight_bytes;      /* device bytes of the weights (what a decode step must read) */
  int64_t kv_bytes;          /* device bytes of the KV cache */

  /* scratch (device) */
  kiln_cuda_step *d_step;
  int32_t *d_tokens;         /* [chunk] */
  int32_t *d_next;
  unsigned long long *d_argmax;
  float *x;                  /* [chunk][H]: the residual stream */
  uint16_t *hbuf;            /* [chunk][max(H, nh hd, I)] bf16 matmul inputs */
  float *qkv;                /* [chunk][qkv_dim] */
  uint16_t *q;               /* [chunk][nh hd] bf16: rotated queries */
  float *gu;                 /* [chunk][2 I] */
  float *logits;             /* [logit_rows][V] */
  float *attn_part;          /* decode attention partials */
  void *sample_mem;          /* the multi-block sampler's scratch (sample_sc points into it) */
  void *pf_attn;             /* prefill attention's key-splitting scratch (NULL: none for this head_dim) */
  void *cublas_ws;
  int64_t cublas_ws_bytes;

  /* pinned host memory: the step parameters, the sampled token, a chunk of prompt tokens */
  void *pinned;
  kiln_cuda_step *h_step;
  int32_t *h_next;
  int32_t *h_tokens;

  /* the decode step as CUDA graphs: logits only, and logits + sampling. The _short pairs (n_short of them, 0 when
   * not used; smallest first) serve steps with fewer keys: pair i those below short_keys_at[i], with attention in
   * short_splits[i] splits combining inside thread-block clusters of that size, the keys cut exactly as in the
   * main graphs (kiln_cuda_attn_decode_short_keys). */
  cudaGraphExec_t g_logits, g_sample;
  cudaGraphExec_t g_logits_short[KILN_CUDA_SHORT_LEVELS], g_sample_short[KILN_CUDA_SHORT_LEVELS];
  int short_splits[KILN_CUDA_SHORT_LEVELS], short_keys_at[KILN_CUDA_SHORT_LEVELS], n_short;
  /* What decode attention's blocks prefetch into L2 for the GEMVs after it: -1 nothing, else the o_proj weights
   * and this many bytes of the gate/up weights (forward.c; KILN_CUDA_ATTN_L2PF=off|o|MiB) */
  int64_t attn_l2pf;
  /* The same from a side branch of the decode graph, forked after each layer's q/k/v GEMV: a kernel of its own
   * (l2_prefetch.h) on the side stream while attention runs, joined at the end of the step
   * (KILN_CUDA_L2PF_SIDE=off|o|MiB) */
  int64_t side_l2pf;
  cudaStream_t side;
  cudaEvent_t ev_fork, ev_join;
  /* Both chosen at create by timing the step (tune.c) unless either variable is set */
  bool l2pf_auto;
  /* the tuning's step times (ms, the sum over its positions) of each of kiln_cuda__l2pf_choice; 0 when not tuned */
  double l2pf_tune_ms[KILN_CUDA_L2PF_CHOICES];
  int attn_l2_at; /* kiln_cuda_attn_decode_args.l2_at (KILN_CUDA_ATTN_L2PF_AT: start, prologue, tiles) */
  /* Bytes of the next GEMV's weights each decode GEMV prefetches into L2 as its blocks finish
   * (KILN_CUDA_GEMV_L2NEXT, MiB; 0: none) */
  int64_t gemv_l2next;
  /* Prefill graphs (KILN_CUDA_PREFILL_GRAPH): a chunk is padded to its bucket's size and replays that size's graph
   * (captured at the size's second use) instead of launching ~8 kernels a layer from the host. The most tokens a
   * graphed chunk has: KILN_CUDA_MAX_CHUNK (1 or unset), KILN_CUDA_PREFILL_SHORT (short), 0 (0: none) */
  int prefill_graph_max;
  /* KILN_CUDA_SAMPLE=multi: the step's sampler spread over the SMs (sample_sc); NULL: one block */
  const kiln_cuda_sample_scratch *sample_multi;
  kiln_cuda_sample_scratch sample_sc;
  bool prefill_pdl; /* KILN_CUDA_PREFILL_PDL=1: the prefill's own kernels launched as programmatic dependents */
  int gu_blocks; /* KILN_CUDA_GEMV_GU_BLOCKS: the decode gate/up GEMV's blocks per SM (0: the usual cap) */
  bool attn_relaxed; /* kiln_cuda_attn_decode_args.relaxed_end (KILN_CUDA_ATTN_RELAXED=0: off) */
  int short_levels;  /* short-context graph pairs to capture: 1 .. KILN_CUDA_SHORT_LEVELS, the most unless
                      * KILN_CUDA_ATTN_LEVELS says fewer */
  bool attn_prof; /* KILN_CUDA_ATTN_PROFILE=1: layer 0's decode attention records its timeline into d_prof */
  cudaGraphExec_t g_prefill[KILN_CUDA_PREFILL_BUCKETS];
  bool prefill_seen[KILN_CUDA_PREFILL_BUCKETS];
  /* The prefill GEMMs' algorithms at each bucket's size (KILN_CUDA_GEMM_PLAN=time, tuning): planned before the
   * bucket's graph is captured, by timing cublasGemmEx's default against the cublasLt offers that give its bits
   * (gemm.h); gemm_planning false (the default): cublasGemmEx's default everywhere */
  bool gemm_planning;
  /* KILN_CUDA_PREFILL_GEMM: chunks of at least gemm_own_min tokens run kiln's own GEMMs (gemm_tc.h; SwiGLU fused
   * into gate/up) instead of cuBLAS (INT_MAX: never), with tiles gemm_tile (KILN_CUDA_GEMM_TILE; auto), one a
   * product (KILN_PF_*) */
  int gemm_own_min;
  bool gemm_own_all; /* o and down too (own), or only the fused q/k/v and gate/up products (fused) */
  int gemm_tile[KILN_PF_GEMMS];
  bool gemm_rope; /* and the q/k/v product with q/k norm, RoPE and the KV store (KILN_CUDA_GEMM_ROPE=0: not) */
  bool gemm_planned[KILN_CUDA_PREFILL_BUCKETS];
  kiln_cuda_gemm_algo gemm_plan[KILN_CUDA_PREFILL_BUCKETS][KILN_PF_GEMMS];

  /* the persistent decode kernel (decode_step.h): ds_blocks > 0 when the graphs launch it, 0 when they hold the
   * kernel-per-op step */
  kiln_cuda_layer *d_layers; /* device copy of `layers` */
  unsigned *d_barrier;
  unsigned long long *d_prof;
  kiln_cuda_decode_args ds;
  int ds_blocks;
};

/* The _short pair that serves a decode step at position pos (-1: the main graphs). */
static inline int kiln_cuda__short_level(const kiln_backend *b, int pos) {
  for (int i = 0; i < b->n_short; i++)
    if (pos < b->short_keys_at[i]) return i;
  return -1;
}

/* The graph that runs a decode step at position pos: with sampling or logits only, the _short one when it
 * serves that position. */
static inline cudaGraphExec_t kiln_cuda__step_graph(const kiln_backend *b, int pos, bool sample) {
  const int i = kiln_cuda__short_level(b, pos);
  if (i >= 0) return sample ? b->g_sample_short[i] : b->g_logits_short[i];
  return sample ? b->g_sample : b->g_logits;
}

/* The attention splits of the step at position pos as its graph runs them (0: the main graphs' b->n_splits, no
 * cluster). */
static inline int kiln_cuda__step_short_splits(const kiln_backend *b, int pos) {
  const int i = kiln_cuda__short_level(b, pos);
  return i >= 0 ? b->short_splits[i] : 0;
}

/* Steps below this many keys run a _short graph pair (0: none). */
static inline int kiln_cuda__short_keys(const kiln_backend *b) {
  return b->n_short > 0 ? b->short_keys_at[b->n_short - 1] : 0;
}

/* The handles, workspace and stream of b's GEMMs. */
static inline kiln_cuda_gemm_env kiln_cuda__gemm_env(const kiln_backend *b) {
  return (kiln_cuda_gemm_env){b->cublas, b->cublaslt, b->cublas_ws, (size_t)b->cublas_ws_bytes, b->stream};
}
/* The plans of a prefill chunk of n tokens into *out (KILN_PF_GEMMS of them), made now if n is a bucket's size not
 * yet planned; *out = NULL (cublasGemmEx's default) when planning is off or n is not a bucket's size. Synchronises
 * the stream: never under capture. */
int kiln_cuda__gemm_plans(kiln_backend *b, int n, const kiln_cuda_gemm_algo **out);

/* Allocates the arena and every pointer of the layout (weights not yet uploaded). */
int kiln_cuda__layout(kiln_backend *b);
/* Uploads the model's weights, converting to bf16 (matrices) and f32 (norms, biases). */
int kiln_cuda__upload(kiln_backend *b, const kiln_model *m);

/* Ends the stream capture begun on b->stream (always, so the stream is usable again) and instantiates the graph
 * into *out, unless rc (the result of enqueueing the captured work) or the capture failed; returns the first
 * error. */
int kiln_cuda__capture_end(kiln_backend *b, int rc, cudaGraphExec_t *out);
/* Captures the decode step (kiln_cuda__decode_enqueue) into a graph; the stream must be idle. */
int kiln_cuda__capture_decode(kiln_backend *b, bool sample, int short_splits, cudaGraphExec_t *out);
/* The (attn_l2pf, side_l2pf) pairs the tuning chooses among (none first), their names, and choice i applied to b. */
typedef struct kiln_cuda_l2pf {
  int64_t attn, side;
} kiln_cuda_l2pf;
extern const kiln_cuda_l2pf kiln_cuda__l2pf_choice[KILN_CUDA_L2PF_CHOICES];
extern const char *const kiln_cuda__l2pf_name[KILN_CUDA_L2PF_CHOICES];
void kiln_cuda__l2pf_set(kiln_backend *b, int choice);
/* The index of the choice to keep, given each choice's step time in ms (ms[0]: no prefetch): the fastest of those
 * faster than ms[0] by more than 1%, else 0. A time <= 0 is not a candidate. */
int kiln_cuda__l2pf_pick(const double *ms, int n);
/* Times the decode step with each of kiln_cuda__l2pf_choice (at a short and a long position of slot 0, the graphs
 * of the kernel-per-op path already captured to say which serves which), fills b->l2pf_tune_ms and returns the
 * chosen index in *choice. The steps leave their KV rows in slot 0 (create zeroes the cache after everything);
 * b->attn_l2pf and side_l2pf are left as they were: the caller applies the choice and recaptures. */
int kiln_cuda__tune_l2pf(kiln_backend *b, int *choice);
/* Enqueues one decode step (d_step already holds seq, pos, token): embedding .. lm_head into b->logits, plus the
 * sampled token into b->h_next when `sample`; short_splits > 0: the attention of a _short graph pair (that many
 * splits, cluster combine), 0: the main graphs'. Captured into the graphs; also run eagerly once as a warm-up. */
int kiln_cuda__decode_enqueue(kiln_backend *b, bool sample, int short_splits);
/* Enqueues the kernels of a prefill of n (<= chunk) tokens whose ids are in d_tokens and whose slot and first
 * position are in d_step: embedding .. final norm, and with last_logits the last token's logits into b->logits.
 * Only stream work (bench_cuda captures it into a graph to time the GPU alone). */
int kiln_cuda__prefill_enqueue(kiln_backend *b, int n, bool last_logits);
/* Runs n (<= chunk) tokens of a prefill: writes logits [n][V] (all_logits) or [V] of the last token (unless
 * logits is NULL) to host memory. Synchronous. */
int kiln_cuda__prefill_chunk(kiln_backend *b, int seq, int pos, const int32_t *tokens, int n, float *logits,
                             bool all_logits);

/* Creates a backend from a config without a host copy of the weights: weights are filled on the device with
 * random values (benchmarks of shapes too large to build on the host quickly). */
int kiln_cuda_create_random(kiln_backend **out, const kiln_config *cfg, const kiln_engine_opts *opts,
                            int device_index, uint64_t seed);

#endif
