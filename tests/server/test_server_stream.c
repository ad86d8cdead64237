/*
 * test_server_stream: server-sent events as OpenAI sends them (one id, the role delta first, content deltas, the
 * finish chunk, the usage chunk with include_usage, [DONE] last), agreement of streamed and whole answers, ": ping"
 * keep-alives while a request waits, cancellation when the client hangs up (streaming or not), and round-robin
 * interleaving of concurrent requests.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "kiln/kiln.h"
#include "server_fixture.h"

static kiln_server *srv;
static int port;

static int setup(void **state) {
  (void)state;
  kiln_server_opts o = fixture_opts();
  o.ping_ms = 20;
  srv = fixture_start(&o);
  port = kiln_server_port(srv);
  return 0;
}

static int teardown(void **state) {
  (void)state;
  kiln_server_stop(srv);
  return 0;
}

static const char *CHAT = "{\"messages\":[{\"role\":\"user\",\"content\":\"Tell me\"}],\"max_tokens\":12,"
                          "\"temperature\":0,\"ignore_eos\":true%s}";

static void chat_stream_format(void **state) {
  (void)state;
  char body[512];
  int st, done;
  snprintf(body, sizeof body, CHAT, "");
  json_t *whole = post(port, "/v1/chat/completions", &st, "%s", body);
  assert_int_equal(st, 200);
  snprintf(body, sizeof body, CHAT, ",\"stream\":true,\"stream_options\":{\"include_usage\":true}");
  json_t *ev = stream_all(port, "/v1/chat/completions", body, &st, &done, NULL);
  assert_int_equal(st, 200);
  assert_true(done);
  size_t n = json_array_size(ev);
  assert_true(n >= 3);
  const char *id = jstr(json_array_get(ev, 0), "id");
  assert_non_null(strstr(id, "chatcmpl-"));
  char text[4096] = "";
  for (size_t i = 0; i < n; i++) {
    json_t *c = json_array_get(ev, i);
    assert_string_equal(jstr(c, "id"), id);
    assert_string_equal(jstr(c, "object"), "chat.completion.chunk");
    assert_string_equal(jstr(c, "model"), TINY_ID);
    assert_true(json_is_integer(jpath(c, "created")));
    if (i + 1 < n) {
      assert_true(json_is_null(jpath(c, "usage"))); /* every chunk but the last carries "usage": null */
      assert_int_equal(json_array_size(jpath(c, "choices")), 1);
      assert_int_equal(jint(c, "choices.0.index"), 0);
    }
    if (i == 0) { /* the role first, with empty content */
      assert_string_equal(jstr(c, "choices.0.delta.role"), "assistant");
      assert_string_equal(jstr(c, "choices.0.delta.content"), "");
      assert_true(json_is_null(jpath(c, "choices.0.finish_reason")));
    } else if (i < n - 2) {
      assert_null(jpath(c, "choices.0.delta.role"));
      assert_true(json_is_null(jpath(c, "choices.0.finish_reason")));
      strcat(text, jstr(c, "choices.0.delta.content"));
    }
  }
  json_t *fin = json_array_get(ev, n - 2), *usage = json_array_get(ev, n - 1);
  assert_int_equal(json_object_size(jpath(fin, "choices.0.delta")), 0);
  assert_string_equal(jstr(fin, "choices.0.finish_reason"), "length");
  assert_int_equal(json_array_size(jpath(usage, "choices")), 0);
  assert_int_equal(jint(usage, "usage.completion_tokens"), 12);
  assert_int_equal(jint(usage, "usage.prompt_tokens"), jint(whole, "usage.prompt_tokens"));
  assert_int_equal(jint(usage, "usage.total_tokens"), jint(whole, "usage.total_tokens"));
  assert_string_equal(text, jstr(whole, "choices.0.message.content"));
  json_decref(ev);
  /* Without include_usage, no chunk has a usage field. */
  snprintf(body, sizeof body, CHAT, ",\"stream\":true");
  ev = stream_all(port, "/v1/chat/completions", body, &st, &done, NULL);
  assert_true(done);
  for (size_t i = 0; i < json_array_size(ev); i++) assert_null(jpath(json_array_get(ev, i), "usage"));
  assert_string_equal(jstr(json_array_get(ev, json_array_size(ev) - 1), "choices.0.finish_reason"), "length");
  json_decref(ev);
  json_decref(whole);
}

static void chat_stream_logprobs(void **state) {
  (void)state;
  int st, done;
  char body[512];
  snprintf(body, sizeof body, CHAT, ",\"stream\":true,\"logprobs\":true,\"top_logprobs\":1");
  json_t *ev = stream_all(port, "/v1/chat/completions", body, &st, &done, NULL);
  assert_true(done);
  size_t entries = 0;
  for (size_t i = 0; i < json_array_size(ev); i++)
    entries += json_array_size(jpath(json_array_get(ev, i), "choices.0.logprobs.content"));
  assert_int_equal(entries, 12); /* one per token, even for tokens whose text is held back */
  json_decref(ev);
}

static void completion_stream(void **state) {
  (void)state;
  int st, done;
  const char *req = "{\"prompt\":[\"Alpha\",\"Beta\"],\"n\":2,\"max_tokens\":10,\"temperature\":0,\"ignore_eos\":true,"
                    "\"echo\":true%s}";
  char body[512];
  snprintf(body, sizeof body, req, "");
  json_t *whole = post(port, "/v1/completions", &st, "%s", body);
  assert_int_equal(st, 200);
  snprintf(body, sizeof body, req, ",\"stream\":true");
  json_t *ev = stream_all(port, "/v1/completions", body, &st, &done, NULL);
  assert_true(done);
  char text[4][4096] = {"", "", "", ""};
  int finished[4] = {0};
  const char *id = jstr(json_array_get(ev, 0), "id");
  for (size_t i = 0; i < json_array_size(ev); i++) {
    json_t *c = json_array_get(ev, i);
    assert_string_equal(jstr(c, "object"), "text_completion");
    assert_string_equal(jstr(c, "id"), id);
    int k = (int)jint(c, "choices.0.index");
    assert_true(k >= 0 && k < 4);
    assert_false(finished[k]); /* nothing after a choice's finish chunk */
    strcat(text[k], jstr(c, "choices.0.text"));
    if (jstr(c, "choices.0.finish_reason")) finished[k] = 1;
  }
  for (int k = 0; k < 4; k++) {
    assert_true(finished[k]);
    assert_string_equal(text[k], jstr(json_array_get(jpath(whole, "choices"), (size_t)k), "text"));
    assert_true(strncmp(text[k], k < 2 ? "Alpha" : "Beta", k < 2 ? 5 : 4) == 0); /* the echo first */
  }
  json_decref(ev);
  json_decref(whole);
  /* echo + logprobs, streamed: the prompt's text and its tokens' logprobs come first (the first token without a
   * logprob), then one logprobs token per generated token. */
  json_t *tk = post(port, "/tokenize", &st, "{\"prompt\":\"Alpha\"}");
  ev = stream_all(port, "/v1/completions",
                  "{\"prompt\":\"Alpha\",\"max_tokens\":6,\"temperature\":0,\"ignore_eos\":true,\"echo\":true,"
                  "\"logprobs\":1,\"stream\":true}", &st, &done, NULL);
  assert_true(done);
  json_t *first = json_array_get(ev, 0);
  assert_string_equal(jstr(first, "choices.0.text"), "Alpha");
  assert_int_equal((long long)json_array_size(jpath(first, "choices.0.logprobs.tokens")), jint(tk, "count"));
  assert_true(json_is_null(jpath(first, "choices.0.logprobs.token_logprobs.0")));
  size_t gen = 0;
  for (size_t i = 1; i < json_array_size(ev); i++)
    gen += json_array_size(jpath(json_array_get(ev, i), "choices.0.logprobs.tokens"));
  assert_int_equal(gen, 6);
  json_decref(ev);
  json_decref(tk);
  /* A stop string in a stream: the streamed text is the whole answer's, cut before it, and nothing of the stop
   * string leaks out. */
  whole = post(port, "/v1/completions", &st,
               "{\"prompt\":\"Omega\",\"max_tokens\":30,\"temperature\":0,\"ignore_eos\":true}");
  const char *t = jstr(whole, "choices.0.text");
  size_t L = strlen(t), at = L / 2;
  while (at > 1 && !(t[at] > ' ' && t[at] < 127 && t[at] != '"' && t[at] != '\\')) at--;
  char stop[3] = {t[at], 0, 0};
  if (t[at + 1] > ' ' && t[at + 1] < 127 && t[at + 1] != '"' && t[at + 1] != '\\') stop[1] = t[at + 1];
  size_t cut = (size_t)(strstr(t, stop) - t);
  snprintf(body, sizeof body, "{\"prompt\":\"Omega\",\"max_tokens\":30,\"temperature\":0,\"ignore_eos\":true,"
           "\"stream\":true,\"stop\":\"%s\"}", stop);
  ev = stream_all(port, "/v1/completions", body, &st, &done, NULL);
  assert_true(done);
  char got[4096] = "";
  for (size_t i = 0; i < json_array_size(ev); i++) strcat(got, jstr(json_array_get(ev, i), "choices.0.text"));
  assert_int_equal(strlen(got), cut);
  assert_memory_equal(got, t, cut);
  assert_string_equal(jstr(json_array_get(ev, json_array_size(ev) - 1), "choices.0.finish_reason"), "stop");
  json_decref(ev);
  json_decref(whole);
}

/* ---- pings, cancellation, interleaving ---------------------------------------------------------------------- */

typedef struct stream_job {
  const char *body;
  double t_first, t_last;
  int tokens, done;
  int pings;
  atomic_int started; /* set once the first token has arrived (read by the test's main thread) */
} stream_job;

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void *run_stream(void *arg) {
  stream_job *j = arg;
  sse_conn c;
  if (sse_open(port, "/v1/completions", NULL, j->body, &c) != 0) {
    sse_close(&c);
    return NULL;
  }
  char *ev;
  while (sse_next(&c, &ev, 30000) == 1) {
    if (strcmp(ev, ": ping") == 0) {
      j->pings++;
    } else if (strcmp(ev, "data: [DONE]") == 0) {
      j->done = 1;
    } else {
      json_t *x = sse_json(ev);
      size_t n = json_array_size(jpath(x, "choices.0.logprobs.tokens"));
      if (n) {
        if (!j->tokens) {
          j->t_first = now_s();
          atomic_store(&j->started, 1);
        }
        j->t_last = now_s();
        j->tokens += (int)n;
      }
      json_decref(x);
    }
    free(ev);
  }
  sse_close(&c);
  return NULL;
}

static void interleaving(void **state) {
  (void)state;
  /* Two sequence slots: A and B run side by side, round-robin, so each starts before the other ends. */
  const char *body = "{\"prompt\":\"x\",\"max_tokens\":400,\"ignore_eos\":true,\"stream\":true,\"logprobs\":0}";
  stream_job a = {.body = body}, b = {.body = body};
  pthread_t ta, tb;
  pthread_create(&ta, NULL, run_stream, &a);
  pthread_create(&tb, NULL, run_stream, &b);
  pthread_join(ta, NULL);
  pthread_join(tb, NULL);
  assert_true(a.done && b.done);
  assert_int_equal(a.tokens, 400);
  assert_int_equal(b.tokens, 400);
  assert_true(a.t_first < b.t_last && b.t_first < a.t_last);
}

static void pings_while_waiting(void **state) {
  (void)state;
  /* A takes both sequence slots with 2 x 500 tokens (over 100 ms even for the tiny model); C waits for a slot and
   * gets a ": ping" every 20 ms meanwhile, then completes normally. */
  stream_job a = {.body = "{\"prompt\":\"x\",\"n\":2,\"max_tokens\":500,\"ignore_eos\":true,\"stream\":true,"
                          "\"logprobs\":0}"};
  stream_job c = {.body = "{\"prompt\":\"x\",\"max_tokens\":5,\"ignore_eos\":true,\"stream\":true,\"logprobs\":0}"};
  pthread_t ta, tc;
  pthread_create(&ta, NULL, run_stream, &a);
  /* C only once A is generating, so A holds both slots: a fixed delay was not enough on a loaded 2-core machine
   * under ASan, where C sometimes got a slot first and never waited */
  for (int i = 0; i < 3000 && !atomic_load(&a.started); i++) usleep(1000);
  assert_true(atomic_load(&a.started));
  pthread_create(&tc, NULL, run_stream, &c);
  pthread_join(ta, NULL);
  pthread_join(tc, NULL);
  assert_true(a.done && c.done);
  assert_int_equal(a.tokens, 1000);
  assert_int_equal(c.tokens, 5);
  assert_true(c.pings >= 1);
  assert_true(c.t_first >= a.t_first);
}

static double cancelled(void) {
  return metric(port, "kiln_requests_total{model=\"" TINY_ID "\",outcome=\"cancelled\"}");
}

static double wait_metric_above(double (*f)(void), double v) {
  double x = f();
  for (int i = 0; i < 300 && x <= v; i++) {
    usleep(10000);
    x = f();
  }
  return x;
}

static double gen_tokens(void) { return metric(port, "kiln_generation_tokens_total{model=\"" TINY_ID "\"}"); }

static void hangup_cancels(void **state) {
  (void)state;
  /* Streaming: 4 choices x 500 tokens; hang up after the first event. */
  double c0 = cancelled(), t0 = gen_tokens();
  sse_conn c;
  assert_int_equal(sse_open(port, "/v1/completions", NULL,
                            "{\"prompt\":\"x\",\"n\":4,\"max_tokens\":500,\"ignore_eos\":true,\"stream\":true}", &c),
                   0);
  char *ev;
  assert_int_equal(sse_next(&c, &ev, 10000), 1);
  free(ev);
  sse_close(&c);
  assert_true(wait_metric_above(cancelled, c0) == c0 + 1);
  double t1 = gen_tokens();
  assert_true(t1 - t0 < 2000);
  usleep(50000);
  assert_true(gen_tokens() == t1); /* nothing runs any more */
  assert_true(metric(port, "kiln_requests_running{model=\"" TINY_ID "\"}") == 0);
  /* Not streaming: the client sends the request and hangs up at once. */
  c0 = cancelled();
  t0 = gen_tokens();
  const char *body = "{\"prompt\":\"x\",\"n\":4,\"max_tokens\":500,\"ignore_eos\":true}";
  char req[512];
  int n = snprintf(req, sizeof req,
                   "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                   "Content-Length: %zu\r\n\r\n%s", strlen(body), body);
  char *reply;
  size_t rl;
  assert_int_equal(http_raw(port, req, (size_t)n, &reply, &rl, 1), 0); /* closes after 1 ms */
  free(reply);
  assert_true(wait_metric_above(cancelled, c0) == c0 + 1);
  assert_true(gen_tokens() - t0 < 2000);
  /* The server still answers. */
  int st;
  json_t *j = post(port, "/v1/completions", &st, "{\"prompt\":\"x\",\"max_tokens\":3,\"ignore_eos\":true}");
  assert_int_equal(st, 200);
  assert_int_equal(jint(j, "usage.completion_tokens"), 3);
  json_decref(j);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(chat_stream_format),     cmocka_unit_test(chat_stream_logprobs),
      cmocka_unit_test(completion_stream),      cmocka_unit_test(interleaving),
      cmocka_unit_test(pings_while_waiting),
      cmocka_unit_test(hangup_cancels),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
