"""manage.py import_products PATH: upsert products from CSV / JSON / JSON Lines."""

from __future__ import annotations

import sys
from typing import BinaryIO

from django.core.management.base import CommandError

from products.fileformats import FORMATS, FileFormatError, format_for_path
from products.services.importing import IMPORT_BATCH_SIZE, ImportFailed, ImportResult, product_import_file

from ._common import DataCommand, HeldInterrupt, Progress, rate


class Command(DataCommand):
    help = (
        "Import products from a CSV file with a header row, a JSON array or JSON Lines "
        "(PATH '-' reads stdin). Upserts by name. All or nothing: if any row is invalid, "
        "every bad row is reported and nothing is written."
    )
    # Tests hand in a binary stream to stand for stdin.
    stealth_options = ("stdin",)
    interrupted = "Interrupted: nothing was imported (the import runs in one transaction, rolled back)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("path", metavar="PATH", help="file to import; '-' reads standard input")
        parser.add_argument(
            "--format",
            dest="fmt",
            choices=FORMATS,
            help="file format (default: from the extension .csv, .json, .jsonl/.ndjson; required for stdin)",
        )
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="validate and report what would change, write nothing",
        )
        parser.add_argument(
            "--batch-size",
            type=int,
            default=IMPORT_BATCH_SIZE,
            metavar="N",
            help=f"rows looked up and written per statement (default {IMPORT_BATCH_SIZE})",
        )

    def handle(self, *args, path: str, fmt: str | None, dry_run: bool, batch_size: int, **options) -> None:
        if batch_size < 1:
            raise CommandError("--batch-size must be at least 1")
        if fmt is None and path == "-":
            raise CommandError("reading standard input needs --format csv|json|jsonl")
        # Opened first: a missing file or a directory says so, whatever its name.
        stream = self._open(path, options.get("stdin"))
        if fmt is None:
            fmt = format_for_path(path)
            if fmt is None:
                stream.close()
                raise CommandError(
                    f"{path}: cannot tell the format from the file name; "
                    "use a .csv, .json or .jsonl extension, or pass --format csv|json|jsonl"
                )
        held = HeldInterrupt()
        try:
            with Progress(self.stderr) as progress:
                result = product_import_file(
                    stream=stream,
                    fmt=fmt,
                    batch_size=batch_size,
                    dry_run=dry_run,
                    on_error=lambda error: progress.write(str(error)),
                    on_progress=progress.update,
                    commit_guard=held,
                )
        except FileFormatError as exc:
            raise CommandError(f"{self._label(path)}: {exc}. Nothing was written.") from None
        except ImportFailed as exc:
            raise CommandError(f"{self._label(path)}: {exc}") from None
        except OSError as exc:
            raise CommandError(f"{self._label(path)}: cannot read: {exc}. Nothing was written.") from None
        finally:
            if path != "-":
                stream.close()
        summary = _summary(result)
        if result.failed:
            raise CommandError(
                f"{self._label(path)}: {result.failed} invalid row(s) (listed above); "
                f"nothing was written. Checked {summary}."
            )
        if dry_run:
            self.output_lost = "a dry run: nothing was written"
            self.stdout.write(f"Dry run, nothing written. Would have: {summary}.")
        else:
            self.output_lost = f"the import itself is complete ({summary})"
            self.stdout.write(self.style.SUCCESS(f"Imported {self._label(path)}: {summary}."))
        held.exit_if_caught(
            self.stderr,
            self.style.WARNING(
                "Interrupted at the end of the dry run: nothing was written."
                if dry_run
                else "Interrupted during the commit, which finished first: the import above is complete."
            ),
        )

    def _open(self, path: str, stdin: BinaryIO | None) -> BinaryIO:
        if path == "-":
            if stdin is None and sys.stdin is None:
                raise CommandError("standard input is closed: give a file, or pipe the rows in")
            return stdin if stdin is not None else sys.stdin.buffer
        try:
            return open(path, "rb")
        except FileNotFoundError:
            raise CommandError(f"{path}: no such file") from None
        except IsADirectoryError:
            raise CommandError(f"{path}: is a directory, not a file") from None
        except PermissionError:
            raise CommandError(f"{path}: permission denied, cannot read the file") from None
        except OSError as exc:
            raise CommandError(f"{path}: cannot open: {exc.strerror or exc}") from None

    @staticmethod
    def _label(path: str) -> str:
        return "standard input" if path == "-" else path


def _summary(result: ImportResult) -> str:
    return (
        f"created {result.created}, updated {result.updated}, unchanged {result.unchanged}, "
        f"failed {result.failed} ({result.rows} row{'' if result.rows == 1 else 's'} in {result.seconds:.2f} s, "
        f"{rate(result.rows_per_second)} rows/s)"
    )
