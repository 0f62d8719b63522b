"""Compress every file of a directory in parallel, one task per file: a realistic taylorism-zmq driver.

    python examples/compress_dir.py DIRECTORY [--threads N] [--boss tcp://head:5555]

Locally it runs on the embedded default; with --boss (or TAYLORISM_BOSS) the
tasks run on the cluster's agents, which read and write the files through the
shared filesystem. Each task writes FILE.gz next to FILE and reports sizes and
the host it ran on.
"""

from __future__ import annotations

import argparse
import gzip
import os
import shutil
import socket

import footprints

from taylorism_zmq import Worker, run_as_server


class Compressor(Worker):
    """Gzip one file."""

    _footprint = dict(
        info="Compress a file with gzip.",
        attr=dict(
            path=dict(info="The file to compress."),
            level=dict(info="gzip compression level.", type=int, optional=True, default=6),
        ),
    )

    def _task(self):
        target = self.path + ".gz"
        with open(self.path, "rb") as src, gzip.open(target, "wb", compresslevel=self.level) as dst:
            shutil.copyfileobj(src, dst)
        return {"file": os.path.basename(self.path), "bytes_in": os.path.getsize(self.path),
                "bytes_out": os.path.getsize(target), "host": os.environ.get("TAYLORISM_HOST", socket.gethostname())}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory")
    parser.add_argument("--threads", type=int, default=4, help="tasks at once on each host (default 4)")
    parser.add_argument("--boss", default=None, help="a boss's control endpoint (default: TAYLORISM_BOSS or embedded)")
    args = parser.parse_args()
    files = sorted(os.path.join(args.directory, f) for f in os.listdir(args.directory)
                   if os.path.isfile(os.path.join(args.directory, f)) and not f.endswith(".gz"))
    if not files:
        parser.error(f"no file to compress in {args.directory}")
    # run_as_server rather than batch_main, which prints a header per task: here one summary line says it all
    boss = run_as_server({}, dict(path=files, name=[f"gzip-{os.path.basename(f)}" for f in files]),
                         scheduler=footprints.proxy.scheduler(limit="threads", max_threads=args.threads),
                         boss=args.boss)
    boss.wait_till_finished()
    report = boss.get_report()
    total_in = sum(r["report"]["bytes_in"] for r in report["workers_report"])
    total_out = sum(r["report"]["bytes_out"] for r in report["workers_report"])
    print(f"{len(files)} files compressed, {total_in} -> {total_out} bytes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
