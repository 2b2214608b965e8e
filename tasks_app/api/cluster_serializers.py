"""Serializers for clusters, nodes and volumes."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from tasks_app.fleet.selectors import node_is_online
from tasks_app.models import Cluster, Node, StorageUnit, Volume
from workers.protocol.payload import NAME_RE


class ClusterSerializer(serializers.ModelSerializer[Cluster]):
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
    cluster = serializers.SlugRelatedField(slug_field="name", queryset=Cluster.objects.all())
    online = serializers.SerializerMethodField()
    state = serializers.ChoiceField(
        choices=[Node.State.MEMBER, Node.State.JOINING],
        required=False,
        help_text="member (default), or joining: a node_addition task makes it a member",
    )

    class Meta:
        model = Node
        fields = ["id", "name", "cluster", "state", "transport", "online", "registered_at", "last_heartbeat",
                  "data_dir", "capacity_blocks"]  # fmt: skip
        read_only_fields = ["id", "online", "registered_at", "last_heartbeat", "data_dir", "capacity_blocks"]

    def get_online(self, obj: Node) -> bool:
        return node_is_online(obj)

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
    node = serializers.CharField()
    path = serializers.CharField(required=False)


class VolumeCreateSerializer(serializers.Serializer[dict[str, Any]]):
    """Kadalu's volume create request: {"name", "type", "storage_units": [{"node", "path"?}]}."""

    name = serializers.CharField()
    type = serializers.CharField(required=False, default="replicate")
    storage_units = UnitInputSerializer(many=True)
    node = serializers.CharField(required=False, help_text="run on this node instead of the first unit's")
