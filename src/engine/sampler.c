/*
 * The sampler (kiln/sampler.h).
 *
 * Penalties. The repetition penalty (HF RepetitionPenaltyLogitsProcessor) applies to every token seen: the prompt
 * (recorded with kiln_sampler_accept) and the generated tokens. Presence and frequency penalties (OpenAI) apply to
 * generated tokens only: logit -= presence + frequency * count. Each is applied once per distinct token.
 *
 * Filters (HF logits warpers, in this order, after temperature): top-k keeps every token whose logit is at least
 * the k-th largest (ties at the boundary are kept, as torch.topk + `<` does); top-p keeps, in descending order,
 * each token while the probability of the tokens before it is < top_p (so at least one); min-p keeps the tokens
 * whose probability is >= min_p times the largest. The draw is from the softmax of what remains.
 *
 * Top-p sorts only the tokens within KILN_TOP_P_SPAN of the largest logit: the others together weigh less than
 * vocab * e^-KILN_TOP_P_SPAN (< 1e-8 for 152k tokens), below the resolution of a float top_p < 1, so they can never
 * be reached by the cumulative sum.
 *
 * Determinism: xoshiro256** seeded through splitmix64 from the seed; probabilities and sums in double; ties broken
 * by the lower id. Same seed and logits, same token.
 */
#include "kiln/sampler.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "kiln/status.h"

#define KILN_TOP_P_SPAN 30.0f

typedef struct cand {
  float logit;
  int32_t id;
} cand;

struct kiln_sampler {
  kiln_sampling p;
  int n_vocab;
  uint64_t rng[4];
  uint8_t *seen;     /* [n_vocab] prompt or generated (repetition penalty) */
  int32_t *count;    /* [n_vocab] occurrences among generated tokens */
  int32_t *seen_ids; /* distinct seen ids, in first-seen order */
  int n_seen;
  int32_t *gen_ids;  /* distinct generated ids */
  int n_gen;
  cand *cands;       /* [n_vocab] scratch */
  float *vals;       /* [n_vocab] scratch for the k-th largest */
};

static uint64_t splitmix64_(uint64_t *s) {
  uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

static inline uint64_t rotl_(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t xoshiro_next_(uint64_t *s) {
  const uint64_t result = rotl_(s[1] * 5, 7) * 9;
  const uint64_t t = s[1] << 17;
  s[2] ^= s[0];
  s[3] ^= s[1];
  s[1] ^= s[2];
  s[0] ^= s[3];
  s[2] ^= t;
  s[3] = rotl_(s[3], 45);
  return result;
}

/* Uniform in [0, 1) with 53 random bits. */
static double uniform_(kiln_sampler *s) { return (double)(xoshiro_next_(s->rng) >> 11) * 0x1.0p-53; }

kiln_sampling kiln_sampling_default(void) {
  kiln_sampling p = {.temperature = 0.0f, .top_k = 0, .top_p = 1.0f, .min_p = 0.0f, .repetition_penalty = 1.0f,
                     .presence_penalty = 0.0f, .frequency_penalty = 0.0f, .seed = 0};
  return p;
}

void kiln_sampler_free(kiln_sampler *s) {
  if (!s) return;
  free(s->seen);
  free(s->count);
  free(s->seen_ids);
  free(s->gen_ids);
  free(s->cands);
  free(s->vals);
  free(s);
}

int kiln_sampler_create(kiln_sampler **out, const kiln_sampling *params, int n_vocab) {
  *out = NULL;
  if (n_vocab <= 0) return kiln_error(KILN_EINVAL, "sampler: vocabulary of %d tokens", n_vocab);
  kiln_sampling p = params ? *params : kiln_sampling_default();
  if (!(p.temperature >= 0) || !(p.top_p >= 0) || isnan(p.min_p) || !(p.repetition_penalty > 0) ||
      !isfinite(p.presence_penalty) || !isfinite(p.frequency_penalty) || !isfinite(p.temperature))
    return kiln_error(KILN_EINVAL, "sampler: invalid parameters (temperature %g, top_p %g, repetition %g)",
                      (double)p.temperature, (double)p.top_p, (double)p.repetition_penalty);
  kiln_sampler *s = calloc(1, sizeof *s);
  if (!s) return kiln_error(KILN_ENOMEM, "sampler: out of memory");
  s->p = p;
  s->n_vocab = n_vocab;
  s->seen = calloc((size_t)n_vocab, 1);
  s->count = calloc((size_t)n_vocab, sizeof *s->count);
  s->seen_ids = malloc((size_t)n_vocab * sizeof *s->seen_ids);
  s->gen_ids = malloc((size_t)n_vocab * sizeof *s->gen_ids);
  s->cands = malloc((size_t)n_vocab * sizeof *s->cands);
  s->vals = malloc((size_t)n_vocab * sizeof *s->vals);
  if (!s->seen || !s->count || !s->seen_ids || !s->gen_ids || !s->cands || !s->vals) {
    kiln_sampler_free(s);
    return kiln_error(KILN_ENOMEM, "sampler: out of memory");
  }
  uint64_t sm = p.seed;
  for (int i = 0; i < 4; i++) s->rng[i] = splitmix64_(&sm);
  *out = s;
  return KILN_OK;
}

void kiln_sampler_accept(kiln_sampler *s, int32_t token) {
  if (token < 0 || token >= s->n_vocab) return;
  if (!s->seen[token]) {
    s->seen[token] = 1;
    s->seen_ids[s->n_seen++] = token;
  }
}

static void record_generated_(kiln_sampler *s, int32_t token) {
  kiln_sampler_accept(s, token);
  if (s->count[token]++ == 0) s->gen_ids[s->n_gen++] = token;
}

static int32_t argmax_(const float *x, int n) {
  int32_t best = 0;
  for (int i = 1; i < n; i++)
    if (x[i] > x[best] || (isnan(x[best]) && !isnan(x[i]))) best = i;
  return best;
}

/* The k-th largest of v[0..n) (1 <= k <= n); v is reordered. Quickselect, expected O(n). */
static float kth_largest_(float *v, int n, int k) {
  int lo = 0, hi = n - 1, want = k - 1;
  uint64_t r = 0x2545f4914f6cdd1dull;
  while (lo < hi) {
    r ^= r << 13, r ^= r >> 7, r ^= r << 17;
    float pivot = v[lo + (int)(r % (uint64_t)(hi - lo + 1))];
    int i = lo, j = hi;
    while (i <= j) { /* descending: big values to the left */
      while (v[i] > pivot) i++;
      while (v[j] < pivot) j--;
      if (i <= j) {
        float t = v[i];
        v[i] = v[j];
        v[j] = t;
        i++;
        j--;
      }
    }
    if (want <= j) hi = j;
    else if (want >= i) lo = i;
    else return v[want];
  }
  return v[want];
}

static int cand_desc_(const void *a, const void *b) {
  const cand *x = a, *y = b;
  if (x->logit != y->logit) return x->logit > y->logit ? -1 : 1;
  return x->id < y->id ? -1 : (x->id > y->id);
}

int32_t kiln_sampler_sample(kiln_sampler *s, float *logits) {
  const int V = s->n_vocab;
  const kiln_sampling *p = &s->p;
  /* penalties */
  if (p->repetition_penalty != 1.0f)
    for (int i = 0; i < s->n_seen; i++) {
      float *l = &logits[s->seen_ids[i]];
      *l = *l > 0 ? *l / p->repetition_penalty : *l * p->repetition_penalty;
    }
  if (p->presence_penalty != 0.0f || p->frequency_penalty != 0.0f)
    for (int i = 0; i < s->n_gen; i++) {
      int32_t id = s->gen_ids[i];
      logits[id] -= p->presence_penalty + p->frequency_penalty * (float)s->count[id];
    }
  int32_t tok;
  if (p->temperature <= 0.0f) {
    tok = argmax_(logits, V);
    record_generated_(s, tok);
    return tok;
  }
  const float inv_t = 1.0f / p->temperature;
  float mx = -INFINITY;
  for (int i = 0; i < V; i++) {
    logits[i] = isnan(logits[i]) ? -INFINITY : logits[i] * inv_t;
    if (logits[i] > mx) mx = logits[i];
  }
  if (mx == -INFINITY) { /* nothing finite: fall back to the lowest id */
    record_generated_(s, 0);
    return 0;
  }
  /* top-k: the threshold logit */
  float floor_logit = -INFINITY;
  if (p->top_k > 0 && p->top_k < V) {
    memcpy(s->vals, logits, (size_t)V * sizeof *s->vals);
    floor_logit = kth_largest_(s->vals, V, p->top_k);
  }
  const bool top_p = p->top_p < 1.0f;
  if (top_p && mx - KILN_TOP_P_SPAN > floor_logit) floor_logit = mx - KILN_TOP_P_SPAN;
  int n = 0;
  for (int i = 0; i < V; i++)
    if (logits[i] >= floor_logit && logits[i] > -INFINITY) s->cands[n++] = (cand){logits[i], i};
  if (top_p) { /* probabilities renormalised over the top-k survivors, as HF's warper sees them */
    qsort(s->cands, (size_t)n, sizeof *s->cands, cand_desc_);
    double z = 0;
    for (int i = 0; i < n; i++) z += exp((double)s->cands[i].logit - mx);
    double cum = 0;
    int keep = 0;
    while (keep < n && (keep == 0 || cum < (double)p->top_p)) {
      cum += exp((double)s->cands[keep].logit - mx) / z;
      keep++;
    }
    n = keep;
  }
  if (p->min_p > 0.0f) { /* prob_i / prob_max = e^(l_i - mx) >= min_p; the largest survives every filter */
    const float mp = p->min_p >= 1.0f ? mx : mx + logf(p->min_p);
    int keep = 0;
    for (int i = 0; i < n; i++)
      if (s->cands[i].logit >= mp) s->cands[keep++] = s->cands[i];
    n = keep;
  }
  double total = 0;
  for (int i = 0; i < n; i++) total += exp((double)s->cands[i].logit - mx);
  double u = uniform_(s) * total, acc = 0;
  tok = s->cands[n - 1].id;
  for (int i = 0; i < n; i++) {
    acc += exp((double)s->cands[i].logit - mx);
    if (u < acc) {
      tok = s->cands[i].id;
      break;
    }
  }
  record_generated_(s, tok);
  return tok;
}
