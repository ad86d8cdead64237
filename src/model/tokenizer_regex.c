/*
 * tokenizer_regex.c: the pre-tokeniser regexes. tokenizer.json patterns are written for Oniguruma (which HF
 * tokenizers uses); we run them with PCRE2 (UTF, UCP, JIT) after rewriting the constructs whose meaning differs
 * between the two engines:
 *
 *  - \s: Oniguruma's is the Unicode White_Space property, PCRE2's also takes U+180E. \w: Oniguruma's takes
 *    letters, marks, decimal digits, connector punctuation and the Latin-1 superscripts and fractions, PCRE2's
 *    (10.42) letters, numbers and '_'. \d: the decimal digits of Unicode 16. \h: Oniguruma's is a hex digit,
 *    PCRE2's horizontal space. Each becomes an explicit class (its negation [^...]); a negated escape inside a
 *    class, which a class cannot express, is left to PCRE2 (\S inside a class becomes \P{White_Space}).
 *  - (?i:...) around plain ASCII text (GPT-2's contractions 's|'t|...): Oniguruma folds only the ASCII letters
 *    here, PCRE2 would also take U+017F for s. The group becomes (?:...) with each letter spelled [xX].
 *  - \p{L} and \p{N}: HF's Oniguruma has Unicode 16 tables, PCRE2 10.42 (Debian 12) Unicode 14. The letters and
 *    numbers added since are spelled out beside the property (found by testing every code point in both engines;
 *    with a newer PCRE2 the ranges are simply redundant).
 *  - ^ and $ are line anchors in Oniguruma's Ruby syntax: PCRE2_MULTILINE, with LF as the newline.
 *
 * Matches are enumerated as Oniguruma's find_iter does: each search starts at the end of the previous match, and
 * an empty match right where the previous match ended is skipped by moving on one character.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kiln/status.h"
#include "model/tokenizer_impl.h"

/* Limits for hostile patterns: a catastrophic backtracking pattern fails the call instead of hanging it. */
#define TOK_MATCH_LIMIT 10000000u
#define TOK_DEPTH_LIMIT 100000u
#define TOK_JIT_STACK_MAX (8u << 20)

typedef struct sbuf {
  char *p;
  size_t n, cap;
} sbuf;

static int sb_put(sbuf *b, const char *s, size_t n) {
  if (n > SIZE_MAX - b->n - 1) return KILN_ENOMEM;
  int rc = tok_grow((void **)&b->p, &b->cap, b->n + n + 1, 1);
  if (rc) return rc;
  memcpy(b->p + b->n, s, n);
  b->n += n;
  b->p[b->n] = 0;
  return KILN_OK;
}

/* The end of a (?i: group starting at pat[i] (i at '(') when its body is plain ASCII text and alternation, else 0. */
static size_t simple_caseless_group(const char *pat, size_t len, size_t i) {
  if (len - i < 4 || memcmp(pat + i, "(?i:", 4) != 0) return 0;
  for (size_t j = i + 4; j < len; j++) {
    unsigned char c = (unsigned char)pat[j];
    if (c == ')') return j;
    if (c >= 0x80 || c == '\\' || c == '[' || c == ']' || c == '(' || c == '{' || c == '}') return 0;
  }
  return 0;
}

static const char g_extra_letters[] =
    "\\x{1C89}-\\x{1C8A}\\x{A7CB}-\\x{A7CD}\\x{A7DA}-\\x{A7DC}\\x{105C0}-\\x{105F3}\\x{10D4A}-\\x{10D65}"
    "\\x{10D6F}-\\x{10D85}\\x{10EC2}-\\x{10EC4}\\x{1123F}-\\x{11240}\\x{11380}-\\x{11389}\\x{1138B}\\x{1138E}"
    "\\x{11390}-\\x{113B5}\\x{113B7}\\x{113D1}\\x{113D3}\\x{11BC0}-\\x{11BE0}\\x{11F02}\\x{11F04}-\\x{11F10}"
    "\\x{11F12}-\\x{11F33}\\x{1342F}\\x{13441}-\\x{13446}\\x{13460}-\\x{143FA}\\x{16100}-\\x{1611D}"
    "\\x{16D40}-\\x{16D6C}\\x{18CFF}\\x{1B132}\\x{1B155}\\x{1DF25}-\\x{1DF2A}\\x{1E030}-\\x{1E06D}"
    "\\x{1E4D0}-\\x{1E4EB}\\x{1E5D0}-\\x{1E5ED}\\x{1E5F0}\\x{2B739}\\x{2EBF0}-\\x{2EE5D}\\x{31350}-\\x{323AF}";
static const char g_extra_numbers[] =
    "\\x{10D40}-\\x{10D49}\\x{116D0}-\\x{116E3}\\x{11BF0}-\\x{11BF9}\\x{11F50}-\\x{11F59}\\x{16130}-\\x{16139}"
    "\\x{16D70}-\\x{16D79}\\x{1CCF0}-\\x{1CCF9}\\x{1D2C0}-\\x{1D2D3}\\x{1E4F0}-\\x{1E4F9}\\x{1E5F1}-\\x{1E5FA}";

/* Oniguruma's \w outside a class also takes these Latin-1 superscripts and fractions; inside a class it does not. */
static const char g_word_latin1[] = "\\x{B2}-\\x{B3}\\x{B9}\\x{BC}-\\x{BE}";
static const char g_extra_word[] =
    "\\x{897}\\x{CF3}\\x{ECE}\\x{1C89}-\\x{1C8A}\\x{A7CB}-\\x{A7CD}"
    "\\x{A7DA}-\\x{A7DC}\\x{105C0}-\\x{105F3}\\x{10D40}-\\x{10D65}\\x{10D69}-\\x{10D6D}"
    "\\x{10D6F}-\\x{10D85}\\x{10EC2}-\\x{10EC4}\\x{10EFC}-\\x{10EFF}\\x{1123F}-\\x{11241}"
    "\\x{11380}-\\x{11389}\\x{1138B}\\x{1138E}\\x{11390}-\\x{113B5}\\x{113B7}-\\x{113C0}\\x{113C2}"
    "\\x{113C5}\\x{113C7}-\\x{113CA}\\x{113CC}-\\x{113D3}\\x{113E1}-\\x{113E2}\\x{116D0}-\\x{116E3}"
    "\\x{11BC0}-\\x{11BE0}\\x{11BF0}-\\x{11BF9}\\x{11F00}-\\x{11F10}\\x{11F12}-\\x{11F3A}"
    "\\x{11F3E}-\\x{11F42}\\x{11F50}-\\x{11F5A}\\x{1342F}\\x{13440}-\\x{13455}\\x{13460}-\\x{143FA}"
    "\\x{16100}-\\x{16139}\\x{16D40}-\\x{16D6C}\\x{16D70}-\\x{16D79}\\x{18CFF}\\x{1B132}\\x{1B155}"
    "\\x{1CCF0}-\\x{1CCF9}\\x{1DF25}-\\x{1DF2A}\\x{1E030}-\\x{1E06D}\\x{1E08F}\\x{1E4D0}-\\x{1E4F9}"
    "\\x{1E5D0}-\\x{1E5FA}\\x{2B739}\\x{2EBF0}-\\x{2EE5D}\\x{31350}-\\x{323AF}";
static const char g_extra_digits[] =
    "\\x{10D40}-\\x{10D49}\\x{116D0}-\\x{116E3}\\x{11BF0}-\\x{11BF9}\\x{11F50}-\\x{11F59}\\x{16130}-\\x{16139}"
    "\\x{16D70}-\\x{16D79}\\x{1CCF0}-\\x{1CCF9}\\x{1E4F0}-\\x{1E4F9}\\x{1E5F1}-\\x{1E5FA}";

/* The class body standing for a shorthand escape (\s \w \d \h, lower case), in three parts, or NULL. */
static const char *shorthand_body(char c, bool in_class, const char **extra, const char **extra2) {
  *extra = *extra2 = "";
  switch (c) {
  case 's': return "\\p{White_Space}";
  case 'w':
    *extra = g_extra_word;
    *extra2 = in_class ? "" : g_word_latin1;
    return "\\p{Alphabetic}\\p{M}\\p{Nd}\\p{Pc}";
  case 'd': *extra = g_extra_digits; return "\\p{Nd}";
  case 'h': return "0-9a-fA-F";
  default: return NULL;
  }
}

/* Length of a \p{L}, \pL, \p{N} or \pN escape at pat[i] (i at the backslash), with *extra the ranges to add, or 0. */
static size_t property_escape(const char *pat, size_t len, size_t i, const char **extra) {
  static const struct {
    const char *text;
    size_t n;
    const char *extra;
  } forms[] = {{"\\p{L}", 5, g_extra_letters}, {"\\pL", 3, g_extra_letters},
               {"\\p{N}", 5, g_extra_numbers}, {"\\pN", 3, g_extra_numbers},
               {"\\P{L}", 5, g_extra_letters}, {"\\PL", 3, g_extra_letters},
               {"\\P{N}", 5, g_extra_numbers}, {"\\PN", 3, g_extra_numbers}};
  for (size_t k = 0; k < sizeof forms / sizeof forms[0]; k++) {
    if (len - i >= forms[k].n && !memcmp(pat + i, forms[k].text, forms[k].n)) {
      *extra = forms[k].extra;
      return forms[k].n;
    }
  }
  return 0;
}

static int translate(const char *pat, size_t len, sbuf *out) {
  int rc = KILN_OK;
  int in_class = 0; /* inside [...] */
  for (size_t i = 0; i < len && !rc; i++) {
    char c = pat[i];
    const char *extra;
    size_t pl = c == '\\' ? property_escape(pat, len, i, &extra) : 0;
    if (pl && (pat[i + 1] == 'p' || !in_class)) {
      /* \p{L} -> [\p{L}<ranges>] (inside a class: \p{L}<ranges>); \P{L} -> [^\p{L}<ranges>]. A \P{L} inside
       * a class cannot be widened this way and is left to PCRE2's tables. */
      bool neg = pat[i + 1] == 'P';
      if (!in_class) rc = sb_put(out, neg ? "[^" : "[", neg ? 2 : 1);
      if (!rc) rc = sb_put(out, "\\p{", 3);
      if (!rc) rc = sb_put(out, pl == 5 ? pat + i + 3 : pat + i + 2, 1);
      if (!rc) rc = sb_put(out, "}", 1);
      if (!rc) rc = sb_put(out, extra, strlen(extra));
      if (!rc && !in_class) rc = sb_put(out, "]", 1);
      i += pl - 1;
      continue;
    }
    if (c == '\\' && i + 1 < len) {
      char d = pat[i + 1];
      bool neg = d >= 'A' && d <= 'Z';
      const char *body2, *body3, *body = shorthand_body((char)(d | 0x20), in_class, &body2, &body3);
      if (body && (!neg || !in_class)) {
        if (!in_class) rc = sb_put(out, neg ? "[^" : "[", neg ? 2 : 1);
        if (!rc) rc = sb_put(out, body, strlen(body));
        if (!rc) rc = sb_put(out, body2, strlen(body2));
        if (!rc) rc = sb_put(out, body3, strlen(body3));
        if (!rc && !in_class) rc = sb_put(out, "]", 1);
      } else if (d == 'S') {
        rc = sb_put(out, "\\P{White_Space}", 15);
      } else {
        rc = sb_put(out, pat + i, 2);
      }
      i++;
      continue;
    }
    if (in_class) {
      /* A ']' right after '[' or '[^' is a literal, as in both engines. */
      if (c == ']') in_class = 0;
      rc = sb_put(out, &c, 1);
      continue;
    }
    if (c == '[') {
      in_class = 1;
      rc = sb_put(out, &c, 1);
      if (!rc && i + 1 < len && pat[i + 1] == '^') rc = sb_put(out, pat + ++i, 1);
      if (!rc && i + 1 < len && pat[i + 1] == ']') rc = sb_put(out, pat + ++i, 1);
      continue;
    }
    size_t end = c == '(' ? simple_caseless_group(pat, len, i) : 0;
    if (end) {
      rc = sb_put(out, "(?:", 3);
      for (size_t j = i + 4; j < end && !rc; j++) {
        char l = pat[j];
        if ((l >= 'a' && l <= 'z') || (l >= 'A' && l <= 'Z')) {
          char cls[4] = {'[', (char)(l | 0x20), (char)(l & ~0x20), ']'};
          rc = sb_put(out, cls, 4);
        } else {
          rc = sb_put(out, &l, 1);
        }
      }
      if (!rc) rc = sb_put(out, ")", 1);
      i = end;
      continue;
    }
    rc = sb_put(out, &c, 1);
  }
  if (!rc && !out->p) rc = sb_put(out, "", 0);
  return rc;
}

int tok_regex_compile(tok_regex *re, const char *pat, size_t len, bool literal, const char *path) {
  memset(re, 0, sizeof *re);
  sbuf tr = {0};
  int rc = literal ? sb_put(&tr, pat, len) : translate(pat, len, &tr);
  if (rc) return kiln_error(rc, "%s: out of memory compiling a regex", path);
  pcre2_compile_context *cctx = pcre2_compile_context_create(NULL);
  if (!cctx) {
    free(tr.p);
    return kiln_error(KILN_ENOMEM, "%s: out of memory compiling a regex", path);
  }
  pcre2_set_newline(cctx, PCRE2_NEWLINE_LF);
  /* PCRE2_LITERAL admits neither UCP nor MULTILINE, and needs neither. */
  uint32_t opts = PCRE2_UTF | (literal ? PCRE2_LITERAL : PCRE2_UCP | PCRE2_MULTILINE);
  int err = 0;
  PCRE2_SIZE eoff = 0;
  re->code = pcre2_compile((PCRE2_SPTR)tr.p, tr.n, opts, &err, &eoff, cctx);
  pcre2_compile_context_free(cctx);
  free(tr.p);
  if (!re->code) {
    PCRE2_UCHAR msg[160];
    if (pcre2_get_error_message(err, msg, sizeof msg) < 0) snprintf((char *)msg, sizeof msg, "error %d", err);
    return kiln_error(KILN_EFORMAT, "%s: pre-tokenizer regex does not compile: %s (offset %zu)", path,
                      (const char *)msg, (size_t)eoff);
  }
  /* Without JIT (an unsupported CPU, or memory refused) the interpreter gives the same matches, only slower. */
  re->jit = pcre2_jit_compile(re->code, PCRE2_JIT_COMPLETE) == 0;
  return KILN_OK;
}

void tok_regex_free(tok_regex *re) {
  if (re->code) pcre2_code_free(re->code);
  memset(re, 0, sizeof *re);
}

void tok_rxscratch_free(tok_rxscratch *rx) {
  if (rx->md) pcre2_match_data_free(rx->md);
  if (rx->mctx) pcre2_match_context_free(rx->mctx);
  if (rx->jstack) pcre2_jit_stack_free(rx->jstack);
  memset(rx, 0, sizeof *rx);
}

static int rx_setup(tok_rxscratch *rx) {
  if (rx->md) return KILN_OK;
  /* One pair of offsets is all we read; a pattern with groups still reports the whole match in it. */
  rx->md = pcre2_match_data_create(1, NULL);
  rx->mctx = pcre2_match_context_create(NULL);
  if (!rx->md || !rx->mctx) return KILN_ENOMEM;
  pcre2_set_match_limit(rx->mctx, TOK_MATCH_LIMIT);
  pcre2_set_depth_limit(rx->mctx, TOK_DEPTH_LIMIT);
  return KILN_OK;
}

static int rx_match(const tok_regex *re, tok_rxscratch *rx, const char *s, size_t n, size_t from) {
  int rc = pcre2_match(re->code, (PCRE2_SPTR)s, n, from, PCRE2_NO_UTF_CHECK, rx->md, rx->mctx);
  if (rc == PCRE2_ERROR_JIT_STACKLIMIT && !rx->jstack) {
    /* The default 32 KiB JIT stack is enough for the usual patterns; a long run of something the pattern
     * backtracks over gets a larger one, once per encode call. */
    rx->jstack = pcre2_jit_stack_create(64u << 10, TOK_JIT_STACK_MAX, NULL);
    if (!rx->jstack) return KILN_ENOMEM;
    pcre2_jit_stack_assign(rx->mctx, NULL, rx->jstack);
    rc = pcre2_match(re->code, (PCRE2_SPTR)s, n, from, PCRE2_NO_UTF_CHECK, rx->md, rx->mctx);
  }
  return rc;
}

int tok_regex_next(const tok_regex *re, tok_rxscratch *rx, const char *s, size_t n, tok_match_iter *it,
                   size_t *ms, size_t *me, const char *path) {
  int rc = rx_setup(rx);
  if (rc) return kiln_error(rc, "%s: out of memory matching a regex", path);
  for (;;) {
    if (it->last_end > n) return 0;
    rc = rx_match(re, rx, s, n, it->last_end);
    if (rc == PCRE2_ERROR_NOMATCH) return 0;
    if (rc < 0) {
      if (rc == KILN_ENOMEM || rc == PCRE2_ERROR_NOMEMORY)
        return kiln_error(KILN_ENOMEM, "%s: out of memory matching a regex", path);
      PCRE2_UCHAR msg[160];
      if (pcre2_get_error_message(rc, msg, sizeof msg) < 0) snprintf((char *)msg, sizeof msg, "error %d", rc);
      return kiln_error(KILN_ERANGE, "%s: pre-tokenizer regex failed: %s", path, (const char *)msg);
    }
    PCRE2_SIZE *ov = pcre2_get_ovector_pointer(rx->md);
    size_t st = ov[0], en = ov[1];
    if (st > en || en > n || st < it->last_end)
      return kiln_error(KILN_EUNSUPPORTED, "%s: pre-tokenizer regex reports a match outside the text (\\K?)", path);
    if (st == en && it->last_match_end == en) {
      /* An empty match where the last one ended: step over one character and search again. */
      if (it->last_end < n) {
        int32_t cp;
        it->last_end += (size_t)tok_utf8_decode(s + it->last_end, n - it->last_end, &cp);
      } else {
        it->last_end++;
      }
      continue;
    }
    it->last_end = en;
    it->last_match_end = en;
    *ms = st;
    *me = en;
    return 1;
  }
}
