from productsite.settings import *  # noqa: F401,F403

ROOT_URLCONF = "bench.drf_plain.urls"
