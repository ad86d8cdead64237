/*
 * kiln/sampler.h: choosing the next token from logits.
 *
 * Order of application (as in Hugging Face's logits processors for generate()): repetition penalty, presence and
 * frequency penalties over the tokens generated so far, temperature, top-k, top-p, min-p, then a draw from the
 * softmax with the sampler's own generator. temperature == 0 is greedy (argmax, lowest id on ties). The same seed
 * and inputs give the same tokens on every run and platform.
 */
#ifndef KILN_SAMPLER_H
#define KILN_SAMPLER_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct kiln_sampling {
  float temperature;        /* 0: greedy */
  int top_k;                /* <= 0: off */
  float top_p;              /* >= 1: off */
  float min_p;              /* <= 0: off */
  float repetition_penalty; /* 1: off (HF: divide positive logits, multiply negative ones) */
  float presence_penalty;   /* 0: off (OpenAI: subtract once per seen token) */
  float frequency_penalty;  /* 0: off (OpenAI: subtract per occurrence) */
  uint64_t seed;
} kiln_sampling;

/* Greedy, all filters off. */
kiln_sampling kiln_sampling_default(void);

typedef struct kiln_sampler kiln_sampler;

int kiln_sampler_create(kiln_sampler **out, const kiln_sampling *params, int n_vocab);
void kiln_sampler_free(kiln_sampler *s);
/* Chooses a token from `logits` [n_vocab] (modified in place). Records it for the penalties. */
int32_t kiln_sampler_sample(kiln_sampler *s, float *logits);
/* Records a token as seen (prompt tokens for the repetition penalty, or tokens chosen elsewhere). */
void kiln_sampler_accept(kiln_sampler *s, int32_t token);

#ifdef __cplusplus
}
#endif
#endif /* KILN_SAMPLER_H */
