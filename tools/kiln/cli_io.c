/* Input and output for the kiln subcommands: whole files, growing buffers, JSON lines, the clock (see
 * cli_common.h). */
#include "cli_common.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/utf8.h"

int cli_buf_append(kiln_strbuf *b, const void *data, size_t n) {
  if (!kiln_strbuf_put(b, data, n))
    return kiln_error(KILN_ENOMEM, "out of memory (a buffer of %zu bytes growing by %zu)", b->n, n);
  return 0;
}

int cli_read_file(const char *path, char **buf, size_t *len) {
  *buf = NULL;
  *len = 0;
  bool is_stdin = !strcmp(path, "-");
  const char *name = is_stdin ? "<stdin>" : path;
  FILE *f = is_stdin ? stdin : fopen(path, "rb");
  if (!f) return kiln_error(KILN_EIO, "%s: %s", name, strerror(errno));
  kiln_strbuf b = {0};
  char chunk[65536];
  /* an empty file still gives a NUL-terminated buffer */
  int rc = kiln_strbuf_reserve(&b, 0) ? 0 : kiln_error(KILN_ENOMEM, "%s: out of memory", name);
  size_t n;
  while (rc == 0 && (n = fread(chunk, 1, sizeof chunk, f)) > 0) rc = cli_buf_append(&b, chunk, n);
  if (rc == 0 && ferror(f)) rc = kiln_error(KILN_EIO, "%s: %s", name, strerror(errno ? errno : EIO));
  if (!is_stdin) fclose(f);
  if (rc < 0) {
    kiln_strbuf_free(&b);
    return rc;
  }
  *buf = b.p;
  *len = b.n;
  return 0;
}

json_t *cli_json_text(const char *text, size_t len) {
  /* invalid UTF-8 becomes U+FFFD (3 bytes) per maximal ill-formed subpart, as Python decodes it */
  if (len > (SIZE_MAX - 1) / 3) return NULL;
  char *buf = malloc(3 * len + 1);
  if (!buf) return NULL;
  size_t n = kiln_utf8_sanitize(buf, 3 * len, text, len);
  json_t *v = json_stringn(buf, n);
  free(buf);
  return v;
}

int cli_json_print(json_t *v) {
  if (!v) return cli_errorf("out of memory building the JSON output");
  int rc = json_dumpf(v, stdout, JSON_COMPACT | JSON_ENCODE_ANY);
  json_decref(v);
  if (rc != 0 || fputc('\n', stdout) == EOF || fflush(stdout) != 0 || ferror(stdout))
    return cli_errorf("<stdout>: write failed: %s", strerror(errno ? errno : EIO));
  return CLI_EXIT_OK;
}

double cli_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}
