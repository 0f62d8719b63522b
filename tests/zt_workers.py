"""Worker classes for the tests (a plain module: agents import it by path)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from footprints import FPDict

from taylorism_zmq import Worker
from taylorism_zmq.schedulers import NewMaxThreadsScheduler

sys.path.append(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
#: the execution ledger the tasks write themselves (benchmarks/ledger.py): a file per execution, started and
#: finished, which the client never reads (it drops a task index reported twice, so its reports cannot show a
#: task that ran twice); tests read it with execution_ledger.read(directory)
import ledger as execution_ledger  # noqa: E402

#: the job name tasks record their executions under in a ledger (the task's index is its tag)
LEDGER_JOB = "zt"


def begin_execution(runs: str | None, tag: object) -> execution_ledger.Execution | None:
    """Record in the ledger directory *runs* (if given) that task *tag* starts its work in this process."""
    return execution_ledger.begin(runs, LEDGER_JOB, int(str(tag))) if runs else None


class WeirdError(Exception):
    """An exception that cannot be rebuilt from its args."""

    def __init__(self, a, b):
        super().__init__(f"{a}-{b}")


class ZtNap(Worker):
    """Sleeps, then says where it ran; or fails, or dies, as asked."""

    _footprint = dict(
        info="Test worker.",
        attr=dict(
            zt=dict(values=["nap"]),
            seconds=dict(type=float, optional=True, default=0.0),
            #: host name -> seconds: how long the task sleeps on that host instead of *seconds*
            host_seconds=dict(optional=True, default=FPDict(), type=FPDict),
            fail=dict(optional=True, default="no", values=["no", "value", "weird", "signal", "exit"]),
            spawn=dict(optional=True, default=None),
            ledger=dict(optional=True, default=None),
            #: a directory the task moves into (what a reused process must not pass on to its next task)
            chdir=dict(optional=True, default=None),
            #: "note": SIGTERM is noted in the ledger ("TERM <time>") and otherwise ignored
            on_term=dict(optional=True, default="die", values=["die", "note"]),
            #: a directory where the task leaves a file named TAG.PID when it starts
            pids=dict(optional=True, default=None),
            #: then waits (30 s at most) until that directory holds this many files, before its sleep
            gather=dict(type=int, optional=True, default=0),
            #: the execution ledger's directory: the task records its execution there (TAG is its index)
            runs=dict(optional=True, default=None),
            tag=dict(optional=True, default=None),
            extra=dict(optional=True, default=FPDict(), type=FPDict),
        ),
    )

    def _task(self):
        t0 = time.time()
        execution = begin_execution(self.runs, self.tag)
        if self.ledger:  # one line per run: a task run twice shows up twice
            with open(self.ledger, "a") as f:
                f.write(f"{self.tag}\n")
        if self.chdir:
            os.chdir(self.chdir)
        if self.on_term == "note":
            def note(*_):  # note it, then say "alive" every 20 ms until killed
                with open(self.ledger, "a") as f:
                    f.write(f"TERM {time.time()}\n")
                    while True:
                        f.write(f"ALIVE {time.time()}\n")
                        f.flush()
                        time.sleep(0.02)

            signal.signal(signal.SIGTERM, note)
        if self.pids:  # an empty file named TAG.PID (each copy of a task that runs twice has its own)
            open(os.path.join(self.pids, f"{self.tag}.{os.getpid()}"), "w").close()
        if self.spawn:  # a grandchild that must die with the task
            child = subprocess.Popen(["sleep", "60"])
            with open(self.spawn, "w") as f:
                f.write(str(child.pid))
        deadline = time.monotonic() + 30
        while self.gather and len(os.listdir(self.pids)) < self.gather and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(float((self.host_seconds or {}).get(os.environ.get("TAYLORISM_HOST"), self.seconds)))
        if self.fail == "value":
            raise ValueError(f"{self.name} failed on purpose")
        if self.fail == "weird":
            raise WeirdError("x", "y")
        if self.fail == "signal":
            os.kill(os.getpid(), signal.SIGKILL)
        if self.fail == "exit":
            os._exit(7)
        if execution is not None:
            execution.finish()
        return {"name": self.name, "host": os.environ.get("TAYLORISM_HOST"), "pid": os.getpid(),
                "tag": self.tag, "ticket": self.scheduler_ticket, "cwd": os.getcwd(), "t0": t0, "t1": time.time()}


class PackFirst(NewMaxThreadsScheduler):
    """A placement plugin: fill hosts in name order (packing), for the tests."""

    _footprint = dict(attr=dict(zt_pack=dict(values=["first", "explode", "bogus"])))

    def place(self, task, hosts):
        if self.zt_pack == "explode":
            raise RuntimeError("placement exploded on purpose")
        if self.zt_pack == "bogus":
            return "somewhere"
        return min(hosts, key=lambda h: h.host)


class ZtTalk(Worker):
    """Writes to stdout and stderr: lines through print, bytes straight to the fds, as much as asked."""

    _footprint = dict(
        info="Test worker that prints.",
        attr=dict(
            zt=dict(values=["talk"]),
            lines=dict(type=int, optional=True, default=2),
            pause=dict(type=float, optional=True, default=0.0),
            flood=dict(type=int, optional=True, default=0),
            keep_stdout_open=dict(type=bool, optional=True, default=False),
            fail=dict(type=bool, optional=True, default=False),
        ),
    )

    def _task(self):
        import sys

        for i in range(self.lines):
            print(f"{self.name} out {i}")
            print(f"{self.name} err {i}", file=sys.stderr)
            time.sleep(self.pause)
        os.write(1, f"{self.name} raw\n".encode())  # as a C library or a subprocess would
        if self.flood:
            sys.stdout.write("x" * self.flood + "\nEND OF FLOOD\n")
        if self.fail:
            raise ValueError("talked, then failed")
        if self.keep_stdout_open:  # a background child holding the task's stdout, writing after its end
            return subprocess.Popen(["sh", "-c", "sleep 0.5; echo late output; sleep 60"]).pid
        return self.lines


class ZtProbe(Worker):
    """Says who it runs as, which taylorism variables it sees, and which of the given paths it can read."""

    _footprint = dict(
        info="Test worker that probes its rights.",
        attr=dict(
            zt=dict(values=["probe"]),
            paths=dict(type=list, optional=True, default=[]),
            seconds=dict(type=float, optional=True, default=0.0),
        ),
    )

    def _task(self):
        time.sleep(self.seconds)
        read = {}
        for path in self.paths:
            try:
                if os.path.isdir(path):
                    os.listdir(path)
                else:
                    with open(path, "rb") as f:
                        f.read(1)
                read[path] = "ok"
            except PermissionError:
                read[path] = "denied"
            except OSError as exc:
                read[path] = type(exc).__name__
        return {"uid": os.getuid(), "gid": os.getgid(), "groups": os.getgroups(), "read": read,
                "env": sorted(k for k in os.environ if k.startswith("TAYLORISM_")), "home": os.environ.get("HOME")}


class PidRecorder:
    """Unpickling it appends the unpickling process's pid to a file: who opens a pickle shows."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (os.system, (f"echo $PPID >> {self.path}",))


class PidRecordingError(Exception):
    """An exception whose pickle, unpickled, appends the unpickling process's pid to a file (as PidRecorder)."""

    def __init__(self, path: str):
        super().__init__(f"a failure that records who unpickles it in {path}")
        self.path = path

    def __reduce__(self):
        return (os.system, (f"echo $PPID >> {self.path}",))


class ZtPickle(Worker):
    """Returns an object that can only travel as a pickle, and says who unpickles it; with *fail*, raises an
    exception that does the same."""

    _footprint = dict(info="Test worker.", attr=dict(zt=dict(values=["pickle"]), path=dict(),
                                                     fail=dict(type=bool, optional=True, default=False)))

    def _task(self):
        if self.fail:
            raise PidRecordingError(self.path)
        return PidRecorder(self.path)


#: a module-level setting that a driver, or a job's setup, changes at run time
SETTING = "as imported"


def set_setting() -> None:
    """A job's setup callable (by reference): what a driver would do at run time, replayed on agents."""
    global SETTING
    SETTING = "set by the job's setup"


class ZtLook(Worker):
    """Says what its process sees: an environment variable, the module setting, the host."""

    _footprint = dict(info="Test worker.", attr=dict(zt=dict(values=["look"]), variable=dict(optional=True,
                                                                                          default="TZ_FIDELITY")))

    def _task(self):
        return {"variable": os.environ.get(self.variable), "setting": SETTING,
                "host": os.environ.get("TAYLORISM_HOST")}


class ZtBig(Worker):
    """Returns *size* bytes and prints *out* bytes (reports near a cap); waits for *gate* to exist first.

    With *runs*, records its execution in that ledger; with *started*, leaves a file named TAG.PID in that
    directory when it starts (before it waits for the gate); with *fail*, raises once through the gate (*size*
    bytes more in its message)."""

    _footprint = dict(
        info="Test worker with a large report.",
        attr=dict(
            zt=dict(values=["big"]),
            size=dict(type=int, optional=True, default=0),
            out=dict(type=int, optional=True, default=0),
            gate=dict(optional=True, default=None),
            tag=dict(optional=True, default=None),
            runs=dict(optional=True, default=None),
            started=dict(optional=True, default=None),
            #: raise once through the gate
            fail=dict(type=bool, optional=True, default=False),
        ),
    )

    def _task(self):
        execution = begin_execution(self.runs, self.tag)
        if self.started:
            open(os.path.join(self.started, f"{self.tag}.{os.getpid()}"), "w").close()
        while self.gate and not os.path.exists(self.gate):
            time.sleep(0.05)
        if self.fail:
            raise ValueError(f"{self.name} failed on purpose, through the gate" + "x" * self.size)
        if self.out:
            os.write(1, b"o" * self.out)
        blob = os.urandom(self.size)
        if execution is not None:
            execution.finish()
        return {"tag": self.tag, "blob": blob, "host": os.environ.get("TAYLORISM_HOST")}


class ZtStale(Worker):
    """A task that leaves a thread in its process (reused), which writes results on the process's result pipe
    while the next task runs there: one in the form of a result without a task id, one with the id of the task
    that left it.  Returns its *tag* and pid after *seconds*."""

    _footprint = dict(
        info="Test worker leaving a thread that writes results on its process's result pipe.",
        attr=dict(
            zt=dict(values=["stale"]),
            tag=dict(type=int),
            seconds=dict(type=float, optional=True, default=0.0),
        ),
    )

    def _task(self):
        import fcntl
        import threading

        import msgpack

        from taylorism_zmq.launch.pipes import LENGTH

        if self.tag == 0:
            frame = sys._getframe()
            while "straight_max" not in frame.f_locals:
                frame = frame.f_back
            old_tid = frame.f_locals["tid"]
            pipes = []
            for name in os.listdir("/proc/self/fd"):
                try:
                    if int(name) > 2 and os.readlink(f"/proc/self/fd/{name}").startswith("pipe:") \
                            and fcntl.fcntl(int(name), fcntl.F_GETFL) & os.O_ACCMODE == os.O_WRONLY:
                        pipes.append(int(name))
                except OSError:
                    continue  # (the descriptor listdir read with)

            def forge() -> None:
                time.sleep(0.3)
                for body in ([True, b"forged", b"t" * 32], [True, b"forged", b"t" * 32, old_tid]):
                    data = msgpack.packb(body)
                    for fd in pipes:
                        os.write(fd, LENGTH.pack(len(data)) + data)

            threading.Thread(target=forge, daemon=True).start()
        time.sleep(self.seconds)
        return {"tag": self.tag, "pid": os.getpid()}


class ZtSneak(Worker):
    """A task that misuses its process's result channel (see launch/link_protocol), as hostile code could, then
    returns *size* bytes: "forge" sends results for task ids 1 to 2000 on it; "mark" writes on its result pipe
    that its result went on the channel, which it did not.  Leaves a file "found.PID" in *notes* when it found
    its channel (an AF_UNIX stream socket whose peer is its launcher, the process's parent)."""

    _footprint = dict(
        info="Test worker misusing its result channel.",
        attr=dict(
            zt=dict(values=["sneak"]),
            sneak=dict(values=["forge", "mark"]),
            size=dict(type=int, optional=True, default=200_000),
            notes=dict(),
        ),
    )

    def _task(self):
        import socket
        import struct

        import msgpack

        channel = None
        for name in os.listdir("/proc/self/fd"):
            fd = int(name)
            try:
                sock = socket.socket(fileno=os.dup(fd))
            except OSError:
                continue
            creds = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
            if sock.family == socket.AF_UNIX and sock.type == socket.SOCK_STREAM and creds[0] == os.getppid():
                channel = sock
                break
            sock.close()
        if channel is not None:
            open(os.path.join(self.notes, f"found.{os.getpid()}"), "w").close()
            if self.sneak == "forge":
                try:
                    for tid in range(1, 2001):
                        channel.sendall(msgpack.packb([tid, True, b"forged", b"t" * 32]))
                except OSError:
                    pass  # the agent closed it
            else:  # the result pipe: the process's only pipe open for writing beside its stdout and stderr
                import fcntl

                from taylorism_zmq.launch.pipes import LENGTH

                # its task's id, as hostile code finds it: in the frame of the process's loop that called it
                frame = sys._getframe()
                while "straight_max" not in frame.f_locals:
                    frame = frame.f_back
                mark = msgpack.packb([True, None, None, frame.f_locals["tid"]])
                for name in os.listdir("/proc/self/fd"):
                    fd = int(name)
                    if fd > 2 and os.readlink(f"/proc/self/fd/{fd}").startswith("pipe:") \
                            and fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_WRONLY:
                        os.write(fd, LENGTH.pack(len(mark)) + mark)
        return {"blob": os.urandom(self.size), "pid": os.getpid()}
