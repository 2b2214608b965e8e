"""The admin's add form for one task type: an input per top-level property of the type's task_data
schema (TaskSpec.schema), assembled into task_data on submit. No JavaScript: the add page links each
type as ?task_type=<name>, and the form posts back to that address.

Each input is typed (a number, a checkbox, a select of the enum, a JSON textarea for a list or an
object), with the schema's description as help text; a required property is a required input. What
the schema cannot say (patterns, ranges, rules across fields) is left to the type's validate(), whose
message is shown on the input it names. Anything the fields do not cover (a property not named like a
Python identifier, extra keys a type keeps) goes in the "other task_data fields" JSON textarea.
"""

from __future__ import annotations

import json
import re
from typing import Any, ClassVar

from django import forms
from django.forms import ModelForm
from django.utils.html import escape

from tasks_app.admin_fields import JSONFormField
from tasks_app.errors import TaskhubError
from tasks_app.tasks import type_schema, validation
from workers.protocol import specs

PREFIX = "task_data__"
# A property gets an input of its own when its name makes a plain form field name.
_PLAIN = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
# The message of a refused payload names its field: "task_data.<name>: ..." (dispatch.prepare).
_NAMED = re.compile(r"task_data\.([A-Za-z_][A-Za-z0-9_]*)(?![A-Za-z0-9_])")


class JSONOf(JSONFormField):
    """A JSON textarea that takes only one kind of value (a list or an object); empty is "left out"."""

    def __init__(self, *, kind: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.kind = kind

    def validate(self, value: Any) -> None:
        super().validate(value)
        wanted = {"array": list, "object": dict}.get(self.kind)
        if value is not None and wanted is not None and not isinstance(value, wanted):
            raise forms.ValidationError("must be a JSON list" if wanted is list else "must be a JSON object")


def field_for(prop: type_schema.Property) -> forms.Field:
    """The input for one property. Its cleaned value None means "left out" of task_data."""
    # The admin renders help text as HTML (Django's `help_text|safe`): the schema's text is escaped here.
    common: dict[str, Any] = {"label": prop.name, "help_text": escape(prop.description), "required": prop.required}
    default = prop.schema.get("default")
    enum = prop.enum
    if enum is not None:
        # Keyed by the JSON text, so a choice of any JSON type comes back as itself.
        choices = [(json.dumps(v), v if isinstance(v, str) else json.dumps(v)) for v in enum]
        blank = [] if prop.required else [("", "---------")]
        initial = json.dumps(default) if "default" in prop.schema else None
        return forms.TypedChoiceField(
            choices=blank + choices, coerce=json.loads, empty_value=None, initial=initial, **common
        )
    kind = prop.kind
    if kind == "integer":
        return forms.IntegerField(initial=default, **common)
    if kind == "number":
        return forms.FloatField(initial=default, **common)
    if kind == "boolean":
        if prop.required:  # a checkbox is always true or false: nothing to require
            return forms.BooleanField(initial=default, **{**common, "required": False})
        return forms.NullBooleanField(initial=default, **{**common, "required": False})
    if kind == "string":
        return forms.CharField(initial=default, empty_value=None, **common)
    # A list, an object, or a value of several types: JSON, with the shape to fill in as a placeholder.
    placeholder = json.dumps(type_schema.example(prop.schema, required=prop.required))
    return JSONOf(
        kind=kind,
        initial=default,
        widget=forms.Textarea(attrs={"rows": 3, "placeholder": placeholder}),
        **common,
    )


def typed_properties(schema: Any) -> list[type_schema.Property]:
    return [prop for prop in type_schema.properties(schema) if _PLAIN.fullmatch(prop.name)]


class TypedTaskData(forms.BaseForm):
    """Mixed into the add form by typed_form(): assembles task_data from the typed inputs."""

    typed_names: ClassVar[list[str]] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Set here, not on the class: the admin builds its own subclass, with the model's field again.
        other = self.fields["task_data"]
        other.label = "other task_data fields"
        other.help_text = "A JSON object of keys the fields above do not cover (usually none)."
        other.required = False

    def clean_task_data(self) -> dict[str, Any]:
        value = self.cleaned_data.get("task_data")
        return _checked_object({} if value is None else value)

    def clean(self) -> dict[str, Any] | None:
        data = self.cleaned_data
        if "task_data" in data:  # the free-form part is an object: put the typed inputs in
            assembled = dict(data["task_data"])
            for name in self.typed_names:
                value = data.get(f"{PREFIX}{name}")
                if value is None:
                    continue  # left out
                if name in assembled:
                    self.add_error(f"{PREFIX}{name}", f"{name} is also in the other task_data fields: set it once")
                    continue
                assembled[name] = value
            try:
                data["task_data"] = _checked_object(assembled)  # NUL, depth: the API's edge checks
            except forms.ValidationError as exc:
                self.add_error("task_data", exc)
        try:
            return super().clean()
        except forms.ValidationError as exc:
            # The type's validator names the field it refused: show its message on that input.
            found = _NAMED.match(" ".join(exc.messages))
            if found and found.group(1) in self.typed_names:
                self.add_error(f"{PREFIX}{found.group(1)}", exc)
                return self.cleaned_data
            raise


def _checked_object(value: Any) -> dict[str, Any]:
    try:
        return validation.json_object(value, "task_data")
    except TaskhubError as exc:
        raise forms.ValidationError(exc.message) from exc


def typed_form(base: type[ModelForm[Any]], task_type: str) -> type[ModelForm[Any]] | None:
    """`base` (the add form) with task_type fixed and an input per property of the type's schema;
    None for a type that is not executable or publishes no schema (the free-form add form serves it)."""
    spec = specs.get(task_type)
    if spec is None or not isinstance(spec.schema, dict):
        return None
    props = typed_properties(spec.schema)
    attrs: dict[str, Any] = {f"{PREFIX}{prop.name}": field_for(prop) for prop in props}
    # Disabled: the form posts back to ?task_type=<name>, whose fields these are; another type is
    # another link. (A disabled field's value is its initial, whatever is posted.)
    attrs["task_type"] = forms.CharField(
        disabled=True, initial=task_type, help_text="Another type: choose it among the links above."
    )
    attrs["execute"] = forms.BooleanField(
        required=False,
        initial=True,
        help_text="Run it on a node (checked against the type); otherwise a tracked record of these fields.",
    )
    attrs["typed_names"] = [prop.name for prop in props]
    attrs["__module__"] = __name__
    metaclass: Any = type(base)  # ModelForm's, which collects the fields declared above
    form: type[ModelForm[Any]] = metaclass(f"{base.__name__}_{task_type}", (TypedTaskData, base), attrs)
    return form


def typed_field_names(form: type[forms.BaseForm]) -> list[str]:
    return [f"{PREFIX}{name}" for name in getattr(form, "typed_names", [])]
