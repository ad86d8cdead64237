/*
 * backend/cuda/attn_prefill.h (internal): causal attention of a chunk of new tokens over the KV cache
 * (flash-style: blocks of 64 queries x one head stream 64-key tiles through the tensor cores with an online
 * softmax; nothing of size n x n is stored). head_dim 64 and 128 run a FlashAttention-2 kernel on mma.sync that
 * keeps scores, probabilities and the output in registers; other head_dims a WMMA kernel that stages scores in
 * shared memory (see attn_prefill.cu).
 */
#ifndef KILN_CUDA_ATTN_PREFILL_H
#define KILN_CUDA_ATTN_PREFILL_H

#include <stdint.h>

#include <cuda_runtime_api.h>

#include "backend/cuda/cuda_common.h"
#include "backend/cuda/rope.h"

#ifdef __cplusplus
extern "C" {
#endif

/* q f32 [n][n_heads][head_dim] (rotated): token t at position step->pos + t attends to positions
 * 0 .. step->pos + t of slot step->seq (this chunk's keys and values already stored). out bf16
 * [n][n_heads][head_dim]. q, the probabilities and the values enter the tensor cores as bf16; scores, softmax
 * and the output accumulate in f32. head_dim must be a multiple of 8, at most 256; n_heads a multiple of
 * n_kv_heads (q head h reads kv head h / (n_heads / n_kv_heads)); n at most 2^24. Cache rows at or past
 * step->pos + n are never read. Asynchronous on `stream`. */
int kiln_cuda_attn_prefill(uint16_t *out, const float *q, const uint16_t *k_cache, const uint16_t *v_cache,
                           const kiln_cuda_step *step, int64_t n, const kiln_cuda_attn_shape *shape,
                           cudaStream_t stream);

#ifdef __cplusplus
}
#endif
#endif
