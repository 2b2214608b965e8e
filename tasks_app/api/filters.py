"""List filters for /api/v1, strict: a value a filter cannot take, an empty choice, or a query parameter
the list does not know is a 400 naming the parameter, never silently ignored (a typo would otherwise
return the whole list)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, cast

import django_filters
from django import forms
from django.db.models import QuerySet
from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.utils import extend_schema_field
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.settings import api_settings

from tasks_app.models import GlobalTask, Node
from workers.protocol.status import STATUS_VALUES


class _StrictForm(forms.Form):
    """Mixed into a filter set's form: an empty value of a choice filter is not "no filter"."""

    def clean(self) -> dict[str, Any] | None:
        cleaned = super().clean()
        for name, field in self.fields.items():
            if isinstance(field, forms.ChoiceField) and name in self.data and self.data.get(name) == "":
                values = cast(Iterable[tuple[Any, Any]], field.choices)
                choices = ", ".join(str(value) for value, _ in values if value != "")
                self.add_error(name, f"must not be empty; one of: {choices}")
        return cleaned


class StrictFilterSet(django_filters.FilterSet):  # type: ignore[misc]  # django-filter ships no types
    def get_form_class(self) -> type[forms.Form]:
        form: type[forms.Form] = super().get_form_class()
        return type(form.__name__, (_StrictForm, form), {})


# The largest value a 64-bit column compares with: PostgreSQL refuses a larger parameter with an error.
MAX_EPOCH = 2**63 - 1


@extend_schema_field({"type": "integer", "minimum": 0, "maximum": MAX_EPOCH})
class EpochFilter(django_filters.NumberFilter):  # type: ignore[misc]
    """Epoch seconds, whole, as every timestamp here is (django-filter's NumberFilter takes any decimal)."""

    field_class = forms.IntegerField

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, min_value=0, max_value=MAX_EPOCH, **kwargs)


class TaskFilter(StrictFilterSet):
    task_type = django_filters.CharFilter(field_name="task_type")
    task_status = django_filters.ChoiceFilter(field_name="task_status", choices=[(s, s) for s in STATUS_VALUES])
    updated_since = EpochFilter(
        field_name="task_update_timestamp", lookup_expr="gte", label="Updated at or after (epoch seconds)"
    )
    node = django_filters.CharFilter(field_name="node", label="Assigned node")
    since = EpochFilter(
        field_name="task_create_timestamp", lookup_expr="gte", label="Created at or after (epoch seconds)"
    )
    created_since = EpochFilter(
        field_name="task_create_timestamp", lookup_expr="gte", label="Created at or after (epoch seconds)"
    )

    class Meta:
        model = GlobalTask
        fields = ["task_type", "task_status", "node", "since", "updated_since", "created_since"]


class NodeFilter(StrictFilterSet):
    class Meta:
        model = Node
        fields = ["cluster__name", "state", "transport"]


def reject_unknown_parameters(request: Request, allowed: set[str], *, what: str = "this") -> None:
    """A 400 naming each query parameter that is not `allowed`, and what is."""
    unknown = sorted(set(request.query_params) - allowed)
    if unknown:
        why = f"Unknown query parameter; {what} takes: {', '.join(sorted(allowed))}"
        raise ValidationError({name: [why] for name in unknown})


class StrictFilterBackend(DjangoFilterBackend):  # type: ignore[misc]
    """DEFAULT_FILTER_BACKENDS: django-filter's backend, plus a 400 for a query parameter a list does not
    take. Allowed: its filters, its paginator's parameters and DRF's `format` (the browsable API's)."""

    # Its form leaves empty fields out of the query, which a strict choice filter would refuse.
    template = "taskhub/filter_form.html"

    def filter_queryset(self, request: Request, queryset: QuerySet[Any], view: Any) -> QuerySet[Any]:
        if getattr(view, "action", "list") == "list":
            reject_unknown_parameters(request, self._parameters(queryset, view), what="this list")
        filtered: QuerySet[Any] = super().filter_queryset(request, queryset, view)
        return filtered

    def _parameters(self, queryset: QuerySet[Any], view: Any) -> set[str]:
        names = {api_settings.URL_FORMAT_OVERRIDE or "format"}
        filterset_class = self.get_filterset_class(view, queryset)
        if filterset_class is not None:
            names |= set(filterset_class.base_filters)
        paginator = getattr(view, "paginator", None)
        if paginator is not None:
            names |= {p["name"] for p in paginator.get_schema_operation_parameters(view)}
        for backend in getattr(view, "filter_backends", ()):
            if not issubclass(backend, DjangoFilterBackend):
                names |= {p["name"] for p in backend().get_schema_operation_parameters(view)}
        return names
