/*
 * kiln/server.h: the OpenAI-compatible HTTP server (`kiln serve`).
 *
 * Threads. libmicrohttpd runs one thread per connection; those threads parse and validate requests, render chat
 * templates, tokenize, and format responses. One engine thread owns the engine (DESIGN.md decision 2): it loads
 * the model, creates the engine with `parallel` sequence slots and steps every running generation in turn (fair
 * round-robin, one kiln_gen per sequence slot). Requests reach it through rings (kiln/ring.h): each request holds
 * one of parallel + max_queue request slots, each slot a pair of SPSC rings (requests in, polled by the engine
 * through a fan-in; tokens and events out). There is no global request lock. A full set of slots answers 503 with
 * Retry-After.
 *
 * Routes: GET /v1/models, GET /v1/models/{id}, POST /v1/completions, POST /v1/chat/completions (streaming as
 * server-sent events exactly as OpenAI sends them), GET /health, GET /metrics (Prometheus text), POST /tokenize,
 * POST /detokenize. Errors take OpenAI's shape {"error": {"message", "type", "param", "code"}}. See docs/server.md.
 */
#ifndef KILN_SERVER_H
#define KILN_SERVER_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "kiln/model.h"
#include "kiln/tokenizer.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct kiln_server kiln_server;

typedef struct kiln_server_opts {
  /* network */
  const char *host;         /* address to listen on (default "127.0.0.1"); "0.0.0.0" or "::" for all */
  int port;                 /* default 8080; 0: any free port (see kiln_server_port) */
  const char *api_key;      /* clients must send "Authorization: Bearer KEY" on /v1 and /tokenize routes; NULL: none */
  const char *cors_origins; /* comma-separated allowed origins, or "*"; NULL: no CORS headers */
  int max_queue;            /* requests that may wait beyond the running ones (default 64); then 503 */
  int64_t max_body_bytes;   /* larger request bodies get 413 (default 8 MiB) */
  int ping_ms;              /* ": ping" comment on idle event streams every ping_ms (default 15000) */
  int max_connections;      /* simultaneous connections (default 1000) */
  FILE *log;                /* one line per request and the startup lines; NULL: silent */

  /* model: either a checkpoint directory, loaded on the engine thread (GET /health answers 503 meanwhile) ... */
  const char *model_dir;
  /* ... or a model and tokenizer already in memory (borrowed: they must outlive the server) */
  const kiln_model *model;
  const kiln_tokenizer *tokenizer;
  const char *tokenizer_config; /* tokenizer_config.json (chat template, bos); NULL: model_dir's, if any */
  const char *chat_template;    /* family name (chatml, qwen3, llama3, llama31, llama32) or a file of Jinja source;
                                   NULL: detected from tokenizer_config.json */
  const char *model_id;         /* the name clients send as "model"; NULL: model_dir's base name, else "kiln" */
  int bos_id;                   /* token put before text prompts of /v1/completions: -1 none, >= 0 that id, -2
                                   (default) the config's bos_token_id for Llama models and none for Qwen (as
                                   their tokenizers do), -3 the config's bos_token_id whatever the model */

  /* engine */
  const char *device;       /* "cpu", "cuda", "cuda:N"; NULL: the engine's default */
  int n_threads;            /* CPU backend threads; <= 0: all cores */
  int n_ctx;                /* tokens per sequence; <= 0: the engine's default */
  int parallel;             /* sequences generated at once (engine KV slots; default 4) */
} kiln_server_opts;

/* The defaults above. */
kiln_server_opts kiln_server_opts_default(void);

/* Starts listening and the engine thread; returns once the socket is bound (the model may still be loading).
 * Errors: KILN_EINVAL for bad options, KILN_EIO when the address cannot be bound, ... with a message. */
int kiln_server_start(kiln_server **out, const kiln_server_opts *opts);

/* Waits until the model is loaded and the engine created (timeout_ms < 0: forever). KILN_OK when ready,
 * KILN_ETIMEDOUT, or the load's error (its message is kiln_last_error() on this thread). */
int kiln_server_wait_ready(kiln_server *s, int timeout_ms);

/* The port the server listens on. */
int kiln_server_port(const kiln_server *s);

/* Stops accepting connections, ends running generations (their clients get an error event), joins every thread and
 * frees the server. Accepts NULL. */
void kiln_server_stop(kiln_server *s);

#ifdef __cplusplus
}
#endif
#endif /* KILN_SERVER_H */
