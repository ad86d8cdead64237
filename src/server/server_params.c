/*
 * server/server_params.c: the sampling and output parameters of /v1/completions and /v1/chat/completions, checked
 * as OpenAI checks them (types, ranges; the parameter's name in the error's `param`). null means "not given".
 * Unknown fields are ignored. Extensions in the spirit of vLLM: top_k, min_p, repetition_penalty, ignore_eos.
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "server/server_impl.h"

#define SRV_MAX_N 64         /* choices per request */
#define SRV_MAX_USER_STOP 4  /* OpenAI's limit; leaves room for the template's end-of-turn stop */
#define SRV_MAX_STOP_LEN 256 /* bytes per stop string */

bool srv_fail(srv_err *e, int http, const char *type, const char *code, const char *param, const char *fmt, ...) {
  e->http = http;
  e->type = type;
  e->code = code;
  snprintf(e->param, sizeof e->param, "%s", param ? param : "");
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(e->msg, sizeof e->msg, fmt, ap);
  va_end(ap);
  return false;
}

#define BAD(e, param, ...) srv_fail((e), 400, "invalid_request_error", NULL, (param), __VA_ARGS__)

/* A number field: absent or null leaves *out; otherwise it must be a number within [lo, hi]. */
static bool get_num(const json_t *body, const char *key, double lo, double hi, double *out, srv_err *e) {
  const json_t *v = json_object_get(body, key);
  if (!v || json_is_null(v)) return true;
  if (!json_is_number(v)) return BAD(e, key, "'%s' must be a number", key);
  double x = json_number_value(v);
  if (!(x >= lo && x <= hi)) return BAD(e, key, "'%s' must be between %g and %g, got %g", key, lo, hi, x);
  *out = x;
  return true;
}

/* An integer field (a float with an integral value is accepted, as Python's SDK may send 5.0). */
static bool get_int(const json_t *body, const char *key, int64_t lo, int64_t hi, int64_t *out, bool *given,
                    srv_err *e) {
  const json_t *v = json_object_get(body, key);
  if (!v || json_is_null(v)) return true;
  int64_t x;
  if (json_is_integer(v)) {
    x = json_integer_value(v);
  } else if (json_is_real(v) && json_real_value(v) == floor(json_real_value(v)) && fabs(json_real_value(v)) < 9e18) {
    x = (int64_t)json_real_value(v);
  } else {
    return BAD(e, key, "'%s' must be an integer", key);
  }
  if (x < lo || x > hi)
    return BAD(e, key, "'%s' must be between %lld and %lld, got %lld", key, (long long)lo, (long long)hi,
               (long long)x);
  *out = x;
  if (given) *given = true;
  return true;
}

static bool get_bool(const json_t *body, const char *key, bool *out, srv_err *e) {
  const json_t *v = json_object_get(body, key);
  if (!v || json_is_null(v)) return true;
  if (!json_is_boolean(v)) return BAD(e, key, "'%s' must be a boolean", key);
  *out = json_is_true(v);
  return true;
}

static bool add_stop(srv_params *p, const json_t *v, srv_err *e) {
  if (!json_is_string(v)) return BAD(e, "stop", "'stop' must be a string or a list of strings");
  size_t n = json_string_length(v);
  if (n == 0) return true; /* an empty stop string would end every generation at once: ignored */
  if (n > SRV_MAX_STOP_LEN) return BAD(e, "stop", "each stop string must be at most %d bytes", SRV_MAX_STOP_LEN);
  if (strlen(json_string_value(v)) != n) return BAD(e, "stop", "stop strings must not contain NUL");
  if (p->gen.n_stop == SRV_MAX_USER_STOP)
    return BAD(e, "stop", "at most %d stop strings are allowed", SRV_MAX_USER_STOP);
  p->gen.stop[p->gen.n_stop++] = json_string_value(v);
  return true;
}

bool srv_params_parse(const json_t *body, bool chat, int n_vocab, srv_params *p, srv_err *e) {
  memset(p, 0, sizeof *p);
  p->gen = kiln_gen_params_default();
  kiln_sampling *s = &p->gen.sampling;
  s->temperature = 1.0f; /* OpenAI's default */
  p->n = 1;
  double x;
  int64_t i64;

  /* max_completion_tokens (newer name) wins over max_tokens; both must be valid when both are given. */
  int64_t mt = -1;
  bool mt_given = false;
  if (!get_int(body, "max_tokens", 1, INT32_MAX, &mt, &mt_given, e)) return false;
  if (!get_int(body, "max_completion_tokens", 1, INT32_MAX, &mt, &mt_given, e)) return false;
  p->max_tokens_given = mt_given;
  p->gen.max_tokens = mt_given ? (int)mt : (chat ? 0 : 16);

  x = s->temperature;
  if (!get_num(body, "temperature", 0, 2, &x, e)) return false;
  s->temperature = (float)x;
  x = 1;
  if (!get_num(body, "top_p", 0, 1, &x, e)) return false;
  if (x <= 0) return BAD(e, "top_p", "'top_p' must be greater than 0");
  s->top_p = (float)x;
  i64 = 0;
  if (!get_int(body, "top_k", -1, INT32_MAX, &i64, NULL, e)) return false;
  s->top_k = i64 < 0 ? 0 : (int)(i64 > n_vocab ? n_vocab : i64);
  x = 0;
  if (!get_num(body, "min_p", 0, 1, &x, e)) return false;
  s->min_p = (float)x;
  x = 0;
  if (!get_num(body, "presence_penalty", -2, 2, &x, e)) return false;
  s->presence_penalty = (float)x;
  x = 0;
  if (!get_num(body, "frequency_penalty", -2, 2, &x, e)) return false;
  s->frequency_penalty = (float)x;
  x = 1;
  if (!get_num(body, "repetition_penalty", 0, 100, &x, e)) return false;
  if (x <= 0) return BAD(e, "repetition_penalty", "'repetition_penalty' must be greater than 0");
  s->repetition_penalty = (float)x;
  i64 = 0;
  if (!get_int(body, "seed", INT64_MIN, INT64_MAX, &i64, &p->seed_given, e)) return false;
  s->seed = (uint64_t)i64;
  i64 = 1;
  if (!get_int(body, "n", 1, SRV_MAX_N, &i64, NULL, e)) return false;
  p->n = (int)i64;
  if (!get_bool(body, "ignore_eos", &p->gen.ignore_eos, e)) return false;
  if (!get_bool(body, "stream", &p->stream, e)) return false;

  const json_t *so = json_object_get(body, "stream_options");
  if (so && !json_is_null(so)) {
    if (!json_is_object(so)) return BAD(e, "stream_options", "'stream_options' must be an object");
    if (!p->stream) return BAD(e, "stream_options", "'stream_options' is only allowed when 'stream' is true");
    if (!get_bool(so, "include_usage", &p->include_usage, e)) {
      snprintf(e->param, sizeof e->param, "stream_options.include_usage");
      return false;
    }
  }

  const json_t *stop = json_object_get(body, "stop");
  if (json_is_array(stop)) {
    for (size_t k = 0; k < json_array_size(stop); k++)
      if (!add_stop(p, json_array_get(stop, k), e)) return false;
  } else if (stop && !json_is_null(stop) && !add_stop(p, stop, e)) {
    return false;
  }

  if (chat) {
    /* logprobs: bool; top_logprobs: 0..20, only with logprobs. */
    if (!get_bool(body, "logprobs", &p->logprobs, e)) return false;
    i64 = 0;
    bool top_given = false;
    if (!get_int(body, "top_logprobs", 0, KILN_MAX_TOP_LOGPROBS, &i64, &top_given, e)) return false;
    if (top_given && !p->logprobs)
      return BAD(e, "top_logprobs", "'top_logprobs' requires 'logprobs' to be true");
    p->top_logprobs = (int)i64;
  } else {
    /* logprobs: the number of alternatives, 0..20 (OpenAI allows 5; vLLM 20). */
    i64 = -1;
    if (!get_int(body, "logprobs", 0, KILN_MAX_TOP_LOGPROBS, &i64, NULL, e)) return false;
    p->logprobs = i64 >= 0;
    p->top_logprobs = i64 >= 0 ? (int)i64 : 0;
    if (!get_bool(body, "echo", &p->echo, e)) return false;
    i64 = 1;
    if (!get_int(body, "best_of", 1, SRV_MAX_N, &i64, NULL, e)) return false;
    if (i64 != 1 && i64 != p->n)
      return BAD(e, "best_of", "'best_of' other than 1 or 'n' is not supported");
  }
  p->gen.top_logprobs = p->logprobs ? p->top_logprobs : -1;
  return true;
}
