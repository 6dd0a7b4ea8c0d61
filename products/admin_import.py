"""The admin's product import: upload, dry-run report, confirm. Nothing is written before the confirmation.

The upload is checked with the import service in dry-run mode (the same code
as ``manage.py import_products --dry-run``). A clean file is kept in the
user's session (database-backed, so any worker or host can finish the
import) under a random token with its SHA-256; the confirmation names that
token, and the import runs on exactly the bytes that were checked, all or
nothing. Files are bounded by the request body limit (DATA_UPLOAD_MAX_MEMORY_SIZE).
"""

from __future__ import annotations

import base64
import hashlib
import io
import secrets
from dataclasses import dataclass, field
from datetime import datetime

from django import forms
from django.conf import settings
from django.contrib import messages
from django.contrib.admin.models import ADDITION, CHANGE
from django.core.exceptions import PermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import router
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.defaultfilters import filesizeformat
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone

from . import cache, validators
from .admin_history import HISTORY_LIMIT, log_history
from .fileformats import EXTENSIONS, FORMATS, FileFormatError, RawRow, RowError, format_for_path, read_rows
from .models import Product
from .services.importing import ImportFailed, ImportResult, product_import_file

SESSION_KEY = "products.admin_import"
MAX_REPORTED_ERRORS = 1000  # every bad row up to this many; a count of the rest


class UploadForm(forms.Form):
    file = forms.FileField(
        help_text="CSV with a header row (name, price, quantity), a JSON array or JSON Lines.",
        widget=forms.ClearableFileInput(attrs={"accept": ",".join(EXTENSIONS)}),
    )
    fmt = forms.ChoiceField(
        label="Format",
        choices=[("", "From the file name"), *[(f, f.upper()) for f in FORMATS]],
        required=False,
    )

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # A larger upload is refused with the request (413), before any form sees it.
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        if limit is not None:
            self.fields["file"].help_text += f" At most {filesizeformat(limit)} (the request body limit)."

    def clean(self):
        data = super().clean()
        upload = data.get("file")
        if upload is not None:
            data["fmt"] = data.get("fmt") or format_for_path(upload.name)
            if not data["fmt"]:
                self.add_error("fmt", "Cannot tell the format from the file name: choose one.")
        return data


@dataclass
class Report:
    """What a dry run found, for the template."""

    result: ImportResult | None = None
    errors: list[str] = field(default_factory=list)
    more_errors: int = 0
    file_error: str = ""

    @property
    def ok(self) -> bool:
        return self.result is not None and not self.file_error and not self.result.failed

    @property
    def nothing_to_write(self) -> str:
        """Why a good file would write nothing (no rows, or every product already as it says), else ""."""
        if not self.ok or self.result.created or self.result.updated:
            return ""
        if self.result.unchanged:
            return "Nothing to import: every product in the file already has these values."
        return "Nothing to import: the file has no product rows."

    @property
    def confirmable(self) -> bool:
        return self.ok and not self.nothing_to_write


def _run(content: bytes, fmt: str, *, dry_run: bool) -> Report:
    report = Report()

    def collect(error: RowError) -> None:
        if len(report.errors) < MAX_REPORTED_ERRORS:
            report.errors.append(str(error))  # line N: [item M: ]message
        else:
            report.more_errors += 1

    try:
        report.result = product_import_file(
            stream=io.BytesIO(content), fmt=fmt, dry_run=dry_run, on_error=collect
        )
    except (FileFormatError, ImportFailed) as exc:
        report.file_error = str(exc)
    return report


def import_view(model_admin, request: HttpRequest) -> HttpResponse:
    """Upload (GET / POST with a file), then confirm (POST with the token)."""
    opts = model_admin.model._meta
    if not (model_admin.has_add_permission(request) and model_admin.has_change_permission(request)):
        raise PermissionDenied
    changelist = reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist")
    context = {
        **model_admin.admin_site.each_context(request),
        "opts": opts,
        "title": "Import products",
        "changelist_url": changelist,
    }
    if request.method == "POST" and "confirm" in request.POST:
        return _confirm(request, changelist, context)
    form = UploadForm(request.POST or None, request.FILES or None)
    if request.method == "POST" and form.is_valid():
        upload = form.cleaned_data["file"]
        content = upload.read()
        fmt = form.cleaned_data["fmt"]
        report = _run(content, fmt, dry_run=True)
        context.update(report=report, filename=upload.name, fmt=fmt)
        if report.confirmable:
            context["token"] = _await_confirmation(request, upload.name, fmt, content)
        else:
            request.session.pop(SESSION_KEY, None)
    context["form"] = form
    return TemplateResponse(request, "admin/products/product/import.html", context)


def _file_names(content: bytes, fmt: str) -> set[str]:
    """Return the names of the file's good rows."""
    names = set()
    for row in read_rows(io.BytesIO(content), fmt):
        if isinstance(row, RawRow):
            try:
                names.add(validators.clean_name(row.name))
            except DjangoValidationError:
                pass  # a bad row: the import refuses the file anyway
    return names


def _file_products(names: set[str]) -> dict[str, tuple[int, datetime]]:
    """Return the products with these names as they are now: name -> (pk, updated_at)."""
    ordered, state = sorted(names), {}
    for start in range(0, len(ordered), 500):  # under every database's parameter limit
        chunk = ordered[start : start + 500]
        state.update(
            (name, (pk, updated_at))
            for pk, name, updated_at in Product.objects.filter(name__in=chunk).values_list(
                "pk", "name", "updated_at"
            )
        )
    return state


def _plan(content: bytes, fmt: str, state: dict[str, tuple[int, datetime]] | None = None) -> str:
    """Return a fingerprint of the catalogue as the file's rows would meet it: their products now.

    Any create, change or delete of one of the file's products between the
    dry run and the confirmation changes it (counts alone would not tell a
    product someone created from one someone deleted).
    """
    state = _file_products(_file_names(content, fmt)) if state is None else state
    digest = hashlib.sha256()
    for name, (_, updated_at) in sorted(state.items()):
        digest.update(f"{name}\0{updated_at.isoformat()}\n".encode())
    return digest.hexdigest()


def _await_confirmation(request: HttpRequest, filename: str, fmt: str, content: bytes) -> str:
    """Keep the checked file in the session under a new token, with the dry run's plan; return the token."""
    token = secrets.token_urlsafe(16)
    request.session[SESSION_KEY] = {
        "token": token,
        "filename": filename,
        "fmt": fmt,
        "sha256": hashlib.sha256(content).hexdigest(),
        "content": base64.b64encode(content).decode("ascii"),
        "plan": _plan(content, fmt),
    }
    return token


def _log_history(
    request: HttpRequest, names: set[str], before: dict, started, result: ImportResult, filename: str
) -> str:
    """Write each created or changed product's admin History; return what to add to the message."""
    if result.created + result.updated > HISTORY_LIMIT:
        return f" (no History entries: more than {HISTORY_LIMIT:,} products changed at once)"
    # The rows the import wrote carry its timestamp; the file's other products kept theirs.
    written = [
        (pk, name)
        for pk, name in Product.objects.filter(updated_at__gte=started).values_list("pk", "name")
        if name in names
    ]
    created = [pk for pk, name in written if name not in before]
    changed = [pk for pk, name in written if name in before]
    log_history(request, created, ADDITION, f"Created by the import of {filename}.")
    log_history(request, changed, CHANGE, f"Changed by the import of {filename}.")
    return ""


class _PlanChanged(Exception):
    """The catalogue changed since the dry run: the import would not do what the user confirmed."""


def _confirm(request: HttpRequest, changelist: str, context: dict) -> HttpResponse:
    stored = request.session.get(SESSION_KEY)
    if not stored or not secrets.compare_digest(stored["token"], request.POST.get("token", "")):
        messages.error(request, "That upload is no longer waiting for confirmation; upload the file again.")
        return HttpResponseRedirect(request.path)
    content = base64.b64decode(stored["content"])
    if hashlib.sha256(content).hexdigest() != stored["sha256"]:  # pragma: no cover - session tampering
        raise PermissionDenied
    del request.session[SESSION_KEY]
    try:
        cache.adopt_server()  # outside the snapshot below
        # The plan checked and the import see the same catalogue: a product
        # created in between was updated by a confirmed "create".
        with Product.objects.using(router.db_for_write(Product)).one_snapshot():
            names = _file_names(content, stored["fmt"])
            before = _file_products(names)
            if _plan(content, stored["fmt"], before) != stored.get("plan"):
                raise _PlanChanged
            started = timezone.now()
            report = _run(content, stored["fmt"], dry_run=False)
            if report.ok:
                history = _log_history(request, names, before, started, report.result, stored["filename"])
    except _PlanChanged:
        # Someone created or changed a product meanwhile: the confirmed
        # report (say "create 2") would now update theirs. Show the new plan.
        report = _run(content, stored["fmt"], dry_run=True)
        context.update(report=report, filename=stored["filename"], fmt=stored["fmt"], form=UploadForm())
        if report.confirmable:
            context["token"] = _await_confirmation(request, stored["filename"], stored["fmt"], content)
        messages.warning(
            request,
            "The catalogue changed since the dry run; nothing was written. Check the new report, then confirm again.",
        )
        return TemplateResponse(request, "admin/products/product/import.html", context)
    if not report.ok:
        # The catalogue changed since the dry run (e.g. a name was taken meanwhile).
        context.update(report=report, filename=stored["filename"], fmt=stored["fmt"], form=UploadForm())
        messages.error(request, "The import found problems on confirmation; nothing was written.")
        return TemplateResponse(request, "admin/products/product/import.html", context)
    result = report.result
    messages.success(
        request,
        f"Imported {stored['filename']}: created {result.created}, updated {result.updated}, "
        f"unchanged {result.unchanged}.{history}",
    )
    return HttpResponseRedirect(changelist)
