/*
 * server/server_metrics.c: Prometheus metrics. The engine thread is the only writer of the histograms and of most
 * counters; readers (GET /metrics on a connection thread) load them relaxed, so a scrape may see a bucket a moment
 * before the matching count, which Prometheus tolerates.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/strbuf.h"
#include "kiln/status.h"
#include "server/server_impl.h"

/* Upper bounds in seconds (the last bucket is +Inf). */
static const double ttft_bounds[SRV_HIST_BUCKETS - 1] = {0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1,
                                                         0.25,  0.5,   1.0,  2.5,  5.0,  10.0, 30.0};
static const double itl_bounds[SRV_HIST_BUCKETS - 1] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.015, 0.02, 0.03,
                                                        0.04,   0.05,  0.075,  0.1,   0.2,  0.5,   1.0};
static const double e2e_bounds[SRV_HIST_BUCKETS - 1] = {0.01, 0.05, 0.1, 0.3, 0.5, 1.0,  2.5,  5.0,
                                                        10.0, 15.0, 20.0, 30.0, 60.0, 120.0, 300.0};

void srv_metrics_init(srv_metrics *m) {
  memset(m, 0, sizeof *m);
  m->ttft.bounds = ttft_bounds;
  m->itl.bounds = itl_bounds;
  m->e2e.bounds = e2e_bounds;
}

void srv_hist_observe(srv_hist *h, double seconds) {
  if (!(seconds >= 0)) seconds = 0;
  int b = 0;
  while (b < SRV_HIST_BUCKETS - 1 && seconds > h->bounds[b]) b++;
  atomic_fetch_add_explicit(&h->count[b], 1, memory_order_relaxed);
  atomic_fetch_add_explicit(&h->sum_ns, (uint64_t)(seconds * 1e9), memory_order_relaxed);
}

static void metric(kiln_strbuf *b, const char *name, const char *type, const char *help) {
  kiln_strbuf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void outcome(kiln_strbuf *b, const char *labels, const char *what, uint64_t n) {
  kiln_strbuf_printf(b, "kiln_requests_total{%soutcome=\"%s\"} %" PRIu64 "\n", labels, what, n);
}

/* `labels`: "model=\"x\"," to prefix the le label; `set`: "{model=\"x\"}" for _sum and _count. */
static void hist(kiln_strbuf *b, const char *name, const char *help, const srv_hist *h, const char *labels,
                 const char *set) {
  metric(b, name, "histogram", help);
  uint64_t cum = 0;
  for (int i = 0; i < SRV_HIST_BUCKETS; i++) {
    cum += atomic_load_explicit(&h->count[i], memory_order_relaxed);
    if (i < SRV_HIST_BUCKETS - 1)
      kiln_strbuf_printf(b, "%s_bucket{%sle=\"%g\"} %" PRIu64 "\n", name, labels, h->bounds[i], cum);
    else
      kiln_strbuf_printf(b, "%s_bucket{%sle=\"+Inf\"} %" PRIu64 "\n", name, labels, cum);
  }
  kiln_strbuf_printf(b, "%s_sum%s %.9f\n", name, set,
                     (double)atomic_load_explicit(&h->sum_ns, memory_order_relaxed) * 1e-9);
  kiln_strbuf_printf(b, "%s_count%s %" PRIu64 "\n", name, set, cum);
}

int srv_metrics_render(const struct kiln_server *s, char **out, size_t *len) {
  const srv_metrics *m = &s->metrics;
  kiln_strbuf b = {0};
  char labels[300];
  /* The model id is ours, but quote-escape it anyway. */
  char id[200];
  size_t k = 0;
  for (const char *c = s->model_id; *c && k < sizeof id - 2; c++) {
    if (*c == '"' || *c == '\\') id[k++] = '\\';
    id[k++] = *c == '\n' ? ' ' : *c;
  }
  id[k] = '\0';
  snprintf(labels, sizeof labels, "model=\"%s\",", id);
  char lab1[300];
  snprintf(lab1, sizeof lab1, "{model=\"%s\"}", id);

  metric(&b, "kiln_requests_running", "gauge", "Requests with a generation in progress.");
  kiln_strbuf_printf(&b, "kiln_requests_running%s %lld\n", lab1, (long long)atomic_load(&m->running));
  metric(&b, "kiln_requests_waiting", "gauge", "Requests accepted and waiting for a sequence slot.");
  kiln_strbuf_printf(&b, "kiln_requests_waiting%s %lld\n", lab1, (long long)atomic_load(&m->waiting));
  metric(&b, "kiln_requests_total", "counter", "Finished generation requests by outcome.");
  outcome(&b, labels, "ok", atomic_load(&m->requests_ok));
  outcome(&b, labels, "error", atomic_load(&m->requests_err));
  outcome(&b, labels, "cancelled", atomic_load(&m->cancelled));
  outcome(&b, labels, "rejected", atomic_load(&m->rejected));
  metric(&b, "kiln_prompt_tokens_total", "counter", "Prompt tokens prefilled.");
  kiln_strbuf_printf(&b, "kiln_prompt_tokens_total%s %" PRIu64 "\n", lab1, atomic_load(&m->prompt_tokens));
  metric(&b, "kiln_generation_tokens_total", "counter", "Tokens generated.");
  kiln_strbuf_printf(&b, "kiln_generation_tokens_total%s %" PRIu64 "\n", lab1, atomic_load(&m->generation_tokens));
  hist(&b, "kiln_time_to_first_token_seconds", "Time from request arrival to its first token.", &m->ttft, labels, lab1);
  hist(&b, "kiln_inter_token_latency_seconds", "Time between consecutive tokens of a sequence.", &m->itl, labels, lab1);
  hist(&b, "kiln_e2e_request_latency_seconds", "Time from request arrival to its last token.", &m->e2e, labels, lab1);
  double cap = (double)s->n_ctx * (double)s->parallel;
  metric(&b, "kiln_kv_cache_usage_ratio", "gauge", "Fraction of the KV cache held by running sequences (0..1).");
  kiln_strbuf_printf(&b, "kiln_kv_cache_usage_ratio%s %.6f\n", lab1,
                     cap > 0 ? (double)atomic_load(&m->kv_used) / cap : 0.0);
  metric(&b, "kiln_kv_cache_tokens", "gauge", "Tokens the KV cache can hold (all sequence slots).");
  kiln_strbuf_printf(&b, "kiln_kv_cache_tokens%s %.0f\n", lab1, cap);
  if (b.failed) {
    kiln_strbuf_free(&b);
    return kiln_error(KILN_ENOMEM, "metrics: out of memory");
  }
  *out = b.p;
  *len = b.n;
  return KILN_OK;
}
