/*
 * backend/cuda/attn_decode_dev.cuh (internal, device code): one unit of split-KV decode attention, shared by the
 * standalone kernel (attn_decode.cu, blocks of 128 threads) and the persistent decode kernel (decode_step.cu,
 * blocks of 384), one unit per block at a time.
 *
 * A unit is (split, kv head, group of up to GMAX query heads) run by the THREADS threads of a block. It starts
 * from the new token's q/k/v projections: kiln_attn_unit_prologue normalises and rotates them and stores the
 * token's key and value into the cache. Keys and values come in tiles of 64 positions, copied into shared memory
 * with cp.async: a tile is one contiguous run of the cache. The first tile's older rows depend on nothing of this
 * step, so callers start their copy (kiln_attn_unit_first) before they wait for their inputs, and each next tile's
 * keys (values) are copied while the current tile's values (the next keys) are still in use.
 *
 * Scores: a group of lpk lanes (head_dim/8 rounded up to a power of two; the extra lanes load nothing) holds one
 * key, 8 dimensions a lane, and reduces the GMAX dot products together with xor shuffles. One warp per head updates
 * the running max and sum (online softmax, base 2 with log2(e) folded into q), then every thread accumulates
 * values, owning 8 dimensions of every head for a subset of the keys; those subsets are summed at the end. The
 * unit leaves a partial (max, sum, weighted values); the last unit of its (kv head, head group) to finish combines
 * every split's partial into the output, so no second pass is needed.
 *
 * The loops are short and rolled, and the heads are computed unconditionally (a group smaller than GMAX computes
 * zero queries): a block runs this code once per token, so its instructions are not in the SM's caches, and code
 * size is latency. (An earlier version unrolled keys x heads under guards into ~190 KB of instructions; scoring
 * one 32-key tile took ~7,500 cycles whether or not its keys had arrived.)
 */
#ifndef KILN_CUDA_ATTN_DECODE_DEV_CUH
#define KILN_CUDA_ATTN_DECODE_DEV_CUH

#include <cooperative_groups.h>

#include "backend/cuda/cuda_common.h"
#include "backend/cuda/rope.h"
#include "backend/cuda/rope_dev.cuh"

#define KILN_AD_TILE 64
#define KILN_AD_MAX_HD 256
#define KILN_AD_MIN_CHUNK 32
#define KILN_AD_MAX_SPLITS 512 /* the combine keeps GMAX x KILN_AD_MAX_SPLITS (max, sum) pairs in `red` */
#define KILN_AD_MAX_CLUSTER 16    /* the most blocks a cluster may have on sm_90 (non-portable past 8) */
#define KILN_AD_CLUSTER_CTX 16384 /* contexts up to this many keys cap the splits at the cluster size */
#define KILN_AD_GMIN 4 /* the persistent kernel's heads a unit; splits are shared over groups of min(GMAX, this) */

/* A unit's shared memory. `red` sums the row groups' accumulators, then holds the combine's weights; before the
 * first tile it holds the new key while it is normalised and rotated. */
template <int GMAX, int THREADS>
struct kiln_attn_smem {
  uint4 kt[KILN_AD_TILE * KILN_AD_MAX_HD / 8]; /* the tile's keys, row j at j * head_dim / 8 */
  uint4 vt[KILN_AD_TILE * KILN_AD_MAX_HD / 8]; /* and values */
  float qs[GMAX * KILN_AD_MAX_HD];             /* the unit's query heads, scaled by log2(e)/sqrt(head_dim) */
  float sc[GMAX * KILN_AD_TILE];
  float red[GMAX * THREADS * 8];
  float m_s[GMAX], l_s[GMAX], al_s[GMAX];
  int last;
};

/* Keys per split: the context over n_splits, never fewer than KILN_AD_MIN_CHUNK. */
static __device__ __forceinline__ int kiln_attn_chunk(int L, int n_splits) {
  int chunk = (L + n_splits - 1) / n_splits;
  return chunk < KILN_AD_MIN_CHUNK ? KILN_AD_MIN_CHUNK : chunk;
}
/* Splits that hold keys (the first ones): only these run, leave a partial and arrive at the counter. */
static __device__ __forceinline__ int kiln_attn_active(int L, int n_splits) {
  const int chunk = kiln_attn_chunk(L, n_splits), n = (L + chunk - 1) / chunk;
  return n < n_splits ? n : n_splits;
}

/* Where a unit works and what it shares with the other units of its step. */
typedef struct kiln_attn_unit {
  int split, kh, gz;  /* key chunk, kv head, head group */
  int n_splits, n_gz; /* splits, and head groups per kv head */
  int seq, L;         /* KV slot, keys 0 .. L-1 attended (L-1: the new token) */
} kiln_attn_unit;

/* The unit's key range [c0, c1) (empty when the split holds no keys). */
static __device__ __forceinline__ void kiln_attn_range(const kiln_attn_unit &u, int *c0, int *c1) {
  const int chunk = kiln_attn_chunk(u.L, u.n_splits);
  *c0 = u.split * chunk;
  *c1 = min(u.L, *c0 + chunk);
}

/* Copies rows [jlo, jhi) of the tile starting at position t0 (src: the head's cache) into dst (shared memory);
 * rows are head_dim * 2 bytes and contiguous, so the tile is one run of 16-byte vectors. */
template <int THREADS>
static __device__ __forceinline__ void kiln_attn_copy_(uint4 *dst, const uint16_t *src, int hd8, int t0, int jlo,
                                                       int jhi) {
  const uint4 *s = (const uint4 *)src + (int64_t)t0 * hd8;
#pragma unroll 1
  for (int v = jlo * hd8 + threadIdx.x; v < jhi * hd8; v += THREADS) kiln_cp16(kiln_smem_addr(dst + v), s + v, 16);
}

/* Starts the copy of the first tile's rows that earlier steps stored (positions below L-1) into s.kt / s.vt.
 * Callers issue this before they wait for their inputs (a PDL wait, a grid barrier): the cache read overlaps the
 * previous kernel's tail. kiln_attn_unit_run waits for it. */
template <int GMAX, int THREADS>
static __device__ __forceinline__ void kiln_attn_unit_first(kiln_attn_smem<GMAX, THREADS> &s, const kiln_attn_unit &u,
                                                            const uint16_t *k_cache, const uint16_t *v_cache,
                                                            const kiln_cuda_attn_shape &sh) {
  int c0, c1;
  kiln_attn_range(u, &c0, &c1);
  const int hd8 = sh.head_dim / 8, tn = min(KILN_AD_TILE, c1 - c0), old = min(tn, u.L - 1 - c0);
  const int64_t base = ((int64_t)u.seq * sh.n_kv_heads + u.kh) * sh.n_ctx * sh.head_dim;
  kiln_attn_copy_<THREADS>(s.kt, k_cache + base, hd8, c0, 0, old);
  kiln_attn_copy_<THREADS>(s.vt, v_cache + base, hd8, c0, 0, old);
  kiln_cp_commit();
}

/* What the prologue needs besides the unit (whose new token sits at position L-1): the token's q/k/v rows (f32,
 * biases added, written by another kernel or block: read through L2), the per-head norms (NULL: none), the RoPE
 * table and the softmax scale (computed once by the caller: an IEEE division inlined here costs the GMAX 8
 * kernel a register spill). */
typedef struct kiln_attn_token {
  const float *qkv; /* [n_heads + 2 n_kv_heads][head_dim] */
  const float *q_norm, *k_norm;
  const float *rope; /* [n_ctx][head_dim]: RoPE's table (kiln_cuda_rope_table) */
  float eps, qscale; /* qscale: log2(e) / sqrt(head_dim) */
  int vec;           /* nonzero: q and k through kiln_norm_rotate4 where the head size allows (KILN_CUDA_ROPE_VEC) */
} kiln_attn_token;

/* What a warp's first prologue job reads that does not depend on the step's kernels (the vector form only): its
 * norm weights and the lane's RoPE cosines and sines at the new position (the same for every job). A caller that
 * waits for its inputs (a PDL wait) loads them before the wait: read once per step, they have left L2 by then, and
 * after the wait they would add a memory latency to the prologue's own. */
typedef struct kiln_attn_pre {
  float4 w;
  kiln_rope4 r;
} kiln_attn_pre;

template <int GMAX>
static __device__ __forceinline__ kiln_attn_pre kiln_attn_unit_pre(const kiln_attn_unit &u, const kiln_attn_token &t,
                                                                   const kiln_cuda_attn_shape &sh) {
  const int job = threadIdx.x >> 5, hd = sh.head_dim;
  kiln_attn_pre p = {make_float4(1.f, 1.f, 1.f, 1.f), {}};
  if (!t.vec || !kiln_rope_vec_ok(hd)) return p;
  p.w = kiln_norm_w4(job < GMAX ? t.q_norm : job == GMAX ? t.k_norm : NULL, hd);
  p.r = kiln_rope4_at(t.rope, hd, u.L - 1);
  return p;
}

/* The scalar norm + RoPE, for head sizes the vector form does not take (or KILN_CUDA_ROPE_VEC=0): out of line, so
 * that the vector form's code stays contiguous. A block runs the prologue once per token, its instructions fetched
 * cold, and two inlined copies of this (600 instructions) sat between its hot blocks. */
static __device__ __noinline__ void kiln_attn_norm_rotate_(float *buf, const float *src, int hd, const float *nw,
                                                           float eps, const float *rope, int pos, float scale) {
  kiln_norm_rotate(buf, src, (const float *)NULL, hd, nw, eps, rope, pos, scale);
}

/* Per-head RMSNorm and RoPE of the unit's query heads into s.qs (scaled by qscale; heads past the group are
 * zero); the unit whose keys include the new token also normalises and rotates its key and stores key and value
 * into the cache and, when they fall in the first tile, into s.kt / s.vt (a unit of another head group of the
 * same kv head stores the same bytes). One warp per job; kiln_attn_unit_run's first barrier publishes it all. pre:
 * kiln_attn_unit_pre's loads for this unit, or NULL (loaded here). */
template <int GMAX, int THREADS>
static __device__ __forceinline__ void kiln_attn_unit_prologue(kiln_attn_smem<GMAX, THREADS> &s,
                                                               const kiln_attn_unit &u, const kiln_attn_token &t,
                                                               uint16_t *k_cache, uint16_t *v_cache,
                                                               const kiln_cuda_attn_shape &sh,
                                                               const kiln_attn_pre *pre = nullptr) {
  constexpr int WARPS = THREADS / 32;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int hd = sh.head_dim, g = sh.n_heads / sh.n_kv_heads;
  const int g0 = u.gz * GMAX, gn = min(GMAX, g - g0), h0 = u.kh * g + g0;
  const int pos = u.L - 1;
  int c0, c1;
  kiln_attn_range(u, &c0, &c1);
  const bool owner = pos >= c0 && pos < c1;
  const int jn = pos - c0; /* the new token's row in the first tile, when < KILN_AD_TILE */
  const int jobs = GMAX + (owner ? 2 : 0);
  const bool vec = t.vec && kiln_rope_vec_ok(hd);
  const kiln_rope4 rope = vec ? (pre ? pre->r : kiln_rope4_at(t.rope, hd, pos)) : kiln_rope4{};
#pragma unroll 1
  for (int job = warp; job < jobs; job += WARPS) {
    const bool first = pre && job == warp; /* pre->w holds this job's norm weights */
    if (job < GMAX) {
      float *buf = s.qs + job * hd;
      if (job >= gn) {
#pragma unroll 1
        for (int d = lane; d < hd; d += 32) buf[d] = 0.f;
        continue;
      }
      const float *q = t.qkv + (int64_t)(h0 + job) * hd;
      if (vec) {
        const float4 w = first ? pre->w : kiln_norm_w4(t.q_norm, hd);
        const float4 o = kiln_norm_rotate4_x(kiln_ld_head4(q, (const float *)NULL, hd), w, hd, t.q_norm != NULL,
                                             t.eps, rope, t.qscale);
        if (lane < hd / 4) *(float4 *)(buf + 4 * lane) = o;
      } else {
        kiln_attn_norm_rotate_(buf, q, hd, t.q_norm, t.eps, t.rope, pos, t.qscale);
      }
      continue;
    }
    const int64_t at = (((int64_t)u.seq * sh.n_kv_heads + u.kh) * sh.n_ctx + pos) * hd;
    const bool in_tile = jn < KILN_AD_TILE;
    if (job == GMAX && vec) {
      const float4 w = first ? pre->w : kiln_norm_w4(t.k_norm, hd);
      const float4 o = kiln_norm_rotate4_x(kiln_ld_head4(t.qkv + (int64_t)(sh.n_heads + u.kh) * hd,
                                                         (const float *)NULL, hd),
                                           w, hd, t.k_norm != NULL, t.eps, rope, 1.f);
      if (lane < hd / 4) {
        const uint2 b = kiln_pack_bf16x4(o);
        *(uint2 *)(k_cache + at + 4 * lane) = b;
        if (in_tile) *(uint2 *)((uint16_t *)(s.kt + jn * (hd / 8)) + 4 * lane) = b;
      }
    } else if (job == GMAX) {
      float *buf = s.red; /* free until the first tile's values are summed */
      kiln_attn_norm_rotate_(buf, t.qkv + (int64_t)(sh.n_heads + u.kh) * hd, hd, t.k_norm, t.eps, t.rope, pos, 1.f);
      uint16_t *row = in_tile ? (uint16_t *)(s.kt + jn * (hd / 8)) : NULL;
#pragma unroll 1
      for (int d = lane; d < hd; d += 32) {
        const uint16_t b = kiln_f32_to_bf16_dev(buf[d]);
        k_cache[at + d] = b;
        if (row) row[d] = b;
      }
    } else {
      const float *vq = t.qkv + (int64_t)(sh.n_heads + sh.n_kv_heads + u.kh) * hd;
      uint16_t *row = in_tile ? (uint16_t *)(s.vt + jn * (hd / 8)) : NULL;
      if (vec) {
        if (lane < hd / 4) {
          const float4 v = kiln_ld_act4(vq + 4 * lane);
          const uint2 b = kiln_pack_bf16x4(v);
          *(uint2 *)(v_cache + at + 4 * lane) = b;
          if (row) *(uint2 *)(row + 4 * lane) = b;
        }
        continue;
      }
#pragma unroll 1
      for (int d = lane; d < hd; d += 32) {
        const uint16_t b = kiln_f32_to_bf16_dev(__ldcg(vq + d));
        v_cache[at + d] = b;
        if (row) row[d] = b;
      }
    }
  }
}

/* Runs one active unit's keys (split < kiln_attn_active) on the whole block (THREADS threads). On entry the first
 * tile's copy is in flight (kiln_attn_unit_first) and the prologue has run (kiln_attn_unit_prologue, this block).
 * Leaves the unit's partial: its weighted values of head i (i < the group's heads) at dst + i * head_stride, and
 * the running max and sum in s.m_s / s.l_s. */
template <int GMAX, int THREADS>
static __device__ __forceinline__ void kiln_attn_unit_tiles(kiln_attn_smem<GMAX, THREADS> &s,
                                                            const kiln_attn_unit &u, const uint16_t *k_cache,
                                                            const uint16_t *v_cache, const kiln_cuda_attn_shape &sh,
                                                            float *dst, int64_t head_stride) {
  constexpr int WARPS = THREADS / 32;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int hd = sh.head_dim, hd8 = hd / 8, g = sh.n_heads / sh.n_kv_heads;
  const int gn = min(GMAX, g - u.gz * GMAX);
  int c0, c1;
  kiln_attn_range(u, &c0, &c1);
  const int64_t base = ((int64_t)u.seq * sh.n_kv_heads + u.kh) * sh.n_ctx * hd;
  const uint16_t *K = k_cache + base, *V = v_cache + base;
  float *sc = s.sc, *red = s.red, *m_s = s.m_s, *l_s = s.l_s, *al_s = s.al_s;

  /* key phase: lpk lanes a key, kpw keys a warp step; value phase: row vrow, dimensions 8 vsl .. 8 vsl + 7 */
  int lpk = 1;
  while (lpk < hd8) lpk *= 2;
  const int kpw = 32 / lpk, sub = lane / lpk, sl = lane % lpk;
  const bool lane_ok = sl < hd8;
  const int nr = THREADS / hd8, vrow = tid / hd8, vsl = tid % hd8;
  const bool vact = vrow < nr; /* threads past nr * hd8 sit out the value phase */

  if (tid < GMAX) {
    m_s[tid] = -INFINITY;
    l_s[tid] = 0.f;
    al_s[tid] = 1.f;
  }
  kiln_cp_wait_all();
  __syncthreads(); /* publishes the prologue and the first tile */

  /* the thread's 8 dimensions of every query head, for the whole unit */
  float q[GMAX][8];
#pragma unroll
  for (int i = 0; i < GMAX; i++)
#pragma unroll
    for (int e = 0; e < 8; e++) q[i][e] = lane_ok ? s.qs[i * hd + sl * 8 + e] : 0.f;
  float acc[GMAX][8];
#pragma unroll
  for (int i = 0; i < GMAX; i++)
#pragma unroll
    for (int e = 0; e < 8; e++) acc[i][e] = 0.f;

  for (int t0 = c0; t0 < c1; t0 += KILN_AD_TILE) {
    const int tn = min(KILN_AD_TILE, c1 - t0);
    const int t1 = t0 + KILN_AD_TILE, tn1 = min(KILN_AD_TILE, c1 - t1); /* the next tile (tn1 <= 0: none) */
    /* scores: every lane of a warp runs the same steps, so the shuffles always see the whole warp */
#pragma unroll 1
    for (int jb = warp * kpw; jb < tn; jb += WARPS * kpw) {
      const int j = jb + sub;
      const uint4 kv = j < tn && lane_ok ? s.kt[j * hd8 + sl] : make_uint4(0, 0, 0, 0);
      const float kf[8] = {kiln_bf16_lo(kv.x), kiln_bf16_hi(kv.x), kiln_bf16_lo(kv.y), kiln_bf16_hi(kv.y),
                           kiln_bf16_lo(kv.z), kiln_bf16_hi(kv.z), kiln_bf16_lo(kv.w), kiln_bf16_hi(kv.w)};
      float d[GMAX];
#pragma unroll
      for (int i = 0; i < GMAX; i++) {
        d[i] = 0.f;
#pragma unroll
        for (int e = 0; e < 8; e++) d[i] = fmaf(q[i][e], kf[e], d[i]);
      }
      for (int o = lpk / 2; o > 0; o >>= 1)
#pragma unroll
        for (int i = 0; i < GMAX; i++) d[i] += __shfl_xor_sync(0xffffffffu, d[i], o);
      if (j < tn && sl == 0)
#pragma unroll
        for (int i = 0; i < GMAX; i++) sc[i * KILN_AD_TILE + j] = d[i];
    }
    __syncthreads(); /* scores complete; s.kt is free */
    if (tn1 > 0) { /* the next tile's keys land under this tile's softmax and values */
      kiln_attn_copy_<THREADS>(s.kt, K, hd8, t1, 0, tn1);
      kiln_cp_commit();
    }
    /* online softmax: one warp per head */
#pragma unroll 1
    for (int i = warp; i < gn; i += WARPS) {
      float s0 = lane < tn ? sc[i * KILN_AD_TILE + lane] : -INFINITY;
      float s1 = lane + 32 < tn ? sc[i * KILN_AD_TILE + lane + 32] : -INFINITY;
      float mx = kiln_warp_max(fmaxf(s0, s1));
      float m_old = m_s[i], m_new = fmaxf(m_old, mx);
      float p0 = exp2f(s0 - m_new), p1 = exp2f(s1 - m_new);
      if (lane < tn) sc[i * KILN_AD_TILE + lane] = p0;
      if (lane + 32 < tn) sc[i * KILN_AD_TILE + lane + 32] = p1;
      float sum = kiln_warp_sum(p0 + p1);
      __syncwarp(); /* every lane has read m_s[i] before lane 0 rewrites it */
      if (lane == 0) {
        float alpha = exp2f(m_old - m_new);
        al_s[i] = alpha;
        l_s[i] = l_s[i] * alpha + sum;
        m_s[i] = m_new;
      }
    }
    __syncthreads();
    /* values (heads past the group: zero scores from zero queries, never stored) */
#pragma unroll
    for (int i = 0; i < GMAX; i++) {
      const float al = al_s[i];
#pragma unroll
      for (int e = 0; e < 8; e++) acc[i][e] *= al;
    }
    if (vact) {
#pragma unroll 2
      for (int j = vrow; j < tn; j += nr) {
        const uint4 vv = s.vt[j * hd8 + vsl];
        const float vf[8] = {kiln_bf16_lo(vv.x), kiln_bf16_hi(vv.x), kiln_bf16_lo(vv.y), kiln_bf16_hi(vv.y),
                             kiln_bf16_lo(vv.z), kiln_bf16_hi(vv.z), kiln_bf16_lo(vv.w), kiln_bf16_hi(vv.w)};
#pragma unroll
        for (int i = 0; i < GMAX; i++) {
          const float p = sc[i * KILN_AD_TILE + j];
#pragma unroll
          for (int e = 0; e < 8; e++) acc[i][e] = fmaf(p, vf[e], acc[i][e]);
        }
      }
    }
    __syncthreads(); /* sc, al_s and s.vt are free */
    if (tn1 > 0) {
      kiln_attn_copy_<THREADS>(s.vt, V, hd8, t1, 0, tn1);
      kiln_cp_commit();
      kiln_cp_wait_all();
      __syncthreads(); /* the next tile's keys and values are in */
    }
  }

  /* sum the per-row-group accumulators: red[row][i][hd] */
  if (vact) {
#pragma unroll
    for (int i = 0; i < GMAX; i++) {
      if (i < gn) {
#pragma unroll
        for (int e = 0; e < 8; e++) red[((int64_t)vrow * GMAX + i) * hd + vsl * 8 + e] = acc[i][e];
      }
    }
  }
  __syncthreads();
#pragma unroll 1
  for (int idx = tid; idx < gn * hd; idx += THREADS) {
    int i = idx / hd, d = idx % hd;
    float sm = 0.f;
    for (int r = 0; r < nr; r++) sm += red[((int64_t)r * GMAX + i) * hd + d];
    dst[i * head_stride + d] = sm;
  }
}

/* Turns the (max, sum) pairs of n_act splits of gn heads (wsm[i * n_act + sp], lsm[...]; shared memory) into
 * the weights of each split's partial in the normalised output, in place in wsm. One warp per head; the caller
 * publishes wsm with a barrier. */
template <int THREADS>
static __device__ __forceinline__ void kiln_attn_weights_(float *wsm, const float *lsm, int gn, int n_act) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
#pragma unroll 1
  for (int i = warp; i < gn; i += THREADS / 32) {
    float M = -INFINITY;
#pragma unroll 1
    for (int sp = lane; sp < n_act; sp += 32) M = fmaxf(M, wsm[i * n_act + sp]);
    M = kiln_warp_max(M);
    float den = 0.f;
#pragma unroll 1
    for (int sp = lane; sp < n_act; sp += 32) den += exp2f(wsm[i * n_act + sp] - M) * lsm[i * n_act + sp];
    den = kiln_warp_sum(den);
    __syncwarp(); /* all lanes have read wsm before it is overwritten with the weights */
#pragma unroll 1
    for (int sp = lane; sp < n_act; sp += 32) wsm[i * n_act + sp] = exp2f(wsm[i * n_act + sp] - M) / den;
  }
}

/* kiln_attn_unit_tiles, then the combine through global memory: `part` is the scratch of attn_decode.h: partials
 * [n_heads][n_splits][hd], (max, sum) [n_heads][n_splits][2], then the arrival counters. The partials are read
 * back through L2 (ld.cg): other SMs wrote them. */
template <int GMAX, int THREADS>
static __device__ __forceinline__ void kiln_attn_unit_run(kiln_attn_smem<GMAX, THREADS> &s, const kiln_attn_unit &u,
                                                          uint16_t *out, const uint16_t *k_cache,
                                                          const uint16_t *v_cache, const kiln_cuda_attn_shape &sh,
                                                          float *part) {
  const int tid = threadIdx.x;
  const int hd = sh.head_dim, g = sh.n_heads / sh.n_kv_heads;
  const int n_splits = u.n_splits, split = u.split, kh = u.kh;
  const int g0 = u.gz * GMAX;
  const int gn = min(GMAX, g - g0);
  const int h0 = kh * g + g0; /* first query head of this unit */
  const int n_act = kiln_attn_active(u.L, n_splits);
  float *red = s.red;
  float *po = part;                                        /* [n_heads][n_splits][hd] */
  float *pml = part + (int64_t)sh.n_heads * n_splits * hd; /* [n_heads][n_splits][2] */
  kiln_attn_unit_tiles<GMAX, THREADS>(s, u, k_cache, v_cache, sh, po + ((int64_t)h0 * n_splits + split) * hd,
                                      (int64_t)n_splits * hd);
  if (tid < gn) {
    pml[((int64_t)(h0 + tid) * n_splits + split) * 2] = s.m_s[tid];
    pml[((int64_t)(h0 + tid) * n_splits + split) * 2 + 1] = s.l_s[tid];
  }

  /* The last unit of this (kv head, head group) to finish combines every split's partial (threadFenceReduction
   * pattern): each unit's fence makes its partial visible device-wide before its arrival is counted; the last
   * arriver reads the partials through L2 (ld.cg), then re-arms the counter for the next step. */
  unsigned *counter = (unsigned *)(pml + (int64_t)sh.n_heads * n_splits * 2) + kh * u.n_gz + u.gz;
  __threadfence();
  __syncthreads();
  if (tid == 0) s.last = atomicAdd(counter, 1u) == (unsigned)n_act - 1;
  __syncthreads();
  const bool last = s.last;
  __syncthreads(); /* everyone has read s.last before a later unit of these threads rewrites it */
  if (!last) return;
  __threadfence();
  /* The combine, spread over the unit: the (max, sum) of every active split into shared memory (red is free
   * now), one warp per head turns them into normalised weights, then each thread sums its outputs over splits. */
  float *wsm = red, *lsm = red + GMAX * KILN_AD_MAX_SPLITS;
#pragma unroll 1
  for (int idx = tid; idx < gn * n_act; idx += THREADS) {
    int i = idx / n_act, sp = idx % n_act;
    const float *ml = pml + ((int64_t)(h0 + i) * n_splits + sp) * 2;
    wsm[idx] = __ldcg(ml);
    lsm[idx] = __ldcg(ml + 1);
  }
  __syncthreads();
  kiln_attn_weights_<THREADS>(wsm, lsm, gn, n_act);
  __syncthreads();
  /* 4 dimensions per thread (16-byte loads), 8 splits' loads in flight at a time: the sum over splits costs a
   * few memory latencies, not one per split */
  const int hd4 = hd / 4;
#pragma unroll 1
  for (int idx = tid; idx < gn * hd4; idx += THREADS) {
    const int i = idx / hd4, d = (idx % hd4) * 4;
    const float4 *ph = (const float4 *)(po + (int64_t)(h0 + i) * n_splits * hd + d);
    const float *w = wsm + i * n_act;
    float4 num = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll 8
    for (int sp = 0; sp < n_act; sp++) {
      float4 v = __ldcg(ph + (int64_t)sp * hd4);
      num.x = fmaf(w[sp], v.x, num.x);
      num.y = fmaf(w[sp], v.y, num.y);
      num.z = fmaf(w[sp], v.z, num.z);
      num.w = fmaf(w[sp], v.w, num.w);
    }
    uint16_t *o = out + (int64_t)(h0 + i) * hd + d;
    *(uint2 *)o = kiln_pack_bf16x4(num);
  }
  if (tid == 0) *counter = 0u; /* every unit of this group has arrived: nobody else touches it now */
  __syncthreads();         /* the unit's shared memory is free for the next unit */
}

/* The combine inside a thread-block cluster (sm_90): the cluster is the n_splits units of one (kv head, head
 * group), cluster rank = split. Each active unit has left its partial in its own shared memory (s.kt, as f32
 * [GMAX][head_dim]; kiln_attn_unit_tiles with dst (float *)s.kt, head_stride head_dim) and its (max, sum) in s.m_s /
 * s.l_s. After one cluster barrier every unit reads the (max, sum) of every active unit, computes the weights,
 * and sums its share of the outputs (16-byte slices spread over the cluster) from the other units' shared memory;
 * a second barrier keeps every unit's shared memory alive until all reads are done. Nothing goes through global
 * memory but the output: no partials, no fence, no arrival counter. Inactive units (no keys) take part too: they
 * must arrive at the barriers, and they have threads to spare for the sum. */
template <int GMAX, int THREADS>
static __device__ __forceinline__ void kiln_attn_cluster_combine(kiln_attn_smem<GMAX, THREADS> &s,
                                                                 const kiln_attn_unit &u, uint16_t *out,
                                                                 const kiln_cuda_attn_shape &sh, bool relaxed_end) {
  namespace cg = cooperative_groups;
  cg::cluster_group cl = cg::this_cluster();
  const int tid = threadIdx.x;
  const int hd = sh.head_dim, g = sh.n_heads / sh.n_kv_heads;
  const int g0 = u.gz * GMAX, gn = min(GMAX, g - g0), h0 = u.kh * g + g0;
  const int n_act = kiln_attn_active(u.L, u.n_splits);
  cl.sync(); /* every active unit's partial and (max, sum) are in its shared memory */
  float *wsm = s.red, *lsm = s.red + gn * n_act;
#pragma unroll 1
  for (int idx = tid; idx < gn * n_act; idx += THREADS) {
    const int i = idx / n_act, sp = idx % n_act;
    const kiln_attn_smem<GMAX, THREADS> *r = cl.map_shared_rank(&s, (unsigned)sp);
    wsm[idx] = r->m_s[i];
    lsm[idx] = r->l_s[i];
  }
  __syncthreads();
  kiln_attn_weights_<THREADS>(wsm, lsm, gn, n_act);
  __syncthreads();
  const int hd4 = hd / 4;
#pragma unroll 1
  for (int idx = u.split * THREADS + tid; idx < gn * hd4; idx += u.n_splits * THREADS) {
    const int i = idx / hd4, d = (idx % hd4) * 4;
    const float *w = wsm + i * n_act;
    float4 num = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll 4
    for (int sp = 0; sp < n_act; sp++) {
      const float *rp = cl.map_shared_rank((const float *)s.kt, (unsigned)sp);
      const float4 v = *(const float4 *)(rp + i * hd + d);
      num.x = fmaf(w[sp], v.x, num.x);
      num.y = fmaf(w[sp], v.y, num.y);
      num.z = fmaf(w[sp], v.z, num.z);
      num.w = fmaf(w[sp], v.w, num.w);
    }
    uint16_t *o = out + (int64_t)(h0 + i) * hd + d;
    *(uint2 *)o = kiln_pack_bf16x4(num);
  }
  /* No unit leaves, freeing its shared memory, while another still reads it. relaxed_end: an arrive without
   * release semantics (the remote reads have all returned: their values fed the stores above), so the barrier
   * does not first wait for this unit's output stores to reach L2 (the default cluster barrier's MEMBAR.GPU). */
  if (relaxed_end) {
    asm volatile("barrier.cluster.arrive.relaxed.aligned;" ::: "memory");
    asm volatile("barrier.cluster.wait.aligned;" ::: "memory");
  } else {
    cl.sync();
  }
}

#endif /* KILN_CUDA_ATTN_DECODE_DEV_CUH */
