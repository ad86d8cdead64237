/*
 * tokenizer_load.c: reading tokenizer.json into a kiln_tokenizer: the file, the top level, the BPE model, and the
 * per-id tables built once everything is known (id -> string, decoded bytes, flags).
 *
 * Sections that only matter when add_special_tokens is true (post_processor) or that configure batch helpers
 * (truncation, padding) are ignored: encode here is always `encode(text, add_special_tokens=False)`.
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kiln/status.h"
#include "model/tokenizer_impl.h"

/* A larger file is not a tokenizer (the biggest real ones are tens of MB). */
#define TOK_MAX_FILE ((size_t)1 << 30)

static int dup_opt_string(const char *path, json_t *m, const char *key, char **out, size_t *len) {
  json_t *v = json_object_get(m, key);
  *out = NULL;
  *len = 0;
  if (!v || json_is_null(v)) return KILN_OK;
  if (!json_is_string(v)) return kiln_error(KILN_EFORMAT, "%s: model.%s is not a string", path, key);
  *len = json_string_length(v);
  *out = malloc(*len + 1);
  if (!*out) return kiln_error(KILN_ENOMEM, "%s: out of memory", path);
  memcpy(*out, json_string_value(v), *len + 1);
  return KILN_OK;
}

static int get_flag(const char *path, json_t *m, const char *key, bool *out) {
  json_t *v = json_object_get(m, key);
  *out = false;
  if (!v || json_is_null(v)) return KILN_OK;
  if (!json_is_boolean(v)) return kiln_error(KILN_EFORMAT, "%s: model.%s is not a boolean", path, key);
  *out = json_is_true(v);
  return KILN_OK;
}

static int load_vocab(kiln_tokenizer *t, json_t *vocab) {
  const char *path = t->path;
  if (!json_is_object(vocab)) return kiln_error(KILN_EFORMAT, "%s: model.vocab is missing or not an object", path);
  if (tok_strtab_reserve(&t->vocab, json_object_size(vocab), json_object_size(vocab) * 8))
    return kiln_error(KILN_ENOMEM, "%s: out of memory reading the vocabulary", path);
  for (void *it = json_object_iter(vocab); it; it = json_object_iter_next(vocab, it)) {
    const char *key = json_object_iter_key(it);
    size_t klen = json_object_iter_key_len(it);
    json_t *v = json_object_iter_value(it);
    if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) >= TOK_MAX_ID) {
      char q[64];
      return kiln_error(KILN_EFORMAT, "%s: model.vocab['%s'] is not an id in [0, %d)", path,
                        tok_quote(q, sizeof q, key, klen), TOK_MAX_ID);
    }
    if (tok_strtab_put(&t->vocab, key, klen, (int32_t)json_integer_value(v), NULL))
      return kiln_error(KILN_ENOMEM, "%s: out of memory reading the vocabulary", path);
  }
  t->vocab_count = t->vocab.n;
  return KILN_OK;
}

static int merge_error(const char *path, size_t rank, const char *a, size_t al, const char *b, size_t bl,
                       const char *bad, size_t badl) {
  char qa[48], qb[48], qx[48];
  return kiln_error(KILN_EFORMAT, "%s: merge %zu ('%s' '%s') needs '%s', which is not in the vocabulary", path,
                    rank, tok_quote(qa, sizeof qa, a, al), tok_quote(qb, sizeof qb, b, bl),
                    tok_quote(qx, sizeof qx, bad, badl));
}

static int load_merges(kiln_tokenizer *t, json_t *merges) {
  const char *path = t->path;
  if (!json_is_array(merges)) return kiln_error(KILN_EFORMAT, "%s: model.merges is missing or not a list", path);
  size_t n = json_array_size(merges);
  if (tok_pairmap_init(&t->merges, n)) return kiln_error(KILN_ENOMEM, "%s: out of memory", path);
  /* Both forms HF writes: ["a", "b"] pairs (tokenizers >= 0.20) and legacy "a b" strings; one form per file. */
  bool pairs = n > 0 && json_is_array(json_array_get(merges, 0));
  char *cat = NULL;
  size_t cat_cap = 0;
  uint32_t rank = 0;
  int rc = KILN_OK;
  for (size_t i = 0; i < n && !rc; i++) {
    json_t *m = json_array_get(merges, i);
    const char *a, *b;
    size_t al, bl;
    if (pairs) {
      if (!json_is_array(m) || json_array_size(m) != 2 || !json_is_string(json_array_get(m, 0)) ||
          !json_is_string(json_array_get(m, 1))) {
        rc = kiln_error(KILN_EFORMAT, "%s: model.merges[%zu] is not a pair of strings", path, i);
        break;
      }
      a = json_string_value(json_array_get(m, 0));
      al = json_string_length(json_array_get(m, 0));
      b = json_string_value(json_array_get(m, 1));
      bl = json_string_length(json_array_get(m, 1));
    } else {
      if (!json_is_string(m)) {
        rc = kiln_error(KILN_EFORMAT, "%s: model.merges[%zu] is not a string", path, i);
        break;
      }
      const char *s = json_string_value(m);
      size_t sl = json_string_length(m);
      if (sl >= 8 && !memcmp(s, "#version", 8)) continue;
      const char *sp = memchr(s, ' ', sl);
      if (!sp || memchr(sp + 1, ' ', sl - (size_t)(sp - s) - 1)) {
        char q[64];
        rc = kiln_error(KILN_EFORMAT, "%s: model.merges[%zu] '%s' is not two tokens separated by one space", path, i,
                        tok_quote(q, sizeof q, s, sl));
        break;
      }
      a = s;
      al = (size_t)(sp - s);
      b = sp + 1;
      bl = sl - al - 1;
    }
    int32_t ida = tok_strtab_get(&t->vocab, a, al), idb = tok_strtab_get(&t->vocab, b, bl);
    if (ida < 0) {
      rc = merge_error(path, rank, a, al, b, bl, a, al);
      break;
    }
    if (idb < 0) {
      rc = merge_error(path, rank, a, al, b, bl, b, bl);
      break;
    }
    /* The merged token drops the right part's continuing-subword prefix. */
    if (bl < t->cont_prefix_len) {
      rc = merge_error(path, rank, a, al, b, bl, b, bl);
      break;
    }
    size_t cl = al + bl - t->cont_prefix_len;
    if (tok_grow((void **)&cat, &cat_cap, cl + 1, 1)) {
      rc = kiln_error(KILN_ENOMEM, "%s: out of memory", path);
      break;
    }
    memcpy(cat, a, al);
    memcpy(cat + al, b + t->cont_prefix_len, bl - t->cont_prefix_len);
    int32_t idc = tok_strtab_get(&t->vocab, cat, cl);
    if (idc < 0) {
      rc = merge_error(path, rank, a, al, b, bl, cat, cl);
      break;
    }
    if (tok_pairmap_put(&t->merges, ida, idb, rank, idc)) rc = kiln_error(KILN_ENOMEM, "%s: out of memory", path);
    rank++;
  }
  free(cat);
  return rc;
}

int tok_load_model(kiln_tokenizer *t, void *json) {
  json_t *m = json;
  const char *path = t->path;
  if (!json_is_object(m)) return kiln_error(KILN_EFORMAT, "%s: model is missing or not an object", path);
  json_t *type = json_object_get(m, "type");
  if (type && !json_is_string(type)) return kiln_error(KILN_EFORMAT, "%s: model.type is not a string", path);
  if (type && strcmp(json_string_value(type), "BPE") != 0) {
    char q[64];
    return kiln_error(KILN_EUNSUPPORTED, "%s: model type '%s' is not supported (only BPE)", path,
                      tok_quote(q, sizeof q, json_string_value(type), json_string_length(type)));
  }
  json_t *dropout = json_object_get(m, "dropout");
  if (dropout && !json_is_null(dropout)) {
    if (!json_is_number(dropout)) return kiln_error(KILN_EFORMAT, "%s: model.dropout is not a number", path);
    /* Dropout makes HF's output random; a deterministic engine cannot reproduce it. */
    if (json_number_value(dropout) != 0.0)
      return kiln_error(KILN_EUNSUPPORTED, "%s: BPE dropout is not supported", path);
  }
  int rc = dup_opt_string(path, m, "unk_token", &t->unk_token, &t->unk_len);
  if (!rc) rc = dup_opt_string(path, m, "continuing_subword_prefix", &t->cont_prefix, &t->cont_prefix_len);
  if (!rc) rc = dup_opt_string(path, m, "end_of_word_suffix", &t->eow_suffix, &t->eow_suffix_len);
  if (!rc) rc = get_flag(path, m, "fuse_unk", &t->fuse_unk);
  if (!rc) rc = get_flag(path, m, "byte_fallback", &t->byte_fallback);
  if (!rc) rc = get_flag(path, m, "ignore_merges", &t->ignore_merges);
  if (!rc) rc = load_vocab(t, json_object_get(m, "vocab"));
  if (!rc) rc = load_merges(t, json_object_get(m, "merges"));
  return rc;
}

/* Per-id tables: which string an id stands for (an added token's content before the vocabulary's), the bytes it
 * decodes to, and its flags. */
static int finalize(kiln_tokenizer *t) {
  const char *path = t->path;
  int32_t max_id = -1;
  for (size_t i = 0; i < t->vocab.n; i++)
    if (t->vocab.ents[i].val > max_id) max_id = t->vocab.ents[i].val;
  for (size_t i = 0; i < t->n_added; i++)
    if (t->added[i].id > max_id) max_id = t->added[i].id;
  if (max_id >= TOK_MAX_ID) return kiln_error(KILN_EFORMAT, "%s: token ids reach %d (at most %d)", path, max_id, TOK_MAX_ID - 1);
  t->n_ids = max_id + 1;
  size_t n = (size_t)t->n_ids;
  t->vocab_r = malloc((n ? n : 1) * sizeof *t->vocab_r);
  t->added_idx = malloc((n ? n : 1) * sizeof *t->added_idx);
  t->flags = calloc(n ? n : 1, 1);
  t->bytes_off = malloc((n + 1) * sizeof *t->bytes_off);
  if (!t->vocab_r || !t->added_idx || !t->flags || !t->bytes_off) return kiln_error(KILN_ENOMEM, "%s: out of memory", path);
  for (size_t i = 0; i < n; i++) t->vocab_r[i] = t->added_idx[i] = -1;
  for (size_t i = 0; i < t->vocab.n; i++) t->vocab_r[t->vocab.ents[i].val] = (int32_t)i;
  for (size_t i = 0; i < t->n_added; i++) t->added_idx[t->added[i].id] = (int32_t)i;

  const tok_bytelevel *bl = tok_bytelevel_table();
  size_t total = 0;
  for (int pass = 0; pass < 2; pass++) {
    size_t o = 0;
    for (size_t id = 0; id < n; id++) {
      const char *s = NULL;
      size_t sl = 0;
      if (t->added_idx[id] >= 0) {
        const tok_added *a = &t->added[t->added_idx[id]];
        s = tok_strtab_key(&t->added_map, a->content);
        sl = t->added_map.ents[a->content].len;
        if (pass == 0 && a->special && tok_strtab_find(&t->special_set, s, sl) != SIZE_MAX) t->flags[id] |= TOK_F_SPECIAL;
      } else if (t->vocab_r[id] >= 0) {
        s = tok_strtab_key(&t->vocab, (size_t)t->vocab_r[id]);
        sl = t->vocab.ents[t->vocab_r[id]].len;
      }
      if (pass == 1) t->bytes_off[id] = o;
      if (!s) continue;
      if (pass == 0) t->flags[id] |= TOK_F_PRESENT;
      /* The ByteLevel decoder maps a token whose characters are all in its alphabet to bytes, and passes any
       * other token through as it is. */
      bool mapped = t->decoder == TOK_DEC_BYTELEVEL;
      size_t nb = 0;
      for (size_t i = 0; mapped && i < sl;) {
        int32_t cp;
        i += (size_t)tok_utf8_decode(s + i, sl - i, &cp);
        if (cp >= 324 || bl->dec[cp] < 0) mapped = false;
        nb++;
      }
      if (!mapped) {
        if (pass == 1) memcpy(t->bytes + o, s, sl);
        o += sl;
        continue;
      }
      if (pass == 1) {
        for (size_t i = 0, k = 0; i < sl; k++) {
          int32_t cp;
          i += (size_t)tok_utf8_decode(s + i, sl - i, &cp);
          t->bytes[o + k] = (char)bl->dec[cp];
        }
      }
      o += nb;
    }
    if (pass == 0) {
      total = o;
      t->bytes = malloc(total ? total : 1);
      if (!t->bytes) return kiln_error(KILN_ENOMEM, "%s: out of memory", path);
    } else {
      t->bytes_off[n] = o;
    }
  }

  t->plain_chars = t->cont_prefix_len == 0 && t->eow_suffix_len == 0;
  for (int32_t cp = 0; cp < 0x800; cp++) {
    char u[4];
    int l = tok_utf8_encode(cp, u);
    t->char_id[cp] = tok_strtab_get(&t->vocab, u, (size_t)l);
  }
  return KILN_OK;
}

int kiln_tokenizer_load_mem(kiln_tokenizer **out, const char *json, size_t len, const char *path) {
  if (!out) return kiln_error(KILN_EINVAL, "kiln_tokenizer_load_mem: out is NULL");
  *out = NULL;
  if (!path) path = "tokenizer.json";
  if (!json && len) return kiln_error(KILN_EINVAL, "%s: no JSON text", path);
  kiln_tokenizer *t = calloc(1, sizeof *t);
  if (!t || !(t->path = strdup(path))) {
    free(t);
    return kiln_error(KILN_ENOMEM, "%s: out of memory", path);
  }
  json_error_t jerr;
  json_t *root = json_loadb(json ? json : "", len, JSON_ALLOW_NUL, &jerr);
  int rc = KILN_OK;
  if (!root) {
    rc = kiln_error(KILN_EFORMAT, "%s: invalid JSON at line %d column %d: %s", path, jerr.line, jerr.column, jerr.text);
  } else if (!json_is_object(root)) {
    rc = kiln_error(KILN_EFORMAT, "%s: the top level is not a JSON object", path);
  } else {
    json_t *version = json_object_get(root, "version");
    if (version && !(json_is_string(version) && !strcmp(json_string_value(version), "1.0")))
      rc = kiln_error(KILN_EUNSUPPORTED, "%s: tokenizer.json version is not \"1.0\"", path);
    if (!rc) rc = tok_load_model(t, json_object_get(root, "model"));
    if (!rc) rc = tok_load_normalizer(t, json_object_get(root, "normalizer"));
    if (!rc) rc = tok_load_pretokenizer(t, json_object_get(root, "pre_tokenizer"));
    if (!rc) rc = tok_load_decoder(t, json_object_get(root, "decoder"));
    if (!rc) rc = tok_load_added(t, json_object_get(root, "added_tokens"));
    if (!rc) rc = finalize(t);
  }
  json_decref(root);
  if (rc) {
    kiln_tokenizer_free(t);
    return rc;
  }
  *out = t;
  return KILN_OK;
}

int kiln_tokenizer_load(kiln_tokenizer **out, const char *path) {
  if (!out) return kiln_error(KILN_EINVAL, "kiln_tokenizer_load: out is NULL");
  *out = NULL;
  if (!path) return kiln_error(KILN_EINVAL, "kiln_tokenizer_load: path is NULL");
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return kiln_error(errno == ENOENT ? KILN_ENOTFOUND : KILN_EIO, "%s: cannot open: %s", path, strerror(errno));
  struct stat st;
  if (fstat(fd, &st) != 0) {
    int e = errno;
    close(fd);
    return kiln_error(KILN_EIO, "%s: cannot stat: %s", path, strerror(e));
  }
  if (!S_ISREG(st.st_mode)) {
    close(fd);
    return kiln_error(KILN_EIO, "%s: not a regular file", path);
  }
  if ((uint64_t)st.st_size > TOK_MAX_FILE) {
    close(fd);
    return kiln_error(KILN_EFORMAT, "%s: %lld bytes is too large for a tokenizer", path, (long long)st.st_size);
  }
  size_t size = (size_t)st.st_size;
  char *buf = malloc(size ? size : 1);
  if (!buf) {
    close(fd);
    return kiln_error(KILN_ENOMEM, "%s: out of memory", path);
  }
  size_t got = 0;
  while (got < size) {
    ssize_t r = read(fd, buf + got, size - got);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) {
      int e = r < 0 ? errno : 0;
      free(buf);
      close(fd);
      return kiln_error(KILN_EIO, "%s: read failed: %s", path, e ? strerror(e) : "file shrank while reading");
    }
    got += (size_t)r;
  }
  close(fd);
  int rc = kiln_tokenizer_load_mem(out, buf, size, path);
  free(buf);
  return rc;
}
