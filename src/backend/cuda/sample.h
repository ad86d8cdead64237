/*
 * backend/cuda/sample.h (internal): choosing the next token on the device, so that a decode step returns 4 bytes.
 */
#ifndef KILN_CUDA_SAMPLE_H
#define KILN_CUDA_SAMPLE_H

#include <stdint.h>

#include <cuda_runtime_api.h>

#include "backend/cuda/cuda_common.h"

#ifdef __cplusplus
extern "C" {
#endif

#define KILN_SAMPLE_MAX_BLOCKS 1024

/* The multi-block sampler's scratch (kiln_cuda_sample_scratch_carve). */
typedef struct kiln_cuda_sample_scratch {
  float *val;               /* [vocab]: each block's candidate logits, from its slice's first index on */
  int32_t *idx;             /* [vocab]: their indices */
  unsigned long long *part; /* [KILN_SAMPLE_MAX_BLOCKS][4]: a block's masses (all, min-p kept, candidates), count */
  unsigned *ticket;         /* blocks finished; the last resets it */
  int blocks;
} kiln_cuda_sample_scratch;

/* Writes the next token to *next from logits f32 [vocab] with the step's temperature, top_k, top_p, min_p, seed
 * and step, applied in Hugging Face's order (temperature, top-k, top-p, min-p, then a draw):
 *   greedy (temperature <= 0 or top_k == 1): the argmax, read from `argmax` (filled by the lm_head GEMV);
 *   top-k keeps the values >= the k-th largest (ties kept); top-p keeps a token when the probability of the
 *   tokens strictly above it (after top-k) is < top_p; min-p keeps p >= min_p * p_max;
 *   the draw: u = splitmix64(seed, step) in [0, 1), the first token in index order whose cumulative kept
 *   probability exceeds u. Masses are summed in 2^-40 fixed point, so the result is the same on every run.
 * multi NULL: one block, intended for the end of a decode step, where the logits sit in L2. With scratch (multi):
 * up to multi->blocks blocks share the pass over the logits and the last to finish samples from their sums, or
 * from the tokens within ~9.7 temperatures of the top logit where those hold every token top-k and top-p can keep
 * (else from all the logits, as one block does): the same token as one block, bit for bit, in less time when
 * the distribution is peaked (KILN_CUDA_SAMPLE=multi). */
int kiln_cuda_sample(int32_t *next, const float *logits, int64_t vocab, const unsigned long long *argmax,
                     const kiln_cuda_step *step, const kiln_cuda_sample_scratch *multi, cudaStream_t stream);

/* Bytes of the multi-block sampler's scratch for a vocabulary; carve sets the pointers into `mem` (256-byte aligned,
 * zeroed before the first launch: the ticket must start at 0) and the blocks (n_sm, at most KILN_SAMPLE_MAX_BLOCKS
 * and vocab). */
int64_t kiln_cuda_sample_scratch_bytes(int64_t vocab);
void kiln_cuda_sample_scratch_carve(kiln_cuda_sample_scratch *sc, void *mem, int64_t vocab, int n_sm);

/* KILN_CUDA_SAMPLE: unset, empty or "one" 0 (one block), "multi" 1, anything else -1. */
int kiln_cuda_sample_env(const char *v);

#ifdef __cplusplus
}
#endif
#endif
