/*
 * server/server_http.c: answering: JSON bodies, errors in OpenAI's shape, the headers every response carries
 * (CORS for allowed origins), the API key check, and text that must be valid UTF-8 in JSON.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "kiln/status.h"
#include "server/server_impl.h"

static const char *origin_allowed(const struct kiln_server *s, const char *origin) {
  if (!origin) return NULL;
  if (s->cors_any) return "*";
  for (int i = 0; i < s->n_origins; i++)
    if (strcmp(s->origins[i], origin) == 0) return origin;
  return NULL;
}

void srv_add_headers(srv_req *r, struct MHD_Connection *c, struct MHD_Response *resp) {
  const struct kiln_server *s = r->s;
  MHD_add_response_header(resp, "Server", "kiln/" KILN_VERSION);
  if (!s->cors_any && !s->n_origins) return;
  const char *origin = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Origin");
  const char *allow = origin_allowed(s, origin);
  if (!allow) return;
  MHD_add_response_header(resp, "Access-Control-Allow-Origin", allow);
  if (!s->cors_any) MHD_add_response_header(resp, "Vary", "Origin");
  if (strcasecmp(r->method, "OPTIONS") == 0) {
    MHD_add_response_header(resp, "Access-Control-Allow-Methods", "GET, POST, OPTIONS");
    const char *req_h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Access-Control-Request-Headers");
    MHD_add_response_header(resp, "Access-Control-Allow-Headers",
                            req_h && strlen(req_h) < 1024 ? req_h : "Authorization, Content-Type");
    MHD_add_response_header(resp, "Access-Control-Max-Age", "86400");
  }
}

enum MHD_Result srv_reply(srv_req *r, struct MHD_Connection *c, int status, const char *ctype, char *body,
                          size_t len) {
  struct MHD_Response *resp = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
  if (!resp) {
    free(body);
    return MHD_NO;
  }
  if (ctype) MHD_add_response_header(resp, "Content-Type", ctype);
  if (status == 503) MHD_add_response_header(resp, "Retry-After", "1");
  if (status == 405) MHD_add_response_header(resp, "Allow", r->url && strncmp(r->url, "/v1/models", 10) == 0
                                                              ? "GET, OPTIONS" : "POST, OPTIONS");
  srv_add_headers(r, c, resp);
  r->status = status;
  enum MHD_Result ret = MHD_queue_response(c, (unsigned)status, resp);
  MHD_destroy_response(resp);
  return ret;
}

enum MHD_Result srv_reply_json(srv_req *r, struct MHD_Connection *c, int status, json_t *v) {
  char *text = v ? json_dumps(v, JSON_COMPACT) : NULL;
  json_decref(v);
  if (!text) {
    static const char oom[] = "{\"error\":{\"message\":\"out of memory\",\"type\":\"server_error\",\"param\":null,"
                              "\"code\":null}}";
    char *p = strdup(oom);
    return p ? srv_reply(r, c, 500, "application/json", p, strlen(p)) : MHD_NO;
  }
  size_t n = strlen(text);
  /* A newline at the end, as curl users expect. */
  char *t2 = realloc(text, n + 2);
  if (t2) {
    text = t2;
    text[n++] = '\n';
    text[n] = '\0';
  }
  return srv_reply(r, c, status, "application/json", text, n);
}

enum MHD_Result srv_reply_err(srv_req *r, struct MHD_Connection *c, const srv_err *e) {
  json_t *err = json_pack("{s:s%, s:s, s:o, s:o}", "message", e->msg, strlen(e->msg), "type", e->type, "param",
                          e->param[0] ? json_string(e->param) : json_null(), "code",
                          e->code ? json_string(e->code) : json_null());
  return srv_reply_json(r, c, e->http, err ? json_pack("{s:o}", "error", err) : NULL);
}

enum MHD_Result srv_reply_error(srv_req *r, struct MHD_Connection *c, int http, const char *type, const char *code,
                                const char *param, const char *fmt, ...) {
  srv_err e = {.http = http, .type = type, .code = code};
  snprintf(e.param, sizeof e.param, "%s", param ? param : "");
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(e.msg, sizeof e.msg, fmt, ap);
  va_end(ap);
  /* Messages may quote client input: keep them valid UTF-8 for JSON. */
  json_t *m = srv_json_text(e.msg, strlen(e.msg));
  if (m) {
    snprintf(e.msg, sizeof e.msg, "%s", json_string_value(m));
    json_decref(m);
  }
  return srv_reply_err(r, c, &e);
}

bool srv_auth_ok(const struct kiln_server *s, struct MHD_Connection *c) {
  if (!s->api_key) return true;
  const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
  if (!h || strncasecmp(h, "Bearer ", 7) != 0) return false;
  h += 7;
  while (*h == ' ') h++;
  /* Constant time in the key's length: the comparison does not stop at the first difference. */
  size_t n = strlen(h), k = strlen(s->api_key);
  unsigned diff = (unsigned)(n != k);
  for (size_t i = 0; i < k; i++) diff |= (unsigned char)s->api_key[i] ^ (unsigned char)(i < n ? h[i] : 0);
  return diff == 0;
}

/* Length of the valid UTF-8 sequence at p (1..4), or 0 when invalid (overlong, surrogate, > U+10FFFF, cut). */
static size_t utf8_valid_len(const unsigned char *p, size_t n) {
  unsigned c = p[0];
  if (c < 0x80) return 1;
  size_t k;
  unsigned min;
  if (c >= 0xc2 && c <= 0xdf) k = 2, min = 0x80;
  else if (c >= 0xe0 && c <= 0xef) k = 3, min = 0x800;
  else if (c >= 0xf0 && c <= 0xf4) k = 4, min = 0x10000;
  else return 0;
  if (k > n) return 0;
  unsigned cp = c & (0xffu >> (k + 1));
  for (size_t i = 1; i < k; i++) {
    if ((p[i] & 0xc0) != 0x80) return 0;
    cp = (cp << 6) | (p[i] & 0x3fu);
  }
  if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
  return k;
}

json_t *srv_json_text(const char *p, size_t n) {
  const unsigned char *u = (const unsigned char *)p;
  size_t i = 0;
  while (i < n) {
    size_t k = utf8_valid_len(u + i, n - i);
    if (!k || u[i] == 0) break;
    i += k;
  }
  if (i == n) return json_stringn(p, n);
  /* Replace each invalid byte (and NUL) by U+FFFD. */
  char *out = malloc(3 * n + 1);
  if (!out) return NULL;
  size_t o = 0;
  for (i = 0; i < n;) {
    size_t k = utf8_valid_len(u + i, n - i);
    if (k && u[i] != 0) {
      memcpy(out + o, p + i, k);
      o += k;
      i += k;
    } else {
      memcpy(out + o, "\xef\xbf\xbd", 3);
      o += 3;
      i++;
    }
  }
  json_t *v = json_stringn(out, o);
  free(out);
  return v;
}

bool srv_check_model(const struct kiln_server *s, const json_t *body, srv_err *e) {
  const json_t *m = json_object_get(body, "model");
  if (!m || json_is_null(m)) return true;
  if (!json_is_string(m))
    return srv_fail(e, 400, "invalid_request_error", NULL, "model", "'model' must be a string");
  if (strcmp(json_string_value(m), s->model_id) == 0) return true;
  json_t *q = srv_json_text(json_string_value(m), json_string_length(m));
  srv_fail(e, 404, "invalid_request_error", "model_not_found", "model",
           "The model `%.200s` does not exist (this server serves `%s`).", q ? json_string_value(q) : "?",
           s->model_id);
  json_decref(q);
  return false;
}
