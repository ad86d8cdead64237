/*
 * http_client.h: a small blocking HTTP/1.1 client for the server tests: whole requests (Connection: close, body
 * read to EOF, chunked transfer decoded) and event streams read event by event, with the socket exposed so a test
 * can hang up in the middle.
 */
#ifndef KILN_TEST_HTTP_CLIENT_H
#define KILN_TEST_HTTP_CLIENT_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

typedef struct http_resp {
  int status;    /* 0 when no response could be read */
  char *head;    /* status line and headers, NUL-terminated */
  char *body;    /* decoded body, NUL-terminated */
  size_t body_len;
} http_resp;

/* Sends one request to 127.0.0.1:port and reads the whole response. `headers` is extra header lines, each ending
 * in "\r\n" (may be NULL). A body is sent with Content-Length unless `chunked`. Returns 0, or -1 on a socket
 * error (out->status stays 0). */
int http_request(int port, const char *method, const char *path, const char *headers, const char *body,
                 size_t body_len, bool chunked, http_resp *out);
/* POST of a JSON text; parses the response body as JSON into *json when not NULL (NULL if it is not JSON). */
int http_post_json(int port, const char *path, const char *body, http_resp *out, json_t **json);
int http_get(int port, const char *path, http_resp *out);
/* A header's value (case-insensitive name), copied into buf; false when absent. */
bool http_header(const http_resp *r, const char *name, char *buf, size_t cap);
void http_resp_free(http_resp *r);

/* Sends raw bytes and reads everything the server answers until it closes (or timeout_ms passes). */
int http_raw(int port, const char *data, size_t len, char **reply, size_t *reply_len, int timeout_ms);

/* An event stream. */
typedef struct sse_conn {
  int fd;
  int status;
  char head[4096];
  bool chunked;
  char *raw;          /* bytes read but not yet decoded */
  size_t raw_len, raw_cap;
  char *dec;          /* decoded body bytes not yet returned as events */
  size_t dec_len, dec_cap;
  size_t chunk_left;  /* bytes left in the current chunk */
  bool crlf;          /* the CRLF after a chunk's data is still to come */
  bool eof;
} sse_conn;

/* Sends a POST and reads the status line and headers. Returns 0 or -1. */
int sse_open(int port, const char *path, const char *headers, const char *body, sse_conn *c);
/* The next event ("data: ..." or ": ping", without the blank line) as a malloc'd string in *ev. Returns 1 with an
 * event, 0 at the end of the stream, -1 on error or timeout. */
int sse_next(sse_conn *c, char **ev, int timeout_ms);
void sse_close(sse_conn *c);

/* Parses "data: {...}" into JSON (NULL for [DONE], pings and non-JSON). */
json_t *sse_json(const char *ev);

#endif /* KILN_TEST_HTTP_CLIENT_H */
