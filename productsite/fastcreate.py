"""Authenticated JSON creates of one product, answered in front of Django (deployment layer).

``POST /api/products/`` with ``Authorization: Token ...`` is the write clients
make most, and DRF's request machinery (the middleware stack, the request
wrapper, content negotiation, the serializer's field copies, the renderer)
cost more than the create itself. :class:`FastProductCreates` wraps Django's
WSGI application (productsite/wsgi.py, inside
:class:`productsite.fastpath.FastProductReads`) and answers the successful
create itself, running the API's own parts in the API's order:

* the token authentication of ``products.authentication`` (its failed-login
  limit check, then DRF's token check with the cached user and permissions
  of ``products.token_cache``);
* the viewset's permission classes (``products.permissions``);
* ``ProductSerializer``'s whole validation (``run_validation``, the method
  ``is_valid()`` runs), except its separate name-taken query: the INSERT's
  unique constraint decides that instead (one query per create, not two);
* the viewset's throttle classes (``products.counters``' batched counts);
* ``ProductSerializer.create``: what the model's ``save()`` does for a new
  product (the signals, hence the cache invalidation and the outbox, the
  timestamps, the INSERT) done by :func:`productsite.fastinsert.create`, with
  the INSERT's SQL written once per connection by Django's compiler (the
  generic path when the model or its save path changes);
* the response the view and the middleware give a 201: the same body
  (DRF's JSON renderer), ``Location``, ``ETag``, ``Vary``, ``Allow``, the
  security headers, ``X-Request-ID``, and the one log line per request.

It only ever answers a success. Whenever anything would go another way (a
body the serializer refuses, an unknown or refused token, no permission, a
throttled client, a taken name, an unexpected error before the INSERT) the
request goes to Django with its body put back, untouched, and Django gives
its own answer; no error message is written here. A request handed over
after the throttle counted it is given back first (``give_back``), so Django
counts it once.

Fails closed, like the read fast path: it runs only while
``productsite.fastpath`` runs (same ``MIDDLEWARE``, authentication classes,
``PRODUCT_FAST_PATH``) and the create route is the view it mirrors
(:func:`configuration_problems`); otherwise every create goes to Django and
``manage.py check`` says why (productsite.W002).

Per request, only this is taken: a POST to exactly ``/api/products/`` with no
query string, ``Content-Type: application/json``, a ``Content-Length`` of at
most :data:`MAX_BODY` bytes and no ``Transfer-Encoding``, an
``Authorization: Token ...`` header and no ``Cookie``, an ``Accept`` that is
absent, ``*/*`` or ``application/json``, no NUL in a header, an allowed host
and no ``X-Forwarded-Host`` Django would read, no HTTPS redirect due.

A create that wrote nothing is handed to Django too: a database error at the
INSERT (the unique index refusing a taken name, a locked or unreachable
database; in autocommit the failed INSERT wrote nothing), or any error before
it (a ``pre_save`` receiver, say; logged, as :meth:`FastProductCreates.prepare`
logs its own). Once the INSERT has succeeded the product exists, and an error
after it is never handed to Django (which would then answer 409 for the
product just created); it propagates to the server, which answers 500. The
``post_save`` receivers that follow cannot fail that way: the invalidation
runs after commit, robustly, and a failure to record a missed one is logged,
not raised (``products.outbox``).
"""

from __future__ import annotations

import io
import logging
import re
import time
from collections.abc import Callable, Iterable

from django.conf import settings
from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.handlers.wsgi import WSGIRequest, get_path_info, get_script_name
from django.core.signals import setting_changed
from django.db import DatabaseError, close_old_connections, router, transaction
from django.urls import get_script_prefix, reverse, set_script_prefix
from rest_framework import authentication as drf_authentication
from rest_framework import mixins
from rest_framework.exceptions import APIException
from rest_framework.generics import GenericAPIView
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.renderers import JSONRenderer
from rest_framework.settings import api_settings
from rest_framework.viewsets import GenericViewSet

from products import jsonnumbers
from products.authentication import TokenAuthentication
from products.dberrors import WRITE_LOCK_LOST, waited_out_a_lock
from products.logfields import current_request_id, request_id
from products.middleware import log_request
from products.models import Product
from products.parsers import ExactJSONParser
from products.permissions import ProductPermissions
from products.responses import etag_of, product_location
from products.serializers import NAME_CHECKED_BY_INSERT, ProductSerializer
from products.throttling import AnonymousFixedWindowThrottle, UserFixedWindowThrottle
from products.validators import NAME_URL_PATTERN
from products.views import ProductViewSet
from productsite import fastinsert, fastpath
from productsite.fastpath import StartResponse

logger = logging.getLogger(__name__)

PATH = "/api/products/"
# A product body is well under this; anything longer goes to Django.
MAX_BODY = 4096
_CONTENT_TYPES = frozenset(("application/json", "application/json; charset=utf-8"))
_ALLOW = "GET, POST, HEAD, OPTIONS"
_MEDIA_TYPE = "application/json"
_MAX_SCRIPT_PREFIXES = 64

# What the create view must not override: the fast path runs their defaults.
_INHERITED = {
    "perform_create": mixins.CreateModelMixin,
    "get_success_headers": mixins.CreateModelMixin,
    "get_serializer": GenericAPIView,
    "get_serializer_class": GenericAPIView,
    "get_serializer_context": GenericAPIView,
    "initial": GenericViewSet,
    "initialize_request": GenericViewSet,
    "perform_authentication": GenericViewSet,
    "check_permissions": GenericViewSet,
    "check_throttles": GenericViewSet,
    "get_permissions": GenericViewSet,
    "get_throttles": GenericViewSet,
    "finalize_response": GenericViewSet,
    "dispatch": GenericViewSet,
}


def configuration_problems() -> list[str]:
    """Return why creates cannot take the fast path on this configuration (empty: they can)."""
    from django.urls import Resolver404, resolve

    problems = [f"the read fast path is off: {p}" for p in fastpath.configuration_problems()]
    try:
        route = resolve(PATH)
    except Resolver404:
        return [*problems, f"the URLconf does not route {PATH}"]
    if getattr(route.func, "cls", None) is not ProductViewSet or route.func.actions.get("post") != "create":
        problems.append(f"POST {PATH} is not ProductViewSet.create")
    view = ProductViewSet
    for name, owner in _INHERITED.items():
        if getattr(view, name) is not getattr(owner, name):
            problems.append(f"ProductViewSet overrides {name}")
    if view.serializer_class is not ProductSerializer:
        problems.append("ProductViewSet's serializer is not ProductSerializer")
    if list(view.permission_classes) != [ProductPermissions]:
        problems.append("ProductViewSet has other permission classes")
    if list(view.throttle_classes) != [AnonymousFixedWindowThrottle, UserFixedWindowThrottle]:
        problems.append("ProductViewSet has other throttle classes")
    if not view.parser_classes or view.parser_classes[0] is not ExactJSONParser:
        problems.append("ProductViewSet does not parse JSON with ExactJSONParser first")
    if not view.renderer_classes or view.renderer_classes[0] is not JSONRenderer:
        problems.append("ProductViewSet does not render JSON first")
    if view.content_negotiation_class is not DefaultContentNegotiation or view.versioning_class is not None:
        problems.append("ProductViewSet negotiates content or versions differently")
    if view.lookup_field != "name" or view.lookup_value_regex != NAME_URL_PATTERN:
        problems.append(
            "ProductViewSet looks products up otherwise (the Location is built for NAME_URL_PATTERN)"
        )
    if api_settings.URL_FIELD_NAME in ProductSerializer.Meta.fields:
        problems.append("ProductSerializer has a URL field (DRF would send it as Location)")
    return problems


class _Setup:
    """What the create fast path derives from settings; rebuilt when a setting changes."""

    def __init__(self) -> None:
        self.mirrored: bool | None = None
        self.route = "product-list"
        # One serializer serves every request: run_validation, create and
        # to_representation keep no state on it, and its fields are copied
        # from the class once instead of once per request.
        self.serializer = ProductSerializer(context={NAME_CHECKED_BY_INSERT: True})
        self.renderer = JSONRenderer()
        # Script prefix -> the product-detail path around a name (see _location).
        self.detail_paths: dict[str, tuple[str, str]] = {}

    def enabled(self) -> bool:
        if not settings.PRODUCT_FAST_PATH:
            return False
        if self.mirrored is None:
            problems = configuration_problems()
            if problems:
                logger.warning("Fast creates off (every create goes to Django): %s", "; ".join(problems))
            else:
                from django.urls import resolve

                self.route = resolve(PATH).view_name
                self.serializer.fields  # noqa: B018  (copied now, not by two threads at once)
            self.mirrored = not problems
        return self.mirrored


_setup = _Setup()


def _reset_setup(**kwargs) -> None:
    global _setup
    _setup = _Setup()
    fastinsert.reset()


# Connected here, not in an AppConfig.ready(): only a server process loads
# this module (productsite/wsgi.py), and a command should not load it to
# reset what it never derived.
setting_changed.connect(_reset_setup, dispatch_uid="productsite.fastcreate.reset_setup")


class _Prepared:
    """A create that passed every check and is counted, about to be inserted."""

    __slots__ = ("attrs", "location", "request", "setup", "started", "throttles")

    def __init__(self, request, setup, attrs, location, throttles, started) -> None:
        self.request = request
        self.setup = setup
        self.attrs = attrs
        self.location = location
        self.throttles = throttles
        self.started = started


class FastProductCreates:
    """WSGI middleware: answer successful authenticated JSON creates, hand the rest to ``app``."""

    def __init__(self, app: Callable[[dict, StartResponse], Iterable[bytes]]) -> None:
        self.app = app

    def __call__(self, environ: dict, start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD") == "POST":
            setup = _setup
            length = _matching_length(environ) if setup.enabled() else None
            if length is not None:
                started = time.perf_counter()
                body = environ["wsgi.input"].read(length)
                # Put back at once: whatever happens next, Django can read it.
                environ["wsgi.input"] = io.BytesIO(body)
                prepared = None
                # What is logged meanwhile names the request; handed to Django,
                # the request keeps this id.
                rid = environ["HTTP_X_REQUEST_ID"] = request_id(environ.get("HTTP_X_REQUEST_ID"))
                serving = current_request_id.set(rid)
                try:
                    if len(body) == length:
                        try:
                            prepared = self.prepare(environ, body, setup, started)
                        except DatabaseError:
                            # The database is down: Django's answer (a 503) logs it, once.
                            prepared = None
                        except Exception:
                            logger.exception(
                                "Fast create failed before its INSERT; handing the request to Django"
                            )
                    if prepared is not None:
                        answer = self.create(prepared)
                        if answer is not None:
                            return answer(start_response)
                finally:
                    current_request_id.reset(serving)
        return self.app(environ, start_response)

    def prepare(self, environ: dict, body: bytes, setup: _Setup, started: float) -> _Prepared | None:
        """Run every check the API runs before saving; None hands the request to Django."""
        try:
            data = jsonnumbers.loads(body)
        except jsonnumbers.JSONError:
            return None
        if not isinstance(data, dict):
            return None
        # As Django's handler does first: reverse() (the Location) honours the script name.
        set_script_prefix(get_script_name(environ))
        request = WSGIRequest(environ)
        # Django's request_started does this before a view touches the
        # database: drop a broken or aged connection.
        close_old_connections()
        try:
            # products.authentication.TokenAuthentication.authenticate, but a
            # refused token is not recorded here: Django, answering the 401,
            # records it (once). One authenticator per request, as DRF makes.
            authenticator = TokenAuthentication()
            authenticator.check_limits(request, drf_authentication.get_authorization_header(request).split())
            found = drf_authentication.TokenAuthentication.authenticate(authenticator, request)
        except APIException:
            return None
        if found is None:
            return None
        request.user, request.auth = found
        view = ProductViewSet(action="create", args=(), kwargs={}, request=request, format_kwarg=None)
        if not all(permission.has_permission(request, view) for permission in view.get_permissions()):
            return None
        try:
            attrs = setup.serializer.run_validation(data)
        except (APIException, DjangoValidationError):
            return None
        location = _location(request, setup, attrs["name"])
        throttles = []
        for throttle in view.get_throttles():
            if not throttle.allow_request(request, view):
                _give_back(throttles, request)
                return None
            throttles.append(throttle)
        return _Prepared(request, setup, attrs, location, throttles, started)

    def create(self, prepared: _Prepared):
        """Insert the product; return the response, or None (a taken name) to hand it to Django."""
        serializer = prepared.setup.serializer
        using = router.db_for_write(Product)
        try:
            if transaction.get_connection(using).in_atomic_block:
                # Only inside a test's transaction: a refused INSERT must
                # leave it usable for Django's answer.
                with transaction.atomic(using=using):
                    instance = fastinsert.create(serializer, prepared.attrs, using)
            else:
                instance = fastinsert.create(serializer, prepared.attrs, using)
        except fastinsert.NotInserted as exc:
            # Nothing was written: the name is taken (validation passed, the
            # unique index did not), the database is locked or down, or
            # something before the INSERT failed. The API answers that, with
            # its own check and error handling.
            _give_back(prepared.throttles, prepared.request)
            if exc.__cause__ is not None and waited_out_a_lock(exc.__cause__):
                # The INSERT waited the whole lock timeout already: the view
                # answers this error (503) instead of waiting once more.
                prepared.request.META[WRITE_LOCK_LOST] = exc.__cause__
            return None
        representation = serializer.to_representation(instance)
        body = prepared.setup.renderer.render(representation, _MEDIA_TYPE, {})
        request = prepared.request
        rid = request.META["HTTP_X_REQUEST_ID"]  # set by __call__, as the response's
        # In the order the view, DRF and the middleware set them. Vary is
        # DRF's alone: no session was read, so no "Cookie".
        common = dict(fastpath.setup().common_headers())
        headers = [
            ("Content-Type", _MEDIA_TYPE),
            ("Location", prepared.location),
            ("ETag", etag_of(representation)),
            ("Vary", "Accept"),
            ("Allow", _ALLOW),
            ("X-Frame-Options", common["X-Frame-Options"]),
            ("Content-Length", str(len(body))),
        ]
        if request.META[fastpath.SECURE] and settings.SECURE_HSTS_SECONDS:
            headers.append(("Strict-Transport-Security", fastpath.hsts_header()))
        headers += [(k, v) for k, v in common.items() if k not in ("Vary", "X-Frame-Options")]
        headers.append(("X-Request-ID", rid))

        def respond(start_response: StartResponse) -> list[bytes]:
            start_response("201 Created", headers)
            log_request(
                "POST", request.path, 201, prepared.started, "-", request_id=rid, route=prepared.setup.route
            )
            return [body]

        return respond


# Names whose Location is the path around them as they are: reverse() quotes
# none of these characters, and build_absolute_uri and iri_to_uri change
# none. With no "/" only "." and ".." are dot segments: product_location's.
_PLAIN_NAME = re.compile(r"[A-Za-z0-9._-]+")
_DOT_SEGMENTS = frozenset((".", ".."))
_PROBE = "probe"


def _location(request: WSGIRequest, setup: _Setup, name: str) -> str:
    """Return ``product_location(request, "product-detail", name)``, without reverse() for a plain name."""
    if name in _DOT_SEGMENTS or not _PLAIN_NAME.fullmatch(name):
        return product_location(request, "product-detail", name)
    prefix = get_script_prefix()
    around = setup.detail_paths.get(prefix)
    if around is None:
        probe = reverse("product-detail", kwargs={"name": _PROBE})
        head, found, tail = probe.rpartition("/" + _PROBE + "/")
        if not found or not head.startswith("/") or head.startswith("//"):
            return product_location(request, "product-detail", name)
        around = (head + "/", "/" + tail)
        if len(setup.detail_paths) < _MAX_SCRIPT_PREFIXES:  # a proxy may send any: bound the memo
            setup.detail_paths[prefix] = around
    return request.build_absolute_uri(around[0] + name + around[1])


def _give_back(throttles: list, request) -> None:
    for throttle in throttles:
        throttle.give_back(request)


def _matching_length(environ: dict) -> int | None:
    """Return the body's length when this request is one the fast path may answer, else None."""
    if (
        environ.get("QUERY_STRING")
        or environ.get("HTTP_COOKIE")
        or "HTTP_TRANSFER_ENCODING" in environ
        or "HTTP_CONTENT_ENCODING" in environ  # the API answers 415 (products.parsers)
    ):
        return None
    if environ.get("CONTENT_TYPE") not in _CONTENT_TYPES:
        return None
    authorization = environ.get("HTTP_AUTHORIZATION", "")
    if authorization[:6].lower() != "token ":
        return None
    accept = environ.get("HTTP_ACCEPT")
    if accept is not None and accept not in fastpath.JSON_ACCEPTS:
        return None
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return None
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    if not 0 < length <= MAX_BODY or (limit is not None and length > limit):
        return None
    if settings.USE_X_FORWARDED_HOST and "HTTP_X_FORWARDED_HOST" in environ:
        return None
    if any("\x00" in value for key, value in environ.items() if key.startswith("HTTP_")):
        return None  # RefuseNulMiddleware answers 400
    reads = fastpath.setup()  # the host and HTTPS rules, as the read fast path derived them
    if not reads.enabled():
        return None
    if (get_path_info(environ) or "/") != PATH or not fastpath.host_allowed(environ, reads):
        return None
    secure = fastpath.is_secure(environ, reads)
    if settings.SECURE_SSL_REDIRECT and not secure:
        return None
    environ[fastpath.SECURE] = secure
    return length
