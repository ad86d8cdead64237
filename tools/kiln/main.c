/*
 * kiln: the command-line tool. main() dispatches `kiln COMMAND [options]` to cmd_COMMAND (cli.h), each in its own
 * cmd_<name>.c; a command whose file is not part of this build resolves to NULL (weak declaration) and is reported
 * as missing rather than failing the link. main() owns the process exit status: 0 ok, 1 runtime error, 2 usage.
 */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "cli_common.h"

#ifndef KILN_VERSION
#error "KILN_VERSION must be defined by the build (tools/kiln/CMakeLists.txt)"
#endif

typedef struct command_ {
  const char *name;
  int (*fn)(int argc, char **argv);
  const char *help;
} command_;

static const command_ commands_[] = {
#define KILN__CLI_ENTRY(name, help) {#name, cmd_##name, help},
    KILN_CLI_COMMANDS(KILN__CLI_ENTRY)
#undef KILN__CLI_ENTRY
};
#define N_COMMANDS (sizeof commands_ / sizeof commands_[0])

static const char *backends_(void) {
#ifdef KILN_HAVE_CUDA
  return "cpu, cuda";
#else
  return "cpu";
#endif
}

static void print_help_(FILE *f) {
  fprintf(f, "kiln %s: LLM inference for Hugging Face Qwen3 and Llama checkpoints\n\n", KILN_VERSION);
  fprintf(f, "usage: kiln COMMAND [options]      (kiln COMMAND --help for the command's options)\n"
             "       kiln --version | --help\n\ncommands:\n");
  for (size_t i = 0; i < N_COMMANDS; i++)
    fprintf(f, "  %-12s %s%s\n", commands_[i].name, commands_[i].help, commands_[i].fn ? "" : " (not in this build)");
  fprintf(f, "\nenvironment:\n"
             "  KILN_MODEL    model directory when -m is not given (else the embedded default model)\n"
             "  KILN_DEVICE   device when --device is not given: cpu, cuda or cuda:N\n"
             "  KILN_THREADS  CPU threads when -t is not given (0: all cores)\n"
             "  KILN_CTX      context length (tokens) when --ctx is not given\n"
             "\nexit status: 0 success, 1 runtime error (one line on stderr), 2 usage error\n"
             "examples:\n"
             "  kiln run -m Qwen3-0.6B -p 'The capital of France is' -n 32\n"
             "  kiln tokenize -m Qwen3-0.6B --text 'Hello world'\n"
             "  kiln perplexity -m Qwen3-0.6B -f wiki.txt --ctx 512 --json\n");
}

static const command_ *find_command_(const char *name) {
  for (size_t i = 0; i < N_COMMANDS; i++)
    if (!strcmp(commands_[i].name, name)) return &commands_[i];
  return NULL;
}

static int dispatch_(const command_ *c, int argc, char **argv) {
  if (!c->fn) return cli_errorf("'%s' is not part of this build", c->name);
  int rc = c->fn(argc, argv);
  /* A command must not leave buffered output behind unreported (a full disk, a closed pipe). */
  if (fflush(stdout) != 0 && rc == CLI_EXIT_OK) rc = cli_errorf("<stdout>: write failed");
  return rc;
}

int main(int argc, char **argv) {
  if (argc < 2) return cli_usage(NULL, "no command given (see 'kiln --help')");
  const char *a = argv[1];
  if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
    print_help_(stdout);
    return CLI_EXIT_OK;
  }
  if (!strcmp(a, "--version") || !strcmp(a, "-V") || !strcmp(a, "version")) {
    printf("kiln %s (backends: %s)\n", KILN_VERSION, backends_());
    return CLI_EXIT_OK;
  }
  if (!strcmp(a, "help")) {
    if (argc < 3) {
      print_help_(stdout);
      return CLI_EXIT_OK;
    }
    const command_ *c = find_command_(argv[2]);
    if (!c) return cli_usage(NULL, "unknown command '%s' (see 'kiln --help')", argv[2]);
    char help[] = "--help";
    char *sub[] = {argv[2], help, NULL};
    return dispatch_(c, 2, sub);
  }
  if (a[0] == '-') return cli_usage(NULL, "unknown option '%s' before the command (see 'kiln --help')", a);
  const command_ *c = find_command_(a);
  if (!c) return cli_usage(NULL, "unknown command '%s' (see 'kiln --help')", a);
  return dispatch_(c, argc - 1, argv + 1);
}
