"""/api/v1/clusters/, /api/v1/nodes/, a cluster's volumes, and Kadalu's pull API for nodes."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from tasks_app.api.cluster_serializers import (
    ClusterSerializer,
    DrainSerializer,
    NodeCreateSerializer,
    NodeSerializer,
    NodeUpdateSerializer,
    VolumeCreateSerializer,
    VolumeSerializer,
)
from tasks_app.api.filters import NodeFilter
from tasks_app.api.permissions import NodePullAccess
from tasks_app.api.serializers import TaskSerializer
from tasks_app.api.v1 import request_source
from tasks_app.fleet import scheduling
from tasks_app.fleet import selectors as cluster_selectors
from tasks_app.fleet import services as cluster_services
from tasks_app.models import Cluster, Node
from tasks_app.tasks import services


class ClusterViewSet(mixins.CreateModelMixin, viewsets.ReadOnlyModelViewSet[Cluster]):
    """Clusters, addressable by id or name."""

    serializer_class = ClusterSerializer
    lookup_value_regex = "[^/]+"

    def get_queryset(self) -> QuerySet[Cluster]:
        return Cluster.objects.prefetch_related("nodes")

    def get_object(self) -> Cluster:
        return cluster_selectors.cluster_get(ref=self.kwargs["pk"])

    def perform_create(self, serializer: Any) -> None:
        serializer.instance = cluster_services.cluster_create(name=serializer.validated_data["name"])


class NodeViewSet(mixins.CreateModelMixin, viewsets.ReadOnlyModelViewSet[Node]):
    """Nodes, addressable by id or name. POST registers a node: a member at once, or with
    "state": "joining", for a node_addition task (which has the node prepare itself) to make it one.
    PATCH replaces its labels or capacity; DELETE removes it (refused while it has work or records);
    cordon, drain and uncordon take it out of placement and back (tasks_app/fleet/scheduling.py)."""

    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    serializer_class = NodeSerializer
    lookup_value_regex = "[^/]+"
    filterset_class = NodeFilter

    def get_queryset(self) -> QuerySet[Node]:
        return cluster_selectors.node_list()

    def get_object(self) -> Node:
        return cluster_selectors.node_get(ref=self.kwargs["pk"])

    @extend_schema(request=NodeCreateSerializer, responses={201: NodeSerializer})
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        body = NodeCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        node = cluster_services.node_create(
            cluster=data["cluster"],
            name=data["name"],
            transport=data.get("transport", Node.Transport.QUEUE),
            state=data.get("state", Node.State.MEMBER),
            labels=data.get("labels"),
            capacity=data.get("capacity"),
        )
        return Response(NodeSerializer(node).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=NodeUpdateSerializer, responses={200: NodeSerializer})
    def partial_update(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        body = NodeUpdateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        node = cluster_services.node_update(node=self.get_object(), **body.validated_data)
        return Response(NodeSerializer(node).data)

    @extend_schema(
        responses={204: None, 409: OpenApiResponse(description="it has unfinished tasks or holds records (listed)")}
    )
    def destroy(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        cluster_services.node_delete(node=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(request=None, responses={200: NodeSerializer})
    @action(detail=True, methods=["post"])
    def cordon(self, request: Request, pk: str) -> Response:
        """No new tasks for this node; what it has, it runs."""
        return Response(NodeSerializer(scheduling.node_cordon(node=self.get_object())).data)

    @extend_schema(request=None, responses={200: NodeSerializer})
    @action(detail=True, methods=["post"])
    def uncordon(self, request: Request, pk: str) -> Response:
        """Schedulable again."""
        return Response(NodeSerializer(scheduling.node_uncordon(node=self.get_object())).data)

    @extend_schema(request=None, responses={200: DrainSerializer})
    @action(detail=True, methods=["post"])
    def drain(self, request: Request, pk: str) -> Response:
        """Cordon it, and move its pending tasks to other nodes that may take them; its running ones finish
        there (GET the node: `drained` once none is left). The answer lists what moved, what stayed and why,
        and what still runs."""
        report = scheduling.node_drain(node=self.get_object(), source=request_source(request))
        return Response(report.as_dict())


class VolumeViewSet(viewsets.ViewSet):
    """A cluster's volumes. Creating, starting, stopping and deleting one are tasks: 202 + the task."""

    lookup_value_regex = "[^/]+"  # volume names may contain dots

    def _cluster(self) -> Cluster:
        return cluster_selectors.cluster_get(ref=self.kwargs["cluster"])

    @extend_schema(responses=VolumeSerializer(many=True))
    def list(self, request: Request, cluster: str) -> Response:
        return Response(VolumeSerializer(cluster_selectors.volume_list(cluster=self._cluster()), many=True).data)

    @extend_schema(responses=VolumeSerializer)
    def retrieve(self, request: Request, cluster: str, pk: str) -> Response:
        return Response(VolumeSerializer(cluster_selectors.volume_get(cluster=self._cluster(), name=pk)).data)

    @extend_schema(request=VolumeCreateSerializer, responses={202: TaskSerializer})
    def create(self, request: Request, cluster: str) -> Response:
        body = VolumeCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = dict(body.validated_data)
        node = data.pop("node", None)
        units = [{k: v for k, v in u.items() if v is not None} for u in data.pop("storage_units")]
        task_data = {"cluster": self._cluster().name, **data, "storage_units": units}
        return self._task(request, "volume_create", task_data, node)

    @extend_schema(request=None, responses={202: TaskSerializer})
    @action(detail=True, methods=["post"])
    def start(self, request: Request, cluster: str, pk: str) -> Response:
        return self._task(request, "volume_start", self._volume(pk))

    @extend_schema(request=None, responses={202: TaskSerializer})
    @action(detail=True, methods=["post"])
    def stop(self, request: Request, cluster: str, pk: str) -> Response:
        return self._task(request, "volume_stop", self._volume(pk))

    @extend_schema(request=None, responses={202: TaskSerializer})
    def destroy(self, request: Request, cluster: str, pk: str) -> Response:
        return self._task(request, "volume_delete", self._volume(pk))

    def _volume(self, name: str) -> dict[str, Any]:
        """The task_data naming an existing volume: a volume that does not exist is a 404, as its GET is."""
        volume = cluster_selectors.volume_get(cluster=self._cluster(), name=name)
        return {"cluster": volume.cluster.name, "name": volume.name}

    def _task(self, request: Request, task_type: str, task_data: dict[str, Any], node: str | None = None) -> Response:
        task, _ = services.task_create(
            task_type=task_type, task_data=task_data, execute=True, node=node, source=request_source(request)
        )
        return Response(TaskSerializer(task, context={"request": request}).data, status=status.HTTP_202_ACCEPTED)


class NodeTasksView(APIView):
    """Kadalu's pull API: GET /api/v1/tasks/<cluster>/<node>[?since=<epoch seconds>].

    For nodes that cannot reach the broker. Returns the node's unfinished tasks, oldest first, and
    marks the pending ones received. The node reports back with POST /task_update.
    Only the node's own account (manage.py create_node_token) or an operator may call it.
    """

    permission_classes = [NodePullAccess]

    @extend_schema(
        operation_id="v1_node_tasks_pull",
        parameters=[
            OpenApiParameter(
                "since",
                {"type": "integer", "minimum": 0, "maximum": 2**63 - 1},
                description="only tasks created after this epoch second",
            )
        ],
        responses=TaskSerializer(many=True),
    )
    def get(self, request: Request, cluster: str, node: str) -> Response:
        node_obj = cluster_selectors.node_get(ref=node, cluster=cluster_selectors.cluster_get(ref=cluster))
        since_raw = request.query_params.get("since")
        try:
            since = int(since_raw) if since_raw else None
        except ValueError as exc:
            raise ValidationError({"since": "must be an integer (epoch seconds)"}) from exc
        if since is not None and not 0 <= since < 2**63:
            raise ValidationError({"since": "must be epoch seconds, between 0 and 2**63-1"})
        tasks = cluster_services.node_pull_tasks(node=node_obj, since=since)
        return Response(TaskSerializer(tasks, many=True, context={"request": request}).data)


__all__ = ["ClusterViewSet", "NodeTasksView", "NodeViewSet", "VolumeViewSet"]
