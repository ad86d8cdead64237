/*
 * model/chat_template_util.c: the Python behaviour the chat templates depend on, reproduced exactly: str.strip()
 * on Unicode whitespace, str() of scalars, truthiness, and json.dumps as Hugging Face's tojson filter calls it
 * (ensure_ascii=False, insertion order, ", " and ": " separators, or "," and ": " with an indent; floats in
 * Python's shortest round-trip repr).
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/chat_template_impl.h"

/* Python's str.isspace() code points: bidirectional class WS, B or S, or category Zs. */
static bool py_isspace(uint32_t c) {
  if (c == 0x20 || (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x1f)) return true;
  if (c < 0x85) return false;
  return c == 0x85 || c == 0xa0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 ||
         c == 0x202f || c == 0x205f || c == 0x3000;
}

/* Decodes the code point starting at s[i] (input is valid UTF-8: jansson checks it). */
static uint32_t utf8_at(const unsigned char *s, size_t n, size_t i, size_t *len) {
  unsigned char c = s[i];
  int k = c < 0x80 ? 1 : c < 0xe0 ? 2 : c < 0xf0 ? 3 : 4;
  if (i + (size_t)k > n) k = 1;
  uint32_t cp = k == 1 ? c : k == 2 ? (c & 0x1fu) : k == 3 ? (c & 0x0fu) : (c & 0x07u);
  for (int j = 1; j < k; j++) cp = (cp << 6) | (s[i + (size_t)j] & 0x3fu);
  *len = (size_t)k;
  return cp;
}

void chat__strip(const char *s, size_t n, const char *chars, bool left, bool right, size_t *off, size_t *len) {
  const unsigned char *u = (const unsigned char *)s;
  size_t a = 0, z = n;
  if (chars) {
    while (left && a < z && strchr(chars, u[a]) && u[a]) a++;
    while (right && z > a && strchr(chars, u[z - 1]) && u[z - 1]) z--;
  } else {
    while (left && a < z) {
      size_t k;
      uint32_t c = utf8_at(u, z, a, &k);
      if (!py_isspace(c)) break;
      a += k;
    }
    while (right && z > a) {
      size_t st = z - 1; /* back up to the lead byte of the last code point */
      while (st > a && (u[st] & 0xc0) == 0x80) st--;
      size_t k;
      uint32_t c = utf8_at(u, z, st, &k);
      if (!py_isspace(c)) break;
      z = st;
    }
  }
  *off = a;
  *len = z - a;
}

bool chat__truthy(const json_t *v) {
  if (!v) return false;
  switch (json_typeof(v)) {
  case JSON_NULL: return false;
  case JSON_TRUE: return true;
  case JSON_FALSE: return false;
  case JSON_INTEGER: return json_integer_value(v) != 0;
  case JSON_REAL: return json_real_value(v) != 0.0;
  case JSON_STRING: return json_string_length(v) != 0;
  case JSON_ARRAY: return json_array_size(v) != 0;
  case JSON_OBJECT: return json_object_size(v) != 0;
  }
  return false;
}

/* Python's repr(float): the shortest digits that read back to the same double, in fixed notation when the decimal
 * point falls within -4 < decpt <= 16, else in scientific notation with a signed exponent of at least two digits. */
static void py_float_repr(double x, char *out, size_t cap) {
  if (x == 0.0) {
    snprintf(out, cap, "%s", signbit(x) ? "-0.0" : "0.0");
    return;
  }
  char tmp[64];
  for (int p = 1; p <= 17; p++) {
    snprintf(tmp, sizeof tmp, "%.*e", p - 1, x);
    if (strtod(tmp, NULL) == x) break;
  }
  const char *q = tmp;
  bool neg = false;
  if (*q == '-') {
    neg = true;
    q++;
  }
  char dig[32];
  int nd = 0;
  for (; *q && *q != 'e'; q++)
    if (*q != '.' && nd < 31) dig[nd++] = *q;
  while (nd > 1 && dig[nd - 1] == '0') nd--;
  dig[nd] = '\0';
  int e10 = (*q == 'e') ? atoi(q + 1) : 0;
  int decpt = e10 + 1;
  char *w = out;
  size_t left = cap;
#define EMIT(...)                                                                                                     \
  do {                                                                                                                \
    int k_ = snprintf(w, left, __VA_ARGS__);                                                                          \
    if (k_ < 0 || (size_t)k_ >= left) return;                                                                         \
    w += k_;                                                                                                          \
    left -= (size_t)k_;                                                                                               \
  } while (0)
  if (neg) EMIT("-");
  if (decpt > -4 && decpt <= 16) {
    if (decpt <= 0) {
      EMIT("0.");
      for (int i = 0; i < -decpt; i++) EMIT("0");
      EMIT("%s", dig);
    } else if (decpt >= nd) {
      EMIT("%s", dig);
      for (int i = nd; i < decpt; i++) EMIT("0");
      EMIT(".0");
    } else {
      EMIT("%.*s.%s", decpt, dig, dig + decpt);
    }
  } else {
    EMIT("%c", dig[0]);
    if (nd > 1) EMIT(".%s", dig + 1);
    EMIT("e%c%02d", decpt - 1 < 0 ? '-' : '+', abs(decpt - 1));
  }
#undef EMIT
}

static void dump_string(kiln_strbuf *b, const char *s, size_t n) {
  kiln_strbuf_put(b, "\"", 1);
  size_t run = 0;
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    const char *esc = NULL;
    char u[8];
    switch (c) {
    case '"': esc = "\\\""; break;
    case '\\': esc = "\\\\"; break;
    case '\n': esc = "\\n"; break;
    case '\r': esc = "\\r"; break;
    case '\t': esc = "\\t"; break;
    case '\b': esc = "\\b"; break;
    case '\f': esc = "\\f"; break;
    default:
      if (c < 0x20) {
        snprintf(u, sizeof u, "\\u%04x", c);
        esc = u;
      }
    }
    if (esc) {
      kiln_strbuf_put(b, s + run, i - run);
      kiln_strbuf_puts(b, esc);
      run = i + 1;
    }
  }
  kiln_strbuf_put(b, s + run, n - run);
  kiln_strbuf_put(b, "\"", 1);
}

static void dump_newline(kiln_strbuf *b, int indent, int level) {
  kiln_strbuf_put(b, "\n", 1);
  for (int i = 0; i < indent * level; i++) kiln_strbuf_put(b, " ", 1);
}

static void dumps_at(kiln_strbuf *b, const json_t *v, int indent, int level) {
  char num[64];
  switch (json_typeof(v)) {
  case JSON_NULL: kiln_strbuf_puts(b, "null"); break;
  case JSON_TRUE: kiln_strbuf_puts(b, "true"); break;
  case JSON_FALSE: kiln_strbuf_puts(b, "false"); break;
  case JSON_INTEGER:
    snprintf(num, sizeof num, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
    kiln_strbuf_puts(b, num);
    break;
  case JSON_REAL:
    py_float_repr(json_real_value(v), num, sizeof num);
    kiln_strbuf_puts(b, num);
    break;
  case JSON_STRING: dump_string(b, json_string_value(v), json_string_length(v)); break;
  case JSON_ARRAY: {
    size_t n = json_array_size(v);
    if (n == 0) {
      kiln_strbuf_puts(b, "[]");
      break;
    }
    kiln_strbuf_put(b, "[", 1);
    for (size_t i = 0; i < n; i++) {
      if (i) kiln_strbuf_puts(b, indent >= 0 ? "," : ", ");
      if (indent >= 0) dump_newline(b, indent, level + 1);
      dumps_at(b, json_array_get(v, i), indent, level + 1);
    }
    if (indent >= 0) dump_newline(b, indent, level);
    kiln_strbuf_put(b, "]", 1);
    break;
  }
  case JSON_OBJECT: {
    if (json_object_size(v) == 0) {
      kiln_strbuf_puts(b, "{}");
      break;
    }
    kiln_strbuf_put(b, "{", 1);
    const char *key;
    size_t klen;
    json_t *val;
    bool first = true;
    /* jansson keeps insertion order, as Python's dict does. */
    json_object_keylen_foreach((json_t *)v, key, klen, val) {
      if (!first) kiln_strbuf_puts(b, indent >= 0 ? "," : ", ");
      first = false;
      if (indent >= 0) dump_newline(b, indent, level + 1);
      dump_string(b, key, klen);
      kiln_strbuf_puts(b, ": ");
      dumps_at(b, val, indent, level + 1);
    }
    if (indent >= 0) dump_newline(b, indent, level);
    kiln_strbuf_put(b, "}", 1);
    break;
  }
  }
}

void chat__dumps(kiln_strbuf *b, const json_t *v, int indent) { dumps_at(b, v, indent, 0); }

bool chat__put_str(kiln_strbuf *b, const json_t *v) {
  char num[64];
  if (!v) return true;
  switch (json_typeof(v)) {
  case JSON_NULL: kiln_strbuf_puts(b, "None"); return true;
  case JSON_TRUE: kiln_strbuf_puts(b, "True"); return true;
  case JSON_FALSE: kiln_strbuf_puts(b, "False"); return true;
  case JSON_INTEGER:
    snprintf(num, sizeof num, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
    kiln_strbuf_puts(b, num);
    return true;
  case JSON_REAL:
    py_float_repr(json_real_value(v), num, sizeof num);
    kiln_strbuf_puts(b, num);
    return true;
  case JSON_STRING: kiln_strbuf_put(b, json_string_value(v), json_string_length(v)); return true;
  default: return false;
  }
}

const char *chat__str(const json_t *obj, const char *key) {
  const json_t *v = json_is_object(obj) ? json_object_get(obj, key) : NULL;
  return json_is_string(v) ? json_string_value(v) : NULL;
}
