"""Reading a characters file line by line, with limits, from a byte offset."""

import os

from django.conf import settings

from maintenance.transfer.format import FileError, check_header

MAX_LINE_BYTES = 1024 * 1024  # a character with a long ledger fits many times over


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


def read_lines(path, offset, first_line, count):
    """Up to `count` non-blank lines from `offset`: [(line number, bytes | TooLong)],
    and the offset and line number after them."""
    lines = []
    number = first_line - 1
    with open(path, "rb") as handle:
        handle.seek(offset)
        while len(lines) < count:
            raw = handle.readline(MAX_LINE_BYTES + 1)
            if not raw:
                break
            number += 1
            if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
                size = len(raw) + _skip_rest_of_line(handle)
                lines.append((number, TooLong(size)))
            elif raw.strip():
                lines.append((number, raw))
        return lines, handle.tell(), number + 1


def _skip_rest_of_line(handle):
    skipped = 0
    while chunk := handle.readline(MAX_LINE_BYTES):
        skipped += len(chunk)
        if chunk.endswith(b"\n"):
            break
    return skipped
