"""The admin's JSON inputs. Django's forms.JSONField, except that no text typed into one can make the
admin's page fail: whatever the edge checks (tasks_app/tasks/validation.py) refuse must come back as an
error on the input, with the text shown again, never as a 500."""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.conf import settings
from django.forms.fields import InvalidJSONInput


class JSONFormField(forms.JSONField):
    def to_python(self, value: Any) -> Any:
        # Django's catches only JSONDecodeError. Text nested some hundreds of levels deep exhausts the
        # parser's recursion (the API's limit, TASKHUB_MAX_JSON_DEPTH, is checked only once it parsed),
        # and a number of more than 4,300 digits is a ValueError of Python's int.
        try:
            return super().to_python(value)
        except RecursionError as exc:
            raise forms.ValidationError(
                f"nested deeper than {settings.TASKHUB_MAX_JSON_DEPTH} levels (TASKHUB_MAX_JSON_DEPTH)"
            ) from exc
        except ValueError as exc:
            raise forms.ValidationError(f"not JSON this server can read: {exc}") from exc

    def bound_data(self, data: Any, initial: Any) -> Any:
        # When the refused form is shown again, its text is parsed once more: the same failures.
        try:
            return super().bound_data(data, initial)
        except (RecursionError, ValueError):
            return InvalidJSONInput(data)

    def prepare_value(self, value: Any) -> Any:
        # A refused value with a lone surrogate (valid as a JSON escape, not as text) is shown escaped:
        # printed as it parsed, the page itself would fail to encode.
        text = super().prepare_value(value)
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return json.dumps(value, ensure_ascii=True, cls=self.encoder)
        return text
