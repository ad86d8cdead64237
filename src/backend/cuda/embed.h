/*
 * backend/cuda/embed.h (internal): the token embedding lookup.
 */
#ifndef KILN_CUDA_EMBED_H
#define KILN_CUDA_EMBED_H

#include <stdint.h>

#include <cuda_runtime_api.h>

#ifdef __cplusplus
extern "C" {
#endif

/* x[t][:] = f32(table[ids[t]][:]) for t < n, table bf16 [vocab][hidden]. ids is device memory (the decode graph
 * reads the step's token there). Ids outside [0, vocab) give a row of NaN, never an out-of-bounds read. When
 * `reset` is not NULL, *reset = 0 (the decode step's argmax cell; done here to spare a graph node). */
int kiln_cuda_embed(float *x, const uint16_t *table, int64_t vocab, int64_t hidden, const int32_t *ids, int64_t n,
                    unsigned long long *reset, cudaStream_t stream);

#ifdef __cplusplus
}
#endif
#endif
