/*
 * server/server_impl.h (internal): the server's shared types.
 *
 * Ownership. A request (srv_job) is built by its connection thread and handed to the engine thread through the
 * in-ring of the request slot it holds; from then on its tasks' engine fields belong to the engine thread and the
 * rest is read-only. Both sides hold a reference on the slot (srv_slot.refs): the connection drops its own when it
 * has read the END event or gives up (client gone), the engine its own when the job is finished or cancelled. The
 * last one frees the job and marks the slot free for the next request. Ring records carry the job id as their
 * correlation id, so records left in a slot's rings by an abandoned request are recognised and skipped.
 *
 * Rings. in: connection -> engine (SUBMIT, CANCEL), polled by the engine through a kiln_ring_fanin over all slots;
 * the engine sleeps on the doorbell (server_slots.c) when it has nothing to do. out: engine -> connection (STEP,
 * PROMPT_LP, ERROR, END); the connection sleeps on it with kiln_ring_wait_readable.
 */
#ifndef KILN_SERVER_IMPL_H
#define KILN_SERVER_IMPL_H

#include <jansson.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/strbuf.h"
#include "kiln/chat.h"
#include "kiln/engine.h"
#include "kiln/generate.h"
#include "kiln/ring.h"
#include "kiln/server.h"

/* ---- ring records ------------------------------------------------------------------------------------------- */

enum { SRV_IN_SUBMIT = 1, SRV_IN_CANCEL = 2 };
enum { SRV_EV_STEP = 1, SRV_EV_PROMPT_LP = 2, SRV_EV_ERROR = 3, SRV_EV_END = 4 };

#define SRV_IN_RING_CAP 1024u         /* a few 64-byte records: SUBMIT and CANCEL */
#define SRV_OUT_RING_CAP (32u << 10)  /* events of one request; a slow reader makes the engine skip its turn */

typedef struct srv_top {
  int32_t id;
  float lp;
} srv_top;

/* One generation step of one task: the chosen token, its logprob and alternatives, the text it released, and on
 * the last step the finish reason and token counts. Followed by n_top srv_top, then text_len bytes. */
typedef struct srv_ev_step {
  uint32_t task;
  int32_t token; /* -1: none */
  float logprob;
  uint8_t finish; /* kiln_finish */
  uint8_t n_top;
  uint16_t reserved;
  int32_t prompt_tokens, completion_tokens;
  uint32_t text_len;
} srv_ev_step;

typedef struct srv_ev_error {
  int32_t status; /* kiln status */
  int32_t http;   /* HTTP status to answer with when nothing was sent yet */
  char msg[240];
} srv_ev_error;

/* ---- errors in OpenAI's shape -------------------------------------------------------------------------------- */

typedef struct srv_err {
  int http;         /* 400, 401, ... */
  const char *type; /* "invalid_request_error", "server_error", ... */
  const char *code; /* "context_length_exceeded", ... or NULL */
  char param[64];   /* the offending parameter, or "" */
  char msg[512];
} srv_err;

/* Fills e and returns false (so a parser can `return srv_fail(...)`). */
bool srv_fail(srv_err *e, int http, const char *type, const char *code, const char *param, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));

/* ---- request parameters (server_params.c) -------------------------------------------------------------------- */

typedef struct srv_params {
  kiln_gen_params gen; /* sampling, max_tokens (<= 0: not given), stop strings (pointers into the request JSON) */
  bool max_tokens_given;
  int n;               /* choices per prompt */
  bool stream, include_usage;
  bool logprobs;       /* logprobs asked for (chat: logprobs true; completions: logprobs given) */
  int top_logprobs;    /* alternatives per token */
  bool echo;           /* completions: prompt text (and logprobs) first */
  bool seed_given;
} srv_params;

/* Parses the sampling and output parameters shared by both endpoints. `chat` selects the chat forms of logprobs
 * and the default max_tokens (until the context is full; completions: 16). */
bool srv_params_parse(const json_t *body, bool chat, int n_vocab, srv_params *p, srv_err *e);

/* ---- jobs and tasks ------------------------------------------------------------------------------------------ */

typedef enum srv_task_state { SRV_TASK_NEW = 0, SRV_TASK_WAITING, SRV_TASK_RUNNING, SRV_TASK_DONE } srv_task_state;

typedef struct srv_job srv_job;

typedef struct srv_task {
  /* set by the connection thread before submission */
  const int32_t *prompt;
  int n_prompt;
  int index;             /* choice index in the response */
  int prompt_index;      /* which prompt (completions with a list of prompts) */
  kiln_gen_params params;
  srv_top *prompt_lp;    /* echo + logprobs: [n_prompt][1 + top] (token's own first); written by the engine */
  /* engine thread only */
  srv_task_state state;
  int seq;
  kiln_gen *gen;
  struct srv_task *prev, *next; /* waiting list */
  srv_job *job;
  uint8_t *outbox;       /* a record the out ring had no room for: [type u32][size u32][payload] */
  size_t outbox_len, outbox_cap;
  double t_last;         /* time of the last token (seconds, monotonic) */
} srv_task;

struct srv_job {
  uint64_t id;
  struct srv_slot *slot;
  int n_tasks;
  srv_task *tasks;
  int top;               /* alternatives per token for prompt logprobs */
  bool prompt_logprobs;
  double t_submit;       /* seconds, monotonic */
  _Atomic int cancel;    /* set by the connection when its client left (also sent as a CANCEL record) */
  /* engine thread only */
  int n_done;
  bool started, finished, failed;
  /* storage owned by the job */
  int32_t *ids;          /* all prompts' ids */
  char *stops;           /* copies of the stop strings */
};

/* ---- request slots (server_slots.c) -------------------------------------------------------------------------- */

typedef struct srv_slot {
  _Atomic int busy;      /* 1 while a request holds the slot */
  _Atomic int refs;      /* references on the current job: connection + engine */
  uint32_t index;
  kiln_ring *in, *out;
  kiln_ring_prod in_prod;  /* connection side */
  kiln_ring_cons out_cons; /* connection side */
  kiln_ring_prod out_prod; /* engine side */
  srv_job *job;
} srv_slot;

/* ---- metrics (server_metrics.c) ------------------------------------------------------------------------------ */

#define SRV_HIST_BUCKETS 16

typedef struct srv_hist {
  const double *bounds; /* upper bounds in seconds, SRV_HIST_BUCKETS - 1 of them (+Inf last) */
  _Atomic uint64_t count[SRV_HIST_BUCKETS];
  _Atomic uint64_t sum_ns;
} srv_hist;

typedef struct srv_metrics {
  _Atomic int64_t running, waiting; /* requests */
  _Atomic uint64_t requests_ok, requests_err, rejected, cancelled;
  _Atomic uint64_t prompt_tokens, generation_tokens;
  _Atomic uint64_t kv_used; /* tokens held in the KV cache by running sequences */
  srv_hist ttft, itl, e2e;
} srv_metrics;

void srv_metrics_init(srv_metrics *m);
void srv_hist_observe(srv_hist *h, double seconds);
/* Prometheus text exposition; *out malloc'd. */
int srv_metrics_render(const struct kiln_server *s, char **out, size_t *len);

/* ---- the server ---------------------------------------------------------------------------------------------- */

struct kiln_server {
  kiln_server_opts o;
  char *host, *api_key, *model_dir, *tok_config, *chat_tmpl_opt, *model_id, *device;
  char **origins;
  int n_origins;
  bool cors_any;
  struct MHD_Daemon *mhd;
  int port;
  int64_t created; /* unix time of start, for /v1/models */

  /* loading: written by the engine thread before `ready` is stored (release) */
  _Atomic int ready; /* 0 loading, 1 ready, < 0 failed (a kiln status) */
  char load_error[512];
  pthread_mutex_t ready_mu; /* only for waiting on startup (kiln_server_wait_ready), never on a request path */
  pthread_cond_t ready_cv;
  kiln_model *own_model;
  kiln_tokenizer *own_tok;
  const kiln_model *model;
  const kiln_tokenizer *tok;
  kiln_chat_template tmpl;
  bool have_tmpl;
  int n_ctx, n_vocab, bos_id, parallel;
  int32_t eot_id;            /* the template's end-of-turn token when it is not an EOS id, else -1 */
  const char *eot_text;
  char device_name[64];

  /* engine thread */
  pthread_t engine_thread;
  bool engine_started;
  kiln_engine *engine;

  /* request slots and the doorbell that wakes the engine */
  int n_slots;
  srv_slot *slots;
  kiln_ring_cons *in_cons; /* engine side of every slot's in-ring */
  kiln_ring_fanin fanin;
  _Atomic uint32_t slot_hint;
  _Atomic uint64_t next_job_id;
  _Atomic uint32_t bell;          /* bumped after every record sent to the engine */
  _Atomic uint32_t engine_asleep; /* the engine is (about to be) waiting on `bell` */
  _Atomic int stopping;
  _Atomic int engine_done; /* the engine thread has exited: nothing more will come on any out-ring */

  srv_metrics metrics;
};

/* Monotonic seconds. */
double srv_now(void);

/* Slots. claim: a free slot with refs 1 and its rings drained of an earlier job's leftovers, or NULL (all busy).
 * release: drops one reference; the last frees the job and the slot. */
int srv_slots_init(struct kiln_server *s);
void srv_slots_free(struct kiln_server *s);
srv_slot *srv_slot_claim(struct kiln_server *s);
void srv_slot_release(struct kiln_server *s, srv_slot *sl);
/* Sends a record to the engine on the slot's in-ring and rings the doorbell. */
int srv_slot_send(struct kiln_server *s, srv_slot *sl, uint32_t type, const void *payload, size_t size);
/* Engine side: waits for the doorbell (timeout_ms < 0: forever) unless `bell_seen` is already stale. */
void srv_bell_wait(struct kiln_server *s, uint32_t bell_seen, int timeout_ms);
void srv_bell_ring(struct kiln_server *s);
void srv_job_free(srv_job *j);

/* The engine thread (server_engine.c). */
void *srv_engine_main(void *arg);

/* ---- HTTP side ----------------------------------------------------------------------------------------------- */

/* Per-request state of a connection thread. */
typedef struct srv_req {
  struct kiln_server *s;
  const char *method, *url;
  kiln_strbuf body; /* as uploaded so far */
  bool too_big;
  int status; /* HTTP status answered, for the log */
  double t0;
} srv_req;

/* Responses (server_http.c). Each returns the MHD result of queueing. */
enum MHD_Result srv_reply(srv_req *r, struct MHD_Connection *c, int status, const char *ctype, char *body,
                          size_t len);
enum MHD_Result srv_reply_json(srv_req *r, struct MHD_Connection *c, int status, json_t *v);
enum MHD_Result srv_reply_err(srv_req *r, struct MHD_Connection *c, const srv_err *e);
enum MHD_Result srv_reply_error(srv_req *r, struct MHD_Connection *c, int http, const char *type, const char *code,
                                const char *param, const char *fmt, ...) __attribute__((format(printf, 7, 8)));
/* CORS headers for this request's Origin, and the headers every response carries. */
void srv_add_headers(srv_req *r, struct MHD_Connection *c, struct MHD_Response *resp);
/* True when the request carries the right key (or none is needed). */
bool srv_auth_ok(const struct kiln_server *s, struct MHD_Connection *c);
/* A JSON string of bytes that may not be valid UTF-8 (invalid sequences become U+FFFD). */
json_t *srv_json_text(const char *p, size_t n);
/* Appends the UTF-8-safe form of bytes to a jansson-free buffer (for hand-formatted chunks). */

/* Routes. */
enum MHD_Result srv_route_models(srv_req *r, struct MHD_Connection *c, const char *id);
enum MHD_Result srv_route_health(srv_req *r, struct MHD_Connection *c);
enum MHD_Result srv_route_metrics(srv_req *r, struct MHD_Connection *c);
enum MHD_Result srv_route_tokenize(srv_req *r, struct MHD_Connection *c, json_t *body);
enum MHD_Result srv_route_detokenize(srv_req *r, struct MHD_Connection *c, json_t *body);
enum MHD_Result srv_route_generate(srv_req *r, struct MHD_Connection *c, json_t *body, bool chat);

/* The "model" field: absent or this server's id; else a 404 model_not_found. */
bool srv_check_model(const struct kiln_server *s, const json_t *body, srv_err *e);

#endif /* KILN_SERVER_IMPL_H */
