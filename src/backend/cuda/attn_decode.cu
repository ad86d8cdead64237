/*
 * backend/cuda/attn_decode.cu: q/k norm, RoPE, the KV store and split-KV decode attention (see attn_decode.h) as
 * one kernel: one block of AD_THREADS threads per unit (split, kv head, group of up to 8 query heads), only the
 * splits that hold keys doing anything; the unit itself is attn_decode_dev.cuh, which the persistent decode
 * kernel runs too.
 */
#include <stdlib.h>

#include "backend/cuda/attn_decode.h"
#include "backend/cuda/attn_decode_dev.cuh"
#include "backend/cuda/cuda_common.h"

#define AD_THREADS 128

/* GMAX: query heads a unit computes, the power of two covering the heads per kv head (at most 8; more heads make
 * more head groups). Shared memory is dynamic: the tile buffers put it past the 48 KB of a static array. */
template <int GMAX>
static __global__ void __launch_bounds__(AD_THREADS) attn_decode_kernel(kiln_cuda_attn_decode_args a, float qscale) {
  extern __shared__ uint4 ad_smem[];
  kiln_attn_smem<GMAX, AD_THREADS> &s = *(kiln_attn_smem<GMAX, AD_THREADS> *)ad_smem;
  kiln_pdl_trigger();
  /* The step (slot, position) was written by the graph's first node, before any kernel of the step started, so
   * it and the cache rows of earlier steps can be read before the wait. */
  kiln_attn_unit u = {(int)blockIdx.x, (int)blockIdx.y, (int)blockIdx.z, a.n_splits, (int)gridDim.z, a.step->seq,
                      a.step->pos + 1};
  if (u.split >= kiln_attn_active(u.L, u.n_splits)) return; /* no keys: no partial, no arrival */
  kiln_attn_unit_first<GMAX, AD_THREADS>(s, u, a.k_cache, a.v_cache, a.shape);
  kiln_pdl_wait();
  const kiln_attn_token t = {a.qkv, a.q_norm, a.k_norm, a.inv_freq, a.eps, qscale};
  kiln_attn_unit_prologue<GMAX, AD_THREADS>(s, u, t, a.k_cache, a.v_cache, a.shape);
  kiln_attn_unit_run<GMAX, AD_THREADS>(s, u, a.out, a.k_cache, a.v_cache, a.shape, a.scratch);
}

template <int GMAX>
static int attn_decode_launch(const kiln_cuda_attn_decode_args *a, float qscale, cudaStream_t stream) {
  static size_t smem_set[KILN_CUDA_MAX_DEVICES];
  const size_t smem = sizeof(kiln_attn_smem<GMAX, AD_THREADS>);
  int rc = kiln_cuda__allow_smem((const void *)attn_decode_kernel<GMAX>, smem, smem_set, 0);
  if (rc) return rc;
  const kiln_cuda_attn_shape *sh = &a->shape;
  const int g = sh->n_heads / sh->n_kv_heads;
  dim3 grid((unsigned)a->n_splits, (unsigned)sh->n_kv_heads, (unsigned)((g + GMAX - 1) / GMAX));
  KILN_CUDA_CHECK(kiln_launch(attn_decode_kernel<GMAX>, grid, dim3(AD_THREADS), smem, stream, *a, qscale));
  return 0;
}

extern "C" int kiln_cuda_attn_decode_splits(const kiln_cuda_attn_shape *sh, int n_sm) {
  /* about two units per SM at the longest context, never chunks shorter than KILN_AD_MIN_CHUNK keys
   * (KILN_CUDA_ATTN_UNITS=N: N units per SM instead; tuning only) */
  const char *e = getenv("KILN_CUDA_ATTN_UNITS");
  const int per_sm = e && atoi(e) > 0 ? atoi(e) : 2;
  int g = sh->n_heads / sh->n_kv_heads;
  int groups = sh->n_kv_heads * ((g + KILN_AD_GMIN - 1) / KILN_AD_GMIN);
  int want = (per_sm * n_sm + groups - 1) / groups;
  int most = (sh->n_ctx + KILN_AD_MIN_CHUNK - 1) / KILN_AD_MIN_CHUNK;
  int n = want < most ? want : most;
  if (n > KILN_AD_MAX_SPLITS) n = KILN_AD_MAX_SPLITS;
  return n < 1 ? 1 : n;
}

static int64_t groups_(const kiln_cuda_attn_shape *sh) {
  int g = sh->n_heads / sh->n_kv_heads;
  return (int64_t)sh->n_kv_heads * ((g + KILN_AD_GMIN - 1) / KILN_AD_GMIN);
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

extern "C" int kiln_cuda_attn_decode(const kiln_cuda_attn_decode_args *a, cudaStream_t stream) {
  const kiln_cuda_attn_shape *sh = &a->shape;
  const int hd = sh->head_dim;
  if (hd <= 0 || hd % 8 || hd > KILN_AD_MAX_HD || sh->n_kv_heads <= 0 || sh->n_heads % sh->n_kv_heads ||
      a->n_splits < 1 || a->n_splits > KILN_AD_MAX_SPLITS || sh->n_ctx <= 0)
    return kiln_error(KILN_EUNSUPPORTED, "cuda attention: head_dim %d, %d heads over %d kv heads not supported", hd,
                      sh->n_heads, sh->n_kv_heads);
  if (!a->out || !a->qkv || !a->inv_freq || !a->k_cache || !a->v_cache || !a->step || !a->scratch)
    return kiln_error(KILN_EINVAL, "cuda attention: missing argument");
  const int g = sh->n_heads / sh->n_kv_heads;
  const float qscale = 1.4426950408889634f / sqrtf((float)hd); /* log2(e) / sqrt(head_dim) */
  if (g <= 1) return attn_decode_launch<1>(a, qscale, stream);
  if (g <= 2) return attn_decode_launch<2>(a, qscale, stream);
  if (g <= 4) return attn_decode_launch<4>(a, qscale, stream);
  return attn_decode_launch<8>(a, qscale, stream);
}
