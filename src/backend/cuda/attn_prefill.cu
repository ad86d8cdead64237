/*
 * backend/cuda/attn_prefill.cu: causal prefill attention (see attn_prefill.h).
 *
 * Block = (tile of 64 queries, one query head), 4 warps; warp w owns query rows 16w .. 16w+15 from start to end
 * (scores, softmax, rescaling, P V), so within a key tile the warps only meet at the loads of K and V. Q and the
 * output accumulator stay in registers as WMMA fragments for the whole key loop; to rescale the accumulator by
 * the running softmax factor of each row, the kernel reads the (unspecified) fragment layout off a probe tile
 * once. Shared rows are padded (16 bytes for bf16, 16 for f32) against bank conflicts; every WMMA pointer
 * stays 32-byte aligned because 16 rows of any padded stride are a multiple of 32 bytes. A head_dim that is not a
 * multiple of 16 (the tensor-core step) is padded with zero columns in shared memory.
 */
#include <mma.h>

#include "backend/cuda/attn_prefill.h"
#include "backend/cuda/cuda_common.h"

#define AP_BQ 64
#define AP_BK 64
#define AP_THREADS 128
#define AP_MAX_HD 256
#define AP_MAX_DEVICES 64

using namespace nvcuda;

typedef struct ap_layout {
  int ldq;    /* bf16 row stride of Qs, Ks, Vs */
  int lds;    /* f32 row stride of S */
  int ldp;    /* bf16 row stride of P */
  int ldo;    /* f32 row stride of the output staging (over Ks and Vs once the key loop is done) */
  size_t off_k, off_v, off_s, off_p, off_m, bytes;
} ap_layout;

static __host__ __device__ ap_layout ap_layout_of(int hdp) {
  ap_layout L;
  L.ldq = hdp + 8;
  L.lds = AP_BK + 4;
  L.ldp = AP_BK + 8;
  L.ldo = hdp + 4;
  L.off_k = (size_t)AP_BQ * L.ldq * 2;
  L.off_v = L.off_k + (size_t)AP_BK * L.ldq * 2;
  L.off_s = L.off_v + (size_t)AP_BK * L.ldq * 2;
  L.off_p = L.off_s + (size_t)AP_BQ * L.lds * 4;
  L.off_m = L.off_p + (size_t)AP_BQ * L.ldp * 2;
  L.bytes = L.off_m + 3 * AP_BQ * sizeof(float);
  return L;
}

/* NF: the most 16-column output fragments a warp holds (head_dim padded to 16, over 16), a compile-time bound so
 * that the accumulators stay in registers; 8 covers head_dim <= 128, 16 head_dim <= 256. */
template <int NF>
static __global__ void __launch_bounds__(AP_THREADS)
    attn_prefill_kernel(uint16_t *out, const float *q, const uint16_t *k_cache, const uint16_t *v_cache,
                        const kiln_cuda_step *step, int64_t n, kiln_cuda_attn_shape sh, float scale_log2) {
  extern __shared__ __align__(128) unsigned char smem[];
  typedef wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc_t;
  typedef wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> a_t;
  const int hd = sh.head_dim;
  const int hdp = (hd + 15) / 16 * 16; /* padded with zero columns to the tensor-core step */
  const int nf = hdp / 16;
  const ap_layout L = ap_layout_of(hdp);
  __nv_bfloat16 *Qs = (__nv_bfloat16 *)smem;
  __nv_bfloat16 *Ks = (__nv_bfloat16 *)(smem + L.off_k);
  __nv_bfloat16 *Vs = (__nv_bfloat16 *)(smem + L.off_v);
  float *S = (float *)(smem + L.off_s);
  __nv_bfloat16 *P = (__nv_bfloat16 *)(smem + L.off_p);
  float *m_s = (float *)(smem + L.off_m), *l_s = m_s + AP_BQ, *al_s = l_s + AP_BQ;

  const int qt = blockIdx.x, h = blockIdx.y;
  const int kh = h / (sh.n_heads / sh.n_kv_heads);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int64_t t_first = (int64_t)qt * AP_BQ;
  const int64_t rows = min((int64_t)AP_BQ, n - t_first);
  const int64_t pos0 = step->pos;
  const int64_t kend = pos0 + t_first + rows; /* keys 0 .. kend-1 are visible to some row of this tile */
  const int r0 = warp * 16;

  /* Which row of its 16 x 16 tile each accumulator element of this thread holds: WMMA leaves the layout
   * unspecified, so it is read off a fragment loaded from a tile whose every element is its row index. */
  for (int i = lane; i < 256; i += 32) S[(r0 + i / 16) * L.lds + i % 16] = (float)(i / 16);
  __syncwarp();
  int rowmap[8];
  {
    acc_t probe;
    wmma::load_matrix_sync(probe, S + r0 * L.lds, L.lds, wmma::mem_row_major);
#pragma unroll
    for (int e = 0; e < 8; e++) rowmap[e] = e < probe.num_elements ? (int)probe.x[e] : 0;
  }

  /* Q tile as bf16 (rows past the chunk are zero), m = -inf, l = 0 */
  for (int idx = threadIdx.x; idx < AP_BQ * hdp; idx += AP_THREADS) {
    int r = idx / hdp, d = idx % hdp;
    float v = r < rows && d < hd ? q[((t_first + r) * sh.n_heads + h) * hd + d] : 0.f;
    Qs[r * L.ldq + d] = __float2bfloat16_rn(v);
  }
  if (threadIdx.x < AP_BQ) {
    m_s[threadIdx.x] = -INFINITY;
    l_s[threadIdx.x] = 0.f;
  }
  __syncthreads();
  a_t qa[NF];
  acc_t o[NF];
#pragma unroll
  for (int f = 0; f < NF; f++) {
    if (f < nf) wmma::load_matrix_sync(qa[f], Qs + r0 * L.ldq + f * 16, L.ldq);
    wmma::fill_fragment(o[f], 0.f);
  }

  const int64_t base = ((int64_t)step->seq * sh.n_kv_heads + kh) * sh.n_ctx * hd;
  const uint16_t *Kg = k_cache + base, *Vg = v_cache + base;
  const int vec_per_row = hdp / 8, vec_in_row = hd / 8;

  for (int64_t k0 = 0; k0 < kend; k0 += AP_BK) {
    __syncthreads(); /* the previous tile's K and V are no longer read */
    for (int idx = threadIdx.x; idx < AP_BK * vec_per_row; idx += AP_THREADS) {
      int j = idx / vec_per_row, c = idx % vec_per_row;
      uint4 kv = make_uint4(0, 0, 0, 0), vv = make_uint4(0, 0, 0, 0);
      if (k0 + j < kend && c < vec_in_row) {
        kv = *(const uint4 *)(Kg + (k0 + j) * hd + c * 8);
        vv = *(const uint4 *)(Vg + (k0 + j) * hd + c * 8);
      }
      *(uint4 *)(Ks + j * L.ldq + c * 8) = kv;
      *(uint4 *)(Vs + j * L.ldq + c * 8) = vv;
    }
    __syncthreads();

    /* S[r0 .. r0+15][0 .. 63] = Q K^T */
#pragma unroll
    for (int c = 0; c < AP_BK / 16; c++) {
      acc_t acc;
      wmma::fill_fragment(acc, 0.f);
#pragma unroll
      for (int f = 0; f < NF; f++) {
        if (f < nf) {
          wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::col_major> b;
          wmma::load_matrix_sync(b, Ks + c * 16 * L.ldq + f * 16, L.ldq);
          wmma::mma_sync(acc, qa[f], b, acc);
        }
      }
      wmma::store_matrix_sync(S + r0 * L.lds + c * 16, acc, L.lds, wmma::mem_row_major);
    }
    __syncwarp();

    /* online softmax of the warp's 16 rows: a pair of lanes per row, each lane 32 of the 64 key columns */
    {
      const int r = r0 + (lane >> 1), c0 = (lane & 1) * 32;
      const int64_t qpos = pos0 + t_first + r;
      const float *srow = S + r * L.lds + c0;
      float mx = -INFINITY;
#pragma unroll
      for (int j = 0; j < 32; j += 4) {
        float4 v = *(const float4 *)(srow + j);
        int64_t key = k0 + c0 + j;
        float m4 = fmaxf(fmaxf(key <= qpos && key < kend ? v.x : -INFINITY,
                               key + 1 <= qpos && key + 1 < kend ? v.y : -INFINITY),
                         fmaxf(key + 2 <= qpos && key + 2 < kend ? v.z : -INFINITY,
                               key + 3 <= qpos && key + 3 < kend ? v.w : -INFINITY));
        mx = fmaxf(mx, m4);
      }
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1)) * scale_log2;
      const float m_old = m_s[r], m_new = fmaxf(m_old, mx);
      /* a row past the chunk may see no key in a tile; keep its state finite (it is never written out) */
      const float m_use = m_new == -INFINITY ? 0.f : m_new;
      float sum = 0.f;
      __nv_bfloat16 *prow = P + r * L.ldp + c0;
#pragma unroll
      for (int j = 0; j < 32; j += 8) {
        float4 v0 = *(const float4 *)(srow + j), v1 = *(const float4 *)(srow + j + 4);
        float sv[8] = {v0.x, v0.y, v0.z, v0.w, v1.x, v1.y, v1.z, v1.w};
        uint32_t pk[4];
#pragma unroll
        for (int e = 0; e < 8; e += 2) {
          int64_t key = k0 + c0 + j + e;
          float pa = key <= qpos && key < kend ? exp2f(sv[e] * scale_log2 - m_use) : 0.f;
          float pb = key + 1 <= qpos && key + 1 < kend ? exp2f(sv[e + 1] * scale_log2 - m_use) : 0.f;
          sum += pa + pb;
          pk[e / 2] = kiln_pack_bf16x2(pa, pb);
        }
        *(uint4 *)(prow + j) = make_uint4(pk[0], pk[1], pk[2], pk[3]);
      }
      sum += __shfl_xor_sync(0xffffffffu, sum, 1);
      __syncwarp(); /* both lanes of the pair have read m_s[r] before one rewrites it */
      if ((lane & 1) == 0) {
        float alpha = exp2f(m_old - m_use);
        al_s[r] = alpha;
        l_s[r] = l_s[r] * alpha + sum;
        m_s[r] = m_new;
      }
    }
    __syncwarp();

    /* O = diag(alpha) O + P V, O in registers */
    float al[8];
#pragma unroll
    for (int e = 0; e < 8; e++) al[e] = al_s[r0 + rowmap[e]];
#pragma unroll
    for (int f = 0; f < NF; f++) {
      if (f < nf) {
#pragma unroll
        for (int e = 0; e < o[f].num_elements; e++) o[f].x[e] *= al[e];
#pragma unroll
        for (int kk = 0; kk < AP_BK; kk += 16) {
          a_t a;
          wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::row_major> b;
          wmma::load_matrix_sync(a, P + r0 * L.ldp + kk, L.ldp);
          wmma::load_matrix_sync(b, Vs + kk * L.ldq + f * 16, L.ldq);
          wmma::mma_sync(o[f], a, b, o[f]);
        }
      }
    }
  }

  /* stage O through the K/V area (every warp is past its last read of it), then normalise and write */
  __syncthreads();
  float *Os = (float *)(smem + L.off_k);
#pragma unroll
  for (int f = 0; f < NF; f++)
    if (f < nf) wmma::store_matrix_sync(Os + r0 * L.ldo + f * 16, o[f], L.ldo, wmma::mem_row_major);
  __syncwarp();
  for (int r = r0; r < r0 + 16; r++) {
    if (r >= rows) break;
    float inv = 1.f / l_s[r];
    uint16_t *dst = out + ((t_first + r) * sh.n_heads + h) * hd;
    for (int d = lane; d < hd; d += 32) dst[d] = kiln_f32_to_bf16_dev(Os[r * L.ldo + d] * inv);
  }
}

template <int NF>
static int attn_prefill_launch_nf(uint16_t *out, const float *q, const uint16_t *k_cache, const uint16_t *v_cache,
                                  const kiln_cuda_step *step, int64_t n, const kiln_cuda_attn_shape *sh,
                                  cudaStream_t stream) {
  static size_t smem_set[AP_MAX_DEVICES]; /* dynamic shared memory already allowed, per device */
  ap_layout L = ap_layout_of((sh->head_dim + 15) / 16 * 16);
  int dev = 0;
  KILN_CUDA_CHECK(cudaGetDevice(&dev));
  if (L.bytes > 48 * 1024 && (dev >= AP_MAX_DEVICES || smem_set[dev] < L.bytes)) {
    KILN_CUDA_CHECK(cudaFuncSetAttribute(attn_prefill_kernel<NF>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         (int)L.bytes));
    if (dev < AP_MAX_DEVICES) smem_set[dev] = L.bytes;
  }
  dim3 grid((unsigned)((n + AP_BQ - 1) / AP_BQ), (unsigned)sh->n_heads);
  float scale_log2 = 1.4426950408889634f / sqrtf((float)sh->head_dim);
  attn_prefill_kernel<NF><<<grid, AP_THREADS, L.bytes, stream>>>(out, q, k_cache, v_cache, step, n, *sh, scale_log2);
  KILN_CUDA_LAUNCHED();
  return 0;
}

static int attn_prefill_launch(uint16_t *out, const float *q, const uint16_t *k_cache, const uint16_t *v_cache,
                               const kiln_cuda_step *step, int64_t n, const kiln_cuda_attn_shape *sh,
                               cudaStream_t stream) {
  if (sh->head_dim <= 128) return attn_prefill_launch_nf<8>(out, q, k_cache, v_cache, step, n, sh, stream);
  return attn_prefill_launch_nf<16>(out, q, k_cache, v_cache, step, n, sh, stream);
}

extern "C" int kiln_cuda_attn_prefill(uint16_t *out, const float *q, const uint16_t *k_cache,
                                      const uint16_t *v_cache, const kiln_cuda_step *step, int64_t n,
                                      const kiln_cuda_attn_shape *sh, cudaStream_t stream) {
  if (sh->head_dim <= 0 || sh->head_dim % 8 || sh->head_dim > AP_MAX_HD || sh->n_kv_heads <= 0 ||
      sh->n_heads % sh->n_kv_heads || n < 0 || n > (1 << 24))
    return kiln_error(KILN_EUNSUPPORTED, "cuda prefill attention: head_dim %d, %d heads over %d kv heads",
                      sh->head_dim, sh->n_heads, sh->n_kv_heads);
  if (n == 0) return 0;
  return attn_prefill_launch(out, q, k_cache, v_cache, step, n, sh, stream);
}
