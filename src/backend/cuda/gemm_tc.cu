/*
 * backend/cuda/gemm_tc.cu: kiln's own prefill GEMM on Hopper (gemm_tc.h).
 *
 * A block computes a BM x BN tile of y = x W^T: BM token rows (one consumer warpgroup of 128 threads per 64 rows)
 * by BN output columns. One more warp produces: its first lane walks k in steps of 64 and, for each step, waits
 * until the consumers have released the oldest of the STAGES shared-memory stages, then has the TMA copy x's
 * BM x 64 box and W's BN x 64 box into it (128-byte swizzle, the layout wgmma reads; wgmma_dev.cuh), announcing
 * their bytes to the stage's "full" barrier. A consumer warpgroup waits on that barrier, issues four k16 wgmmas
 * (A: its 64 rows of x, B: the W box, both from shared memory), and once the previous step's wgmmas have retired
 * (wait_group 1) releases that step's stage through its "empty" barrier, so one step's products overlap the
 * next step's wait. Edge tiles need no code: the TMA fills rows and columns outside x and W with zeros, and the
 * epilogue writes only rows < n and columns < out.
 *
 * The epilogue works on the accumulator fragment in registers (a thread holds column pairs 8i + 2t, 8i + 2t + 1
 * of rows g and g + 8 of its warp's 16): a bf16 pair, an f32 pair, an f32 pair added to y, or, for SwiGLU, the
 * pair is (gate, up) of one intermediate column (the gate/up weights interleave their rows; weights.c), and
 * neighbouring lanes swap halves so that each writes two adjacent bf16.
 *
 * Clusters (the tiles named c2, c4, c2x2, k2): blocks of one thread-block cluster either share operand tiles or
 * split k. Sharing: the CM row tiles of a cluster's column need the same W tile, so each block's producer loads
 * 1/CM of it and the TMA multicasts it into every one of them (and likewise x's tile across CN column tiles); a
 * stage is then refilled in all of them at once, so each consumer warp releases it in every block of the cluster.
 * That cuts the bytes L2 delivers a product (cuBLAS's own kernels share W's tile in pairs). Splitting: the two
 * blocks of a k2 cluster compute one tile over the two halves of k, and each consumer warpgroup either hands its
 * partial sums to its counterpart through distributed shared memory or adds the counterpart's to its own and
 * writes: twice the blocks for products of few output tiles (the o and down products of a short prompt), with the
 * same bits wherever it runs (a + b is b + a).
 *
 * Occupancy: one block an SM with as many stages as fit (up to 9); the "/2" tiles run two blocks an SM with fewer
 * stages each (one block's epilogue then overlaps the other's loads and products). On an H100 the deep pipelines
 * were no faster than 3 stages at two blocks: the products are bound by how fast L2 delivers operand tiles to the
 * SMs (4.6-6 TB/s for every tile and for cuBLAS's kernel, which loads a third fewer bytes a product by sharing W's
 * tile between the two blocks of a cluster; docs/benchmarks.md), and are 1.2-1.6x cuBLAS's time.
 */
#include <limits.h>
#include <string.h>

#include <cuda.h>
#include <cudaTypedefs.h>

#include "backend/cuda/attn_prefill.h"
#include "backend/cuda/cuda_common.h"
#include "backend/cuda/gemm_tc.h"
#include "backend/cuda/tma_dev.cuh"
#include "backend/cuda/wgmma_dev.cuh"

enum { TC_BK = 64 }; /* k a stage: 64 bf16 = 128 bytes a row, the swizzle's width */

template <int BM, int BN, int BLOCKS>
struct tc_cfg {
  static constexpr int NC = BM / 64;            /* consumer warpgroups */
  static constexpr int THREADS = NC * 128 + 32; /* and the producer warp */
  static constexpr int A_BYTES = BM * TC_BK * 2, B_BYTES = BN * TC_BK * 2, STAGE = A_BYTES + B_BYTES;
  /* as many stages as fit the SM's 228 KB less 1 KB a block, with 1 KB to align the tiles and the barriers: a
   * consumer holds two stages (the one its products read, and the one before until they retire), so S - 2 are
   * loading while it waits */
  static constexpr int STAGES_FIT = ((228 / BLOCKS - 1) * 1024 - 1024 - 256) / STAGE;
  static constexpr int STAGES = STAGES_FIT > 9 ? 9 : STAGES_FIT;
  static constexpr size_t SMEM = 1024 + (size_t)STAGES * STAGE + 2 * STAGES * 8;
  static_assert(STAGES >= 2, "tc_cfg: too few stages");
};

static __device__ __forceinline__ float tc_silu_mul(float g, float u) { return g / (1.f + expf(-g)) * u; }
static __device__ __forceinline__ float tc_bf16_round(float v) {
  return __uint_as_float((uint32_t)kiln_f32_to_bf16_dev(v) << 16);
}

/* The q/k/v epilogue (gemm_tc.h, kiln_tc_qkv) of one head: this thread's two rows (r0, r0 + 8) of columns
 * 8i + cq, 8i + cq + 1 (i < 16) of the head's 128. RoPE pairs column c < 64 with c + 64, held in d[i] and d[i + 8];
 * the row's sum of squares adds the 4 lanes of a quad (lanes 4g .. 4g + 3 hold row g), so every lane runs this. */
static __device__ __forceinline__ void tc_qkv_epilogue(float (&d)[16][4], const kiln_tc_qkv &e, int head, int r0,
                                                       int n, int cq) {
  const int nh = e.n_heads, nkv = e.n_kv_heads;
  const bool isq = head < nh, isv = head >= nh + nkv;
  const float *nw = isq ? e.q_norm : isv ? NULL : e.k_norm;
  const float *bias = e.bias ? e.bias + (int64_t)head * 128 : NULL;
  const int pos0 = e.step->pos;
#pragma unroll
  for (int h = 0; h < 2; h++) {
    const int r = r0 + 8 * h;
    const int pos = pos0 + (r < n ? r : n - 1); /* rows past n: a real row of the table, never stored */
    float x[16][2];
#pragma unroll
    for (int i = 0; i < 16; i++)
#pragma unroll
      for (int j = 0; j < 2; j++) x[i][j] = tc_bf16_round(d[i][2 * h + j]) + (bias ? bias[8 * i + cq + j] : 0.f);
    if (nw) {
      float ss = 0.f;
#pragma unroll
      for (int i = 0; i < 16; i++) ss = fmaf(x[i][0], x[i][0], fmaf(x[i][1], x[i][1], ss));
      ss += __shfl_xor_sync(0xffffffffu, ss, 1);
      ss += __shfl_xor_sync(0xffffffffu, ss, 2);
      const float inv = rsqrtf(ss / 128.f + e.eps);
#pragma unroll
      for (int i = 0; i < 16; i++)
#pragma unroll
        for (int j = 0; j < 2; j++) x[i][j] = nw[8 * i + cq + j] * (x[i][j] * inv);
    }
    if (!isv) { /* RoPE, as kiln_norm_rotate4_x writes it */
      const float *cs = e.rope + (int64_t)pos * 128;
#pragma unroll
      for (int i = 0; i < 8; i++) {
        const float2 c = __ldg((const float2 *)(cs + 8 * i + cq)), sn = __ldg((const float2 *)(cs + 64 + 8 * i + cq));
#pragma unroll
        for (int j = 0; j < 2; j++) {
          const float x1 = x[i][j], x2 = x[i + 8][j], cj = j ? c.y : c.x, sj = j ? sn.y : sn.x;
          x[i][j] = x1 * cj + -1.f * (x2 * sj);
          x[i + 8][j] = x2 * cj + 1.f * (x1 * sj);
        }
      }
    }
    if (r >= n) continue;
    uint16_t *dst = isq ? e.q_out + ((int64_t)r * nh + head) * 128
                        : (isv ? e.v_cache : e.k_cache) +
                              (((int64_t)e.step->seq * nkv + (head - nh - (isv ? nkv : 0))) * e.n_ctx + pos0 + r) * 128;
#pragma unroll
    for (int i = 0; i < 16; i++) *(uint32_t *)(dst + 8 * i + cq) = kiln_pack_bf16x2(x[i][0], x[i][1]);
  }
}

template <int BM, int BN, int BLOCKS, int CM, int CN, int KS, int KIND>
static __global__ void __launch_bounds__(tc_cfg<BM, BN, BLOCKS>::THREADS, BLOCKS)
    gemm_tc_kernel(const __grid_constant__ CUtensorMap tx, const __grid_constant__ CUtensorMap tw, void *y, int n,
                   int out, int k_steps, const kiln_tc_qkv qe) {
  static_assert(KIND != KILN_GEMM_QKV || BN == 128, "gemm_tc: the q/k/v epilogue takes a head (128) a block");
#if KILN_WG_OK
  using C = tc_cfg<BM, BN, BLOCKS>;
  constexpr int S = C::STAGES;
  extern __shared__ uint8_t tc_smem[];
  const uint32_t tiles = (kiln_smem_addr(tc_smem) + 1023u) & ~1023u;
  const uint32_t bars = tiles + S * C::STAGE; /* full[s] at bars + 8 s, empty[s] at bars + 8 (S + s) */
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  static_assert(KS == 1 || (KS == 2 && BM == 128 && CM == 1 && CN == 1), "gemm_tc: k split in pairs of 128-row tiles");
  /* KS 2: the two blocks of a cluster compute the same tile over the two halves of k, then each consumer
   * warpgroup hands its partial sums to its counterpart in the other block or takes them: block ks finishes
   * (and writes) rows 64 ks .. 64 ks + 63 */
  const unsigned ks = KS > 1 ? blockIdx.x % KS : 0u;
  const int m0 = (int)(blockIdx.x / KS) * BM, n0 = blockIdx.y * BN;
  const int k_part = (k_steps + KS - 1) / KS, k_begin = (int)ks * k_part;
  k_steps = k_steps - k_begin < k_part ? (k_steps > k_begin ? k_steps - k_begin : 0) : k_part;
  /* Clusters of CM x CN blocks (row tiles x column tiles). The CM blocks of a cluster's column share W's tile:
   * the one at cluster x-coordinate cx loads rows cx BN/CM .. of it into all of them; the CN blocks of a row share
   * x's tile the same way, by cy. A block's rank in the cluster is cx + CM cy. */
  constexpr int CS = CM * CN, CL = CS * KS; /* blocks that share stages; blocks of a cluster */
  const unsigned cx = blockIdx.x % CM, cy = blockIdx.y % CN;
  uint16_t mask_w = 0, mask_x = 0;
#pragma unroll
  for (int i = 0; i < CM; i++) mask_w |= (uint16_t)(1u << (i + CM * cy));
#pragma unroll
  for (int j = 0; j < CN; j++) mask_x |= (uint16_t)(1u << (cx + CM * j));
  if (threadIdx.x == C::NC * 128) {
    kiln_tma_prefetch_map(&tx);
    kiln_tma_prefetch_map(&tw);
  }
  if (threadIdx.x == 0) {
    for (int s = 0; s < S; s++) {
      kiln_mbar_init(bars + 8 * s, 1);
      kiln_mbar_init(bars + 8 * (S + s), CS * C::NC * 4); /* lane 0 of every consumer warp that reads it */
    }
    kiln_mbar_init_fence();
  }
  if constexpr (CL > 1) kiln_cluster_sync();
  else __syncthreads();
  kiln_pdl_trigger();
  kiln_pdl_wait();

  if (warp == C::NC * 4) { /* the producer */
    if (lane == 0)
      for (int it = 0; it < k_steps; it++) {
        const int s = it % S;
        const uint32_t a = tiles + s * C::STAGE;
        /* with clusters: a stage is refilled in every block of the cluster, so all of them must have released it */
        if (it >= S) kiln_mbar_wait(bars + 8 * (S + s), (unsigned)(it / S - 1) & 1u);
        kiln_mbar_expect_tx(bars + 8 * s, C::STAGE);
        if constexpr (CN > 1)
          kiln_tma_load_2d_mc(a + cy * (C::A_BYTES / CN), &tx, bars + 8 * s, (k_begin + it) * TC_BK,
                              m0 + (int)cy * (BM / CN), mask_x);
        else
          kiln_tma_load_2d(a, &tx, bars + 8 * s, (k_begin + it) * TC_BK, m0);
        if constexpr (CM > 1)
          kiln_tma_load_2d_mc(a + C::A_BYTES + cx * (C::B_BYTES / CM), &tw, bars + 8 * s, (k_begin + it) * TC_BK,
                              n0 + (int)cx * (BN / CM), mask_w);
        else
          kiln_tma_load_2d(a + C::A_BYTES, &tw, bars + 8 * s, (k_begin + it) * TC_BK, n0);
      }
    if constexpr (CL > 1) kiln_cluster_sync(); /* the consumers' last arrivals on other blocks' barriers */
    return; /* no block-wide barrier after this point */
  }

  const int wg = warp >> 2;
  float d[BN / 8][4];
#pragma unroll
  for (int i = 0; i < BN / 8; i++) d[i][0] = d[i][1] = d[i][2] = d[i][3] = 0.f;
  for (int it = 0; it < k_steps; it++) {
    const int s = it % S;
    const uint32_t a = tiles + s * C::STAGE + wg * 64 * 128, b = tiles + s * C::STAGE + C::A_BYTES;
    kiln_mbar_wait(bars + 8 * s, (unsigned)(it / S) & 1u);
    kiln_wg_fence();
#pragma unroll
    for (int kd = 0; kd < TC_BK / 16; kd++) kiln_wg_mma_ss<BN>(d, kiln_wg_desc_k(a, 64, kd), kiln_wg_desc_k(b, BN, kd), 1);
    kiln_wg_commit();
    kiln_wg_wait1(); /* step it - 1's products have read their stage */
    if (it > 0 && lane == 0) {
      if constexpr (CS > 1)
        for (unsigned r = 0; r < CS; r++) kiln_mbar_arrive_cluster(bars + 8 * (S + (it - 1) % S), r);
      else
        kiln_mbar_arrive(bars + 8 * (S + (it - 1) % S));
    }
  }
  kiln_wg_wait0();

  bool live = true; /* this warpgroup writes its rows */
  if constexpr (KS == 2) {
    /* once both blocks' products have retired, their stages are free: the handing warpgroup stores its partial
     * sums into the other block's stage memory, in fragment order, and the taking one adds them (its own first,
     * so a + b either way: the same bits whichever block runs ahead) */
    kiln_cluster_sync();
    const uint32_t at = tiles + (uint32_t)(threadIdx.x & 127) * 16;
    live = wg == (int)ks;
    if (!live) {
#pragma unroll
      for (int i = 0; i < BN / 8; i++)
        kiln_dsmem_st4(at + (uint32_t)i * 128 * 16, ks ^ 1u, make_float4(d[i][0], d[i][1], d[i][2], d[i][3]));
    }
    kiln_cluster_sync();
    if (live) {
#pragma unroll
      for (int i = 0; i < BN / 8; i++) {
        const float4 v = kiln_smem_ld4(at + (uint32_t)i * 128 * 16);
        d[i][0] += v.x, d[i][1] += v.y, d[i][2] += v.z, d[i][3] += v.w;
      }
    }
  }

  const int r0 = m0 + wg * 64 + (warp & 3) * 16 + (lane >> 2), cq = 2 * (lane & 3);
  if (n0 >= out || !live) {
    /* a column tile that only rounds the grid up to whole clusters, or partial sums handed on */
  } else if constexpr (KIND == KILN_GEMM_QKV) {
    tc_qkv_epilogue(d, qe, n0 / 128, r0, n, cq);
  } else {
#pragma unroll
    for (int i = 0; i < BN / 8; i++) {
      const int c = n0 + 8 * i + cq;
      if constexpr (KIND == KILN_GEMM_SWIGLU) {
        /* lane pairs (2u, 2u + 1) hold intermediate columns c/2 and c/2 + 1 of rows r0 and r0 + 8: the even lane
         * writes both of row r0, the odd lane both of row r0 + 8 */
        const float a0 = tc_silu_mul(d[i][0], d[i][1]), a1 = tc_silu_mul(d[i][2], d[i][3]);
        const bool odd = lane & 1;
        const float got = __shfl_xor_sync(0xffffffffu, odd ? a0 : a1, 1);
        const int r = odd ? r0 + 8 : r0, col = odd ? c / 2 - 1 : c / 2;
        if (r < n && c < out)
          ((uint32_t *)y)[((int64_t)r * (out / 2) + col) / 2] =
              odd ? kiln_pack_bf16x2(got, a1) : kiln_pack_bf16x2(a0, got);
      } else {
        if (c >= out) continue;
#pragma unroll
        for (int h = 0; h < 2; h++) {
          const int r = r0 + 8 * h;
          if (r >= n) continue;
          const int64_t at = (int64_t)r * out + c;
          if constexpr (KIND == KILN_GEMM_BF16) {
            ((uint32_t *)y)[at / 2] = kiln_pack_bf16x2(d[i][2 * h], d[i][2 * h + 1]);
          } else if constexpr (KIND == KILN_GEMM_F32) {
            ((float2 *)y)[at / 2] = make_float2(d[i][2 * h], d[i][2 * h + 1]);
          } else {
            float2 v = ((float2 *)y)[at / 2];
            v.x += d[i][2 * h], v.y += d[i][2 * h + 1];
            ((float2 *)y)[at / 2] = v;
          }
        }
      }
    }
  }
  if constexpr (CL > 1) kiln_cluster_sync();
#else
  (void)tx, (void)tw, (void)y, (void)n, (void)out, (void)k_steps, (void)qe;
  __trap();
#endif
}

/* ---- host side ---- */

static const struct {
  int bm, bn, blocks, cm, cn, ks;
  const char *name;
} tiles_[KILN_TC_TILES] = {
    {0, 0, 0, 1, 1, 1, "auto"},
    {128, 128, 1, 1, 1, 1, "128x128"},
    {64, 128, 1, 1, 1, 1, "64x128"},
    {128, 64, 1, 1, 1, 1, "128x64"},
    {128, 192, 1, 1, 1, 1, "128x192"},
    {128, 256, 1, 1, 1, 1, "128x256"},
    {64, 256, 1, 1, 1, 1, "64x256"},
    {128, 128, 2, 1, 1, 1, "128x128/2"},
    {64, 128, 2, 1, 1, 1, "64x128/2"},
    {128, 128, 1, 2, 1, 1, "128x128c2"},
    {128, 256, 1, 2, 1, 1, "128x256c2"},
    {64, 128, 1, 2, 1, 1, "64x128c2"},
    {64, 128, 1, 4, 1, 1, "64x128c4"},
    {128, 128, 1, 2, 2, 1, "128x128c2x2"},
    {128, 256, 1, 2, 2, 1, "128x256c2x2"},
    {128, 128, 1, 1, 1, 2, "128x128k2"},
    {128, 256, 1, 1, 1, 2, "128x256k2"},
};

extern "C" int kiln_cuda_gemm_tc_tile_env(const char *v) {
  if (!v || !*v) return KILN_TC_AUTO;
  for (int t = 0; t < KILN_TC_TILES; t++)
    if (!strcmp(v, tiles_[t].name)) return t;
  return -1;
}

/* The tile whose busiest SM has the least to do: tiles are spread evenly over the SMs, so that SM computes
 * ceil(tiles / n_sm) of them; a tile of 64 columns costs 15% more a product than the wider ones (its wgmmas read
 * more shared memory per product), one of 64 rows 30% (one consumer warpgroup hides less; H100, 0.6B's o and down
 * at 1,024 tokens: 64x128 16.0 and 18.7 us, 128x64 12.2 and 15.8). Ties go to the earlier, wider tile. */
extern "C" kiln_tc_tile kiln_cuda_gemm_tc_auto(int64_t n, int64_t in, int64_t out, int n_sm) {
  (void)in;
  if (n_sm < 1) n_sm = 1;
  kiln_tc_tile best = KILN_TC_128x128;
  double best_cost = 0;
  for (int t = KILN_TC_128x128; t <= KILN_TC_64x256; t++) { /* the one-block tiles */
    const int64_t count = (n + tiles_[t].bm - 1) / tiles_[t].bm * ((out + tiles_[t].bn - 1) / tiles_[t].bn);
    const double per =
        (double)tiles_[t].bm * tiles_[t].bn * (tiles_[t].bm < 128 ? 1.3 : tiles_[t].bn < 128 ? 1.15 : 1.0);
    const double cost = (double)((count + n_sm - 1) / n_sm) * per;
    if (t == KILN_TC_128x128 || cost < best_cost * 0.999) best = (kiln_tc_tile)t, best_cost = cost;
  }
  /* not the cluster forms: as first built (with a cluster-scope release on every stage) they ran 2.5-10x slower
   * than their plain tiles on an H100 and have not been measured since (docs/benchmarks.md) */
  return best;
}

static PFN_cuTensorMapEncodeTiled_v12000 encoder_(void) {
  static PFN_cuTensorMapEncodeTiled_v12000 fn = [] {
    void *p = NULL;
    cudaDriverEntryPointQueryResult q = cudaDriverEntryPointSymbolNotFound;
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &p, 12000, cudaEnableDefault, &q) != cudaSuccess ||
        q != cudaDriverEntryPointSuccess)
      p = NULL;
    return (PFN_cuTensorMapEncodeTiled_v12000)p;
  }();
  return fn;
}

extern "C" int kiln_cuda_gemm_tc_available(void) {
  if (!kiln_cuda_wgmma_built()) return 0;
  int dev = 0, major = 0;
  if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev))
    return 0;
  return major == 9 && encoder_() != NULL;
}

/* The map of a row-major bf16 matrix of `rows` x `cols` (cols a multiple of 8), read in boxes of box_rows x 64. */
static int tensor_map_(CUtensorMap *m, const uint16_t *p, int64_t rows, int64_t cols, int box_rows) {
  const PFN_cuTensorMapEncodeTiled_v12000 enc = encoder_();
  if (!enc) return kiln_error(KILN_EUNSUPPORTED, "cuda gemm: the driver has no cuTensorMapEncodeTiled");
  const cuuint64_t dim[2] = {(cuuint64_t)cols, (cuuint64_t)rows}, stride[1] = {(cuuint64_t)cols * 2};
  const cuuint32_t box[2] = {TC_BK, (cuuint32_t)box_rows}, step[2] = {1, 1};
  const CUresult r = enc(m, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2, (void *)p, dim, stride, box, step,
                         CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                         CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (r != CUDA_SUCCESS)
    return kiln_error(KILN_EDEVICE, "cuda gemm: cuTensorMapEncodeTiled (%lld x %lld, box %d): error %d", (long long)rows,
                      (long long)cols, box_rows, (int)r);
  return 0;
}

template <int BM, int BN, int BLOCKS, int CM, int CN, int KS, int KIND>
static int launch_(void *y, const uint16_t *x, const uint16_t *w, int64_t n, int64_t in, int64_t out,
                   cudaStream_t stream, const kiln_tc_qkv &qe = kiln_tc_qkv{}) {
  using C = tc_cfg<BM, BN, BLOCKS>;
  static size_t smem_set[KILN_CUDA_MAX_DEVICES];
  int rc = kiln_cuda__allow_smem((const void *)gemm_tc_kernel<BM, BN, BLOCKS, CM, CN, KS, KIND>, C::SMEM, smem_set, 1);
  if (rc) return rc;
  CUtensorMap tx, tw;
  if ((rc = tensor_map_(&tx, x, n, in, BM / CN)) || (rc = tensor_map_(&tw, w, out, in, BN / CM))) return rc;
  /* tiles rounded up to whole clusters: a block past the rows or columns loads zeros and writes nothing */
  const int64_t mt = (n + BM - 1) / BM, nt = (out + BN - 1) / BN;
  const dim3 grid((unsigned)((mt + CM - 1) / CM * CM * KS), (unsigned)((nt + CN - 1) / CN * CN));
  const dim3 cluster(CM * CN * KS > 1 ? CM * KS : 0, CN, 1); /* x 0: no clusters */
  KILN_CUDA_CHECK(kiln_launch_cluster2(gemm_tc_kernel<BM, BN, BLOCKS, CM, CN, KS, KIND>, grid, dim3(C::THREADS),
                                       C::SMEM, stream, cluster, tx, tw, y, (int)n, (int)out,
                                       (int)((in + TC_BK - 1) / TC_BK), qe));
  return 0;
}

template <int BM, int BN, int BLOCKS, int CM, int CN = 1, int KS = 1>
static int launch_kind_(kiln_gemm_out kind, void *y, const uint16_t *x, const uint16_t *w, int64_t n, int64_t in,
                        int64_t out, cudaStream_t stream) {
  switch (kind) {
  case KILN_GEMM_BF16: return launch_<BM, BN, BLOCKS, CM, CN, KS, KILN_GEMM_BF16>(y, x, w, n, in, out, stream);
  case KILN_GEMM_F32: return launch_<BM, BN, BLOCKS, CM, CN, KS, KILN_GEMM_F32>(y, x, w, n, in, out, stream);
  case KILN_GEMM_ACC: return launch_<BM, BN, BLOCKS, CM, CN, KS, KILN_GEMM_ACC>(y, x, w, n, in, out, stream);
  case KILN_GEMM_SWIGLU: return launch_<BM, BN, BLOCKS, CM, CN, KS, KILN_GEMM_SWIGLU>(y, x, w, n, in, out, stream);
  case KILN_GEMM_QKV: break; /* kiln_cuda_gemm_tc_qkv */
  }
  return kiln_error(KILN_EINVAL, "cuda gemm: unknown output kind %d", (int)kind);
}

extern "C" int kiln_cuda_gemm_tc(kiln_gemm_out kind, void *y, const uint16_t *x, const uint16_t *w, int64_t n,
                                 int64_t in, int64_t out, kiln_tc_tile tile, int n_sm, cudaStream_t stream) {
  if (n <= 0 || in <= 0 || out <= 0 || n > INT_MAX / 2 || in > INT_MAX / 2 || out > INT_MAX / 2 || in % 8 ||
      out % (kind == KILN_GEMM_SWIGLU ? 4 : 2))
    return kiln_error(KILN_EINVAL, "cuda gemm: unsupported shape %lld x %lld x %lld", (long long)n, (long long)in,
                      (long long)out);
  if (((uintptr_t)x | (uintptr_t)w) & 15 || (uintptr_t)y & 7)
    return kiln_error(KILN_EINVAL, "cuda gemm: misaligned operands");
  if ((int)tile <= KILN_TC_AUTO || (int)tile >= KILN_TC_TILES) tile = kiln_cuda_gemm_tc_auto(n, in, out, n_sm);
  if ((out + tiles_[tile].bn - 1) / tiles_[tile].bn > 65535)
    return kiln_error(KILN_EINVAL, "cuda gemm: %lld output columns", (long long)out);
  switch (tile) {
  case KILN_TC_64x128: return launch_kind_<64, 128, 1, 1>(kind, y, x, w, n, in, out, stream);
  case KILN_TC_128x64: return launch_kind_<128, 64, 1, 1>(kind, y, x, w, n, in, out, stream);
  case KILN_TC_128x192: return launch_kind_<128, 192, 1, 1>(kind, y, x, w, n, in, out, stream);
  case KILN_TC_128x256: return launch_kind_<128, 256, 1, 1>(kind, y, x, w, n, in, out, stream);
  case KILN_TC_64x256: return launch_kind_<64, 256, 1, 1>(kind, y, x, w, n, in, out, stream);
  case KILN_TC_128x128_2: return launch_kind_<128, 128, 2, 1>(kind, y, x, w, n, in, out, stream);
  case KILN_TC_64x128_2: return launch_kind_<64, 128, 2, 1>(kind, y, x, w, n, in, out, stream);
  case KILN_TC_128x128c2: return launch_kind_<128, 128, 1, 2>(kind, y, x, w, n, in, out, stream);
  case KILN_TC_128x256c2: return launch_kind_<128, 256, 1, 2>(kind, y, x, w, n, in, out, stream);
  case KILN_TC_64x128c2: return launch_kind_<64, 128, 1, 2>(kind, y, x, w, n, in, out, stream);
  case KILN_TC_64x128c4: return launch_kind_<64, 128, 1, 4>(kind, y, x, w, n, in, out, stream);
  case KILN_TC_128x128c2x2: return launch_kind_<128, 128, 1, 2, 2>(kind, y, x, w, n, in, out, stream);
  case KILN_TC_128x256c2x2: return launch_kind_<128, 256, 1, 2, 2>(kind, y, x, w, n, in, out, stream);
  case KILN_TC_128x128k2: return launch_kind_<128, 128, 1, 1, 1, 2>(kind, y, x, w, n, in, out, stream);
  case KILN_TC_128x256k2: return launch_kind_<128, 256, 1, 1, 1, 2>(kind, y, x, w, n, in, out, stream);
  default: return launch_kind_<128, 128, 1, 1>(kind, y, x, w, n, in, out, stream);
  }
}

extern "C" int kiln_cuda_gemm_tc_qkv(const kiln_tc_qkv *e, const uint16_t *x, const uint16_t *w, int64_t n,
                                     int64_t in, kiln_tc_tile tile, int n_sm, cudaStream_t stream) {
  const int64_t heads = (int64_t)e->n_heads + 2 * (int64_t)e->n_kv_heads;
  if (n <= 0 || in <= 0 || n > INT_MAX / 2 || in > INT_MAX / 2 || in % 8 || e->n_heads <= 0 || e->n_kv_heads <= 0 ||
      heads > 65535 || e->n_ctx <= 0 || !e->q_out || !e->k_cache || !e->v_cache || !e->rope || !e->step)
    return kiln_error(KILN_EINVAL, "cuda gemm q/k/v: unsupported shape %lld x %lld, %d + 2 x %d heads",
                      (long long)n, (long long)in, e->n_heads, e->n_kv_heads);
  if (((uintptr_t)x | (uintptr_t)w) & 15) return kiln_error(KILN_EINVAL, "cuda gemm q/k/v: misaligned operands");
  if ((int)tile < 0 || (int)tile >= KILN_TC_TILES || tiles_[tile].bn != 128)
    tile = (n + 127) / 128 * heads >= n_sm ? KILN_TC_128x128 : KILN_TC_64x128; /* a wave of 128-row tiles */
  const int64_t out = heads * 128;
  switch (tile) {
  case KILN_TC_64x128: return launch_<64, 128, 1, 1, 1, 1, KILN_GEMM_QKV>(NULL, x, w, n, in, out, stream, *e);
  case KILN_TC_128x128_2: return launch_<128, 128, 2, 1, 1, 1, KILN_GEMM_QKV>(NULL, x, w, n, in, out, stream, *e);
  case KILN_TC_64x128_2: return launch_<64, 128, 2, 1, 1, 1, KILN_GEMM_QKV>(NULL, x, w, n, in, out, stream, *e);
  case KILN_TC_128x128c2: return launch_<128, 128, 1, 2, 1, 1, KILN_GEMM_QKV>(NULL, x, w, n, in, out, stream, *e);
  case KILN_TC_64x128c2: return launch_<64, 128, 1, 2, 1, 1, KILN_GEMM_QKV>(NULL, x, w, n, in, out, stream, *e);
  case KILN_TC_64x128c4: return launch_<64, 128, 1, 4, 1, 1, KILN_GEMM_QKV>(NULL, x, w, n, in, out, stream, *e);
  case KILN_TC_128x128c2x2: return launch_<128, 128, 1, 2, 2, 1, KILN_GEMM_QKV>(NULL, x, w, n, in, out, stream, *e);
  case KILN_TC_128x128k2: return launch_<128, 128, 1, 1, 1, 2, KILN_GEMM_QKV>(NULL, x, w, n, in, out, stream, *e);
  default: return launch_<128, 128, 1, 1, 1, 1, KILN_GEMM_QKV>(NULL, x, w, n, in, out, stream, *e);
  }
}
