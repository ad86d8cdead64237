/*
 * server/server_gen.h (internal): the connection side of one generation request (/v1/completions or
 * /v1/chat/completions): built from the request (server_gen.c), then either streamed as server-sent events
 * (server_stream.c) or collected into one JSON response (server_collect.c). The JSON pieces both share (logprobs,
 * usage, ids) are in server_format.c.
 */
#ifndef KILN_SERVER_GEN_H
#define KILN_SERVER_GEN_H

#include "base/strbuf.h"
#include "server/server_impl.h"

typedef struct srv_choice {
  kiln_strbuf text;      /* collected text (non-streaming) */
  json_t *lp;            /* collected logprobs: chat: array of entries; completions: {tokens, token_logprobs, ...} */
  size_t text_chars;     /* completions: characters so far, for text_offset */
  int finish;            /* kiln_finish; 0 while running */
  int completion_tokens;
  bool opened;           /* streaming: the first chunk (role, or echo) was sent */
} srv_choice;

typedef struct srv_gen {
  struct kiln_server *s;
  srv_slot *slot;
  srv_job *job;          /* valid while we hold our reference on the slot */
  uint64_t id;
  bool chat;
  srv_params p;
  int n_prompts, n_choices;
  int prompt_tokens;     /* all prompts, counted once each */
  char **echo_text;      /* completions with echo: each prompt's text */
  size_t *echo_len;
  srv_choice *ch;
  char req_id[48];
  int64_t created;
  int fd;                /* the client's socket, watched for hang-ups */
  bool ended;            /* END or ERROR read, or given up: our reference is dropped */
} srv_gen;

/* Builds the request's job from its body, claims a request slot and submits the job to the engine. On failure
 * fills e (400, 404, 503 ...) and returns false. */
bool srv_gen_submit(srv_gen *g, struct kiln_server *s, const json_t *body, bool chat, int fd, srv_err *e);

/* The next record of this request, waiting up to timeout_ms. KILN_OK (*rec valid until srv_gen_release_rec),
 * KILN_ETIMEDOUT, KILN_ECANCELED (the client hung up), KILN_ECLOSED (the engine is gone). */
int srv_gen_next(srv_gen *g, const kiln_rec **rec, int timeout_ms);
void srv_gen_release_rec(srv_gen *g);

/* Applies a STEP to the choice's counters (finish, tokens). Returns the step header and its parts. */
const srv_ev_step *srv_gen_step(srv_gen *g, const kiln_rec *rec, const srv_top **tops, const char **text);

/* Gives up the request (client gone, or an error on our side): tells the engine, drops our reference. */
void srv_gen_cancel(srv_gen *g);
/* Drops our reference after the END or ERROR record. */
void srv_gen_done(srv_gen *g);
/* Takes an ERROR record (rec->size == sizeof *err): copies it into err with the message NUL-terminated and the
 * HTTP status within 400..599 (else 500), releases the record and drops our reference (srv_gen_done). */
void srv_gen_take_error(srv_gen *g, const kiln_rec *rec, srv_ev_error *err);
/* Frees what the connection side allocated (not the job). */
void srv_gen_free(srv_gen *g);

/* ---- JSON pieces (server_format.c) ---- */

/* The token's text as a JSON string (invalid UTF-8 replaced), and its raw bytes. */
json_t *srv_token_json(const struct kiln_server *s, int32_t id, const char **bytes, size_t *n);
/* Chat logprobs entry {"token", "logprob", "bytes", "top_logprobs"}. */
json_t *srv_chat_lp_entry(const struct kiln_server *s, int32_t id, float lp, const srv_top *tops, int n_top);
/* Appends one token to a completions logprobs object {tokens, token_logprobs, top_logprobs, text_offset}; lp NAN
 * gives null (the first prompt token). */
int srv_cmpl_lp_append(const struct kiln_server *s, json_t *obj, int32_t id, float lp, const srv_top *tops,
                       int n_top, size_t *chars);
json_t *srv_cmpl_lp_new(void);
json_t *srv_usage_json(int prompt_tokens, int completion_tokens);
const char *srv_finish_name(int finish);
/* A JSON number for a logprob (JSON has no -Infinity: very unlikely tokens get -9999). */
json_t *srv_lp_json(float lp);

#endif /* KILN_SERVER_GEN_H */
