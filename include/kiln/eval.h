/*
 * kiln/eval.h: evaluation of a model on a text: perplexity and bits per byte.
 *
 * kiln_eval_perplexity() follows the cross-team contract exactly, so `kiln perplexity`, the fidelity tests and the
 * Python references (tools/, model upcast to float32) compute the same numbers:
 *  - the ids are consecutive, non-overlapping windows ids[w*N .. (w+1)*N) of N = ctx tokens, full windows only
 *    (a text shorter than N is one window of all its tokens); max_windows > 0 keeps the first max_windows;
 *  - each window is evaluated alone from an empty KV cache (sequence slot 0 of the engine);
 *  - the predicted tokens are positions 1..len-1 of each window, from the logits at the previous position;
 *  - nll = mean over predicted tokens of -log_softmax(logits)[target] (natural log, accumulated in double);
 *    ppl = exp(nll); bpb = (total NLL / ln 2) / (total raw bytes of the predicted tokens).
 */
#ifndef KILN_EVAL_H
#define KILN_EVAL_H

#include <stddef.h>
#include <stdint.h>

#include "kiln/engine.h"
#include "kiln/tokenizer.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct kiln_ppl {
  int64_t tokens; /* predicted */
  int64_t bytes;  /* raw bytes of the predicted tokens */
  double nll, ppl, bpb;
} kiln_ppl;

/* ctx <= 0: the engine's context. KILN_ECONTEXT when ctx exceeds the engine's context; KILN_EINVAL when there is
 * nothing to predict (fewer than 2 ids). With tok == NULL the bytes are not counted and bpb is NaN. */
int kiln_eval_perplexity(kiln_engine *e, const kiln_tokenizer *tok, const int32_t *ids, size_t n_ids, int ctx,
                         int max_windows, kiln_ppl *out);

#ifdef __cplusplus
}
#endif
#endif /* KILN_EVAL_H */
