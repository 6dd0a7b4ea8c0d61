"""The naive port: a plain DRF ModelViewSet, no cache, on the project's settings.

Only the URLconf differs from the measured service (same middleware, auth,
throttling, renderers, pagination), so the gap between the two is what the
service's own read path buys.
"""
