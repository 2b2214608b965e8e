"""The baseline endpoints: a no-op JSON view, and one ORM INSERT of a row like POST /task's."""

from __future__ import annotations

import json

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt

from tasks_app.models import GlobalTask


@csrf_exempt
def noop(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"success": True, "data": {"message": "ok"}})


@csrf_exempt
def orm_insert(request: HttpRequest) -> HttpResponse:
    body = json.loads(request.body)
    task = GlobalTask.objects.create(task_type=body.get("task_type", ""), task_data=body.get("task_data", {}))
    return JsonResponse({"success": True, "data": {"task_id": task.task_id}})


urlpatterns = [
    path("noop", noop),
    path("insert", orm_insert),
]
