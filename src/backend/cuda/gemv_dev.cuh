/*
 * backend/cuda/gemv_dev.cuh (internal, device code): the row loop of the decode GEMV, shared by the standalone
 * GEMV kernel (gemv.cu) and the persistent decode kernel (decode_step.cu).
 *
 * A warp owns pairs of rows (2p, 2p + 1) and walks them in chunks: a lane reads 16 bytes of each row per step,
 * KILN_GEMV_UNROLL steps per chunk, so a chunk is 2 x KILN_GEMV_UNROLL loads per lane. The next chunk is issued
 * before the current one is used, so a warp keeps two chunks in flight with no gap between them. The first chunk
 * depends only on the weights: callers issue it before they wait for their input (a PDL wait, a grid barrier).
 * Weights are read once and never reused: the loads bypass L1 (ld.global.nc.L1::no_allocate).
 */
#ifndef KILN_CUDA_GEMV_DEV_CUH
#define KILN_CUDA_GEMV_DEV_CUH

#include "backend/cuda/cuda_common.h"

#define KILN_GEMV_UNROLL 4

static __device__ __forceinline__ uint4 kiln_ld_stream(const uint4 *p) {
  uint4 v;
  asm("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
      : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
      : "l"(p));
  return v;
}

/* Orders floats as unsigned integers (NaN lowest), then the lower index first on ties: the larger packed value
 * wins, so an argmax is one 64-bit atomicMax. Decoded by kiln_cuda_argmax_index (gemv.h). */
static __device__ __forceinline__ unsigned long long kiln_pack_argmax(float v, int64_t row) {
  uint32_t u = __float_as_uint(v);
  uint32_t key = (v != v) ? 0u : ((u & 0x80000000u) ? ~u : (u | 0x80000000u));
  return ((unsigned long long)key << 32) | (unsigned long long)(0xffffffffu - (uint32_t)row);
}

/* One GEMV's matrix as the row loop sees it. */
typedef struct kiln_gemv_mat {
  const uint16_t *w; /* bf16 [n_rows][k8 * 8] */
  int64_t n_rows, k8;
} kiln_gemv_mat;

static __device__ __forceinline__ int64_t kiln_gemv_pairs(const kiln_gemv_mat &m) { return (m.n_rows + 1) / 2; }
static __device__ __forceinline__ int64_t kiln_gemv_chunks(const kiln_gemv_mat &m) {
  return (m.k8 + 32 * KILN_GEMV_UNROLL - 1) / (32 * KILN_GEMV_UNROLL);
}

/* Issues the loads of chunk c of row pair p (an odd last row is paired with itself; its result is dropped). */
static __device__ __forceinline__ void kiln_gemv_load(const kiln_gemv_mat &m, int64_t p, int64_t c, int lane,
                                                      uint4 *wa, uint4 *wb) {
  const int64_t r0 = 2 * p;
  const uint4 *w0 = (const uint4 *)(m.w + r0 * m.k8 * 8);
  const uint4 *w1 = r0 + 1 < m.n_rows ? w0 + m.k8 : w0;
#pragma unroll
  for (int u = 0; u < KILN_GEMV_UNROLL; u++) {
    int64_t k = c * 32 * KILN_GEMV_UNROLL + 32 * u + lane;
    wa[u] = k < m.k8 ? kiln_ld_stream(w0 + k) : make_uint4(0, 0, 0, 0);
    wb[u] = k < m.k8 ? kiln_ld_stream(w1 + k) : make_uint4(0, 0, 0, 0);
  }
}

/* Chunk c0 (the first of the warp's range; 0 by default) of the warp's first pair p (nothing when p is past the
 * matrix). */
static __device__ __forceinline__ void kiln_gemv_first(const kiln_gemv_mat &m, int64_t p, int lane, uint4 *ca,
                                                       uint4 *cb, int64_t c0 = 0) {
  if (p < kiln_gemv_pairs(m)) kiln_gemv_load(m, p, c0, lane, ca, cb);
}

/* L2 prefetch of chunk c of pair p (one bulk prefetch per row, lanes 0 and 1): the bytes move from HBM while the
 * warp works on earlier chunks, so the warp's loads of that chunk later hit L2. Fire and forget: no register, no
 * completion to wait for, which is how a warp keeps more bytes in flight than its registers hold. */
static __device__ __forceinline__ void kiln_gemv_prefetch(const kiln_gemv_mat &m, int64_t p, int64_t c, int lane) {
  const int64_t r = 2 * p + lane;
  if (lane >= 2 || p >= kiln_gemv_pairs(m) || r >= m.n_rows) return;
  const int64_t k0 = c * 32 * KILN_GEMV_UNROLL;
  const int64_t n = m.k8 - k0 < 32 * KILN_GEMV_UNROLL ? m.k8 - k0 : 32 * KILN_GEMV_UNROLL;
  const uint4 *src = (const uint4 *)(m.w + r * m.k8 * 8) + k0;
  asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(src), "r"((unsigned)(n * 16)) : "memory");
}

/* The warp's item after (p, c): the next chunk, or the first chunk of its next pair. */
static __device__ __forceinline__ void kiln_gemv_next(int64_t n_chunks, int64_t pstride, int64_t *p, int64_t *c) {
  if (++*c == n_chunks) *c = 0, *p += pstride;
}

/* Prefetches the items 1 .. pf after the warp's first (p, 0) into L2 (call with kiln_gemv_first). */
static __device__ __forceinline__ void kiln_gemv_prefetch_first(const kiln_gemv_mat &m, int64_t p, int64_t pstride,
                                                                int pf, int lane) {
  const int64_t n_chunks = kiln_gemv_chunks(m);
  int64_t c = 0;
  for (int i = 0; i < pf; i++) {
    kiln_gemv_next(n_chunks, pstride, &p, &c);
    kiln_gemv_prefetch(m, p, c, lane);
  }
}

/* Walks pairs p, p + pstride, ... over their chunks c0 .. c1 - 1 (a split of k among warps; the whole row is
 * 0 .. kiln_gemv_chunks) with chunk c0 of p already in ca/cb (kiln_gemv_first); xs is the input vector as bf16
 * (shared memory). For each finished pair, done(p, y0, y1) runs on every lane with the two rows' dot products over
 * the range summed over the warp (y1 is meaningless when row 2p + 1 does not exist). pf > 0 (whole rows only):
 * item i + 1 + pf is prefetched into L2 when item i + 1 is loaded (items 1 .. pf by kiln_gemv_prefetch_first). */
template <class Done>
static __device__ __forceinline__ void kiln_gemv_walk_range(const kiln_gemv_mat &m, const uint4 *xs, int64_t p,
                                                            int64_t pstride, int64_t c0, int64_t c1, int lane,
                                                            uint4 *ca, uint4 *cb, int pf, Done done) {
  const int64_t n_pairs = kiln_gemv_pairs(m), n_chunks = kiln_gemv_chunks(m);
  int64_t c = c0;
  bool have = p < n_pairs && c0 < c1;
  float a0 = 0.f, a1 = 0.f;
  int64_t fp = p, fc = 0; /* the prefetch cursor: pf + 1 items ahead of (p, c) */
  if (pf > 0)
    for (int i = 0; i <= pf; i++) kiln_gemv_next(n_chunks, pstride, &fp, &fc);
  while (have) {
    int64_t np = p, nc = c + 1;
    if (nc == c1) nc = c0, np = p + pstride;
    const bool have_next = np < n_pairs;
    uint4 na[KILN_GEMV_UNROLL], nb[KILN_GEMV_UNROLL];
    if (have_next) kiln_gemv_load(m, np, nc, lane, na, nb);
    if (pf > 0 && fp < n_pairs) {
      kiln_gemv_prefetch(m, fp, fc, lane);
      kiln_gemv_next(n_chunks, pstride, &fp, &fc);
    }
#pragma unroll
    for (int u = 0; u < KILN_GEMV_UNROLL; u++) {
      int64_t k = c * 32 * KILN_GEMV_UNROLL + 32 * u + lane;
      if (k < m.k8) {
        uint4 x = xs[k];
        a0 = kiln_dot8_bf16(ca[u], x, a0);
        a1 = kiln_dot8_bf16(cb[u], x, a1);
      }
    }
    if (c == c1 - 1) { /* the pair's range is complete (c and p are the same across the warp) */
      a0 = kiln_warp_sum(a0);
      a1 = kiln_warp_sum(a1);
      done(p, a0, a1);
      a0 = a1 = 0.f;
    }
    p = np, c = nc, have = have_next;
#pragma unroll
    for (int u = 0; u < KILN_GEMV_UNROLL; u++) ca[u] = na[u], cb[u] = nb[u];
  }
}

/* kiln_gemv_walk_range over whole rows. */
template <class Done>
static __device__ __forceinline__ void kiln_gemv_walk(const kiln_gemv_mat &m, const uint4 *xs, int64_t p,
                                                      int64_t pstride, int lane, uint4 *ca, uint4 *cb, int pf,
                                                      Done done) {
  kiln_gemv_walk_range(m, xs, p, pstride, 0, kiln_gemv_chunks(m), lane, ca, cb, pf, done);
}

static __device__ __forceinline__ float kiln_silu_mul(float g, float u) { return g / (1.f + expf(-g)) * u; }

#endif /* KILN_CUDA_GEMV_DEV_CUH */
