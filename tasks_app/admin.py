"""Django admin for the tasks table. Status edits go through the same transition rules as the API."""

from __future__ import annotations

from collections import Counter
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.contrib.admin.views.main import ChangeList
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse
from django.utils.html import format_html, format_html_join

from tasks_app.admin_display import as_list, constraints_html, placement_html, runs_html
from tasks_app.admin_fields import JSONFormField
from tasks_app.admin_type_forms import typed_field_names, typed_form
from tasks_app.errors import NodeBusy, TaskhubError
from tasks_app.fleet.placement import parse_capacity, parse_labels
from tasks_app.fleet.scheduling import node_cordon, node_drain, node_uncordon
from tasks_app.fleet.selectors import Load, node_is_online, node_loads
from tasks_app.fleet.services import node_busy, node_create, node_delete, node_update
from tasks_app.models import BlockAllocation, Cluster, GlobalTask, Node, StorageUnit, TaskStatusChange, Vdag, Volume
from tasks_app.ops.dashboard_selectors import node_resources, scheduling_state
from tasks_app.tasks import dispatch, services, validation
from tasks_app.tasks.models import new_task_id
from tasks_app.tasks.timings import run_timings
from workers.protocol import specs
from workers.protocol.status import Status, Verdict, judge, judge_initial

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
    readonly_fields = [
        "task_id", "node", "run_id", "attempts", "task_create_timestamp", "task_update_timestamp",
        "placement_display", "constraints_display", "runs_display",
    ]  # fmt: skip
    fields = [
        "task_id",
        "node",
        "placement_display",
        "constraints_display",
        "run_id",
        "attempts",
        "runs_display",
        "task_type",
        "task_status",
        "task_data",
        "task_status_data",
        "task_create_timestamp",
        "task_update_timestamp",
    ]
    inlines = [TaskStatusChangeInline]
    ordering = ["-task_create_timestamp"]
    actions = ["retry_tasks", "replay_tasks", "cancel_tasks"]
    show_full_result_count = False  # COUNT(*) on millions of rows on every list page is slow

    @admin.action(description="Retry selected failed or cancelled tasks")
    def retry_tasks(self, request: HttpRequest, queryset: Any) -> None:
        self._each(request, queryset, services.task_retry, {"pending": "retried"})

    @admin.action(description="Replay (same input)")
    def replay_tasks(self, request: HttpRequest, queryset: Any) -> None:
        """A new task for each selected failed or cancelled executed task, with its task_data (services.task_replay)."""
        source = f"admin by {request.user.get_username()}"
        for task_id in queryset.values_list("task_id", flat=True):
            try:
                task = services.task_replay(task_id=task_id, source=source)
            except TaskhubError as exc:
                messages.warning(request, f"Task {task_id}: {exc.message}")
                continue
            messages.success(
                request, f"Task {task_id} replayed as {task.task_id} ({task.task_status}, node {task.node})."
            )

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

    # --- why it runs where it does, and how long each run took: read-only, computed from stored
    # records (task data and placement are whatever clients and nodes sent: everything is escaped) ---

    @admin.display(description="placement")
    def placement_display(self, obj: GlobalTask) -> str:
        return placement_html(obj.placement)

    @admin.display(description="constraints")
    def constraints_display(self, obj: GlobalTask) -> str:
        return constraints_html(obj.constraints)

    @admin.display(description="runs and timings")
    def runs_display(self, obj: GlobalTask) -> str:
        return runs_html(run_timings(obj.task_id))

    _ADD_FIELDS = ("task_type", "task_status", "task_data", "task_status_data", "execute", "node")
    # Lists the task types; ?task_type=<name> gives that type's fields (tasks_app/admin_type_forms.py).
    add_form_template = "admin/tasks_app/globaltask/add_form.html"

    def get_fields(self, request: HttpRequest, obj: GlobalTask | None = None) -> Any:
        # The add form: "node" there is the node to run on, not the read-only column.
        return list(self._ADD_FIELDS) if obj is None else super().get_fields(request, obj)

    def _typed_form(self, request: HttpRequest, obj: GlobalTask | None) -> type[forms.ModelForm[Any]] | None:
        """The add form for the type in ?task_type=, with an input per field of its schema; None on the
        change form, and for a type with no schema (the free-form add form, task_type filled in)."""
        chosen = request.GET.get("task_type", "")
        return typed_form(self.form, chosen) if obj is None and chosen else None

    def get_form(self, request: HttpRequest, obj: GlobalTask | None = None, change: bool = False, **kwargs: Any) -> Any:
        typed = self._typed_form(request, obj)
        if typed is not None:
            kwargs["form"] = typed
        return super().get_form(request, obj, change=change, **kwargs)

    def get_fieldsets(self, request: HttpRequest, obj: GlobalTask | None = None) -> Any:
        typed = self._typed_form(request, obj)
        if typed is None:
            return super().get_fieldsets(request, obj)
        return [
            (None, {"fields": ["task_type", "execute", "node", "task_status"]}),
            ("task_data", {"fields": [*typed_field_names(typed), "task_data"]}),
            (None, {"fields": ["task_status_data"]}),
        ]

    def add_view(self, request: HttpRequest, form_url: str = "", extra_context: dict[str, Any] | None = None) -> Any:
        chosen = request.GET.get("task_type", "")
        spec = specs.get(chosen) if chosen else None
        context = {
            **(extra_context or {}),
            "task_types": specs.known(),
            "chosen_type": chosen,
            "chosen_typed": self._typed_form(request, None) is not None,
            "chosen_description": " ".join(spec.description.split()) if spec is not None else "",
        }
        return super().add_view(request, form_url, context)

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


class NodeForm(forms.ModelForm[Node]):
    """Add: a node's record (tasks_app.fleet.services.node_create). Change: its labels, capacity and
    transport only (node_update); its state and scheduling change through tasks and the actions."""

    class Meta:
        model = Node
        fields = ["name", "cluster", "state", "transport", "labels", "capacity"]
        field_classes = {"labels": JSONFormField, "capacity": JSONFormField}
        help_texts = {
            "labels": 'What tasks\' constraints match, e.g. {"disk": "ssd", "zone": "a"}.',
            "capacity": 'What it offers per resource, whole numbers, e.g. {"slots": 4}; "blocks" here '
            "overrides what its worker reports.",
        }

    # The API's checks (tasks_app/fleet/placement.py): the message names the field.
    def clean_labels(self) -> dict[str, str]:
        value = self.cleaned_data["labels"]
        return dict(_checked(parse_labels, {} if value is None else value, "labels"))

    def clean_capacity(self) -> dict[str, int]:
        value = self.cleaned_data["capacity"]
        return dict(_checked(parse_capacity, {} if value is None else value, "capacity"))


class NodeChangeList(ChangeList):
    """Reads the loads of the page's nodes in one go (node_loads), for the columns that show them."""

    def get_results(self, request: HttpRequest) -> None:
        super().get_results(request)
        page = list(self.result_list)  # evaluates (and caches) the page's query
        loads = node_loads([node.name for node in page])
        for node in page:
            setattr(node, _LOAD, loads[node.name])


_LOAD = "_taskhub_load"


def _load(node: Node) -> Load:
    found = getattr(node, _LOAD, None)
    return found if isinstance(found, Load) else node_loads([node.name])[node.name]


def _busy_message(exc: NodeBusy) -> str:
    extra: dict[str, Any] = exc.extra or {}
    items = [*as_list(extra.get("unfinished_tasks")), *as_list(extra.get("holds"))]
    return format_html("{}<ul>{}</ul>", exc.message, format_html_join("", "<li>{}</li>", ((i,) for i in items)))


@admin.register(Node)
class NodeAdmin(admin.ModelAdmin[Node]):
    form = NodeForm
    list_display = [
        "name", "cluster", "state", "scheduling_state", "transport", "online", "labels_display",
        "capacity_display", "unfinished_tasks", "last_heartbeat",
    ]  # fmt: skip
    list_filter = ["cluster", "state", "scheduling", "transport"]
    search_fields = ["name"]
    actions = ["cordon_nodes", "drain_nodes", "uncordon_nodes"]
    _EDITABLE = ("transport", "labels", "capacity")
    _ADD_FIELDS = ("name", "cluster", "state", "transport", "labels", "capacity")
    fields = [
        "name", "cluster", "state", "scheduling_state", "online", "transport", "labels", "capacity",
        "capacity_display", "unfinished_tasks", "registered_at", "last_heartbeat", "offline_since",
        "capacity_blocks", "data_dir", "user",
    ]  # fmt: skip

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return NodeChangeList

    def get_fields(self, request: HttpRequest, obj: Node | None = None) -> Any:
        return list(self._ADD_FIELDS) if obj is None else super().get_fields(request, obj)

    def get_readonly_fields(self, request: HttpRequest, obj: Node | None = None) -> Any:
        return [] if obj is None else [f for f in self.fields or () if f not in self._EDITABLE]

    def get_actions(self, request: HttpRequest) -> Any:
        # Bulk delete would skip node_delete's checks (and report deletions it refused): one at a time.
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions

    @admin.display(boolean=True)
    def online(self, obj: Node) -> bool:
        return node_is_online(obj)

    @admin.display(description="scheduling", ordering="scheduling")
    def scheduling_state(self, obj: Node) -> str:
        return scheduling_state(obj, _load(obj))

    @admin.display(description="labels")
    def labels_display(self, obj: Node) -> str:
        labels = obj.labels if isinstance(obj.labels, dict) else {}
        if not labels:
            return "-"
        return format_html_join(" ", "<code>{}={}</code>", sorted((str(k), str(v)) for k, v in labels.items()))

    @admin.display(description="capacity (reserved / total)")
    def capacity_display(self, obj: Node) -> str:
        found = node_resources(obj, _load(obj))
        if not found:
            return "-"
        rows = ((r.name, r.reserved, "none" if r.total is None else r.total) for r in found)
        return format_html_join(", ", "{}&nbsp;{}&nbsp;/&nbsp;{}", rows)

    @admin.display(description="unfinished tasks")
    def unfinished_tasks(self, obj: Node) -> int:
        return _load(obj).unfinished

    # --- taking nodes out of service and back: the services in tasks_app/fleet/scheduling.py ---

    @admin.action(description="Cordon selected nodes (no new tasks)", permissions=["change"])
    def cordon_nodes(self, request: HttpRequest, queryset: Any) -> None:
        done = [node_cordon(node=node) for node in queryset]
        self._said(request, done)

    @admin.action(description="Uncordon selected nodes (schedulable again)", permissions=["change"])
    def uncordon_nodes(self, request: HttpRequest, queryset: Any) -> None:
        done = [node_uncordon(node=node) for node in queryset]
        self._said(request, done)

    @admin.action(description="Drain selected nodes (cordon, move their pending tasks away)", permissions=["change"])
    def drain_nodes(self, request: HttpRequest, queryset: Any) -> None:
        source = f"admin by {request.user.get_username()}"
        for node in queryset:
            report = node_drain(node=node, source=source)
            messages.success(
                request,
                f"{node.name}: draining; {len(report.moved)} pending task(s) moved, {len(report.stayed)} stayed, "
                f"{len(report.running)} running there until they finish.",
            )
            if report.stayed:
                stayed = ((s.get("task_id", ""), s.get("reason", "")) for s in report.stayed[:20])
                messages.warning(
                    request,
                    format_html(
                        "{}: these pending tasks stayed:<ul>{}</ul>",
                        node.name,
                        format_html_join("", "<li>{}: {}</li>", stayed),
                    ),
                )

    def _said(self, request: HttpRequest, nodes: list[Node]) -> None:
        by_state: dict[str, list[str]] = {}
        for node in nodes:
            by_state.setdefault(str(node.scheduling), []).append(node.name)
        for state, names in by_state.items():
            messages.success(request, f"Now {state}: {', '.join(names)}.")

    # --- add, change and delete through tasks_app/fleet/services.py ---

    def save_model(self, request: HttpRequest, obj: Node, form: Any, change: bool) -> None:
        data = form.cleaned_data
        try:
            if not change:
                node = node_create(
                    cluster=data["cluster"], name=data["name"], transport=data["transport"], state=data["state"],
                    labels=data["labels"], capacity=data["capacity"],
                )  # fmt: skip
                obj.pk, obj._state.adding = node.pk, False
                return
            edits = {name: data[name] for name in self._EDITABLE if name in form.changed_data}
            if edits:
                node_update(node=obj, **edits)
        except TaskhubError as exc:
            messages.error(request, exc.message)
            setattr(request, _REFUSED, True)  # read by response_add / response_change

    def response_add(self, request: HttpRequest, obj: Node, post_url_continue: str | None = None) -> HttpResponse:
        if getattr(request, _REFUSED, False):
            return HttpResponseRedirect(request.path)
        return super().response_add(request, obj, post_url_continue)

    def response_change(self, request: HttpRequest, obj: Node) -> HttpResponse:
        if getattr(request, _REFUSED, False):
            return HttpResponseRedirect(request.path)
        return super().response_change(request, obj)

    def delete_view(self, request: HttpRequest, object_id: str, extra_context: dict[str, Any] | None = None) -> Any:
        node = self.get_object(request, unquote(object_id))
        if node is not None and self.has_delete_permission(request, node):
            busy = node_busy(node)
            if busy is not None:
                messages.error(request, _busy_message(busy))
                return HttpResponseRedirect(reverse("admin:tasks_app_node_change", args=[node.pk]))
        return super().delete_view(request, object_id, extra_context)

    def delete_model(self, request: HttpRequest, obj: Node) -> None:
        try:
            node_delete(node=obj)
        except NodeBusy as exc:  # a task landed on it since the check in delete_view
            messages.error(request, _busy_message(exc))
            setattr(request, _REFUSED, True)

    def response_delete(self, request: HttpRequest, obj_display: str, obj_id: Any) -> HttpResponse:
        if getattr(request, _REFUSED, False):
            return HttpResponseRedirect(reverse("admin:tasks_app_node_change", args=[obj_id]))
        return super().response_delete(request, obj_display, obj_id)


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
