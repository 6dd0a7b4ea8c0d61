"""manage.py export_products: stream every product out as CSV / JSON / JSON Lines."""

from __future__ import annotations

import functools
import os
import stat
import tempfile
from collections.abc import Callable

from django.core.management.base import CommandError, OutputWrapper

from products.fileformats import FORMATS, format_for_path
from products.models import Product
from products.services.exporting import EXPORT_CHUNK_SIZE, EXPORT_MAX_CHUNK_SIZE, ExportResult, product_export

from ._common import DataCommand, Progress, rate


class _StdoutText:
    """Send export text to the command's stdout unchanged (no added newlines)."""

    def __init__(self, stdout: OutputWrapper) -> None:
        self._stdout = stdout

    def write(self, text: str) -> None:
        self._stdout.write(text, ending="")


class Command(DataCommand):
    help = (
        "Export every product (name, price, quantity) as CSV, a JSON array or JSON Lines, "
        "to standard output or -o PATH. import_products reads it back: the same names, prices "
        "and quantities (ids and timestamps are not in the file)."
    )
    nothing_written = ""  # it reads the database (and writes no half file)

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--format",
            dest="fmt",
            choices=FORMATS,
            help="output format (default: from the -o extension; csv without one)",
        )
        parser.add_argument(
            "-o",
            "--output",
            default="-",
            metavar="PATH",
            help="file to write (replaced only once the export is complete); default: standard output",
        )
        parser.add_argument(
            "--spreadsheet-safe",
            action="store_true",
            help=(
                "CSV for spreadsheets: prefix names starting with = + - @ tab or CR with a quote (') "
                "so they are not run as formulas. Such names then import back with the quote; "
                "without this flag names import back exactly"
            ),
        )
        parser.add_argument(
            "--chunk-size",
            type=int,
            default=EXPORT_CHUNK_SIZE,
            metavar="N",
            help=(
                f"rows fetched from the database at a time, 1 to {EXPORT_MAX_CHUNK_SIZE:,} "
                f"(default {EXPORT_CHUNK_SIZE})"
            ),
        )

    def handle(
        self, *args, fmt: str | None, output: str, chunk_size: int, spreadsheet_safe: bool, **options
    ) -> None:
        if not 1 <= chunk_size <= EXPORT_MAX_CHUNK_SIZE:
            raise CommandError(
                f"--chunk-size must be from 1 to {EXPORT_MAX_CHUNK_SIZE:,} (got {chunk_size:,})"
            )
        to_stdout = output == "-"
        if fmt is None:
            fmt = "csv" if to_stdout else format_for_path(output)
            if fmt is None and os.path.splitext(output)[1] and not _written_in_place(output):
                # x.xml: another format's name on a CSV file would mislead whoever opens it.
                raise CommandError(
                    f"{output}: cannot tell the format from the file name; "
                    "use a .csv, .json or .jsonl extension, or pass --format csv|json|jsonl"
                )
            fmt = fmt or "csv"
        if spreadsheet_safe and fmt != "csv":
            raise CommandError(f"--spreadsheet-safe applies to CSV only, not {fmt}")
        if to_stdout:
            self.interrupted = "Interrupted: the export on standard output is incomplete."
            self.output_lost = "the export on standard output is incomplete"
        elif _written_in_place(output):
            self.interrupted = (
                f"Interrupted: {output} holds an incomplete export (a link or device is written in place)."
            )
        else:
            self.interrupted = (
                f"Interrupted: {output} was left as it was (an export replaces it only once complete)."
            )
        show_bar = not to_stdout or not self.stdout.isatty()
        total = Product.objects.count() if show_bar and self.stderr.isatty() else None
        with Progress(self.stderr, total=total, enabled=show_bar) as progress:
            export = functools.partial(
                product_export,
                fmt=fmt,
                chunk_size=chunk_size,
                on_progress=progress.update,
                spreadsheet_safe=spreadsheet_safe,
            )
            if to_stdout:
                # A reader that goes away (e.g. "| head") stops it quietly (ProductCommand).
                result = export(out=_StdoutText(self.stdout))
            else:
                result = self._export_to_file(output, export)
        summary = (
            f"Exported {result.rows} product(s) in {result.seconds:.2f} s "
            f"({rate(result.rows_per_second)} rows/s)"
        )
        if to_stdout or _written_in_place(output):
            # stdout may carry the data (-o /dev/stdout is a link to it, as
            # is a pipe's /dev/fd/N): the summary goes where the progress does.
            self.stderr.write(f"{summary} to {output}" if not to_stdout else summary)
        else:
            self.stdout.write(self.style.SUCCESS(f"{summary} to {output}"))

    def _export_to_file(self, output: str, export: Callable[..., ExportResult]) -> ExportResult:
        if _written_in_place(output):
            # A device, a FIFO or a link (/dev/null, /dev/stdout, a named
            # pipe): write straight into it. Renaming over it would replace
            # the device or link itself with a regular file.
            try:
                with open(output, "w", encoding="utf-8", newline="") as handle:
                    return export(out=handle)
            except OSError as exc:
                raise CommandError(f"{output}: cannot write: {exc.strerror or exc}") from None
        directory = os.path.dirname(os.path.abspath(output))
        try:
            # A regular file: write beside it and rename at the end, so a
            # failed export never leaves a truncated file where a good one was.
            handle = tempfile.NamedTemporaryFile(
                "w",
                encoding="utf-8",
                newline="",
                dir=directory,
                delete=False,
                prefix=f".{os.path.basename(output)}.",
                suffix=".tmp",
            )
        except OSError as exc:
            raise CommandError(f"{output}: cannot write: {exc.strerror or exc}") from None
        try:
            with handle:
                result = export(out=handle)
            # The temporary file is private (0600); give the export the mode
            # the file had, or the one a new file would get.
            os.chmod(handle.name, _mode_for(output))
            os.replace(handle.name, output)
        except OSError as exc:
            os.unlink(handle.name)
            raise CommandError(f"{output}: cannot write: {exc.strerror or exc}") from None
        except BaseException:
            os.unlink(handle.name)
            raise
        return result


def _written_in_place(output: str) -> bool:
    """Return True for a link or a device, FIFO, ...: written straight into, not replaced at the end."""
    return os.path.islink(output) or (os.path.exists(output) and not os.path.isfile(output))


def _mode_for(path: str) -> int:
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask
