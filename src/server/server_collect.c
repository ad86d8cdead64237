/*
 * server/server_collect.c: POST /v1/completions and /v1/chat/completions. The request is submitted to the engine
 * (server_gen.c); a streaming request continues in server_stream.c, any other waits here, on its connection's
 * thread, for all its choices and answers with one JSON body. A client that hangs up meanwhile cancels the work.
 */
#include <stdlib.h>
#include <string.h>

#include "kiln/status.h"
#include "server/server_gen.h"

/* Continues a streaming request (server_stream.c): queues the event-stream response. Takes `g` (heap). */
enum MHD_Result srv_stream_start(srv_req *r, struct MHD_Connection *c, srv_gen *g);

/* Prompt tokens' logprobs (echo + logprobs) go first in a completion choice's logprobs. */
static int add_prompt_lp(srv_gen *g, int task) {
  srv_choice *ch = &g->ch[task];
  const srv_task *t = &g->job->tasks[task];
  const int W = 1 + g->job->top;
  if (!ch->lp && !(ch->lp = srv_cmpl_lp_new())) return KILN_ENOMEM;
  for (int i = 0; i < t->n_prompt; i++) {
    const srv_top *row = t->prompt_lp + (size_t)i * (size_t)W;
    int rc = srv_cmpl_lp_append(g->s, ch->lp, row[0].id, row[0].lp, row + 1, W - 1, &ch->text_chars);
    if (rc) return rc;
  }
  return KILN_OK;
}

static int on_step(srv_gen *g, const kiln_rec *rec) {
  const srv_top *tops;
  const char *text;
  const srv_ev_step *st = srv_gen_step(g, rec, &tops, &text);
  if (!st) return kiln_error(KILN_ECORRUPT, "server: malformed event");
  srv_choice *ch = &g->ch[st->task];
  if (!kiln_strbuf_put(&ch->text, text, st->text_len)) return KILN_ENOMEM;
  if (g->p.logprobs && st->token >= 0) {
    if (g->chat) {
      if (!ch->lp && !(ch->lp = json_array())) return KILN_ENOMEM;
      json_t *e = srv_chat_lp_entry(g->s, st->token, st->logprob, tops, st->n_top);
      if (!e || json_array_append_new(ch->lp, e)) return KILN_ENOMEM;
    } else {
      if (!ch->lp && !(ch->lp = srv_cmpl_lp_new())) return KILN_ENOMEM;
      if (srv_cmpl_lp_append(g->s, ch->lp, st->token, st->logprob, tops, st->n_top, &ch->text_chars))
        return KILN_ENOMEM;
    }
  }
  return KILN_OK;
}

static json_t *choice_json(srv_gen *g, int i) {
  srv_choice *ch = &g->ch[i];
  const char *fin = srv_finish_name(ch->finish);
  json_t *finish = fin ? json_string(fin) : json_null();
  if (g->chat) {
    json_t *content = srv_json_text(ch->text.p ? ch->text.p : "", ch->text.n);
    json_t *lp = g->p.logprobs ? json_pack("{s:o}", "content", ch->lp ? json_incref(ch->lp) : json_array())
                               : json_null();
    return json_pack("{s:i, s:{s:s, s:o, s:n}, s:o, s:o}", "index", i, "message", "role", "assistant", "content",
                     content, "refusal", "logprobs", lp, "finish_reason", finish);
  }
  const srv_task *t = &g->job->tasks[i];
  json_t *text;
  if (g->p.echo) {
    size_t el = g->echo_len[t->prompt_index];
    char *both = malloc(el + ch->text.n + 1);
    if (!both) {
      json_decref(finish);
      return NULL;
    }
    memcpy(both, g->echo_text[t->prompt_index], el);
    if (ch->text.n) memcpy(both + el, ch->text.p, ch->text.n);
    text = srv_json_text(both, el + ch->text.n);
    free(both);
  } else {
    text = srv_json_text(ch->text.p ? ch->text.p : "", ch->text.n);
  }
  json_t *lp = g->p.logprobs ? (ch->lp ? json_incref(ch->lp) : srv_cmpl_lp_new()) : json_null();
  return json_pack("{s:i, s:o, s:o, s:o}", "index", i, "text", text, "logprobs", lp, "finish_reason", finish);
}

static json_t *response_json(srv_gen *g) {
  json_t *choices = json_array();
  int completion = 0;
  for (int i = 0; choices && i < g->n_choices; i++) {
    json_t *cj = choice_json(g, i);
    if (!cj || json_array_append_new(choices, cj)) {
      json_decref(choices);
      return NULL;
    }
    completion += g->ch[i].completion_tokens;
  }
  if (!choices) return NULL;
  json_t *v = json_pack("{s:s, s:s, s:I, s:s, s:o, s:o}", "id", g->req_id, "object",
                        g->chat ? "chat.completion" : "text_completion", "created", (json_int_t)g->created, "model",
                        g->s->model_id, "choices", choices, "usage", srv_usage_json(g->prompt_tokens, completion));
  if (v && g->chat) json_object_set_new(v, "system_fingerprint", json_string("kiln-" KILN_VERSION));
  return v;
}

static enum MHD_Result collect(srv_req *r, struct MHD_Connection *c, srv_gen *g) {
  for (;;) {
    const kiln_rec *rec;
    int rc = srv_gen_next(g, &rec, 1000);
    if (rc == KILN_ETIMEDOUT) continue;
    if (rc == KILN_ECANCELED) { /* the client hung up: stop its work and close */
      srv_gen_cancel(g);
      r->status = 499;
      return MHD_NO;
    }
    if (rc != KILN_OK) {
      srv_gen_cancel(g);
      return srv_reply_error(r, c, 503, "server_error", NULL, NULL, "The server is shutting down.");
    }
    uint32_t type = rec->type;
    if (type == SRV_EV_STEP) {
      rc = on_step(g, rec);
    } else if (type == SRV_EV_PROMPT_LP && rec->size == sizeof(int)) {
      int task;
      memcpy(&task, kiln_rec_data(rec), sizeof task);
      rc = task >= 0 && task < g->n_choices ? add_prompt_lp(g, task) : KILN_ECORRUPT;
    } else if (type == SRV_EV_ERROR && rec->size == sizeof(srv_ev_error)) {
      srv_ev_error err;
      srv_gen_take_error(g, rec, &err);
      return srv_reply_error(r, c, err.http, err.http < 500 ? "invalid_request_error" : "server_error",
                             err.status == KILN_ECONTEXT ? "context_length_exceeded" : NULL, NULL, "%s", err.msg);
    } else if (type == SRV_EV_END) {
      json_t *v = response_json(g); /* reads the job's tasks: before we let go of it */
      srv_gen_release_rec(g);
      srv_gen_done(g);
      return v ? srv_reply_json(r, c, 200, v) : srv_reply_error(r, c, 500, "server_error", NULL, NULL, "out of memory");
    }
    srv_gen_release_rec(g);
    if (rc) {
      srv_gen_cancel(g);
      return srv_reply_error(r, c, 500, "server_error", NULL, NULL, "%s", kiln_strerror(rc));
    }
  }
}

enum MHD_Result srv_route_generate(srv_req *r, struct MHD_Connection *c, json_t *body, bool chat) {
  struct kiln_server *s = r->s;
  int st = atomic_load_explicit(&s->ready, memory_order_acquire);
  if (st != 1)
    return srv_reply_error(r, c, 503, "server_error", "model_loading", NULL,
                           st == 0 ? "The model is still loading; try again shortly." : "The model failed to load.");
  const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
  int fd = ci ? ci->connect_fd : -1;
  srv_gen *g = malloc(sizeof *g);
  if (!g) return srv_reply_error(r, c, 500, "server_error", NULL, NULL, "out of memory");
  srv_err e;
  if (!srv_gen_submit(g, s, body, chat, fd, &e)) {
    srv_gen_free(g);
    free(g);
    return srv_reply_err(r, c, &e);
  }
  if (g->p.stream) return srv_stream_start(r, c, g);
  enum MHD_Result ret = collect(r, c, g);
  srv_gen_cancel(g); /* no-op unless a path above left the request running */
  srv_gen_free(g);
  free(g);
  return ret;
}
