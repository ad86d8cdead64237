/*
 * server/server_gen.c: from a request body to a job in the engine's hands, and the connection side's reading of
 * the job's events.
 *
 * Prompts. Chat: the messages are normalised (developer -> system, text parts joined with "\n", assistant turns
 * without content given "" unless they carry tool calls the template renders) and rendered with the model's chat
 * template, whose special tokens the tokenizer matches as such. Completions: a string, a list of strings, a list of
 * token ids or a list of such lists; text prompts get the BOS token first when the model's tokenizer adds one.
 * The prompt and max_tokens must fit the context (400 context_length_exceeded otherwise, as OpenAI answers).
 */
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kiln/status.h"
#include "server/server_gen.h"

#define SRV_MAX_TASKS 64

/* ---- chat ---------------------------------------------------------------------------------------------------- */

static bool norm_content(const json_t *c, size_t i, json_t **out, srv_err *e) {
  char param[64];
  snprintf(param, sizeof param, "messages[%zu].content", i);
  if (json_is_string(c)) {
    *out = json_incref((json_t *)c);
    return true;
  }
  if (!json_is_array(c))
    return srv_fail(e, 400, "invalid_request_error", NULL, param, "'%s' must be a string or a list of parts", param);
  size_t total = 0;
  for (size_t k = 0; k < json_array_size(c); k++) {
    const json_t *part = json_array_get(c, k);
    const char *type = json_string_value(json_object_get(part, "type"));
    const json_t *text = json_object_get(part, "text");
    if (!type || strcmp(type, "text") != 0 || !json_is_string(text))
      return srv_fail(e, 400, "invalid_request_error", NULL, param,
                      "only text content parts ({\"type\": \"text\", \"text\": ...}) are supported");
    total += json_string_length(text) + 1;
  }
  char *buf = malloc(total + 1);
  if (!buf) return srv_fail(e, 500, "server_error", NULL, NULL, "out of memory");
  size_t n = 0;
  for (size_t k = 0; k < json_array_size(c); k++) {
    const json_t *text = json_object_get(json_array_get(c, k), "text");
    if (k) buf[n++] = '\n';
    memcpy(buf + n, json_string_value(text), json_string_length(text));
    n += json_string_length(text);
  }
  *out = json_stringn(buf, n);
  free(buf);
  return *out ? true : srv_fail(e, 500, "server_error", NULL, NULL, "out of memory");
}

/* Llama 3.1's template dumps tool-call arguments with tojson: arguments sent as a JSON string (OpenAI's form) are
 * parsed first, as vLLM does, so the prompt shows an object rather than a quoted string. */
static json_t *parsed_calls(const json_t *calls) {
  json_t *copy = json_deep_copy(calls);
  for (size_t k = 0; copy && k < json_array_size(copy); k++) {
    json_t *fn = json_object_get(json_array_get(copy, k), "function");
    json_t *args = json_object_get(fn, "arguments");
    if (!json_is_string(args)) continue;
    json_t *obj = json_loadb(json_string_value(args), json_string_length(args), JSON_REJECT_DUPLICATES, NULL);
    if (json_is_object(obj)) json_object_set_new(fn, "arguments", obj);
    else json_decref(obj);
  }
  return copy;
}

int srv_render_chat(const struct kiln_server *s, const json_t *body, char **text, size_t *len, srv_err *e) {
  if (!s->have_tmpl) {
    srv_fail(e, 400, "invalid_request_error", NULL, "messages",
             "This model has no chat template; start the server with --chat-template.");
    return -1;
  }
  const json_t *msgs = json_object_get(body, "messages");
  if (!json_is_array(msgs) || json_array_size(msgs) == 0) {
    srv_fail(e, 400, "invalid_request_error", NULL, "messages", "'messages' must be a non-empty list");
    return -1;
  }
  const bool tool_family = s->tmpl.format == KILN_CHAT_QWEN3 || s->tmpl.format == KILN_CHAT_LLAMA31;
  json_t *norm = json_array();
  if (!norm) {
    srv_fail(e, 500, "server_error", NULL, NULL, "out of memory");
    return -1;
  }
  int rc = -1;
  for (size_t i = 0; i < json_array_size(msgs); i++) {
    const json_t *m = json_array_get(msgs, i);
    char param[64];
    snprintf(param, sizeof param, "messages[%zu]", i);
    if (!json_is_object(m)) {
      srv_fail(e, 400, "invalid_request_error", NULL, param, "'%s' must be an object", param);
      goto out;
    }
    const char *role = json_string_value(json_object_get(m, "role"));
    static const char *roles[] = {"system", "developer", "user", "assistant", "tool"};
    bool known = false;
    for (size_t k = 0; role && k < sizeof roles / sizeof roles[0]; k++) known = known || strcmp(role, roles[k]) == 0;
    if (!known) {
      snprintf(param, sizeof param, "messages[%zu].role", i);
      srv_fail(e, 400, "invalid_request_error", NULL, param,
               "'%s' must be one of system, developer, user, assistant, tool", param);
      goto out;
    }
    bool assistant = strcmp(role, "assistant") == 0;
    const json_t *calls = json_object_get(m, "tool_calls");
    if (calls && !json_is_null(calls) && !json_is_array(calls)) {
      snprintf(param, sizeof param, "messages[%zu].tool_calls", i);
      srv_fail(e, 400, "invalid_request_error", NULL, param, "'%s' must be a list", param);
      goto out;
    }
    bool has_calls = assistant && json_array_size(calls) > 0;
    json_t *nm = json_pack("{s:s}", "role", strcmp(role, "developer") == 0 ? "system" : role);
    if (!nm || json_array_append_new(norm, nm)) {
      srv_fail(e, 500, "server_error", NULL, NULL, "out of memory");
      goto out;
    }
    const json_t *c = json_object_get(m, "content");
    json_t *content = NULL;
    if (c && !json_is_null(c)) {
      if (!norm_content(c, i, &content, e)) goto out;
    } else if (!assistant) {
      snprintf(param, sizeof param, "messages[%zu].content", i);
      srv_fail(e, 400, "invalid_request_error", NULL, param, "'%s' is required for role '%s'", param, role);
      goto out;
    }
    if (content) json_object_set_new(nm, "content", content);
    else if (has_calls && tool_family) json_object_set_new(nm, "content", json_null());
    else json_object_set_new(nm, "content", json_string(""));
    const json_t *rc_ = json_object_get(m, "reasoning_content");
    if (json_is_string(rc_)) json_object_set(nm, "reasoning_content", (json_t *)rc_);
    if (has_calls && tool_family)
      json_object_set_new(nm, "tool_calls", s->tmpl.format == KILN_CHAT_LLAMA31 ? parsed_calls(calls)
                                                                               : json_deep_copy(calls));
    const json_t *tcid = json_object_get(m, "tool_call_id");
    if (json_is_string(tcid)) json_object_set(nm, "tool_call_id", (json_t *)tcid);
  }
  const json_t *tools = json_object_get(body, "tools");
  if (tools && !json_is_null(tools) && !json_is_array(tools)) {
    srv_fail(e, 400, "invalid_request_error", NULL, "tools", "'tools' must be a list");
    goto out;
  }
  const json_t *kw = json_object_get(body, "chat_template_kwargs");
  if (kw && !json_is_null(kw) && !json_is_object(kw)) {
    srv_fail(e, 400, "invalid_request_error", NULL, "chat_template_kwargs", "'chat_template_kwargs' must be an object");
    goto out;
  }
  const json_t *agp = json_object_get(body, "add_generation_prompt");
  if (agp && !json_is_null(agp) && !json_is_boolean(agp)) {
    srv_fail(e, 400, "invalid_request_error", NULL, "add_generation_prompt",
             "'add_generation_prompt' must be a boolean");
    goto out;
  }
  kiln_chat_opts o = {.add_generation_prompt = !json_is_false(agp),
                      .tools = tool_family && json_array_size(tools) ? tools : NULL,
                      .kwargs = json_is_object(kw) ? kw : NULL};
  if (kiln_chat_render_json(&s->tmpl, norm, &o, text, len)) {
    srv_fail(e, 400, "invalid_request_error", NULL, "messages", "%s", kiln_last_error());
    goto out;
  }
  rc = 0;
out:
  json_decref(norm);
  return rc;
}

/* ---- prompts ------------------------------------------------------------------------------------------------- */

typedef struct prompt_set {
  int n;
  int32_t **ids;
  int *len;
  char **text; /* for echo; NULL for id prompts until decoded */
  size_t *text_len;
} prompt_set;

static void prompts_free(prompt_set *ps) {
  for (int i = 0; i < ps->n; i++) {
    free(ps->ids ? ps->ids[i] : NULL);
    free(ps->text ? ps->text[i] : NULL);
  }
  free(ps->ids);
  free(ps->len);
  free(ps->text);
  free(ps->text_len);
  memset(ps, 0, sizeof *ps);
}

static bool prompts_alloc(prompt_set *ps, int n, srv_err *e) {
  ps->n = n;
  ps->ids = calloc((size_t)n, sizeof *ps->ids);
  ps->len = calloc((size_t)n, sizeof *ps->len);
  ps->text = calloc((size_t)n, sizeof *ps->text);
  ps->text_len = calloc((size_t)n, sizeof *ps->text_len);
  if (!ps->ids || !ps->len || !ps->text || !ps->text_len)
    return srv_fail(e, 500, "server_error", NULL, NULL, "out of memory");
  return true;
}

/* Encodes text (with the BOS token first when `bos` >= 0) into prompt i. */
static bool encode_into(const struct kiln_server *s, prompt_set *ps, int i, const char *text, size_t len, int bos,
                        const char *param, srv_err *e) {
  int32_t *ids = NULL;
  size_t n = 0;
  if (kiln_tokenizer_encode(s->tok, text, len, &ids, &n))
    return srv_fail(e, 400, "invalid_request_error", NULL, param, "%s", kiln_last_error());
  if (bos >= 0) {
    int32_t *g = realloc(ids, (n + 1) * sizeof *g);
    if (!g) {
      free(ids);
      return srv_fail(e, 500, "server_error", NULL, NULL, "out of memory");
    }
    memmove(g + 1, g, n * sizeof *g);
    g[0] = bos;
    ids = g;
    n++;
  }
  if (n > (size_t)INT32_MAX) n = (size_t)INT32_MAX; /* caught by the context check below */
  ps->ids[i] = ids;
  ps->len[i] = (int)n;
  ps->text[i] = malloc(len + 1);
  if (!ps->text[i]) return srv_fail(e, 500, "server_error", NULL, NULL, "out of memory");
  memcpy(ps->text[i], text, len);
  ps->text[i][len] = '\0';
  ps->text_len[i] = len;
  return true;
}

static bool ids_into(const struct kiln_server *s, prompt_set *ps, int i, const json_t *arr, const char *param,
                     srv_err *e) {
  size_t n = json_array_size(arr);
  ps->ids[i] = malloc((n ? n : 1) * sizeof(int32_t));
  if (!ps->ids[i]) return srv_fail(e, 500, "server_error", NULL, NULL, "out of memory");
  for (size_t k = 0; k < n; k++) {
    const json_t *v = json_array_get(arr, k);
    if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) >= s->n_vocab)
      return srv_fail(e, 400, "invalid_request_error", NULL, param, "'%s' holds %s; token ids must be in [0, %d)",
                      param, json_is_integer(v) ? "an id out of range" : "a value that is not an integer",
                      s->n_vocab);
    ps->ids[i][k] = (int32_t)json_integer_value(v);
  }
  ps->len[i] = (int)(n > (size_t)INT32_MAX ? (size_t)INT32_MAX : n);
  char *text = NULL;
  size_t tl = 0;
  if (kiln_tokenizer_decode(s->tok, ps->ids[i], n, &text, &tl))
    return srv_fail(e, 400, "invalid_request_error", NULL, param, "%s", kiln_last_error());
  ps->text[i] = text;
  ps->text_len[i] = tl;
  return true;
}

static bool all_of(const json_t *arr, int (*is)(const json_t *)) {
  for (size_t k = 0; k < json_array_size(arr); k++)
    if (!is(json_array_get(arr, k))) return false;
  return true;
}
static int is_int(const json_t *v) { return json_is_integer(v); }
static int is_str(const json_t *v) { return json_is_string(v); }
static int is_arr(const json_t *v) { return json_is_array(v); }

static bool completion_prompts(const struct kiln_server *s, const json_t *body, prompt_set *ps, srv_err *e) {
  const json_t *p = json_object_get(body, "prompt");
  static const char *what = "'prompt' must be a string, a list of strings, a list of token ids or a list of lists";
  if (json_is_string(p)) {
    if (!prompts_alloc(ps, 1, e)) return false;
    return encode_into(s, ps, 0, json_string_value(p), json_string_length(p), s->bos_id, "prompt", e);
  }
  if (!json_is_array(p) || json_array_size(p) == 0)
    return srv_fail(e, 400, "invalid_request_error", NULL, "prompt", "%s", what);
  size_t n = json_array_size(p);
  if (all_of(p, is_int)) {
    if (!prompts_alloc(ps, 1, e)) return false;
    return ids_into(s, ps, 0, p, "prompt", e);
  }
  if (n > SRV_MAX_TASKS)
    return srv_fail(e, 400, "invalid_request_error", NULL, "prompt", "at most %d prompts per request", SRV_MAX_TASKS);
  bool strs = all_of(p, is_str), arrs = all_of(p, is_arr);
  if (!strs && !arrs) return srv_fail(e, 400, "invalid_request_error", NULL, "prompt", "%s", what);
  if (!prompts_alloc(ps, (int)n, e)) return false;
  for (size_t i = 0; i < n; i++) {
    const json_t *v = json_array_get(p, i);
    char param[32];
    snprintf(param, sizeof param, "prompt[%zu]", i);
    bool ok = strs ? encode_into(s, ps, (int)i, json_string_value(v), json_string_length(v), s->bos_id, param, e)
                   : ids_into(s, ps, (int)i, v, param, e);
    if (!ok) return false;
  }
  return true;
}

/* ---- building and submitting the job ------------------------------------------------------------------------- */

static uint64_t splitmix(uint64_t *x) {
  uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

static uint64_t fresh_seed(struct kiln_server *s) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  uint64_t x = ((uint64_t)ts.tv_sec << 32) ^ (uint64_t)ts.tv_nsec ^
               atomic_fetch_add_explicit(&s->next_job_id, 0, memory_order_relaxed) * 0x2545f4914f6cdd1dull;
  return splitmix(&x);
}

static bool build_job(srv_gen *g, prompt_set *ps, srv_err *e) {
  struct kiln_server *s = g->s;
  const srv_params *p = &g->p;
  srv_job *j = calloc(1, sizeof *j);
  if (!j) return srv_fail(e, 500, "server_error", NULL, NULL, "out of memory");
  g->job = j;
  size_t total = 0, stop_bytes = 0;
  for (int i = 0; i < ps->n; i++) total += (size_t)ps->len[i];
  for (int k = 0; k < p->gen.n_stop; k++) stop_bytes += strlen(p->gen.stop[k]) + 1;
  bool add_eot = g->chat && s->eot_id >= 0 && p->gen.n_stop < KILN_MAX_STOP;
  if (add_eot) stop_bytes += strlen(s->eot_text) + 1;
  j->n_tasks = ps->n * p->n;
  j->tasks = calloc((size_t)j->n_tasks, sizeof *j->tasks);
  j->ids = malloc((total ? total : 1) * sizeof *j->ids);
  j->stops = malloc(stop_bytes + 1);
  if (!j->tasks || !j->ids || !j->stops) return srv_fail(e, 500, "server_error", NULL, NULL, "out of memory");
  kiln_gen_params gp = p->gen;
  char *sp = j->stops;
  for (int k = 0; k < p->gen.n_stop; k++) {
    size_t L = strlen(p->gen.stop[k]);
    memcpy(sp, p->gen.stop[k], L + 1);
    gp.stop[k] = sp;
    sp += L + 1;
  }
  if (add_eot) {
    strcpy(sp, s->eot_text);
    gp.stop[gp.n_stop++] = sp;
  }
  j->prompt_logprobs = p->echo && p->logprobs;
  j->top = p->top_logprobs;
  uint64_t seed = p->seed_given ? p->gen.sampling.seed : fresh_seed(s);
  size_t off = 0;
  for (int i = 0; i < ps->n; i++) {
    memcpy(j->ids + off, ps->ids[i], (size_t)ps->len[i] * sizeof *j->ids);
    for (int c = 0; c < p->n; c++) {
      srv_task *t = &j->tasks[i * p->n + c];
      t->prompt = j->ids + off;
      t->n_prompt = ps->len[i];
      t->index = i * p->n + c;
      t->prompt_index = i;
      t->params = gp;
      t->params.sampling.seed = seed + (uint64_t)t->index; /* each choice its own stream, reproducible */
      if (j->prompt_logprobs) {
        t->prompt_lp = malloc((size_t)t->n_prompt * (size_t)(1 + j->top) * sizeof *t->prompt_lp);
        if (!t->prompt_lp) return srv_fail(e, 500, "server_error", NULL, NULL, "out of memory");
      }
    }
    off += (size_t)ps->len[i];
  }
  return true;
}

bool srv_gen_submit(srv_gen *g, struct kiln_server *s, const json_t *body, bool chat, int fd, srv_err *e) {
  memset(g, 0, sizeof *g);
  g->s = s;
  g->chat = chat;
  g->fd = fd;
  g->created = (int64_t)time(NULL);
  if (!srv_check_model(s, body, e)) return false;
  if (!srv_params_parse(body, chat, s->n_vocab, &g->p, e)) return false;
  prompt_set ps = {0};
  bool ok = false;
  if (chat) {
    char *text = NULL;
    size_t len = 0;
    if (srv_render_chat(s, body, &text, &len, e)) goto out;
    ok = prompts_alloc(&ps, 1, e) && encode_into(s, &ps, 0, text, len, -1, "messages", e);
    free(text);
    if (!ok) goto out;
    ok = false;
  } else if (!completion_prompts(s, body, &ps, e)) {
    goto out;
  }
  if (ps.n * g->p.n > SRV_MAX_TASKS) {
    srv_fail(e, 400, "invalid_request_error", NULL, "n", "prompts x n must be at most %d", SRV_MAX_TASKS);
    goto out;
  }
  for (int i = 0; i < ps.n; i++) {
    int64_t want = (int64_t)ps.len[i] + (g->p.gen.max_tokens > 0 ? g->p.gen.max_tokens : 1);
    if (ps.len[i] == 0) {
      srv_fail(e, 400, "invalid_request_error", NULL, chat ? "messages" : "prompt", "The prompt is empty.");
      goto out;
    }
    if (want > s->n_ctx) {
      srv_fail(e, 400, "invalid_request_error", "context_length_exceeded", chat ? "messages" : "prompt",
               "This model's maximum context length is %d tokens. However, you requested %lld tokens (%d in the "
               "%s, %d for the completion). Please reduce the length of the %s or the completion.",
               s->n_ctx, (long long)want, ps.len[i], chat ? "messages" : "prompt",
               g->p.gen.max_tokens > 0 ? g->p.gen.max_tokens : 1, chat ? "messages" : "prompt");
      goto out;
    }
    g->prompt_tokens += ps.len[i];
  }
  g->n_prompts = ps.n;
  g->n_choices = ps.n * g->p.n;
  g->ch = calloc((size_t)g->n_choices, sizeof *g->ch);
  if (!g->ch) {
    srv_fail(e, 500, "server_error", NULL, NULL, "out of memory");
    goto out;
  }
  if (g->p.echo) { /* keep the prompts' texts for the echo */
    g->echo_text = ps.text;
    g->echo_len = ps.text_len;
    ps.text = NULL;
    ps.text_len = NULL;
  }
  if (!build_job(g, &ps, e)) goto out;
  srv_slot *sl = srv_slot_claim(s);
  if (!sl) {
    atomic_fetch_add_explicit(&s->metrics.rejected, 1, memory_order_relaxed);
    srv_fail(e, 503, "server_error", "queue_full",
             NULL, "The server is busy (%d requests running or waiting); retry shortly.", s->n_slots);
    goto out;
  }
  srv_job *j = g->job;
  j->id = atomic_fetch_add_explicit(&s->next_job_id, 1, memory_order_relaxed) + 1;
  j->slot = sl;
  j->t_submit = srv_now();
  sl->job = j;
  g->slot = sl;
  g->id = j->id;
  snprintf(g->req_id, sizeof g->req_id, "%s-%016llx%08llx", chat ? "chatcmpl" : "cmpl",
           (unsigned long long)fresh_seed(s), (unsigned long long)j->id);
  /* The engine's reference, taken before it can see the job. */
  atomic_store_explicit(&sl->refs, 2, memory_order_relaxed);
  if (srv_slot_send(s, sl, SRV_IN_SUBMIT, &j, sizeof j) != KILN_OK) {
    /* Never reached the engine: drop both references. */
    srv_slot_release(s, sl);
    srv_slot_release(s, sl);
    g->slot = NULL;
    g->job = NULL;
    srv_fail(e, 503, "server_error", NULL, NULL, "The engine is not taking requests.");
    goto out;
  }
  ok = true;
out:
  prompts_free(&ps);
  if (!ok && !g->slot) { /* the job was never handed over */
    srv_job_free(g->job);
    g->job = NULL;
  }
  return ok;
}

/* ---- reading events ------------------------------------------------------------------------------------------ */

static bool client_gone(int fd) {
  if (fd < 0) return false;
  struct pollfd pf = {.fd = fd, .events = POLLRDHUP};
  return poll(&pf, 1, 0) > 0 && (pf.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL));
}

int srv_gen_next(srv_gen *g, const kiln_rec **rec, int timeout_ms) {
  kiln_ring_cons *c = &g->slot->out_cons;
  double deadline = srv_now() + timeout_ms * 1e-3;
  for (;;) {
    int rc = kiln_ring_peek(c, rec);
    if (rc == KILN_OK) {
      if ((*rec)->corr == g->id) return KILN_OK;
      kiln_ring_release(c); /* a leftover of an earlier request in this slot */
      continue;
    }
    if (rc != KILN_EAGAIN) return rc;
    if (client_gone(g->fd)) return KILN_ECANCELED;
    if (atomic_load_explicit(&g->s->engine_done, memory_order_acquire)) return KILN_ECLOSED;
    double left = deadline - srv_now();
    if (left <= 0) return KILN_ETIMEDOUT;
    /* Sleep in slices so a hang-up is noticed within 100 ms even when no token comes. */
    double slice = left < 0.1 ? left : 0.1;
    rc = kiln_ring_wait_readable(c, 64, (int64_t)(slice * 1e9));
    if (rc != KILN_OK && rc != KILN_ETIMEDOUT) return rc;
  }
}

void srv_gen_release_rec(srv_gen *g) { kiln_ring_release(&g->slot->out_cons); }

const srv_ev_step *srv_gen_step(srv_gen *g, const kiln_rec *rec, const srv_top **tops, const char **text) {
  if (rec->size < sizeof(srv_ev_step)) return NULL;
  const srv_ev_step *st = kiln_rec_data(rec);
  size_t need = sizeof *st + (size_t)st->n_top * sizeof(srv_top) + st->text_len;
  if (need != rec->size || st->task >= (uint32_t)g->n_choices) return NULL;
  *tops = (const srv_top *)(st + 1);
  *text = (const char *)(*tops + st->n_top);
  srv_choice *ch = &g->ch[st->task];
  if (st->finish && !ch->finish) {
    ch->finish = st->finish;
    ch->completion_tokens = st->completion_tokens;
  }
  return st;
}

void srv_gen_cancel(srv_gen *g) {
  if (g->ended || !g->slot) return;
  g->ended = true;
  /* Release: the engine reads the flag on its next turn even if the CANCEL record were delayed. */
  atomic_store_explicit(&g->job->cancel, 1, memory_order_release);
  srv_slot_send(g->s, g->slot, SRV_IN_CANCEL, NULL, 0);
  srv_slot_release(g->s, g->slot);
  g->job = NULL;
}

void srv_gen_done(srv_gen *g) {
  if (g->ended || !g->slot) return;
  g->ended = true;
  kiln_ring_cons_flush(&g->slot->out_cons);
  srv_slot_release(g->s, g->slot);
  g->job = NULL;
}

void srv_gen_take_error(srv_gen *g, const kiln_rec *rec, srv_ev_error *err) {
  memcpy(err, kiln_rec_data(rec), sizeof *err);
  err->msg[sizeof err->msg - 1] = '\0';
  if (err->http < 400 || err->http >= 600) err->http = 500;
  srv_gen_release_rec(g);
  srv_gen_done(g);
}

void srv_gen_free(srv_gen *g) {
  if (!g) return;
  for (int i = 0; g->ch && i < g->n_choices; i++) {
    kiln_strbuf_free(&g->ch[i].text);
    json_decref(g->ch[i].lp);
  }
  free(g->ch);
  for (int i = 0; g->echo_text && i < g->n_prompts; i++) free(g->echo_text[i]);
  free(g->echo_text);
  free(g->echo_len);
  g->ch = NULL;
  g->echo_text = NULL;
  g->echo_len = NULL;
}
