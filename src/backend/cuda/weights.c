/*
 * backend/cuda/weights.c: uploading a checkpoint's weights to the device.
 *
 * Matrices become bf16 and vectors (norms, biases) f32, converted on the host into one of two pinned staging
 * buffers while the other is being copied (an event per buffer says when it may be refilled). The q, k and v
 * projections are written one after the other into one matrix, and the gate and up projections row by row into
 * one interleaved matrix, so that a decode step reads each fused matrix in one pass.
 */
#include <string.h>

#include "backend/cuda/cuda_impl.h"
#include "kiln/half.h"

#define STAGE_BYTES ((size_t)16 << 20)

typedef struct stager {
  uint8_t *buf[2];
  cudaEvent_t ev[2];
  int cur;
  cudaStream_t st;
} stager;

static int stager_open(stager *s, cudaStream_t st) {
  memset(s, 0, sizeof *s);
  s->st = st;
  for (int i = 0; i < 2; i++) {
    KILN_CUDA_CHECK(cudaMallocHost((void **)&s->buf[i], STAGE_BYTES));
    KILN_CUDA_CHECK(cudaEventCreateWithFlags(&s->ev[i], cudaEventDisableTiming));
  }
  return 0;
}

static int stager_close(stager *s) {
  int rc = 0;
  if (s->st) rc = kiln_cuda__check(cudaStreamSynchronize(s->st), "cudaStreamSynchronize(st)", __FILE__, __LINE__);
  for (int i = 0; i < 2; i++) {
    if (s->ev[i]) (void)cudaEventDestroy(s->ev[i]);
    if (s->buf[i]) (void)cudaFreeHost(s->buf[i]);
  }
  memset(s, 0, sizeof *s);
  return rc;
}

/* The buffer to fill next (waits until its previous copy has finished). */
static int stager_get(stager *s, uint8_t **buf) {
  KILN_CUDA_CHECK(cudaEventSynchronize(s->ev[s->cur]));
  *buf = s->buf[s->cur];
  return 0;
}

static int stager_send(stager *s, void *dst, size_t bytes) {
  KILN_CUDA_CHECK(cudaMemcpyAsync(dst, s->buf[s->cur], bytes, cudaMemcpyHostToDevice, s->st));
  KILN_CUDA_CHECK(cudaEventRecord(s->ev[s->cur], s->st));
  s->cur ^= 1;
  return 0;
}

static void row_to_bf16(uint16_t *dst, const kiln_tensor *t, int64_t row, int64_t cols) {
  int64_t at = row * cols;
  switch (t->dtype) {
  case KILN_BF16: memcpy(dst, (const uint16_t *)t->data + at, (size_t)cols * 2); break;
  case KILN_F16:
    for (int64_t i = 0; i < cols; i++) dst[i] = kiln_f32_to_bf16(kiln_f16_to_f32(((const uint16_t *)t->data)[at + i]));
    break;
  default:
    for (int64_t i = 0; i < cols; i++) dst[i] = kiln_f32_to_bf16(((const float *)t->data)[at + i]);
    break;
  }
}

static float elem_f32(const kiln_tensor *t, int64_t i) {
  switch (t->dtype) {
  case KILN_BF16: return kiln_bf16_to_f32(((const uint16_t *)t->data)[i]);
  case KILN_F16: return kiln_f16_to_f32(((const uint16_t *)t->data)[i]);
  default: return ((const float *)t->data)[i];
  }
}

/* dst bf16 [rows * n_src][cols]: row r * n_src + s = srcs[s] row r (n_src == 1: a plain copy). */
static int upload_rows(stager *s, uint16_t *dst, const kiln_tensor *const *srcs, int n_src, int64_t rows,
                       int64_t cols) {
  size_t group = (size_t)n_src * (size_t)cols * 2;
  int64_t per = (int64_t)(STAGE_BYTES / group);
  if (per < 1) return kiln_error(KILN_EUNSUPPORTED, "cuda upload: rows of %lld values are too long", (long long)cols);
  for (int64_t r0 = 0; r0 < rows; r0 += per) {
    int64_t nr = rows - r0 < per ? rows - r0 : per;
    uint8_t *buf = NULL;
    int rc = stager_get(s, &buf);
    if (rc) return rc;
    uint16_t *o = (uint16_t *)buf;
    for (int64_t r = 0; r < nr; r++)
      for (int k = 0; k < n_src; k++, o += cols) row_to_bf16(o, srcs[k], r0 + r, cols);
    if ((rc = stager_send(s, dst + r0 * n_src * cols, (size_t)nr * group))) return rc;
  }
  return 0;
}

/* dst f32 [n] from a vector of any dtype. */
static int upload_vec(stager *s, float *dst, const kiln_tensor *t, int64_t n) {
  for (int64_t i0 = 0; i0 < n; i0 += (int64_t)(STAGE_BYTES / 4)) {
    int64_t k = n - i0 < (int64_t)(STAGE_BYTES / 4) ? n - i0 : (int64_t)(STAGE_BYTES / 4);
    uint8_t *buf = NULL;
    int rc = stager_get(s, &buf);
    if (rc) return rc;
    for (int64_t i = 0; i < k; i++) ((float *)buf)[i] = elem_f32(t, i0 + i);
    if ((rc = stager_send(s, dst + i0, (size_t)k * 4))) return rc;
  }
  return 0;
}

static int upload_layer(stager *s, const kiln_backend *b, const kiln_layer_weights *w, const kiln_cuda_layer *d) {
  const kiln_config *c = &b->cfg;
  const int64_t H = c->hidden_size, I = c->intermediate_size, hd = c->head_dim;
  const int64_t nq = (int64_t)c->n_heads * hd, nkv = (int64_t)c->n_kv_heads * hd;
  int rc;
  const kiln_tensor *q = &w->wq, *k = &w->wk, *v = &w->wv;
  if ((rc = upload_rows(s, d->wqkv, &q, 1, nq, H))) return rc;
  if ((rc = upload_rows(s, d->wqkv + nq * H, &k, 1, nkv, H))) return rc;
  if ((rc = upload_rows(s, d->wqkv + (nq + nkv) * H, &v, 1, nkv, H))) return rc;
  if (d->bqkv && !(w->bq.data && w->bk.data && w->bv.data))
    return kiln_error(KILN_EFORMAT, "cuda upload: attention_bias is set but a q/k/v bias is missing");
  if (d->bqkv) {
    if ((rc = upload_vec(s, d->bqkv, &w->bq, nq))) return rc;
    if ((rc = upload_vec(s, d->bqkv + nq, &w->bk, nkv))) return rc;
    if ((rc = upload_vec(s, d->bqkv + nq + nkv, &w->bv, nkv))) return rc;
  }
  const kiln_tensor *o = &w->wo, *gu[2] = {&w->w_gate, &w->w_up}, *down = &w->w_down;
  if ((rc = upload_rows(s, d->wo, &o, 1, H, nq))) return rc;
  if (d->bo) {
    if (w->bo.data) {
      if ((rc = upload_vec(s, d->bo, &w->bo, H))) return rc;
    } else {
      KILN_CUDA_CHECK(cudaMemsetAsync(d->bo, 0, (size_t)H * 4, s->st));
    }
  }
  if ((rc = upload_rows(s, d->wgu, gu, 2, I, H))) return rc;
  if ((rc = upload_rows(s, d->wdown, &down, 1, H, I))) return rc;
  if ((rc = upload_vec(s, d->attn_norm, &w->attn_norm, H))) return rc;
  if ((rc = upload_vec(s, d->ffn_norm, &w->ffn_norm, H))) return rc;
  if (d->q_norm) {
    if ((rc = upload_vec(s, d->q_norm, &w->q_norm, hd))) return rc;
    if ((rc = upload_vec(s, d->k_norm, &w->k_norm, hd))) return rc;
  }
  return 0;
}

int kiln_cuda__upload(kiln_backend *b, const kiln_model *m) {
  const kiln_config *c = &b->cfg;
  stager s;
  int rc = stager_open(&s, b->stream);
  if (rc) {
    (void)stager_close(&s);
    return rc;
  }
  const kiln_tensor *emb = &m->embed, *head = &m->lm_head, *fn = &m->final_norm;
  if ((rc = upload_rows(&s, b->embed, &emb, 1, c->vocab_size, c->hidden_size))) goto out;
  if (b->lm_head != b->embed && (rc = upload_rows(&s, b->lm_head, &head, 1, c->vocab_size, c->hidden_size)))
    goto out;
  if ((rc = upload_vec(&s, b->final_norm, fn, c->hidden_size))) goto out;
  for (int l = 0; l < c->n_layers; l++)
    if ((rc = upload_layer(&s, b, &m->layers[l], &b->layers[l]))) goto out;
out:;
  int rc2 = stager_close(&s);
  return rc ? rc : rc2;
}
