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
 */
#ifndef KILN_CUDA_ATTN_DECODE_DEV_CUH
#define KILN_CUDA_ATTN_DECODE_DEV_CUH

#include "backend/cuda/cuda_common.h"
#include "backend/cuda/rope.h"

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
  int seq, L;         /* KV slot, keys 0 .. L-1 attended */
} kiln_attn_unit;

/* Runs one unit on the whole block (THREADS threads). On entry s.qs holds the unit's gn query heads (scaled),
 * written by the block before the call (the first sync here publishes them). `part` is the scratch of
 * attn_decode.h: partials [n_heads][n_splits][hd], (max, sum) [n_heads][n_splits][2], then the arrival counters.
 * The partials are read back through L2 (ld.cg): other SMs wrote them. PRE: keys and values prefetched per thread
 * per tile (registers). */
template <int GMAX, int PRE, int THREADS>
static __device__ __forceinline__ void kiln_attn_unit_run(kiln_attn_smem<GMAX, THREADS> &s, const kiln_attn_unit &u,
                                                          uint16_t *out,
                                                          const uint16_t *k_cache, const uint16_t *v_cache,
                                                          const kiln_cuda_attn_shape &sh, float *part) {
  constexpr int WARPS = THREADS / 32;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int hd = sh.head_dim, g = sh.n_heads / sh.n_kv_heads;
  const int n_splits = u.n_splits, split = u.split, kh = u.kh;
  const int g0 = u.gz * GMAX;
  const int gn = min(GMAX, g - g0);
  const int h0 = kh * g + g0; /* first query head of this unit */
  const int L = u.L;
  const int chunk = kiln_attn_chunk(L, n_splits), n_act = kiln_attn_active(L, n_splits);
  const int c0 = split * chunk, c1 = min(L, c0 + chunk);
  if (split >= n_act) return; /* no keys: no partial, no arrival (the whole block leaves together) */
  float *qs = s.qs, *sc = s.sc, *red = s.red, *m_s = s.m_s, *l_s = s.l_s, *al_s = s.al_s;

  if (tid < GMAX) {
    m_s[tid] = -INFINITY;
    l_s[tid] = 0.f;
  }
  __syncthreads();

  const int64_t base = ((int64_t)u.seq * sh.n_kv_heads + kh) * sh.n_ctx * hd;
  const uint16_t *K = k_cache + base, *V = v_cache + base;
  const int hd8 = hd / 8;                /* 16-byte vectors per key */
  int lpk = 1;                           /* lanes per key: hd8 rounded up to a power of two */
  while (lpk < hd8) lpk *= 2;
  const int kpw = 32 / lpk;              /* keys per warp step */
  const int sub = lane / lpk, sl = lane % lpk;
  const int nr = THREADS / hd8;  /* key rows accumulated in parallel in the value phase */
  const int vrow = tid / hd8, vsl = tid % hd8;
  const bool vact = vrow < nr;           /* threads past nr * hd8 sit out the value phase */

  float acc[GMAX][8];
#pragma unroll
  for (int i = 0; i < GMAX; i++)
#pragma unroll
    for (int e = 0; e < 8; e++) acc[i][e] = 0.f;

  for (int t0 = c0; t0 < c1; t0 += KILN_AD_TILE) {
    const int tn = min(KILN_AD_TILE, c1 - t0);
    const bool lane_ok = sl < hd8;
    /* The tile's keys and values, PRE vectors per thread of each, are all requested before the first is used:
     * one memory latency per tile instead of one per loop step (values load under the scoring). */
    uint4 kreg[PRE], vreg[PRE];
#pragma unroll
    for (int it = 0; it < PRE; it++) {
      const int j = warp * kpw + it * WARPS * kpw + sub;
      kreg[it] = j < tn && lane_ok ? *(const uint4 *)(K + (int64_t)(t0 + j) * hd + sl * 8) : make_uint4(0, 0, 0, 0);
    }
#pragma unroll
    for (int it = 0; it < PRE; it++) {
      const int j = vrow + it * nr;
      vreg[it] = vact && j < tn ? *(const uint4 *)(V + (int64_t)(t0 + j) * hd + vsl * 8) : make_uint4(0, 0, 0, 0);
    }
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
