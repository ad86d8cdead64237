/*
 * base/utf8.h (internal): UTF-8 repair, shared by the tokenizer's decode, the generation loop's text release and
 * the CLI's JSON output, so that every place that turns bytes into text replaces the same bytes the same way.
 *
 * Each maximal ill-formed subpart (Unicode's recommended practice; Rust's String::from_utf8_lossy, Python's
 * errors="replace" and HF tokenizers all do this) becomes one U+FFFD: a byte that cannot start a sequence is one
 * subpart, and a lead byte with the continuation bytes it validly took before the sequence broke off (or the input
 * ended) is another. Overlongs, surrogates and code points past U+10FFFF are ill-formed (RFC 3629).
 */
#ifndef KILN_BASE_UTF8_H
#define KILN_BASE_UTF8_H

#include <stddef.h>

/* Bytes at the end of s[0..n) that form a valid but incomplete UTF-8 sequence (0..3). */
size_t kiln_utf8_incomplete_tail(const char *s, size_t n);

/* Writes s[0..n) to out (capacity out_cap) as valid UTF-8, each ill-formed subpart replaced by U+FFFD. Returns the
 * bytes written; out_cap >= 3 * n always suffices (it stops early, at a whole character, when out is full). Writes
 * no NUL. */
size_t kiln_utf8_sanitize(char *out, size_t out_cap, const char *s, size_t n);

#endif /* KILN_BASE_UTF8_H */
