/* UTF-8 repair (see utf8.h). */
#include "base/utf8.h"

#include <string.h>

/* Length of a valid UTF-8 sequence starting at s[0..n), 0 when invalid, or -k when s is a valid prefix of a
 * sequence that needs k more bytes. Rejects overlongs, surrogates and code points past U+10FFFF (RFC 3629). */
static int seq_(const unsigned char *s, size_t n) {
  unsigned char c = s[0];
  int need;
  unsigned char lo = 0x80, hi = 0xbf; /* allowed range of the second byte */
  if (c < 0x80) return 1;
  if (c >= 0xc2 && c <= 0xdf) need = 1;
  else if (c >= 0xe0 && c <= 0xef) {
    need = 2;
    if (c == 0xe0) lo = 0xa0;
    if (c == 0xed) hi = 0x9f;
  } else if (c >= 0xf0 && c <= 0xf4) {
    need = 3;
    if (c == 0xf0) lo = 0x90;
    if (c == 0xf4) hi = 0x8f;
  } else return 0;
  for (int i = 1; i <= need; i++) {
    if ((size_t)i >= n) return -(need - i + 1);
    unsigned char b = s[i];
    if (i == 1 ? (b < lo || b > hi) : (b < 0x80 || b > 0xbf)) return 0;
  }
  return need + 1;
}

size_t kiln_utf8_incomplete_tail(const char *str, size_t n) {
  const unsigned char *s = (const unsigned char *)str;
  /* a sequence is at most 4 bytes: an incomplete one starts within the last 3 */
  for (size_t k = 1; k <= 3 && k <= n; k++) {
    size_t i = n - k;
    if ((s[i] & 0xc0) == 0x80) continue; /* continuation byte: look further back */
    return seq_(s + i, k) < 0 ? k : 0;
  }
  return 0;
}

size_t kiln_utf8_sanitize(char *out, size_t out_cap, const char *str, size_t n) {
  const unsigned char *s = (const unsigned char *)str;
  size_t o = 0, i = 0;
  while (i < n) {
    if (s[i] < 0x80) { /* ASCII, most of any text: no sequence to check */
      if (o == out_cap) break;
      out[o++] = (char)s[i++];
      continue;
    }
    int len = seq_(s + i, n - i);
    if (len > 0) {
      if (o + (size_t)len > out_cap) break;
      memcpy(out + o, s + i, (size_t)len);
      o += (size_t)len;
      i += (size_t)len;
      continue;
    }
    /* invalid: replace the maximal subpart (the lead byte and the continuation bytes it validly took) */
    size_t skip = 1;
    while (i + skip < n && skip < 4 && seq_(s + i, skip + 1) < 0 && (s[i + skip] & 0xc0) == 0x80) skip++;
    if (len < 0) skip = n - i; /* a truncated sequence at the very end */
    if (o + 3 > out_cap) break;
    memcpy(out + o, "\xef\xbf\xbd", 3);
    o += 3;
    i += skip;
  }
  return o;
}
