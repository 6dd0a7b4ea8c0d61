"""System checks of the deployment layer (productsite.W0xx)."""

from django.conf import settings
from django.core.checks import Warning, register


@register()
def check_fast_path_mirrors_the_stack(app_configs, **kwargs):
    """Warn when the fast path has switched itself off because the stack changed."""
    if not getattr(settings, "PRODUCT_FAST_PATH", True):
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
