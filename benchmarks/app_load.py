"""What the application feels: a steady stream of small application writes, each a
single-row UPDATE in autocommit on a connection of its own, with the latency of each.

    python -m benchmarks.app_load DATABASE_URL OUTPUT [WRITES_PER_SECOND]

It prints "ready" once connected, writes until SIGTERM, then saves
{"writes": [[started (epoch s), latency (ms)], ...], "late": n} to OUTPUT. Writes
alternate between touching a random scene's title and a random character's name, as
players editing their pages would. A write is scheduled every 1/rate s; one that waits
on a row lock delays the next ones, which then start as soon as they can and are
counted as late (the latency is each write's own, from its start to its commit).

AppWrites (used by run.py) runs the stream around a measurement and answers its
percentiles over a window of wall-clock time.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

WRITES_PER_SECOND = 200
WRITES = (
    "UPDATE chronicles_scene SET name = name WHERE id = %s",
    "UPDATE chronicles_character SET name = name WHERE id = %s",
)


def percentile(values: list[float], share: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(share * (len(ordered) - 1))))]


def _largest_ids(db) -> tuple[int, int]:
    scenes = db.execute("SELECT COALESCE(MAX(id), 1) FROM chronicles_scene").fetchone()[0]
    characters = db.execute("SELECT COALESCE(MAX(id), 1) FROM chronicles_character").fetchone()[0]
    return scenes, characters


def stream(url: str, output: Path, rate: float) -> None:
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    writes, late = [], 0
    pick = random.Random(13)
    with psycopg.connect(url, autocommit=True) as db:
        largest = _largest_ids(db)
        print("ready", flush=True)
        interval = 1 / rate
        due = time.perf_counter()
        number = 0
        while not stopping:
            wait = due - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            else:
                late += wait < -interval  # started more than one slot behind its time
            kind = number % 2
            started_at = time.time()
            started = time.perf_counter()
            db.execute(WRITES[kind], (pick.randint(1, largest[kind]),), prepare=True)
            writes.append((round(started_at, 4), round((time.perf_counter() - started) * 1000, 3)))
            number += 1
            due = max(due + interval, time.perf_counter() - interval)
    output.write_text(json.dumps({"writes": writes, "late": late}))


class AppWrites:
    """The stream in a process of its own around a block: `with AppWrites(url, path)`.
    A separate process, so that the measured process's Python never slows it down."""

    def __init__(self, url: str, rate: float = WRITES_PER_SECOND):
        self.url, self.rate = url, rate
        self.writes: list[tuple[float, float]] = []
        self.late = 0

    def __enter__(self) -> AppWrites:
        handle, name = tempfile.mkstemp(prefix="tgbench_writes_", suffix=".json")
        os.close(handle)
        self.output = Path(name)
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "benchmarks.app_load",
                self.url,
                str(self.output),
                str(self.rate),
            ],
            cwd=Path(__file__).resolve().parent.parent,
            stdout=subprocess.PIPE,
            text=True,
        )
        if self.process.stdout.readline().strip() != "ready":
            self.process.kill()
            raise RuntimeError("the application write stream did not start")
        return self

    def __exit__(self, *exc) -> None:
        self.process.terminate()
        self.process.wait(30)
        text = self.output.read_text()
        self.output.unlink()
        if text:
            saved = json.loads(text)
            self.writes = [tuple(w) for w in saved["writes"]]
            self.late = saved["late"]

    def latencies(self, start: float, end: float) -> list[float]:
        """The latencies (ms) of the writes that started between `start` and `end`."""
        return [ms for at, ms in self.writes if start <= at <= end]


def main(argv: list[str]) -> None:
    rate = float(argv[2]) if len(argv) > 2 else WRITES_PER_SECOND
    stream(argv[0], Path(argv[1]), rate)


if __name__ == "__main__":
    main(sys.argv[1:])
