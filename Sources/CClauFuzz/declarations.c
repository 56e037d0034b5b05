// SwiftPM needs a source file in a C target; the header only declares libFuzzer's driver.
#include "CClauFuzz.h"
