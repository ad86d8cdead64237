/*
 * backend/cuda/compare.h (internal): whether two device buffers hold the same bits, decided on the device (the
 * GEMM planner's check that an algorithm reproduces the default's result).
 */
#ifndef KILN_CUDA_COMPARE_H
#define KILN_CUDA_COMPARE_H

#include <stdint.h>

#include <cuda_runtime_api.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Sets *flag (device memory) to 1 when the `bytes` bytes at a and at b differ anywhere; leaves it as it was when
 * they are equal. Only stream work. */
int kiln_cuda_bits_differ(const void *a, const void *b, int64_t bytes, unsigned *flag, cudaStream_t stream);

#ifdef __cplusplus
}
#endif
#endif
