// SPA's own JSON tokenizer, included once with the warnings its C idioms raise under C++20
// -Wpedantic (case ranges, compound literals) silenced for that header only.
#pragma once

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpedantic"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wunused-parameter"
#include <spa/utils/json.h>
#pragma GCC diagnostic pop
