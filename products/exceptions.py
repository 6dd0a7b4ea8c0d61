"""API errors: DRF's JSON shape, with the right status for every failure."""

from __future__ import annotations

import logging

from django.conf import settings
from django.core.exceptions import TooManyFieldsSent, TooManyFilesSent
from django.db import IntegrityError, OperationalError, ProgrammingError
from django.http import HttpResponse, JsonResponse
from django.http.multipartparser import MultiPartParserError
from django.middleware.clickjacking import XFrameOptionsMiddleware
from django.middleware.security import SecurityMiddleware
from django.utils.html import escape
from django.views import csrf, defaults
from rest_framework import status
from rest_framework.exceptions import APIException
from rest_framework.permissions import SAFE_METHODS
from rest_framework.response import Response
from rest_framework.utils.serializer_helpers import ReturnDict
from rest_framework.views import exception_handler, set_rollback

from .dberrors import first_line, lost_to_another_writer, schema_missing
from .validators import DUPLICATE_NAME_MESSAGE, QUANTITY_MAX

logger = logging.getLogger(__name__)

UNAVAILABLE_MESSAGE = "The database is unavailable; try again shortly."
LOCKED_MESSAGE = "Another write holds this data; nothing changed, try again shortly."
LOCKED_READ_MESSAGE = "Another write holds this data; try again shortly."  # a GET changes nothing anyway


class ProductNameConflict(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_code = "unique"

    def __init__(self, serializer=None) -> None:
        detail = {"name": [DUPLICATE_NAME_MESSAGE]}
        if serializer is not None:
            # Leave the serializer as a failed validation leaves it (what
            # is_valid() does for a ValidationError), and name it on the
            # detail: the browsable API then renders its form again with the
            # values sent and this error under the name, as it does for a 400.
            serializer._validated_data, serializer._errors = {}, detail
            detail = ReturnDict(detail, serializer=serializer)
        super().__init__(detail)


class InsufficientStockConflict(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "Not enough stock: the quantity would become negative."
    default_code = "insufficient_stock"


class StockOutOfRangeConflict(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = f"The quantity would exceed its maximum ({QUANTITY_MAX})."
    default_code = "stock_out_of_range"


class PreconditionFailed(APIException):
    status_code = status.HTTP_412_PRECONDITION_FAILED
    default_detail = "The product has changed since you read it (If-Match does not match)."
    default_code = "precondition_failed"


def log_unavailable_database(exc: BaseException) -> bool:
    """Log, on one line, a database error answered with 503; return whether another write held the lock."""
    locked = lost_to_another_writer(exc)
    if schema_missing(exc):
        logger.warning("Database not migrated (run manage.py migrate), answered 503: %s", first_line(exc))
    else:
        logger.warning("Database %s, answered 503: %s", "busy" if locked else "unavailable", first_line(exc))
    return locked


def api_exception_handler(exc: Exception, context: dict) -> Response | None:
    """Extend DRF's handler: a constraint the database caught is a 409, an unreachable database a 503."""
    if isinstance(exc, IntegrityError):
        # Two clients created the same name at once: validation passed for
        # both, the unique index stopped the second.
        logger.info("Integrity error answered as 409: %s", first_line(exc))
        text = str(exc).lower()
        if "unique" in text or "duplicate" in text:
            body = {"name": [DUPLICATE_NAME_MESSAGE]}
        else:
            body = {"detail": "The change conflicts with the stored data."}
        return Response(body, status=status.HTTP_409_CONFLICT)
    if isinstance(exc, OperationalError) or (isinstance(exc, ProgrammingError) and schema_missing(exc)):
        # The database is down, restarting or busy (a row lock held past
        # DATABASE_LOCK_TIMEOUT, SQLite's "database is locked"), or its tables
        # are not there yet (a deploy that has not run migrate): temporary,
        # so 503 and a retry hint, not a 500.
        set_rollback()
        request = context.get("request")
        locked = (
            LOCKED_READ_MESSAGE if request is not None and request.method in SAFE_METHODS else LOCKED_MESSAGE
        )
        return Response(
            {"detail": locked if log_unavailable_database(exc) else UNAVAILABLE_MESSAGE},
            status=status.HTTP_503_SERVICE_UNAVAILABLE,
            headers={"Retry-After": "5"},
        )
    return exception_handler(exc, context)


# --- Django-level errors: JSON under the API's paths -------------------------
# Django answers unknown URLs, uncaught exceptions and bad hosts itself,
# outside DRF. These handlers keep the API's promise (JSON, no traceback) for
# API paths and leave HTML pages to the admin and the browsable API login.

API_PATH_PREFIXES = ("/api/", "/products", "/health/")


def is_api_path(path: str) -> bool:
    """Return True for paths whose errors must be JSON."""
    return path.startswith(API_PATH_PREFIXES)


def answers_json(request) -> bool:
    """Return True when an error page for ``request`` should be JSON.

    On the API's paths always; elsewhere (an unknown URL, the admin, a static
    file) when the client prefers JSON to HTML in its ``Accept`` header, as a
    REST client does. Browsers, and clients that send no ``Accept``, get HTML.
    """
    return (
        is_api_path(request.path_info)
        or request.get_preferred_type(("text/html", "application/json")) == "application/json"
    )


def names_html(request) -> bool:
    """Return True when ``Accept`` names HTML before JSON (a browser; the browsable API's forms), ``*/*`` aside.

    DRF's browsable API sends its forms with ``Accept: text/html; q=1.0, */*``
    and reloads the page, hiding the answer, when it is not HTML.
    """
    for media in request.accepted_types:
        if (media.main_type, media.sub_type) == ("text", "html"):
            return True
        if (media.main_type, media.sub_type) == ("application", "json"):
            return False
    return False


def as_every_page(request, response: HttpResponse) -> HttpResponse:
    """Give an answer made before Django's security middlewares run (a body or a NUL refused) their headers.

    Every other page gets them from those middlewares: ``X-Frame-Options``,
    ``X-Content-Type-Options``, ``Referrer-Policy``, COOP and, on HTTPS, HSTS.
    """
    response = SecurityMiddleware(_no_view).process_response(request, response)
    return XFrameOptionsMiddleware(_no_view).process_response(request, response)


def _no_view(request):  # pragma: no cover - the middlewares above are used for their responses only
    raise AssertionError("not a view")


def json_error(detail: str, status_code: int) -> JsonResponse:
    return JsonResponse({"detail": detail}, status=status_code)


def html_page(
    status: int,
    heading: str,
    *paragraphs: str,
    title: str = "",
    back: str | None = None,
    back_text: str = "Back",
) -> HttpResponse:
    """A plain HTML error page for people (the admin, the login pages): ``paragraphs`` are HTML, escaped by the caller.

    ``back`` is a path to link to (the form the request came from).
    """
    links = f'<p><a href="{escape(back)}">{back_text}</a></p>' if back is not None else ""
    return HttpResponse(
        f"<!doctype html><title>{title or heading}</title><h1>{heading}</h1>"
        + "".join(f"<p>{paragraph}</p>" for paragraph in paragraphs)
        + links,
        status=status,
        content_type="text/html; charset=utf-8",
    )


_FEWER_ROWS = (
    "In the admin, act on fewer rows at once: an action's confirmation sends one field "
    "per selected row, so narrow the list with a search or a filter first."
)


def handler400(request, exception=None):
    if answers_json(request):
        return json_error(_bad_request_detail(exception), 400)
    if isinstance(exception, (TooManyFieldsSent, TooManyFilesSent, MultiPartParserError)):
        # Django's page says only "Bad Request (400)". An admin action's
        # confirmation posts one field per selected row ("Select all N" posts
        # the selection instead: products.admin.delete_selected_across); an
        # upload Django could not read is the admin's import (a file name so
        # long that its part's headers pass Django's 1,024-byte limit).
        hint = () if isinstance(exception, MultiPartParserError) else (_FEWER_ROWS,)
        return html_page(
            400,
            "Bad request (400)",
            f"{escape(_bad_request_detail(exception))} Nothing was changed.",
            *hint,
            title="Bad request",
            back=request.path,
        )
    # Not defaults.bad_request: its requires_csrf_token runs the CSRF check
    # again, which reads request.POST again, and a body Django refused (a
    # form in another charset than UTF-8) then escaped as gunicorn's own 500.
    return html_page(400, "Bad request (400)", "Nothing was changed.", title="Bad request")


def _bad_request_detail(exception: Exception | None) -> str:
    # Django's request limits: say which one, as its own message would (not
    # shown with DEBUG off); any other suspicious request stays unexplained.
    if isinstance(exception, TooManyFieldsSent):
        return (
            f"Too many parameters: at most {settings.DATA_UPLOAD_MAX_NUMBER_FIELDS} "
            "query string and form fields are accepted."
        )
    if isinstance(exception, TooManyFilesSent):
        return f"Too many files: at most {settings.DATA_UPLOAD_MAX_NUMBER_FILES} are accepted."
    if isinstance(exception, MultiPartParserError):
        reason = str(exception).strip().rstrip(".")[:200]
        return f"The form could not be read ({reason}); a file name of hundreds of characters is one cause."
    return "Bad request."


def handler403(request, exception=None):
    if answers_json(request):
        return json_error("You do not have permission to perform this action.", 403)
    return defaults.permission_denied(request, exception)


def csrf_failure(request, reason: str = ""):
    """CSRF_FAILURE_VIEW: DRF's words in JSON when the client prefers JSON, Django's page for a browser.

    The API's own views are exempt (DRF checks CSRF for session clients and
    answers 403 JSON itself); this answers the rest: the admin, the login
    pages and the redirect at ``/``, posted to by a client that sent no
    CSRF token.
    """
    if answers_json(request):
        return json_error(f"CSRF Failed: {reason}", 403)
    return csrf.csrf_failure(request, reason)


def handler404(request, exception=None):
    if answers_json(request):
        return json_error("Not found.", 404)
    return defaults.page_not_found(request, exception)


def handler500(request):
    if answers_json(request):
        return json_error("Internal server error.", 500)
    return defaults.server_error(request)
