/*
 * server/server_routes.c: the small routes: GET /v1/models (and /v1/models/{id}), GET /health, GET /metrics,
 * POST /tokenize and POST /detokenize (vLLM's shapes). They run on the connection's thread; the tokenizer is
 * read-only after loading and safe to use from many threads at once.
 */
#include <stdlib.h>
#include <string.h>

#include "kiln/status.h"
#include "server/server_impl.h"

/* 1 ready; otherwise answers 503 and returns 0. */
static int ready_or_503(srv_req *r, struct MHD_Connection *c, enum MHD_Result *ret) {
  int st = atomic_load_explicit(&r->s->ready, memory_order_acquire);
  if (st == 1) return 1;
  *ret = srv_reply_error(r, c, 503, "server_error", "model_loading", NULL,
                         st == 0 ? "The model is still loading; try again shortly." : "The model failed to load.");
  return 0;
}

static json_t *model_card(const struct kiln_server *s) {
  return json_pack("{s:s, s:s, s:I, s:s, s:s, s:i}", "id", s->model_id, "object", "model", "created",
                   (json_int_t)s->created, "owned_by", "kiln", "root", s->model_id, "max_model_len", s->n_ctx);
}

enum MHD_Result srv_route_models(srv_req *r, struct MHD_Connection *c, const char *id) {
  enum MHD_Result ret;
  if (!ready_or_503(r, c, &ret)) return ret;
  if (id) {
    if (strcmp(id, r->s->model_id) != 0)
      return srv_reply_error(r, c, 404, "invalid_request_error", "model_not_found", "model",
                             "The model `%.200s` does not exist.", id);
    return srv_reply_json(r, c, 200, model_card(r->s));
  }
  json_t *card = model_card(r->s);
  return srv_reply_json(r, c, 200, card ? json_pack("{s:s, s:[o]}", "object", "list", "data", card) : NULL);
}

enum MHD_Result srv_route_health(srv_req *r, struct MHD_Connection *c) {
  int st = atomic_load_explicit(&r->s->ready, memory_order_acquire);
  if (st == 1) return srv_reply_json(r, c, 200, json_pack("{s:s}", "status", "ok"));
  if (st == 0) return srv_reply_json(r, c, 503, json_pack("{s:s}", "status", "loading"));
  return srv_reply_json(r, c, 503, json_pack("{s:s, s:s}", "status", "error", "message", r->s->load_error));
}

enum MHD_Result srv_route_metrics(srv_req *r, struct MHD_Connection *c) {
  char *text;
  size_t len;
  if (srv_metrics_render(r->s, &text, &len))
    return srv_reply_error(r, c, 500, "server_error", NULL, NULL, "%s", kiln_last_error());
  return srv_reply(r, c, 200, "text/plain; version=0.0.4; charset=utf-8", text, len);
}

/* Renders a chat request's messages to prompt text (server_gen.c). */
int srv_render_chat(const struct kiln_server *s, const json_t *body, char **text, size_t *len, srv_err *e);

enum MHD_Result srv_route_tokenize(srv_req *r, struct MHD_Connection *c, json_t *body) {
  enum MHD_Result ret;
  if (!ready_or_503(r, c, &ret)) return ret;
  struct kiln_server *s = r->s;
  srv_err e;
  if (!srv_check_model(s, body, &e)) return srv_reply_err(r, c, &e);
  const json_t *prompt = json_object_get(body, "prompt");
  const json_t *msgs = json_object_get(body, "messages");
  bool add_special = true;
  const json_t *as = json_object_get(body, "add_special_tokens");
  if (as && !json_is_null(as)) {
    if (!json_is_boolean(as))
      return srv_reply_error(r, c, 400, "invalid_request_error", NULL, "add_special_tokens",
                             "'add_special_tokens' must be a boolean");
    add_special = json_is_true(as);
  }
  char *rendered = NULL;
  const char *text;
  size_t len;
  if (json_is_string(prompt) && !msgs) {
    text = json_string_value(prompt);
    len = json_string_length(prompt);
  } else if (msgs && !prompt) {
    if (srv_render_chat(s, body, &rendered, &len, &e)) return srv_reply_err(r, c, &e);
    text = rendered;
    add_special = false; /* the template writes its own special tokens */
  } else {
    return srv_reply_error(r, c, 400, "invalid_request_error", NULL, "prompt",
                           "Give either 'prompt' (a string) or 'messages'.");
  }
  int32_t *ids = NULL;
  size_t n = 0;
  int rc = kiln_tokenizer_encode(s->tok, text, len, &ids, &n);
  free(rendered);
  if (rc) return srv_reply_error(r, c, 400, "invalid_request_error", NULL, "prompt", "%s", kiln_last_error());
  json_t *arr = json_array();
  if (arr && add_special && s->bos_id >= 0) json_array_append_new(arr, json_integer(s->bos_id));
  for (size_t i = 0; arr && i < n; i++) json_array_append_new(arr, json_integer(ids[i]));
  free(ids);
  if (!arr) return srv_reply_json(r, c, 500, NULL);
  return srv_reply_json(r, c, 200, json_pack("{s:I, s:i, s:o}", "count", (json_int_t)json_array_size(arr),
                                             "max_model_len", s->n_ctx, "tokens", arr));
}

enum MHD_Result srv_route_detokenize(srv_req *r, struct MHD_Connection *c, json_t *body) {
  enum MHD_Result ret;
  if (!ready_or_503(r, c, &ret)) return ret;
  struct kiln_server *s = r->s;
  srv_err e;
  if (!srv_check_model(s, body, &e)) return srv_reply_err(r, c, &e);
  const json_t *toks = json_object_get(body, "tokens");
  if (!json_is_array(toks))
    return srv_reply_error(r, c, 400, "invalid_request_error", NULL, "tokens", "'tokens' must be a list of ids");
  size_t n = json_array_size(toks);
  int32_t *ids = malloc((n ? n : 1) * sizeof *ids);
  if (!ids) return srv_reply_json(r, c, 500, NULL);
  for (size_t i = 0; i < n; i++) {
    const json_t *v = json_array_get(toks, i);
    if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) >= s->n_vocab) {
      free(ids);
      return srv_reply_error(r, c, 400, "invalid_request_error", NULL, "tokens",
                             "'tokens'[%zu] is not a token id in [0, %d)", i, s->n_vocab);
    }
    ids[i] = (int32_t)json_integer_value(v);
  }
  char *text = NULL;
  size_t len = 0;
  int rc = kiln_tokenizer_decode(s->tok, ids, n, &text, &len);
  free(ids);
  if (rc) return srv_reply_error(r, c, 400, "invalid_request_error", NULL, "tokens", "%s", kiln_last_error());
  json_t *t = srv_json_text(text, len);
  free(text);
  return srv_reply_json(r, c, 200, t ? json_pack("{s:o}", "prompt", t) : NULL);
}
