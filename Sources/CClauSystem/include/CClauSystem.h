// Thin wrappers over Linux calls that Swift's Glibc module does not export (prctl is variadic).
#ifndef CCLAUSYSTEM_H
#define CCLAUSYSTEM_H

#ifdef __linux__
#include <sys/prctl.h>

static inline int clau_set_dumpable(int dumpable) { return prctl(PR_SET_DUMPABLE, dumpable, 0, 0, 0); }
static inline int clau_get_dumpable(void) { return prctl(PR_GET_DUMPABLE, 0, 0, 0, 0); }
#endif

#endif
