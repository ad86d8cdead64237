/*
 * kiln/status.h: error codes and the per-thread error message.
 *
 * Every library function that can fail returns a kiln_status: 0 for success, a negative code for an error. The codes
 * come from one X-macro table, which also drives kiln_strerror() and kiln_err_name(), so names and messages never
 * drift from the enum. Besides the code, the failing function records a one-line message naming the file or object
 * and the problem ("model.safetensors: tensor 'lm_head.weight' ends past the end of the file"); kiln_last_error()
 * returns it for the calling thread. The library never exits; main() turns the pair into a message and a status.
 */
#ifndef KILN_STATUS_H
#define KILN_STATUS_H

#ifdef __cplusplus
extern "C" {
#endif

/* X(name, value, message) */
#define KILN_STATUS_MAP(X)                                                     \
  X(OK, 0, "success")                                                          \
  X(ENOMEM, -1, "out of memory")                                               \
  X(EINVAL, -2, "invalid argument")                                            \
  X(EIO, -3, "input/output error")                                             \
  X(EFORMAT, -4, "malformed input")                                            \
  X(EUNSUPPORTED, -5, "not supported")                                         \
  X(ENOTFOUND, -6, "not found")                                                \
  X(ERANGE, -7, "value out of range")                                          \
  X(ECONTEXT, -8, "context length exceeded")                                   \
  X(EAGAIN, -9, "resource temporarily unavailable")                            \
  X(ETIMEDOUT, -10, "timed out")                                               \
  X(EPEERDEAD, -11, "peer died")                                               \
  X(ECORRUPT, -12, "shared state corrupted")                                   \
  X(EPERM, -13, "permission denied")                                           \
  X(ECANCELED, -14, "canceled")                                                \
  X(EDEVICE, -15, "device error")                                              \
  X(ECLOSED, -16, "closed")                                                    \
  X(EBUSY, -17, "busy")

typedef enum kiln_status {
#define KILN__STATUS_ENUM(name, value, msg) KILN_##name = value,
  KILN_STATUS_MAP(KILN__STATUS_ENUM)
#undef KILN__STATUS_ENUM
} kiln_status;

/* "out of memory" for KILN_ENOMEM; "unknown error" for a value not in the table. */
const char *kiln_strerror(int status);
/* "KILN_ENOMEM" for KILN_ENOMEM. */
const char *kiln_err_name(int status);

/* The message recorded by the last failing call on this thread ("" if none). Valid until the next failing call. */
const char *kiln_last_error(void);
/* Records a printf-style message for this thread and returns `status`, so a failure reads
 * `return kiln_error(KILN_EFORMAT, "%s: bad header", path);`. */
int kiln_error(int status, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Clears this thread's message. */
void kiln_clear_error(void);

#ifdef __cplusplus
}
#endif
#endif /* KILN_STATUS_H */
