/* http_client.c: see http_client.h. */
#include "http_client.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static int connect_local(int port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
    close(fd);
    return -1;
  }
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return fd;
}

static int send_all(int fd, const char *p, size_t n) {
  while (n) {
    ssize_t k = send(fd, p, n, MSG_NOSIGNAL);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) return -1;
    p += k;
    n -= (size_t)k;
  }
  return 0;
}

typedef struct buf {
  char *p;
  size_t n, cap;
} buf;

static int buf_put(buf *b, const char *p, size_t n) {
  if (b->n + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap * 2 : 4096;
    while (cap < b->n + n + 1) cap *= 2;
    char *q = realloc(b->p, cap);
    if (!q) return -1;
    b->p = q;
    b->cap = cap;
  }
  memcpy(b->p + b->n, p, n);
  b->n += n;
  b->p[b->n] = '\0';
  return 0;
}

static int send_request(int fd, const char *method, const char *path, const char *headers, const char *body,
                        size_t body_len, bool chunked, bool close_conn) {
  char head[2048];
  int k = snprintf(head, sizeof head, "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\n%s%s", method, path,
                   close_conn ? "Connection: close\r\n" : "", headers ? headers : "");
  if (body && !chunked)
    k += snprintf(head + k, sizeof head - (size_t)k, "Content-Type: application/json\r\nContent-Length: %zu\r\n",
                  body_len);
  if (body && chunked)
    k += snprintf(head + k, sizeof head - (size_t)k,
                  "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n");
  k += snprintf(head + k, sizeof head - (size_t)k, "\r\n");
  if (send_all(fd, head, (size_t)k)) return -1;
  if (!body) return 0;
  if (!chunked) return send_all(fd, body, body_len);
  /* Chunks of at most 1000 bytes, then the last chunk. */
  for (size_t off = 0; off < body_len; off += 1000) {
    size_t n = body_len - off < 1000 ? body_len - off : 1000;
    char sz[32];
    int m = snprintf(sz, sizeof sz, "%zx\r\n", n);
    if (send_all(fd, sz, (size_t)m) || send_all(fd, body + off, n) || send_all(fd, "\r\n", 2)) return -1;
  }
  return send_all(fd, "0\r\n\r\n", 5);
}

/* Decodes a complete chunked body in place; returns the decoded length. */
static size_t dechunk(char *p, size_t n) {
  size_t r = 0, w = 0;
  while (r < n) {
    char *end;
    unsigned long long sz = strtoull(p + r, &end, 16);
    char *nl = memchr(p + r, '\n', n - r);
    if (!nl || end == p + r) break;
    r = (size_t)(nl - p) + 1;
    if (sz == 0 || r + sz > n) break;
    memmove(p + w, p + r, sz);
    w += sz;
    r += sz + 2;
  }
  p[w] = '\0';
  return w;
}

int http_request(int port, const char *method, const char *path, const char *headers, const char *body,
                 size_t body_len, bool chunked, http_resp *out) {
  memset(out, 0, sizeof *out);
  int fd = connect_local(port);
  if (fd < 0) return -1;
  if (send_request(fd, method, path, headers, body, body_len, chunked, true)) {
    /* The server may answer (413) and close before taking the whole body: still read what it said. */
  }
  buf b = {0};
  char tmp[8192];
  for (;;) {
    ssize_t k = recv(fd, tmp, sizeof tmp, 0);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) break;
    if (buf_put(&b, tmp, (size_t)k)) break;
  }
  close(fd);
  if (!b.p) return -1;
  char *sep = strstr(b.p, "\r\n\r\n");
  if (!sep || sscanf(b.p, "HTTP/1.%*d %d", &out->status) != 1) {
    free(b.p);
    out->status = 0;
    return -1;
  }
  size_t hl = (size_t)(sep - b.p);
  out->head = malloc(hl + 1);
  memcpy(out->head, b.p, hl);
  out->head[hl] = '\0';
  size_t bl = b.n - hl - 4;
  out->body = malloc(bl + 1);
  memcpy(out->body, sep + 4, bl);
  out->body[bl] = '\0';
  out->body_len = bl;
  char te[64];
  if (http_header(out, "Transfer-Encoding", te, sizeof te) && strcasecmp(te, "chunked") == 0)
    out->body_len = dechunk(out->body, bl);
  free(b.p);
  return 0;
}

int http_post_json(int port, const char *path, const char *body, http_resp *out, json_t **json) {
  int rc = http_request(port, "POST", path, NULL, body, strlen(body), false, out);
  if (json) *json = rc == 0 && out->body ? json_loadb(out->body, out->body_len, 0, NULL) : NULL;
  return rc;
}

int http_get(int port, const char *path, http_resp *out) {
  return http_request(port, "GET", path, NULL, NULL, 0, false, out);
}

bool http_header(const http_resp *r, const char *name, char *out, size_t cap) {
  if (!r->head) return false;
  size_t nl = strlen(name);
  for (const char *line = strstr(r->head, "\r\n"); line; line = strstr(line + 2, "\r\n")) {
    const char *h = line + 2;
    if (strncasecmp(h, name, nl) == 0 && h[nl] == ':') {
      h += nl + 1;
      while (*h == ' ') h++;
      size_t n = strcspn(h, "\r\n");
      if (n >= cap) n = cap - 1;
      memcpy(out, h, n);
      out[n] = '\0';
      return true;
    }
  }
  return false;
}

void http_resp_free(http_resp *r) {
  free(r->head);
  free(r->body);
  memset(r, 0, sizeof *r);
}

int http_raw(int port, const char *data, size_t len, char **reply, size_t *reply_len, int timeout_ms) {
  *reply = NULL;
  *reply_len = 0;
  int fd = connect_local(port);
  if (fd < 0) return -1;
  send_all(fd, data, len);
  shutdown(fd, SHUT_WR);
  buf b = {0};
  char tmp[4096];
  for (;;) {
    struct pollfd pf = {.fd = fd, .events = POLLIN};
    if (poll(&pf, 1, timeout_ms) <= 0) break;
    ssize_t k = recv(fd, tmp, sizeof tmp, 0);
    if (k <= 0) break;
    if (buf_put(&b, tmp, (size_t)k)) break;
  }
  close(fd);
  *reply = b.p;
  *reply_len = b.n;
  return 0;
}

/* ---- event streams ---- */

static int raw_fill(sse_conn *c, int timeout_ms) {
  struct pollfd pf = {.fd = c->fd, .events = POLLIN};
  int pr = poll(&pf, 1, timeout_ms);
  if (pr <= 0) return -1;
  if (c->raw_len + 8192 > c->raw_cap) {
    size_t cap = c->raw_cap ? c->raw_cap * 2 : 16384;
    char *q = realloc(c->raw, cap);
    if (!q) return -1;
    c->raw = q;
    c->raw_cap = cap;
  }
  ssize_t k = recv(c->fd, c->raw + c->raw_len, c->raw_cap - c->raw_len, 0);
  if (k < 0) return -1;
  if (k == 0) {
    c->eof = true;
    return 0;
  }
  c->raw_len += (size_t)k;
  return 1;
}

static void raw_drop(sse_conn *c, size_t n) {
  memmove(c->raw, c->raw + n, c->raw_len - n);
  c->raw_len -= n;
}

static int dec_put(sse_conn *c, const char *p, size_t n) {
  if (c->dec_len + n + 1 > c->dec_cap) {
    size_t cap = c->dec_cap ? c->dec_cap * 2 : 16384;
    while (cap < c->dec_len + n + 1) cap *= 2;
    char *q = realloc(c->dec, cap);
    if (!q) return -1;
    c->dec = q;
    c->dec_cap = cap;
  }
  memcpy(c->dec + c->dec_len, p, n);
  c->dec_len += n;
  c->dec[c->dec_len] = '\0';
  return 0;
}

/* Moves decodable raw bytes to dec. Returns 1 when the last chunk was seen. */
static int decode(sse_conn *c) {
  if (!c->chunked) {
    dec_put(c, c->raw, c->raw_len);
    c->raw_len = 0;
    return 0;
  }
  for (;;) {
    if (c->chunk_left) {
      size_t n = c->raw_len < c->chunk_left ? c->raw_len : c->chunk_left;
      if (!n) return 0;
      dec_put(c, c->raw, n);
      raw_drop(c, n);
      c->chunk_left -= n;
      if (c->chunk_left) return 0;
      c->crlf = true;
    }
    if (c->crlf) {
      if (c->raw_len < 2) return 0;
      raw_drop(c, 2);
      c->crlf = false;
    }
    char *nl = memchr(c->raw, '\n', c->raw_len);
    if (!nl) return 0;
    unsigned long long sz = strtoull(c->raw, NULL, 16);
    raw_drop(c, (size_t)(nl - c->raw) + 1);
    if (sz == 0) return 1;
    c->chunk_left = (size_t)sz;
  }
}

int sse_open(int port, const char *path, const char *headers, const char *body, sse_conn *c) {
  memset(c, 0, sizeof *c);
  c->fd = connect_local(port);
  if (c->fd < 0) return -1;
  if (send_request(c->fd, "POST", path, headers, body, strlen(body), false, true)) return -1;
  for (;;) {
    char *sep = c->raw ? memmem(c->raw, c->raw_len, "\r\n\r\n", 4) : NULL;
    if (sep) {
      size_t hl = (size_t)(sep - c->raw);
      if (hl >= sizeof c->head) return -1;
      memcpy(c->head, c->raw, hl);
      c->head[hl] = '\0';
      raw_drop(c, hl + 4);
      if (sscanf(c->head, "HTTP/1.%*d %d", &c->status) != 1) return -1;
      c->chunked = strcasestr(c->head, "transfer-encoding: chunked") != NULL;
      return 0;
    }
    if (raw_fill(c, 10000) <= 0) return -1;
  }
}

int sse_next(sse_conn *c, char **ev, int timeout_ms) {
  *ev = NULL;
  struct timespec t0;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  bool last = false;
  for (;;) {
    if (decode(c) == 1) last = true;
    char *sep = c->dec ? strstr(c->dec, "\n\n") : NULL;
    if (sep) {
      size_t n = (size_t)(sep - c->dec);
      *ev = malloc(n + 1);
      memcpy(*ev, c->dec, n);
      (*ev)[n] = '\0';
      memmove(c->dec, sep + 2, c->dec_len - n - 2);
      c->dec_len -= n + 2;
      c->dec[c->dec_len] = '\0';
      return 1;
    }
    if (last || c->eof) return 0;
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    int spent = (int)((t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000);
    if (spent >= timeout_ms) return -1;
    int r = raw_fill(c, timeout_ms - spent);
    if (r < 0) return -1;
  }
}

void sse_close(sse_conn *c) {
  if (c->fd >= 0) close(c->fd);
  free(c->raw);
  free(c->dec);
  memset(c, 0, sizeof *c);
  c->fd = -1;
}

json_t *sse_json(const char *ev) {
  if (strncmp(ev, "data: ", 6) != 0 || strcmp(ev + 6, "[DONE]") == 0) return NULL;
  return json_loads(ev + 6, 0, NULL);
}
