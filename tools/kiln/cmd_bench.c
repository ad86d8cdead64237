/*
 * kiln bench: prefill and decode speed, with the memory-bandwidth floor beside them (PERF.md).
 *
 * The model is a checkpoint (-m DIR) or random weights of a config.json (--random-weights FILE, --dtype). Each
 * repeat runs a prefill of --prompt-tokens tokens from an empty cache and --gen-tokens one-token decode steps
 * after it, greedy, as a user's generation runs: on a GPU the token is chosen on the device (one small read per
 * token), on the CPU the argmax is taken on the host.
 *
 * The floor. Before each block of KILN_BENCH_BLOCK decode steps the copy bandwidth is measured with the same
 * number of threads: memcpy of KILN_BENCH_COPY_MB_PER_THREAD MiB per thread (at least 512 MiB), counted as bytes
 * read + bytes written, as PERF.md defines it (glibc copies of 256 MiB or more per thread take its fastest path on
 * the build machine, ~1.5x the rate of 128 MiB ones: the floor is not made easy). On a shared machine whose
 * bandwidth moves from second to second, tokens and their floor are so measured within milliseconds of each
 * other. The step right after a copy runs untimed: it pays for waking the engine's threads after the copy's idle
 * time, which a generation never does. On a GPU (--device cuda) the copies are device-to-device copies of 1 GiB in
 * the GPU's memory instead, timed on the device. The floor of a token is the bytes it reads (every weight once as
 * the backend stores it, one row of the embedding table, and the KV cache of its context) divided by that
 * bandwidth; the fraction reported is the median over tokens of floor time / token time. The
 * fraction against the best copy of the whole run (conservative) is reported beside it, and the read-only
 * bandwidth (threads summing their slices) for context. Medians are printed, and written with the machine, load,
 * date and commit as JSON with --json FILE.
 */
#if defined(__x86_64__)
#include <immintrin.h>
#endif
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "cli_common.h"
#include "engine/engine_impl.h"

enum { OPT_RANDOM = CLI_OPT_LONG, OPT_DTYPE, OPT_DEVICE, OPT_PROMPT, OPT_CTX, OPT_GEN, OPT_JSON, OPT_REPEATS };

#define KILN_BENCH_COPY_MB_PER_THREAD 256
#define KILN_BENCH_BLOCK 8 /* decode steps per copy-bandwidth measurement */

static const cli_opt opts_[] = {
    {'m', "model", "DIR", "checkpoint directory"},
    {OPT_RANDOM, "random-weights", "CONFIG_JSON", "random weights of this config.json instead of a checkpoint"},
    {OPT_DTYPE, "dtype", "T", "dtype of the random weights: bf16 (default), f16 or f32"},
    {'t', "threads", "N", "CPU threads (default: $KILN_THREADS, else all cores)"},
    {OPT_DEVICE, "device", "D", "cpu, cuda or cuda:N (default: $KILN_DEVICE, else cuda when present)"},
    {OPT_PROMPT, "prompt-tokens", "P", "prompt lengths timed for prefill, e.g. 128,1024 (default 128)"},
    {OPT_CTX, "ctx", "C", "contexts the decode is timed at, e.g. 128,2048 (default: the first prompt length)"},
    {OPT_GEN, "gen-tokens", "G", "decode steps timed at each context (default 64)"},
    {OPT_REPEATS, "repeats", "R", "repeats; medians are reported (default 3)"},
    {OPT_JSON, "json", "FILE", "write the results as JSON to FILE (its commit: $KILN_COMMIT, else git HEAD)"},
    {'q', "quiet", NULL, "print only the summary line"},
    {0},
};

/* ---- copy bandwidth ---- */

typedef struct copy_go {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int go;
} copy_go;

typedef struct copy_arg {
  char *dst;
  const char *src;
  size_t len;
  copy_go *go;
} copy_arg;

static void *copy_main_(void *a) {
  copy_arg *c = a;
  pthread_mutex_lock(&c->go->mu);
  while (!c->go->go) pthread_cond_wait(&c->go->cv, &c->go->mu);
  pthread_mutex_unlock(&c->go->mu);
  memcpy(c->dst, c->src, c->len);
  return NULL;
}

/* Bytes read + written per second by `threads` threads each copying its own slice; < 0 on failure. */
static double copy_bandwidth_(char *dst, const char *src, size_t len, int threads) {
  pthread_t th[64];
  copy_arg ca[64];
  copy_go go = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0};
  if (threads > 64) threads = 64;
  size_t per = (len / (size_t)threads) & ~(size_t)4095;
  int started = 0;
  for (int i = 0; i < threads; i++) {
    ca[i] = (copy_arg){dst + (size_t)i * per, src + (size_t)i * per, per, &go};
    if (pthread_create(&th[i], NULL, copy_main_, &ca[i]) != 0) break;
    started++;
  }
  usleep(2000); /* let every thread reach its wait, so the start is not staggered by thread creation */
  pthread_mutex_lock(&go.mu);
  go.go = 1;
  double t0 = cli_now_ms();
  pthread_cond_broadcast(&go.cv);
  pthread_mutex_unlock(&go.mu);
  for (int i = 0; i < started; i++) pthread_join(th[i], NULL);
  double ms = cli_now_ms() - t0;
  if (started < threads) return -1;
  return 2.0 * (double)(per * (size_t)threads) / (ms / 1e3);
}

/* Bytes read per second by `threads` threads each summing its own slice (the read-only ceiling, for context:
 * decode reads its weights and writes almost nothing). */
typedef struct read_arg {
  const uint64_t *p;
  size_t n;
  uint64_t sum;
} read_arg;

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
__attribute__((target("avx2"))) static uint64_t sum_avx2_(const uint64_t *p, size_t n) {
  __m256i s0 = _mm256_setzero_si256(), s1 = s0, s2 = s0, s3 = s0;
  for (size_t i = 0; i + 16 <= n; i += 16) {
    s0 = _mm256_add_epi64(s0, _mm256_loadu_si256((const __m256i *)(p + i)));
    s1 = _mm256_add_epi64(s1, _mm256_loadu_si256((const __m256i *)(p + i + 4)));
    s2 = _mm256_add_epi64(s2, _mm256_loadu_si256((const __m256i *)(p + i + 8)));
    s3 = _mm256_add_epi64(s3, _mm256_loadu_si256((const __m256i *)(p + i + 12)));
  }
  uint64_t out[4];
  _mm256_storeu_si256((__m256i *)out, _mm256_add_epi64(_mm256_add_epi64(s0, s1), _mm256_add_epi64(s2, s3)));
  return out[0] + out[1] + out[2] + out[3];
}
#endif

static void *read_main_(void *a) {
  read_arg *r = a;
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  if (__builtin_cpu_supports("avx2")) {
    r->sum = sum_avx2_(r->p, r->n);
    return NULL;
  }
#endif
  uint64_t s[8] = {0};
  for (size_t i = 0; i + 8 <= r->n; i += 8)
    for (int k = 0; k < 8; k++) s[k] += r->p[i + k];
  r->sum = s[0] + s[1] + s[2] + s[3] + s[4] + s[5] + s[6] + s[7];
  return NULL;
}

static double read_bandwidth_(const char *src, size_t len, int threads) {
  pthread_t th[64];
  read_arg ra[64];
  if (threads > 64) threads = 64;
  size_t per = (len / (size_t)threads) & ~(size_t)4095;
  int started = 0;
  double t0 = cli_now_ms();
  for (int i = 0; i < threads; i++) {
    ra[i] = (read_arg){(const uint64_t *)(src + (size_t)i * per), per / 8, 0};
    if (pthread_create(&th[i], NULL, read_main_, &ra[i]) != 0) break;
    started++;
  }
  for (int i = 0; i < started; i++) pthread_join(th[i], NULL);
  double ms = cli_now_ms() - t0;
  return started < threads ? -1 : (double)(per * (size_t)threads) / (ms / 1e3);
}

/* ---- helpers ---- */

static int cmp_double_(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static double median_(double *v, int n) {
  qsort(v, (size_t)n, sizeof *v, cmp_double_);
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* Parameters: the elements of every weight tensor, a tied head once. */
static int64_t params_(const kiln_model *m) {
  const kiln_config *c = &m->cfg;
  int64_t n = kiln_tensor_numel(&m->embed) + kiln_tensor_numel(&m->final_norm);
  if (m->lm_head.data && m->lm_head.data != m->embed.data) n += kiln_tensor_numel(&m->lm_head);
  for (int l = 0; l < c->n_layers; l++) {
    const kiln_layer_weights *L = &m->layers[l];
    const kiln_tensor *ts[] = {&L->attn_norm, &L->wq, &L->wk, &L->wv, &L->wo, &L->bq, &L->bk, &L->bv,
                               &L->bo, &L->q_norm, &L->k_norm, &L->ffn_norm, &L->w_gate, &L->w_up, &L->w_down};
    for (size_t i = 0; i < sizeof ts / sizeof *ts; i++)
      if (ts[i]->data) n += kiln_tensor_numel(ts[i]);
  }
  return n;
}

static void cpu_name_(char *out, size_t cap) {
  snprintf(out, cap, "unknown");
  FILE *f = fopen("/proc/cpuinfo", "r");
  if (!f) return;
  char line[512];
  while (fgets(line, sizeof line, f))
    if (strncmp(line, "model name", 10) == 0) {
      char *v = strchr(line, ':');
      if (v) {
        v++;
        while (*v == ' ') v++;
        v[strcspn(v, "\n")] = '\0';
        snprintf(out, cap, "%s", v);
      }
      break;
    }
  fclose(f);
}

/* The 1-minute load average (other work on the machine skews the numbers), or -1. */
static double loadavg_(void) {
  double l = -1;
  FILE *f = fopen("/proc/loadavg", "r");
  if (f) {
    if (fscanf(f, "%lf", &l) != 1) l = -1;
    fclose(f);
  }
  return l;
}

/* The commit recorded with the results: $KILN_COMMIT when set (as bench/cuda/run.sh records it: a build carried to
 * another machine runs beside a checkout whose HEAD need not be the build's), else the checkout's HEAD. */
static void git_commit_(char *out, size_t cap) {
  snprintf(out, cap, "unknown");
  const char *env = getenv("KILN_COMMIT");
  if (env && *env) {
    snprintf(out, cap, "%s", env);
    return;
  }
  FILE *p = popen("git rev-parse --short=12 HEAD 2>/dev/null", "r");
  if (!p) return;
  char buf[64];
  if (fgets(buf, sizeof buf, p)) {
    buf[strcspn(buf, "\n")] = '\0';
    if (buf[0]) snprintf(out, cap, "%s", buf);
  }
  pclose(p);
}

/* Argmax of the logits (the greedy choice; lowest id on ties). */
static int32_t argmax_(const float *x, int n) {
  int32_t b = 0;
  for (int i = 1; i < n; i++)
    if (x[i] > x[b]) b = i;
  return b;
}

/* One copy-bandwidth measurement into *bps: the GPU's memory for a backend that has one, else `threads` host
 * threads copying. KILN_EIO when the threads cannot start. */
static int measure_bw_(kiln_engine *eng, bool on_device, char *dst, const char *src, size_t len, int threads,
                       double *bps) {
  if (on_device) return kiln__engine_copy_bandwidth(eng, bps);
  *bps = copy_bandwidth_(dst, src, len, threads);
  return *bps < 0 ? KILN_EIO : KILN_OK;
}

/* One greedy decode step of sequence 0 from *tok, replaced by the chosen token: on the device when the backend
 * samples there (the step a GPU generation runs), else logits to the host and their argmax. */
static int decode_(kiln_engine *eng, bool device_sample, const kiln_sampling *greedy, uint64_t step, int32_t *tok,
                   float *logits, int V) {
  if (device_sample) return kiln__engine_decode_sample(eng, 0, *tok, greedy, step, tok);
  int st = kiln_engine_forward(eng, 0, tok, 1, logits, false);
  if (st == KILN_OK) *tok = argmax_(logits, V);
  return st;
}

#define BENCH_MAX_LIST 8

/* A comma list of positive ints ("128,1024") into v[BENCH_MAX_LIST]. */
static int parse_list_(const cli_parser *p, const char *what, const char *s, int *v, int *n) {
  char buf[256];
  if (strlen(s) >= sizeof buf) return cli_usage(p, "%s: list too long", what);
  snprintf(buf, sizeof buf, "%s", s);
  *n = 0;
  for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
    if (*n == BENCH_MAX_LIST) return cli_usage(p, "%s: at most %d values", what, BENCH_MAX_LIST);
    int rc = cli_parse_int(p, what, t, 1, 1 << 20, &v[*n]);
    if (rc) return rc;
    (*n)++;
  }
  return *n ? 0 : cli_usage(p, "%s: expected a number or a comma list", what);
}

int cmd_bench(int argc, char **argv) {
  cli_parser p;
  cli_parser_init(&p, "bench", "[-m DIR | --random-weights CONFIG_JSON [--dtype T]] [-t N] [options]",
                  "Prefill (time to the first token) and decode speed, and the decode floor: the bytes a step reads "
                  "(weights as the backend stores them, the KV cache of its context) divided by the copy bandwidth "
                  "(read + write) of the memory they sit in, measured in the same run.",
                  opts_, argc, argv);
  cli_run_opts ro = {.n_threads = -1};
  const char *random_cfg = NULL, *json_path = NULL, *arg;
  kiln_dtype dt = KILN_BF16;
  int Ps[BENCH_MAX_LIST] = {128}, Cs[BENCH_MAX_LIST] = {0}, n_p = 1, n_c = 0, G = 64, R = 3, c, rc = 0;
  while (rc == 0 && (c = cli_next(&p, &arg)) >= 0) {
    switch (c) {
    case 'm': ro.model = arg; break;
    case OPT_RANDOM: random_cfg = arg; break;
    case OPT_DTYPE:
      if (strcmp(arg, "bf16") == 0) dt = KILN_BF16;
      else if (strcmp(arg, "f16") == 0) dt = KILN_F16;
      else if (strcmp(arg, "f32") == 0) dt = KILN_F32;
      else rc = cli_usage(&p, "--dtype: expected bf16, f16 or f32, not '%s'", arg);
      break;
    case 't': rc = cli_parse_int(&p, "-t", arg, 0, 64, &ro.n_threads); break;
    case OPT_DEVICE:
      rc = cli_parse_device(&p, "--device", arg);
      ro.device = arg;
      break;
    case OPT_PROMPT: rc = parse_list_(&p, "--prompt-tokens", arg, Ps, &n_p); break;
    case OPT_CTX: rc = parse_list_(&p, "--ctx", arg, Cs, &n_c); break;
    case OPT_GEN: rc = cli_parse_int(&p, "--gen-tokens", arg, 1, 1 << 20, &G); break;
    case OPT_REPEATS: rc = cli_parse_int(&p, "--repeats", arg, 1, 1000, &R); break;
    case OPT_JSON: json_path = arg; break;
    case 'q': ro.quiet = true; break;
    }
  }
  if (rc) return rc;
  if (c == CLI_HELP) return CLI_EXIT_OK;
  if (c == CLI_BAD) return CLI_EXIT_USAGE;
  if (random_cfg && ro.model) return cli_usage(&p, "-m and --random-weights exclude each other");
  if ((rc = cli_run_opts_env(&p, &ro))) return rc;
  if (n_c == 0) Cs[n_c++] = Ps[0]; /* decode right after the (first) prompt */

  kiln_model *model = NULL;
  kiln_engine *eng = NULL;
  char *dir = NULL, *cfg_text = NULL, *src = NULL, *dst = NULL;
  float *logits = NULL;
  int32_t *prompt = NULL;
  double *pre = NULL, *dec = NULL, *bw = NULL, *rbw = NULL, *tok_bw = NULL, *tok_ms = NULL, *frac_tok = NULL;
  double *tok_bytes = NULL;
  json_t *out = NULL, *jpre = NULL, *jdec = NULL;
  int st;
  size_t copy_len = 0;

  if (random_cfg) {
    size_t len;
    kiln_config cfg;
    if ((st = cli_read_file(random_cfg, &cfg_text, &len)) < 0 ||
        (st = kiln_config_parse(&cfg, cfg_text, len, random_cfg)) < 0 ||
        (st = kiln_model_random(&model, &cfg, dt, 1)) < 0) {
      rc = cli_fail_in(random_cfg, st);
      goto done;
    }
  } else {
    double load_ms;
    if ((rc = cli_model_dir(ro.model, &dir)) || (rc = cli_load_model(dir, ro.quiet, &model, &load_ms))) goto done;
  }
  const kiln_config *cfg = &model->cfg;
  int max_p = 0, max_c = 0;
  for (int i = 0; i < n_p; i++) max_p = Ps[i] > max_p ? Ps[i] : max_p;
  for (int i = 0; i < n_c; i++) max_c = Cs[i] > max_c ? Cs[i] : max_c;
  /* a decode run: its context, the timed steps and the untimed ones */
  const int dec_ctx = max_c + G + G / KILN_BENCH_BLOCK + 2;
  const int n_ctx = dec_ctx > max_p ? dec_ctx : max_p;
  if (n_ctx > cfg->max_position_embeddings) {
    rc = cli_errorf("--prompt-tokens, --ctx and --gen-tokens need %d positions, past max_position_embeddings (%d)",
                    n_ctx, cfg->max_position_embeddings);
    goto done;
  }
  if ((rc = cli_engine_create(model, &ro, n_ctx, &eng))) goto done;
  /* a GPU's own memory sets its floor; the host's copies would say nothing about it */
  double dev_bw = 0;
  st = kiln__engine_copy_bandwidth(eng, &dev_bw);
  const bool on_device = st == KILN_OK;
  if (st != KILN_OK && st != KILN_EUNSUPPORTED) {
    rc = cli_fail(st);
    goto done;
  }
  const int threads = ro.n_threads > 0 ? ro.n_threads : (int)sysconf(_SC_NPROCESSORS_ONLN);
  copy_len = on_device ? 0 : (size_t)(threads < 2 ? 2 : threads) * ((size_t)KILN_BENCH_COPY_MB_PER_THREAD << 20);
  const int V = cfg->vocab_size, max_in = max_p > max_c ? max_p : max_c;
  const size_t RG = (size_t)R * (size_t)G;
  logits = malloc((size_t)V * sizeof *logits);
  prompt = malloc((size_t)max_in * sizeof *prompt);
  pre = calloc((size_t)n_p * R, sizeof *pre);
  dec = calloc((size_t)n_c * R, sizeof *dec);
  bw = calloc((size_t)n_c * R, sizeof *bw);
  rbw = calloc((size_t)R, sizeof *rbw);
  tok_bw = calloc((size_t)n_c * RG, sizeof *tok_bw);
  tok_ms = calloc((size_t)n_c * RG, sizeof *tok_ms);
  frac_tok = calloc((size_t)n_c * RG, sizeof *frac_tok);
  tok_bytes = calloc((size_t)n_c * RG, sizeof *tok_bytes);
  /* 2 MiB-aligned and asked for transparent huge pages, as kiln_model_random's weights are: the floor is taken
   * with memory the kernels' own weights are no worse placed than */
  if (!on_device) {
    src = aligned_alloc((size_t)2 << 20, copy_len);
    dst = aligned_alloc((size_t)2 << 20, copy_len);
    if (src) (void)madvise(src, copy_len, MADV_HUGEPAGE);
    if (dst) (void)madvise(dst, copy_len, MADV_HUGEPAGE);
  }
  if (!logits || !prompt || !pre || !dec || !bw || !rbw || !tok_bw || !tok_ms || !frac_tok || !tok_bytes ||
      (!on_device && (!src || !dst))) {
    rc = cli_errorf("out of memory");
    goto done;
  }
  if (!on_device) {
    memset(src, 1, copy_len); /* fault the pages in before timing */
    memset(dst, 2, copy_len);
  }
  uint64_t s = 0x9e3779b97f4a7c15ull;
  for (int i = 0; i < max_in; i++) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    prompt[i] = (int32_t)((s >> 33) % (uint64_t)V);
  }
  const double load_before = loadavg_();
  const bool device_sample = kiln__engine_has_decode_sample(eng);
  const kiln_sampling greedy = kiln_sampling_default();
  /* warm-up: one short prefill and decode steps on both paths, so first-touch costs are not timed */
  int32_t warm = prompt[0];
  if ((st = kiln_engine_forward(eng, 0, prompt, max_in < 8 ? max_in : 8, logits, false)) < 0 ||
      (st = kiln_engine_forward(eng, 0, prompt, 1, logits, false)) < 0 ||
      (st = decode_(eng, device_sample, &greedy, 0, &warm, logits, V)) < 0) {
    rc = cli_fail(st);
    goto done;
  }
  for (int r = 0; r < R; r++) {
    rbw[r] = 0;
    if (!on_device) rbw[r] = read_bandwidth_(src, copy_len, threads);
    for (int pi = 0; pi < n_p; pi++) { /* time to the first token: the prefill and its logits on the host */
      kiln_engine_seq_reset(eng, 0);
      double t0 = cli_now_ms();
      if ((st = kiln_engine_forward(eng, 0, prompt, Ps[pi], logits, false)) < 0) {
        rc = cli_fail(st);
        goto done;
      }
      pre[(size_t)pi * R + r] = cli_now_ms() - t0;
    }
    for (int ci = 0; ci < n_c; ci++) {
      const size_t k = (size_t)ci * R + r;
      kiln_engine_seq_reset(eng, 0);
      if ((st = kiln_engine_forward(eng, 0, prompt, Cs[ci], logits, false)) < 0) {
        rc = cli_fail(st);
        goto done;
      }
      int32_t tok = argmax_(logits, V);
      double block_bw = 0, sum_ms = 0;
      uint64_t step = 0;
      for (int g = 0; g < G; g++) {
        /* the copy before each block of KILN_BENCH_BLOCK tokens gives their floor: measured within milliseconds
         * of each other, the two see the same state of a shared machine. The step right after a copy runs
         * untimed: it pays for waking the engine's threads after the copy's idle time, which a generation never
         * does. */
        const size_t i = (size_t)ci * RG + (size_t)r * G + (size_t)g;
        if (g % KILN_BENCH_BLOCK == 0) {
          if ((st = measure_bw_(eng, on_device, dst, src, copy_len, threads, &block_bw)) < 0 ||
              (st = decode_(eng, device_sample, &greedy, step++, &tok, logits, V)) < 0) {
            rc = st == KILN_EIO ? cli_errorf("copy bandwidth: cannot start %d threads", threads) : cli_fail(st);
            goto done;
          }
        }
        tok_bw[i] = block_bw;
        const int64_t bytes = kiln__engine_step_bytes(eng, kiln_engine_seq_pos(eng, 0));
        double a = cli_now_ms();
        if ((st = decode_(eng, device_sample, &greedy, step++, &tok, logits, V)) < 0) {
          rc = cli_fail(st);
          goto done;
        }
        tok_ms[i] = cli_now_ms() - a;
        tok_bytes[i] = (double)bytes;
        sum_ms += tok_ms[i];
        frac_tok[i] = ((double)bytes / tok_bw[i] * 1e3) / tok_ms[i];
        if (tok_bw[i] > bw[k]) bw[k] = tok_bw[i];
      }
      dec[k] = (double)G * 1e3 / sum_ms;
      if (!ro.quiet)
        fprintf(stderr, "repeat %d, ctx %d: %s copy up to %.1f GB/s | decode %.2f tok/s (%.3f ms/token)\n", r + 1,
                Cs[ci], on_device ? "device" : "host", bw[k] / 1e9, dec[k], 1e3 / dec[k]);
    }
    if (!ro.quiet)
      for (int pi = 0; pi < n_p; pi++)
        fprintf(stderr, "repeat %d: prefill of %d tokens %.2f ms (%.1f tok/s)\n", r + 1, Ps[pi],
                pre[(size_t)pi * R + r], Ps[pi] * 1e3 / pre[(size_t)pi * R + r]);
  }
  const char *dev = kiln__engine_describe(eng);
  const double med_rbw = median_(rbw, R);
  printf("%s, %d thread%s, %s weights\n", dev, threads, threads == 1 ? "" : "s", kiln_dtype_name(model->embed.dtype));
  jpre = json_array();
  jdec = json_array();
  if (!jpre || !jdec) {
    rc = cli_errorf("out of memory");
    goto done;
  }
  double first_pre_tok_s = 0;
  for (int pi = 0; pi < n_p; pi++) {
    const double ms = median_(pre + (size_t)pi * R, R), tok_s = Ps[pi] * 1e3 / ms;
    if (pi == 0) first_pre_tok_s = tok_s;
    printf("prefill %5d tokens: %.1f tok/s, %.2f ms to the first token\n", Ps[pi], tok_s, ms);
    json_array_append_new(jpre, json_pack("{s:i, s:f, s:f}", "prompt", Ps[pi], "ttft_ms", ms, "tok_s", tok_s));
  }
  /* the first context's figures are also the top-level fields of the JSON (one prompt, one context: as before) */
  double f_dec = 0, f_bw = 0, f_best = 0, f_bpt = 0, f_frac = 0, f_frac_best = 0;
  for (int ci = 0; ci < n_c; ci++) {
    double *tb = tok_bw + (size_t)ci * RG, *ft = frac_tok + (size_t)ci * RG, *by = tok_bytes + (size_t)ci * RG;
    double best_bw = 0;
    for (int r = 0; r < R; r++) best_bw = bw[(size_t)ci * R + r] > best_bw ? bw[(size_t)ci * R + r] : best_bw;
    const double med_dec = median_(dec + (size_t)ci * R, R), med_bw = median_(tb, (int)RG);
    const double frac = median_(ft, (int)RG), bpt = median_(by, (int)RG); /* bytes of the median token */
    const double floor_tok_s = med_bw / bpt, frac_best = med_dec / (best_bw / bpt);
    printf("decode at ctx %5d: %.2f tok/s = %.3f ms/token | floor %.2f tok/s (%.3f GB per token / %.1f GB/s %s "
           "copy) | %.1f%% of floor (%.1f%% of the best copy's)\n",
           Cs[ci], med_dec, 1e3 / med_dec, floor_tok_s, bpt / 1e9, med_bw / 1e9, on_device ? "device" : "host",
           100.0 * frac, 100.0 * frac_best);
    json_array_append_new(jdec, json_pack("{s:i, s:f, s:f, s:I, s:f, s:f, s:f, s:f, s:f}", "ctx", Cs[ci], "tok_s",
                                          med_dec, "ms_per_token", 1e3 / med_dec, "bytes_per_token",
                                          (json_int_t)bpt, "copy_gb_s_median", med_bw / 1e9, "floor_ms_per_token",
                                          1e3 / floor_tok_s, "fraction_of_floor", frac,
                                          "fraction_of_best_copy_floor", frac_best, "copy_gb_s_best",
                                          best_bw / 1e9));
    if (ci == 0)
      f_dec = med_dec, f_bw = med_bw, f_best = best_bw, f_bpt = bpt, f_frac = frac, f_frac_best = frac_best;
  }

  if (json_path) {
    char cpu[256], commit[64], date[64], cmdline[1024] = "kiln";
    cpu_name_(cpu, sizeof cpu);
    git_commit_(commit, sizeof commit);
    time_t now = time(NULL);
    struct tm tmv;
    gmtime_r(&now, &tmv);
    strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%SZ", &tmv);
    for (int i = 0; i < argc; i++) {
      size_t l = strlen(cmdline);
      snprintf(cmdline + l, sizeof cmdline - l, " %s", argv[i]);
    }
    const double floor_tok_s = f_bw / f_bpt;
    out = json_pack("{s:s, s:s, s:s, s:s, s:{s:s, s:i, s:f, s:f}, s:s, s:s, s:s, s:I, s:I, s:i, s:i, s:i, s:i, "
                    "s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:s, s:o, s:o}",
                    "bench", "kiln bench", "date", date, "commit", commit, "command", cmdline, "machine", "cpu", cpu,
                    "cores", (int)sysconf(_SC_NPROCESSORS_ONLN), "loadavg_before", load_before, "loadavg_after",
                    loadavg_(), "device", dev, "model", random_cfg ? random_cfg : dir, "dtype",
                    kiln_dtype_name(model->embed.dtype), "params", (json_int_t)params_(model),
                    "bytes_per_token", (json_int_t)f_bpt, "threads", threads, "prompt_tokens", Ps[0], "gen_tokens",
                    G, "repeats", R, "prefill_tok_s", first_pre_tok_s, "decode_tok_s", f_dec, "decode_ms_per_token",
                    1e3 / f_dec, "copy_gb_s_median", f_bw / 1e9, "copy_gb_s_best", f_best / 1e9,
                    "floor_tok_s", floor_tok_s, "floor_ms_per_token", 1e3 / floor_tok_s, "fraction_of_floor", f_frac,
                    "fraction_of_best_copy_floor", f_frac_best, "read_gb_s_median", med_rbw / 1e9,
                    "decode_read_gb_s", f_dec * f_bpt / 1e9, "bandwidth_of", on_device ? "device" : "host",
                    "prefill", jpre, "decode", jdec);
    jpre = jdec = NULL; /* owned by `out` now (or freed by a failed json_pack) */
    if (!out || json_dump_file(out, json_path, JSON_INDENT(2)) != 0) {
      rc = cli_errorf("%s: cannot write the results", json_path);
      goto done;
    }
  }
done:
  json_decref(out);
  json_decref(jpre);
  json_decref(jdec);
  if (eng) kiln_engine_free(eng);
  kiln_model_free(model);
  free(dir);
  free(cfg_text);
  free(src);
  free(dst);
  free(logits);
  free(prompt);
  free(pre);
  free(dec);
  free(bw);
  free(rbw);
  free(tok_bw);
  free(tok_ms);
  free(frac_tok);
  free(tok_bytes);
  return rc;
}
