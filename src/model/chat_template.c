/*
 * model/chat_template.c: choosing a chat template family (from the Jinja source's markers, by name, or from
 * tokenizer_config.json) and the public rendering entry points. The families themselves are rendered in
 * chat_template_chatml.c and chat_template_llama.c.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kiln/status.h"
#include "model/chat_template_impl.h"
#include "model/loader_io.h"

const char *kiln_chat_format_name(kiln_chat_format f) {
  switch (f) {
  case KILN_CHAT_CHATML: return "chatml";
  case KILN_CHAT_QWEN3: return "qwen3";
  case KILN_CHAT_LLAMA3: return "llama3";
  case KILN_CHAT_LLAMA31: return "llama31";
  default: return "none";
  }
}

int kiln_chat_template_detect(kiln_chat_template *t, const char *src) {
  if (!t || !src) return kiln_error(KILN_EINVAL, "chat template: no source");
  bool tools = strstr(src, "tool") != NULL;
  t->date_from_clock = false;
  t->builtin_tools = false;
  if (strstr(src, "<|start_header_id|>")) {
    if (strstr(src, "Cutting Knowledge Date")) {
      t->format = KILN_CHAT_LLAMA31;
      t->date_from_clock = strstr(src, "strftime_now") != NULL;
      t->builtin_tools = strstr(src, "builtin_tools") != NULL;
      return KILN_OK;
    }
    if (!tools) {
      t->format = KILN_CHAT_LLAMA3;
      return KILN_OK;
    }
  } else if (strstr(src, "<|im_start|>")) {
    if (strstr(src, "<think>") || strstr(src, "enable_thinking")) {
      t->format = KILN_CHAT_QWEN3;
      return KILN_OK;
    }
    /* A ChatML template with tool logic of its own (Qwen2.5, for one) renders differently from plain ChatML. */
    if (!tools) {
      t->format = KILN_CHAT_CHATML;
      return KILN_OK;
    }
  }
  t->format = KILN_CHAT_NONE;
  return kiln_error(KILN_EUNSUPPORTED, "chat template: not of a known family (chatml, qwen3, llama3, llama31); "
                                       "choose one with --chat-template");
}

int kiln_chat_template_by_name(kiln_chat_template *t, const char *name) {
  if (!t || !name) return kiln_error(KILN_EINVAL, "chat template: no name");
  memset(t, 0, sizeof *t);
  if (strcmp(name, "chatml") == 0)
    t->format = KILN_CHAT_CHATML;
  else if (strcmp(name, "qwen3") == 0)
    t->format = KILN_CHAT_QWEN3;
  else if (strcmp(name, "llama3") == 0)
    t->format = KILN_CHAT_LLAMA3;
  else if (strcmp(name, "llama31") == 0) {
    t->format = KILN_CHAT_LLAMA31;
    t->builtin_tools = true;
  } else if (strcmp(name, "llama32") == 0) {
    t->format = KILN_CHAT_LLAMA31;
    t->date_from_clock = true;
  } else
    return kiln_error(KILN_EINVAL, "chat template: unknown family '%s' (chatml, qwen3, llama3, llama31, llama32)",
                      name);
  if (t->format == KILN_CHAT_LLAMA3 || t->format == KILN_CHAT_LLAMA31)
    snprintf(t->bos_token, sizeof t->bos_token, "%s", "<|begin_of_text|>");
  return KILN_OK;
}

/* Template files are small; refuse anything past this rather than read a mistaken path to the end. */
#define CHAT_FILE_MAX ((size_t)16 << 20)

/* The template source in tokenizer_config.json's chat_template (a string, or named templates) or, as transformers
 * 4.43+ saves it, in chat_template.jinja beside it. *src is malloc'd. */
static int template_source(const json_t *cfg, const char *path, char **src) {
  const json_t *ct = json_object_get(cfg, "chat_template");
  const char *s = NULL;
  if (json_is_string(ct)) {
    s = json_string_value(ct);
  } else if (json_is_array(ct)) {
    for (size_t i = 0; i < json_array_size(ct) && !s; i++) {
      const json_t *e = json_array_get(ct, i);
      const char *nm = chat__str(e, "name");
      if (nm && strcmp(nm, "default") == 0) s = chat__str(e, "template");
    }
    if (!s) s = chat__str(json_array_get(ct, 0), "template");
  }
  if (s) {
    *src = strdup(s);
    return *src ? KILN_OK : kiln_error(KILN_ENOMEM, "%s: out of memory", path);
  }
  const char *slash = strrchr(path, '/');
  size_t dl = slash ? (size_t)(slash - path + 1) : 0;
  char *jp = malloc(dl + 32);
  if (!jp) return kiln_error(KILN_ENOMEM, "%s: out of memory", path);
  memcpy(jp, path, dl);
  strcpy(jp + dl, "chat_template.jinja");
  size_t len;
  int rc = kiln_loader_read_file(jp, CHAT_FILE_MAX, src, &len);
  free(jp);
  if (rc == KILN_ENOTFOUND) return kiln_error(KILN_ENOTFOUND, "%s: no chat_template", path);
  return rc;
}

int kiln_chat_template_load(kiln_chat_template *t, const char *path) {
  if (!t || !path) return kiln_error(KILN_EINVAL, "chat template: no path");
  memset(t, 0, sizeof *t);
  char *text = NULL, *src = NULL;
  size_t len;
  int rc = kiln_loader_read_file(path, CHAT_FILE_MAX, &text, &len);
  if (rc) return rc;
  json_error_t err;
  json_t *cfg = json_loadb(text, len, 0, &err);
  free(text);
  if (!json_is_object(cfg)) {
    json_decref(cfg);
    return kiln_error(KILN_EFORMAT, "%s:%d: %s", path, err.line, cfg ? "not a JSON object" : err.text);
  }
  rc = template_source(cfg, path, &src);
  if (!rc) rc = kiln_chat_template_detect(t, src);
  if (!rc) {
    const json_t *bos = json_object_get(cfg, "bos_token");
    if (json_is_object(bos)) bos = json_object_get(bos, "content");
    if (json_is_string(bos)) {
      if (json_string_length(bos) >= sizeof t->bos_token)
        rc = kiln_error(KILN_EFORMAT, "%s: bos_token longer than %zu bytes", path, sizeof t->bos_token - 1);
      else
        memcpy(t->bos_token, json_string_value(bos), json_string_length(bos) + 1);
    }
  }
  free(src);
  json_decref(cfg);
  return rc;
}

const char *kiln_chat_end_of_turn(const kiln_chat_template *t) {
  if (!t) return NULL;
  switch (t->format) {
  case KILN_CHAT_CHATML:
  case KILN_CHAT_QWEN3: return "<|im_end|>";
  case KILN_CHAT_LLAMA3:
  case KILN_CHAT_LLAMA31: return "<|eot_id|>";
  default: return NULL;
  }
}

int kiln_chat_render_json(const kiln_chat_template *t, const json_t *messages, const kiln_chat_opts *opts,
                          char **out, size_t *out_len) {
  if (!t || !messages || !out) return kiln_error(KILN_EINVAL, "chat template: bad arguments");
  *out = NULL;
  if (out_len) *out_len = 0;
  if (!json_is_array(messages)) return kiln_error(KILN_EINVAL, "chat template: messages must be a list");
  for (size_t i = 0; i < json_array_size(messages); i++)
    if (!json_is_object(json_array_get(messages, i)))
      return kiln_error(KILN_EINVAL, "chat template: message %zu is not an object", i);
  kiln_chat_opts none = {.add_generation_prompt = true};
  const kiln_chat_opts *o = opts ? opts : &none;
  if (o->kwargs && !json_is_object(o->kwargs))
    return kiln_error(KILN_EINVAL, "chat template: chat_template_kwargs must be an object");
  kiln_strbuf b = {0};
  int rc;
  switch (t->format) {
  case KILN_CHAT_CHATML: rc = chat__render_chatml(t, messages, o, &b); break;
  case KILN_CHAT_QWEN3: rc = chat__render_qwen3(t, messages, o, &b); break;
  case KILN_CHAT_LLAMA3: rc = chat__render_llama3(t, messages, o, &b); break;
  case KILN_CHAT_LLAMA31: rc = chat__render_llama31(t, messages, o, &b); break;
  default: rc = kiln_error(KILN_EUNSUPPORTED, "chat template: no template");
  }
  if (!rc && b.failed) rc = kiln_error(KILN_ENOMEM, "chat template: out of memory");
  if (!rc && !b.p) { /* an empty rendering is still a string */
    b.p = calloc(1, 1);
    if (!b.p) rc = kiln_error(KILN_ENOMEM, "chat template: out of memory");
  }
  if (rc) {
    free(b.p);
    return rc;
  }
  *out = b.p;
  if (out_len) *out_len = b.n;
  return KILN_OK;
}

static int parse_opt(const char *text, const char *what, json_t **v) {
  *v = NULL;
  if (!text) return KILN_OK;
  json_error_t err;
  *v = json_loads(text, JSON_REJECT_DUPLICATES, &err);
  if (!*v) return kiln_error(KILN_EINVAL, "chat template: %s: %s", what, err.text);
  return KILN_OK;
}

int kiln_chat_render(const kiln_chat_template *t, const char *messages_json, const char *tools_json,
                     const char *kwargs_json, bool add_generation_prompt, char **out, size_t *out_len) {
  json_t *msgs = NULL, *tools = NULL, *kw = NULL;
  int rc = parse_opt(messages_json, "messages", &msgs);
  if (!rc) rc = parse_opt(tools_json, "tools", &tools);
  if (!rc) rc = parse_opt(kwargs_json, "chat_template_kwargs", &kw);
  if (!rc && !msgs) rc = kiln_error(KILN_EINVAL, "chat template: no messages");
  if (!rc) {
    kiln_chat_opts o = {.add_generation_prompt = add_generation_prompt, .tools = tools, .kwargs = kw};
    rc = kiln_chat_render_json(t, msgs, &o, out, out_len);
  }
  json_decref(msgs);
  json_decref(tools);
  json_decref(kw);
  return rc;
}
