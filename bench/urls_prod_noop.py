"""taskhub's own URLs plus the bare no-op view, for settings_prod_noop."""

from django.urls import path

from bench.urls_bare import noop
from taskhub.urls import urlpatterns as taskhub_urlpatterns

urlpatterns = [path("bench-noop", noop), *taskhub_urlpatterns]
