"""Serializers for clusters, nodes and volumes."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from tasks_app.api.fields import NameRelatedField, TextField
from tasks_app.errors import InvalidInput
from tasks_app.fleet.placement import LABELS_SCHEMA, capacity_of, capacity_schema, parse_capacity, parse_labels
from tasks_app.fleet.selectors import Load, drained, node_is_online, node_loads
from tasks_app.models import Cluster, Node, StorageUnit, Volume
from workers.protocol.payload import NAME_RE


class ClusterSerializer(serializers.ModelSerializer[Cluster]):
    # No unique validator: an existing name is a 409 from the view (AlreadyExists), not a 400.
    name = TextField(max_length=64)
    nodes = serializers.SerializerMethodField()

    class Meta:
        model = Cluster
        fields = ["id", "name", "state", "created_at", "nodes"]
        read_only_fields = ["id", "state", "created_at", "nodes"]

    def get_nodes(self, obj: Cluster) -> list[str]:
        return [n.name for n in obj.nodes.all()]

    def validate_name(self, value: str) -> str:
        if not NAME_RE.fullmatch(value):
            raise serializers.ValidationError("use 1-64 letters, digits, '.', '_' or '-'")
        return value


@extend_schema_field(LABELS_SCHEMA)
class LabelsField(serializers.JSONField):
    def to_internal_value(self, data: Any) -> dict[str, str]:
        return dict(_check(parse_labels, super().to_internal_value(data), self.field_name))


@extend_schema_field(capacity_schema(0))
class CapacityField(serializers.JSONField):
    def to_internal_value(self, data: Any) -> dict[str, int]:
        return dict(_check(parse_capacity, super().to_internal_value(data), self.field_name))


def _check(fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except InvalidInput as exc:
        raise serializers.ValidationError(exc.message) from exc


class NodeSerializer(serializers.ModelSerializer[Node]):
    """A node as the API shows it (any state, `removed` included), with what placement sees of it."""

    cluster: serializers.SlugRelatedField[Cluster] = serializers.SlugRelatedField(slug_field="name", read_only=True)
    online = serializers.SerializerMethodField()
    labels = LabelsField(read_only=True)
    capacity = serializers.SerializerMethodField(
        help_text="what it offers per resource (blocks: as its worker reports, unless set)"
    )
    declared_capacity = CapacityField(
        source="capacity", read_only=True, help_text="the capacity an operator set (PATCH replaces it)"
    )
    reserved = serializers.SerializerMethodField(help_text="capacity its unfinished tasks reserve, per resource")
    free = serializers.SerializerMethodField(help_text="capacity less reserved, per resource")
    unfinished_tasks = serializers.SerializerMethodField(help_text="tasks assigned to it that have not ended")
    drained = serializers.SerializerMethodField(help_text="draining, and no unfinished task left")

    class Meta:
        model = Node
        fields = ["id", "name", "cluster", "state", "scheduling", "transport", "online", "registered_at",
                  "last_heartbeat", "data_dir", "capacity_blocks", "labels", "capacity", "declared_capacity",
                  "reserved", "free", "unfinished_tasks", "drained"]  # fmt: skip
        read_only_fields = fields

    def _load(self, obj: Node) -> Load:
        # The loads of every node this answer shows (one, or a list's page) in two queries, read once.
        loads: dict[str, Load] = self.context.setdefault("node_loads", {})
        if obj.name not in loads:
            shown = getattr(self.parent, "instance", None) if self.parent is not None else None
            names = [n.name for n in shown] if isinstance(shown, list | tuple) else [obj.name]
            loads.update(node_loads([n for n in dict.fromkeys([*names, obj.name]) if n not in loads]))
        return loads[obj.name]

    def get_online(self, obj: Node) -> bool:
        return node_is_online(obj)

    def get_capacity(self, obj: Node) -> dict[str, int]:
        return capacity_of(obj.capacity, obj.capacity_blocks)

    def get_reserved(self, obj: Node) -> dict[str, int]:
        return self._load(obj).reserved

    def get_free(self, obj: Node) -> dict[str, int]:
        reserved = self._load(obj).reserved
        return {r: amount - reserved.get(r, 0) for r, amount in capacity_of(obj.capacity, obj.capacity_blocks).items()}

    def get_unfinished_tasks(self, obj: Node) -> int:
        return self._load(obj).unfinished

    def get_drained(self, obj: Node) -> bool:
        return drained(obj, self._load(obj))


class NodeUpdateSerializer(serializers.Serializer[dict[str, Any]]):
    """PATCH /api/v1/nodes/<n>/: each field given replaces that field whole."""

    labels = LabelsField(required=False, help_text='replaces its labels, e.g. {"disk": "ssd", "zone": "a"}')
    capacity = CapacityField(required=False, help_text='replaces its capacity per resource, e.g. {"slots": 4}')
    transport = serializers.ChoiceField(choices=Node.Transport.choices, required=False)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        unknown = (
            sorted(set(self.initial_data) - {"labels", "capacity", "transport"})
            if isinstance(self.initial_data, dict)
            else []
        )
        if unknown:
            raise serializers.ValidationError(dict.fromkeys(unknown, "Unknown or read-only field"))
        return attrs


class DrainSerializer(serializers.Serializer[dict[str, Any]]):
    node = serializers.CharField()
    moved = serializers.ListField(child=serializers.DictField(child=serializers.CharField()))
    stayed = serializers.ListField(child=serializers.DictField(child=serializers.CharField()))
    running = serializers.ListField(child=serializers.CharField())


class NodeCreateSerializer(serializers.Serializer[dict[str, Any]]):
    """POST /api/v1/nodes/: register a node, a member at once or joining (the states a client may ask for)."""

    name = TextField(max_length=64)
    cluster = NameRelatedField(queryset=Cluster.objects.all())
    state = serializers.ChoiceField(
        choices=[Node.State.MEMBER, Node.State.JOINING],
        required=False,
        help_text="member (default), or joining: a node_addition task makes it a member",
    )
    transport = serializers.ChoiceField(choices=Node.Transport.choices, required=False)
    labels = LabelsField(required=False, help_text='e.g. {"disk": "ssd", "zone": "a"}')
    capacity = CapacityField(required=False, help_text='what it offers per resource, e.g. {"slots": 4}')

    def validate_name(self, value: str) -> str:
        if not NAME_RE.fullmatch(value):
            raise serializers.ValidationError("use 1-64 letters, digits, '.', '_' or '-'")
        return value


class StorageUnitSerializer(serializers.ModelSerializer[StorageUnit]):
    node = serializers.CharField(source="node.name")

    class Meta:
        model = StorageUnit
        fields = ["index", "node", "path"]


class VolumeSerializer(serializers.ModelSerializer[Volume]):
    cluster = serializers.CharField(source="cluster.name")
    storage_units = StorageUnitSerializer(many=True)

    class Meta:
        model = Volume
        fields = ["id", "name", "cluster", "type", "state", "storage_units", "task_id", "created_at"]


class UnitInputSerializer(serializers.Serializer[dict[str, Any]]):
    node = TextField()
    path = TextField(required=False)


class VolumeCreateSerializer(serializers.Serializer[dict[str, Any]]):
    """Kadalu's volume create request: {"name", "type", "storage_units": [{"node", "path"?}]}."""

    name = TextField()
    type = TextField(required=False, default="replicate")
    storage_units = UnitInputSerializer(many=True)
    node = TextField(required=False, help_text="run on this node instead of the first unit's")
