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

/* Writes the next token to *next from logits f32 [vocab] with the step's temperature, top_k, top_p, min_p, seed
 * and step, applied in Hugging Face's order (temperature, top-k, top-p, min-p, then a draw):
 *   greedy (temperature <= 0 or top_k == 1): the argmax, read from `argmax` (filled by the lm_head GEMV);
 *   top-k keeps the values >= the k-th largest (ties kept); top-p keeps a token when the probability of the
 *   tokens strictly above it (after top-k) is < top_p; min-p keeps p >= min_p * p_max;
 *   the draw: u = splitmix64(seed, step) in [0, 1), the first token in index order whose cumulative kept
 *   probability exceeds u. Masses are summed in 2^-40 fixed point, so the result is the same on every run.
 * One block: intended for the end of a decode step, where the logits sit in L2. */
int kiln_cuda_sample(int32_t *next, const float *logits, int64_t vocab, const unsigned long long *argmax,
                     const kiln_cuda_step *step, cudaStream_t stream);

#ifdef __cplusplus
}
#endif
#endif
