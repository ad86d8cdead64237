/*
 * server/server_stream.c: streaming responses as server-sent events, framed exactly as OpenAI frames them.
 *
 *   data: {chunk}\n\n   one id for every chunk of a response. Chat: each choice opens with a delta
 *                       {"role": "assistant", "content": ""}, then content deltas, then a chunk with an empty delta
 *                       and the finish_reason. Completions: text chunks (echo first when asked), then the
 *                       finish_reason. With stream_options.include_usage every chunk carries "usage": null and one
 *                       more chunk with "choices": [] and the usage comes last.
 *   data: [DONE]\n\n    the end.
 *   : ping\n\n          a comment when nothing was sent for ping_ms (keeps proxies from timing the stream out).
 *
 * The engine already holds back incomplete UTF-8 and text that may become a stop string (kiln_gen_step), so every
 * delta is final. libmicrohttpd calls the reader on the connection's thread, which may block: it waits on the
 * request's out-ring, and a hung-up client (seen on the socket, or as a failed write) cancels the generation.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kiln/status.h"
#include "server/server_gen.h"

typedef struct srv_stream {
  srv_gen *g;
  kiln_strbuf buf; /* bytes formatted; buf.p[off..buf.n) not yet handed to MHD */
  size_t off;
  bool done;  /* [DONE] formatted: end the stream once buf drains */
  bool oom;
} srv_stream;

static void out(srv_stream *st, const char *p, size_t n) {
  if (!st->oom && !kiln_strbuf_put(&st->buf, p, n)) st->oom = true;
}

/* "data: <json>\n\n"; takes the reference. */
static void emit(srv_stream *st, json_t *v) {
  char *s = v ? json_dumps(v, JSON_COMPACT) : NULL;
  json_decref(v);
  if (!s) {
    st->oom = true;
    return;
  }
  out(st, "data: ", 6);
  out(st, s, strlen(s));
  out(st, "\n\n", 2);
  free(s);
}

static json_t *chunk(srv_gen *g, json_t *choice) {
  json_t *v = json_pack("{s:s, s:s, s:I, s:s}", "id", g->req_id, "object",
                        g->chat ? "chat.completion.chunk" : "text_completion", "created", (json_int_t)g->created,
                        "model", g->s->model_id);
  if (!v) {
    json_decref(choice);
    return NULL;
  }
  if (g->chat) json_object_set_new(v, "system_fingerprint", json_string("kiln-" KILN_VERSION));
  json_object_set_new(v, "choices", choice ? json_pack("[o]", choice) : json_array());
  if (g->p.include_usage && choice) json_object_set_new(v, "usage", json_null());
  return v;
}

/* One choice's chunk; a choice that could not be built (out of memory) ends the stream. */
static void emit_choice(srv_stream *st, json_t *choice) {
  if (!choice) {
    st->oom = true;
    return;
  }
  emit(st, chunk(st->g, choice));
}

static json_t *chat_choice(int index, json_t *delta, json_t *logprobs, const char *finish) {
  return json_pack("{s:i, s:o, s:o, s:o}", "index", index, "delta", delta, "logprobs",
                   logprobs ? logprobs : json_null(), "finish_reason", finish ? json_string(finish) : json_null());
}

static json_t *cmpl_choice(int index, json_t *text, json_t *logprobs, const char *finish) {
  return json_pack("{s:i, s:o, s:o, s:o}", "index", index, "text", text, "logprobs", logprobs ? logprobs : json_null(),
                   "finish_reason", finish ? json_string(finish) : json_null());
}

/* Completions with echo: the prompt's text (and with logprobs, its tokens' logprobs) before anything else. */
static void open_completion(srv_stream *st, int task, bool with_lp) {
  srv_gen *g = st->g;
  srv_choice *ch = &g->ch[task];
  if (ch->opened) return;
  ch->opened = true;
  if (!g->p.echo) return;
  const srv_task *t = &g->job->tasks[task];
  json_t *lp = NULL;
  if (with_lp) {
    lp = srv_cmpl_lp_new();
    const int W = 1 + g->job->top;
    for (int i = 0; lp && i < t->n_prompt; i++) {
      const srv_top *row = t->prompt_lp + (size_t)i * (size_t)W;
      if (srv_cmpl_lp_append(g->s, lp, row[0].id, row[0].lp, row + 1, W - 1, &ch->text_chars)) st->oom = true;
    }
  }
  json_t *text = srv_json_text(g->echo_text[t->prompt_index], g->echo_len[t->prompt_index]);
  emit_choice(st, cmpl_choice(task, text, lp, NULL));
}

static int on_step(srv_stream *st, const kiln_rec *rec) {
  srv_gen *g = st->g;
  const srv_top *tops;
  const char *text;
  const srv_ev_step *ev = srv_gen_step(g, rec, &tops, &text);
  if (!ev) return kiln_error(KILN_ECORRUPT, "server: malformed event");
  int i = (int)ev->task;
  srv_choice *ch = &g->ch[i];
  bool lp_token = g->p.logprobs && ev->token >= 0;
  if (g->chat) {
    if (!ch->opened) {
      ch->opened = true;
      emit_choice(st, chat_choice(i, json_pack("{s:s, s:s}", "role", "assistant", "content", ""), NULL, NULL));
    }
    if (ev->text_len || lp_token) {
      json_t *lp = NULL;
      if (lp_token) {
        json_t *e = srv_chat_lp_entry(g->s, ev->token, ev->logprob, tops, ev->n_top);
        lp = e ? json_pack("{s:[o]}", "content", e) : NULL;
        if (!lp) st->oom = true;
      }
      json_t *content = srv_json_text(text, ev->text_len);
      emit_choice(st, chat_choice(i, content ? json_pack("{s:o}", "content", content) : NULL, lp, NULL));
    }
    if (ev->finish) emit_choice(st, chat_choice(i, json_object(), NULL, srv_finish_name(ev->finish)));
  } else {
    open_completion(st, i, false);
    if (ev->text_len || lp_token) {
      json_t *lp = NULL;
      if (lp_token) {
        lp = srv_cmpl_lp_new();
        if (!lp || srv_cmpl_lp_append(g->s, lp, ev->token, ev->logprob, tops, ev->n_top, &ch->text_chars))
          st->oom = true;
      }
      emit_choice(st, cmpl_choice(i, srv_json_text(text, ev->text_len), lp, NULL));
    }
    if (ev->finish) emit_choice(st, cmpl_choice(i, json_string(""), NULL, srv_finish_name(ev->finish)));
  }
  return KILN_OK;
}

static void finish_stream(srv_stream *st) {
  out(st, "data: [DONE]\n\n", 14);
  st->done = true;
}

static void on_end(srv_stream *st) {
  srv_gen *g = st->g;
  if (g->p.include_usage) {
    int completion = 0;
    for (int i = 0; i < g->n_choices; i++) completion += g->ch[i].completion_tokens;
    json_t *v = chunk(g, NULL);
    if (v) json_object_set_new(v, "usage", srv_usage_json(g->prompt_tokens, completion));
    emit(st, v);
  }
  finish_stream(st);
}

/* OpenAI's mid-stream error: an event with an "error" object, then the end. */
static void on_error(srv_stream *st, int http, int status, const char *msg) {
  json_t *m = srv_json_text(msg, strlen(msg));
  emit(st, json_pack("{s:{s:o, s:s, s:n, s:o}}", "error", "message", m ? m : json_string("error"), "type",
                     http < 500 ? "invalid_request_error" : "server_error", "param", "code",
                     status == KILN_ECONTEXT ? json_string("context_length_exceeded") : json_null()));
  finish_stream(st);
}

static ssize_t reader(void *cls, uint64_t pos, char *buf, size_t max) {
  (void)pos;
  srv_stream *st = cls;
  srv_gen *g = st->g;
  for (;;) {
    if (st->oom) return MHD_CONTENT_READER_END_WITH_ERROR;
    if (st->off < st->buf.n) {
      size_t n = st->buf.n - st->off < max ? st->buf.n - st->off : max;
      memcpy(buf, st->buf.p + st->off, n);
      st->off += n;
      if (st->off == st->buf.n) { /* drained: reuse the allocation from its start */
        st->off = st->buf.n = 0;
        st->buf.p[0] = '\0';
      }
      return (ssize_t)n;
    }
    if (st->done) return MHD_CONTENT_READER_END_OF_STREAM;
    const kiln_rec *rec;
    int rc = srv_gen_next(g, &rec, g->s->o.ping_ms);
    if (rc == KILN_ETIMEDOUT) {
      out(st, ": ping\n\n", 8);
      continue;
    }
    if (rc == KILN_ECANCELED) { /* hung up: stop the work; MHD closes the connection */
      srv_gen_cancel(g);
      return MHD_CONTENT_READER_END_WITH_ERROR;
    }
    if (rc != KILN_OK) {
      srv_gen_cancel(g);
      on_error(st, 503, KILN_ECANCELED, "the server is shutting down");
      continue;
    }
    uint32_t type = rec->type;
    if (type == SRV_EV_STEP) {
      rc = on_step(st, rec);
    } else if (type == SRV_EV_PROMPT_LP && rec->size == sizeof(int)) {
      int task;
      memcpy(&task, kiln_rec_data(rec), sizeof task);
      if (task >= 0 && task < g->n_choices && !g->chat) open_completion(st, task, true);
    } else if (type == SRV_EV_ERROR && rec->size == sizeof(srv_ev_error)) {
      srv_ev_error err;
      srv_gen_take_error(g, rec, &err);
      on_error(st, err.http, err.status, err.msg);
      continue;
    } else if (type == SRV_EV_END) {
      srv_gen_release_rec(g);
      srv_gen_done(g);
      on_end(st);
      continue;
    }
    srv_gen_release_rec(g);
    if (rc) {
      srv_gen_cancel(g);
      on_error(st, 500, rc, kiln_last_error());
    }
  }
}

static void reader_free(void *cls) {
  srv_stream *st = cls;
  srv_gen_cancel(st->g); /* a no-op when the request ended normally */
  srv_gen_free(st->g);
  free(st->g);
  kiln_strbuf_free(&st->buf);
  free(st);
}

enum MHD_Result srv_stream_start(srv_req *r, struct MHD_Connection *c, srv_gen *g) {
  srv_stream *st = calloc(1, sizeof *st);
  struct MHD_Response *resp = st ? MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, reader, st, reader_free)
                                 : NULL;
  if (!resp) {
    free(st);
    srv_gen_cancel(g);
    srv_gen_free(g);
    free(g);
    return srv_reply_error(r, c, 500, "server_error", NULL, NULL, "out of memory");
  }
  st->g = g;
  MHD_add_response_header(resp, "Content-Type", "text/event-stream");
  MHD_add_response_header(resp, "Cache-Control", "no-cache");
  MHD_add_response_header(resp, "X-Accel-Buffering", "no");
  srv_add_headers(r, c, resp);
  r->status = 200;
  enum MHD_Result ret = MHD_queue_response(c, 200, resp);
  MHD_destroy_response(resp);
  return ret;
}
