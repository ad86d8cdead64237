/*
 * kiln run: generate text from a prompt.
 *
 * The text goes to stdout as it is generated, flushed after every step (kiln_gen_step releases only whole UTF-8
 * characters and never a prefix that may still become a stop string); the progress bar and the timings go to
 * stderr, so stdout carries nothing but the text. With --json, stdout carries instead one JSON line at the end.
 * Ctrl-C ends the generation early and still reports it (a second Ctrl-C kills the process).
 */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "cli_common.h"

enum {
  OPT_TEMP = CLI_OPT_LONG,
  OPT_TOP_K,
  OPT_TOP_P,
  OPT_MIN_P,
  OPT_REPEAT,
  OPT_PRESENCE,
  OPT_FREQUENCY,
  OPT_STOP,
  OPT_SEED,
  OPT_IGNORE_EOS,
  OPT_DEVICE,
  OPT_CTX,
  OPT_BOS,
  OPT_NO_BOS,
  OPT_JSON,
  OPT_CHAT,
  OPT_SYSTEM,
  OPT_CHAT_TEMPLATE,
  OPT_NO_THINK,
};

static const cli_opt opts_[] = {
    {'m', "model", "DIR", "checkpoint directory (default: $KILN_MODEL, else the embedded default model)"},
    {'p', "prompt", "TEXT", "the prompt ('-': read it from standard input)"},
    {'f', "file", "FILE", "read the prompt from FILE"},
    {'n', "max-tokens", "N", "tokens to generate at most (default 256; 0: until EOS or the context is full)"},
    {OPT_TEMP, "temp", "T", "temperature (default 0: greedy)"},
    {OPT_TOP_K, "top-k", "K", "keep the K most likely tokens (0: off)"},
    {OPT_TOP_P, "top-p", "P", "keep the smallest set of tokens with probability >= P (1: off)"},
    {OPT_MIN_P, "min-p", "P", "drop tokens less likely than P times the most likely one (0: off)"},
    {OPT_REPEAT, "repeat-penalty", "R", "HF repetition penalty over prompt and output (1: off)"},
    {OPT_PRESENCE, "presence-penalty", "P", "OpenAI presence penalty, -2..2 (0: off)"},
    {OPT_FREQUENCY, "frequency-penalty", "F", "OpenAI frequency penalty, -2..2 (0: off)"},
    {OPT_STOP, "stop", "STR", "stop before this string (repeat for up to 8 strings)"},
    {OPT_SEED, "seed", "S", "sampling seed (default: random, printed with the timings)"},
    {OPT_IGNORE_EOS, "ignore-eos", NULL, "keep generating past the end-of-sequence tokens"},
    {'t', "threads", "N", "CPU threads (default: $KILN_THREADS, else all cores)"},
    {OPT_DEVICE, "device", "D", "cpu, cuda or cuda:N (default: $KILN_DEVICE, else cuda when present)"},
    {OPT_CTX, "ctx", "N", "context length in tokens (default: $KILN_CTX, else min(model's, 4096))"},
    {OPT_BOS, "bos", NULL, "put the BOS token before the prompt"},
    {OPT_NO_BOS, "no-bos", NULL, "no BOS token (default: as the tokenizer's post-processor does)"},
    {OPT_CHAT, "chat", NULL, "wrap the prompt as a user message in the model's chat template"},
    {OPT_SYSTEM, "system", "TEXT", "a system message before it (implies --chat)"},
    {OPT_CHAT_TEMPLATE, "chat-template", "NAME", "chatml, qwen3, llama3, llama31 or llama32 instead of the model's"},
    {OPT_NO_THINK, "no-think", NULL, "Qwen3: answer without a thinking block (implies --chat)"},
    {OPT_JSON, "json", NULL, "print one JSON line at the end instead of the text"},
    {'q', "quiet", NULL, "no progress bar and no timings on stderr"},
    {0},
};

static volatile sig_atomic_t interrupted_;

static void on_sigint_(int sig) {
  (void)sig;
  interrupted_ = 1;
}

typedef struct run_args_ {
  cli_run_opts ro;
  const char *prompt, *file;
  int max_tokens;
  kiln_gen_params gp;
  bool seed_given, json;
  int bos; /* -1 auto, 0 no, 1 yes */
  cli_chat chat;
} run_args_;

static int parse_(cli_parser *p, run_args_ *a) {
  const char *arg;
  int c, rc = 0;
  while (rc == 0 && (c = cli_next(p, &arg)) >= 0) {
    kiln_sampling *s = &a->gp.sampling;
    switch (c) {
    case 'm': a->ro.model = arg; break;
    case 'p': a->prompt = arg; break;
    case 'f': a->file = arg; break;
    case 'n': rc = cli_parse_int(p, "-n", arg, -1, 1 << 30, &a->max_tokens); break;
    case OPT_TEMP: rc = cli_parse_float(p, "--temp", arg, 0, 100, &s->temperature); break;
    case OPT_TOP_K: rc = cli_parse_int(p, "--top-k", arg, 0, 1 << 30, &s->top_k); break;
    case OPT_TOP_P: rc = cli_parse_float(p, "--top-p", arg, 1e-6, 1, &s->top_p); break;
    case OPT_MIN_P: rc = cli_parse_float(p, "--min-p", arg, 0, 1, &s->min_p); break;
    case OPT_REPEAT: rc = cli_parse_float(p, "--repeat-penalty", arg, 1e-3, 100, &s->repetition_penalty); break;
    case OPT_PRESENCE: rc = cli_parse_float(p, "--presence-penalty", arg, -2, 2, &s->presence_penalty); break;
    case OPT_FREQUENCY: rc = cli_parse_float(p, "--frequency-penalty", arg, -2, 2, &s->frequency_penalty); break;
    case OPT_STOP:
      if (!*arg) rc = cli_usage(p, "--stop: the string is empty");
      else if (a->gp.n_stop == KILN_MAX_STOP) rc = cli_usage(p, "--stop: at most %d strings", KILN_MAX_STOP);
      else a->gp.stop[a->gp.n_stop++] = arg;
      break;
    case OPT_SEED:
      rc = cli_parse_u64(p, "--seed", arg, &s->seed);
      a->seed_given = true;
      break;
    case OPT_IGNORE_EOS: a->gp.ignore_eos = true; break;
    case 't': rc = cli_parse_int(p, "-t", arg, 0, 4096, &a->ro.n_threads); break;
    case OPT_DEVICE:
      rc = cli_parse_device(p, "--device", arg);
      a->ro.device = arg;
      break;
    case OPT_CTX: rc = cli_parse_int(p, "--ctx", arg, 1, 1 << 24, &a->ro.n_ctx); break;
    case OPT_BOS: a->bos = 1; break;
    case OPT_NO_BOS: a->bos = 0; break;
    case OPT_JSON: a->json = true; break;
    case OPT_CHAT: a->chat.on = true; break;
    case OPT_SYSTEM:
      a->chat.on = true;
      a->chat.system = arg;
      break;
    case OPT_CHAT_TEMPLATE:
      a->chat.on = true;
      a->chat.template_name = arg;
      break;
    case OPT_NO_THINK:
      a->chat.on = true;
      a->chat.no_think = true;
      break;
    case 'q': a->ro.quiet = true; break;
    }
  }
  if (rc) return rc;
  if (c == CLI_HELP) return -1;
  if (c == CLI_BAD) return CLI_EXIT_USAGE;
  if (!a->prompt == !a->file) return cli_usage(p, "give the prompt with exactly one of -p or -f");
  return cli_run_opts_env(p, &a->ro);
}

/* The prompt's ids: the text (in chat mode, rendered as a conversation; the end of the assistant's turn then
 * becomes a stop string), with the BOS token first when asked (or, in auto mode, when the tokenizer would add it
 * and no chat template wrote it already). */
static int encode_prompt_(run_args_ *a, const char *dir, const kiln_tokenizer *tok, const kiln_model *m,
                          int32_t **ids, size_t *n) {
  char *text = NULL, *tpath = NULL, *chat = NULL;
  size_t len = 0, chat_len = 0;
  int st = 0, rc = 0;
  bool from_file = a->file || !strcmp(a->prompt, "-");
  if (from_file && (st = cli_read_file(a->file ? a->file : "-", &text, &len)) < 0) {
    rc = cli_fail(st);
    goto out;
  }
  const char *src = text ? text : a->prompt;
  size_t src_len = text ? len : strlen(src);
  if (a->chat.on) {
    const char *eot;
    if ((rc = cli_chat_prompt(dir, &a->chat, src, &chat, &chat_len, &eot))) goto out;
    src = chat;
    src_len = chat_len;
    bool known = !eot;
    for (int i = 0; i < a->gp.n_stop && !known; i++) known = !strcmp(a->gp.stop[i], eot);
    if (!known && a->gp.n_stop < KILN_MAX_STOP) a->gp.stop[a->gp.n_stop++] = eot;
  }
  if ((st = kiln_tokenizer_encode(tok, src, src_len, ids, n)) < 0) {
    rc = from_file && !a->chat.on ? cli_fail_in(a->file ? a->file : "-", st) : cli_fail(st);
    goto out;
  }
  int32_t bos = -1;
  if (a->bos == 1) {
    bos = m->cfg.bos_token_id;
    if (bos < 0) {
      rc = cli_errorf("%s/config.json: --bos given but the model has no bos_token_id", dir);
      goto out;
    }
  } else if (a->bos == -1 && !a->chat.on && m->cfg.arch != KILN_ARCH_QWEN3) {
    /* Qwen tokenizers never add one; others (Llama 3) say so in tokenizer.json's post-processor. */
    if (!(tpath = malloc(strlen(dir) + sizeof "/tokenizer.json"))) {
      rc = cli_errorf("out of memory");
      goto out;
    }
    strcpy(tpath, dir);
    strcat(tpath, "/tokenizer.json");
    bos = cli_tokenizer_bos(tpath, tok);
  }
  if (bos >= 0) {
    int32_t *g = realloc(*ids, (*n + 1) * sizeof **ids);
    if (!g) {
      rc = cli_errorf("out of memory");
      goto out;
    }
    memmove(g + 1, g, *n * sizeof *g);
    g[0] = bos;
    *ids = g;
    (*n)++;
  }
  if (*n == 0) {
    if (from_file) rc = cli_errorf("%s: the prompt is empty (no tokens)", a->file ? a->file : "<stdin>");
    else rc = cli_errorf("the prompt is empty (no tokens)");
  }
out:
  free(chat);
  free(tpath);
  free(text);
  return rc;
}

static const char *finish_name_(kiln_finish f) {
  return f == KILN_FINISH_STOP ? "stop" : f == KILN_FINISH_LENGTH ? "length" : "interrupted";
}

/* The JSON line of --json: text, generated ids, counts and timings. */
static json_t *result_json_(const kiln_strbuf *text, const int32_t *ids, int n_ids, const kiln_gen_stats *st,
                            double tpot_ms, double tok_s) {
  json_t *arr = json_array();
  for (int i = 0; arr && i < n_ids; i++) {
    if (json_array_append_new(arr, json_integer(ids[i])) != 0) {
      json_decref(arr);
      arr = NULL;
    }
  }
  json_t *t = cli_json_text(text->p ? text->p : "", text->n);
  if (!arr || !t) {
    json_decref(arr);
    json_decref(t);
    return NULL;
  }
  return json_pack("{s:o, s:o, s:i, s:i, s:f, s:f, s:f}", "text", t, "ids", arr, "prompt_tokens",
                   st->prompt_tokens, "completion_tokens", st->completion_tokens, "ttft_ms", st->ttft_ms,
                   "tpot_ms", tpot_ms, "tok_s", tok_s);
}

int cmd_run(int argc, char **argv) {
  run_args_ a = {.ro = {.n_threads = -1}, .max_tokens = 256, .gp = kiln_gen_params_default(), .bos = -1};
  cli_parser p;
  cli_parser_init(&p, "run", "[-m DIR] (-p TEXT | -f FILE) [options]",
                  "Generates a continuation of the prompt (raw text, or with --chat a user turn in the model's chat "
                  "template) and streams it to stdout; timings go to stderr. Environment: KILN_MODEL, KILN_DEVICE, "
                  "KILN_THREADS, KILN_CTX.",
                  opts_, argc, argv);
  int rc = parse_(&p, &a);
  if (rc) return rc < 0 ? CLI_EXIT_OK : rc;
  a.gp.max_tokens = a.max_tokens < 0 ? 0 : a.max_tokens;
  a.gp.top_logprobs = -1;
  if (!a.seed_given) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    a.gp.sampling.seed = ((uint64_t)ts.tv_sec * 1000000007u) ^ (uint64_t)ts.tv_nsec ^ ((uint64_t)getpid() << 32);
  }

  char *dir = NULL;
  kiln_tokenizer *tok = NULL;
  kiln_model *model = NULL;
  kiln_engine *eng = NULL;
  kiln_gen *gen = NULL;
  int32_t *prompt = NULL;
  size_t n_prompt = 0;
  kiln_strbuf text = {0};
  double load_ms = 0;
  int st, n_ctx, n_ids = 0;
  bool text_shown = false;
  kiln_gen_event ev = {0};
  kiln_gen_stats gs = {0};
  struct sigaction sa = {.sa_handler = on_sigint_, .sa_flags = SA_RESETHAND};

  if ((rc = cli_model_dir(a.ro.model, &dir)) || (rc = cli_load_tokenizer(dir, &tok)) ||
      (rc = cli_load_model(dir, a.ro.quiet, &model, &load_ms)) ||
      (rc = encode_prompt_(&a, dir, tok, model, &prompt, &n_prompt)) ||
      (rc = cli_engine_create(model, &a.ro, a.ro.n_ctx, &eng)))
    goto out;
  n_ctx = kiln_engine_n_ctx(eng);
  if (n_prompt > (size_t)n_ctx) {
    const char *src = a.file ? a.file : !strcmp(a.prompt, "-") ? "<stdin>" : NULL;
    rc = cli_errorf("%s%sthe prompt is %zu tokens, longer than the context of %d tokens (--ctx)", src ? src : "",
                    src ? ": " : "", n_prompt, n_ctx);
    goto out;
  }
  if ((st = kiln_gen_start(&gen, eng, tok, 0, prompt, (int)n_prompt, &a.gp)) < 0) {
    rc = cli_fail(st);
    goto out;
  }

  /* Without the handler Ctrl-C still ends the process (at once, with no report): generation goes on regardless. */
  if ((sigemptyset(&sa.sa_mask) != 0 || sigaction(SIGINT, &sa, NULL) != 0) && !a.ro.quiet)
    fprintf(stderr, "kiln: warning: sigaction: %s (Ctrl-C will end the process at once)\n", strerror(errno));
  do {
    if ((st = kiln_gen_step(gen, &ev)) < 0) {
      /* On a terminal, the message starts on its own line rather than after the text so far. */
      if (!a.json && text_shown && isatty(STDOUT_FILENO)) fputc('\n', stdout);
      fflush(stdout);
      rc = cli_fail(st);
      goto out;
    }
    text_shown |= ev.text_len > 0;
    if (ev.text_len) {
      if (a.json) st = cli_buf_append(&text, ev.text, ev.text_len);
      else if (fwrite(ev.text, 1, ev.text_len, stdout) != ev.text_len || fflush(stdout) != 0)
        st = kiln_error(KILN_EIO, "<stdout>: write failed: %s", strerror(errno));
      if (st < 0) {
        rc = cli_fail(st);
        goto out;
      }
    }
  } while (ev.finish == KILN_FINISH_NONE && !interrupted_);
  signal(SIGINT, SIG_DFL);

  kiln_gen_get_stats(gen, &gs);
  const int32_t *ids = kiln_gen_ids(gen, &n_ids);
  /* Per-token time after the first token: the decode rate a reader sees once text starts flowing. */
  double tpot_ms = gs.completion_tokens > 1 ? gs.decode_ms / (gs.completion_tokens - 1) : 0;
  double tok_s = tpot_ms > 0 ? 1000.0 / tpot_ms : 0;
  if (!a.json && isatty(STDOUT_FILENO)) fputc('\n', stdout);
  if (!a.ro.quiet) {
    fflush(stdout);
    fprintf(stderr,
            "kiln: %s, load %.0f ms | prompt %d tokens, TTFT %.1f ms | %d tokens, %.2f tok/s (%.2f ms/token) | "
            "finish %s, seed %llu\n",
            kiln_engine_device(eng), load_ms, gs.prompt_tokens, gs.ttft_ms, gs.completion_tokens, tok_s, tpot_ms,
            finish_name_(ev.finish), (unsigned long long)a.gp.sampling.seed);
  }
  if (a.json) rc = cli_json_print(result_json_(&text, ids, n_ids, &gs, tpot_ms, tok_s));
out:
  signal(SIGINT, SIG_DFL);
  kiln_strbuf_free(&text);
  if (gen) kiln_gen_free(gen);
  if (eng) kiln_engine_free(eng);
  free(prompt);
  kiln_model_free(model);
  if (tok) kiln_tokenizer_free(tok);
  free(dir);
  return rc;
}
