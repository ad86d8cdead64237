/*
 * bench/peers/llama_greedy.c: llama.cpp's greedy continuation of token ids, to check that a GGUF file from
 * gguf_export is the model kiln runs (llama_cpp.sh check). Built by llama_cpp.sh against llama.cpp's own headers
 * and libraries (not part of kiln's build).
 *
 *   llama_greedy MODEL.gguf N ID,ID,...    prints {"ids": [N greedy ids], "logits": [the logits after the prompt]}
 *
 * Runs on every device llama.cpp finds (the GPU when there is one; all layers offloaded, flash attention on).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ggml-backend.h"
#include "llama.h"

static void quiet_(enum ggml_log_level level, const char *text, void *user) {
  (void)user;
  if (level >= GGML_LOG_LEVEL_ERROR) fputs(text, stderr);
}
static bool no_progress_(float p, void *user) {
  (void)p, (void)user;
  return true;
}

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: llama_greedy MODEL.gguf N ID,ID,...\n");
    return 1;
  }
  const int n_gen = atoi(argv[2]);
  llama_token prompt[4096];
  int n = 0;
  for (char *s = argv[3], *e; *s && n < 4096; s = *e ? e + 1 : e) {
    prompt[n++] = (llama_token)strtol(s, &e, 10);
    if (e == s) {
      fprintf(stderr, "llama_greedy: bad id list\n");
      return 1;
    }
  }
  llama_log_set(quiet_, NULL);
  /* backends built as loadable modules (a prebuilt llama.cpp) sit in the folder LLAMA_BACKENDS names */
  const char *bdir = getenv("LLAMA_BACKENDS");
  if (bdir && *bdir)
    ggml_backend_load_all_from_path(bdir);
  else
    ggml_backend_load_all();
  llama_backend_init();
  struct llama_model_params mp = llama_model_default_params();
  mp.n_gpu_layers = 999;
  mp.progress_callback = no_progress_;
  struct llama_model *model = llama_model_load_from_file(argv[1], mp);
  if (!model) {
    fprintf(stderr, "llama_greedy: cannot load %s\n", argv[1]);
    return 1;
  }
  struct llama_context_params cp = llama_context_default_params();
  cp.n_ctx = (uint32_t)(n + n_gen + 16);
  cp.n_batch = cp.n_ubatch = (uint32_t)(n < 512 ? 512 : n);
  cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_ENABLED;
  struct llama_context *ctx = llama_init_from_model(model, cp);
  const int n_vocab = llama_vocab_n_tokens(llama_model_get_vocab(model));
  if (!ctx || n_vocab <= 0) {
    fprintf(stderr, "llama_greedy: cannot create a context\n");
    return 1;
  }
  float *first = malloc((size_t)n_vocab * sizeof *first); /* the logits after the prompt */
  if (!first) {
    fprintf(stderr, "llama_greedy: out of memory\n");
    return 1;
  }
  printf("{\"ids\": [");
  llama_token tok = 0;
  for (int i = 0; i <= n_gen; i++) {
    struct llama_batch b = i == 0 ? llama_batch_get_one(prompt, n) : llama_batch_get_one(&tok, 1);
    if (llama_decode(ctx, b)) {
      fprintf(stderr, "llama_greedy: llama_decode failed at step %d\n", i);
      return 1;
    }
    const float *lg = llama_get_logits_ith(ctx, -1);
    if (i == 0) memcpy(first, lg, (size_t)n_vocab * sizeof *first);
    if (i == n_gen) break;
    int best = 0;
    for (int v = 1; v < n_vocab; v++)
      if (lg[v] > lg[best]) best = v;
    tok = best;
    printf(i ? ", %d" : "%d", best);
  }
  printf("], \"logits\": [");
  for (int v = 0; v < n_vocab; v++) printf(v ? ", %.7g" : "%.7g", first[v]);
  printf("]}\n");
  free(first);
  llama_free(ctx);
  llama_model_free(model);
  llama_backend_free();
  return 0;
}
