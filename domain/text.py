"""Text that can be stored and sent anywhere: valid Unicode, whatever a processor raised.

A Python `str` may hold lone surrogates (`os.fsdecode` of a non-UTF-8 file name
gives one), which no UTF-8 writer accepts: SQLite and PostgreSQL refuse the row,
a JSON encoder that writes UTF-8 fails. Every error text is passed through
`safe_text` before it becomes part of an event; input is refused instead
(`invalid_text`), since a client can fix what it sent.
"""

from __future__ import annotations


def is_valid_text(text: str) -> bool:
    """True when `text` is a sequence of Unicode scalar values (no lone surrogates)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def safe_text(text: str) -> str:
    """`text` with each lone surrogate written as its escape (`\\udcff`); the rest kept as is."""
    if is_valid_text(text):
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def describe_error(exc: BaseException) -> str:
    """The text an attempt's failure is recorded with: the exception's message, else its
    class name; safe to store. An exception whose `__str__` itself fails is named by class."""
    try:
        message = str(exc)
    except Exception:
        message = ""
    return safe_text(message) or type(exc).__name__
