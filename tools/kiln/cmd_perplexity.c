/*
 * kiln perplexity: perplexity and bits per byte of a text file under the model (contracts.md, "Perplexity").
 *
 * The text is encoded without special tokens and cut into consecutive, non-overlapping windows of --ctx tokens
 * (full windows only; a text shorter than one window is one window); each window is evaluated from an empty KV
 * cache by kiln_eval_perplexity(), which predicts positions 1..len-1 of each window.
 */
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cli_common.h"

enum { OPT_CTX = CLI_OPT_LONG, OPT_WINDOWS, OPT_DEVICE, OPT_JSON };

/* Window length when neither --ctx nor KILN_CTX gives one (capped by the model's max_position_embeddings). */
#define DEFAULT_WINDOW 1024

static const cli_opt opts_[] = {
    {'m', "model", "DIR", "checkpoint directory (default: $KILN_MODEL, else the embedded default model)"},
    {'f', "file", "FILE", "the text ('-': standard input)"},
    {OPT_CTX, "ctx", "N", "window length in tokens (default: $KILN_CTX, else 1024)"},
    {OPT_WINDOWS, "windows", "K", "evaluate the first K windows only (default: all full windows)"},
    {'t', "threads", "N", "CPU threads (default: $KILN_THREADS, else all cores)"},
    {OPT_DEVICE, "device", "D", "cpu, cuda or cuda:N (default: $KILN_DEVICE, else cuda when present)"},
    {OPT_JSON, "json", NULL, "print {\"tokens\",\"nll\",\"ppl\",\"bpb\"} as one JSON line"},
    {'q', "quiet", NULL, "no progress bar and no timings on stderr"},
    {0},
};

int cmd_perplexity(int argc, char **argv) {
  cli_parser p;
  cli_parser_init(&p, "perplexity", "[-m DIR] -f FILE [--ctx N] [--windows K] [options]",
                  "Mean negative log-likelihood (nats per predicted token), perplexity = exp(nll) and bits per "
                  "byte of the predicted tokens' bytes. Environment: KILN_MODEL, KILN_DEVICE, KILN_THREADS, "
                  "KILN_CTX.",
                  opts_, argc, argv);
  cli_run_opts ro = {.n_threads = -1};
  const char *file = NULL, *arg;
  int windows = 0, c, rc = 0;
  bool json = false;
  while (rc == 0 && (c = cli_next(&p, &arg)) >= 0) {
    switch (c) {
    case 'm': ro.model = arg; break;
    case 'f': file = arg; break;
    case OPT_CTX: rc = cli_parse_int(&p, "--ctx", arg, 2, 1 << 24, &ro.n_ctx); break;
    case OPT_WINDOWS: rc = cli_parse_int(&p, "--windows", arg, 1, 1 << 30, &windows); break;
    case 't': rc = cli_parse_int(&p, "-t", arg, 0, 4096, &ro.n_threads); break;
    case OPT_DEVICE:
      rc = cli_parse_device(&p, "--device", arg);
      ro.device = arg;
      break;
    case OPT_JSON: json = true; break;
    case 'q': ro.quiet = true; break;
    }
  }
  if (rc) return rc;
  if (c == CLI_HELP) return CLI_EXIT_OK;
  if (c == CLI_BAD) return CLI_EXIT_USAGE;
  if (!file) return cli_usage(&p, "-f FILE is required");
  if ((rc = cli_run_opts_env(&p, &ro))) return rc;
  if (ro.n_ctx == 1) return cli_usage(&p, "KILN_CTX: a window needs at least 2 tokens");

  char *dir = NULL, *text = NULL;
  size_t len = 0, n_ids = 0;
  int32_t *ids = NULL;
  kiln_tokenizer *tok = NULL;
  kiln_model *model = NULL;
  kiln_engine *eng = NULL;
  double load_ms = 0, t0, eval_ms;
  kiln_ppl res = {0};
  int st, ctx;
  int64_t n_windows;

  if ((rc = cli_model_dir(ro.model, &dir)) || (rc = cli_load_tokenizer(dir, &tok))) goto out;
  if ((st = cli_read_file(file, &text, &len)) < 0 || (st = kiln_tokenizer_encode(tok, text, len, &ids, &n_ids)) < 0) {
    rc = cli_fail_in(file, st);
    goto out;
  }
  if (n_ids < 2) {
    rc = cli_errorf("%s: %zu token%s: perplexity needs at least 2", strcmp(file, "-") ? file : "<stdin>", n_ids,
                    n_ids == 1 ? "" : "s");
    goto out;
  }
  if ((rc = cli_load_model(dir, ro.quiet, &model, &load_ms))) goto out;
  ctx = ro.n_ctx > 0 ? ro.n_ctx : DEFAULT_WINDOW;
  if (ctx > model->cfg.max_position_embeddings) {
    if (ro.n_ctx > 0) {
      rc = cli_errorf("%s/config.json: --ctx %d is past the model's max_position_embeddings (%d)", dir, ctx,
                      model->cfg.max_position_embeddings);
      goto out;
    }
    ctx = model->cfg.max_position_embeddings;
  }
  if ((rc = cli_engine_create(model, &ro, ctx, &eng))) goto out;
  n_windows = n_ids >= (size_t)ctx ? (int64_t)(n_ids / (size_t)ctx) : 1;
  if (windows > 0 && windows < n_windows) n_windows = windows;

  t0 = cli_now_ms();
  if ((st = kiln_eval_perplexity(eng, tok, ids, n_ids, ctx, windows, &res)) < 0) {
    rc = cli_fail(st);
    goto out;
  }
  eval_ms = cli_now_ms() - t0;
  if (!ro.quiet)
    fprintf(stderr, "kiln: %s, load %.0f ms | %lld windows of %d tokens in %.0f ms (%.1f tok/s)\n",
            kiln_engine_device(eng), load_ms, (long long)n_windows, n_ids < (size_t)ctx ? (int)n_ids : ctx, eval_ms,
            eval_ms > 0 ? (double)(res.tokens + n_windows) * 1000.0 / eval_ms : 0.0);
  if (json) {
    rc = cli_json_print(json_pack("{s:I, s:f, s:f, s:f}", "tokens", (json_int_t)res.tokens, "nll", res.nll, "ppl",
                                  res.ppl, "bpb", res.bpb));
  } else {
    printf("perplexity %.4f | nll %.6f nats/token | %.6f bits/byte | %lld tokens predicted, %lld bytes\n", res.ppl,
           res.nll, res.bpb, (long long)res.tokens, (long long)res.bytes);
  }
out:
  if (eng) kiln_engine_free(eng);
  kiln_model_free(model);
  free(ids);
  free(text);
  if (tok) kiln_tokenizer_free(tok);
  free(dir);
  return rc;
}
