/* loader_io.h (private): small file helpers for the checkpoint loader. */
#ifndef KILN_MODEL_LOADER_IO_H
#define KILN_MODEL_LOADER_IO_H

#include <stdbool.h>
#include <stddef.h>

/* Reads the whole file at `path` (at most `max` bytes) into a NUL-terminated heap buffer. KILN_ENOTFOUND when it
 * does not exist; the message names the file. */
int kiln_loader_read_file(const char *path, size_t max, char **out, size_t *len);
/* malloc'd "dir/name" (dir may end in '/'); NULL when out of memory. */
char *kiln_loader_join(const char *dir, const char *name);
bool kiln_loader_exists(const char *path);

#endif
