/*
 * server/server_engine.c: the engine thread. It loads the model (so GET /health can answer 503 meanwhile), then
 * owns the engine for good: every kiln_engine_* and kiln_gen_* call of the server happens here.
 *
 * Loop, one turn:
 *   1. take every record waiting in the slots' in-rings (fan-in, one record per slot per pass): SUBMIT puts the
 *      request's tasks (one per choice) at the back of the waiting list; CANCEL ends a request
 *   2. start waiting tasks, oldest first, in free sequence slots
 *   3. step every running task once, in sequence-slot order (fair round-robin), and send its event on the request's
 *      out-ring; a task whose event did not fit keeps it in its outbox and is not stepped until it is sent (a slow
 *      reader slows only its own request)
 *   4. finish requests whose tasks are all done (END), or failed (ERROR)
 *   5. with nothing to run, sleep on the doorbell (server_slots.c); with only blocked tasks, nap 1 ms
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kiln/status.h"
#include "server/server_impl.h"

typedef struct eng {
  struct kiln_server *s;
  kiln_engine *e;
  int n_seqs;
  srv_task **running;        /* [n_seqs] */
  srv_task *wait_head, *wait_tail;
  srv_job **live;            /* [n_slots]: the job each slot holds on the engine side, or NULL */
  float *lp_logits;          /* prompt logprobs scratch: [lp_chunk][vocab] */
  int lp_chunk;
  uint8_t *rec_buf;          /* one STEP record being built */
  size_t rec_cap;
} eng;

/* ---- sending events ---------------------------------------------------------------------------------------- */

/* Sends a record on the job's out-ring. KILN_EAGAIN when it is full (nothing sent). */
static int send_rec(srv_job *j, uint32_t type, const void *payload, size_t size) {
  static const char none = 0; /* an empty payload still needs a valid pointer for the copy */
  srv_slot *sl = j->slot;
  if (!payload) payload = &none;
  int rc = kiln_ring_push(&sl->out_prod, payload, size, type, j->id);
  if (rc == KILN_ERANGE) return kiln_error(KILN_ERANGE, "server: an event of %zu bytes does not fit the ring", size);
  return rc;
}

/* Sends or keeps in the task's outbox. */
static int send_or_keep(srv_task *t, uint32_t type, const void *payload, size_t size) {
  int rc = send_rec(t->job, type, payload, size);
  if (rc != KILN_EAGAIN) return rc;
  size_t need = 8 + size;
  if (need > t->outbox_cap) {
    uint8_t *p = realloc(t->outbox, need);
    if (!p) return kiln_error(KILN_ENOMEM, "server: out of memory");
    t->outbox = p;
    t->outbox_cap = need;
  }
  uint32_t hdr[2] = {type, (uint32_t)size};
  memcpy(t->outbox, hdr, 8);
  memcpy(t->outbox + 8, payload, size);
  t->outbox_len = need;
  return KILN_OK;
}

/* KILN_OK when the outbox is empty afterwards. */
static int flush_outbox(srv_task *t) {
  if (!t->outbox_len) return KILN_OK;
  uint32_t hdr[2];
  memcpy(hdr, t->outbox, 8);
  int rc = send_rec(t->job, hdr[0], t->outbox + 8, hdr[1]);
  if (rc == KILN_OK) t->outbox_len = 0;
  return rc;
}

/* ---- job bookkeeping ----------------------------------------------------------------------------------------- */

static void wait_unlink(eng *E, srv_task *t) {
  if (t->prev) t->prev->next = t->next;
  else E->wait_head = t->next;
  if (t->next) t->next->prev = t->prev;
  else E->wait_tail = t->prev;
  t->prev = t->next = NULL;
}

/* Ends a task without more output (cancel or failure). */
static void task_drop(eng *E, srv_task *t) {
  if (t->state == SRV_TASK_RUNNING) {
    kiln_gen_free(t->gen);
    t->gen = NULL;
    E->running[t->seq] = NULL;
  } else if (t->state == SRV_TASK_WAITING) {
    wait_unlink(E, t);
  }
  if (t->state != SRV_TASK_DONE) t->job->n_done++;
  t->state = SRV_TASK_DONE;
  t->outbox_len = 0;
}

/* Gives the job back: metrics, the engine's reference on the slot. */
static void job_release(eng *E, srv_job *j, bool ok) {
  srv_metrics *m = &E->s->metrics;
  atomic_fetch_sub_explicit(j->started ? &m->running : &m->waiting, 1, memory_order_relaxed);
  if (ok) {
    atomic_fetch_add_explicit(&m->requests_ok, 1, memory_order_relaxed);
    srv_hist_observe(&m->e2e, srv_now() - j->t_submit);
  } else if (atomic_load_explicit(&j->cancel, memory_order_relaxed)) {
    atomic_fetch_add_explicit(&m->cancelled, 1, memory_order_relaxed);
  } else {
    atomic_fetch_add_explicit(&m->requests_err, 1, memory_order_relaxed);
  }
  E->live[j->slot->index] = NULL;
  srv_slot_release(E->s, j->slot);
}

static void job_cancel(eng *E, srv_job *j) {
  for (int i = 0; i < j->n_tasks; i++) task_drop(E, &j->tasks[i]);
  job_release(E, j, false);
}

/* Fails the job: its tasks end and the client gets an ERROR event (best effort: a full ring drops it, and the
 * connection then reports the request as failed when the engine lets go of the slot... see srv_gen_next). */
static void job_fail(eng *E, srv_job *j, int status, int http, const char *msg) {
  srv_ev_error err = {.status = status, .http = http};
  snprintf(err.msg, sizeof err.msg, "%s", msg && *msg ? msg : kiln_strerror(status));
  for (int i = 0; i < j->n_tasks; i++) task_drop(E, &j->tasks[i]);
  /* The outboxes were dropped, so there is room unless the reader is far behind; give it a moment. */
  int rc = send_rec(j, SRV_EV_ERROR, &err, sizeof err);
  for (int k = 0; rc == KILN_EAGAIN && k < 200 && !atomic_load_explicit(&j->cancel, memory_order_relaxed); k++) {
    kiln_ring_wait_writable(&j->slot->out_prod, sizeof err, 0, 5000000);
    rc = send_rec(j, SRV_EV_ERROR, &err, sizeof err);
  }
  job_release(E, j, false);
}

/* ---- prompt logprobs (echo + logprobs) ----------------------------------------------------------------------- */

/* The log-probability of each prompt token given the ones before it (none for the first), with the top
 * alternatives, from a forward pass over the prompt in chunks (all logits). The sequence is reset afterwards by
 * kiln_gen_start, which runs its own prefill. */
static int prompt_logprobs(eng *E, srv_task *t) {
  const int V = E->s->model->cfg.vocab_size, top = t->job->top, W = 1 + top;
  int rc = kiln_engine_seq_reset(E->e, t->seq);
  if (rc) return rc;
  srv_top *out = t->prompt_lp;
  out[0].id = t->prompt[0];
  out[0].lp = NAN; /* no logprob for the first token */
  for (int k = 1; k < W; k++) out[k] = (srv_top){-1, NAN};
  for (int off = 0; off < t->n_prompt - 1; off += E->lp_chunk) {
    int n = t->n_prompt - 1 - off < E->lp_chunk ? t->n_prompt - 1 - off : E->lp_chunk;
    rc = kiln_engine_forward(E->e, t->seq, t->prompt + off, n, E->lp_logits, true);
    if (rc) return rc;
    for (int i = 0; i < n; i++) {
      const float *x = E->lp_logits + (size_t)i * (size_t)V;
      float mx = -INFINITY;
      for (int v = 0; v < V; v++) mx = x[v] > mx ? x[v] : mx;
      double sum = 0;
      for (int v = 0; v < V; v++) sum += exp((double)x[v] - mx);
      double lse = mx + log(sum);
      srv_top *row = out + (size_t)(off + i + 1) * (size_t)W;
      int32_t tok = t->prompt[off + i + 1];
      row[0] = (srv_top){tok, (float)((double)x[tok] - lse)};
      int have = 0; /* insertion into the sorted top list, ties keeping the lower id */
      for (int v = 0; v < V && top > 0; v++) {
        if (have == top && !(x[v] > x[row[have].id])) continue;
        int j = have < top ? ++have : have;
        while (j > 1 && x[v] > x[row[j - 1].id]) {
          row[j] = row[j - 1];
          j--;
        }
        row[j] = (srv_top){v, 0};
      }
      for (int k = 1; k <= have; k++) row[k].lp = (float)((double)x[row[k].id] - lse);
      for (int k = have + 1; k < W; k++) row[k] = (srv_top){-1, NAN};
    }
  }
  return KILN_OK;
}

/* ---- intake, start, step ------------------------------------------------------------------------------------- */

static void on_submit(eng *E, uint32_t which, const kiln_rec *rec) {
  srv_job *j;
  if (rec->size != sizeof j) return;
  memcpy(&j, kiln_rec_data(rec), sizeof j);
  if (!j || j->id != rec->corr || j->slot != &E->s->slots[which]) return; /* never trust a record blindly */
  E->live[which] = j;
  atomic_fetch_add_explicit(&E->s->metrics.waiting, 1, memory_order_relaxed);
  if (atomic_load_explicit(&E->s->stopping, memory_order_relaxed)) {
    job_fail(E, j, KILN_ECANCELED, 503, "the server is shutting down");
    return;
  }
  for (int i = 0; i < j->n_tasks; i++) {
    srv_task *t = &j->tasks[i];
    t->job = j;
    t->state = SRV_TASK_WAITING;
    t->prev = E->wait_tail;
    t->next = NULL;
    if (E->wait_tail) E->wait_tail->next = t;
    else E->wait_head = t;
    E->wait_tail = t;
  }
}

static void intake(eng *E) {
  const kiln_rec *rec;
  uint32_t which;
  for (;;) {
    int rc = kiln_ring_fanin_peek(&E->s->fanin, &rec, &which);
    if (rc == KILN_EAGAIN) break;
    if (rc != KILN_OK) { /* a corrupt in-ring cannot happen in process memory; stop polling it */
      E->s->in_cons[which].ring = NULL;
      continue;
    }
    if (rec->type == SRV_IN_SUBMIT) {
      on_submit(E, which, rec);
    } else if (rec->type == SRV_IN_CANCEL) {
      srv_job *j = E->live[which];
      if (j && j->id == rec->corr) job_cancel(E, j);
    }
    kiln_ring_release(&E->s->in_cons[which]);
  }
}

static void start_waiting(eng *E) {
  for (int seq = 0; seq < E->n_seqs && E->wait_head; seq++) {
    if (E->running[seq]) continue;
    srv_task *t = E->wait_head;
    srv_job *j = t->job;
    wait_unlink(E, t);
    t->seq = seq;
    int rc = KILN_OK;
    if (j->prompt_logprobs) {
      rc = prompt_logprobs(E, t);
      if (!rc) rc = send_or_keep(t, SRV_EV_PROMPT_LP, &t->index, sizeof t->index);
    }
    if (!rc) rc = kiln_gen_start(&t->gen, E->e, E->s->tok, seq, t->prompt, t->n_prompt, &t->params);
    if (rc) {
      t->state = SRV_TASK_NEW; /* not waiting any more, not running */
      job_fail(E, j, rc, rc == KILN_ECONTEXT || rc == KILN_ERANGE ? 400 : 500, kiln_last_error());
      seq--; /* the slot is still free */
      continue;
    }
    t->state = SRV_TASK_RUNNING;
    t->t_last = 0;
    E->running[seq] = t;
    if (!j->started) {
      j->started = true;
      atomic_fetch_sub_explicit(&E->s->metrics.waiting, 1, memory_order_relaxed);
      atomic_fetch_add_explicit(&E->s->metrics.running, 1, memory_order_relaxed);
    }
    atomic_fetch_add_explicit(&E->s->metrics.prompt_tokens, (uint64_t)t->n_prompt, memory_order_relaxed);
  }
}

static int step_task(eng *E, srv_task *t) {
  srv_job *j = t->job;
  kiln_gen_event ev;
  int rc = kiln_gen_step(t->gen, &ev);
  if (rc) return rc;
  double now = srv_now();
  srv_metrics *m = &E->s->metrics;
  if (ev.token >= 0) {
    atomic_fetch_add_explicit(&m->generation_tokens, 1, memory_order_relaxed);
    if (t->t_last == 0) {
      if (t->index == 0) srv_hist_observe(&m->ttft, now - j->t_submit);
    } else {
      srv_hist_observe(&m->itl, now - t->t_last);
    }
    t->t_last = now;
  }
  int n_top = ev.n_top < 0 ? 0 : ev.n_top > j->top ? j->top : ev.n_top;
  size_t size = sizeof(srv_ev_step) + (size_t)n_top * sizeof(srv_top) + ev.text_len;
  if (size > E->rec_cap) {
    uint8_t *p = realloc(E->rec_buf, size);
    if (!p) return kiln_error(KILN_ENOMEM, "server: out of memory");
    E->rec_buf = p;
    E->rec_cap = size;
  }
  srv_ev_step st = {.task = (uint32_t)t->index, .token = ev.token, .logprob = ev.logprob, .finish = (uint8_t)ev.finish,
                    .n_top = (uint8_t)n_top, .text_len = (uint32_t)ev.text_len};
  if (ev.finish != KILN_FINISH_NONE) {
    kiln_gen_stats gs;
    kiln_gen_get_stats(t->gen, &gs);
    st.prompt_tokens = gs.prompt_tokens;
    st.completion_tokens = gs.completion_tokens;
  }
  memcpy(E->rec_buf, &st, sizeof st);
  srv_top *tops = (srv_top *)(E->rec_buf + sizeof st);
  for (int k = 0; k < n_top; k++) tops[k] = (srv_top){ev.top_ids[k], ev.top_logprobs[k]};
  if (ev.text_len) memcpy(E->rec_buf + sizeof st + (size_t)n_top * sizeof(srv_top), ev.text, ev.text_len);
  rc = send_or_keep(t, SRV_EV_STEP, E->rec_buf, size);
  if (rc) return rc;
  if (ev.finish != KILN_FINISH_NONE) {
    kiln_gen_free(t->gen);
    t->gen = NULL;
    E->running[t->seq] = NULL;
    t->state = SRV_TASK_DONE;
    j->n_done++;
  }
  return KILN_OK;
}

/* Finishes jobs whose tasks are all done and sent. */
static void finish_jobs(eng *E) {
  for (int i = 0; i < E->s->n_slots; i++) {
    srv_job *j = E->live[i];
    if (!j || j->n_done < j->n_tasks) continue;
    bool sent = true;
    for (int k = 0; k < j->n_tasks && sent; k++) sent = j->tasks[k].outbox_len == 0;
    if (!sent) continue;
    if (send_rec(j, SRV_EV_END, NULL, 0) == KILN_OK) job_release(E, j, true);
  }
}

/* One turn over the running tasks. Returns the number of tasks stepped; *blocked counts tasks whose outbox is
 * waiting for room. */
static int step_all(eng *E, int *blocked) {
  int stepped = 0;
  *blocked = 0;
  for (int seq = 0; seq < E->n_seqs; seq++) {
    srv_task *t = E->running[seq];
    if (!t) continue;
    srv_job *j = t->job;
    if (atomic_load_explicit(&j->cancel, memory_order_acquire)) {
      job_cancel(E, j);
      continue;
    }
    int rc = flush_outbox(t);
    if (rc == KILN_EAGAIN) {
      (*blocked)++;
      continue;
    }
    if (rc == KILN_OK) rc = step_task(E, t);
    if (rc) {
      job_fail(E, j, rc, 500, kiln_last_error());
      continue;
    }
    stepped++;
  }
  /* Tasks that finished with an event still in their outbox. */
  for (int i = 0; i < E->s->n_slots; i++) {
    srv_job *j = E->live[i];
    if (!j) continue;
    for (int k = 0; k < j->n_tasks; k++) {
      srv_task *t = &j->tasks[k];
      if (t->state != SRV_TASK_RUNNING && t->outbox_len && flush_outbox(t) == KILN_EAGAIN) (*blocked)++;
    }
  }
  return stepped;
}

static void publish_kv(eng *E) {
  uint64_t used = 0;
  for (int seq = 0; seq < E->n_seqs; seq++)
    if (E->running[seq]) used += (uint64_t)kiln_engine_seq_pos(E->e, seq);
  atomic_store_explicit(&E->s->metrics.kv_used, used, memory_order_relaxed);
}

static void engine_loop(eng *E) {
  struct kiln_server *s = E->s;
  double stop_deadline = 0;
  for (;;) {
    /* Acquire: a bump we see was made after its record's publication, so the poll below sees the record. */
    uint32_t bell = atomic_load_explicit(&s->bell, memory_order_acquire);
    intake(E);
    bool stopping = atomic_load_explicit(&s->stopping, memory_order_acquire);
    if (stopping) {
      if (stop_deadline == 0) {
        stop_deadline = srv_now() + 5.0;
        for (int i = 0; i < s->n_slots; i++)
          if (E->live[i]) job_fail(E, E->live[i], KILN_ECANCELED, 503, "the server is shutting down");
      }
      bool any = false;
      for (int i = 0; i < s->n_slots; i++) any = any || E->live[i];
      if (!any || srv_now() > stop_deadline) break;
    }
    start_waiting(E);
    int blocked;
    int stepped = step_all(E, &blocked);
    finish_jobs(E);
    publish_kv(E);
    if (stepped == 0 && !E->wait_head) {
      bool pending = false; /* jobs whose END did not fit yet */
      for (int i = 0; i < s->n_slots && !pending; i++)
        pending = E->live[i] && E->live[i]->n_done == E->live[i]->n_tasks;
      srv_bell_wait(s, bell, blocked || pending || stopping ? 1 : -1);
    }
  }
  for (int i = 0; i < s->n_slots; i++)
    if (E->live[i]) job_cancel(E, E->live[i]);
}

/* ---- loading ------------------------------------------------------------------------------------------------- */

static char *path_join(const char *dir, const char *name) {
  size_t n = strlen(dir) + strlen(name) + 2;
  char *p = malloc(n);
  if (p) snprintf(p, n, "%s/%s", dir, name);
  return p;
}

static int load_template(struct kiln_server *s) {
  char *cfg = s->tok_config ? strdup(s->tok_config) : s->model_dir ? path_join(s->model_dir, "tokenizer_config.json")
                                                                    : NULL;
  if ((s->tok_config || s->model_dir) && !cfg) return kiln_error(KILN_ENOMEM, "server: out of memory");
  int rc = KILN_ENOTFOUND;
  kiln_chat_template from_cfg;
  memset(&from_cfg, 0, sizeof from_cfg);
  if (cfg) {
    rc = kiln_chat_template_load(&from_cfg, cfg);
    if (rc && rc != KILN_ENOTFOUND && rc != KILN_EUNSUPPORTED) {
      free(cfg);
      return rc;
    }
    if (rc && !s->chat_tmpl_opt && s->o.log)
      fprintf(s->o.log, "kiln serve: %s; /v1/chat/completions is disabled\n", kiln_last_error());
  }
  free(cfg);
  if (!rc) {
    s->tmpl = from_cfg;
    s->have_tmpl = true;
  }
  if (s->chat_tmpl_opt) {
    kiln_chat_template t;
    if (kiln_chat_template_by_name(&t, s->chat_tmpl_opt) != KILN_OK) {
      /* Not a family name: a file of Jinja source. */
      char *src = NULL;
      FILE *f = fopen(s->chat_tmpl_opt, "rb");
      if (!f) return kiln_error(KILN_ENOTFOUND, "%s: not a chat template family (chatml, qwen3, llama3, llama31, "
                                                "llama32) nor a readable file", s->chat_tmpl_opt);
      size_t cap = 1 << 20, n;
      src = malloc(cap + 1);
      n = src ? fread(src, 1, cap, f) : 0;
      fclose(f);
      if (!src) return kiln_error(KILN_ENOMEM, "server: out of memory");
      src[n] = '\0';
      memset(&t, 0, sizeof t);
      rc = kiln_chat_template_detect(&t, src);
      free(src);
      if (rc) return kiln_error(rc, "%s: %s", s->chat_tmpl_opt, kiln_last_error());
      if (s->have_tmpl) memcpy(t.bos_token, s->tmpl.bos_token, sizeof t.bos_token);
    } else if (s->have_tmpl && s->tmpl.bos_token[0]) {
      memcpy(t.bos_token, s->tmpl.bos_token, sizeof t.bos_token);
    }
    s->tmpl = t;
    s->have_tmpl = true;
  }
  return KILN_OK;
}

static int load_all(struct kiln_server *s, eng *E) {
  int rc;
  if (!s->model) {
    rc = kiln_model_load(&s->own_model, s->model_dir, NULL, NULL);
    if (rc) return rc;
    s->model = s->own_model;
  }
  if (!s->tok) {
    char *tp = path_join(s->model_dir, "tokenizer.json");
    if (!tp) return kiln_error(KILN_ENOMEM, "server: out of memory");
    rc = kiln_tokenizer_load(&s->own_tok, tp);
    free(tp);
    if (rc) return rc;
    s->tok = s->own_tok;
  }
  if ((rc = load_template(s))) return rc;
  kiln_engine_opts eo = {.device = s->device, .n_threads = s->o.n_threads, .n_ctx = s->o.n_ctx,
                         .n_seqs = s->parallel};
  if ((rc = kiln_engine_create(&s->engine, s->model, &eo))) return rc;
  E->e = s->engine;
  E->n_seqs = kiln_engine_n_seqs(s->engine);
  s->n_ctx = kiln_engine_n_ctx(s->engine);
  const kiln_config *cfg = &s->model->cfg;
  int tv = kiln_tokenizer_n_vocab(s->tok);
  s->n_vocab = cfg->vocab_size < tv ? cfg->vocab_size : tv;
  if (s->o.bos_id >= 0) s->bos_id = s->o.bos_id;
  else if (s->o.bos_id == -3 || (s->o.bos_id == -2 && cfg->arch == KILN_ARCH_LLAMA)) s->bos_id = cfg->bos_token_id;
  else s->bos_id = -1;
  if (s->bos_id >= s->n_vocab) return kiln_error(KILN_ERANGE, "server: bos id %d outside the vocabulary", s->bos_id);
  s->eot_id = -1;
  s->eot_text = s->have_tmpl ? kiln_chat_end_of_turn(&s->tmpl) : NULL;
  if (s->eot_text) {
    int32_t id = kiln_tokenizer_find(s->tok, s->eot_text);
    bool is_eos = false;
    for (int i = 0; i < cfg->n_eos; i++) is_eos = is_eos || cfg->eos_token_ids[i] == id;
    if (id >= 0 && !is_eos) s->eot_id = id; /* stop on it through a stop string */
  }
  snprintf(s->device_name, sizeof s->device_name, "%s", kiln_engine_device(s->engine));
  E->running = calloc((size_t)E->n_seqs, sizeof *E->running);
  E->live = calloc((size_t)s->n_slots, sizeof *E->live);
  E->lp_chunk = (int)((16u << 20) / ((size_t)cfg->vocab_size * sizeof(float)));
  E->lp_chunk = E->lp_chunk < 1 ? 1 : E->lp_chunk > 64 ? 64 : E->lp_chunk;
  E->lp_logits = malloc((size_t)E->lp_chunk * (size_t)cfg->vocab_size * sizeof(float));
  if (!E->running || !E->live || !E->lp_logits) return kiln_error(KILN_ENOMEM, "server: out of memory");
  return KILN_OK;
}

void *srv_engine_main(void *arg) {
  struct kiln_server *s = arg;
  eng E = {.s = s};
  int rc = load_all(s, &E);
  pthread_mutex_lock(&s->ready_mu);
  if (rc) snprintf(s->load_error, sizeof s->load_error, "%s", kiln_last_error());
  /* Release: the model, tokenizer, template and sizes written above are visible to whoever sees ready == 1. */
  atomic_store_explicit(&s->ready, rc ? (rc < 0 ? rc : KILN_EINVAL) : 1, memory_order_release);
  pthread_cond_broadcast(&s->ready_cv);
  pthread_mutex_unlock(&s->ready_mu);
  if (!rc) engine_loop(&E);
  for (int seq = 0; E.running && seq < E.n_seqs; seq++) kiln_gen_free(E.running[seq] ? E.running[seq]->gen : NULL);
  free(E.running);
  free(E.live);
  free(E.lp_logits);
  free(E.rec_buf);
  return NULL;
}
