// glibc declares posix_spawn_file_actions_addclosefrom_np only with _GNU_SOURCE, which the
// Swift Glibc module does not set; this file does.
#define _GNU_SOURCE
#include "CClauSystem.h"

#ifdef __linux__
#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <unistd.h>

int clau_pipe_cloexec(int fds[2]) { return pipe2(fds, O_CLOEXEC); }

int clau_spawn_close_from(posix_spawn_file_actions_t *actions, int lowest) {
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 34))
    return posix_spawn_file_actions_addclosefrom_np(actions, lowest);
#else
    (void)actions; (void)lowest;
    return ENOSYS;
#endif
}
#endif
