/*
 * backend/cuda/gemv.cu: the decode GEMV (see gemv.h).
 *
 * Layout of the work: a block of up to 8 warps first builds the bf16 input vector in shared memory (normalising it
 * when asked), then each warp takes pairs of rows in a grid-stride loop (the row loop of gemv_dev.cuh: two
 * chunks of 8 16-byte loads per lane in flight). The grid is as many blocks as fit on the device at once (not
 * more: every block pays for the prologue), so every SM streams.
 *
 * Split k: S warps of a block share each row pair, one contiguous range of its chunks each, and the pair's first
 * warp adds their sums in a fixed order after a named barrier of those S warps (deterministic). It shortens the
 * chain of dependent loads a warp walks when a matrix has about one long row pair per warp. By default (auto) only
 * rows of 6 chunks or more split, which at Qwen3 shapes is the down GEMV from 1.7B up: on an H100 that made the step
 * 2.0% faster at 1.7B, 0.8% at 4B, 0.3% at 8B; splitting the 4-chunk o GEMV as well made 4B 3% slower
 * (tuning: KILN_CUDA_GEMV_SPLIT=1|2|4 forces a split where the rows have at least 2 chunks a warp, all splits down
 * to one chunk a warp; docs/cuda.md).
 */
#include <stdlib.h>
#include <string.h>

#include "backend/cuda/cuda_common.h"
#include "backend/cuda/gemv.h"
#include "backend/cuda/gemv_dev.cuh"

#define GEMV_THREADS 256
#define GEMV_WARPS (GEMV_THREADS / 32)
#define GEMV_BLOCKS_PER_SM 4
#define GEMV_XV 4 /* 16-byte pieces of the input a thread has in flight at once in the prologue (f32 input) */
#define GEMV_XV_BF16 8 /* bf16 input: a block of 64 threads reads the 0.6B down GEMV's 6 KB in one round */

/* The warp's first row pair's biases (loaded before the PDL wait) and, in ADD mode, old outputs (right after it),
 * held by the lane that runs the pair's epilogue. */
typedef struct gemv_pre {
  float b0, b1, y0, y1;
} gemv_pre;

/* One row's output; pre: the row belongs to the warp's first pair, whose bias and old output are pb and py. */
template <int MODE>
static __device__ __forceinline__ void epilogue_(const kiln_cuda_gemv_args &a, int64_t row, float acc,
                                                 unsigned long long *best, bool pre, float pb, float py) {
  const float b = pre ? pb : a.bias ? a.bias[row] : 0.f;
  switch (MODE) {
  case KILN_GEMV_STORE: a.y[row] = acc + b; break;
  case KILN_GEMV_ADD: a.y[row] = (pre ? py : a.y[row]) + (acc + b); break;
  case KILN_GEMV_ARGMAX: {
    a.y[row] = acc;
    unsigned long long p = kiln_pack_argmax(acc, row);
    if (p > *best) *best = p;
    break;
  }
  default: break;
  }
}

static __device__ __forceinline__ void bar_sync_(int id, int threads) {
  asm volatile("bar.sync %0, %1;" ::"r"(id), "r"(threads) : "memory");
}

/* One kernel per input kind (XBF16: a.x_bf16 as it is; else a.x_f32, normalised when a.norm_w), output mode and
 * whether the L2 prefetch runs (PF), so that each carries only its own code: the kernel runs once per GEMV, its
 * instructions are fetched cold, and the one kernel for every case was 50 KB with the cases' code interleaved.
 * split: warps per row pair (1, 2 or 4; divides the block's warps); pf: L2 prefetch distance (PF only, split 1) */
template <bool XBF16, int MODE, bool PF>
static __global__ void __launch_bounds__(GEMV_THREADS) gemv_kernel(kiln_cuda_gemv_args a, int pf_arg, int split) {
  const int pf = PF ? pf_arg : 0;
  extern __shared__ uint4 xs[]; /* [k / 8]: the input as bf16 */
  __shared__ float red[GEMV_WARPS];
  __shared__ unsigned long long best_w[GEMV_WARPS];
  __shared__ float2 part_sum[2][GEMV_WARPS]; /* split k: each warp's sums, double-buffered by pair parity */
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int nw = blockDim.x >> 5, nt = blockDim.x; /* warps and threads of this launch (<= GEMV_THREADS) */
  const int64_t K8 = a.k / 8, K4 = a.k / 4;
  const kiln_gemv_mat m = {a.w, a.n_rows, K8};
  kiln_pdl_trigger();

  /* The first chunk depends on nothing: it loads before the wait (and, with pf, the next pf chunks into L2). */
  /* split is 1, 2 or 4: shifts, not divisions (a 64-bit division is a call to a subroutine, ahead of the first
   * load) */
  const int ls = __ffs(split) - 1, slots = nw >> ls, slot = warp >> ls, part = warp & (split - 1);
  const int64_t nc = kiln_gemv_chunks(m), c0 = (part * nc) >> ls, c1 = ((part + 1) * nc) >> ls;
  const int64_t p0 = (int64_t)blockIdx.x * slots + slot, pstride = (int64_t)gridDim.x * slots;
  uint4 ca[KILN_GEMV_UNROLL], cb[KILN_GEMV_UNROLL];
  kiln_gemv_first(m, p0, lane, ca, cb, c0);
  if (pf > 0) kiln_gemv_prefetch_first(m, p0, pstride, pf, lane);
  /* Constants the prologue and the first pair's epilogue need (the norm weights of the thread's first round, the
   * first pair's biases) load before the wait too: read once per step, they have left L2 by then, and after the
   * wait each would be a memory latency on the kernel's path. */
  const float4 *x4 = (const float4 *)a.x_f32, *w4 = (const float4 *)a.norm_w;
  const bool pre_w = !XBF16 && w4;
  float4 wpre[GEMV_XV];
#pragma unroll
  for (int u = 0; u < GEMV_XV; u++)
    wpre[u] = pre_w && tid + u * nt < K4 ? w4[tid + u * nt] : make_float4(1.f, 1.f, 1.f, 1.f);
  gemv_pre pre = {0.f, 0.f, 0.f, 0.f};
  const bool own = lane == 0 && part == 0 && p0 < kiln_gemv_pairs(m);
  if (own && a.bias) {
    pre.b0 = a.bias[2 * p0];
    if (2 * p0 + 1 < a.n_rows) pre.b1 = a.bias[2 * p0 + 1];
  }
  kiln_pdl_wait();
  /* ADD: the first pair's old outputs (another kernel's, complete now) requested under the prologue */
  if (own && MODE == KILN_GEMV_ADD) {
    pre.y0 = __ldcg(a.y + 2 * p0);
    if (2 * p0 + 1 < a.n_rows) pre.y1 = __ldcg(a.y + 2 * p0 + 1);
  }

  /* ---- prologue: the input vector, once per block; a thread's loads go out GEMV_XV at a time, so the block
   * waits for one or two memory latencies, not one per element it reads ---- */
  if (XBF16) {
    const uint4 *src = (const uint4 *)a.x_bf16;
#pragma unroll 1
    for (int64_t i0 = tid; i0 < K8; i0 += GEMV_XV_BF16 * nt) {
      uint4 v[GEMV_XV_BF16];
#pragma unroll
      for (int u = 0; u < GEMV_XV_BF16; u++)
        if (i0 + u * nt < K8) v[u] = src[i0 + u * nt];
#pragma unroll
      for (int u = 0; u < GEMV_XV_BF16; u++)
        if (i0 + u * nt < K8) xs[i0 + u * nt] = v[u];
    }
  } else {
    float inv = 1.f;
    if (a.norm_w) {
      float ss = 0.f;
#pragma unroll 1
      for (int64_t i0 = tid; i0 < K4; i0 += GEMV_XV * nt) {
        float4 v[GEMV_XV];
#pragma unroll
        for (int u = 0; u < GEMV_XV; u++)
          v[u] = i0 + u * nt < K4 ? x4[i0 + u * nt] : make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll
        for (int u = 0; u < GEMV_XV; u++) {
          ss = fmaf(v[u].x, v[u].x, ss);
          ss = fmaf(v[u].y, v[u].y, ss);
          ss = fmaf(v[u].z, v[u].z, ss);
          ss = fmaf(v[u].w, v[u].w, ss);
        }
      }
      ss = kiln_warp_sum(ss);
      if (lane == 0) red[warp] = ss;
      __syncthreads();
      float tot = 0.f;
      for (int i = 0; i < nw; i++) tot += red[i];
      inv = rsqrtf(tot / (float)a.k + a.eps);
    }
    uint2 *xh = (uint2 *)xs; /* 4 bf16 per float4 */
#pragma unroll 1
    for (int64_t i0 = tid; i0 < K4; i0 += GEMV_XV * nt) {
      float4 v[GEMV_XV], w[GEMV_XV];
#pragma unroll
      for (int u = 0; u < GEMV_XV; u++) {
        const bool in = i0 + u * nt < K4;
        v[u] = in ? x4[i0 + u * nt] : make_float4(0.f, 0.f, 0.f, 0.f);
        w[u] = i0 == tid ? wpre[u] : in && w4 ? w4[i0 + u * nt] : make_float4(1.f, 1.f, 1.f, 1.f);
      }
#pragma unroll
      for (int u = 0; u < GEMV_XV; u++)
        if (i0 + u * nt < K4) /* w (x inv), the order of the reference */
          xh[i0 + u * nt] = make_uint2(kiln_pack_bf16x2(w[u].x * (v[u].x * inv), w[u].y * (v[u].y * inv)),
                                       kiln_pack_bf16x2(w[u].z * (v[u].z * inv), w[u].w * (v[u].w * inv)));
    }
  }
  __syncthreads();

  unsigned long long best = 0ull;
  int parity = 0;
  kiln_gemv_walk_range(m, xs, p0, pstride, c0, c1, lane, ca, cb, pf, [&](int64_t p, float y0, float y1) {
    if (split > 1) { /* the pair's warps meet (they walk the same pairs); its first adds the parts in order */
      if (lane == 0) part_sum[parity][warp] = make_float2(y0, y1);
      bar_sync_(1 + slot, 32 * split);
      const int q = parity;
      parity ^= 1; /* a warp's next write goes to the other buffer: no second barrier before it */
      if (part) return;
      y0 = y1 = 0.f;
      for (int i = 0; i < split; i++) {
        const float2 v = part_sum[q][slot * split + i];
        y0 += v.x;
        y1 += v.y;
      }
    }
    if (lane) return;
    const int64_t r0 = 2 * p;
    if (MODE == KILN_GEMV_SWIGLU) {
      /* silu(g) u with g = row 2p, u = row 2p + 1 (n_rows is even in this mode) */
      a.y_bf16[p] = kiln_f32_to_bf16_dev(kiln_silu_mul(y0, y1));
    } else {
      const bool first = p == p0;
      epilogue_<MODE>(a, r0, y0, &best, first, pre.b0, pre.y0);
      if (r0 + 1 < a.n_rows) epilogue_<MODE>(a, r0 + 1, y1, &best, first, pre.b1, pre.y1);
    }
  });
  kiln_l2_prefetch_share(a.l2_next, a.l2_next_bytes);

  if (MODE == KILN_GEMV_ARGMAX) {
    if (lane == 0) best_w[warp] = best;
    __syncthreads();
    if (threadIdx.x == 0) {
      unsigned long long b = 0ull;
      for (int i = 0; i < nw; i++) b = best_w[i] > b ? best_w[i] : b;
      if (b) atomicMax(a.argmax, b);
    }
  }
}

typedef void (*gemv_kernel_fn)(kiln_cuda_gemv_args, int, int);
template <bool XBF16, bool PF>
static gemv_kernel_fn gemv_pick_mode_(int mode) {
  switch (mode) {
  case KILN_GEMV_ADD: return gemv_kernel<XBF16, KILN_GEMV_ADD, PF>;
  case KILN_GEMV_SWIGLU: return gemv_kernel<XBF16, KILN_GEMV_SWIGLU, PF>;
  case KILN_GEMV_ARGMAX: return gemv_kernel<XBF16, KILN_GEMV_ARGMAX, PF>;
  default: return gemv_kernel<XBF16, KILN_GEMV_STORE, PF>;
  }
}
/* The kernel for a call (and its index among the 16, for the per-kernel shared-memory setting). */
static gemv_kernel_fn gemv_pick_(const kiln_cuda_gemv_args *a, bool pf, int *index) {
  const bool xb = a->x_bf16 != NULL;
  *index = (xb ? 8 : 0) + (pf ? 4 : 0) + (int)a->mode;
  if (xb) return pf ? gemv_pick_mode_<true, true>(a->mode) : gemv_pick_mode_<true, false>(a->mode);
  return pf ? gemv_pick_mode_<false, true>(a->mode) : gemv_pick_mode_<false, false>(a->mode);
}

static int gemv_launch(const kiln_cuda_gemv_args *a, cudaStream_t stream) {
  static size_t smem_set[16][KILN_CUDA_MAX_DEVICES];
  int dev = 0, n_sm = 0, occ = 0;
  KILN_CUDA_CHECK(cudaGetDevice(&dev));
  KILN_CUDA_CHECK(cudaDeviceGetAttribute(&n_sm, cudaDevAttrMultiProcessorCount, dev));
  size_t smem = (size_t)a->k * sizeof(uint16_t);
  /* Split k only where the rows are long (at least two chunks a warp) and there are few pairs (about one a warp
   * of a full grid): many short pairs already keep every warp's chain short. */
  const int64_t pairs = (a->n_rows + 1) / 2, chunks = (a->k / 8 + 32 * KILN_GEMV_UNROLL - 1) / (32 * KILN_GEMV_UNROLL);
  const int mode = kiln_cuda_gemv_split();
  int split = mode;
  int min_chunks = 2; /* chunks a warp walks at least */
  if (mode == KILN_GEMV_SPLIT_AUTO) split = chunks >= 8 ? 4 : chunks >= 6 ? 2 : 1; /* only the longest rows (down) */
  /* all: down to one chunk a warp, so that a row pair of up to 4 chunks is loaded whole before the PDL wait */
  if (mode == KILN_GEMV_SPLIT_ALL) split = 4, min_chunks = 1;
  while (split > 1 && (chunks < min_chunks * split || pairs > 32 * (int64_t)n_sm)) split /= 2;
  /* Narrower blocks when the matrix has too few row pairs (times their split) to give every SM two blocks of 8
   * warps; a block keeps at least split warps. */
  int threads = GEMV_THREADS;
  while (threads > 64 && threads / 64 >= split && pairs * split / (threads / 32) < 2 * (int64_t)n_sm) threads /= 2;
  /* At most GEMV_BLOCKS_PER_SM blocks an SM (4 measured a little faster than 2 on the 8B shapes). The registers
   * bind first: at 128 a thread the walk fits 16 warps an SM (2 blocks of 256 threads), 8 KiB of loads in flight
   * each, well over the bandwidth-latency product, and those fill the register file, so the next kernel of a PDL
   * chain starts on an SM only as this one's blocks leave it. Leaving room for it measured slower, as did loading
   * short pairs whole before the wait (docs/cuda.md). The environment variable KILN_CUDA_GEMV_BLOCKS overrides the
   * cap (tuning only). */
  static int cap = 0, pf = -1;
  if (cap == 0) {
    const char *e = getenv("KILN_CUDA_GEMV_BLOCKS");
    cap = e && atoi(e) > 0 ? atoi(e) : GEMV_BLOCKS_PER_SM;
  }
  /* KILN_CUDA_GEMV_PF=N: each warp also prefetches its next N chunks into L2 before the PDL wait, and keeps N
   * chunks ahead of its loads (tuning only) */
  if (pf < 0) {
    const char *e = getenv("KILN_CUDA_GEMV_PF");
    pf = e && atoi(e) > 0 ? atoi(e) : 0;
  }
  /* the prefetch runs only without a split */
  int kid = 0;
  const gemv_kernel_fn kern = gemv_pick_(a, split == 1 && pf > 0, &kid);
  int rc = kiln_cuda__allow_smem((const void *)kern, smem, smem_set[kid], 0);
  if (rc) return rc;
  KILN_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&occ, kern, threads, smem));
  if (occ > cap) occ = cap;
  if (a->max_blocks_per_sm > 0 && occ > a->max_blocks_per_sm) occ = a->max_blocks_per_sm;
  if (occ < 1) occ = 1;
  const int slots = threads / 32 / split; /* row pairs a block walks at once */
  int64_t need = (pairs + slots - 1) / slots;
  int64_t fit = (int64_t)n_sm * occ;
  unsigned blocks = (unsigned)(need < fit ? need : fit);
  KILN_CUDA_CHECK(
      kiln_launch(kern, dim3(blocks), dim3(threads), smem, stream, *a, split > 1 ? 0 : pf, split));
  return 0;
}

extern "C" int kiln_cuda_gemv_split_env(const char *v) {
  if (!v || !*v || !strcmp(v, "auto")) return KILN_GEMV_SPLIT_AUTO;
  if (!strcmp(v, "all")) return KILN_GEMV_SPLIT_ALL;
  if (!strcmp(v, "1")) return 1;
  if (!strcmp(v, "2")) return 2;
  if (!strcmp(v, "4")) return 4;
  return -1;
}

static int split_ = -1;
extern "C" int kiln_cuda_gemv_split(void) {
  if (split_ < 0) {
    const int s = kiln_cuda_gemv_split_env(getenv("KILN_CUDA_GEMV_SPLIT"));
    split_ = s < 0 ? KILN_GEMV_SPLIT_AUTO : s; /* refused at backend creation; ops called directly: the default */
  }
  return split_;
}

extern "C" int kiln_cuda_gemv(const kiln_cuda_gemv_args *a, cudaStream_t stream) {
  if (!a->w || a->n_rows <= 0 || a->k <= 0 || a->k % 8 || a->k > 100000 || a->n_rows > 0x7ffffffe)
    return kiln_error(KILN_EINVAL, "cuda gemv: bad shape (%lld x %lld; k must be a multiple of 8)",
                      (long long)a->n_rows, (long long)a->k);
  if (!a->x_bf16 && !a->x_f32) return kiln_error(KILN_EINVAL, "cuda gemv: no input");
  if (((uintptr_t)a->w | (uintptr_t)a->x_bf16 | (uintptr_t)a->x_f32 | (uintptr_t)a->norm_w) % 16)
    return kiln_error(KILN_EINVAL, "cuda gemv: weights and inputs must be 16-byte aligned");
  if ((a->mode == KILN_GEMV_SWIGLU && (!a->y_bf16 || a->n_rows % 2)) ||
      (a->mode != KILN_GEMV_SWIGLU && !a->y) || (a->mode == KILN_GEMV_ARGMAX && !a->argmax) ||
      a->mode < KILN_GEMV_STORE || a->mode > KILN_GEMV_ARGMAX)
    return kiln_error(KILN_EINVAL, "cuda gemv: bad output for mode %d", (int)a->mode);
  if (a->max_blocks_per_sm < 0) return kiln_error(KILN_EINVAL, "cuda gemv: negative block cap");
  if (a->l2_next_bytes < 0 || a->l2_next_bytes % 16 || (uintptr_t)a->l2_next % 16)
    return kiln_error(KILN_EINVAL, "cuda gemv: L2 prefetch range not 16-byte aligned");
  return gemv_launch(a, stream);
}
