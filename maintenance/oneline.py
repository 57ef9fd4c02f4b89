"""One-line messages: the first line of an error, with control characters escaped, so
whatever a user typed (or an exception quoted) cannot break a line or a terminal."""


def escape(text: str) -> str:
    """`text` with every non-printable character (C0, C1, DEL, newlines, ANSI escapes,
    bidi overrides, line separators) written as a Python escape, e.g. \\x1b or \\u202e."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


def first_line(error: BaseException | str) -> str:
    """The first non-empty line of an error's text, escaped; the type name without one."""
    lines = [line for line in str(error).strip().splitlines() if line.strip()]
    if lines:
        return escape(lines[0].strip())
    return type(error).__name__ if isinstance(error, BaseException) else ""


def describe(error: BaseException) -> str:
    """`Type: first line`, for errors whose type says something (a failed run's error)."""
    line = first_line(error)
    name = type(error).__name__
    return f"{name}: {line}" if line and line != name else name
