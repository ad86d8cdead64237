/*
 * tokenizer_encode.c: kiln_tokenizer_encode, the pipeline of HF's encode(text, add_special_tokens=False).
 *
 * Pieces are processed depth first: each pre-tokeniser splits its piece and hands every sub-piece to the next
 * one, and the last hands words to BPE. Each pre-tokeniser level has its own scratch buffers (tok_level), so a
 * sub-piece stays valid while the levels below it run, and nothing is allocated per word once the buffers have
 * grown. Empty pieces are dropped at every step, as HF's PreTokenizedString::split does.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "kiln/status.h"
#include "model/tokenizer_impl.h"

static int map_error(const kiln_tokenizer *t, utf8proc_ssize_t r) {
  return kiln_error(r == UTF8PROC_ERROR_NOMEM ? KILN_ENOMEM : KILN_EINVAL, "%s: normalisation failed: %s", t->path,
                    utf8proc_errmsg(r));
}

/* One normaliser over s. Characters HF's normaliser does not know (tok_norm_unknown) behave there as starters
 * that nothing composes with, so the text is normalised in segments between them and they are copied as they are;
 * without any, the whole piece goes through utf8proc at once. */
static int norm_step(const kiln_tokenizer *t, int kind, const char *s, size_t n, char **out, size_t *out_len) {
  int opts = UTF8PROC_STABLE;
  switch (kind) {
  case TOK_NORM_NFC: opts |= UTF8PROC_COMPOSE; break;
  case TOK_NORM_NFD: opts |= UTF8PROC_DECOMPOSE; break;
  case TOK_NORM_NFKC: opts |= UTF8PROC_COMPOSE | UTF8PROC_COMPAT; break;
  default: opts |= UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT; break;
  }
  bool compat = kind == TOK_NORM_NFKC || kind == TOK_NORM_NFKD;
  if (n > (size_t)(PTRDIFF_MAX / 8)) return kiln_error(KILN_ERANGE, "%s: text too long to normalise", t->path);
  char *res = NULL;
  size_t res_len = 0, res_cap = 0, seg = 0, i = 0;
  bool segmented = false;
  int rc = KILN_OK;
  for (;;) {
    size_t cut = n, clen = 0;
    while (i < n) {
      unsigned char c = (unsigned char)s[i];
      if (c < 0xDF) {
        i += c < 0x80 ? 1 : 2;
        continue;
      }
      int32_t cp;
      int l = tok_utf8_decode(s + i, n - i, &cp);
      if (tok_norm_unknown(cp, compat)) {
        cut = i;
        clen = (size_t)l;
        i += (size_t)l;
        break;
      }
      i += (size_t)l;
    }
    if (cut == n && !segmented) {
      utf8proc_uint8_t *dst = NULL;
      utf8proc_ssize_t r = utf8proc_map((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)n, &dst, (utf8proc_option_t)opts);
      if (r < 0) return map_error(t, r);
      *out = (char *)dst;
      *out_len = (size_t)r;
      return KILN_OK;
    }
    segmented = true;
    if (cut > seg) {
      utf8proc_uint8_t *dst = NULL;
      utf8proc_ssize_t r =
          utf8proc_map((const utf8proc_uint8_t *)s + seg, (utf8proc_ssize_t)(cut - seg), &dst, (utf8proc_option_t)opts);
      if (r < 0) {
        rc = map_error(t, r);
        break;
      }
      if (tok_grow((void **)&res, &res_cap, res_len + (size_t)r + 1, 1)) {
        free(dst);
        rc = kiln_error(KILN_ENOMEM, "%s: out of memory normalising", t->path);
        break;
      }
      memcpy(res + res_len, dst, (size_t)r);
      res_len += (size_t)r;
      free(dst);
    }
    if (cut == n) break;
    if (tok_grow((void **)&res, &res_cap, res_len + clen + 1, 1)) {
      rc = kiln_error(KILN_ENOMEM, "%s: out of memory normalising", t->path);
      break;
    }
    memcpy(res + res_len, s + cut, clen);
    res_len += clen;
    seg = cut + clen;
  }
  if (rc) {
    free(res);
    return rc;
  }
  if (!res && !(res = malloc(1))) return kiln_error(KILN_ENOMEM, "%s: out of memory normalising", t->path);
  res[res_len] = 0;
  *out = res;
  *out_len = res_len;
  return KILN_OK;
}

int tok_normalize(const kiln_tokenizer *t, const char *s, size_t n, char **out, size_t *out_len, bool *owned) {
  *out = (char *)s;
  *out_len = n;
  *owned = false;
  for (int i = 0; i < t->n_norm; i++) {
    /* Text below U+0300 is already NFC (nothing there decomposes or composes with anything before a combining
     * mark, and marks start at U+0300, lead byte 0xCC); ASCII is unchanged by all four forms. */
    unsigned limit = t->norm[i] == TOK_NORM_NFC ? 0xCC : 0x80;
    const unsigned char *c = (const unsigned char *)*out;
    size_t k = 0;
    while (k < *out_len && c[k] < limit) k++;
    if (k == *out_len) continue;
    char *res = NULL;
    size_t rl = 0;
    int rc = norm_step(t, t->norm[i], *out, *out_len, &res, &rl);
    if (*owned) free(*out);
    *owned = false;
    if (rc) return rc;
    *out = res;
    *out_len = rl;
    *owned = true;
  }
  return KILN_OK;
}

static int run_level(tok_enc *e, int k, const char *s, size_t n);

/* ---- Split: HF's NormalizedString::split with its five behaviors ---- */

typedef struct split_state {
  tok_enc *e;
  int k;
  const char *s;
  int behavior;
  bool have;       /* a pending piece [ps, pe) that a later element may still extend */
  size_t ps, pe;
  bool prev_match; /* whether the previous element was a match */
} split_state;

static int split_elem(split_state *st, size_t a, size_t b, bool m) {
  int rc = KILN_OK;
  switch (st->behavior) {
  case TOK_SPLIT_ISOLATED: return run_level(st->e, st->k + 1, st->s + a, b - a);
  case TOK_SPLIT_REMOVED: return m ? KILN_OK : run_level(st->e, st->k + 1, st->s + a, b - a);
  case TOK_SPLIT_MERGED_NEXT:
    /* A match joins the non-match that follows it. */
    if (m) {
      if (st->have) rc = run_level(st->e, st->k + 1, st->s + st->ps, st->pe - st->ps);
      st->have = true;
      st->ps = a;
      st->pe = b;
      return rc;
    }
    if (st->have) {
      st->have = false;
      return run_level(st->e, st->k + 1, st->s + st->ps, b - st->ps);
    }
    return run_level(st->e, st->k + 1, st->s + a, b - a);
  case TOK_SPLIT_MERGED_PREV:
  case TOK_SPLIT_CONTIGUOUS: {
    /* MergedWithPrevious: a match joins the piece before it, unless that piece ended with a match.
     * Contiguous: consecutive elements of the same kind join. */
    bool join = st->behavior == TOK_SPLIT_MERGED_PREV ? (m && !st->prev_match) : (m == st->prev_match);
    st->prev_match = m;
    if (join && st->have) {
      st->pe = b;
      return KILN_OK;
    }
    if (st->have) rc = run_level(st->e, st->k + 1, st->s + st->ps, st->pe - st->ps);
    st->have = true;
    st->ps = a;
    st->pe = b;
    return rc;
  }
  }
  return KILN_OK;
}

static int run_split(tok_enc *e, int k, const tok_pre *p, const char *s, size_t n) {
  split_state st = {.e = e, .k = k, .s = s, .behavior = p->behavior};
  tok_match_iter it = {0, SIZE_MAX};
  size_t prev = 0, ms, me;
  int rc;
  while ((rc = tok_regex_next(&p->re, &e->lv[k].rx, s, n, &it, &ms, &me, e->t->path)) == 1) {
    if (prev != ms && (rc = split_elem(&st, prev, ms, p->invert))) return rc;
    if ((rc = split_elem(&st, ms, me, !p->invert))) return rc;
    prev = me;
  }
  if (rc < 0) return rc;
  if (prev != n && (rc = split_elem(&st, prev, n, p->invert))) return rc;
  if (st.have) return run_level(e, k + 1, s + st.ps, st.pe - st.ps);
  return KILN_OK;
}

/* ---- ByteLevel: optional prefix space, optional GPT-2 split, then each byte becomes its character ---- */

static int map_bytes(tok_enc *e, int k, const char *s, size_t n) {
  if (n == 0) return KILN_OK;
  tok_level *lv = &e->lv[k];
  if (tok_grow((void **)&lv->map, &lv->map_cap, 2 * n, 1))
    return kiln_error(KILN_ENOMEM, "%s: out of memory encoding", e->t->path);
  const tok_bytelevel *bl = tok_bytelevel_table();
  char *o = lv->map;
  for (size_t i = 0; i < n; i++) {
    unsigned char b = (unsigned char)s[i];
    o[0] = bl->enc[b][0];
    o[1] = bl->enc[b][1];
    o += bl->enc_len[b];
  }
  return run_level(e, k + 1, lv->map, (size_t)(o - lv->map));
}

static int run_bytelevel(tok_enc *e, int k, const tok_pre *p, const char *s, size_t n) {
  tok_level *lv = &e->lv[k];
  if (p->add_prefix_space && s[0] != ' ') {
    if (tok_grow((void **)&lv->buf, &lv->buf_cap, n + 1, 1))
      return kiln_error(KILN_ENOMEM, "%s: out of memory encoding", e->t->path);
    lv->buf[0] = ' ';
    memcpy(lv->buf + 1, s, n);
    s = lv->buf;
    n++;
  }
  if (!p->use_regex) return map_bytes(e, k, s, n);
  tok_match_iter it = {0, SIZE_MAX};
  size_t prev = 0, ms, me;
  int rc;
  while ((rc = tok_regex_next(&e->t->gpt2, &lv->rx, s, n, &it, &ms, &me, e->t->path)) == 1) {
    if (prev != ms && (rc = map_bytes(e, k, s + prev, ms - prev))) return rc;
    if ((rc = map_bytes(e, k, s + ms, me - ms))) return rc;
    prev = me;
  }
  if (rc < 0) return rc;
  return prev != n ? map_bytes(e, k, s + prev, n - prev) : KILN_OK;
}

static int run_level(tok_enc *e, int k, const char *s, size_t n) {
  if (n == 0) return KILN_OK;
  if (k == e->t->n_pre) return tok_bpe_word(e, s, n);
  const tok_pre *p = &e->t->pre[k];
  return p->type == TOK_PRE_SPLIT ? run_split(e, k, p, s, n) : run_bytelevel(e, k, p, s, n);
}

/* A text piece between non-normalised added tokens: normalise, split out the normalised added tokens, and
 * pre-tokenise the rest. */
static int encode_piece(tok_enc *e, const char *s, size_t n) {
  char *ns;
  size_t nl;
  bool owned;
  int rc = tok_normalize(e->t, s, n, &ns, &nl, &owned);
  if (rc) return rc;
  size_t base = e->n_spans;
  if (tok_added_split(e, &e->t->norm_set, ns, nl)) rc = kiln_error(KILN_ENOMEM, "%s: out of memory encoding", e->t->path);
  for (size_t j = base; j < e->n_spans && !rc; j++) {
    tok_span sp = e->spans[j];
    rc = sp.id >= 0 ? tok_emit(e, sp.id) : run_level(e, 0, ns + sp.start, sp.end - sp.start);
  }
  e->n_spans = base;
  if (owned) free(ns);
  return rc;
}

static void enc_free(tok_enc *e) {
  for (int k = 0; k <= TOK_MAX_STEPS; k++) {
    tok_rxscratch_free(&e->lv[k].rx);
    free(e->lv[k].buf);
    free(e->lv[k].map);
  }
  free(e->spans);
  tok_bpe_free(e);
}

int kiln_tokenizer_encode(const kiln_tokenizer *t, const char *text, size_t len, int32_t **ids, size_t *n_ids) {
  if (!ids || !n_ids) return kiln_error(KILN_EINVAL, "kiln_tokenizer_encode: ids or n_ids is NULL");
  *ids = NULL;
  *n_ids = 0;
  if (!t) return kiln_error(KILN_EINVAL, "kiln_tokenizer_encode: tokenizer is NULL");
  if (!text && len) return kiln_error(KILN_EINVAL, "%s: text is NULL", t->path);
  if (!text) text = "";
  size_t bad = tok_utf8_check(text, len);
  if (bad != len) return kiln_error(KILN_EINVAL, "%s: text is not valid UTF-8 (byte %zu)", t->path, bad);

  tok_enc e = {.t = t};
  int rc = KILN_OK;
  /* English runs at about 4 bytes a token: start the id array near its final size. */
  if (tok_grow((void **)&e.ids, &e.cap_ids, len / 3 + 16, sizeof *e.ids))
    return kiln_error(KILN_ENOMEM, "%s: out of memory encoding", t->path);
  if (tok_added_split(&e, &t->raw_set, text, len)) rc = kiln_error(KILN_ENOMEM, "%s: out of memory encoding", t->path);
  size_t n_raw = e.n_spans;
  for (size_t i = 0; i < n_raw && !rc; i++) {
    tok_span sp = e.spans[i];
    rc = sp.id >= 0 ? tok_emit(&e, sp.id) : encode_piece(&e, text + sp.start, sp.end - sp.start);
  }
  if (!rc && !e.ids) {
    /* Always hand back a block the caller can free, even for no tokens. */
    e.ids = malloc(sizeof *e.ids);
    if (!e.ids) rc = kiln_error(KILN_ENOMEM, "%s: out of memory encoding", t->path);
  }
  if (rc) {
    free(e.ids);
    e.ids = NULL;
    e.n_ids = 0;
  }
  *ids = e.ids;
  *n_ids = e.n_ids;
  enc_free(&e);
  return rc;
}
