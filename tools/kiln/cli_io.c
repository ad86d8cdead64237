/* Input and output for the kiln subcommands: whole files, growing buffers, JSON lines, the clock (see
 * cli_common.h). */
#include "cli_common.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int cli_buf_append(cli_buf *b, const void *data, size_t n) {
  if (n > SIZE_MAX - b->len - 1) return kiln_error(KILN_ENOMEM, "buffer: size overflow");
  if (b->len + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + n + 1) cap = cap > SIZE_MAX / 2 ? b->len + n + 1 : cap * 2;
    char *d = realloc(b->data, cap);
    if (!d) return kiln_error(KILN_ENOMEM, "out of memory (%zu bytes)", cap);
    b->data = d;
    b->cap = cap;
  }
  if (n) memcpy(b->data + b->len, data, n);
  b->len += n;
  b->data[b->len] = '\0';
  return 0;
}

void cli_buf_free(cli_buf *b) {
  free(b->data);
  *b = (cli_buf){0};
}

int cli_read_file(const char *path, char **buf, size_t *len) {
  *buf = NULL;
  *len = 0;
  bool is_stdin = !strcmp(path, "-");
  const char *name = is_stdin ? "<stdin>" : path;
  FILE *f = is_stdin ? stdin : fopen(path, "rb");
  if (!f) return kiln_error(KILN_EIO, "%s: %s", name, strerror(errno));
  cli_buf b = {0};
  char chunk[65536];
  int rc = cli_buf_append(&b, "", 0); /* an empty file still gives a NUL-terminated buffer */
  size_t n;
  while (rc == 0 && (n = fread(chunk, 1, sizeof chunk, f)) > 0) rc = cli_buf_append(&b, chunk, n);
  if (rc == 0 && ferror(f)) rc = kiln_error(KILN_EIO, "%s: %s", name, strerror(errno ? errno : EIO));
  if (!is_stdin) fclose(f);
  if (rc < 0) {
    cli_buf_free(&b);
    return rc;
  }
  *buf = b.data;
  *len = b.len;
  return 0;
}

/* Length of the valid UTF-8 sequence at s[0..n), or 0 when it is invalid or cut short; *bad is then the length of
 * the maximal invalid subpart to replace by one U+FFFD (Unicode's recommended practice, as Python decodes). */
static size_t utf8_seq_(const unsigned char *s, size_t n, size_t *bad) {
  unsigned char c = s[0];
  size_t need;
  unsigned char lo = 0x80, hi = 0xBF; /* allowed range of the second byte */
  if (c < 0x80) return 1;
  if (c >= 0xC2 && c <= 0xDF) need = 1;
  else if (c >= 0xE0 && c <= 0xEF) {
    need = 2;
    if (c == 0xE0) lo = 0xA0;
    if (c == 0xED) hi = 0x9F; /* no surrogates */
  } else if (c >= 0xF0 && c <= 0xF4) {
    need = 3;
    if (c == 0xF0) lo = 0x90;
    if (c == 0xF4) hi = 0x8F; /* nothing past U+10FFFF */
  } else {
    *bad = 1;
    return 0;
  }
  for (size_t k = 1; k <= need; k++) {
    bool ok = k < n && (k == 1 ? s[k] >= lo && s[k] <= hi : s[k] >= 0x80 && s[k] <= 0xBF);
    if (!ok) {
      *bad = k;
      return 0;
    }
  }
  return need + 1;
}

json_t *cli_json_text(const char *text, size_t len) {
  cli_buf b = {0};
  const unsigned char *s = (const unsigned char *)text;
  size_t i = 0;
  int rc = cli_buf_append(&b, "", 0);
  while (rc == 0 && i < len) {
    size_t bad = 0, n = utf8_seq_(s + i, len - i, &bad);
    if (n) {
      rc = cli_buf_append(&b, s + i, n);
      i += n;
    } else {
      rc = cli_buf_append(&b, "\xEF\xBF\xBD", 3);
      i += bad;
    }
  }
  json_t *v = rc == 0 ? json_stringn(b.data, b.len) : NULL;
  cli_buf_free(&b);
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
