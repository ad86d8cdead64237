/*
 * tokenizer_utf8.c: UTF-8 validation and decoding (lossy repair is base/utf8.c, shared with the engine), the few
 * Unicode classes the added-token rules use, and the GPT-2 byte <-> character table of ByteLevel.
 */
#include <pthread.h>
#include <string.h>
#include <utf8proc.h>

#include "model/tokenizer_impl.h"

/* The second byte of a multi-byte sequence is constrained by the lead byte (RFC 3629 table 3-7). */
static bool second_ok(unsigned lead, unsigned b) {
  switch (lead) {
  case 0xE0: return b >= 0xA0 && b <= 0xBF;
  case 0xED: return b >= 0x80 && b <= 0x9F;
  case 0xF0: return b >= 0x90 && b <= 0xBF;
  case 0xF4: return b >= 0x80 && b <= 0x8F;
  default: return b >= 0x80 && b <= 0xBF;
  }
}

static int lead_width(unsigned c) {
  if (c < 0x80) return 1;
  if (c >= 0xC2 && c <= 0xDF) return 2;
  if (c >= 0xE0 && c <= 0xEF) return 3;
  if (c >= 0xF0 && c <= 0xF4) return 4;
  return 0;
}

size_t tok_utf8_check(const char *str, size_t len) {
  const unsigned char *s = (const unsigned char *)str;
  size_t i = 0;
  while (i < len) {
    if (len - i >= 8) {
      uint64_t v;
      memcpy(&v, s + i, 8);
      if (!(v & 0x8080808080808080ull)) {
        i += 8;
        continue;
      }
    }
    unsigned c = s[i];
    int w = lead_width(c);
    if (w == 1) {
      i++;
      continue;
    }
    if (w == 0 || len - i < (size_t)w) return i;
    if (!second_ok(c, s[i + 1])) return i;
    for (int k = 2; k < w; k++)
      if ((s[i + k] & 0xC0) != 0x80) return i;
    i += (size_t)w;
  }
  return len;
}

int tok_utf8_decode(const char *str, size_t n, int32_t *cp) {
  const unsigned char *s = (const unsigned char *)str;
  unsigned c = s[0];
  if (c < 0x80 || n < 2) {
    *cp = (int32_t)c;
    return 1;
  }
  if (c < 0xE0) {
    *cp = (int32_t)(((c & 0x1F) << 6) | (s[1] & 0x3F));
    return 2;
  }
  if (c < 0xF0 || n < 4) {
    *cp = (int32_t)(((c & 0x0F) << 12) | ((s[1] & 0x3F) << 6) | (s[2] & 0x3F));
    return 3;
  }
  *cp = (int32_t)(((c & 0x07) << 18) | ((s[1] & 0x3F) << 12) | ((s[2] & 0x3F) << 6) | (s[3] & 0x3F));
  return 4;
}

int tok_utf8_encode(int32_t cp, char *out) {
  unsigned char *o = (unsigned char *)out;
  if (cp < 0x80) {
    o[0] = (unsigned char)cp;
    return 1;
  }
  if (cp < 0x800) {
    o[0] = (unsigned char)(0xC0 | (cp >> 6));
    o[1] = (unsigned char)(0x80 | (cp & 0x3F));
    return 2;
  }
  if (cp < 0x10000) {
    o[0] = (unsigned char)(0xE0 | (cp >> 12));
    o[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
    o[2] = (unsigned char)(0x80 | (cp & 0x3F));
    return 3;
  }
  o[0] = (unsigned char)(0xF0 | (cp >> 18));
  o[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
  o[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
  o[3] = (unsigned char)(0x80 | (cp & 0x3F));
  return 4;
}

/* Characters that HF tokenizers' normaliser does not know. Its Unicode tables (the unicode-normalization-alignments
 * crate) predate utf8proc's by several versions, so for these it has combining class 0 and no decomposition,
 * while utf8proc reorders, decomposes or composes them. Found by normalising every code point, and every code
 * point after "a\u0345", with both and comparing; 0x11930 and 0x11935 are the parts of 0x11938, which utf8proc
 * would compose. */
typedef struct cp_range {
  int32_t lo, hi;
} cp_range;

static const cp_range g_unknown_canon[] = {
    {0x7FD, 0x7FD},     {0x898, 0x89F},     {0x8CA, 0x8D3},     {0x9FE, 0x9FE},     {0xC3C, 0xC3C},
    {0xD3B, 0xD3C},     {0xEBA, 0xEBA},     {0x1715, 0x1715},   {0x1ABF, 0x1ACE},   {0x1DF6, 0x1DFA},
    {0xA82C, 0xA82C},   {0x10D24, 0x10D27}, {0x10EAB, 0x10EAC}, {0x10EFD, 0x10EFF}, {0x10F46, 0x10F50},
    {0x10F82, 0x10F85}, {0x11070, 0x11070}, {0x1133B, 0x1133B}, {0x1145E, 0x1145E}, {0x11839, 0x1183A},
    {0x11930, 0x11930}, {0x11935, 0x11935}, {0x11938, 0x11938}, {0x1193D, 0x1193E}, {0x11943, 0x11943},
    {0x119E0, 0x119E0}, {0x11A34, 0x11A34}, {0x11A47, 0x11A47}, {0x11A99, 0x11A99}, {0x11D42, 0x11D42},
    {0x11D44, 0x11D45}, {0x11D97, 0x11D97}, {0x11F41, 0x11F42}, {0x16FF0, 0x16FF1}, {0x1E08F, 0x1E08F},
    {0x1E130, 0x1E136}, {0x1E2AE, 0x1E2AE}, {0x1E2EC, 0x1E2EF}, {0x1E4EC, 0x1E4EF},
};

/* The same for compatibility decompositions (NFKC, NFKD), on top of the list above. */
static const cp_range g_unknown_compat[] = {
    {0x32FF, 0x32FF},   {0xA7F2, 0xA7F4},   {0xAB69, 0xAB69},   {0x10781, 0x10785}, {0x10787, 0x107B0},
    {0x107B2, 0x107BA}, {0x1E030, 0x1E06D}, {0x1F16C, 0x1F16C}, {0x1FBF0, 0x1FBF9},
};

static bool in_ranges(const cp_range *r, size_t n, int32_t cp) {
  size_t lo = 0, hi = n;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if (cp < r[mid].lo)
      hi = mid;
    else if (cp > r[mid].hi)
      lo = mid + 1;
    else
      return true;
  }
  return false;
}

bool tok_norm_unknown(int32_t cp, bool compat) {
  if (in_ranges(g_unknown_canon, sizeof g_unknown_canon / sizeof g_unknown_canon[0], cp)) return true;
  return compat && in_ranges(g_unknown_compat, sizeof g_unknown_compat / sizeof g_unknown_compat[0], cp);
}

bool tok_is_white_space(int32_t cp) {
  /* PropList.txt White_Space (the \s of Rust's regex and of Oniguruma). */
  return (cp >= 0x09 && cp <= 0x0D) || cp == 0x20 || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
         (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F ||
         cp == 0x3000;
}

/* Word characters of Unicode 16 that utf8proc (Unicode 15) does not know, found by testing every code point against
 * HF tokenizers' single_word rule. */
static const cp_range g_word_u16[] = {
    {0x897, 0x897},     {0x1C89, 0x1C8A},   {0xA7CB, 0xA7CD},   {0xA7DA, 0xA7DC},   {0x105C0, 0x105F3},
    {0x10D40, 0x10D65}, {0x10D69, 0x10D6D}, {0x10D6F, 0x10D85}, {0x10EC2, 0x10EC4}, {0x10EFC, 0x10EFC},
    {0x11380, 0x11389}, {0x1138B, 0x1138B}, {0x1138E, 0x1138E}, {0x11390, 0x113B5}, {0x113B7, 0x113C0},
    {0x113C2, 0x113C2}, {0x113C5, 0x113C5}, {0x113C7, 0x113CA}, {0x113CC, 0x113D3}, {0x113E1, 0x113E2},
    {0x116D0, 0x116E3}, {0x11BC0, 0x11BE0}, {0x11BF0, 0x11BF9}, {0x11F5A, 0x11F5A}, {0x13460, 0x143FA},
    {0x16100, 0x16139}, {0x16D40, 0x16D6C}, {0x16D70, 0x16D79}, {0x18CFF, 0x18CFF}, {0x1CCF0, 0x1CCF9},
    {0x1E5D0, 0x1E5FA}, {0x2EBF0, 0x2EE5D},
};

bool tok_is_word_char(int32_t cp) {
  /* Rust regex \w: Alphabetic, M, Nd, Pc, Join_Control. Alphabetic is the letters, Nl and Other_Alphabetic; the
   * latter is almost all marks, plus the circled and squared Latin letters listed here. */
  if (cp < 0x80)
    return (cp >= '0' && cp <= '9') || (cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z') || cp == '_';
  if (cp == 0x200C || cp == 0x200D) return true;
  if (in_ranges(g_word_u16, sizeof g_word_u16 / sizeof g_word_u16[0], cp)) return true;
  if ((cp >= 0x24B6 && cp <= 0x24E9) || (cp >= 0x1F130 && cp <= 0x1F149) || (cp >= 0x1F150 && cp <= 0x1F169) ||
      (cp >= 0x1F170 && cp <= 0x1F189))
    return true;
  switch (utf8proc_category(cp)) {
  case UTF8PROC_CATEGORY_LU:
  case UTF8PROC_CATEGORY_LL:
  case UTF8PROC_CATEGORY_LT:
  case UTF8PROC_CATEGORY_LM:
  case UTF8PROC_CATEGORY_LO:
  case UTF8PROC_CATEGORY_NL:
  case UTF8PROC_CATEGORY_MN:
  case UTF8PROC_CATEGORY_MC:
  case UTF8PROC_CATEGORY_ME:
  case UTF8PROC_CATEGORY_ND:
  case UTF8PROC_CATEGORY_PC: return true;
  default: return false;
  }
}

static tok_bytelevel g_bytelevel;
static pthread_once_t g_bytelevel_once = PTHREAD_ONCE_INIT;

static void bytelevel_init(void) {
  /* GPT-2's bytes_to_unicode: printable Latin-1 bytes stand for themselves, the other 68 bytes for U+0100.. in
   * byte order. */
  tok_bytelevel *t = &g_bytelevel;
  for (int i = 0; i < 324; i++) t->dec[i] = -1;
  int next = 256;
  for (int b = 0; b < 256; b++) {
    bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    int32_t cp = printable ? b : next++;
    t->enc_len[b] = (uint8_t)tok_utf8_encode(cp, t->enc[b]);
    t->dec[cp] = (int16_t)b;
  }
}

const tok_bytelevel *tok_bytelevel_table(void) {
  pthread_once(&g_bytelevel_once, bytelevel_init);
  return &g_bytelevel;
}
