/* The chat mode of `kiln run`: a prompt wrapped as a conversation in the model's chat template (see cli_common.h). */
#include <stdlib.h>
#include <string.h>

#include "cli_common.h"

int cli_chat_prompt(const char *dir, const cli_chat *c, const char *user, char **out, size_t *len,
                    const char **end_of_turn) {
  *out = NULL;
  *len = 0;
  *end_of_turn = NULL;
  kiln_chat_template t;
  int st;
  if (c->template_name) {
    st = kiln_chat_template_by_name(&t, c->template_name);
  } else {
    size_t n = strlen(dir) + sizeof "/tokenizer_config.json";
    char *path = malloc(n);
    if (!path) return cli_errorf("out of memory");
    snprintf(path, n, "%s/tokenizer_config.json", dir);
    st = kiln_chat_template_load(&t, path);
    free(path);
  }
  if (st < 0) return cli_fail(st);

  int rc = CLI_EXIT_OK;
  json_t *messages = json_array(), *kwargs = c->no_think ? json_pack("{s:b}", "enable_thinking", 0) : NULL;
  if (!messages || (c->no_think && !kwargs) ||
      (c->system && json_array_append_new(messages, json_pack("{s:s, s:s}", "role", "system", "content", c->system))) ||
      json_array_append_new(messages, json_pack("{s:s, s:s}", "role", "user", "content", user))) {
    /* json_pack fails on invalid UTF-8 too: the only input that can be wrong here. */
    rc = cli_errorf("chat: the prompt or the system message is not valid UTF-8 (or out of memory)");
    goto out;
  }
  kiln_chat_opts opts = {.add_generation_prompt = true, .tools = NULL, .kwargs = kwargs};
  if ((st = kiln_chat_render_json(&t, messages, &opts, out, len)) < 0) {
    rc = cli_fail(st);
    goto out;
  }
  *end_of_turn = kiln_chat_end_of_turn(&t);
out:
  json_decref(messages);
  json_decref(kwargs);
  return rc;
}
