/* A growable byte buffer with a sticky failure (see strbuf.h). */
#include "base/strbuf.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

bool kiln_strbuf_reserve(kiln_strbuf *b, size_t extra) {
  if (b->failed) return false;
  if (extra > SIZE_MAX - b->n - 1) { /* n + extra + 1 would wrap */
    b->failed = true;
    return false;
  }
  size_t need = b->n + extra + 1;
  if (need <= b->cap) return true;
  size_t cap = b->cap ? b->cap : 256;
  while (cap < need) cap = cap > SIZE_MAX / 2 ? need : cap * 2;
  char *p = realloc(b->p, cap);
  if (!p) {
    b->failed = true;
    return false;
  }
  if (!b->p) p[0] = '\0';
  b->p = p;
  b->cap = cap;
  return true;
}

bool kiln_strbuf_put(kiln_strbuf *b, const void *s, size_t n) {
  if (b->failed) return false;
  if (n == 0) return true;
  if (!kiln_strbuf_reserve(b, n)) return false;
  memcpy(b->p + b->n, s, n);
  b->n += n;
  b->p[b->n] = '\0';
  return true;
}

bool kiln_strbuf_puts(kiln_strbuf *b, const char *s) { return kiln_strbuf_put(b, s, strlen(s)); }

bool kiln_strbuf_printf(kiln_strbuf *b, const char *fmt, ...) {
  if (b->failed) return false;
  va_list ap;
  va_start(ap, fmt);
  int k = vsnprintf(b->p ? b->p + b->n : NULL, b->p ? b->cap - b->n : 0, fmt, ap);
  va_end(ap);
  if (k < 0) {
    b->failed = true;
    return false;
  }
  if (b->p && (size_t)k < b->cap - b->n) { /* it fitted (with its NUL) */
    b->n += (size_t)k;
    return true;
  }
  if (!kiln_strbuf_reserve(b, (size_t)k)) return false;
  va_start(ap, fmt);
  vsnprintf(b->p + b->n, b->cap - b->n, fmt, ap);
  va_end(ap);
  b->n += (size_t)k;
  return true;
}

void kiln_strbuf_free(kiln_strbuf *b) {
  free(b->p);
  *b = (kiln_strbuf){0};
}
