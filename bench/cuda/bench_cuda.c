/*
 * bench/cuda/bench_cuda.c: the CUDA backend on random weights of a config's shape, with its floors measured in
 * the same run (PERF.md):
 *   - device-to-device copy bandwidth (bytes read + written, best of 10 copies of 1 GiB) and the rate of a
 *     cuBLAS bf16 8192^3 matmul on random data (median of 10);
 *   - decode ms/token at each context (KV cache filled with random values): the GPU time of the decode graph
 *     replayed back to back (CUDA events, median of 5 batches of 100), and the time a caller sees per token
 *     (graph launch + synchronise + 4-byte read, median over 200 steps); the floor is (weight bytes a token
 *     reads + KV bytes at that context) / copy bandwidth;
 *   - prefill (TTFT) of each prompt length from an empty cache: host wall time of the forward pass including the
 *     upload of the prompt and the download of the last logits (median of 5); the compute floor is
 *     2 * prompt * (parameters of the layers) / matmul rate (attention and the head left out, as in PERF.md).
 * Every result is checked before it is timed: the sampled token is a valid id and the logits are finite.
 * Output: one JSON object per config on stdout (and appended to --json FILE).
 *
 * --ops adds each decode kernel of one layer timed alone (captured 50 times in a graph): microseconds, and GB/s
 * of weights for the GEMVs. --sampler adds the device sampler alone, one block against many (bench_sampler).
 *
 *   bench_cuda [--ctx 128,2048] [--prompts 128,1024] [--ops] [--sampler] [--json FILE] CONFIG.json...
 */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cublas_v2.h>

#include "backend/cuda/attn_prefill.h"
#include "backend/cuda/bandwidth.h"
#include "backend/cuda/cuda_impl.h"
#include "backend/cuda/attn_decode.h"
#include "backend/cuda/gemm.h"
#include "backend/cuda/gemv.h"
#include "backend/cuda/rope.h"
#include "backend/cuda/random_fill.h"
#include "backend/cuda/sample.h"
#include "kiln/kiln.h"

#define BENCH_NAME "bench_cuda"
#include "bench_common.h"


/* Milliseconds on `stream` since e0 was recorded there: records e1 after the work enqueued so far and waits for it. */
static float span_ms(cudaEvent_t e0, cudaEvent_t e1, cudaStream_t stream) {
  float ms;
  CK(cudaEventRecord(e1, stream));
  CK(cudaEventSynchronize(e1));
  CK(cudaEventElapsedTime(&ms, e0, e1));
  return ms;
}

static double now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static int cmp_d(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static double median(double *v, int n) {
  qsort(v, (size_t)n, sizeof *v, cmp_d);
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static int parse_list(const char *s, int *out, int max) {
  int n = 0;
  while (*s && n < max) {
    out[n++] = atoi(s);
    const char *c = strchr(s, ',');
    if (!c) break;
    s = c + 1;
  }
  return n;
}

/* GB/s of a device-to-device copy, counting bytes read and written. */
static double copy_bandwidth(void) {
  double bps = 0;
  if (kiln_cuda_copy_bandwidth((size_t)1 << 30, 10, 0, &bps)) {
    fprintf(stderr, "bench_cuda: %s\n", kiln_last_error());
    exit(1);
  }
  return bps / 1e9;
}

/* TFLOP/s of a cuBLAS bf16 8192^3 matmul on random data. */
static double matmul_rate(void) {
  const int n = 8192;
  uint16_t *a, *b;
  float *c;
  CK(cudaMalloc((void **)&a, (size_t)n * n * 2));
  CK(cudaMalloc((void **)&b, (size_t)n * n * 2));
  CK(cudaMalloc((void **)&c, (size_t)n * n * 4));
  if (kiln_cuda_fill_random(a, NULL, (int64_t)n * n, 1, 0.f, 1.f, 0) ||
      kiln_cuda_fill_random(b, NULL, (int64_t)n * n, 2, 0.f, 1.f, 0)) {
    fprintf(stderr, "bench_cuda: %s\n", kiln_last_error());
    exit(1);
  }
  cublasHandle_t h;
  if (cublasCreate(&h) != CUBLAS_STATUS_SUCCESS) exit(1);
  const float one = 1.f, zero = 0.f;
  cudaEvent_t e0, e1;
  CK(cudaEventCreate(&e0));
  CK(cudaEventCreate(&e1));
  double t[10];
  for (int i = 0; i < 13; i++) {
    CK(cudaEventRecord(e0, 0));
    if (cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, n, n, n, &one, a, CUDA_R_16BF, n, b, CUDA_R_16BF, n, &zero, c,
                     CUDA_R_32F, n, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT) != CUBLAS_STATUS_SUCCESS)
      exit(1);
    const float ms = span_ms(e0, e1, 0);
    if (i >= 3) t[i - 3] = 2.0 * n * (double)n * n / (ms * 1e-3) / 1e12;
  }
  cublasDestroy(h), cudaEventDestroy(e0), cudaEventDestroy(e1), cudaFree(a), cudaFree(b), cudaFree(c);
  return median(t, 10);
}

static void check_logits(kiln_backend *b, const char *what) {
  int64_t V = b->cfg.vocab_size;
  float *lg = malloc(sizeof(float) * (size_t)V);
  CK(cudaMemcpy(lg, b->logits, sizeof(float) * (size_t)V, cudaMemcpyDeviceToHost));
  int64_t bad = 0;
  for (int64_t i = 0; i < V; i++) bad += !isfinite(lg[i]);
  free(lg);
  if (bad) {
    fprintf(stderr, "bench_cuda: %s: %lld non-finite logits\n", what, (long long)bad);
    exit(1);
  }
}

/* Median microseconds per launch of `op` (called 50 times per captured graph, graph replayed 5 times). */
typedef int (*op_fn)(kiln_backend *b, const void *arg);

static double time_op(kiln_backend *b, op_fn op, const void *arg) {
  cudaGraph_t g;
  cudaGraphExec_t ge;
  CK(cudaStreamBeginCapture(b->stream, cudaStreamCaptureModeThreadLocal));
  for (int i = 0; i < 50; i++)
    if (op(b, arg)) {
      fprintf(stderr, "bench_cuda: op: %s\n", kiln_last_error());
      exit(1);
    }
  CK(cudaStreamEndCapture(b->stream, &g));
  CK(cudaGraphInstantiate(&ge, g, 0));
  cudaEvent_t e0, e1;
  CK(cudaEventCreate(&e0));
  CK(cudaEventCreate(&e1));
  CK(cudaGraphLaunch(ge, b->stream));
  double t[5];
  for (int r = 0; r < 5; r++) {
    CK(cudaEventRecord(e0, b->stream));
    CK(cudaGraphLaunch(ge, b->stream));
    t[r] = span_ms(e0, e1, b->stream) * 1e3 / 50;
  }
  cudaEventDestroy(e0), cudaEventDestroy(e1), cudaGraphExecDestroy(ge), cudaGraphDestroy(g);
  return median(t, 5);
}

static int op_gemv(kiln_backend *b, const void *arg) { return kiln_cuda_gemv(arg, b->stream); }

static int op_attn(kiln_backend *b, const void *arg) {
  (void)arg;
  const kiln_cuda_layer *L = &b->layers[0];
  const int short_splits = kiln_cuda__step_short_splits(b, b->h_step->pos); /* as the step's graph runs it */
  kiln_cuda_attn_decode_args a = {.out = b->hbuf, .qkv = b->qkv, .q_norm = L->q_norm, .k_norm = L->k_norm,
                                  .rope = b->rope, .eps = 1e-6f, .k_cache = L->k_cache,
                                  .v_cache = L->v_cache, .step = b->d_step, .shape = b->shape,
                                  .n_splits = short_splits > 0 ? short_splits : b->n_splits,
                                  .scratch = b->attn_part, .cluster = short_splits > 0};
  return kiln_cuda_attn_decode(&a, b->stream);
}

/* Each decode kernel of layer 0 (and the head) alone: microseconds and, for the GEMVs, GB/s of weights. */
static json_t *bench_ops(kiln_backend *b, int ctx) {
  const kiln_config *c = &b->cfg;
  const int64_t H = c->hidden_size, I = c->intermediate_size, nq = (int64_t)c->n_heads * c->head_dim;
  const kiln_cuda_layer *L = &b->layers[0];
  memset(b->h_step, 0, sizeof *b->h_step);
  b->h_step->pos = ctx;
  b->h_step->n = 1;
  CK(cudaMemcpy(b->d_step, b->h_step, sizeof *b->h_step, cudaMemcpyHostToDevice));
  CK(cudaMemset(b->hbuf, 0x3c, (size_t)(I > nq ? I : nq) * 2)); /* bf16 ~0.01: finite inputs */
  kiln_cuda_gemv_args g[5] = {
      {.w = L->wqkv, .n_rows = b->qkv_dim, .k = H, .x_f32 = b->x, .norm_w = L->attn_norm, .eps = 1e-6f,
       .mode = KILN_GEMV_STORE, .y = b->qkv},
      /* o and down add into the logits buffer (f32, longer than a hidden vector): x stays the qkv GEMV's input */
      {.w = L->wo, .n_rows = H, .k = nq, .x_bf16 = b->hbuf, .mode = KILN_GEMV_ADD, .y = b->logits},
      {.w = L->wgu, .n_rows = 2 * I, .k = H, .x_f32 = b->x, .norm_w = L->ffn_norm, .eps = 1e-6f,
       .mode = KILN_GEMV_SWIGLU, .y_bf16 = b->hbuf + 2 * I},
      {.w = L->wdown, .n_rows = H, .k = I, .x_bf16 = b->hbuf, .mode = KILN_GEMV_ADD, .y = b->logits},
      {.w = b->lm_head, .n_rows = c->vocab_size, .k = H, .x_f32 = b->x, .norm_w = b->final_norm, .eps = 1e-6f,
       .mode = KILN_GEMV_STORE, .y = b->logits}};
  const char *names[5] = {"gemv_qkv", "gemv_o", "gemv_gate_up", "gemv_down", "gemv_head"};
  json_t *ops = json_array();
  for (int i = 0; i < 5; i++) {
    double us = time_op(b, op_gemv, &g[i]);
    double gbs = (double)g[i].n_rows * g[i].k * 2 / (us * 1e-6) / 1e9;
    json_t *o = json_object();
    json_object_set_new(o, "op", json_string(names[i]));
    json_object_set_new(o, "us", json_real(us));
    json_object_set_new(o, "weight_gbps", json_real(gbs));
    json_array_append_new(ops, o);
  }
  double us_attn = time_op(b, op_attn, NULL);
  json_t *o = json_object();
  json_object_set_new(o, "op", json_string("attention"));
  json_object_set_new(o, "ctx", json_integer(ctx));
  json_object_set_new(o, "us", json_real(us_attn));
  json_array_append_new(ops, o);
  return ops;
}

/* KILN_CUDA_ATTN_PROFILE=1: layer 0's decode attention in the last step, per block (attn_decode.h): the median
 * and largest time of each stage (entry to the end of the PDL wait, prologue, tiles, combine) and, on the global
 * timer, how far apart the blocks entered and left the wait, and from the first release to the last exit. */
static json_t *attn_profile(kiln_backend *b) {
  static unsigned long long w[KILN_AD_PROF_WORDS];
  CK(cudaMemcpy(w, b->d_prof, sizeof w, cudaMemcpyDeviceToHost));
  static double st[4][KILN_AD_PROF_WORDS / 8];
  double g0min = 1e300, g1max = 0, relmin = 1e300, relmax = 0, entmax = 0;
  int n = 0, last = -1;
  for (int k = 0; k < KILN_AD_PROF_WORDS / 8; k++) {
    const unsigned long long *v = w + 8 * k;
    if (v[7] != 1 || v[6] <= v[5] || v[4] <= v[0]) continue;
    last = k;
    const double per_ns = (double)(v[4] - v[0]) / (double)(v[6] - v[5]); /* SM cycles per ns */
    for (int j = 0; j < 4; j++) st[j][n] = (double)(v[j + 1] - v[j]) / per_ns * 1e-3;
    const double g0 = (double)v[5], rel = g0 + (double)(v[1] - v[0]) / per_ns;
    g0min = g0 < g0min ? g0 : g0min;
    entmax = g0 > entmax ? g0 : entmax;
    g1max = (double)v[6] > g1max ? (double)v[6] : g1max;
    relmin = rel < relmin ? rel : relmin;
    relmax = rel > relmax ? rel : relmax;
    n++;
  }
  json_t *o = json_object();
  json_object_set_new(o, "blocks", json_integer(n));
  json_object_set_new(o, "last_block", json_integer(last));
  if (!n) return o;
  static const char *names[4] = {"to_wait_end_us", "prologue_us", "tiles_us", "combine_us"};
  for (int j = 0; j < 4; j++) {
    qsort(st[j], (size_t)n, sizeof(double), cmp_d);
    json_t *m = json_object();
    json_object_set_new(m, "median", json_real(st[j][n / 2]));
    json_object_set_new(m, "max", json_real(st[j][n - 1]));
    json_object_set_new(o, names[j], m);
  }
  json_object_set_new(o, "entry_spread_us", json_real((entmax - g0min) * 1e-3));
  json_object_set_new(o, "release_spread_us", json_real((relmax - relmin) * 1e-3));
  json_object_set_new(o, "first_release_to_last_exit_us", json_real((g1max - relmin) * 1e-3));
  return o;
}

/* KILN_CUDA_DS_PROFILE=1: the last step's timeline as block 0 of the persistent decode kernel saw it
 * (decode_step.h): per layer, each phase from one barrier's release to the next (microseconds, mean over the
 * layers), and block 0's mean wait at a barrier. */
static json_t *ds_profile(kiln_backend *b) {
  static unsigned long long w[KILN_CUDA_DS_PROF_WORDS];
  CK(cudaMemcpy(w, b->ds.prof, sizeof w, cudaMemcpyDeviceToHost));
  const int nl = b->cfg.n_layers, nb = (int)w[0];
  json_t *o = json_object();
  if (nb != 5 * nl + 1 || 6 + 2 * nb > KILN_CUDA_DS_PROF_WORDS || w[4] <= w[3]) return o;
  const double cyc_per_us = (double)(w[2] - w[1]) / ((double)(w[4] - w[3]) * 1e-3);
#define ARR(k) ((double)w[5 + 2 * (k)])
#define REL(k) ((double)w[6 + 2 * (k)])
  static const char *names[5] = {"qkv_us", "attention_us", "o_us", "gate_up_us", "down_us"};
  double ph[5] = {0}, wait = 0;
  for (int l = 0; l < nl; l++)
    for (int j = 0; j < 5; j++) ph[j] += (REL(5 * l + j + 1) - REL(5 * l + j)) / cyc_per_us / nl;
  for (int k = 0; k < nb; k++) wait += (REL(k) - ARR(k)) / cyc_per_us / nb;
  json_object_set_new(o, "total_us", json_real((double)(w[4] - w[3]) * 1e-3));
  json_object_set_new(o, "embed_us", json_real((REL(0) - (double)w[1]) / cyc_per_us));
  for (int j = 0; j < 5; j++) json_object_set_new(o, names[j], json_real(ph[j]));
  json_object_set_new(o, "head_us", json_real(((double)w[2] - REL(nb - 1)) / cyc_per_us));
  json_object_set_new(o, "barrier_wait_us", json_real(wait));
  json_object_set_new(o, "barriers", json_integer(nb));
#undef ARR
#undef REL
  return o;
}

/* The sampler alone (--sampler): microseconds a launch (200 back to back, plain stream order) of the one-block and
 * the multi-block sampler (sample.h) on the config's vocabulary, for logits peaked as a confident model's (weight ~
 * rank^-2) or flat (normal, sd 2.5), in the common settings; and whether the two drew the same token at each of
 * 64 steps (they must). */
static json_t *bench_sampler(kiln_backend *b) {
  const int64_t V = b->cfg.vocab_size;
  float *h = malloc(sizeof(float) * (size_t)V), *d_l;
  unsigned long long *d_cell;
  int32_t *d_next;
  kiln_cuda_step *d_st;
  CK(cudaMalloc((void **)&d_l, sizeof(float) * (size_t)V));
  CK(cudaMalloc((void **)&d_cell, 8));
  CK(cudaMalloc((void **)&d_next, 4));
  CK(cudaMalloc((void **)&d_st, sizeof *d_st));
  static const struct {
    float temp;
    int top_k;
    float top_p, min_p;
  } modes[] = {{1.f, 0, 1.f, 0.f}, {0.7f, 0, 0.9f, 0.f}, {1.f, 0, 0.95f, 0.f}, {0.8f, 40, 0.95f, 0.f},
               {1.f, 50, 1.f, 0.f}, {1.f, 0, 1.f, 0.05f}};
  cudaEvent_t e0, e1;
  CK(cudaEventCreate(&e0));
  CK(cudaEventCreate(&e1));
  json_t *out = json_array();
  uint64_t rng = 88172645463325252ull;
  for (int dist = 0; dist < 2; dist++) {
    int64_t top = 0;
    for (int64_t i = 0; i < V; i++) {
      rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
      const double u = (double)(rng >> 11) / 9007199254740992.0;
      if (dist == 0) {
        h[i] = 12.f - 2.f * logf(1.f + (float)(i * 7919 % V)) + 0.3f * (float)u;
      } else { /* Box-Muller from two uniforms */
        rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
        const double u2 = (double)(rng >> 11) / 9007199254740992.0;
        h[i] = (float)(2.5 * sqrt(-2.0 * log(u + 1e-300)) * cos(6.283185307179586 * u2));
      }
      if (h[i] > h[top]) top = i;
    }
    const unsigned long long cell = kiln_cuda_argmax_pack(h[top], top); /* as the head GEMV would leave it */
    CK(cudaMemcpy(d_l, h, sizeof(float) * (size_t)V, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(d_cell, &cell, 8, cudaMemcpyHostToDevice));
    for (size_t k = 0; k < sizeof modes / sizeof modes[0]; k++) {
      kiln_cuda_step st = {.temperature = modes[k].temp, .top_k = modes[k].top_k, .top_p = modes[k].top_p,
                           .min_p = modes[k].min_p, .seed = 7};
      double us[2];
      int same = 1;
      for (int v = 0; v < 2; v++) {
        const kiln_cuda_sample_scratch *multi = v ? &b->sample_sc : NULL;
        CK(cudaMemcpy(d_st, &st, sizeof st, cudaMemcpyHostToDevice));
        for (int r = 0; r < 10; r++)
          if (kiln_cuda_sample(d_next, d_l, V, d_cell, d_st, multi, 0)) exit(1);
        CK(cudaEventRecord(e0, 0));
        for (int r = 0; r < 200; r++)
          if (kiln_cuda_sample(d_next, d_l, V, d_cell, d_st, multi, 0)) exit(1);
        us[v] = span_ms(e0, e1, 0) * 1e3 / 200;
      }
      for (int step = 0; step < 64; step++) {
        int32_t t[2];
        st.step = (uint64_t)step;
        CK(cudaMemcpy(d_st, &st, sizeof st, cudaMemcpyHostToDevice));
        for (int v = 0; v < 2; v++) {
          if (kiln_cuda_sample(d_next, d_l, V, d_cell, d_st, v ? &b->sample_sc : NULL, 0)) exit(1);
          CK(cudaMemcpy(&t[v], d_next, 4, cudaMemcpyDeviceToHost));
        }
        if (t[0] != t[1] || t[0] < 0 || t[0] >= V) same = 0;
      }
      if (!same) fprintf(stderr, "bench_cuda: the two samplers drew different tokens (mode %zu)\n", k);
      json_t *o = json_object();
      json_object_set_new(o, "logits", json_string(dist == 0 ? "peaked" : "flat"));
      json_object_set_new(o, "temperature", json_real(modes[k].temp));
      json_object_set_new(o, "top_k", json_integer(modes[k].top_k));
      json_object_set_new(o, "top_p", json_real(modes[k].top_p));
      json_object_set_new(o, "min_p", json_real(modes[k].min_p));
      json_object_set_new(o, "us_one_block", json_real(us[0]));
      json_object_set_new(o, "us_multi_block", json_real(us[1]));
      json_object_set_new(o, "same_tokens", json_boolean(same));
      json_array_append_new(out, o);
    }
  }
  cudaEventDestroy(e0), cudaEventDestroy(e1);
  cudaFree(d_l), cudaFree(d_cell), cudaFree(d_next), cudaFree(d_st);
  free(h);
  return out;
}

static json_t *bench_config(const char *path, const int *ctxs, int n_ctx, const int *prompts, int n_prompts,
                            double bw, double tflops, int with_ops, int with_sampler) {
  size_t len;
  char *txt = slurp(path, &len);
  kiln_config cfg;
  if (!txt || kiln_config_parse(&cfg, txt, len, path)) {
    fprintf(stderr, "bench_cuda: %s: %s\n", path, txt ? kiln_last_error() : "cannot read");
    exit(1);
  }
  free(txt);
  int max_ctx = 0, max_p = 0;
  for (int i = 0; i < n_ctx; i++) max_ctx = ctxs[i] > max_ctx ? ctxs[i] : max_ctx;
  for (int i = 0; i < n_prompts; i++) max_p = prompts[i] > max_p ? prompts[i] : max_p;
  kiln_engine_opts o = {.n_ctx = (max_ctx > max_p ? max_ctx : max_p) + 16, .n_seqs = 1};
  kiln_backend *b;
  double t0 = now_ms();
  if (kiln_cuda_create_random(&b, &cfg, &o, 0, 7)) {
    fprintf(stderr, "bench_cuda: %s: %s\n", path, kiln_last_error());
    exit(1);
  }
  double create_ms = now_ms() - t0;
  const kiln_config *c = &b->cfg;
  const int64_t H = c->hidden_size, V = c->vocab_size;
  /* what one token must read: every weight once, but only one row of an untied embedding table */
  int64_t w_read = b->weight_bytes - (b->lm_head != b->embed ? V * H * 2 : 0);
  int64_t layer_params = (b->weight_bytes - V * H * 2 * (b->lm_head != b->embed ? 2 : 1)) / 2;
  if (kiln_cuda_fill_random(b->layers[0].k_cache, NULL, b->kv_bytes / 2, 99, 0.f, 1.f, b->stream)) exit(1);
  CK(cudaStreamSynchronize(b->stream));

  json_t *res = json_object();
  const char *slash = strrchr(path, '/');
  json_object_set_new(res, "config", json_string(slash ? slash + 1 : path));
  json_object_set_new(res, "weight_bytes_per_token", json_integer(w_read));
  json_object_set_new(res, "create_ms", json_real(create_ms));
  /* which decode step the graphs hold: the persistent kernel, or the kernel-per-op fallback */
  json_object_set_new(res, "decode_path", json_string(b->ds_blocks > 0 ? "persistent" : "graph"));
  /* positions below this run the short-context graphs (attention combining inside thread-block clusters) */
  json_object_set_new(res, "short_keys", json_integer(kiln_cuda__short_keys(b)));
  /* what the step prefetches into L2 under attention, from attention's blocks and from the graph's side branch
   * (-1 nothing, 0 the o weights, N those and N bytes of gate/up), and the step times of kiln_cuda__l2pf_choice
   * that chose it at create (zeros when KILN_CUDA_ATTN_L2PF or KILN_CUDA_L2PF_SIDE fixed it) */
  json_object_set_new(res, "attn_l2pf", json_integer(b->attn_l2pf));
  json_object_set_new(res, "side_l2pf", json_integer(b->side_l2pf));
  json_t *tune = json_array();
  for (int i = 0; i < KILN_CUDA_L2PF_CHOICES; i++) json_array_append_new(tune, json_real(b->l2pf_tune_ms[i]));
  json_object_set_new(res, "l2pf_tune_ms", tune);
  json_t *dec = json_array(), *pre = json_array();
  cudaEvent_t e0, e1;
  CK(cudaEventCreate(&e0));
  CK(cudaEventCreate(&e1));
  for (int i = 0; i < n_ctx; i++) {
    kiln_cuda_step *st = b->h_step;
    memset(st, 0, sizeof *st);
    st->pos = ctxs[i];
    st->token = 1;
    if (b->attn_prof) CK(cudaMemsetAsync(b->d_prof, 0, KILN_AD_PROF_WORDS * 8, b->stream)); /* this context's only */
    for (int w = 0; w < 10; w++) CK(cudaGraphLaunch(kiln_cuda__step_graph(b, ctxs[i], true), b->stream));
    CK(cudaStreamSynchronize(b->stream));
    if (*b->h_next < 0 || *b->h_next >= V) {
      fprintf(stderr, "bench_cuda: sampled token %d out of range\n", *b->h_next);
      exit(1);
    }
    check_logits(b, "decode");
    double gpu[5];
    for (int r = 0; r < 5; r++) {
      CK(cudaEventRecord(e0, b->stream));
      for (int k = 0; k < 100; k++) CK(cudaGraphLaunch(kiln_cuda__step_graph(b, ctxs[i], true), b->stream));
      gpu[r] = span_ms(e0, e1, b->stream) / 100;
    }
    double host[200];
    kiln_sampling s = kiln_sampling_default();
    int32_t next = 1;
    for (int k = 0; k < 200; k++) {
      double h0 = now_ms();
      if (kiln_backend_cuda.decode_sample(b, 0, ctxs[i], next, &s, (uint64_t)k, &next)) exit(1);
      host[k] = now_ms() - h0;
    }
    int64_t kv_read = (int64_t)c->n_layers * 2 * c->n_kv_heads * (int64_t)(ctxs[i] + 1) * c->head_dim * 2;
    double floor_ms = (double)(w_read + kv_read) / (bw * 1e9) * 1e3;
    double g = median(gpu, 5), hm = median(host, 200);
    json_t *d = json_object();
    json_object_set_new(d, "ctx", json_integer(ctxs[i]));
    json_object_set_new(d, "ms_per_token_gpu", json_real(g));
    json_object_set_new(d, "ms_per_token_host", json_real(hm));
    json_object_set_new(d, "kv_bytes_read", json_integer(kv_read));
    json_object_set_new(d, "floor_ms", json_real(floor_ms));
    json_object_set_new(d, "fraction_of_floor", json_real(floor_ms / hm));
    if (b->ds.prof) json_object_set_new(d, "persistent_profile", ds_profile(b));
    if (b->attn_prof && !b->ds_blocks) json_object_set_new(d, "attention_profile", attn_profile(b));
    json_array_append_new(dec, d);
  }
  float *logits = malloc(sizeof(float) * (size_t)V);
  for (int i = 0; i < n_prompts; i++) {
    int P = prompts[i];
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)P);
    for (int k = 0; k < P; k++) ids[k] = (int32_t)((k * 7919 + 13) % V);
    double t[6];
    for (int r = 0; r < 6; r++) {
      double h0 = now_ms();
      if (kiln_backend_cuda.forward(b, 0, 0, ids, P, logits, false)) {
        fprintf(stderr, "bench_cuda: prefill: %s\n", kiln_last_error());
        exit(1);
      }
      t[r] = now_ms() - h0;
      for (int64_t k = 0; k < V; k++)
        if (!isfinite(logits[k])) {
          fprintf(stderr, "bench_cuda: prefill logits not finite\n");
          exit(1);
        }
    }
    double ms = median(t + 1, 5);
    double floor_ms = 2.0 * P * (double)layer_params / (tflops * 1e12) * 1e3;
    json_t *p = json_object();
    json_object_set_new(p, "prompt", json_integer(P));
    json_object_set_new(p, "ttft_ms", json_real(ms));
    json_object_set_new(p, "compute_floor_ms", json_real(floor_ms));
    json_object_set_new(p, "ratio_to_floor", json_real(ms / floor_ms));
    json_array_append_new(pre, p);
    free(ids);
  }
  free(logits);
  /* where the longest prefill goes: all layers' attention, and all layers' four GEMMs, each timed alone */
  if (n_prompts > 0) {
    int P = max_p;
    memset(b->h_step, 0, sizeof *b->h_step);
    b->h_step->n = P;
    CK(cudaMemcpy(b->d_step, b->h_step, sizeof *b->h_step, cudaMemcpyHostToDevice));
    const int64_t nq = (int64_t)c->n_heads * c->head_dim, I = c->intermediate_size;
    /* the GEMMs as the prefill graph of P tokens runs them: with their plans (KILN_CUDA_GEMM_PLAN) */
    const kiln_cuda_gemm_env ge = kiln_cuda__gemm_env(b);
    const kiln_cuda_gemm_algo *plan = NULL;
    if (kiln_cuda__gemm_plans(b, P, &plan)) {
      fprintf(stderr, "bench_cuda: gemm plans: %s\n", kiln_last_error());
      exit(1);
    }
#define PLAN(k) (plan ? &plan[k] : NULL)
    double ta[3], tg[3];
    for (int r = 0; r < 3; r++) {
      CK(cudaEventRecord(e0, b->stream));
      for (int l = 0; l < c->n_layers; l++)
        if (kiln_cuda_attn_prefill(b->hbuf, b->q, b->layers[l].k_cache, b->layers[l].v_cache, b->d_step, P, &b->shape,
                                   b->pf_attn, b->n_sm, b->stream))
          exit(1);
      ta[r] = span_ms(e0, e1, b->stream);
      CK(cudaEventRecord(e0, b->stream));
      for (int l = 0; l < c->n_layers; l++) {
        const kiln_cuda_layer *L = &b->layers[l];
        if (kiln_cuda_gemm_run(&ge, PLAN(KILN_PF_QKV), KILN_GEMM_BF16, b->qkv, b->hbuf, L->wqkv, P, H, b->qkv_dim) ||
            kiln_cuda_gemm_run(&ge, PLAN(KILN_PF_O), KILN_GEMM_ACC, b->x, b->hbuf, L->wo, P, nq, H) ||
            kiln_cuda_gemm_run(&ge, PLAN(KILN_PF_GATE_UP), KILN_GEMM_BF16, b->gu, b->hbuf, L->wgu, P, H, 2 * I) ||
            kiln_cuda_gemm_run(&ge, PLAN(KILN_PF_DOWN), KILN_GEMM_ACC, b->x, b->hbuf, L->wdown, P, I, H))
          exit(1);
      }
      tg[r] = span_ms(e0, e1, b->stream);
    }
    /* the whole prefill on the GPU: launched kernel by kernel (what forward() does; the span between two events
     * includes any gap the host's launches leave), and replayed from a CUDA graph of the same launches (no gaps):
     * their difference is what launching costs the prefill */
    double te[3], tgr[3];
    for (int r = 0; r < 3; r++) {
      CK(cudaEventRecord(e0, b->stream));
      if (kiln_cuda__prefill_enqueue(b, P, true)) exit(1);
      te[r] = span_ms(e0, e1, b->stream);
    }
    cudaGraph_t pg = NULL;
    cudaGraphExec_t pge = NULL;
    CK(cudaStreamBeginCapture(b->stream, cudaStreamCaptureModeThreadLocal));
    int prc = kiln_cuda__prefill_enqueue(b, P, true);
    CK(cudaStreamEndCapture(b->stream, &pg));
    if (prc) exit(1);
    CK(cudaGraphInstantiate(&pge, pg, 0));
    CK(cudaGraphLaunch(pge, b->stream));
    for (int r = 0; r < 3; r++) {
      CK(cudaEventRecord(e0, b->stream));
      CK(cudaGraphLaunch(pge, b->stream));
      tgr[r] = span_ms(e0, e1, b->stream);
    }
    CK(cudaGraphExecDestroy(pge));
    CK(cudaGraphDestroy(pg));
    json_t *bd = json_object();
    json_object_set_new(bd, "prompt", json_integer(P));
    json_object_set_new(bd, "attention_ms", json_real(median(ta, 3)));
    json_object_set_new(bd, "gemm_ms", json_real(median(tg, 3)));
    json_object_set_new(bd, "eager_gpu_ms", json_real(median(te, 3)));
    json_object_set_new(bd, "graph_gpu_ms", json_real(median(tgr, 3)));
    if (plan) { /* what the planning measured, per product: the default's µs and the chosen algorithm's */
      static const char *names[KILN_PF_GEMMS] = {"qkv", "o", "gate_up", "down"};
      json_t *pl = json_object();
      for (int k = 0; k < KILN_PF_GEMMS; k++)
        json_object_set_new(pl, names[k],
                            json_pack("{s:b, s:f, s:f, s:i, s:i}", "cublaslt", plan[k].lt, "us", plan[k].us,
                                      "us_default", plan[k].us_default, "candidates", plan[k].candidates,
                                      "identical", plan[k].identical));
      json_object_set_new(bd, "gemm_plan", pl);
    }
#undef PLAN
    json_object_set_new(res, "prefill_breakdown", bd);
  }
  if (with_ops) {
    json_object_set_new(res, "ops_ctx128", bench_ops(b, 128));
    json_object_set_new(res, "ops_ctx2048", bench_ops(b, 2048 < b->n_ctx ? 2048 : b->n_ctx - 1));
  }
  if (with_sampler) json_object_set_new(res, "sampler", bench_sampler(b));
  json_object_set_new(res, "decode", dec);
  json_object_set_new(res, "prefill", pre);
  cudaEventDestroy(e0), cudaEventDestroy(e1);
  kiln_backend_cuda.destroy(b);
  return res;
}

int main(int argc, char **argv) {
  int ctxs[8] = {128, 2048}, n_ctx = 2, prompts[8] = {128, 1024}, n_prompts = 2;
  const char *json_path = NULL;
  int i = 1, with_ops = 0, with_sampler = 0;
  for (; i < argc && argv[i][0] == '-'; i++) {
    if (!strcmp(argv[i], "--ctx") && i + 1 < argc) n_ctx = parse_list(argv[++i], ctxs, 8);
    else if (!strcmp(argv[i], "--prompts") && i + 1 < argc) n_prompts = parse_list(argv[++i], prompts, 8);
    else if (!strcmp(argv[i], "--json") && i + 1 < argc) json_path = argv[++i];
    else if (!strcmp(argv[i], "--ops")) with_ops = 1;
    else if (!strcmp(argv[i], "--sampler")) with_sampler = 1;
    else {
      fprintf(stderr, "usage: bench_cuda [--ctx 128,2048] [--prompts 128,1024] [--ops] [--sampler] [--json FILE] "
                      "CONFIG.json...\n");
      return 2;
    }
  }
  if (i == argc) {
    fprintf(stderr, "bench_cuda: no config given\n");
    return 2;
  }
  if (kiln_cuda_device_count() < 1) {
    fprintf(stderr, "bench_cuda: no CUDA device\n");
    return 1;
  }
  double bw = copy_bandwidth(), tf = matmul_rate();
  struct cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, 0));
  int drv = 0;
  CK(cudaDriverGetVersion(&drv));
  for (; i < argc; i++) {
    json_t *r = bench_config(argv[i], ctxs, n_ctx, prompts, n_prompts, bw, tf, with_ops, with_sampler);
    json_object_set_new(r, "engine", json_string("kiln-cuda"));
    json_object_set_new(r, "device", json_string(prop.name));
    json_object_set_new(r, "cuda_driver_api", json_integer(drv));
    json_object_set_new(r, "copy_gbps", json_real(bw));
    json_object_set_new(r, "matmul_tflops", json_real(tf));
    char *s = json_dumps(r, JSON_COMPACT);
    printf("%s\n", s);
    fflush(stdout);
    if (json_path) {
      FILE *f = fopen(json_path, "a");
      if (f) fprintf(f, "%s\n", s), fclose(f);
    }
    free(s);
    json_decref(r);
  }
  return 0;
}
