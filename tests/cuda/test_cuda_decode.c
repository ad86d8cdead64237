/*
 * tests/cuda/test_cuda_decode.c: the persistent decode kernel (decode_step.h, KILN_CUDA_DECODE=persistent)
 * against the default kernel-per-op decode graph, on random weights of shapes the model tests do not reach:
 * contexts long enough that many key splits are active (up to 1,900 positions), q/k/v and o biases without q/k
 * norm, grouped-query ratios 2, 4, 8 and 16 (8 and 16 put several attention units on one kv head, each storing
 * the new key), head_dim 64, 128 and 256, an odd vocabulary, a hidden size not a multiple of 16. Two backends with
 * the same weights (same seed) prefill the same prompt, then decode the same tokens one by one; each step's
 * logits must agree within NMSE 1e-4 (the two paths round the normalised inputs to bf16 after sums taken in a
 * different order, so they are close, not bitwise equal), and the greedy tokens sampled on the device must match
 * wherever the top two logits are not a near tie. The graph path itself is checked against the CPU engine and
 * transformers by test_cuda_model and test_cuda_ops.
 *
 * Both backends run the same prefill code, and each decode path has a fixed order of summation, so three things
 * must be bitwise equal: the two backends' prefill logits and KV caches, and the logits of a second backend of
 * each path run beside the first (a race shows up as a run-to-run difference). When the two paths disagree,
 * these say where: in the prefill, in one path (which one), or in neither.
 */
#include <string.h>

#include "backend/cpu/ref_ops.h"
#include "backend/cuda/attn_decode.h"
#include "backend/cuda/cuda_impl.h"
#include "backend/cuda/gemm_tc.h"
#include "cuda/gpu_test.h"
#include "kiln/half.h"
#include "kiln/kiln.h"

#define LOGIT_NMSE 1e-4
#define NEAR_TIE 1e-2f /* top-two logit gap, relative to the largest magnitude, under which greedy may flip */

typedef struct shape_case {
  const char *name;
  int hidden, inter, layers, heads, kv_heads, head_dim, vocab;
  bool bias, qk_norm, tied;
  int prompt, steps;
} shape_case;

static kiln_config config_of(const shape_case *s) {
  kiln_config c = {0};
  c.arch = s->qk_norm ? KILN_ARCH_QWEN3 : KILN_ARCH_LLAMA;
  c.vocab_size = s->vocab;
  c.hidden_size = s->hidden;
  c.intermediate_size = s->inter;
  c.n_layers = s->layers;
  c.n_heads = s->heads;
  c.n_kv_heads = s->kv_heads;
  c.head_dim = s->head_dim;
  c.max_position_embeddings = 4096;
  c.rms_norm_eps = 1e-6f;
  c.rope_theta = 1e6;
  c.rope_type = KILN_ROPE_DEFAULT;
  c.tie_word_embeddings = s->tied;
  c.attention_bias = s->bias;
  c.qk_norm = s->qk_norm;
  c.torch_dtype = KILN_BF16;
  c.bos_token_id = -1;
  return c;
}

static double nmse_(const float *a, const float *r, int n) {
  double num = 0, den = 0;
  for (int i = 0; i < n; i++) {
    if (!isfinite(a[i])) return INFINITY;
    double d = (double)a[i] - r[i];
    num += d * d;
    den += (double)r[i] * r[i];
  }
  return den > 0 ? num / den : num;
}

/* The top logit's index and whether the runner-up is within NEAR_TIE of it. */
static int top_(const float *x, int n, bool *tie) {
  int b = 0;
  float best = -INFINITY, second = -INFINITY, mag = 0.f;
  for (int i = 0; i < n; i++) {
    if (fabsf(x[i]) > mag) mag = fabsf(x[i]);
    if (x[i] > best) second = best, best = x[i], b = i;
    else if (x[i] > second) second = x[i];
  }
  *tie = best - second <= NEAR_TIE * mag;
  return b;
}

/* Elements of the slot's KV cache rows [p0, p1) (every layer, keys and values) that differ bitwise between a and b;
 * *nmse: their NMSE (b as the reference). With `what`, also says where (to tell what went wrong when they should
 * be equal): per layer, kind and head, the first and last differing row, how many rows differ, and how many of
 * those are all zero in a (never written) or in b. */
static long kv_diff_(const kiln_backend *a, const kiln_backend *b, int seq, int p0, int p1, double *nmse,
                     const char *name, const char *what) {
  const kiln_cuda_attn_shape *sh = &a->shape;
  const size_t row = (size_t)sh->head_dim, n = (size_t)(p1 - p0) * row;
  uint16_t *ha = malloc(n * 2), *hb = malloc(n * 2);
  if (!ha || !hb) { /* never a vacuous pass */
    fprintf(stderr, "FATAL %s:%d: out of host memory\n", __FILE__, __LINE__);
    exit(1);
  }
  long diff = 0;
  double num = 0, den = 0;
  for (int l = 0; l < a->cfg.n_layers; l++)
    for (int kv = 0; kv < 2; kv++)
      for (int h = 0; h < sh->n_kv_heads; h++) {
        const int64_t at = (((int64_t)seq * sh->n_kv_heads + h) * sh->n_ctx + p0) * sh->head_dim;
        const uint16_t *ca = (kv ? a->layers[l].v_cache : a->layers[l].k_cache) + at;
        const uint16_t *cb = (kv ? b->layers[l].v_cache : b->layers[l].k_cache) + at;
        GT_CUDA(cudaMemcpy(ha, ca, n * 2, cudaMemcpyDeviceToHost));
        GT_CUDA(cudaMemcpy(hb, cb, n * 2, cudaMemcpyDeviceToHost));
        int first = -1, last = -1, rows = 0, zero_a = 0, zero_b = 0;
        for (int r = 0; r < p1 - p0; r++) {
          const uint16_t *ra = ha + (size_t)r * row, *rb = hb + (size_t)r * row;
          if (!memcmp(ra, rb, row * 2)) continue;
          bool za = true, zb = true;
          for (size_t i = 0; i < row; i++) {
            za = za && !(ra[i] & 0x7fff), zb = zb && !(rb[i] & 0x7fff);
            if (ra[i] == rb[i]) continue;
            diff++;
            const float fa = kiln_bf16_to_f32(ra[i]), fb = kiln_bf16_to_f32(rb[i]);
            num += (double)(fa - fb) * (fa - fb);
            den += (double)fb * fb;
          }
          if (first < 0) first = r + p0;
          last = r + p0, rows++, zero_a += za, zero_b += zb;
        }
        if (what && rows)
          fprintf(stderr, "  %s %s: layer %d %s head %d: %d rows differ in [%d, %d], %d all zero in the first, %d "
                          "in the second\n",
                  name, what, l, kv ? "v" : "k", h, rows, first, last, zero_a, zero_b);
      }
  *nmse = den > 0 ? num / den : num;
  free(ha), free(hb);
  return diff;
}

static bool same_(const float *a, const float *b, int n) { return memcmp(a, b, sizeof(float) * (size_t)n) == 0; }

/* The largest logit minus the smallest. */
static float spread_(const float *x, int n) {
  float lo = x[0], hi = x[0];
  for (int i = 1; i < n; i++) lo = x[i] < lo ? x[i] : lo, hi = x[i] > hi ? x[i] : hi;
  return hi - lo;
}

/* The tensor of a's weight range that holds byte offset `off` (diagnosis); *layer: its layer, -1 before them. */
static const char *tensor_at_(const kiln_backend *a, int64_t off, int *layer) {
  const char *p = (const char *)a->embed + off;
  int l = a->cfg.n_layers - 1;
  while (l >= 0 && p < (const char *)a->layers[l].wqkv) l--;
  *layer = l;
  if (l < 0) return "embed, lm_head or final_norm";
  const kiln_cuda_layer *L = &a->layers[l];
  const struct { const void *at; const char *name; } t[] = {
      {L->wqkv, "wqkv"},           {L->bqkv, "bqkv"},         {L->wo, "wo"},         {L->bo, "bo"},
      {L->wgu, "wgu"},             {L->wdown, "wdown"},       {L->q_norm, "q_norm"}, {L->k_norm, "k_norm"},
      {L->attn_norm, "attn_norm"}, {L->ffn_norm, "ffn_norm"}};
  const char *best = NULL, *name = "?";
  for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
    if (t[i].at && (const char *)t[i].at <= p && (!best || (const char *)t[i].at > best))
      best = (const char *)t[i].at, name = t[i].name;
  return name;
}

/* Whether a's and b's weights (one contiguous range each) are bitwise equal; where not, what differs. */
static void weights_where_(const char *name, const char *what, const kiln_backend *a, const kiln_backend *b) {
  const size_t n = (size_t)a->weight_bytes;
  unsigned char *ha = malloc(n), *hb = malloc(n);
  if (!ha || !hb) exit(1);
  GT_CUDA(cudaMemcpy(ha, a->embed, n, cudaMemcpyDeviceToHost));
  GT_CUDA(cudaMemcpy(hb, b->embed, n, cudaMemcpyDeviceToHost));
  size_t diff = 0, first = 0, last = 0;
  for (size_t i = 0; i < n; i++)
    if (ha[i] != hb[i]) {
      if (!diff) first = i;
      last = i, diff++;
    }
  if (diff) {
    int l0, l1;
    const char *t0 = tensor_at_(a, (int64_t)first, &l0), *t1 = tensor_at_(a, (int64_t)last, &l1);
    fprintf(stderr, "  %s %s: weights differ in %zu of %zu bytes, first at %zu (%s, layer %d), last at %zu (%s, "
                    "layer %d)\n",
            name, what, diff, n, first, t0, l0, last, t1, l1);
  } else {
    fprintf(stderr, "  %s %s: weights bitwise equal (%zu bytes)\n", name, what, n);
  }
  free(ha), free(hb);
}

/* The backend's RoPE frequencies are the reference ones, bitwise, and its table the one they give: nothing else
 * (such as the fill of the random weights) writes them. Two backends with the same wrong frequencies would agree
 * with each other, so the comparisons below could not see it. */
static void rope_ok_(const char *name, const char *what, const kiln_backend *b) {
  float want[128], got[128];
  const int n = b->cfg.head_dim / 2;
  kiln_ref_rope_inv_freq(want, &b->cfg);
  GT_CUDA(cudaMemcpy(got, b->inv_freq, sizeof(float) * (size_t)n, cudaMemcpyDeviceToHost));
  GT_CHECK(!memcmp(want, got, sizeof(float) * (size_t)n), "%s: %s backend's RoPE frequencies are not the reference's",
           name, what);
  /* and its table of cosines and sines is the one those frequencies give (test_cuda_ops checks the table op) */
  const size_t bytes = sizeof(float) * (size_t)b->n_ctx * (size_t)b->cfg.head_dim;
  float *d_inv = gt_dev(sizeof(float) * (size_t)n), *d_rope = gt_dev(bytes);
  float *t_want = malloc(bytes), *t_got = malloc(bytes);
  GT_CHECK(t_want && t_got, "%s: out of host memory", name);
  if (t_want && t_got) {
    GT_CUDA(cudaMemcpy(d_inv, want, sizeof(float) * (size_t)n, cudaMemcpyHostToDevice));
    GT_OK(kiln_cuda_rope_table(d_rope, d_inv, b->cfg.head_dim, b->n_ctx, 0));
    GT_CUDA(cudaMemcpy(t_want, d_rope, bytes, cudaMemcpyDeviceToHost));
    GT_CUDA(cudaMemcpy(t_got, b->rope, bytes, cudaMemcpyDeviceToHost));
    GT_CHECK(!memcmp(t_want, t_got, bytes), "%s: %s backend's RoPE table is not its frequencies'", name, what);
  }
  free(t_want), free(t_got);
  cudaFree(d_inv), cudaFree(d_rope);
}

static void run_case(const shape_case *s) {
  kiln_config cfg = config_of(s);
  kiln_engine_opts o = {.device = "cuda", .n_ctx = 2048, .n_seqs = 2};
  kiln_backend *pk = NULL, *gr = NULL, *pk2 = NULL, *gr2 = NULL; /* pk2, gr2: the same again (determinism) */
  /* KILN_TEST_GRAPH_FIRST=1 (diagnosis): the graph backends are created and run first */
  const char *gf = getenv("KILN_TEST_GRAPH_FIRST");
  const bool graph_first = gf && !strcmp(gf, "1");
  if (graph_first) {
    GT_OK(kiln_cuda_create_random(&gr, &cfg, &o, 0, 11));
    GT_OK(kiln_cuda_create_random(&gr2, &cfg, &o, 0, 11));
  }
  setenv("KILN_CUDA_DECODE", "persistent", 1);
  GT_OK(kiln_cuda_create_random(&pk, &cfg, &o, 0, 11));
  GT_OK(kiln_cuda_create_random(&pk2, &cfg, &o, 0, 11));
  unsetenv("KILN_CUDA_DECODE");
  if (!graph_first) {
    GT_OK(kiln_cuda_create_random(&gr, &cfg, &o, 0, 11));
    GT_OK(kiln_cuda_create_random(&gr2, &cfg, &o, 0, 11));
  }
  if (!pk || !gr || !pk2 || !gr2) goto out;
  rope_ok_(s->name, "persistent 1", pk), rope_ok_(s->name, "persistent 2", pk2);
  rope_ok_(s->name, "graph 1", gr), rope_ok_(s->name, "graph 2", gr2);
  GT_CHECK(pk->ds_blocks > 0, "%s: the persistent decode kernel was not chosen (a cooperative launch refused?)",
           s->name);
  GT_CHECK(gr->ds_blocks == 0, "%s: the default decode path is not the kernel-per-op graph", s->name);
  /* in the default mode (KILN_CUDA_ATTN_CLUSTER unset or short) and with clusters on the device, positions up to
   * short_keys run the short-context graphs (cluster combine, the same partition of the keys): the cases below
   * start under it, cross it ("wide") or start past it */
  int cmax = 0;
  GT_OK(kiln_cuda_attn_decode_cluster_max(&gr->shape, &cmax));
  if (kiln_cuda_attn_decode_cluster_mode() != KILN_CUDA_ATTN_CLUSTER_SHORT) cmax = 0;
  const int want_short = cmax > 1 && gr->n_splits > 1 ? kiln_cuda_attn_decode_short_keys(
                                                             gr->n_splits < cmax ? gr->n_splits : cmax)
                                                       : 0;
  GT_CHECK(kiln_cuda__short_keys(gr) == want_short, "%s: short-context graphs up to %d keys, expected %d", s->name,
           kiln_cuda__short_keys(gr), want_short);

  const int V = s->vocab, seq = 1;
  int32_t *prompt = malloc(sizeof(int32_t) * (size_t)s->prompt);
  float *la = malloc(sizeof(float) * (size_t)V), *lb = malloc(sizeof(float) * (size_t)V);
  float *la2 = malloc(sizeof(float) * (size_t)V), *lb2 = malloc(sizeof(float) * (size_t)V);
  float *prev = malloc(sizeof(float) * (size_t)V);
  if (!prompt || !la || !lb || !la2 || !lb2 || !prev) { /* never a vacuous pass */
    fprintf(stderr, "FATAL %s:%d: out of host memory\n", __FILE__, __LINE__);
    exit(1);
  }
  uint64_t r = 0x9e3779b97f4a7c15ull;
  for (int i = 0; i < s->prompt; i++) {
    r = r * 6364136223846793005ull + 1442695040888963407ull;
    prompt[i] = (int32_t)((r >> 33) % (uint64_t)V);
  }
  kiln_backend *order[4] = {pk, gr, pk2, gr2};
  float *out[4] = {la, lb, la2, lb2};
  if (graph_first) order[0] = gr, out[0] = lb, order[1] = gr2, out[1] = lb2, order[2] = pk, out[2] = la,
                   order[3] = pk2, out[3] = la2;
  for (int i = 0; i < 4; i++) GT_OK(kiln_backend_cuda.forward(order[i], seq, 0, prompt, s->prompt, out[i], false));
  double kv_nmse = 0;
  const long kv_pre = kv_diff_(pk, gr, seq, 0, s->prompt, &kv_nmse, s->name, NULL);
  GT_CHECK(same_(la, lb, V) && same_(la2, lb, V) && same_(lb2, lb, V),
           "%s: the same prefill gave different logits on two backends (NMSE %.3g; equal: persistent 1 = graph 1 "
           "%d, persistent 2 = graph 1 %d, graph 2 = graph 1 %d)",
           s->name, nmse_(la, lb, V), same_(la, lb, V), same_(la2, lb, V), same_(lb2, lb, V));
  GT_CHECK(kv_pre == 0, "%s: the same prefill left %ld different KV cache elements (NMSE %.3g)", s->name, kv_pre,
           kv_nmse);
  if (kv_pre || !same_(la, lb, V) || !same_(la2, lb, V)) {
    weights_where_(s->name, "persistent 1 vs graph 1", pk, gr);
    weights_where_(s->name, "persistent 2 vs graph 1", pk2, gr);
    double e;
    kv_diff_(pk, gr, seq, 0, s->prompt, &e, s->name, "prefill, persistent 1 vs graph 1");
    kv_diff_(pk2, gr, seq, 0, s->prompt, &e, s->name, "prefill, persistent 2 vs graph 1");
    kv_diff_(gr2, gr, seq, 0, s->prompt, &e, s->name, "prefill, graph 2 vs graph 1");
  }
  int pos = s->prompt, flips = 0, ties = 0, runs_pk = 0, runs_gr = 0;
  double worst = 0;
  int32_t tok = prompt[s->prompt - 1];
  kiln_sampling greedy = kiln_sampling_default();
  greedy.temperature = 0.f;
  for (int i = 0; i < s->steps; i++, pos++) {
    if (i % 2 == 0) { /* logits to the host */
      memcpy(prev, lb, sizeof(float) * (size_t)V);
      GT_OK(kiln_backend_cuda.forward(pk, seq, pos, &tok, 1, la, false));
      GT_OK(kiln_backend_cuda.forward(gr, seq, pos, &tok, 1, lb, false));
      /* never a vacuous agreement: each step's logits are new (another position) and not all alike */
      GT_CHECK(!same_(prev, lb, V), "%s: step %d (position %d): the logits did not change", s->name, i, pos);
      GT_CHECK(spread_(lb, V) > 0.f, "%s: step %d (position %d): every logit is the same", s->name, i, pos);
      GT_OK(kiln_backend_cuda.forward(pk2, seq, pos, &tok, 1, la2, false));
      GT_OK(kiln_backend_cuda.forward(gr2, seq, pos, &tok, 1, lb2, false));
      if (!same_(la, la2, V)) runs_pk++;
      if (!same_(lb, lb2, V)) runs_gr++;
      double e = nmse_(la, lb, V);
      worst = e > worst ? e : worst;
      GT_CHECK(e <= LOGIT_NMSE, "%s: step %d (position %d): logits NMSE %.3g", s->name, i, pos, e);
      bool tie_a, tie_b;
      int ta = top_(la, V, &tie_a), tb = top_(lb, V, &tie_b);
      if (ta != tb && !tie_a && !tie_b) flips++;
      tok = tb;
    } else { /* sampled on the device */
      int32_t na = -1, nb = -1;
      GT_OK(kiln_backend_cuda.decode_sample(pk, seq, pos, tok, &greedy, (uint64_t)i, &na));
      GT_OK(kiln_backend_cuda.decode_sample(gr, seq, pos, tok, &greedy, (uint64_t)i, &nb));
      int32_t na2 = -1, nb2 = -1;
      GT_OK(kiln_backend_cuda.decode_sample(pk2, seq, pos, tok, &greedy, (uint64_t)i, &na2));
      GT_OK(kiln_backend_cuda.decode_sample(gr2, seq, pos, tok, &greedy, (uint64_t)i, &nb2));
      if (na2 != na) runs_pk++;
      if (nb2 != nb) runs_gr++;
      if (na != nb) ties++; /* no logits here to tell a tie from a fault: counted, bounded below */
      tok = nb;
    }
  }
  GT_CHECK(runs_pk == 0, "%s: persistent kernel: %d of %d steps differ between two runs", s->name, runs_pk,
           s->steps);
  GT_CHECK(runs_gr == 0, "%s: decode graph: %d of %d steps differ between two runs", s->name, runs_gr, s->steps);
  /* the rows the two paths stored while decoding: same keys and values up to the rounding of the q/k/v sums */
  const long kv_dec = kv_diff_(pk, gr, seq, s->prompt, pos, &kv_nmse, s->name, NULL);
  GT_CHECK(kv_nmse <= LOGIT_NMSE, "%s: decoded KV rows differ (%ld elements, NMSE %.3g)", s->name, kv_dec, kv_nmse);
  /* also where the logits agreed bitwise at every checked step but the stored rows do not (seen on the "short"
   * case at 20543fe, not yet explained) */
  if (kv_nmse > LOGIT_NMSE || (kv_dec > 0 && worst == 0)) {
    double e;
    kv_diff_(pk, gr, seq, s->prompt, pos, &e, s->name, "decoded, persistent 1 vs graph 1");
    kv_diff_(pk2, gr, seq, s->prompt, pos, &e, s->name, "decoded, persistent 2 vs graph 1");
  }
  GT_CHECK(flips == 0, "%s: %d greedy choices differ away from a near tie", s->name, flips);
  GT_CHECK(ties <= 1, "%s: %d of %d device-sampled greedy tokens differ", s->name, ties, s->steps / 2);
  printf("%s: prompt %d, %d steps to position %d (short graphs below %d): worst logits NMSE %.2e, greedy "
         "differences %d/%d; decoded KV rows: %ld elements differ (NMSE %.2e); run-to-run differences: persistent "
         "%d, graph %d\n",
         s->name, s->prompt, s->steps, pos, kiln_cuda__short_keys(gr), worst, flips, ties, kv_dec, kv_nmse, runs_pk,
         runs_gr);
  /* a token outside the vocabulary: NaN logits on both paths, no fault */
  int32_t bad = V + 5;
  GT_OK(kiln_backend_cuda.forward(pk, 0, 0, &bad, 1, la, false));
  GT_CHECK(la[0] != la[0], "%s: an out-of-vocabulary token did not give NaN logits", s->name);
  free(prompt), free(la), free(lb), free(la2), free(lb2), free(prev);
out:
  if (pk) kiln_backend_cuda.destroy(pk);
  if (gr) kiln_backend_cuda.destroy(gr);
  if (pk2) kiln_backend_cuda.destroy(pk2);
  if (gr2) kiln_backend_cuda.destroy(gr2);
}

/* KILN_CUDA_GEMM_TILE: one tile for all, a list by product, and what is refused */
static void test_gemm_tile_env(const shape_case *s) {
  const kiln_config cfg = config_of(s);
  const kiln_engine_opts o = {.device = "cuda", .n_ctx = 256, .n_seqs = 1};
  static const char *const bad[] = {"128x100", "qkv:", "qkv:128x128,", "up:128x128", "o=128x128", "qkv:128x128:o"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    kiln_backend *b = NULL;
    setenv("KILN_CUDA_GEMM_TILE", bad[i], 1);
    GT_CHECK(kiln_cuda_create_random(&b, &cfg, &o, 0, 11) != 0 && !b, "KILN_CUDA_GEMM_TILE=%s was taken", bad[i]);
    if (b) kiln_backend_cuda.destroy(b);
  }
  kiln_backend *b = NULL;
  setenv("KILN_CUDA_GEMM_TILE", "o:128x128k2,qkv:64x128c4", 1);
  GT_OK(kiln_cuda_create_random(&b, &cfg, &o, 0, 11));
  if (b)
    GT_CHECK(b->gemm_tile[KILN_PF_QKV] == KILN_TC_64x128c4 && b->gemm_tile[KILN_PF_O] == KILN_TC_128x128k2 &&
                 b->gemm_tile[KILN_PF_GATE_UP] == KILN_TC_AUTO && b->gemm_tile[KILN_PF_DOWN] == KILN_TC_AUTO,
             "KILN_CUDA_GEMM_TILE list: tiles %d %d %d %d", b->gemm_tile[0], b->gemm_tile[1], b->gemm_tile[2],
             b->gemm_tile[3]);
  if (b) kiln_backend_cuda.destroy(b);
  unsetenv("KILN_CUDA_GEMM_TILE");
}

/* Prefill n tokens into slot 0 from position 0, then `steps` decode steps; every step's logits into lg[steps][V]. */
static void prefill_decode_(kiln_backend *b, int n, int steps, float *lg) {
  const int V = b->cfg.vocab_size;
  int32_t *ids = malloc(sizeof(int32_t) * (size_t)(n + steps));
  for (int i = 0; i < n + steps; i++) ids[i] = (i * 977 + 5) % V;
  GT_OK(kiln_backend_cuda.forward(b, 0, 0, ids, n, NULL, false));
  for (int k = 0; k < steps; k++)
    GT_OK(kiln_backend_cuda.forward(b, 0, n + k, ids + n + k, 1, lg + (int64_t)k * V, false));
  free(ids);
}

/* Create leaves the KV cache zeroed, whatever its warm-up and tuning steps stored (a masked key's row read by a
 * tile must never hold NaN or Inf). */
static void kv_zero_(const kiln_backend *b, const char *what) {
  unsigned char *kv = malloc((size_t)b->kv_bytes);
  if (!kv) { /* never a vacuous pass */
    fprintf(stderr, "FATAL %s:%d: out of host memory\n", __FILE__, __LINE__);
    exit(1);
  }
  GT_CUDA(cudaMemcpy(kv, b->layers[0].k_cache, (size_t)b->kv_bytes, cudaMemcpyDeviceToHost));
  int64_t nz = 0;
  for (int64_t i = 0; i < b->kv_bytes; i++) nz += kv[i] != 0;
  GT_CHECK(nz == 0, "l2pf %s: %lld bytes of the KV cache not zero after create", what, (long long)nz);
  free(kv);
}

/* The L2 prefetch chosen by timing (KILN_CUDA_ATTN_L2PF and KILN_CUDA_L2PF_SIDE unset, the default): the choice
 * the timing made is the one kept, the cache is left zeroed, and every choice, fixed by the variables, gives the
 * same bits as the tuned backend, at a short and a long position. */
static void test_l2pf_tune(const shape_case *s) {
  static const double pick_in[][3] = {{1.0, 0.995, 0.98}, {1.0, 0.995, 0.992}, {1.0, 0.98, 1.1}, {1.0, 0.0, 0.5},
                                      {1.0, -1.0, 2.0}, {1.0, 0.97, 0.98}};
  static const int pick_want[] = {2, 0, 1, 2, 0, 1};
  for (size_t i = 0; i < sizeof pick_want / sizeof pick_want[0]; i++)
    GT_CHECK(kiln_cuda__l2pf_pick(pick_in[i], 3) == pick_want[i], "l2pf pick case %zu: %d, wanted %d", i,
             kiln_cuda__l2pf_pick(pick_in[i], 3), pick_want[i]);
  const kiln_config cfg = config_of(s);
  const kiln_engine_opts o = {.device = "cuda", .n_ctx = 2048, .n_seqs = 1};
  /* each choice as the variables would fix it (in kiln_cuda__l2pf_choice's order) */
  static const char *const fix[KILN_CUDA_L2PF_CHOICES][2] = {
      {"off", "off"}, {"o", "off"}, {"16", "off"}, {"off", "o"}, {"off", "16"}};
  kiln_backend *a = NULL;
  unsetenv("KILN_CUDA_ATTN_L2PF");
  unsetenv("KILN_CUDA_L2PF_SIDE");
  GT_OK(kiln_cuda_create_random(&a, &cfg, &o, 0, 11));
  if (!a) return;
  bool timed = true;
  fprintf(stderr, "l2pf tune (%s), ms:", s->name);
  for (int c = 0; c < KILN_CUDA_L2PF_CHOICES; c++) {
    timed = timed && a->l2pf_tune_ms[c] > 0;
    fprintf(stderr, " %s %.4f", kiln_cuda__l2pf_name[c], a->l2pf_tune_ms[c]);
  }
  const int chosen = kiln_cuda__l2pf_pick(a->l2pf_tune_ms, KILN_CUDA_L2PF_CHOICES);
  fprintf(stderr, "; kept %s\n", kiln_cuda__l2pf_name[chosen]);
  GT_CHECK(timed, "l2pf tune: a choice was not timed");
  GT_CHECK(a->attn_l2pf == kiln_cuda__l2pf_choice[chosen].attn && a->side_l2pf == kiln_cuda__l2pf_choice[chosen].side,
           "l2pf tune: kept (%lld, %lld), the timing chose %s", (long long)a->attn_l2pf, (long long)a->side_l2pf,
           kiln_cuda__l2pf_name[chosen]);
  kv_zero_(a, "tuned");
  const int V = cfg.vocab_size, steps = 3;
  const int lens[2] = {100, 700}; /* under and past the short-context graphs' reach (512 keys with clusters of 16) */
  const size_t bytes = sizeof(float) * (size_t)(2 * steps * V);
  float *want = malloc(bytes), *got = malloc(bytes);
  for (int i = 0; i < 2; i++) prefill_decode_(a, lens[i], steps, want + (int64_t)i * steps * V);
  for (int c = 0; c < KILN_CUDA_L2PF_CHOICES; c++) {
    kiln_backend *f = NULL;
    setenv("KILN_CUDA_ATTN_L2PF", fix[c][0], 1);
    setenv("KILN_CUDA_L2PF_SIDE", fix[c][1], 1);
    GT_OK(kiln_cuda_create_random(&f, &cfg, &o, 0, 11));
    unsetenv("KILN_CUDA_ATTN_L2PF");
    unsetenv("KILN_CUDA_L2PF_SIDE");
    if (!f) continue;
    kv_zero_(f, kiln_cuda__l2pf_name[c]);
    GT_CHECK(f->l2pf_tune_ms[0] == 0 && f->attn_l2pf == kiln_cuda__l2pf_choice[c].attn &&
                 f->side_l2pf == kiln_cuda__l2pf_choice[c].side,
             "l2pf %s: tuned anyway, or kept (%lld, %lld)", kiln_cuda__l2pf_name[c], (long long)f->attn_l2pf,
             (long long)f->side_l2pf);
    for (int i = 0; i < 2; i++) prefill_decode_(f, lens[i], steps, got + (int64_t)i * steps * V);
    GT_CHECK(same_(want, got, 2 * steps * V), "l2pf %s: logits differ from the tuned backend's",
             kiln_cuda__l2pf_name[c]);
    kiln_backend_cuda.destroy(f);
  }
  free(want);
  free(got);
  kiln_backend_cuda.destroy(a);
}

int main(void) {
  gt_skip_without_gpu();
  static const shape_case cases[] = {
      /* Qwen3-0.6B's layer shape: 16 q heads over 8 kv heads, head_dim 128, q/k norm, tied head */
      {"qwen3-like", 1024, 3072, 3, 16, 8, 128, 4096, false, true, true, 1500, 40},
      /* Llama-style: biases, no q/k norm, 4 q heads per kv head, head_dim 64, separate head */
      {"llama-bias", 512, 1408, 2, 8, 2, 64, 3000, true, false, false, 1850, 40},
      /* 8 q heads per kv head: two attention units per kv head */
      {"gqa-8", 768, 2048, 2, 32, 4, 64, 2048, false, true, true, 300, 30},
      /* short context: most splits idle */
      {"short", 1024, 2816, 2, 16, 4, 128, 1024, false, true, true, 3, 20},
      /* head_dim 256 (one lane group per key), 16 q heads per kv head (four units per kv head), a residual
       * longer than the norm keeps in registers (6,152 = 4 x 4 x 384 + 8), an odd vocabulary (the argmax of a
       * last row without a partner), a hidden size that is a multiple of 8 but not of 16 */
      {"wide", 6152, 8192, 2, 32, 2, 256, 32001, false, true, false, 500, 20},
  };
  const char *only = getenv("KILN_TEST_CASE"); /* diagnosis: one case by name */
  test_gemm_tile_env(&cases[0]);
  test_l2pf_tune(&cases[0]);
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
    if (!only || !*only || !strcmp(only, cases[i].name)) run_case(&cases[i]);
  return gt_finish("test_cuda_decode");
}
