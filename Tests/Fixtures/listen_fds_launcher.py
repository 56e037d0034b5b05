#!/usr/bin/env python3
"""Hands listening TCP sockets to a program the way systemd does (sd_listen_fds(3)).

    listen_fds_launcher.py NAME=HOST:PORT... -- PROGRAM ARGS...

Binds and listens on each address, places the sockets at descriptors 3, 4, ... in order, sets
LISTEN_FDS, LISTEN_PID (this pid: exec keeps it) and LISTEN_FDNAMES, then execs PROGRAM. Used by
the edge's socket-activation process test; systemd's own launcher is not on every machine.
"""
import os
import socket
import sys

separator = sys.argv.index("--")
specs, program = sys.argv[1:separator], sys.argv[separator + 1:]
sockets, names = [], []
for spec in specs:
    name, address = spec.split("=", 1)
    host, port = address.rsplit(":", 1)
    host = host.strip("[]")
    listener = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, int(port)))
    listener.listen(128)
    sockets.append(listener)
    names.append(name)
# Park each socket far above 3+n first, so placing one never overwrites another.
parked = [os.dup2(listener.fileno(), 200 + index) for index, listener in enumerate(sockets)]
for listener in sockets:
    listener.close()
for index, descriptor in enumerate(parked):
    os.dup2(descriptor, 3 + index)  # inheritable, unlike Python's own descriptors
    os.close(descriptor)
os.environ["LISTEN_FDS"] = str(len(names))
os.environ["LISTEN_PID"] = str(os.getpid())
os.environ["LISTEN_FDNAMES"] = ":".join(names)
os.execv(program[0], program)
