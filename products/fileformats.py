"""Product files: stream rows out of CSV / JSON / JSON Lines (products.filewriters writes them).

Readers turn a binary stream into raw rows, one at a time, with the line each
row starts on, so memory stays flat whatever the file size. They check only
the *shape* of the file (header, columns, JSON syntax); the product rules are
applied by the import service with ``validators.clean_*``.

A reader yields either a ``RawRow`` or a ``RowError`` (a row whose shape is
wrong, e.g. a malformed JSON line) and raises ``FileFormatError`` for a problem
with the whole file (empty, not UTF-8, missing column, broken JSON array).
"""

from __future__ import annotations

import codecs
import csv
import io
import numbers
import re
from collections import Counter
from collections.abc import Generator, Iterator
from typing import BinaryIO, NamedTuple

from . import jsonnumbers, validators
from .validators import WRITABLE_FIELDS, unknown_field_message

FORMATS = ("csv", "json", "jsonl")
EXTENSIONS = {".csv": "csv", ".json": "json", ".jsonl": "jsonl", ".ndjson": "jsonl"}
COLUMNS = WRITABLE_FIELDS
REQUIRED_COLUMNS = ("name", "price")


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


# Marks a row without a quantity (no column, or no key): new products get 0,
# existing ones keep theirs. Not None: a JSON null is a quantity, and refused
# as the API refuses it.
MISSING = _Missing()

# A single JSON element or line larger than this is refused, so one broken
# record cannot make the reader buffer the rest of the file.
MAX_RECORD_CHARS = 1 << 20
_READ_CHARS = 1 << 16


class FileFormatError(Exception):
    """The file as a whole cannot be read (the message says why and where)."""


class RawRow(NamedTuple):
    line: int
    name: object
    price: object
    quantity: object  # MISSING when the file has no quantity for this row
    item: int | None = None  # 1-based position in a JSON array


class RowError(NamedTuple):
    line: int
    message: str
    item: int | None = None  # 1-based position in a JSON array

    def __str__(self) -> str:
        """Return ``line N: message``, or ``line N: item M: message`` in a JSON array."""
        where = f"line {self.line}: " + (f"item {self.item}: " if self.item is not None else "")
        return where + self.message


def format_for_path(path: str) -> str | None:
    """Return the format implied by a file name's extension, or None."""
    lowered = path.lower()
    for extension, fmt in EXTENSIONS.items():
        if lowered.endswith(extension):
            return fmt
    return None


def read_rows(stream: BinaryIO, fmt: str) -> Generator[RawRow | RowError, None, None]:
    """Yield the rows of ``stream`` in format ``fmt`` (csv, json or jsonl)."""
    if fmt == "csv":
        return _read_csv(stream)
    if fmt == "json":
        return _read_json_array(stream)
    if fmt == "jsonl":
        return _read_json_lines(stream)
    raise ValueError(f"unknown format {fmt!r}")


# --- CSV -------------------------------------------------------------------------


class _LineCountingBytes(io.BufferedIOBase):
    """Hand a binary stream to TextIOWrapper, counting the lines it has read.

    The decoder fails on a whole chunk; knowing how many lines came before
    that chunk turns the error's offset into the line of the bad byte.
    """

    def __init__(self, raw: BinaryIO) -> None:
        super().__init__()
        self._raw = raw
        self._last = b""
        self.lines_before_last = 0

    def readable(self) -> bool:
        return True

    def read1(self, size: int = -1) -> bytes:
        self.lines_before_last += self._last.count(b"\n")
        read1 = getattr(self._raw, "read1", None)
        self._last = read1(size) if read1 is not None else self._raw.read(size)
        return self._last

    read = read1

    def line_of(self, exc: UnicodeDecodeError) -> int:
        """Return the line of the byte ``exc`` (raised decoding the last chunk) points at."""
        # exc.object is the chunk, after any bytes of a character cut at the
        # previous chunk's end (never a newline).
        return self.lines_before_last + exc.object[: exc.start].count(b"\n") + 1


def _text(stream: BinaryIO, newline: str | None = "") -> io.TextIOWrapper:
    # utf-8-sig drops the byte-order mark spreadsheet programs put first.
    return io.TextIOWrapper(
        _LineCountingBytes(stream), encoding="utf-8-sig", errors="strict", newline=newline
    )


def _release(text: io.TextIOWrapper) -> None:
    # Leave the caller's binary stream open (it may be stdin).
    try:
        text.detach()
    except ValueError:  # the caller closed it already
        pass


def _bad_byte_line(text: io.TextIOWrapper, exc: UnicodeDecodeError) -> int:
    return text.buffer.line_of(exc)


def _not_utf8(line: int, exc: UnicodeDecodeError) -> FileFormatError:
    return FileFormatError(
        f"line {line}: the file is not valid UTF-8 ({exc.reason} at byte "
        f"{exc.object[exc.start : exc.start + 1]!r}); save it as UTF-8 and try again"
    )


# The csv module's own limit is 131,072 characters per field, and its error
# stops the reader: a field up to MAX_RECORD_CHARS is read and judged by the
# product rules (a 200,000-character name is that row's error, as in JSON);
# a longer one is its row's error too, and the reader goes on at the next line.
_CSV_FIELD_TOO_LONG = "field larger than field limit"


def _read_csv(stream: BinaryIO) -> Iterator[RawRow | RowError]:
    text = _text(stream)
    csv.field_size_limit(MAX_RECORD_CHARS)  # process-wide; every reader here wants the same
    reader = csv.reader(text, strict=True)
    last_line = 0
    try:
        header: list[str] | None = None
        for header in reader:
            if any(cell.strip() for cell in header):
                break
        if not header or not any(cell.strip() for cell in header):
            raise FileFormatError("the file is empty (expected a header row: name,price,quantity)")
        columns = [column.strip().lower() for column in header]
        _check_columns(columns, reader.line_num)
        last_line = reader.line_num
        width = len(columns)
        name_at = columns.index("name")
        price_at = columns.index("price")
        quantity_at = columns.index("quantity") if "quantity" in columns else -1
        while True:
            line = last_line + 1  # a quoted field may span lines: report the first
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                if not str(exc).startswith(_CSV_FIELD_TOO_LONG):
                    raise
                last_line = reader.line_num
                yield RowError(line, f"a field is longer than {MAX_RECORD_CHARS} characters")
                continue
            last_line = reader.line_num
            if not row:
                continue
            if len(row) != width:
                yield RowError(line, f"expected {width} fields, got {len(row)}")
                continue
            yield RawRow(
                line,
                row[name_at],
                row[price_at],
                # An empty cell is a quantity left out, as a missing column is
                # (a price list from a spreadsheet with blank stock cells).
                row[quantity_at] if quantity_at >= 0 and row[quantity_at].strip() else MISSING,
            )
    except UnicodeDecodeError as exc:
        raise _not_utf8(_bad_byte_line(text, exc), exc) from None
    except csv.Error as exc:
        # The reader cannot resynchronise after a broken quote.
        raise FileFormatError(f"line {last_line + 1}: malformed CSV: {exc}") from None
    finally:
        _release(text)


def _check_columns(columns: list[str], line: int) -> None:
    # Linear in the header's length, and a message of bounded size: a header
    # of 500,000 columns (under the upload limit) must not cost minutes.
    counts = Counter(columns)
    missing = [c for c in REQUIRED_COLUMNS if c not in counts]
    unknown = [c for c in counts if c not in COLUMNS and c]
    repeated = sorted(c for c, n in counts.items() if n > 1 and c)
    problems = []
    if missing:
        problems.append("missing required column(s): " + ", ".join(missing))
    problems += _unknown(unknown)
    if "" in counts:
        # A spreadsheet's export often ends the header with a comma.
        unnamed = [str(at) for at, column in enumerate(columns, 1) if not column]
        which = f"column {unnamed[0]} has" if len(unnamed) == 1 else f"columns {_some(unnamed)} have"
        problems.append(
            f"{which} no name (a comma at the end of the header?): "
            "every column needs one of the names name, price, quantity"
        )
    if repeated:
        problems.append("repeated column(s): " + _some(repeated))
    if problems:
        if len(columns) == 1 and any(sep in columns[0] for sep in (";", "\t", "|")):
            # A spreadsheet's export in a locale that separates with ";" (or
            # a TSV): the cause of everything else, so the one thing said.
            problems = ["the columns must be separated by commas (name,price,quantity)"]
        raise FileFormatError(f"line {line}: " + "; ".join(problems))


# Unknown or repeated columns named in one message; the rest are counted.
_NAMED_AT_MOST = 10


def _shown(field: str) -> str:
    return (field if field.isprintable() else repr(field))[:60]


def _some(fields: list[str]) -> str:
    named = ", ".join(_shown(field) for field in fields[:_NAMED_AT_MOST])
    rest = len(fields) - _NAMED_AT_MOST
    return named + (f" and {rest} more" if rest > 0 else "")


def _unknown(fields: list[str]) -> list[str]:
    """Return ``field: message`` for each field a client may not set (one rule with the API), at most 10."""
    message = unknown_field_message(COLUMNS).rstrip(".")
    problems = [f"{_shown(field)}: {message}" for field in fields[:_NAMED_AT_MOST]]
    rest = len(fields) - _NAMED_AT_MOST
    if rest > 0:
        problems.append(f"and {rest} more unknown field(s)")
    return problems


# --- JSON objects (shared by the array and JSON Lines readers) ---------------------


def _json_kind(value: object) -> str:
    """What JSON calls the value's type (an array, a number...), for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, numbers.Number):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else type(value).__name__


def _object_row(line: int, obj: object, item: int | None = None) -> RawRow | RowError:
    if not isinstance(obj, dict):
        return RowError(line, f"expected a JSON object, got {_json_kind(obj)}", item)
    if not (obj.keys() <= _ALLOWED_KEYS and "name" in obj and "price" in obj):
        problems = []
        problems += [f"{k}: {validators.REQUIRED_MESSAGE}" for k in REQUIRED_COLUMNS if k not in obj]
        problems += _unknown([k for k in obj if k not in _ALLOWED_KEYS])
        return RowError(line, "; ".join(problems), item)
    return RawRow(line, obj["name"], obj["price"], obj.get("quantity", MISSING), item)


_ALLOWED_KEYS = frozenset(COLUMNS)


# --- JSON Lines ----------------------------------------------------------------------


def _read_json_lines(stream: BinaryIO) -> Iterator[RawRow | RowError]:
    # No line at all is JSON Lines for no products (what export_products
    # writes for an empty catalogue), unlike an empty CSV (no header) or JSON.
    line = 0
    while True:
        raw = stream.readline(MAX_RECORD_CHARS)
        if not raw:
            break
        line += 1
        if len(raw) >= MAX_RECORD_CHARS and not raw.endswith(b"\n"):
            # Skip the rest of the overlong line, in bounded pieces.
            while raw and not raw.endswith(b"\n"):
                raw = stream.readline(MAX_RECORD_CHARS)
            yield RowError(line, f"line is longer than {MAX_RECORD_CHARS} bytes")
            continue
        if line == 1 and raw.startswith(codecs.BOM_UTF8):
            raw = raw[len(codecs.BOM_UTF8) :]
        if not raw.strip():
            continue
        try:
            obj = jsonnumbers.loads(raw)
        except jsonnumbers.JSONError as exc:
            yield RowError(line, f"malformed JSON: {_json_reason(exc, raw)}")
            continue
        yield _object_row(line, obj)


def _json_reason(exc: jsonnumbers.JSONError, raw: bytes) -> str:
    message = _json_message(exc)
    if "utf-8" in message.lower():
        return "not valid UTF-8"
    if exc.pos is None:
        return message
    # The caller already names the line; say where in it.
    return f"{message} at column {exc.pos + 1}"


def _json_message(exc: jsonnumbers.JSONError) -> str:
    # The json module's messages that end in a position ("Unterminated string
    # starting at") lose it in JSONError: the caller names the line instead.
    return re.sub(r"( starting)? at$", "", str(exc))


# --- JSON array, streamed ------------------------------------------------------------

_WHITESPACE = re.compile(r"[ \t\n\r]*")


class _ArrayScanner:
    """Walk a JSON array element by element over a bounded text buffer."""

    def __init__(self, text: io.TextIOBase) -> None:
        self._read = text.read
        self.buf = ""
        self.pos = 0
        self.line = 1  # the line of buf[pos]
        self.eof = False

    def fill(self) -> None:
        chunk = self._read(_READ_CHARS)
        if chunk:
            self.buf = self.buf[self.pos :] + chunk
            self.pos = 0
        else:
            self.eof = True

    def advance(self, to: int) -> None:
        self.line += self.buf.count("\n", self.pos, to)
        self.pos = to

    def peek(self) -> str:
        """Skip whitespace; return the next character, or "" at the end."""
        while True:
            self.advance(_WHITESPACE.match(self.buf, self.pos).end())
            if self.pos < len(self.buf):
                return self.buf[self.pos]
            if self.eof:
                return ""
            self.fill()


def _read_json_array(stream: BinaryIO) -> Iterator[RawRow | RowError]:
    # Universal newlines: a line ends at CR, LF or CRLF, as in the CSV reader
    # (JSON allows a raw CR or LF only as whitespace, so no value changes).
    text = _text(stream, newline=None)
    scanner = _ArrayScanner(text)
    item = 0
    try:
        first = scanner.peek()
        if first == "":
            raise FileFormatError("the file is empty (expected a JSON array of objects)")
        if first != "[":
            raise FileFormatError(
                f"line {scanner.line}: expected a JSON array ('[') of objects; "
                "for one object per line, the JSON Lines format (jsonl)"
            )
        scanner.advance(scanner.pos + 1)
        if scanner.peek() == "]":
            scanner.advance(scanner.pos + 1)
        else:
            while True:
                if scanner.peek() == "":
                    raise FileFormatError(f"line {scanner.line}: the JSON array is not closed")
                line = scanner.line
                item += 1
                while True:
                    try:
                        obj, end = jsonnumbers.raw_decode(scanner.buf, scanner.pos)
                    except jsonnumbers.JSONError as exc:
                        unfinished = not isinstance(exc, jsonnumbers.InvalidValue)
                        if (
                            unfinished
                            and not scanner.eof
                            and len(scanner.buf) - scanner.pos < MAX_RECORD_CHARS
                        ):
                            scanner.fill()  # the element may continue in the next chunk
                            continue
                        if unfinished and not scanner.eof:
                            # Still unfinished after MAX_RECORD_CHARS: too long, not malformed.
                            raise FileFormatError(
                                f"line {line}: item {item}: the element is longer than {MAX_RECORD_CHARS} characters"
                            ) from None
                        where = line + scanner.buf.count("\n", scanner.pos, exc.pos or scanner.pos)
                        raise FileFormatError(
                            f"line {where}: item {item}: malformed JSON: {_json_message(exc)}"
                        ) from None
                    if end == len(scanner.buf) and not scanner.eof:
                        scanner.fill()  # a number cut by the chunk boundary: read on
                        continue
                    break
                scanner.advance(end)
                yield _object_row(line, obj, item)
                separator = scanner.peek()
                if separator == ",":
                    scanner.advance(scanner.pos + 1)
                    continue
                if separator == "]":
                    scanner.advance(scanner.pos + 1)
                    break
                if separator == "":
                    raise FileFormatError(f"line {scanner.line}: the JSON array is not closed")
                raise FileFormatError(
                    f"line {scanner.line}: malformed JSON: expected ',' or ']' after an element"
                )
        if scanner.peek() != "":
            raise FileFormatError(f"line {scanner.line}: unexpected data after the JSON array")
    except UnicodeDecodeError as exc:
        raise _not_utf8(_bad_byte_line(text, exc), exc) from None
    finally:
        _release(text)
