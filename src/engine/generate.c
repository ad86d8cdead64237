/*
 * The generation loop (kiln/generate.h).
 *
 * Step 0 runs the prompt as one prefill and samples from its last logits; each later step appends the previous
 * token and samples the next. A step ends the generation (finish != NONE) when the token is an EOS id (unless
 * ignore_eos; the EOS token's text is not shown), when the text reaches a stop string (the text is cut before it),
 * when max_tokens tokens have been generated, or when the context cannot take the token just chosen. The token
 * chosen by the last step is always reported, and counted in the generated ids.
 *
 * Text: each token's bytes go to a pending buffer; utf8_stream.c decides what can be shown (no partial character,
 * no tail that may still become a stop string). Buffers grow only when a token is longer than any before, so a
 * long generation allocates nothing per step.
 *
 * When the backend samples on the device (decode_sample) and neither penalties nor logprobs are asked for, steps
 * after the first use it: one call per token, no logits copied to the host.
 */
#include "kiln/generate.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/clock.h"

#include "engine/engine_impl.h"
#include "engine/utf8_stream.h"
#include "kiln/status.h"

struct kiln_gen {
  kiln_engine *e;
  const kiln_tokenizer *tok;
  int seq, n_vocab;
  kiln_gen_params p;
  char *stop_buf;            /* the stop strings, copied */
  const char *stops[KILN_MAX_STOP];
  size_t stop_lens[KILN_MAX_STOP];
  kiln_sampler *sampler;
  float *logits, *raw;       /* [n_vocab]; raw: a copy before sampling, when logprobs are asked */
  int32_t *prompt;
  int n_prompt;
  int32_t *ids;              /* generated ids */
  int n_ids, cap_ids;
  char *pending;             /* bytes not yet released */
  size_t n_pending, cap_pending;
  char *text;                /* text released by the last step */
  size_t cap_text;
  bool done, device_sample;
  double t_start, t_first, t_last;
};

kiln_gen_params kiln_gen_params_default(void) {
  kiln_gen_params p;
  memset(&p, 0, sizeof p);
  p.sampling = kiln_sampling_default();
  p.max_tokens = 0;
  p.ignore_eos = false;
  p.n_stop = 0;
  p.top_logprobs = -1;
  return p;
}

void kiln_gen_free(kiln_gen *g) {
  if (!g) return;
  kiln_sampler_free(g->sampler);
  free(g->stop_buf);
  free(g->logits);
  free(g->raw);
  free(g->prompt);
  free(g->ids);
  free(g->pending);
  free(g->text);
  free(g);
}

static int grow_(char **buf, size_t *cap, size_t need) {
  if (need <= *cap) return KILN_OK;
  size_t c = *cap ? *cap : 256;
  while (c < need) c *= 2;
  char *nb = realloc(*buf, c);
  if (!nb) return kiln_error(KILN_ENOMEM, "generate: out of memory");
  *buf = nb;
  *cap = c;
  return KILN_OK;
}

int kiln_gen_start(kiln_gen **out, kiln_engine *e, const kiln_tokenizer *tok, int seq, const int32_t *prompt,
                   int n_prompt, const kiln_gen_params *params) {
  if (!out) return kiln_error(KILN_EINVAL, "generate: NULL output");
  *out = NULL;
  if (!e || !prompt || n_prompt <= 0) return kiln_error(KILN_EINVAL, "generate: empty prompt");
  kiln_gen_params p = params ? *params : kiln_gen_params_default();
  if (p.n_stop < 0 || p.n_stop > KILN_MAX_STOP)
    return kiln_error(KILN_EINVAL, "generate: %d stop strings (at most %d)", p.n_stop, KILN_MAX_STOP);
  if (p.top_logprobs > KILN_MAX_TOP_LOGPROBS)
    return kiln_error(KILN_EINVAL, "generate: top_logprobs %d > %d", p.top_logprobs, KILN_MAX_TOP_LOGPROBS);
  const int n_ctx = kiln_engine_n_ctx(e);
  if (n_prompt > n_ctx)
    return kiln_error(KILN_ECONTEXT, "generate: prompt of %d tokens does not fit the context of %d", n_prompt,
                      n_ctx);
  const kiln_model *m = kiln_engine_model(e);
  const int V = m->cfg.vocab_size;
  for (int i = 0; i < n_prompt; i++)
    if (prompt[i] < 0 || prompt[i] >= V)
      return kiln_error(KILN_ERANGE, "generate: prompt token %d out of range [0, %d)", prompt[i], V);
  int rc = kiln_engine_seq_reset(e, seq);
  if (rc) return rc;

  kiln_gen *g = calloc(1, sizeof *g);
  if (!g) return kiln_error(KILN_ENOMEM, "generate: out of memory");
  g->e = e;
  g->tok = tok;
  g->seq = seq;
  g->n_vocab = V;
  g->p = p;
  g->t_start = kiln_mono_ms();
  size_t stop_total = 0;
  for (int i = 0; i < p.n_stop; i++) stop_total += (p.stop[i] ? strlen(p.stop[i]) : 0) + 1;
  g->stop_buf = malloc(stop_total + 1);
  g->logits = malloc((size_t)V * sizeof *g->logits);
  g->prompt = malloc((size_t)n_prompt * sizeof *g->prompt);
  g->cap_ids = n_ctx - n_prompt + 1;
  g->ids = malloc((size_t)g->cap_ids * sizeof *g->ids);
  if (p.top_logprobs >= 0) g->raw = malloc((size_t)V * sizeof *g->raw);
  if (!g->stop_buf || !g->logits || !g->prompt || !g->ids || (p.top_logprobs >= 0 && !g->raw) ||
      grow_(&g->pending, &g->cap_pending, 256) || grow_(&g->text, &g->cap_text, 1024)) {
    kiln_gen_free(g);
    return kiln_error(KILN_ENOMEM, "generate: out of memory");
  }
  char *sp = g->stop_buf;
  int ns = 0;
  for (int i = 0; i < p.n_stop; i++) {
    if (!p.stop[i] || !*p.stop[i]) continue; /* an empty stop string would stop everything: ignored */
    size_t L = strlen(p.stop[i]);
    memcpy(sp, p.stop[i], L + 1);
    g->stops[ns] = sp;
    g->stop_lens[ns] = L;
    ns++;
    sp += L + 1;
  }
  g->p.n_stop = ns;
  memcpy(g->prompt, prompt, (size_t)n_prompt * sizeof *prompt);
  g->n_prompt = n_prompt;
  rc = kiln_sampler_create(&g->sampler, &p.sampling, V);
  if (rc) {
    kiln_gen_free(g);
    return rc;
  }
  for (int i = 0; i < n_prompt; i++) kiln_sampler_accept(g->sampler, prompt[i]);
  const kiln_sampling *s = &p.sampling;
  g->device_sample = kiln__engine_has_decode_sample(e) && p.top_logprobs < 0 && s->repetition_penalty == 1.0f &&
                     s->presence_penalty == 0.0f && s->frequency_penalty == 0.0f;
  *out = g;
  return KILN_OK;
}

static bool is_eos_(const kiln_gen *g, int32_t t) {
  const kiln_config *c = &kiln_engine_model(g->e)->cfg;
  for (int i = 0; i < c->n_eos; i++)
    if (c->eos_token_ids[i] == t) return true;
  return false;
}

/* Log-probabilities of the raw logits: the chosen token's and the top n alternatives (descending). */
static void logprobs_(kiln_gen *g, int32_t chosen, kiln_gen_event *ev) {
  const float *x = g->raw;
  const int V = g->n_vocab;
  float mx = -INFINITY;
  for (int i = 0; i < V; i++)
    if (x[i] > mx) mx = x[i];
  double sum = 0;
  for (int i = 0; i < V; i++) sum += exp((double)x[i] - mx);
  const double lse = mx + log(sum);
  ev->logprob = (float)((double)x[chosen] - lse);
  const int k = g->p.top_logprobs < V ? g->p.top_logprobs : V;
  int n = 0;
  for (int i = 0; i < V && k > 0; i++) { /* insertion into a sorted list of at most k: ties keep the lower id first */
    if (n == k && !(x[i] > x[ev->top_ids[n - 1]])) continue;
    int j = n < k ? n++ : n - 1;
    while (j > 0 && x[i] > x[ev->top_ids[j - 1]]) {
      ev->top_ids[j] = ev->top_ids[j - 1];
      j--;
    }
    ev->top_ids[j] = i;
  }
  ev->n_top = n;
  for (int i = 0; i < n; i++) ev->top_logprobs[i] = (float)((double)x[ev->top_ids[i]] - lse);
}

/* Appends a token's bytes to the pending text. */
static int append_token_(kiln_gen *g, int32_t t) {
  if (!g->tok) return KILN_OK;
  const char *b;
  size_t len;
  int rc = kiln_tokenizer_token_bytes(g->tok, t, &b, &len);
  /* a model's vocabulary is often padded past the tokenizer's: such an id has no text (as HF decodes it) */
  if (rc == KILN_ERANGE) return KILN_OK;
  if (rc) return rc;
  if ((rc = grow_(&g->pending, &g->cap_pending, g->n_pending + len))) return rc;
  memcpy(g->pending + g->n_pending, b, len);
  g->n_pending += len;
  return KILN_OK;
}

/* Releases what can be shown; returns true when a stop string was reached. */
static int release_(kiln_gen *g, bool final, kiln_gen_event *ev, bool *stopped) {
  kiln_release r = kiln_text_release(g->pending, g->n_pending, g->stops, g->stop_lens, g->p.n_stop, final);
  int rc = grow_(&g->text, &g->cap_text, 3 * r.release + 1);
  if (rc) return rc;
  size_t n = kiln_utf8_sanitize(g->text, g->cap_text, g->pending, r.release);
  g->text[n] = '\0';
  ev->text = g->text;
  ev->text_len = n;
  memmove(g->pending, g->pending + r.consumed, g->n_pending - r.consumed);
  g->n_pending -= r.consumed;
  *stopped = r.stopped;
  return KILN_OK;
}

int kiln_gen_step(kiln_gen *g, kiln_gen_event *ev) {
  if (!g || !ev) return kiln_error(KILN_EINVAL, "generate: NULL argument");
  memset(ev, 0, sizeof *ev);
  ev->token = -1;
  ev->text = "";
  if (g->done) return kiln_error(KILN_ECLOSED, "generate: the generation has finished");
  int rc;
  int32_t t;
  if (g->n_ids > 0 && g->device_sample) {
    rc = kiln__engine_decode_sample(g->e, g->seq, g->ids[g->n_ids - 1], &g->p.sampling, (uint64_t)g->n_ids, &t);
    if (rc) return rc;
  } else {
    if (g->n_ids == 0) rc = kiln_engine_forward(g->e, g->seq, g->prompt, g->n_prompt, g->logits, false);
    else rc = kiln_engine_forward(g->e, g->seq, &g->ids[g->n_ids - 1], 1, g->logits, false);
    if (rc) return rc;
    if (g->raw) memcpy(g->raw, g->logits, (size_t)g->n_vocab * sizeof *g->raw);
    t = kiln_sampler_sample(g->sampler, g->logits);
    if (g->raw) logprobs_(g, t, ev);
  }
  g->ids[g->n_ids++] = t;
  ev->token = t;
  double now = kiln_mono_ms();
  if (g->n_ids == 1) g->t_first = now;
  g->t_last = now;

  kiln_finish fin = KILN_FINISH_NONE;
  const bool eos = !g->p.ignore_eos && is_eos_(g, t);
  if (eos) fin = KILN_FINISH_STOP;
  else if ((rc = append_token_(g, t))) return rc;
  /* the chosen token must be appended before the next step can run */
  const bool ctx_full = kiln_engine_seq_pos(g->e, g->seq) >= kiln_engine_n_ctx(g->e);
  if (fin == KILN_FINISH_NONE && ((g->p.max_tokens > 0 && g->n_ids >= g->p.max_tokens) || ctx_full))
    fin = KILN_FINISH_LENGTH;
  bool stopped = false;
  if ((rc = release_(g, fin != KILN_FINISH_NONE, ev, &stopped))) return rc;
  if (stopped) fin = KILN_FINISH_STOP;
  ev->finish = fin;
  if (fin != KILN_FINISH_NONE) g->done = true;
  return KILN_OK;
}

void kiln_gen_get_stats(const kiln_gen *g, kiln_gen_stats *st) {
  memset(st, 0, sizeof *st);
  if (!g) return;
  st->prompt_tokens = g->n_prompt;
  st->completion_tokens = g->n_ids;
  st->ttft_ms = g->n_ids > 0 ? g->t_first - g->t_start : 0;
  st->decode_ms = g->n_ids > 1 ? g->t_last - g->t_first : 0;
}

const int32_t *kiln_gen_ids(const kiln_gen *g, int *n) {
  if (n) *n = g ? g->n_ids : 0;
  return g ? g->ids : NULL;
}
