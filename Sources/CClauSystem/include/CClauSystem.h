// Thin wrappers over Linux calls that Swift's Glibc module does not export (prctl is variadic;
// posix_spawn_file_actions_addclosefrom_np and pipe2 need _GNU_SOURCE).
#ifndef CCLAUSYSTEM_H
#define CCLAUSYSTEM_H

#ifdef __linux__
#include <spawn.h>
#include <sys/prctl.h>

static inline int clau_set_dumpable(int dumpable) { return prctl(PR_SET_DUMPABLE, dumpable, 0, 0, 0); }
static inline int clau_get_dumpable(void) { return prctl(PR_GET_DUMPABLE, 0, 0, 0, 0); }
/// Adds "close every descriptor >= lowest" to a spawn's file actions, so a child never inherits
/// a descriptor that was opened without O_CLOEXEC (glibc >= 2.34; ENOSYS before).
int clau_spawn_close_from(posix_spawn_file_actions_t *actions, int lowest);
/// pipe2(fds, O_CLOEXEC): both ends close-on-exec from the start, with no window for a fork.
int clau_pipe_cloexec(int fds[2]);
#endif

#endif
