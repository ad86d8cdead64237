/*
 * tokenizer_json.c: the normalizer, pre_tokenizer and decoder sections of tokenizer.json.
 *
 * Supported, as HF tokenizers reads them: normalizers NFC, NFD, NFKC, NFKD and Sequence; pre-tokenizers Split
 * (Regex or String pattern, every behavior, invert), ByteLevel (add_prefix_space, use_regex; both default to
 * true) and Sequence; decoders ByteLevel and none. Anything else is refused at load with a message naming it,
 * rather than tokenised differently from HF.
 */
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "kiln/status.h"
#include "model/tokenizer_impl.h"

const char *tok_quote(char *buf, size_t cap, const char *s, size_t n) {
  size_t o = 0;
  for (size_t i = 0; i < n && o + 8 < cap; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c < 0x20 || c == 0x7F || c == '\'' || c == '\\')
      o += (size_t)snprintf(buf + o, cap - o, "\\x%02x", c);
    else
      buf[o++] = (char)c;
    if (i + 1 < n && o + 8 >= cap) {
      memcpy(buf + o, "...", 3);
      o += 3;
      break;
    }
  }
  buf[o] = 0;
  return buf;
}

/* A boolean field: missing or null gives def; anything but a boolean is an error. */
static int get_bool(const char *path, const char *what, json_t *obj, const char *key, bool def, bool *out) {
  json_t *v = json_object_get(obj, key);
  if (!v || json_is_null(v)) {
    *out = def;
    return KILN_OK;
  }
  if (!json_is_boolean(v)) return kiln_error(KILN_EFORMAT, "%s: %s.%s is not a boolean", path, what, key);
  *out = json_is_true(v);
  return KILN_OK;
}

static const char *type_of(json_t *obj) {
  json_t *t = json_object_get(obj, "type");
  return json_is_string(t) ? json_string_value(t) : NULL;
}

static int add_normalizer(kiln_tokenizer *t, json_t *n, int depth) {
  const char *path = t->path;
  if (!n || json_is_null(n)) return KILN_OK;
  if (!json_is_object(n)) return kiln_error(KILN_EFORMAT, "%s: normalizer is not an object", path);
  const char *type = type_of(n);
  if (!type) return kiln_error(KILN_EFORMAT, "%s: normalizer has no type", path);
  if (!strcmp(type, "Sequence")) {
    json_t *list = json_object_get(n, "normalizers");
    if (!json_is_array(list)) return kiln_error(KILN_EFORMAT, "%s: normalizer Sequence has no normalizers list", path);
    if (depth >= TOK_MAX_DEPTH) return kiln_error(KILN_EUNSUPPORTED, "%s: normalizers nest too deeply", path);
    size_t i;
    json_t *item;
    json_array_foreach(list, i, item) {
      int rc = add_normalizer(t, item, depth + 1);
      if (rc) return rc;
    }
    return KILN_OK;
  }
  int kind;
  if (!strcmp(type, "NFC"))
    kind = TOK_NORM_NFC;
  else if (!strcmp(type, "NFD"))
    kind = TOK_NORM_NFD;
  else if (!strcmp(type, "NFKC"))
    kind = TOK_NORM_NFKC;
  else if (!strcmp(type, "NFKD"))
    kind = TOK_NORM_NFKD;
  else {
    char q[64];
    return kiln_error(KILN_EUNSUPPORTED, "%s: normalizer type '%s' is not supported", path,
                      tok_quote(q, sizeof q, type, strlen(type)));
  }
  if (t->n_norm >= TOK_MAX_STEPS) return kiln_error(KILN_EUNSUPPORTED, "%s: too many normalizers", path);
  t->norm[t->n_norm++] = kind;
  return KILN_OK;
}

int tok_load_normalizer(kiln_tokenizer *t, void *json) { return add_normalizer(t, json, 0); }

static int parse_behavior(const char *path, json_t *v, int *out) {
  static const struct {
    const char *name;
    int val;
  } names[] = {{"Removed", TOK_SPLIT_REMOVED},
               {"Isolated", TOK_SPLIT_ISOLATED},
               {"MergedWithPrevious", TOK_SPLIT_MERGED_PREV},
               {"MergedWithNext", TOK_SPLIT_MERGED_NEXT},
               {"Contiguous", TOK_SPLIT_CONTIGUOUS}};
  if (!json_is_string(v)) return kiln_error(KILN_EFORMAT, "%s: Split pre-tokenizer has no behavior", path);
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
    if (!strcmp(json_string_value(v), names[i].name)) {
      *out = names[i].val;
      return KILN_OK;
    }
  }
  char q[64];
  return kiln_error(KILN_EFORMAT, "%s: Split behavior '%s' is unknown", path,
                    tok_quote(q, sizeof q, json_string_value(v), json_string_length(v)));
}

static int add_split(kiln_tokenizer *t, json_t *p, tok_pre *pre) {
  const char *path = t->path;
  json_t *pattern = json_object_get(p, "pattern");
  json_t *rx = json_is_object(pattern) ? json_object_get(pattern, "Regex") : NULL;
  json_t *lit = json_is_object(pattern) ? json_object_get(pattern, "String") : NULL;
  if (!json_is_string(rx) && !json_is_string(lit))
    return kiln_error(KILN_EFORMAT, "%s: Split pre-tokenizer pattern is neither {\"Regex\": ...} nor {\"String\": ...}",
                      path);
  int rc = parse_behavior(path, json_object_get(p, "behavior"), &pre->behavior);
  if (!rc) rc = get_bool(path, "Split", p, "invert", false, &pre->invert);
  if (rc) return rc;
  /* A String pattern is the escaped string as a regex (so "" matches empty at every character, as in HF). */
  json_t *src = json_is_string(rx) ? rx : lit;
  return tok_regex_compile(&pre->re, json_string_value(src), json_string_length(src), !json_is_string(rx), path);
}

static int add_pretokenizer(kiln_tokenizer *t, json_t *p, int depth) {
  const char *path = t->path;
  if (!p || json_is_null(p)) return KILN_OK;
  if (!json_is_object(p)) return kiln_error(KILN_EFORMAT, "%s: pre_tokenizer is not an object", path);
  const char *type = type_of(p);
  if (!type) return kiln_error(KILN_EFORMAT, "%s: pre_tokenizer has no type", path);
  if (!strcmp(type, "Sequence")) {
    json_t *list = json_object_get(p, "pretokenizers");
    if (!json_is_array(list))
      return kiln_error(KILN_EFORMAT, "%s: pre_tokenizer Sequence has no pretokenizers list", path);
    if (depth >= TOK_MAX_DEPTH) return kiln_error(KILN_EUNSUPPORTED, "%s: pre-tokenizers nest too deeply", path);
    size_t i;
    json_t *item;
    json_array_foreach(list, i, item) {
      int rc = add_pretokenizer(t, item, depth + 1);
      if (rc) return rc;
    }
    return KILN_OK;
  }
  bool split = !strcmp(type, "Split"), bytelevel = !strcmp(type, "ByteLevel");
  if (!split && !bytelevel) {
    char q[64];
    return kiln_error(KILN_EUNSUPPORTED, "%s: pre_tokenizer type '%s' is not supported", path,
                      tok_quote(q, sizeof q, type, strlen(type)));
  }
  if (t->n_pre >= TOK_MAX_STEPS) return kiln_error(KILN_EUNSUPPORTED, "%s: too many pre-tokenizers", path);
  tok_pre *pre = &t->pre[t->n_pre];
  memset(pre, 0, sizeof *pre);
  int rc;
  if (split) {
    pre->type = TOK_PRE_SPLIT;
    rc = add_split(t, p, pre);
  } else {
    pre->type = TOK_PRE_BYTELEVEL;
    rc = get_bool(path, "ByteLevel", p, "add_prefix_space", true, &pre->add_prefix_space);
    if (!rc) rc = get_bool(path, "ByteLevel", p, "use_regex", true, &pre->use_regex);
    if (!rc && pre->use_regex && !t->gpt2.code) {
      static const char gpt2[] = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
      rc = tok_regex_compile(&t->gpt2, gpt2, sizeof gpt2 - 1, false, path);
    }
  }
  if (rc) {
    tok_regex_free(&pre->re);
    return rc;
  }
  t->n_pre++;
  return KILN_OK;
}

int tok_load_pretokenizer(kiln_tokenizer *t, void *json) { return add_pretokenizer(t, json, 0); }

int tok_load_decoder(kiln_tokenizer *t, void *json) {
  json_t *d = json;
  t->decoder = TOK_DEC_NONE;
  if (!d || json_is_null(d)) return KILN_OK;
  const char *type = json_is_object(d) ? type_of(d) : NULL;
  if (!type) return kiln_error(KILN_EFORMAT, "%s: decoder has no type", t->path);
  if (strcmp(type, "ByteLevel") != 0) {
    char q[64];
    return kiln_error(KILN_EUNSUPPORTED, "%s: decoder type '%s' is not supported (only ByteLevel)", t->path,
                      tok_quote(q, sizeof q, type, strlen(type)));
  }
  t->decoder = TOK_DEC_BYTELEVEL;
  return KILN_OK;
}
