"""Which line of a file first holds each external_id, kept in a temporary SQLite file
so memory stays flat however many lines the file has. The index is named by the file's
content hash and start offset: a resumed run, in any process on this host, reuses it or
builds it again from the (unchanged) file."""

import contextlib
import glob
import os
import sqlite3
import tempfile
import time
import uuid

from maintenance.transfer.format import LineError, load_record
from maintenance.transfer.reader import TooLong, iter_lines

CHUNK = 5000  # ids per INSERT or SELECT, well under SQLite's variable limit


def id_key(value) -> bytes | None:
    """The 16 bytes of an external_id however it is spelt (case, braces, urn:, no
    hyphens: anything uuid.UUID accepts), or None."""
    try:
        return uuid.UUID(value).bytes
    except (TypeError, ValueError, AttributeError):
        return None


def record_key(raw) -> bytes | None:
    """id_key of one line's external_id, or None when the line has none."""
    if isinstance(raw, TooLong):
        return None
    try:
        record = load_record(raw)
    except LineError:
        return None
    return id_key(record.get("external_id"))


PREFIX = "tg-maintenance-import-"


def index_path(identity: dict, offset: int) -> str:
    name = f"{PREFIX}{identity['sha256'][:40]}-{offset}.sqlite3"
    return os.path.join(tempfile.gettempdir(), name)


def sweep(older_than_seconds: float) -> None:
    """Remove indexes no run can resume any more (a failed run older than the resume
    window); a finished run removes its own."""
    cutoff = time.time() - older_than_seconds
    for stale in glob.glob(os.path.join(tempfile.gettempdir(), f"{PREFIX}*.sqlite3")):
        with contextlib.suppress(OSError):
            if os.path.getmtime(stale) < cutoff:
                os.remove(stale)


def ensure(path: str, offset: int, identity: dict) -> str:
    """The index of `path` from `offset`, built now unless it exists."""
    target = index_path(identity, offset)
    if not os.path.exists(target):
        _build(path, offset, target)
    return target


def discard(identity: dict, offset: int) -> None:
    with contextlib.suppress(OSError):
        os.remove(index_path(identity, offset))


def first_lines(index: str, keys) -> dict:
    """{id key: the first line holding it} for `keys`."""
    keys = list(set(keys))
    found = {}
    # read-only: a missing index is an error, never silently an empty one
    with contextlib.closing(sqlite3.connect(f"file:{index}?mode=ro", uri=True)) as db:
        for start in range(0, len(keys), CHUNK):
            part = keys[start : start + CHUNK]
            marks = ",".join("?" * len(part))
            found.update(db.execute(f"SELECT id, line FROM ids WHERE id IN ({marks})", part))
    return found


def _build(path, offset, target):
    """Write the index to a fresh file, then rename it into place: a half-built index
    is never seen."""
    handle, building = tempfile.mkstemp(suffix=".sqlite3", dir=os.path.dirname(target))
    os.close(handle)
    try:
        with contextlib.closing(sqlite3.connect(building)) as db:
            db.executescript(
                "PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF; PRAGMA cache_size=-4000;"
                "CREATE TABLE ids (id BLOB PRIMARY KEY, line INTEGER NOT NULL) WITHOUT ROWID;"
            )
            with open(path, "rb") as source:
                source.seek(offset)
                pending = []
                for number, raw in iter_lines(source, 2):
                    key = record_key(raw)
                    if key is not None:
                        pending.append((key, number))
                    if len(pending) >= CHUNK:
                        _insert(db, pending)
                _insert(db, pending)
            db.commit()
        os.replace(building, target)
    finally:
        with contextlib.suppress(OSError):
            os.remove(building)


def _insert(db, pending):
    # lines arrive in file order, so the first line of an id is the one kept
    db.executemany("INSERT OR IGNORE INTO ids (id, line) VALUES (?, ?)", pending)
    pending.clear()
