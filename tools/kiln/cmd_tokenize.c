/* kiln tokenize: the token ids of a text as a JSON array, as HF encode(text, add_special_tokens=False) gives them.
 * Needs only the tokenizer.json (-m names it, or the model directory that holds it). */
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cli_common.h"

enum { OPT_TEXT = CLI_OPT_LONG };

static const cli_opt opts_[] = {
    {'m', "model", "PATH", "model directory, or a tokenizer.json file (default: $KILN_MODEL, the default model)"},
    {OPT_TEXT, "text", "TEXT", "the text to encode"},
    {'f', "file", "FILE", "read the text from FILE ('-': standard input)"},
    {0},
};

int cmd_tokenize(int argc, char **argv) {
  cli_parser p;
  cli_parser_init(&p, "tokenize", "[-m PATH] (--text TEXT | -f FILE)",
                  "Prints the ids of the text as one JSON array on stdout. Special tokens written in the text "
                  "(<|im_start|>, ...) are matched as such.",
                  opts_, argc, argv);
  const char *model = NULL, *text = NULL, *file = NULL, *arg;
  int c;
  while ((c = cli_next(&p, &arg)) >= 0) {
    switch (c) {
    case 'm': model = arg; break;
    case OPT_TEXT: text = arg; break;
    case 'f': file = arg; break;
    }
  }
  if (c == CLI_HELP) return CLI_EXIT_OK;
  if (c == CLI_BAD) return CLI_EXIT_USAGE;
  if (!text == !file) return cli_usage(&p, "give the text with exactly one of --text or -f");

  int rc = CLI_EXIT_OK;
  char *path = NULL, *buf = NULL;
  size_t len = 0, n_ids = 0;
  int32_t *ids = NULL;
  kiln_tokenizer *tok = NULL;
  json_t *arr = NULL;
  if ((rc = cli_tokenizer_path(model, &path))) goto out;
  int st = file ? cli_read_file(file, &buf, &len) : 0;
  if (st < 0 || (st = kiln_tokenizer_load(&tok, path)) < 0) {
    rc = cli_fail(st);
    goto out;
  }
  const char *src = file ? buf : text;
  size_t src_len = file ? len : strlen(text);
  if ((st = kiln_tokenizer_encode(tok, src, src_len, &ids, &n_ids)) < 0) {
    rc = file ? cli_fail_in(file, st) : cli_fail(st);
    goto out;
  }
  if (!(arr = json_array())) {
    rc = cli_errorf("out of memory");
    goto out;
  }
  for (size_t i = 0; i < n_ids; i++) {
    if (json_array_append_new(arr, json_integer(ids[i])) != 0) {
      rc = cli_errorf("out of memory");
      goto out;
    }
  }
  rc = cli_json_print(arr);
  arr = NULL; /* taken by cli_json_print */
out:
  json_decref(arr);
  free(ids);
  if (tok) kiln_tokenizer_free(tok);
  free(buf);
  free(path);
  return rc;
}
