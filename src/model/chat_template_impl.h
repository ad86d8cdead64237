/*
 * model/chat_template_impl.h (internal): what the chat template renderers share (they write into a kiln_strbuf): the
 * Python string operations the Jinja templates call (str.strip and friends, str()), and json.dumps as Hugging
 * Face's tojson filter runs it (ensure_ascii=False, key order kept, optional indent).
 */
#ifndef KILN_CHAT_TEMPLATE_IMPL_H
#define KILN_CHAT_TEMPLATE_IMPL_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "base/strbuf.h"
#include "kiln/chat.h"

/* Python's str.strip()/lstrip()/rstrip() with no argument (Unicode whitespace, as str.isspace() defines it) when
 * `chars` is NULL, else stripping the given ASCII characters. Returns the kept range of s[0..n). */
void chat__strip(const char *s, size_t n, const char *chars, bool left, bool right, size_t *off, size_t *len);

/* Python's json.dumps(v, ensure_ascii=False, indent=indent) (indent < 0: none). */
void chat__dumps(kiln_strbuf *b, const json_t *v, int indent);

/* Python's truthiness of a JSON value (NULL, as an undefined variable, is false). */
bool chat__truthy(const json_t *v);

/* Appends what Jinja prints for a value: str(v) in Python, "" for NULL (undefined), "None" for null, "True" and
 * "False". Arrays and objects (printed as Python reprs) are refused: returns false. */
bool chat__put_str(kiln_strbuf *b, const json_t *v);

/* The renderers: 0 or KILN_EINVAL with a message. */
int chat__render_chatml(const kiln_chat_template *t, const json_t *msgs, const kiln_chat_opts *o, kiln_strbuf *b);
int chat__render_qwen3(const kiln_chat_template *t, const json_t *msgs, const kiln_chat_opts *o, kiln_strbuf *b);
int chat__render_llama3(const kiln_chat_template *t, const json_t *msgs, const kiln_chat_opts *o, kiln_strbuf *b);
int chat__render_llama31(const kiln_chat_template *t, const json_t *msgs, const kiln_chat_opts *o, kiln_strbuf *b);

/* A message's string field, or NULL when it is absent or not a string. */
const char *chat__str(const json_t *obj, const char *key);

#endif /* KILN_CHAT_TEMPLATE_IMPL_H */
