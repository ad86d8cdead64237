/*
 * backend/cuda/attn_decode.cu: q/k norm, RoPE, the KV store and split-KV decode attention (see attn_decode.h) as
 * one kernel: one block of 128 or 256 threads per unit (split, kv head, group of up to 8 query heads), only the
 * splits that hold keys doing anything; the unit itself is attn_decode_dev.cuh, which the persistent decode
 * kernel runs too. When the splits fit a thread-block cluster (sm_90: up to 16 blocks), the units of a (kv head,
 * head group) are launched as one cluster and combine through distributed shared memory.
 */
#include <stdlib.h>
#include <string.h>

#include "backend/cuda/attn_decode.h"
#include "backend/cuda/attn_decode_dev.cuh"
#include "backend/cuda/cuda_common.h"

/* threads a block, 128 or 256 (threads_mode_ below): with 256 the unit's score and value loops take half the steps a
 * warp, its prologue the same */

/* GMAX: query heads a unit computes, the power of two covering the heads per kv head (at most 8; more heads make
 * more head groups). CLUSTER: the n_splits units of a (kv head, head group) are one thread-block cluster and
 * combine their partials through distributed shared memory; otherwise through the global scratch and an arrival
 * counter. Shared memory is dynamic: the tile buffers put it past the 48 KB of a static array. */
/* Thread 0's timeline into the profile (kiln_cuda_attn_decode_args.prof); out of line so the kernel's hot code
 * stays as it is without it. */
static __device__ __noinline__ void attn_prof_store_(unsigned long long *prof, const long long *tl,
                                                     unsigned long long g0) {
  const unsigned blk = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
  if (blk >= KILN_AD_PROF_WORDS / 8) return;
  unsigned long long g1;
  const long long t4 = clock64();
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(g1));
  unsigned long long *w = prof + 8 * (size_t)blk;
  for (int i = 0; i < 4; i++) w[i] = (unsigned long long)tl[i];
  w[4] = (unsigned long long)t4;
  w[5] = g0;
  w[6] = g1;
  w[7] = 1;
}

static __device__ __forceinline__ void l2_prefetch_(const kiln_cuda_attn_decode_args &a) {
  kiln_l2_prefetch_share(a.l2_next[0], a.l2_next_bytes[0]);
  kiln_l2_prefetch_share(a.l2_next[1], a.l2_next_bytes[1]);
}

template <int GMAX, bool CLUSTER, int THREADS>
static __global__ void __launch_bounds__(THREADS) attn_decode_kernel(kiln_cuda_attn_decode_args a, float qscale) {
  extern __shared__ uint4 ad_smem[];
  kiln_attn_smem<GMAX, THREADS> &s = *(kiln_attn_smem<GMAX, THREADS> *)ad_smem;
  kiln_pdl_trigger();
  long long tl[5];
  unsigned long long g0 = 0;
  const bool prof = a.prof && threadIdx.x == 0;
  if (prof) {
    tl[0] = clock64();
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(g0));
  }
  /* The step (slot, position) was written by the graph's first node, before any kernel of the step started, so
   * it and the cache rows of earlier steps can be read before the wait. */
  kiln_attn_unit u = {(int)blockIdx.x, (int)blockIdx.y, (int)blockIdx.z, a.n_splits, (int)gridDim.z, a.step->seq,
                      a.step->pos + 1};
  const bool active = u.split < kiln_attn_active(u.L, u.n_splits);
  /* The L2 prefetch of the next GEMVs' weights (constant: no wait needed), by every block, idle splits too: at
   * entry (l2_at 0), where it competes with the q/k/v GEMV's tail and this kernel's first loads; or once the
   * block's own loads are out (1: after the prologue, 2: after the tiles; idle blocks after the wait). */
  const int l2_at = a.l2_at;
  if (l2_at == 0) l2_prefetch_(a);
  if (!CLUSTER && !active) { /* no keys: no partial, no arrival */
    if (l2_at) kiln_pdl_wait(), l2_prefetch_(a);
    return;
  }
  const kiln_attn_token t = {a.qkv, a.q_norm, a.k_norm, a.rope, a.eps, qscale, a.rope_vec};
  kiln_attn_pre pre;
  if (active) {
    kiln_attn_unit_first<GMAX, THREADS>(s, u, a.k_cache, a.v_cache, a.shape);
    pre = kiln_attn_unit_pre<GMAX>(u, t, a.shape);
  }
  kiln_pdl_wait();
  if (prof) tl[1] = clock64();
  if (active) {
    kiln_attn_unit_prologue<GMAX, THREADS>(s, u, t, a.k_cache, a.v_cache, a.shape, &pre);
    if (prof) tl[2] = clock64();
    if (l2_at == 1) l2_prefetch_(a);
    if (CLUSTER)
      kiln_attn_unit_tiles<GMAX, THREADS>(s, u, a.k_cache, a.v_cache, a.shape, (float *)s.kt, a.shape.head_dim);
    else
      kiln_attn_unit_run<GMAX, THREADS>(s, u, a.out, a.k_cache, a.v_cache, a.shape, a.scratch);
    if (l2_at == 2) l2_prefetch_(a);
  } else {
    if (prof) tl[2] = clock64();
    if (l2_at) l2_prefetch_(a);
  }
  if (prof) tl[3] = clock64();
  if (CLUSTER) kiln_attn_cluster_combine<GMAX, THREADS>(s, u, a.out, a.shape, a.relaxed_end);
  if (prof) attn_prof_store_(a.prof, tl, g0);
}

/* Where the cluster combine is used (kiln_cuda_attn_decode_cluster): -1 until first asked, then
 * KILN_CUDA_ATTN_CLUSTER (unset or short: launches that ask for it; 1: everywhere, with the splits capped at the
 * cluster size; 0: never; other values are refused at backend creation, kiln_cuda_attn_decode_cluster_env) or
 * what kiln_cuda_attn_decode_cluster set. */
static int cluster_mode_ = -1;
extern "C" int kiln_cuda_attn_decode_cluster_env(const char *e) {
  if (!e || !*e || !strcmp(e, "short")) return KILN_CUDA_ATTN_CLUSTER_SHORT;
  if (!strcmp(e, "0")) return KILN_CUDA_ATTN_CLUSTER_OFF;
  if (!strcmp(e, "1")) return KILN_CUDA_ATTN_CLUSTER_ALL;
  return -1;
}
extern "C" int kiln_cuda_attn_decode_cluster_mode(void) {
  if (cluster_mode_ < 0) {
    const int m = kiln_cuda_attn_decode_cluster_env(getenv("KILN_CUDA_ATTN_CLUSTER"));
    cluster_mode_ = m < 0 ? KILN_CUDA_ATTN_CLUSTER_SHORT : m;
  }
  return cluster_mode_;
}
static int cluster_allowed_(void) { return kiln_cuda_attn_decode_cluster_mode() == KILN_CUDA_ATTN_CLUSTER_ALL; }
extern "C" void kiln_cuda_attn_decode_cluster(int mode) {
  const bool known = mode == KILN_CUDA_ATTN_CLUSTER_ALL || mode == KILN_CUDA_ATTN_CLUSTER_SHORT;
  cluster_mode_ = known ? mode : KILN_CUDA_ATTN_CLUSTER_OFF;
}

/* The largest cluster the GMAX kernel launches with on the current device (0: the device has no clusters), found
 * once per device: 16 needs the non-portable attribute, and the kernel's shared memory decides how many units a
 * GPC holds. */
template <int GMAX, int THREADS>
static int cluster_max_(int *cmax) {
  static int known[KILN_CUDA_MAX_DEVICES]; /* the answer + 1; 0: not asked yet */
  static size_t smem_set[KILN_CUDA_MAX_DEVICES];
  int dev = 0;
  KILN_CUDA_CHECK(cudaGetDevice(&dev));
  if (dev < KILN_CUDA_MAX_DEVICES && known[dev]) {
    *cmax = known[dev] - 1;
    return 0;
  }
  int major = 0, c = 0;
  KILN_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
  if (major >= 9) {
    const size_t smem = sizeof(kiln_attn_smem<GMAX, THREADS>);
    int rc = kiln_cuda__allow_smem((const void *)attn_decode_kernel<GMAX, true, THREADS>, smem, smem_set, 0);
    if (rc) return rc;
    KILN_CUDA_CHECK(cudaFuncSetAttribute(attn_decode_kernel<GMAX, true, THREADS>,
                                         cudaFuncAttributeNonPortableClusterSizeAllowed, 1));
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = dim3(KILN_AD_MAX_CLUSTER, 1, 1);
    cfg.blockDim = dim3(THREADS);
    cfg.dynamicSmemBytes = smem;
    KILN_CUDA_CHECK(cudaOccupancyMaxPotentialClusterSize(&c, attn_decode_kernel<GMAX, true, THREADS>, &cfg));
    if (c > KILN_AD_MAX_CLUSTER) c = KILN_AD_MAX_CLUSTER;
    if (c < 0) c = 0;
  }
  if (dev < KILN_CUDA_MAX_DEVICES) known[dev] = c + 1;
  *cmax = c;
  return 0;
}

/* Whether a launch combines inside clusters (where its splits fit one): asked for, or every launch in mode ALL. */
static bool clustered_(const kiln_cuda_attn_decode_args *a) {
  return kiln_cuda_attn_decode_cluster_mode() != KILN_CUDA_ATTN_CLUSTER_OFF && (cluster_allowed_() || a->cluster);
}

template <int GMAX, int THREADS>
static int attn_decode_launch(const kiln_cuda_attn_decode_args *a, float qscale, cudaStream_t stream) {
  static size_t smem_set[KILN_CUDA_MAX_DEVICES];
  const size_t smem = sizeof(kiln_attn_smem<GMAX, THREADS>);
  const kiln_cuda_attn_shape *sh = &a->shape;
  const int g = sh->n_heads / sh->n_kv_heads;
  dim3 grid((unsigned)a->n_splits, (unsigned)sh->n_kv_heads, (unsigned)((g + GMAX - 1) / GMAX));
  int cmax = 0, rc;
  const bool cluster = clustered_(a);
  if (cluster && (rc = cluster_max_<GMAX, THREADS>(&cmax))) return rc;
  if (cluster && a->n_splits <= cmax) {
    KILN_CUDA_CHECK(kiln_launch_cluster(attn_decode_kernel<GMAX, true, THREADS>, grid, dim3(THREADS), smem,
                                        stream, (unsigned)a->n_splits, *a, qscale));
    return 0;
  }
  if ((rc = kiln_cuda__allow_smem((const void *)attn_decode_kernel<GMAX, false, THREADS>, smem, smem_set, 0)))
    return rc;
  KILN_CUDA_CHECK(
      kiln_launch(attn_decode_kernel<GMAX, false, THREADS>, grid, dim3(THREADS), smem, stream, *a, qscale));
  return 0;
}

extern "C" int kiln_cuda_attn_decode_short_keys(int n_splits) { return KILN_AD_MIN_CHUNK * n_splits; }

/* The query heads a unit computes (GMAX): the power of two covering a kv head's q heads, at most 8 where the
 * splits combine through global memory (the main graphs), at most 2 where they combine inside a thread-block
 * cluster (the short-context graphs); KILN_CUDA_ATTN_GROUP=N (1, 2, 4 or 8; unset or auto: those defaults; other
 * values are refused at backend creation, kiln_cuda_attn_decode_group_env) caps both at N. A smaller group gives a kv
 * head more units, each with fewer heads: shorter score and value loops a warp, and the same keys read by every
 * group. Measured on an H100 at 4B and 8B (4 q heads a kv head; docs/cuda.md): 2 heads a unit in blocks of 256
 * threads were 1.4% and 1.2% faster at context 128, but at 2,048 in the main graphs, with half the splits a group,
 * 6.2% and 3.8% slower. Read at first use, like the cluster mode. */
static int group_ = -1;
extern "C" int kiln_cuda_attn_decode_group_env(const char *e) {
  if (!e || !*e || !strcmp(e, "auto")) return 0;
  for (int v = 1; v <= 8; v *= 2)
    if (e[0] == '0' + v && !e[1]) return v;
  return -1;
}
static int gmax_(int g, bool clustered) {
  if (group_ < 0) {
    const int v = kiln_cuda_attn_decode_group_env(getenv("KILN_CUDA_ATTN_GROUP"));
    group_ = v < 0 ? 0 : v;
  }
  int p = 1;
  while (p < g && p < 8) p *= 2;
  const int cap = group_ ? group_ : clustered ? 2 : 8;
  return p < cap ? p : cap;
}

/* The block size (KILN_CUDA_ATTN_THREADS: unset or auto, 128 or 256; other values are refused at backend
 * creation, kiln_cuda_attn_decode_threads_env), read at first use like the cluster mode. Auto: 256 threads where a
 * unit has at most 2 q heads, 128 otherwise. Measured on an H100 (docs/cuda.md): 256 is 2-9% faster at 0.6B and
 * 1.7B (2 q heads a kv head), up to 8% slower at 4B and 8B (4) at context 128. */
static int threads_ = -1;
extern "C" int kiln_cuda_attn_decode_threads_env(const char *e) {
  if (!e || !*e || !strcmp(e, "auto")) return 0;
  if (!strcmp(e, "128")) return 128;
  if (!strcmp(e, "256")) return 256;
  return -1;
}
static int threads_mode_(int gm) {
  if (threads_ < 0) {
    const int t = kiln_cuda_attn_decode_threads_env(getenv("KILN_CUDA_ATTN_THREADS"));
    threads_ = t < 0 ? 0 : t;
  }
  return threads_ ? threads_ : gm <= 2 ? 256 : 128;
}

template <int T>
static int cluster_max_t_(int gm, int *cmax) {
  if (gm <= 1) return cluster_max_<1, T>(cmax);
  if (gm <= 2) return cluster_max_<2, T>(cmax);
  if (gm <= 4) return cluster_max_<4, T>(cmax);
  return cluster_max_<8, T>(cmax);
}

extern "C" int kiln_cuda_attn_decode_cluster_max(const kiln_cuda_attn_shape *sh, int *cmax) {
  const int gm = gmax_(sh->n_heads / sh->n_kv_heads, true);
  return threads_mode_(gm) == 256 ? cluster_max_t_<256>(gm, cmax) : cluster_max_t_<128>(gm, cmax);
}

/* Head groups the splits are shared out over: kv heads x groups of min(GMAX, KILN_AD_GMIN) heads (the persistent
 * kernel's units have KILN_AD_GMIN), GMAX as the main graphs launch it. */
static int64_t groups_(const kiln_cuda_attn_shape *sh) {
  const int g = sh->n_heads / sh->n_kv_heads, gm = gmax_(g, false), per = gm < KILN_AD_GMIN ? gm : KILN_AD_GMIN;
  return (int64_t)sh->n_kv_heads * ((g + per - 1) / per);
}

extern "C" int kiln_cuda_attn_decode_splits(const kiln_cuda_attn_shape *sh, int n_sm, int *n_splits) {
  /* at most two units per SM at the longest context (rounded down: a unit past them would run in a second wave,
   * as 16 head groups x 17 splits did on 132 SMs), never chunks shorter than KILN_AD_MIN_CHUNK keys
   * (KILN_CUDA_ATTN_UNITS=N: N units per SM instead; tuning only) */
  if (sh->n_kv_heads <= 0 || sh->n_heads < sh->n_kv_heads || sh->n_ctx <= 0)
    return kiln_error(KILN_EINVAL, "cuda attention: bad shape (%d heads over %d kv heads)", sh->n_heads,
                      sh->n_kv_heads);
  const char *e = getenv("KILN_CUDA_ATTN_UNITS");
  const int per_sm = e && atoi(e) > 0 ? atoi(e) : 2;
  const int groups = (int)groups_(sh);
  int want = per_sm * n_sm / groups;
  int most = (sh->n_ctx + KILN_AD_MIN_CHUNK - 1) / KILN_AD_MIN_CHUNK;
  int n = want < most ? want : most;
  if (n > KILN_AD_MAX_SPLITS) n = KILN_AD_MAX_SPLITS;
  /* With the cluster combine, up to KILN_AD_CLUSTER_CTX keys of context, no more splits than a cluster holds: the
   * expectation (docs/cuda.md, to be measured) is that an on-chip combine saves more than the extra splits would. */
  if (cluster_allowed_() && sh->n_ctx <= KILN_AD_CLUSTER_CTX) {
    int cmax = 0;
    int rc = kiln_cuda_attn_decode_cluster_max(sh, &cmax);
    if (rc) return rc;
    if (cmax > 1 && n > cmax) n = cmax;
  }
  *n_splits = n < 1 ? 1 : n;
  return 0;
}

extern "C" int64_t kiln_cuda_attn_decode_scratch(const kiln_cuda_attn_shape *sh, int n_splits) {
  return (int64_t)sh->n_heads * n_splits * (sh->head_dim + 2) * (int64_t)sizeof(float) +
         (int64_t)sh->n_heads * (int64_t)sizeof(unsigned); /* a counter a head: as many as groups of any size */
}

extern "C" int kiln_cuda_attn_decode_init(float *scratch, const kiln_cuda_attn_shape *sh, int n_splits,
                                          cudaStream_t stream) {
  char *counters = (char *)scratch + (int64_t)sh->n_heads * n_splits * (sh->head_dim + 2) * (int64_t)sizeof(float);
  KILN_CUDA_CHECK(cudaMemsetAsync(counters, 0, (size_t)sh->n_heads * sizeof(unsigned), stream));
  return 0;
}

template <int T>
static int launch_t_(const kiln_cuda_attn_decode_args *a, int gm, float qscale, cudaStream_t stream) {
  if (gm <= 1) return attn_decode_launch<1, T>(a, qscale, stream);
  if (gm <= 2) return attn_decode_launch<2, T>(a, qscale, stream);
  if (gm <= 4) return attn_decode_launch<4, T>(a, qscale, stream);
  return attn_decode_launch<8, T>(a, qscale, stream);
}

extern "C" int kiln_cuda_attn_decode(const kiln_cuda_attn_decode_args *a, cudaStream_t stream) {
  const kiln_cuda_attn_shape *sh = &a->shape;
  const int hd = sh->head_dim;
  if (hd <= 0 || hd % 8 || hd > KILN_AD_MAX_HD || sh->n_kv_heads <= 0 || sh->n_heads % sh->n_kv_heads ||
      a->n_splits < 1 || a->n_splits > KILN_AD_MAX_SPLITS || sh->n_ctx <= 0)
    return kiln_error(KILN_EUNSUPPORTED, "cuda attention: head_dim %d, %d heads over %d kv heads not supported", hd,
                      sh->n_heads, sh->n_kv_heads);
  if (!a->out || !a->qkv || !a->rope || !a->k_cache || !a->v_cache || !a->step || !a->scratch)
    return kiln_error(KILN_EINVAL, "cuda attention: missing argument");
  for (int i = 0; i < 2; i++)
    if (a->l2_next_bytes[i] < 0 || a->l2_next_bytes[i] % 16 || ((uintptr_t)a->l2_next[i] & 15))
      return kiln_error(KILN_EINVAL, "cuda attention: L2 prefetch range not 16-byte aligned");
  if (a->l2_at < 0 || a->l2_at > 2)
    return kiln_error(KILN_EINVAL, "cuda attention: bad L2 prefetch point %d", a->l2_at);
  const int gm = gmax_(sh->n_heads / sh->n_kv_heads, clustered_(a));
  const float qscale = 1.4426950408889634f / sqrtf((float)hd); /* log2(e) / sqrt(head_dim) */
  return threads_mode_(gm) == 256 ? launch_t_<256>(a, gm, qscale, stream) : launch_t_<128>(a, gm, qscale, stream);
}
