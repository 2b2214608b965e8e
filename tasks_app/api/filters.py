from __future__ import annotations

import django_filters

from tasks_app.models import GlobalTask
from workers.protocol.status import STATUS_VALUES


class TaskFilter(django_filters.FilterSet):  # type: ignore[misc]  # django-filter ships no types
    task_type = django_filters.CharFilter(field_name="task_type")
    task_status = django_filters.ChoiceFilter(field_name="task_status", choices=[(s, s) for s in STATUS_VALUES])
    updated_since = django_filters.NumberFilter(
        field_name="task_update_timestamp", lookup_expr="gte", label="Updated at or after (epoch seconds)"
    )
    node = django_filters.CharFilter(field_name="node", label="Assigned node")
    since = django_filters.NumberFilter(
        field_name="task_create_timestamp", lookup_expr="gte", label="Created at or after (epoch seconds)"
    )
    created_since = django_filters.NumberFilter(
        field_name="task_create_timestamp", lookup_expr="gte", label="Created at or after (epoch seconds)"
    )

    class Meta:
        model = GlobalTask
        fields = ["task_type", "task_status", "node", "since", "updated_since", "created_since"]
