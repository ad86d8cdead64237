/*
 * tokenizer.c: the read-only side of kiln_tokenizer: decoding, token lookups, and freeing. Loading is in
 * tokenizer_load.c, encoding in tokenizer_encode.c.
 */
#include <stdlib.h>
#include <string.h>

#include "base/utf8.h"
#include "kiln/status.h"
#include "model/tokenizer_impl.h"

void kiln_tokenizer_free(kiln_tokenizer *t) {
  if (!t) return;
  for (int i = 0; i < t->n_pre; i++) tok_regex_free(&t->pre[i].re);
  tok_regex_free(&t->gpt2);
  tok_strtab_free(&t->vocab);
  tok_pairmap_free(&t->merges);
  free(t->vocab_r);
  free(t->cont_prefix);
  free(t->eow_suffix);
  free(t->unk_token);
  tok_strtab_free(&t->added_map);
  free(t->added);
  free(t->added_idx);
  tok_strtab_free(&t->special_set);
  tok_patset_free(&t->raw_set);
  tok_patset_free(&t->norm_set);
  free(t->bytes);
  free(t->bytes_off);
  free(t->flags);
  free(t->path);
  free(t);
}

int kiln_tokenizer_n_vocab(const kiln_tokenizer *t) { return t ? t->n_ids : 0; }

int32_t kiln_tokenizer_find(const kiln_tokenizer *t, const char *token) {
  if (!t || !token) return -1;
  size_t n = strlen(token);
  int32_t id = tok_strtab_get(&t->added_map, token, n);
  return id >= 0 ? id : tok_strtab_get(&t->vocab, token, n);
}

bool kiln_tokenizer_is_special(const kiln_tokenizer *t, int32_t id) {
  return t && id >= 0 && id < t->n_ids && (t->flags[id] & TOK_F_SPECIAL);
}

int kiln_tokenizer_token_bytes(const kiln_tokenizer *t, int32_t id, const char **bytes, size_t *len) {
  if (!t || !bytes || !len) return kiln_error(KILN_EINVAL, "kiln_tokenizer_token_bytes: NULL argument");
  if (id < 0 || id >= t->n_ids || !(t->flags[id] & TOK_F_PRESENT))
    return kiln_error(KILN_ERANGE, "%s: no token has id %d", t->path, id);
  *bytes = t->bytes + t->bytes_off[id];
  *len = t->bytes_off[id + 1] - t->bytes_off[id];
  return KILN_OK;
}

int kiln_tokenizer_decode(const kiln_tokenizer *t, const int32_t *ids, size_t n, char **text, size_t *len) {
  if (!t || !text || (!ids && n)) return kiln_error(KILN_EINVAL, "kiln_tokenizer_decode: NULL argument");
  *text = NULL;
  if (len) *len = 0;
  /* HF decode(ids, skip_special_tokens=False): ids that name no token are skipped; the ByteLevel decoder joins
   * the tokens' bytes and repairs invalid UTF-8 with U+FFFD; without a decoder tokens are joined by spaces. */
  size_t raw = 0, count = 0;
  for (size_t i = 0; i < n; i++) {
    int32_t id = ids[i];
    if (id < 0 || id >= t->n_ids || !(t->flags[id] & TOK_F_PRESENT)) continue;
    raw += t->bytes_off[id + 1] - t->bytes_off[id];
    count++;
  }
  bool spaces = t->decoder == TOK_DEC_NONE;
  size_t cap = raw + (spaces && count ? count - 1 : 0);
  if (cap > (SIZE_MAX - 1) / 3) return kiln_error(KILN_ENOMEM, "%s: decoded text too large", t->path);
  char *joined = malloc(cap ? cap : 1);
  char *out = malloc(3 * cap + 1);
  if (!joined || !out) {
    free(joined);
    free(out);
    return kiln_error(KILN_ENOMEM, "%s: out of memory decoding", t->path);
  }
  size_t o = 0;
  bool first = true;
  for (size_t i = 0; i < n; i++) {
    int32_t id = ids[i];
    if (id < 0 || id >= t->n_ids || !(t->flags[id] & TOK_F_PRESENT)) continue;
    if (spaces && !first) joined[o++] = ' ';
    first = false;
    size_t l = t->bytes_off[id + 1] - t->bytes_off[id];
    memcpy(joined + o, t->bytes + t->bytes_off[id], l);
    o += l;
  }
  size_t m = kiln_utf8_sanitize(out, 3 * cap, joined, o); /* as String::from_utf8_lossy */
  free(joined);
  out[m] = 0;
  char *shrunk = realloc(out, m + 1); /* the 3x worst case is rarely needed */
  *text = shrunk ? shrunk : out;
  if (len) *len = m;
  return KILN_OK;
}
