/*
 * backend/cuda/gemv.cu: the decode GEMV (see gemv.h).
 *
 * Layout of the work: a block of up to 8 warps first builds the bf16 input vector in shared memory (normalising it
 * when asked), then each warp takes pairs of rows in a grid-stride loop (the row loop of gemv_dev.cuh: two
 * chunks of 8 16-byte loads per lane in flight). The grid is as many blocks as fit on the device at once (not
 * more: every block pays for the prologue), so every SM streams.
 */
#include <stdlib.h>

#include "backend/cuda/cuda_common.h"
#include "backend/cuda/gemv.h"
#include "backend/cuda/gemv_dev.cuh"

#define GEMV_THREADS 256
#define GEMV_WARPS (GEMV_THREADS / 32)
#define GEMV_BLOCKS_PER_SM 4

static __device__ __forceinline__ void epilogue_(const kiln_cuda_gemv_args &a, int64_t row, float acc,
                                                 unsigned long long *best) {
  switch (a.mode) {
  case KILN_GEMV_STORE: a.y[row] = acc + (a.bias ? a.bias[row] : 0.f); break;
  case KILN_GEMV_ADD: a.y[row] += acc + (a.bias ? a.bias[row] : 0.f); break;
  case KILN_GEMV_ARGMAX: {
    a.y[row] = acc;
    unsigned long long p = kiln_pack_argmax(acc, row);
    if (p > *best) *best = p;
    break;
  }
  default: break;
  }
}

static __global__ void __launch_bounds__(GEMV_THREADS) gemv_kernel(kiln_cuda_gemv_args a) {
  extern __shared__ uint4 xs[]; /* [k / 8]: the input as bf16 */
  __shared__ float red[GEMV_WARPS];
  __shared__ unsigned long long best_w[GEMV_WARPS];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int nw = blockDim.x >> 5, nt = blockDim.x; /* warps and threads of this launch (<= GEMV_THREADS) */
  const int64_t K = a.k, K8 = a.k / 8;
  const kiln_gemv_mat m = {a.w, a.n_rows, K8};
  kiln_pdl_trigger();

  /* The first chunk depends on nothing: it loads before the wait. */
  const int64_t p0 = (int64_t)blockIdx.x * nw + warp;
  uint4 ca[KILN_GEMV_UNROLL], cb[KILN_GEMV_UNROLL];
  kiln_gemv_first(m, p0, lane, ca, cb);
  kiln_pdl_wait();

  /* ---- prologue: the input vector, once per block ---- */
  if (a.x_bf16) {
    const uint4 *src = (const uint4 *)a.x_bf16;
    for (int64_t i = threadIdx.x; i < K8; i += nt) xs[i] = src[i];
  } else {
    float inv = 1.f;
    if (a.norm_w) {
      float ss = 0.f;
      for (int64_t i = threadIdx.x; i < K; i += nt) ss = fmaf(a.x_f32[i], a.x_f32[i], ss);
      ss = kiln_warp_sum(ss);
      if (lane == 0) red[warp] = ss;
      __syncthreads();
      float tot = 0.f;
      for (int i = 0; i < nw; i++) tot += red[i];
      inv = rsqrtf(tot / (float)K + a.eps);
    }
    uint16_t *xh = (uint16_t *)xs;
    for (int64_t i = threadIdx.x; i < K; i += nt) {
      float v = a.x_f32[i] * inv;
      if (a.norm_w) v = a.norm_w[i] * v;
      xh[i] = kiln_f32_to_bf16_dev(v);
    }
  }
  __syncthreads();

  unsigned long long best = 0ull;
  kiln_gemv_walk(m, xs, p0, (int64_t)gridDim.x * nw, lane, ca, cb, 0, [&](int64_t p, float y0, float y1) {
    if (lane) return;
    const int64_t r0 = 2 * p;
    if (a.mode == KILN_GEMV_SWIGLU) {
      /* silu(g) u with g = row 2p, u = row 2p + 1 (n_rows is even in this mode) */
      a.y_bf16[p] = kiln_f32_to_bf16_dev(kiln_silu_mul(y0, y1));
    } else {
      epilogue_(a, r0, y0, &best);
      if (r0 + 1 < a.n_rows) epilogue_(a, r0 + 1, y1, &best);
    }
  });

  if (a.mode == KILN_GEMV_ARGMAX) {
    if (lane == 0) best_w[warp] = best;
    __syncthreads();
    if (threadIdx.x == 0) {
      unsigned long long b = 0ull;
      for (int i = 0; i < nw; i++) b = best_w[i] > b ? best_w[i] : b;
      if (b) atomicMax(a.argmax, b);
    }
  }
}

static int gemv_launch(const kiln_cuda_gemv_args *a, cudaStream_t stream) {
  static size_t smem_set[KILN_CUDA_MAX_DEVICES];
  int dev = 0, n_sm = 0, occ = 0;
  KILN_CUDA_CHECK(cudaGetDevice(&dev));
  KILN_CUDA_CHECK(cudaDeviceGetAttribute(&n_sm, cudaDevAttrMultiProcessorCount, dev));
  size_t smem = (size_t)a->k * sizeof(uint16_t);
  int rc = kiln_cuda__allow_smem((const void *)gemv_kernel, smem, smem_set, 0);
  if (rc) return rc;
  /* Narrower blocks when the matrix has too few row pairs to give every SM two blocks of 8 warps. */
  const int64_t pairs = (a->n_rows + 1) / 2;
  int threads = GEMV_THREADS;
  while (threads > 64 && pairs / (threads / 32) < 2 * (int64_t)n_sm) threads /= 2;
  KILN_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&occ, gemv_kernel, threads, smem));
  /* GEMV_BLOCKS_PER_SM blocks keep up to 256 KiB of loads in flight per SM, well over the bandwidth-latency
   * product (4 measured a little faster than 2 on the 8B shapes); the rest of the SM is left to the next kernel
   * of a PDL chain, which prefetches its own weights. The
   * environment variable KILN_CUDA_GEMV_BLOCKS overrides the cap (tuning only). */
  static int cap = 0;
  if (cap == 0) {
    const char *e = getenv("KILN_CUDA_GEMV_BLOCKS");
    cap = e && atoi(e) > 0 ? atoi(e) : GEMV_BLOCKS_PER_SM;
  }
  if (occ > cap) occ = cap;
  if (occ < 1) occ = 1;
  int64_t need = (pairs + threads / 32 - 1) / (threads / 32);
  int64_t fit = (int64_t)n_sm * occ;
  unsigned blocks = (unsigned)(need < fit ? need : fit);
  KILN_CUDA_CHECK(kiln_launch(gemv_kernel, dim3(blocks), dim3(threads), smem, stream, *a));
  return 0;
}

extern "C" int kiln_cuda_gemv(const kiln_cuda_gemv_args *a, cudaStream_t stream) {
  if (!a->w || a->n_rows <= 0 || a->k <= 0 || a->k % 8 || a->k > 100000 || a->n_rows > 0x7ffffffe)
    return kiln_error(KILN_EINVAL, "cuda gemv: bad shape (%lld x %lld; k must be a multiple of 8)",
                      (long long)a->n_rows, (long long)a->k);
  if (!a->x_bf16 && !a->x_f32) return kiln_error(KILN_EINVAL, "cuda gemv: no input");
  if ((a->mode == KILN_GEMV_SWIGLU && (!a->y_bf16 || a->n_rows % 2)) ||
      (a->mode != KILN_GEMV_SWIGLU && !a->y) || (a->mode == KILN_GEMV_ARGMAX && !a->argmax) ||
      a->mode < KILN_GEMV_STORE || a->mode > KILN_GEMV_ARGMAX)
    return kiln_error(KILN_EINVAL, "cuda gemv: bad output for mode %d", (int)a->mode);
  return gemv_launch(a, stream);
}
