/*
 * tokenizer_bpe.c: the BPE model on one pre-tokenised word, as HF's BPE::tokenize does it.
 *
 * The word's characters become symbols (vocabulary ids; unknown characters go through byte_fallback or unk_token
 * as in HF's merge_word), then merges are applied lowest rank first, leftmost first among equal ranks, from a
 * binary heap of candidate pairs whose stale entries are skipped when popped (HF's Word::merge_all). Results are
 * kept in a word cache for the duration of one encode call, which is what makes prose fast: most words repeat.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kiln/status.h"
#include "model/tokenizer_impl.h"

/* Words longer than this are not cached (they rarely repeat), and the cache stops growing past these sizes. */
#define TOK_CACHE_MAX_WORD 256
#define TOK_CACHE_MAX_ENTRIES (1u << 16)
#define TOK_CACHE_MAX_KEYS (8u << 20)

int tok_emit(tok_enc *e, int32_t id) {
  if (e->n_ids == e->cap_ids && tok_grow((void **)&e->ids, &e->cap_ids, e->n_ids + 1, sizeof *e->ids))
    return kiln_error(KILN_ENOMEM, "%s: out of memory encoding", e->t->path);
  e->ids[e->n_ids++] = id;
  return KILN_OK;
}

static int add_sym(tok_enc *e, size_t *ns, int32_t id, uint32_t len) {
  if (tok_grow((void **)&e->syms, &e->cap_syms, *ns + 1, sizeof *e->syms))
    return kiln_error(KILN_ENOMEM, "%s: out of memory encoding", e->t->path);
  tok_sym *s = &e->syms[*ns];
  s->id = id;
  s->len = len;
  s->prev = *ns > 0 ? (int32_t)(*ns - 1) : -1;
  s->next = -1;
  if (*ns > 0) e->syms[*ns - 1].next = (int32_t)*ns;
  (*ns)++;
  return KILN_OK;
}

/* ---- binary min-heap of merge candidates ordered by (rank, position) ---- */

static bool merge_less(const tok_merge *a, const tok_merge *b) {
  return a->rank != b->rank ? a->rank < b->rank : a->pos < b->pos;
}

static int heap_push(tok_enc *e, size_t *n, tok_merge m) {
  if (tok_grow((void **)&e->heap, &e->cap_heap, *n + 1, sizeof *e->heap))
    return kiln_error(KILN_ENOMEM, "%s: out of memory encoding", e->t->path);
  tok_merge *h = e->heap;
  size_t i = (*n)++;
  while (i > 0) {
    size_t p = (i - 1) / 2;
    if (!merge_less(&m, &h[p])) break;
    h[i] = h[p];
    i = p;
  }
  h[i] = m;
  return KILN_OK;
}

static tok_merge heap_pop(tok_enc *e, size_t *n) {
  tok_merge *h = e->heap, top = h[0], last = h[--(*n)];
  size_t i = 0;
  for (;;) {
    size_t c = 2 * i + 1;
    if (c >= *n) break;
    if (c + 1 < *n && merge_less(&h[c + 1], &h[c])) c++;
    if (!merge_less(&h[c], &last)) break;
    h[i] = h[c];
    i = c;
  }
  if (*n) h[i] = last;
  return top;
}

static int push_pair(tok_enc *e, size_t *nh, int32_t pos) {
  const tok_sym *a = &e->syms[pos];
  if (a->next < 0) return KILN_OK;
  const tok_pairent *pe = tok_pairmap_get(&e->t->merges, a->id, e->syms[a->next].id);
  if (!pe) return KILN_OK;
  return heap_push(e, nh, (tok_merge){pe->rank, (uint32_t)pos, pe->id, a->id, e->syms[a->next].id});
}

static int merge_all(tok_enc *e, size_t ns) {
  size_t nh = 0;
  int rc = KILN_OK;
  for (size_t i = 0; i + 1 < ns && !rc; i++) rc = push_pair(e, &nh, (int32_t)i);
  while (nh && !rc) {
    tok_merge top = heap_pop(e, &nh);
    tok_sym *cur = &e->syms[top.pos];
    if (cur->len == 0 || cur->next < 0) continue;
    int32_t nx = cur->next;
    tok_sym right = e->syms[nx];
    /* An entry is stale when either side has changed since it was pushed. HF instead looks the current pair up and
     * compares the merged id; the two agree, because a changed pair always covers more text, so it cannot merge into
     * the same token. */
    if (cur->id != top.left || right.id != top.right) continue;
    cur->id = top.id;
    cur->len += right.len;
    cur->next = right.next;
    e->syms[nx].len = 0;
    if (right.next >= 0) e->syms[right.next].prev = (int32_t)top.pos;
    if (cur->prev >= 0) rc = push_pair(e, &nh, cur->prev);
    if (!rc) rc = push_pair(e, &nh, (int32_t)top.pos);
  }
  return rc;
}

/* HF's merge_word: characters to symbols. */
static int word_symbols(tok_enc *e, const char *w, size_t n, size_t *out_ns) {
  const kiln_tokenizer *t = e->t;
  size_t ns = 0;
  int32_t unk_id = -1;
  uint32_t unk_len = 0;
  bool have_unk = false;
  int rc = KILN_OK;
  for (size_t i = 0; i < n && !rc;) {
    int32_t cp;
    size_t cl = (size_t)tok_utf8_decode(w + i, n - i, &cp);
    bool first = i == 0, last = i + cl == n;
    const char *sym = w + i;
    size_t symlen = cl;
    int32_t id;
    if ((first || !t->cont_prefix_len) && (!last || !t->eow_suffix_len)) {
      id = cp < 0x800 ? t->char_id[cp] : tok_strtab_get(&t->vocab, w + i, cl);
    } else {
      size_t need = t->cont_prefix_len + cl + t->eow_suffix_len;
      if (tok_grow((void **)&e->sbuf, &e->sbuf_cap, need, 1))
        return kiln_error(KILN_ENOMEM, "%s: out of memory encoding", t->path);
      symlen = 0;
      if (!first) {
        memcpy(e->sbuf, t->cont_prefix, t->cont_prefix_len);
        symlen = t->cont_prefix_len;
      }
      memcpy(e->sbuf + symlen, w + i, cl);
      symlen += cl;
      if (last) {
        memcpy(e->sbuf + symlen, t->eow_suffix, t->eow_suffix_len);
        symlen += t->eow_suffix_len;
      }
      sym = e->sbuf;
      id = tok_strtab_get(&t->vocab, sym, symlen);
    }
    i += cl;
    if (id >= 0) {
      if (have_unk) {
        rc = add_sym(e, &ns, unk_id, unk_len);
        have_unk = false;
      }
      if (!rc) rc = add_sym(e, &ns, id, (uint32_t)cl);
      continue;
    }
    if (t->byte_fallback) {
      /* Each byte as a <0xXX> token, when all of them exist. A pending unknown is not flushed first: HF adds it
       * after these bytes, and so do we. */
      bool all = true;
      for (size_t k = 0; k < symlen && all; k++) {
        char hex[8];
        snprintf(hex, sizeof hex, "<0x%02X>", (unsigned char)sym[k]);
        all = tok_strtab_get(&t->vocab, hex, 6) >= 0;
      }
      if (all) {
        for (size_t k = 0; k < symlen && !rc; k++) {
          char hex[8];
          snprintf(hex, sizeof hex, "<0x%02X>", (unsigned char)sym[k]);
          rc = add_sym(e, &ns, tok_strtab_get(&t->vocab, hex, 6), 1);
        }
        continue;
      }
    }
    if (t->unk_token) {
      int32_t uid = tok_strtab_get(&t->vocab, t->unk_token, t->unk_len);
      if (uid < 0) {
        char q[64];
        return kiln_error(KILN_EFORMAT, "%s: unk_token '%s' is not in the vocabulary", t->path,
                          tok_quote(q, sizeof q, t->unk_token, t->unk_len));
      }
      if (have_unk && t->fuse_unk) {
        unk_len += (uint32_t)cl;
      } else {
        if (have_unk) rc = add_sym(e, &ns, unk_id, unk_len);
        unk_id = uid;
        unk_len = (uint32_t)cl;
        have_unk = true;
      }
    }
    /* Otherwise HF drops the character silently. */
  }
  if (!rc && have_unk) rc = add_sym(e, &ns, unk_id, unk_len);
  *out_ns = ns;
  return rc;
}

static int cache_rehash(tok_enc *e, size_t nslots) {
  tok_cache_slot *slots = calloc(nslots, sizeof *slots);
  if (!slots) return KILN_ENOMEM;
  size_t mask = nslots - 1;
  for (size_t i = 0; e->cache && i <= e->cache_mask; i++) {
    if (!e->cache[i].key_len) continue;
    size_t j = (size_t)e->cache[i].hash & mask;
    while (slots[j].key_len) j = (j + 1) & mask;
    slots[j] = e->cache[i];
  }
  free(e->cache);
  e->cache = slots;
  e->cache_mask = mask;
  return KILN_OK;
}

static void cache_put(tok_enc *e, const char *w, size_t n, uint64_t h, size_t ids_from) {
  /* Best effort: when memory or the size caps say no, the word is simply not cached. */
  size_t nids = e->n_ids - ids_from;
  if (e->cache_n >= TOK_CACHE_MAX_ENTRIES || e->ckeys_len + n > TOK_CACHE_MAX_KEYS) return;
  if (e->cids_len + nids > UINT32_MAX) return;
  if (!e->cache || (e->cache_n + 1) * 2 > e->cache_mask + 1) {
    if (cache_rehash(e, e->cache ? (e->cache_mask + 1) * 2 : 1024)) return;
  }
  if (tok_grow((void **)&e->ckeys, &e->ckeys_cap, e->ckeys_len + n, 1)) return;
  if (tok_grow((void **)&e->cids, &e->cids_cap, e->cids_len + nids + 1, sizeof *e->cids)) return;
  tok_cache_slot s = {h, (uint32_t)e->ckeys_len, (uint32_t)n, (uint32_t)e->cids_len, (uint32_t)nids};
  memcpy(e->ckeys + e->ckeys_len, w, n);
  e->ckeys_len += n;
  memcpy(e->cids + e->cids_len, e->ids + ids_from, nids * sizeof *e->cids);
  e->cids_len += nids;
  size_t j = (size_t)h & e->cache_mask;
  while (e->cache[j].key_len) j = (j + 1) & e->cache_mask;
  e->cache[j] = s;
  e->cache_n++;
}

static const tok_cache_slot *cache_get(const tok_enc *e, const char *w, size_t n, uint64_t h) {
  if (!e->cache) return NULL;
  for (size_t j = (size_t)h & e->cache_mask;; j = (j + 1) & e->cache_mask) {
    const tok_cache_slot *s = &e->cache[j];
    if (!s->key_len) return NULL;
    if (s->hash == h && s->key_len == n && !memcmp(e->ckeys + s->key_off, w, n)) return s;
  }
}

int tok_bpe_word(tok_enc *e, const char *w, size_t n) {
  const kiln_tokenizer *t = e->t;
  if (n == 0) return KILN_OK;
  if (t->ignore_merges) {
    int32_t id = tok_strtab_get(&t->vocab, w, n);
    if (id >= 0) return tok_emit(e, id);
  }
  /* The first words of a call go without the cache: a short prompt would spend more on setting it up. */
  bool cacheable = n <= TOK_CACHE_MAX_WORD && ++e->words > 16;
  uint64_t h = 0;
  if (cacheable) {
    h = tok_hash(w, n);
    const tok_cache_slot *s = cache_get(e, w, n, h);
    if (s) {
      if (tok_grow((void **)&e->ids, &e->cap_ids, e->n_ids + s->ids_n, sizeof *e->ids))
        return kiln_error(KILN_ENOMEM, "%s: out of memory encoding", t->path);
      memcpy(e->ids + e->n_ids, e->cids + s->ids_off, s->ids_n * sizeof *e->ids);
      e->n_ids += s->ids_n;
      return KILN_OK;
    }
  }
  size_t ns = 0, from = e->n_ids;
  int rc = word_symbols(e, w, n, &ns);
  if (!rc) rc = merge_all(e, ns);
  for (size_t i = 0; i < ns && !rc; i++)
    if (e->syms[i].len) rc = tok_emit(e, e->syms[i].id);
  if (!rc && cacheable) cache_put(e, w, n, h, from);
  return rc;
}

void tok_bpe_free(tok_enc *e) {
  free(e->syms);
  free(e->heap);
  free(e->sbuf);
  free(e->cache);
  free(e->ckeys);
  free(e->cids);
}
