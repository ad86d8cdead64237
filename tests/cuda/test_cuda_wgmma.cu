/*
 * tests/cuda/test_cuda_wgmma.cu: the warpgroup-MMA building blocks of prefill attention (wgmma_dev.cuh) alone,
 * against products computed on the host: one warpgroup computes S = Q K^T (A in registers, K-major B through
 * kiln_wg_desc_k) and O = P V (A in registers, MN-major B through kiln_wg_desc_mn) from 64-row K and V tiles it
 * stored with kiln_wg_sw128_off, at head_dim 64 and 128, with the tiles at several offsets in shared memory (the
 * attention kernel's stages sit at 0, 16 KB, 32 KB and 48 KB). The fragments are built and read back with the
 * layouts the kernel assumes (wgmma_dev.cuh), so a wrong assumption there fails here by itself.
 * Skips (77) without a GPU, without sm_90a code, or on a device that is not compute capability 9.x.
 * Tolerance: NMSE 1e-6 (f32 sums of exact bf16 products; only the order of the sums differs).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "backend/cuda/attn_prefill.h"
#include "backend/cuda/wgmma_dev.cuh"
#include "cuda/gpu_test.h"
#include "kiln/half.h"

#define TOL_WG 1e-6

/* The m16k16 A fragment (mma.sync's layout, per warp) of rows r0 and r0 + 8, columns k0 .. k0 + 15 of a row-major
 * bf16 matrix with `ld` columns: lane 4g + t holds columns 2t, 2t + 1 (a0: row g, a1: row g + 8) and 2t + 8, 2t + 9
 * (a2, a3), the lower column in the low half. */
static __device__ void frag_a(uint32_t a[4], const uint16_t *m, int ld, int r0, int k0, int t) {
  const uint16_t *x = m + (int64_t)r0 * ld + k0 + 2 * t, *y = x + 8 * ld;
  a[0] = x[0] | (uint32_t)x[1] << 16;
  a[1] = y[0] | (uint32_t)y[1] << 16;
  a[2] = x[8] | (uint32_t)x[9] << 16;
  a[3] = y[8] | (uint32_t)y[9] << 16;
}

/* One warpgroup: K and V (64 x HD, row-major in global memory) into shared memory at byte `base` (a multiple of
 * 1,024 past a 1,024-aligned start), then S = Q K^T (64 x 64) and O = P V (64 x HD), written row-major. */
template <int HD>
static __global__ void __launch_bounds__(128) wg_probe(float *s_out, float *o_out, const uint16_t *q,
                                                       const uint16_t *k, const uint16_t *v, const uint16_t *p,
                                                       int base) {
  extern __shared__ __align__(128) unsigned char raw[];
  const uint32_t sb0 = kiln_smem_addr(raw), pad = (1024u - (sb0 & 1023u)) & 1023u;
  unsigned char *const sm = raw + pad + base;
  const uint32_t kt = sb0 + pad + (uint32_t)base, vt = kt + 64 * HD * 2;
  for (int i = threadIdx.x; i < 64 * HD / 8; i += 128) {
    const int r = i / (HD / 8), c = i % (HD / 8);
    *(uint4 *)(sm + kiln_wg_sw128_off(r, c, 64)) = ((const uint4 *)k)[i];
    *(uint4 *)(sm + 64 * HD * 2 + kiln_wg_sw128_off(r, c, 64)) = ((const uint4 *)v)[i];
  }
  kiln_wg_fence_smem();
  __syncthreads();

  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const int r0 = 16 * warp + g;
  /* every index into the fragments is a constant (loops unrolled): they must stay in registers */
  uint32_t qa[HD / 16][4], pa[4][4];
#pragma unroll
  for (int kd = 0; kd < HD / 16; kd++) frag_a(qa[kd], q, HD, r0, 16 * kd, t);
#pragma unroll
  for (int kk = 0; kk < 4; kk++) frag_a(pa[kk], p, 64, r0, 16 * kk, t);
  float s[8][4], o[HD / 8][4];
#pragma unroll
  for (int d = 0; d < HD / 8; d++) o[d][0] = o[d][1] = o[d][2] = o[d][3] = 0.f;

  kiln_wg_fence();
#pragma unroll
  for (int kd = 0; kd < HD / 16; kd++) kiln_wg_mma_rs<64, 0>(s, qa[kd], kiln_wg_desc_k(kt, 64, kd), kd > 0);
  kiln_wg_commit();
  kiln_wg_wait0();
  kiln_wg_fence();
#pragma unroll
  for (int kk = 0; kk < 4; kk++) kiln_wg_mma_rs<HD, 1>(o, pa[kk], kiln_wg_desc_mn(vt, 64, kk), 1);
  kiln_wg_commit();
  kiln_wg_wait0();

  /* accumulator block b: rows r0 (elements 0, 1) and r0 + 8 (2, 3), columns 8b + 2t, 8b + 2t + 1 */
#pragma unroll
  for (int b = 0; b < 8; b++)
#pragma unroll
    for (int e = 0; e < 4; e++) s_out[(r0 + (e >> 1) * 8) * 64 + 8 * b + 2 * t + (e & 1)] = s[b][e];
#pragma unroll
  for (int b = 0; b < HD / 8; b++)
#pragma unroll
    for (int e = 0; e < 4; e++) o_out[(r0 + (e >> 1) * 8) * HD + 8 * b + 2 * t + (e & 1)] = o[b][e];
}

static uint16_t *rand_bf16(int64_t n, float **as_f32) {
  uint16_t *b = (uint16_t *)malloc((size_t)n * 2);
  float *f = (float *)malloc((size_t)n * 4);
  for (int64_t i = 0; i < n; i++) f[i] = kiln_bf16_to_f32(b[i] = kiln_f32_to_bf16(gt_normal()));
  *as_f32 = f;
  return b;
}

template <int HD>
static void check(int base) {
  float *qf, *kf, *vf, *pf;
  uint16_t *q = rand_bf16(64 * HD, &qf), *k = rand_bf16(64 * HD, &kf), *v = rand_bf16(64 * HD, &vf);
  uint16_t *p = rand_bf16(64 * 64, &pf);
  float *s_ref = (float *)malloc(64 * 64 * 4), *o_ref = (float *)malloc(64 * HD * 4);
  for (int i = 0; i < 64; i++) {
    for (int j = 0; j < 64; j++) {
      double a = 0;
      for (int d = 0; d < HD; d++) a += (double)qf[i * HD + d] * kf[j * HD + d];
      s_ref[i * 64 + j] = (float)a;
    }
    for (int d = 0; d < HD; d++) {
      double a = 0;
      for (int j = 0; j < 64; j++) a += (double)pf[i * 64 + j] * vf[j * HD + d];
      o_ref[i * HD + d] = (float)a;
    }
  }
  uint16_t *dq = (uint16_t *)gt_dev(64 * HD * 2), *dk = (uint16_t *)gt_dev(64 * HD * 2);
  uint16_t *dv = (uint16_t *)gt_dev(64 * HD * 2), *dp = (uint16_t *)gt_dev(64 * 64 * 2);
  float *ds = (float *)gt_dev(64 * 64 * 4), *dout = (float *)gt_dev(64 * HD * 4); /* poisoned */
  gt_up(dq, q, 64 * HD * 2), gt_up(dk, k, 64 * HD * 2), gt_up(dv, v, 64 * HD * 2), gt_up(dp, p, 64 * 64 * 2);
  const size_t smem = 1024 + (size_t)base + 2 * 64 * HD * 2;
  GT_CUDA(cudaFuncSetAttribute(wg_probe<HD>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
  wg_probe<HD><<<1, 128, smem>>>(ds, dout, dq, dk, dv, dp, base);
  GT_CUDA(cudaGetLastError());
  float *s = (float *)malloc(64 * 64 * 4), *o = (float *)malloc(64 * HD * 4);
  gt_down(s, ds, 64 * 64 * 4);
  gt_down(o, dout, 64 * HD * 4);
  const double es = gt_nmse(s, s_ref, 64 * 64), eo = gt_nmse(o, o_ref, 64 * HD);
  GT_CHECK(es <= TOL_WG, "wgmma S = Q K^T (K-major B) head_dim %d, tiles at +%d: NMSE %.3g", HD, base, es);
  GT_CHECK(eo <= TOL_WG, "wgmma O = P V (MN-major B) head_dim %d, tiles at +%d: NMSE %.3g", HD, base, eo);
  free(q), free(k), free(v), free(p), free(qf), free(kf), free(vf), free(pf), free(s_ref), free(o_ref), free(s), free(o);
  cudaFree(dq), cudaFree(dk), cudaFree(dv), cudaFree(dp), cudaFree(ds), cudaFree(dout);
}

int main(void) {
  gt_skip_without_gpu();
  int major = 0;
  GT_CUDA(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, 0));
  if (!kiln_cuda_wgmma_built() || major != 9) {
    printf("SKIP: wgmma needs sm_90a code (built: %d) and a 9.x device (this one: %d.x)\n", kiln_cuda_wgmma_built(),
           major);
    return 77;
  }
  gt_seed(20261206);
  const int bases[] = {0, 16384, 32768, 49152};
  for (int i = 0; i < 4; i++) {
    check<64>(bases[i]);
    check<128>(bases[i]);
  }
  return gt_finish("test_cuda_wgmma");
}
