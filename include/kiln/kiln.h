/* kiln/kiln.h: the whole public API. */
#ifndef KILN_KILN_H
#define KILN_KILN_H
#include "kiln/status.h"
#include "kiln/model.h"
#include "kiln/tokenizer.h"
#include "kiln/engine.h"
#include "kiln/sampler.h"
#include "kiln/generate.h"
#include "kiln/eval.h"
#include "kiln/chat.h"
#include "kiln/server.h"
#endif
