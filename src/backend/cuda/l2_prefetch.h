/*
 * backend/cuda/l2_prefetch.h (internal): a kernel that only asks L2 to fetch weights, for a side branch of the
 * decode graph (KILN_CUDA_L2PF_SIDE, forward.c).
 */
#ifndef KILN_CUDA_L2_PREFETCH_H
#define KILN_CUDA_L2_PREFETCH_H

#include <stdint.h>

#include <cuda_runtime_api.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Bulk L2 prefetches of [p0, p0 + b0) and [p1, p1 + b1) (either may be NULL or empty; 16-byte aligned, sizes
 * multiples of 16), spread over `blocks` blocks of one warp: fire and forget, the kernel ends once they are issued.
 * Launched plainly (never as a programmatic dependent). */
int kiln_cuda_l2_prefetch(const void *p0, int64_t b0, const void *p1, int64_t b1, int blocks, cudaStream_t stream);

#ifdef __cplusplus
}
#endif
#endif
