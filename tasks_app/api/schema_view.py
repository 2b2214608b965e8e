"""GET /api/schema/. (Not in tasks_app/api/schema.py: DRF loads that module, DEFAULT_SCHEMA_CLASS, while
drf_spectacular.views is still being imported.)"""

from __future__ import annotations

import threading
from typing import Any

from drf_spectacular.views import SpectacularAPIView


class SchemaView(SpectacularAPIView):
    """The schema, generated one request at a time: drf-spectacular's generator keeps module-level
    state (its extension registry, loaded on first use), and two first requests at once on threaded
    workers answered 500."""

    _lock = threading.Lock()
    schema = None  # not an endpoint of the API it describes (as drf-spectacular's own view is not)

    def get(self, request: Any, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            return super().get(request, *args, **kwargs)  # type: ignore[no-untyped-call]  # untyped library
