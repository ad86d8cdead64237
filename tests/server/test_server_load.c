/*
 * test_server_load: 64 concurrent streaming requests, three rounds, against a server with 4 sequence slots (so
 * most requests wait in the queue). Every request must complete with [DONE], one id, exactly its max_tokens tokens
 * (counted from the per-token logprobs entries and from usage), and the very text that the same request gives alone
 * (greedy): nothing lost, duplicated or mixed between requests. The server must stay up and idle afterwards.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kiln/kiln.h"
#include "server_fixture.h"

#define CLIENTS 64
#define ROUNDS 3
#define PROMPTS 4

static int port;
static char *reference[PROMPTS][8]; /* greedy text per prompt and per max_tokens - 16 */

typedef struct client {
  int index, round;
  int ok;
  char why[256];
} client;

static const char *prompt_of(int i) {
  static const char *p[PROMPTS] = {"In the beginning", "And God said", "The earth was", "Let there be"};
  return p[i % PROMPTS];
}
static int tokens_of(int i) { return 16 + (i / PROMPTS) % 8; }

static int fail(client *c, const char *fmt, const char *arg) {
  snprintf(c->why, sizeof c->why, fmt, arg);
  c->ok = 0;
  return 0;
}

static void *run(void *arg) {
  client *c = arg;
  int i = c->index;
  bool chat = (i + c->round) % 2;
  char body[512];
  if (chat)
    snprintf(body, sizeof body,
             "{\"messages\":[{\"role\":\"user\",\"content\":\"%s\"}],\"max_tokens\":%d,\"temperature\":0,"
             "\"ignore_eos\":true,\"stream\":true,\"stream_options\":{\"include_usage\":true},\"logprobs\":true}",
             prompt_of(i), tokens_of(i));
  else
    snprintf(body, sizeof body,
             "{\"prompt\":\"%s\",\"max_tokens\":%d,\"temperature\":0,\"ignore_eos\":true,\"stream\":true,"
             "\"stream_options\":{\"include_usage\":true},\"logprobs\":0}",
             prompt_of(i), tokens_of(i));
  int st, done;
  json_t *ev = stream_all(port, chat ? "/v1/chat/completions" : "/v1/completions", body, &st, &done, NULL);
  c->ok = 1;
  size_t n = json_array_size(ev);
  if (st != 200 || !done || n < 2) {
    fail(c, "status/[DONE]/events wrong%s", "");
    goto out;
  }
  const char *id = jstr(json_array_get(ev, 0), "id");
  int tokens = 0;
  char text[8192] = "";
  for (size_t k = 0; k < n; k++) {
    json_t *x = json_array_get(ev, k);
    if (!jstr(x, "id") || strcmp(jstr(x, "id"), id) != 0) {
      fail(c, "chunk with another id: %s", jstr(x, "id") ? jstr(x, "id") : "none");
      goto out;
    }
    if (k + 1 == n) break;
    if (chat) {
      tokens += (int)json_array_size(jpath(x, "choices.0.logprobs.content"));
      const char *t = jstr(x, "choices.0.delta.content");
      if (t && strlen(text) + strlen(t) < sizeof text) strcat(text, t);
    } else {
      tokens += (int)json_array_size(jpath(x, "choices.0.logprobs.tokens"));
      const char *t = jstr(x, "choices.0.text");
      if (t && strlen(text) + strlen(t) < sizeof text) strcat(text, t);
    }
  }
  json_t *last = json_array_get(ev, n - 1);
  if (tokens != tokens_of(i) || jint(last, "usage.completion_tokens") != tokens_of(i)) {
    fail(c, "wrong token count%s", "");
    goto out;
  }
  if (!chat && strcmp(text, reference[i % PROMPTS][tokens_of(i) - 16]) != 0) fail(c, "text differs: %s", text);
out:
  json_decref(ev);
  return NULL;
}

int main(void) {
  kiln_server_opts o = fixture_opts();
  o.parallel = 4;
  o.max_queue = CLIENTS;
  kiln_server *srv = fixture_start(&o);
  port = kiln_server_port(srv);
  int failures = 0;
  /* References: each prompt alone, at every length used. */
  for (int p = 0; p < PROMPTS; p++)
    for (int k = 0; k < 8; k++) {
      int st;
      json_t *j = post(port, "/v1/completions", &st,
                       "{\"prompt\":\"%s\",\"max_tokens\":%d,\"temperature\":0,\"ignore_eos\":true}", prompt_of(p),
                       16 + k);
      if (st != 200 || !jstr(j, "choices.0.text")) {
        fprintf(stderr, "load: reference request failed (%d)\n", st);
        return 1;
      }
      reference[p][k] = strdup(jstr(j, "choices.0.text"));
      json_decref(j);
    }
  double ok0 = metric(port, "kiln_requests_total{model=\"" TINY_ID "\",outcome=\"ok\"}");
  for (int round = 0; round < ROUNDS; round++) {
    client cl[CLIENTS];
    pthread_t th[CLIENTS];
    for (int i = 0; i < CLIENTS; i++) {
      cl[i] = (client){.index = i, .round = round};
      if (pthread_create(&th[i], NULL, run, &cl[i]) != 0) {
        fprintf(stderr, "load: cannot start client thread %d\n", i);
        return 1;
      }
    }
    for (int i = 0; i < CLIENTS; i++) pthread_join(th[i], NULL);
    for (int i = 0; i < CLIENTS; i++)
      if (!cl[i].ok) {
        failures++;
        fprintf(stderr, "load: round %d client %d: %s\n", round, i, cl[i].why);
      }
    int st;
    json_t *h = get_json(port, "/health", &st);
    json_decref(h);
    if (st != 200) {
      fprintf(stderr, "load: /health answered %d after round %d\n", st, round);
      failures++;
    }
  }
  double ok1 = metric(port, "kiln_requests_total{model=\"" TINY_ID "\",outcome=\"ok\"}");
  if (ok1 - ok0 != CLIENTS * ROUNDS) {
    fprintf(stderr, "load: %g requests counted ok, expected %d\n", ok1 - ok0, CLIENTS * ROUNDS);
    failures++;
  }
  if (metric(port, "kiln_requests_running{model=\"" TINY_ID "\"}") != 0 ||
      metric(port, "kiln_requests_waiting{model=\"" TINY_ID "\"}") != 0) {
    fprintf(stderr, "load: requests still running or waiting after the rounds\n");
    failures++;
  }
  kiln_server_stop(srv);
  for (int p = 0; p < PROMPTS; p++)
    for (int k = 0; k < 8; k++) free(reference[p][k]);
  printf("load: %d rounds of %d concurrent streams, %d failures\n", ROUNDS, CLIENTS, failures);
  return failures ? 1 : 0;
}
