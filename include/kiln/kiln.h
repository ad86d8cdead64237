/* kiln/kiln.h: the whole public API. */
#ifndef KILN_KILN_H
#define KILN_KILN_H
#include "kiln/status.h"
#endif
