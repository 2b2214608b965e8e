"""/api/v1/tasks/: the browsable DRF viewset. Thin: reads via selectors, writes via services."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from tasks_app.api import longpoll
from tasks_app.api.filters import TaskFilter
from tasks_app.api.pagination import KeysetPagination
from tasks_app.api.parsers import BulkJSONParser
from tasks_app.api.permissions import TaskAccess
from tasks_app.api.schema import NAME_PATTERN, TASK_ID_PATTERN
from tasks_app.api.serializers import (
    TaskBulkCreateSerializer,
    TaskBulkResultSerializer,
    TaskHistorySerializer,
    TaskReplaySerializer,
    TaskSerializer,
    validate_each,
)
from tasks_app.tasks import bulk, selectors, services
from tasks_app.tasks.models import GlobalTask


def request_source(request: Request) -> str:
    """Who asked, for the history table."""
    who = request.user.get_username() if request.user and request.user.is_authenticated else "anonymous"
    return f"{request.method} {request.path} by {who}"


def bulk_answer(results: list[bulk.ItemResult]) -> dict[str, Any]:
    """The bulk create's answer (TaskBulkResultSerializer): counts, then one object per item."""
    items: list[dict[str, Any]] = []
    counts = {"created": 0, "existing": 0, "failed": 0}
    for r in results:
        item: dict[str, Any] = {"index": r.index, "task_id": r.task_id, "created": r.created}
        if r.errors is not None:
            item["errors"] = r.errors
            counts["failed"] += 1
        else:
            counts["created" if r.created else "existing"] += 1
        items.append(item)
    return {**counts, "results": items}


# POST /api/v1/tasks/<id>/replay/: TaskReplaySerializer's rules, as JSON Schema (every field optional).
REPLAY_REQUEST: dict[str, Any] = {
    "type": "object",
    "properties": {
        "task_data": {
            "type": "object",
            "additionalProperties": True,
            "description": "the new task's task_data, a JSON object checked as a create checks it (default: the "
            "original's)",
        },
        "node": {
            "type": "string",
            "pattern": NAME_PATTERN,
            "maxLength": 64,
            "description": "run on this node (default: the original's if its create named it, else placement picks)",
        },
        "task_id": {
            "type": "string",
            "pattern": TASK_ID_PATTERN,
            "maxLength": 64,
            "description": "the new task's id (default: a uuid4); the same replay repeated answers the same task",
        },
    },
    "additionalProperties": False,
}


class TaskViewSet(viewsets.ModelViewSet[GlobalTask]):
    serializer_class = TaskSerializer
    filterset_class = TaskFilter
    pagination_class = KeysetPagination
    permission_classes = [TaskAccess]
    lookup_value_regex = "[^/]+"
    # The browsable API's list page offers each type's fields: ?task_type=<name> (tasks_app/api/browsable.py).
    offers_type_skeletons = True

    def get_queryset(self) -> QuerySet[GlobalTask]:
        return selectors.task_filter()

    def get_object(self) -> GlobalTask:
        # The selector's 404 names the id ("Task 'x' not found"), unlike DRF's generic message.
        task = selectors.task_get(task_id=self.kwargs["pk"])
        self.check_object_permissions(self.request, task)
        return task

    @extend_schema(
        responses={
            201: TaskSerializer,
            200: OpenApiResponse(TaskSerializer, description="the task_id exists with the same body: a retried create"),
        }
    )
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        task, created = services.task_create(
            task_id=data.get("task_id"),
            task_type=data.get("task_type", ""),
            task_data=data.get("task_data"),
            task_status=data.get("task_status", "pending"),
            task_status_data=data.get("task_status_data"),
            execute=bool(data.get("execute")),
            node=data.get("node") or None,
            constraints=data.get("constraints") or None,
            source=request_source(request),
        )
        code = status.HTTP_201_CREATED if created else status.HTTP_200_OK
        return Response(self.get_serializer(task).data, status=code)

    @extend_schema(
        request=TaskBulkCreateSerializer,
        responses={
            201: OpenApiResponse(TaskBulkResultSerializer, description="every item was created"),
            200: OpenApiResponse(
                TaskBulkResultSerializer,
                description="not every item was created now: the refused ones carry their errors (the valid ones "
                "were created all the same), and a task_id that exists with the same body is a retried create",
            ),
        },
    )
    @action(detail=False, methods=["post"], url_path="bulk", parser_classes=[BulkJSONParser], filter_backends=[])
    def bulk_create(self, request: Request) -> Response:
        """Create many tasks in one request and one transaction: each item is a body of POST /api/v1/tasks/,
        checked by the same rules and answered on its own, in order. Valid items are created even when
        others are refused; executed ones are published once the transaction commits."""
        envelope = TaskBulkCreateSerializer(data=request.data)
        envelope.is_valid(raise_exception=True)
        items = validate_each(envelope.validated_data["tasks"], context=self.get_serializer_context())
        results = bulk.task_create_many(items=items, source=request_source(request))
        body = bulk_answer(results)
        everything = body["created"] == len(results)
        return Response(body, status=status.HTTP_201_CREATED if everything else status.HTTP_200_OK)

    # PUT changes only the fields it names, as PATCH does.
    @extend_schema(request=TaskSerializer(partial=True))
    def update(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        task = self.get_object()
        serializer = self.get_serializer(task, data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        changes = {k: v for k, v in serializer.validated_data.items() if k != "task_id"}
        updated = services.task_update(task_id=task.task_id, changes=changes, source=request_source(request))
        return Response(self.get_serializer(updated).data)

    def destroy(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        services.task_delete(task_id=self.get_object().task_id)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "wait",
                {"type": "number", "minimum": 0, "maximum": longpoll.MAX_WAIT_SECONDS},
                description="long poll: answer as soon as the task changes or finishes (max 60 s)",
            ),
            OpenApiParameter(
                "Retry-After",
                int,
                location=OpenApiParameter.HEADER,
                response=[429],
                description="seconds to wait before polling again",
            ),
        ],
        responses={
            200: TaskSerializer,
            429: OpenApiResponse(
                inline_serializer("LongPollBusy", {"detail": serializers.CharField()}),
                description="?wait= while every long-poll slot of the server process is taken "
                "(TASKHUB_LONGPOLL_SLOTS): poll again after Retry-After seconds",
            ),
        },
    )
    def retrieve(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        task = self.get_object()
        wait = request.query_params.get("wait")
        seconds = longpoll.wait_seconds(wait) if wait else 0.0
        if seconds > 0:
            with longpoll.slot():
                task = selectors.task_wait_for_change(task=task, timeout=seconds, pause=longpoll.pause)
        return Response(self.get_serializer(task).data)

    @extend_schema(request=None, responses=TaskSerializer)
    @action(detail=True, methods=["post"])
    def retry(self, request: Request, pk: str | None = None) -> Response:
        """Re-trigger a failed or cancelled executed task: same id, a new run, its history kept."""
        task = services.task_retry(task_id=self.get_object().task_id, source=request_source(request))
        return Response(self.get_serializer(task).data)

    @extend_schema(
        request={"application/json": REPLAY_REQUEST},
        responses={
            201: TaskSerializer,
            409: OpenApiResponse(
                {"$ref": "#/components/schemas/ErrorDetail"},
                description="Refused by the task's state: only a failed or cancelled executed task can be replayed "
                "(a tracked task is a record its caller drives), or the task_id exists with a different body",
            ),
        },
    )
    @action(detail=True, methods=["post"])
    def replay(self, request: Request, pk: str | None = None) -> Response:
        """Clone a failed or cancelled executed task into a new task, with the same task_data or an edited
        copy, checked and placed as a create is. The original keeps its status and lists the new task in
        task_status_data.replayed_as; the new one's first history row and placement name the original."""
        task_id = self.get_object().task_id
        body = TaskReplaySerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        task = services.task_replay(
            task_id=task_id,
            task_data=data.get("task_data"),
            node=data.get("node"),
            new_task_id=data.get("task_id"),
            source=request_source(request),
        )
        return Response(self.get_serializer(task).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses=TaskSerializer)
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str | None = None) -> Response:
        """Cancel an unfinished task. One a node may be running is `cancelling` until its node stops."""
        task = services.task_cancel(task_id=self.get_object().task_id, source=request_source(request))
        return Response(self.get_serializer(task).data)

    @extend_schema(responses=TaskHistorySerializer(many=True))
    # The whole history as a plain list: not paginated, and the list's filters do not apply.
    @action(detail=True, methods=["get"], pagination_class=None, filter_backends=[])
    def history(self, request: Request, pk: str | None = None) -> Response:
        task = self.get_object()
        rows = selectors.task_history(task_id=task.task_id)
        return Response(TaskHistorySerializer(rows, many=True).data)
