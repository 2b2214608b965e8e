"""Serializers for clusters, nodes and volumes."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from tasks_app.api.fields import NameRelatedField, TextField
from tasks_app.fleet.selectors import node_is_online
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
        if not NAME_RE.match(value):
            raise serializers.ValidationError("use 1-64 letters, digits, '.', '_' or '-'")
        return value


class NodeSerializer(serializers.ModelSerializer[Node]):
    """A node as the API shows it (any state, `removed` included)."""

    cluster: serializers.SlugRelatedField[Cluster] = serializers.SlugRelatedField(slug_field="name", read_only=True)
    online = serializers.SerializerMethodField()

    class Meta:
        model = Node
        fields = ["id", "name", "cluster", "state", "transport", "online", "registered_at", "last_heartbeat",
                  "data_dir", "capacity_blocks"]  # fmt: skip
        read_only_fields = fields

    def get_online(self, obj: Node) -> bool:
        return node_is_online(obj)


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

    def validate_name(self, value: str) -> str:
        if not NAME_RE.match(value):
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
