"""Rows written and read in plain SQL, for the statements every answer runs.

The ORM compiles each query anew: on an answer's path (its token, its start, its end) that compilation
costs more CPU than the round trip to the database (`make bench --profile`). These helpers keep the
statement's text cached per model and still let the fields prepare their values and convert what the
database returns, so the same code runs on PostgreSQL and on SQLite (`make run`). The services that
own the tables call them; nothing else needs to.
"""

import functools
import itertools
from dataclasses import dataclass

from django.db import DEFAULT_DB_ALIAS, connections, models


def insert(*rows: models.Model, before: tuple["Write", ...] = ()) -> int | None:
    """INSERT `rows` (every concrete field given), as `bulk_create()` writes them; `auto_now` fields are
    set as `save()` sets them. Rows of one model are one statement; rows of several (each model's in a
    run, parents first) are one statement too on PostgreSQL — the first INSERTs as CTEs of the last, the
    foreign keys checked at its end — and one per model elsewhere.

    `before`: other data-modifying statements (their parameters positional), run first — on PostgreSQL
    as CTEs of the same statement, elsewhere one by one. Returns how many rows the last of them changed
    (None without `before`)."""
    db = _connection()
    inserts = []
    for model, batch in itertools.groupby(rows, key=type):
        batch = list(batch)
        fields = model._meta.concrete_fields
        values = [field.get_db_prep_save(field.pre_save(row, True), db) for row in batch for field in fields]
        inserts.append(Write(_insert_sql(model, len(batch), db.vendor), values))
    changed = None
    with db.cursor() as cursor:
        if db.vendor == "postgresql" and len(before) + len(inserts) > 1:
            together = _together(before, inserts)
            cursor.execute(together.sql, together.params)
            changed = cursor.fetchone()[0] if before else None
        else:
            for write in before:
                cursor.execute(write.sql, write.params)
                changed = cursor.rowcount
            for write in inserts:
                cursor.execute(write.sql, write.params)
    for row in rows:
        row._state.adding, row._state.db = False, db.alias
    return changed


def _together(before: tuple["Write", ...], inserts: list["Write"]) -> "Write":
    """`before` and `inserts` as one PostgreSQL statement: the inserts but the last as CTEs of it or,
    with `before`, every statement a CTE and the rows of the last of `before` counted."""
    ctes = [Write(f"{write.sql} RETURNING 1", write.params) for write in before] + inserts
    if before:
        final = Write(f"SELECT count(*) FROM step_{len(before) - 1}", [])
    else:
        *ctes, final = ctes
    named = ", ".join(f"step_{number} AS ({write.sql})" for number, write in enumerate(ctes))
    return Write(
        f"WITH {named} {final.sql}", [value for write in ctes for value in write.params] + final.params
    )


@functools.cache
def _insert_sql(model: type[models.Model], count: int, vendor: str) -> str:
    connection = _connection()
    fields = model._meta.concrete_fields
    columns = ", ".join(connection.ops.quote_name(field.column) for field in fields)
    one = "(" + ", ".join(["%s"] * len(fields)) + ")"
    return f"INSERT INTO {connection.ops.quote_name(model._meta.db_table)} ({columns}) VALUES " + ", ".join(
        [one] * count
    )


@dataclass(frozen=True)
class Write:
    """A data-modifying statement not run yet: `run()` runs it; a service that writes its own rows on it
    can take it instead and run both as one statement (`quota_settle` takes one with named parameters,
    `insert(before=…)` ones with positional parameters)."""

    sql: str
    params: dict | list


def run(write: Write) -> int:
    """Run `write`; how many rows it changed."""
    with _connection().cursor() as cursor:
        cursor.execute(write.sql, write.params)
        return cursor.rowcount


def update(model: type[models.Model], where: dict, **values) -> int:
    """UPDATE the rows of `model` whose fields equal `where`'s, setting `values`; how many it changed."""
    return run(updating(model, where, **values))


def updating(model: type[models.Model], where: dict, **values) -> Write:
    """`update()`'s statement, not run yet."""
    db, fields = _connection(), model._meta
    params = {f"set_{name}": fields.get_field(name).get_db_prep_save(v, db) for name, v in values.items()}
    params.update(
        (f"where_{name}", fields.get_field(name).get_db_prep_value(v, db)) for name, v in where.items()
    )
    return Write(_update_sql(model, tuple(values), tuple(where), db.vendor), params)


@functools.cache
def _update_sql(model: type[models.Model], names: tuple, where: tuple, vendor: str) -> str:
    connection = _connection()

    def column(name: str) -> str:
        return connection.ops.quote_name(model._meta.get_field(name).column)

    return (
        f"UPDATE {connection.ops.quote_name(model._meta.db_table)} "
        f"SET {', '.join(f'{column(name)} = %(set_{name})s' for name in names)} "
        f"WHERE {' AND '.join(f'{column(name)} = %(where_{name})s' for name in where)}"
    )


def fetch(model: type[models.Model], sql: str, params, *extra: str) -> models.Model | None:
    """The first row of `sql` as a `model`, or None: what `raw()` returns, without its per-query setup.
    `sql` selects `columns(model)`, then one column per name of `extra`, set on the row as attributes."""
    db = _connection()
    with db.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    if row is None:
        return None
    values = []
    for value, (column, converters) in zip(row, _converters(model, db.vendor), strict=False):
        for convert in converters:
            value = convert(value, column, db)
        values.append(value)
    found = model.from_db(db.alias, None, values)
    for name, value in zip(extra, row[len(values) :], strict=True):
        setattr(found, name, value)
    return found


def columns(model: type[models.Model], table: str = "") -> str:
    """The select list of every concrete field of `model`, in `fetch()`'s order (`table.` before each)."""
    quote = _connection().ops.quote_name
    prefix = f"{quote(table)}." if table else ""
    return ", ".join(prefix + quote(field.column) for field in model._meta.concrete_fields)


@functools.cache
def _converters(model: type[models.Model], vendor: str) -> list[tuple]:
    """Per concrete field: its column expression and the converters the backend and the field apply."""
    connection, found = _connection(), []
    for field in model._meta.concrete_fields:
        column = field.get_col(model._meta.db_table)
        converters = connection.ops.get_db_converters(column) + column.get_db_converters(connection)
        found.append((column, converters))
    return found


def _connection():
    """The default database's connection of this thread (`django.db.connection` is a proxy to it, each of
    its attribute reads a lookup: the fields' preparation reads it a dozen times a row)."""
    return connections[DEFAULT_DB_ALIAS]
