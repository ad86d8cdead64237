/*
 * backend/cuda/gemm.c: y = x W^T (or y += x W^T) with cuBLAS / cublasLt. cuBLAS is column-major; a row-major
 * y[n][out] is the column-major out x n matrix y^T = W x^T, where W (row-major [out][in]) is the column-major
 * in x out matrix transposed (op T, lda = in) and x (row-major [n][in]) is the column-major in x n matrix (op N,
 * ldb = in).
 *
 * The plan of a shape (auto): cublasGemmEx with its default algorithm, as before plans, when cublasLt's first
 * offer fills the GPU (its wave estimate at least PLAN_FULL_WAVES). A short chunk gives few output tiles
 * (Qwen3-0.6B's o projection at 128 tokens: 8 tiles of 128 x 128 for 132 SMs); then that offer runs with k cut
 * into the fewest parts that fill the GPU, each over at least PLAN_MIN_K of k, the parts reduced in the output
 * type with workspace counters that fix their order (CUBLASLT_REDUCTION_SCHEME_INPLACE, deterministic). The choice
 * depends only on the shape and the device, never on a timing, so a process and its next run compute the same
 * bits.
 */
#include <stdlib.h>
#include <string.h>

#include <cublasLt.h>
#include <cublas_v2.h>

#include "backend/cuda/cuda_common.h"
#include "backend/cuda/gemm.h"

#define PLAN_FULL_WAVES 0.75f
#define PLAN_MIN_K 256
#define PLAN_OFFERS 8

enum { MODE_AUTO, MODE_GEMMEX, MODE_LT };

typedef struct plan {
  int64_t n, in, out;
  int y_bf16, acc;
  int splitk; /* 0: cublasGemmEx; else cublasLt with this split-k */
  cublasLtMatmulDesc_t op;
  cublasLtMatrixLayout_t la, lb, lc;
  cublasLtMatmulAlgo_t algo;
} plan;

struct kiln_cuda_gemm_ctx {
  cublasHandle_t h;
  cublasLtHandle_t lt;
  cudaStream_t stream;
  void *ws;
  size_t ws_bytes;
  int mode;
  plan *plans;
  int n_plans, cap_plans;
};

#define LT_CHECK(stmt) KILN_CUBLAS_CHECK(stmt)

int kiln_cuda_gemm_create(kiln_cuda_gemm_ctx **out, cudaStream_t stream, void *ws, size_t ws_bytes) {
  *out = NULL;
  const char *m = getenv("KILN_CUDA_GEMM");
  int mode = !m || !*m || !strcmp(m, "auto") ? MODE_AUTO : !strcmp(m, "gemmex") ? MODE_GEMMEX
                                                           : !strcmp(m, "lt")     ? MODE_LT
                                                                                  : -1;
  if (mode < 0) return kiln_error(KILN_EINVAL, "cuda: KILN_CUDA_GEMM=%s: expected auto, gemmex or lt", m);
  kiln_cuda_gemm_ctx *g = calloc(1, sizeof *g);
  if (!g) return kiln_error(KILN_ENOMEM, "cuda gemm: out of host memory");
  g->stream = stream, g->ws = ws, g->ws_bytes = ws_bytes, g->mode = mode;
  int rc = kiln_cublas__check(cublasCreate(&g->h), "cublasCreate", __FILE__, __LINE__);
  if (!rc) rc = kiln_cublas__check(cublasSetStream(g->h, stream), "cublasSetStream", __FILE__, __LINE__);
  if (!rc) rc = kiln_cublas__check(cublasSetWorkspace(g->h, ws, ws_bytes), "cublasSetWorkspace", __FILE__, __LINE__);
  if (!rc) rc = kiln_cublas__check(cublasLtCreate(&g->lt), "cublasLtCreate", __FILE__, __LINE__);
  if (rc) {
    kiln_cuda_gemm_free(g);
    return rc;
  }
  *out = g;
  return 0;
}

static void plan_free_(plan *p) {
  if (p->la) cublasLtMatrixLayoutDestroy(p->la);
  if (p->lb) cublasLtMatrixLayoutDestroy(p->lb);
  if (p->lc) cublasLtMatrixLayoutDestroy(p->lc);
  if (p->op) cublasLtMatmulDescDestroy(p->op);
}

void kiln_cuda_gemm_free(kiln_cuda_gemm_ctx *g) {
  if (!g) return;
  for (int i = 0; i < g->n_plans; i++) plan_free_(&g->plans[i]);
  free(g->plans);
  if (g->lt) cublasLtDestroy(g->lt);
  if (g->h) cublasDestroy(g->h);
  free(g);
}

/* The split-k variant of `a` that cublasLt accepts, with its wave estimate in *waves; 0 if it refuses. */
static int with_splitk_(kiln_cuda_gemm_ctx *g, const plan *p, cublasLtMatmulAlgo_t *a, int splitk, float *waves) {
  const uint32_t scheme = CUBLASLT_REDUCTION_SCHEME_INPLACE;
  cublasLtMatmulHeuristicResult_t chk;
  if (cublasLtMatmulAlgoConfigSetAttribute(a, CUBLASLT_ALGO_CONFIG_SPLITK_NUM, &splitk, sizeof splitk) ||
      cublasLtMatmulAlgoConfigSetAttribute(a, CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME, &scheme, sizeof scheme) ||
      cublasLtMatmulAlgoCheck(g->lt, p->op, p->la, p->lb, p->lc, p->lc, a, &chk) != CUBLAS_STATUS_SUCCESS ||
      chk.workspaceSize > g->ws_bytes)
    return 0;
  *waves = chk.wavesCount;
  return 1;
}

/* Fills p's descriptors and chooses its algorithm (see the top of the file). */
static int plan_make_(kiln_cuda_gemm_ctx *g, plan *p) {
  if (g->mode == MODE_GEMMEX) return 0; /* splitk 0 */
  const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
  LT_CHECK(cublasLtMatmulDescCreate(&p->op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  LT_CHECK(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
  LT_CHECK(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
  LT_CHECK(cublasLtMatrixLayoutCreate(&p->la, CUDA_R_16BF, (uint64_t)p->in, (uint64_t)p->out, p->in));
  LT_CHECK(cublasLtMatrixLayoutCreate(&p->lb, CUDA_R_16BF, (uint64_t)p->in, (uint64_t)p->n, p->in));
  LT_CHECK(cublasLtMatrixLayoutCreate(&p->lc, p->y_bf16 ? CUDA_R_16BF : CUDA_R_32F, (uint64_t)p->out,
                                      (uint64_t)p->n, p->out));
  cublasLtMatmulPreference_t pref;
  LT_CHECK(cublasLtMatmulPreferenceCreate(&pref));
  size_t wsb = g->ws_bytes;
  cublasLtMatmulHeuristicResult_t res[PLAN_OFFERS];
  int count = 0;
  cublasStatus_t s = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &wsb,
                                                          sizeof wsb);
  if (s == CUBLAS_STATUS_SUCCESS)
    s = cublasLtMatmulAlgoGetHeuristic(g->lt, p->op, p->la, p->lb, p->lc, p->lc, pref, PLAN_OFFERS, res, &count);
  cublasLtMatmulPreferenceDestroy(pref);
  LT_CHECK(s);
  int first = -1;
  for (int i = 0; i < count && first < 0; i++)
    if (res[i].state == CUBLAS_STATUS_SUCCESS) first = i;
  if (first < 0) return 0; /* nothing offered: cublasGemmEx */
  if (g->mode == MODE_LT) {
    p->algo = res[first].algo;
    p->splitk = 1;
    return 0;
  }
  if (res[first].wavesCount >= PLAN_FULL_WAVES) return 0; /* cublasGemmEx */
  /* the fewest parts that fill the GPU, each over PLAN_MIN_K of k at least (the most parts when none does) */
  static const int splits[] = {2, 3, 4, 6, 8, 12, 16};
  for (size_t i = 0; i < sizeof splits / sizeof splits[0] && p->in / splits[i] >= PLAN_MIN_K; i++) {
    cublasLtMatmulAlgo_t a = res[first].algo;
    float waves;
    if (!with_splitk_(g, p, &a, splits[i], &waves)) continue;
    p->algo = a;
    p->splitk = splits[i];
    if (waves >= PLAN_FULL_WAVES) break;
  }
  return 0;
}

static int plan_get_(kiln_cuda_gemm_ctx *g, int64_t n, int64_t in, int64_t out, int y_bf16, int acc, plan **pp) {
  for (int i = 0; i < g->n_plans; i++) {
    plan *p = &g->plans[i];
    if (p->n == n && p->in == in && p->out == out && p->y_bf16 == y_bf16 && p->acc == acc) {
      *pp = p;
      return 0;
    }
  }
  if (g->n_plans == g->cap_plans) {
    int cap = g->cap_plans ? 2 * g->cap_plans : 32;
    plan *np = realloc(g->plans, sizeof *np * (size_t)cap);
    if (!np) return kiln_error(KILN_ENOMEM, "cuda gemm: out of host memory");
    g->plans = np, g->cap_plans = cap;
  }
  plan *p = &g->plans[g->n_plans];
  memset(p, 0, sizeof *p);
  p->n = n, p->in = in, p->out = out, p->y_bf16 = y_bf16, p->acc = acc;
  int rc = plan_make_(g, p);
  if (rc) {
    plan_free_(p);
    return rc;
  }
  g->n_plans++;
  *pp = p;
  return 0;
}

static int gemm_(kiln_cuda_gemm_ctx *g, void *y, int y_bf16, int acc, const uint16_t *x, const uint16_t *w, int64_t n,
                 int64_t in, int64_t out) {
  if (n < 0 || in <= 0 || out <= 0 || n > 0x7fffffff || in > 0x7fffffff || out > 0x7fffffff)
    return kiln_error(KILN_EINVAL, "cuda gemm: bad shape %lld x %lld x %lld", (long long)n, (long long)in,
                      (long long)out);
  if (n == 0) return 0;
  plan *p;
  int rc = plan_get_(g, n, in, out, y_bf16, acc, &p);
  if (rc) return rc;
  const float one = 1.f, beta = acc ? 1.f : 0.f;
  if (!p->splitk) {
    KILN_CUBLAS_CHECK(cublasGemmEx(g->h, CUBLAS_OP_T, CUBLAS_OP_N, (int)out, (int)n, (int)in, &one, w, CUDA_R_16BF,
                                   (int)in, x, CUDA_R_16BF, (int)in, &beta, y, y_bf16 ? CUDA_R_16BF : CUDA_R_32F,
                                   (int)out, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    return 0;
  }
  KILN_CUBLAS_CHECK(cublasLtMatmul(g->lt, p->op, &one, w, p->la, x, p->lb, &beta, y, p->lc, y, p->lc, &p->algo, g->ws,
                                   g->ws_bytes, g->stream));
  return 0;
}

int kiln_cuda_gemm(kiln_cuda_gemm_ctx *g, float *y, const uint16_t *x, const uint16_t *w, int64_t n, int64_t in,
                   int64_t out) {
  return gemm_(g, y, 0, 0, x, w, n, in, out);
}

int kiln_cuda_gemm_acc(kiln_cuda_gemm_ctx *g, float *y, const uint16_t *x, const uint16_t *w, int64_t n, int64_t in,
                       int64_t out) {
  return gemm_(g, y, 0, 1, x, w, n, in, out);
}

int kiln_cuda_gemm_bf16(kiln_cuda_gemm_ctx *g, uint16_t *y, const uint16_t *x, const uint16_t *w, int64_t n, int64_t in,
                        int64_t out) {
  return gemm_(g, y, 1, 0, x, w, n, in, out);
}

int kiln_cuda_gemm_plan_splitk(kiln_cuda_gemm_ctx *g, int64_t n, int64_t in, int64_t out, int y_bf16, int acc) {
  plan *p;
  return plan_get_(g, n, in, out, y_bf16 != 0, acc != 0, &p) ? -1 : p->splitk;
}
