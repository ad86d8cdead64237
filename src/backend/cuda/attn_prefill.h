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

/* Key splitting (head_dim 64 and 128): a chunk whose (64-query tile, head) pairs are too few to fill the GPU
 * cuts the keys of its long tiles over up to 8 blocks, which the last to finish combines. This needs scratch of
 * kiln_cuda_attn_prefill_scratch() bytes (0: none), zeroed once; every call leaves it ready for the next
 * (KILN_CUDA_ATTN_PF_SPLIT=N caps the parts: 1 never splits). */
int64_t kiln_cuda_attn_prefill_scratch(const kiln_cuda_attn_shape *shape, int n_sm);
/* The most parts a chunk of n tokens cuts a tile's keys into on a device of n_sm SMs (1: none). */
int kiln_cuda_attn_prefill_parts(const kiln_cuda_attn_shape *shape, int64_t n, int n_sm);
/* KILN_CUDA_ATTN_PF_SPLIT's value: the cap on parts (unset or auto: 8), -1 when it is not auto or 1-8. */
int kiln_cuda_attn_prefill_split_env(const char *v);

/* Which tensor-core instructions the head_dim 64 and 128 kernel uses: Hopper's warpgroup MMA (wgmma, where the
 * build has sm_90a code and the device is compute capability 9.x; auto, the default) or mma.sync (sync; every
 * device from sm_80). KILN_CUDA_ATTN_PF_MMA=auto|wgmma|sync is read at first use;
 * kiln_cuda_attn_prefill_mma overrides it (tests). wgmma asked for where it is not possible runs mma.sync. */
enum { KILN_CUDA_PF_MMA_AUTO = 0, KILN_CUDA_PF_MMA_WGMMA = 1, KILN_CUDA_PF_MMA_SYNC = 2 };
/* KILN_CUDA_ATTN_PF_MMA's value (unset: auto), -1 when it is none of auto, wgmma, sync. */
int kiln_cuda_attn_prefill_mma_env(const char *v);
void kiln_cuda_attn_prefill_mma(int mode);
/* *wg = 1 when a launch on the current device would run the wgmma form. */
int kiln_cuda_attn_prefill_uses_wgmma(int *wg);
/* 1 when the library carries sm_90a code (CMAKE_CUDA_ARCHITECTURES has 90a), so that wgmma kernels can run. */
int kiln_cuda_wgmma_built(void);

/* q bf16 [n][n_heads][head_dim] (rotated): token t at position step->pos + t attends to positions
 * 0 .. step->pos + t of slot step->seq (this chunk's keys and values already stored). out bf16
 * [n][n_heads][head_dim]. q, the probabilities and the values enter the tensor cores as bf16; scores, softmax
 * and the output accumulate in f32. head_dim must be a multiple of 8, at most 256; n_heads a multiple of
 * n_kv_heads (q head h reads kv head h / (n_heads / n_kv_heads)); n at most 2^24. Cache rows at or past
 * step->pos + n are never read. `scratch` (kiln_cuda_attn_prefill_scratch() bytes for n_sm, or NULL: no key
 * splitting) is used by one call at a time. Asynchronous on `stream`. */
int kiln_cuda_attn_prefill(uint16_t *out, const uint16_t *q, const uint16_t *k_cache, const uint16_t *v_cache,
                           const kiln_cuda_step *step, int64_t n, const kiln_cuda_attn_shape *shape, void *scratch,
                           int n_sm, cudaStream_t stream);

#ifdef __cplusplus
}
#endif
#endif
