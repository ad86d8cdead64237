/*
 * backend/cuda/forward.c: the two ways through the model.
 *
 * Decode (one token): the norms are fused into the GEMVs that follow them, the residual adds into the GEMVs
 * that produce them, and SwiGLU into the gate/up GEMV, so a layer is 7 kernels: qkv GEMV (+norm, +bias), q/k
 * norm + RoPE + KV store, attention (split, combine), o GEMV (+= x), gate/up GEMV (+norm, SwiGLU), down GEMV
 * (+= x). Everything reads the step's position and slot from device memory, so the sequence of launches is
 * captured once into a CUDA graph and replayed for every token. With KILN_CUDA_DECODE=persistent the graph holds
 * the persistent decode kernel instead (decode_step.h): the same step in one launch.
 *
 * Prefill (a chunk of tokens): GEMMs on the tensor cores, cuBLAS's or kiln's own (KILN_CUDA_PREFILL_GEMM; q/k/v
 * and gate/up written as bf16, which is how the elementwise kernels after them read them, or with the own GEMM
 * SwiGLU applied in the gate/up product; o and down added straight into the f32 residual), the o_proj bias added
 * by the RMSNorm that follows it, and flash-style attention.
 */
#include <stddef.h>
#include <string.h>

#include "backend/cuda/attn_decode.h"
#include "backend/cuda/attn_prefill.h"
#include "backend/cuda/cuda_impl.h"
#include "backend/cuda/decode_step.h"
#include "backend/cuda/embed.h"
#include "backend/cuda/gemm.h"
#include "backend/cuda/gemm_tc.h"
#include "backend/cuda/gemv.h"
#include "backend/cuda/l2_prefetch.h"
#include "backend/cuda/rmsnorm.h"
#include "backend/cuda/rope.h"
#include "backend/cuda/sample.h"
#include "backend/cuda/swiglu.h"

/* The first `cap` bytes of [p + skip, p + bytes) as a GEMV's L2 prefetch range (nothing when cap is 0). */
static void l2_next_(kiln_cuda_gemv_args *g, const uint16_t *p, int64_t bytes, int64_t skip, int64_t cap) {
  if (cap <= 0 || skip >= bytes) return;
  g->l2_next = (const char *)p + skip;
  g->l2_next_bytes = bytes - skip < cap ? bytes - skip : cap;
}

static int decode_enqueue_(kiln_backend *b, bool sample, int short_splits) {
  const kiln_config *c = &b->cfg;
  const int64_t H = c->hidden_size, I = c->intermediate_size, nq = (int64_t)c->n_heads * c->head_dim;
  cudaStream_t st = b->stream;
  int rc;
  KILN_CUDA_CHECK(cudaMemcpyAsync(b->d_step, b->h_step, sizeof *b->h_step, cudaMemcpyHostToDevice, st));
  if (b->ds_blocks > 0) { /* the persistent kernel: the whole step up to the logits and their argmax */
    if ((rc = kiln_cuda_decode_step(&b->ds, b->ds_blocks, st))) return rc;
    if (sample) {
      rc = kiln_cuda_sample(b->d_next, b->logits, c->vocab_size, b->d_argmax, b->d_step, b->sample_multi, st);
      if (rc) return rc;
      KILN_CUDA_CHECK(cudaMemcpyAsync(b->h_next, b->d_next, sizeof *b->h_next, cudaMemcpyDeviceToHost, st));
    }
    return 0;
  }
  if ((rc = kiln_cuda_embed(b->x, b->embed, c->vocab_size, H, &b->d_step->token, 1, b->d_argmax, st))) return rc;
  /* from here to the sampler, kernel follows kernel: programmatic dependent launch (cuda_common.h) */
  kiln_cuda__set_pdl(1);
  /* bytes of the bf16 weights, for the L2 prefetch ranges */
  const int64_t gu_bytes = 2 * I * H * 2, d_bytes = I * H * 2, qkv_bytes = b->qkv_dim * H * 2;
  for (int l = 0; l < c->n_layers; l++) {
    const kiln_cuda_layer *L = &b->layers[l];
    kiln_cuda_gemv_args a = {.w = L->wqkv, .n_rows = b->qkv_dim, .k = H, .x_f32 = b->x, .norm_w = L->attn_norm,
                             .eps = c->rms_norm_eps, .mode = KILN_GEMV_STORE, .y = b->qkv, .bias = L->bqkv};
    if ((rc = kiln_cuda_gemv(&a, st))) return rc;
    if (b->side_l2pf >= 0) { /* the side branch: this layer's o (and first gate/up) weights into L2 */
      KILN_CUDA_CHECK(cudaEventRecord(b->ev_fork, st));
      KILN_CUDA_CHECK(cudaStreamWaitEvent(b->side, b->ev_fork, 0));
      kiln_cuda__set_pdl(0);
      rc = kiln_cuda_l2_prefetch(L->wo, nq * H * 2, L->wgu, b->side_l2pf < gu_bytes ? b->side_l2pf : gu_bytes,
                                 b->n_sm, b->side);
      kiln_cuda__set_pdl(1);
      if (rc) return rc;
    }
    kiln_cuda_attn_decode_args at = {.out = b->hbuf, .qkv = b->qkv, .q_norm = L->q_norm, .k_norm = L->k_norm,
                                     .rope = b->rope, .eps = c->rms_norm_eps, .k_cache = L->k_cache,
                                     .v_cache = L->v_cache, .step = b->d_step, .shape = b->shape,
                                     .n_splits = short_splits > 0 ? short_splits : b->n_splits,
                                     .scratch = b->attn_part, .cluster = short_splits > 0,
                                     .prof = b->attn_prof && l == 0 ? b->d_prof : NULL,
                                     .relaxed_end = b->attn_relaxed, .rope_vec = kiln_cuda_rope_vec(),
                                     .l2_at = b->attn_l2_at};
    if (b->attn_l2pf >= 0) { /* the weights the o and gate/up GEMVs read first, while HBM would idle */
      at.l2_next[0] = L->wo, at.l2_next_bytes[0] = nq * H * 2;
      at.l2_next[1] = L->wgu, at.l2_next_bytes[1] = b->attn_l2pf < gu_bytes ? b->attn_l2pf : gu_bytes;
    }
    if ((rc = kiln_cuda_attn_decode(&at, st))) return rc;
    kiln_cuda_gemv_args o = {.w = L->wo, .n_rows = H, .k = nq, .x_bf16 = b->hbuf, .mode = KILN_GEMV_ADD, .y = b->x,
                             .bias = L->bo};
    l2_next_(&o, L->wgu, gu_bytes, b->attn_l2pf > 0 ? b->attn_l2pf : 0, b->gemv_l2next);
    if ((rc = kiln_cuda_gemv(&o, st))) return rc;
    kiln_cuda_gemv_args gu = {.w = L->wgu, .n_rows = 2 * I, .k = H, .x_f32 = b->x, .norm_w = L->ffn_norm,
                              .eps = c->rms_norm_eps, .mode = KILN_GEMV_SWIGLU, .y_bf16 = b->hbuf,
                              .max_blocks_per_sm = b->gu_blocks};
    l2_next_(&gu, L->wdown, d_bytes, 0, b->gemv_l2next);
    if ((rc = kiln_cuda_gemv(&gu, st))) return rc;
    kiln_cuda_gemv_args d = {.w = L->wdown, .n_rows = H, .k = I, .x_bf16 = b->hbuf, .mode = KILN_GEMV_ADD, .y = b->x};
    if (l + 1 < c->n_layers)
      l2_next_(&d, b->layers[l + 1].wqkv, qkv_bytes, 0, b->gemv_l2next);
    else
      l2_next_(&d, b->lm_head, c->vocab_size * H * 2, 0, b->gemv_l2next);
    if ((rc = kiln_cuda_gemv(&d, st))) return rc;
  }
  kiln_cuda_gemv_args h = {.w = b->lm_head, .n_rows = c->vocab_size, .k = H, .x_f32 = b->x, .norm_w = b->final_norm,
                           .eps = c->rms_norm_eps, .mode = KILN_GEMV_ARGMAX, .y = b->logits, .argmax = b->d_argmax};
  if ((rc = kiln_cuda_gemv(&h, st))) return rc;
  if (sample &&
      (rc = kiln_cuda_sample(b->d_next, b->logits, c->vocab_size, b->d_argmax, b->d_step, b->sample_multi, st)))
    return rc;
  if (b->side_l2pf >= 0) { /* join the side branch (long finished) before the step's last node */
    KILN_CUDA_CHECK(cudaEventRecord(b->ev_join, b->side));
    KILN_CUDA_CHECK(cudaStreamWaitEvent(st, b->ev_join, 0));
  }
  if (sample) {
    kiln_cuda__set_pdl(0);
    KILN_CUDA_CHECK(cudaMemcpyAsync(b->h_next, b->d_next, sizeof *b->h_next, cudaMemcpyDeviceToHost, st));
  }
  return 0;
}

int kiln_cuda__decode_enqueue(kiln_backend *b, bool sample, int short_splits) {
  int rc = decode_enqueue_(b, sample, short_splits);
  kiln_cuda__set_pdl(0); /* also on the error paths: later launches of this thread are plain */
  return rc;
}

/* The logits of token n - 1 of a prefill, from its final-norm output in hbuf. */
static int last_logits_(kiln_backend *b, int n) {
  const int64_t H = b->cfg.hidden_size;
  kiln_cuda_gemv_args h = {.w = b->lm_head, .n_rows = b->cfg.vocab_size, .k = H,
                           .x_bf16 = b->hbuf + (int64_t)(n - 1) * H, .mode = KILN_GEMV_STORE, .y = b->logits};
  return kiln_cuda_gemv(&h, b->stream);
}

/* The bucket of a chunk of n tokens (1 <= n <= KILN_CUDA_MAX_CHUNK), and its padded size in *n_pad. */
static int prefill_bucket_(int n, int *n_pad) {
  if (n <= KILN_CUDA_PREFILL_SHORT) {
    *n_pad = (n + KILN_CUDA_PREFILL_STEP - 1) / KILN_CUDA_PREFILL_STEP * KILN_CUDA_PREFILL_STEP;
    return *n_pad / KILN_CUDA_PREFILL_STEP - 1;
  }
  const int over = (n - KILN_CUDA_PREFILL_SHORT + KILN_CUDA_PREFILL_LSTEP - 1) / KILN_CUDA_PREFILL_LSTEP;
  *n_pad = KILN_CUDA_PREFILL_SHORT + over * KILN_CUDA_PREFILL_LSTEP;
  return KILN_CUDA_PREFILL_SHORT / KILN_CUDA_PREFILL_STEP + over - 1;
}

/* The bucket whose size n is, or -1. */
static int bucket_of_size_(int n) {
  int n_pad = 0;
  const int i = n >= 1 && n <= KILN_CUDA_MAX_CHUNK ? prefill_bucket_(n, &n_pad) : -1;
  return i >= 0 && n_pad == n ? i : -1;
}

/* The plans already made for chunks of n tokens, or NULL. */
static const kiln_cuda_gemm_algo *planned_(const kiln_backend *b, int n) {
  const int i = bucket_of_size_(n);
  return i >= 0 && b->gemm_planned[i] ? b->gemm_plan[i] : NULL;
}

int kiln_cuda__gemm_plans(kiln_backend *b, int n, const kiln_cuda_gemm_algo **out) {
  *out = NULL;
  const int i = bucket_of_size_(n);
  if (!b->gemm_planning || i < 0 || n > b->chunk || n >= b->gemm_own_min) return 0;
  if (b->gemm_planned[i]) {
    *out = b->gemm_plan[i];
    return 0;
  }
  const kiln_config *c = &b->cfg;
  const int64_t H = c->hidden_size, I = c->intermediate_size, nq = (int64_t)c->n_heads * c->head_dim;
  const int64_t P = b->chunk;
  const kiln_cuda_gemm_env ge = kiln_cuda__gemm_env(b);
  /* scratch that no live data occupies between chunks: hbuf holds any product's input; q/k/v's output and its
   * reference fit in the f32 qkv buffer as two bf16 halves, gate/up's in gu; the residual updates (f32) run in x
   * with their reference and start value in gu, which holds both when H <= I (else they keep the default); the
   * logits buffer holds the comparison flags */
  uint16_t *qkv16 = (uint16_t *)b->qkv, *gu16 = (uint16_t *)b->gu;
  const struct {
    int k;
    kiln_gemm_out kind;
    int64_t in, out;
    void *y, *ref, *y0;
    size_t w_off; /* offset of the weights in kiln_cuda_layer */
  } ps[KILN_PF_GEMMS] = {
      {KILN_PF_QKV, KILN_GEMM_BF16, H, b->qkv_dim, qkv16, qkv16 + P * b->qkv_dim, NULL,
       offsetof(kiln_cuda_layer, wqkv)},
      {KILN_PF_O, KILN_GEMM_ACC, nq, H, b->x, b->gu, b->gu + P * H, offsetof(kiln_cuda_layer, wo)},
      {KILN_PF_GATE_UP, KILN_GEMM_BF16, H, 2 * I, gu16, gu16 + P * 2 * I, NULL, offsetof(kiln_cuda_layer, wgu)},
      {KILN_PF_DOWN, KILN_GEMM_ACC, I, H, b->x, b->gu, b->gu + P * H, offsetof(kiln_cuda_layer, wdown)},
  };
  enum { MAX_W = 64 };
  const uint16_t *w[MAX_W];
  const int n_w = c->n_layers < MAX_W ? c->n_layers : MAX_W;
  for (int k = 0; k < KILN_PF_GEMMS; k++) {
    kiln_cuda_gemm_algo *a = &b->gemm_plan[i][ps[k].k];
    *a = (kiln_cuda_gemm_algo){0};
    if (ps[k].kind == KILN_GEMM_ACC && H > I) continue;
    for (int l = 0; l < n_w; l++) w[l] = *(const uint16_t *const *)((const char *)&b->layers[l] + ps[k].w_off);
    const kiln_cuda_gemm_scratch s = {b->hbuf, ps[k].y, ps[k].ref, ps[k].y0, (unsigned *)b->logits};
    const int rc = kiln_cuda_gemm_plan(&ge, &s, ps[k].kind, w, n_w, n, ps[k].in, ps[k].out, a);
    if (rc) return rc;
  }
  b->gemm_planned[i] = true;
  *out = b->gemm_plan[i];
  return 0;
}

static int prefill_enqueue_(kiln_backend *b, int n, bool last_logits) {
  const kiln_config *c = &b->cfg;
  const int64_t H = c->hidden_size, I = c->intermediate_size, V = c->vocab_size;
  const float eps = c->rms_norm_eps;
  cudaStream_t st = b->stream;
  /* q/k/v and gate/up only feed elementwise kernels: bf16 projections (their f32 buffers, half used) */
  uint16_t *qkv16 = (uint16_t *)b->qkv, *gu16 = (uint16_t *)b->gu;
  const kiln_cuda_gemm_env ge = kiln_cuda__gemm_env(b);
  const kiln_cuda_gemm_algo *plan = planned_(b, n);
  /* kiln's own GEMMs (gemm_tc.h) for long enough chunks, else cuBLAS with its plan */
  const bool own = n >= b->gemm_own_min, own_all = own && b->gemm_own_all;
#define GEMM(k, kind, y, x, w, in, out)                                                                             \
  ((own_all || (own && (k == KILN_PF_QKV || k == KILN_PF_GATE_UP)))                                               \
       ? kiln_cuda_gemm_tc(kind, y, x, w, n, in, out, (kiln_tc_tile)b->gemm_tile[k], b->n_sm, st)                 \
       : kiln_cuda_gemm_run(&ge, plan ? &plan[k] : NULL, kind, y, x, w, n, in, out))
  int rc;
  if ((rc = kiln_cuda_embed(b->x, b->embed, V, H, b->d_tokens, n, NULL, st))) return rc;
  /* KILN_CUDA_PREFILL_PDL: our kernels launched as programmatic dependents of the kernel before them (the GEMMs are
   * cuBLAS's own launches, plain) */
  kiln_cuda__set_pdl(b->prefill_pdl);
  for (int l = 0; l < c->n_layers; l++) {
    const kiln_cuda_layer *L = &b->layers[l];
    /* the o and down projections accumulate into the residual x (their GEMMs add to it): the norms only read it,
     * apart from the o_proj bias */
    if ((rc = kiln_cuda_add_rmsnorm(b->hbuf, b->x, NULL, NULL, L->attn_norm, n, H, eps, st))) return rc;
    if (own && b->gemm_rope) { /* q/k norm, RoPE and the KV store in the product's epilogue */
      const kiln_tc_qkv e = {.q_out = b->q, .k_cache = L->k_cache, .v_cache = L->v_cache, .bias = L->bqkv,
                             .q_norm = L->q_norm, .k_norm = L->k_norm, .rope = b->rope, .step = b->d_step,
                             .eps = eps, .n_heads = c->n_heads, .n_kv_heads = c->n_kv_heads, .n_ctx = b->n_ctx};
      if ((rc = kiln_cuda_gemm_tc_qkv(&e, b->hbuf, L->wqkv, n, H, (kiln_tc_tile)b->gemm_tile[KILN_PF_QKV], b->n_sm,
                                       st)))
        return rc;
    } else if ((rc = GEMM(KILN_PF_QKV, KILN_GEMM_BF16, qkv16, b->hbuf, L->wqkv, H, b->qkv_dim)) ||
               (rc = kiln_cuda_qkv_rope(b->q, L->k_cache, L->v_cache, qkv16, L->bqkv, L->q_norm, L->k_norm, eps,
                                        b->rope, b->d_step, n, &b->shape, b->n_sm, 0, st))) {
      return rc;
    }
    if ((rc = kiln_cuda_attn_prefill(b->hbuf, b->q, L->k_cache, L->v_cache, b->d_step, n, &b->shape, b->pf_attn,
                                     b->n_sm, st)))
      return rc;
    if ((rc = GEMM(KILN_PF_O, KILN_GEMM_ACC, b->x, b->hbuf, L->wo, (int64_t)c->n_heads * c->head_dim, H))) return rc;
    if ((rc = kiln_cuda_add_rmsnorm(b->hbuf, b->x, NULL, L->bo, L->ffn_norm, n, H, eps, st))) return rc;
    if (own) { /* SwiGLU in the gate/up product's epilogue, its output in gu (hbuf is that product's input) */
      if ((rc = GEMM(KILN_PF_GATE_UP, KILN_GEMM_SWIGLU, gu16, b->hbuf, L->wgu, H, 2 * I))) return rc;
      if ((rc = GEMM(KILN_PF_DOWN, KILN_GEMM_ACC, b->x, gu16, L->wdown, I, H))) return rc;
      continue;
    }
    if ((rc = GEMM(KILN_PF_GATE_UP, KILN_GEMM_BF16, gu16, b->hbuf, L->wgu, H, 2 * I))) return rc;
    if ((rc = kiln_cuda_swiglu(b->hbuf, gu16, n, I, st))) return rc;
    if ((rc = GEMM(KILN_PF_DOWN, KILN_GEMM_ACC, b->x, b->hbuf, L->wdown, I, H))) return rc;
  }
#undef GEMM
  if ((rc = kiln_cuda_add_rmsnorm(b->hbuf, b->x, NULL, NULL, b->final_norm, n, H, eps, st))) return rc;
  return last_logits ? last_logits_(b, n) : 0;
}

int kiln_cuda__prefill_enqueue(kiln_backend *b, int n, bool last_logits) {
  int rc = prefill_enqueue_(b, n, last_logits);
  kiln_cuda__set_pdl(0); /* also on the error paths: later launches of this thread are plain */
  return rc;
}

/* The prefill graph of bucket i (n_pad tokens) into *out, captured at the bucket's second use; NULL at its first,
 * which runs launched kernel by kernel (so a size seen once costs no capture, and every kernel's one-time setup,
 * such as its shared-memory attribute, is done before a capture). */
static int prefill_graph_(kiln_backend *b, int i, int n_pad, cudaGraphExec_t *out) {
  *out = b->g_prefill[i];
  if (*out) return 0;
  if (!b->prefill_seen[i]) {
    b->prefill_seen[i] = true;
    return 0;
  }
  const kiln_cuda_gemm_algo *plan; /* made now, outside the capture; the enqueue finds it */
  int rc = kiln_cuda__gemm_plans(b, n_pad, &plan);
  if (rc) return rc;
  KILN_CUDA_CHECK(cudaStreamBeginCapture(b->stream, cudaStreamCaptureModeThreadLocal));
  rc = kiln_cuda__capture_end(b, kiln_cuda__prefill_enqueue(b, n_pad, false), &b->g_prefill[i]);
  *out = b->g_prefill[i];
  return rc;
}

int kiln_cuda__prefill_chunk(kiln_backend *b, int seq, int pos, const int32_t *tokens, int n, float *logits,
                             bool all_logits) {
  const kiln_config *c = &b->cfg;
  const int64_t H = c->hidden_size, V = c->vocab_size;
  cudaStream_t st = b->stream;
  int rc;
  memset(b->h_step, 0, sizeof *b->h_step);
  b->h_step->seq = seq;
  b->h_step->pos = pos;
  b->h_step->n = n;
  /* A chunk replays the graph of its bucket (KILN_CUDA_PREFILL_GRAPH): padded to n_pad tokens of id 0, whose keys
   * and values land in cache rows past the chunk that nothing reads before a later step overwrites them. */
  int n_pad = n;
  const int bucket = n <= KILN_CUDA_MAX_CHUNK ? prefill_bucket_(n, &n_pad) : -1;
  cudaGraphExec_t g = NULL;
  if (bucket >= 0 && n_pad <= b->prefill_graph_max && n_pad <= b->chunk && pos + n_pad <= b->n_ctx &&
      (rc = prefill_graph_(b, bucket, n_pad, &g)))
    return rc;
  const int n_up = g ? n_pad : n;
  memcpy(b->h_tokens, tokens, (size_t)n * sizeof *tokens);
  memset(b->h_tokens + n, 0, (size_t)(n_up - n) * sizeof *tokens);
  KILN_CUDA_CHECK(cudaMemcpyAsync(b->d_step, b->h_step, sizeof *b->h_step, cudaMemcpyHostToDevice, st));
  KILN_CUDA_CHECK(
      cudaMemcpyAsync(b->d_tokens, b->h_tokens, (size_t)n_up * sizeof *tokens, cudaMemcpyHostToDevice, st));
  if (g) {
    KILN_CUDA_CHECK(cudaGraphLaunch(g, st));
    if (logits && !all_logits && (rc = last_logits_(b, n))) return rc;
  } else if ((rc = kiln_cuda__prefill_enqueue(b, n, logits && !all_logits))) {
    return rc;
  }
  if (logits && all_logits) {
    for (int r0 = 0; r0 < n; r0 += b->logit_rows) {
      int nr = n - r0 < b->logit_rows ? n - r0 : b->logit_rows;
      if ((rc = kiln_cuda_gemm(b->cublas, b->logits, b->hbuf + (int64_t)r0 * H, b->lm_head, nr, H, V))) return rc;
      KILN_CUDA_CHECK(cudaMemcpyAsync(logits + (int64_t)r0 * V, b->logits, (size_t)nr * V * sizeof(float),
                                      cudaMemcpyDeviceToHost, st));
    }
  } else if (logits) {
    KILN_CUDA_CHECK(cudaMemcpyAsync(logits, b->logits, (size_t)V * sizeof(float), cudaMemcpyDeviceToHost, st));
  }
  KILN_CUDA_CHECK(cudaStreamSynchronize(st));
  return 0;
}
