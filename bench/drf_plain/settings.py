from productsite.settings import *  # noqa: F403

ROOT_URLCONF = "bench.drf_plain.urls"
