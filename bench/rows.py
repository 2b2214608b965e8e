"""Set-based INSERT ... SELECT into global_task that follows the model as it is now.

Columns the bench sets get SQL expressions; every other concrete column of GlobalTask (fields
added later, say) gets its model default as a parameter, so the load keeps working as the
schema grows.
"""

from __future__ import annotations

from typing import Any


def insert_select(
    select_from: str, exprs: dict[str, tuple[str, list[Any]]], returning: str = ""
) -> tuple[str, list[Any]]:
    """INSERT INTO global_task (<every column>) SELECT <exprs or defaults> FROM <select_from>."""
    from django.db import connection

    from tasks_app.models import GlobalTask

    columns: list[str] = []
    values: list[str] = []
    params: list[Any] = []
    for field in GlobalTask._meta.concrete_fields:
        column = field.column
        columns.append(connection.ops.quote_name(column))
        if column in exprs:
            expr, expr_params = exprs[column]
            values.append(expr)
            params.extend(expr_params)
        else:
            values.append("%s")
            params.append(field.get_db_prep_save(field.get_default(), connection))
    unknown = set(exprs) - {f.column for f in GlobalTask._meta.concrete_fields}
    if unknown:
        raise RuntimeError(f"global_task has no column(s) {sorted(unknown)}")
    table = connection.ops.quote_name(GlobalTask._meta.db_table)
    # Only the bench's own constant SQL fragments and quoted column names are interpolated.
    sql = f"INSERT INTO {table} ({', '.join(columns)}) SELECT {', '.join(values)} FROM {select_from}"  # noqa: S608
    if returning:
        sql += f" RETURNING {returning}"
    return sql, params
