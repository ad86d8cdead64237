/*
 * bench_server: what the HTTP path of kiln serve costs.
 *
 *   1. Per-token overhead. The same greedy generation (N tokens, EOS ignored) run in process (kiln_gen_step in a
 *      loop, as `kiln run` does) and through the server (a streamed /v1/completions read by a socket client in this
 *      process), alternated R times in one run. Reported: wall ms per decoded token of each (median), the median of
 *      the paired differences (the overhead a streaming client sees per token: ring handoff, JSON, SSE, socket),
 *      CPU ms per token of the whole process in each mode (the HTTP figure includes this client's own reading),
 *      and the client-side gap between chunks (p50, p99). Each HTTP request opens a new connection (and so a new
 *      connection thread), which the TTFT figures include.
 *   2. Requests per second for short requests (max_tokens 1, a few prompt tokens, a new connection each) with C
 *      concurrent clients, beside the in-process floor (kiln_gen_start + one step, back to back).
 *
 * Usage: bench_server [-m DIR] [-n TOKENS] [-r REPEATS] [-t THREADS] [-d SECONDS] [-o out.json]
 * Default model: models/default when present, else tests/data/tiny/qwen3-f32. Results: one JSON object (device,
 * date, commit, command, numbers) on stdout and in the -o file.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include "http_client.h"
#include "kiln/kiln.h"

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int cmp_d(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static double pct(double *v, int n, double p) {
  if (n <= 0) return 0;
  qsort(v, (size_t)n, sizeof *v, cmp_d);
  int i = (int)(p * (n - 1) + 0.5);
  return v[i];
}

/* CPU seconds used by the whole process so far (every thread: engine, connections, client). */
static double cpu_s(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6 + (double)ru.ru_stime.tv_sec +
         ru.ru_stime.tv_usec * 1e-6;
}

static const char *PROMPT = "In the beginning God created the heaven and the earth.";

/* ---- in process ---------------------------------------------------------------------------------------------- */

static double inproc_run(kiln_engine *e, const kiln_tokenizer *tok, const int32_t *ids, int n_ids, int n_tokens,
                         double *ttft) {
  kiln_gen_params gp = kiln_gen_params_default();
  gp.max_tokens = n_tokens;
  gp.ignore_eos = true;
  kiln_gen *g;
  double t0 = now_s();
  if (kiln_gen_start(&g, e, tok, 0, ids, n_ids, &gp)) return -1;
  kiln_gen_event ev;
  int steps = 0;
  double t_first = 0;
  do {
    if (kiln_gen_step(g, &ev)) {
      kiln_gen_free(g);
      return -1;
    }
    if (steps++ == 0) t_first = now_s();
  } while (ev.finish == KILN_FINISH_NONE);
  double t1 = now_s();
  kiln_gen_free(g);
  *ttft = t_first - t0;
  return (t1 - t_first) / (steps - 1); /* decode seconds per token */
}

/* ---- through HTTP -------------------------------------------------------------------------------------------- */

static double http_run(int port, int n_tokens, double *ttft, double *t_head, double *gaps, int *n_gaps) {
  /* No logprobs: the engine does exactly the work of the in-process run. Each token with text arrives as a chunk,
   * the last token as the finish chunk; the token count comes from the usage chunk. */
  char body[512];
  snprintf(body, sizeof body,
           "{\"prompt\":\"%s\",\"max_tokens\":%d,\"temperature\":0,\"ignore_eos\":true,\"stream\":true,"
           "\"stream_options\":{\"include_usage\":true}}", PROMPT, n_tokens);
  sse_conn c;
  double t0 = now_s();
  if (sse_open(port, "/v1/completions", NULL, body, &c)) {
    sse_close(&c);
    return -1;
  }
  *t_head = now_s() - t0;
  char *ev;
  int chunks = 0, tokens = -1;
  double t_first = 0, t_prev = 0, t_last = 0;
  while (sse_next(&c, &ev, 60000) == 1) {
    if (strncmp(ev, "data: {", 7) == 0 && strstr(ev, "\"choices\":[{")) {
      double t = now_s();
      if (chunks == 0) t_first = t;
      else if (*n_gaps < 100000) gaps[(*n_gaps)++] = t - t_prev;
      t_prev = t_last = t;
      chunks++;
    } else if (strncmp(ev, "data: {", 7) == 0) {
      json_t *u = json_loads(ev + 6, 0, NULL);
      tokens = (int)json_integer_value(json_object_get(json_object_get(u, "usage"), "completion_tokens"));
      json_decref(u);
    }
    free(ev);
  }
  sse_close(&c);
  if (tokens != n_tokens || chunks < 2) return -1;
  *ttft = t_first - t0;
  return (t_last - t_first) / (tokens - 1);
}

/* ---- short requests ------------------------------------------------------------------------------------------ */

typedef struct rps_client {
  int port;
  double until;
  int done, errors;
  double *lat;
  int n_lat, cap_lat;
} rps_client;

static void *rps_run(void *arg) {
  rps_client *c = arg;
  char body[256];
  snprintf(body, sizeof body, "{\"prompt\":\"Hi\",\"max_tokens\":1,\"temperature\":0}");
  while (now_s() < c->until) {
    double t0 = now_s();
    http_resp r;
    int rc = http_request(c->port, "POST", "/v1/completions", NULL, body, strlen(body), false, &r);
    if (rc == 0 && r.status == 200) {
      c->done++;
      if (c->n_lat < c->cap_lat) c->lat[c->n_lat++] = now_s() - t0;
    } else {
      c->errors++;
    }
    if (rc == 0) http_resp_free(&r);
  }
  return NULL;
}

static int file_exists(const char *p) {
  struct stat st;
  return stat(p, &st) == 0;
}

int main(int argc, char **argv) {
  const char *model = file_exists("models/default/model.safetensors") ? "models/default" : "tests/data/tiny/qwen3-f32";
  const char *out_path = NULL;
  int n_tokens = 128, repeats = 7, threads = 1;
  double seconds = 3.0;
  int opt;
  while ((opt = getopt(argc, argv, "m:n:r:t:d:o:")) != -1) {
    switch (opt) {
    case 'm': model = optarg; break;
    case 'n': n_tokens = atoi(optarg); break;
    case 'r': repeats = atoi(optarg); break;
    case 't': threads = atoi(optarg); break;
    case 'd': seconds = atof(optarg); break;
    case 'o': out_path = optarg; break;
    default:
      fprintf(stderr, "usage: bench_server [-m DIR] [-n TOKENS] [-r REPEATS] [-t THREADS] [-d SECONDS] [-o FILE]\n");
      return 2;
    }
  }
  if (n_tokens < 2 || repeats < 1 || threads < 1 || seconds <= 0) {
    fprintf(stderr, "bench_server: bad arguments\n");
    return 2;
  }
  /* The in-process side: its own model, tokenizer and engine, as kiln run has them. */
  kiln_model *m;
  kiln_tokenizer *tok;
  kiln_engine *e;
  char tpath[4096];
  snprintf(tpath, sizeof tpath, "%s/tokenizer.json", model);
  kiln_engine_opts eo = {.device = "cpu", .n_threads = threads};
  if (kiln_model_load(&m, model, NULL, NULL) || kiln_tokenizer_load(&tok, tpath) || kiln_engine_create(&e, m, &eo)) {
    fprintf(stderr, "bench_server: %s\n", kiln_last_error());
    return 1;
  }
  int32_t *ids;
  size_t n_ids;
  if (kiln_tokenizer_encode(tok, PROMPT, strlen(PROMPT), &ids, &n_ids)) {
    fprintf(stderr, "bench_server: %s\n", kiln_last_error());
    return 1;
  }
  if ((int)n_ids + n_tokens > kiln_engine_n_ctx(e)) n_tokens = kiln_engine_n_ctx(e) - (int)n_ids;
  /* The server: the same checkpoint, one sequence slot, the same threads. */
  kiln_server_opts so = kiln_server_opts_default();
  so.port = 0;
  so.model_dir = model;
  so.chat_template = "chatml";
  so.n_threads = threads;
  so.parallel = 1;
  so.max_queue = 256;
  so.device = "cpu";
  kiln_server *srv;
  if (kiln_server_start(&srv, &so) || kiln_server_wait_ready(srv, 60000)) {
    fprintf(stderr, "bench_server: %s\n", kiln_last_error());
    return 1;
  }
  int port = kiln_server_port(srv);

  /* 1. alternate in-process and HTTP runs (one warm-up of each first). */
  double *tp_in = calloc((size_t)repeats, sizeof(double)), *tp_http = calloc((size_t)repeats, sizeof(double));
  double *ttft_in = calloc((size_t)repeats, sizeof(double)), *ttft_http = calloc((size_t)repeats, sizeof(double));
  double *head_http = calloc((size_t)repeats, sizeof(double));
  double *cpu_in = calloc((size_t)repeats, sizeof(double)), *cpu_http = calloc((size_t)repeats, sizeof(double));
  double *diff = calloc((size_t)repeats, sizeof(double));
  double *gaps = calloc(100000, sizeof(double));
  int n_gaps = 0;
  double d;
  if (inproc_run(e, tok, ids, (int)n_ids, n_tokens, &d) < 0 || http_run(port, n_tokens, &d, &d, gaps, &n_gaps) < 0) {
    fprintf(stderr, "bench_server: warm-up failed: %s\n", kiln_last_error());
    return 1;
  }
  n_gaps = 0;
  for (int r = 0; r < repeats; r++) {
    double c0 = cpu_s();
    tp_in[r] = inproc_run(e, tok, ids, (int)n_ids, n_tokens, &ttft_in[r]);
    double c1 = cpu_s();
    tp_http[r] = http_run(port, n_tokens, &ttft_http[r], &head_http[r], gaps, &n_gaps);
    double c2 = cpu_s();
    if (tp_in[r] < 0 || tp_http[r] < 0) {
      fprintf(stderr, "bench_server: run %d failed\n", r);
      return 1;
    }
    cpu_in[r] = (c1 - c0) / n_tokens;
    cpu_http[r] = (c2 - c1) / n_tokens;
    diff[r] = tp_http[r] - tp_in[r];
  }
  double in_ms = pct(tp_in, repeats, 0.5) * 1e3, http_ms = pct(tp_http, repeats, 0.5) * 1e3;
  double in_ttft = pct(ttft_in, repeats, 0.5) * 1e3, http_ttft = pct(ttft_http, repeats, 0.5) * 1e3;
  double http_head = pct(head_http, repeats, 0.5) * 1e3;
  double gap50 = pct(gaps, n_gaps, 0.5) * 1e3, gap99 = pct(gaps, n_gaps, 0.99) * 1e3;
  double diff_us = pct(diff, repeats, 0.5) * 1e6;
  double cpu_in_ms = pct(cpu_in, repeats, 0.5) * 1e3, cpu_http_ms = pct(cpu_http, repeats, 0.5) * 1e3;

  /* 2. short requests: the in-process floor, then 1, 4 and 16 concurrent HTTP clients. */
  double t0 = now_s();
  int floor_n = 0;
  while (now_s() - t0 < seconds / 2) {
    kiln_gen_params gp = kiln_gen_params_default();
    gp.max_tokens = 1;
    kiln_gen *g;
    kiln_gen_event ev;
    if (kiln_gen_start(&g, e, tok, 0, ids, 2, &gp) || kiln_gen_step(g, &ev)) return 1;
    kiln_gen_free(g);
    floor_n++;
  }
  double floor_rps = floor_n / (now_s() - t0);
  int conc[] = {1, 4, 16};
  json_t *rps = json_array();
  for (size_t k = 0; k < sizeof conc / sizeof conc[0]; k++) {
    int C = conc[k];
    rps_client *cl = calloc((size_t)C, sizeof *cl);
    pthread_t *th = calloc((size_t)C, sizeof *th);
    double start = now_s();
    for (int i = 0; i < C; i++) {
      cl[i] = (rps_client){.port = port, .until = start + seconds, .cap_lat = 200000};
      cl[i].lat = calloc((size_t)cl[i].cap_lat, sizeof(double));
      pthread_create(&th[i], NULL, rps_run, &cl[i]);
    }
    int done = 0, errors = 0, nl = 0;
    for (int i = 0; i < C; i++) {
      pthread_join(th[i], NULL);
      done += cl[i].done;
      errors += cl[i].errors;
      nl += cl[i].n_lat;
    }
    double el = now_s() - start;
    double *lat = calloc((size_t)nl + 1, sizeof(double));
    int w = 0;
    for (int i = 0; i < C; i++) {
      memcpy(lat + w, cl[i].lat, (size_t)cl[i].n_lat * sizeof(double));
      w += cl[i].n_lat;
      free(cl[i].lat);
    }
    json_array_append_new(rps, json_pack("{s:i, s:f, s:i, s:f, s:f}", "clients", C, "requests_per_s", done / el,
                                         "errors", errors, "latency_p50_ms", pct(lat, nl, 0.5) * 1e3,
                                         "latency_p99_ms", pct(lat, nl, 0.99) * 1e3));
    free(lat);
    free(cl);
    free(th);
  }
  kiln_server_stop(srv);

  /* Context of the run. */
  char date[64], cpu[512] = "unknown", commit[64] = "unknown";
  time_t tt = time(NULL);
  strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%SZ", gmtime(&tt));
  FILE *f = fopen("/proc/cpuinfo", "r");
  if (f) {
    char line[512];
    while (fgets(line, sizeof line, f))
      if (strncmp(line, "model name", 10) == 0) {
        char *v = strchr(line, ':');
        snprintf(cpu, sizeof cpu, "%s", v ? v + 2 : line);
        cpu[strcspn(cpu, "\n")] = '\0';
        break;
      }
    fclose(f);
  }
  FILE *g = popen("git rev-parse --short HEAD 2>/dev/null", "r");
  if (g) {
    if (fgets(commit, sizeof commit, g)) commit[strcspn(commit, "\n")] = '\0';
    pclose(g);
  }
  char cmd[1024] = "";
  for (int i = 0; i < argc; i++) {
    strncat(cmd, argv[i], sizeof cmd - strlen(cmd) - 2);
    if (i + 1 < argc) strncat(cmd, " ", sizeof cmd - strlen(cmd) - 1);
  }
  json_t *res = json_pack(
      "{s:s, s:s, s:s, s:s, s:s, s:s, s:i, s:i, s:i, s:{s:i, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f}, "
      "s:{s:f, s:o}}",
      "bench", "server", "device", "cpu", "cpu", cpu, "date", date, "commit", commit, "command", cmd, "threads",
      threads, "nproc", (int)sysconf(_SC_NPROCESSORS_ONLN), "repeats", repeats, "per_token", "tokens", n_tokens,
      "inproc_ms_per_token", in_ms, "http_ms_per_token", http_ms, "overhead_us_per_token", diff_us,
      "overhead_fraction", diff_us * 1e-3 / in_ms, "inproc_cpu_ms_per_token", cpu_in_ms, "http_cpu_ms_per_token",
      cpu_http_ms, "inproc_ttft_ms", in_ttft, "http_ttft_ms", http_ttft, "http_headers_ms", http_head,
      "client_gap_p50_ms", gap50, "client_gap_p99_ms", gap99, "short_requests", "inproc_floor_per_s", floor_rps,
      "http", rps);
  json_object_set_new(res, "model", json_string(model));
  /* The machine is shared: the load during the run says how much the numbers can be trusted. */
  FILE *la = fopen("/proc/loadavg", "r");
  double l1 = -1;
  if (la) {
    if (fscanf(la, "%lf", &l1) != 1) l1 = -1;
    fclose(la);
  }
  json_object_set_new(res, "loadavg_1min", json_real(l1));
  char *txt = json_dumps(res, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
  printf("%s\n", txt);
  if (out_path) {
    FILE *o = fopen(out_path, "w");
    if (!o) {
      fprintf(stderr, "bench_server: cannot write %s\n", out_path);
      return 1;
    }
    fprintf(o, "%s\n", txt);
    fclose(o);
  }
  free(txt);
  json_decref(res);
  free(ids);
  kiln_engine_free(e);
  kiln_tokenizer_free(tok);
  kiln_model_free(m);
  return 0;
}
