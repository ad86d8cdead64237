/* Error codes and per-thread error messages (see kiln/status.h). */
#include "kiln/status.h"

#include <stdarg.h>
#include <stdio.h>

const char *kiln_strerror(int status) {
  switch (status) {
#define KILN__STATUS_MSG(name, value, msg) case value: return msg;
    KILN_STATUS_MAP(KILN__STATUS_MSG)
#undef KILN__STATUS_MSG
  }
  return "unknown error";
}

const char *kiln_err_name(int status) {
  switch (status) {
#define KILN__STATUS_NAME(name, value, msg) case value: return "KILN_" #name;
    KILN_STATUS_MAP(KILN__STATUS_NAME)
#undef KILN__STATUS_NAME
  }
  return "KILN_UNKNOWN";
}

static _Thread_local char last_error[512];

const char *kiln_last_error(void) { return last_error; }

void kiln_clear_error(void) { last_error[0] = '\0'; }

int kiln_error(int status, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(last_error, sizeof last_error, fmt, ap);
  va_end(ap);
  return status;
}
