/*
 * backend/cuda/attn_decode_dev.cuh (internal, device code): one unit of split-KV decode attention, shared by the
 * standalone kernel (attn_decode.cu, blocks of 128 threads) and the persistent decode kernel (decode_step.cu,
 * blocks of 512), one unit per block at a time.
 *
 * A unit is (split, kv head, group of up to GMAX query heads) run by the THREADS threads of a block. Keys are
 * read as 16-byte vectors: a group of lpk lanes (head_dim/8 rounded up to a power of two; the extra lanes load nothing)
 * covers one key, so a warp scores 32/lpk keys at a time and reduces each dot product over its group with xor
 * shuffles. Scores of a tile of 64 keys go to shared memory, one warp per head updates the running max and sum
 * (online softmax, base 2 with log2(e) folded into q), then all threads accumulate the tile's values, each thread
 * owning 8 dimensions of every head for a subset of the keys; those subsets are summed at the end. The unit
 * leaves a partial (max, sum, weighted values); the last unit of its (kv head, head group) to finish combines
 * every split's partial into the output, so no second pass is needed.
 *
 * A unit starts from the new token's q/k/v projections: kiln_attn_unit_prologue normalises and rotates them and
 * stores the token's key and value into the cache. Keys of earlier positions depend on nothing of this step, so
 * callers request the first tile's (kiln_attn_unit_first) before they wait for their inputs, and each tile's
 * successor is requested while the tile is still being used: a short context costs one memory latency in all.
 */
#ifndef KILN_CUDA_ATTN_DECODE_DEV_CUH
#define KILN_CUDA_ATTN_DECODE_DEV_CUH

#include "backend/cuda/cuda_common.h"
#include "backend/cuda/rope.h"
#include "backend/cuda/rope_dev.cuh"

#define KILN_AD_TILE 64
#define KILN_AD_MAX_HD 256
#define KILN_AD_MIN_CHUNK 32
#define KILN_AD_MAX_SPLITS 512 /* the combine keeps GMAX x KILN_AD_MAX_SPLITS (max, sum) pairs in `red` */
#define KILN_AD_GMIN 4 /* the smallest GMAX instantiated: the scratch has a counter per group of this many heads */

/* A unit's shared memory. `red` sums the row groups' accumulators, then holds the combine's weights. */
template <int GMAX, int THREADS>
struct kiln_attn_smem {
  float qs[GMAX * KILN_AD_MAX_HD]; /* the unit's query heads, scaled by log2(e)/sqrt(head_dim) */
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

/* One key's scores for the unit's heads: the lpk lanes of a key each hold 8 of its dimensions. */
template <int GMAX>
static __device__ __forceinline__ void kiln_attn_score_(uint4 kv, int j, int tn, bool lane_ok, int sl, int lpk,
                                                        int gn, int hd, const float *qs, float *sc) {
  float kf[8] = {kiln_bf16_lo(kv.x), kiln_bf16_hi(kv.x), kiln_bf16_lo(kv.y), kiln_bf16_hi(kv.y),
                 kiln_bf16_lo(kv.z), kiln_bf16_hi(kv.z), kiln_bf16_lo(kv.w), kiln_bf16_hi(kv.w)};
#pragma unroll
  for (int i = 0; i < GMAX; i++) {
    if (i < gn) {
      const float *qi = qs + i * hd + sl * 8;
      float d = 0.f;
      if (lane_ok) {
#pragma unroll
        for (int e = 0; e < 8; e++) d = fmaf(qi[e], kf[e], d);
      }
      for (int o = lpk / 2; o > 0; o >>= 1) d += __shfl_xor_sync(0xffffffffu, d, o);
      if (j < tn && sl == 0) sc[i * KILN_AD_TILE + j] = d;
    }
  }
}

/* acc[i][:] += p_ij * v_j for the unit's heads. */
template <int GMAX>
static __device__ __forceinline__ void kiln_attn_accumulate_(uint4 vv, int j, int gn, const float *sc,
                                                             float (*acc)[8]) {
  float vf[8] = {kiln_bf16_lo(vv.x), kiln_bf16_hi(vv.x), kiln_bf16_lo(vv.y), kiln_bf16_hi(vv.y),
                 kiln_bf16_lo(vv.z), kiln_bf16_hi(vv.z), kiln_bf16_lo(vv.w), kiln_bf16_hi(vv.w)};
#pragma unroll
  for (int i = 0; i < GMAX; i++) {
    if (i < gn) {
      float p = sc[i * KILN_AD_TILE + j];
#pragma unroll
      for (int e = 0; e < 8; e++) acc[i][e] = fmaf(p, vf[e], acc[i][e]);
    }
  }
}

/* Where a unit works and what it shares with the other units of its step. */
typedef struct kiln_attn_unit {
  int split, kh, gz;  /* key chunk, kv head, head group */
  int n_splits, n_gz; /* splits, and head groups per kv head */
  int seq, L;         /* KV slot, keys 0 .. L-1 attended (L-1: the new token) */
} kiln_attn_unit;

/* Which thread loads what: in the key phase a group of lpk lanes covers one key (lane sl of the group holds
 * dimensions 8 sl .. 8 sl + 7; lanes past hd/8 load nothing), a warp kpw keys at a time; in the value phase
 * thread tid holds dimensions 8 vsl .. of key row vrow, nr rows at a time. */
typedef struct kiln_attn_geo {
  int hd, hd8, lpk, kpw, sub, sl, nr, vrow, vsl;
  bool lane_ok, vact;
} kiln_attn_geo;

template <int THREADS>
static __device__ __forceinline__ kiln_attn_geo kiln_attn_geo_make(int hd) {
  const int tid = threadIdx.x, lane = tid & 31;
  kiln_attn_geo g;
  g.hd = hd;
  g.hd8 = hd / 8;
  g.lpk = 1;
  while (g.lpk < g.hd8) g.lpk *= 2;
  g.kpw = 32 / g.lpk;
  g.sub = lane / g.lpk;
  g.sl = lane % g.lpk;
  g.lane_ok = g.sl < g.hd8;
  g.nr = THREADS / g.hd8;
  g.vrow = tid / g.hd8;
  g.vsl = tid % g.hd8;
  g.vact = g.vrow < g.nr; /* threads past nr * hd8 sit out the value phase */
  return g;
}

/* The thread's PRE key vectors of the tile at t0 (tn keys), only keys j in [jlo, jhi) (others untouched). */
template <int PRE, int THREADS>
static __device__ __forceinline__ void kiln_attn_load_k_(const kiln_attn_geo &g, const uint16_t *K, int t0, int tn,
                                                         int jlo, int jhi, uint4 *kreg) {
  constexpr int WARPS = THREADS / 32;
  const int warp = threadIdx.x >> 5;
  jhi = min(jhi, tn);
#pragma unroll
  for (int it = 0; it < PRE; it++) {
    const int j = warp * g.kpw + it * WARPS * g.kpw + g.sub;
    if (j >= jlo && j < jhi && g.lane_ok) kreg[it] = *(const uint4 *)(K + (int64_t)(t0 + j) * g.hd + g.sl * 8);
  }
}
/* The same for the value vectors. */
template <int PRE>
static __device__ __forceinline__ void kiln_attn_load_v_(const kiln_attn_geo &g, const uint16_t *V, int t0, int tn,
                                                         int jlo, int jhi, uint4 *vreg) {
  jhi = min(jhi, tn);
#pragma unroll
  for (int it = 0; it < PRE; it++) {
    const int j = g.vrow + it * g.nr;
    if (g.vact && j >= jlo && j < jhi) vreg[it] = *(const uint4 *)(V + (int64_t)(t0 + j) * g.hd + g.vsl * 8);
  }
}

/* The unit's first key chunk [c0, c1) (c1 empty when the split holds no keys). */
static __device__ __forceinline__ void kiln_attn_range(const kiln_attn_unit &u, int *c0, int *c1) {
  const int chunk = kiln_attn_chunk(u.L, u.n_splits);
  *c0 = u.split * chunk;
  *c1 = min(u.L, *c0 + chunk);
}

/* The first tile's keys and values that earlier steps stored (positions below L-1), requested before the unit's
 * inputs are ready: callers issue this before they wait (a PDL wait, a grid barrier), so the cache read overlaps
 * the previous kernel's tail. The new token's vectors (position L-1) are loaded by kiln_attn_unit_run, after
 * kiln_attn_unit_prologue has stored them. Slots left unloaded are zero. */
template <int PRE, int THREADS>
static __device__ __forceinline__ void kiln_attn_unit_first(const kiln_attn_unit &u, const uint16_t *k_cache,
                                                            const uint16_t *v_cache, const kiln_cuda_attn_shape &sh,
                                                            uint4 *kreg, uint4 *vreg) {
#pragma unroll
  for (int it = 0; it < PRE; it++) kreg[it] = vreg[it] = make_uint4(0, 0, 0, 0);
  int c0, c1;
  kiln_attn_range(u, &c0, &c1);
  if (c0 >= c1) return;
  const kiln_attn_geo g = kiln_attn_geo_make<THREADS>(sh.head_dim);
  const int64_t base = ((int64_t)u.seq * sh.n_kv_heads + u.kh) * sh.n_ctx * sh.head_dim;
  const int tn = min(KILN_AD_TILE, c1 - c0), old = u.L - 1 - c0;
  kiln_attn_load_k_<PRE, THREADS>(g, k_cache + base, c0, tn, 0, old, kreg);
  kiln_attn_load_v_<PRE>(g, v_cache + base, c0, tn, 0, old, vreg);
}

/* What the prologue needs besides the unit: the new token's q/k/v rows (f32, biases added, written by another
 * kernel or block: read through L2), the per-head norms (NULL: none), RoPE frequencies and the softmax scale. */
typedef struct kiln_attn_token {
  const float *qkv;           /* [n_heads + 2 n_kv_heads][head_dim] */
  const float *q_norm, *k_norm;
  const float *inv_freq;      /* [head_dim / 2] */
  float eps, qscale;          /* qscale: log2(e) / sqrt(head_dim) */
  int pos;
} kiln_attn_token;

/* Per-head RMSNorm and RoPE of the unit's query heads into s.qs (scaled by qscale); the unit whose keys include
 * the new token also normalises and rotates its key and stores key and value into the cache (a unit of another
 * head group of the same kv head stores the same bytes). One warp per head; kiln_attn_unit_run's first barrier
 * publishes it all to the block. */
template <int GMAX, int THREADS>
static __device__ __forceinline__ void kiln_attn_unit_prologue(kiln_attn_smem<GMAX, THREADS> &s,
                                                               const kiln_attn_unit &u, const kiln_attn_token &t,
                                                               uint16_t *k_cache, uint16_t *v_cache,
                                                               const kiln_cuda_attn_shape &sh) {
  static_assert(GMAX * KILN_AD_TILE >= KILN_AD_MAX_HD, "the new key is rotated in s.sc");
  constexpr int WARPS = THREADS / 32;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int hd = sh.head_dim, g = sh.n_heads / sh.n_kv_heads;
  const int g0 = u.gz * GMAX, gn = min(GMAX, g - g0), h0 = u.kh * g + g0;
  int c0, c1;
  kiln_attn_range(u, &c0, &c1);
  const bool owner = t.pos >= c0 && t.pos < c1;
  const int jobs = gn + (owner ? 2 : 0);
  for (int job = warp; job < jobs; job += WARPS) {
    if (job < gn) {
      float *buf = s.qs + job * hd;
      const float *src = t.qkv + (int64_t)(h0 + job) * hd;
      for (int d = lane; d < hd; d += 32) buf[d] = __ldcg(src + d);
      __syncwarp();
      kiln_norm_rotate(buf, hd, t.q_norm, t.eps, t.inv_freq, t.pos);
      for (int d = lane; d < hd; d += 32) buf[d] *= t.qscale;
      continue;
    }
    const int64_t at = (((int64_t)u.seq * sh.n_kv_heads + u.kh) * sh.n_ctx + t.pos) * hd;
    if (job == gn) {
      float *buf = s.sc; /* free until the unit's first tile */
      const float *kq = t.qkv + (int64_t)(sh.n_heads + u.kh) * hd;
      for (int d = lane; d < hd; d += 32) buf[d] = __ldcg(kq + d);
      __syncwarp();
      kiln_norm_rotate(buf, hd, t.k_norm, t.eps, t.inv_freq, t.pos);
      for (int d = lane; d < hd; d += 32) k_cache[at + d] = kiln_f32_to_bf16_dev(buf[d]);
    } else {
      const float *vq = t.qkv + (int64_t)(sh.n_heads + sh.n_kv_heads + u.kh) * hd;
      for (int d = lane; d < hd; d += 32) v_cache[at + d] = kiln_f32_to_bf16_dev(__ldcg(vq + d));
    }
  }
}

/* Runs one active unit (split < kiln_attn_active) on the whole block (THREADS threads). On entry s.qs holds the
 * unit's gn query heads, scaled, and the new token's key and value are in the cache (kiln_attn_unit_prologue, by
 * this block), and kreg/vreg hold the first tile's older vectors (kiln_attn_unit_first). `part` is the scratch
 * of attn_decode.h: partials [n_heads][n_splits][hd], (max, sum) [n_heads][n_splits][2], then the arrival
 * counters. The partials are read back through L2 (ld.cg): other SMs wrote them. PRE: keys and values held per
 * thread per tile (registers); the next tile's are requested while the current one is still being used. */
template <int GMAX, int PRE, int THREADS>
static __device__ __forceinline__ void kiln_attn_unit_run(kiln_attn_smem<GMAX, THREADS> &s, const kiln_attn_unit &u,
                                                          uint16_t *out,
                                                          const uint16_t *k_cache, const uint16_t *v_cache,
                                                          const kiln_cuda_attn_shape &sh, float *part, uint4 *kreg,
                                                          uint4 *vreg) {
  constexpr int WARPS = THREADS / 32;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int hd = sh.head_dim, g = sh.n_heads / sh.n_kv_heads;
  const int n_splits = u.n_splits, split = u.split, kh = u.kh;
  const int g0 = u.gz * GMAX;
  const int gn = min(GMAX, g - g0);
  const int h0 = kh * g + g0; /* first query head of this unit */
  const int L = u.L;
  const int n_act = kiln_attn_active(L, n_splits);
  int c0, c1;
  kiln_attn_range(u, &c0, &c1);
  float *qs = s.qs, *sc = s.sc, *red = s.red, *m_s = s.m_s, *l_s = s.l_s, *al_s = s.al_s;

  if (tid < GMAX) {
    m_s[tid] = -INFINITY;
    l_s[tid] = 0.f;
  }
  __syncthreads(); /* publishes the prologue: s.qs and the new token's key and value */

  const int64_t base = ((int64_t)u.seq * sh.n_kv_heads + kh) * sh.n_ctx * hd;
  const uint16_t *K = k_cache + base, *V = v_cache + base;
  const kiln_attn_geo G = kiln_attn_geo_make<THREADS>(hd);
  const int kpw = G.kpw, sub = G.sub, sl = G.sl, lpk = G.lpk, nr = G.nr, vrow = G.vrow, vsl = G.vsl;
  const bool vact = G.vact, lane_ok = G.lane_ok;
  {
    /* the new token's vectors, when they fall in the first tile */
    const int tn = min(KILN_AD_TILE, c1 - c0), jn = L - 1 - c0;
    kiln_attn_load_k_<PRE, THREADS>(G, K, c0, tn, jn, jn + 1, kreg);
    kiln_attn_load_v_<PRE>(G, V, c0, tn, jn, jn + 1, vreg);
  }

  float acc[GMAX][8];
#pragma unroll
  for (int i = 0; i < GMAX; i++)
#pragma unroll
    for (int e = 0; e < 8; e++) acc[i][e] = 0.f;

  for (int t0 = c0; t0 < c1; t0 += KILN_AD_TILE) {
    const int tn = min(KILN_AD_TILE, c1 - t0);
    const int t1 = t0 + KILN_AD_TILE, tn1 = min(KILN_AD_TILE, c1 - t1); /* the next tile (tn1 <= 0: none) */
    /* scores: every lane of a warp runs the same steps, so the shuffles always see the whole warp */
#pragma unroll
    for (int it = 0; it < PRE; it++) {
      const int jb = warp * kpw + it * WARPS * kpw;
      if (jb < tn) kiln_attn_score_<GMAX>(kreg[it], jb + sub, tn, lane_ok, sl, lpk, gn, hd, qs, sc);
    }
    for (int jb = warp * kpw + PRE * WARPS * kpw; jb < tn; jb += WARPS * kpw) {
      const int j = jb + sub;
      uint4 kv = j < tn && lane_ok ? *(const uint4 *)(K + (int64_t)(t0 + j) * hd + sl * 8) : make_uint4(0, 0, 0, 0);
      kiln_attn_score_<GMAX>(kv, j, tn, lane_ok, sl, lpk, gn, hd, qs, sc);
    }
    /* the next tile's keys load under this tile's softmax and values */
    if (tn1 > 0) {
#pragma unroll
      for (int it = 0; it < PRE; it++) kreg[it] = make_uint4(0, 0, 0, 0);
      kiln_attn_load_k_<PRE, THREADS>(G, K, t1, tn1, 0, tn1, kreg);
    }
    __syncthreads();
    /* online softmax: one warp per head */
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
    /* values */
#pragma unroll
    for (int i = 0; i < GMAX; i++) {
      if (i < gn) {
        float al = al_s[i];
#pragma unroll
        for (int e = 0; e < 8; e++) acc[i][e] *= al;
      }
    }
#pragma unroll
    for (int it = 0; it < PRE; it++) {
      const int j = vrow + it * nr;
      if (vact && j < tn) kiln_attn_accumulate_<GMAX>(vreg[it], j, gn, sc, acc);
    }
    for (int j = vrow + PRE * nr; vact && j < tn; j += nr)
      kiln_attn_accumulate_<GMAX>(*(const uint4 *)(V + (int64_t)(t0 + j) * hd + vsl * 8), j, gn, sc, acc);
    if (tn1 > 0) {
#pragma unroll
      for (int it = 0; it < PRE; it++) vreg[it] = make_uint4(0, 0, 0, 0);
      kiln_attn_load_v_<PRE>(G, V, t1, tn1, 0, tn1, vreg);
    }
    __syncthreads(); /* sc and al_s are rewritten by the next tile */
  }

  /* sum the per-row-group accumulators: red[row][i][hd] */
  float *po = part;                                        /* [n_heads][n_splits][hd] */
  float *pml = part + (int64_t)sh.n_heads * n_splits * hd; /* [n_heads][n_splits][2] */
  {
#pragma unroll
    for (int i = 0; i < GMAX; i++) {
      if (i < gn && vact) {
#pragma unroll
        for (int e = 0; e < 8; e++) red[((int64_t)vrow * GMAX + i) * hd + vsl * 8 + e] = acc[i][e];
      }
    }
    __syncthreads();
    for (int idx = tid; idx < gn * hd; idx += THREADS) {
      int i = idx / hd, d = idx % hd;
      float sm = 0.f;
      for (int r = 0; r < nr; r++) sm += red[((int64_t)r * GMAX + i) * hd + d];
      po[((int64_t)(h0 + i) * n_splits + split) * hd + d] = sm;
    }
    if (tid < gn) {
      pml[((int64_t)(h0 + tid) * n_splits + split) * 2] = m_s[tid];
      pml[((int64_t)(h0 + tid) * n_splits + split) * 2 + 1] = l_s[tid];
    }
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
  for (int idx = tid; idx < gn * n_act; idx += THREADS) {
    int i = idx / n_act, sp = idx % n_act;
    const float *ml = pml + ((int64_t)(h0 + i) * n_splits + sp) * 2;
    wsm[idx] = __ldcg(ml);
    lsm[idx] = __ldcg(ml + 1);
  }
  __syncthreads();
  for (int i = warp; i < gn; i += WARPS) {
    float M = -INFINITY;
    for (int sp = lane; sp < n_act; sp += 32) M = fmaxf(M, wsm[i * n_act + sp]);
    M = kiln_warp_max(M);
    float den = 0.f;
    for (int sp = lane; sp < n_act; sp += 32) den += exp2f(wsm[i * n_act + sp] - M) * lsm[i * n_act + sp];
    den = kiln_warp_sum(den);
    __syncwarp(); /* all lanes have read wsm before it is overwritten with the weights */
    for (int sp = lane; sp < n_act; sp += 32) wsm[i * n_act + sp] = exp2f(wsm[i * n_act + sp] - M) / den;
  }
  __syncthreads();
  /* 4 dimensions per thread (16-byte loads), 8 splits' loads in flight at a time: the sum over splits costs a
   * few memory latencies, not one per split */
  const int hd4 = hd / 4;
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
    *(uint2 *)o = make_uint2(kiln_pack_bf16x2(num.x, num.y), kiln_pack_bf16x2(num.z, num.w));
  }
  if (tid == 0) *counter = 0u; /* every unit of this group has arrived: nobody else touches it now */
  __syncthreads();         /* the unit's shared memory is free for the next unit */
}

#endif /* KILN_CUDA_ATTN_DECODE_DEV_CUH */
