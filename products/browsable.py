"""The browsable API's own links, percent-encoded.

DRF writes ``request.path`` (decoded) into its breadcrumbs and into the login
and logout links' ``?next=``: for a product named ``C# book`` the browser
cut the link at ``#`` and, after logging in, showed product ``C`` with its
edit forms. Here every segment is encoded again, dot-only names as ``%2E``
(as the service's Location headers write them; browsers resolve even those
as dot segments, so products named ``.`` and ``..`` stay out of a browser's
reach: docs/api.md).
"""

from __future__ import annotations

import json
from types import SimpleNamespace
from urllib.parse import quote

from django.urls import Resolver404, resolve
from rest_framework import exceptions
from rest_framework.renderers import BrowsableAPIRenderer
from rest_framework.request import override_method
from rest_framework.reverse import preserve_builtin_query_params
from rest_framework.utils import breadcrumbs

from .validators import keep_dot_segments


def _answers_get(url: str) -> bool:
    try:
        view = resolve(url).func
    except Resolver404:
        return False
    actions = getattr(view, "actions", None)  # a viewset's routes: method -> action
    if actions is not None:
        return "get" in actions
    view_class = getattr(view, "cls", None) or getattr(view, "view_class", None)
    return view_class is None or hasattr(view_class, "get")


def encoded_path(path: str) -> str:
    """Return a decoded URL path (``request.path``) percent-encoded segment by segment."""
    return keep_dot_segments("/".join(quote(s, safe="") for s in path.split("/")))


def as_next(request) -> SimpleNamespace:
    """Return what DRF's login and logout tags read (``.path``), for a ``?next=`` that survives decoding.

    The page's own address, query string included (a search, a cursor). The
    ``next`` value is decoded once before the login view redirects to it:
    encoded twice here, the redirect gets it encoded once.
    """
    query = request.META.get("QUERY_STRING", "")
    here = encoded_path(request.path) + ("?" + query if query else "")
    return SimpleNamespace(path=quote(here, safe="/"))


class ProductBrowsableAPIRenderer(BrowsableAPIRenderer):
    """DRF's browsable API with encoded breadcrumbs and login/logout links.

    Its "Raw data" form starts from a body the API takes: DRF fills it with
    the product as read (``id``, ``created_at``, ``updated_at`` included),
    which a PUT or PATCH then refused (400, not fields you can set).
    """

    template = "products/browsable_api.html"

    def get_raw_data_form(self, data, view, method, request):
        form = super().get_raw_data_form(data, view, method, request)
        content = form.fields["_content"].initial if form is not None else None
        if not content or not hasattr(view, "get_serializer"):
            return form
        read_only = {name for name, field in view.get_serializer().fields.items() if field.read_only}
        try:
            body = json.loads(content)
        except ValueError:
            return form
        if isinstance(body, dict) and read_only & body.keys():
            writable = {key: value for key, value in body.items() if key not in read_only}
            form.fields["_content"].initial = json.dumps(writable, indent=4, ensure_ascii=False)
        return form

    def get_breadcrumbs(self, request):
        # DRF appends the kept query parameters (?format=api) to the decoded
        # path, where a "#" in a name swallows them: encode first, then append.
        # A crumb to a page that answers no GET (the legacy POST /products) is
        # left out: its link led to a 405.
        crumbs = breadcrumbs.get_breadcrumbs(request.path)
        return [
            (name, preserve_builtin_query_params(encoded_path(url), request))
            for position, (name, url) in enumerate(crumbs, 1)
            if position == len(crumbs) or _answers_get(url)
        ]

    def get_extra_actions(self, view, status_code):
        # The stock change is a POST: no link to it for whoever may not make one.
        actions = super().get_extra_actions(view, status_code)
        if actions:
            with override_method(view, view.request, "POST") as request:
                try:
                    view.check_permissions(request)
                except exceptions.APIException:
                    return None
        return actions
