/*
 * backend/cuda/gemm_plan.c: the algorithm of a prefill product chosen by timing (gemm.h, kiln_cuda_gemm_plan).
 *
 * cublasGemmEx's default algorithm is often not the fastest for the short, wide products of a prefill chunk: on
 * an H100 (bench_gemm, docs/benchmarks.md) the fastest cublasLt offer without split-k beat it by 10-25% on most
 * 128-token products and by 2.4x on 0.6B's 512-token gate/up, while cublasLt's own first choice was at times far
 * slower. Offers that split k sum their parts in another order, so they are not timed; every other offer is run
 * once on the planning input and kept only if its result is the default's bit for bit, so the engine's output
 * does not depend on which algorithm a plan picked (nor on the timing noise that picked it).
 */
#include "backend/cuda/compare.h"
#include "backend/cuda/cuda_common.h"
#include "backend/cuda/gemm.h"
#include "backend/cuda/gemm_lt.h"
#include "backend/cuda/random_fill.h"

enum { ROUNDS = 2, REPS = 4 };
/* an offer replaces the default only when it is this much faster, so that noise does not pick among equals */
#define PLAN_MARGIN 0.98f

/* Runs candidate c (-1: the default) once into y; clears *ok when an offer cannot run. */
static int run_(const kiln_cuda_gemm_env *e, const kiln_cuda_gemm_lt *d, const cublasLtMatmulAlgo_t *cand, int c,
                kiln_gemm_out kind, void *y, const uint16_t *x, const uint16_t *w, int64_t n, int64_t in,
                int64_t out, bool *ok) {
  if (c < 0) return kiln_cuda_gemm_run(e, NULL, kind, y, x, w, n, in, out);
  if (kiln_cuda__gemm_lt_run(e, d, &cand[c], kind, y, x, w)) *ok = false; /* an offer that cannot run is dropped */
  return 0;
}

int kiln_cuda_gemm_plan(const kiln_cuda_gemm_env *e, const kiln_cuda_gemm_scratch *s, kiln_gemm_out kind,
                        const uint16_t *const *w, int n_w, int64_t n, int64_t in, int64_t out,
                        kiln_cuda_gemm_algo *plan) {
  *plan = (kiln_cuda_gemm_algo){0};
  if (n <= 0 || in <= 0 || out <= 0 || n_w < 1 || n > 0x7fffffff || in > 0x7fffffff || out > 0x7fffffff)
    return kiln_error(KILN_EINVAL, "cuda gemm plan: bad shape %lld x %lld x %lld", (long long)n, (long long)in,
                      (long long)out);
  const bool acc = kind == KILN_GEMM_ACC;
  const int64_t ybytes = n * out * (kind == KILN_GEMM_BF16 ? 2 : 4);
  cudaStream_t st = e->stream;
  kiln_cuda_gemm_lt d = {0};
  cublasLtMatmulPreference_t pref = NULL;
  cudaEvent_t ev[ROUNDS][KILN_GEMM_PLAN_MAX + 1][2] = {{{0}}};
  cublasLtMatmulAlgo_t cand[KILN_GEMM_PLAN_MAX];
  bool ok[KILN_GEMM_PLAN_MAX];
  unsigned diff[KILN_GEMM_PLAN_MAX];
  int nc = 0, rc;

  /* the planning input, and the default's result on it */
  if ((rc = kiln_cuda_fill_random(s->x, NULL, n * in, 0x6b696c6e706c616eull, 0.f, 1.f, st))) return rc;
  if (acc && (rc = kiln_cuda_fill_random(NULL, (float *)s->y0, n * out, 0x79306b696c6eull, 0.f, 1.f, st)))
    return rc;
  if (acc) KILN_CUDA_CHECK(cudaMemcpyAsync(s->ref, s->y0, (size_t)ybytes, cudaMemcpyDeviceToDevice, st));
  if ((rc = kiln_cuda_gemm_run(e, NULL, kind, s->ref, s->x, w[0], n, in, out))) return rc;

  /* cublasLt's offers that keep k whole */
  if ((rc = kiln_cuda__gemm_lt_desc(&d, kind, n, in, out))) return rc;
  cublasLtMatmulHeuristicResult_t res[KILN_GEMM_PLAN_MAX];
  int count = 0;
  if (cublasLtMatmulPreferenceCreate(&pref) == CUBLAS_STATUS_SUCCESS &&
      cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &e->ws_bytes,
                                           sizeof e->ws_bytes) == CUBLAS_STATUS_SUCCESS &&
      cublasLtMatmulAlgoGetHeuristic(e->lt, d.op, d.a, d.b, d.c, d.c, pref, KILN_GEMM_PLAN_MAX, res, &count) !=
          CUBLAS_STATUS_SUCCESS)
    count = 0; /* no offers: the default stays */
  for (int i = 0; i < count; i++) {
    int splitk = 1;
    (void)cublasLtMatmulAlgoConfigGetAttribute(&res[i].algo, CUBLASLT_ALGO_CONFIG_SPLITK_NUM, &splitk,
                                               sizeof splitk, NULL);
    if (res[i].state == CUBLAS_STATUS_SUCCESS && res[i].workspaceSize <= e->ws_bytes && splitk <= 1)
      ok[nc] = true, cand[nc++] = res[i].algo;
  }

  /* each offer's result against the default's, on the same input */
  if (nc > 0) KILN_CUDA_TRY(cudaMemsetAsync(s->diff, 0, sizeof(unsigned) * (size_t)nc, st));
  for (int c = 0; c < nc; c++) {
    if (acc) KILN_CUDA_TRY(cudaMemcpyAsync(s->y, s->y0, (size_t)ybytes, cudaMemcpyDeviceToDevice, st));
    if ((rc = run_(e, &d, cand, c, kind, s->y, s->x, w[0], n, in, out, &ok[c]))) goto out;
    if ((rc = kiln_cuda_bits_differ(s->y, s->ref, ybytes, &s->diff[c], st))) goto out;
  }

  /* times: the default and each offer in turn, ROUNDS times, each REPS runs over the weights in turn (from memory,
   * as a model's layers read them) after one untimed run */
  for (int r = 0; r < ROUNDS; r++)
    for (int c = 0; c <= nc; c++)
      for (int k = 0; k < 2; k++) KILN_CUDA_TRY(cudaEventCreate(&ev[r][c][k]));
  for (int r = 0; r < ROUNDS; r++)
    for (int c = -1; c < nc; c++) {
      if (c >= 0 && !ok[c]) continue;
      if ((rc = run_(e, &d, cand, c, kind, s->y, s->x, w[0], n, in, out, c >= 0 ? &ok[c] : NULL))) goto out;
      KILN_CUDA_TRY(cudaEventRecord(ev[r][c + 1][0], st));
      for (int i = 0; i < REPS; i++)
        if ((rc = run_(e, &d, cand, c, kind, s->y, s->x, w[(r * REPS + i + 1) % n_w], n, in, out,
                       c >= 0 ? &ok[c] : NULL)))
          goto out;
      KILN_CUDA_TRY(cudaEventRecord(ev[r][c + 1][1], st));
    }
  if (nc > 0) KILN_CUDA_TRY(cudaMemcpyAsync(diff, s->diff, sizeof(unsigned) * (size_t)nc, cudaMemcpyDeviceToHost, st));
  KILN_CUDA_TRY(cudaStreamSynchronize(st));

  float best[KILN_GEMM_PLAN_MAX + 1];
  for (int c = 0; c <= nc; c++) {
    best[c] = -1.f;
    if (c > 0 && !ok[c - 1]) continue;
    for (int r = 0; r < ROUNDS; r++) {
      float ms;
      KILN_CUDA_TRY(cudaEventElapsedTime(&ms, ev[r][c][0], ev[r][c][1]));
      const float us = ms * 1e3f / REPS;
      if (best[c] < 0 || us < best[c]) best[c] = us;
    }
  }
  plan->us = plan->us_default = best[0];
  plan->candidates = nc;
  for (int c = 0; c < nc; c++) {
    if (!ok[c] || diff[c]) continue;
    plan->identical++;
    if (best[c + 1] < plan->us * PLAN_MARGIN) plan->lt = true, plan->algo = cand[c], plan->us = best[c + 1];
  }
out:
  for (int r = 0; r < ROUNDS; r++)
    for (int c = 0; c <= KILN_GEMM_PLAN_MAX; c++)
      for (int k = 0; k < 2; k++)
        if (ev[r][c][k]) (void)cudaEventDestroy(ev[r][c][k]);
  if (pref) (void)cublasLtMatmulPreferenceDestroy(pref);
  kiln_cuda__gemm_lt_free(&d);
  return rc;
}
