"""The cleaner that outlives ``clipedge serve``: run as a script (standard library only) beside every server.

A parent-death signal kills tritonserver when ``clipedge serve`` dies, even by ``kill -9``, but not the
python-backend stubs tritonserver started (the kernel clears that signal on fork), and nobody is left to
remove the backend's /dev/shm regions or the scratch repository. This process is: it reads lines from a
pipe whose other end only ``clipedge serve`` holds, and when the pipe closes (a clean stop, or the death of
serve however it came) it SIGKILLs the process groups it was told about, then removes the shared memory
and folders. Usage: ``python -I watchdog.py SHM_PREFIX``; lines ``group PGID``, ``done PGID`` (reaped:
forget it), ``path DIR``.
"""

import glob
import os
import shutil
import signal
import sys


def main(shm_prefix: str) -> None:
    for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM):  # only the pipe's end ends this process
        signal.signal(sig, signal.SIG_IGN)
    groups, paths = set(), set()
    for line in sys.stdin:
        word, _, value = line.strip().partition(" ")
        if word == "group":
            groups.add(int(value))
        elif word == "done":
            groups.discard(int(value))
        elif word == "path":
            paths.add(value)
    for group in groups:
        try:
            os.killpg(group, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    for region in glob.glob(os.path.join("/dev/shm", glob.escape(shm_prefix) + "*")):
        try:
            os.unlink(region)
        except FileNotFoundError:
            pass
    for path in paths:
        shutil.rmtree(path, ignore_errors=True)


if __name__ == "__main__":
    main(sys.argv[1])
