/*
 * server/server.c: starting and stopping the server, and the request dispatcher that libmicrohttpd calls on each
 * connection's thread.
 *
 * The dispatcher sees a request three ways: first with its headers only (route, method, key and declared size are
 * checked there, so a bad request is refused before its body is read), then once per piece of body (gathered up to
 * max_body_bytes), then once more with no data, when the whole body is there and the route runs.
 */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "kiln/status.h"
#include "server/server_impl.h"

kiln_server_opts kiln_server_opts_default(void) {
  kiln_server_opts o;
  memset(&o, 0, sizeof o);
  o.host = "127.0.0.1";
  o.port = 8080;
  o.max_queue = 64;
  o.max_body_bytes = 8 << 20;
  o.ping_ms = 15000;
  o.max_connections = 1000;
  o.bos_id = -2;
  o.parallel = 4;
  return o;
}

/* ---- routing ------------------------------------------------------------------------------------------------- */

typedef enum route {
  R_NONE = 0,
  R_MODELS,
  R_MODEL,
  R_COMPLETIONS,
  R_CHAT,
  R_HEALTH,
  R_METRICS,
  R_TOKENIZE,
  R_DETOKENIZE,
} route;

static route find_route(const char *url, bool *post) {
  *post = false;
  if (strcmp(url, "/v1/models") == 0) return R_MODELS;
  if (strncmp(url, "/v1/models/", 11) == 0 && url[11]) return R_MODEL;
  if (strcmp(url, "/health") == 0) return R_HEALTH;
  if (strcmp(url, "/metrics") == 0) return R_METRICS;
  *post = true;
  if (strcmp(url, "/v1/completions") == 0) return R_COMPLETIONS;
  if (strcmp(url, "/v1/chat/completions") == 0) return R_CHAT;
  if (strcmp(url, "/tokenize") == 0) return R_TOKENIZE;
  if (strcmp(url, "/detokenize") == 0) return R_DETOKENIZE;
  return R_NONE;
}

static bool needs_key(route r) { return r != R_HEALTH && r != R_METRICS; }

static enum MHD_Result run_route(srv_req *r, struct MHD_Connection *c, route rt) {
  switch (rt) {
  case R_MODELS: return srv_route_models(r, c, NULL);
  case R_MODEL: return srv_route_models(r, c, r->url + 11);
  case R_HEALTH: return srv_route_health(r, c);
  case R_METRICS: return srv_route_metrics(r, c);
  default: break;
  }
  if (r->too_big)
    return srv_reply_error(r, c, 413, "invalid_request_error", "request_too_large", NULL,
                           "The request body is larger than %lld bytes.", (long long)r->s->o.max_body_bytes);
  json_error_t err;
  /* Duplicate keys are refused: two different "model" or "max_tokens" fields cannot both be honoured. */
  json_t *body = json_loadb(r->body.p ? r->body.p : "", r->body.n, JSON_REJECT_DUPLICATES, &err);
  if (!body)
    return srv_reply_error(r, c, 400, "invalid_request_error", NULL, NULL,
                           "We could not parse the JSON body of your request: %s (line %d, column %d).", err.text,
                           err.line, err.column);
  enum MHD_Result ret;
  if (!json_is_object(body)) {
    ret = srv_reply_error(r, c, 400, "invalid_request_error", NULL, NULL, "The request body must be a JSON object.");
  } else if (rt == R_TOKENIZE) {
    ret = srv_route_tokenize(r, c, body);
  } else if (rt == R_DETOKENIZE) {
    ret = srv_route_detokenize(r, c, body);
  } else {
    ret = srv_route_generate(r, c, body, rt == R_CHAT);
  }
  json_decref(body);
  return ret;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                  const char *version, const char *upload, size_t *upload_size, void **con_cls) {
  (void)version;
  struct kiln_server *s = cls;
  srv_req *r = *con_cls;
  bool post;
  route rt = find_route(url, &post);
  if (!r) {
    r = calloc(1, sizeof *r);
    if (!r) return MHD_NO;
    r->s = s;
    r->method = method;
    r->url = url;
    r->t0 = srv_now();
    *con_cls = r;
    /* Everything that needs no body is decided now. */
    if (strcasecmp(method, "OPTIONS") == 0) return srv_reply(r, c, 204, NULL, NULL, 0);
    if (rt == R_NONE)
      return srv_reply_error(r, c, 404, "invalid_request_error", NULL, NULL, "Invalid URL (%s %.200s)", method,
                             url);
    bool get = strcmp(method, "GET") == 0 || (strcmp(method, "HEAD") == 0 && !post);
    if ((post && strcmp(method, "POST") != 0) || (!post && !get))
      return srv_reply_error(r, c, 405, "invalid_request_error", NULL, NULL, "Method %s is not allowed on %.200s",
                             method, url);
    if (needs_key(rt) && !srv_auth_ok(s, c))
      return srv_reply_error(r, c, 401, "invalid_request_error", "invalid_api_key", NULL,
                             "Incorrect API key provided. Send it as 'Authorization: Bearer <key>'.");
    const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
    if (cl) {
      char *end;
      errno = 0;
      unsigned long long n = strtoull(cl, &end, 10);
      if (errno || *end || n > (unsigned long long)s->o.max_body_bytes)
        return srv_reply_error(r, c, 413, "invalid_request_error", "request_too_large", NULL,
                               "The request body is larger than %lld bytes.", (long long)s->o.max_body_bytes);
    }
    return MHD_YES;
  }
  if (r->status) { /* answered already: drop whatever body still comes */
    *upload_size = 0;
    return MHD_YES;
  }
  if (*upload_size) {
    size_t k = *upload_size;
    *upload_size = 0;
    if (r->too_big || r->body.n + k > (size_t)s->o.max_body_bytes) {
      r->too_big = true;
      return MHD_YES;
    }
    return kiln_strbuf_put(&r->body, upload, k) ? MHD_YES : MHD_NO;
  }
  return run_route(r, c, rt);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode why) {
  (void)c;
  struct kiln_server *s = cls;
  srv_req *r = *con_cls;
  if (!r) return;
  if (s->o.log)
    fprintf(s->o.log, "%s %s %d %.1f ms%s\n", r->method, r->url, r->status, (srv_now() - r->t0) * 1e3,
            why == MHD_REQUEST_TERMINATED_COMPLETED_OK ? "" : " (connection ended early)");
  kiln_strbuf_free(&r->body);
  free(r);
  *con_cls = NULL;
}

/* ---- start / stop -------------------------------------------------------------------------------------------- */

static char *dup_opt(const char *s, bool *oom) {
  if (!s) return NULL;
  char *p = strdup(s);
  if (!p) *oom = true;
  return p;
}

static int parse_origins(struct kiln_server *s, const char *list) {
  if (!list) return KILN_OK;
  char *copy = strdup(list);
  if (!copy) return kiln_error(KILN_ENOMEM, "server: out of memory");
  int n = 1;
  for (const char *p = list; *p; p++) n += *p == ',';
  s->origins = calloc((size_t)n, sizeof *s->origins);
  if (!s->origins) {
    free(copy);
    return kiln_error(KILN_ENOMEM, "server: out of memory");
  }
  char *save = NULL;
  for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
    while (*tok == ' ') tok++;
    size_t L = strlen(tok);
    while (L && tok[L - 1] == ' ') tok[--L] = '\0';
    if (!L) continue;
    if (strcmp(tok, "*") == 0) {
      s->cors_any = true;
      continue;
    }
    if (!(s->origins[s->n_origins] = strdup(tok))) {
      free(copy);
      return kiln_error(KILN_ENOMEM, "server: out of memory");
    }
    s->n_origins++;
  }
  free(copy);
  return KILN_OK;
}

static void server_free(struct kiln_server *s) {
  if (!s) return;
  kiln_engine_free(s->engine);
  kiln_tokenizer_free(s->own_tok);
  kiln_model_free(s->own_model);
  srv_slots_free(s);
  for (int i = 0; i < s->n_origins; i++) free(s->origins[i]);
  free(s->origins);
  free(s->host);
  free(s->api_key);
  free(s->model_dir);
  free(s->tok_config);
  free(s->chat_tmpl_opt);
  free(s->model_id);
  free(s->device);
  pthread_cond_destroy(&s->ready_cv);
  pthread_mutex_destroy(&s->ready_mu);
  free(s);
}

static int resolve_addr(const char *host, int port, struct sockaddr_storage *ss, socklen_t *len) {
  struct addrinfo hints = {.ai_flags = AI_PASSIVE | AI_NUMERICSERV, .ai_socktype = SOCK_STREAM};
  char ps[16];
  snprintf(ps, sizeof ps, "%d", port);
  struct addrinfo *res = NULL;
  int g = getaddrinfo(host, ps, &hints, &res);
  if (g != 0 || !res) return kiln_error(KILN_EINVAL, "server: cannot resolve '%s': %s", host, gai_strerror(g));
  memcpy(ss, res->ai_addr, res->ai_addrlen);
  *len = res->ai_addrlen;
  freeaddrinfo(res);
  return KILN_OK;
}

int kiln_server_start(kiln_server **out, const kiln_server_opts *opts) {
  if (!out || !opts) return kiln_error(KILN_EINVAL, "server: NULL argument");
  *out = NULL;
  const kiln_server_opts *o = opts;
  if (!o->model_dir && !(o->model && o->tokenizer))
    return kiln_error(KILN_EINVAL, "server: give a model directory, or a model and a tokenizer");
  if (o->port < 0 || o->port > 65535) return kiln_error(KILN_EINVAL, "server: port %d out of range", o->port);
  if (o->parallel < 1 || o->parallel > 256)
    return kiln_error(KILN_EINVAL, "server: --parallel %d out of range 1..256", o->parallel);
  if (o->max_queue < 0 || o->max_queue > 65536)
    return kiln_error(KILN_EINVAL, "server: --max-queue %d out of range 0..65536", o->max_queue);
  if (o->max_body_bytes < 1024) return kiln_error(KILN_EINVAL, "server: max body below 1 KiB");
  if (o->ping_ms < 10) return kiln_error(KILN_EINVAL, "server: ping interval below 10 ms");
  if (o->api_key && !*o->api_key) return kiln_error(KILN_EINVAL, "server: the API key is empty");

  struct kiln_server *s = calloc(1, sizeof *s);
  if (!s) return kiln_error(KILN_ENOMEM, "server: out of memory");
  pthread_mutex_init(&s->ready_mu, NULL);
  pthread_cond_init(&s->ready_cv, NULL);
  s->o = *o;
  bool oom = false;
  s->host = dup_opt(o->host ? o->host : "127.0.0.1", &oom);
  s->api_key = dup_opt(o->api_key, &oom);
  s->model_dir = dup_opt(o->model_dir, &oom);
  s->tok_config = dup_opt(o->tokenizer_config, &oom);
  s->chat_tmpl_opt = dup_opt(o->chat_template, &oom);
  s->device = dup_opt(o->device, &oom);
  if (o->model_id) {
    s->model_id = dup_opt(o->model_id, &oom);
  } else if (o->model_dir) {
    /* The directory's base name, without trailing slashes. */
    char *d = dup_opt(o->model_dir, &oom);
    if (d) {
      size_t L = strlen(d);
      while (L > 1 && d[L - 1] == '/') d[--L] = '\0';
      const char *b = strrchr(d, '/');
      s->model_id = dup_opt(b && b[1] ? b + 1 : d, &oom);
      free(d);
    }
  } else {
    s->model_id = dup_opt("kiln", &oom);
  }
  s->model = o->model;
  s->tok = o->tokenizer;
  s->parallel = o->parallel;
  s->n_slots = o->parallel + o->max_queue;
  s->created = (int64_t)time(NULL);
  srv_metrics_init(&s->metrics);
  int rc = oom ? kiln_error(KILN_ENOMEM, "server: out of memory") : KILN_OK;
  if (!rc) rc = parse_origins(s, o->cors_origins);
  if (!rc) rc = srv_slots_init(s);
  struct sockaddr_storage ss;
  socklen_t sl = 0;
  if (!rc) rc = resolve_addr(s->host, o->port, &ss, &sl);
  if (rc) {
    server_free(s);
    return rc;
  }
  /* One thread per connection: a request's thread may block while its tokens are generated. MHD_USE_POLL lifts
   * select()'s limit on descriptor numbers; MHD_USE_ITC lets kiln_server_stop quiesce the listener. */
  unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL | MHD_USE_ITC;
  if (ss.ss_family == AF_INET6) flags |= MHD_USE_IPv6;
  s->mhd = MHD_start_daemon(flags, (uint16_t)o->port, NULL, NULL, on_request, s, MHD_OPTION_SOCK_ADDR,
                            (struct sockaddr *)&ss, MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
                            MHD_OPTION_CONNECTION_LIMIT, (unsigned)(o->max_connections > 0 ? o->max_connections : 1000),
                            MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)120, MHD_OPTION_THREAD_STACK_SIZE,
                            (size_t)(1 << 20), MHD_OPTION_END);
  if (!s->mhd) {
    rc = kiln_error(KILN_EIO, "server: cannot listen on %s:%d (in use, or not an address of this machine)", s->host,
                    o->port);
    server_free(s);
    return rc;
  }
  const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->mhd, MHD_DAEMON_INFO_BIND_PORT);
  s->port = di ? di->port : o->port;
  int e = pthread_create(&s->engine_thread, NULL, srv_engine_main, s);
  if (e) {
    MHD_stop_daemon(s->mhd);
    server_free(s);
    return kiln_error(KILN_ENOMEM, "server: cannot start the engine thread: %s", strerror(e));
  }
  s->engine_started = true;
  if (o->log) fprintf(o->log, "kiln serve: listening on http://%s:%d (model '%s')\n", s->host, s->port, s->model_id);
  *out = s;
  return KILN_OK;
}

int kiln_server_wait_ready(kiln_server *s, int timeout_ms) {
  if (!s) return kiln_error(KILN_EINVAL, "server: NULL");
  struct timespec dl;
  clock_gettime(CLOCK_REALTIME, &dl);
  if (timeout_ms >= 0) {
    dl.tv_sec += timeout_ms / 1000;
    dl.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (dl.tv_nsec >= 1000000000L) {
      dl.tv_sec++;
      dl.tv_nsec -= 1000000000L;
    }
  }
  pthread_mutex_lock(&s->ready_mu);
  int st;
  while ((st = atomic_load_explicit(&s->ready, memory_order_acquire)) == 0) {
    int e = timeout_ms < 0 ? pthread_cond_wait(&s->ready_cv, &s->ready_mu)
                           : pthread_cond_timedwait(&s->ready_cv, &s->ready_mu, &dl);
    if (e == ETIMEDOUT) break;
  }
  pthread_mutex_unlock(&s->ready_mu);
  if (st == 1) {
    if (s->o.log)
      fprintf(s->o.log, "kiln serve: ready: %s on %s, context %d, %d parallel, chat template %s\n", s->model_id,
              s->device_name, s->n_ctx, s->parallel, s->have_tmpl ? kiln_chat_format_name(s->tmpl.format) : "none");
    return KILN_OK;
  }
  if (st == 0) return kiln_error(KILN_ETIMEDOUT, "server: the model is still loading");
  return kiln_error(st, "%s", s->load_error);
}

int kiln_server_port(const kiln_server *s) { return s ? s->port : -1; }

void kiln_server_stop(kiln_server *s) {
  if (!s) return;
  /* Stop taking connections, end every generation (their clients get an error event), then join. The listening
   * socket handed back by quiesce is ours to close, but only once the daemon's threads are gone. */
  MHD_socket listen_fd = s->mhd ? MHD_quiesce_daemon(s->mhd) : MHD_INVALID_SOCKET;
  atomic_store_explicit(&s->stopping, 1, memory_order_release);
  srv_bell_ring(s);
  if (s->engine_started) pthread_join(s->engine_thread, NULL);
  atomic_store_explicit(&s->engine_done, 1, memory_order_release);
  if (s->mhd) MHD_stop_daemon(s->mhd);
  if (listen_fd != MHD_INVALID_SOCKET) close(listen_fd);
  server_free(s);
}
