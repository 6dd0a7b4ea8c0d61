"""DRF's login and logout links with a ``?next=`` that keeps a product name whole (products.browsable)."""

from __future__ import annotations

from django import template
from rest_framework.templatetags import rest_framework as drf

from products.browsable import as_next

register = template.Library()


@register.simple_tag
def login_link(request):
    return drf.optional_login(as_next(request))


@register.simple_tag
def logout_link(request, user, csrf_token):
    return drf.optional_logout(as_next(request), user, csrf_token)
