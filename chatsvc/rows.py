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
from django.db.models.constants import OnConflict


def insert(
    *rows: "models.Model | Write",
    before: tuple["Write", ...] = (),
    first: tuple["Write", ...] = (),
    end: bool = False,
) -> int | None:
    """INSERT `rows` (every concrete field given), as `bulk_create()` writes them; `auto_now` fields are
    set as `save()` sets them. A `Write` among them (an UPDATE, its WHERE last) runs with them. Rows of
    one model are one statement; rows of several (each model's in a run, parents first) are one
    statement too on PostgreSQL — the first INSERTs as CTEs of the last, the foreign keys checked at its
    end — and one per model elsewhere.

    `before`: other data-modifying statements (their parameters positional), run first — on PostgreSQL
    as CTEs of the same statement, elsewhere one by one — and `rows` are written only when the last of
    them changed a row (a reservation: what goes with it). Returns how many rows the last of them
    changed (None without `before`).

    `first` (with `before`): statements run before the write, each a statement of its own — on
    PostgreSQL sent with it, in the same round trip: the locks it needs (its snapshot is taken once they
    are held, so it sees what their last holder committed), the rows they lock made sure of.

    `end` (with `before`): the statement is the last of the caller's transaction, which ends with it: on
    PostgreSQL its COMMIT is sent with it, in the same round trip (the caller's `atomic()` then has
    nothing left to commit). Nothing may run after it in that transaction. Elsewhere, or inside another
    transaction (a savepoint is open: a test's transaction around the caller's), it ends as usual.

    On PostgreSQL the one statement is prepared on the connection (`DatabaseWrapper.executing()`): an
    answer's start is planned once per connection, not each time (`make bench`: its first chunk
    ~0.5 ms sooner, where the server's round trip took ~4.7 ms)."""
    if (end or first) and not before:
        raise ValueError("insert(end=…, first=…) goes with a write decided by `before`.")
    db = _connection()
    together = db.vendor == "postgresql" and (before or len({type(row) for row in rows}) > 1)
    condition = f"EXISTS (SELECT FROM step_{len(before) - 1})" if together and before else None
    writes = [
        write
        for model, batch in itertools.groupby(rows, key=type)
        for write in _writes(model, list(batch), db, condition)
    ]
    changed = None
    with db.cursor() as cursor:
        if together:
            statement = _together(before, writes)
            executing = getattr(db, "executing", None)  # chatsvc.database's (not PostGIS's, say)
            sql = "; ".join(
                [*(write.sql for write in first), executing(statement.sql) if executing else statement.sql]
            )
            if end and not any(db.savepoint_ids):  # None: a block nested without a savepoint
                sql += "; COMMIT"
            cursor.execute(sql, [value for write in (*first, statement) for value in write.params])
            for _ in first:
                cursor.nextset()  # the write's result, not theirs
            changed = cursor.fetchone()[0] if before else None
        else:
            for write in (*first, *before):
                cursor.execute(write.sql, write.params)
                changed = cursor.rowcount
            for write in writes if changed != 0 else ():
                cursor.execute(write.sql, write.params)
    if changed != 0:
        for row in rows:
            if not isinstance(row, Write):
                row._state.adding, row._state.db = False, db.alias
    return changed


def _writes(model: type, batch: list, db, condition: str | None) -> list["Write"]:
    """The statements of a run of `insert()`'s rows of one model (or of `Write`s), each made only when
    `condition` holds (then an INSERT for each row: `INSERT … SELECT … WHERE`, whose literals take
    their columns' types, where a union of rows would make them text)."""
    if model is Write:
        return (
            [Write(f"{write.sql} AND {condition}", write.params) for write in batch] if condition else batch
        )
    values = [_values(row, db) for row in batch]
    if condition is None:
        return [Write(_insert_sql(model, len(batch), db.vendor), [v for row in values for v in row])]
    return [Write(_insert_sql(model, 1, db.vendor, condition), row) for row in values]


def _together(before: tuple["Write", ...], writes: list["Write"]) -> "Write":
    """`before` and `writes` as one PostgreSQL statement: the writes but the last as CTEs of it or,
    with `before`, every statement a CTE and the rows of the last of `before` counted."""
    ctes = [Write(f"{write.sql} RETURNING 1", write.params) for write in before] + writes
    if before:
        final = Write(f"SELECT count(*) FROM step_{len(before) - 1}", [])
    else:
        *ctes, final = ctes
    named = ", ".join(f"step_{number} AS ({write.sql})" for number, write in enumerate(ctes))
    return Write(
        f"WITH {named} {final.sql}", [value for write in ctes for value in write.params] + final.params
    )


def inserting(row: models.Model, *, ignore_conflicts: bool = False) -> "Write":
    """`row`'s INSERT, not run yet (as `insert()` writes it); with `ignore_conflicts`, a row whose key is
    taken already is left as it is."""
    db = _connection()
    sql = _insert_sql(type(row), 1, db.vendor)
    if ignore_conflicts:
        sql = _ignoring_conflicts(sql, db)
    return Write(sql, _values(row, db))


def _values(row: models.Model, db) -> list:
    """`row`'s concrete fields prepared for its INSERT, as `save()` prepares them."""
    return [field.get_db_prep_save(field.pre_save(row, True), db) for field in row._meta.concrete_fields]


def _ignoring_conflicts(sql: str, db) -> str:
    statement = db.ops.insert_statement(on_conflict=OnConflict.IGNORE)
    suffix = db.ops.on_conflict_suffix_sql([], OnConflict.IGNORE, [], [])
    return f"{statement}{sql.removeprefix('INSERT INTO')} {suffix}".strip()


@functools.cache
def _insert_sql(model: type[models.Model], count: int, vendor: str, condition: str | None = None) -> str:
    """`model`'s INSERT of `count` rows or, with `condition`, of one row only when it holds."""
    connection = _connection()
    fields = model._meta.concrete_fields
    columns = ", ".join(connection.ops.quote_name(field.column) for field in fields)
    one = ", ".join(["%s"] * len(fields))
    head = f"INSERT INTO {connection.ops.quote_name(model._meta.db_table)} ({columns})"
    if condition is not None:
        return f"{head} SELECT {one} WHERE {condition}"
    return f"{head} VALUES " + ", ".join([f"({one})"] * count)


@dataclass(frozen=True)
class Write:
    """A data-modifying statement not run yet: `run()` runs it; a service that writes its own rows on it
    can take it instead and run both as one statement (`quota_settle` takes one with named parameters,
    `insert(before=…)` ones with positional parameters)."""

    sql: str
    params: dict | list


@dataclass(frozen=True)
class Condition:
    """SQL that is true or false (`EXISTS (…)`), its parameters positional: what a write may be made
    under (`quota_reserve(only_if=…)`)."""

    sql: str
    params: list


def holds(condition: Condition) -> bool:
    """Whether `condition` holds now."""
    with _connection().cursor() as cursor:
        cursor.execute(f"SELECT {condition.sql}", condition.params)
        return bool(cursor.fetchone()[0])


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
