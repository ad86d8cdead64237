/* kiln detokenize: the text of token ids (ByteLevel decoding; bytes that do not form UTF-8 become U+FFFD). */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "cli_common.h"

static const cli_opt opts_[] = {
    {'m', "model", "PATH", "model directory, or a tokenizer.json file (default: $KILN_MODEL, the default model)"},
    {'i', "ids", "LIST", "ids separated by commas or spaces, brackets allowed ('-': read them from stdin)"},
    {0},
};

/* Parses "1,2,3", "1 2 3" or "[1, 2, 3]" (what `kiln tokenize` prints) into a malloc'd array. */
static int parse_ids_(const cli_parser *p, const char *s, int32_t **out, size_t *n_out) {
  size_t cap = 0, n = 0;
  int32_t *ids = NULL;
  const char *q = s;
  for (;;) {
    while (*q == ',' || *q == '[' || *q == ']' || *q == ' ' || *q == '\t' || *q == '\n' || *q == '\r') q++;
    if (!*q) break;
    char *end;
    errno = 0;
    long long v = strtoll(q, &end, 10);
    if (end == q || (*end && !strchr(", \t\r\n[]", *end))) {
      const char *stop = q + strcspn(q, ", \t\r\n[]");
      free(ids);
      return cli_usage(p, "--ids: '%.*s' is not a token id", (int)(stop - q > 40 ? 40 : stop - q), q);
    }
    if (errno == ERANGE || v < 0 || v > INT32_MAX) {
      free(ids);
      return cli_usage(p, "--ids: %.*s is out of range [0, %d]", (int)(end - q > 40 ? 40 : end - q), q, INT32_MAX);
    }
    if (n == cap) {
      size_t nc = cap ? cap * 2 : 64;
      int32_t *g = realloc(ids, nc * sizeof *ids);
      if (!g) {
        free(ids);
        return cli_errorf("out of memory");
      }
      ids = g;
      cap = nc;
    }
    ids[n++] = (int32_t)v;
    q = end;
  }
  *out = ids;
  *n_out = n;
  return 0;
}

int cmd_detokenize(int argc, char **argv) {
  cli_parser p;
  cli_parser_init(&p, "detokenize", "[-m PATH] --ids LIST",
                  "Prints the text the ids stand for on stdout, byte for byte (a newline is added only on a "
                  "terminal), so `kiln tokenize ... | kiln detokenize --ids -` gives the text back.",
                  opts_, argc, argv);
  const char *model = NULL, *list = NULL, *arg;
  int c;
  while ((c = cli_next(&p, &arg)) >= 0) {
    switch (c) {
    case 'm': model = arg; break;
    case 'i': list = arg; break;
    }
  }
  if (c == CLI_HELP) return CLI_EXIT_OK;
  if (c == CLI_BAD) return CLI_EXIT_USAGE;
  if (!list) return cli_usage(&p, "--ids is required");

  int rc = CLI_EXIT_OK, st;
  char *path = NULL, *buf = NULL, *text = NULL;
  int32_t *ids = NULL;
  size_t n_ids = 0, len = 0, text_len = 0;
  kiln_tokenizer *tok = NULL;
  if (!strcmp(list, "-")) {
    if ((st = cli_read_file("-", &buf, &len)) < 0) {
      rc = cli_fail(st);
      goto out;
    }
    list = buf;
  }
  if ((rc = parse_ids_(&p, list, &ids, &n_ids))) goto out;
  if ((rc = cli_tokenizer_path(model, &path))) goto out;
  if ((st = kiln_tokenizer_load(&tok, path)) < 0) {
    rc = cli_fail(st);
    goto out;
  }
  /* Decoding skips ids that have no token, as Hugging Face's decode() does; asked for by hand, they are an error. */
  for (size_t i = 0; i < n_ids; i++) {
    const char *bytes;
    size_t blen;
    if (kiln_tokenizer_token_bytes(tok, ids[i], &bytes, &blen) < 0) {
      rc = cli_errorf("%s: no token has id %d (ids run from 0 to %d)", path, ids[i], kiln_tokenizer_n_vocab(tok) - 1);
      goto out;
    }
  }
  if ((st = kiln_tokenizer_decode(tok, ids, n_ids, &text, &text_len)) < 0) {
    rc = cli_fail(st);
    goto out;
  }
  if (fwrite(text, 1, text_len, stdout) != text_len || (isatty(STDOUT_FILENO) && fputc('\n', stdout) == EOF))
    rc = cli_errorf("<stdout>: write failed: %s", strerror(errno));
out:
  free(text);
  if (tok) kiln_tokenizer_free(tok);
  free(ids);
  free(buf);
  free(path);
  return rc;
}
