/*
 * backend/cuda/attn_decode.cu: split-KV decode attention (see attn_decode.h) as its own kernel: one block of
 * AD_THREADS threads per unit (split, kv head, group of up to 8 query heads); the unit itself is
 * attn_decode_dev.cuh, which the persistent decode kernel runs too.
 */
#include "backend/cuda/attn_decode.h"
#include "backend/cuda/attn_decode_dev.cuh"
#include "backend/cuda/cuda_common.h"

#define AD_THREADS 128
#define AD_GMAX 8
#define AD_PRE 8 /* keys and values prefetched per thread per tile */

static __global__ void __launch_bounds__(AD_THREADS)
    attn_split_kernel(uint16_t *out, const float *q, const uint16_t *k_cache, const uint16_t *v_cache,
                      const kiln_cuda_step *step, kiln_cuda_attn_shape sh, int n_splits, float qscale, float *part) {
  __shared__ __align__(16) kiln_attn_smem<AD_GMAX, AD_THREADS> s;
  kiln_pdl_trigger();
  kiln_pdl_wait();
  const int hd = sh.head_dim, g = sh.n_heads / sh.n_kv_heads;
  kiln_attn_unit u = {(int)blockIdx.x, (int)blockIdx.y, (int)blockIdx.z, n_splits, (int)gridDim.z, step->seq,
                      step->pos + 1};
  const int g0 = u.gz * AD_GMAX, gn = min(AD_GMAX, g - g0), h0 = u.kh * g + g0;
  for (int i = threadIdx.x; i < gn * hd; i += AD_THREADS) s.qs[i] = q[(int64_t)h0 * hd + i] * qscale;
  kiln_attn_unit_run<AD_GMAX, AD_PRE, AD_THREADS>(s, u, out, k_cache, v_cache, sh, part);
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
  /* about two units per SM at the longest context, never chunks shorter than KILN_AD_MIN_CHUNK keys */
  int g = sh->n_heads / sh->n_kv_heads;
  int groups = sh->n_kv_heads * ((g + KILN_AD_GMIN - 1) / KILN_AD_GMIN);
  int want = (2 * n_sm + groups - 1) / groups;
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

extern "C" int kiln_cuda_attn_decode(uint16_t *out, const float *q, const uint16_t *k_cache, const uint16_t *v_cache,
                                     const kiln_cuda_step *step, const kiln_cuda_attn_shape *sh, int n_splits,
                                     float *scratch, cudaStream_t stream) {
  int hd = sh->head_dim;
  if (hd <= 0 || hd % 8 || hd > KILN_AD_MAX_HD || sh->n_kv_heads <= 0 ||
      sh->n_heads % sh->n_kv_heads || n_splits < 1 || n_splits > KILN_AD_MAX_SPLITS || sh->n_ctx <= 0)
    return kiln_error(KILN_EUNSUPPORTED, "cuda attention: head_dim %d, %d heads over %d kv heads not supported", hd,
                      sh->n_heads, sh->n_kv_heads);
  return attn_decode_launch(out, q, k_cache, v_cache, step, sh, n_splits, scratch, stream);
}
