/*
 * backend/cuda/sample.cu: on-device sampling (see sample.h).
 *
 * Thresholds are found by radix selection over the order-preserving 32-bit keys of the logits (dividing by a
 * positive temperature keeps the order): three passes of 11, 11 and 10 bits, each a shared-memory histogram of
 * the candidates (counts for top-k, fixed-point probability mass for top-p) and a block-wide scan from the top
 * bin down. Integer histograms make every sum independent of the order of the atomics.
 */
#include <string.h>

#include "backend/cuda/cuda_common.h"
#include "backend/cuda/gemv.h"
#include "backend/cuda/sample.h"

#define SM_THREADS 1024
#define SM_WARPS (SM_THREADS / 32)
#define SM_BINS 2048
#define SM_ONE 1099511627776.0 /* 2^40: fixed-point unit of probability mass */
#define SM_CAP 3072 /* candidates the multi-block sampler's last block gathers into shared memory */
#define SM_TAU_NATS 9.7040605278f /* 14 ln 2: a candidate's weight is at least 2^-14 of the top token's */

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

/* What the sampler reads: the logits themselves (full_src), or the candidates gathered in shared memory, values and
 * vocabulary indices in index order (set_src). */
struct full_src {
  const float *l;
  __device__ __forceinline__ float v(int64_t i) const { return l[i]; }
  __device__ __forceinline__ int32_t id(int64_t i) const { return (int32_t)i; }
};
struct set_src {
  const float *sv;
  const int32_t *si;
  __device__ __forceinline__ float v(int64_t i) const { return sv[i]; }
  __device__ __forceinline__ int32_t id(int64_t i) const { return si[i]; }
};

/* A token's weight relative to the top one, and that weight in 2^-40 fixed point: every mass is a sum of these. */
static __device__ __forceinline__ float weight_of(float v, float m, float inv_t) { return expf((v - m) * inv_t); }
static __device__ __forceinline__ u64 fixed_of(float w) { return (u64)((double)w * SM_ONE); }

/* Whether min-p keeps a token of weight w (p >= min_p * p_max). */
static __device__ __forceinline__ bool min_p_keeps(float w, float min_p) { return !(min_p > 0.f && w < min_p); }

/* The draw's uniform in [0, total): splitmix64 of (seed, step). */
static __device__ __forceinline__ u64 draw_target(u64 seed, u64 step, u64 total) {
  u64 z = seed + (step + 1) * 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  z ^= z >> 31;
  return (u64)((double)(z >> 11) * (1.0 / 9007199254740992.0) * (double)total);
}

/* The kept mass of src[i0, i1) (keys >= thr, and p >= min_p * p_max). */
template <class Src>
static __device__ __forceinline__ u64 seg_mass(Src s, int64_t i0, int64_t i1, uint32_t thr, float m, float inv_t,
                                               float min_p) {
  u64 mine = 0;
  for (int64_t i = i0; i < i1; i++) {
    float v = s.v(i);
    float w = weight_of(v, m, inv_t);
    if (key_of(v) >= thr && min_p_keeps(w, min_p)) mine += fixed_of(w);
  }
  return mine;
}

/* Where target falls in this segment's kept mass [before, before + mine): its first kept token whose cumulative
 * mass passes target, into *chosen (atomicMin: one thread of the block picks). */
template <class Src>
static __device__ __forceinline__ void seg_pick(Src s, int64_t i0, int64_t i1, uint32_t thr, float m, float inv_t,
                                                float min_p, u64 before, u64 mine, u64 target, int *chosen) {
  if (mine > 0 && before <= target && target < before + mine) {
    u64 cum = before;
    int32_t pick = -1;
    for (int64_t i = i0; i < i1; i++) {
      float v = s.v(i);
      float w = weight_of(v, m, inv_t);
      if (key_of(v) >= thr && min_p_keeps(w, min_p)) {
        pick = s.id(i);
        cum += fixed_of(w);
        if (cum > target) break;
      }
    }
    if (pick >= 0) atomicMin(chosen, pick);
  }
}

/* The block's shared state (the kernel's __shared__ variables). */
struct sample_smem {
  u64 *hist, *wsum;
  int *found_s;
  u64 *above_s;
  int *chosen;
};

/* One block's whole sampling over the V tokens of s (all threads call; thread 0 writes *next): top-k, top-p, then the
 * draw, as sample.h describes. zall: the mass of all V tokens when the caller has it (top-p then skips its sum,
 * which top-k would restrict), or 0. */
template <class Src>
static __device__ __forceinline__ void sample_block(Src s, int64_t V, int32_t *next, int32_t am, float m,
                                                    float inv_t, int top_k, const kiln_cuda_step *st, u64 zall,
                                                    const sample_smem &sh) {
  const int t = threadIdx.x;
  u64 *hist = sh.hist, *wsum = sh.wsum;
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
        uint32_t k = key_of(s.v(i));
        if (hi == 32 || (k >> hi) == (prefix >> hi)) atomicAdd(&hist[(k >> shift) & (SM_BINS - 1)], 1ull);
      }
      __syncthreads();
      u64 above;
      int b = find_bin(hist, need, wsum, sh.found_s, sh.above_s, &above);
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
      u64 total = zall;
      if (!zall) {
        u64 z = 0;
        for (int64_t i = t; i < V; i += SM_THREADS) {
          float v = s.v(i);
          if (key_of(v) >= tk) z += fixed_of(weight_of(v, m, inv_t));
        }
        (void)block_excl_scan(z, wsum, &total);
      }
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
          float v = s.v(i);
          uint32_t k = key_of(v);
          if (k >= tk && (hi == 32 || (k >> hi) == (prefix >> hi)))
            atomicAdd(&hist[(k >> shift) & (SM_BINS - 1)], fixed_of(weight_of(v, m, inv_t)));
        }
        __syncthreads();
        u64 above;
        int b = find_bin(hist, target - acc, wsum, sh.found_s, sh.above_s, &above);
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
  u64 total;
  const u64 mine = seg_mass(s, i0, i1, thr, m, inv_t, min_p);
  if (t == 0) *sh.chosen = 0x7fffffff;
  u64 before = block_excl_scan(mine, wsum, &total); /* its barriers order `chosen`'s init before the atomics */
  seg_pick(s, i0, i1, thr, m, inv_t, min_p, before, mine, draw_target(st->seed, st->step, total), sh.chosen);
  __syncthreads();
  if (t == 0) *next = *sh.chosen == 0x7fffffff ? am : *sh.chosen;
}

/* The step's parameters; true (and *next written by thread 0 of block 0) when the step is greedy. */
static __device__ __forceinline__ bool sample_head(int32_t *next, const u64 *argmax, const kiln_cuda_step *st,
                                                   int32_t *am, float *m, float *inv_t, int *top_k) {
  const u64 cell = *argmax;
  *am = cell ? (int32_t)(0xffffffffu - (uint32_t)(cell & 0xffffffffu)) : 0;
  const float temp = st->temperature;
  *top_k = st->top_k;
  if (!(temp > 0.f) || *top_k == 1 || cell == 0) {
    if (blockIdx.x == 0 && threadIdx.x == 0) *next = *am;
    return true;
  }
  *m = value_of((uint32_t)(cell >> 32));
  *inv_t = 1.f / temp;
  return false;
}

static __global__ void __launch_bounds__(SM_THREADS)
    sample_kernel(int32_t *next, const float *logits, int64_t V, const u64 *argmax, const kiln_cuda_step *st) {
  __shared__ u64 hist[SM_BINS];
  __shared__ u64 wsum[32];
  __shared__ int found_s;
  __shared__ u64 above_s;
  __shared__ int chosen;
  kiln_pdl_wait();
  int32_t am;
  float m, inv_t;
  int top_k;
  if (sample_head(next, argmax, st, &am, &m, &inv_t, &top_k)) return;
  sample_block(full_src{logits}, V, next, am, m, inv_t, top_k, st, 0ull, {hist, wsum, &found_s, &above_s, &chosen});
}

/* The multi-block sampler (sample.h): every block walks a slice of the logits, summing its masses and keeping its
 * candidates (the tokens within SM_TAU_NATS * temperature of the top logit: a top set in key order) in index order;
 * the last block to finish samples, from the per-block sums (temperature and min-p alone) or from the candidates
 * (top-k, top-p) where they hold every token either can keep, else from all the logits as sample_kernel does. Each
 * choice draws the same token as sample_kernel, bit for bit: the masses are integer sums of the same per-token
 * values, and a token outside the candidates is one no threshold or draw of these can reach. */
static __global__ void __launch_bounds__(SM_THREADS)
    sample_multi_kernel(int32_t *next, const float *logits, int64_t V, const u64 *argmax, const kiln_cuda_step *st,
                        kiln_cuda_sample_scratch sc) {
  __shared__ u64 hist[SM_BINS];
  __shared__ u64 wsum[32];
  __shared__ int found_s;
  __shared__ u64 above_s;
  __shared__ int chosen;
  __shared__ float set_v[SM_CAP];
  __shared__ int32_t set_i[SM_CAP];
  __shared__ int set_off[KILN_SAMPLE_MAX_BLOCKS];
  __shared__ int last_s, block_s;
  __shared__ u64 before_s;
  kiln_pdl_wait();
  int32_t am;
  float m, inv_t;
  int top_k;
  if (sample_head(next, argmax, st, &am, &m, &inv_t, &top_k)) return;
  const float temp = st->temperature, top_p = st->top_p, min_p = st->min_p;
  const int t = threadIdx.x, G = gridDim.x;
  const int64_t S = (V + G - 1) / G, lo = (int64_t)blockIdx.x * S, hi = min(V, lo + S);

  /* ---- every block: its slice's masses (all, kept by min-p, candidates) and its candidates ---- */
  const uint32_t ktau = key_of(m - SM_TAU_NATS * temp);
  u64 zall = 0, zkept = 0, ztau = 0, n = 0, tot;
  for (int64_t i0 = lo; i0 < hi; i0 += SM_THREADS) {
    const int64_t i = i0 + t;
    float v = 0.f;
    bool in = false;
    if (i < hi) {
      v = logits[i];
      const float w = weight_of(v, m, inv_t);
      const u64 f = fixed_of(w);
      zall += f;
      if (min_p_keeps(w, min_p)) zkept += f;
      if (key_of(v) >= ktau) ztau += f, in = true;
    }
    const u64 pos = block_excl_scan(in ? 1ull : 0ull, wsum, &tot); /* in index order */
    if (in) sc.val[lo + n + pos] = v, sc.idx[lo + n + pos] = (int32_t)i;
    n += tot;
  }
  (void)block_excl_scan(zall, wsum, &zall);
  (void)block_excl_scan(zkept, wsum, &zkept);
  (void)block_excl_scan(ztau, wsum, &ztau);
  if (t == 0) {
    u64 *part = sc.part + 4 * (int64_t)blockIdx.x;
    part[0] = zall, part[1] = zkept, part[2] = ztau, part[3] = n;
  }
  /* the last block to finish goes on (the same result whichever it is) */
  __threadfence();
  __syncthreads();
  if (t == 0) last_s = atomicAdd(sc.ticket, 1u) == (unsigned)G - 1;
  __syncthreads();
  if (!last_s) return;
  __threadfence();
  if (t == 0) *sc.ticket = 0; /* re-armed for the next launch */

  /* ---- the last block: totals, each block's place in them (thread b holds block b's) ---- */
  u64 p[4] = {0ull, 0ull, 0ull, 0ull};
  if (t < G)
    for (int j = 0; j < 4; j++) p[j] = __ldcg(sc.part + 4 * t + j);
  u64 Zall, Zkept, Ztau, N;
  const u64 kept_before = block_excl_scan(p[1], wsum, &Zkept);
  const u64 set_before = block_excl_scan(p[3], wsum, &N);
  (void)block_excl_scan(p[0], wsum, &Zall);
  (void)block_excl_scan(p[2], wsum, &Ztau);
  const bool topk = top_k > 0 && top_k < V, topp = top_p < 1.f;

  if (!topk && !topp) { /* temperature and min-p alone: the block whose kept mass holds the draw, then its token */
    const u64 target = draw_target(st->seed, st->step, Zkept);
    if (t == 0) block_s = -1, chosen = 0x7fffffff;
    __syncthreads();
    if (t < G && p[1] > 0 && kept_before <= target && target < kept_before + p[1]) block_s = t, before_s = kept_before;
    __syncthreads();
    const int bb = block_s;
    if (bb >= 0) {
      const int64_t blo = (int64_t)bb * S, bhi = min(V, blo + S), seg = (bhi - blo + SM_THREADS - 1) / SM_THREADS;
      const int64_t i0 = min(bhi, blo + t * seg), i1 = min(bhi, i0 + seg);
      const full_src src{logits};
      const u64 mine = seg_mass(src, i0, i1, 0u, m, inv_t, min_p);
      const u64 before = before_s + block_excl_scan(mine, wsum, &tot);
      seg_pick(src, i0, i1, 0u, m, inv_t, min_p, before, mine, target, &chosen);
    }
    __syncthreads();
    if (t == 0) *next = chosen == 0x7fffffff ? am : chosen;
    return;
  }

  /* top-k, top-p: the candidates hold every token these can keep when there are at least k of them (top-k: the
   * k-th largest key is then among them) or, with top-p alone, when their mass reaches top-p's target (the
   * smallest key top-p keeps is then among them) */
  bool use_set = N <= SM_CAP && (!topk || N >= (u64)top_k);
  if (use_set && topp && !topk && top_p > 0.f) {
    u64 target = (u64)((double)top_p * (double)Zall);
    if (target == 0) target = 1;
    use_set = Ztau >= target;
  }
  const sample_smem sh = {hist, wsum, &found_s, &above_s, &chosen};
  if (!use_set) {
    sample_block(full_src{logits}, V, next, am, m, inv_t, top_k, st, 0ull, sh);
    return;
  }
  if (t < G) set_off[t] = (int)set_before;
  __syncthreads();
  for (int b = t >> 5; b < G; b += SM_WARPS) { /* a warp a block's candidates */
    const int cnt = (int)__ldcg(sc.part + 4 * b + 3), off = set_off[b];
    for (int j = t & 31; j < cnt; j += 32) {
      set_v[off + j] = __ldcg(sc.val + (int64_t)b * S + j);
      set_i[off + j] = __ldcg(sc.idx + (int64_t)b * S + j);
    }
  }
  __syncthreads();
  /* top-p's total is over every token when top-k keeps all (Zall); over the kept k, all candidates, otherwise */
  sample_block(set_src{set_v, set_i}, (int64_t)N, next, am, m, inv_t, top_k, st, topk ? 0ull : Zall, sh);
}

/* Bytes of the candidates' values and indices, rounded so that the block sums after them stay aligned. */
static int64_t cand_bytes_(int64_t vocab) {
  return kiln_cuda__round_up(vocab * (int64_t)(sizeof(float) + sizeof(int32_t)), 256);
}

extern "C" int64_t kiln_cuda_sample_scratch_bytes(int64_t vocab) {
  return cand_bytes_(vocab) + KILN_SAMPLE_MAX_BLOCKS * 4 * (int64_t)sizeof(u64) + 256;
}

extern "C" void kiln_cuda_sample_scratch_carve(kiln_cuda_sample_scratch *sc, void *mem, int64_t vocab, int n_sm) {
  char *p = (char *)mem;
  sc->val = (float *)p;
  sc->idx = (int32_t *)(p + vocab * (int64_t)sizeof(float));
  p += cand_bytes_(vocab);
  sc->part = (unsigned long long *)p;
  sc->ticket = (unsigned *)(p + KILN_SAMPLE_MAX_BLOCKS * 4 * sizeof(u64));
  int64_t g = n_sm < KILN_SAMPLE_MAX_BLOCKS ? n_sm : KILN_SAMPLE_MAX_BLOCKS;
  sc->blocks = (int)(g < vocab ? g : vocab);
  if (sc->blocks < 1) sc->blocks = 1;
}

extern "C" int kiln_cuda_sample_env(const char *v) {
  if (!v || !*v || !strcmp(v, "one")) return 0;
  if (!strcmp(v, "multi")) return 1;
  return -1;
}

static int sample_launch(int32_t *next, const float *logits, int64_t vocab, const unsigned long long *argmax,
                         const kiln_cuda_step *step, const kiln_cuda_sample_scratch *multi, cudaStream_t stream) {
  static size_t smem_set[2][KILN_CUDA_MAX_DEVICES]; /* no dynamic shared memory: only the carveout */
  if (multi) {
    int rc = kiln_cuda__allow_smem((const void *)sample_multi_kernel, 0, smem_set[1], 0);
    if (rc) return rc;
    KILN_CUDA_CHECK(kiln_launch(sample_multi_kernel, dim3((unsigned)multi->blocks), dim3(SM_THREADS), 0, stream, next,
                                logits, vocab, (const u64 *)argmax, step, *multi));
    return 0;
  }
  int rc = kiln_cuda__allow_smem((const void *)sample_kernel, 0, smem_set[0], 0);
  if (rc) return rc;
  KILN_CUDA_CHECK(kiln_launch(sample_kernel, dim3(1), dim3(SM_THREADS), 0, stream, next, logits, vocab,
                              (const u64 *)argmax, step));
  return 0;
}

extern "C" int kiln_cuda_sample(int32_t *next, const float *logits, int64_t vocab, const unsigned long long *argmax,
                                const kiln_cuda_step *step, const kiln_cuda_sample_scratch *multi,
                                cudaStream_t stream) {
  if (vocab <= 0 || vocab > 0x7fffffff) return kiln_error(KILN_EINVAL, "cuda sample: bad vocab %lld", (long long)vocab);
  if (multi && (!multi->val || !multi->idx || !multi->part || !multi->ticket || multi->blocks < 1 ||
                multi->blocks > KILN_SAMPLE_MAX_BLOCKS || multi->blocks > vocab))
    return kiln_error(KILN_EINVAL, "cuda sample: bad scratch (%d blocks)", multi->blocks);
  return sample_launch(next, logits, vocab, argmax, step, multi, stream);
}
