/*
 * The engine (kiln/engine.h): a model bound to a backend, with per-sequence positions.
 *
 * The engine owns the argument checks (sequence index, token ids, context room) so backends can assume valid
 * input; it picks the backend from the device string and keeps the position of every sequence slot.
 */
#include "kiln/engine.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "kiln/status.h"

struct kiln_engine {
  const kiln_model *model;
  const kiln_backend_vtbl *vt;
  kiln_backend *be;
  int n_ctx, n_seqs;
  int *pos; /* [n_seqs] */
  char device[32];
};

/* Parses "cpu", "cuda" or "cuda:N" into a kind (0 cpu, 1 cuda) and N. */
static int parse_device_(const char *dev, int *kind, int *index) {
  *index = 0;
  if (strcmp(dev, "cpu") == 0) {
    *kind = 0;
    return KILN_OK;
  }
  if (strncmp(dev, "cuda", 4) == 0) {
    *kind = 1;
    if (dev[4] == '\0') return KILN_OK;
    if (dev[4] == ':' && dev[5] >= '0' && dev[5] <= '9') {
      char *end;
      errno = 0;
      long v = strtol(dev + 5, &end, 10);
      if (*end == '\0' && errno == 0 && v <= 4096) {
        *index = (int)v;
        return KILN_OK;
      }
    }
  }
  return kiln_error(KILN_EINVAL, "device '%s': expected cpu, cuda or cuda:N", dev);
}

int kiln_engine_create(kiln_engine **out, const kiln_model *model, const kiln_engine_opts *opts) {
  if (!out) return kiln_error(KILN_EINVAL, "engine: NULL output");
  *out = NULL;
  if (!model) return kiln_error(KILN_EINVAL, "engine: NULL model");
  kiln_engine_opts o = {0};
  if (opts) o = *opts;
  const kiln_config *c = &model->cfg;
  if (c->vocab_size <= 0 || c->hidden_size <= 0 || c->n_layers <= 0 || c->n_heads <= 0 || c->n_kv_heads <= 0 ||
      c->head_dim <= 0 || c->intermediate_size <= 0)
    return kiln_error(KILN_EINVAL, "engine: model has an empty dimension");
  if (o.n_ctx <= 0) {
    o.n_ctx = c->max_position_embeddings > 0 && c->max_position_embeddings < 4096 ? c->max_position_embeddings : 4096;
  }
  if (o.n_seqs <= 0) o.n_seqs = 1;

  int kind = 0, index = 0, rc;
  if (o.device) {
    if ((rc = parse_device_(o.device, &kind, &index))) return rc;
  } else {
#ifdef KILN_HAVE_CUDA
    kind = kiln_cuda_device_count() > 0 ? 1 : 0;
#endif
  }
  const kiln_backend_vtbl *vt = &kiln_backend_cpu;
  if (kind == 1) {
#ifdef KILN_HAVE_CUDA
    int count = kiln_cuda_device_count();
    if (index >= count)
      return kiln_error(KILN_EDEVICE, "device 'cuda:%d': %d CUDA device%s present", index, count,
                        count == 1 ? "" : "s");
    vt = &kiln_backend_cuda;
#else
    return kiln_error(KILN_EUNSUPPORTED, "device '%s': this build of kiln has no CUDA backend", o.device);
#endif
  }

  kiln_engine *e = calloc(1, sizeof *e);
  if (!e) return kiln_error(KILN_ENOMEM, "engine: out of memory");
  e->pos = calloc((size_t)o.n_seqs, sizeof *e->pos);
  if (!e->pos) {
    free(e);
    return kiln_error(KILN_ENOMEM, "engine: out of memory");
  }
  e->model = model;
  e->vt = vt;
  e->n_ctx = o.n_ctx;
  e->n_seqs = o.n_seqs;
  if (kind == 0) snprintf(e->device, sizeof e->device, "cpu");
  else snprintf(e->device, sizeof e->device, "cuda:%d", index);
  rc = vt->create(&e->be, model, &o, index);
  if (rc) {
    free(e->pos);
    free(e);
    return rc;
  }
  *out = e;
  return KILN_OK;
}

void kiln_engine_free(kiln_engine *e) {
  if (!e) return;
  if (e->be) e->vt->destroy(e->be);
  free(e->pos);
  free(e);
}

const kiln_model *kiln_engine_model(const kiln_engine *e) { return e->model; }
const char *kiln_engine_device(const kiln_engine *e) { return e->device; }
int kiln_engine_n_ctx(const kiln_engine *e) { return e->n_ctx; }
int kiln_engine_n_seqs(const kiln_engine *e) { return e->n_seqs; }

int kiln_engine_seq_reset(kiln_engine *e, int seq) {
  if (!e || seq < 0 || seq >= e->n_seqs) return kiln_error(KILN_ERANGE, "engine: sequence %d out of range", seq);
  e->pos[seq] = 0;
  return KILN_OK;
}

int kiln_engine_seq_pos(const kiln_engine *e, int seq) {
  if (!e || seq < 0 || seq >= e->n_seqs) return kiln_error(KILN_ERANGE, "engine: sequence %d out of range", seq);
  return e->pos[seq];
}

int kiln_engine_forward(kiln_engine *e, int seq, const int32_t *tokens, int n, float *logits, bool all_logits) {
  if (!e) return kiln_error(KILN_EINVAL, "engine: NULL engine");
  if (seq < 0 || seq >= e->n_seqs) return kiln_error(KILN_ERANGE, "engine: sequence %d out of range", seq);
  if (n <= 0 || !tokens) return kiln_error(KILN_EINVAL, "engine: forward of %d tokens", n);
  const int vocab = e->model->cfg.vocab_size;
  for (int i = 0; i < n; i++)
    if (tokens[i] < 0 || tokens[i] >= vocab)
      return kiln_error(KILN_ERANGE, "engine: token id %d out of range [0, %d)", tokens[i], vocab);
  if (n > e->n_ctx - e->pos[seq])
    return kiln_error(KILN_ECONTEXT, "engine: %d tokens after %d do not fit the context of %d", n, e->pos[seq],
                      e->n_ctx);
  int rc = e->vt->forward(e->be, seq, e->pos[seq], tokens, n, logits, all_logits);
  if (rc) return rc;
  e->pos[seq] += n;
  return KILN_OK;
}

/* ---- internal, for the generation loop (src/engine/engine_impl.h) ---- */

#include "engine/engine_impl.h"

int kiln__engine_decode_sample(kiln_engine *e, int seq, int32_t token, const kiln_sampling *s, uint64_t step,
                               int32_t *next) {
  if (!e->vt->decode_sample) return KILN_EUNSUPPORTED;
  if (e->pos[seq] >= e->n_ctx)
    return kiln_error(KILN_ECONTEXT, "engine: sequence %d is full (%d tokens)", seq, e->n_ctx);
  if (token < 0 || token >= e->model->cfg.vocab_size)
    return kiln_error(KILN_ERANGE, "engine: token id %d out of range", token);
  int rc = e->vt->decode_sample(e->be, seq, e->pos[seq], token, s, step, next);
  if (rc) return rc;
  e->pos[seq]++;
  return KILN_OK;
}

bool kiln__engine_has_decode_sample(const kiln_engine *e) { return e->vt->decode_sample != NULL; }

const char *kiln__engine_describe(const kiln_engine *e) { return e->vt->describe(e->be); }

int64_t kiln__engine_step_bytes(const kiln_engine *e, int pos) { return e->vt->step_bytes(e->be, pos); }

int kiln__engine_copy_bandwidth(kiln_engine *e, double *bytes_per_s) {
  if (!e->vt->copy_bandwidth) return KILN_EUNSUPPORTED;
  return e->vt->copy_bandwidth(e->be, bytes_per_s);
}
