"""A worker module whose import, in the launcher that loads it, writes a forged log line to every descriptor
that is a file or a standard stream: what a hostile user's module could do to what the launcher inherited.
(Never import it in the test process: it would write there too.)"""

from __future__ import annotations

import os
import stat

from zt_isolation import FORGED, open_fds

from taylorism_zmq import Worker

#: the descriptors of the process that imported this module (the launcher), and its pid
IMPORTED_IN = os.getpid()
IMPORT_FDS = open_fds()


def _forge() -> None:
    for fd in IMPORT_FDS:
        try:
            mode = os.fstat(fd).st_mode
        except OSError:
            continue
        if fd in (1, 2) or stat.S_ISREG(mode):
            try:
                os.write(fd, FORGED.encode())
            except OSError:
                pass


_forge()


class ZtForger(Worker):
    """Says which descriptors the launcher that imported its module held, and which the task holds."""

    _footprint = dict(info="Test worker.", attr=dict(zt=dict(values=["forge"])))

    def _task(self):
        return {"launcher": IMPORTED_IN, "launcher_fds": IMPORT_FDS, "pid": os.getpid(), "fds": open_fds()}
