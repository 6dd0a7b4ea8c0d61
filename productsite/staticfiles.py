"""Static files before ``collectstatic`` has run: the pages render, the files come from the apps.

With DEBUG off, whitenoise serves what ``collectstatic`` wrote to
STATIC_ROOT, under hashed names from its manifest. Without that manifest
Django's manifest storage raises for every ``{% static %}``: the admin, the
docs and the browsable API answered 500. Here a missing manifest means
"not collected": the pages name the files unhashed, and
:func:`serve_uncollected` serves them from the installed apps, one request
at a time (nothing is scanned at start-up), uncompressed and cacheable for
a short while only, with a warning in the log the first time.
"""

from __future__ import annotations

import logging
from pathlib import Path

from django.conf import settings
from django.contrib.staticfiles.views import serve
from django.http import HttpResponse
from django.views.decorators.http import require_safe
from whitenoise.storage import CompressedManifestStaticFilesStorage

logger = logging.getLogger("productsite")
_warned = False


class ManifestStaticFilesStorage(CompressedManifestStaticFilesStorage):
    """whitenoise's compressed manifest storage; unhashed names while nothing is collected."""

    def stored_name(self, name: str) -> str:
        if not self.hashed_files and not self.manifest_hash:  # no manifest was read
            return name
        return super().stored_name(name)


def uncollected() -> bool:
    """Return True when files should come from STATIC_ROOT (DEBUG off) but ``collectstatic`` has not run."""
    root = settings.STATIC_ROOT
    return (
        not settings.DEBUG
        and bool(root)
        and not (Path(root) / ManifestStaticFilesStorage.manifest_name).is_file()
    )


def serve_uncollected(request, path: str):
    """Serve one static file from the apps' directories (404 if none has it); warn once per process."""
    global _warned
    if not _warned:
        _warned = True
        logger.warning(
            "Static files are not collected (no %s in STATIC_ROOT): serving them from the installed apps,"
            " uncompressed; run `manage.py collectstatic` before serving in production.",
            ManifestStaticFilesStorage.manifest_name,
        )
    response = serve(request, path, insecure=True)
    response["Cache-Control"] = "max-age=60, public"
    return response


_FAVICON = Path(__file__).resolve().parent.parent / "products" / "static" / "products" / "favicon.png"


@require_safe
def favicon(request):
    """``/favicon.ico``, which browsers ask for on every site: a 404 there is an error in each page's console."""
    response = HttpResponse(_FAVICON.read_bytes(), content_type="image/png")
    response["Cache-Control"] = "public, max-age=86400"
    return response
