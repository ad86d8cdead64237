/*
 * rand_model.h (tests): small random-weight models built in memory, without the loader, for testing the engine
 * against the reference forward pass (any dtype, either architecture, biases, llama3 RoPE, tied or not).
 */
#ifndef KILN_TEST_RAND_MODEL_H
#define KILN_TEST_RAND_MODEL_H

#include <stdbool.h>
#include <stdint.h>

#include "kiln/model.h"

typedef struct rand_model_spec {
  kiln_arch arch;
  kiln_dtype dtype;
  int vocab, hidden, inter, layers, heads, kv_heads, head_dim, max_pos;
  bool tie, bias, qk_norm, llama3_rope;
  float std; /* weight standard deviation */
  uint64_t seed;
} rand_model_spec;

/* A Qwen3-like spec of the given dtype (head_dim != hidden/heads, GQA, qk norm, untied). */
rand_model_spec rand_model_qwen3(kiln_dtype dt);
/* A Llama-like spec (biases, llama3 RoPE, tied). */
rand_model_spec rand_model_llama(kiln_dtype dt);

int rand_model_create(kiln_model **out, const rand_model_spec *s);
void rand_model_free(kiln_model *m);

/* splitmix64-based generator shared by the tests. */
uint64_t rand_u64(uint64_t *state);
float rand_normal(uint64_t *state);
float rand_uniform(uint64_t *state); /* [0, 1) */

#endif
