/*
 * backend/cuda/attn_prefill.cu: causal prefill attention (see attn_prefill.h), two kernels.
 *
 * head_dim 64 and 128: FlashAttention-2 on mma.sync, with sm_80 instructions only (mma.m16n8k16 bf16, ldmatrix,
 * cp.async; no WGMMA or TMA). Block = 64 queries of one q head, 4 warps; warp w owns query rows 16w .. 16w+15 for
 * the whole key loop, so its softmax state (max and sum of 2 rows per thread) and its output accumulator never
 * leave registers, and the warps meet only to hand over K/V tiles.
 *   - Q: bf16 (as the RoPE kernel rounds it) into shared memory by cp.async, ahead of the first K/V tile, then
 *     held as mma A fragments (ldmatrix.x4) for the key loop.
 *   - K, V: 64-key tiles, double-buffered with cp.async (tile j+1 lands while tile j computes), one barrier per
 *     tile. Keys at or past the block's last visible one are zero-filled, never read, so a masked probability
 *     only ever multiplies a zero (stale cache rows may hold anything, NaN included).
 *   - S = Q K^T on the tensor cores (K as B fragments, ldmatrix); online softmax in the log2 domain entirely in
 *     registers (a row's 4 lanes reduce with shuffles); P is packed to bf16 straight from the S accumulators,
 *     whose m16n8 layout is the m16k16 A layout cut in two; O += P V with V fragments from ldmatrix.trans.
 *   - Causal: key tiles past the block's last query are never loaded, only tiles that cross a warp's diagonal
 *     are masked, and a warp skips a tile that lies wholly after its rows (chunked prefill, pos0 % 64 != 0).
 *     Block ids run heaviest query tile first (all its key parts, then the next tile's), with the heads of one
 *     tile side by side (the q heads of a kv head read the same K/V, which then stays in L2), so the short tiles
 *     fill the tail of the grid.
 *   - Shared rows are head_dim bf16 with their 16-byte chunks XOR-swizzled by (row & 7): the 8 row addresses of
 *     every ldmatrix phase, and the loader's and epilogue's 16-byte accesses, hit 8 different bank groups.
 *   - The output is normalised, staged through shared memory and written as whole 16-byte chunks of a row.
 * Why 64 queries and not 128: at 16 rows a warp the fragments of Q, S and O take ~130 of the ~170 registers a
 * thread for head_dim 128, and a block's shared memory is 64 KB (2 stages of K and V; Q is staged in the second
 * stage before tile 1 is requested). Three 4-warp blocks then fit an SM (12 warps, 192 KB), where one 8-warp
 * block of 128 queries would fit once or twice; smaller blocks also shorten the causal tail.
 *
 * Any other head_dim (a multiple of 8 up to 256): WMMA 16x16x16 tiles, one block per 64 queries x 1 head,
 * 4 warps; scores and probabilities make a round trip through shared memory (see ap_wmma_kernel).
 */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include <mma.h>

#include "backend/cuda/attn_prefill.h"
#include "backend/cuda/cuda_common.h"
#include "backend/cuda/wgmma_dev.cuh"

#define AP_MAX_HD 256

/* ------------------------------------------------------------------------------------------------------------
 * head_dim 64 and 128: FlashAttention-2 on mma.sync
 *
 * Fragment layouts of mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 (PTX ISA, "matrix fragments for
 * mma.m16n8k16 with floating point type"). lane = 4 g + t (g = lane / 4 in 0..7, t = lane % 4 in 0..3); each
 * .b32 register holds two bf16, the lower column (A) or the lower k (B) in its low half:
 *   A 16x16 (row m, col k):  a0 = A[g][2t, 2t+1]   a1 = A[g+8][2t, 2t+1]
 *                            a2 = A[g][2t+8, 2t+9]   a3 = A[g+8][2t+8, 2t+9]
 *   B 16x8  (row k, col n):  b0 = B[2t, 2t+1][g]   b1 = B[2t+8, 2t+9][g]
 *   C 16x8  f32:             c0, c1 = C[g][2t, 2t+1]   c2, c3 = C[g+8][2t, 2t+1]
 * ldmatrix.m8n8.x4.b16: lanes 8i .. 8i+7 give the addresses of rows 0..7 of matrix i (16 bytes = 8 bf16 each);
 * register i of lane 4g + t receives row g, columns 2t, 2t+1 of matrix i; with .trans, column g, rows 2t, 2t+1.
 * Therefore, for one 16-wide step:
 *   Q  (A = Q[query][dim]):       matrix 0 = queries 0-7 x dims 0-7, 1 = queries 8-15 x dims 0-7,
 *                                 2 = queries 0-7 x dims 8-15, 3 = queries 8-15 x dims 8-15   -> a0 a1 a2 a3
 *   K  (B[dim][key] = K[key][dim]: K's rows are B's columns, no transpose), 16 keys x 16 dims:
 *                                 matrix 0 = keys 0-7 x dims 0-7 (b0 of keys 0-7), 1 = keys 0-7 x dims 8-15 (b1),
 *                                 2 = keys 8-15 x dims 0-7 (b0 of keys 8-15), 3 = keys 8-15 x dims 8-15 (b1)
 *   V  (B[key][dim] = V[key][dim], rows are k: .trans), 16 keys x 16 dims:
 *                                 matrix 0 = keys 0-7 x dims 0-7 (b0 of dims 0-7), 1 = keys 8-15 x dims 0-7 (b1),
 *                                 2 = keys 0-7 x dims 8-15 (b0 of dims 8-15), 3 = keys 8-15 x dims 8-15 (b1)
 *   P  (A over keys 16i .. 16i+15) from the accumulators s[] of the key blocks 2i (keys 16i + 0..7) and 2i+1:
 *                                 a0 = s[2i].c0,c1   a1 = s[2i].c2,c3   a2 = s[2i+1].c0,c1   a3 = s[2i+1].c2,c3
 * A thread's accumulator elements c0, c1 belong to row g of its warp's 16, c2, c3 to row g+8, for S and for O.
 * ------------------------------------------------------------------------------------------------------------ */

#define FA_BQ 64 /* queries per block */
#define FA_BK 64 /* keys per tile */
#define FA_THREADS 128
/* Blocks an SM must hold (caps the registers at 168 a thread for head_dim 128, 128 for 64); shared memory allows
 * 3 x 64 KB and 4 x 32 KB (wgmma at head_dim 64: 41 KB, fa_q_reload). */
#define FA_MIN_BLOCKS(hd) ((hd) == 64 ? 4 : 3)

/* Whether the wgmma form reloads Q's fragments from shared memory for every key tile instead of keeping them in
 * registers for the whole loop. ptxas of CUDA 13.0 mistracks the live range of registers that a wgmma reads A
 * from (a known fault with register-sourced wgmma, fixed in later assemblers): at head_dim 64 it packed the
 * probabilities of O += P V into the registers holding Q's fragments, so every key tile after the first
 * multiplied the previous tile's probabilities by K (the SASS: the HGMMAs of both products read R88-R103,
 * written once by Q's LDSM before the loop and again by the P packing in it). Fragments loaded in the iteration
 * that uses them have no live range for it to cut short. Head_dim 128 keeps Q in registers (its allocation is
 * right, and the test_cuda_ops cases of several key tiles check it): reloading would cost a third block an SM
 * (16 KB of shared memory more). */
static __host__ __device__ constexpr bool fa_q_reload(int hd, bool wg) { return wg && hd == 64; }

/* Key splitting: a block of 64 queries x 1 head may take part of its keys only, so that a short grid (few query
 * tiles and heads) still fills the GPU and the heaviest (last) query tiles stop setting the kernel's length.
 * A launch has `parts` blocks per (query tile, head) at most; a tile with t key tiles uses fa_parts(t) of them,
 * each over a run of at least FA_PART_TILES key tiles. Each part leaves its unnormalised output and its row
 * maxima and sums in a slot of the scratch; the last part to finish (a counter per (query tile, head)) combines
 * them. */
#define FA_MAX_PARTS 8
#define FA_PART_TILES 4
#define FA_SLOT_FLOATS(hd) (FA_BQ * (hd) + 2 * FA_BQ) /* o [64 x hd] in the threads' fragment order, m [64], l [64] */
typedef struct fa_split {
  unsigned *count; /* [query tile x heads] zero between launches */
  float *part;     /* [query tile x heads][parts] slots */
  int parts;       /* 1: no splitting (count and part unused) */
} fa_split;

/* A tile of t key tiles has parts <= ceil(t / FA_PART_TILES) < t key tiles a part on average, so the last part
 * starts at floor(t - t / parts) <= t - 2, and the tile's first query (at most 64 before its last key, which is in
 * key tile t - 1) comes after that part's first key: every query of the tile sees the first key of every part. */
static_assert(FA_PART_TILES >= 2, "fa_parts: every query must see the first key of every part");
static __host__ __device__ __forceinline__ int fa_parts(int ntiles, int parts) {
  return min(parts, (ntiles + FA_PART_TILES - 1) / FA_PART_TILES);
}

static __device__ __forceinline__ void fa_ldsm4(uint32_t r[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr)
               : "memory");
}
static __device__ __forceinline__ void fa_ldsm4_trans(uint32_t r[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr)
               : "memory");
}

/* c (16x8 f32) += a (16x16 bf16) b (16x8 bf16) */
static __device__ __forceinline__ void fa_mma(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

/* 2^x with ex2.approx: exp2f's accuracy (2 ulp) without its care for denormal results, far finer than the bf16
 * rounding of the probabilities it feeds; 2^-inf = 0. */
static __device__ __forceinline__ float fa_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

/* Waits for every cp.async group of the thread but the latest. */
static __device__ __forceinline__ void fa_cp_wait_one(void) { asm volatile("cp.async.wait_group 1;\n" ::: "memory"); }

/* Two f32 as bf16x2, round to nearest even, lo in the low half (the lower column of a fragment). */
static __device__ __forceinline__ uint32_t fa_bf16x2(float lo, float hi) {
  uint32_t r;
  asm("cvt.rn.bf16x2.f32 %0, %1, %2;\n" : "=r"(r) : "f"(hi), "f"(lo));
  return r;
}

/* P's A fragment for keys 16 kk .. 16 kk + 15 from the score blocks 2 kk and 2 kk + 1 (layouts above), as bf16 */
static __device__ __forceinline__ void fa_pack_p(uint32_t pa[4], const float (&s)[8][4], int kk) {
  pa[0] = fa_bf16x2(s[2 * kk][0], s[2 * kk][1]);
  pa[1] = fa_bf16x2(s[2 * kk][2], s[2 * kk][3]);
  pa[2] = fa_bf16x2(s[2 * kk + 1][0], s[2 * kk + 1][1]);
  pa[3] = fa_bf16x2(s[2 * kk + 1][2], s[2 * kk + 1][3]);
}

/* Requests one 64-key tile of K and V (keys k0 .. k0+63) into a stage: K at dst, V at dst + the tile size. The
 * thread copies 16-byte chunk c of the rows r0 + i * RSTEP; dst already holds its swizzled offset, which is the
 * same for all its rows because RSTEP is a multiple of 8. Keys at or past kend are zero-filled. */
template <int HD, int RS>
static __device__ __forceinline__ void fa_load_tile(uint32_t dst, const uint16_t *Kg, const uint16_t *Vg, int k0,
                                                    int kend, int r0, int c) {
  constexpr int RSTEP = FA_THREADS / (HD / 8), TILEB = FA_BK * HD * 2;
#pragma unroll
  for (int i = 0; i < FA_BK / RSTEP; i++) {
    const int key = k0 + r0 + i * RSTEP;
    const int ok = key < kend;
    const int64_t src = (int64_t)(ok ? key : 0) * HD + c * 8;
    kiln_cp16(dst + i * RSTEP * RS, Kg + src, ok ? 16 : 0);
    kiln_cp16(dst + TILEB + i * RSTEP * RS, Vg + src, ok ? 16 : 0);
  }
}

/* Where 16-byte chunk c (8 columns) of row r of a tile lives, in bytes from the tile's start. mma.sync (WG false):
 * rows of head_dim bf16 one after the other, chunks XOR-swizzled by (r & 7) within each 128 bytes. wgmma (WG
 * true): the 128-byte swizzle of its descriptors (wgmma_dev.cuh), i.e. the same swizzle but the columns 64-127 of
 * every row in a second 64-row tile of 128-byte rows after the first. At head_dim 64 the two coincide. */
template <int HD, bool WG>
struct fa_layout {
  static constexpr int RS = WG ? 128 : HD * 2;          /* bytes from a row to the next */
  static constexpr int HB = WG ? FA_BK * 128 : 128;     /* bytes from columns 0-63 of a row to its columns 64-127 */
  static __device__ __forceinline__ uint32_t off(int r, int c) { return kiln_swz_off(r, c, RS, HB); }
};

/* Block = (query tile, part, q head), numbered heads fastest, then part, then heaviest (last) query tile first: the
 * blocks go out in about the order of their work, longest first, as the hardware hands them to SMs as slots free
 * up, so that the short ones fill the end (with the part slowest, the long parts > 0 of the heavy tiles went out
 * last, and the SMs' active time ranged from 43% to 89% of the kernel's). A part a short tile does not use exits
 * at once. Shared memory: two stages of [K tile | V tile], each tile 64 rows x HD bf16 (swizzled, fa_layout); Q
 * is staged in stage 1's K tile (in a fifth tile where fa_q_reload), and the output in the stage the last tile did
 * not use.
 * WG: the block's 4 warps are one warpgroup, and S = Q K^T and O += P V run as wgmma (sm_90a) with Q and P in
 * registers (the same fragments as for mma.sync) and K and V read from shared memory by the tensor cores, where
 * mma.sync needs every warp to load them into registers with ldmatrix first. The warps then also run every
 * tile together: a warp whose rows all come before a tile's keys computes them masked (zero probabilities). */
template <int HD, bool WG>
static __global__ void __launch_bounds__(FA_THREADS, FA_MIN_BLOCKS(HD))
    fa2_kernel(uint16_t *out, const uint16_t *q, const uint16_t *k_cache, const uint16_t *v_cache,
               const kiln_cuda_step *step, int n, kiln_cuda_attn_shape sh, int n_qtiles, float scale_log2,
               fa_split sp) {
  static_assert(HD == 64 || HD == 128, "fa2_kernel: head_dim 64 or 128");
  kiln_pdl_trigger();
  kiln_pdl_wait();
  typedef fa_layout<HD, WG> lay;
  constexpr int RS = lay::RS, HB = lay::HB;
  constexpr int ROWB = HD * 2;             /* bytes per row */
  constexpr int CPR = HD / 8;              /* 16-byte chunks per row */
  constexpr int TILEB = FA_BK * ROWB;      /* bytes per K, V or Q tile */
  constexpr int RSTEP = FA_THREADS / CPR;  /* row step of a loading thread */
  constexpr int KD = HD / 16;              /* 16-wide steps over head_dim */
  static_assert(RSTEP % 8 == 0 && FA_BQ == FA_BK, "fa2_kernel: loader rows keep their swizzle");
  static_assert(TILEB % 1024 == 0, "fa2_kernel: every tile starts on the swizzle period");
  extern __shared__ __align__(128) unsigned char smem_raw[];
  /* wgmma's swizzle needs tiles on 1,024 bytes (the launch adds that much slack); mma.sync only 128 */
  const uint32_t sb0 = kiln_smem_addr(smem_raw);
  const uint32_t pad = WG ? (1024u - (sb0 & 1023u)) & 1023u : 0u;
  unsigned char *const smem = smem_raw + pad;
  const uint32_t sb = sb0 + pad;

  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int g = lane >> 2, tq = lane & 3;
  const int h = (int)(blockIdx.x % (unsigned)sh.n_heads);
  const int rest = (int)(blockIdx.x / (unsigned)sh.n_heads);
  const int qt = n_qtiles - 1 - rest / sp.parts, part = rest % sp.parts;
  const int kh = h / (sh.n_heads / sh.n_kv_heads);
  const int t0 = qt * FA_BQ, rows = min(FA_BQ, n - t0);
  const int pos0 = step->pos;
  const int kend = pos0 + t0 + rows; /* keys 0 .. kend-1 are visible to some row of the block */
  const int ntiles = (kend + FA_BK - 1) / FA_BK;
  /* this block's share of the tile's keys: tiles j0 .. j1-1 of `parts` near-equal runs (fa_parts) */
  const int parts = fa_parts(ntiles, sp.parts);
  if (part >= parts) return; /* the whole block: a tile of few keys is cut into fewer parts */
  const int j0 = part * ntiles / parts, j1 = (part + 1) * ntiles / parts;
  const int64_t base = ((int64_t)step->seq * sh.n_kv_heads + kh) * sh.n_ctx * HD;
  const uint16_t *Kg = k_cache + base, *Vg = v_cache + base;

  /* the Q tile (rows past the chunk zero-filled) into stage 1's K tile, free until tile 1 is requested (or, where
   * Q is reloaded every tile, into a tile of its own after the stages); then the first K/V tile into stage 0 */
  constexpr bool QRELOAD = fa_q_reload(HD, WG);
  const uint32_t qs = sb + (QRELOAD ? 4 : 2) * TILEB;
  const int ld_c = tid % CPR, ld_r0 = tid / CPR;
  const uint32_t ld_off = lay::off(ld_r0, ld_c);
#pragma unroll
  for (int i = 0; i < FA_BQ / RSTEP; i++) {
    const int r = ld_r0 + i * RSTEP;
    kiln_cp16(qs + ld_off + i * RSTEP * RS,
              q + ((int64_t)(t0 + (r < rows ? r : 0)) * sh.n_heads + h) * HD + ld_c * 8, r < rows ? 16 : 0);
  }
  kiln_cp_commit();
  fa_load_tile<HD, RS>(sb + ld_off, Kg, Vg, j0 * FA_BK, kend, ld_r0, ld_c);
  kiln_cp_commit();
  fa_cp_wait_one(); /* Q is in (the tile may still be in flight) */
  __syncthreads();

  /* Lane parts of the ldmatrix addresses (layouts above). Q and V: lanes 8-15 and 24-31 give rows 8-15, lanes
   * 16-31 the second 8 columns; K: lanes 16-31 give rows (keys) 8-15, lanes 8-15 and 24-31 the second 8 columns.
   * Every group of 8 rows starts at a multiple of 8, so a lane's row swizzle is lane & 7, and column chunk
   * 2j + hi of 16-wide step j (j < 4) sits at chunk (2j + hi) ^ (lane & 7); step j + 4m is HB m bytes further. */
  const int sw = lane & 7;
  const uint32_t qv_row = (uint32_t)((sw + ((lane >> 3) & 1) * 8) * RS);
  const uint32_t k_row = (uint32_t)((sw + (lane >> 4) * 8) * RS);
  uint32_t qv_col[4], k_col[4];
#pragma unroll
  for (int j = 0; j < 4; j++) {
    qv_col[j] = (uint32_t)(((2 * j + (lane >> 4)) ^ sw) << 4);
    k_col[j] = (uint32_t)(((2 * j + ((lane >> 3) & 1)) ^ sw) << 4);
  }

  uint32_t qa[KD][4];
  const uint32_t qa_at = qs + warp * 16 * RS + qv_row;
  if (!QRELOAD) {
#pragma unroll
    for (int kd = 0; kd < KD; kd++) fa_ldsm4(qa[kd], qa_at + (kd >> 2) * HB + qv_col[kd & 3]);
  }

  float o[2 * KD][4]; /* O: 8-column blocks over head_dim */
#pragma unroll
  for (int d = 0; d < 2 * KD; d++) o[d][0] = o[d][1] = o[d][2] = o[d][3] = 0.f;
  /* rows g and g+8: running max of the scaled scores (log2 domain), and this thread's part of the row sum (its
   * columns only; the quad adds its parts at the end, all of them were rescaled by the same factors) */
  float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.f, l1 = 0.f;
  const int qw = pos0 + t0 + warp * 16; /* position of the warp's first query */
  const int qp0 = qw + g, qp1 = qw + g + 8;

  for (int j = j0; j < j1; j++) {
    const int stage = (j - j0) & 1;
    kiln_cp_wait_all();
    if (WG) kiln_wg_fence_smem(); /* the tile's bytes, written by cp.async, to the tensor cores' reads */
    __syncthreads(); /* tile j is in, from every thread; every warp is done with tile j-1 and with Q's staging */
    if (j + 1 < j1)
      fa_load_tile<HD, RS>(sb + (stage ^ 1) * 2 * TILEB + ld_off, Kg, Vg, (j + 1) * FA_BK, kend, ld_r0, ld_c);
    kiln_cp_commit();
    const int k0 = j * FA_BK;
    if (!WG && k0 > qw + 15) continue; /* every key of the tile comes after the warp's last query */
    const uint32_t ks = sb + stage * 2 * TILEB, vs = ks + TILEB;

    /* S = Q K^T: s[b] holds keys k0 + 8b .. k0 + 8b + 7 */
    float s[8][4];
    if (WG) {
      /* K-major B: the tile's 64 key rows, 8-row groups 1,024 bytes apart; step kd at +32 bytes a row */
      if (QRELOAD) {
#pragma unroll
        for (int kd = 0; kd < KD; kd++) fa_ldsm4(qa[kd], qa_at + (kd >> 2) * HB + qv_col[kd & 3]);
      }
      kiln_wg_fence();
#pragma unroll
      for (int kd = 0; kd < KD; kd++)
        kiln_wg_mma_rs<64, 0>(s, qa[kd], kiln_wg_desc_k(ks, FA_BK, kd), kd > 0);
      kiln_wg_commit();
      kiln_wg_wait0();
    } else {
#pragma unroll
      for (int b = 0; b < 8; b++) s[b][0] = s[b][1] = s[b][2] = s[b][3] = 0.f;
#pragma unroll
      for (int kd = 0; kd < KD; kd++) {
#pragma unroll
        for (int kb = 0; kb < 4; kb++) {
          uint32_t kf[4];
          fa_ldsm4(kf, ks + kb * 16 * RS + k_row + (kd >> 2) * HB + k_col[kd & 3]);
          fa_mma(s[2 * kb], qa[kd], kf[0], kf[1]);
          fa_mma(s[2 * kb + 1], qa[kd], kf[2], kf[3]);
        }
      }
    }

    if (k0 + FA_BK - 1 > qw) { /* the tile crosses the diagonal of the warp's rows (or the last visible key) */
#pragma unroll
      for (int b = 0; b < 8; b++) {
#pragma unroll
        for (int e = 0; e < 2; e++) {
          const int key = k0 + 8 * b + 2 * tq + e;
          if (key > qp0) s[b][e] = -INFINITY;
          if (key > qp1) s[b][2 + e] = -INFINITY;
        }
      }
    }

    /* online softmax; the 4 lanes of a quad hold the same two rows. Every row of the tile sees the first key of
     * its part (fa_parts), so from the part's first tile on m0 and m1 are finite and no -inf - -inf arises (a
     * later tile wholly masked for a row leaves its max, rescales by 1 and adds zeros). */
    float mx0 = -INFINITY, mx1 = -INFINITY;
#pragma unroll
    for (int b = 0; b < 8; b++) {
      mx0 = fmaxf(mx0, fmaxf(s[b][0], s[b][1]));
      mx1 = fmaxf(mx1, fmaxf(s[b][2], s[b][3]));
    }
    mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 1));
    mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 1));
    mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 2));
    mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 2));
    const float mn0 = fmaxf(m0, mx0 * scale_log2), mn1 = fmaxf(m1, mx1 * scale_log2);
    const float al0 = fa_exp2(m0 - mn0), al1 = fa_exp2(m1 - mn1);
    m0 = mn0;
    m1 = mn1;
    float ls0 = 0.f, ls1 = 0.f;
#pragma unroll
    for (int b = 0; b < 8; b++) {
      s[b][0] = fa_exp2(fmaf(s[b][0], scale_log2, -mn0));
      s[b][1] = fa_exp2(fmaf(s[b][1], scale_log2, -mn0));
      s[b][2] = fa_exp2(fmaf(s[b][2], scale_log2, -mn1));
      s[b][3] = fa_exp2(fmaf(s[b][3], scale_log2, -mn1));
      ls0 += s[b][0] + s[b][1];
      ls1 += s[b][2] + s[b][3];
    }
    l0 = l0 * al0 + ls0;
    l1 = l1 * al1 + ls1;
#pragma unroll
    for (int d = 0; d < 2 * KD; d++) {
      o[d][0] *= al0;
      o[d][1] *= al0;
      o[d][2] *= al1;
      o[d][3] *= al1;
    }

    /* O += P V, 16 keys at a time; P's A fragment is two key blocks of s */
    if (WG) {
      /* every P fragment first: registers written between wgmmas would serialise them */
      uint32_t pa[4][4];
#pragma unroll
      for (int kk = 0; kk < 4; kk++) fa_pack_p(pa[kk], s, kk);
      /* MN-major B: keys are k (16 rows a step, 2,048 bytes), head_dim is N (64-column tiles HB apart) */
      kiln_wg_fence(); /* o and the P fragments were written by ordinary instructions */
#pragma unroll
      for (int kk = 0; kk < 4; kk++) kiln_wg_mma_rs<HD, 1>(o, pa[kk], kiln_wg_desc_mn(vs, FA_BK, kk), 1);
      kiln_wg_commit();
      kiln_wg_wait0(); /* o is complete, and the stage free for the copy after the next barrier */
    } else {
#pragma unroll
      for (int kk = 0; kk < 4; kk++) {
        uint32_t pa[4];
        fa_pack_p(pa, s, kk);
#pragma unroll
        for (int dd = 0; dd < KD; dd++) {
          uint32_t vf[4];
          fa_ldsm4_trans(vf, vs + kk * 16 * RS + qv_row + (dd >> 2) * HB + qv_col[dd & 3]);
          fa_mma(o[2 * dd], pa, vf[0], vf[1]);
          fa_mma(o[2 * dd + 1], pa, vf[2], vf[3]);
        }
      }
    }
  }

  l0 += __shfl_xor_sync(0xffffffffu, l0, 1);
  l1 += __shfl_xor_sync(0xffffffffu, l1, 1);
  l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
  l1 += __shfl_xor_sync(0xffffffffu, l1, 2);
  const int r0 = warp * 16 + g; /* r0 & 7 == (r0 + 8) & 7 == g */
  if (parts > 1) {
    /* Publish this part (o unnormalised, m, l); the block that arrives last adds all parts up, in part order
     * from memory, so the sum is the same whichever block that is. */
    const int tile = qt * sh.n_heads + h;
    float *const tp = sp.part + (size_t)tile * sp.parts * FA_SLOT_FLOATS(HD);
    float *const mine = tp + (size_t)part * FA_SLOT_FLOATS(HD);
#pragma unroll
    for (int d = 0; d < 2 * KD; d++)
      __stcg((float4 *)mine + d * FA_THREADS + tid, make_float4(o[d][0], o[d][1], o[d][2], o[d][3]));
    if (tq == 0) {
      float *ml = mine + FA_BQ * HD;
      __stcg(ml + r0, m0), __stcg(ml + r0 + 8, m1);
      __stcg(ml + FA_BQ + r0, l0), __stcg(ml + FA_BQ + r0 + 8, l1);
    }
    __threadfence();
    __syncthreads();
    __shared__ int last;
    if (tid == 0) {
      last = atomicAdd(sp.count + tile, 1u) == (unsigned)parts - 1;
      if (last) sp.count[tile] = 0; /* every part has arrived: ready for the next launch */
    }
    __syncthreads();
    if (!last) return;
    __threadfence(); /* the other parts' writes, seen through their fences, before our reads */
    float M0 = -INFINITY, M1 = -INFINITY;
    for (int p = 0; p < parts; p++) {
      const float *ml = tp + (size_t)p * FA_SLOT_FLOATS(HD) + FA_BQ * HD;
      M0 = fmaxf(M0, __ldcg(ml + r0)), M1 = fmaxf(M1, __ldcg(ml + r0 + 8));
    }
    /* part 0 holds key 0, so M0 and M1 are finite; o is rebuilt from the slots, in part order */
    l0 = l1 = 0.f;
#pragma unroll
    for (int d = 0; d < 2 * KD; d++) o[d][0] = o[d][1] = o[d][2] = o[d][3] = 0.f;
    for (int p = 0; p < parts; p++) {
      const float *slot = tp + (size_t)p * FA_SLOT_FLOATS(HD), *ml = slot + FA_BQ * HD;
      const float w0 = fa_exp2(__ldcg(ml + r0) - M0), w1 = fa_exp2(__ldcg(ml + r0 + 8) - M1);
      l0 = fmaf(w0, __ldcg(ml + FA_BQ + r0), l0);
      l1 = fmaf(w1, __ldcg(ml + FA_BQ + r0 + 8), l1);
#pragma unroll
      for (int d = 0; d < 2 * KD; d++) {
        const float4 v = __ldcg((const float4 *)slot + d * FA_THREADS + tid);
        o[d][0] = fmaf(w0, v.x, o[d][0]), o[d][1] = fmaf(w0, v.y, o[d][1]);
        o[d][2] = fmaf(w1, v.z, o[d][2]), o[d][3] = fmaf(w1, v.w, o[d][3]);
      }
    }
  }

  /* normalise; stage the warp's 16 rows in the stage the last tile did not use (no warp reads it any more and
   * no copy into it is in flight), then write whole rows, 16 bytes a lane */
  const float inv0 = 1.f / l0, inv1 = 1.f / l1;
  unsigned char *os = smem + ((j1 - j0) & 1) * 2 * TILEB;
#pragma unroll
  for (int d = 0; d < 2 * KD; d++) {
    *(uint32_t *)(os + lay::off(r0, d) + tq * 4) = fa_bf16x2(o[d][0] * inv0, o[d][1] * inv0);
    *(uint32_t *)(os + lay::off(r0 + 8, d) + tq * 4) = fa_bf16x2(o[d][2] * inv1, o[d][3] * inv1);
  }
  __syncwarp();
#pragma unroll
  for (int i = 0; i < 16 * CPR / 32; i++) {
    const int idx = i * 32 + lane, r = warp * 16 + idx / CPR, c = idx % CPR;
    if (r < rows)
      *(uint4 *)(out + ((int64_t)(t0 + r) * sh.n_heads + h) * HD + c * 8) =
          *(const uint4 *)(os + lay::off(r, c));
  }
}

/* ------------------------------------------------------------------------------------------------------------
 * Any other head_dim: WMMA
 *
 * Block = (tile of 64 queries, one query head), 4 warps; warp w owns query rows 16w .. 16w+15 from start to end
 * (scores, softmax, rescaling, P V), so within a key tile the warps only meet at the loads of K and V. Q and the
 * output accumulator stay in registers as WMMA fragments for the whole key loop; to rescale the accumulator by
 * the running softmax factor of each row, the kernel reads the (unspecified) fragment layout off a probe tile
 * once. Shared rows are padded (16 bytes for bf16, 16 for f32) against bank conflicts; every WMMA pointer
 * stays 32-byte aligned because 16 rows of any padded stride are a multiple of 32 bytes. A head_dim that is not a
 * multiple of 16 (the tensor-core step) is padded with zero columns in shared memory.
 * ------------------------------------------------------------------------------------------------------------ */

#define AP_BQ 64
#define AP_BK 64
#define AP_THREADS 128

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
    ap_wmma_kernel(uint16_t *out, const uint16_t *q, const uint16_t *k_cache, const uint16_t *v_cache,
                   const kiln_cuda_step *step, int64_t n, kiln_cuda_attn_shape sh, float scale_log2) {
  extern __shared__ __align__(128) unsigned char smem[];
  kiln_pdl_trigger();
  kiln_pdl_wait();
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

  /* Q tile (rows past the chunk are zero), m = -inf, l = 0 */
  for (int idx = threadIdx.x; idx < AP_BQ * hdp; idx += AP_THREADS) {
    int r = idx / hdp, d = idx % hdp;
    Qs[r * L.ldq + d] = __ushort_as_bfloat16(r < rows && d < hd ? q[((t_first + r) * sh.n_heads + h) * hd + d] : 0);
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

/* ---- key splitting, host side ---- */

/* Splitting needs at most this many (query tile, head) pairs (kiln_cuda_attn_prefill_parts gives 2 parts or more
 * only to grids of at most FA_SPLIT_BLOCKS_PER_SM / 2 blocks an SM) and this many slots. */
#define FA_SPLIT_BLOCKS_PER_SM 6
static int64_t counter_bytes_(int n_sm) {
  return ((int64_t)FA_SPLIT_BLOCKS_PER_SM / 2 * n_sm * 4 + 255) / 256 * 256;
}

extern "C" int kiln_cuda_attn_prefill_split_env(const char *v) {
  if (!v || !*v || !strcmp(v, "auto")) return FA_MAX_PARTS;
  char *end;
  const long k = strtol(v, &end, 10);
  return *end || k < 1 || k > FA_MAX_PARTS ? -1 : (int)k;
}

static int split_cap_(void) {
  static int cap = -1;
  if (cap < 0) {
    const int c = kiln_cuda_attn_prefill_split_env(getenv("KILN_CUDA_ATTN_PF_SPLIT"));
    cap = c < 0 ? FA_MAX_PARTS : c; /* refused at backend creation; ops called directly: the default */
  }
  return cap;
}

static int splits_(int hd) { return hd == 64 || hd == 128; }

extern "C" int kiln_cuda_attn_prefill_parts(const kiln_cuda_attn_shape *sh, int64_t n, int n_sm) {
  if (!splits_(sh->head_dim) || n <= 0 || n_sm <= 0) return 1;
  const int64_t pairs = (n + FA_BQ - 1) / FA_BQ * sh->n_heads;
  const int64_t fill = (int64_t)FA_SPLIT_BLOCKS_PER_SM * n_sm / pairs;
  return (int)(fill < 2 ? 1 : fill < split_cap_() ? fill : split_cap_());
}

extern "C" int64_t kiln_cuda_attn_prefill_scratch(const kiln_cuda_attn_shape *sh, int n_sm) {
  if (!splits_(sh->head_dim) || n_sm <= 0) return 0;
  return counter_bytes_(n_sm) + (int64_t)FA_SPLIT_BLOCKS_PER_SM * n_sm * FA_SLOT_FLOATS(sh->head_dim) * 4;
}

/* ---- which tensor-core instructions, host side ---- */

extern "C" int kiln_cuda_wgmma_built(void) {
#if KILN_CUDA_WGMMA
  return 1;
#else
  return 0;
#endif
}

extern "C" int kiln_cuda_attn_prefill_mma_env(const char *v) {
  if (!v || !*v || !strcmp(v, "auto")) return KILN_CUDA_PF_MMA_AUTO;
  if (!strcmp(v, "wgmma")) return KILN_CUDA_PF_MMA_WGMMA;
  if (!strcmp(v, "sync")) return KILN_CUDA_PF_MMA_SYNC;
  return -1;
}

static int pf_mma_ = -1;
extern "C" void kiln_cuda_attn_prefill_mma(int mode) {
  pf_mma_ = mode == KILN_CUDA_PF_MMA_WGMMA || mode == KILN_CUDA_PF_MMA_SYNC ? mode : KILN_CUDA_PF_MMA_AUTO;
}

/* Whether this launch runs the wgmma form: asked for (or auto) and possible, i.e. built for sm_90a and the
 * current device is compute capability 9.x. Asked for where it is not possible: the mma.sync form. */
static int use_wgmma_(int *wg) {
  if (pf_mma_ < 0) {
    const int m = kiln_cuda_attn_prefill_mma_env(getenv("KILN_CUDA_ATTN_PF_MMA"));
    pf_mma_ = m < 0 ? KILN_CUDA_PF_MMA_AUTO : m; /* refused at backend creation; ops called directly: auto */
  }
  *wg = 0;
  if (pf_mma_ == KILN_CUDA_PF_MMA_SYNC || !kiln_cuda_wgmma_built()) return 0;
  static int major[KILN_CUDA_MAX_DEVICES]; /* compute capability major + 1; 0: not asked yet */
  int dev = 0, mj = 0;
  KILN_CUDA_CHECK(cudaGetDevice(&dev));
  if (dev < KILN_CUDA_MAX_DEVICES && major[dev]) {
    mj = major[dev] - 1;
  } else {
    KILN_CUDA_CHECK(cudaDeviceGetAttribute(&mj, cudaDevAttrComputeCapabilityMajor, dev));
    if (dev < KILN_CUDA_MAX_DEVICES) major[dev] = mj + 1;
  }
  *wg = mj == 9;
  return 0;
}

extern "C" int kiln_cuda_attn_prefill_uses_wgmma(int *wg) { return use_wgmma_(wg); }

template <int HD, bool WG>
static int fa2_launch(uint16_t *out, const uint16_t *q, const uint16_t *k_cache, const uint16_t *v_cache,
                      const kiln_cuda_step *step, int64_t n, const kiln_cuda_attn_shape *sh, void *scratch, int n_sm,
                      cudaStream_t stream) {
  static size_t smem_set[KILN_CUDA_MAX_DEVICES];
  /* 2 stages x (K tile + V tile); wgmma: and the slack to start them on 1,024 bytes, and Q's own tile where it is
   * reloaded every key tile */
  const size_t bytes = (size_t)(4 + fa_q_reload(HD, WG)) * FA_BK * HD * 2 + (WG ? 1024 : 0);
  const int64_t n_qtiles = (n + FA_BQ - 1) / FA_BQ;
  fa_split sp = {NULL, NULL, scratch ? kiln_cuda_attn_prefill_parts(sh, n, n_sm) : 1};
  if (sp.parts > 1) {
    sp.count = (unsigned *)scratch;
    sp.part = (float *)((char *)scratch + counter_bytes_(n_sm));
  }
  const int64_t blocks = n_qtiles * sh->n_heads * sp.parts;
  if (blocks > INT_MAX)
    return kiln_error(KILN_EUNSUPPORTED, "cuda prefill attention: %lld tokens x %d heads", (long long)n,
                      sh->n_heads);
  int rc = kiln_cuda__allow_smem((const void *)fa2_kernel<HD, WG>, bytes, smem_set, 1);
  if (rc) return rc;
  const float scale_log2 = 1.4426950408889634f / sqrtf((float)HD);
  KILN_CUDA_CHECK(kiln_launch(fa2_kernel<HD, WG>, dim3((unsigned)blocks), dim3(FA_THREADS), bytes, stream, out, q,
                              k_cache, v_cache, step, (int)n, *sh, (int)n_qtiles, scale_log2, sp));
  return 0;
}

template <int NF>
static int ap_wmma_launch_nf(uint16_t *out, const uint16_t *q, const uint16_t *k_cache, const uint16_t *v_cache,
                             const kiln_cuda_step *step, int64_t n, const kiln_cuda_attn_shape *sh,
                             cudaStream_t stream) {
  static size_t smem_set[KILN_CUDA_MAX_DEVICES];
  ap_layout L = ap_layout_of((sh->head_dim + 15) / 16 * 16);
  int rc = kiln_cuda__allow_smem((const void *)ap_wmma_kernel<NF>, L.bytes, smem_set, 1);
  if (rc) return rc;
  dim3 grid((unsigned)((n + AP_BQ - 1) / AP_BQ), (unsigned)sh->n_heads);
  float scale_log2 = 1.4426950408889634f / sqrtf((float)sh->head_dim);
  KILN_CUDA_CHECK(kiln_launch(ap_wmma_kernel<NF>, grid, dim3(AP_THREADS), L.bytes, stream, out, q, k_cache, v_cache,
                              step, n, *sh, scale_log2));
  return 0;
}

extern "C" int kiln_cuda_attn_prefill(uint16_t *out, const uint16_t *q, const uint16_t *k_cache,
                                      const uint16_t *v_cache, const kiln_cuda_step *step, int64_t n,
                                      const kiln_cuda_attn_shape *sh, void *scratch, int n_sm,
                                      cudaStream_t stream) {
  if (sh->head_dim <= 0 || sh->head_dim % 8 || sh->head_dim > AP_MAX_HD || sh->n_kv_heads <= 0 ||
      sh->n_heads % sh->n_kv_heads || n < 0 || n > (1 << 24))
    return kiln_error(KILN_EUNSUPPORTED, "cuda prefill attention: head_dim %d, %d heads over %d kv heads",
                      sh->head_dim, sh->n_heads, sh->n_kv_heads);
  if (n == 0) return 0;
  int wg = 0, rc;
  if ((sh->head_dim == 64 || sh->head_dim == 128) && (rc = use_wgmma_(&wg))) return rc;
  switch (sh->head_dim) {
  case 64:
    return wg ? fa2_launch<64, true>(out, q, k_cache, v_cache, step, n, sh, scratch, n_sm, stream)
              : fa2_launch<64, false>(out, q, k_cache, v_cache, step, n, sh, scratch, n_sm, stream);
  case 128:
    return wg ? fa2_launch<128, true>(out, q, k_cache, v_cache, step, n, sh, scratch, n_sm, stream)
              : fa2_launch<128, false>(out, q, k_cache, v_cache, step, n, sh, scratch, n_sm, stream);
  default:
    if (sh->head_dim <= 128) return ap_wmma_launch_nf<8>(out, q, k_cache, v_cache, step, n, sh, stream);
    return ap_wmma_launch_nf<16>(out, q, k_cache, v_cache, step, n, sh, stream);
  }
}
