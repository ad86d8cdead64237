/* server_fixture.c: see server_fixture.h. */
#include "server_fixture.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kiln/status.h"

kiln_server_opts fixture_opts(void) {
  kiln_server_opts o = kiln_server_opts_default();
  o.port = 0;
  o.model_dir = TINY_MODEL;
  o.chat_template = "chatml";
  o.n_threads = 1;
  o.parallel = 2;
  o.log = getenv("KILN_TEST_LOG") ? stderr : NULL;
  return o;
}

kiln_server *fixture_start(const kiln_server_opts *o) {
  kiln_server *s = NULL;
  if (kiln_server_start(&s, o) != KILN_OK || kiln_server_wait_ready(s, 30000) != KILN_OK) {
    fprintf(stderr, "fixture: cannot start the server: %s\n", kiln_last_error());
    exit(1);
  }
  return s;
}

json_t *post(int port, const char *path, int *status, const char *fmt, ...) {
  char *body = NULL;
  va_list ap;
  va_start(ap, fmt);
  if (vasprintf(&body, fmt, ap) < 0) body = NULL;
  va_end(ap);
  http_resp r;
  json_t *j = NULL;
  *status = 0;
  if (body && http_post_json(port, path, body, &r, &j) == 0) *status = r.status;
  if (body) http_resp_free(&r);
  free(body);
  return j;
}

json_t *get_json(int port, const char *path, int *status) {
  http_resp r;
  json_t *j = NULL;
  *status = 0;
  if (http_get(port, path, &r) == 0) {
    *status = r.status;
    j = json_loadb(r.body, r.body_len, 0, NULL);
  }
  http_resp_free(&r);
  return j;
}

json_t *jpath(json_t *v, const char *path) {
  char buf[256];
  snprintf(buf, sizeof buf, "%s", path);
  char *save = NULL;
  for (char *k = strtok_r(buf, ".", &save); k && v; k = strtok_r(NULL, ".", &save)) {
    if (json_is_array(v)) v = json_array_get(v, (size_t)strtoul(k, NULL, 10));
    else v = json_object_get(v, k);
  }
  return v;
}

const char *jstr(json_t *v, const char *path) { return json_string_value(jpath(v, path)); }
long long jint(json_t *v, const char *path) { return (long long)json_integer_value(jpath(v, path)); }

json_t *stream_all(int port, const char *path, const char *body, int *status, int *done, int *pings) {
  sse_conn c;
  json_t *events = json_array();
  *done = 0;
  if (pings) *pings = 0;
  *status = 0;
  if (sse_open(port, path, NULL, body, &c) != 0) {
    sse_close(&c);
    return events;
  }
  *status = c.status;
  char *ev;
  while (sse_next(&c, &ev, 30000) == 1) {
    if (strcmp(ev, ": ping") == 0) {
      if (pings) (*pings)++;
    } else if (strcmp(ev, "data: [DONE]") == 0) {
      *done = 1;
    } else {
      *done = 0; /* [DONE] must be the last event */
      json_t *j = sse_json(ev);
      json_array_append_new(events, j ? j : json_string(ev));
    }
    free(ev);
  }
  sse_close(&c);
  return events;
}

double metric(int port, const char *name) {
  http_resp r;
  double v = -1;
  if (http_get(port, "/metrics", &r) == 0 && r.body) {
    size_t n = strlen(name);
    for (char *line = r.body; line && *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL) {
      if (strncmp(line, name, n) == 0 && line[n] == ' ') {
        v = strtod(line + n + 1, NULL);
        break;
      }
    }
  }
  http_resp_free(&r);
  return v;
}
