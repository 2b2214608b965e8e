"""Django admin for the tasks table. Status edits go through the same transition rules as the API."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect

from tasks_app.errors import TaskhubError
from tasks_app.fleet.selectors import node_is_online
from tasks_app.models import BlockAllocation, Cluster, GlobalTask, Node, StorageUnit, TaskStatusChange, Vdag, Volume
from tasks_app.tasks import dispatch, services, validation
from tasks_app.tasks.models import new_task_id
from workers.protocol.status import Status, Verdict, judge, judge_initial


class JSONFormField(forms.JSONField):
    """Django's, except that a refused value is shown back escaped: JSON text with a lone surrogate
    (refused by the checks below) would otherwise make the form's own error page fail to encode."""

    def prepare_value(self, value: Any) -> Any:
        text = super().prepare_value(value)
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return json.dumps(value, ensure_ascii=True, cls=self.encoder)
        return text


_REFUSED = "_taskhub_change_refused"


def _checked(check: Any, *args: Any) -> Any:
    try:
        return check(*args)
    except TaskhubError as exc:
        raise forms.ValidationError(exc.message) from exc


class GlobalTaskForm(forms.ModelForm[GlobalTask]):
    # On the add form only: a tracked record (the default) or work for a node (tasks_app/tasks/services.py).
    execute = forms.BooleanField(
        required=False, help_text="Run it on a node (its type must be executable); otherwise it is a tracked record."
    )
    node = forms.CharField(required=False, help_text="With execute: the node to run on (default: the type's rule).")

    class Meta:
        model = GlobalTask
        fields = ["task_type", "task_status", "task_data", "task_status_data"]
        field_classes = {"task_data": JSONFormField, "task_status_data": JSONFormField}

    # The same edge checks as the APIs (tasks_app/tasks/validation.py): nothing the database or a page
    # cannot round-trip (a lone surrogate, NUL, nesting past TASKHUB_MAX_JSON_DEPTH) gets in this way either.
    def clean_task_type(self) -> str:
        return str(_checked(validation.task_type, self.cleaned_data["task_type"]))

    def clean_task_data(self) -> Any:
        return _checked(validation.json_object, self.cleaned_data["task_data"], "task_data")

    def clean_task_status_data(self) -> Any:
        return _checked(validation.json_object, self.cleaned_data["task_status_data"], "task_status_data")

    def clean_task_status(self) -> str:
        # Say no on the form, with the reason, rather than after "saved successfully".
        # services.task_update checks again under a row lock, for a change racing this one.
        target = str(self.cleaned_data["task_status"])
        if target == Status.CANCELLING:
            raise forms.ValidationError("'cancelling' is set by a cancel (the Cancel action), not written")
        if not self.instance._state.adding and judge(self.instance.task_status, target) is Verdict.REJECT:
            raise forms.ValidationError(f"Cannot change task_status from {self.instance.task_status!r} to {target!r}")
        return target

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        adding = self.instance._state.adding  # (a new task already has its default task_id)
        if not adding or not data.get("execute"):
            if adding and data.get("node"):
                self.add_error("node", "Only an executed task runs on a node: tick execute.")
            return data
        # An executed task: the same checks its create runs (services.task_create runs them again).
        if judge_initial(str(data.get("task_status", "pending")), executed=True) is Verdict.REJECT:
            self.add_error("task_status", "An executed task starts pending; its node reports the rest.")
        try:
            dispatch.prepare(
                task_type=str(data.get("task_type", "")),
                task_data=dict(data.get("task_data") or {}),
                node=data.get("node") or None,
                task_id=new_task_id(),
            )
        except TaskhubError as exc:
            raise forms.ValidationError(exc.message) from exc
        return data


class TaskStatusChangeInline(admin.TabularInline[TaskStatusChange, GlobalTask]):
    model = TaskStatusChange
    fields = ("at", "from_status", "to_status", "run_id", "source")
    readonly_fields = ("at", "from_status", "to_status", "run_id", "source")
    extra = 0
    can_delete = False
    verbose_name_plural = "history"

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(GlobalTask)
class GlobalTaskAdmin(admin.ModelAdmin[GlobalTask]):
    form = GlobalTaskForm
    list_display = ["task_id", "task_type", "task_status", "node", "task_create_timestamp", "task_update_timestamp"]
    list_filter = ["task_type", "task_status", "node"]
    search_fields = ["task_id"]
    readonly_fields = ["task_id", "node", "run_id", "attempts", "task_create_timestamp", "task_update_timestamp"]
    fields = [
        "task_id",
        "node",
        "run_id",
        "attempts",
        "task_type",
        "task_status",
        "task_data",
        "task_status_data",
        "task_create_timestamp",
        "task_update_timestamp",
    ]
    inlines = [TaskStatusChangeInline]
    ordering = ["-task_create_timestamp"]
    actions = ["retry_tasks", "cancel_tasks"]
    show_full_result_count = False  # COUNT(*) on millions of rows on every list page is slow

    @admin.action(description="Retry selected failed or cancelled tasks")
    def retry_tasks(self, request: HttpRequest, queryset: Any) -> None:
        self._each(request, queryset, services.task_retry, {"pending": "retried"})

    @admin.action(description="Cancel selected unfinished tasks")
    def cancel_tasks(self, request: HttpRequest, queryset: Any) -> None:
        said = {"cancelled": "cancelled", "cancelling": "cancelling until their node stops"}
        self._each(request, queryset, services.task_cancel, said)

    def _each(self, request: HttpRequest, queryset: Any, service: Any, said: dict[str, str]) -> None:
        """Run the service on each selected task; one message per outcome (by the status it left the task in)."""
        source = f"admin by {request.user.get_username()}"
        done: Counter[str] = Counter()
        for task_id in queryset.values_list("task_id", flat=True):
            try:
                task = service(task_id=task_id, source=source)
                done[said.get(task.task_status, task.task_status)] += 1
            except TaskhubError as exc:
                messages.warning(request, exc.message)
        for what, count in done.items():
            messages.success(request, f"{count} task(s) {what}.")

    _ADD_FIELDS = ("task_type", "task_status", "task_data", "task_status_data", "execute", "node")

    def get_fields(self, request: HttpRequest, obj: GlobalTask | None = None) -> Any:
        # The add form: "node" there is the node to run on, not the read-only column.
        return list(self._ADD_FIELDS) if obj is None else super().get_fields(request, obj)

    def get_readonly_fields(self, request: HttpRequest, obj: GlobalTask | None = None) -> Any:
        return [] if obj is None else super().get_readonly_fields(request, obj)

    def save_model(self, request: HttpRequest, obj: GlobalTask, form: Any, change: bool) -> None:
        source = f"admin by {request.user.get_username()}"
        if not change:
            task, _ = services.task_create(
                task_type=obj.task_type,
                task_data=obj.task_data,
                task_status=obj.task_status,
                task_status_data=obj.task_status_data,
                execute=bool(form.cleaned_data.get("execute")),
                node=form.cleaned_data.get("node") or None,
                source=source,
            )
            obj.pk = task.pk
            return
        changes = {name: form.cleaned_data[name] for name in form.changed_data if name in form.cleaned_data}
        if not changes:
            return
        try:
            services.task_update(task_id=obj.task_id, changes=changes, source=source)
        except TaskhubError as exc:
            messages.error(request, exc.message)
            setattr(request, _REFUSED, True)  # read by response_change

    def response_change(self, request: HttpRequest, obj: GlobalTask) -> HttpResponse:
        # A change the services refused: back to the form with the reason, not "changed successfully".
        if getattr(request, _REFUSED, False):
            return HttpResponseRedirect(request.path)
        return super().response_change(request, obj)


class StorageUnitInline(admin.TabularInline[StorageUnit, Volume]):
    model = StorageUnit
    fields = ("index", "node", "path")
    readonly_fields = ("index", "node", "path")
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Cluster)
class ClusterAdmin(admin.ModelAdmin[Cluster]):
    list_display = ["name", "state", "created_at"]
    list_filter = ["state"]
    search_fields = ["name"]


@admin.register(Node)
class NodeAdmin(admin.ModelAdmin[Node]):
    list_display = ["name", "cluster", "state", "transport", "online", "last_heartbeat", "capacity_blocks"]
    list_filter = ["cluster", "state", "transport"]
    search_fields = ["name"]
    readonly_fields = ["last_heartbeat", "data_dir"]

    @admin.display(boolean=True)
    def online(self, obj: Node) -> bool:
        return node_is_online(obj)


@admin.register(Volume)
class VolumeAdmin(admin.ModelAdmin[Volume]):
    # Volumes are records of completed tasks: change them with volume tasks, not by hand.
    list_display = ["name", "cluster", "type", "state", "created_at"]
    list_filter = ["cluster", "type", "state"]
    search_fields = ["name"]
    readonly_fields = ["name", "cluster", "type", "state", "task_id", "created_at"]
    inlines = [StorageUnitInline]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


@admin.register(BlockAllocation)
class BlockAllocationAdmin(admin.ModelAdmin[BlockAllocation]):
    list_display = ["allocation_id", "node", "blocks", "created_at"]
    list_filter = ["node"]


class VdagForm(forms.ModelForm[Vdag]):
    class Meta:
        model = Vdag
        fields = ["name", "cluster", "node", "graph"]
        field_classes = {"graph": JSONFormField}

    def clean_graph(self) -> Any:
        return _checked(validation.json_object, self.cleaned_data["graph"], "graph")


@admin.register(Vdag)
class VdagAdmin(admin.ModelAdmin[Vdag]):
    form = VdagForm
    list_display = ["name", "cluster", "node", "created_at"]
    list_filter = ["cluster"]
