/*
 * kiln serve: the OpenAI-compatible HTTP server (kiln/server.h; docs/server.md).
 *
 * Starts listening at once (GET /health answers 503 while the model loads), prints one line when ready, logs one
 * line per request on stderr (unless -q), and stops cleanly on SIGINT or SIGTERM: running generations end with an
 * error event, every thread is joined.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cli_common.h"

enum {
  OPT_HOST = CLI_OPT_LONG,
  OPT_PORT,
  OPT_API_KEY,
  OPT_API_KEY_FILE,
  OPT_MAX_QUEUE,
  OPT_PARALLEL,
  OPT_CTX,
  OPT_CORS,
  OPT_DEVICE,
  OPT_CHAT_TEMPLATE,
  OPT_NAME,
  OPT_MAX_BODY,
  OPT_PING,
  OPT_BOS,
  OPT_NO_BOS,
};

static const cli_opt opts_[] = {
    {'m', "model", "DIR", "checkpoint directory (default: $KILN_MODEL, else the embedded default model)"},
    {OPT_HOST, "host", "ADDR", "address to listen on (default 127.0.0.1; 0.0.0.0 for all)"},
    {OPT_PORT, "port", "N", "port (default 8080; 0: any free port, printed when ready)"},
    {OPT_API_KEY, "api-key", "KEY", "require 'Authorization: Bearer KEY' (default: $KILN_API_KEY, else none)"},
    {OPT_API_KEY_FILE, "api-key-file", "FILE", "read the key from the first line of FILE"},
    {OPT_MAX_QUEUE, "max-queue", "N", "requests that may wait beyond the running ones; then 503 (default 64)"},
    {OPT_PARALLEL, "parallel", "N", "sequences generated at once, round-robin (default 4)"},
    {OPT_CTX, "ctx", "N", "context length per sequence (default: $KILN_CTX, else min(model's, 4096))"},
    {OPT_CORS, "cors-origins", "LIST", "comma-separated origins allowed by CORS, or '*' (default: none)"},
    {OPT_DEVICE, "device", "D", "cpu, cuda or cuda:N (default: $KILN_DEVICE, else cuda when present)"},
    {'t', "threads", "N", "CPU threads (default: $KILN_THREADS, else all cores)"},
    {OPT_CHAT_TEMPLATE, "chat-template", "T", "chatml, qwen3, llama3, llama31, llama32, or a Jinja file "
                                              "(default: from tokenizer_config.json)"},
    {OPT_NAME, "model-name", "ID", "the model id clients use (default: the directory's name)"},
    {OPT_MAX_BODY, "max-body", "BYTES", "largest request body; larger gets 413 (default 8388608)"},
    {OPT_PING, "ping-ms", "MS", "': ping' keep-alive on idle event streams every MS (default 15000)"},
    {OPT_BOS, "bos", NULL, "put the model's BOS token before /v1/completions text prompts"},
    {OPT_NO_BOS, "no-bos", NULL, "never add a BOS token (default: Llama models add it, Qwen models do not)"},
    {'q', "quiet", NULL, "no request log"},
    {0},
};

static int read_key_file_(const char *path, char **key) {
  char *text = NULL;
  size_t len = 0;
  int st = cli_read_file(path, &text, &len);
  if (st < 0) return cli_fail(st);
  size_t n = strcspn(text, "\r\n");
  while (n && (text[n - 1] == ' ' || text[n - 1] == '\t')) n--;
  text[n] = '\0';
  if (!n) {
    free(text);
    return cli_errorf("%s: the first line is empty (no key)", path);
  }
  *key = text;
  return 0;
}

int cmd_serve(int argc, char **argv) {
  kiln_server_opts so = kiln_server_opts_default();
  cli_run_opts ro = {.n_threads = -1};
  const char *key_file = NULL;
  char *key_buf = NULL, *dir = NULL;
  int bos = -1;
  long long max_body = so.max_body_bytes;
  cli_parser p;
  cli_parser_init(&p, "serve", "[-m DIR] [--host ADDR] [--port N] [options]",
                  "Serves the model over HTTP with OpenAI's API: /v1/models, /v1/completions, /v1/chat/completions "
                  "(streaming included), plus /health, /metrics, /tokenize and /detokenize.",
                  opts_, argc, argv);
  const char *arg;
  int c, rc = 0;
  while (rc == 0 && (c = cli_next(&p, &arg)) >= 0) {
    switch (c) {
    case 'm': ro.model = arg; break;
    case OPT_HOST: so.host = arg; break;
    case OPT_PORT: rc = cli_parse_int(&p, "--port", arg, 0, 65535, &so.port); break;
    case OPT_API_KEY:
      if (!*arg) rc = cli_usage(&p, "--api-key: the key is empty");
      so.api_key = arg;
      break;
    case OPT_API_KEY_FILE: key_file = arg; break;
    case OPT_MAX_QUEUE: rc = cli_parse_int(&p, "--max-queue", arg, 0, 65536, &so.max_queue); break;
    case OPT_PARALLEL: rc = cli_parse_int(&p, "--parallel", arg, 1, 256, &so.parallel); break;
    case OPT_CTX: rc = cli_parse_int(&p, "--ctx", arg, 1, 1 << 24, &ro.n_ctx); break;
    case OPT_CORS: so.cors_origins = arg; break;
    case OPT_DEVICE:
      rc = cli_parse_device(&p, "--device", arg);
      ro.device = arg;
      break;
    case 't': rc = cli_parse_int(&p, "-t", arg, 0, 4096, &ro.n_threads); break;
    case OPT_CHAT_TEMPLATE: so.chat_template = arg; break;
    case OPT_NAME:
      if (!*arg) rc = cli_usage(&p, "--model-name: the name is empty");
      so.model_id = arg;
      break;
    case OPT_MAX_BODY: {
      int v;
      rc = cli_parse_int(&p, "--max-body", arg, 1024, 1 << 30, &v);
      max_body = v;
      break;
    }
    case OPT_PING: rc = cli_parse_int(&p, "--ping-ms", arg, 10, 3600000, &so.ping_ms); break;
    case OPT_BOS: bos = 1; break;
    case OPT_NO_BOS: bos = 0; break;
    case 'q': ro.quiet = true; break;
    }
  }
  if (rc) return rc;
  if (c == CLI_HELP) return CLI_EXIT_OK;
  if (c == CLI_BAD) return CLI_EXIT_USAGE;
  if (so.api_key && key_file) return cli_usage(&p, "give the key with --api-key or --api-key-file, not both");
  if ((rc = cli_run_opts_env(&p, &ro))) return rc;
  if (!so.api_key && !key_file) {
    const char *env = getenv("KILN_API_KEY");
    if (env && *env) so.api_key = env;
  }
  if (key_file && (rc = read_key_file_(key_file, &key_buf))) return rc;
  if (key_buf) so.api_key = key_buf;
  if ((rc = cli_model_dir(ro.model, &dir))) {
    free(key_buf);
    return rc;
  }
  so.model_dir = dir;
  so.device = ro.device;
  so.n_threads = ro.n_threads;
  so.n_ctx = ro.n_ctx;
  so.max_body_bytes = max_body;
  so.bos_id = bos == 0 ? -1 : bos == 1 ? -3 : -2;
  so.log = ro.quiet ? NULL : stderr;

  /* Signals: blocked in every thread (the server's threads inherit the mask), taken here with sigwait. A client
   * that hangs up must not kill the process with SIGPIPE. */
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, NULL);
  signal(SIGPIPE, SIG_IGN);

  kiln_server *srv = NULL;
  int st = kiln_server_start(&srv, &so);
  if (st < 0) {
    rc = cli_fail(st);
    goto out;
  }
  st = kiln_server_wait_ready(srv, -1);
  if (st < 0) {
    rc = cli_fail(st);
    goto out;
  }
  fprintf(stderr, "kiln serve: ready on http://%s:%d\n", so.host, kiln_server_port(srv));
  fflush(stderr);
  int sig = 0;
  while (sigwait(&set, &sig) != 0) {
  }
  fprintf(stderr, "kiln serve: %s, stopping\n", sig == SIGINT ? "interrupted" : "terminated");
out:
  kiln_server_stop(srv);
  free(dir);
  free(key_buf);
  return rc;
}
