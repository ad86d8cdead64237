/*
 * Perplexity and bits per byte (kiln/eval.h). Each window runs as prefill chunks of KILN_EVAL_CHUNK tokens with
 * the logits of every position, so memory stays at KILN_EVAL_CHUNK x vocab floats whatever the window size.
 */
#include "kiln/eval.h"

#include <math.h>
#include <stdlib.h>

#include "kiln/status.h"

#define KILN_EVAL_CHUNK 64

int kiln_eval_perplexity(kiln_engine *e, const kiln_tokenizer *tok, const int32_t *ids, size_t n_ids, int ctx,
                         int max_windows, kiln_ppl *out) {
  if (!e || !out || (!ids && n_ids)) return kiln_error(KILN_EINVAL, "perplexity: NULL argument");
  out->tokens = out->bytes = 0;
  out->nll = out->ppl = out->bpb = NAN;
  if (ctx <= 0) ctx = kiln_engine_n_ctx(e);
  if (ctx > kiln_engine_n_ctx(e))
    return kiln_error(KILN_ECONTEXT, "perplexity: window of %d tokens exceeds the context of %d", ctx,
                      kiln_engine_n_ctx(e));
  if (n_ids < 2) return kiln_error(KILN_EINVAL, "perplexity: %zu tokens: nothing to predict", n_ids);
  if (ctx < 2) return kiln_error(KILN_EINVAL, "perplexity: window of %d tokens: nothing to predict", ctx);
  size_t win = (size_t)ctx, n_win = n_ids / win;
  if (n_win == 0) {
    win = n_ids;
    n_win = 1;
  }
  if (max_windows > 0 && (size_t)max_windows < n_win) n_win = (size_t)max_windows;
  const int V = kiln_engine_model(e)->cfg.vocab_size;
  float *logits = malloc((size_t)KILN_EVAL_CHUNK * (size_t)V * sizeof *logits);
  if (!logits) return kiln_error(KILN_ENOMEM, "perplexity: out of memory");
  double nll = 0;
  int64_t tokens = 0, bytes = 0;
  int rc = KILN_OK;
  for (size_t w = 0; w < n_win && rc == KILN_OK; w++) {
    const int32_t *wi = ids + w * win;
    if ((rc = kiln_engine_seq_reset(e, 0))) break;
    for (size_t c0 = 0; c0 + 1 < win; c0 += KILN_EVAL_CHUNK) {
      /* the logits at positions c0..c1-1 predict tokens c0+1..c1; the last position predicts nothing */
      size_t c1 = c0 + KILN_EVAL_CHUNK < win - 1 ? c0 + KILN_EVAL_CHUNK : win - 1;
      if ((rc = kiln_engine_forward(e, 0, wi + c0, (int)(c1 - c0), logits, true))) break;
      for (size_t p = c0; p < c1; p++) {
        const float *x = logits + (p - c0) * (size_t)V;
        float mx = x[0];
        for (int i = 1; i < V; i++) mx = x[i] > mx ? x[i] : mx;
        double sum = 0;
        for (int i = 0; i < V; i++) sum += exp((double)x[i] - mx);
        const int32_t target = wi[p + 1];
        nll += (double)mx + log(sum) - (double)x[target];
        tokens++;
        if (tok) {
          const char *b;
          size_t len;
          if ((rc = kiln_tokenizer_token_bytes(tok, target, &b, &len))) break;
          bytes += (int64_t)len;
        }
      }
      if (rc) break;
    }
  }
  free(logits);
  if (rc) return rc;
  out->tokens = tokens;
  out->bytes = bytes;
  out->nll = nll / (double)tokens;
  out->ppl = exp(out->nll);
  out->bpb = tok && bytes > 0 ? nll / log(2.0) / (double)bytes : NAN;
  return KILN_OK;
}
