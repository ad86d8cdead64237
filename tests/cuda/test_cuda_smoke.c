/*
 * tests/cuda/test_cuda_smoke.c: one short generation on each tiny checkpoint through every CUDA path (prefill with
 * all logits, decode graph with logits, device greedy and seeded sampling). Fast, so that compute-sanitizer
 * (memcheck, racecheck) can run it: scripts/gpu-test.sh does.
 */
#include "cuda/gpu_test.h"
#include "kiln/kiln.h"

/* The folder of a tiny test checkpoint. */
static void tiny_dir(char *dir, size_t n, const char *name) {
  const char *src = getenv("KILN_SOURCE_DIR");
  snprintf(dir, n, "%s/tests/data/tiny/%s", src ? src : ".", name);
}

static void run(const char *name) {
  char dir[1024];
  tiny_dir(dir, sizeof dir, name);
  kiln_model *m = NULL;
  kiln_engine *e = NULL;
  GT_OK(kiln_model_load(&m, dir, NULL, NULL));
  kiln_engine_opts o = {.device = "cuda", .n_ctx = 128, .n_seqs = 1};
  if (m) GT_OK(kiln_engine_create(&e, m, &o));
  if (!e) {
    kiln_model_free(m);
    return;
  }
  const int V = m->cfg.vocab_size, n = 70;
  int32_t ids[70];
  for (int i = 0; i < n; i++) ids[i] = (i * 131 + 7) % V;
  float *lg = malloc(sizeof(float) * (size_t)n * V);
  GT_OK(kiln_engine_forward(e, 0, ids, n, lg, true));
  int bad = 0;
  for (int64_t i = 0; i < (int64_t)n * V; i++) bad += !isfinite(lg[i]);
  GT_CHECK(bad == 0, "%s: %d non-finite logits", name, bad);
  GT_OK(kiln_engine_forward(e, 0, ids, 1, lg, false));
  for (int k = 0; k < 2; k++) {
    kiln_gen_params p = kiln_gen_params_default();
    p.ignore_eos = true;
    p.max_tokens = 12;
    if (k) p.sampling.temperature = 0.8f, p.sampling.top_p = 0.9f, p.sampling.top_k = 20, p.sampling.seed = 9;
    kiln_gen *g = NULL;
    GT_OK(kiln_gen_start(&g, e, NULL, 0, ids, 9, &p));
    kiln_gen_event ev = {0};
    int steps = 0;
    while (g && steps < 100) {
      int rc = kiln_gen_step(g, &ev);
      GT_CHECK(rc == 0, "%s: gen step: %s", name, kiln_last_error());
      steps++;
      if (rc || ev.finish != KILN_FINISH_NONE) break;
    }
    int got = 0;
    if (g) (void)kiln_gen_ids(g, &got);
    GT_CHECK(got == 12, "%s: generated %d tokens, wanted 12", name, got);
    kiln_gen_free(g);
  }
  free(lg);
  kiln_engine_free(e);
  kiln_model_free(m);
}

/* An unknown value of a decode-path variable is refused at create with a one-line error naming it. */
static void bad_env(const char *var, const char *value) {
  char dir[1024];
  tiny_dir(dir, sizeof dir, "qwen3-f32");
  const char *was = getenv(var);
  char *keep = was ? strdup(was) : NULL;
  kiln_model *m = NULL;
  kiln_engine *e = NULL;
  GT_OK(kiln_model_load(&m, dir, NULL, NULL));
  setenv(var, value, 1);
  kiln_engine_opts o = {.device = "cuda", .n_ctx = 128, .n_seqs = 1};
  int rc = m ? kiln_engine_create(&e, m, &o) : KILN_EINVAL;
  GT_CHECK(rc == KILN_EINVAL && !e, "%s=%s: create returned %d, wanted KILN_EINVAL", var, value, rc);
  GT_CHECK(strstr(kiln_last_error(), var) != NULL, "%s=%s: error \"%s\" does not name the variable", var, value,
           kiln_last_error());
  if (keep) setenv(var, keep, 1);
  else unsetenv(var);
  free(keep);
  kiln_engine_free(e);
  kiln_model_free(m);
}

int main(void) {
  gt_skip_without_gpu();
  run("qwen3-f32");
  run("llama-bf16");
  bad_env("KILN_CUDA_DECODE", "fast");
  bad_env("KILN_CUDA_ATTN_CLUSTER", "2");
  bad_env("KILN_CUDA_ATTN_L2PF", "o2");
  bad_env("KILN_CUDA_GEMV_L2NEXT", "-1");
  bad_env("KILN_CUDA_PREFILL_GRAPH", "2");
  bad_env("KILN_CUDA_PREFILL_PDL", "yes");
  bad_env("KILN_CUDA_CARVEOUT", "101");
  bad_env("KILN_CUDA_CARVEOUT", "50%");
  bad_env("KILN_CUDA_ATTN_RELAXED", "yes");
  bad_env("KILN_CUDA_ATTN_THREADS", "192");
  bad_env("KILN_CUDA_ATTN_GROUP", "3");
  bad_env("KILN_CUDA_ROPE_VEC", "2");
  bad_env("KILN_CUDA_ROPE_HEADS", "3");
  bad_env("KILN_CUDA_ATTN_PF_SPLIT", "9");
  bad_env("KILN_CUDA_ATTN_PF_MMA", "tf32");
  bad_env("KILN_CUDA_GEMV_GU_BLOCKS", "9");
  bad_env("KILN_CUDA_GEMV_SPLIT", "3");
  bad_env("KILN_CUDA_ATTN_L2PF_AT", "end");
  bad_env("KILN_CUDA_L2PF_SIDE", "all");
  bad_env("KILN_CUDA_GEMM_PLAN", "fast");
  return gt_finish("test_cuda_smoke");
}
