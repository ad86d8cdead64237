/*
 * backend/cuda/tune.c: what the decode step prefetches into L2 while attention runs, chosen at create by timing the
 * step on this device (KILN_CUDA_ATTN_L2PF and KILN_CUDA_L2PF_SIDE unset or auto, the default).
 *
 * At short contexts decode attention reads a few hundred KB of cache and spends its microseconds on latency while
 * HBM idles; its blocks can meanwhile prefetch into L2 the weights the o GEMV (and the start of gate/up) read next.
 * Whether that pays is a property of the device: on H100s it made the step 2-11% slower (0bfc727, 61f7f2f: the
 * prefetch's traffic delays attention's own loads and its exit), while a card with more bandwidth at the same
 * latency (an H200) leaves more of attention's time to fill. So the backend does not guess from the device's
 * name: it captures the step with each choice and keeps the fastest. The prefetch is issued either by
 * attention's own blocks or by a kernel of its own on a side branch of the graph (l2_prefetch.h), which keeps it
 * off attention's blocks.
 * The choice changes where bytes are fetched from, never an arithmetic operation: every choice gives the same
 * bits, so a tuned backend is as reproducible as a fixed one.
 */
#include <stdlib.h>
#include <string.h>

#include "backend/cuda/cuda_impl.h"
#include "kiln/status.h"

#define MIB(n) ((int64_t)(n) << 20)
#define TUNE_ROUNDS 3
#define TUNE_STEPS 8
/* A prefetch must beat none by this fraction of the step to be kept: a closer call is within what the rounds of
 * one timing differ by, and none is the choice that never loses to the memory system */
#define TUNE_MARGIN 0.01

/* none; attention's blocks prefetch the o weights, or those and 16 MiB of gate/up; a side branch of the graph
 * does (l2_prefetch.h) */
const kiln_cuda_l2pf kiln_cuda__l2pf_choice[KILN_CUDA_L2PF_CHOICES] = {
    {-1, -1}, {0, -1}, {MIB(16), -1}, {-1, 0}, {-1, MIB(16)}};
const char *const kiln_cuda__l2pf_name[KILN_CUDA_L2PF_CHOICES] = {"off", "attn:o", "attn:o+16MiB", "side:o",
                                                                   "side:o+16MiB"};

int kiln_cuda__l2pf_pick(const double *ms, int n) {
  int best = 0;
  double bar = ms[0] * (1.0 - TUNE_MARGIN);
  for (int i = 1; i < n; i++)
    if (ms[i] > 0 && ms[i] < bar) best = i, bar = ms[i];
  return best;
}

void kiln_cuda__l2pf_set(kiln_backend *b, int choice) {
  b->attn_l2pf = kiln_cuda__l2pf_choice[choice].attn;
  b->side_l2pf = kiln_cuda__l2pf_choice[choice].side;
}

static int cmp_double_(const void *a, const void *b) {
  const double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* Milliseconds a step of graph g takes, over TUNE_STEPS launches after one unmeasured launch. */
static int time_graph_(kiln_backend *b, cudaGraphExec_t g, cudaEvent_t e0, cudaEvent_t e1, double *ms) {
  KILN_CUDA_CHECK(cudaGraphLaunch(g, b->stream));
  KILN_CUDA_CHECK(cudaEventRecord(e0, b->stream));
  for (int i = 0; i < TUNE_STEPS; i++) KILN_CUDA_CHECK(cudaGraphLaunch(g, b->stream));
  KILN_CUDA_CHECK(cudaEventRecord(e1, b->stream));
  KILN_CUDA_CHECK(cudaEventSynchronize(e1));
  float f = 0.f;
  KILN_CUDA_CHECK(cudaEventElapsedTime(&f, e0, e1));
  *ms = (double)f / TUNE_STEPS;
  return 0;
}

/* The logits graph of each choice at each position (pos[1] < 0: one position), captured after an eager warm-up
 * of that choice (the first launch of a kernel sets its attributes, which a capture must not). */
static int capture_all_(kiln_backend *b, const int pos[2], cudaGraphExec_t g[][2]) {
  int rc = 0;
  for (int c = 0; c < KILN_CUDA_L2PF_CHOICES && !rc; c++) {
    kiln_cuda__l2pf_set(b, c);
    for (int p = 0; p < 2 && pos[p] >= 0 && !rc; p++) {
      const int s = kiln_cuda__step_short_splits(b, pos[p]);
      b->h_step->pos = pos[p];
      if ((rc = kiln_cuda__decode_enqueue(b, false, s))) break;
      KILN_CUDA_CHECK(cudaStreamSynchronize(b->stream));
      rc = kiln_cuda__capture_decode(b, false, s, &g[c][p]);
    }
  }
  return rc;
}

/* Times every choice at every position in interleaved rounds; ms[c] = the sum over positions of the median
 * round. */
static int time_all_(kiln_backend *b, const int pos[2], cudaGraphExec_t g[][2], double *ms) {
  cudaEvent_t e0 = NULL, e1 = NULL;
  int rc = 0;
  double t[KILN_CUDA_L2PF_CHOICES][2][TUNE_ROUNDS];
  cudaError_t e = cudaEventCreate(&e0);
  if (e == cudaSuccess) e = cudaEventCreate(&e1);
  if (e != cudaSuccess) {
    rc = kiln_cuda__check(e, "cudaEventCreate", __FILE__, __LINE__);
    goto out;
  }
  for (int r = 0; r < TUNE_ROUNDS && !rc; r++)
    for (int c = 0; c < KILN_CUDA_L2PF_CHOICES && !rc; c++)
      for (int p = 0; p < 2 && pos[p] >= 0 && !rc; p++) {
        b->h_step->pos = pos[p];
        rc = time_graph_(b, g[c][p], e0, e1, &t[c][p][r]);
      }
  for (int c = 0; c < KILN_CUDA_L2PF_CHOICES && !rc; c++) {
    ms[c] = 0.0;
    for (int p = 0; p < 2 && pos[p] >= 0; p++) {
      qsort(t[c][p], TUNE_ROUNDS, sizeof t[c][p][0], cmp_double_);
      ms[c] += t[c][p][TUNE_ROUNDS / 2];
    }
  }
out:
  if (e0) (void)cudaEventDestroy(e0);
  if (e1) (void)cudaEventDestroy(e1);
  return rc;
}

int kiln_cuda__tune_l2pf(kiln_backend *b, int *choice) {
  *choice = 0;
  /* a position the short-context graphs serve and one the main graphs serve, where the context allows */
  int pos[2] = {b->n_ctx - 1 < 127 ? b->n_ctx - 1 : 127, b->n_ctx - 1 < 2047 ? b->n_ctx - 1 : 2047};
  if (kiln_cuda__short_level(b, pos[1]) == kiln_cuda__short_level(b, pos[0])) pos[1] = -1;
  cudaGraphExec_t g[KILN_CUDA_L2PF_CHOICES][2];
  memset(g, 0, sizeof g);
  memset(b->h_step, 0, sizeof *b->h_step);
  const int64_t was = b->attn_l2pf, was_side = b->side_l2pf;
  int rc = capture_all_(b, pos, g);
  if (!rc) rc = time_all_(b, pos, g, b->l2pf_tune_ms);
  for (int c = 0; c < KILN_CUDA_L2PF_CHOICES; c++)
    for (int p = 0; p < 2; p++)
      if (g[c][p]) (void)cudaGraphExecDestroy(g[c][p]);
  b->attn_l2pf = was, b->side_l2pf = was_side;
  memset(b->h_step, 0, sizeof *b->h_step);
  if (rc) return rc;
  *choice = kiln_cuda__l2pf_pick(b->l2pf_tune_ms, KILN_CUDA_L2PF_CHOICES);
  return 0;
}
