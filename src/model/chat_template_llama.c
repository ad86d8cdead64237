/*
 * model/chat_template_llama.c: the Llama 3 and Llama 3.1/3.2/3.3 templates, rendered as their Jinja sources
 * (tests/data/chat/llama3.json, llama31.json, llama32.json) render them, quirks included: content goes through
 * Jinja's trim (Python's str.strip() of str(content), so a null content prints "None"), a tool result that is a
 * string is still passed through tojson (so it arrives quoted), and tool definitions are dumped with indent=4.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kiln/status.h"
#include "model/chat_template_impl.h"

static bool streq(const char *a, const char *b) { return a && b && strcmp(a, b) == 0; }

/* Appends trim(str(v)): what `value | trim` prints. */
static int put_trimmed(kiln_strbuf *b, const json_t *v, const char *what, size_t i) {
  kiln_strbuf tmp = {0};
  if (!chat__put_str(&tmp, v)) {
    free(tmp.p);
    return kiln_error(KILN_EINVAL, "chat template: message %zu: %s must be a string", i, what);
  }
  if (tmp.failed) {
    free(tmp.p);
    return kiln_error(KILN_ENOMEM, "chat template: out of memory");
  }
  size_t off, len;
  chat__strip(tmp.p ? tmp.p : "", tmp.n, NULL, true, true, &off, &len);
  if (len) kiln_strbuf_put(b, tmp.p + off, len); /* tmp.p is NULL when str(v) is empty */
  free(tmp.p);
  return KILN_OK;
}

int chat__render_llama3(const kiln_chat_template *t, const json_t *msgs, const kiln_chat_opts *o, kiln_strbuf *b) {
  for (size_t i = 0; i < json_array_size(msgs); i++) {
    const json_t *m = json_array_get(msgs, i);
    const char *role = chat__str(m, "role");
    if (!role) return kiln_error(KILN_EINVAL, "chat template: message %zu: role must be a string", i);
    if (i == 0) kiln_strbuf_puts(b, t->bos_token);
    kiln_strbuf_puts(b, "<|start_header_id|>");
    kiln_strbuf_puts(b, role);
    kiln_strbuf_puts(b, "<|end_header_id|>\n\n");
    int rc = put_trimmed(b, json_object_get(m, "content"), "content", i);
    if (rc) return rc;
    kiln_strbuf_puts(b, "<|eot_id|>");
  }
  if (o->add_generation_prompt) kiln_strbuf_puts(b, "<|start_header_id|>assistant<|end_header_id|>\n\n");
  return KILN_OK;
}

static const char llama_tools_lead[] =
    "Respond in the format {\"name\": function name, \"parameters\": dictionary of argument name and its value}."
    "Do not use variables.\n\n";

static int put_tool_list(kiln_strbuf *b, const json_t *tools) {
  if (!json_is_array(tools)) return kiln_error(KILN_EINVAL, "chat template: tools must be a list");
  for (size_t k = 0; k < json_array_size(tools); k++) {
    chat__dumps(b, json_array_get(tools, k), 4);
    kiln_strbuf_puts(b, "\n\n");
  }
  return KILN_OK;
}

static bool in_string_list(const json_t *list, const char *s) {
  for (size_t k = 0; k < json_array_size(list); k++)
    if (streq(json_string_value(json_array_get(list, k)), s)) return true;
  return false;
}

/* An assistant message carrying tool_calls: exactly one call, as JSON, or as <|python_tag|>name.call(k="v") when
 * the name is one of the builtin tools. */
static int llama31_tool_call(const kiln_chat_template *t, const json_t *m, const json_t *builtin, size_t i,
                             kiln_strbuf *b) {
  const json_t *calls = json_object_get(m, "tool_calls");
  if (!json_is_array(calls)) return kiln_error(KILN_EINVAL, "chat template: message %zu: tool_calls must be a list", i);
  if (json_array_size(calls) != 1)
    return kiln_error(KILN_EINVAL, "chat template: This model only supports single tool-calls at once!");
  const json_t *fn = json_object_get(json_array_get(calls, 0), "function");
  const char *name = chat__str(fn, "name");
  if (!name) return kiln_error(KILN_EINVAL, "chat template: message %zu: tool call needs a function name", i);
  const json_t *args = json_object_get(fn, "arguments");
  kiln_strbuf_puts(b, "<|start_header_id|>assistant<|end_header_id|>\n\n");
  if (t->builtin_tools && builtin && in_string_list(builtin, name)) {
    if (!json_is_object(args))
      return kiln_error(KILN_EINVAL, "chat template: message %zu: builtin tool arguments must be an object", i);
    kiln_strbuf_puts(b, "<|python_tag|>");
    kiln_strbuf_puts(b, name);
    kiln_strbuf_puts(b, ".call(");
    const char *key;
    json_t *val;
    bool first = true;
    json_object_foreach((json_t *)args, key, val) {
      if (!json_is_string(val))
        return kiln_error(KILN_EINVAL, "chat template: message %zu: builtin tool argument '%s' must be a string", i,
                          key);
      if (!first) kiln_strbuf_puts(b, ", ");
      first = false;
      kiln_strbuf_puts(b, key);
      kiln_strbuf_puts(b, "=\"");
      kiln_strbuf_put(b, json_string_value(val), json_string_length(val));
      kiln_strbuf_puts(b, "\"");
    }
    kiln_strbuf_puts(b, ")");
  } else {
    if (!args) return kiln_error(KILN_EINVAL, "chat template: message %zu: tool call has no arguments", i);
    kiln_strbuf_puts(b, "{\"name\": \"");
    kiln_strbuf_puts(b, name);
    kiln_strbuf_puts(b, "\", \"parameters\": ");
    chat__dumps(b, args, -1);
    kiln_strbuf_puts(b, "}");
  }
  kiln_strbuf_puts(b, t->builtin_tools && builtin ? "<|eom_id|>" : "<|eot_id|>");
  return KILN_OK;
}

int chat__render_llama31(const kiln_chat_template *t, const json_t *msgs, const kiln_chat_opts *o, kiln_strbuf *b) {
  const json_t *kw = json_is_object(o->kwargs) ? o->kwargs : NULL;
  size_t n = json_array_size(msgs);
  if (n == 0) return kiln_error(KILN_EINVAL, "chat template: no messages");
  for (size_t i = 0; i < n; i++)
    if (!chat__str(json_array_get(msgs, i), "role"))
      return kiln_error(KILN_EINVAL, "chat template: message %zu: role must be a string", i);
  const json_t *tools = o->tools;
  if (kw && json_object_get(kw, "custom_tools")) tools = json_object_get(kw, "custom_tools");
  if (json_is_null(tools)) tools = NULL;
  const json_t *tiu = kw ? json_object_get(kw, "tools_in_user_message") : NULL;
  bool tools_in_user = tiu ? chat__truthy(tiu) : true;
  char today[64];
  const char *date = "26 Jul 2024";
  const json_t *dv = kw ? json_object_get(kw, "date_string") : NULL;
  if (dv) {
    if (!json_is_string(dv)) return kiln_error(KILN_EINVAL, "chat template: date_string must be a string");
    date = json_string_value(dv);
  } else if (t->date_from_clock) {
    time_t now = time(NULL);
    struct tm tm;
    if (localtime_r(&now, &tm) && strftime(today, sizeof today, "%d %b %Y", &tm) > 0) date = today;
  }
  const json_t *builtin = t->builtin_tools && kw ? json_object_get(kw, "builtin_tools") : NULL;
  if (builtin) {
    if (!json_is_array(builtin)) return kiln_error(KILN_EINVAL, "chat template: builtin_tools must be a list");
    for (size_t k = 0; k < json_array_size(builtin); k++)
      if (!json_is_string(json_array_get(builtin, k)))
        return kiln_error(KILN_EINVAL, "chat template: builtin_tools must be a list of strings");
  }

  kiln_strbuf_puts(b, t->bos_token);
  size_t start = 0;
  kiln_strbuf sys = {0};
  int rc = KILN_OK;
  if (streq(chat__str(json_array_get(msgs, 0), "role"), "system")) {
    rc = put_trimmed(&sys, json_object_get(json_array_get(msgs, 0), "content"), "content", 0);
    if (rc) goto out;
    start = 1;
  }
  kiln_strbuf_puts(b, "<|start_header_id|>system<|end_header_id|>\n\n");
  if (builtin || tools) kiln_strbuf_puts(b, "Environment: ipython\n");
  if (builtin) {
    kiln_strbuf_puts(b, "Tools: ");
    bool first = true;
    for (size_t k = 0; k < json_array_size(builtin); k++) {
      const char *s = json_string_value(json_array_get(builtin, k));
      if (streq(s, "code_interpreter")) continue;
      if (!first) kiln_strbuf_puts(b, ", ");
      first = false;
      kiln_strbuf_puts(b, s);
    }
    kiln_strbuf_puts(b, "\n\n");
  }
  kiln_strbuf_puts(b, "Cutting Knowledge Date: December 2023\nToday Date: ");
  kiln_strbuf_puts(b, date);
  kiln_strbuf_puts(b, "\n\n");
  if (tools && !tools_in_user) {
    kiln_strbuf_puts(b, "You have access to the following functions. To call a function, please respond with JSON for "
                      "a function call.");
    kiln_strbuf_puts(b, llama_tools_lead);
    if ((rc = put_tool_list(b, tools))) goto out;
  }
  if (sys.p) kiln_strbuf_put(b, sys.p, sys.n);
  kiln_strbuf_puts(b, "<|eot_id|>");
  if (tools_in_user && tools) {
    if (start >= n) {
      rc = kiln_error(KILN_EINVAL, "chat template: Cannot put tools in the first user message when there's no first "
                                   "user message!");
      goto out;
    }
    kiln_strbuf first = {0};
    rc = put_trimmed(&first, json_object_get(json_array_get(msgs, start), "content"), "content", start);
    if (rc) {
      free(first.p);
      goto out;
    }
    start++;
    kiln_strbuf_puts(b, "<|start_header_id|>user<|end_header_id|>\n\n");
    kiln_strbuf_puts(b, "Given the following functions, please respond with a JSON for a function call with its proper "
                      "arguments that best answers the given prompt.\n\n");
    kiln_strbuf_puts(b, llama_tools_lead);
    rc = put_tool_list(b, tools);
    if (!rc && first.p) kiln_strbuf_put(b, first.p, first.n);
    free(first.p);
    if (rc) goto out;
    kiln_strbuf_puts(b, "<|eot_id|>");
  }
  for (size_t i = start; i < n; i++) {
    const json_t *m = json_array_get(msgs, i);
    const char *role = chat__str(m, "role");
    bool is_tool = streq(role, "ipython") || streq(role, "tool");
    bool has_calls = json_object_get(m, "tool_calls") != NULL;
    if (!is_tool && !has_calls) {
      kiln_strbuf_puts(b, "<|start_header_id|>");
      kiln_strbuf_puts(b, role);
      kiln_strbuf_puts(b, "<|end_header_id|>\n\n");
      if ((rc = put_trimmed(b, json_object_get(m, "content"), "content", i))) goto out;
      kiln_strbuf_puts(b, "<|eot_id|>");
    } else if (has_calls) {
      if ((rc = llama31_tool_call(t, m, builtin, i, b))) goto out;
    } else {
      kiln_strbuf_puts(b, "<|start_header_id|>ipython<|end_header_id|>\n\n");
      const json_t *cv = json_object_get(m, "content");
      /* `content is mapping or content is iterable`: strings, lists and objects go through tojson. */
      if (!cv) {
        rc = kiln_error(KILN_EINVAL, "chat template: message %zu: a tool message needs content", i);
        goto out;
      }
      if (json_is_string(cv) || json_is_array(cv) || json_is_object(cv))
        chat__dumps(b, cv, -1);
      else
        chat__put_str(b, cv);
      kiln_strbuf_puts(b, "<|eot_id|>");
    }
  }
  if (o->add_generation_prompt) kiln_strbuf_puts(b, "<|start_header_id|>assistant<|end_header_id|>\n\n");
out:
  free(sys.p);
  return rc;
}
