"""Django admin for the tasks table. Status edits go through the same transition rules as the API."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.http import HttpRequest

from tasks_app import services
from tasks_app.cluster_selectors import node_is_online
from tasks_app.errors import TaskhubError
from tasks_app.models import BlockAllocation, Cluster, GlobalTask, Node, StorageUnit, TaskStatusChange, Vdag, Volume
from tasks_app.status import Verdict, judge


class GlobalTaskForm(forms.ModelForm[GlobalTask]):
    class Meta:
        model = GlobalTask
        fields = ["task_type", "task_status", "task_data", "task_status_data"]

    def clean_task_status(self) -> str:
        # Say no on the form, with the reason, rather than after "saved successfully".
        # services.task_update checks again under a row lock, for a change racing this one.
        target = str(self.cleaned_data["task_status"])
        if self.instance.pk and judge(self.instance.task_status, target) is Verdict.REJECT:
            raise forms.ValidationError(f"Cannot change task_status from {self.instance.task_status!r} to {target!r}")
        return target


class TaskStatusChangeInline(admin.TabularInline[TaskStatusChange, GlobalTask]):
    model = TaskStatusChange
    fields = ("at", "from_status", "to_status", "source")
    readonly_fields = ("at", "from_status", "to_status", "source")
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
    readonly_fields = ["task_id", "node", "attempts", "task_create_timestamp", "task_update_timestamp"]
    fields = [
        "task_id",
        "node",
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

    @admin.action(description="Retry selected failed tasks")
    def retry_tasks(self, request: HttpRequest, queryset: Any) -> None:
        self._each(request, queryset, services.task_retry, "retried")

    @admin.action(description="Cancel selected unfinished tasks")
    def cancel_tasks(self, request: HttpRequest, queryset: Any) -> None:
        self._each(request, queryset, services.task_cancel, "cancelled")

    def _each(self, request: HttpRequest, queryset: Any, service: Any, done: str) -> None:
        source = f"admin by {request.user.get_username()}"
        ok = 0
        for task_id in queryset.values_list("task_id", flat=True):
            try:
                service(task_id=task_id, source=source)
                ok += 1
            except TaskhubError as exc:
                messages.warning(request, exc.message)
        if ok:
            messages.success(request, f"{ok} task(s) {done}.")

    def save_model(self, request: HttpRequest, obj: GlobalTask, form: Any, change: bool) -> None:
        source = f"admin by {request.user.get_username()}"
        if not change:
            task, _ = services.task_create(
                task_type=obj.task_type,
                task_data=obj.task_data,
                task_status=obj.task_status,
                task_status_data=obj.task_status_data,
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


@admin.register(Vdag)
class VdagAdmin(admin.ModelAdmin[Vdag]):
    list_display = ["name", "cluster", "node", "created_at"]
    list_filter = ["cluster"]
