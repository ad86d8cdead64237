/*
 * server_fixture.h: starting an in-process server on the tiny Qwen3 test checkpoint (tests/data/tiny/qwen3-f32,
 * ChatML template) on a free port, and small JSON helpers for the server tests.
 */
#ifndef KILN_TEST_SERVER_FIXTURE_H
#define KILN_TEST_SERVER_FIXTURE_H

#include <jansson.h>

#include "http_client.h"
#include "kiln/server.h"

#define TINY_MODEL "tests/data/tiny/qwen3-f32"
#define TINY_ID "qwen3-f32"

/* Options for the tiny model: port 0, one CPU thread, 2 parallel sequences, ChatML, silent. */
kiln_server_opts fixture_opts(void);
/* Starts and waits until ready; aborts the test program on failure (a fixture, not a test). */
kiln_server *fixture_start(const kiln_server_opts *o);

/* POST `body` (printf-style) to `path`; returns the parsed JSON body (NULL if not JSON) and sets *status. */
json_t *post(int port, const char *path, int *status, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
json_t *get_json(int port, const char *path, int *status);

/* obj["a"]["b"][0]... : a path of keys and indexes ("choices", "0", "text"). */
json_t *jpath(json_t *v, const char *path);
const char *jstr(json_t *v, const char *path);
long long jint(json_t *v, const char *path);

/* Reads a streamed response to its end; returns the events' JSON (array) and sets *done when [DONE] came last.
 * Pings are counted in *pings (may be NULL). */
json_t *stream_all(int port, const char *path, const char *body, int *status, int *done, int *pings);

/* A counter's value from /metrics ("kiln_generation_tokens_total"); -1 when absent. */
double metric(int port, const char *name_with_labels);

#endif
