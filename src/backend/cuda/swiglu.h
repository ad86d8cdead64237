/*
 * backend/cuda/swiglu.h (internal): the SwiGLU activation of a chunk of tokens.
 */
#ifndef KILN_CUDA_SWIGLU_H
#define KILN_CUDA_SWIGLU_H

#include <stdint.h>

#include <cuda_runtime_api.h>

#ifdef __cplusplus
extern "C" {
#endif

/* gu bf16 [n][2 inter] holds gate and up interleaved (gate_i at 2i, up_i at 2i + 1: the order in which the
 * backend stores the fused gate/up weight); act bf16 [n][inter] = silu(gate) * up, silu(x) = x / (1 + e^-x).
 * gu 8-byte and act 4-byte aligned. */
int kiln_cuda_swiglu(uint16_t *act, const uint16_t *gu, int64_t n, int64_t inter, cudaStream_t stream);

#ifdef __cplusplus
}
#endif
#endif
