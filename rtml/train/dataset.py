"""Training sets from a point-in-time export, and their time-based split.

The export is a CSV or Parquet file with one row per labelled event: the event
id, its time, its label and one column per feature as of that time (the feature
store computes them point-in-time correct, so no row sees its own future). Every
other column (the entity, anything named in ``KEY_COLUMNS``) is left out of the
features; feature columns keep the file's order, which becomes the model's input
order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

ID_COLUMNS = ("event_id", "id")
TS_COLUMNS = ("event_ts", "ts")
LABEL_COLUMNS = ("label",)
# Columns that identify or describe a row and are never features.
KEY_COLUMNS = frozenset({"event_id", "id", "event_ts", "ts", "label", "entity", "event_type", "type", "label_ts"})


class DatasetError(ValueError):
    """The export cannot make a training set; the message names the column or the reason."""


@dataclass(frozen=True, slots=True)
class Dataset:
    """Rows sorted by event time: ``x`` is float64 ``[n, len(features)]`` with NaN for missing values."""

    ids: np.ndarray
    ts: np.ndarray
    y: np.ndarray
    x: np.ndarray
    features: tuple[str, ...]

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def rows(self, index: np.ndarray | slice) -> Dataset:
        return Dataset(self.ids[index], self.ts[index], self.y[index], self.x[index], self.features)

    @property
    def positives(self) -> int:
        return int(self.y.sum())


def read_table(path: Path) -> pa.Table:
    suffix = path.suffix.lower()
    if not path.exists():
        raise DatasetError(f"{path}: no such file")
    if suffix in (".parquet", ".pq"):
        return pq.read_table(path)
    if suffix in (".csv", ".gz"):
        return pacsv.read_csv(path)
    raise DatasetError(f"{path}: expected a .csv or .parquet export, got {suffix or 'no suffix'}")


def _pick(columns: Sequence[str], candidates: Sequence[str], what: str) -> str:
    for name in candidates:
        if name in columns:
            return name
    raise DatasetError(f"the export has no {what} column (looked for {', '.join(candidates)}; has {list(columns)})")


def _ts_ms(column: pa.ChunkedArray) -> np.ndarray:
    if pa.types.is_timestamp(column.type):
        return np.asarray(pc.cast(pc.cast(column, pa.timestamp("ms", tz="UTC")), pa.int64()), dtype=np.int64)
    if pa.types.is_integer(column.type) or pa.types.is_floating(column.type):
        return np.asarray(column, dtype=np.int64)
    raise DatasetError(f"the event time column must be epoch milliseconds or a timestamp, got {column.type}")


def from_table(
    table: pa.Table, *, since_ms: int | None = None, until_ms: int | None = None, features: Sequence[str] = ()
) -> Dataset:
    """The labelled rows with ``since_ms <= ts < until_ms``, sorted by time (ties by id).

    ``features`` picks and orders feature columns; empty means every non-key column.
    """
    names = table.column_names
    id_col = _pick(names, ID_COLUMNS, "event id")
    ts_col = _pick(names, TS_COLUMNS, "event time")
    label_col = _pick(names, LABEL_COLUMNS, "label")
    wanted = list(features) or [n for n in names if n not in KEY_COLUMNS]
    missing = [n for n in wanted if n not in names]
    if missing:
        raise DatasetError(f"feature columns not in the export: {missing}")
    if not wanted:
        raise DatasetError("the export has no feature columns")
    ts = _ts_ms(table.column(ts_col))
    labels = table.column(label_col)
    if not (pa.types.is_integer(labels.type) or pa.types.is_floating(labels.type) or pa.types.is_boolean(labels.type)):
        raise DatasetError(f"the label column must hold numbers, got {labels.type}")
    y = np.asarray(pc.cast(labels, pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)
    columns = []
    for name in wanted:
        column = table.column(name)
        if pa.types.is_boolean(column.type) or pa.types.is_integer(column.type) or pa.types.is_floating(column.type):
            columns.append(np.asarray(pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64))
        elif pa.types.is_null(column.type):
            columns.append(np.full(len(table), np.nan))
        else:
            raise DatasetError(f"feature column {name!r} is {column.type}; features must be numbers or booleans")
    x = np.column_stack(columns) if columns else np.empty((len(table), 0))
    keep = ~np.isnan(y)
    if since_ms is not None:
        keep &= ts >= since_ms
    if until_ms is not None:
        keep &= ts < until_ms
    bad = set(np.unique(y[keep])) - {0.0, 1.0}
    if bad:
        raise DatasetError(f"labels must be 0 or 1, found {sorted(bad)[:5]}")
    ids = np.asarray(table.column(id_col).cast(pa.string()).to_numpy(zero_copy_only=False), dtype=object)
    index = np.flatnonzero(keep)
    order = index[np.lexsort((ids[index], ts[index]))]
    x[~np.isfinite(x)] = np.nan
    return Dataset(ids[order], ts[order], y[order].astype(np.int64), x[order], tuple(wanted))


@dataclass(frozen=True, slots=True)
class Source:
    """One export file; with ``view`` its feature columns are that feature view's, named ``<view>.<column>``.

    >>> Source.parse("card_velocity=out/velocity.parquet")
    Source(path=PosixPath('out/velocity.parquet'), view='card_velocity')
    >>> Source.parse("training.csv").view is None
    True
    """

    path: Path
    view: str | None = None

    @classmethod
    def parse(cls, text: str) -> Source:
        view, sep, path = text.partition("=")
        if sep and view and "/" not in view:
            return cls(Path(path), view)
        return cls(Path(text))


def read_sources(sources: Sequence[Source]) -> pa.Table:
    """The exports side by side: feature columns of each, joined on the event id (rows in all of them)."""
    if not sources:
        raise DatasetError("no export given")
    joined: pa.Table | None = None
    id_col = ""
    for source in sources:
        table = read_table(source.path)
        if source.view:
            table = table.rename_columns(
                [name if name in KEY_COLUMNS else f"{source.view}.{name}" for name in table.column_names]
            )
        if joined is None:
            joined, id_col = table, _pick(table.column_names, ID_COLUMNS, "event id")
            continue
        other_id = _pick(table.column_names, ID_COLUMNS, "event id")
        extra = [n for n in table.column_names if n not in KEY_COLUMNS]
        clash = sorted(set(extra) & set(joined.column_names))
        if clash:
            raise DatasetError(f"{source.path}: columns {clash} are in an earlier export too; name its view")
        right = table.select([other_id, *extra]).rename_columns([id_col, *extra])
        joined = joined.join(right, keys=id_col, join_type="inner").select([*joined.column_names, *extra])
    assert joined is not None
    return joined


def load_export(
    path: Path | Sequence[Source],
    *,
    since_ms: int | None = None,
    until_ms: int | None = None,
    features: Sequence[str] = (),
) -> Dataset:
    table = read_table(path) if isinstance(path, Path) else read_sources(path)
    return from_table(table, since_ms=since_ms, until_ms=until_ms, features=features)


def time_split(data: Dataset, *, holdout_fraction: float) -> tuple[Dataset, Dataset]:
    """Split at a time cut: every training row is strictly earlier than every holdout row.

    The cut is the event time at the ``1 - holdout_fraction`` position; rows sharing
    that time all go to the holdout, so no timestamp is on both sides.

    >>> d = Dataset(np.array(list("abcde")), np.array([1, 2, 2, 3, 4]), np.zeros(5, int), np.zeros((5, 1)), ("f",))
    >>> train, holdout = time_split(d, holdout_fraction=0.7)
    >>> train.ts.tolist(), holdout.ts.tolist()
    ([1], [2, 2, 3, 4])
    """
    if not 0.0 < holdout_fraction < 1.0:
        raise DatasetError(f"holdout fraction must be within (0, 1), got {holdout_fraction}")
    n = len(data)
    if n < 2:
        raise DatasetError(f"need at least 2 rows to split, have {n}")
    position = min(n - 1, max(1, round(n * (1.0 - holdout_fraction))))
    cut = data.ts[position]
    first = int(np.searchsorted(data.ts, cut, side="left"))
    if first == 0:
        raise DatasetError("every row has the same event time; a time-based holdout is impossible")
    return data.rows(slice(0, first)), data.rows(slice(first, n))
