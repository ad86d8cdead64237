/*
 * server/server_format.c: JSON pieces shared by streamed and whole responses: token strings, logprobs in the chat
 * shape ({"content": [{"token", "logprob", "bytes", "top_logprobs"}]}) and in the completions shape
 * ({"tokens", "token_logprobs", "top_logprobs", "text_offset"}), usage, finish reasons.
 */
#include <math.h>
#include <string.h>

#include "kiln/status.h"
#include "server/server_gen.h"

const char *srv_finish_name(int finish) {
  return finish == KILN_FINISH_STOP ? "stop" : finish == KILN_FINISH_LENGTH ? "length" : NULL;
}

json_t *srv_lp_json(float lp) {
  if (isnan(lp)) return json_null();
  return json_real(isfinite(lp) ? (double)lp : -9999.0);
}

json_t *srv_token_json(const struct kiln_server *s, int32_t id, const char **bytes, size_t *n) {
  const char *b = "";
  size_t len = 0;
  if (id < 0 || kiln_tokenizer_token_bytes(s->tok, id, &b, &len) != KILN_OK) {
    b = "";
    len = 0;
  }
  if (bytes) *bytes = b;
  if (n) *n = len;
  return srv_json_text(b, len);
}

static json_t *bytes_json(const char *b, size_t n) {
  json_t *arr = json_array();
  for (size_t i = 0; arr && i < n; i++)
    if (json_array_append_new(arr, json_integer((unsigned char)b[i]))) {
      json_decref(arr);
      return NULL;
    }
  return arr;
}

static json_t *chat_lp_one(const struct kiln_server *s, int32_t id, float lp) {
  const char *b;
  size_t n;
  json_t *tok = srv_token_json(s, id, &b, &n);
  json_t *by = bytes_json(b, n);
  if (!tok || !by) {
    json_decref(tok);
    json_decref(by);
    return NULL;
  }
  return json_pack("{s:o, s:o, s:o}", "token", tok, "logprob", srv_lp_json(lp), "bytes", by);
}

json_t *srv_chat_lp_entry(const struct kiln_server *s, int32_t id, float lp, const srv_top *tops, int n_top) {
  json_t *e = chat_lp_one(s, id, lp);
  json_t *alts = json_array();
  if (!e || !alts) {
    json_decref(e);
    json_decref(alts);
    return NULL;
  }
  for (int k = 0; k < n_top; k++) {
    if (tops[k].id < 0) continue;
    json_t *a = chat_lp_one(s, tops[k].id, tops[k].lp);
    if (!a || json_array_append_new(alts, a)) {
      json_decref(e);
      json_decref(alts);
      return NULL;
    }
  }
  json_object_set_new(e, "top_logprobs", alts);
  return e;
}

json_t *srv_cmpl_lp_new(void) {
  return json_pack("{s:[], s:[], s:[], s:[]}", "tokens", "token_logprobs", "top_logprobs", "text_offset");
}

int srv_cmpl_lp_append(const struct kiln_server *s, json_t *obj, int32_t id, float lp, const srv_top *tops,
                       int n_top, size_t *chars) {
  json_t *tok = srv_token_json(s, id, NULL, NULL);
  if (!tok) return KILN_ENOMEM;
  size_t nchars = 0; /* characters of the token's text, for the next offset */
  for (const unsigned char *p = (const unsigned char *)json_string_value(tok); *p; p++) nchars += (*p & 0xc0) != 0x80;
  json_t *top;
  if (isnan(lp)) {
    top = json_null(); /* the first prompt token has no logprob and no alternatives */
  } else {
    top = json_object();
    for (int k = 0; top && k < n_top; k++) {
      if (tops[k].id < 0) continue;
      json_t *t = srv_token_json(s, tops[k].id, NULL, NULL);
      if (!t) break;
      json_object_set_new(top, json_string_value(t), srv_lp_json(tops[k].lp));
      json_decref(t);
    }
  }
  int rc = 0;
  rc |= json_array_append_new(json_object_get(obj, "tokens"), tok);
  rc |= json_array_append_new(json_object_get(obj, "token_logprobs"), srv_lp_json(lp));
  rc |= json_array_append_new(json_object_get(obj, "top_logprobs"), top);
  rc |= json_array_append_new(json_object_get(obj, "text_offset"), json_integer((json_int_t)*chars));
  *chars += nchars;
  return rc ? KILN_ENOMEM : KILN_OK;
}

json_t *srv_usage_json(int prompt_tokens, int completion_tokens) {
  return json_pack("{s:i, s:i, s:i}", "prompt_tokens", prompt_tokens, "completion_tokens", completion_tokens,
                   "total_tokens", prompt_tokens + completion_tokens);
}
