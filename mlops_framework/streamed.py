"""Training from batches: the raw table is never in memory.

When a run trains an XGBoost model on a source of at least ``split.stream_from_rows`` rows (and its
pipeline holds only the stages below), the features, split, train and evaluate stages read the source's
Arrow batches instead of a pandas frame:

- ``features`` makes one pass: roles inferred from the first ``SAMPLE_ROWS`` rows (when the config leaves
  them open), the vocabularies, classes, null counts and rows from every row;
- ``split`` assigns each row to train, validation or holdout from its class and its rank within the class
  (:class:`RowSplit`), or from its time (:class:`TimeSplit`, after one pass reading the time column), the
  same on every pass, batch by batch;
- ``train`` feeds the training rows, encoded batch by batch, to an iterator-built ``xgboost.QuantileDMatrix``:
  memory grows with the quantized matrix, not the raw table. XGBoost 3.2 keeps per row and feature one byte
  for its column copy and, for its row index, one byte when no value is missing and four when any is;
- ``evaluate`` scores the validation and holdout rows batch by batch, keeping only their labels and scores.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mlops_framework.errors import MlopsError

STREAMED_STAGES = ("load", "validate", "features", "split", "train", "evaluate", "register", "score")
BATCH_ROWS = 262_144
SAMPLE_ROWS = 100_000  # rows the roles are inferred from
REGISTERED_SAMPLE_ROWS = 10  # of them, the rows kept for registration (its sample input; dtypes of all of them)
BLOCK = 1_000  # a class's rows are split in blocks of this many, each with the configured fractions
TRAIN, VALIDATION, HOLDOUT = 0, 1, 2
PARTS = {"train": TRAIN, "validation": VALIDATION, "holdout": HOLDOUT}
_TRACKED_TARGET_VALUES = 10_000  # more distinct numbers than this: a regression target, no need to keep them


def streams(run):
    """Whether ``run`` trains from batches: an XGBoost model, a random split, a source that counts its rows
    cheaply with at least ``split.stream_from_rows`` of them, and only stages of ``STREAMED_STAGES``
    (a later stage such as monitor or explain reads the whole training frame)."""
    from mlops_framework.contracts import PartitionedSource

    threshold = run.split.stream_from_rows
    if threshold is None or not run.model._target_.startswith("xgboost."):
        return False
    if any(stage.name not in STREAMED_STAGES for stage in run.stages):
        return False
    if not (isinstance(run.source, PartitionedSource) and run.source.counts_cheaply):
        return False
    if run.split.order == "time" and not _orders_as_numbers(run.source, run.features.time):
        return False
    rows = run.source.count_rows()
    return rows is not None and rows >= threshold


_ORDERED_TYPES = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "UTINYINT", "USMALLINT",
                  "UINTEGER", "FLOAT", "DOUBLE")


def _orders_as_numbers(source, time):
    """Whether ``source``'s column ``time`` is a date, a timestamp or a number (what :class:`TimeSplit`
    orders batch by batch); another type, or a source that does not describe its columns, is split in memory."""
    from mlops_framework.contracts import SchemaSource

    if not time or not isinstance(source, SchemaSource):
        return False
    kind = dict(source.schema()).get(time, "")
    return kind.startswith(("TIMESTAMP", "DATE")) or kind in _ORDERED_TYPES


@dataclass
class Table:
    """The source's rows to train on, read as Arrow batches of ``columns`` (None: all)."""

    source: object
    columns: list | None
    target: str

    def batches(self, columns=None):
        """Every batch of ``columns`` (None: the table's), the rows without a target value dropped."""
        for batch in self.source.batches(columns=columns or self.columns, batch_size=BATCH_ROWS):
            batch = with_target(batch, self.target)
            if batch.num_rows:
                yield batch


def with_target(batch, target):
    """``batch`` without its rows that have no ``target`` value (null, NaN or infinite)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    values = batch.column(target)
    if pa.types.is_floating(values.type):
        return batch.filter(pc.and_(pc.is_valid(values), pc.is_finite(values)))
    return batch.filter(pc.is_valid(values)) if values.null_count else batch


# ---------------------------------------------------------------------------------- features
def learn(run, table, resolve_task):
    """One pass over ``table``: the roles, task and feature contract, the data report, a sample frame and
    the row count, as the in-memory features stage learns them from the whole frame. ``resolve_task(spec,
    model_target, target_values)`` is the features stage's rule for the task."""
    import pyarrow as pa

    from mlops_framework.features import FeatureContract

    spec = run.features
    rows_read, missing_target, infinite_target = 0, 0, 0
    sample_batches, sample_rows = [], 0
    seen = {}  # column -> list of Arrow arrays: distinct values (categorical, target) or first non-null (numeric)
    nulls = {}
    roles = None
    target_capped = False

    def absorb(batch):
        nonlocal target_capped
        for column in roles.categorical:
            seen.setdefault(column, []).append(_distinct(batch.column(column)))
        for column in roles.numeric:
            values = batch.column(column)
            if column not in seen or seen[column][0].null_count:
                valid = values.drop_null()
                seen[column] = [valid.slice(0, 1) if len(valid) else values.slice(0, 1)]
        for column in [*roles.numeric, *roles.categorical]:
            nulls[column] = nulls.get(column, 0) + _missing(batch.column(column))
        if not target_capped:
            seen.setdefault(spec.target, []).append(_distinct(batch.column(spec.target)))
            target_type = batch.schema.field(spec.target).type
            if pa.types.is_floating(target_type) or pa.types.is_integer(target_type) or pa.types.is_decimal(target_type):
                merged = _distinct(pa.concat_arrays(seen[spec.target]))
                seen[spec.target] = [merged]
                target_capped = len(merged) > _TRACKED_TARGET_VALUES

    for batch in table.source.batches(columns=table.columns, batch_size=BATCH_ROWS):
        rows_read += batch.num_rows
        kept = with_target(batch, spec.target)
        missing_target += batch.num_rows - kept.num_rows
        infinite_target += _infinite(batch.column(spec.target))
        if roles is not None:
            absorb(kept)
            continue
        sample_batches.append(kept)
        sample_rows += kept.num_rows
        if sample_rows >= SAMPLE_ROWS:
            roles = spec.roles(_sample_frame(sample_batches))
            for held in sample_batches:
                absorb(held)
    if rows_read == 0:
        raise MlopsError("the data has no rows")
    if sample_rows == 0:
        raise MlopsError(f"target {spec.target} has no values (every row is missing)")
    if roles is None:  # fewer rows than the sample
        roles = spec.roles(_sample_frame(sample_batches))
        for held in sample_batches:
            absorb(held)
    summary = _summary_frame({column: pa.concat_arrays(arrays) for column, arrays in seen.items()})
    task = resolve_task(spec, run.model._target_, summary[spec.target], rows_read - missing_target)
    contract = FeatureContract.fit(summary, numeric=roles.numeric, categorical=roles.categorical, target=spec.target,
                                   encoding=spec.encoding, unseen=spec.unseen, task=task,
                                   positive_class=spec.positive_class)
    sample = _sample_frame(sample_batches).head(REGISTERED_SAMPLE_ROWS).copy()
    report = {"rows_read": rows_read,
              "rows_dropped": {"missing target": missing_target - infinite_target, "infinite target": infinite_target},
              "nulls": {column: count for column, count in nulls.items() if count},
              "nulls_handling": "numeric: missing (NaN) for the model; categorical: no category"}
    return {"contract": contract, "roles": roles, "data_report": report, "sample": sample,
            "rows": rows_read - missing_target}


def _infinite(array):
    """Infinite values in a float column (none in others)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    return pc.sum(pc.is_inf(array)).as_py() or 0 if pa.types.is_floating(array.type) else 0


def _missing(array):
    """Nulls, and NaN in a float column (pandas counts both as missing)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    nan = pc.sum(pc.is_nan(array)).as_py() or 0 if pa.types.is_floating(array.type) else 0
    return array.null_count + nan


def _distinct(array):
    import pyarrow as pa
    import pyarrow.compute as pc

    values = pc.unique(array)
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if pa.types.is_dictionary(values.type):
        values = pc.unique(values.dictionary_decode())
    return values


def _sample_frame(batches):
    import pyarrow as pa

    from mlops_framework.features import to_frame

    return to_frame(pa.Table.from_batches(batches))


def _summary_frame(columns):
    """A frame holding, per column, its distinct values (repeated to a common length): what
    ``FeatureContract.fit`` learns vocabularies, classes and types from, as it would from every row."""
    import pandas as pd
    import pyarrow as pa

    from mlops_framework.features import to_frame

    series = {column: to_frame(pa.table({column: array}))[column] for column, array in columns.items()}
    length = max(len(values) for values in series.values())
    return pd.DataFrame({column: values.iloc[np.arange(length) % len(values)].reset_index(drop=True)
                         for column, values in series.items()})


# ---------------------------------------------------------------------------------- split
class RowSplit:
    """Train / validation / holdout assignment computed batch by batch, reproducible from the seed.

    The rows of each stratum (a class for a stratified classification split; all rows otherwise) are
    numbered in the order the source yields them and taken in blocks of ``BLOCK``; each block holds the
    configured fractions exactly (``round(BLOCK * holdout)`` holdout rows, then ``validation`` of the rest),
    in an order drawn from ``(seed, stratum, block)`` that spreads each part evenly (every part's rows at
    jittered regular intervals), so that a class of a few rows is split in its fractions too. Every pass
    over the same rows assigns them the same way.
    """

    def __init__(self, holdout, validation, seed, stratified):
        n_holdout = round(BLOCK * holdout)
        n_validation = round((BLOCK - n_holdout) * validation)
        if BLOCK - n_holdout - n_validation < 1:
            raise MlopsError(f"split.holdout={holdout} and split.validation={validation} leave no training rows")
        self.counts = {HOLDOUT: n_holdout, VALIDATION: n_validation, TRAIN: BLOCK - n_holdout - n_validation}
        self.seed = int(seed) % (1 << 32)
        self.stratified = stratified

    def pattern(self, stratum, block):
        """The parts of the ``BLOCK`` rows of ``block`` of ``stratum``, in order."""
        rng = np.random.default_rng([self.seed, stratum, block])
        parts = np.concatenate([np.full(n, part, dtype=np.int8) for part, n in self.counts.items()])
        places = np.concatenate([(np.arange(n) + rng.random(n)) / n for n in self.counts.values()])
        return parts[np.argsort(places, kind="stable")]

    columns = ()  # the columns it reads beside the labels

    def new_pass(self):
        """A fresh assignment over the rows from the first: ``parts(labels)`` per batch, in order."""
        return _Pass(self)


class _Pass:
    def __init__(self, split):
        self.split = split
        self.counts = {}

    def parts(self, labels, batch=None):
        """The part (TRAIN, VALIDATION or HOLDOUT) of each row of the next batch, given its labels."""
        labels = np.asarray(labels)
        strata = labels.astype(np.int64, copy=False) if self.split.stratified else np.zeros(len(labels), np.int64)
        out = np.empty(len(labels), dtype=np.int8)
        for stratum in np.unique(strata):
            rows = np.flatnonzero(strata == stratum)
            start = self.counts.get(int(stratum), 0)
            rank = start + np.arange(len(rows))
            self.counts[int(stratum)] = start + len(rows)
            blocks = rank // BLOCK
            for block in range(int(blocks[0]), int(blocks[-1]) + 1):
                chosen = blocks == block
                out[rows[chosen]] = self.split.pattern(int(stratum), block)[rank[chosen] % BLOCK]
        return out


class TimeSplit:
    """Train / validation / holdout by time, batch by batch: the rows sorted by ``column`` (stably, missing
    times last), the first ``n - ceil(n * holdout) - ceil((n - ceil(n * holdout)) * validation)`` train, the
    next validation, the latest holdout, as the in-memory split orders them.

    ``keys`` (the column's :func:`order_keys` for every row, in the order the source yields them) is read
    once, to find the key at which validation and holdout start and how many rows come before it; then a
    pass needs only each batch's own keys, counting the rows that tie with a boundary as they come.
    """

    def __init__(self, keys, holdout, validation, column):
        import math

        n = len(keys)
        n_holdout = math.ceil(n * holdout)
        n_validation = math.ceil((n - n_holdout) * validation)
        n_train = n - n_holdout - n_validation
        if n_train < 1:
            raise MlopsError(f"cannot split {n} rows by time into train/validation/holdout")
        self.columns = (column,)
        self.boundaries = []  # (rank where the part starts, the part, the key at that rank, rows with smaller keys)
        for start, part in ((n_train, VALIDATION), (n_train + n_validation, HOLDOUT)):
            if start < n:
                key = np.partition(keys, start)[start]
                self.boundaries.append((start, part, key, int(np.count_nonzero(keys < key))))

    def new_pass(self):
        """A fresh assignment over the rows from the first: ``parts(labels, batch)`` per batch, in order."""
        return _TimePass(self)


class _TimePass:
    def __init__(self, split):
        self.split = split
        self.tied = [0] * len(split.boundaries)  # rows met so far with each boundary's key

    def parts(self, labels, batch):
        keys = order_keys(batch.column(self.split.columns[0]))
        out = np.full(len(keys), TRAIN, dtype=np.int8)
        for i, (start, part, key, smaller) in enumerate(self.split.boundaries):
            later = keys > key
            tied = np.flatnonzero(keys == key)
            later[tied[smaller + self.tied[i] + np.arange(len(tied)) >= start]] = True
            self.tied[i] += len(tied)
            out[later] = part
        return out


def order_keys(values):
    """int64 keys that sort as numpy sorts ``values`` (an Arrow date, timestamp or number column) once pandas
    has read them: NaN (and null) after every number, -0.0 equal to 0.0; null dates, timestamps and integers
    last."""
    import pyarrow as pa
    import pyarrow.compute as pc

    values = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    kind = values.type
    last = np.iinfo(np.int64).max
    if pa.types.is_floating(kind):
        numbers = values.cast(pa.float64()).to_numpy(zero_copy_only=False) + 0.0  # nulls become NaN; -0.0 -> 0.0
        bits = numbers.view(np.int64)
        keys = np.where(bits < 0, bits ^ np.int64(last), bits)  # IEEE order; NaN above +inf
        keys[np.isnan(numbers)] = np.int64(0x7FF8000000000000)  # NaN and null alike, as pandas reads them
        return keys
    if pa.types.is_timestamp(kind) or pa.types.is_date64(kind):
        values = values.cast(pa.int64())
    elif pa.types.is_date32(kind):
        values = values.cast(pa.int32())
    return pc.fill_null(values.cast(pa.int64()), last).to_numpy(zero_copy_only=False)


def row_split(run, contract, table):
    """The run's split of the rows of ``table``: :class:`TimeSplit` for ``split.order=time`` (one pass reading
    the time column), else :class:`RowSplit`."""
    spec = run.split
    if spec.order == "time":
        keys = [order_keys(batch.column(run.features.time))
                for batch in table.batches([run.features.time, contract.target])]
        return TimeSplit(np.concatenate(keys), spec.holdout, spec.validation, run.features.time)
    return RowSplit(spec.holdout, spec.validation, spec.seed, spec.stratify and contract.task != "regression")


def encoded_parts(table, contract, split, wanted):
    """``(X, y)`` of the rows of the parts in ``wanted`` (a part name -> code mapping), batch by batch, with
    the part of each row: ``(X, y, parts)``."""
    codes = np.array(sorted(PARTS[name] for name in wanted), dtype=np.int8)
    assignment = split.new_pass()
    columns = [*contract.input_columns, contract.target]
    for batch in table.batches([*columns, *(c for c in split.columns if c not in columns)]):
        y = contract.encode_target(batch.column(contract.target))
        parts = assignment.parts(y, batch)
        chosen = np.isin(parts, codes)
        if not chosen.any():
            continue
        if not chosen.all():
            import pyarrow as pa

            batch, y, parts = batch.filter(pa.array(chosen)), y[chosen], parts[chosen]
        yield contract.encode_batch(batch), y, parts


# ---------------------------------------------------------------------------------- train
GIB = 1 << 30


def quantized_matrix_bytes(contract, training_rows, nulls):
    """What XGBoost 3.2's quantized matrix of ``training_rows`` rows takes (``max_bin`` up to 256, the
    default): per row and feature one byte for its column copy and, for its row index, one byte when no input
    value is missing and four when any is (``nulls``: the data report's columns with missing values), and a
    row pointer of 8 bytes per row."""
    missing_as_missing = contract.numeric if contract.encoding == "onehot" else contract.input_columns
    index_bytes = 4 if set(nulls) & set(missing_as_missing) else 1
    return training_rows * (len(contract.feature_names) * (1 + index_bytes) + 8)


def pages_to_disk(spec, contract, rows, nulls):
    """``(paged, estimated bytes)``: whether training pages the quantized matrix of the training rows among
    ``rows`` to disk, because it would reach ``spec.external_memory_from_gib`` (``SplitSpec``; null: never)."""
    estimate = quantized_matrix_bytes(contract, round(rows * (1 - spec.holdout) * (1 - spec.validation)), nulls)
    limit = spec.external_memory_from_gib
    return limit is not None and estimate >= limit * GIB, estimate


def fit(run, estimator, contract, table, split, paged):
    """Train ``estimator``'s booster on the training rows of ``table`` through an iterator-built
    ``QuantileDMatrix``, with the parameters ``estimator.fit`` would use; returns the ``xgboost.Booster``.
    ``paged``: the quantized matrix is paged to a cache on disk beside the run's outputs
    (``ExtMemQuantileDMatrix``, removed after training), so memory no longer grows with the rows; the model
    is the same."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="xgboost-cache-", dir=run.output_dir) as cache:
        return _fit(estimator, contract, table, split, cache if paged else None)


def _fit(estimator, contract, table, split, cache):
    import os

    import xgboost

    class TrainingRows(xgboost.DataIter):
        def __init__(self):
            super().__init__(cache_prefix=os.path.join(cache, "train") if cache else None, release_data=True)
            self.classes_seen = set()
            self._batches = None

        def next(self, input_data):
            if self._batches is None:
                _return_freed_heap()
                self._batches = encoded_parts(table, contract, split, ["train"])
            try:
                X, y, _ = next(self._batches)
            except StopIteration:
                return False
            numeric = X[:, :len(contract.numeric)].T if contract.encoding == "onehot" else \
                [X[column].to_numpy() for column in contract.numeric]
            _refuse_infinite(dict(zip(contract.numeric, numeric)))
            self.classes_seen.update(np.unique(y).tolist() if contract.task == "multiclass" else ())
            input_data(data=X, label=y, feature_names=contract.feature_names)
            return True

        def reset(self):
            self._batches = None

    params = estimator.get_xgb_params()
    if contract.task == "multiclass":
        params["objective"] = "multi:softprob"
        params["num_class"] = len(contract.classes)
    rows = TrainingRows()
    quantized = xgboost.ExtMemQuantileDMatrix if cache else xgboost.QuantileDMatrix
    matrix = quantized(rows, max_bin=estimator.max_bin, nthread=estimator.n_jobs,
                       enable_categorical=contract.encoding == "native")
    _return_freed_heap()  # boosting's own buffers come on top of what the passes left
    if contract.task == "multiclass" and len(rows.classes_seen) < len(contract.classes):
        missing = [contract.classes[i] for i in range(len(contract.classes)) if i not in rows.classes_seen]
        raise MlopsError(f"the training split has no rows of class(es) {missing!r}: too few rows of them to learn")
    booster = xgboost.train(params, matrix, estimator.get_num_boosting_rounds(), callbacks=estimator.callbacks)
    del matrix  # its pages close before the cache directory goes
    return booster


def _return_freed_heap():
    """Give the memory freed by the last pass over the rows (XGBoost's sketch, the batches) back to the
    system: Arrow's pool releases its unused pages, glibc's heap its free ones (``malloc_trim``). Otherwise
    it stays in the process under the quantized matrix and boosting's buffers."""
    import ctypes
    import sys

    import pyarrow as pa

    pa.default_memory_pool().release_unused()
    if not sys.platform.startswith("linux"):
        return
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except AttributeError:  # musl
        return
    trim(0)


def _refuse_infinite(columns):
    infinite = [column for column, values in columns.items() if np.isinf(values).any()]
    if infinite:
        raise MlopsError(f"training features hold infinite values (inf) in {', '.join(infinite)}; "
                         f"replace or drop them in the data")


# ---------------------------------------------------------------------------------- evaluate
def holdout_scores(model, table, split):
    """``{part: (y, scores)}`` for validation and holdout, scored batch by batch."""
    found = {name: ([], []) for name in ("validation", "holdout")}
    for X, y, parts in encoded_parts(table, model.contract, split, list(found)):
        scores = model.predict_scores(X)
        for name in found:
            chosen = parts == PARTS[name]
            found[name][0].append(y[chosen])
            found[name][1].append(scores[chosen])
    result = {}
    for name, (labels, scores) in found.items():
        if not labels or not sum(len(part) for part in labels):
            raise MlopsError(f"the {name} split has no rows: too few rows to split")
        result[name] = (np.concatenate(labels), np.concatenate(scores))
    return result
