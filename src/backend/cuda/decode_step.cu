/*
 * backend/cuda/decode_step.cu: the persistent decode kernel (see decode_step.h).
 *
 * Block = 384 threads (12 warps), one per SM. In a GEMV phase every warp of the grid owns row pairs of the
 * phase's matrix (pair i to warp i mod (12 x blocks), spread so that small matrices still use every SM), and each
 * block first builds the bf16 input vector in shared memory (RMSNorm of the residual stream, or the bf16 output
 * of the previous phase). In the attention phase a block runs one attention unit at a time with all its threads,
 * units assigned round-robin over the grid with the key split varying fastest, so the few active splits of a
 * short context land on different SMs.
 *
 * Memory: weights are streamed (ld.global.nc, no L1); everything another block wrote during this launch (the
 * residual stream, q/k/v, the bf16 activations, attention partials) is read through L2 (ld.global.cg), because
 * an SM's L1 is not coherent with the others. The grid barrier is the sense-reversal counter of cooperative
 * groups: one atomic per block, block 0 adds 2^31 - (blocks - 1) and the others 1, so the top bit flips once
 * everyone has arrived and the counter needs no reset between steps.
 */
#include "backend/cuda/attn_decode_dev.cuh"
#include "backend/cuda/cuda_common.h"
#include "backend/cuda/decode_step.h"
#include "backend/cuda/gemv_dev.cuh"
#include "backend/cuda/rope_dev.cuh"

/* 12 warps: 168 registers a thread, so a warp's two chunks of loads in flight never spill (at 16 warps, 128
 * registers, they did, and a spilled load must land before it is stored: the stream stalls). KILN_DS_THREADS
 * overrides it at build time (tuning only). */
#ifndef KILN_DS_THREADS
#define KILN_DS_THREADS 384
#endif
#define DS_THREADS KILN_DS_THREADS
#define DS_WARPS (DS_THREADS / 32)
#define DS_GMAX KILN_AD_GMIN                    /* query heads per attention unit */
#define DS_KEEP 4                               /* float4 of the residual stream a thread keeps for the norm */

typedef kiln_attn_smem<DS_GMAX, DS_THREADS> ds_attn_smem;

/* The GEMV phases' shared memory; the attention phase reuses the same bytes as a ds_attn_smem. */
typedef struct ds_gemv_smem {
  float red[DS_WARPS];
  unsigned long long best[DS_WARPS];
  uint4 xs[1]; /* [k / 8]: the input vector as bf16 (sized at launch) */
} ds_gemv_smem;

static __device__ __forceinline__ unsigned ld_acquire_(const unsigned *p) {
  unsigned v;
  asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
  return v;
}

/* The thread that arrives and waits for its block: lane 0 of the last warp, which issues no weight loads before a
 * barrier (a release waits for the thread's outstanding loads, which would put a memory latency on every
 * barrier). */
#define DS_BARRIER_THREAD (DS_THREADS - 32)

/* Every block arrives, then waits until all have: writes before are visible to reads after (device scope). */
static __device__ __forceinline__ void grid_sync_(unsigned *bar, unsigned long long *prof) {
  __syncthreads();
  if (threadIdx.x == DS_BARRIER_THREAD) {
    const unsigned inc = blockIdx.x == 0 ? 0x80000000u - (gridDim.x - 1) : 1u;
    const long long t0 = prof && blockIdx.x == 0 ? clock64() : 0;
    /* release: the block's writes (ordered before by the __syncthreads above) are visible to whoever acquires
     * the flipped counter; acquire: what the other blocks wrote before their release is visible here */
    unsigned old;
    asm volatile("atom.add.release.gpu.global.u32 %0, [%1], %2;" : "=r"(old) : "l"(bar), "r"(inc) : "memory");
    while (((old ^ ld_acquire_(bar)) & 0x80000000u) == 0) {
    }
    if (prof && blockIdx.x == 0) {
      const unsigned long long k = prof[0];
      if (5 + 2 * k + 1 < KILN_CUDA_DS_PROF_WORDS) {
        prof[5 + 2 * k] = (unsigned long long)t0;
        prof[6 + 2 * k] = (unsigned long long)clock64();
      }
      prof[0] = k + 1;
    }
  }
  __syncthreads();
}

static __device__ __forceinline__ unsigned long long globaltimer_(void) {
  unsigned long long t;
  asm volatile("mov.u64 %0, %globaltimer;" : "=l"(t));
  return t;
}

/* The block's input vector for a GEMV: bf16 x_bf16 copied, or RMSNorm(x_f32) * norm_w rounded to bf16. */
static __device__ __forceinline__ void load_input_(ds_gemv_smem *sm, int64_t K, const uint16_t *x_bf16,
                                                   const float *x_f32, const float *norm_w, float eps) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int64_t K8 = K / 8;
  if (x_bf16) {
    const uint4 *src = (const uint4 *)x_bf16;
    for (int64_t i = threadIdx.x; i < K8; i += DS_THREADS) sm->xs[i] = __ldcg(src + i);
  } else {
    /* K is a multiple of 8: float4 loads, kept in registers for the second pass up to K = 4 x 4 x DS_THREADS */
    const float4 *src = (const float4 *)x_f32;
    const int64_t K4 = K / 4;
    float ss = 0.f;
    float4 keep[DS_KEEP];
#pragma unroll
    for (int j = 0; j < DS_KEEP; j++) {
      const int64_t i = threadIdx.x + (int64_t)j * DS_THREADS;
      keep[j] = i < K4 ? __ldcg(src + i) : make_float4(0.f, 0.f, 0.f, 0.f);
    }
#pragma unroll
    for (int j = 0; j < DS_KEEP; j++) {
      const float4 v = keep[j];
      ss = fmaf(v.x, v.x, fmaf(v.y, v.y, fmaf(v.z, v.z, fmaf(v.w, v.w, ss))));
    }
    for (int64_t i = threadIdx.x + (int64_t)DS_KEEP * DS_THREADS; i < K4; i += DS_THREADS) {
      float4 v = __ldcg(src + i);
      ss = fmaf(v.x, v.x, fmaf(v.y, v.y, fmaf(v.z, v.z, fmaf(v.w, v.w, ss))));
    }
    ss = kiln_warp_sum(ss);
    if (lane == 0) sm->red[warp] = ss;
    __syncthreads();
    float tot = 0.f;
    for (int i = 0; i < DS_WARPS; i++) tot += sm->red[i];
    const float inv = rsqrtf(tot / (float)K + eps);
    uint2 *xh = (uint2 *)sm->xs;
    for (int64_t i = threadIdx.x; i < K4; i += DS_THREADS) {
      const int j = (int)((i - threadIdx.x) / DS_THREADS);
      float4 v = j < DS_KEEP ? keep[j < DS_KEEP ? j : 0] : __ldcg(src + i);
      float4 w = ((const float4 *)norm_w)[i];
      xh[i] = make_uint2(kiln_pack_bf16x2(w.x * (v.x * inv), w.y * (v.y * inv)),
                         kiln_pack_bf16x2(w.z * (v.z * inv), w.w * (v.w * inv)));
    }
  }
  __syncthreads();
}

enum { DS_STORE, DS_ADD, DS_SWIGLU, DS_ARGMAX };

/* One GEMV of the step: y (+)= W x with x the bf16 x_bf16, or RMSNorm(x_f32) * norm_w. */
typedef struct ds_gemv {
  const uint16_t *w;
  int64_t n_rows, k;
  const uint16_t *x_bf16;
  const float *x_f32, *norm_w;
  float *y;            /* STORE, ADD, ARGMAX */
  const float *bias;   /* STORE, ADD, or NULL */
  uint16_t *y_bf16;    /* SWIGLU */
  int mode;
} ds_gemv;

/* One GEMV phase: the warp's first chunk is issued, then the grid barrier (the input is another phase's output),
 * then the input vector and the row loop. One function for every mode (the mode is a runtime value): the four
 * GEMVs of a layer run the same instructions, which stay in the instruction cache. */
static __device__ __noinline__ void gemv_phase_(ds_gemv_smem *sm, const kiln_cuda_decode_args &a, const ds_gemv &g) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const kiln_gemv_mat m = {g.w, g.n_rows, g.k / 8};
  const int64_t p0 = (int64_t)warp * gridDim.x + blockIdx.x, pstride = (int64_t)gridDim.x * DS_WARPS;
  uint4 ca[KILN_GEMV_UNROLL], cb[KILN_GEMV_UNROLL];
  const bool barrier_warp = warp == DS_BARRIER_THREAD / 32;
  if (!barrier_warp) {
    kiln_gemv_first(m, p0, lane, ca, cb);
    kiln_gemv_prefetch_first(m, p0, pstride, a.prefetch, lane);
  }
  grid_sync_(a.barrier, a.prof);
  if (barrier_warp) kiln_gemv_first(m, p0, lane, ca, cb);
  load_input_(sm, g.k, g.x_bf16, g.x_f32, g.norm_w, a.eps);
  unsigned long long best = 0ull;
  kiln_gemv_walk(m, sm->xs, p0, pstride, lane, ca, cb, a.prefetch, [&](int64_t p, float y0, float y1) {
    if (lane) return;
    const int64_t r0 = 2 * p;
    const bool two = r0 + 1 < g.n_rows;
    switch (g.mode) {
    case DS_SWIGLU: g.y_bf16[p] = kiln_f32_to_bf16_dev(kiln_silu_mul(y0, y1)); break;
    case DS_STORE:
      g.y[r0] = y0 + (g.bias ? g.bias[r0] : 0.f);
      if (two) g.y[r0 + 1] = y1 + (g.bias ? g.bias[r0 + 1] : 0.f);
      break;
    case DS_ADD: /* the residual stream: another block wrote it, read through L2 */
      g.y[r0] = __ldcg(g.y + r0) + (y0 + (g.bias ? g.bias[r0] : 0.f));
      if (two) g.y[r0 + 1] = __ldcg(g.y + r0 + 1) + (y1 + (g.bias ? g.bias[r0 + 1] : 0.f));
      break;
    default: {
      g.y[r0] = y0;
      unsigned long long b = kiln_pack_argmax(y0, r0);
      if (two) {
        g.y[r0 + 1] = y1;
        unsigned long long b1 = kiln_pack_argmax(y1, r0 + 1);
        b = b1 > b ? b1 : b;
      }
      best = b > best ? b : best;
    }
    }
  });
  if (g.mode == DS_ARGMAX) {
    if (lane == 0) sm->best[warp] = best;
    __syncthreads();
    if (threadIdx.x == 0) {
      unsigned long long b = 0ull;
      for (int i = 0; i < DS_WARPS; i++) b = sm->best[i] > b ? sm->best[i] : b;
      if (b) atomicMax(a.argmax, b);
    }
  }
}

/* The attention phase: q/k norm, RoPE and the KV store of the new token, then split-KV attention into hbuf. */
static __device__ __noinline__ void attention_phase_(ds_attn_smem *sp, const kiln_cuda_decode_args &a,
                                                     const kiln_cuda_layer &L, int seq, int pos, float qscale) {
  const kiln_cuda_attn_shape &sh = a.shape;
  ds_attn_smem &s = *sp;
  const int g = sh.n_heads / sh.n_kv_heads, n_gz = (g + DS_GMAX - 1) / DS_GMAX;
  const int Lk = pos + 1, n_act = kiln_attn_active(Lk, a.n_splits);
  const int n_units = n_act * sh.n_kv_heads * n_gz; /* only splits that hold keys: the others have no work */
  for (int ui = blockIdx.x; ui < n_units; ui += gridDim.x) {
    kiln_attn_unit u;
    u.split = ui % n_act;
    u.kh = (ui / n_act) % sh.n_kv_heads;
    u.gz = ui / (n_act * sh.n_kv_heads);
    u.n_splits = a.n_splits;
    u.n_gz = n_gz;
    u.seq = seq;
    u.L = Lk;
    kiln_attn_unit_first<DS_GMAX, DS_THREADS>(s, u, L.k_cache, L.v_cache, sh);
    const kiln_attn_token t = {a.qkv, L.q_norm, L.k_norm, a.rope, a.eps, qscale};
    kiln_attn_unit_prologue<DS_GMAX, DS_THREADS>(s, u, t, L.k_cache, L.v_cache, sh);
    kiln_attn_unit_run<DS_GMAX, DS_THREADS>(s, u, a.hbuf, L.k_cache, L.v_cache, sh, a.part);
  }
}

static __global__ void __launch_bounds__(DS_THREADS, 1) decode_step_kernel(kiln_cuda_decode_args a) {
  extern __shared__ __align__(16) unsigned char ds_smem[];
  ds_gemv_smem *gs = (ds_gemv_smem *)ds_smem;
  ds_attn_smem *att = (ds_attn_smem *)ds_smem;
  const int64_t H = a.hidden, I = a.inter, nq = (int64_t)a.shape.n_heads * a.shape.head_dim;
  const int seq = a.step->seq, pos = a.step->pos, token = a.step->token;
  const float qscale = 1.4426950408889634f / sqrtf((float)a.shape.head_dim); /* log2(e) / sqrt(head_dim) */

  if (a.prof && blockIdx.x == 0 && threadIdx.x == 0) {
    a.prof[0] = 0;
    a.prof[1] = (unsigned long long)clock64();
    a.prof[3] = globaltimer_();
  }
  /* the embedding row into the residual stream; the argmax cell is cleared long before the lm_head */
  {
    /* an id outside the vocabulary gives NaN logits, as the embedding kernel does, never a wild read */
    const bool ok = token >= 0 && token < a.vocab;
    const uint16_t *row = a.embed + (ok ? (int64_t)token * H : 0);
    for (int64_t i = (int64_t)blockIdx.x * DS_THREADS + threadIdx.x; i < H; i += (int64_t)gridDim.x * DS_THREADS)
      a.x[i] = ok ? kiln_bf16_to_f32_dev(row[i]) : __int_as_float(0x7fc00000);
    if (blockIdx.x == 0 && threadIdx.x == 0) *a.argmax = 0ull;
  }
  for (int l = 0; l < a.n_layers; l++) {
    const kiln_cuda_layer L = a.layers[l];
    gemv_phase_(gs, a, {L.wqkv, a.qkv_dim, H, NULL, a.x, L.attn_norm, a.qkv, L.bqkv, NULL, DS_STORE});
    grid_sync_(a.barrier, a.prof);
    attention_phase_(att, a, L, seq, pos, qscale);
    gemv_phase_(gs, a, {L.wo, H, nq, a.hbuf, NULL, NULL, a.x, L.bo, NULL, DS_ADD});
    gemv_phase_(gs, a, {L.wgu, 2 * I, H, NULL, a.x, L.ffn_norm, NULL, NULL, a.hbuf, DS_SWIGLU});
    gemv_phase_(gs, a, {L.wdown, H, I, a.hbuf, NULL, NULL, a.x, NULL, NULL, DS_ADD});
  }
  gemv_phase_(gs, a, {a.lm_head, a.vocab, H, NULL, a.x, a.final_norm, a.logits, NULL, NULL, DS_ARGMAX});
  if (a.prof && blockIdx.x == 0 && threadIdx.x == 0) {
    a.prof[2] = (unsigned long long)clock64();
    a.prof[4] = globaltimer_();
  }
}

static size_t smem_bytes_(const kiln_cuda_decode_args *a) {
  const int64_t nq = (int64_t)a->shape.n_heads * a->shape.head_dim;
  int64_t k = a->hidden > nq ? a->hidden : nq;
  k = k > a->inter ? k : a->inter;
  size_t gemv = sizeof(ds_gemv_smem) + (size_t)k * 2;
  size_t attn = sizeof(ds_attn_smem);
  return gemv > attn ? gemv : attn;
}

extern "C" int kiln_cuda_decode_step_prepare(kiln_cuda_decode_args *a, int *blocks) {
  static size_t smem_set[KILN_CUDA_MAX_DEVICES];
  const kiln_cuda_attn_shape *sh = &a->shape;
  *blocks = 0;
  if (sh->head_dim <= 0 || sh->head_dim % 8 || sh->head_dim > KILN_AD_MAX_HD || sh->n_kv_heads <= 0 ||
      sh->n_heads % sh->n_kv_heads || a->n_splits < 1 || a->n_splits > KILN_AD_MAX_SPLITS || a->hidden % 8 ||
      a->inter % 8 || a->n_layers <= 0)
    return kiln_error(KILN_EUNSUPPORTED, "cuda decode kernel: shape not supported");
  int dev = 0, n_sm = 0, coop = 0, occ = 0;
  KILN_CUDA_CHECK(cudaGetDevice(&dev));
  KILN_CUDA_CHECK(cudaDeviceGetAttribute(&n_sm, cudaDevAttrMultiProcessorCount, dev));
  KILN_CUDA_CHECK(cudaDeviceGetAttribute(&coop, cudaDevAttrCooperativeLaunch, dev));
  if (!coop) return kiln_error(KILN_EUNSUPPORTED, "cuda decode kernel: device has no cooperative launch");
  /* one round of attention units over the grid at the longest context: a block runs one unit at a time */
  const int g = sh->n_heads / sh->n_kv_heads, groups = sh->n_kv_heads * ((g + DS_GMAX - 1) / DS_GMAX);
  const int one_round = n_sm / groups > 1 ? n_sm / groups : 1;
  if (a->n_splits > one_round) a->n_splits = one_round;
  size_t smem = smem_bytes_(a);
  int rc = kiln_cuda__allow_smem((const void *)decode_step_kernel, smem, smem_set, 0);
  if (rc) return rc;
  KILN_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&occ, decode_step_kernel, DS_THREADS, smem));
  if (occ < 1) return kiln_error(KILN_EUNSUPPORTED, "cuda decode kernel: does not fit on an SM");
  *blocks = n_sm;
  return 0;
}

extern "C" int kiln_cuda_decode_step(const kiln_cuda_decode_args *a, int blocks, cudaStream_t stream) {
  cudaLaunchConfig_t cfg = {};
  cudaLaunchAttribute at[1];
  at[0].id = cudaLaunchAttributeCooperative;
  at[0].val.cooperative = 1;
  cfg.gridDim = dim3((unsigned)blocks);
  cfg.blockDim = dim3(DS_THREADS);
  cfg.dynamicSmemBytes = smem_bytes_(a);
  cfg.stream = stream;
  cfg.attrs = at;
  cfg.numAttrs = 1;
  KILN_CUDA_CHECK(cudaLaunchKernelEx(&cfg, decode_step_kernel, *a));
  return 0;
}
