/*
 * backend/cuda/random_fill.h (internal): random weights generated on the device (benchmarks of large shapes).
 */
#ifndef KILN_CUDA_RANDOM_FILL_H
#define KILN_CUDA_RANDOM_FILL_H

#include <stdint.h>

#include <cuda_runtime_api.h>

#ifdef __cplusplus
extern "C" {
#endif

/* p[i] = mean + std * z_i, z_i approximately standard normal (Irwin-Hall of four 16-bit lanes of
 * splitmix64(seed, i)), as bf16 (bf16 != 0) into p16 or as f32 into p32. */
int kiln_cuda_fill_random(uint16_t *p16, float *p32, int64_t n, uint64_t seed, float mean, float std,
                          cudaStream_t stream);

#ifdef __cplusplus
}
#endif
#endif
