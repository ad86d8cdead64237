/*
 * backend/cuda/attn_decode.cu: split-KV decode attention (see attn_decode.h).
 *
 * Block (split, kv head, group of up to 8 query heads), 128 threads. Keys are read as 16-byte vectors: a group of
 * lpk lanes (head_dim/8 rounded up to a power of two; the extra lanes load nothing) covers one key, so a warp
 * scores 32/lpk keys at a time and reduces each dot product over its group with xor shuffles. Scores of a tile of 64 keys go to shared memory, one warp per head updates the running max and
 * sum (online softmax, base 2 with log2(e) folded into q), then all threads accumulate the tile's values, each
 * thread owning 8 dimensions of every head for a subset of the keys; those subsets are summed at the end.
 */
#include "backend/cuda/attn_decode.h"
#include "backend/cuda/cuda_common.h"

#define AD_THREADS 128
#define AD_WARPS (AD_THREADS / 32)
#define AD_GMAX 8
#define AD_TILE 64
#define AD_MAX_HD 256
#define AD_MIN_CHUNK 32
#define AD_PRE 8 /* keys and values prefetched per thread per tile */
#define AD_MAX_SPLITS 512 /* the combine keeps AD_GMAX x AD_MAX_SPLITS (max, sum) pairs in `red` */

/* One key's scores for the block's heads: the lpk lanes of a key each hold 8 of its dimensions. */
static __device__ __forceinline__ void score_(uint4 kv, int j, int tn, bool lane_ok, int sl, int lpk, int gn, int hd,
                                              const float *qs, float *sc) {
  float kf[8] = {kiln_bf16_lo(kv.x), kiln_bf16_hi(kv.x), kiln_bf16_lo(kv.y), kiln_bf16_hi(kv.y),
                 kiln_bf16_lo(kv.z), kiln_bf16_hi(kv.z), kiln_bf16_lo(kv.w), kiln_bf16_hi(kv.w)};
#pragma unroll
  for (int i = 0; i < AD_GMAX; i++) {
    if (i < gn) {
      const float *qi = qs + i * hd + sl * 8;
      float d = 0.f;
      if (lane_ok) {
#pragma unroll
        for (int e = 0; e < 8; e++) d = fmaf(qi[e], kf[e], d);
      }
      for (int o = lpk / 2; o > 0; o >>= 1) d += __shfl_xor_sync(0xffffffffu, d, o);
      if (j < tn && sl == 0) sc[i * AD_TILE + j] = d;
    }
  }
}

/* acc[i][:] += p_ij * v_j for the block's heads. */
static __device__ __forceinline__ void accumulate_(uint4 vv, int j, int gn, const float *sc, float (*acc)[8]) {
  float vf[8] = {kiln_bf16_lo(vv.x), kiln_bf16_hi(vv.x), kiln_bf16_lo(vv.y), kiln_bf16_hi(vv.y),
                 kiln_bf16_lo(vv.z), kiln_bf16_hi(vv.z), kiln_bf16_lo(vv.w), kiln_bf16_hi(vv.w)};
#pragma unroll
  for (int i = 0; i < AD_GMAX; i++) {
    if (i < gn) {
      float p = sc[i * AD_TILE + j];
#pragma unroll
      for (int e = 0; e < 8; e++) acc[i][e] = fmaf(p, vf[e], acc[i][e]);
    }
  }
}

static __global__ void __launch_bounds__(AD_THREADS)
    attn_split_kernel(uint16_t *out, const float *q, const uint16_t *k_cache, const uint16_t *v_cache,
                      const kiln_cuda_step *step, kiln_cuda_attn_shape sh, int n_splits, float qscale, float *part) {
  __shared__ __align__(16) float qs[AD_GMAX * AD_MAX_HD];
  __shared__ float sc[AD_GMAX * AD_TILE];
  __shared__ __align__(16) float red[AD_GMAX * AD_THREADS * 8];
  __shared__ float m_s[AD_GMAX], l_s[AD_GMAX], al_s[AD_GMAX];
  kiln_pdl_trigger();
  kiln_pdl_wait();
  const int split = blockIdx.x, kh = blockIdx.y;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int hd = sh.head_dim, g = sh.n_heads / sh.n_kv_heads;
  const int g0 = blockIdx.z * AD_GMAX;
  const int gn = min(AD_GMAX, g - g0);
  const int h0 = kh * g + g0; /* first query head of this block */
  const int L = step->pos + 1;
  int chunk = (L + n_splits - 1) / n_splits;
  if (chunk < AD_MIN_CHUNK) chunk = AD_MIN_CHUNK;
  const int c0 = split * chunk, c1 = min(L, c0 + chunk);

  for (int i = threadIdx.x; i < gn * hd; i += AD_THREADS) qs[i] = q[(int64_t)h0 * hd + i] * qscale;
  if (threadIdx.x < AD_GMAX) {
    m_s[threadIdx.x] = -INFINITY;
    l_s[threadIdx.x] = 0.f;
  }
  __syncthreads();

  const int64_t base = ((int64_t)step->seq * sh.n_kv_heads + kh) * sh.n_ctx * hd;
  const uint16_t *K = k_cache + base, *V = v_cache + base;
  const int hd8 = hd / 8;            /* 16-byte vectors per key */
  int lpk = 1;                       /* lanes per key: hd8 rounded up to a power of two */
  while (lpk < hd8) lpk *= 2;
  const int kpw = 32 / lpk;          /* keys per warp step */
  const int sub = lane / lpk, sl = lane % lpk;
  const int nr = AD_THREADS / hd8;   /* key rows accumulated in parallel in the value phase */
  const int vrow = threadIdx.x / hd8, vsl = threadIdx.x % hd8;
  const bool vact = vrow < nr;       /* threads past nr * hd8 sit out the value phase */

  float acc[AD_GMAX][8];
#pragma unroll
  for (int i = 0; i < AD_GMAX; i++)
#pragma unroll
    for (int e = 0; e < 8; e++) acc[i][e] = 0.f;

  for (int t0 = c0; t0 < c1; t0 += AD_TILE) {
    const int tn = min(AD_TILE, c1 - t0);
    const bool lane_ok = sl < hd8;
    /* The tile's keys and values, AD_PRE vectors per thread of each, are all requested before the first is
     * used: one memory latency per tile instead of one per loop step (values load under the scoring). */
    uint4 kreg[AD_PRE], vreg[AD_PRE];
#pragma unroll
    for (int it = 0; it < AD_PRE; it++) {
      const int j = warp * kpw + it * AD_WARPS * kpw + sub;
      kreg[it] = j < tn && lane_ok ? *(const uint4 *)(K + (int64_t)(t0 + j) * hd + sl * 8) : make_uint4(0, 0, 0, 0);
    }
#pragma unroll
    for (int it = 0; it < AD_PRE; it++) {
      const int j = vrow + it * nr;
      vreg[it] = vact && j < tn ? *(const uint4 *)(V + (int64_t)(t0 + j) * hd + vsl * 8) : make_uint4(0, 0, 0, 0);
    }
    /* scores: every lane of a warp runs the same steps, so the shuffles always see the whole warp */
#pragma unroll
    for (int it = 0; it < AD_PRE; it++) {
      const int jb = warp * kpw + it * AD_WARPS * kpw;
      if (jb < tn) score_(kreg[it], jb + sub, tn, lane_ok, sl, lpk, gn, hd, qs, sc);
    }
    for (int jb = warp * kpw + AD_PRE * AD_WARPS * kpw; jb < tn; jb += AD_WARPS * kpw) {
      const int j = jb + sub;
      uint4 kv = j < tn && lane_ok ? *(const uint4 *)(K + (int64_t)(t0 + j) * hd + sl * 8) : make_uint4(0, 0, 0, 0);
      score_(kv, j, tn, lane_ok, sl, lpk, gn, hd, qs, sc);
    }
    __syncthreads();
    /* online softmax: one warp per head */
    for (int i = warp; i < gn; i += AD_WARPS) {
      float s0 = lane < tn ? sc[i * AD_TILE + lane] : -INFINITY;
      float s1 = lane + 32 < tn ? sc[i * AD_TILE + lane + 32] : -INFINITY;
      float mx = kiln_warp_max(fmaxf(s0, s1));
      float m_old = m_s[i], m_new = fmaxf(m_old, mx);
      float p0 = exp2f(s0 - m_new), p1 = exp2f(s1 - m_new);
      if (lane < tn) sc[i * AD_TILE + lane] = p0;
      if (lane + 32 < tn) sc[i * AD_TILE + lane + 32] = p1;
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
    for (int i = 0; i < AD_GMAX; i++) {
      if (i < gn) {
        float al = al_s[i];
#pragma unroll
        for (int e = 0; e < 8; e++) acc[i][e] *= al;
      }
    }
#pragma unroll
    for (int it = 0; it < AD_PRE; it++) {
      const int j = vrow + it * nr;
      if (vact && j < tn) accumulate_(vreg[it], j, gn, sc, acc);
    }
    for (int j = vrow + AD_PRE * nr; vact && j < tn; j += nr)
      accumulate_(*(const uint4 *)(V + (int64_t)(t0 + j) * hd + vsl * 8), j, gn, sc, acc);
    __syncthreads(); /* sc and al_s are rewritten by the next tile */
  }

  /* sum the per-row-group accumulators: red[row][i][hd] */
  float *po = part;                                            /* [n_heads][n_splits][hd] */
  float *pml = part + (int64_t)sh.n_heads * n_splits * hd;     /* [n_heads][n_splits][2] */
  if (c0 < L) { /* a split past the context has no partial: the combine below reads only the first n_act */
#pragma unroll
  for (int i = 0; i < AD_GMAX; i++) {
    if (i < gn && vact) {
#pragma unroll
      for (int e = 0; e < 8; e++) red[((int64_t)vrow * AD_GMAX + i) * hd + vsl * 8 + e] = acc[i][e];
    }
  }
  __syncthreads();
  for (int idx = threadIdx.x; idx < gn * hd; idx += AD_THREADS) {
    int i = idx / hd, d = idx % hd;
    float s = 0.f;
    for (int r = 0; r < nr; r++) s += red[((int64_t)r * AD_GMAX + i) * hd + d];
    po[((int64_t)(h0 + i) * n_splits + split) * hd + d] = s;
  }
  if (threadIdx.x < gn) {
    pml[((int64_t)(h0 + threadIdx.x) * n_splits + split) * 2] = m_s[threadIdx.x];
    pml[((int64_t)(h0 + threadIdx.x) * n_splits + split) * 2 + 1] = l_s[threadIdx.x];
  }
  }

  /* The last block of this (kv head, head group) to finish combines every split's partial (threadFenceReduction
   * pattern): each block's fence makes its partial visible device-wide before its arrival is counted; the last
   * arriver reads the partials through L2 (ld.cg), then re-arms the counter for the next step. */
  __shared__ bool last;
  unsigned *counter = (unsigned *)(pml + (int64_t)sh.n_heads * n_splits * 2) + blockIdx.y * gridDim.z + blockIdx.z;
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) last = atomicAdd(counter, 1u) == (unsigned)n_splits - 1;
  __syncthreads();
  if (!last) return;
  __threadfence();
  /* The combine, spread over the block: the (max, sum) of every active split into shared memory (red is free
   * now), one warp per head turns them into normalised weights, then each thread sums its outputs over splits. */
  const int n_act = min(n_splits, (L + chunk - 1) / chunk);
  float *wsm = red, *lsm = red + AD_GMAX * AD_MAX_SPLITS;
  for (int idx = threadIdx.x; idx < gn * n_act; idx += AD_THREADS) {
    int i = idx / n_act, sp = idx % n_act;
    const float *ml = pml + ((int64_t)(h0 + i) * n_splits + sp) * 2;
    wsm[idx] = __ldcg(ml);
    lsm[idx] = __ldcg(ml + 1);
  }
  __syncthreads();
  for (int i = warp; i < gn; i += AD_WARPS) {
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
  for (int idx = threadIdx.x; idx < gn * hd4; idx += AD_THREADS) {
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
  if (threadIdx.x == 0) *counter = 0u; /* every block of this group has arrived: nobody else touches it now */
}

static int attn_decode_launch(uint16_t *out, const float *q, const uint16_t *k_cache, const uint16_t *v_cache,
                              const kiln_cuda_step *step, const kiln_cuda_attn_shape *sh, int n_splits,
                              float *scratch, cudaStream_t stream) {
  int g = sh->n_heads / sh->n_kv_heads;
  dim3 grid((unsigned)n_splits, (unsigned)sh->n_kv_heads, (unsigned)((g + AD_GMAX - 1) / AD_GMAX));
  float qscale = 1.4426950408889634f / sqrtf((float)sh->head_dim); /* log2(e) / sqrt(head_dim) */
  KILN_CUDA_CHECK(kiln_launch(attn_split_kernel, grid, dim3(AD_THREADS), 0, stream, out, q, k_cache, v_cache, step,
                              *sh, n_splits, qscale, scratch));
  return 0;
}

extern "C" int kiln_cuda_attn_decode_splits(const kiln_cuda_attn_shape *sh, int n_sm) {
  /* about two blocks per SM at the longest context, never chunks shorter than AD_MIN_CHUNK keys */
  int want = (2 * n_sm + sh->n_kv_heads - 1) / sh->n_kv_heads;
  int most = (sh->n_ctx + AD_MIN_CHUNK - 1) / AD_MIN_CHUNK;
  int n = want < most ? want : most;
  if (n > AD_MAX_SPLITS) n = AD_MAX_SPLITS;
  return n < 1 ? 1 : n;
}

static int64_t groups_(const kiln_cuda_attn_shape *sh) {
  int g = sh->n_heads / sh->n_kv_heads;
  return (int64_t)sh->n_kv_heads * ((g + AD_GMAX - 1) / AD_GMAX);
}

extern "C" int64_t kiln_cuda_attn_decode_scratch(const kiln_cuda_attn_shape *sh, int n_splits) {
  return (int64_t)sh->n_heads * n_splits * (sh->head_dim + 2) * (int64_t)sizeof(float) +
         groups_(sh) * (int64_t)sizeof(unsigned);
}

extern "C" int kiln_cuda_attn_decode_init(float *scratch, const kiln_cuda_attn_shape *sh, int n_splits,
                                          cudaStream_t stream) {
  char *counters = (char *)scratch + (int64_t)sh->n_heads * n_splits * (sh->head_dim + 2) * (int64_t)sizeof(float);
  KILN_CUDA_CHECK(cudaMemsetAsync(counters, 0, (size_t)groups_(sh) * sizeof(unsigned), stream));
  return 0;
}

extern "C" int kiln_cuda_attn_decode(uint16_t *out, const float *q, const uint16_t *k_cache, const uint16_t *v_cache,
                                     const kiln_cuda_step *step, const kiln_cuda_attn_shape *sh, int n_splits,
                                     float *scratch, cudaStream_t stream) {
  int hd = sh->head_dim;
  if (hd <= 0 || hd % 8 || hd > AD_MAX_HD || sh->n_kv_heads <= 0 ||
      sh->n_heads % sh->n_kv_heads || n_splits < 1 || n_splits > AD_MAX_SPLITS || sh->n_ctx <= 0)
    return kiln_error(KILN_EUNSUPPORTED, "cuda attention: head_dim %d, %d heads over %d kv heads not supported", hd,
                      sh->n_heads, sh->n_kv_heads);
  return attn_decode_launch(out, q, k_cache, v_cache, step, sh, n_splits, scratch, stream);
}
