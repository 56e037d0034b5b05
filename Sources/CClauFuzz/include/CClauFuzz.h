#ifndef CCLAU_FUZZ_H
#define CCLAU_FUZZ_H

#include <stddef.h>
#include <stdint.h>

/// libFuzzer's driver, present only when linked with -sanitize=fuzzer: it runs the fuzzing loop
/// (and parses libFuzzer's flags) with `callback`, so clau-fuzz keeps its own `main`.
int LLVMFuzzerRunDriver(int *argc, char ***argv, int (*callback)(const uint8_t *data, size_t size));

#endif
