"""System checks of the deployment layer (productsite.W0xx)."""

from django.conf import settings
from django.core.checks import Warning, register


@register()
def check_fast_path_mirrors_the_stack(app_configs, **kwargs):
    """Warn when the fast path has switched itself off because the stack changed."""
    if not settings.PRODUCT_FAST_PATH:
        return []  # switched off on purpose
    from .fastpath import configuration_problems

    problems = configuration_problems()
    if not problems:
        return []
    return [
        Warning(
            "The fast path for cached product reads is off: " + "; ".join(problems) + ".",
            hint="Every request goes through Django (correct, but slower). Update "
            "productsite.fastpath to mirror the new configuration (and its parity tests), "
            "or set PRODUCT_FAST_PATH=0 to say the fast path is off on purpose.",
            id="productsite.W001",
        )
    ]


@register()
def check_fast_creates_mirror_the_view(app_configs, **kwargs):
    """Warn when the create fast path has switched itself off because the stack or the view changed."""
    if not settings.PRODUCT_FAST_PATH:
        return []
    from .fastcreate import configuration_problems

    problems = configuration_problems()
    if not problems:
        return []
    return [
        Warning(
            "The fast path for authenticated creates is off: " + "; ".join(problems) + ".",
            hint="Every create goes through DRF (correct, but slower). Update "
            "productsite.fastcreate to mirror the new configuration (and its parity tests), "
            "or set PRODUCT_FAST_PATH=0 to say the fast paths are off on purpose.",
            id="productsite.W002",
        )
    ]


@register()
def check_gunicorn_errors_are_json(app_configs, **kwargs):
    """Warn when gunicorn's own refusals would stay HTML pages (its error writer changed shape)."""
    from importlib.util import find_spec

    from . import gunicorn_errors

    if find_spec("gunicorn") is None or gunicorn_errors.mirrors():
        return []
    return [
        Warning(
            "Requests gunicorn refuses itself (a request line over 4 KB, headers over its limits, "
            "a malformed header) are answered with gunicorn's HTML page, without an X-Request-ID: "
            "gunicorn.util.write_error is no longer the function productsite.gunicorn_errors mirrors.",
            hint="Update productsite.gunicorn_errors for this gunicorn (and its tests); "
            "until then the refusals are correct but not JSON.",
            id="productsite.W003",
        )
    ]
