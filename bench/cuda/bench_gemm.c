/*
 * bench/cuda/bench_gemm.c: the prefill GEMMs of a config's shape (q/k/v, o, gate/up, down), each timed as kiln runs
 * it (cublasGemmEx, CUBLAS_GEMM_DEFAULT) and with every algorithm that cublasLt's heuristic offers for it, to see
 * what the fixed choice leaves on the table; then the first distinct offers again with split-k forced to 2-16 (both
 * reduction schemes), which the heuristic rarely offers for the few output tiles of a short chunk. For each
 * product: the GemmEx time, cublasLt's first offer, the fastest candidate with its configuration (tile, split-k,
 * reduction scheme, stages, swizzle, cluster shape), whether that one is bitwise repeatable, and its largest
 * difference from the GemmEx result.
 *   bench_gemm [--tokens N[,N...]] [--reps R] [--own-only 1] CONFIG.json...
 * Then kiln's own GEMM (gemm_tc.h, where the device runs it) with every tile, and for gate/up with SwiGLU fused
 * (own_swiglu_us: the product and the activation in one kernel, against gemmex_us + swiglu_us of the two).
 * Output: one JSON object per (config, tokens, product) on stdout. Random bf16 operands; y += x W^T products (o,
 * down) start from the same random y every repetition.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <jansson.h>

#include "backend/cuda/gemm_tc.h"
#include "backend/cuda/swiglu.h"
#include "kiln/kiln.h"

#define BENCH_NAME "bench_gemm"
#include "bench_common.h"

#define MAX_ALGOS 32
#define SPLIT_BASES 4 /* offers that get forced split-k variants */
#define MAX_CANDS (MAX_ALGOS + SPLIT_BASES * 7 * 2)
#define WS_BYTES ((size_t)32 << 20)

#define CB(x)                                                                                  \
  do {                                                                                         \
    int s_ = (int)(x);                                                                         \
    if (s_ != 0) {                                                                             \
      fprintf(stderr, "bench_gemm: %s: status %d (line %d)\n", #x, s_, __LINE__);              \
      exit(1);                                                                                 \
    }                                                                                          \
  } while (0)

typedef struct product {
  const char *name;
  int64_t in, out;
  int acc; /* 1: y f32 += x W^T; 0: y bf16 = x W^T */
} product;

static uint16_t bf16_of(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  return (uint16_t)((u + 0x7fff + ((u >> 16) & 1)) >> 16);
}

static void *dev_random(size_t n, int bf16, float scale, unsigned seed) {
  size_t bytes = n * (bf16 ? 2 : 4);
  void *h = malloc(bytes), *d;
  srand(seed);
  for (size_t i = 0; i < n; i++) {
    float v = ((float)rand() / (float)RAND_MAX * 2.f - 1.f) * scale;
    if (bf16) ((uint16_t *)h)[i] = bf16_of(v);
    else ((float *)h)[i] = v;
  }
  CK(cudaMalloc(&d, bytes));
  CK(cudaMemcpy(d, h, bytes, cudaMemcpyHostToDevice));
  free(h);
  return d;
}

typedef struct run_ctx {
  cublasHandle_t h;
  cublasLtHandle_t lt;
  cudaStream_t st;
  void *ws;
  cudaEvent_t e0, e1;
  int reps;
  int n_sm;
  int own;               /* >= 0: launch runs kiln's own GEMM with this tile (kiln_tc_tile), not cuBLAS */
  kiln_gemm_out own_kind; /* and this output */
  void *act;             /* -1 own: cuBLAS's bf16 product, then kiln's SwiGLU kernel into act */
  int own_only;          /* --own-only 1: cublasGemmEx and kiln's own, no cublasLt offers (for a profiler) */
} run_ctx;

/* y (out x n column-major = row-major [n][out]) from y0, then the product; algo NULL: cublasGemmEx */
static void launch(run_ctx *r, const product *p, int64_t n, void *y, const void *y0, const void *x, const void *w,
                   cublasLtMatmulDesc_t op, cublasLtMatrixLayout_t la, cublasLtMatrixLayout_t lb,
                   cublasLtMatrixLayout_t lc, const cublasLtMatmulAlgo_t *algo) {
  const float one = 1.f, beta = p->acc ? 1.f : 0.f;
  if (p->acc) CK(cudaMemcpyAsync(y, y0, (size_t)n * p->out * 4, cudaMemcpyDeviceToDevice, r->st));
  if (r->own >= 0) {
    if (kiln_cuda_gemm_tc(r->own_kind, y, x, w, n, p->in, p->out, (kiln_tc_tile)r->own, r->n_sm, r->st)) {
      fprintf(stderr, "bench_gemm: %s\n", kiln_last_error());
      exit(1);
    }
    return;
  }
  if (!algo) {
    CB(cublasGemmEx(r->h, CUBLAS_OP_T, CUBLAS_OP_N, (int)p->out, (int)n, (int)p->in, &one, w, CUDA_R_16BF,
                    (int)p->in, x, CUDA_R_16BF, (int)p->in, &beta, y, p->acc ? CUDA_R_32F : CUDA_R_16BF, (int)p->out,
                    CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    if (r->act && kiln_cuda_swiglu(r->act, y, n, p->out / 2, r->st)) {
      fprintf(stderr, "bench_gemm: %s\n", kiln_last_error());
      exit(1);
    }
  } else {
    CB(cublasLtMatmul(r->lt, op, &one, w, la, x, lb, &beta, y, lc, y, lc, algo, r->ws, WS_BYTES, r->st));
  }
}

/* Mean µs of the product alone: the y0 copy of the accumulating products is timed separately and taken off. */
static double time_us(run_ctx *r, const product *p, int64_t n, void *y, const void *y0, const void *x, const void *w,
                      cublasLtMatmulDesc_t op, cublasLtMatrixLayout_t la, cublasLtMatrixLayout_t lb,
                      cublasLtMatrixLayout_t lc, const cublasLtMatmulAlgo_t *algo) {
  for (int i = 0; i < 3; i++) launch(r, p, n, y, y0, x, w, op, la, lb, lc, algo);
  CK(cudaEventRecord(r->e0, r->st));
  for (int i = 0; i < r->reps; i++) launch(r, p, n, y, y0, x, w, op, la, lb, lc, algo);
  CK(cudaEventRecord(r->e1, r->st));
  CK(cudaEventSynchronize(r->e1));
  float ms;
  CK(cudaEventElapsedTime(&ms, r->e0, r->e1));
  double copy = 0;
  if (p->acc) {
    CK(cudaEventRecord(r->e0, r->st));
    for (int i = 0; i < r->reps; i++)
      CK(cudaMemcpyAsync(y, y0, (size_t)n * p->out * 4, cudaMemcpyDeviceToDevice, r->st));
    CK(cudaEventRecord(r->e1, r->st));
    CK(cudaEventSynchronize(r->e1));
    float c;
    CK(cudaEventElapsedTime(&c, r->e0, r->e1));
    copy = c;
  }
  return (ms - copy) * 1e3 / r->reps;
}

static float as_f32(const void *y, int acc, size_t i) {
  if (acc) return ((const float *)y)[i];
  uint32_t u = (uint32_t)((const uint16_t *)y)[i] << 16;
  float f;
  memcpy(&f, &u, 4);
  return f;
}

static json_t *algo_desc(const cublasLtMatmulAlgo_t *a) {
  int id = 0, tile = 0, splitk = 0, red = 0, stages = 0, swz = 0, cluster = 0;
  cublasLtMatmulAlgoConfigGetAttribute(a, CUBLASLT_ALGO_CONFIG_ID, &id, sizeof id, NULL);
  cublasLtMatmulAlgoConfigGetAttribute(a, CUBLASLT_ALGO_CONFIG_TILE_ID, &tile, sizeof tile, NULL);
  cublasLtMatmulAlgoConfigGetAttribute(a, CUBLASLT_ALGO_CONFIG_SPLITK_NUM, &splitk, sizeof splitk, NULL);
  cublasLtMatmulAlgoConfigGetAttribute(a, CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME, &red, sizeof red, NULL);
  cublasLtMatmulAlgoConfigGetAttribute(a, CUBLASLT_ALGO_CONFIG_STAGES_ID, &stages, sizeof stages, NULL);
  cublasLtMatmulAlgoConfigGetAttribute(a, CUBLASLT_ALGO_CONFIG_CTA_SWIZZLING, &swz, sizeof swz, NULL);
  cublasLtMatmulAlgoConfigGetAttribute(a, CUBLASLT_ALGO_CONFIG_CLUSTER_SHAPE_ID, &cluster, sizeof cluster, NULL);
  return json_pack("{s:i, s:i, s:i, s:i, s:i, s:i, s:i}", "algo_id", id, "tile_id", tile, "splitk", splitk,
                   "reduction", red, "stages_id", stages, "swizzle", swz, "cluster_id", cluster);
}

static void bench_product(run_ctx *r, const char *config, const product *p, int64_t n) {
  const int acc = p->acc;
  void *w = dev_random((size_t)(p->out * p->in), 1, 0.05f, 1), *x = dev_random((size_t)(n * p->in), 1, 1.f, 2);
  void *y0 = dev_random((size_t)(n * p->out), 0, 1.f, 3), *y;
  const size_t ybytes = (size_t)(n * p->out) * (acc ? 4 : 2);
  CK(cudaMalloc(&y, ybytes));
  void *ref = malloc(ybytes), *got = malloc(ybytes), *again = malloc(ybytes);

  cublasLtMatmulDesc_t op;
  cublasLtMatrixLayout_t la, lb, lc;
  const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
  CB(cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  CB(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
  CB(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
  CB(cublasLtMatrixLayoutCreate(&la, CUDA_R_16BF, (uint64_t)p->in, (uint64_t)p->out, p->in));
  CB(cublasLtMatrixLayoutCreate(&lb, CUDA_R_16BF, (uint64_t)p->in, (uint64_t)n, p->in));
  CB(cublasLtMatrixLayoutCreate(&lc, acc ? CUDA_R_32F : CUDA_R_16BF, (uint64_t)p->out, (uint64_t)n, p->out));
  cublasLtMatmulPreference_t pref;
  size_t wsb = WS_BYTES;
  CB(cublasLtMatmulPreferenceCreate(&pref));
  CB(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &wsb, sizeof wsb));
  cublasLtMatmulHeuristicResult_t res[MAX_ALGOS];
  int count = 0;
  CB(cublasLtMatmulAlgoGetHeuristic(r->lt, op, la, lb, lc, lc, pref, MAX_ALGOS, res, &count));

  /* candidates: every offer, then split-k variants of the first SPLIT_BASES offers that cublasLt accepts */
  cublasLtMatmulAlgo_t cand[MAX_CANDS];
  float waves[MAX_CANDS]; /* cublasLt's estimate: 1.0 fills the GPU once */
  int nc = 0;
  for (int i = 0; i < count; i++)
    if (res[i].state == CUBLAS_STATUS_SUCCESS) waves[nc] = res[i].wavesCount, cand[nc++] = res[i].algo;
  const int n_offers = nc;
  static const int splits[] = {2, 3, 4, 6, 8, 12, 16};
  static const cublasLtReductionScheme_t schemes[] = {CUBLASLT_REDUCTION_SCHEME_INPLACE,
                                                      CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE};
  for (int i = 0; i < n_offers && i < SPLIT_BASES; i++)
    for (size_t k = 0; k < sizeof splits / sizeof splits[0]; k++)
      for (size_t m = 0; m < 2; m++) {
        cublasLtMatmulAlgo_t a = cand[i];
        const int sk = splits[k];
        const uint32_t sc = (uint32_t)schemes[m];
        cublasLtMatmulHeuristicResult_t chk;
        if (cublasLtMatmulAlgoConfigSetAttribute(&a, CUBLASLT_ALGO_CONFIG_SPLITK_NUM, &sk, sizeof sk) ||
            cublasLtMatmulAlgoConfigSetAttribute(&a, CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME, &sc, sizeof sc) ||
            cublasLtMatmulAlgoCheck(r->lt, op, la, lb, lc, lc, &a, &chk) || chk.workspaceSize > WS_BYTES)
          continue;
        waves[nc] = chk.wavesCount, cand[nc++] = a;
      }
  const double gemmex = time_us(r, p, n, y, y0, x, w, op, la, lb, lc, NULL);
  launch(r, p, n, y, y0, x, w, op, la, lb, lc, NULL);
  CK(cudaMemcpy(ref, y, ybytes, cudaMemcpyDeviceToHost));
  double first = -1, best = 1e30, best_offer = 1e30;
  int bi = -1;
  json_t *all = json_array();
  for (int i = 0; i < (r->own_only ? 0 : nc); i++) {
    const double t = time_us(r, p, n, y, y0, x, w, op, la, lb, lc, &cand[i]);
    if (i == 0) first = t;
    if (i < n_offers && t < best_offer) best_offer = t;
    json_t *d = algo_desc(&cand[i]);
    json_object_set_new(d, "us", json_real(t));
    json_object_set_new(d, "offered", json_boolean(i < n_offers));
    json_object_set_new(d, "waves", json_real(waves[i]));
    json_array_append_new(all, d);
    if (t < best) best = t, bi = i;
  }
  json_t *o = json_pack("{s:s, s:i, s:s, s:I, s:I, s:b, s:f, s:f, s:i}", "config", config, "tokens", (int)n, "product",
                        p->name, "in", (json_int_t)p->in, "out", (json_int_t)p->out, "acc", acc, "gemmex_us", gemmex,
                        "lt_first_us", first, "offers", count);
  const double flop = 2.0 * (double)n * (double)p->in * (double)p->out;
  json_object_set_new(o, "gemmex_tflops", json_real(flop / gemmex * 1e-6));
  if (bi >= 0) {
    launch(r, p, n, y, y0, x, w, op, la, lb, lc, &cand[bi]);
    CK(cudaMemcpy(got, y, ybytes, cudaMemcpyDeviceToHost));
    launch(r, p, n, y, y0, x, w, op, la, lb, lc, &cand[bi]);
    CK(cudaMemcpy(again, y, ybytes, cudaMemcpyDeviceToHost));
    double maxd = 0, maxr = 0;
    for (size_t i = 0; i < (size_t)(n * p->out); i++) {
      const double a = as_f32(ref, acc, i), b = as_f32(got, acc, i), d = fabs(a - b);
      if (d > maxd) maxd = d;
      if (fabs(a) > maxr) maxr = fabs(a);
    }
    json_object_set_new(o, "best_us", json_real(best));
    json_object_set_new(o, "best_tflops", json_real(flop / best * 1e-6));
    json_object_set_new(o, "best", algo_desc(&cand[bi]));
    json_object_set_new(o, "best_waves", json_real(waves[bi]));
    json_object_set_new(o, "first_waves", json_real(waves[0]));
    json_object_set_new(o, "best_offer_us", json_real(best_offer));
    json_object_set_new(o, "best_repeatable", json_boolean(!memcmp(got, again, ybytes)));
    json_object_set_new(o, "best_max_abs_diff_vs_gemmex", json_real(maxd));
    json_object_set_new(o, "max_abs_gemmex", json_real(maxr));
  }
  json_object_set_new(o, "all", all);
  if (kiln_cuda_gemm_tc_available()) { /* kiln's own, every tile; its largest difference from cuBLAS's result */
    json_t *own = json_array();
    double own_best = 1e30;
    for (int t = KILN_TC_AUTO; t < KILN_TC_TILES; t++) {
      r->own = t, r->own_kind = acc ? KILN_GEMM_ACC : KILN_GEMM_BF16;
      const double us = time_us(r, p, n, y, y0, x, w, op, la, lb, lc, NULL);
      launch(r, p, n, y, y0, x, w, op, la, lb, lc, NULL);
      CK(cudaMemcpy(got, y, ybytes, cudaMemcpyDeviceToHost));
      double maxd = 0;
      for (size_t i = 0; i < (size_t)(n * p->out); i++) {
        const double d = fabs(as_f32(ref, acc, i) - as_f32(got, acc, i));
        if (d > maxd) maxd = d;
      }
      const int tt = t ? t : (int)kiln_cuda_gemm_tc_auto(n, p->in, p->out, r->n_sm);
      json_array_append_new(own, json_pack("{s:i, s:i, s:f, s:f, s:f}", "tile", t, "tile_used", tt, "us", us,
                                           "tflops", flop / us * 1e-6, "max_abs_diff_vs_gemmex", maxd));
      if (t && us < own_best) own_best = us;
    }
    json_object_set_new(o, "own", own);
    json_object_set_new(o, "own_best_us", json_real(own_best));
    if (!strcmp(p->name, "gate_up")) { /* SwiGLU fused, auto tile, against cuBLAS's product + the SwiGLU kernel */
      r->own = KILN_TC_AUTO, r->own_kind = KILN_GEMM_SWIGLU;
      json_object_set_new(o, "own_swiglu_us", json_real(time_us(r, p, n, y, y0, x, w, op, la, lb, lc, NULL)));
      r->own = -1;
      CK(cudaMalloc(&r->act, (size_t)(n * p->out)));
      json_object_set_new(o, "gemmex_swiglu_us", json_real(time_us(r, p, n, y, y0, x, w, op, la, lb, lc, NULL)));
      CK(cudaFree(r->act));
      r->act = NULL;
    }
    r->own = -1;
  }
  char *s = json_dumps(o, JSON_COMPACT);
  printf("%s\n", s);
  fflush(stdout);
  free(s);
  json_decref(o);
  cublasLtMatmulPreferenceDestroy(pref);
  cublasLtMatrixLayoutDestroy(la), cublasLtMatrixLayoutDestroy(lb), cublasLtMatrixLayoutDestroy(lc);
  cublasLtMatmulDescDestroy(op);
  free(ref), free(got), free(again);
  cudaFree(w), cudaFree(x), cudaFree(y0), cudaFree(y);
}

int main(int argc, char **argv) {
  int tokens[8] = {1024}, n_tokens = 1;
  run_ctx r = {.reps = 20, .own = -1};
  int i = 1;
  for (; i < argc && !strncmp(argv[i], "--", 2); i += 2) {
    if (i + 1 >= argc) {
      fprintf(stderr, "bench_gemm: %s needs a value\n", argv[i]);
      return 2;
    }
    if (!strcmp(argv[i], "--tokens")) {
      n_tokens = 0;
      for (char *s = argv[i + 1]; *s && n_tokens < 8;) {
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s || v < 1 || v > 65536) {
          fprintf(stderr, "bench_gemm: --tokens %s: expected numbers 1-65536, comma-separated\n", argv[i + 1]);
          return 2;
        }
        tokens[n_tokens++] = (int)v;
        s = *end == ',' ? end + 1 : end;
      }
    } else if (!strcmp(argv[i], "--reps")) {
      r.reps = atoi(argv[i + 1]);
      if (r.reps < 1 || r.reps > 10000) {
        fprintf(stderr, "bench_gemm: --reps %s: expected 1-10000\n", argv[i + 1]);
        return 2;
      }
    } else if (!strcmp(argv[i], "--own-only")) {
      r.own_only = atoi(argv[i + 1]) != 0;
    } else {
      fprintf(stderr, "bench_gemm: unknown option %s\n", argv[i]);
      return 2;
    }
  }
  if (i >= argc) {
    fprintf(stderr, "usage: bench_gemm [--tokens N[,N...]] [--reps R] [--own-only 1] CONFIG.json...\n");
    return 2;
  }
  CK(cudaStreamCreate(&r.st));
  CK(cudaDeviceGetAttribute(&r.n_sm, cudaDevAttrMultiProcessorCount, 0));
  CB(cublasCreate(&r.h));
  CB(cublasSetStream(r.h, r.st));
  CB(cublasLtCreate(&r.lt));
  CK(cudaMalloc(&r.ws, WS_BYTES));
  CB(cublasSetWorkspace(r.h, r.ws, WS_BYTES));
  CK(cudaEventCreate(&r.e0));
  CK(cudaEventCreate(&r.e1));
  for (; i < argc; i++) {
    size_t len;
    char *txt = slurp(argv[i], &len);
    kiln_config c;
    if (!txt || kiln_config_parse(&c, txt, len, argv[i])) {
      fprintf(stderr, "bench_gemm: %s: %s\n", argv[i], txt ? kiln_last_error() : "cannot read");
      return 1;
    }
    free(txt);
    const char *slash = strrchr(argv[i], '/');
    const int64_t H = c.hidden_size, I = c.intermediate_size, nq = (int64_t)c.n_heads * c.head_dim;
    const product ps[] = {{"qkv", H, nq + 2 * (int64_t)c.n_kv_heads * c.head_dim, 0},
                          {"o", nq, H, 1},
                          {"gate_up", H, 2 * I, 0},
                          {"down", I, H, 1}};
    for (int t = 0; t < n_tokens; t++)
      for (size_t k = 0; k < sizeof ps / sizeof ps[0]; k++) bench_product(&r, slash ? slash + 1 : argv[i], &ps[k], tokens[t]);
  }
  return 0;
}
