from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from tasks_app.api.metrics import metrics_view
from tasks_app.ops.dashboard_views import dashboard

urlpatterns = [
    # Before admin.site.urls; admin_view: staff only, others go to the admin login.
    path("admin/dashboard/", admin.site.admin_view(dashboard), name="taskhub-dashboard"),
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    path("api/redoc/", SpectacularRedocView.as_view(url_name="schema"), name="redoc"),
    path("api-auth/", include("rest_framework.urls")),
    path("metrics", metrics_view, name="metrics"),  # Prometheus; TASKHUB_METRICS_PUBLIC
    path("", include("tasks_app.urls")),
]
