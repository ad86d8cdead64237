/*
 * The CPU backend (kiln_backend_cpu): the forward pass of Qwen3 and Llama on the host, f32 compute from the
 * checkpoint's F32/BF16/F16 weights, read in place from the model's mapping.
 *
 * Memory. Everything is allocated in create(): the KV cache, f32, [n_seqs][n_layers][n_ctx][n_kv_heads*head_dim]
 * for K and again for V (f32 rather than bf16: rounding cached keys and values to bf16 would alone move logits by
 * ~1e-3 relative, ten times the fidelity bound of 1e-4; at short contexts the cache is a small part of the bytes
 * a decode step reads), and scratch for KILN_CPU_MAX_BATCH tokens. Prompts longer than that are run in chunks.
 * calloc'd pages of the cache are only touched when a position is written.
 *
 * Work split. Each matmul is one pool job: the output rows (q, k and v rows together; gate and up together) are
 * cut in chunks of about 64 KiB of weights, split evenly in contiguous ranges so each thread streams its own part
 * of the weights, with stealing at the end (cpu_pool.h) so a thread that loses its core on a shared machine
 * delays the job by one chunk. Attention is one job split by kv head: a thread normalises and rotates its heads' new keys and then runs the query heads that read
 * them (all of a group at once, each cached row read once), so no barrier is needed inside. The serial parts between jobs (residual adds, RMSNorm) are microseconds.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend/backend.h"
#include "backend/cpu/cpu_kernels.h"
#include "backend/cpu/cpu_ops.h"
#include "backend/cpu/cpu_pool.h"
#include "backend/cpu/ref_ops.h"
#include "base/clock.h"
#include "kiln/status.h"

/* Tokens per prefill chunk: the scratch size, and the tile over which each weight row is reused. */
#define KILN_CPU_MAX_BATCH 64

enum { KILN_PROF_QKV, KILN_PROF_ATTN, KILN_PROF_O, KILN_PROF_GATE_UP, KILN_PROF_DOWN, KILN_PROF_HEAD, KILN_PROF_N };
static const char *const prof_names_[KILN_PROF_N] = {"qkv", "attention", "o_proj", "gate_up", "down", "lm_head"};

/* Times `stmt` into part `i` when profiling is on. */
#define PROF(b, i, stmt)                                                                                          \
  do {                                                                                                            \
    double t0_ = (b)->prof ? kiln_mono_ms() : 0;                                                                       \
    stmt;                                                                                                         \
    if ((b)->prof) (b)->prof_ms[i] += kiln_mono_ms() - t0_;                                                            \
  } while (0)

struct kiln_backend {
  const kiln_model *m;
  const kiln_config *cfg;
  const kiln_cpu_kernels *kern;
  kiln_cpu_pool *pool;
  int n_threads, n_ctx, n_seqs;
  int64_t hidden, inter, vocab, hd, q_dim, kv_dim, max_in;
  float attn_scale;
  float *kcache, *vcache; /* [n_seqs][n_layers][n_ctx][kv_dim] */
  float *inv_freq;        /* [hd/2] */
  float *rope_cs;         /* [B][hd]: cos | sin per token of the chunk */
  int32_t *pos;           /* [B] */
  float *x;               /* [B][hidden] residual stream */
  float *xn;              /* [B][max_in] normed input / matmul input */
  float *xp;              /* [B][max_in] prepared matmul input */
  float *q, *att;         /* [B][q_dim] */
  float *gate, *up;       /* [B][inter] */
  float *tmp;             /* [B][hidden] block output */
  float *scores;          /* [n_threads][group][n_ctx] attention weights */
  kiln_cpu_steal *ranges; /* [n_threads] work ranges of the current job */
  char desc[96];
  /* KILN_CPU_PROFILE=1: wall time per part of the forward pass, printed to stderr by destroy() */
  bool prof;
  double prof_ms[KILN_PROF_N];
  double prof_total_ms;
  int64_t prof_tokens, prof_calls;
};

/* ---- matmul jobs ---- */

typedef struct mm_seg {
  const kiln_tensor *w;
  float *y;
  int64_t ldy, out;
} mm_seg;

typedef struct mm_job {
  const kiln_cpu_kernels *k;
  const float *xp;
  int64_t n, in, total, chunk; /* rows per unit of work */
  mm_seg seg[3];
  int n_seg;
  kiln_cpu_steal *ranges;
} mm_job;

/* Rows per unit of matmul work: about KILN_CPU_CHUNK_BYTES of weights, a multiple of 16 (the prefill GEMM's
 * panel height). */
#define KILN_CPU_CHUNK_BYTES (64 * 1024)

static int64_t chunk_rows_(int64_t in, kiln_dtype dt) {
  int64_t r = KILN_CPU_CHUNK_BYTES / (in * (int64_t)kiln_dtype_size(dt));
  return r < 16 ? 16 : r & ~(int64_t)15;
}

static void mm_run_(void *arg, int tid, int nth) {
  const mm_job *j = arg;
  int64_t u;
  while (kiln_cpu_steal_next(j->ranges, nth, tid, &u)) {
    const int64_t r0 = u * j->chunk, r1 = r0 + j->chunk < j->total ? r0 + j->chunk : j->total;
    int64_t base = 0;
    for (int s = 0; s < j->n_seg; s++) {
      const mm_seg *g = &j->seg[s];
      int64_t o0 = (r0 > base ? r0 : base) - base, o1 = (r1 < base + g->out ? r1 : base + g->out) - base;
      if (o0 < o1) j->k->matmul(g->y, g->ldy, j->xp, j->n, g->w->data, g->w->dtype, j->in, o0, o1);
      base += g->out;
    }
  }
}

/* y_s = x W_s^T for up to three weights read with the same input x[n][in] (one job when their dtypes agree). */
static void matmul_segs_(kiln_backend *b, const float *x, int64_t n, int64_t in, const mm_seg *segs, int n_seg) {
  for (int s = 0; s < n_seg;) {
    mm_job j = {.k = b->kern, .xp = b->xp, .n = n, .in = in};
    kiln_dtype dt = segs[s].w->dtype;
    while (s < n_seg && segs[s].w->dtype == dt) {
      j.seg[j.n_seg++] = segs[s];
      j.total += segs[s].out;
      s++;
    }
    b->kern->prep_x(b->xp, x, n, in, dt);
    j.chunk = chunk_rows_(in, dt);
    j.ranges = b->ranges;
    kiln_cpu_steal_init(b->ranges, b->n_threads, (j.total + j.chunk - 1) / j.chunk);
    kiln_cpu_pool_run(b->pool, mm_run_, &j);
  }
}

/* ---- gate/up + SwiGLU ---- */

typedef struct ffn_job {
  kiln_backend *b;
  const kiln_layer_weights *L;
  int64_t n, chunk; /* rows of gate and of up per unit of work */
} ffn_job;

static void ffn_run_(void *arg, int tid, int nth) {
  const ffn_job *j = arg;
  kiln_backend *b = j->b;
  const int64_t I = b->inter, chunk = j->chunk;
  int64_t u;
  while (kiln_cpu_steal_next(b->ranges, nth, tid, &u)) {
    const int64_t r0 = u * chunk, r1 = r0 + chunk < I ? r0 + chunk : I;
    b->kern->matmul(b->gate, I, b->xp, j->n, j->L->w_gate.data, j->L->w_gate.dtype, b->hidden, r0, r1);
    b->kern->matmul(b->up, I, b->xp, j->n, j->L->w_up.data, j->L->w_up.dtype, b->hidden, r0, r1);
    for (int64_t t = 0; t < j->n; t++)
      kiln_cpu_swiglu(b->gate + t * I + r0, b->gate + t * I + r0, b->up + t * I + r0, r1 - r0);
  }
}

/* ---- attention ---- */

typedef struct attn_job {
  kiln_backend *b;
  const kiln_layer_weights *L;
  float *kc, *vc; /* this layer's cache of the sequence: [n_ctx][kv_dim] */
  int64_t pos, n;
} attn_job;

static void attn_run_(void *arg, int tid, int nth) {
  const attn_job *j = arg;
  kiln_backend *b = j->b;
  const kiln_config *c = b->cfg;
  const kiln_cpu_kernels *k = b->kern;
  const int64_t hd = b->hd, kvd = b->kv_dim, qd = b->q_dim, group = c->n_heads / c->n_kv_heads;
  float *sc = b->scores + (int64_t)tid * group * b->n_ctx; /* [group][n_ctx] */
  int64_t g;
  while (kiln_cpu_steal_next(b->ranges, nth, tid, &g)) {
    for (int64_t t = 0; t < j->n; t++) { /* the new keys of kv head g: norm, then rotate */
      float *kr = j->kc + (j->pos + t) * kvd + g * hd;
      if (j->L->k_norm.data) kiln_cpu_rmsnorm(kr, kr, j->L->k_norm.data, j->L->k_norm.dtype, 1, hd, c->rms_norm_eps);
      kiln_cpu_rope_head(kr, b->rope_cs + t * hd, hd);
    }
    for (int64_t t = 0; t < j->n; t++) {
      /* the group's query heads together, so each cached key and value row is read once for all of them */
      float *q0 = b->q + t * qd + g * group * hd, *o0 = b->att + t * qd + g * group * hd;
      for (int64_t h = 0; h < group; h++) {
        float *qh = q0 + h * hd;
        if (j->L->q_norm.data) kiln_cpu_rmsnorm(qh, qh, j->L->q_norm.data, j->L->q_norm.dtype, 1, hd, c->rms_norm_eps);
        kiln_cpu_rope_head(qh, b->rope_cs + t * hd, hd);
      }
      const int64_t len = j->pos + t + 1;
      for (int64_t p = 0; p < len; p++) {
        const float *kp = j->kc + p * kvd + g * hd;
        for (int64_t h = 0; h < group; h++) sc[h * b->n_ctx + p] = k->dot(q0 + h * hd, kp, hd) * b->attn_scale;
      }
      for (int64_t h = 0; h < group; h++) k->softmax(sc + h * b->n_ctx, len);
      memset(o0, 0, (size_t)(group * hd) * sizeof *o0);
      for (int64_t p = 0; p < len; p++) {
        const float *vp = j->vc + p * kvd + g * hd;
        for (int64_t h = 0; h < group; h++) k->axpy(o0 + h * hd, sc[h * b->n_ctx + p], vp, hd);
      }
    }
  }
}

/* ---- the forward pass ---- */

static void add_bias_(float *y, int64_t ldy, const kiln_tensor *bias, int64_t n, int64_t dim) {
  if (!bias->data) return;
  for (int64_t t = 0; t < n; t++)
    for (int64_t i = 0; i < dim; i++) y[t * ldy + i] += kiln_weight_at(bias->data, bias->dtype, i);
}

static void embed_(kiln_backend *b, const int32_t *tokens, int64_t n) {
  const kiln_tensor *e = &b->m->embed;
  for (int64_t t = 0; t < n; t++) {
    const int64_t row = (int64_t)tokens[t] * b->hidden;
    float *x = b->x + t * b->hidden;
    if (e->dtype == KILN_F32) {
      memcpy(x, (const float *)e->data + row, (size_t)b->hidden * sizeof *x);
    } else {
      for (int64_t i = 0; i < b->hidden; i++) x[i] = kiln_weight_at(e->data, e->dtype, row + i);
    }
  }
}

/* One chunk of n <= KILN_CPU_MAX_BATCH tokens at positions pos..; logits for rows [l0, n) when logits != NULL. */
static void forward_chunk_(kiln_backend *b, int seq, int64_t pos, const int32_t *tokens, int64_t n, float *logits,
                           int64_t l0) {
  const kiln_model *m = b->m;
  const kiln_config *c = b->cfg;
  const int64_t H = b->hidden;
  for (int64_t t = 0; t < n; t++) b->pos[t] = (int32_t)(pos + t);
  kiln_cpu_rope_table(b->rope_cs, b->pos, n, b->hd, b->inv_freq);
  embed_(b, tokens, n);
  const int64_t layer_stride = (int64_t)b->n_ctx * b->kv_dim;
  float *kseq = b->kcache + (int64_t)seq * c->n_layers * layer_stride;
  float *vseq = b->vcache + (int64_t)seq * c->n_layers * layer_stride;
  kiln_cpu_rmsnorm(b->xn, b->x, m->layers[0].attn_norm.data, m->layers[0].attn_norm.dtype, n, H, c->rms_norm_eps);
  for (int l = 0; l < c->n_layers; l++) {
    const kiln_layer_weights *L = &m->layers[l];
    float *kc = kseq + l * layer_stride, *vc = vseq + l * layer_stride;
    /* q, k, v: k and v straight into the cache rows of the new positions */
    mm_seg qkv[3] = {{&L->wq, b->q, b->q_dim, b->q_dim},
                     {&L->wk, kc + pos * b->kv_dim, b->kv_dim, b->kv_dim},
                     {&L->wv, vc + pos * b->kv_dim, b->kv_dim, b->kv_dim}};
    PROF(b, KILN_PROF_QKV, matmul_segs_(b, b->xn, n, H, qkv, 3));
    add_bias_(b->q, b->q_dim, &L->bq, n, b->q_dim);
    add_bias_(kc + pos * b->kv_dim, b->kv_dim, &L->bk, n, b->kv_dim);
    add_bias_(vc + pos * b->kv_dim, b->kv_dim, &L->bv, n, b->kv_dim);
    attn_job aj = {b, L, kc, vc, pos, n};
    kiln_cpu_steal_init(b->ranges, b->n_threads, c->n_kv_heads);
    PROF(b, KILN_PROF_ATTN, kiln_cpu_pool_run(b->pool, attn_run_, &aj));
    mm_seg o = {&L->wo, b->tmp, H, H};
    PROF(b, KILN_PROF_O, matmul_segs_(b, b->att, n, b->q_dim, &o, 1));
    add_bias_(b->tmp, H, &L->bo, n, H);
    kiln_cpu_add_rmsnorm(b->xn, b->x, b->tmp, L->ffn_norm.data, L->ffn_norm.dtype, n, H, c->rms_norm_eps);
    /* gate and up share one prepared input; the job applies SwiGLU to its own rows */
    b->kern->prep_x(b->xp, b->xn, n, H, L->w_gate.dtype);
    if (L->w_up.dtype != L->w_gate.dtype) {
      /* mixed dtypes: not fused (never seen in real checkpoints, kept correct) */
      mm_seg g = {&L->w_gate, b->gate, b->inter, b->inter}, u = {&L->w_up, b->up, b->inter, b->inter};
      matmul_segs_(b, b->xn, n, H, &g, 1);
      matmul_segs_(b, b->xn, n, H, &u, 1);
      for (int64_t t = 0; t < n; t++) kiln_cpu_swiglu(b->gate + t * b->inter, b->gate + t * b->inter, b->up + t * b->inter, b->inter);
    } else {
      ffn_job fj = {b, L, n, chunk_rows_(H, L->w_gate.dtype)};
      kiln_cpu_steal_init(b->ranges, b->n_threads, (b->inter + fj.chunk - 1) / fj.chunk);
      PROF(b, KILN_PROF_GATE_UP, kiln_cpu_pool_run(b->pool, ffn_run_, &fj));
    }
    mm_seg d = {&L->w_down, b->tmp, H, H};
    PROF(b, KILN_PROF_DOWN, matmul_segs_(b, b->gate, n, b->inter, &d, 1));
    const kiln_tensor *next_norm = l + 1 < c->n_layers ? &m->layers[l + 1].attn_norm : &m->final_norm;
    kiln_cpu_add_rmsnorm(b->xn, b->x, b->tmp, next_norm->data, next_norm->dtype, n, H, c->rms_norm_eps);
  }
  if (logits && l0 < n) {
    /* b->xn holds the final norm of every row; the head reads rows l0..n-1 */
    const kiln_tensor *head = m->lm_head.data ? &m->lm_head : &m->embed;
    mm_seg s = {head, logits, b->vocab, b->vocab};
    PROF(b, KILN_PROF_HEAD, matmul_segs_(b, b->xn + l0 * H, n - l0, H, &s, 1));
  }
}

static int cpu_forward_(kiln_backend *b, int seq, int pos, const int32_t *tokens, int n, float *logits,
                        bool all_logits) {
  const double t0 = b->prof ? kiln_mono_ms() : 0;
  for (int c0 = 0; c0 < n; c0 += KILN_CPU_MAX_BATCH) {
    const int cn = n - c0 < KILN_CPU_MAX_BATCH ? n - c0 : KILN_CPU_MAX_BATCH;
    const bool last = c0 + cn == n;
    float *lg = NULL;
    int64_t l0 = cn;
    if (logits && all_logits) {
      lg = logits + (int64_t)c0 * b->vocab;
      l0 = 0;
    } else if (logits && last) {
      lg = logits;
      l0 = cn - 1;
    }
    forward_chunk_(b, seq, (int64_t)pos + c0, tokens + c0, cn, lg, l0);
  }
  if (b->prof) {
    b->prof_total_ms += kiln_mono_ms() - t0;
    b->prof_tokens += n;
    b->prof_calls++;
  }
  return KILN_OK;
}

/* ---- create / destroy ---- */

static void cpu_destroy_(kiln_backend *b) {
  if (!b) return;
  if (b->prof && b->prof_calls) {
    double parts = 0;
    fprintf(stderr, "kiln cpu profile: %lld calls, %lld tokens, %.1f ms:", (long long)b->prof_calls,
            (long long)b->prof_tokens, b->prof_total_ms);
    for (int i = 0; i < KILN_PROF_N; i++) {
      fprintf(stderr, " %s %.1f%%", prof_names_[i], 100 * b->prof_ms[i] / b->prof_total_ms);
      parts += b->prof_ms[i];
    }
    fprintf(stderr, " rest %.1f%%\n", 100 * (b->prof_total_ms - parts) / b->prof_total_ms);
  }
  kiln_cpu_pool_free(b->pool);
  free(b->kcache);
  free(b->vcache);
  free(b->inv_freq);
  free(b->rope_cs);
  free(b->pos);
  free(b->x);
  free(b->xn);
  free(b->xp);
  free(b->q);
  free(b->att);
  free(b->gate);
  free(b->up);
  free(b->tmp);
  free(b->scores);
  free(b->ranges);
  free(b);
}

/* calloc of a * b * c floats, NULL on overflow. */
static float *alloc_f32_(int64_t a, int64_t bb, int64_t c) {
  if (a <= 0 || bb <= 0 || c <= 0) return calloc(1, sizeof(float));
  if (a > INT64_MAX / bb || a * bb > INT64_MAX / c || a * bb * c > (int64_t)(SIZE_MAX / sizeof(float))) return NULL;
  return calloc((size_t)(a * bb * c), sizeof(float));
}

static int cpu_create_(kiln_backend **out, const kiln_model *m, const kiln_engine_opts *opts, int device_index) {
  (void)device_index;
  *out = NULL;
  const kiln_config *c = &m->cfg;
  if (c->head_dim <= 0 || c->head_dim % 2 || c->n_kv_heads <= 0 || c->n_heads % c->n_kv_heads ||
      c->head_dim > KILN_REF_MAX_HEAD_DIM)
    return kiln_error(KILN_EUNSUPPORTED, "cpu: unsupported attention shape (%d heads, %d kv heads, head_dim %d)",
                      c->n_heads, c->n_kv_heads, c->head_dim);
  kiln_backend *b = calloc(1, sizeof *b);
  if (!b) return kiln_error(KILN_ENOMEM, "cpu: out of memory");
  b->m = m;
  b->cfg = c;
  b->kern = kiln_cpu_kernels_best();
  b->n_ctx = opts->n_ctx;
  b->n_seqs = opts->n_seqs;
  b->n_threads = opts->n_threads;
  if (b->n_threads <= 0) {
    long nc = sysconf(_SC_NPROCESSORS_ONLN);
    b->n_threads = nc > 0 ? (int)nc : 1;
  }
  b->hidden = c->hidden_size;
  b->inter = c->intermediate_size;
  b->vocab = c->vocab_size;
  b->hd = c->head_dim;
  b->q_dim = (int64_t)c->n_heads * c->head_dim;
  b->kv_dim = (int64_t)c->n_kv_heads * c->head_dim;
  b->max_in = b->hidden;
  if (b->inter > b->max_in) b->max_in = b->inter;
  if (b->q_dim > b->max_in) b->max_in = b->q_dim;
  b->attn_scale = (float)(1.0 / sqrt((double)c->head_dim));
  const int64_t B = KILN_CPU_MAX_BATCH;
  int rc = kiln_cpu_pool_create(&b->pool, b->n_threads);
  if (rc) goto fail;
  b->kcache = alloc_f32_((int64_t)b->n_seqs * c->n_layers, b->n_ctx, b->kv_dim);
  b->vcache = alloc_f32_((int64_t)b->n_seqs * c->n_layers, b->n_ctx, b->kv_dim);
  b->inv_freq = alloc_f32_(1, 1, b->hd / 2);
  b->rope_cs = alloc_f32_(B, 1, b->hd);
  b->pos = calloc((size_t)B, sizeof *b->pos);
  b->x = alloc_f32_(B, 1, b->hidden);
  b->xn = alloc_f32_(B, 1, b->max_in);
  b->xp = alloc_f32_(B, 1, b->max_in);
  b->q = alloc_f32_(B, 1, b->q_dim);
  b->att = alloc_f32_(B, 1, b->q_dim);
  b->gate = alloc_f32_(B, 1, b->inter);
  b->up = alloc_f32_(B, 1, b->inter);
  b->tmp = alloc_f32_(B, 1, b->hidden);
  b->scores = alloc_f32_(b->n_threads, c->n_heads / c->n_kv_heads, b->n_ctx);
  b->ranges = aligned_alloc(64, sizeof(kiln_cpu_steal) * (size_t)b->n_threads);
  if (!b->kcache || !b->vcache || !b->inv_freq || !b->rope_cs || !b->pos || !b->x || !b->xn || !b->xp || !b->q ||
      !b->att || !b->gate || !b->up || !b->tmp || !b->scores || !b->ranges) {
    rc = kiln_error(KILN_ENOMEM, "cpu: out of memory for a KV cache of %d x %d tokens", b->n_seqs, b->n_ctx);
    goto fail;
  }
  kiln_ref_rope_inv_freq(b->inv_freq, c);
  snprintf(b->desc, sizeof b->desc, "cpu (%d threads, %s)", b->n_threads, b->kern->name);
  const char *prof = getenv("KILN_CPU_PROFILE");
  b->prof = prof && *prof && strcmp(prof, "0") != 0;
  *out = b;
  return KILN_OK;
fail:
  cpu_destroy_(b);
  return rc;
}

static const char *cpu_describe_(kiln_backend *b) { return b->desc; }

/* Weights read in place, as the checkpoint stores them; the KV cache is f32. */
static int64_t cpu_step_bytes_(kiln_backend *b, int pos) {
  int64_t mat, vec;
  kiln_backend_step_elems(b->cfg, &mat, &vec);
  return mat * (int64_t)kiln_dtype_size(b->m->embed.dtype) + vec * (int64_t)kiln_dtype_size(b->m->final_norm.dtype) +
         kiln_backend_kv_elems(b->cfg, pos) * (int64_t)sizeof(float);
}

const kiln_backend_vtbl kiln_backend_cpu = {
    .name = "cpu",
    .create = cpu_create_,
    .destroy = cpu_destroy_,
    .forward = cpu_forward_,
    .decode_sample = NULL,
    .describe = cpu_describe_,
    .step_bytes = cpu_step_bytes_,
    .copy_bandwidth = NULL, /* host memory: the caller measures it */
};
