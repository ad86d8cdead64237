/*
 * backend/cuda/attn_decode.h (internal): attention of one new token over the KV cache, its q/k norm, RoPE and KV
 * store folded in, split along the keys (flash-decoding) so that a long context spreads over every SM: each block
 * reduces one chunk of keys for one KV head and the query heads that share it (GQA), leaving a partial (max, sum,
 * weighted values) that are combined in the same kernel: through distributed shared memory when a group's blocks
 * are one thread-block cluster (n_splits no larger than the device's cluster limit), else by the last block of
 * the group to finish, through global memory.
 */
#ifndef KILN_CUDA_ATTN_DECODE_H
#define KILN_CUDA_ATTN_DECODE_H

#include <stdint.h>

#include <cuda_runtime_api.h>

#include "backend/cuda/cuda_common.h"
#include "backend/cuda/rope.h"

#ifdef __cplusplus
extern "C" {
#endif

/* How many key chunks to split into for this shape on the current device (n_sm SMs), at least 1, into *n_splits.
 * In cluster mode ALL (kiln_cuda_attn_decode_cluster) and up to 16K keys of context, they are at most the
 * size of a thread-block cluster the device runs, so the combine stays on chip. Returns 0 or an error. */
int kiln_cuda_attn_decode_splits(const kiln_cuda_attn_shape *shape, int n_sm, int *n_splits);

/* Bytes of scratch: the f32 partials [n_heads][n_splits][head_dim + 2], then the arrival counters, one a head (as
 * many as head groups of any size). The counters must be zeroed once (kiln_cuda_attn_decode_init); every call
 * leaves them zero again. */
int64_t kiln_cuda_attn_decode_scratch(const kiln_cuda_attn_shape *shape, int n_splits);
int kiln_cuda_attn_decode_init(float *scratch, const kiln_cuda_attn_shape *shape, int n_splits, cudaStream_t stream);

/* The attention of one new token, from its projections:
 *   qkv  f32 [n_heads + 2 n_kv_heads][head_dim]: the token's q, k and v rows (biases already added)
 *   q_norm, k_norm  f32 [head_dim], or NULL: per-head RMSNorm of q and k (eps)
 *   rope  f32 [n_ctx][head_dim]: RoPE's table (kiln_cuda_rope_table); row step->pos is read
 * stores the token's normalised, rotated key and its value (bf16) at position step->pos of slot step->seq, then
 * attends with q over positions 0 .. step->pos: out bf16 [n_heads][head_dim], softmax scale 1/sqrt(head_dim).
 * head_dim must be a multiple of 8, at most 256. `scratch` holds kiln_cuda_attn_decode_scratch() bytes. */
typedef struct kiln_cuda_attn_decode_args {
  uint16_t *out;
  const float *qkv, *q_norm, *k_norm, *rope;
  float eps;
  uint16_t *k_cache, *v_cache;
  const kiln_cuda_step *step;
  kiln_cuda_attn_shape shape;
  int n_splits;
  float *scratch;
  int cluster; /* nonzero: combine inside a thread-block cluster when n_splits fits one (the short-context graph of
                * cuda_backend.c), unless the mode is KILN_CUDA_ATTN_CLUSTER_OFF */
  /* Optional (NULL / 0: none): byte ranges the blocks prefetch into L2 while they run, all blocks together
   * covering each range once; 16-byte aligned, lengths multiples of 16. Decode attention moves few bytes, so HBM
   * would idle: the graph can give it the weights the following GEMVs read first (KILN_CUDA_ATTN_L2PF; off by
   * default, as it measured slower on an H100: docs/cuda.md). */
  const void *l2_next[2];
  int64_t l2_next_bytes[2];
  /* NULL, or KILN_AD_PROF_WORDS words (tuning only, KILN_CUDA_ATTN_PROFILE=1): each block's timeline of the call,
   * 8 words a block (block index x + grid.x (y + grid.y z), the first KILN_AD_PROF_WORDS / 8 blocks): SM clock at
   * entry, after the PDL wait, after the prologue, after the tiles, after the combine; global timer (ns) at entry
   * and at the end */
  unsigned long long *prof;
  int relaxed_end; /* the cluster combine's last barrier without release semantics (KILN_CUDA_ATTN_RELAXED) */
  int rope_vec;    /* the prologue's q/k norm + RoPE in vector form (kiln_cuda_rope_vec) */
  int l2_at;       /* when blocks prefetch l2_next: 0 at entry, 1 after the prologue, 2 after the tiles */
} kiln_cuda_attn_decode_args;
#define KILN_AD_PROF_WORDS 2048

int kiln_cuda_attn_decode(const kiln_cuda_attn_decode_args *args, cudaStream_t stream);

/* Process-wide: where a group's splits combine inside a thread-block cluster instead of through global memory.
 * SHORT (the default): launches that ask for it (args.cluster), which the CUDA backend does for positions where
 * the capped split count leaves the keys' partition unchanged (a second pair of decode graphs; 5% faster decode
 * at ctx 128 on Qwen3-0.6B, no change at 2,048: docs/cuda.md). ALL: every launch whose splits fit a cluster, and
 * kiln_cuda_attn_decode_splits caps the splits at the cluster size up to 16K keys of context (faster at short
 * contexts, slower at long ones). OFF: never. The mode comes from KILN_CUDA_ATTN_CLUSTER (unset or short: SHORT,
 * 1: ALL, 0: OFF), read at first use. Set it before a backend is created: the split count and the graphs depend
 * on it. */
enum { KILN_CUDA_ATTN_CLUSTER_OFF = 0, KILN_CUDA_ATTN_CLUSTER_ALL = 1, KILN_CUDA_ATTN_CLUSTER_SHORT = 2 };
void kiln_cuda_attn_decode_cluster(int mode);
int kiln_cuda_attn_decode_cluster_mode(void);
/* The mode a KILN_CUDA_ATTN_CLUSTER value names (NULL or empty: SHORT), or -1 for a value it does not know. */
int kiln_cuda_attn_decode_cluster_env(const char *value);
/* The block size KILN_CUDA_ATTN_THREADS asks for (unset or auto: 0, the choice by the q heads a unit computes;
 * 128; 256), -1 for any other value. Read at the first launch; tuning only. */
int kiln_cuda_attn_decode_threads_env(const char *value);
/* The cap on the query heads a unit computes KILN_CUDA_ATTN_GROUP asks for (unset or auto: 0, the defaults: up to 8
 * heads in the global combine, up to 2 in the cluster combine; 1, 2, 4 or 8 caps both), -1 for any other value.
 * Read at the first launch; tuning only. */
int kiln_cuda_attn_decode_group_env(const char *value);
/* Keys (the new token's included) up to which n_splits splits cut the keys exactly as any larger split count
 * does (every chunk at its minimum size): a graph with fewer splits may serve those positions unchanged. */
int kiln_cuda_attn_decode_short_keys(int n_splits);
/* The most splits the cluster combine takes for this shape on the current device (0: no clusters); more splits
 * use the global combine. */
int kiln_cuda_attn_decode_cluster_max(const kiln_cuda_attn_shape *shape, int *cmax);

#ifdef __cplusplus
}
#endif
#endif
