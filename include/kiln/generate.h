/*
 * kiln/generate.h: the generation loop, step by step, shared by the CLI, the server and the bindings.
 *
 * A kiln_gen holds one sequence of an engine: its prompt, sampler, stop conditions and the text not yet released.
 * Each kiln_gen_step() runs one forward pass (the first runs the prefill) and reports what became final: the
 * token, and the text that can be shown (never a partial UTF-8 character, never a prefix that may still grow into
 * a stop string). Several kiln_gen on one engine (different sequence slots) can be stepped in turn.
 */
#ifndef KILN_GENERATE_H
#define KILN_GENERATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kiln/engine.h"
#include "kiln/sampler.h"
#include "kiln/tokenizer.h"

#ifdef __cplusplus
extern "C" {
#endif

#define KILN_MAX_STOP 8
#define KILN_MAX_TOP_LOGPROBS 20

typedef enum kiln_finish {
  KILN_FINISH_NONE = 0,   /* still running */
  KILN_FINISH_STOP = 1,   /* EOS or a stop string */
  KILN_FINISH_LENGTH = 2, /* max_tokens or the context is full */
} kiln_finish;

typedef struct kiln_gen_params {
  kiln_sampling sampling;
  int max_tokens;          /* <= 0: until EOS or the context is full */
  bool ignore_eos;
  const char *stop[KILN_MAX_STOP]; /* stop strings (not included in the text) */
  int n_stop;
  int top_logprobs;        /* 0..KILN_MAX_TOP_LOGPROBS alternatives reported per token; -1: no logprobs at all */
} kiln_gen_params;

kiln_gen_params kiln_gen_params_default(void);

typedef struct kiln_gen_event {
  int32_t token;           /* the token this step chose (-1 when the step chose none) */
  float logprob;           /* its log-probability under the unfiltered, untempered distribution */
  int n_top;
  int32_t top_ids[KILN_MAX_TOP_LOGPROBS];
  float top_logprobs[KILN_MAX_TOP_LOGPROBS];
  const char *text;        /* text released by this step (valid until the next step); may be empty */
  size_t text_len;
  kiln_finish finish;      /* set on the last step */
} kiln_gen_event;

typedef struct kiln_gen kiln_gen;

/* Starts a generation in sequence slot `seq` of the engine (its KV cache is reset). KILN_ECONTEXT when the prompt
 * does not fit the context. */
int kiln_gen_start(kiln_gen **out, kiln_engine *e, const kiln_tokenizer *tok, int seq, const int32_t *prompt,
                   int n_prompt, const kiln_gen_params *params);
/* One step. After the step that reports finish != NONE, further calls return KILN_ECLOSED. */
int kiln_gen_step(kiln_gen *g, kiln_gen_event *ev);
void kiln_gen_free(kiln_gen *g);

/* Statistics so far. */
typedef struct kiln_gen_stats {
  int prompt_tokens, completion_tokens;
  double ttft_ms;          /* start to first token */
  double decode_ms;        /* first token to last token */
} kiln_gen_stats;
void kiln_gen_get_stats(const kiln_gen *g, kiln_gen_stats *st);
/* The generated ids so far. */
const int32_t *kiln_gen_ids(const kiln_gen *g, int *n);

#ifdef __cplusplus
}
#endif
#endif /* KILN_GENERATE_H */
