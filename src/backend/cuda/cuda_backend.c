/*
 * backend/cuda/cuda_backend.c: the CUDA backend's entry points (the kiln_backend_vtbl the engine calls), its
 * memory layout and its decode graphs.
 *
 * create(): checks the shape, sizes and allocates the one arena, uploads the weights, runs one decode step
 * eagerly (warm-up: kernel attributes, module loading, cuBLAS state) and captures the decode step twice as a
 * CUDA graph, with and without sampling. After that, a decode step is: write 48 bytes of step parameters into
 * pinned memory, launch one graph, read 4 bytes (or the logits). Every entry point selects its device first, so
 * engines on different GPUs may share a thread.
 */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cuda/attn_decode.h"
#include "backend/cuda/attn_prefill.h"
#include "backend/cuda/bandwidth.h"
#include "backend/cuda/cuda_impl.h"
#include "backend/cuda/gemm_tc.h"
#include "backend/cuda/gemv.h"
#include "backend/cuda/random_fill.h"
#include "kiln/status.h"
#include "backend/cpu/ref_ops.h"

#define CUBLAS_WS_BYTES ((int64_t)32 << 20)
#define MAX_LOGIT_ROWS 128
#define DS_PREFETCH 2 /* GEMV chunks prefetched into L2 ahead of a warp's loads (decode_step.h) */

int kiln_cuda_device_count(void) {
  int n = 0;
  /* Without a driver this is cudaErrorNoDevice or cudaErrorInsufficientDriver: both mean "none". */
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  return n;
}

static int check_shape_(const kiln_config *c) {
  int hd = c->head_dim;
  if (hd <= 0 || hd % 8 || hd > 256)
    return kiln_error(KILN_EUNSUPPORTED, "cuda: head_dim %d not supported (a multiple of 8, at most 256)", hd);
  if (c->hidden_size % 8 || c->intermediate_size % 8)
    return kiln_error(KILN_EUNSUPPORTED, "cuda: hidden_size %d and intermediate_size %d must be multiples of 8",
                      c->hidden_size, c->intermediate_size);
  if (c->n_kv_heads <= 0 || c->n_heads % c->n_kv_heads)
    return kiln_error(KILN_EUNSUPPORTED, "cuda: %d heads over %d kv heads", c->n_heads, c->n_kv_heads);
  return 0;
}

static int64_t max3_(int64_t a, int64_t b, int64_t c) { return a > b ? (a > c ? a : c) : (b > c ? b : c); }

/* Takes every pointer of the layout from b->arena (sizing or real, see arena.h). */
static int take_all_(kiln_backend *b) {
  const kiln_config *c = &b->cfg;
  kiln_cuda_arena *A = &b->arena;
  const int64_t H = c->hidden_size, I = c->intermediate_size, V = c->vocab_size, hd = c->head_dim;
  const int64_t nq = (int64_t)c->n_heads * hd, P = b->chunk;
  const int64_t kv = (int64_t)b->n_seqs * c->n_kv_heads * b->n_ctx * hd;
  int64_t w0 = A->used;
#define TAKE(ptr, bytes)                                                                       \
  do {                                                                                         \
    if (!((ptr) = kiln_cuda_arena_take(A, (bytes))))                                           \
      return kiln_error(KILN_ENOMEM, "cuda: arena layout overflow (%s)", #ptr);               \
  } while (0)
  TAKE(b->embed, V * H * 2);
  if (c->tie_word_embeddings) b->lm_head = b->embed;
  else TAKE(b->lm_head, V * H * 2);
  TAKE(b->final_norm, H * 4);
  for (int l = 0; l < c->n_layers; l++) {
    kiln_cuda_layer *L = &b->layers[l];
    TAKE(L->wqkv, b->qkv_dim * H * 2);
    if (c->attention_bias) TAKE(L->bqkv, b->qkv_dim * 4);
    TAKE(L->wo, H * nq * 2);
    if (c->attention_bias) TAKE(L->bo, H * 4);
    TAKE(L->wgu, 2 * I * H * 2);
    TAKE(L->wdown, H * I * 2);
    TAKE(L->attn_norm, H * 4);
    TAKE(L->ffn_norm, H * 4);
    if (c->qk_norm) {
      TAKE(L->q_norm, hd * 4);
      TAKE(L->k_norm, hd * 4);
    }
  }
  b->weight_bytes = A->used - w0;
  int64_t k0 = A->used;
  for (int l = 0; l < c->n_layers; l++) {
    TAKE(b->layers[l].k_cache, kv * 2);
    TAKE(b->layers[l].v_cache, kv * 2);
  }
  b->kv_bytes = A->used - k0;
  /* from here on: not weights, so kiln_cuda_create_random's fill of the weight range never reaches it */
  TAKE(b->inv_freq, hd / 2 * 4);
  TAKE(b->rope, (int64_t)b->n_ctx * hd * 4);
  TAKE(b->d_step, (int64_t)sizeof(kiln_cuda_step));
  TAKE(b->d_tokens, P * 4);
  TAKE(b->d_next, 4);
  TAKE(b->d_argmax, 8);
  TAKE(b->sample_mem, kiln_cuda_sample_scratch_bytes(V));
  TAKE(b->x, P * H * 4);
  TAKE(b->hbuf, P * max3_(H, nq, I) * 2);
  TAKE(b->qkv, P * b->qkv_dim * 4);
  TAKE(b->q, P * nq * 2);
  TAKE(b->gu, P * 2 * I * 4);
  TAKE(b->logits, (int64_t)b->logit_rows * V * 4);
  TAKE(b->attn_part, kiln_cuda_attn_decode_scratch(&b->shape, b->n_splits));
  const int64_t pf_attn = kiln_cuda_attn_prefill_scratch(&b->shape, b->n_sm);
  if (pf_attn) TAKE(b->pf_attn, pf_attn);
  TAKE(b->d_layers, (int64_t)c->n_layers * (int64_t)sizeof(kiln_cuda_layer));
  TAKE(b->d_barrier, 256);
  TAKE(b->d_prof, KILN_CUDA_DS_PROF_WORDS * 8);
  TAKE(b->cublas_ws, CUBLAS_WS_BYTES);
  b->cublas_ws_bytes = CUBLAS_WS_BYTES;
#undef TAKE
  return 0;
}

int kiln_cuda__layout(kiln_backend *b) {
  kiln_cuda_layer *layers = b->layers;
  /* pass 1: sizes only */
  b->arena = (kiln_cuda_arena){0};
  int rc = take_all_(b);
  if (rc) return rc;
  int64_t total = b->arena.used;
  memset(layers, 0, sizeof *layers * (size_t)b->cfg.n_layers);
  if ((rc = kiln_cuda_arena_reserve(&b->arena, total))) return rc;
  return take_all_(b);
}

static void destroy_graphs_(kiln_backend *b) {
  cudaGraphExec_t *g[2 + 2 * KILN_CUDA_SHORT_LEVELS] = {&b->g_logits, &b->g_sample};
  for (int i = 0; i < KILN_CUDA_SHORT_LEVELS; i++)
    g[2 + 2 * i] = &b->g_logits_short[i], g[3 + 2 * i] = &b->g_sample_short[i];
  for (size_t i = 0; i < sizeof g / sizeof g[0]; i++) {
    if (*g[i]) (void)cudaGraphExecDestroy(*g[i]);
    *g[i] = NULL;
  }
  for (size_t i = 0; i < sizeof b->g_prefill / sizeof b->g_prefill[0]; i++) {
    if (b->g_prefill[i]) (void)cudaGraphExecDestroy(b->g_prefill[i]);
    b->g_prefill[i] = NULL;
  }
  b->n_short = 0;
}

static void destroy_(kiln_backend *b) {
  if (!b) return;
  (void)cudaSetDevice(b->dev);
  if (b->stream) (void)cudaStreamSynchronize(b->stream);
  destroy_graphs_(b);
  if (b->cublaslt) (void)cublasLtDestroy(b->cublaslt);
  if (b->cublas) (void)cublasDestroy(b->cublas);
  if (b->stream) (void)cudaStreamDestroy(b->stream);
  if (b->side) (void)cudaStreamDestroy(b->side);
  if (b->ev_fork) (void)cudaEventDestroy(b->ev_fork);
  if (b->ev_join) (void)cudaEventDestroy(b->ev_join);
  kiln_cuda_arena_release(&b->arena);
  if (b->pinned) (void)cudaFreeHost(b->pinned);
  free(b->layers);
  free(b);
}

int kiln_cuda__capture_end(kiln_backend *b, int rc, cudaGraphExec_t *out) {
  cudaGraph_t g = NULL;
  cudaError_t e = cudaStreamEndCapture(b->stream, &g); /* always end, so the stream is usable again */
  if (!rc && e != cudaSuccess) rc = kiln_cuda__check(e, "cudaStreamEndCapture(b->stream, &g)", __FILE__, __LINE__);
  if (!rc) {
    e = cudaGraphInstantiate(out, g, 0);
    if (e != cudaSuccess) {
      *out = NULL; /* not a graph to destroy later */
      rc = kiln_cuda__check(e, "cudaGraphInstantiate(out, g, 0)", __FILE__, __LINE__);
    }
  }
  if (g) (void)cudaGraphDestroy(g);
  return rc;
}

int kiln_cuda__capture_decode(kiln_backend *b, bool sample, int short_splits, cudaGraphExec_t *out) {
  KILN_CUDA_CHECK(cudaStreamBeginCapture(b->stream, cudaStreamCaptureModeThreadLocal));
  return kiln_cuda__capture_end(b, kiln_cuda__decode_enqueue(b, sample, short_splits), out);
}

/* Everything but the weights' values: device, stream, cuBLAS, arena, pinned memory, RoPE table. */
static int open_(kiln_backend **out, const kiln_config *cfg, const kiln_engine_opts *opts, int device_index,
                 bool tied) {
  int rc = check_shape_(cfg);
  if (rc) return rc;
  kiln_backend *b = calloc(1, sizeof *b);
  if (!b) return kiln_error(KILN_ENOMEM, "cuda: out of memory");
  b->cfg = *cfg;
  b->cfg.tie_word_embeddings = tied;
  b->dev = device_index;
  b->layers = calloc((size_t)cfg->n_layers, sizeof *b->layers);
  if (!b->layers) {
    free(b);
    return kiln_error(KILN_ENOMEM, "cuda: out of memory");
  }
  struct cudaDeviceProp prop;
  KILN_CUDA_TRY(cudaSetDevice(device_index));
  KILN_CUDA_TRY(cudaGetDeviceProperties(&prop, device_index));
  b->n_sm = prop.multiProcessorCount;
  snprintf(b->desc, sizeof b->desc, "cuda:%d %s", device_index, prop.name);
  b->n_ctx = opts && opts->n_ctx > 0 ? opts->n_ctx : 4096;
  b->n_seqs = opts && opts->n_seqs > 0 ? opts->n_seqs : 1;
  b->chunk = b->n_ctx < KILN_CUDA_MAX_CHUNK ? b->n_ctx : KILN_CUDA_MAX_CHUNK;
  b->logit_rows = b->chunk < MAX_LOGIT_ROWS ? b->chunk : MAX_LOGIT_ROWS;
  b->qkv_dim = (int64_t)(cfg->n_heads + 2 * cfg->n_kv_heads) * cfg->head_dim;
  b->shape = (kiln_cuda_attn_shape){cfg->n_heads, cfg->n_kv_heads, cfg->head_dim, b->n_ctx};
  if ((rc = kiln_cuda_attn_decode_splits(&b->shape, b->n_sm, &b->n_splits))) goto out;
  KILN_CUDA_TRY(cudaStreamCreateWithFlags(&b->stream, cudaStreamNonBlocking));
  KILN_CUDA_TRY(cudaStreamCreateWithFlags(&b->side, cudaStreamNonBlocking));
  KILN_CUDA_TRY(cudaEventCreateWithFlags(&b->ev_fork, cudaEventDisableTiming));
  KILN_CUDA_TRY(cudaEventCreateWithFlags(&b->ev_join, cudaEventDisableTiming));
  if ((rc = kiln_cublas__check(cublasCreate(&b->cublas), "cublasCreate(&b->cublas)", __FILE__, __LINE__))) goto out;
  if ((rc = kiln_cublas__check(cublasSetStream(b->cublas, b->stream), "cublasSetStream", __FILE__, __LINE__)))
    goto out;
  if ((rc = kiln_cublas__check(cublasLtCreate(&b->cublaslt), "cublasLtCreate(&b->cublaslt)", __FILE__, __LINE__)))
    goto out;
  if ((rc = kiln_cuda__layout(b))) goto out;
  if ((rc = kiln_cublas__check(cublasSetWorkspace(b->cublas, b->cublas_ws, (size_t)b->cublas_ws_bytes),
                               "cublasSetWorkspace", __FILE__, __LINE__)))
    goto out;
  /* the KV cache and scratch start zeroed: a masked key's row read by a tile of the attention is then never NaN
   * or Inf (0 * NaN would reach the output), and no kernel reads memory nothing wrote */
  char *after_weights = (char *)b->layers[0].k_cache;
  const size_t rest = (size_t)(b->arena.base + b->arena.used - after_weights);
  KILN_CUDA_TRY(cudaMemsetAsync(after_weights, 0, rest, b->stream));
  if ((rc = kiln_cuda_attn_decode_init(b->attn_part, &b->shape, b->n_splits, b->stream))) goto out;
  size_t pin = 256 + 256 + (size_t)b->chunk * 4;
  KILN_CUDA_TRY(cudaMallocHost(&b->pinned, pin));
  b->h_step = (kiln_cuda_step *)b->pinned;
  b->h_next = (int32_t *)((char *)b->pinned + 256);
  b->h_tokens = (int32_t *)((char *)b->pinned + 512);
  {
    /* on the backend's stream (non-blocking, so a plain cudaMemcpy would not be ordered with the kernels after
     * it); from pageable memory the copy is staged before the call returns */
    float inv_freq[128];
    kiln_ref_rope_inv_freq(inv_freq, &b->cfg);
    KILN_CUDA_TRY(cudaMemcpyAsync(b->inv_freq, inv_freq, sizeof(float) * (size_t)(cfg->head_dim / 2),
                                  cudaMemcpyHostToDevice, b->stream));
    if ((rc = kiln_cuda_rope_table(b->rope, b->inv_freq, cfg->head_dim, b->n_ctx, b->stream))) goto out;
  }
out:
  if (rc) {
    destroy_(b);
    return rc;
  }
  *out = b;
  return 0;
}

/* A whole number from lo to hi into *out: 0, or -1 when v is not one (nothing stored). */
static int env_int_(const char *v, long lo, long hi, long *out) {
  char *end = NULL;
  const long x = strtol(v, &end, 10);
  if (end == v || *end || x < lo || x > hi) return -1;
  *out = x;
  return 0;
}

/* A whole number of MiB (0 .. 4096) as bytes; -1 when v is not one. */
static int64_t env_mib_(const char *v) {
  long mib = 0;
  return env_int_(v, 0, 4096, &mib) ? -1 : (int64_t)mib << 20;
}

/* A switch that is on unless set to 0: *on = 1 when `name` is unset, empty or 1, 0 when it is 0; any other value
 * is refused with an error naming it. */
static int env_on_(const char *name, bool *on) {
  const char *v = getenv(name);
  if (v && *v && strcmp(v, "0") && strcmp(v, "1"))
    return kiln_error(KILN_EINVAL, "cuda: %s=%s: expected 0 or 1", name, v);
  *on = !(v && !strcmp(v, "0"));
  return 0;
}

/* KILN_CUDA_GEMM_TILE: the own GEMM's tile for every prefill product (auto, unset, or a tile name of gemm_tc.h),
 * or one a product as a comma-separated list of PRODUCT:TILE (qkv, o, gate_up, down; those not named: auto). */
static int gemm_tiles_(const char *v, int tile[KILN_PF_GEMMS]) {
  static const char *const names[KILN_PF_GEMMS] = {"qkv", "o", "gate_up", "down"};
  for (int k = 0; k < KILN_PF_GEMMS; k++) tile[k] = KILN_TC_AUTO;
  if (!v || !*v) return 0;
  if (!strchr(v, ':')) {
    const int t = kiln_cuda_gemm_tc_tile_env(v);
    if (t < 0) goto bad;
    for (int k = 0; k < KILN_PF_GEMMS; k++) tile[k] = t;
    return 0;
  }
  for (const char *p = v; *p;) {
    const char *colon = strchr(p, ':'), *end = strchr(p, ',');
    if (!end) end = p + strlen(p);
    if (!colon || colon > end) goto bad;
    int k = 0;
    while (k < KILN_PF_GEMMS && !((size_t)(colon - p) == strlen(names[k]) && !strncmp(p, names[k], colon - p))) k++;
    char name[32];
    const size_t len = (size_t)(end - colon - 1);
    if (k == KILN_PF_GEMMS || len == 0 || len >= sizeof name) goto bad;
    memcpy(name, colon + 1, len);
    name[len] = 0;
    if ((tile[k] = kiln_cuda_gemm_tc_tile_env(name)) < 0) goto bad;
    if (*end && !end[1]) goto bad; /* a trailing comma */
    p = *end ? end + 1 : end;
  }
  return 0;
bad:
  return kiln_error(KILN_EINVAL, "cuda: KILN_CUDA_GEMM_TILE=%s: expected auto, a tile of gemm_tc.h such as 128x128 "
                    "or 64x128c4, or PRODUCT:TILE,... (qkv, o, gate_up, down)", v);
}

/* The switches the ops read themselves at their first use (each module's parser of the value): a bad value is
 * refused here, at create, with what the switch accepts. */
static int check_op_switches_(void) {
  static const struct {
    const char *name, *expected;
    int (*parse)(const char *);
  } sw[] = {
      {"KILN_CUDA_ATTN_CLUSTER", "0, 1 or short", kiln_cuda_attn_decode_cluster_env},
      {"KILN_CUDA_ROPE_VEC", "0 or 1", kiln_cuda_rope_vec_env},
      {"KILN_CUDA_ROPE_HEADS", "auto, 1, 2, 4 or 8", kiln_cuda_rope_heads_env},
      {"KILN_CUDA_ATTN_THREADS", "auto, 128 or 256", kiln_cuda_attn_decode_threads_env},
      {"KILN_CUDA_ATTN_GROUP", "auto, 1, 2, 4 or 8", kiln_cuda_attn_decode_group_env},
      {"KILN_CUDA_GEMV_SPLIT", "auto, all, 1, 2 or 4", kiln_cuda_gemv_split_env},
      {"KILN_CUDA_ATTN_PF_SPLIT", "auto or 1-8", kiln_cuda_attn_prefill_split_env},
      {"KILN_CUDA_ATTN_PF_MMA", "auto, wgmma or sync", kiln_cuda_attn_prefill_mma_env},
      {"KILN_CUDA_SAMPLE", "one or multi", kiln_cuda_sample_env},
  };
  for (size_t i = 0; i < sizeof sw / sizeof sw[0]; i++) {
    const char *v = getenv(sw[i].name);
    if (sw[i].parse(v) < 0) return kiln_error(KILN_EINVAL, "cuda: %s=%s: expected %s", sw[i].name, v, sw[i].expected);
  }
  return 0;
}

/* An L2 prefetch variable: auto or unset (*is_auto, *out -1), off (-1), o (0) or a number of MiB (bytes). */
static int env_l2pf_(const char *name, int64_t *out, bool *is_auto) {
  const char *v = getenv(name);
  *is_auto = !v || !*v || !strcmp(v, "auto");
  *out = *is_auto || !strcmp(v, "off") ? -1 : !strcmp(v, "o") ? 0 : env_mib_(v);
  if (!*is_auto && strcmp(v, "off") && *out < 0)
    return kiln_error(KILN_EINVAL, "cuda: %s=%s: expected auto, off, o or a number of MiB", name, v);
  return 0;
}

/* The switches that change how the graphs are built, read before they are captured (docs/cuda.md, Environment):
 * the L2 prefetch knobs (decode attention's chosen by timing unless set), the prefill graphs, the carveout,
 * the cluster barrier and the attention timeline. */
static int read_switches_(kiln_backend *b) {
  int rc = check_op_switches_();
  if (rc) return rc;
  /* auto or unset: chosen by timing the step at create (tune.c); off: no prefetch; o: the o_proj weights; N: those
   * and the first N MiB of gate/up. From attention's blocks, and from a side branch of the graph (l2_prefetch.h);
   * with either variable set, nothing is tuned. */
  bool pf_auto = false, sd_auto = false;
  if ((rc = env_l2pf_("KILN_CUDA_ATTN_L2PF", &b->attn_l2pf, &pf_auto)) ||
      (rc = env_l2pf_("KILN_CUDA_L2PF_SIDE", &b->side_l2pf, &sd_auto)))
    return rc;
  b->l2pf_auto = pf_auto && sd_auto;
  /* when attention's blocks issue that prefetch: start (or unset: at entry, where it was measured slower), prologue
   * (after the block's q/k/v read and first tile loads) or tiles (after all its cache loads) */
  const char *pa = getenv("KILN_CUDA_ATTN_L2PF_AT");
  b->attn_l2_at = !pa || !*pa || !strcmp(pa, "start") ? 0 : !strcmp(pa, "prologue") ? 1 : !strcmp(pa, "tiles") ? 2 : -1;
  if (b->attn_l2_at < 0)
    return kiln_error(KILN_EINVAL, "cuda: KILN_CUDA_ATTN_L2PF_AT=%s: expected start, prologue or tiles", pa);
  /* MiB of the next GEMV's weights; 0 or unset: none */
  const char *nx = getenv("KILN_CUDA_GEMV_L2NEXT");
  b->gemv_l2next = nx && *nx ? env_mib_(nx) : 0;
  if (b->gemv_l2next < 0)
    return kiln_error(KILN_EINVAL, "cuda: KILN_CUDA_GEMV_L2NEXT=%s: expected a number of MiB", nx);
  /* 1 or unset: prefill chunks replay per-size graphs (forward.c; H100: TTFT of a 128-token prompt -26% at 0.6B,
   * -8% at 4B); short: only chunks of up to KILN_CUDA_PREFILL_SHORT tokens (tuning); 0: launched kernel by kernel */
  const char *pg = getenv("KILN_CUDA_PREFILL_GRAPH");
  if (!pg || !*pg || !strcmp(pg, "1")) b->prefill_graph_max = KILN_CUDA_MAX_CHUNK;
  else if (!strcmp(pg, "short")) b->prefill_graph_max = KILN_CUDA_PREFILL_SHORT;
  else if (!strcmp(pg, "0")) b->prefill_graph_max = 0;
  else return kiln_error(KILN_EINVAL, "cuda: KILN_CUDA_PREFILL_GRAPH=%s: expected 0, 1 or short", pg);
  const char *pp = getenv("KILN_CUDA_PREFILL_PDL");
  if (!pp || !*pp || !strcmp(pp, "0")) b->prefill_pdl = false;
  else if (!strcmp(pp, "1")) b->prefill_pdl = true;
  else return kiln_error(KILN_EINVAL, "cuda: KILN_CUDA_PREFILL_PDL=%s: expected 0 or 1", pp);
  /* one or unset: the step's sampler in one block; multi: spread over the SMs, the same token (sample.h) */
  kiln_cuda_sample_scratch_carve(&b->sample_sc, b->sample_mem, b->cfg.vocab_size, b->n_sm);
  b->sample_multi = kiln_cuda_sample_env(getenv("KILN_CUDA_SAMPLE")) == 1 ? &b->sample_sc : NULL;
  /* default or unset: cublasGemmEx's default algorithm everywhere; time (tuning): each prefill graph's GEMMs run
   * the fastest algorithm, timed alone, that gives cublasGemmEx's bits (planned at the graph's capture). Measured on
   * an H100 the planned products were 2-25% faster alone but the prefills no faster (docs/cuda.md): off */
  const char *gp = getenv("KILN_CUDA_GEMM_PLAN");
  if (!gp || !*gp || !strcmp(gp, "default")) b->gemm_planning = false;
  else if (!strcmp(gp, "time")) b->gemm_planning = true;
  else return kiln_error(KILN_EINVAL, "cuda: KILN_CUDA_GEMM_PLAN=%s: expected default or time", gp);
  /* cublas or unset: cuBLAS for every prefill product; own: kiln's own GEMMs (gemm_tc.h) for chunks of at least
   * KILN_CUDA_GEMM_OWN_MIN tokens (default 1), where the device can run them (sm_90a), SwiGLU fused into gate/up
   * and (head_dim 128, unless KILN_CUDA_GEMM_ROPE=0) q/k norm, RoPE and the KV store into q/k/v; fused: only those
   * two products kiln's own, o and down cuBLAS's;
   * KILN_CUDA_GEMM_TILE: their tiles (gemm_tiles_) */
  const char *og = getenv("KILN_CUDA_PREFILL_GEMM");
  bool own = false;
  b->gemm_own_all = false;
  if (!og || !*og || !strcmp(og, "cublas")) own = false;
  else if (!strcmp(og, "own")) own = b->gemm_own_all = true;
  else if (!strcmp(og, "fused")) own = true;
  else return kiln_error(KILN_EINVAL, "cuda: KILN_CUDA_PREFILL_GEMM=%s: expected cublas, fused or own", og);
  long own_min = 1;
  const char *om = getenv("KILN_CUDA_GEMM_OWN_MIN");
  if (om && *om && env_int_(om, 1, KILN_CUDA_MAX_CHUNK, &own_min))
    return kiln_error(KILN_EINVAL, "cuda: KILN_CUDA_GEMM_OWN_MIN=%s: expected 1-%d tokens", om, KILN_CUDA_MAX_CHUNK);
  /* the own GEMM's shapes: every product's k a multiple of 8 (the TMA's 16-byte rows), gate/up's width of 4 */
  const kiln_config *cf = &b->cfg;
  const bool shapes_ok = cf->hidden_size % 8 == 0 && cf->intermediate_size % 8 == 0 &&
                         ((int64_t)cf->n_heads * cf->head_dim) % 8 == 0;
  b->gemm_own_min = own && shapes_ok && kiln_cuda_gemm_tc_available() ? (int)own_min : INT_MAX;
  if ((rc = env_on_("KILN_CUDA_GEMM_ROPE", &b->gemm_rope))) return rc;
  b->gemm_rope = b->gemm_rope && b->cfg.head_dim == 128;
  if ((rc = gemm_tiles_(getenv("KILN_CUDA_GEMM_TILE"), b->gemm_tile))) return rc;
  /* the shared-memory carveout of the decode kernels: auto or unset (the driver's choice per kernel), max, or a
   * percent; one value for all keeps the SMs from reconfiguring between kernels of different needs */
  const char *co = getenv("KILN_CUDA_CARVEOUT");
  long pct = -1; /* auto */
  if (co && !strcmp(co, "max")) pct = 100;
  else if (co && *co && strcmp(co, "auto") && env_int_(co, 0, 100, &pct))
    return kiln_error(KILN_EINVAL, "cuda: KILN_CUDA_CARVEOUT=%s: expected auto, max or a percent 0-100", co);
  /* 1 or unset: the cluster combine's last barrier is relaxed (attn_decode_dev.cuh; H100: 0.6B -1.3%); 0: not */
  if ((rc = env_on_("KILN_CUDA_ATTN_RELAXED", &b->attn_relaxed))) return rc;
  /* how many short-context graph pairs (1-3, warm_and_capture_): 3 (unset; the default) adds pairs with half and
   * a quarter of the cluster's splits for the shorter contexts (H200, 80ef22e: decode at ctx 128 -1.2% at 0.6B,
   * -1.6% at 4B, ctx 2,048 unchanged); 1 (tuning) the cluster size's only, 2 the half too */
  const char *sl = getenv("KILN_CUDA_ATTN_LEVELS");
  long lv = KILN_CUDA_SHORT_LEVELS;
  if (sl && *sl && env_int_(sl, 1, KILN_CUDA_SHORT_LEVELS, &lv))
    return kiln_error(KILN_EINVAL, "cuda: KILN_CUDA_ATTN_LEVELS=%s: expected 1-%d", sl, KILN_CUDA_SHORT_LEVELS);
  b->short_levels = (int)lv;
  /* tuning only: the decode gate/up GEMV's blocks per SM (1-8; unset or 0: the usual cap), so the down GEMV's
   * blocks find room, and load their first weights, under gate/up's tail */
  const char *gb = getenv("KILN_CUDA_GEMV_GU_BLOCKS");
  long gu = 0;
  if (gb && *gb && env_int_(gb, 0, 8, &gu))
    return kiln_error(KILN_EINVAL, "cuda: KILN_CUDA_GEMV_GU_BLOCKS=%s: expected 0-8", gb);
  b->gu_blocks = (int)gu;
  /* tuning only: layer 0's decode attention timeline (attn_decode.h) in d_prof, read by bench_cuda */
  const char *ap = getenv("KILN_CUDA_ATTN_PROFILE");
  b->attn_prof = ap && atoi(ap) > 0 && KILN_AD_PROF_WORDS <= KILN_CUDA_DS_PROF_WORDS;
  /* a kernel's carveout is set the first time it is launched in the process (smem.c), so the first backend's
   * value holds for the process: a tuning knob, set once per run */
  kiln_cuda__set_carveout((int)pct);
  return 0;
}

/* Chooses the persistent decode kernel when KILN_CUDA_DECODE=persistent and the device runs it. It is not the
 * default: on an H100 it is still slower than the kernel-per-op graph at every size measured (docs/cuda.md). */
static int setup_decode_kernel_(kiln_backend *b) {
  const kiln_config *c = &b->cfg;
  b->ds_blocks = 0;
  const char *mode = getenv("KILN_CUDA_DECODE");
  if (mode && *mode && strcmp(mode, "graph") && strcmp(mode, "persistent"))
    return kiln_error(KILN_EINVAL, "cuda: KILN_CUDA_DECODE=%s: expected graph or persistent", mode);
  if (!mode || strcmp(mode, "persistent")) return 0;
  /* on the backend's stream (non-blocking: not ordered with the legacy default stream), before the warm-up */
  KILN_CUDA_CHECK(cudaMemcpyAsync(b->d_layers, b->layers, sizeof *b->layers * (size_t)c->n_layers,
                                  cudaMemcpyHostToDevice, b->stream));
  KILN_CUDA_CHECK(cudaMemsetAsync(b->d_barrier, 0, 256, b->stream));
  b->ds = (kiln_cuda_decode_args){
      .layers = b->d_layers, .n_layers = c->n_layers, .hidden = c->hidden_size, .inter = c->intermediate_size,
      .vocab = c->vocab_size, .qkv_dim = b->qkv_dim, .eps = c->rms_norm_eps, .shape = b->shape,
      .n_splits = b->n_splits, .embed = b->embed, .lm_head = b->lm_head, .final_norm = b->final_norm,
      .rope = b->rope, .step = b->d_step, .x = b->x, .qkv = b->qkv, .hbuf = b->hbuf, .logits = b->logits,
      .part = b->attn_part, .argmax = b->d_argmax, .barrier = b->d_barrier, .prefetch = DS_PREFETCH};
  /* tuning only: the L2 prefetch distance, and block 0's barrier timeline (decode_step.h) */
  const char *pf = getenv("KILN_CUDA_DS_PREFETCH");
  if (pf && atoi(pf) >= 0) b->ds.prefetch = atoi(pf);
  const char *prof = getenv("KILN_CUDA_DS_PROFILE");
  if (prof && atoi(prof) > 0) b->ds.prof = b->d_prof;
  int blocks = 0;
  int rc = kiln_cuda_decode_step_prepare(&b->ds, &blocks); /* may lower ds.n_splits */
  if (rc == KILN_EUNSUPPORTED) return 0;                  /* the kernel-per-op graph serves this shape or device */
  if (rc) return rc;
  /* the arrival counters sit after the partials, so with fewer splits they sit elsewhere: zero them there (the
   * kernel leaves them zero after every step) */
  if ((rc = kiln_cuda_attn_decode_init(b->attn_part, &b->shape, b->ds.n_splits, b->stream))) return rc;
  b->ds_blocks = blocks;
  return 0;
}

/* Warm-up step and graph capture of the current decode path; with the kernel-per-op graph and the cluster
 * combine in mode SHORT (the default; KILN_CUDA_ATTN_CLUSTER unset or short), also the _short graphs, when the
 * device has clusters and the main graphs split the keys more finely than a cluster holds: below
 * kiln_cuda__short_keys (512 with clusters of 16) the attention then runs its splits as clusters, the same
 * partition of the keys combined on chip. With b->short_levels > 1, pairs with half and a quarter of the splits
 * serve the shorter contexts (256 and 128 keys with clusters of 16): each split still holds 32 keys there, so the
 * partition is the same, in smaller clusters (fewer idle blocks, fewer SMs of a GPC to wait for). */
static int warm_and_capture_(kiln_backend *b) {
  int rc;
  memset(b->h_step, 0, sizeof *b->h_step);
  if ((rc = kiln_cuda__decode_enqueue(b, true, 0))) return rc;
  KILN_CUDA_CHECK(cudaStreamSynchronize(b->stream));
  if ((rc = kiln_cuda__capture_decode(b, false, 0, &b->g_logits))) return rc;
  if ((rc = kiln_cuda__capture_decode(b, true, 0, &b->g_sample))) return rc;
  KILN_CUDA_CHECK(cudaGraphUpload(b->g_logits, b->stream));
  KILN_CUDA_CHECK(cudaGraphUpload(b->g_sample, b->stream));
  int cmax = 0;
  if (b->ds_blocks == 0 && kiln_cuda_attn_decode_cluster_mode() == KILN_CUDA_ATTN_CLUSTER_SHORT &&
      (rc = kiln_cuda_attn_decode_cluster_max(&b->shape, &cmax)))
    return rc;
  if (cmax > 1 && b->n_splits > 1) {
    const int top = b->n_splits < cmax ? b->n_splits : cmax;
    int n = 0; /* levels, smallest first: top >> (levels - 1) .. top, none below 2 splits */
    for (int i = b->short_levels - 1; i >= 0; i--)
      if ((top >> i) >= 2 || i == 0) b->short_splits[n++] = top >> i;
    for (int i = 0; i < n; i++) {
      const int s = b->short_splits[i];
      if ((rc = kiln_cuda__decode_enqueue(b, true, s))) return rc; /* warm-up: the cluster kernel's attributes */
      KILN_CUDA_CHECK(cudaStreamSynchronize(b->stream));
      if ((rc = kiln_cuda__capture_decode(b, false, s, &b->g_logits_short[i]))) return rc;
      if ((rc = kiln_cuda__capture_decode(b, true, s, &b->g_sample_short[i]))) return rc;
      KILN_CUDA_CHECK(cudaGraphUpload(b->g_logits_short[i], b->stream));
      KILN_CUDA_CHECK(cudaGraphUpload(b->g_sample_short[i], b->stream));
      b->short_keys_at[i] = kiln_cuda_attn_decode_short_keys(s);
      b->n_short = i + 1;
    }
  }
  KILN_CUDA_CHECK(cudaStreamSynchronize(b->stream));
  return 0;
}

/* The decode graphs of create(). A persistent kernel that cannot be launched or captured here (a cooperative launch
 * refused: another context holds SMs, a driver without cooperative nodes in graphs) leaves the kernel-per-op
 * graph in charge; any other error is returned. */
static int build_graphs_(kiln_backend *b) {
  int rc = read_switches_(b);
  if (rc) return rc;
  rc = setup_decode_kernel_(b);
  if (rc) return rc;
  if (b->ds_blocks > 0) {
    rc = warm_and_capture_(b);
    if (!rc) return 0;
    if (rc != KILN_EDEVICE) return rc;
    destroy_graphs_(b);
    /* a refused launch or capture leaves the context usable; a fault in the kernel does not: report that */
    cudaError_t e = cudaStreamSynchronize(b->stream);
    (void)cudaGetLastError();
    if (e != cudaSuccess) return rc;
    b->ds_blocks = 0;
  }
  if ((rc = warm_and_capture_(b)) || !b->l2pf_auto) return rc;
  /* the kernel-per-op step, captured without an L2 prefetch: time the choices, recapture if another wins */
  int choice = 0;
  if ((rc = kiln_cuda__tune_l2pf(b, &choice)) || choice == 0) return rc;
  kiln_cuda__l2pf_set(b, choice);
  destroy_graphs_(b);
  return warm_and_capture_(b);
}

/* The last part of create(): the graphs, then the KV cache zeroed again, as open_ left it, since the warm-up and
 * tuning steps stored their key and value rows in slot 0 (a masked key's row read by a tile must never hold NaN or
 * Inf). */
static int finish_(kiln_backend *b) {
  int rc = build_graphs_(b);
  if (rc) return rc;
  KILN_CUDA_CHECK(cudaMemsetAsync(b->layers[0].k_cache, 0, (size_t)b->kv_bytes, b->stream));
  KILN_CUDA_CHECK(cudaStreamSynchronize(b->stream));
  return 0;
}

static int cuda_create_(kiln_backend **out, const kiln_model *m, const kiln_engine_opts *opts, int device_index) {
  *out = NULL;
  bool tied = m->lm_head.data == NULL || m->lm_head.data == m->embed.data;
  kiln_backend *b;
  int rc = open_(&b, &m->cfg, opts, device_index, tied);
  if (rc) return rc;
  if ((rc = kiln_cuda__upload(b, m)) || (rc = finish_(b))) {
    destroy_(b);
    return rc;
  }
  *out = b;
  return 0;
}

int kiln_cuda_create_random(kiln_backend **out, const kiln_config *cfg, const kiln_engine_opts *opts,
                            int device_index, uint64_t seed) {
  *out = NULL;
  kiln_backend *b;
  int rc = open_(&b, cfg, opts, device_index, cfg->tie_word_embeddings);
  if (rc) return rc;
  /* All weights are one contiguous range of the arena: matrices std 0.02; then the norms are set near 1. */
  const kiln_config *c = &b->cfg;
  if ((rc = kiln_cuda_fill_random(b->embed, NULL, b->weight_bytes / 2, seed, 0.f, 0.02f, b->stream))) goto fail;
  if ((rc = kiln_cuda_fill_random(NULL, b->final_norm, c->hidden_size, seed + 1, 1.f, 0.02f, b->stream))) goto fail;
  for (int l = 0; l < c->n_layers && !rc; l++) {
    kiln_cuda_layer *L = &b->layers[l];
    uint64_t s = seed + 16 * (uint64_t)(l + 1);
    rc = kiln_cuda_fill_random(NULL, L->attn_norm, c->hidden_size, s, 1.f, 0.02f, b->stream);
    if (!rc) rc = kiln_cuda_fill_random(NULL, L->ffn_norm, c->hidden_size, s + 1, 1.f, 0.02f, b->stream);
    if (!rc && L->q_norm) rc = kiln_cuda_fill_random(NULL, L->q_norm, c->head_dim, s + 2, 1.f, 0.02f, b->stream);
    if (!rc && L->k_norm) rc = kiln_cuda_fill_random(NULL, L->k_norm, c->head_dim, s + 3, 1.f, 0.02f, b->stream);
    if (!rc && L->bqkv) rc = kiln_cuda_fill_random(NULL, L->bqkv, b->qkv_dim, s + 4, 0.f, 0.02f, b->stream);
    if (!rc && L->bo) rc = kiln_cuda_fill_random(NULL, L->bo, c->hidden_size, s + 5, 0.f, 0.02f, b->stream);
  }
  if (rc || (rc = finish_(b))) goto fail;
  *out = b;
  return 0;
fail:
  destroy_(b);
  return rc;
}

static void cuda_destroy_(kiln_backend *b) { destroy_(b); }

static int cuda_forward_(kiln_backend *b, int seq, int pos, const int32_t *tokens, int n, float *logits,
                         bool all_logits) {
  KILN_CUDA_CHECK(cudaSetDevice(b->dev));
  if (n == 1) {
    memset(b->h_step, 0, sizeof *b->h_step);
    b->h_step->seq = seq;
    b->h_step->pos = pos;
    b->h_step->n = 1;
    b->h_step->token = tokens[0];
    KILN_CUDA_CHECK(cudaGraphLaunch(kiln_cuda__step_graph(b, pos, false), b->stream));
    if (logits)
      KILN_CUDA_CHECK(cudaMemcpyAsync(logits, b->logits, sizeof(float) * (size_t)b->cfg.vocab_size,
                                      cudaMemcpyDeviceToHost, b->stream));
    KILN_CUDA_CHECK(cudaStreamSynchronize(b->stream));
    return 0;
  }
  for (int i0 = 0; i0 < n; i0 += b->chunk) {
    int k = n - i0 < b->chunk ? n - i0 : b->chunk;
    bool last = i0 + k == n;
    float *lg = logits ? (all_logits ? logits + (int64_t)i0 * b->cfg.vocab_size : (last ? logits : NULL)) : NULL;
    int rc = kiln_cuda__prefill_chunk(b, seq, pos + i0, tokens + i0, k, lg, all_logits);
    if (rc) return rc;
  }
  return 0;
}

static int cuda_decode_sample_(kiln_backend *b, int seq, int pos, int32_t token, const kiln_sampling *s,
                               uint64_t step, int32_t *next) {
  KILN_CUDA_CHECK(cudaSetDevice(b->dev));
  kiln_cuda_step *p = b->h_step;
  p->seq = seq;
  p->pos = pos;
  p->n = 1;
  p->token = token;
  p->temperature = s->temperature;
  p->top_k = s->top_k;
  p->top_p = s->top_p;
  p->min_p = s->min_p;
  p->seed = s->seed;
  p->step = step;
  KILN_CUDA_CHECK(cudaGraphLaunch(kiln_cuda__step_graph(b, pos, true), b->stream));
  KILN_CUDA_CHECK(cudaStreamSynchronize(b->stream));
  *next = *b->h_next;
  return 0;
}

static const char *cuda_describe_(kiln_backend *b) { return b->desc; }

/* Matrices in bf16, norms and biases in f32, the KV cache in bf16 (cuda_impl.h). */
static int64_t cuda_step_bytes_(kiln_backend *b, int pos) {
  int64_t mat, vec;
  kiln_backend_step_elems(&b->cfg, &mat, &vec);
  return mat * 2 + vec * 4 + kiln_backend_kv_elems(&b->cfg, pos) * 2;
}

static int cuda_copy_bandwidth_(kiln_backend *b, double *bytes_per_s) {
  KILN_CUDA_CHECK(cudaSetDevice(b->dev));
  return kiln_cuda_copy_bandwidth((size_t)1 << 30, 10, b->stream, bytes_per_s);
}

const kiln_backend_vtbl kiln_backend_cuda = {
    .name = "cuda",
    .create = cuda_create_,
    .destroy = cuda_destroy_,
    .forward = cuda_forward_,
    .decode_sample = cuda_decode_sample_,
    .describe = cuda_describe_,
    .step_bytes = cuda_step_bytes_,
    .copy_bandwidth = cuda_copy_bandwidth_,
};
