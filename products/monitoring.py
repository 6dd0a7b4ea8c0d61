"""Endpoints for the platform: Prometheus metrics and liveness / readiness probes."""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.migrations.executor import MigrationExecutor
from django.http import Http404, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from rest_framework.exceptions import MethodNotAllowed
from rest_framework.views import APIView

from . import addresses, cache, metrics

logger = logging.getLogger(__name__)


def metrics_allowed(peer: str | None) -> bool:
    """Return True when ``peer`` (the connection's address) is in METRICS_ALLOWED_IPS."""
    return addresses.in_networks(peer or "", addresses.networks(tuple(settings.METRICS_ALLOWED_IPS)))


@csrf_exempt  # nothing here reads a session: another method is a 405, not a CSRF page
def metrics_view(request):
    """Answer the Prometheus text format, to METRICS_ALLOWED_IPS only (404 to anyone else).

    The peer address (REMOTE_ADDR), never X-Forwarded-For: a client chooses
    that header. A request carrying X-Forwarded-For or Forwarded came
    through a proxy and is refused. Behind a proxy, scrape the app's own address.
    GET and HEAD; another method from an allowed address is a JSON 405.
    """
    meta = request.META
    # A relayed request is not the scraper's: a reverse proxy on this host
    # connects from loopback and would otherwise open /metrics to everyone.
    relayed = "HTTP_X_FORWARDED_FOR" in meta or "HTTP_FORWARDED" in meta
    if relayed or not metrics_allowed(meta.get("REMOTE_ADDR")):
        raise Http404()
    if request.method not in ("GET", "HEAD"):
        response = JsonResponse({"detail": MethodNotAllowed(request.method).detail}, status=405)
        response["Allow"] = "GET, HEAD"
        return response
    body, content_type = metrics.render()
    return HttpResponse(body, content_type=content_type)


def _database_error() -> Exception | None:
    """Return why the database does not answer ``SELECT 1``, or None when it does."""
    try:
        with connections[DEFAULT_DB_ALIAS].cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception as exc:
        return exc
    return None


class HealthView(APIView):
    """Report database and cache reachability; 503 when the database is down."""

    # A class, not @api_view: api_view loads the schema class (drf-spectacular's
    # generator) at import; productsite.schema_generator declares it later.
    # No credentials, no throttle: a probe every few seconds must never be refused.
    authentication_classes: list = []
    permission_classes: list = []
    throttle_classes: list = []

    def get(self, request):
        body = {"database": "ok", "cache": cache.status()}
        if _database_error() is None:
            return JsonResponse(body)
        body["database"] = "down"
        return JsonResponse(body, status=503)


health = HealthView.as_view()


class _Probe(APIView):
    """A probe for the platform: GET and HEAD; another method answers DRF's JSON 405 (no CSRF page)."""

    # As HealthView: no credentials, no throttle.
    authentication_classes: list = []
    permission_classes: list = []
    throttle_classes: list = []
    schema = None  # the platform's, not the API's: not in the OpenAPI schema


class LivenessProbe(_Probe):
    """Liveness: 200 while the process answers (no database, no Redis involved)."""

    def get(self, request):
        return JsonResponse({"status": "ok"})


health_live = LivenessProbe.as_view()


_migrated: set[str] = set()  # aliases seen fully migrated (stays true while the process runs)


def _unapplied_migrations(alias: str) -> int:
    if alias in _migrated:
        return 0
    executor = MigrationExecutor(connections[alias])
    plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
    if not plan:
        _migrated.add(alias)
    return len(plan)


class ReadinessProbe(_Probe):
    """Readiness: 200 when the database answers and every migration is applied, else 503."""

    def get(self, request):
        body: dict[str, object] = {"database": "ok", "migrations": "ok"}
        code = 200
        error = _database_error()
        if error is None:
            try:
                unapplied = _unapplied_migrations(DEFAULT_DB_ALIAS)
            except Exception as exc:  # the database went away between the two
                error = exc
            else:
                if unapplied:
                    body["migrations"] = f"{unapplied} unapplied"
                    code = 503
        if error is not None:
            logger.warning("Readiness check: database unavailable (%s)", type(error).__name__)
            body["database"] = "down"
            body.pop("migrations")
            code = 503
        return JsonResponse(body, status=code)


health_ready = ReadinessProbe.as_view()
