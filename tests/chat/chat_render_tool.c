/*
 * chat_render_tool: renders conversations with kiln's C chat templates, for golden.py to compare against Jinja.
 *
 * Usage: chat_render_tool DATA_DIR < cases.jsonl > results.jsonl
 * Each input line: {"template": NAME, "messages": [...], "tools": [...]?, "kwargs": {...}?,
 * "add_generation_prompt": bool}. NAME names DATA_DIR/NAME.json, a tokenizer_config.json-shaped file (or, when it
 * holds a '/', is the path of one); the family
 * is detected from its chat_template exactly as the server does it. Each output line: {"ok": true, "text": "..."}
 * or {"ok": false, "error": "..."}.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kiln/chat.h"
#include "kiln/status.h"

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: chat_render_tool DATA_DIR < cases.jsonl\n");
    return 2;
  }
  char *line = NULL;
  size_t cap = 0;
  ssize_t len;
  int lineno = 0;
  while ((len = getline(&line, &cap, stdin)) > 0) {
    lineno++;
    json_error_t err;
    json_t *c = json_loadb(line, (size_t)len, 0, &err);
    if (!c) {
      fprintf(stderr, "chat_render_tool: line %d: %s\n", lineno, err.text);
      return 1;
    }
    const char *name = json_string_value(json_object_get(c, "template"));
    char path[4096];
    if (name && strchr(name, '/')) snprintf(path, sizeof path, "%s", name);
    else snprintf(path, sizeof path, "%s/%s.json", argv[1], name ? name : "?");
    kiln_chat_template t;
    int rc = kiln_chat_template_load(&t, path);
    if (rc) {
      fprintf(stderr, "chat_render_tool: %s\n", kiln_last_error());
      return 1;
    }
    kiln_chat_opts o = {.add_generation_prompt = json_is_true(json_object_get(c, "add_generation_prompt")),
                        .tools = json_object_get(c, "tools"),
                        .kwargs = json_object_get(c, "kwargs")};
    char *text = NULL;
    size_t n = 0;
    rc = kiln_chat_render_json(&t, json_object_get(c, "messages"), &o, &text, &n);
    json_t *r = rc ? json_pack("{s:b,s:s}", "ok", 0, "error", kiln_last_error())
                   : json_pack("{s:b,s:s%}", "ok", 1, "text", text, n);
    char *s = r ? json_dumps(r, JSON_COMPACT | JSON_ENSURE_ASCII) : NULL;
    if (!s) {
      fprintf(stderr, "chat_render_tool: out of memory\n");
      return 1;
    }
    puts(s);
    free(s);
    free(text);
    json_decref(r);
    json_decref(c);
  }
  free(line);
  return 0;
}
