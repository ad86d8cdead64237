/*
 * test_server_api: every endpoint and parameter of kiln serve over real HTTP, on the tiny Qwen3 checkpoint:
 * /health, /v1/models, /v1/completions (prompt forms, max_tokens default, echo, logprobs, stop, n, seed, penalties),
 * /v1/chat/completions (content parts, roles, logprobs, usage against /tokenize), /tokenize, /detokenize, /metrics.
 * Results are checked against each other and against the library called directly (greedy text, token counts),
 * never against stored strings of a random model.
 */
#include <dirent.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "kiln/kiln.h"
#include "server_fixture.h"

static kiln_server *srv;
static int port;

static int setup(void **state) {
  (void)state;
  kiln_server_opts o = fixture_opts();
  srv = fixture_start(&o);
  port = kiln_server_port(srv);
  return 0;
}

static int teardown(void **state) {
  (void)state;
  kiln_server_stop(srv);
  return 0;
}

static void health_and_models(void **state) {
  (void)state;
  int st;
  json_t *j = get_json(port, "/health", &st);
  assert_int_equal(st, 200);
  assert_string_equal(jstr(j, "status"), "ok");
  json_decref(j);
  j = get_json(port, "/v1/models", &st);
  assert_int_equal(st, 200);
  assert_string_equal(jstr(j, "object"), "list");
  assert_int_equal(json_array_size(jpath(j, "data")), 1);
  assert_string_equal(jstr(j, "data.0.id"), TINY_ID);
  assert_string_equal(jstr(j, "data.0.object"), "model");
  assert_string_equal(jstr(j, "data.0.owned_by"), "kiln");
  assert_true(json_is_integer(jpath(j, "data.0.created")));
  assert_int_equal(jint(j, "data.0.max_model_len"), 512); /* the tiny model's max_position_embeddings */
  json_decref(j);
  j = get_json(port, "/v1/models/" TINY_ID, &st);
  assert_int_equal(st, 200);
  assert_string_equal(jstr(j, "id"), TINY_ID);
  json_decref(j);
}

/* The library's own greedy continuation of a text, for comparison with what the server answers. */
static char *direct_greedy(const char *prompt, int n) {
  kiln_model *m;
  kiln_tokenizer *tok;
  kiln_engine *e;
  assert_int_equal(kiln_model_load(&m, TINY_MODEL, NULL, NULL), KILN_OK);
  assert_int_equal(kiln_tokenizer_load(&tok, TINY_MODEL "/tokenizer.json"), KILN_OK);
  kiln_engine_opts eo = {.device = "cpu", .n_threads = 1};
  assert_int_equal(kiln_engine_create(&e, m, &eo), KILN_OK);
  int32_t *ids;
  size_t nid;
  assert_int_equal(kiln_tokenizer_encode(tok, prompt, strlen(prompt), &ids, &nid), KILN_OK);
  kiln_gen_params gp = kiln_gen_params_default();
  gp.max_tokens = n;
  gp.ignore_eos = true;
  kiln_gen *g;
  assert_int_equal(kiln_gen_start(&g, e, tok, 0, ids, (int)nid, &gp), KILN_OK);
  char *out = calloc(1, 65536);
  size_t len = 0;
  kiln_gen_event ev;
  do {
    assert_int_equal(kiln_gen_step(g, &ev), KILN_OK);
    memcpy(out + len, ev.text, ev.text_len);
    len += ev.text_len;
  } while (ev.finish == KILN_FINISH_NONE);
  kiln_gen_free(g);
  free(ids);
  kiln_engine_free(e);
  kiln_tokenizer_free(tok);
  kiln_model_free(m);
  return out;
}

static void completions_basic(void **state) {
  (void)state;
  int st;
  /* Default max_tokens is 16 (OpenAI's). */
  json_t *j = post(port, "/v1/completions", &st,
                   "{\"model\":\"%s\",\"prompt\":\"In the beginning\",\"temperature\":0,\"ignore_eos\":true}", TINY_ID);
  assert_int_equal(st, 200);
  assert_string_equal(jstr(j, "object"), "text_completion");
  assert_string_equal(jstr(j, "model"), TINY_ID);
  assert_non_null(strstr(jstr(j, "id"), "cmpl-"));
  assert_int_equal(json_array_size(jpath(j, "choices")), 1);
  assert_int_equal(jint(j, "choices.0.index"), 0);
  assert_string_equal(jstr(j, "choices.0.finish_reason"), "length");
  assert_true(json_is_null(jpath(j, "choices.0.logprobs")));
  assert_int_equal(jint(j, "usage.completion_tokens"), 16);
  long long pt = jint(j, "usage.prompt_tokens");
  assert_true(pt > 0);
  assert_int_equal(jint(j, "usage.total_tokens"), pt + 16);
  char *want = direct_greedy("In the beginning", 16);
  assert_string_equal(jstr(j, "choices.0.text"), want);
  free(want);
  json_decref(j);
  /* max_completion_tokens is the same thing. */
  j = post(port, "/v1/completions", &st, "{\"prompt\":\"In the beginning\",\"max_completion_tokens\":5,"
                                         "\"ignore_eos\":true}");
  assert_int_equal(st, 200);
  assert_int_equal(jint(j, "usage.completion_tokens"), 5);
  json_decref(j);
}

static void completions_prompt_forms(void **state) {
  (void)state;
  int st;
  json_t *a = post(port, "/v1/tokenize", &st, "{}"); /* not a route: 404 */
  assert_int_equal(st, 404);
  json_decref(a);
  json_t *tk = post(port, "/tokenize", &st, "{\"prompt\":\"And God said\"}");
  assert_int_equal(st, 200);
  char *ids = json_dumps(jpath(tk, "tokens"), JSON_COMPACT);
  json_t *s1 = post(port, "/v1/completions", &st,
                    "{\"prompt\":\"And God said\",\"max_tokens\":6,\"temperature\":0,\"ignore_eos\":true}");
  assert_int_equal(st, 200);
  /* Token ids give the same answer as the text they encode. */
  json_t *s2 = post(port, "/v1/completions", &st,
                    "{\"prompt\":%s,\"max_tokens\":6,\"temperature\":0,\"ignore_eos\":true}", ids);
  assert_int_equal(st, 200);
  assert_string_equal(jstr(s1, "choices.0.text"), jstr(s2, "choices.0.text"));
  assert_int_equal(jint(s1, "usage.prompt_tokens"), jint(tk, "count"));
  /* Lists of prompts: one choice each, in order, prompt tokens summed. */
  json_t *l = post(port, "/v1/completions", &st,
                   "{\"prompt\":[\"And God said\",\"Let there be light\"],\"max_tokens\":6,\"temperature\":0,"
                   "\"ignore_eos\":true}");
  assert_int_equal(st, 200);
  assert_int_equal(json_array_size(jpath(l, "choices")), 2);
  assert_int_equal(jint(l, "choices.1.index"), 1);
  assert_string_equal(jstr(l, "choices.0.text"), jstr(s1, "choices.0.text"));
  assert_int_equal(jint(l, "usage.completion_tokens"), 12);
  json_t *l2 = post(port, "/v1/completions", &st,
                    "{\"prompt\":[%s,[5,6,7]],\"max_tokens\":6,\"temperature\":0,\"ignore_eos\":true}", ids);
  assert_int_equal(st, 200);
  assert_string_equal(jstr(l2, "choices.0.text"), jstr(s1, "choices.0.text"));
  assert_int_equal(jint(l2, "usage.prompt_tokens"), jint(tk, "count") + 3);
  free(ids);
  json_decref(tk);
  json_decref(s1);
  json_decref(s2);
  json_decref(l);
  json_decref(l2);
}

static void completions_echo_logprobs(void **state) {
  (void)state;
  int st;
  json_t *plain = post(port, "/v1/completions", &st,
                       "{\"prompt\":\"Light\",\"max_tokens\":4,\"temperature\":0,\"ignore_eos\":true}");
  json_t *e = post(port, "/v1/completions", &st,
                   "{\"prompt\":\"Light\",\"max_tokens\":4,\"temperature\":0,\"ignore_eos\":true,\"echo\":true}");
  assert_int_equal(st, 200);
  char want[256];
  snprintf(want, sizeof want, "Light%s", jstr(plain, "choices.0.text"));
  assert_string_equal(jstr(e, "choices.0.text"), want);
  json_decref(e);
  /* logprobs: one entry per generated token, the chosen (greedy) token is the most likely alternative. */
  json_t *l = post(port, "/v1/completions", &st,
                   "{\"prompt\":\"Light\",\"max_tokens\":4,\"temperature\":0,\"ignore_eos\":true,\"logprobs\":3}");
  assert_int_equal(st, 200);
  json_t *lp = jpath(l, "choices.0.logprobs");
  assert_int_equal(json_array_size(jpath(lp, "tokens")), 4);
  assert_int_equal(json_array_size(jpath(lp, "token_logprobs")), 4);
  assert_int_equal(json_array_size(jpath(lp, "top_logprobs")), 4);
  assert_int_equal(json_array_size(jpath(lp, "text_offset")), 4);
  assert_int_equal(jint(lp, "text_offset.0"), 0);
  for (size_t i = 0; i < 4; i++) {
    double tl = json_real_value(json_array_get(jpath(lp, "token_logprobs"), i));
    assert_true(tl <= 0);
    json_t *top = json_array_get(jpath(lp, "top_logprobs"), i);
    assert_true(json_object_size(top) >= 1 && json_object_size(top) <= 3);
    double best = -INFINITY;
    const char *k;
    json_t *v;
    json_object_foreach(top, k, v) best = json_real_value(v) > best ? json_real_value(v) : best;
    assert_true(fabs(best - tl) < 1e-4);
  }
  /* The tokens spell the text. */
  char joined[256] = "";
  for (size_t i = 0; i < 4; i++) strcat(joined, json_string_value(json_array_get(jpath(lp, "tokens"), i)));
  assert_string_equal(joined, jstr(plain, "choices.0.text"));
  json_decref(l);
  /* echo + logprobs: the prompt's tokens first, the very first without a logprob. */
  json_t *tk = post(port, "/tokenize", &st, "{\"prompt\":\"Light\"}");
  long long np = jint(tk, "count");
  json_t *el = post(port, "/v1/completions", &st,
                    "{\"prompt\":\"Light\",\"max_tokens\":4,\"temperature\":0,\"ignore_eos\":true,\"logprobs\":2,"
                    "\"echo\":true}");
  assert_int_equal(st, 200);
  lp = jpath(el, "choices.0.logprobs");
  assert_int_equal((long long)json_array_size(jpath(lp, "tokens")), np + 4);
  assert_true(json_is_null(json_array_get(jpath(lp, "token_logprobs"), 0)));
  assert_true(json_is_null(json_array_get(jpath(lp, "top_logprobs"), 0)));
  for (size_t i = 1; i < (size_t)np + 4; i++)
    assert_true(json_real_value(json_array_get(jpath(lp, "token_logprobs"), i)) <= 0);
  json_decref(el);
  json_decref(tk);
  json_decref(plain);
}

static void completions_stop(void **state) {
  (void)state;
  int st;
  json_t *full = post(port, "/v1/completions", &st,
                      "{\"prompt\":\"The earth\",\"max_tokens\":24,\"temperature\":0,\"ignore_eos\":true}");
  assert_int_equal(st, 200);
  const char *t = jstr(full, "choices.0.text");
  size_t n = strlen(t);
  assert_true(n >= 8);
  /* A stop string taken from the middle of the greedy text: the answer is the text before it. Picks a piece of
   * plain ASCII so that it can be written into the JSON below as it is. */
  size_t at = n / 2, len = 3;
  while (at > 1 && !(t[at] > ' ' && t[at] < 127 && t[at] != '"' && t[at] != '\\')) at--;
  while (len > 1 && !(t[at + len - 1] > ' ' && t[at + len - 1] < 127 && t[at + len - 1] != '"' &&
                      t[at + len - 1] != '\\')) len--;
  char stop[8];
  memcpy(stop, t + at, len);
  stop[len] = '\0';
  const char *first = strstr(t, stop);
  json_t *cut = post(port, "/v1/completions", &st,
                     "{\"prompt\":\"The earth\",\"max_tokens\":24,\"temperature\":0,\"ignore_eos\":true,"
                     "\"stop\":[\"\\u0001\\u0002never\",\"%s\"]}", stop);
  assert_int_equal(st, 200);
  assert_string_equal(jstr(cut, "choices.0.finish_reason"), "stop");
  assert_int_equal(strlen(jstr(cut, "choices.0.text")), (size_t)(first - t));
  assert_memory_equal(jstr(cut, "choices.0.text"), t, (size_t)(first - t));
  json_decref(cut);
  /* stop as a single string works the same. */
  cut = post(port, "/v1/completions", &st,
             "{\"prompt\":\"The earth\",\"max_tokens\":24,\"temperature\":0,\"ignore_eos\":true,\"stop\":\"%s\"}",
             stop);
  assert_int_equal(st, 200);
  assert_int_equal(strlen(jstr(cut, "choices.0.text")), (size_t)(first - t));
  json_decref(cut);
  json_decref(full);
}

static void sampling_seed_n(void **state) {
  (void)state;
  int st;
  const char *req = "{\"prompt\":\"Seed\",\"max_tokens\":12,\"temperature\":1.0,\"top_p\":0.95,\"top_k\":50,"
                    "\"min_p\":0.01,\"ignore_eos\":true,\"seed\":%d}";
  json_t *a = post(port, "/v1/completions", &st, req, 7);
  assert_int_equal(st, 200);
  json_t *b = post(port, "/v1/completions", &st, req, 7);
  json_t *c = post(port, "/v1/completions", &st, req, 8);
  assert_string_equal(jstr(a, "choices.0.text"), jstr(b, "choices.0.text"));
  /* 12 tokens drawn from ~700 at temperature 1 from another seed: the same text is vanishingly unlikely. */
  assert_string_not_equal(jstr(a, "choices.0.text"), jstr(c, "choices.0.text"));
  json_decref(a);
  json_decref(b);
  json_decref(c);
  /* n choices: each its own draw, usage summed. */
  json_t *n = post(port, "/v1/completions", &st,
                   "{\"prompt\":\"Seed\",\"max_tokens\":5,\"n\":3,\"seed\":1,\"ignore_eos\":true,"
                   "\"presence_penalty\":0.5,\"frequency_penalty\":0.5,\"repetition_penalty\":1.1}");
  assert_int_equal(st, 200);
  assert_int_equal(json_array_size(jpath(n, "choices")), 3);
  for (int i = 0; i < 3; i++) assert_int_equal(json_integer_value(jpath(json_array_get(jpath(n, "choices"), i),
                                                                        "index")), i);
  assert_int_equal(jint(n, "usage.completion_tokens"), 15);
  json_decref(n);
  /* Unknown fields are ignored. */
  json_t *u = post(port, "/v1/completions", &st,
                   "{\"prompt\":\"x\",\"max_tokens\":1,\"user\":\"me\",\"whatever\":{\"a\":[1]},\"suffix\":\"s\"}");
  assert_int_equal(st, 200);
  json_decref(u);
}

static void chat_basic(void **state) {
  (void)state;
  int st;
  json_t *j = post(port, "/v1/chat/completions", &st,
                   "{\"model\":\"%s\",\"messages\":[{\"role\":\"developer\",\"content\":\"Be brief.\"},"
                   "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"Hello\"},{\"type\":\"text\","
                   "\"text\":\"there\"}]}],\"max_tokens\":6,\"temperature\":0,\"ignore_eos\":true}",
                   TINY_ID);
  assert_int_equal(st, 200);
  assert_string_equal(jstr(j, "object"), "chat.completion");
  assert_non_null(strstr(jstr(j, "id"), "chatcmpl-"));
  assert_string_equal(jstr(j, "choices.0.message.role"), "assistant");
  assert_non_null(jstr(j, "choices.0.message.content"));
  assert_string_equal(jstr(j, "choices.0.finish_reason"), "length");
  assert_int_equal(jint(j, "usage.completion_tokens"), 6);
  /* The prompt is the ChatML rendering, developer as system and parts joined by a newline: /tokenize of the
   * same messages counts the same tokens, and so does the rendered text tokenized directly. */
  json_t *tk = post(port, "/tokenize", &st,
                    "{\"messages\":[{\"role\":\"system\",\"content\":\"Be brief.\"},{\"role\":\"user\",\"content\":"
                    "\"Hello\\nthere\"}]}");
  assert_int_equal(st, 200);
  json_t *tk2 = post(port, "/tokenize", &st,
                     "{\"prompt\":\"<|im_start|>system\\nBe brief.<|im_end|>\\n<|im_start|>user\\nHello\\nthere"
                     "<|im_end|>\\n<|im_start|>assistant\\n\"}");
  assert_int_equal(jint(j, "usage.prompt_tokens"), jint(tk, "count"));
  assert_true(json_equal(jpath(tk, "tokens"), jpath(tk2, "tokens")));
  json_decref(tk);
  json_decref(tk2);
  /* The same conversation as a completion of the rendered prompt gives the same text. */
  json_t *c = post(port, "/v1/completions", &st,
                   "{\"prompt\":\"<|im_start|>system\\nBe brief.<|im_end|>\\n<|im_start|>user\\nHello\\nthere"
                   "<|im_end|>\\n<|im_start|>assistant\\n\",\"max_tokens\":6,\"temperature\":0,\"ignore_eos\":true}");
  assert_string_equal(jstr(c, "choices.0.text"), jstr(j, "choices.0.message.content"));
  json_decref(c);
  json_decref(j);
  /* Assistant turns (content null with tool calls, or absent) and tool results are accepted. */
  j = post(port, "/v1/chat/completions", &st,
           "{\"messages\":[{\"role\":\"user\",\"content\":\"a\"},{\"role\":\"assistant\",\"content\":null,"
           "\"tool_calls\":[{\"id\":\"c1\",\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"{}\"}}]},"
           "{\"role\":\"tool\",\"tool_call_id\":\"c1\",\"content\":\"42\"},{\"role\":\"user\",\"content\":\"b\"}],"
           "\"max_tokens\":2,\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\"}}]}");
  assert_int_equal(st, 200);
  json_decref(j);
}

static void chat_logprobs(void **state) {
  (void)state;
  int st;
  json_t *j = post(port, "/v1/chat/completions", &st,
                   "{\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}],\"max_tokens\":5,\"temperature\":0,"
                   "\"ignore_eos\":true,\"logprobs\":true,\"top_logprobs\":2}");
  assert_int_equal(st, 200);
  json_t *content = jpath(j, "choices.0.logprobs.content");
  assert_int_equal(json_array_size(content), 5);
  for (size_t i = 0; i < 5; i++) {
    json_t *e = json_array_get(content, i);
    assert_non_null(jstr(e, "token"));
    assert_true(json_is_array(jpath(e, "bytes")));
    assert_int_equal(json_array_size(jpath(e, "top_logprobs")), 2);
    assert_true(fabs(json_real_value(jpath(e, "logprob")) - json_real_value(jpath(e, "top_logprobs.0.logprob"))) <
                1e-4);
    assert_true(json_real_value(jpath(e, "top_logprobs.0.logprob")) >=
                json_real_value(jpath(e, "top_logprobs.1.logprob")));
  }
  json_decref(j);
  /* logprobs false: null. */
  j = post(port, "/v1/chat/completions", &st,
           "{\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}],\"max_tokens\":1}");
  assert_true(json_is_null(jpath(j, "choices.0.logprobs")));
  json_decref(j);
}

static void tokenize_detokenize(void **state) {
  (void)state;
  int st;
  json_t *t = post(port, "/tokenize", &st, "{\"prompt\":\"In the beginning God created\"}");
  assert_int_equal(st, 200);
  assert_int_equal(jint(t, "max_model_len"), 512);
  assert_int_equal(jint(t, "count"), (long long)json_array_size(jpath(t, "tokens")));
  char *ids = json_dumps(jpath(t, "tokens"), JSON_COMPACT);
  json_t *d = post(port, "/detokenize", &st, "{\"tokens\":%s}", ids);
  assert_int_equal(st, 200);
  assert_string_equal(jstr(d, "prompt"), "In the beginning God created");
  free(ids);
  json_decref(t);
  json_decref(d);
  d = post(port, "/detokenize", &st, "{\"tokens\":[1,99999]}");
  assert_int_equal(st, 400);
  assert_string_equal(jstr(d, "error.param"), "tokens");
  json_decref(d);
  d = post(port, "/tokenize", &st, "{\"prompt\":5}");
  assert_int_equal(st, 400);
  json_decref(d);
}

static void metrics_text(void **state) {
  (void)state;
  double before = metric(port, "kiln_generation_tokens_total{model=\"" TINY_ID "\"}");
  double ok_before = metric(port, "kiln_requests_total{model=\"" TINY_ID "\",outcome=\"ok\"}");
  assert_true(before >= 0);
  int st;
  json_t *j = post(port, "/v1/completions", &st, "{\"prompt\":\"x\",\"max_tokens\":7,\"ignore_eos\":true}");
  assert_int_equal(st, 200);
  json_decref(j);
  assert_true(metric(port, "kiln_generation_tokens_total{model=\"" TINY_ID "\"}") == before + 7);
  assert_true(metric(port, "kiln_requests_total{model=\"" TINY_ID "\",outcome=\"ok\"}") == ok_before + 1);
  assert_true(metric(port, "kiln_requests_running{model=\"" TINY_ID "\"}") == 0);
  assert_true(metric(port, "kiln_requests_waiting{model=\"" TINY_ID "\"}") == 0);
  assert_true(metric(port, "kiln_time_to_first_token_seconds_count{model=\"" TINY_ID "\"}") >= 1);
  assert_true(metric(port, "kiln_inter_token_latency_seconds_count{model=\"" TINY_ID "\"}") >= 6);
  assert_true(metric(port, "kiln_e2e_request_latency_seconds_bucket{model=\"" TINY_ID "\",le=\"+Inf\"}") >= 1);
  assert_true(metric(port, "kiln_kv_cache_usage_ratio{model=\"" TINY_ID "\"}") >= 0);
  assert_true(metric(port, "kiln_prompt_tokens_total{model=\"" TINY_ID "\"}") >= 1);
  http_resp r;
  assert_int_equal(http_get(port, "/metrics", &r), 0);
  char ct[128];
  assert_true(http_header(&r, "Content-Type", ct, sizeof ct));
  assert_non_null(strstr(ct, "text/plain"));
  assert_non_null(strstr(r.body, "# TYPE kiln_time_to_first_token_seconds histogram"));
  http_resp_free(&r);
}

/* /tokenize of messages equals /tokenize of the text the template should render. */
static void same_tokens(int p, const char *messages_body, const char *rendered) {
  int st;
  json_t *a = post(p, "/tokenize", &st, "%s", messages_body);
  assert_int_equal(st, 200);
  json_t *txt = json_string(rendered);
  char *q = json_dumps(txt, JSON_ENCODE_ANY);
  json_t *b = post(p, "/tokenize", &st, "{\"prompt\":%s,\"add_special_tokens\":false}", q);
  assert_int_equal(st, 200);
  assert_true(json_equal(jpath(a, "tokens"), jpath(b, "tokens")));
  free(q);
  json_decref(txt);
  json_decref(a);
  json_decref(b);
}

static int open_fds(void) {
  int n = 0;
  DIR *d = opendir("/proc/self/fd");
  if (!d) return -1;
  while (readdir(d)) n++;
  closedir(d);
  return n;
}

static void other_templates_and_bos(void **state) {
  (void)state;
  int fds = open_fds(); /* starting and stopping servers leaks no descriptor */
  /* Qwen3's template, enable_thinking false through chat_template_kwargs. */
  kiln_server_opts o = fixture_opts();
  o.chat_template = "qwen3";
  kiln_server *q = fixture_start(&o);
  same_tokens(kiln_server_port(q),
              "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"chat_template_kwargs\":"
              "{\"enable_thinking\":false}}",
              "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n");
  kiln_server_stop(q);
  /* Llama 3.2's template with a fixed date, and an explicit BOS id for completion prompts. */
  o = fixture_opts();
  o.model_dir = "tests/data/tiny/llama-bf16";
  o.chat_template = "llama32";
  o.bos_id = 1;
  kiln_server *l = fixture_start(&o);
  int lp = kiln_server_port(l);
  same_tokens(lp,
              "{\"messages\":[{\"role\":\"developer\",\"content\":\" sys \"},{\"role\":\"user\",\"content\":"
              "\"hi\"}],\"chat_template_kwargs\":{\"date_string\":\"01 Jan 2025\"}}",
              "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\n"
              "Today Date: 01 Jan 2025\n\nsys<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>"
              "<|start_header_id|>assistant<|end_header_id|>\n\n");
  int st;
  json_t *t = post(lp, "/tokenize", &st, "{\"prompt\":\"hi\"}");
  json_t *t0 = post(lp, "/tokenize", &st, "{\"prompt\":\"hi\",\"add_special_tokens\":false}");
  assert_int_equal(jint(t, "tokens.0"), 1);
  assert_int_equal(jint(t, "count"), jint(t0, "count") + 1);
  json_t *c = post(lp, "/v1/completions", &st, "{\"prompt\":\"hi\",\"max_tokens\":2}");
  assert_int_equal(st, 200);
  assert_int_equal(jint(c, "usage.prompt_tokens"), jint(t, "count"));
  json_t *c2 = post(lp, "/v1/completions", &st, "{\"prompt\":[5,6],\"max_tokens\":2}");
  assert_int_equal(jint(c2, "usage.prompt_tokens"), 2); /* token ids are taken as they are */
  json_decref(t);
  json_decref(t0);
  json_decref(c);
  json_decref(c2);
  kiln_server_stop(l);
  /* No more descriptors than before: one left open by an earlier test (a socket still closing) may be gone. */
  assert_true(open_fds() <= fds);
}

static void failed_load(void **state) {
  (void)state;
  kiln_server_opts o = fixture_opts();
  o.model_dir = "tests/data/no-such-model";
  kiln_server *s = NULL;
  assert_int_equal(kiln_server_start(&s, &o), KILN_OK); /* listening before the model loads */
  assert_true(kiln_server_wait_ready(s, 30000) < 0);
  assert_non_null(strstr(kiln_last_error(), "no-such-model"));
  int p = kiln_server_port(s), st;
  json_t *h = get_json(p, "/health", &st);
  assert_int_equal(st, 503);
  assert_string_equal(jstr(h, "status"), "error");
  json_decref(h);
  h = get_json(p, "/v1/models", &st);
  assert_int_equal(st, 503);
  assert_string_equal(jstr(h, "error.type"), "server_error");
  json_decref(h);
  h = post(p, "/v1/completions", &st, "{\"prompt\":\"x\"}");
  assert_int_equal(st, 503);
  json_decref(h);
  kiln_server_stop(s);
}

static void default_model(void **state) {
  (void)state;
  FILE *f = fopen("models/default/model.safetensors", "rb");
  if (!f) skip();
  fclose(f);
  /* The embedded default model, its chat template detected from tokenizer_config.json. */
  kiln_server_opts o = fixture_opts();
  o.model_dir = "models/default";
  o.chat_template = NULL;
  kiln_server *d = fixture_start(&o);
  int p = kiln_server_port(d), st;
  same_tokens(p, "{\"messages\":[{\"role\":\"user\",\"content\":\"Who made the heaven?\"}]}",
              "<|im_start|>user\nWho made the heaven?<|im_end|>\n<|im_start|>assistant\n");
  json_t *m = get_json(p, "/v1/models", &st);
  assert_string_equal(jstr(m, "data.0.id"), "default");
  json_decref(m);
  json_t *c = post(p, "/v1/chat/completions", &st,
                   "{\"messages\":[{\"role\":\"user\",\"content\":\"Who made the heaven?\"}],\"max_tokens\":24,"
                   "\"temperature\":0}");
  assert_int_equal(st, 200);
  const char *text = jstr(c, "choices.0.message.content");
  assert_non_null(text);
  assert_null(strstr(text, "<|im_end|>")); /* the end of the turn is never part of the text */
  assert_true(jint(c, "usage.completion_tokens") >= 1 && jint(c, "usage.completion_tokens") <= 24);
  json_decref(c);
  kiln_server_stop(d);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(health_and_models),     cmocka_unit_test(completions_basic),
      cmocka_unit_test(completions_prompt_forms), cmocka_unit_test(completions_echo_logprobs),
      cmocka_unit_test(completions_stop),      cmocka_unit_test(sampling_seed_n),
      cmocka_unit_test(chat_basic),            cmocka_unit_test(chat_logprobs),
      cmocka_unit_test(tokenize_detokenize),   cmocka_unit_test(metrics_text),
      cmocka_unit_test(other_templates_and_bos), cmocka_unit_test(failed_load),
      cmocka_unit_test(default_model),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
