import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "productsite.settings")

application = get_wsgi_application()

# Anonymous JSON product reads are answered before Django's machinery (same
# headers, throttle and cache); everything else goes to Django unchanged.
from products.fastpath import FastProductReads  # noqa: E402  (needs django.setup())

application = FastProductReads(application)

# This process serves requests: apply the invalidations that writers (here or
# in processes that have exited) recorded while Redis was unreachable.
from products.applier import start_applier  # noqa: E402

start_applier()
