from django.contrib import admin
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularRedocView, SpectacularSwaggerView

from tasks_app.api.metrics import metrics_view
from tasks_app.api.schema_view import SchemaView
from tasks_app.ops import dead_letter_views
from tasks_app.ops.dashboard_views import dashboard

urlpatterns = [
    # Before admin.site.urls; admin_view: staff only, others go to the admin login.
    path("admin/dashboard/", admin.site.admin_view(dashboard), name="taskhub-dashboard"),
    path("admin/dead-letters/", admin.site.admin_view(dead_letter_views.dead_letter_list), name="taskhub-dead-letters"),
    path(
        "admin/dead-letters/discard/",
        admin.site.admin_view(dead_letter_views.dead_letter_discard),
        name="taskhub-dead-letters-discard",
    ),
    re_path(
        r"^admin/dead-letters/(?P<dead_id>[0-9]+-[0-9]+)/$",
        admin.site.admin_view(dead_letter_views.dead_letter_detail),
        name="taskhub-dead-letter",
    ),
    path("admin/", admin.site.urls),
    path("api/schema/", SchemaView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    path("api/redoc/", SpectacularRedocView.as_view(url_name="schema"), name="redoc"),
    path("api-auth/", include("rest_framework.urls")),
    path("metrics", metrics_view, name="metrics"),  # Prometheus; TASKHUB_METRICS_PUBLIC
    path("", include("tasks_app.urls")),
]
