/*
 * tests/cuda/test_cuda_ops.c: every CUDA op against the CPU reference ops (backend/cpu/ref_ops.h) on fresh random
 * inputs, with the outputs poisoned (all bits set: NaN in f32 and bf16) before each run.
 *
 * Tolerances (NMSE, see gpu_test.h): f32 results computed from the same bf16 operands as the reference: 1e-5;
 * bf16 results (one rounding of the output): 1e-4; results where the kernel itself rounds intermediate operands
 * to bf16 (prefill attention: q and the probabilities enter the tensor cores as bf16): 1e-3. Exact where the op
 * is a copy (embedding).
 */
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <cublas_v2.h>

#include "backend/cpu/ref_ops.h"
#include "backend/cuda/attn_decode.h"
#include "backend/cuda/attn_prefill.h"
#include "backend/cuda/compare.h"
#include "backend/cuda/embed.h"
#include "backend/cuda/gemm.h"
#include "backend/cuda/gemm_tc.h"
#include "backend/cuda/gemv.h"
#include "backend/cuda/rmsnorm.h"
#include "backend/cuda/rope.h"
#include "backend/cuda/sample.h"
#include "backend/cuda/swiglu.h"
#include "cuda/gpu_test.h"

#define TOL_F32 1e-5
#define TOL_BF16_OUT 1e-4
#define TOL_BF16_OPS 1e-3

static int n_sm;

static uint16_t *rand_bf16(int64_t n, float scale) {
  uint16_t *p = malloc((size_t)n * 2);
  for (int64_t i = 0; i < n; i++) p[i] = kiln_f32_to_bf16(gt_normal() * scale);
  return p;
}

static float *rand_f32(int64_t n, float mean, float scale) {
  float *p = malloc((size_t)n * 4);
  for (int64_t i = 0; i < n; i++) p[i] = mean + gt_normal() * scale;
  return p;
}

static float *bf16_to_f32_arr(const uint16_t *h, int64_t n) {
  float *p = malloc((size_t)n * 4);
  for (int64_t i = 0; i < n; i++) p[i] = kiln_bf16_to_f32(h[i]);
  return p;
}

/* ---- embedding ---- */
static void test_embed(int64_t V, int64_t H) {
  const int64_t n = 9;
  uint16_t *table = rand_bf16(V * H, 1.f);
  int32_t ids[9];
  for (int i = 0; i < n; i++) ids[i] = (int32_t)(gt_next() % (uint64_t)V);
  ids[3] = (int32_t)(V - 1);
  uint16_t *d_table = gt_dev((size_t)V * H * 2);
  int32_t *d_ids = gt_dev(sizeof ids);
  float *d_x = gt_dev((size_t)n * H * 4);
  unsigned long long *d_cell = gt_dev(8);
  gt_up(d_table, table, (size_t)V * H * 2);
  gt_up(d_ids, ids, sizeof ids);
  GT_OK(kiln_cuda_embed(d_x, d_table, V, H, d_ids, n, d_cell, 0));
  float *x = malloc((size_t)n * H * 4), *ref = malloc((size_t)n * H * 4);
  unsigned long long cell;
  gt_down(x, d_x, (size_t)n * H * 4);
  gt_down(&cell, d_cell, 8);
  kiln_ref_embed(ref, table, KILN_BF16, H, ids, n);
  GT_CHECK(memcmp(x, ref, (size_t)n * H * 4) == 0, "embed V=%lld H=%lld: not an exact copy", (long long)V,
           (long long)H);
  GT_CHECK(cell == 0, "embed: reset cell not cleared");
  /* an id out of range gives NaN, never a wild read */
  ids[0] = (int32_t)V + 5;
  gt_up(d_ids, ids, sizeof ids);
  gt_poison(d_x, (size_t)n * H * 4);
  GT_OK(kiln_cuda_embed(d_x, d_table, V, H, d_ids, 1, NULL, 0));
  gt_down(x, d_x, (size_t)H * 4);
  int nan = 0;
  for (int64_t i = 0; i < H; i++) nan += isnan(x[i]);
  GT_CHECK(nan == H, "embed: bad id gave %d NaN of %lld", nan, (long long)H);
  free(table), free(x), free(ref);
  cudaFree(d_table), cudaFree(d_ids), cudaFree(d_x), cudaFree(d_cell);
}

/* ---- residual add + RMSNorm ---- */
static void test_add_rmsnorm(int64_t n, int64_t dim, int with_r, int with_rb) {
  const float eps = 1e-6f;
  float *x = rand_f32(n * dim, 0.f, 3.f), *r = rand_f32(n * dim, 0.f, 1.f), *w = rand_f32(dim, 1.f, 0.1f);
  float *rb = rand_f32(dim, 0.f, 0.5f);
  float *d_x = gt_dev((size_t)n * dim * 4), *d_r = gt_dev((size_t)n * dim * 4), *d_w = gt_dev((size_t)dim * 4);
  float *d_rb = gt_dev((size_t)dim * 4);
  uint16_t *d_y = gt_dev((size_t)n * dim * 2);
  gt_up(d_x, x, (size_t)n * dim * 4);
  gt_up(d_r, r, (size_t)n * dim * 4);
  gt_up(d_w, w, (size_t)dim * 4);
  gt_up(d_rb, rb, (size_t)dim * 4);
  GT_OK(kiln_cuda_add_rmsnorm(d_y, d_x, with_r ? d_r : NULL, with_rb ? d_rb : NULL, d_w, n, dim, eps, 0));
  if (!with_r) memset(r, 0, (size_t)n * dim * 4);
  if (with_rb) kiln_ref_add_bias(r, rb, KILN_F32, n, dim); /* the reference adds r + rb as one residual */
  uint16_t *y = malloc((size_t)n * dim * 2);
  float *x2 = malloc((size_t)n * dim * 4), *ref = malloc((size_t)n * dim * 4);
  gt_down(y, d_y, (size_t)n * dim * 2);
  gt_down(x2, d_x, (size_t)n * dim * 4);
  if (with_r || with_rb) kiln_ref_add_rmsnorm(ref, x, r, w, KILN_F32, n, dim, eps);
  else kiln_ref_rmsnorm(ref, x, w, KILN_F32, n, dim, eps);
  float *yf = bf16_to_f32_arr(y, n * dim);
  double e_x = gt_nmse(x2, x, n * dim), e_y = gt_nmse(yf, ref, n * dim);
  GT_CHECK(e_x <= 1e-12, "add_rmsnorm n=%lld dim=%lld: residual NMSE %.3g", (long long)n, (long long)dim, e_x);
  GT_CHECK(e_y <= TOL_BF16_OUT, "add_rmsnorm n=%lld dim=%lld r=%d rb=%d: NMSE %.3g", (long long)n, (long long)dim,
           with_r, with_rb, e_y);
  free(x), free(r), free(w), free(rb), free(y), free(x2), free(ref), free(yf);
  cudaFree(d_x), cudaFree(d_r), cudaFree(d_w), cudaFree(d_rb), cudaFree(d_y);
}

/* ---- decode GEMV, every prologue and epilogue ---- */
static void test_gemv(int64_t N, int64_t K, kiln_cuda_gemv_mode mode, int in_bf16, int norm, int bias) {
  const float eps = 1e-6f;
  uint16_t *W = rand_bf16(N * K, 0.05f);
  float *x = rand_f32(K, 0.f, 1.f), *nw = rand_f32(K, 1.f, 0.1f), *b = rand_f32(N, 0.f, 0.5f);
  float *y0 = rand_f32(N, 0.f, 1.f);
  uint16_t *xb = malloc((size_t)K * 2);
  float *xin = malloc((size_t)K * 4);
  /* the input as the kernel sees it: bf16 of (normalised) x */
  double ss = 0;
  for (int64_t i = 0; i < K; i++) ss += (double)x[i] * x[i];
  float inv = norm ? (float)(1.0 / sqrt(ss / (double)K + eps)) : 1.f;
  for (int64_t i = 0; i < K; i++) {
    xb[i] = kiln_f32_to_bf16(norm ? nw[i] * (x[i] * inv) : x[i]);
    xin[i] = kiln_bf16_to_f32(xb[i]);
  }
  uint16_t *d_W = gt_dev((size_t)N * K * 2), *d_xb = gt_dev((size_t)K * 2), *d_yb = gt_dev((size_t)N);
  float *d_x = gt_dev((size_t)K * 4), *d_nw = gt_dev((size_t)K * 4), *d_b = gt_dev((size_t)N * 4);
  float *d_y = gt_dev((size_t)N * 4);
  unsigned long long *d_cell = gt_dev(8);
  gt_up(d_W, W, (size_t)N * K * 2);
  gt_up(d_xb, xb, (size_t)K * 2);
  gt_up(d_x, x, (size_t)K * 4);
  gt_up(d_nw, nw, (size_t)K * 4);
  gt_up(d_b, b, (size_t)N * 4);
  if (mode == KILN_GEMV_ADD) gt_up(d_y, y0, (size_t)N * 4);
  GT_CUDA(cudaMemset(d_cell, 0, 8));
  kiln_cuda_gemv_args a = {.w = d_W, .n_rows = N, .k = K, .x_bf16 = in_bf16 ? d_xb : NULL,
                           .x_f32 = in_bf16 ? NULL : d_x, .norm_w = norm ? d_nw : NULL, .eps = eps, .mode = mode,
                           .y = d_y, .bias = bias ? d_b : NULL, .y_bf16 = d_yb, .argmax = d_cell};
  GT_OK(kiln_cuda_gemv(&a, 0));
  float *ref = malloc((size_t)N * 4), *got = malloc((size_t)N * 4);
  kiln_ref_matmul(ref, xin, W, KILN_BF16, 1, K, N);
  const char *mn[] = {"store", "add", "swiglu", "argmax"};
  if (mode == KILN_GEMV_SWIGLU) {
    int64_t h = N / 2;
    float *g = malloc((size_t)h * 4), *u = malloc((size_t)h * 4), *act = malloc((size_t)h * 4);
    uint16_t *yb = malloc((size_t)h * 2);
    for (int64_t i = 0; i < h; i++) g[i] = ref[2 * i], u[i] = ref[2 * i + 1];
    kiln_ref_swiglu(act, g, u, h);
    gt_down(yb, d_yb, (size_t)h * 2);
    float *yf = bf16_to_f32_arr(yb, h);
    double e = gt_nmse(yf, act, h);
    GT_CHECK(e <= TOL_BF16_OUT, "gemv %s %lldx%lld: NMSE %.3g", mn[mode], (long long)N, (long long)K, e);
    free(g), free(u), free(act), free(yb), free(yf);
  } else {
    for (int64_t i = 0; i < N; i++) {
      if (mode == KILN_GEMV_ADD) ref[i] += y0[i];
      if (bias && (mode == KILN_GEMV_STORE || mode == KILN_GEMV_ADD)) ref[i] += b[i];
    }
    gt_down(got, d_y, (size_t)N * 4);
    double e = gt_nmse(got, ref, N);
    GT_CHECK(e <= TOL_F32, "gemv %s %lldx%lld in_bf16=%d norm=%d: NMSE %.3g", mn[mode], (long long)N, (long long)K,
             in_bf16, norm, e);
    if (mode == KILN_GEMV_ARGMAX) {
      unsigned long long cell;
      gt_down(&cell, d_cell, 8);
      int64_t idx = kiln_cuda_argmax_index(cell), mine = kiln_ref_argmax(got, N), want = kiln_ref_argmax(ref, N);
      GT_CHECK(idx == mine, "gemv argmax: cell says %lld, its own logits say %lld", (long long)idx, (long long)mine);
      GT_CHECK(idx >= 0 && ref[idx] >= ref[want] - 1e-3f * fabsf(ref[want]),
               "gemv argmax: %lld is not a maximum of the reference (%lld)", (long long)idx, (long long)want);
    }
  }
  free(W), free(x), free(nw), free(b), free(y0), free(xb), free(xin), free(ref), free(got);
  cudaFree(d_W), cudaFree(d_xb), cudaFree(d_yb), cudaFree(d_x), cudaFree(d_nw), cudaFree(d_b), cudaFree(d_y);
  cudaFree(d_cell);
}

/* ---- RoPE's table ---- */
/* The device table of positions 0 .. n_pos-1 for frequencies inv (host), checked against the CPU reference:
 * kiln_ref_rope of the vector (1, .., 1, 0, .., 0) leaves exactly cos(a_i), then sin(a_i). Both take the cosine
 * and sine in f64 and round, so they may differ only where the two libraries' f64 results round apart: at most
 * one f32 ulp. The caller frees the table. */
static float *rope_table_(const float *inv, int hd, int n_pos, const char *what) {
  float *d_inv = gt_dev((size_t)hd / 2 * 4), *d_rope = gt_dev((size_t)n_pos * hd * 4);
  gt_up(d_inv, inv, (size_t)hd / 2 * 4);
  GT_OK(kiln_cuda_rope_table(d_rope, d_inv, hd, n_pos, 0));
  float *got = malloc((size_t)n_pos * hd * 4), *want = malloc((size_t)n_pos * hd * 4);
  int32_t *pos = malloc((size_t)n_pos * 4);
  GT_CHECK(got && want && pos, "rope table: out of host memory");
  if (!got || !want || !pos) abort();
  gt_down(got, d_rope, (size_t)n_pos * hd * 4);
  for (int p = 0; p < n_pos; p++) {
    pos[p] = p;
    for (int i = 0; i < hd; i++) want[(int64_t)p * hd + i] = i < hd / 2 ? 1.f : 0.f;
  }
  kiln_ref_rope(want, pos, n_pos, 1, hd, inv);
  int64_t exact = 0, far = 0;
  for (int64_t i = 0; i < (int64_t)n_pos * hd; i++) {
    uint32_t a, b;
    memcpy(&a, &got[i], 4), memcpy(&b, &want[i], 4);
    const int64_t ulps = (int64_t)a - (int64_t)b;
    exact += ulps == 0;
    far += (ulps > 1 || ulps < -1) || ((a ^ b) >> 31 && a != b);
  }
  GT_CHECK(far == 0, "rope table %s hd=%d positions=%d: %lld values more than 1 ulp from the reference (%lld exact)",
           what, hd, n_pos, (long long)far, (long long)exact);
  free(got), free(want), free(pos);
  cudaFree(d_inv);
  return d_rope;
}

/* The reference frequencies of head size hd: Qwen3's (theta 1e6) or Llama 3's scaled ones (theta 5e5). */
static void rope_freqs_(float inv[128], kiln_rope_type rt, int hd) {
  kiln_config c;
  memset(&c, 0, sizeof c);
  c.head_dim = hd;
  c.rope_theta = rt == KILN_ROPE_LLAMA3 ? 500000.0 : 1000000.0;
  c.rope_type = rt;
  c.rope_factor = 8, c.rope_low_freq_factor = 1, c.rope_high_freq_factor = 4, c.rope_original_max_position = 8192;
  kiln_ref_rope_inv_freq(inv, &c);
}

/* The table over long contexts: angles of thousands of radians, where sincosf's range reduction matters. */
static void test_rope_table(kiln_rope_type rt, int hd, int n_pos) {
  float inv[128];
  rope_freqs_(inv, rt, hd);
  cudaFree(rope_table_(inv, hd, n_pos, rt == KILN_ROPE_LLAMA3 ? "llama3" : "default"));
}

/* ---- bias + q/k norm + RoPE + KV store ---- */
/* The projection comes as bf16 (what the prefill GEMM writes); the reference starts from the same rounded values.
 * The kernel's vector form must give the same bits with 1, 2, 4 and 8 heads a warp (groups that mix q and k
 * heads, and a last group past the end, included). */
static void test_qkv_rope(int nh, int nkv, int hd, kiln_rope_type rt, int qk_norm, int bias) {
  const int n = 5, pos0 = 3, n_ctx = 16, n_seqs = 2, seq = 1;
  const float eps = 1e-6f;
  float inv[128];
  rope_freqs_(inv, rt, hd);
  const int64_t row = (int64_t)(nh + 2 * nkv) * hd, cache = (int64_t)n_seqs * nkv * n_ctx * hd;
  float *qkv = rand_f32(n * row, 0.f, 1.f), *bq = rand_f32(row, 0.f, 0.3f);
  uint16_t *qkv16 = malloc((size_t)n * row * 2);
  GT_CHECK(qkv16 != NULL, "qkv_rope: out of host memory");
  if (!qkv16) abort();
  for (int64_t i = 0; i < n * row; i++) qkv16[i] = kiln_f32_to_bf16(qkv[i]), qkv[i] = kiln_bf16_to_f32(qkv16[i]);
  float *qn = rand_f32(hd, 1.f, 0.2f), *kn = rand_f32(hd, 1.f, 0.2f);
  float *d_qkv = gt_dev((size_t)n * row * 4), *d_b = gt_dev((size_t)row * 4), *d_qn = gt_dev((size_t)hd * 4);
  float *d_kn = gt_dev((size_t)hd * 4);
  float *d_rope = rope_table_(inv, hd, n_ctx, rt == KILN_ROPE_LLAMA3 ? "llama3" : "default");
  uint16_t *d_q = gt_dev((size_t)n * nh * hd * 2);
  uint16_t *d_k = gt_dev((size_t)cache * 2), *d_v = gt_dev((size_t)cache * 2);
  kiln_cuda_step st = {.seq = seq, .pos = pos0, .n = n}, *d_st = gt_dev(sizeof st);
  gt_up(d_qkv, qkv16, (size_t)n * row * 2);
  gt_up(d_b, bq, (size_t)row * 4);
  gt_up(d_qn, qn, (size_t)hd * 4);
  gt_up(d_kn, kn, (size_t)hd * 4);
  gt_up(d_st, &st, sizeof st);
  kiln_cuda_attn_shape sh = {nh, nkv, hd, n_ctx};
  GT_OK(kiln_cuda_qkv_rope(d_q, d_k, d_v, (const uint16_t *)d_qkv, bias ? d_b : NULL, qk_norm ? d_qn : NULL,
                           qk_norm ? d_kn : NULL, eps, d_rope, d_st, n, &sh, n_sm, 0, 0));
  /* reference */
  float *r = malloc((size_t)n * row * 4);
  memcpy(r, qkv, (size_t)n * row * 4);
  if (bias) kiln_ref_add_bias(r, bq, KILN_F32, n, row);
  float *q = malloc((size_t)n * nh * hd * 4), *k = malloc((size_t)n * nkv * hd * 4);
  float *v = malloc((size_t)n * nkv * hd * 4);
  for (int t = 0; t < n; t++) {
    memcpy(q + (int64_t)t * nh * hd, r + t * row, (size_t)nh * hd * 4);
    memcpy(k + (int64_t)t * nkv * hd, r + t * row + nh * hd, (size_t)nkv * hd * 4);
    memcpy(v + (int64_t)t * nkv * hd, r + t * row + (nh + nkv) * hd, (size_t)nkv * hd * 4);
  }
  if (qk_norm) {
    kiln_ref_rmsnorm(q, q, qn, KILN_F32, (int64_t)n * nh, hd, eps);
    kiln_ref_rmsnorm(k, k, kn, KILN_F32, (int64_t)n * nkv, hd, eps);
  }
  int32_t pos[5];
  for (int t = 0; t < n; t++) pos[t] = pos0 + t;
  kiln_ref_rope(q, pos, n, nh, hd, inv);
  kiln_ref_rope(k, pos, n, nkv, hd, inv);
  uint16_t *gq16 = malloc((size_t)n * nh * hd * 2);
  uint16_t *gk = malloc((size_t)cache * 2), *gv = malloc((size_t)cache * 2);
  gt_down(gq16, d_q, (size_t)n * nh * hd * 2);
  float *gq = bf16_to_f32_arr(gq16, (int64_t)n * nh * hd);
  gt_down(gk, d_k, (size_t)cache * 2);
  gt_down(gv, d_v, (size_t)cache * 2);
  double eq = gt_nmse(gq, q, (int64_t)n * nh * hd);
  GT_CHECK(eq <= TOL_BF16_OUT, "qkv_rope hd=%d rope=%d norm=%d bias=%d: q NMSE %.3g", hd, rt, qk_norm, bias, eq);
  /* the cache: [seq][kv][ctx][hd]; written rows must match, every other element must still be poison */
  float *kk = malloc((size_t)n * nkv * hd * 4), *vv = malloc((size_t)n * nkv * hd * 4);
  int64_t untouched_bad = 0;
  for (int s = 0; s < n_seqs; s++)
    for (int h = 0; h < nkv; h++)
      for (int p = 0; p < n_ctx; p++)
        for (int d = 0; d < hd; d++) {
          int64_t at = (((int64_t)s * nkv + h) * n_ctx + p) * hd + d;
          if (s == seq && p >= pos0 && p < pos0 + n) {
            int64_t t = p - pos0;
            kk[(t * nkv + h) * hd + d] = kiln_bf16_to_f32(gk[at]);
            vv[(t * nkv + h) * hd + d] = kiln_bf16_to_f32(gv[at]);
          } else {
            untouched_bad += gk[at] != 0xffff || gv[at] != 0xffff;
          }
        }
  double ek = gt_nmse(kk, k, (int64_t)n * nkv * hd), ev = gt_nmse(vv, v, (int64_t)n * nkv * hd);
  GT_CHECK(ek <= TOL_BF16_OUT && ev <= TOL_BF16_OUT, "qkv_rope hd=%d: cache k NMSE %.3g, v NMSE %.3g", hd, ek, ev);
  GT_CHECK(untouched_bad == 0, "qkv_rope hd=%d: %lld cache elements written outside the step", hd,
           (long long)untouched_bad);
  uint16_t *g2 = malloc((size_t)(n * nh * hd + 2 * cache) * 2);
  GT_CHECK(g2 != NULL, "qkv_rope: out of host memory");
  for (int g = 1; g2 && g <= 8; g *= 2) {
    gt_poison(d_q, (size_t)n * nh * hd * 2), gt_poison(d_k, (size_t)cache * 2), gt_poison(d_v, (size_t)cache * 2);
    GT_OK(kiln_cuda_qkv_rope(d_q, d_k, d_v, (const uint16_t *)d_qkv, bias ? d_b : NULL, qk_norm ? d_qn : NULL,
                             qk_norm ? d_kn : NULL, eps, d_rope, d_st, n, &sh, n_sm, g, 0));
    gt_down(g2, d_q, (size_t)n * nh * hd * 2);
    gt_down(g2 + n * nh * hd, d_k, (size_t)cache * 2);
    gt_down(g2 + n * nh * hd + cache, d_v, (size_t)cache * 2);
    GT_CHECK(!memcmp(g2, gq16, (size_t)n * nh * hd * 2) && !memcmp(g2 + n * nh * hd, gk, (size_t)cache * 2) &&
                 !memcmp(g2 + n * nh * hd + cache, gv, (size_t)cache * 2),
             "qkv_rope %d+%d heads hd=%d: %d heads a warp change the bits", nh, nkv, hd, g);
  }
  free(g2);
  free(qkv), free(qkv16), free(bq), free(qn), free(kn), free(r), free(q), free(k), free(v), free(gq), free(gq16);
  free(gk), free(gv);
  free(kk), free(vv);
  cudaFree(d_qkv), cudaFree(d_b), cudaFree(d_qn), cudaFree(d_kn), cudaFree(d_rope), cudaFree(d_q), cudaFree(d_k);
  cudaFree(d_v), cudaFree(d_st);
}

/* Random K/V cache for slot `seq` positions [0, len) (others random too); returns host copies in the reference
 * layout [len][nkv][hd] (f32). */
static void fill_cache(uint16_t *d_k, uint16_t *d_v, int n_seqs, int nkv, int n_ctx, int hd, int seq, int len,
                       float **kref, float **vref) {
  int64_t cache = (int64_t)n_seqs * nkv * n_ctx * hd;
  uint16_t *k = rand_bf16(cache, 0.5f), *v = rand_bf16(cache, 1.f);
  gt_up(d_k, k, (size_t)cache * 2);
  gt_up(d_v, v, (size_t)cache * 2);
  *kref = malloc((size_t)len * nkv * hd * 4);
  *vref = malloc((size_t)len * nkv * hd * 4);
  for (int p = 0; p < len; p++)
    for (int h = 0; h < nkv; h++)
      for (int d = 0; d < hd; d++) {
        int64_t at = (((int64_t)seq * nkv + h) * n_ctx + p) * hd + d;
        (*kref)[((int64_t)p * nkv + h) * hd + d] = kiln_bf16_to_f32(k[at]);
        (*vref)[((int64_t)p * nkv + h) * hd + d] = kiln_bf16_to_f32(v[at]);
      }
  free(k), free(v);
}

/* ---- decode attention: q/k norm + RoPE + KV store + split-KV attention ---- */
static int attn_cluster; /* the combine under test: 1 inside thread-block clusters, 0 through global memory */
static void test_attn_decode(int nh, int nkv, int hd, int L, int n_ctx, int splits, int qk_norm) {
  const int n_seqs = 2, seq = 1, pos = L - 1;
  const float eps = 1e-6f;
  kiln_cuda_attn_shape sh = {nh, nkv, hd, n_ctx};
  if (splits <= 0) GT_OK(kiln_cuda_attn_decode_splits(&sh, n_sm, &splits));
  const int64_t cache = (int64_t)n_seqs * nkv * n_ctx * hd, row = (int64_t)(nh + 2 * nkv) * hd;
  uint16_t *d_k = gt_dev((size_t)cache * 2), *d_v = gt_dev((size_t)cache * 2), *d_o = gt_dev((size_t)nh * hd * 2);
  /* the cache: random everywhere (position pos too: the kernel must overwrite it) */
  uint16_t *k0 = rand_bf16(cache, 0.5f), *v0 = rand_bf16(cache, 1.f);
  gt_up(d_k, k0, (size_t)cache * 2);
  gt_up(d_v, v0, (size_t)cache * 2);
  float inv[128]; /* head_dim <= 256 */
  rope_freqs_(inv, KILN_ROPE_DEFAULT, hd);
  float *qkv = rand_f32(row, 0.f, 1.f), *qn = rand_f32(hd, 1.f, 0.2f), *kn = rand_f32(hd, 1.f, 0.2f);
  float *d_qkv = gt_dev((size_t)row * 4), *d_qn = gt_dev((size_t)hd * 4), *d_kn = gt_dev((size_t)hd * 4);
  float *d_rope = rope_table_(inv, hd, n_ctx, "decode");
  float *d_part = gt_dev((size_t)kiln_cuda_attn_decode_scratch(&sh, splits));
  kiln_cuda_step st = {.seq = seq, .pos = pos, .n = 1}, *d_st = gt_dev(sizeof st);
  gt_up(d_qkv, qkv, (size_t)row * 4);
  gt_up(d_qn, qn, (size_t)hd * 4);
  gt_up(d_kn, kn, (size_t)hd * 4);
  gt_up(d_st, &st, sizeof st);
  GT_OK(kiln_cuda_attn_decode_init(d_part, &sh, splits, 0));
  kiln_cuda_attn_decode_args a = {.out = d_o, .qkv = d_qkv, .q_norm = qk_norm ? d_qn : NULL,
                                  .k_norm = qk_norm ? d_kn : NULL, .rope = d_rope, .eps = eps, .k_cache = d_k,
                                  .v_cache = d_v, .step = d_st, .shape = sh, .n_splits = splits, .scratch = d_part};
  /* twice, the output poisoned in between: the first call must leave the arrival counters re-armed */
  GT_OK(kiln_cuda_attn_decode(&a, 0));
  gt_poison(d_o, (size_t)nh * hd * 2);
  GT_OK(kiln_cuda_attn_decode(&a, 0));
  /* reference: norm and rotate q and the new k, round k and v to the cache's bf16, attend over 0 .. pos */
  float *q = malloc((size_t)nh * hd * 4), *kq = malloc((size_t)nkv * hd * 4), *vq = malloc((size_t)nkv * hd * 4);
  memcpy(q, qkv, (size_t)nh * hd * 4);
  memcpy(kq, qkv + (int64_t)nh * hd, (size_t)nkv * hd * 4);
  memcpy(vq, qkv + (int64_t)(nh + nkv) * hd, (size_t)nkv * hd * 4);
  if (qk_norm) {
    kiln_ref_rmsnorm(q, q, qn, KILN_F32, nh, hd, eps);
    kiln_ref_rmsnorm(kq, kq, kn, KILN_F32, nkv, hd, eps);
  }
  int32_t p32 = pos;
  kiln_ref_rope(q, &p32, 1, nh, hd, inv);
  kiln_ref_rope(kq, &p32, 1, nkv, hd, inv);
  float *kref = malloc((size_t)L * nkv * hd * 4), *vref = malloc((size_t)L * nkv * hd * 4);
  for (int p = 0; p < L; p++)
    for (int h = 0; h < nkv; h++)
      for (int d = 0; d < hd; d++) {
        const int64_t at = (((int64_t)seq * nkv + h) * n_ctx + p) * hd + d, r = ((int64_t)p * nkv + h) * hd + d;
        kref[r] = p == pos ? kiln_bf16_to_f32(kiln_f32_to_bf16(kq[h * hd + d])) : kiln_bf16_to_f32(k0[at]);
        vref[r] = p == pos ? kiln_bf16_to_f32(kiln_f32_to_bf16(vq[h * hd + d])) : kiln_bf16_to_f32(v0[at]);
      }
  float *ref = malloc((size_t)nh * hd * 4);
  kiln_ref_attention(ref, q, kref, vref, 1, pos, nh, nkv, hd);
  uint16_t *o = malloc((size_t)nh * hd * 2);
  gt_down(o, d_o, (size_t)nh * hd * 2);
  float *of = bf16_to_f32_arr(o, (int64_t)nh * hd);
  double e = gt_nmse(of, ref, (int64_t)nh * hd);
  GT_CHECK(e <= TOL_BF16_OUT, "attn_decode nh=%d nkv=%d hd=%d L=%d splits=%d norm=%d cluster=%d: NMSE %.3g", nh, nkv,
           hd, L, splits, qk_norm, attn_cluster, e);
  /* the cache: the new token's rows as the reference rounds them, every other element as it was */
  uint16_t *gk = malloc((size_t)cache * 2), *gv = malloc((size_t)cache * 2);
  gt_down(gk, d_k, (size_t)cache * 2);
  gt_down(gv, d_v, (size_t)cache * 2);
  int64_t bad_new = 0, bad_old = 0;
  for (int64_t i = 0; i < cache; i++) {
    const int64_t d = i % hd, p = (i / hd) % n_ctx, h = (i / hd / n_ctx) % nkv, s_ = i / hd / n_ctx / nkv;
    if (s_ == seq && p == pos) {
      const float kw = kiln_bf16_to_f32(kiln_f32_to_bf16(kq[h * hd + d]));
      const float vw = kiln_bf16_to_f32(kiln_f32_to_bf16(vq[h * hd + d]));
      bad_new += fabsf(kiln_bf16_to_f32(gk[i]) - kw) > 1e-2f * (fabsf(kw) + 1e-3f) ||
                 fabsf(kiln_bf16_to_f32(gv[i]) - vw) > 1e-2f * (fabsf(vw) + 1e-3f);
    } else {
      bad_old += gk[i] != k0[i] || gv[i] != v0[i];
    }
  }
  GT_CHECK(bad_new == 0 && bad_old == 0,
           "attn_decode nh=%d nkv=%d hd=%d L=%d: %lld new cache elements wrong, %lld others changed", nh, nkv, hd, L,
           (long long)bad_new, (long long)bad_old);
  free(k0), free(v0), free(qkv), free(qn), free(kn), free(q), free(kq), free(vq), free(kref), free(vref);
  free(ref), free(o), free(of), free(gk), free(gv);
  cudaFree(d_k), cudaFree(d_v), cudaFree(d_o), cudaFree(d_qkv), cudaFree(d_qn), cudaFree(d_kn), cudaFree(d_rope);
  cudaFree(d_part), cudaFree(d_st);
}

/* Decode attention under both combines: through global memory, then inside thread-block clusters (where the device
 * has them). */
static void test_attn_decodes(void) {
  const kiln_cuda_attn_shape sh32 = {32, 4, 128, 1024}, sh16 = {16, 8, 128, 1024};
  int c8 = 0, c2 = 0;
  GT_OK(kiln_cuda_attn_decode_cluster_max(&sh32, &c8));
  GT_OK(kiln_cuda_attn_decode_cluster_max(&sh16, &c2));
  printf("decode attention: clusters of up to %d units (8 q heads a kv head), %d (2)\n", c8, c2);
  for (int cl = 0; cl < 2; cl++) {
    kiln_cuda_attn_decode_cluster(attn_cluster = cl);
    test_attn_decode(16, 8, 128, 1, 64, 0, 1);
    test_attn_decode(16, 8, 128, 100, 256, 0, 1);
    test_attn_decode(16, 8, 128, 129, 4096, 0, 1);   /* the new key in the first tile of the last of 5 splits */
    test_attn_decode(32, 8, 128, 2048, 4096, 0, 1);
    test_attn_decode(32, 8, 128, 300, 512, 1, 0);    /* one split: five tiles in a row */
    test_attn_decode(8, 8, 64, 77, 128, 1, 1);
    test_attn_decode(32, 2, 64, 300, 512, 7, 0);
    test_attn_decode(4, 1, 256, 50, 64, 3, 1);
    test_attn_decode(4, 1, 256, 200, 256, 1, 0);     /* head_dim 256: tiles longer than one round of loads */
    test_attn_decode(32, 2, 128, 150, 256, 2, 1);    /* 16 heads per kv head: two head groups store the key */
    test_attn_decode(4, 2, 16, 40, 64, 0, 1);
    test_attn_decode(4, 2, 24, 45, 64, 0, 0);
    test_attn_decode(6, 3, 40, 200, 256, 0, 1);
    test_attn_decode(2, 1, 8, 9, 16, 2, 1);
    /* with clusters: up to 16 splits a group is one cluster (combine in shared memory); more use global memory */
    test_attn_decode(32, 4, 128, 700, 1024, 16, 1);  /* clusters of 16, 8 q heads a kv head */
    test_attn_decode(16, 8, 128, 129, 4096, 9, 1);   /* 5 of 9 splits hold keys; the others only help combine */
    test_attn_decode(16, 8, 128, 1000, 2048, 17, 0); /* one past the largest cluster */
    test_attn_decode(32, 8, 128, 2048, 4096, 33, 1);
  }
  kiln_cuda_attn_decode_cluster(0);
}

/* ---- causal prefill attention ---- */
/* The slot's cache rows past pos0 + n hold NaN, as must never reach the output (a masked probability times a
 * stale value); the output has one more token row, which must stay poisoned. Run without key splitting, then
 * (head_dim 64 and 128) with it, twice: the second split run, into a poisoned output again, must give the same
 * bits, which it only does if the first left its counters at zero. */
static void check_attn_prefill_(const uint16_t *d_o, const float *ref, int64_t nq, int64_t row, const char *what,
                                int nh, int nkv, int hd, int pos0, int n, uint16_t *keep) {
  uint16_t *o = malloc((size_t)(nq + row) * 2);
  gt_down(o, d_o, (size_t)(nq + row) * 2);
  float *of = bf16_to_f32_arr(o, nq);
  double e = gt_nmse(of, ref, nq);
  GT_CHECK(e <= TOL_BF16_OPS, "attn_prefill %s nh=%d nkv=%d hd=%d pos0=%d n=%d: NMSE %.3g", what, nh, nkv, hd, pos0, n,
           e);
  int64_t past = 0;
  for (int64_t i = nq; i < nq + row; i++) past += o[i] != 0xffff;
  GT_CHECK(past == 0, "attn_prefill %s nh=%d nkv=%d hd=%d pos0=%d n=%d: %lld values written past token n", what, nh,
           nkv, hd, pos0, n, (long long)past);
  if (keep) {
    int64_t diff = 0;
    for (int64_t i = 0; i < nq; i++) diff += o[i] != keep[i];
    GT_CHECK(diff == 0, "attn_prefill %s nh=%d nkv=%d hd=%d pos0=%d n=%d: %lld values differ from the first run", what,
             nh, nkv, hd, pos0, n, (long long)diff);
  }
  free(of), free(o);
}

static void test_attn_prefill(int nh, int nkv, int hd, int pos0, int n, int n_ctx) {
  const int n_seqs = 2, seq = 1;
  kiln_cuda_attn_shape sh = {nh, nkv, hd, n_ctx};
  int64_t cache = (int64_t)n_seqs * nkv * n_ctx * hd, nq = (int64_t)n * nh * hd, row = (int64_t)nh * hd;
  uint16_t *d_k = gt_dev((size_t)cache * 2), *d_v = gt_dev((size_t)cache * 2);
  uint16_t *d_o = gt_dev((size_t)(nq + row) * 2);
  float *kref, *vref;
  fill_cache(d_k, d_v, n_seqs, nkv, n_ctx, hd, seq, pos0 + n, &kref, &vref);
  for (int h = 0; h < nkv && pos0 + n < n_ctx; h++) {
    size_t at = ((size_t)(seq * nkv + h) * n_ctx + pos0 + n) * hd, bytes = (size_t)(n_ctx - pos0 - n) * hd * 2;
    gt_poison(d_k + at, bytes);
    gt_poison(d_v + at, bytes);
  }
  /* q as the RoPE kernel leaves it, bf16; the reference takes the same rounded values */
  uint16_t *q16 = rand_bf16(nq, 1.f), *d_q = gt_dev((size_t)nq * 2);
  float *q = bf16_to_f32_arr(q16, nq);
  kiln_cuda_step st = {.seq = seq, .pos = pos0, .n = n}, *d_st = gt_dev(sizeof st);
  gt_up(d_q, q16, (size_t)nq * 2);
  gt_up(d_st, &st, sizeof st);
  float *ref = malloc((size_t)nq * 4);
  kiln_ref_attention(ref, q, kref, vref, n, pos0, nh, nkv, hd);
  /* head_dim 64 and 128: both tensor-core forms, where the wgmma one can run */
  const int modes[2] = {KILN_CUDA_PF_MMA_SYNC, KILN_CUDA_PF_MMA_WGMMA};
  for (int mi = 0; mi < 2; mi++) {
    kiln_cuda_attn_prefill_mma(modes[mi]);
    int wg = 0;
    GT_OK(kiln_cuda_attn_prefill_uses_wgmma(&wg));
    if (mi == 1 && (!wg || (hd != 64 && hd != 128))) break; /* the same kernel as the first pass */
    char what[48];
    snprintf(what, sizeof what, "%s whole", wg ? "wgmma" : "sync");
    gt_poison(d_o, (size_t)(nq + row) * 2);
    GT_OK(kiln_cuda_attn_prefill(d_o, d_q, d_k, d_v, d_st, n, &sh, NULL, n_sm, 0));
    check_attn_prefill_(d_o, ref, nq, row, what, nh, nkv, hd, pos0, n, NULL);
    const int64_t sbytes = kiln_cuda_attn_prefill_scratch(&sh, n_sm);
    if (!sbytes) continue;
    const int parts = kiln_cuda_attn_prefill_parts(&sh, n, n_sm);
    snprintf(what, sizeof what, "%s split(%d)", wg ? "wgmma" : "sync", parts);
    void *d_s = gt_dev((size_t)sbytes);
    GT_CUDA(cudaMemset(d_s, 0, (size_t)sbytes));
    uint16_t *first = malloc((size_t)nq * 2);
    gt_poison(d_o, (size_t)(nq + row) * 2);
    GT_OK(kiln_cuda_attn_prefill(d_o, d_q, d_k, d_v, d_st, n, &sh, d_s, n_sm, 0));
    check_attn_prefill_(d_o, ref, nq, row, what, nh, nkv, hd, pos0, n, NULL);
    gt_down(first, d_o, (size_t)nq * 2);
    gt_poison(d_o, (size_t)(nq + row) * 2);
    GT_OK(kiln_cuda_attn_prefill(d_o, d_q, d_k, d_v, d_st, n, &sh, d_s, n_sm, 0));
    check_attn_prefill_(d_o, ref, nq, row, what, nh, nkv, hd, pos0, n, first);
    free(first);
    cudaFree(d_s);
  }
  kiln_cuda_attn_prefill_mma(KILN_CUDA_PF_MMA_AUTO);
  free(kref), free(vref), free(q16), free(q), free(ref);
  cudaFree(d_k), cudaFree(d_v), cudaFree(d_o), cudaFree(d_q), cudaFree(d_st);
}

/* ---- SwiGLU ---- */
/* From bf16 projections: the reference takes the same rounded gate and up values. Totals of every remainder mod 4
 * exercise the vector kernel's last elements; the same input 8 bytes off 16-byte alignment takes the 8-byte kernel,
 * which must give the same bits. */
static void test_swiglu(int64_t n, int64_t inter) {
  const int64_t total = n * inter;
  float *gu = rand_f32(total * 2, 0.f, 3.f);
  float *g = malloc((size_t)total * 4), *u = malloc((size_t)total * 4), *ref = malloc((size_t)total * 4);
  uint16_t *gu16 = malloc((size_t)total * 4), *a = malloc((size_t)total * 2);
  GT_CHECK(g && u && ref && gu16 && a, "swiglu: out of host memory");
  if (!g || !u || !ref || !gu16 || !a) abort();
  for (int64_t i = 0; i < 2 * total; i++) gu16[i] = kiln_f32_to_bf16(gu[i]);
  for (int64_t i = 0; i < total; i++) g[i] = kiln_bf16_to_f32(gu16[2 * i]), u[i] = kiln_bf16_to_f32(gu16[2 * i + 1]);
  kiln_ref_swiglu(ref, g, u, total);
  uint16_t *d_gu = gt_dev((size_t)total * 4), *d_a = gt_dev((size_t)total * 2 + 2);
  gt_up(d_gu, gu16, (size_t)total * 4);
  GT_OK(kiln_cuda_swiglu(d_a, d_gu, n, inter, 0));
  uint16_t *after = malloc((size_t)total * 2 + 2);
  if (!after) abort();
  gt_down(after, d_a, (size_t)total * 2 + 2);
  memcpy(a, after, (size_t)total * 2);
  float *af = bf16_to_f32_arr(a, total);
  double e = gt_nmse(af, ref, total);
  GT_CHECK(e <= TOL_BF16_OUT, "swiglu n=%lld inter=%lld: NMSE %.3g", (long long)n, (long long)inter, e);
  GT_CHECK(after[total] == 0xffff, "swiglu n=%lld inter=%lld: wrote past the end", (long long)n,
           (long long)inter);
  uint16_t *d_gu8 = gt_dev((size_t)total * 4 + 8), *d_a8 = gt_dev((size_t)total * 2 + 2);
  gt_up(d_gu8 + 4, gu16, (size_t)total * 4);
  GT_OK(kiln_cuda_swiglu(d_a8, d_gu8 + 4, n, inter, 0));
  uint16_t *after8 = malloc((size_t)total * 2 + 2);
  if (!after8) abort();
  gt_down(after8, d_a8, (size_t)total * 2 + 2);
  GT_CHECK(memcmp(after, after8, (size_t)total * 2 + 2) == 0,
           "swiglu n=%lld inter=%lld: 8-byte and 16-byte forms differ", (long long)n, (long long)inter);
  free(gu), free(g), free(u), free(ref), free(gu16), free(a), free(af), free(after), free(after8);
  cudaFree(d_gu), cudaFree(d_a), cudaFree(d_gu8), cudaFree(d_a8);
}

static void test_swiglus(void) {
  test_swiglu(3, 1000);
  test_swiglu(1, 8);
  test_swiglu(1, 7);
  test_swiglu(64, 3072);
  test_swiglu(1, 5);
  test_swiglu(1, 6);
  test_swiglu(5, 3);
  test_swiglu(1024, 3072); /* the 0.6B prefill's 1,024-token chunk */
}

/* ---- cuBLAS GEMM ---- */
static void test_gemm(cublasHandle_t h, int64_t n, int64_t in, int64_t out) {
  uint16_t *x = rand_bf16(n * in, 1.f), *W = rand_bf16(out * in, 0.05f);
  float *xf = bf16_to_f32_arr(x, n * in), *ref = malloc((size_t)n * out * 4), *y = malloc((size_t)n * out * 4);
  kiln_ref_matmul(ref, xf, W, KILN_BF16, n, in, out);
  uint16_t *d_x = gt_dev((size_t)n * in * 2), *d_W = gt_dev((size_t)out * in * 2);
  float *d_y = gt_dev((size_t)n * out * 4);
  gt_up(d_x, x, (size_t)n * in * 2);
  gt_up(d_W, W, (size_t)out * in * 2);
  GT_OK(kiln_cuda_gemm(h, d_y, d_x, d_W, n, in, out));
  gt_down(y, d_y, (size_t)n * out * 4);
  double e = gt_nmse(y, ref, n * out);
  GT_CHECK(e <= TOL_F32, "gemm %lldx%lldx%lld: NMSE %.3g", (long long)n, (long long)in, (long long)out, e);
  /* bf16 output: the f32 product rounded once, so within bf16 rounding of the reference */
  uint16_t *d_y16 = gt_dev((size_t)n * out * 2), *y16 = malloc((size_t)n * out * 2);
  if (!y16) abort();
  GT_OK(kiln_cuda_gemm_bf16(h, d_y16, d_x, d_W, n, in, out));
  gt_down(y16, d_y16, (size_t)n * out * 2);
  float *y16f = bf16_to_f32_arr(y16, n * out);
  e = gt_nmse(y16f, ref, n * out);
  GT_CHECK(e <= TOL_BF16_OUT, "gemm_bf16 %lldx%lldx%lld: NMSE %.3g", (long long)n, (long long)in, (long long)out, e);
  /* accumulate: y = y0 + x W^T */
  float *y0 = rand_f32(n * out, 0.f, 1.f);
  gt_up(d_y, y0, (size_t)n * out * 4);
  GT_OK(kiln_cuda_gemm_acc(h, d_y, d_x, d_W, n, in, out));
  gt_down(y, d_y, (size_t)n * out * 4);
  for (int64_t i = 0; i < n * out; i++) y0[i] += ref[i];
  e = gt_nmse(y, y0, n * out);
  GT_CHECK(e <= TOL_F32, "gemm_acc %lldx%lldx%lld: NMSE %.3g", (long long)n, (long long)in, (long long)out, e);
  free(x), free(W), free(xf), free(ref), free(y), free(y16), free(y16f), free(y0);
  cudaFree(d_x), cudaFree(d_W), cudaFree(d_y), cudaFree(d_y16);
}

/* ---- kiln's own GEMM (gemm_tc.h): every output kind and tile against the CPU product ---- */
static const char *const tc_kinds[] = {"f32", "acc", "bf16", "swiglu"};
static void test_gemm_tc(int64_t n, int64_t in, int64_t out) {
  uint16_t *x = rand_bf16(n * in, 1.f), *W = rand_bf16(out * in, 0.05f);
  float *xf = bf16_to_f32_arr(x, n * in), *ref = malloc((size_t)n * out * 4), *want = malloc((size_t)n * out * 4);
  float *got = malloc((size_t)n * out * 4), *y0 = rand_f32(n * out, 0.f, 1.f);
  unsigned char *raw = malloc((size_t)n * out * 4 + 16);
  if (!ref || !want || !got || !raw) abort();
  kiln_ref_matmul(ref, xf, W, KILN_BF16, n, in, out);
  uint16_t *d_x = gt_dev((size_t)n * in * 2), *d_W = gt_dev((size_t)out * in * 2);
  unsigned char *d_y = gt_dev((size_t)n * out * 4 + 16);
  gt_up(d_x, x, (size_t)n * in * 2);
  gt_up(d_W, W, (size_t)out * in * 2);
  for (int kind = KILN_GEMM_F32; kind <= KILN_GEMM_SWIGLU; kind++) {
    /* what y holds afterwards, and how many elements of which width */
    const int64_t cnt = kind == KILN_GEMM_SWIGLU ? n * out / 2 : n * out;
    const size_t width = kind == KILN_GEMM_BF16 || kind == KILN_GEMM_SWIGLU ? 2 : 4;
    for (int64_t i = 0; i < cnt; i++)
      want[i] = kind == KILN_GEMM_SWIGLU ? ref[2 * i] / (1.f + expf(-ref[2 * i])) * ref[2 * i + 1]
                : kind == KILN_GEMM_ACC  ? y0[i] + ref[i]
                                         : ref[i];
    for (int t = KILN_TC_AUTO; t < KILN_TC_TILES; t++) {
      /* poisoned (NaN) past what is written, y0 where it is added to */
      GT_CUDA(cudaMemset(d_y, 0xff, (size_t)n * out * 4 + 16));
      if (kind == KILN_GEMM_ACC) gt_up(d_y, y0, (size_t)n * out * 4);
      GT_OK(kiln_cuda_gemm_tc((kiln_gemm_out)kind, d_y, d_x, d_W, n, in, out, (kiln_tc_tile)t, n_sm, 0));
      GT_CUDA(cudaDeviceSynchronize());
      gt_down(raw, d_y, (size_t)n * out * 4 + 16);
      for (int64_t i = 0; i < cnt; i++) {
        if (width == 4) memcpy(&got[i], raw + 4 * i, 4);
        else got[i] = kiln_bf16_to_f32((uint16_t)(raw[2 * i] | raw[2 * i + 1] << 8));
      }
      const double e = gt_nmse(got, want, cnt);
      GT_CHECK(e <= (width == 2 ? TOL_BF16_OUT : TOL_F32), "gemm_tc %s tile %d %lldx%lldx%lld: NMSE %.3g",
               tc_kinds[kind], t, (long long)n, (long long)in, (long long)out, e);
      bool past = true;
      for (size_t i = (size_t)cnt * width; i < (size_t)n * out * 4 + 16; i++) past = past && raw[i] == 0xff;
      GT_CHECK(past, "gemm_tc %s tile %d %lldx%lldx%lld: wrote past the output", tc_kinds[kind], t, (long long)n,
               (long long)in, (long long)out);
    }
  }
  free(x), free(W), free(xf), free(ref), free(want), free(got), free(y0), free(raw);
  cudaFree(d_x), cudaFree(d_W), cudaFree(d_y);
}

/* The q/k/v product with RoPE in its epilogue against the product written as bf16 and then kiln_cuda_qkv_rope
 * (itself tested against the CPU above), both on the GPU: the same bits but for the order of the q/k norms' sums
 * of squares; values bit for bit; nothing of the cache written outside the chunk's rows. */
static void test_gemm_tc_qkv(int64_t n, int64_t in, int nh, int nkv, int norm, int bias, kiln_tc_tile tile) {
  const int hd = 128, pos0 = 7, n_ctx = (int)n + 20, n_seqs = 2, seq = 1;
  const int64_t out = (int64_t)(nh + 2 * nkv) * hd, cache = (int64_t)n_seqs * nkv * n_ctx * hd, nq = n * nh * hd;
  float inv[128];
  rope_freqs_(inv, KILN_ROPE_DEFAULT, hd);
  uint16_t *x = rand_bf16(n * in, 1.f), *W = rand_bf16(out * in, 0.05f);
  float *bq = rand_f32(out, 0.f, 0.3f), *qn = rand_f32(hd, 1.f, 0.2f), *kn = rand_f32(hd, 1.f, 0.2f);
  uint16_t *d_x = gt_dev((size_t)n * in * 2), *d_W = gt_dev((size_t)out * in * 2), *d_qkv = gt_dev((size_t)n * out * 2);
  float *d_b = gt_dev((size_t)out * 4), *d_qn = gt_dev((size_t)hd * 4), *d_kn = gt_dev((size_t)hd * 4);
  float *d_rope = rope_table_(inv, hd, n_ctx, "default");
  uint16_t *d_q[2], *d_k[2], *d_v[2], *h[2];
  kiln_cuda_step st = {.seq = seq, .pos = pos0, .n = (int32_t)n}, *d_st = gt_dev(sizeof st);
  gt_up(d_x, x, (size_t)n * in * 2);
  gt_up(d_W, W, (size_t)out * in * 2);
  gt_up(d_b, bq, (size_t)out * 4);
  gt_up(d_qn, qn, (size_t)hd * 4);
  gt_up(d_kn, kn, (size_t)hd * 4);
  gt_up(d_st, &st, sizeof st);
  const int64_t total = nq + 2 * cache;
  for (int k = 0; k < 2; k++) {
    d_q[k] = gt_dev((size_t)nq * 2), d_k[k] = gt_dev((size_t)cache * 2), d_v[k] = gt_dev((size_t)cache * 2);
    h[k] = malloc((size_t)total * 2);
    if (!h[k]) abort();
  }
  /* 0: unfused; 1: fused */
  const kiln_cuda_attn_shape sh = {nh, nkv, hd, n_ctx};
  GT_OK(kiln_cuda_gemm_tc(KILN_GEMM_BF16, d_qkv, d_x, d_W, n, in, out, tile, n_sm, 0));
  GT_OK(kiln_cuda_qkv_rope(d_q[0], d_k[0], d_v[0], d_qkv, bias ? d_b : NULL, norm ? d_qn : NULL, norm ? d_kn : NULL,
                           1e-6f, d_rope, d_st, n, &sh, n_sm, 0, 0));
  const kiln_tc_qkv e = {.q_out = d_q[1], .k_cache = d_k[1], .v_cache = d_v[1], .bias = bias ? d_b : NULL,
                         .q_norm = norm ? d_qn : NULL, .k_norm = norm ? d_kn : NULL, .rope = d_rope, .step = d_st,
                         .eps = 1e-6f, .n_heads = nh, .n_kv_heads = nkv, .n_ctx = n_ctx};
  GT_OK(kiln_cuda_gemm_tc_qkv(&e, d_x, d_W, n, in, tile, n_sm, 0));
  for (int k = 0; k < 2; k++) {
    gt_down(h[k], d_q[k], (size_t)nq * 2);
    gt_down(h[k] + nq, d_k[k], (size_t)cache * 2);
    gt_down(h[k] + nq + cache, d_v[k], (size_t)cache * 2);
  }
  /* q and k: within rounding (the sums of squares add in another order); v: the same bits; poison (untouched)
   * exactly where the unfused path left it */
  float *a = malloc((size_t)total * 4), *b = malloc((size_t)total * 4);
  if (!a || !b) abort();
  int64_t m = 0, poison_bad = 0, v_bad = 0;
  for (int64_t i = 0; i < total; i++) {
    const bool pa = h[0][i] == 0xffff, pb = h[1][i] == 0xffff;
    if (pa || pb) {
      poison_bad += pa != pb;
      continue;
    }
    if (i >= nq + cache) v_bad += h[0][i] != h[1][i];
    a[m] = kiln_bf16_to_f32(h[1][i]), b[m++] = kiln_bf16_to_f32(h[0][i]);
  }
  const double e2 = gt_nmse(a, b, m);
  GT_CHECK(m >= nq + 2 * n * nkv * hd && e2 <= 1e-6 && poison_bad == 0 && v_bad == 0,
           "gemm_tc q/k/v n=%lld in=%lld heads %d+%d norm=%d bias=%d tile %d: %lld compared, NMSE %.3g, %lld "
           "written where the unfused path did not (or not where it did), %lld values differ",
           (long long)n, (long long)in, nh, nkv, norm, bias, (int)tile, (long long)m, e2, (long long)poison_bad,
           (long long)v_bad);
  free(x), free(W), free(bq), free(qn), free(kn), free(a), free(b);
  for (int k = 0; k < 2; k++) free(h[k]), cudaFree(d_q[k]), cudaFree(d_k[k]), cudaFree(d_v[k]);
  cudaFree(d_x), cudaFree(d_W), cudaFree(d_qkv), cudaFree(d_b), cudaFree(d_qn), cudaFree(d_kn), cudaFree(d_rope);
  cudaFree(d_st);
}

static void test_gemm_tcs(void) {
  if (!kiln_cuda_gemm_tc_available()) {
    printf("gemm_tc: not available here (no sm_90a code or not a 9.x device): skipped\n");
    return;
  }
  GT_CHECK(kiln_cuda_gemm_tc_tile_env("64x128") == KILN_TC_64x128 && kiln_cuda_gemm_tc_tile_env("") == KILN_TC_AUTO &&
               kiln_cuda_gemm_tc_tile_env("128x100") < 0,
           "gemm_tc: tile names");
  /* refused: in not a multiple of 8, odd out, SwiGLU's out not a multiple of 4, misaligned x */
  uint16_t *d = gt_dev(1 << 20);
  GT_CHECK(kiln_cuda_gemm_tc(KILN_GEMM_BF16, d, d, d, 4, 60, 8, KILN_TC_AUTO, n_sm, 0) != 0, "gemm_tc: in 60");
  GT_CHECK(kiln_cuda_gemm_tc(KILN_GEMM_BF16, d, d, d, 4, 64, 9, KILN_TC_AUTO, n_sm, 0) != 0, "gemm_tc: out 9");
  GT_CHECK(kiln_cuda_gemm_tc(KILN_GEMM_SWIGLU, d, d, d, 4, 64, 6, KILN_TC_AUTO, n_sm, 0) != 0, "gemm_tc: swiglu 6");
  GT_CHECK(kiln_cuda_gemm_tc(KILN_GEMM_BF16, d, d + 1, d, 4, 64, 8, KILN_TC_AUTO, n_sm, 0) != 0, "gemm_tc: align");
  cudaFree(d);
  /* edges everywhere (rows, k not a multiple of 64, columns of no tile's width), one row, a tiny product, and the
   * shapes of Qwen3-0.6B's 1,024-token products */
  test_gemm_tc(37, 520, 776);
  test_gemm_tc(1, 64, 8);
  test_gemm_tc(130, 1032, 3000);
  test_gemm_tc(300, 2048, 1024);
  test_gemm_tc(1024, 1024, 4096);
  test_gemm_tc(1024, 3072, 1024);
  test_gemm_tc_qkv(200, 520, 4, 2, 1, 1, KILN_TC_AUTO);
  test_gemm_tc_qkv(200, 520, 4, 2, 0, 0, KILN_TC_64x128);
  test_gemm_tc_qkv(130, 1024, 16, 8, 1, 0, KILN_TC_128x128);
  test_gemm_tc_qkv(37, 256, 2, 1, 1, 1, KILN_TC_128x128_2);
  test_gemm_tc_qkv(37, 256, 2, 1, 1, 0, KILN_TC_64x128_2);
  test_gemm_tc_qkv(200, 520, 4, 2, 1, 1, KILN_TC_128x128c2);
  test_gemm_tc_qkv(130, 1024, 16, 8, 1, 0, KILN_TC_64x128c4);
  /* 5 heads: the last column of 2 x 2 clusters only rounds the grid up */
  test_gemm_tc_qkv(200, 520, 3, 1, 1, 1, KILN_TC_128x128c2x2);
  test_gemm_tc_qkv(130, 1024, 16, 8, 1, 0, KILN_TC_128x128c2x2);
  /* k split over a cluster's pair: an odd count of k steps (520: 9, the second block 4) and 4 */
  test_gemm_tc_qkv(200, 520, 3, 1, 1, 1, KILN_TC_128x128k2);
  test_gemm_tc_qkv(37, 256, 2, 1, 1, 0, KILN_TC_128x128k2);
  /* the auto rule: on an H100's 132 SMs 0.6B's o and down at 1,024 tokens take a half-width tile (a wave of 128),
   * its q/k/v a full one */
  const kiln_tc_tile auto_o = kiln_cuda_gemm_tc_auto(1024, 2048, 1024, 132),
                     auto_down = kiln_cuda_gemm_tc_auto(1024, 3072, 1024, 132),
                     auto_qkv = kiln_cuda_gemm_tc_auto(1024, 1024, 4096, 132);
  GT_CHECK(auto_o == KILN_TC_128x64 && auto_down == KILN_TC_128x64 && auto_qkv == KILN_TC_128x128,
           "gemm_tc auto: o %d, down %d, qkv %d", (int)auto_o, (int)auto_down, (int)auto_qkv);
  printf("gemm_tc auto tiles (n_sm %d): o %d, down %d, qkv %d, gate/up %d\n", n_sm,
         (int)kiln_cuda_gemm_tc_auto(1024, 2048, 1024, n_sm), (int)kiln_cuda_gemm_tc_auto(1024, 3072, 1024, n_sm),
         (int)kiln_cuda_gemm_tc_auto(1024, 1024, 4096, n_sm), (int)kiln_cuda_gemm_tc_auto(1024, 1024, 6144, n_sm));
}

/* ---- the bitwise comparison the GEMM planner trusts ---- */
static void test_bits_differ(void) {
  enum { N = 4099 }; /* 256 16-byte words and a 3-byte tail */
  unsigned char *h = malloc(N);
  if (!h) abort();
  for (int i = 0; i < N; i++) h[i] = (unsigned char)(i * 131 + 7);
  unsigned char *d_a = gt_dev(N + 1), *d_b = gt_dev(N + 1);
  unsigned *d_flag = gt_dev(4);
  const struct { int at, off; } cases[] = {{-1, 0}, {0, 0}, {2000, 0}, {N - 1, 0}, {-1, 1}, {N - 2, 1}, {17, 1}};
  for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
    const int at = cases[c].at, off = cases[c].off; /* off 1: misaligned buffers, the byte path */
    gt_up(d_a + off, h, N - off);
    if (at >= 0) h[at] ^= 0x10;
    gt_up(d_b + off, h, N - off);
    if (at >= 0) h[at] ^= 0x10;
    unsigned flag = 0;
    gt_up(d_flag, &flag, 4);
    GT_OK(kiln_cuda_bits_differ(d_a + off, d_b + off, N - off, d_flag, 0));
    gt_down(&flag, d_flag, 4);
    GT_CHECK(flag == (at >= 0 && at < N - off), "bits_differ: byte %d changed, offset %d: flag %u", at, off, flag);
  }
  free(h);
  cudaFree(d_a), cudaFree(d_b), cudaFree(d_flag);
}

/* ---- GEMM plans: whatever algorithm a plan picks, its result is the default's bit for bit, also on inputs the
 * planning never saw ---- */
static void test_gemm_plan(cublasHandle_t h, cublasLtHandle_t lt, void *ws, size_t ws_bytes, kiln_gemm_out kind,
                           int64_t n, int64_t in, int64_t out) {
  enum { NW = 3 };
  const int64_t esz = kind == KILN_GEMM_BF16 ? 2 : 4, ybytes = n * out * esz;
  const uint16_t *d_w[NW];
  for (int i = 0; i < NW; i++) {
    uint16_t *W = rand_bf16(out * in, 0.05f), *d = gt_dev((size_t)out * in * 2);
    gt_up(d, W, (size_t)out * in * 2);
    d_w[i] = d;
    free(W);
  }
  kiln_cuda_gemm_scratch s = {gt_dev((size_t)(n * in * 2)), gt_dev((size_t)ybytes), gt_dev((size_t)ybytes),
                              gt_dev((size_t)ybytes), gt_dev(4 * KILN_GEMM_PLAN_MAX)};
  const kiln_cuda_gemm_env e = {h, lt, ws, ws_bytes, 0};
  kiln_cuda_gemm_algo a;
  GT_OK(kiln_cuda_gemm_plan(&e, &s, kind, d_w, NW, n, in, out, &a));
  printf("gemm plan %lldx%lldx%lld (%s): %s, %.1f us against %.1f us (default); %d offers, %d with its bits\n",
         (long long)n, (long long)in, (long long)out, kind == KILN_GEMM_BF16 ? "bf16" : "acc",
         a.lt ? "cublasLt" : "default", a.us, a.us_default, a.candidates, a.identical);
  GT_CHECK(a.us > 0 && a.us_default > 0 && a.us <= a.us_default, "gemm plan: times %.2f / %.2f us", a.us,
           a.us_default);
  GT_CHECK(a.identical <= a.candidates && a.candidates <= KILN_GEMM_PLAN_MAX, "gemm plan: %d of %d", a.identical,
           a.candidates);
  /* fresh input and start value, each weight: default and plan agree bit for bit */
  uint16_t *x = rand_bf16(n * in, 1.f);
  float *y0 = rand_f32(n * out, 0.f, 1.f);
  unsigned char *ya = malloc((size_t)ybytes), *yb = malloc((size_t)ybytes);
  if (!ya || !yb) abort();
  gt_up(s.x, x, (size_t)(n * in * 2));
  for (int i = 0; i < NW; i++) {
    void *dy[2] = {s.y, s.ref};
    for (int k = 0; k < 2; k++) {
      if (kind == KILN_GEMM_ACC) gt_up(dy[k], y0, (size_t)ybytes);
      GT_OK(kiln_cuda_gemm_run(&e, k ? &a : NULL, kind, dy[k], s.x, d_w[i], n, in, out));
    }
    gt_down(ya, s.y, (size_t)ybytes);
    gt_down(yb, s.ref, (size_t)ybytes);
    GT_CHECK(!memcmp(ya, yb, (size_t)ybytes), "gemm plan %lldx%lldx%lld: weights %d: the plan's result is not the "
             "default's", (long long)n, (long long)in, (long long)out, i);
  }
  free(x), free(y0), free(ya), free(yb);
  for (int i = 0; i < NW; i++) cudaFree((void *)d_w[i]);
  cudaFree(s.x), cudaFree(s.y), cudaFree(s.ref), cudaFree(s.y0), cudaFree(s.diff);
}

/* ---- sampling ---- */
static unsigned long long host_pack(const float *l, int64_t V) {
  const int64_t i = kiln_ref_argmax(l, V);
  return kiln_cuda_argmax_pack(l[i], i);
}

static int cmp_desc(const void *a, const void *b) {
  float x = *(const float *)a, y = *(const float *)b;
  return x < y ? 1 : x > y ? -1 : 0;
}

typedef struct pidx {
  double p;
  int64_t i;
} pidx;

static int cmp_pidx(const void *a, const void *b) {
  const pidx *x = a, *y = b;
  return x->p < y->p ? 1 : x->p > y->p ? -1 : (x->i > y->i) - (x->i < y->i);
}

#define N_BUCKETS 10
/* Buckets of about a tenth of the probability each, from the most likely tokens down: bucket[i] for token i. A
 * comparison of bucket frequencies tests the shape of a wide distribution with a few thousand draws. */
static void host_buckets(const double *p, int64_t V, int *bucket, double *mass) {
  pidx *s = malloc((size_t)V * sizeof *s);
  for (int64_t i = 0; i < V; i++) s[i] = (pidx){p[i], i};
  qsort(s, (size_t)V, sizeof *s, cmp_pidx);
  double cum = 0;
  for (int b = 0; b < N_BUCKETS; b++) mass[b] = 0;
  for (int64_t j = 0; j < V; j++) {
    int b = (int)(cum * N_BUCKETS);
    if (b >= N_BUCKETS) b = N_BUCKETS - 1;
    bucket[s[j].i] = b;
    mass[b] += s[j].p;
    cum += s[j].p;
  }
  free(s);
}

/* The probabilities the sampler must draw from (HF order), computed in double on the host. */
static void host_dist(const float *l, int64_t V, float temp, int top_k, float top_p, float min_p, double *p) {
  float *s = malloc((size_t)V * 4);
  memcpy(s, l, (size_t)V * 4);
  qsort(s, (size_t)V, 4, cmp_desc);
  float kth = (top_k > 0 && top_k < V) ? s[top_k - 1] : -INFINITY;
  double m = s[0], z = 0;
  for (int64_t i = 0; i < V; i++) p[i] = l[i] >= kth ? exp(((double)l[i] - m) / temp) : 0.0;
  for (int64_t i = 0; i < V; i++) z += p[i];
  if (top_p < 1.f) {
    /* keep a token while the mass strictly above it is < top_p */
    double above = 0, cut = -INFINITY;
    for (int64_t i = 0; i < V && s[i] >= kth; i++) {
      if (above >= top_p) break;
      cut = s[i];
      above += exp(((double)s[i] - m) / temp) / z;
    }
    for (int64_t i = 0; i < V; i++)
      if (l[i] < cut) p[i] = 0;
  }
  for (int64_t i = 0; i < V; i++)
    if (min_p > 0 && p[i] < min_p) p[i] = 0; /* p relative to the top token (weight 1) */
  z = 0;
  for (int64_t i = 0; i < V; i++) z += p[i];
  for (int64_t i = 0; i < V; i++) p[i] /= z;
  free(s);
}

/* Logits of four shapes: 0 normal (sd 2.5: flat at a temperature of 1); 1 peaked (Zipf-like, weight ~ rank^-2, as a
 * confident model's); 2 a few tokens over a long flat tail of ~7e-6 of the top weight each (top-p's candidates can
 * fall short of its target); 3 every other token masked (-inf), the rest small integers (ties, the top one too). */
static float *sample_logits(int64_t V, int kind) {
  if (kind == 0) return rand_f32(V, 0.f, 2.5f);
  float *l = malloc((size_t)V * 4);
  for (int64_t i = 0; i < V; i++) {
    const int64_t r = i * 7919 % V; /* a rank: 7919 is prime to both vocabulary sizes tested */
    const float u = (float)(gt_next() % 1000) / 1000.f;
    if (kind == 1) l[i] = 12.f - 2.f * logf(1.f + (float)r) + 0.3f * u;
    else if (kind == 2) l[i] = r < 20 ? 10.f - 0.2f * (float)r : -2.f + 0.01f * u;
    else l[i] = i % 2 ? -INFINITY : (float)(int)(8.f * u);
  }
  return l;
}

static void test_sample(int64_t V, int kind);
/* every shape at both vocabulary sizes; under KILN_TEST_DRAWS (compute-sanitizer) the small one only */
static void test_samples(void) {
  for (int kind = 0; kind < 4; kind++) {
    test_sample(5000, kind);
    if (!getenv("KILN_TEST_DRAWS")) test_sample(151936, kind);
  }
}

static int32_t sample_once(int32_t *d_next, const float *d_l, int64_t V, const unsigned long long *d_cell,
                           const kiln_cuda_step *d_st, const kiln_cuda_sample_scratch *multi) {
  int32_t next;
  gt_poison(d_next, 4);
  GT_OK(kiln_cuda_sample(d_next, d_l, V, d_cell, d_st, multi, 0));
  gt_down(&next, d_next, 4);
  return next;
}

/* The one-block sampler against the distribution the host computes (kept set, frequencies, determinism), and the
 * multi-block sampler (sample.h) against it draw for draw: the same token every time, at n_sm blocks and (every
 * 8th draw) at 1 and 7 blocks, one scratch for all, so each launch must leave its ticket re-armed. */
static void test_sample(int64_t V, int kind) {
  float *l = sample_logits(V, kind);
  float *d_l = gt_dev((size_t)V * 4);
  unsigned long long cell = host_pack(l, V), *d_cell = gt_dev(8);
  int32_t *d_next = gt_dev(4), next;
  kiln_cuda_step *d_st = gt_dev(sizeof(kiln_cuda_step));
  const int64_t scr_bytes = kiln_cuda_sample_scratch_bytes(V);
  void *d_scr = gt_dev((size_t)scr_bytes);
  GT_CUDA(cudaMemset(d_scr, 0, (size_t)scr_bytes));
  kiln_cuda_sample_scratch sc[3];
  const int blocks[3] = {n_sm, 1, 7};
  for (int j = 0; j < 3; j++) kiln_cuda_sample_scratch_carve(&sc[j], d_scr, V, blocks[j]);
  gt_up(d_l, l, (size_t)V * 4);
  gt_up(d_cell, &cell, 8);
  int64_t am = kiln_ref_argmax(l, V);
  struct {
    float temp;
    int top_k;
    float top_p, min_p;
  } cases[] = {{0.f, 0, 1.f, 0.f},     {1.f, 1, 1.f, 0.f},    {0.8f, 40, 1.f, 0.f},   {1.f, 0, 0.8f, 0.f},
               {1.2f, 0, 1.f, 0.05f},  {0.7f, 50, 0.9f, 0.02f}, {1.f, 0, 1.f, 0.f},  {1.f, 10, 0.9f, 0.f},
               {0.5f, 20, 1.f, 0.f},   {1.f, 0, 0.99f, 0.f},  {1.f, 0, 0.01f, 0.f}};
  const char *nd = getenv("KILN_TEST_DRAWS");
  const int draws = nd && atoi(nd) > 0 ? atoi(nd) : 4000;
  double *p = malloc((size_t)V * sizeof *p), hist[N_BUCKETS], mass[N_BUCKETS];
  int *bucket = malloc((size_t)V * sizeof *bucket);
  for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
    kiln_cuda_step st = {.temperature = cases[c].temp, .top_k = cases[c].top_k, .top_p = cases[c].top_p,
                         .min_p = cases[c].min_p, .seed = 1234 + c};
    if (cases[c].temp <= 0.f || cases[c].top_k == 1) {
      gt_up(d_st, &st, sizeof st);
      next = sample_once(d_next, d_l, V, d_cell, d_st, NULL);
      GT_CHECK(next == am, "sample %d case %zu: greedy gave %d, argmax is %lld", kind, c, next, (long long)am);
      next = sample_once(d_next, d_l, V, d_cell, d_st, &sc[0]);
      GT_CHECK(next == am, "sample %d case %zu: multi-block greedy gave %d, argmax is %lld", kind, c, next,
               (long long)am);
      continue;
    }
    host_dist(l, V, cases[c].temp, cases[c].top_k, cases[c].top_p, cases[c].min_p, p);
    host_buckets(p, V, bucket, mass);
    memset(hist, 0, sizeof hist);
    int outside = 0, first = -1, again = -1, differ = 0, first_differ = -1;
    for (int d = 0; d < draws; d++) {
      st.step = (uint64_t)d;
      gt_up(d_st, &st, sizeof st);
      next = sample_once(d_next, d_l, V, d_cell, d_st, NULL);
      for (int j = 0; j < (d % 8 ? 1 : 3); j++) {
        const int32_t mb = sample_once(d_next, d_l, V, d_cell, d_st, &sc[j]);
        if (mb != next && differ++ == 0) first_differ = d;
      }
      if (next < 0 || next >= V || p[next] == 0) {
        outside++;
        continue;
      }
      hist[bucket[next]] += 1.0 / draws;
      if (d == 0) first = next;
    }
    st.step = 0; /* the same seed and step again: the same token */
    gt_up(d_st, &st, sizeof st);
    again = sample_once(d_next, d_l, V, d_cell, d_st, NULL);
    /* a bucket's frequency has a standard deviation <= sqrt(0.25 / 4000) = 0.008: 0.04 is 5 of them */
    double worst = 0;
    for (int b = 0; b < N_BUCKETS; b++) worst = fmax(worst, fabs(hist[b] - mass[b]));
    GT_CHECK(outside == 0, "sample %d case %zu: %d of %d draws outside the kept set", kind, c, outside, draws);
    GT_CHECK(draws < 4000 || worst < 0.04, "sample %d case %zu: a probability bucket is off by %.3f", kind, c, worst);
    GT_CHECK(first == again, "sample %d case %zu: same seed and step gave %d then %d", kind, c, first, again);
    GT_CHECK(differ == 0, "sample %d case %zu (V %lld): the multi-block sampler differed from one block %d times, "
             "first at draw %d", kind, c, (long long)V, differ, first_differ);
  }
  free(l), free(p), free(bucket);
  cudaFree(d_l), cudaFree(d_cell), cudaFree(d_next), cudaFree(d_st), cudaFree(d_scr);
}

/* ---- the cuBLAS products and their plans ---- */
static int test_gemms(void) {
  cublasHandle_t h;
  if (cublasCreate(&h) != CUBLAS_STATUS_SUCCESS) {
    fprintf(stderr, "FATAL: cublasCreate\n");
    return 1;
  }
  test_gemm(h, 37, 512, 768);
  test_gemm(h, 1, 64, 8);
  test_gemm(h, 130, 1024, 3000);
  test_gemm_tcs();
  test_bits_differ();
  {
    /* the shapes of Qwen3-0.6B's prefill products where the planning was seen to matter (docs/cuda.md), and odd
     * ones */
    cublasLtHandle_t lt;
    void *ws = gt_dev(32 << 20);
    if (cublasLtCreate(&lt) != CUBLAS_STATUS_SUCCESS || cublasSetWorkspace(h, ws, 32 << 20) != CUBLAS_STATUS_SUCCESS) {
      fprintf(stderr, "FATAL: cublasLtCreate\n");
      return -1;
    }
    test_gemm_plan(h, lt, ws, 32 << 20, KILN_GEMM_BF16, 128, 1024, 4096);
    test_gemm_plan(h, lt, ws, 32 << 20, KILN_GEMM_BF16, 512, 1024, 6144);
    test_gemm_plan(h, lt, ws, 32 << 20, KILN_GEMM_ACC, 128, 2048, 1024);
    test_gemm_plan(h, lt, ws, 32 << 20, KILN_GEMM_ACC, 1024, 3072, 1024);
    test_gemm_plan(h, lt, ws, 32 << 20, KILN_GEMM_ACC, 37, 512, 768);
    test_gemm_plan(h, lt, ws, 32 << 20, KILN_GEMM_BF16, 1, 64, 8);
    cublasLtDestroy(lt);
    cudaFree(ws);
  }
  cublasDestroy(h);
  return 0;
}

int main(void) {
  gt_skip_without_gpu();
  GT_CUDA(cudaDeviceGetAttribute(&n_sm, cudaDevAttrMultiProcessorCount, 0));
  gt_seed(20250101);
  {
    int wg = 0;
    kiln_cuda_attn_prefill_mma(KILN_CUDA_PF_MMA_WGMMA);
    GT_OK(kiln_cuda_attn_prefill_uses_wgmma(&wg));
    kiln_cuda_attn_prefill_mma(KILN_CUDA_PF_MMA_AUTO);
    printf("prefill attention: mma.sync%s\n", wg ? " and wgmma" : " only (wgmma: no sm_90a code or not a 9.x device)");
  }
  /* KILN_TEST_OPS=sample: the sampling cases only (KILN_TEST_DRAWS=N: N draws a case, for compute-sanitizer; the
   * frequency check needs the default 4,000) */
  const char *only = getenv("KILN_TEST_OPS");
  if (only && !strcmp(only, "sample")) {
    test_samples();
    return gt_finish("test_cuda_ops");
  }

  test_embed(777, 264);
  test_embed(50, 100);
  test_add_rmsnorm(7, 1024, 1, 0);
  test_add_rmsnorm(3, 1000, 0, 0);
  test_add_rmsnorm(1, 4096, 1, 1);
  test_add_rmsnorm(5, 1024, 0, 1);
  /* the vector form at 2, 3 (4B's 2,560), 5 and 8 float4s a thread, and the scalar form past it and at odd sizes */
  test_add_rmsnorm(3, 2048, 1, 1);
  test_add_rmsnorm(4, 2560, 1, 0);
  test_add_rmsnorm(2, 5120, 0, 0);
  test_add_rmsnorm(2, 8192, 1, 1);
  test_add_rmsnorm(2, 10000, 1, 1);
  test_add_rmsnorm(3, 1001, 1, 0);
  test_add_rmsnorm(2, 6, 0, 1);

  test_gemv(999, 1024, KILN_GEMV_STORE, 0, 1, 1);
  test_gemv(1024, 3072, KILN_GEMV_ADD, 1, 0, 0);
  test_gemv(64, 96, KILN_GEMV_ADD, 1, 0, 1);
  test_gemv(151936, 1024, KILN_GEMV_ARGMAX, 0, 1, 0);
  test_gemv(2000, 512, KILN_GEMV_SWIGLU, 0, 1, 0);
  test_gemv(32000, 1024, KILN_GEMV_ARGMAX, 0, 1, 0);
  test_gemv(64, 8, KILN_GEMV_STORE, 0, 0, 0);
  test_gemv(3, 136, KILN_GEMV_STORE, 1, 0, 1);
  test_gemv(4096, 12288, KILN_GEMV_ADD, 1, 0, 0);
  /* long rows over few pairs, where KILN_CUDA_GEMV_SPLIT splits k (ranges of unequal chunk counts, an odd last
   * row, every epilogue) */
  test_gemv(2560, 9728, KILN_GEMV_ADD, 1, 0, 1);
  test_gemv(2561, 4096, KILN_GEMV_STORE, 0, 1, 1);
  test_gemv(1024, 5120, KILN_GEMV_SWIGLU, 0, 1, 0);
  test_gemv(3001, 8192, KILN_GEMV_ARGMAX, 0, 0, 0);
  /* few pairs of 2-4 chunks, about one a warp: a partial last chunk, an odd last row, split k (2 warps a pair of 6
   * chunks), every epilogue */
  test_gemv(2048, 2048, KILN_GEMV_STORE, 0, 1, 1);
  test_gemv(1000, 2560, KILN_GEMV_STORE, 0, 1, 1);
  test_gemv(511, 4096, KILN_GEMV_ADD, 1, 0, 1);
  test_gemv(256, 6144, KILN_GEMV_ADD, 1, 0, 0);
  test_gemv(1536, 2048, KILN_GEMV_SWIGLU, 0, 1, 0);
  test_gemv(300, 3072, KILN_GEMV_ARGMAX, 0, 1, 0);
  /* KILN_TEST_OPS=gemv: up to here only (gpu-test runs the GEMV cases under compute-sanitizer) */
  if (only && !strcmp(only, "gemv")) return gt_finish("test_cuda_ops");
  /* KILN_TEST_OPS=attn_prefill: small prefill attention cases whose long tiles split their keys (2-8 parts, both
   * head sizes), for compute-sanitizer */
  /* KILN_TEST_OPS=gemm: the GEMMs and their plans only, for compute-sanitizer */
  if (only && !strcmp(only, "gemm")) return test_gemms() ? 1 : gt_finish("test_cuda_ops");
  /* KILN_TEST_OPS=attn_decode: the decode attention cases only (a quick check of a setting such as
   * KILN_CUDA_ATTN_GROUP) */
  if (only && !strcmp(only, "attn_decode")) {
    test_attn_decodes();
    return gt_finish("test_cuda_ops");
  }
  /* KILN_TEST_OPS=swiglu: the SwiGLU cases only */
  if (only && !strcmp(only, "swiglu")) {
    test_swiglus();
    return gt_finish("test_cuda_ops");
  }
  if (only && !strcmp(only, "attn_prefill")) {
    test_attn_prefill(8, 4, 128, 512, 129, 1024);
    test_attn_prefill(2, 2, 64, 700, 100, 1024);
    test_attn_prefill(4, 2, 128, 37, 300, 512);
    return gt_finish("test_cuda_ops");
  }

  test_rope_table(KILN_ROPE_DEFAULT, 128, 40960);
  test_rope_table(KILN_ROPE_LLAMA3, 64, 8192);
  test_rope_table(KILN_ROPE_DEFAULT, 256, 100);
  test_qkv_rope(4, 2, 64, KILN_ROPE_DEFAULT, 1, 1);
  test_qkv_rope(4, 2, 128, KILN_ROPE_LLAMA3, 0, 0);
  test_qkv_rope(4, 2, 32, KILN_ROPE_DEFAULT, 1, 0);
  test_qkv_rope(4, 2, 24, KILN_ROPE_LLAMA3, 0, 1);
  test_qkv_rope(4, 2, 128, KILN_ROPE_DEFAULT, 1, 1);
  test_qkv_rope(4, 2, 64, KILN_ROPE_LLAMA3, 0, 1);
  test_qkv_rope(16, 8, 128, KILN_ROPE_DEFAULT, 1, 0); /* Qwen3-0.6B's heads */
  test_qkv_rope(5, 1, 128, KILN_ROPE_LLAMA3, 1, 1);   /* 6 heads: groups of 4 hold q and k heads, and 2 past the end */
  test_qkv_rope(3, 3, 16, KILN_ROPE_DEFAULT, 1, 1);

  test_attn_decodes();

  test_attn_prefill(8, 2, 128, 30, 100, 256);
  test_attn_prefill(4, 4, 64, 0, 64, 64);
  test_attn_prefill(16, 8, 128, 0, 300, 512);
  test_attn_prefill(2, 1, 32, 5, 1, 16);
  test_attn_prefill(4, 2, 256, 10, 70, 128);
  test_attn_prefill(2, 2, 16, 0, 33, 64);
  test_attn_prefill(4, 2, 24, 3, 77, 128);
  test_attn_prefill(2, 1, 40, 0, 20, 32);
  /* head_dim 64 and 128 (the mma.sync kernel): partial query tiles, pos0 not a multiple of the 64-key tile,
   * chunks deep in the cache, grouped-query ratios 1, 2, 4, 8 */
  test_attn_prefill(16, 8, 128, 0, 1, 64);
  test_attn_prefill(4, 1, 128, 0, 15, 64);
  test_attn_prefill(8, 1, 128, 37, 64, 128);
  test_attn_prefill(2, 2, 128, 0, 65, 128);
  test_attn_prefill(32, 4, 128, 0, 127, 128);
  test_attn_prefill(4, 2, 128, 37, 128, 256);
  test_attn_prefill(8, 4, 128, 512, 129, 1024);
  test_attn_prefill(2, 1, 128, 0, 1000, 1024);
  test_attn_prefill(4, 2, 64, 0, 1, 16);
  test_attn_prefill(8, 8, 64, 5, 15, 32);
  test_attn_prefill(32, 8, 64, 0, 64, 64);
  test_attn_prefill(4, 1, 64, 37, 65, 128);
  test_attn_prefill(16, 2, 64, 0, 129, 256);
  test_attn_prefill(32, 32, 64, 100, 128, 256);
  test_attn_prefill(2, 2, 64, 512, 1000, 1536);
  /* key splitting at scale: Qwen3-0.6B's 1,024-token chunk (3 parts on 132 SMs), a chunk deep in the cache (every
   * long tile in 8 parts), and one whose grid already fills the GPU (no split). Their CPU references take
   * seconds, and attention reads none of the switches of the other runs of this test (scripts/gpu-test.sh). */
  if (!getenv("KILN_CUDA_GEMV_SPLIT") && !getenv("KILN_CUDA_ROPE_VEC")) {
    test_attn_prefill(16, 8, 128, 0, 1024, 1024);
    test_attn_prefill(16, 8, 128, 3000, 256, 4096);
    test_attn_prefill(8, 8, 64, 1111, 200, 2048);
    test_attn_prefill(64, 8, 64, 0, 448, 512);
  }

  test_swiglus();

  if (test_gemms()) return 1;

  /* the sampler reads none of the switches of the ops test's other runs (scripts/gpu-test.sh) */
  if (!getenv("KILN_CUDA_GEMV_SPLIT") && !getenv("KILN_CUDA_ROPE_VEC") && !getenv("KILN_CUDA_ATTN_GROUP"))
    test_samples();
  return gt_finish("test_cuda_ops");
}
