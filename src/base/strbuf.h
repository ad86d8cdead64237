/*
 * base/strbuf.h (internal): a growable byte buffer, the one the chat templates, the server's metrics and event
 * streams and the CLI append text to.
 *
 * The contents stay NUL-terminated once anything was appended (p is NULL until then), so a buffer of text can be
 * handed on as a C string. An allocation failure is sticky: `failed` is set, later appends do nothing, and the
 * owner checks `failed` once at the end instead of after every append.
 */
#ifndef KILN_BASE_STRBUF_H
#define KILN_BASE_STRBUF_H

#include <stdbool.h>
#include <stddef.h>

typedef struct kiln_strbuf {
  char *p;      /* n bytes, then a NUL; NULL while nothing was appended */
  size_t n;     /* bytes held, not counting the NUL */
  size_t cap;   /* bytes allocated at p */
  bool failed;  /* an allocation failed (or a size overflowed); sticky */
} kiln_strbuf;

/* Appends s[0..n). Returns false when the buffer has failed (now or before). n == 0 appends nothing. */
bool kiln_strbuf_put(kiln_strbuf *b, const void *s, size_t n);

/* Appends the C string s. */
bool kiln_strbuf_puts(kiln_strbuf *b, const char *s);

/* Appends printf-formatted text. */
bool kiln_strbuf_printf(kiln_strbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Makes room for `extra` more bytes (and the NUL) without appending; false when that fails. */
bool kiln_strbuf_reserve(kiln_strbuf *b, size_t extra);

/* Frees the bytes and empties the buffer (failed cleared); accepts a zeroed buffer. */
void kiln_strbuf_free(kiln_strbuf *b);

#endif /* KILN_BASE_STRBUF_H */
