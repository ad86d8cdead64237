/*
 * tokenizer_map.c: the hash maps of the tokenizer (vocabulary strings, added tokens, merge pairs) and a growth
 * helper. Open addressing with linear probing at a load factor of at most 1/2; nothing is ever deleted.
 */
#include <stdlib.h>
#include <string.h>

#include "kiln/status.h"
#include "model/tokenizer_impl.h"

uint64_t tok_hash(const void *p, size_t n) {
  /* A short multiply-xorshift mix over 8-byte words: fast on the short strings tokens are. */
  const unsigned char *s = p;
  uint64_t h = 0x9E3779B97F4A7C15ull ^ (uint64_t)n;
  while (n >= 8) {
    uint64_t v;
    memcpy(&v, s, 8);
    h = (h ^ v) * 0xbf58476d1ce4e5b9ull;
    h ^= h >> 31;
    s += 8;
    n -= 8;
  }
  uint64_t v = 0;
  if (n) memcpy(&v, s, n);
  h = (h ^ v) * 0x94d049bb133111ebull;
  h ^= h >> 29;
  h *= 0xbf58476d1ce4e5b9ull;
  h ^= h >> 32;
  return h;
}

int tok_grow(void **buf, size_t *cap, size_t need, size_t sz) {
  if (need <= *cap) return KILN_OK;
  size_t ncap = *cap ? *cap : 16;
  while (ncap < need) {
    if (ncap > SIZE_MAX / 2) return KILN_ENOMEM;
    ncap *= 2;
  }
  if (ncap > SIZE_MAX / sz) return KILN_ENOMEM;
  void *p = realloc(*buf, ncap * sz);
  if (!p) return KILN_ENOMEM;
  *buf = p;
  *cap = ncap;
  return KILN_OK;
}

static int strtab_rehash(tok_strtab *t, size_t nslots) {
  uint32_t *slots = calloc(nslots, sizeof *slots);
  if (!slots) return KILN_ENOMEM;
  size_t mask = nslots - 1;
  for (size_t i = 0; i < t->n; i++) {
    size_t j = (size_t)t->ents[i].hash & mask;
    while (slots[j]) j = (j + 1) & mask;
    slots[j] = (uint32_t)(i + 1);
  }
  free(t->slots);
  t->slots = slots;
  t->mask = mask;
  return KILN_OK;
}

int tok_strtab_reserve(tok_strtab *t, size_t n, size_t bytes) {
  size_t nslots = 64;
  while (nslots < 2 * n) {
    if (nslots > SIZE_MAX / 4 / sizeof *t->slots) return KILN_ENOMEM;
    nslots *= 2;
  }
  if (t->mask + 1 < nslots || !t->slots) {
    int rc = strtab_rehash(t, nslots);
    if (rc) return rc;
  }
  if (tok_grow((void **)&t->ents, &t->cap, n, sizeof *t->ents)) return KILN_ENOMEM;
  return tok_grow((void **)&t->arena, &t->arena_cap, bytes, 1);
}

size_t tok_strtab_find(const tok_strtab *t, const char *key, size_t len) {
  if (!t->slots) return SIZE_MAX;
  uint64_t h = tok_hash(key, len);
  for (size_t j = (size_t)h & t->mask;; j = (j + 1) & t->mask) {
    uint32_t s = t->slots[j];
    if (!s) return SIZE_MAX;
    const tok_strent *e = &t->ents[s - 1];
    if (e->hash == h && e->len == len && memcmp(t->arena + e->off, key, len) == 0) return s - 1;
  }
}

int32_t tok_strtab_get(const tok_strtab *t, const char *key, size_t len) {
  size_t i = tok_strtab_find(t, key, len);
  return i == SIZE_MAX ? -1 : t->ents[i].val;
}

int tok_strtab_put(tok_strtab *t, const char *key, size_t len, int32_t val, size_t *ent) {
  if (len > UINT32_MAX) return KILN_ERANGE;
  size_t i = tok_strtab_find(t, key, len);
  if (i != SIZE_MAX) {
    t->ents[i].val = val;
    if (ent) *ent = i;
    return KILN_OK;
  }
  if (t->n >= UINT32_MAX - 1) return KILN_ERANGE;
  /* Keep the table at most half full. */
  if (!t->slots || (t->n + 1) * 2 > t->mask + 1) {
    size_t nslots = t->slots ? (t->mask + 1) * 2 : 64;
    while ((t->n + 1) * 2 > nslots) nslots *= 2;
    int rc = strtab_rehash(t, nslots);
    if (rc) return rc;
  }
  int rc = tok_grow((void **)&t->ents, &t->cap, t->n + 1, sizeof *t->ents);
  if (rc) return rc;
  /* +1 keeps every key NUL-terminated, which messages and the PCRE2 pattern copies rely on. */
  if (len + 1 > SIZE_MAX - t->arena_len) return KILN_ENOMEM;
  rc = tok_grow((void **)&t->arena, &t->arena_cap, t->arena_len + len + 1, 1);
  if (rc) return rc;
  tok_strent *e = &t->ents[t->n];
  e->off = t->arena_len;
  e->len = (uint32_t)len;
  e->val = val;
  e->hash = tok_hash(key, len);
  if (len) memcpy(t->arena + t->arena_len, key, len);
  t->arena[t->arena_len + len] = 0;
  t->arena_len += len + 1;
  size_t j = (size_t)e->hash & t->mask;
  while (t->slots[j]) j = (j + 1) & t->mask;
  t->slots[j] = (uint32_t)(t->n + 1);
  if (ent) *ent = t->n;
  t->n++;
  return KILN_OK;
}

void tok_strtab_free(tok_strtab *t) {
  free(t->arena);
  free(t->ents);
  free(t->slots);
  memset(t, 0, sizeof *t);
}

int tok_pairmap_init(tok_pairmap *m, size_t expected) {
  size_t n = 64;
  while (n < expected * 2 + 2) {
    if (n > SIZE_MAX / 2 / sizeof *m->slots) return KILN_ENOMEM;
    n *= 2;
  }
  m->slots = malloc(n * sizeof *m->slots);
  if (!m->slots) return KILN_ENOMEM;
  for (size_t i = 0; i < n; i++) m->slots[i].key = UINT64_MAX;
  m->mask = n - 1;
  m->n = 0;
  return KILN_OK;
}

int tok_pairmap_put(tok_pairmap *m, int32_t a, int32_t b, uint32_t rank, int32_t id) {
  if (!m->slots || (m->n + 1) * 2 > m->mask + 1) {
    /* Grow by rebuilding into a table twice the size. */
    tok_pairmap bigger;
    int rc = tok_pairmap_init(&bigger, (m->n + 1) * 2);
    if (rc) return rc;
    for (size_t i = 0; m->slots && i <= m->mask; i++) {
      tok_pairent *e = &m->slots[i];
      if (e->key == UINT64_MAX) continue;
      uint64_t h = e->key * 0x9E3779B97F4A7C15ull;
      size_t j = (size_t)(h >> 20) & bigger.mask;
      while (bigger.slots[j].key != UINT64_MAX) j = (j + 1) & bigger.mask;
      bigger.slots[j] = *e;
      bigger.n++;
    }
    free(m->slots);
    *m = bigger;
  }
  uint64_t key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
  uint64_t h = key * 0x9E3779B97F4A7C15ull;
  size_t j = (size_t)(h >> 20) & m->mask;
  while (m->slots[j].key != UINT64_MAX && m->slots[j].key != key) j = (j + 1) & m->mask;
  if (m->slots[j].key == UINT64_MAX) m->n++;
  m->slots[j].key = key;
  m->slots[j].rank = rank;
  m->slots[j].id = id;
  return KILN_OK;
}

void tok_pairmap_free(tok_pairmap *m) {
  free(m->slots);
  memset(m, 0, sizeof *m);
}
