/*
 * kiln/chat.h: chat templates rendered natively in C.
 *
 * Hugging Face checkpoints carry their chat template as Jinja source in tokenizer_config.json. kiln does not embed
 * a Jinja interpreter: it recognises the template family from markers in that source and renders the family's
 * template with C code that reproduces the Jinja output byte for byte (the golden tests in tests/chat/ compare
 * both on many conversations). Families:
 *
 *   chatml   <|im_start|>role\ncontent<|im_end|>\n per message (the plain ChatML template)
 *   qwen3    Qwen3's template: tools in the system turn, <think> reasoning kept only after the last user query,
 *            tool results wrapped in <tool_response>, enable_thinking=false closes an empty think block
 *   llama3   Llama 3 (8B/70B Instruct): header ids, trimmed content, bos_token first
 *   llama31  Llama 3.1 / 3.2 / 3.3: "Cutting Knowledge Date" system turn, JSON tool calls, ipython tool results,
 *            builtin_tools (3.1) and today's date from the clock (3.2) when the source uses them
 *
 * Messages and tools are JSON values in the OpenAI shape (an array of {"role", "content", "tool_calls",
 * "reasoning_content", ...} objects; content a string or null: the server flattens text parts first). Keyword
 * arguments (chat_template_kwargs) are a JSON object: enable_thinking, date_string, tools_in_user_message,
 * custom_tools, builtin_tools, as the Jinja templates read them. Where the Jinja template would raise (for example
 * two tool calls in one Llama 3.1 message), rendering fails with KILN_EINVAL and a message.
 */
#ifndef KILN_CHAT_H
#define KILN_CHAT_H

#include <stdbool.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

struct json_t; /* jansson's value type, for callers that already hold parsed JSON */

typedef enum kiln_chat_format {
  KILN_CHAT_NONE = 0, /* no known template */
  KILN_CHAT_CHATML = 1,
  KILN_CHAT_QWEN3 = 2,
  KILN_CHAT_LLAMA3 = 3,
  KILN_CHAT_LLAMA31 = 4,
} kiln_chat_format;

typedef struct kiln_chat_template {
  kiln_chat_format format;
  bool date_from_clock; /* llama31: Today Date from the local clock ("%d %b %Y"), else "26 Jul 2024" */
  bool builtin_tools;   /* llama31: the 3.1 builtin_tools branches (ipython, <|python_tag|>, <|eom_id|>) */
  char bos_token[64];   /* the text of tokenizer_config.json's bos_token ("" when none) */
} kiln_chat_template;

/* "chatml", "qwen3", "llama3", "llama31"; "none". */
const char *kiln_chat_format_name(kiln_chat_format f);

/* Recognises the family of a Jinja chat template from its markers. KILN_EUNSUPPORTED when none matches. The
 * bos_token is left as it was. */
int kiln_chat_template_detect(kiln_chat_template *t, const char *jinja_source);

/* A template by family name: "chatml", "qwen3", "llama3", "llama31" (3.1 rules), "llama32" (3.2 rules: the date
 * from the clock, no builtin tools). bos_token: "<|begin_of_text|>" for the Llama families, else "". */
int kiln_chat_template_by_name(kiln_chat_template *t, const char *name);

/* Reads a tokenizer_config.json: the chat_template (a string, or a list of {name, template} from which "default"
 * is taken) and bos_token (a string or {"content": ...}). KILN_ENOTFOUND when the file has no chat template,
 * KILN_EUNSUPPORTED when the template is of no known family. */
int kiln_chat_template_load(kiln_chat_template *t, const char *tokenizer_config_path);

/* The text that ends an assistant turn in this family ("<|im_end|>", "<|eot_id|>"), or NULL. */
const char *kiln_chat_end_of_turn(const kiln_chat_template *t);

typedef struct kiln_chat_opts {
  bool add_generation_prompt;   /* open an assistant turn at the end */
  const struct json_t *tools;   /* JSON array or NULL */
  const struct json_t *kwargs;  /* JSON object (chat_template_kwargs) or NULL */
} kiln_chat_opts;

/* Renders `messages` (a JSON array). *out is malloc'd and NUL-terminated; free() it. */
int kiln_chat_render_json(const kiln_chat_template *t, const struct json_t *messages, const kiln_chat_opts *opts,
                          char **out, size_t *out_len);

/* The same from JSON text: `messages_json` an array; `tools_json` and `kwargs_json` may be NULL. */
int kiln_chat_render(const kiln_chat_template *t, const char *messages_json, const char *tools_json,
                     const char *kwargs_json, bool add_generation_prompt, char **out, size_t *out_len);

#ifdef __cplusplus
}
#endif
#endif /* KILN_CHAT_H */
