/*
 * test_server_fuzz: 10,000 mutated request bodies (byte-level damage to valid requests, and valid JSON with values
 * swapped for hostile ones) sent to every POST route. Every answer must be a well-formed HTTP response with a
 * status below 500: a 4xx carries an OpenAI-shaped error, a 200 a valid body. The server must never crash or hang
 * (run it under ASan+UBSan to catch memory errors), and must still serve a normal request at the end.
 *
 * Usage: test_server_fuzz [N] [SEED]
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kiln/kiln.h"
#include "server_fixture.h"

static uint64_t rng_state;

static uint64_t rnd(void) {
  uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}
static size_t rndn(size_t n) { return n ? (size_t)(rnd() % n) : 0; }

static const struct {
  const char *path, *body;
} seeds[] = {
    {"/v1/completions", "{\"model\":\"qwen3-f32\",\"prompt\":\"In the beginning\",\"max_tokens\":4,\"temperature\":0.7,"
                        "\"top_p\":0.9,\"stop\":[\"\\n\"],\"seed\":3}"},
    {"/v1/completions", "{\"prompt\":[\"a\",\"b\"],\"max_tokens\":2,\"n\":2,\"logprobs\":2,\"echo\":true}"},
    {"/v1/completions", "{\"prompt\":[[1,2,3],[4,5]],\"max_tokens\":3,\"stream\":true,"
                        "\"stream_options\":{\"include_usage\":true}}"},
    {"/v1/chat/completions", "{\"model\":\"qwen3-f32\",\"messages\":[{\"role\":\"system\",\"content\":\"s\"},"
                             "{\"role\":\"user\",\"content\":\"hi\"}],\"max_tokens\":3,\"logprobs\":true,"
                             "\"top_logprobs\":2}"},
    {"/v1/chat/completions", "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"x\"}]},"
                             "{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":\"1\",\"type\":"
                             "\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"{}\"}}]},{\"role\":\"tool\","
                             "\"content\":\"r\"}],\"max_tokens\":2,\"stream\":true,\"chat_template_kwargs\":{}}"},
    {"/tokenize", "{\"prompt\":\"hello world\",\"add_special_tokens\":true}"},
    {"/tokenize", "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}"},
    {"/detokenize", "{\"tokens\":[5,6,7,8]}"},
};
#define N_SEEDS (sizeof seeds / sizeof seeds[0])

static const char *pieces[] = {
    "\"", "{", "}", "[", "]", ",", ":", "\\", "\\u0000", "\\ud800", "\\uDFFF", "-1", "0", "1e999", "-1e999", "1e-999",
    "99999999999999999999999", "-9223372036854775809", "null", "true", "false", "\"\"", "[]", "{}", "\xff", "\xc3",
    "\xe2\x82", "\xf0\x9f\x98", "\xed\xa0\x80", "\t", "\n", " ", "NaN", "Infinity", "\"max_tokens\":", "\"n\":64",
    "\"stream\":true", "\"logprobs\":20", "\"echo\":true", "\"stop\":[\"\"]", "<|im_start|>", "<|endoftext|>",
};

static json_t *hostile_value(void) {
  switch (rndn(14)) {
  case 0: return json_null();
  case 1: return json_true();
  case 2: return json_integer((json_int_t)(rnd() >> rndn(64)) * (rndn(2) ? 1 : -1));
  case 3: return json_integer(INT64_MIN);
  case 4: return json_real(rndn(2) ? 1e300 : -0.0);
  case 5: return json_string("");
  case 6: return json_string("\xe2\x80\xae<|im_end|>\\\"");
  case 7: {
    char s[300];
    size_t n = rndn(sizeof s - 1);
    for (size_t i = 0; i < n; i++) s[i] = (char)(' ' + rndn(95));
    s[n] = '\0';
    return json_string(s);
  }
  case 8: return json_array();
  case 9: return json_object();
  case 10: {
    json_t *a = json_array();
    for (size_t i = rndn(6); i > 0; i--) json_array_append_new(a, json_integer((json_int_t)rndn(2000) - 100));
    return a;
  }
  case 11: {
    json_t *v = json_integer(1);
    for (size_t d = rndn(300); d > 0; d--) v = json_pack("[o]", v); /* deep nesting */
    return v;
  }
  case 12: return json_pack("[{s:s,s:s}]", "role", "user", "content", "x");
  default: return json_integer((json_int_t)rndn(70));
  }
}

/* Replaces a random value somewhere in the tree (or removes or adds a key). */
static void mutate_tree(json_t *v, int depth) {
  if (json_is_object(v) && json_object_size(v)) {
    size_t k = rndn(json_object_size(v));
    const char *key;
    json_t *val;
    size_t i = 0;
    json_object_foreach(v, key, val) {
      if (i++ != k) continue;
      size_t what = rndn(10);
      if (what == 0) {
        json_object_del(v, key);
      } else if (what == 1) {
        json_object_set_new(v, rndn(2) ? "max_tokens" : "zz", hostile_value());
      } else if (what < 5 || depth > 4 || !(json_is_object(val) || json_is_array(val))) {
        json_object_set_new(v, key, hostile_value());
      } else {
        mutate_tree(val, depth + 1);
      }
      return;
    }
  } else if (json_is_array(v) && json_array_size(v)) {
    size_t k = rndn(json_array_size(v));
    json_t *val = json_array_get(v, k);
    if (rndn(3) == 0 || depth > 4 || !(json_is_object(val) || json_is_array(val)))
      json_array_set_new(v, k, hostile_value());
    else
      mutate_tree(val, depth + 1);
  }
}

static char *mutate_bytes(const char *seed, size_t *len) {
  size_t n = strlen(seed), cap = n * 2 + 4096;
  char *b = malloc(cap);
  memcpy(b, seed, n);
  for (size_t rounds = 1 + rndn(4); rounds > 0; rounds--) {
    size_t at = rndn(n + 1);
    switch (rndn(6)) {
    case 0: /* flip */
      if (n) b[rndn(n)] ^= (char)(1u << rndn(8));
      break;
    case 1: { /* insert a piece */
      const char *p = pieces[rndn(sizeof pieces / sizeof pieces[0])];
      size_t k = strlen(p);
      if (n + k >= cap) break;
      memmove(b + at + k, b + at, n - at);
      memcpy(b + at, p, k);
      n += k;
      break;
    }
    case 2: { /* delete a range */
      size_t k = rndn(n - at + 1);
      memmove(b + at, b + at + k, n - at - k);
      n -= k;
      break;
    }
    case 3: /* truncate */
      n = at;
      break;
    case 4: { /* duplicate a range */
      size_t k = rndn(n - at + 1);
      if (k > 64 || n + k >= cap) break;
      memmove(b + at + k, b + at, n - at);
      n += k;
      break;
    }
    default: /* random byte */
      if (n) b[rndn(n)] = (char)rndn(256);
    }
  }
  *len = n;
  return b;
}

int main(int argc, char **argv) {
  int count = argc > 1 ? atoi(argv[1]) : 10000;
  rng_state = argc > 2 ? strtoull(argv[2], NULL, 10) : 20250607;
  kiln_server_opts o = fixture_opts();
  o.n_ctx = 64; /* keeps what a mutated request may ask for small */
  o.max_body_bytes = 1 << 20;
  kiln_server *srv = fixture_start(&o);
  int port = kiln_server_port(srv);
  int failures = 0, by_status[6] = {0};
  for (int i = 0; i < count && failures < 10; i++) {
    size_t s = rndn(N_SEEDS), len;
    char *body;
    if (rndn(2)) {
      body = mutate_bytes(seeds[s].body, &len);
    } else {
      json_t *v = json_loads(seeds[s].body, 0, NULL);
      for (size_t k = 1 + rndn(3); k > 0; k--) mutate_tree(v, 0);
      body = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
      len = strlen(body);
      json_decref(v);
    }
    http_resp r;
    int rc = http_request(port, "POST", seeds[s].path, NULL, body, len, rndn(8) == 0, &r);
    bool ok = rc == 0 && r.status >= 200 && r.status < 500;
    char ctype[128] = "";
    http_header(&r, "Content-Type", ctype, sizeof ctype);
    if (ok && r.status >= 400) {
      json_t *j = json_loadb(r.body, r.body_len, 0, NULL);
      ok = json_is_string(jpath(j, "error.message")) && json_is_string(jpath(j, "error.type"));
      json_decref(j);
    } else if (ok && strcmp(ctype, "application/json") == 0) {
      json_t *j = json_loadb(r.body, r.body_len, 0, NULL); /* a 200 body is valid JSON (valid UTF-8) */
      ok = json_is_object(j);
      json_decref(j);
    } else if (ok) {
      /* An event stream: every event valid JSON, [DONE] last. */
      ok = strcmp(ctype, "text/event-stream") == 0 && r.body_len >= 14 &&
           strcmp(r.body + r.body_len - 14, "data: [DONE]\n\n") == 0;
      for (char *ev = r.body; ok && (ev = strstr(ev, "data: {")); ev += 6) {
        char *end = strstr(ev, "\n\n");
        json_t *j = end ? json_loadb(ev + 6, (size_t)(end - ev - 6), 0, NULL) : NULL;
        ok = j != NULL;
        json_decref(j);
      }
    }
    if (rc == 0) by_status[r.status / 100 < 6 ? r.status / 100 : 0]++;
    if (!ok) {
      failures++;
      fprintf(stderr, "fuzz: case %d %s (%zu bytes): status %d, body %.300s\n  request: %.500s\n", i,
              seeds[s].path, len, rc == 0 ? r.status : -1, rc == 0 && r.body ? r.body : "", body);
    }
    if (rc == 0) http_resp_free(&r);
    free(body);
  }
  int st;
  json_t *j = post(port, "/v1/completions", &st, "{\"prompt\":\"x\",\"max_tokens\":2}");
  if (st != 200) {
    fprintf(stderr, "fuzz: the server no longer answers a normal request (%d)\n", st);
    failures++;
  }
  json_decref(j);
  kiln_server_stop(srv);
  printf("fuzz: %d bodies: %d 2xx, %d 4xx, %d 5xx; %d failures\n", count, by_status[2], by_status[4], by_status[5],
         failures);
  return failures ? 1 : 0;
}
