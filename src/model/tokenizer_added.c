/*
 * tokenizer_added.c: added and special tokens, as HF's AddedVocabulary handles them.
 *
 * Loading replays AddedVocabulary::add_tokens one token at a time, so ids come out as HF assigns them (a content
 * already in the vocabulary keeps its vocabulary id; a new one gets the next id after the vocabulary and earlier
 * added tokens). Tokens split into two matching sets: those with normalized=false are matched on the raw text
 * before normalisation, the others (their content normalised too) on each normalised piece.
 *
 * Matching is leftmost-longest (HF uses an Aho-Corasick automaton in that mode): the first position where any
 * token matches wins, and the longest token there. A set holds a few dozen tokens, so candidates are grouped by
 * first byte and tried longest first. Then single_word, lstrip and rstrip are applied as in find_matches.
 */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "kiln/status.h"
#include "model/tokenizer_impl.h"

typedef struct pending {
  size_t ent; /* in added_map: the content */
  bool normalized;
} pending;

/* qsort has no context argument in C11: the patterns being sorted, per thread. */
static _Thread_local const tok_pattern *g_sort_pats;

static int cmp_order(const void *pa, const void *pb) {
  uint32_t ia = *(const uint32_t *)pa, ib = *(const uint32_t *)pb;
  const tok_pattern *a = &g_sort_pats[ia], *b = &g_sort_pats[ib];
  unsigned char fa = (unsigned char)a->s[0], fb = (unsigned char)b->s[0];
  if (fa != fb) return fa < fb ? -1 : 1;
  if (a->len != b->len) return a->len > b->len ? -1 : 1; /* the longest match at a position wins */
  return ia < ib ? -1 : ia > ib;
}

int tok_patset_build(tok_patset *ps, tok_pattern *pats, size_t n) {
  ps->pats = pats;
  ps->n = n;
  ps->order = malloc((n ? n : 1) * sizeof *ps->order);
  if (!ps->order) return KILN_ENOMEM;
  for (size_t i = 0; i < n; i++) ps->order[i] = (uint32_t)i;
  g_sort_pats = pats;
  if (n > 1) qsort(ps->order, n, sizeof *ps->order, cmp_order);
  g_sort_pats = NULL;
  size_t k = 0;
  for (int b = 0; b < 256; b++) {
    ps->first[b] = (uint32_t)k;
    while (k < n && (unsigned char)pats[ps->order[k]].s[0] == b) k++;
  }
  ps->first[256] = (uint32_t)n;
  return KILN_OK;
}

void tok_patset_free(tok_patset *ps) {
  for (size_t i = 0; i < ps->n; i++) free(ps->pats[i].s);
  free(ps->pats);
  free(ps->order);
  memset(ps, 0, sizeof *ps);
}

static bool same_token(const kiln_tokenizer *t, const tok_added *a, const char *content, size_t len, const tok_added *b) {
  size_t al = t->added_map.ents[a->content].len;
  return al == len && !memcmp(tok_strtab_key(&t->added_map, a->content), content, len) &&
         a->single_word == b->single_word && a->lstrip == b->lstrip && a->rstrip == b->rstrip &&
         a->normalized == b->normalized && a->special == b->special;
}

static int get_tok_bool(const char *path, size_t i, json_t *o, const char *key, bool def, bool *out) {
  json_t *v = json_object_get(o, key);
  *out = def;
  if (!v || json_is_null(v)) return KILN_OK;
  if (!json_is_boolean(v)) return kiln_error(KILN_EFORMAT, "%s: added_tokens[%zu].%s is not a boolean", path, i, key);
  *out = json_is_true(v);
  return KILN_OK;
}

static int build_sets(kiln_tokenizer *t, const pending *list, size_t n) {
  tok_pattern *raw = calloc(n ? n : 1, sizeof *raw), *norm = calloc(n ? n : 1, sizeof *norm);
  size_t nr = 0, nn = 0;
  int rc = raw && norm ? KILN_OK : KILN_ENOMEM;
  for (size_t i = 0; i < n && !rc; i++) {
    const char *s = tok_strtab_key(&t->added_map, list[i].ent);
    size_t sl = t->added_map.ents[list[i].ent].len;
    char *ns = (char *)s;
    size_t nl = sl;
    bool owned = false;
    if (list[i].normalized) {
      rc = tok_normalize(t, s, sl, &ns, &nl, &owned);
      if (rc) break;
    }
    /* A pattern that normalises to nothing can never match: leave it out. */
    if (nl == 0) {
      if (owned) free(ns);
      continue;
    }
    char *copy = owned ? ns : malloc(nl + 1);
    if (!copy) {
      rc = KILN_ENOMEM;
      break;
    }
    if (!owned) memcpy(copy, s, nl);
    copy[nl] = 0;
    tok_pattern *p = list[i].normalized ? &norm[nn++] : &raw[nr++];
    p->s = copy;
    p->len = nl;
    p->id = t->added_map.ents[list[i].ent].val;
  }
  /* From here the sets own the arrays (tok_patset_free releases them, even half-built). */
  t->raw_set.pats = raw;
  t->raw_set.n = nr;
  t->norm_set.pats = norm;
  t->norm_set.n = nn;
  if (!rc) rc = tok_patset_build(&t->raw_set, raw, nr);
  if (!rc) rc = tok_patset_build(&t->norm_set, norm, nn);
  if (rc == KILN_ENOMEM) return kiln_error(rc, "%s: out of memory", t->path);
  return rc;
}

int tok_load_added(kiln_tokenizer *t, void *json) {
  json_t *arr = json;
  const char *path = t->path;
  size_t n = 0;
  if (arr && !json_is_null(arr)) {
    if (!json_is_array(arr)) return kiln_error(KILN_EFORMAT, "%s: added_tokens is not a list", path);
    n = json_array_size(arr);
  }
  /* Every id given out is below max(vocabulary ids + 1, vocabulary size) + n. */
  size_t bound = t->vocab_count;
  for (size_t i = 0; i < t->vocab.n; i++)
    if ((size_t)t->vocab.ents[i].val + 1 > bound) bound = (size_t)t->vocab.ents[i].val + 1;
  bound += n + 1;
  if (bound > TOK_MAX_ID) return kiln_error(KILN_EFORMAT, "%s: too many tokens (%zu)", path, bound);
  int32_t *by_id = malloc(bound * sizeof *by_id);
  pending *specials = malloc((n ? n : 1) * sizeof *specials), *plain = malloc((n ? n : 1) * sizeof *plain);
  t->added = malloc((n ? n : 1) * sizeof *t->added);
  size_t ns = 0, np = 0;
  int64_t max_added = -1;
  int rc = by_id && specials && plain && t->added ? KILN_OK : kiln_error(KILN_ENOMEM, "%s: out of memory", path);
  for (size_t i = 0; !rc && i < bound; i++) by_id[i] = -1;
  for (size_t i = 0; i < n && !rc; i++) {
    json_t *o = json_array_get(arr, i);
    if (!json_is_object(o)) {
      rc = kiln_error(KILN_EFORMAT, "%s: added_tokens[%zu] is not an object", path, i);
      break;
    }
    json_t *content = json_object_get(o, "content"), *id = json_object_get(o, "id");
    if (!json_is_string(content)) {
      rc = kiln_error(KILN_EFORMAT, "%s: added_tokens[%zu] has no content", path, i);
      break;
    }
    if (!json_is_integer(id) || json_integer_value(id) < 0 || json_integer_value(id) > UINT32_MAX) {
      rc = kiln_error(KILN_EFORMAT, "%s: added_tokens[%zu] has no valid id", path, i);
      break;
    }
    tok_added tk = {0};
    bool norm_def;
    rc = get_tok_bool(path, i, o, "special", false, &tk.special);
    if (!rc) rc = get_tok_bool(path, i, o, "single_word", false, &tk.single_word);
    if (!rc) rc = get_tok_bool(path, i, o, "lstrip", false, &tk.lstrip);
    if (!rc) rc = get_tok_bool(path, i, o, "rstrip", false, &tk.rstrip);
    norm_def = !tk.special;
    if (!rc) rc = get_tok_bool(path, i, o, "normalized", norm_def, &tk.normalized);
    if (rc) break;
    const char *s = json_string_value(content);
    size_t sl = json_string_length(content);
    if (sl == 0) continue;
    if (tk.special && tok_strtab_find(&t->special_set, s, sl) == SIZE_MAX) {
      if (tok_strtab_put(&t->special_set, s, sl, 1, NULL)) {
        rc = kiln_error(KILN_ENOMEM, "%s: out of memory", path);
        break;
      }
      specials[ns].normalized = tk.normalized;
      specials[ns].ent = SIZE_MAX; /* filled below, once the content is in added_map */
      ns++;
    }
    bool is_new_special = ns > 0 && specials[ns - 1].ent == SIZE_MAX;
    int32_t known = tok_strtab_get(&t->added_map, s, sl);
    if (known >= 0 && by_id[known] >= 0 && same_token(t, &t->added[by_id[known]], s, sl, &tk)) {
      if (is_new_special) specials[ns - 1].ent = tok_strtab_find(&t->added_map, s, sl);
      continue;
    }
    int32_t newid = known;
    if (newid < 0) newid = tok_strtab_get(&t->vocab, s, sl);
    if (newid < 0) {
      size_t vs = t->vocab_count;
      if (max_added < 0)
        newid = (int32_t)vs;
      else
        newid = ((size_t)max_added >= vs || vs == 0) ? (int32_t)(max_added + 1) : (int32_t)vs;
    }
    if ((size_t)newid >= bound) {
      rc = kiln_error(KILN_EFORMAT, "%s: added_tokens[%zu] gets id %d, out of range", path, i, newid);
      break;
    }
    if (newid > max_added) max_added = newid;
    size_t ent;
    if (tok_strtab_put(&t->added_map, s, sl, newid, &ent)) {
      rc = kiln_error(KILN_ENOMEM, "%s: out of memory", path);
      break;
    }
    tk.id = newid;
    tk.content = ent;
    if (by_id[newid] >= 0) {
      t->added[by_id[newid]] = tk;
    } else {
      by_id[newid] = (int32_t)t->n_added;
      t->added[t->n_added++] = tk;
    }
    if (is_new_special) specials[ns - 1].ent = ent;
    if (tok_strtab_find(&t->special_set, s, sl) == SIZE_MAX) {
      plain[np].ent = ent;
      plain[np].normalized = tk.normalized;
      np++;
    }
  }
  if (!rc) {
    /* HF's matching sets: the special tokens first, then the other added tokens, each in the file's order. */
    pending *all = malloc((ns + np ? ns + np : 1) * sizeof *all);
    if (!all) {
      rc = kiln_error(KILN_ENOMEM, "%s: out of memory", path);
    } else {
      size_t k = 0;
      for (size_t i = 0; i < ns; i++)
        if (specials[i].ent != SIZE_MAX) all[k++] = specials[i];
      for (size_t i = 0; i < np; i++) all[k++] = plain[i];
      rc = build_sets(t, all, k);
      free(all);
    }
  }
  free(by_id);
  free(specials);
  free(plain);
  return rc;
}

static size_t prev_char_start(const char *s, size_t pos) {
  size_t i = pos - 1;
  while (i > 0 && ((unsigned char)s[i] & 0xC0) == 0x80) i--;
  return i;
}

/* Would Rust's \w$ match s[..pos] / ^\w match s[pos..]? */
static bool ends_with_word(const char *s, size_t pos) {
  if (pos == 0) return false;
  int32_t cp;
  size_t i = prev_char_start(s, pos);
  tok_utf8_decode(s + i, pos - i, &cp);
  return tok_is_word_char(cp);
}

static bool starts_with_word(const char *s, size_t pos, size_t n) {
  if (pos >= n) return false;
  int32_t cp;
  tok_utf8_decode(s + pos, n - pos, &cp);
  return tok_is_word_char(cp);
}

/* Start of the white space that ends s[..pos]. */
static size_t space_leftmost_at_end(const char *s, size_t pos) {
  while (pos > 0) {
    size_t i = prev_char_start(s, pos);
    int32_t cp;
    tok_utf8_decode(s + i, pos - i, &cp);
    if (!tok_is_white_space(cp)) break;
    pos = i;
  }
  return pos;
}

/* Length of the white space that starts s[pos..n]. */
static size_t space_rightmost_at_start(const char *s, size_t pos, size_t n) {
  size_t i = pos;
  while (i < n) {
    int32_t cp;
    int l = tok_utf8_decode(s + i, n - i, &cp);
    if (!tok_is_white_space(cp)) break;
    i += (size_t)l;
  }
  return i - pos;
}

static int push_span(tok_enc *e, size_t start, size_t end, int32_t id) {
  if (tok_grow((void **)&e->spans, &e->cap_spans, e->n_spans + 1, sizeof *e->spans)) return KILN_ENOMEM;
  e->spans[e->n_spans++] = (tok_span){start, end, id};
  return KILN_OK;
}

int tok_added_split(tok_enc *e, const tok_patset *ps, const char *s, size_t n) {
  /* Appends to e->spans the pieces of s: added tokens (id >= 0) and the text between them (id -1). */
  const kiln_tokenizer *t = e->t;
  size_t start_offset = 0, pos = 0;
  while (ps->n && pos < n) {
    /* Leftmost-longest: scan for the first position where some pattern matches. */
    size_t mstart = 0, mlen = 0;
    int32_t mid = -1;
    for (; pos < n; pos++) {
      unsigned char c = (unsigned char)s[pos];
      for (uint32_t k = ps->first[c]; k < ps->first[c + 1]; k++) {
        const tok_pattern *p = &ps->pats[ps->order[k]];
        if (p->len <= n - pos && !memcmp(s + pos, p->s, p->len)) {
          mstart = pos;
          mlen = p->len;
          mid = p->id;
          break;
        }
      }
      if (mid >= 0) break;
    }
    if (mid < 0) break;
    size_t start = mstart, stop = mstart + mlen;
    pos = stop; /* the automaton resumes after the raw match, whatever stripping does */
    const tok_added *a = t->added_idx && mid < t->n_ids && t->added_idx[mid] >= 0 ? &t->added[t->added_idx[mid]] : NULL;
    /* While loading, added_idx is not built yet; patterns are only matched after finalize. */
    if (a && a->single_word) {
      bool start_space = start == 0 || !ends_with_word(s, start);
      bool stop_space = stop == n || !starts_with_word(s, stop, n);
      if (!start_space || !stop_space) continue;
    }
    if (a && a->lstrip) {
      size_t ns = space_leftmost_at_end(s, start);
      start = ns > start_offset ? ns : start_offset;
    }
    if (a && a->rstrip) stop += space_rightmost_at_start(s, stop, n);
    if (start_offset < start && push_span(e, start_offset, start, -1)) return KILN_ENOMEM;
    if (push_span(e, start, stop, mid)) return KILN_ENOMEM;
    start_offset = stop;
  }
  if (start_offset < n && push_span(e, start_offset, n, -1)) return KILN_ENOMEM;
  return KILN_OK;
}
