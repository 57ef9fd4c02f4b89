"""Reading a characters file line by line, with limits, from a byte offset."""

import hashlib
import os
from typing import NamedTuple

from django.conf import settings

from maintenance.transfer.format import FileError, check_header

MAX_LINE_BYTES = 1024 * 1024  # a character with a long ledger fits many times over
CHUNK = 1024 * 1024
BATCH_BYTES = 4 * 1024 * 1024  # a batch reads at most about this much, whatever its size


class Lines(NamedTuple):
    lines: list  # [(line number, bytes | TooLong)]
    offset: int  # where the next batch starts
    next_line: int
    at_end: bool  # nothing is left after them


class TooLong:
    """Stands for a line over MAX_LINE_BYTES, which is skipped, not read into memory."""

    def __init__(self, size):
        self.size = size


def check_file(path):
    """Raise FileError unless `path` is a readable characters file within the size limit.
    Returns the byte offset of the first character line."""
    if not os.path.isfile(path):
        raise FileError(f"{path}: no such file")
    size = os.path.getsize(path)
    limit = settings.MAINTENANCE_IMPORT_MAX_BYTES
    if size > limit:
        raise FileError(f"{path}: {size:,} bytes is over the limit of {limit:,}")
    try:
        with open(path, "rb") as handle:
            first = handle.readline(MAX_LINE_BYTES + 1)
            if not first:
                raise FileError(f"{path}: the file is empty")
            check_header(first)
            return handle.tell()
    except OSError as error:
        raise FileError(f"{path}: {error.strerror}") from None


def stat_identity(path) -> dict:
    """What identifies the file cheaply: absolute path, size, modification time."""
    absolute = os.path.abspath(path)
    status = os.stat(absolute)
    return {"path": absolute, "size": status.st_size, "mtime_ns": status.st_mtime_ns}


def file_identity(path) -> dict:
    """stat_identity plus the SHA-256 of the content, read in chunks."""
    identity = stat_identity(path)
    digest = hashlib.sha256()
    with open(identity["path"], "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return {**identity, "sha256": digest.hexdigest()}


def iter_lines(handle, first_line):
    """(line number, bytes | TooLong) for every line from the handle's position, blank
    ones included; no line is held beyond MAX_LINE_BYTES."""
    number = first_line - 1
    while raw := handle.readline(MAX_LINE_BYTES + 1):
        number += 1
        if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
            yield number, TooLong(len(raw) + _skip_rest_of_line(handle))
        else:
            yield number, raw


def read_lines(path, offset, first_line, count, budget=BATCH_BYTES):
    """Up to `count` non-blank lines from `offset`, stopping early once they hold
    `budget` bytes (so a batch of long lines stays small in memory): a Lines."""
    lines, size = [], 0
    number = first_line - 1
    with open(path, "rb") as handle:
        handle.seek(offset)
        at_end = True
        for number, raw in iter_lines(handle, first_line):  # noqa: B007 (used after)
            if isinstance(raw, TooLong) or raw.strip():
                lines.append((number, raw))
                size += 0 if isinstance(raw, TooLong) else len(raw)
            if len(lines) == count or size >= budget:
                at_end = False
                break
        return Lines(lines, handle.tell(), number + 1, at_end)


def _skip_rest_of_line(handle):
    skipped = 0
    while chunk := handle.readline(MAX_LINE_BYTES):
        skipped += len(chunk)
        if chunk.endswith(b"\n"):
            break
    return skipped
