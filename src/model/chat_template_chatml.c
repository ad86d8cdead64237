/*
 * model/chat_template_chatml.c: the plain ChatML template and Qwen3's template, rendered as their Jinja sources
 * (tests/data/chat/chatml.json and qwen3.json) render them with Hugging Face's settings (trim_blocks,
 * lstrip_blocks, tojson = json.dumps(ensure_ascii=False)).
 */
#include <string.h>

#include "kiln/status.h"
#include "model/chat_template_impl.h"

static bool streq(const char *a, const char *b) { return a && b && strcmp(a, b) == 0; }

static bool starts_with(const char *s, size_t n, const char *p) {
  size_t k = strlen(p);
  return n >= k && memcmp(s, p, k) == 0;
}

static bool ends_with(const char *s, size_t n, const char *p) {
  size_t k = strlen(p);
  return n >= k && memcmp(s + n - k, p, k) == 0;
}

/* The last occurrence of `pat` in s[0..n), or NULL. */
static const char *find_last(const char *s, size_t n, const char *pat) {
  size_t k = strlen(pat);
  if (n < k) return NULL;
  for (size_t i = n - k + 1; i-- > 0;)
    if (memcmp(s + i, pat, k) == 0) return s + i;
  return NULL;
}

static const char *find_first(const char *s, size_t n, const char *pat) {
  size_t k = strlen(pat);
  for (size_t i = 0; i + k <= n; i++)
    if (memcmp(s + i, pat, k) == 0) return s + i;
  return NULL;
}

int chat__render_chatml(const kiln_chat_template *t, const json_t *msgs, const kiln_chat_opts *o, kiln_strbuf *b) {
  (void)t;
  for (size_t i = 0; i < json_array_size(msgs); i++) {
    const json_t *m = json_array_get(msgs, i);
    const char *role = chat__str(m, "role"), *content = chat__str(m, "content");
    if (!role) return kiln_error(KILN_EINVAL, "chat template: message %zu: role must be a string", i);
    if (!content) return kiln_error(KILN_EINVAL, "chat template: message %zu: content must be a string", i);
    kiln_strbuf_puts(b, "<|im_start|>");
    kiln_strbuf_puts(b, role);
    kiln_strbuf_puts(b, "\n");
    kiln_strbuf_puts(b, content);
    kiln_strbuf_puts(b, "<|im_end|>\n");
  }
  if (o->add_generation_prompt) kiln_strbuf_puts(b, "<|im_start|>assistant\n");
  return KILN_OK;
}

static int qwen3_tool_calls(const json_t *calls, bool have_content, size_t i, kiln_strbuf *b) {
  if (!json_is_array(calls))
    return kiln_error(KILN_EINVAL, "chat template: message %zu: tool_calls must be a list", i);
  for (size_t j = 0; j < json_array_size(calls); j++) {
    const json_t *tc = json_array_get(calls, j);
    if (!json_is_object(tc))
      return kiln_error(KILN_EINVAL, "chat template: message %zu: tool call %zu must be an object", i, j);
    if ((j == 0 && have_content) || j > 0) kiln_strbuf_puts(b, "\n");
    const json_t *fn = json_object_get(tc, "function");
    if (chat__truthy(fn)) {
      if (!json_is_object(fn))
        return kiln_error(KILN_EINVAL, "chat template: message %zu: tool call %zu: function must be an object", i, j);
      tc = fn;
    }
    kiln_strbuf_puts(b, "<tool_call>\n{\"name\": \"");
    if (!chat__put_str(b, json_object_get(tc, "name")))
      return kiln_error(KILN_EINVAL, "chat template: message %zu: tool call %zu: bad name", i, j);
    kiln_strbuf_puts(b, "\", \"arguments\": ");
    const json_t *args = json_object_get(tc, "arguments");
    if (!args) return kiln_error(KILN_EINVAL, "chat template: message %zu: tool call %zu: no arguments", i, j);
    if (json_is_string(args))
      kiln_strbuf_put(b, json_string_value(args), json_string_length(args));
    else
      chat__dumps(b, args, -1);
    kiln_strbuf_puts(b, "}\n</tool_call>");
  }
  return KILN_OK;
}

/* An assistant turn: the reasoning is split off the content (from reasoning_content, or from a <think> block in
 * the content) and shown only for turns after the last real user query. */
static int qwen3_assistant(const json_t *m, size_t i, size_t n, size_t last_query, kiln_strbuf *b) {
  const json_t *cv = json_object_get(m, "content");
  const char *content = json_is_string(cv) ? json_string_value(cv) : "";
  size_t clen = json_is_string(cv) ? json_string_length(cv) : 0;
  const char *reason = "";
  size_t rlen = 0, off, len;
  const json_t *rv = json_object_get(m, "reasoning_content");
  if (json_is_string(rv)) {
    reason = json_string_value(rv);
    rlen = json_string_length(rv);
  } else if (find_first(content, clen, "</think>")) {
    /* content.split('</think>')[0].rstrip('\n').split('<think>')[-1].lstrip('\n') */
    const char *end = find_first(content, clen, "</think>");
    chat__strip(content, (size_t)(end - content), "\n", false, true, &off, &len);
    const char *open = find_last(content, len, "<think>");
    const char *r0 = open ? open + 7 : content;
    chat__strip(r0, (size_t)(content + len - r0), "\n", true, false, &off, &len);
    reason = r0 + off;
    rlen = len;
    /* content.split('</think>')[-1].lstrip('\n') */
    const char *last = find_last(content, clen, "</think>") + 8;
    chat__strip(last, (size_t)(content + clen - last), "\n", true, false, &off, &len);
    content = last + off;
    clen = len;
  }
  kiln_strbuf_puts(b, "<|im_start|>assistant\n");
  if (i > last_query && (i == n - 1 || rlen > 0)) {
    kiln_strbuf_puts(b, "<think>\n");
    chat__strip(reason, rlen, "\n", true, true, &off, &len);
    kiln_strbuf_put(b, reason + off, len);
    kiln_strbuf_puts(b, "\n</think>\n\n");
    chat__strip(content, clen, "\n", true, false, &off, &len);
    kiln_strbuf_put(b, content + off, len);
  } else {
    kiln_strbuf_put(b, content, clen);
  }
  const json_t *calls = json_object_get(m, "tool_calls");
  if (chat__truthy(calls)) {
    int rc = qwen3_tool_calls(calls, clen > 0, i, b);
    if (rc) return rc;
  }
  kiln_strbuf_puts(b, "<|im_end|>\n");
  return KILN_OK;
}

int chat__render_qwen3(const kiln_chat_template *t, const json_t *msgs, const kiln_chat_opts *o, kiln_strbuf *b) {
  (void)t;
  size_t n = json_array_size(msgs);
  if (n == 0) return kiln_error(KILN_EINVAL, "chat template: no messages");
  for (size_t i = 0; i < n; i++)
    if (!chat__str(json_array_get(msgs, i), "role"))
      return kiln_error(KILN_EINVAL, "chat template: message %zu: role must be a string", i);
  const json_t *m0 = json_array_get(msgs, 0);
  bool sys0 = streq(chat__str(m0, "role"), "system");
  if (sys0 && !chat__str(m0, "content"))
    return kiln_error(KILN_EINVAL, "chat template: the system message's content must be a string");
  const json_t *tools = o->tools;
  if (chat__truthy(tools)) {
    if (!json_is_array(tools)) return kiln_error(KILN_EINVAL, "chat template: tools must be a list");
    kiln_strbuf_puts(b, "<|im_start|>system\n");
    if (sys0) {
      kiln_strbuf_puts(b, chat__str(m0, "content"));
      kiln_strbuf_puts(b, "\n\n");
    }
    kiln_strbuf_puts(b, "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
                      "You are provided with function signatures within <tools></tools> XML tags:\n<tools>");
    for (size_t k = 0; k < json_array_size(tools); k++) {
      kiln_strbuf_puts(b, "\n");
      chat__dumps(b, json_array_get(tools, k), -1);
    }
    kiln_strbuf_puts(b, "\n</tools>\n\nFor each function call, return a json object with function name and arguments "
                      "within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, "
                      "\"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n");
  } else if (sys0) {
    kiln_strbuf_puts(b, "<|im_start|>system\n");
    kiln_strbuf_puts(b, chat__str(m0, "content"));
    kiln_strbuf_puts(b, "<|im_end|>\n");
  }
  /* The last user message that is a real query (not a wrapped tool response); multi-step tool turns after it keep
   * their reasoning. */
  size_t last_query = n - 1;
  for (size_t k = n; k-- > 0;) {
    const json_t *m = json_array_get(msgs, k);
    const json_t *cv = json_object_get(m, "content");
    if (!streq(chat__str(m, "role"), "user") || !json_is_string(cv)) continue;
    const char *c = json_string_value(cv);
    size_t cl = json_string_length(cv);
    if (starts_with(c, cl, "<tool_response>") && ends_with(c, cl, "</tool_response>")) continue;
    last_query = k;
    break;
  }
  for (size_t i = 0; i < n; i++) {
    const json_t *m = json_array_get(msgs, i);
    const char *role = chat__str(m, "role");
    const json_t *cv = json_object_get(m, "content");
    if (streq(role, "user") || (streq(role, "system") && i > 0)) {
      kiln_strbuf_puts(b, "<|im_start|>");
      kiln_strbuf_puts(b, role);
      kiln_strbuf_puts(b, "\n");
      if (json_is_string(cv)) kiln_strbuf_put(b, json_string_value(cv), json_string_length(cv));
      kiln_strbuf_puts(b, "<|im_end|>\n");
    } else if (streq(role, "assistant")) {
      int rc = qwen3_assistant(m, i, n, last_query, b);
      if (rc) return rc;
    } else if (streq(role, "tool")) {
      if (i == 0 || !streq(chat__str(json_array_get(msgs, i - 1), "role"), "tool"))
        kiln_strbuf_puts(b, "<|im_start|>user");
      kiln_strbuf_puts(b, "\n<tool_response>\n");
      if (json_is_string(cv)) kiln_strbuf_put(b, json_string_value(cv), json_string_length(cv));
      kiln_strbuf_puts(b, "\n</tool_response>");
      if (i == n - 1 || !streq(chat__str(json_array_get(msgs, i + 1), "role"), "tool"))
        kiln_strbuf_puts(b, "<|im_end|>\n");
    }
  }
  if (o->add_generation_prompt) {
    kiln_strbuf_puts(b, "<|im_start|>assistant\n");
    const json_t *think = o->kwargs ? json_object_get(o->kwargs, "enable_thinking") : NULL;
    if (json_is_false(think)) kiln_strbuf_puts(b, "<think>\n\n</think>\n\n");
  }
  return KILN_OK;
}
