/*
 * tokenizer_impl.h: the inside of kiln_tokenizer (include/kiln/tokenizer.h), shared by the tokenizer_*.c files.
 *
 * The tokenizer mirrors the pipeline of Hugging Face tokenizers for a byte-level BPE tokenizer.json:
 *
 *   text -> added tokens that are not normalised (matched on the raw text)
 *        -> normalisers (NFC, ...) on each remaining piece
 *        -> added tokens that are normalised (matched on the normalised piece)
 *        -> pre-tokenisers (Split with the file's regex, ByteLevel), each splitting the pieces further
 *        -> BPE on each final word (merge ranks from a hash map, results kept in a per-call word cache)
 *
 * Everything built at load time is read-only afterwards, so one tokenizer can encode on many threads at once;
 * what an encode call needs to write (buffers, regex match data, the word cache) lives in its own tok_enc.
 */
#ifndef KILN_TOKENIZER_IMPL_H
#define KILN_TOKENIZER_IMPL_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kiln/tokenizer.h"

/* Ids are int32 in the API; a cap far above any real vocabulary keeps a hostile file ({"a": 2000000000}) from
 * making us allocate per-id tables of gigabytes. */
#define TOK_MAX_ID (1 << 24)
/* Pre-tokenisers and normalisers after flattening nested Sequences. */
#define TOK_MAX_STEPS 16
/* Nesting of Sequence objects in the file. */
#define TOK_MAX_DEPTH 8

/* ---- hashing and maps (tokenizer_map.c) ---- */

uint64_t tok_hash(const void *p, size_t n);

/* String -> int32 map that owns copies of its keys. Entries are never removed; putting an existing key replaces
 * its value (the last duplicate in a JSON object wins, as in serde). */
typedef struct tok_strent {
  size_t off;    /* key bytes in arena */
  uint32_t len;  /* key length */
  int32_t val;
  uint64_t hash;
} tok_strent;

typedef struct tok_strtab {
  char *arena;
  size_t arena_len, arena_cap;
  tok_strent *ents;
  size_t n, cap;
  uint32_t *slots; /* entry index + 1; 0 is empty */
  size_t mask;     /* slots - 1 (a power of two minus one); 0 when no slots yet */
} tok_strtab;

/* Returns 0 or KILN_ENOMEM / KILN_ERANGE (key longer than 4 GiB). *ent gets the entry index when not NULL. */
int tok_strtab_put(tok_strtab *t, const char *key, size_t len, int32_t val, size_t *ent);
/* Room for n keys of `bytes` bytes in all, so that loading a vocabulary does not rehash. */
int tok_strtab_reserve(tok_strtab *t, size_t n, size_t bytes);
/* The value for a key, or -1. */
int32_t tok_strtab_get(const tok_strtab *t, const char *key, size_t len);
/* The entry index for a key, or SIZE_MAX. */
size_t tok_strtab_find(const tok_strtab *t, const char *key, size_t len);
static inline const char *tok_strtab_key(const tok_strtab *t, size_t ent) { return t->arena + t->ents[ent].off; }
void tok_strtab_free(tok_strtab *t);

/* (left id, right id) -> (merge rank, merged id). */
typedef struct tok_pairent {
  uint64_t key; /* (left << 32) | right; UINT64_MAX marks an empty slot */
  uint32_t rank;
  int32_t id;
} tok_pairent;

typedef struct tok_pairmap {
  tok_pairent *slots;
  size_t mask, n;
} tok_pairmap;

int tok_pairmap_init(tok_pairmap *m, size_t expected);
/* Inserts or replaces (a later merge of the same pair wins, as HF's HashMap collect does). */
int tok_pairmap_put(tok_pairmap *m, int32_t a, int32_t b, uint32_t rank, int32_t id);
static inline const tok_pairent *tok_pairmap_get(const tok_pairmap *m, int32_t a, int32_t b) {
  if (!m->slots) return NULL;
  uint64_t key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
  uint64_t h = key * 0x9E3779B97F4A7C15ull;
  for (size_t i = (size_t)(h >> 20) & m->mask;; i = (i + 1) & m->mask) {
    const tok_pairent *e = &m->slots[i];
    if (e->key == key) return e;
    if (e->key == UINT64_MAX) return NULL;
  }
}
void tok_pairmap_free(tok_pairmap *m);

/* ---- UTF-8 and Unicode helpers (tokenizer_utf8.c) ---- */

/* Offset of the first byte that breaks well-formed UTF-8 (RFC 3629: no overlongs, no surrogates, <= U+10FFFF),
 * or len when the whole text is valid. */
size_t tok_utf8_check(const char *s, size_t len);
/* Decodes one character of valid UTF-8 at s (n > 0 bytes left); returns its length. */
int tok_utf8_decode(const char *s, size_t n, int32_t *cp);
int tok_utf8_encode(int32_t cp, char *out);
/* Unicode White_Space, and the \w of Rust's regex crate (Alphabetic, marks, Nd, Pc, joiners). */
bool tok_is_white_space(int32_t cp);
bool tok_is_word_char(int32_t cp);
/* Characters HF's normaliser treats as unknown (class 0, no decomposition); utf8proc knows them. Never below
 * U+07C0 (lead byte 0xDF). */
bool tok_norm_unknown(int32_t cp, bool compat);

/* The GPT-2 byte <-> character table used by the ByteLevel pre-tokeniser and decoder. */
typedef struct tok_bytelevel {
  char enc[256][2];   /* UTF-8 of the character standing for each byte */
  uint8_t enc_len[256];
  int16_t dec[324];   /* character (code point < 324) -> byte, or -1 */
} tok_bytelevel;
extern const tok_bytelevel *tok_bytelevel_table(void);

/* ---- regular expressions (tokenizer_regex.c) ---- */

typedef struct tok_regex {
  pcre2_code *code;
  bool jit;
} tok_regex;

/* Compiles an Oniguruma pattern from tokenizer.json for PCRE2 (UTF, UCP, JIT), rewriting the few constructs whose
 * meaning differs (see tokenizer_regex.c). literal: match the text as a plain string. */
int tok_regex_compile(tok_regex *re, const char *pat, size_t len, bool literal, const char *path);
void tok_regex_free(tok_regex *re);

/* State of an iteration over the matches in one string, with Oniguruma's find_iter rules for empty matches. */
typedef struct tok_match_iter {
  size_t last_end;
  size_t last_match_end; /* SIZE_MAX before the first match */
} tok_match_iter;

typedef struct tok_rxscratch {
  pcre2_match_data *md;
  pcre2_match_context *mctx;
  pcre2_jit_stack *jstack;
} tok_rxscratch;

/* 1 with [*ms, *me) for the next match, 0 when there is none, or a negative kiln status. */
int tok_regex_next(const tok_regex *re, tok_rxscratch *rx, const char *s, size_t n, tok_match_iter *it,
                   size_t *ms, size_t *me, const char *path);
void tok_rxscratch_free(tok_rxscratch *rx);

/* ---- the tokenizer ---- */

enum tok_norm { TOK_NORM_NFC, TOK_NORM_NFD, TOK_NORM_NFKC, TOK_NORM_NFKD };
enum tok_pre_type { TOK_PRE_SPLIT, TOK_PRE_BYTELEVEL };
enum tok_split_behavior {
  TOK_SPLIT_REMOVED,
  TOK_SPLIT_ISOLATED,
  TOK_SPLIT_MERGED_PREV,
  TOK_SPLIT_MERGED_NEXT,
  TOK_SPLIT_CONTIGUOUS
};
enum tok_decoder { TOK_DEC_NONE, TOK_DEC_BYTELEVEL };

typedef struct tok_pre {
  int type;
  /* Split */
  int behavior;
  bool invert;
  tok_regex re;
  /* ByteLevel */
  bool add_prefix_space, use_regex;
} tok_pre;

/* An added token as HF keeps it in added_tokens_map_r (by id). */
typedef struct tok_added {
  int32_t id;
  size_t content; /* entry in kiln_tokenizer.added_map (holds the content) */
  bool single_word, lstrip, rstrip, normalized, special;
} tok_added;

/* One string of an added-token matching set. */
typedef struct tok_pattern {
  char *s;
  size_t len;
  int32_t id;
} tok_pattern;

/* Leftmost-longest matcher over a few patterns: candidates grouped by first byte, longest first. */
typedef struct tok_patset {
  tok_pattern *pats;
  size_t n;
  uint32_t *order;      /* pattern indices sorted by (first byte, length descending, index) */
  uint32_t first[257];  /* order[first[b] .. first[b+1]) start with byte b */
} tok_patset;

struct kiln_tokenizer {
  char *path; /* for messages */

  int norm[TOK_MAX_STEPS];
  int n_norm;
  tok_pre pre[TOK_MAX_STEPS];
  int n_pre;
  tok_regex gpt2; /* for ByteLevel use_regex */
  int decoder;

  /* BPE model */
  tok_strtab vocab;     /* token string -> id */
  size_t vocab_count;   /* entries (HF get_vocab_size) */
  int32_t *vocab_r;     /* id -> vocab entry, or -1; n_ids entries */
  tok_pairmap merges;
  char *cont_prefix, *eow_suffix; /* NULL when absent */
  size_t cont_prefix_len, eow_suffix_len;
  char *unk_token; /* NULL when absent */
  size_t unk_len;
  bool fuse_unk, byte_fallback, ignore_merges;
  int32_t char_id[0x800]; /* vocab id of each 1-character token below U+0800, or -1 (fast path of BPE) */
  bool plain_chars;       /* no prefix/suffix: a character's symbol is the character itself */

  /* added tokens */
  tok_strtab added_map; /* content -> id */
  tok_added *added;     /* records, by id through added_idx */
  size_t n_added;
  int32_t *added_idx;   /* id -> index in added, or -1; n_ids entries */
  tok_strtab special_set;
  tok_patset raw_set, norm_set;

  /* per id */
  int32_t n_ids; /* largest id + 1 */
  char *bytes;           /* decoded bytes of every token, back to back */
  size_t *bytes_off;     /* n_ids + 1 offsets; a hole has bytes_off[i] == bytes_off[i + 1] and !present */
  uint8_t *flags;        /* TOK_F_* per id */
};

#define TOK_F_PRESENT 1
#define TOK_F_SPECIAL 2

/* tokenizer_load.c parts used by other files */
int tok_load_model(kiln_tokenizer *t, void *model_json);
int tok_load_added(kiln_tokenizer *t, void *added_json);
/* tokenizer_json.c: normaliser, pre-tokeniser and decoder sections */
int tok_load_normalizer(kiln_tokenizer *t, void *json);
int tok_load_pretokenizer(kiln_tokenizer *t, void *json);
int tok_load_decoder(kiln_tokenizer *t, void *json);
/* A printable, single-line, shortened copy of a token for messages. */
const char *tok_quote(char *buf, size_t cap, const char *s, size_t n);

/* tokenizer_added.c */
int tok_patset_build(tok_patset *ps, tok_pattern *pats, size_t n);
void tok_patset_free(tok_patset *ps);
struct tok_enc;
/* Appends to e->spans the pieces of s: added tokens of the set (id >= 0) and the text between them (id -1). */
int tok_added_split(struct tok_enc *e, const tok_patset *ps, const char *s, size_t n);

/* Normalises a piece with the tokenizer's normalisers. *out is either s itself (*owned false) or a malloc'd
 * string (*owned true). */
int tok_normalize(const kiln_tokenizer *t, const char *s, size_t n, char **out, size_t *out_len, bool *owned);

/* ---- encoding (tokenizer_encode.c, tokenizer_bpe.c) ---- */

typedef struct tok_span {
  size_t start, end;
  int32_t id; /* added token id, or -1 for text */
} tok_span;

typedef struct tok_level {
  tok_rxscratch rx;
  char *buf;      /* ByteLevel: the prefixed piece, then each mapped word */
  size_t buf_cap;
  char *map;
  size_t map_cap;
} tok_level;

typedef struct tok_cache_slot {
  uint64_t hash;
  uint32_t key_off, key_len; /* in key arena */
  uint32_t ids_off, ids_n;   /* in ids arena */
} tok_cache_slot;

typedef struct tok_sym {
  int32_t id;
  int32_t prev, next;
  uint32_t len; /* bytes; 0 once merged into its left neighbour */
} tok_sym;

typedef struct tok_merge {
  uint32_t rank, pos;
  int32_t id;
  int32_t left, right; /* the pair's ids when pushed: the entry is stale once either side has changed */
} tok_merge;

typedef struct tok_enc {
  const kiln_tokenizer *t;
  int32_t *ids;
  size_t n_ids, cap_ids;
  tok_level lv[TOK_MAX_STEPS + 1];
  tok_span *spans;
  size_t n_spans, cap_spans;
  /* BPE scratch */
  tok_sym *syms;
  size_t cap_syms;
  tok_merge *heap;
  size_t cap_heap;
  char *sbuf; /* a symbol string with prefix/suffix */
  size_t sbuf_cap;
  /* word cache: words (mapped) -> ids, for this call */
  tok_cache_slot *cache;
  size_t cache_mask, cache_n;
  size_t words; /* BPE words so far; short calls do not set up a cache */
  char *ckeys;
  size_t ckeys_len, ckeys_cap;
  int32_t *cids;
  size_t cids_len, cids_cap;
} tok_enc;

int tok_emit(tok_enc *e, int32_t id);
int tok_bpe_word(tok_enc *e, const char *w, size_t n);
void tok_bpe_free(tok_enc *e);

/* Grows *buf to at least need bytes (elements of size sz). */
int tok_grow(void **buf, size_t *cap, size_t need, size_t sz);

#endif /* KILN_TOKENIZER_IMPL_H */
