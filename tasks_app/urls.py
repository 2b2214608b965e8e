from django.urls import include, path
from rest_framework.routers import DefaultRouter

from tasks_app.api import health, seed
from tasks_app.api.auth_token import ObtainTokenView
from tasks_app.api.clusters import ClusterViewSet, NodeTasksView, NodeViewSet, VolumeViewSet
from tasks_app.api.events import EventStreamView
from tasks_app.api.permissions import LoginRateThrottle
from tasks_app.api.stats import StatsView
from tasks_app.api.task_types import TaskTypeViewSet
from tasks_app.api.v1 import TaskViewSet

router = DefaultRouter()
router.register("tasks", TaskViewSet, basename="task")
router.register("clusters", ClusterViewSet, basename="cluster")
router.register("nodes", NodeViewSet, basename="node")
router.register(r"clusters/(?P<cluster>[^/]+)/volumes", VolumeViewSet, basename="volume")
router.register("task-types", TaskTypeViewSet, basename="task-type")

urlpatterns = [
    # The seed API, at the reference service's paths (no trailing slashes).
    path("task", seed.task_create, name="seed-task-create"),
    path("task/<str:task_id>", seed.task_detail, name="seed-task-detail"),
    path("tasks", seed.task_list, name="seed-task-list"),
    path("task_update", seed.task_update_push, name="seed-task-update"),
    path("healthz", health.health, name="health"),
    # Kadalu's paths, without trailing slashes (tasks/<id>/history/ has one, so they cannot clash).
    path("api/v1/tasks/<str:cluster>/<str:node>", NodeTasksView.as_view(), name="node-tasks"),
    # schema=None: in the OpenAPI schema once, under the router's path (no operationId collision).
    path(
        "api/v1/clusters/<str:cluster>/volumes",
        VolumeViewSet.as_view({"get": "list", "post": "create"}, schema=None),
    ),
    # username + password -> {"token": ...} (`taskhub login`). No authentication classes: a stale token
    # in the request must not stop its owner from logging in again. Under axes' lockout (auth_token.py).
    path(
        "api/v1/auth/token/",
        ObtainTokenView.as_view(authentication_classes=(), throttle_classes=(LoginRateThrottle,)),
        name="auth-token",
    ),
    path("api/v1/stats/", StatsView.as_view(), name="stats"),
    path("api/v1/events/", EventStreamView.as_view(), name="events"),
    path("api/v1/", include(router.urls)),
]
