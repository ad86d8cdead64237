/*
 * test_server_errors: every error kiln serve answers, in OpenAI's shape {"error": {"message", "type", "param",
 * "code"}} with the right status: 400 (bad JSON, bad parameters, context_length_exceeded), 401 (key), 404 (model,
 * route), 405, 413 (declared and chunked bodies), 503 with Retry-After (queue full); and CORS.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "kiln/kiln.h"
#include "server_fixture.h"

static kiln_server *srv, *srv_key;
static int port, port_key;

static int setup(void **state) {
  (void)state;
  kiln_server_opts o = fixture_opts();
  o.max_body_bytes = 64 << 10;
  srv = fixture_start(&o);
  port = kiln_server_port(srv);
  o = fixture_opts();
  o.api_key = "sk-test-123";
  o.cors_origins = "http://a.example, http://b.example";
  o.parallel = 1;
  o.max_queue = 1; /* two requests at most: the third gets 503 */
  srv_key = fixture_start(&o);
  port_key = kiln_server_port(srv_key);
  return 0;
}

static int teardown(void **state) {
  (void)state;
  kiln_server_stop(srv);
  kiln_server_stop(srv_key);
  return 0;
}

/* The error object has exactly OpenAI's four fields. */
static void check_error(json_t *j, const char *type, const char *param, const char *code) {
  json_t *e = jpath(j, "error");
  assert_non_null(e);
  assert_int_equal(json_object_size(e), 4);
  assert_true(json_is_string(jpath(e, "message")) && strlen(jstr(e, "message")) > 0);
  assert_string_equal(jstr(e, "type"), type);
  if (param) assert_string_equal(jstr(e, "param"), param);
  else assert_true(json_is_null(jpath(e, "param")));
  if (code) assert_string_equal(jstr(e, "code"), code);
  else assert_true(json_is_null(jpath(e, "code")));
}

static void expect(int p, const char *path, int status, const char *param, const char *code, const char *body) {
  int st;
  json_t *j = post(p, path, &st, "%s", body);
  if (st != status) fprintf(stderr, "for %s %s: status %d\n", path, body, st);
  assert_int_equal(st, status);
  check_error(j, status == 503 ? "server_error" : "invalid_request_error", param, code);
  json_decref(j);
}

static void bad_json_and_shapes(void **state) {
  (void)state;
  expect(port, "/v1/completions", 400, NULL, NULL, "{\"prompt\": \"x\"");
  expect(port, "/v1/completions", 400, NULL, NULL, "");
  expect(port, "/v1/completions", 400, NULL, NULL, "[1,2]");
  expect(port, "/v1/completions", 400, NULL, NULL, "{\"prompt\":\"a\",\"prompt\":\"b\"}"); /* duplicate key */
  expect(port, "/v1/chat/completions", 400, NULL, NULL, "{\"messages\": \xff}");
  /* Invalid UTF-8 inside a JSON string is refused by the parser. */
  expect(port, "/v1/completions", 400, NULL, NULL, "{\"prompt\":\"\xc3\x28\"}");
}

static void bad_parameters(void **state) {
  (void)state;
  const char *C = "/v1/completions", *H = "/v1/chat/completions";
  expect(port, C, 400, "prompt", NULL, "{}");
  expect(port, C, 400, "prompt", NULL, "{\"prompt\":[]}");
  expect(port, C, 400, "prompt", NULL, "{\"prompt\":[1,\"a\"]}");
  expect(port, C, 400, "prompt", NULL, "{\"prompt\":[99999]}");
  expect(port, C, 400, "prompt", NULL, "{\"prompt\":[-1]}");
  expect(port, C, 400, "prompt", NULL, "{\"prompt\":\"\"}"); /* empty: no BOS for this model */
  expect(port, C, 400, "temperature", NULL, "{\"prompt\":\"x\",\"temperature\":2.5}");
  expect(port, C, 400, "temperature", NULL, "{\"prompt\":\"x\",\"temperature\":\"hot\"}");
  expect(port, C, 400, "top_p", NULL, "{\"prompt\":\"x\",\"top_p\":0}");
  expect(port, C, 400, "top_p", NULL, "{\"prompt\":\"x\",\"top_p\":1.5}");
  expect(port, C, 400, "top_k", NULL, "{\"prompt\":\"x\",\"top_k\":-2}");
  expect(port, C, 400, "min_p", NULL, "{\"prompt\":\"x\",\"min_p\":2}");
  expect(port, C, 400, "presence_penalty", NULL, "{\"prompt\":\"x\",\"presence_penalty\":3}");
  expect(port, C, 400, "frequency_penalty", NULL, "{\"prompt\":\"x\",\"frequency_penalty\":-2.5}");
  expect(port, C, 400, "max_tokens", NULL, "{\"prompt\":\"x\",\"max_tokens\":0}");
  expect(port, C, 400, "max_tokens", NULL, "{\"prompt\":\"x\",\"max_tokens\":1.5}");
  expect(port, C, 400, "max_completion_tokens", NULL, "{\"prompt\":\"x\",\"max_completion_tokens\":-3}");
  expect(port, C, 400, "n", NULL, "{\"prompt\":\"x\",\"n\":0}");
  expect(port, C, 400, "n", NULL, "{\"prompt\":\"x\",\"n\":65}");
  expect(port, C, 400, "seed", NULL, "{\"prompt\":\"x\",\"seed\":\"s\"}");
  expect(port, C, 400, "stop", NULL, "{\"prompt\":\"x\",\"stop\":5}");
  expect(port, C, 400, "stop", NULL, "{\"prompt\":\"x\",\"stop\":[\"a\",\"b\",\"c\",\"d\",\"e\"]}");
  expect(port, C, 400, "stream", NULL, "{\"prompt\":\"x\",\"stream\":1}");
  expect(port, C, 400, "stream_options", NULL, "{\"prompt\":\"x\",\"stream_options\":{\"include_usage\":true}}");
  expect(port, C, 400, "logprobs", NULL, "{\"prompt\":\"x\",\"logprobs\":21}");
  expect(port, C, 400, "echo", NULL, "{\"prompt\":\"x\",\"echo\":\"yes\"}");
  expect(port, C, 400, "best_of", NULL, "{\"prompt\":\"x\",\"best_of\":3}");
  expect(port, H, 400, "messages", NULL, "{}");
  expect(port, H, 400, "messages", NULL, "{\"messages\":[]}");
  expect(port, H, 400, "messages[0]", NULL, "{\"messages\":[\"hi\"]}");
  expect(port, H, 400, "messages[0].role", NULL, "{\"messages\":[{\"role\":\"wizard\",\"content\":\"x\"}]}");
  expect(port, H, 400, "messages[0].content", NULL, "{\"messages\":[{\"role\":\"user\"}]}");
  expect(port, H, 400, "messages[0].content", NULL,
         "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\",\"image_url\":{\"url\":\"x\"}}]}]}");
  expect(port, H, 400, "messages[1].tool_calls", NULL,
         "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"},{\"role\":\"assistant\",\"tool_calls\":{}}]}");
  expect(port, H, 400, "top_logprobs", NULL,
         "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"top_logprobs\":2}");
  expect(port, H, 400, "top_logprobs", NULL,
         "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"logprobs\":true,\"top_logprobs\":21}");
  expect(port, H, 400, "logprobs", NULL, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"logprobs\":3}");
  expect(port, H, 400, "chat_template_kwargs", NULL,
         "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"chat_template_kwargs\":[]}");
  expect(port, H, 400, "tools", NULL, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"tools\":{}}");
}

static void context_and_model(void **state) {
  (void)state;
  /* The tiny model's context is 512 tokens. */
  expect(port, "/v1/completions", 400, "prompt", "context_length_exceeded", "{\"prompt\":\"x\",\"max_tokens\":600}");
  char *big = malloc(600 * 4 + 64);
  strcpy(big, "{\"prompt\":[");
  for (int i = 0; i < 600; i++) strcat(big, i ? ",5" : "5");
  strcat(big, "],\"max_tokens\":1}");
  expect(port, "/v1/completions", 400, "prompt", "context_length_exceeded", big);
  free(big);
  expect(port, "/v1/chat/completions", 400, "messages", "context_length_exceeded",
         "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"max_tokens\":511}");
  expect(port, "/v1/completions", 404, "model", "model_not_found", "{\"model\":\"gpt-4o\",\"prompt\":\"x\"}");
  expect(port, "/v1/chat/completions", 404, "model", "model_not_found",
         "{\"model\":\"nope\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}");
  expect(port, "/v1/completions", 400, "model", NULL, "{\"model\":5,\"prompt\":\"x\"}");
  int st;
  json_t *j = get_json(port, "/v1/models/nope", &st);
  assert_int_equal(st, 404);
  check_error(j, "invalid_request_error", "model", "model_not_found");
  json_decref(j);
}

static void routes_and_methods(void **state) {
  (void)state;
  int st;
  json_t *j = get_json(port, "/v1/nothing", &st);
  assert_int_equal(st, 404);
  check_error(j, "invalid_request_error", NULL, NULL);
  json_decref(j);
  j = post(port, "/v2/completions", &st, "{}");
  assert_int_equal(st, 404);
  json_decref(j);
  http_resp r;
  assert_int_equal(http_request(port, "GET", "/v1/completions", NULL, NULL, 0, false, &r), 0);
  assert_int_equal(r.status, 405);
  char allow[64];
  assert_true(http_header(&r, "Allow", allow, sizeof allow));
  assert_non_null(strstr(allow, "POST"));
  j = json_loads(r.body, 0, NULL);
  check_error(j, "invalid_request_error", NULL, NULL);
  json_decref(j);
  http_resp_free(&r);
  assert_int_equal(http_request(port, "DELETE", "/v1/models", NULL, NULL, 0, false, &r), 0);
  assert_int_equal(r.status, 405);
  assert_true(http_header(&r, "Allow", allow, sizeof allow));
  assert_non_null(strstr(allow, "GET"));
  http_resp_free(&r);
  assert_int_equal(http_request(port, "POST", "/health", NULL, "{}", 2, false, &r), 0);
  assert_int_equal(r.status, 405);
  http_resp_free(&r);
}

static void body_limits(void **state) {
  (void)state;
  size_t n = 100 << 10; /* above the 64 KiB limit of this server */
  char *body = malloc(n + 64);
  strcpy(body, "{\"prompt\":\"");
  memset(body + strlen(body), 'a', n);
  strcpy(body + 11 + n, "\"}");
  http_resp r;
  /* Declared with Content-Length: refused before the body is read. */
  assert_int_equal(http_request(port, "POST", "/v1/completions", NULL, body, strlen(body), false, &r), 0);
  assert_int_equal(r.status, 413);
  json_t *j = json_loads(r.body, 0, NULL);
  check_error(j, "invalid_request_error", NULL, "request_too_large");
  json_decref(j);
  http_resp_free(&r);
  /* Chunked: refused once the body passes the limit. */
  assert_int_equal(http_request(port, "POST", "/v1/completions", NULL, body, strlen(body), true, &r), 0);
  assert_int_equal(r.status, 413);
  http_resp_free(&r);
  free(body);
  /* The server is still fine. */
  int st;
  j = post(port, "/v1/completions", &st, "{\"prompt\":\"x\",\"max_tokens\":1}");
  assert_int_equal(st, 200);
  json_decref(j);
}

static void api_key(void **state) {
  (void)state;
  http_resp r;
  const char *body = "{\"prompt\":\"x\",\"max_tokens\":1}";
  assert_int_equal(http_request(port_key, "POST", "/v1/completions", NULL, body, strlen(body), false, &r), 0);
  assert_int_equal(r.status, 401);
  json_t *j = json_loads(r.body, 0, NULL);
  check_error(j, "invalid_request_error", NULL, "invalid_api_key");
  json_decref(j);
  http_resp_free(&r);
  assert_int_equal(http_request(port_key, "POST", "/v1/completions", "Authorization: Bearer sk-test-12\r\n", body,
                                strlen(body), false, &r), 0);
  assert_int_equal(r.status, 401);
  http_resp_free(&r);
  assert_int_equal(http_request(port_key, "POST", "/v1/completions", "Authorization: Bearer sk-test-1234\r\n", body,
                                strlen(body), false, &r), 0);
  assert_int_equal(r.status, 401);
  http_resp_free(&r);
  assert_int_equal(http_request(port_key, "GET", "/v1/models", "Authorization: Basic sk-test-123\r\n", NULL, 0,
                                false, &r), 0);
  assert_int_equal(r.status, 401);
  http_resp_free(&r);
  assert_int_equal(http_request(port_key, "POST", "/v1/completions", "Authorization: Bearer sk-test-123\r\n", body,
                                strlen(body), false, &r), 0);
  assert_int_equal(r.status, 200);
  http_resp_free(&r);
  assert_int_equal(http_request(port_key, "POST", "/tokenize", NULL, "{\"prompt\":\"x\"}", 14, false, &r), 0);
  assert_int_equal(r.status, 401);
  http_resp_free(&r);
  /* Health and metrics need no key. */
  assert_int_equal(http_get(port_key, "/health", &r), 0);
  assert_int_equal(r.status, 200);
  http_resp_free(&r);
  assert_int_equal(http_get(port_key, "/metrics", &r), 0);
  assert_int_equal(r.status, 200);
  http_resp_free(&r);
}

static void cors(void **state) {
  (void)state;
  http_resp r;
  char v[256];
  const char *auth = "Authorization: Bearer sk-test-123\r\n";
  char h[256];
  snprintf(h, sizeof h, "%sOrigin: http://b.example\r\n", auth);
  assert_int_equal(http_request(port_key, "GET", "/v1/models", h, NULL, 0, false, &r), 0);
  assert_int_equal(r.status, 200);
  assert_true(http_header(&r, "Access-Control-Allow-Origin", v, sizeof v));
  assert_string_equal(v, "http://b.example");
  assert_true(http_header(&r, "Vary", v, sizeof v));
  http_resp_free(&r);
  snprintf(h, sizeof h, "%sOrigin: http://evil.example\r\n", auth);
  assert_int_equal(http_request(port_key, "GET", "/v1/models", h, NULL, 0, false, &r), 0);
  assert_false(http_header(&r, "Access-Control-Allow-Origin", v, sizeof v));
  http_resp_free(&r);
  /* Preflight: no key needed, the methods and asked-for headers allowed. */
  assert_int_equal(http_request(port_key, "OPTIONS", "/v1/chat/completions",
                                "Origin: http://a.example\r\nAccess-Control-Request-Method: POST\r\n"
                                "Access-Control-Request-Headers: authorization, content-type\r\n",
                                NULL, 0, false, &r), 0);
  assert_int_equal(r.status, 204);
  assert_true(http_header(&r, "Access-Control-Allow-Origin", v, sizeof v));
  assert_string_equal(v, "http://a.example");
  assert_true(http_header(&r, "Access-Control-Allow-Methods", v, sizeof v));
  assert_non_null(strstr(v, "POST"));
  assert_true(http_header(&r, "Access-Control-Allow-Headers", v, sizeof v));
  assert_non_null(strstr(v, "authorization"));
  http_resp_free(&r);
  /* A server without CORS origins sends no CORS headers. */
  assert_int_equal(http_request(port, "GET", "/v1/models", "Origin: http://a.example\r\n", NULL, 0, false, &r), 0);
  assert_false(http_header(&r, "Access-Control-Allow-Origin", v, sizeof v));
  http_resp_free(&r);
}

static void queue_full(void **state) {
  (void)state;
  /* parallel 1 + max_queue 1: two long streams hold both request slots; a third request gets 503. */
  const char *hdr = "Authorization: Bearer sk-test-123\r\n";
  const char *body = "{\"prompt\":\"x\",\"max_tokens\":500,\"ignore_eos\":true,\"stream\":true}";
  sse_conn a, b;
  assert_int_equal(sse_open(port_key, "/v1/completions", hdr, body, &a), 0);
  char *ev;
  assert_int_equal(sse_next(&a, &ev, 10000), 1); /* running */
  free(ev);
  assert_int_equal(sse_open(port_key, "/v1/completions", hdr, body, &b), 0);
  http_resp r;
  const char *small = "{\"prompt\":\"x\",\"max_tokens\":1}";
  assert_int_equal(http_request(port_key, "POST", "/v1/completions", hdr, small, strlen(small), false, &r), 0);
  assert_int_equal(r.status, 503);
  char v[64];
  assert_true(http_header(&r, "Retry-After", v, sizeof v));
  assert_true(atoi(v) >= 1);
  json_t *j = json_loads(r.body, 0, NULL);
  check_error(j, "server_error", NULL, "queue_full");
  json_decref(j);
  http_resp_free(&r);
  assert_true(metric(port_key, "kiln_requests_total{model=\"" TINY_ID "\",outcome=\"rejected\"}") >= 1);
  /* Hanging up frees the slots again. */
  sse_close(&a);
  sse_close(&b);
  int code = 0;
  for (int tries = 0; tries < 100 && code != 200; tries++) {
    assert_int_equal(http_request(port_key, "POST", "/v1/completions", hdr, small, strlen(small), false, &r), 0);
    code = r.status;
    http_resp_free(&r);
    if (code != 200) usleep(20000);
  }
  assert_int_equal(code, 200);
}

static void raw_http(void **state) {
  (void)state;
  /* Malformed HTTP gets a 4xx from libmicrohttpd (or a closed connection), never a crash. */
  const char *bad[] = {
      "GARBAGE\r\n\r\n",
      "GET / HTTP/9.9\r\n\r\n",
      "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n{}",
      "POST /v1/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
      "\r\n\r\n\r\n",
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    char *reply;
    size_t n;
    assert_int_equal(http_raw(port, bad[i], strlen(bad[i]), &reply, &n, 2000), 0);
    if (n) assert_true(strncmp(reply, "HTTP/1.1 4", 10) == 0 || strncmp(reply, "HTTP/1.0 4", 10) == 0 ||
                       strncmp(reply, "HTTP/1.1 5", 10) == 0);
    free(reply);
  }
  int st;
  json_t *j = get_json(port, "/health", &st);
  assert_int_equal(st, 200);
  json_decref(j);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(bad_json_and_shapes), cmocka_unit_test(bad_parameters), cmocka_unit_test(context_and_model),
      cmocka_unit_test(routes_and_methods),  cmocka_unit_test(body_limits),    cmocka_unit_test(api_key),
      cmocka_unit_test(cors),                cmocka_unit_test(queue_full),     cmocka_unit_test(raw_http),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
