/*
 * backend/cuda/attn_prefill.h (internal): causal attention of a chunk of new tokens over the KV cache
 * (flash-style: tiles of 64 queries x 64 keys on the tensor cores, online softmax, nothing of size n x n stored).
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
 * and the output accumulate in f32. head_dim must be a multiple of 8, at most 256. */
int kiln_cuda_attn_prefill(uint16_t *out, const float *q, const uint16_t *k_cache, const uint16_t *v_cache,
                           const kiln_cuda_step *step, int64_t n, const kiln_cuda_attn_shape *shape,
                           cudaStream_t stream);

#ifdef __cplusplus
}
#endif
#endif
