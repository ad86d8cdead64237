/*
 * cli.h: the kiln command-line tool's subcommands. Each lives in its own cmd_<name>.c and returns the process
 * exit status (0 success, 1 runtime error, 2 usage error). A subcommand whose file is not part of this build is
 * reported as such by main.c (the declarations are weak).
 */
#ifndef KILN_CLI_H
#define KILN_CLI_H

#define KILN_CLI_COMMANDS(X)                                                      \
  X(run, "generate text from a prompt")                                           \
  X(tokenize, "print the token ids of a text")                                    \
  X(detokenize, "print the text of token ids")                                    \
  X(perplexity, "perplexity and bits per byte of a text file")                    \
  X(bench, "prefill and decode speed against the memory-bandwidth floor")         \
  X(serve, "OpenAI-compatible HTTP server")

#define KILN__CLI_DECL(name, help) int cmd_##name(int argc, char **argv) __attribute__((weak));
KILN_CLI_COMMANDS(KILN__CLI_DECL)
#undef KILN__CLI_DECL

#endif /* KILN_CLI_H */
