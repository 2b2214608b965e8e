"""The browsable API's renderer: DRF's, plus the task types' fields on the task list's POST form.

On a view that opts in (`offers_type_skeletons = True`, the task viewset), the list page links each
executable type as `?task_type=<name>` (which also filters the list by that type), and with a type
chosen the raw-data form starts from a body for it: {"task_type", "execute", "task_data": one entry
per property of the type's schema, from its default or example, else an empty value to fill in}.
The JSON renderer, and every other view, are untouched.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from django import forms
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe
from rest_framework.renderers import BrowsableAPIRenderer, JSONRenderer
from rest_framework.request import Request

from tasks_app.tasks import type_schema
from workers.protocol import specs

PARAM = "task_type"


def task_body(task_type: str) -> dict[str, Any]:
    """A POST /api/v1/tasks/ body to start from: an executable type's fields, or, for a name that is not
    one (a tracked task), an empty task_data."""
    spec = specs.get(task_type)
    if spec is None:
        return {"task_type": task_type, "task_data": {}}
    return {"task_type": task_type, "execute": True, "task_data": type_schema.skeleton(spec.schema)}


def offers(view: Any) -> bool:
    # The list page and a refused POST to it (which renders the same page): not a task's own page.
    return bool(getattr(view, "offers_type_skeletons", False)) and getattr(view, "action", None) in {"list", "create"}


def type_links(request: Request, chosen: str) -> SafeString:
    """The executable types as links to this page with ?task_type=<name>; everything escaped."""
    current = mark_safe(' aria-current="true"')  # a constant
    rows = (
        (f"{request.path}?{urlencode({PARAM: name})}", current if name == chosen else "", name)
        for name in specs.known()
    )
    links = format_html_join(" · ", '<a href="{}"{}>{}</a>', rows)
    return format_html(
        '<p class="task-types">Start a task from a type\'s fields (the POST form below; the list shows that '
        "type's tasks): {}. Their schemas: <code>GET /api/v1/task-types/</code>.</p>",
        links,
    )


class TaskhubBrowsableAPIRenderer(BrowsableAPIRenderer):
    def get_raw_data_form(self, data: Any, view: Any, method: str, request: Request) -> forms.Form | None:
        form: forms.Form | None = super().get_raw_data_form(data, view, method, request)
        chosen = request.query_params.get(PARAM, "")
        if form is None or method != "POST" or not chosen or not offers(view):
            return form
        # The same rendering DRF gives the serializer's empty body (JSON, indented), with the type's fields.
        context = {**getattr(self, "renderer_context", {}), "indent": 4}
        content = JSONRenderer().render(task_body(chosen), "application/json", context)
        form.fields["_content"].initial = content.decode()
        return form

    def get_context(self, data: Any, accepted_media_type: Any, renderer_context: Any) -> dict[str, Any]:
        context: dict[str, Any] = super().get_context(data, accepted_media_type, renderer_context)
        view, request = renderer_context["view"], renderer_context["request"]
        # The links lead to the POST form: only for an account that is shown one (an operator).
        if context.get("raw_data_post_form") is not None and offers(view):
            links = type_links(request, request.query_params.get(PARAM, ""))
            context["description"] = format_html("{}{}", context["description"], links)
        return context
