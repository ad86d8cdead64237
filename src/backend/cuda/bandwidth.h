/*
 * backend/cuda/bandwidth.h (internal): the copy bandwidth of a GPU's memory, the denominator of the decode floor
 * (PERF.md), measured the same way for `kiln bench --device cuda` (the backend's copy_bandwidth entry) and for
 * bench_cuda.
 */
#ifndef KILN_CUDA_BANDWIDTH_H
#define KILN_CUDA_BANDWIDTH_H

#include <stddef.h>

#include <cuda_runtime_api.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Copies `bytes` device to device on the current device `reps` times on `stream` (between two buffers allocated
 * for the measurement and freed after it; halved down to 64 MiB when the device lacks room), and stores the best
 * rate after two warm-up copies, counted as bytes read + written per second. Returns 0 or KILN_EDEVICE. */
int kiln_cuda_copy_bandwidth(size_t bytes, int reps, cudaStream_t stream, double *bytes_per_s);

#ifdef __cplusplus
}
#endif
#endif
