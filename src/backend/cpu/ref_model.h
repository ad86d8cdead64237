/*
 * backend/cpu/ref_model.h (internal): the whole forward pass written with the reference ops only, one token row
 * after another as Hugging Face computes it. Slow and plain: it is what the fast CPU backend and the CUDA backend
 * are checked against, model by model, besides the Hugging Face data itself.
 */
#ifndef KILN_REF_MODEL_H
#define KILN_REF_MODEL_H

#include <stdint.h>

#include "kiln/model.h"

#ifdef __cplusplus
extern "C" {
#endif

/* logits[n][vocab] of tokens[0..n) at positions 0..n-1, from an empty cache. Allocates its own cache and scratch;
 * KILN_ENOMEM, or KILN_EINVAL for a token out of range or an unsupported shape. */
int kiln_ref_model_forward(const kiln_model *m, const int32_t *tokens, int64_t n, float *logits);

#ifdef __cplusplus
}
#endif
#endif /* KILN_REF_MODEL_H */
