/*
 * backend/cuda/sample.cu: on-device sampling (see sample.h).
 *
 * Thresholds are found by radix selection over the order-preserving 32-bit keys of the logits (dividing by a
 * positive temperature keeps the order): three passes of 11, 11 and 10 bits, each a shared-memory histogram of
 * the candidates (counts for top-k, fixed-point probability mass for top-p) and a block-wide scan from the top
 * bin down. Integer histograms make every sum independent of the order of the atomics.
 */
#include "backend/cuda/cuda_common.h"
#include "backend/cuda/gemv.h"
#include "backend/cuda/sample.h"

#define SM_THREADS 1024
#define SM_WARPS (SM_THREADS / 32)
#define SM_BINS 2048
#define SM_ONE 1099511627776.0 /* 2^40: fixed-point unit of probability mass */

typedef unsigned long long u64;

static __device__ __forceinline__ uint32_t key_of(float v) {
  uint32_t u = __float_as_uint(v);
  return (v != v) ? 0u : ((u & 0x80000000u) ? ~u : (u | 0x80000000u));
}

static __device__ __forceinline__ float value_of(uint32_t key) {
  return __uint_as_float((key & 0x80000000u) ? (key & 0x7fffffffu) : ~key);
}

/* Exclusive prefix sum over the block's threads in thread order; *total gets the sum. All threads must call. */
static __device__ u64 block_excl_scan(u64 v, u64 *wsum, u64 *total) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  u64 x = v;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    u64 y = __shfl_up_sync(0xffffffffu, x, o);
    if (lane >= o) x += y;
  }
  if (lane == 31) wsum[warp] = x;
  __syncthreads();
  if (warp == 0) {
    u64 w = lane < SM_WARPS ? wsum[lane] : 0ull;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
      u64 y = __shfl_up_sync(0xffffffffu, w, o);
      if (lane >= o) w += y;
    }
    wsum[lane] = w;
  }
  __syncthreads();
  u64 excl = x - v + (warp > 0 ? wsum[warp - 1] : 0ull);
  *total = wsum[SM_WARPS - 1];
  __syncthreads(); /* wsum is reused by the next call */
  return excl;
}

/* Among bins sorted from the top (bin SM_BINS-1 first), finds the bin b where above(b) < need <= above(b) +
 * h[b]; returns it (or -1) and its `above` in *above_out. All threads must call. */
static __device__ int find_bin(const u64 *h, u64 need, u64 *wsum, int *found_s, u64 *above_s, u64 *above_out) {
  const int t = threadIdx.x;
  const int ba = SM_BINS - 1 - 2 * t, bb = ba - 1; /* this thread's two bins, higher first */
  u64 ca = h[ba], cb = h[bb], total;
  if (t == 0) *found_s = -1;
  u64 above = block_excl_scan(ca + cb, wsum, &total); /* also orders the write of *found_s before the reads */
  if (above < need && need <= above + ca) {
    *found_s = ba;
    *above_s = above;
  } else if (above + ca < need && need <= above + ca + cb) {
    *found_s = bb;
    *above_s = above + ca;
  }
  __syncthreads();
  int b = *found_s;
  *above_out = b >= 0 ? *above_s : 0ull;
  __syncthreads();
  return b;
}

static __global__ void __launch_bounds__(SM_THREADS)
    sample_kernel(int32_t *next, const float *logits, int64_t V, const u64 *argmax, const kiln_cuda_step *st) {
  __shared__ u64 hist[SM_BINS];
  __shared__ u64 wsum[32];
  __shared__ int found_s;
  __shared__ u64 above_s;
  __shared__ int chosen;
  kiln_pdl_wait();
  const int t = threadIdx.x;
  const u64 cell = *argmax;
  const int32_t am = cell ? (int32_t)(0xffffffffu - (uint32_t)(cell & 0xffffffffu)) : 0;
  const float temp = st->temperature;
  const int top_k = st->top_k;
  if (!(temp > 0.f) || top_k == 1 || cell == 0) {
    if (t == 0) *next = am;
    return;
  }
  const float m = value_of((uint32_t)(cell >> 32)), inv_t = 1.f / temp;
  const float top_p = st->top_p, min_p = st->min_p;

  /* ---- top-k: the key of the k-th largest logit ---- */
  uint32_t tk = 0;
  if (top_k > 0 && top_k < V) {
    uint32_t prefix = 0;
    u64 need = (u64)top_k;
    for (int pass = 0; pass < 3; pass++) {
      const int shift = pass == 0 ? 21 : pass == 1 ? 10 : 0;
      const int hi = pass == 0 ? 32 : pass == 1 ? 21 : 10; /* key bits above `hi` must equal prefix's */
      for (int b = t; b < SM_BINS; b += SM_THREADS) hist[b] = 0ull;
      __syncthreads();
      for (int64_t i = t; i < V; i += SM_THREADS) {
        uint32_t k = key_of(logits[i]);
        if (hi == 32 || (k >> hi) == (prefix >> hi)) atomicAdd(&hist[(k >> shift) & (SM_BINS - 1)], 1ull);
      }
      __syncthreads();
      u64 above;
      int b = find_bin(hist, need, wsum, &found_s, &above_s, &above);
      if (b < 0) break; /* cannot happen: k < V candidates; keep what is known */
      prefix |= (uint32_t)b << shift;
      need -= above;
    }
    tk = prefix;
  }

  /* ---- top-p: the smallest key whose strictly-higher mass (within top-k) is < top_p ---- */
  uint32_t tp = 0;
  if (top_p < 1.f) {
    if (!(top_p > 0.f)) {
      tp = key_of(m); /* nothing may be kept but the top token */
    } else {
      u64 z = 0, total;
      for (int64_t i = t; i < V; i += SM_THREADS) {
        float v = logits[i];
        if (key_of(v) >= tk) z += (u64)((double)expf((v - m) * inv_t) * SM_ONE);
      }
      (void)block_excl_scan(z, wsum, &total);
      u64 target = (u64)((double)top_p * (double)total);
      if (target == 0) target = 1;
      uint32_t prefix = 0;
      u64 acc = 0; /* mass strictly above the current prefix range */
      for (int pass = 0; pass < 3; pass++) {
        const int shift = pass == 0 ? 21 : pass == 1 ? 10 : 0;
        const int hi = pass == 0 ? 32 : pass == 1 ? 21 : 10;
        for (int b = t; b < SM_BINS; b += SM_THREADS) hist[b] = 0ull;
        __syncthreads();
        for (int64_t i = t; i < V; i += SM_THREADS) {
          float v = logits[i];
          uint32_t k = key_of(v);
          if (k >= tk && (hi == 32 || (k >> hi) == (prefix >> hi)))
            atomicAdd(&hist[(k >> shift) & (SM_BINS - 1)], (u64)((double)expf((v - m) * inv_t) * SM_ONE));
        }
        __syncthreads();
        u64 above;
        int b = find_bin(hist, target - acc, wsum, &found_s, &above_s, &above);
        if (b < 0) {
          prefix = 0; /* the kept mass never reaches top_p (rounding): keep everything */
          break;
        }
        prefix |= (uint32_t)b << shift;
        acc += above;
      }
      tp = prefix;
    }
  }

  /* ---- the draw over the kept tokens, in index order ---- */
  const uint32_t thr = tk > tp ? tk : tp;
  const int64_t seg = (V + SM_THREADS - 1) / SM_THREADS;
  const int64_t i0 = (int64_t)t * seg, i1 = min(V, i0 + seg);
  u64 mine = 0, total;
  for (int64_t i = i0; i < i1; i++) {
    float v = logits[i];
    float w = expf((v - m) * inv_t);
    if (key_of(v) >= thr && !(min_p > 0.f && w < min_p)) mine += (u64)((double)w * SM_ONE);
  }
  if (t == 0) chosen = 0x7fffffff;
  u64 before = block_excl_scan(mine, wsum, &total); /* its barriers order `chosen`'s init before the atomics */
  u64 z = st->seed + (st->step + 1) * 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  z ^= z >> 31;
  const u64 target = (u64)((double)(z >> 11) * (1.0 / 9007199254740992.0) * (double)total);
  if (mine > 0 && before <= target && target < before + mine) {
    u64 cum = before;
    int32_t pick = -1;
    for (int64_t i = i0; i < i1; i++) {
      float v = logits[i];
      float w = expf((v - m) * inv_t);
      if (key_of(v) >= thr && !(min_p > 0.f && w < min_p)) {
        pick = (int32_t)i;
        cum += (u64)((double)w * SM_ONE);
        if (cum > target) break;
      }
    }
    if (pick >= 0) atomicMin(&chosen, pick);
  }
  __syncthreads();
  if (t == 0) *next = chosen == 0x7fffffff ? am : chosen;
}

static int sample_launch(int32_t *next, const float *logits, int64_t vocab, const unsigned long long *argmax,
                         const kiln_cuda_step *step, cudaStream_t stream) {
  static size_t smem_set[KILN_CUDA_MAX_DEVICES]; /* no dynamic shared memory: only the carveout */
  int rc = kiln_cuda__allow_smem((const void *)sample_kernel, 0, smem_set, 0);
  if (rc) return rc;
  KILN_CUDA_CHECK(kiln_launch(sample_kernel, dim3(1), dim3(SM_THREADS), 0, stream, next, logits, vocab,
                              (const u64 *)argmax, step));
  return 0;
}

extern "C" int kiln_cuda_sample(int32_t *next, const float *logits, int64_t vocab, const unsigned long long *argmax,
                                const kiln_cuda_step *step, cudaStream_t stream) {
  if (vocab <= 0 || vocab > 0x7fffffff) return kiln_error(KILN_EINVAL, "cuda sample: bad vocab %lld", (long long)vocab);
  return sample_launch(next, logits, vocab, argmax, step, stream);
}
