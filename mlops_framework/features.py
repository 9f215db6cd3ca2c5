"""The feature contract: learned at training, saved with the model, enforced at scoring.

A :class:`FeatureContract` records which raw columns a model reads, how categorical columns were
encoded (their vocabulary, in a fixed order) and what the target classes are. Training encodes with
:meth:`FeatureContract.encode_frame`, scoring with :meth:`FeatureContract.encode_batch`; both run the
same Arrow code, so a row encodes to the same feature vector whichever way it arrives.

``inplace_predict`` on a numpy matrix checks neither feature names nor order: this contract is the
only thing that keeps the columns the model was trained on lined up with the ones it scores.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Iterable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from mlops_framework.errors import MlopsError

_TO_FLOAT32 = pc.CastOptions(pa.float32(), allow_float_truncate=True)

ENCODINGS = ("onehot", "native")
TASKS = ("binary", "multiclass", "regression")
# Columns a scored table has beside its inputs: never features of a model trained on that table.
OUTPUT_COLUMNS = ("PREDICTED_SCORE", "PREDICTED_RESPONSE", "MODEL_NAME", "MODEL_VERSION", "RUN_ID", "SCORED_AT")
MAX_CLASSES = 20  # a numeric target with more distinct whole values than this is a regression target
ROWS_PER_CLASS = 10  # nor is one with fewer rows than this per distinct whole value (17 incomes in 17 rows)
MIN_CLASS_ROWS = 3  # a class's rows reach training through the stratified train/validation/holdout split
_ID_MIN_ROWS = 10  # fewer rows: no column is called id-like for being unique per row
# A row index written with the data, in any order: R's rownames ("" read as column0, Rdatasets' "rownames"),
# pandas' to_csv index ("" again; "Unnamed: 0" once pandas read it back, "index" after reset_index).
_ROW_INDEX = re.compile(r"column0+|Unnamed: 0|rownames|index")
UNSEEN_POLICIES = ("ignore", "error")
_DELIMITERS = (";", "\t", "|", ",")
_MODEL_NAME_MARKS = str.maketrans({"[": "(", "]": ")", "<": "lt"})  # marks XGBoost refuses in feature names
_MISSING = -1  # code of a null categorical value
_UNSEEN = -2  # code of a value not in the vocabulary


def to_frame(data: pa.Table | pa.RecordBatch) -> pd.DataFrame:
    """Arrow data as the features read it: a pandas frame whose DECIMAL columns are numbers (see
    :func:`numbers_from_decimals`), and whose boolean columns with nulls (R's ``TRUE/FALSE/NA``) are pandas'
    nullable ``boolean``, not Python objects (read as text: a feature inferred categorical, then scored
    against a VARCHAR signature)."""
    data = numbers_from_decimals(data)
    frame = data.to_pandas()
    for name, column in zip(data.schema.names, data.columns):
        if pa.types.is_boolean(column.type) and column.null_count:
            frame[name] = column.to_pandas(types_mapper={pa.bool_(): pd.BooleanDtype()}.get)
    return frame


def numbers_from_decimals(data):
    """Arrow ``data`` (a table, batch or array) with its DECIMAL columns as numbers, as Snowpark's
    ``to_pandas`` gives NUMBER columns: int64 when the scale is 0 and every value fits, else float64.
    Parquet unloaded from Snowflake holds every NUMBER column as a DECIMAL."""
    if isinstance(data, (pa.Array, pa.ChunkedArray)):
        return _decimal_as_number(data)
    if not any(pa.types.is_decimal(field.type) for field in data.schema):
        return data
    return type(data).from_arrays([_decimal_as_number(column) for column in data.columns], names=data.schema.names)


def _decimal_as_number(array):
    if not pa.types.is_decimal(array.type):
        return array
    if array.type.scale == 0:
        try:
            return pc.cast(array, pa.int64())
        except pa.ArrowInvalid:  # beyond int64
            pass
    return pc.cast(array, pa.float64())


def written_by_scoring(column: str) -> bool:
    """Whether ``column`` is one that scoring writes beside its inputs, for some task (``OUTPUT_COLUMNS``
    and the multiclass ``PROBA_<class>``), in any case."""
    name = column.upper()
    return name in OUTPUT_COLUMNS or name.startswith("PROBA_")


@dataclass
class FeatureContract:
    """Which columns a model reads and how they become features.

    - ``numeric``: columns used as float32 (null -> NaN, which XGBoost treats as missing).
    - ``categorical``: column -> vocabulary learned at training (sorted, nulls excluded).
    - ``target`` / ``classes``: the target column and its classes (original label values, sorted;
      empty for regression). The model is trained on each label's index in ``classes``; for ``binary``,
      ``classes[1]`` is the positive class, the one whose probability the model scores (sorted last,
      unless ``fit`` was given another).
    - ``encoding``: ``"onehot"`` (one float32 0/1 column per vocabulary value) or ``"native"``
      (pandas category dtype with the fixed vocabulary, for XGBoost ``enable_categorical``).
    - ``unseen``: a categorical value not in the vocabulary is scored as missing (``"ignore"``:
      all-zero dummies / NaN) or stops scoring (``"error"``). A null is missing, never unseen.
    - ``task``: ``binary``, ``multiclass`` or ``regression`` (a contract saved without it is binary).
    """

    numeric: list[str]
    categorical: dict[str, list]
    target: str
    classes: list
    encoding: str = "onehot"
    unseen: str = "ignore"
    task: str = "binary"

    def __post_init__(self) -> None:
        self._value_sets: dict = {}  # (column, Arrow type) -> vocabulary as an Arrow array of that type
        if self.encoding not in ENCODINGS:
            raise MlopsError(f"unknown feature encoding {self.encoding!r}: use one of {', '.join(ENCODINGS)}")
        if self.unseen not in UNSEEN_POLICIES:
            raise MlopsError(
                f"unknown unseen-category policy {self.unseen!r}: use one of {', '.join(UNSEEN_POLICIES)}"
            )
        if self.task not in TASKS:
            raise MlopsError(f"unknown task {self.task!r}: use one of {', '.join(TASKS)}")

    # ------------------------------------------------------------------ learning
    @classmethod
    def fit(
        cls,
        frame: pd.DataFrame,
        *,
        numeric: Iterable[str],
        categorical: Iterable[str],
        target: str,
        encoding: str = "onehot",
        unseen: str = "ignore",
        task: str = "binary",
        positive_class=None,
    ) -> "FeatureContract":
        """Learn the contract from a training frame; every problem is one clear MlopsError.
        ``task="auto"`` infers it from the target (:func:`infer_task`); ``multiclass`` with two classes
        is ``binary``. ``positive_class``: for a binary target, the class that comes second (its probability
        is scored); None: the second in sorted order."""
        if not isinstance(frame, pd.DataFrame):
            raise MlopsError(f"the training data must be a pandas DataFrame, got {type(frame).__name__}")
        numeric, categorical = list(numeric), list(categorical)
        _check_names(numeric, categorical, target)
        probe = cls(numeric, {c: [] for c in categorical}, target, [], encoding, unseen)
        probe.check_columns(list(frame.columns), need_target=True)

        if task == "auto":
            task = infer_task(frame[target], target)
        if task == "multiclass" and frame[target].nunique() == 2:  # two classes make a binary model, whatever was asked
            task = "binary"
        classes = _learn_classes(frame[target], target, task, positive_class)
        for col in numeric:
            series = frame[col]
            if not (pd.api.types.is_numeric_dtype(series.dtype) or pd.api.types.is_bool_dtype(series.dtype)):
                raise MlopsError(
                    f"numeric feature column {col!r} has dtype {series.dtype}, not a number: "
                    f"list it under categorical features or fix its type"
                )
            if series.isna().all():
                raise MlopsError(f"numeric feature column {col!r} has no values (every row is missing)")
        vocabulary = {col: _learn_vocabulary(frame[col], col) for col in categorical}
        contract = cls(numeric, vocabulary, target, classes, encoding, unseen, task)
        names = contract.feature_names
        if len(set(names)) != len(names):
            dupes = sorted({n for n in names if names.count(n) > 1})
            raise MlopsError(f"feature names collide: {', '.join(dupes[:10])}; rename the columns")
        return contract

    # ------------------------------------------------------------------ shape
    @property
    def feature_names(self) -> list[str]:
        """The model's input columns, in order, as XGBoost takes them: ``[``, ``]`` and ``<`` (a value such as
        ``<0.006``, a column such as ``dose[mg]``) read ``(``, ``)`` and ``lt``."""
        if self.encoding == "native":
            names = [*self.numeric, *self.categorical]
        else:
            names = [*self.numeric, *(f"{col}_{value}" for col, vocab in self.categorical.items() for value in vocab)]
        return [name.translate(_MODEL_NAME_MARKS) for name in names]

    @property
    def input_columns(self) -> list[str]:
        """The raw columns needed to score."""
        return [*self.numeric, *self.categorical]

    def check_columns(self, columns: Iterable[str], *, need_target: bool = False) -> None:
        """Raise one MlopsError listing every required column missing from ``columns``."""
        columns = list(columns)
        present = set(columns)
        needed = self.input_columns + ([self.target] if need_target else [])
        missing = [c for c in needed if c not in present]
        if not missing:
            return
        message = f"the input is missing {len(missing)} required column(s): {', '.join(missing)}."
        by_lower = {str(c).lower(): c for c in columns}
        recased = [f"{by_lower[m.lower()]!r} for {m!r}" for m in missing if m.lower() in by_lower]
        if recased:
            message += f" Column names are case-sensitive; found {', '.join(recased)}."
        hint = _delimiter_hint(columns, needed)
        if hint:
            message += " " + hint
        else:
            shown = ", ".join(map(str, columns[:20])) + (f", ... ({len(columns)} in all)" if len(columns) > 20 else "")
            message += f" Found: {shown or 'no columns'}."
        raise MlopsError(message)

    # ------------------------------------------------------------------ encoding
    def encode_frame(self, frame: pd.DataFrame):
        """Encode a pandas frame for training or evaluation.

        onehot: float32 DataFrame with columns == feature_names (dummies are 0.0/1.0 floats, never
        bool); native: numeric float32 columns and categorical columns as pd.Categorical with the
        learned vocabulary. The frame's index is kept.
        """
        self.check_columns(list(frame.columns))
        try:
            table = pa.Table.from_pandas(frame[self.input_columns], preserve_index=False)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
            raise MlopsError(f"cannot read the feature columns: {exc}") from exc
        encoded = self.encode_batch(table)
        if self.encoding == "native":
            encoded.index = frame.index
            return encoded
        return pd.DataFrame(encoded, columns=self.feature_names, index=frame.index, copy=False)

    def encode_target(self, series) -> np.ndarray:
        """Target values -> int32 class indices in ``classes`` (float64 values for regression)."""
        if isinstance(series, (pa.Array, pa.ChunkedArray)):
            series = numbers_from_decimals(series).to_pandas()
        series = pd.Series(series)
        if self.task == "regression":
            values = pd.to_numeric(series, errors="coerce")
            if values.isna().any():
                raise MlopsError(f"target column {self.target!r} has {int(values.isna().sum())} missing or non-numeric value(s)")
            return values.to_numpy(dtype=np.float64)
        codes = series.map({value: i for i, value in enumerate(self.classes)})
        bad = codes.isna()
        if bad.any():
            values = pd.unique(series[bad])[:10]
            raise MlopsError(
                f"target column {self.target!r} has {int(bad.sum())} value(s) outside the classes "
                f"{self.classes!r}: {', '.join(map(repr, values))}"
            )
        return codes.to_numpy(dtype=np.int32)

    def encode_batch(self, batch: pa.RecordBatch | pa.Table, *, out: np.ndarray | None = None,
                     unseen_counts: dict | None = None):
        """Encode Arrow data for scoring.

        onehot: C-contiguous float32 matrix (rows x len(feature_names)) built straight from Arrow;
        native: DataFrame like :meth:`encode_frame`. Extra columns are ignored, order is irrelevant.

        ``out`` (onehot only): a C-contiguous float32 buffer of at least ``rows`` rows and
        ``len(feature_names)`` columns to encode into; the result is then its first ``rows`` rows.
        A streaming scorer reuses a few such buffers: a fresh matrix per batch costs a page fault
        per 4 KiB, more than the encoding itself.

        ``unseen_counts``: a dict to which the number of unseen categorical values met in this batch
        is added, per column (columns with none are left out).
        """
        names = batch.schema.names
        self.check_columns(names)
        n = batch.num_rows
        codes = {col: self._codes(batch.column(col), col) for col in self.categorical}
        self._raise_unseen(batch, codes)
        if unseen_counts is not None:
            for col, col_codes in codes.items():
                count = int(np.count_nonzero(col_codes == _UNSEEN))
                if count:
                    unseen_counts[col] = unseen_counts.get(col, 0) + count
        if self.encoding == "native":
            data = {col: self._numeric(batch.column(col), col) for col in self.numeric}
            for col, vocab in self.categorical.items():
                col_codes = codes[col]
                data[col] = pd.Categorical.from_codes(np.where(col_codes < 0, -1, col_codes), categories=vocab)
            frame = pd.DataFrame(data, index=pd.RangeIndex(n), columns=self.input_columns)
            frame.columns = self.feature_names
            return frame

        width = len(self.numeric) + sum(len(v) for v in self.categorical.values())
        offset = len(self.numeric)
        if out is None:
            matrix = np.zeros((n, width), dtype=np.float32)
        else:
            if (out.dtype != np.float32 or out.ndim != 2 or out.shape[1] != width or out.shape[0] < n
                    or not out.flags.c_contiguous or not out.flags.writeable):
                raise MlopsError(
                    f"encode_batch(out=...) needs a writable C-contiguous float32 buffer of at least "
                    f"({n}, {width}), got {out.dtype} {out.shape}"
                )
            matrix = out[:n]
            matrix.fill(0.0)  # one contiguous pass: cheaper than zeroing only the dummy columns
        for j, col in enumerate(self.numeric):
            matrix[:, j] = self._numeric(batch.column(col), col)
        flat = matrix.reshape(-1)
        for col, vocab in self.categorical.items():
            col_codes = codes[col]
            rows = np.flatnonzero(col_codes >= 0)
            flat[rows * width + (offset + col_codes[rows])] = 1.0
            offset += len(vocab)
        return matrix

    # ------------------------------------------------------------------ persistence
    def to_dict(self) -> dict:
        """JSON-safe description (vocabulary values are str, int, float or bool)."""
        return {
            "numeric": list(self.numeric),
            "categorical": {col: list(vocab) for col, vocab in self.categorical.items()},
            "target": self.target,
            "classes": list(self.classes),
            "encoding": self.encoding,
            "unseen": self.unseen,
            "task": self.task,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "FeatureContract":
        if not isinstance(d, dict):
            raise MlopsError(f"a feature contract must be a mapping, got {type(d).__name__}")
        missing = [k for k in ("numeric", "categorical", "target", "classes") if k not in d]
        if missing:
            raise MlopsError(f"the saved feature contract lacks {', '.join(missing)}: was it written by this framework?")
        unknown = sorted(set(d) - {"numeric", "categorical", "target", "classes", "encoding", "unseen", "task"})
        if unknown:
            raise MlopsError(f"the saved feature contract has unknown keys: {', '.join(unknown)}")
        task = d.get("task", "binary")
        expected = {"binary": "two classes", "multiclass": "at least two classes", "regression": "no classes"}
        n = len(d["classes"]) if isinstance(d["classes"], list) else -1
        fits = {"binary": n == 2, "multiclass": n >= 2, "regression": n == 0}.get(task, False)
        if not isinstance(d["categorical"], dict) or not fits:
            raise MlopsError(
                f"the saved feature contract is malformed (categorical must be a mapping; a {task} contract "
                f"has {expected.get(task, 'a known task')})"
            )
        return cls(
            numeric=list(d["numeric"]),
            categorical={str(col): list(vocab) for col, vocab in d["categorical"].items()},
            target=d["target"],
            classes=list(d["classes"]),
            encoding=d.get("encoding", "onehot"),
            unseen=d.get("unseen", "ignore"),
            task=task,
        )

    # ------------------------------------------------------------------ internals
    def _numeric(self, column, col: str) -> np.ndarray:
        """As float32, the type XGBoost computes in: integers beyond 2**24 round to the nearest float32
        (as numpy rounds them when training), where Arrow's default cast refuses them."""
        try:
            return pc.cast(column, options=_TO_FLOAT32).to_numpy(zero_copy_only=False)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise MlopsError(f"numeric feature column {col!r} (type {column.type}) cannot be read as numbers: {exc}") from exc

    def _value_set(self, col: str, arrow_type: pa.DataType) -> pa.Array:
        key = (col, arrow_type)
        cached = self._value_sets.get(key)
        if cached is None:
            vocab = pa.array(self.categorical[col])
            if vocab.type != arrow_type:
                try:
                    vocab = vocab.cast(arrow_type)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                    raise MlopsError(
                        f"categorical column {col!r} has type {arrow_type}, but the model learned "
                        f"values of type {pa.array(self.categorical[col]).type}"
                    ) from exc
            cached = self._value_sets[key] = vocab
        return cached

    def _codes(self, column, col: str) -> np.ndarray:
        """Vocabulary position of every row: >= 0 known, -1 null, -2 unseen."""
        chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
        parts = [self._chunk_codes(chunk, col) for chunk in chunks]
        if not parts:
            return np.empty(0, dtype=np.int32)
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def _chunk_codes(self, array: pa.Array, col: str) -> np.ndarray:
        if pa.types.is_dictionary(array.type):
            # Look up the (small) dictionary once, then gather by index.
            lookup = self._chunk_codes(array.dictionary, col)
            indices = array.indices
            codes = lookup[indices.fill_null(0).to_numpy(zero_copy_only=False)] if len(lookup) else np.full(
                len(array), _MISSING, dtype=np.int32
            )
            if indices.null_count:
                codes[~np.asarray(indices.is_valid())] = _MISSING
            return codes
        if pa.types.is_null(array.type):
            return np.full(len(array), _MISSING, dtype=np.int32)
        value_set = self._value_set(col, array.type)
        found = pc.index_in(array, value_set=value_set)
        codes = found.fill_null(_UNSEEN).to_numpy(zero_copy_only=False).astype(np.int32, copy=False)
        if array.null_count:
            if not codes.flags.writeable:
                codes = codes.copy()
            codes[~np.asarray(array.is_valid())] = _MISSING
        return codes

    def _raise_unseen(self, batch, codes: dict[str, np.ndarray]) -> None:
        if self.unseen != "error":
            return
        problems = []
        for col, col_codes in codes.items():
            mask = col_codes == _UNSEEN
            if mask.any():
                column = batch.column(col)
                values = pc.unique(pc.filter(column, pa.array(mask))).to_pylist()
                shown = ", ".join(repr(v) for v in sorted(values, key=str)[:10])
                more = f" and {len(values) - 10} more" if len(values) > 10 else ""
                problems.append(f"{col!r}: {shown}{more}")
        if problems:
            raise MlopsError(
                "categorical values not seen in training (unseen='error'; use unseen='ignore' to score "
                "them as missing): " + "; ".join(problems)
            )


# ---------------------------------------------------------------------- inference
def infer_task(series: pd.Series, target: str, rows: int | None = None) -> str:
    """The task a target column calls for: two values -> ``binary``; strings, bools, categories, or at
    most :data:`MAX_CLASSES` whole numbers with :data:`ROWS_PER_CLASS` rows or more per value ->
    ``multiclass``; other numbers -> ``regression``. ``rows``: how many rows hold a target, when
    ``series`` holds only its distinct values (default: the non-null values of ``series``)."""
    values = series.dropna()
    distinct = values.nunique()
    if distinct < 2:
        shown = repr(_natives(values.iloc[:1])[0]) if len(values) else "no values"
        raise MlopsError(f"target column {target!r} has only one value ({shown}): nothing to learn")
    if distinct == 2:
        return "binary"
    kind = _kind(series)
    if kind == "categorical":  # bools have at most two values: binary above
        return "multiclass"
    if kind != "numeric":
        raise MlopsError(f"target column {target!r} has {kind} values: a target must hold numbers, strings or bools")
    whole = bool(np.all(np.mod(values.to_numpy(dtype=float), 1) == 0))
    rows = len(values) if rows is None else rows
    return "multiclass" if whole and distinct <= MAX_CLASSES and distinct * ROWS_PER_CLASS <= rows else "regression"


def rare_classes(target: pd.Series, task: str) -> list:
    """The classes of a classification target with fewer than :data:`MIN_CLASS_ROWS` rows, most frequent
    first: too few to stratify into training, validation and holdout, so not learned (none for regression)."""
    if task == "regression":
        return []
    counts = target.value_counts()
    return counts[counts < MIN_CLASS_ROWS].index.tolist()


@dataclass
class Roles:
    """What each column of a table is for, and why the left-out ones were left out."""

    target: str
    numeric: list
    categorical: list
    id: str | None = None
    time: str | None = None
    skipped: dict | None = None  # column -> reason it is not a feature

    def lines(self) -> list[str]:
        lines = [f"target       {self.target}",
                 f"numeric      {', '.join(self.numeric) or '-'}",
                 f"categorical  {', '.join(self.categorical) or '-'}"]
        if self.id:
            lines.append(f"id           {self.id}")
        if self.time:
            lines.append(f"time         {self.time}")
        for column, reason in (self.skipped or {}).items():
            lines.append(f"not a feature {column}: {reason}")
        return lines


def _kind(series: pd.Series) -> str:
    """numeric | bool | categorical | time | empty | other, from the dtype (object columns by their values)."""
    dtype = series.dtype
    if pd.api.types.is_bool_dtype(dtype):
        return "bool"
    if pd.api.types.is_numeric_dtype(dtype):
        return "numeric"
    if pd.api.types.is_datetime64_any_dtype(dtype) or isinstance(dtype, pd.PeriodDtype):
        return "time"
    if isinstance(dtype, pd.CategoricalDtype):
        return "categorical"
    inferred = pd.api.types.infer_dtype(series, skipna=True)
    if inferred == "empty":
        return "empty"
    if inferred == "boolean":
        return "bool"
    if inferred == "string":  # infer_dtype says "categorical" only of the dtype checked above
        return "categorical"
    if inferred in ("date", "datetime", "datetime64", "time", "period"):
        return "time"
    if inferred in ("integer", "floating", "mixed-integer-float"):
        return "numeric"
    return "other"


def _as_list(value, key: str) -> list | None:
    """A config list (None stays None); a lone string is one column, never its letters."""
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise MlopsError(f"features.{key} must be a list of column names, got {value!r}")
    return list(value)


def _id_like(series: pd.Series, kind: str) -> str | None:
    values = series.dropna()
    n, distinct = len(values), values.nunique()
    if n > 1 and distinct == n and kind in ("numeric", "categorical") and _ROW_INDEX.fullmatch(str(series.name)):
        return "a row index (a different value on every row)"
    if kind == "categorical":
        if n >= _ID_MIN_ROWS and distinct == n:
            return "id-like (a different string on every row)"
        if distinct > max(50, n // 2):
            return f"id-like ({distinct:,} distinct strings in {n:,} rows)"
    if kind == "numeric" and n >= _ID_MIN_ROWS and distinct == n and pd.api.types.is_integer_dtype(series.dtype):
        if values.is_monotonic_increasing or str(series.name).lower().endswith("id"):
            return "id-like (a different whole number on every row, in order)"
    return None


def infer_roles(
    frame: pd.DataFrame, *, target: str, id: str | None = None, time: str | None = None,
    exclude=None, numeric=None, categorical=None,
) -> Roles:
    """Feature roles from a table's types: numeric and bool columns are numeric features, strings are
    categorical; id-like columns (unique per row, or high-cardinality strings), date/time columns,
    ``id``, ``time``, ``exclude`` and the target are not features. ``numeric``/``categorical`` given
    (not None) are taken as they are; the other is inferred from the columns left."""
    columns = [str(c) for c in frame.columns]
    exclude = _as_list(exclude, "exclude") or []
    numeric, categorical = _as_list(numeric, "numeric"), _as_list(categorical, "categorical")
    if not isinstance(target, str) or not target:
        raise MlopsError(f"features.target must name the target column, got {target!r}")
    explicit = numeric is not None and categorical is not None  # the id and time columns are then optional
    id, time = (None if explicit and c not in columns else c for c in (id, time))
    named = {"target": [target], "id": [id] if id else [], "time": [time] if time else [], "exclude": exclude,
             "numeric": numeric or [], "categorical": categorical or []}
    for key, names in named.items():
        unknown = [c for c in names if c not in columns]
        if unknown:
            near = [c for c in columns if c.lower() == unknown[0].lower()]
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            raise MlopsError(f"features.{key} names {', '.join(map(repr, unknown))}{hint}, not a column of the data; "
                             f"columns: {', '.join(columns[:30])}")
    taken = {target, id, time, *exclude, *(numeric or []), *(categorical or [])}  # None: a role not given
    skipped = {c: "excluded" for c in exclude}
    if id:
        skipped[id] = "the row id (features.id)"
    if time:
        skipped[time] = "the time column (features.time)"
    inferred_numeric, inferred_categorical = [], []
    for column in columns:
        if column in taken:
            continue
        if written_by_scoring(column):
            skipped[column] = "a column scoring writes"
            continue
        series = frame[column]
        kind = _kind(series)
        reason = {"time": "a date/time column (name it in features.numeric to use it)",
                  "empty": "every value is missing", "other": f"values of type {series.dtype} are not features"}.get(kind)
        reason = reason or _id_like(series, kind)
        if reason:
            skipped[column] = reason
        elif kind == "numeric" or pd.api.types.is_bool_dtype(series.dtype):
            inferred_numeric.append(column)
        else:
            inferred_categorical.append(column)
    roles = Roles(target=target, numeric=numeric if numeric is not None else inferred_numeric,
                  categorical=categorical if categorical is not None else inferred_categorical,
                  id=id, time=time, skipped=skipped)
    if not roles.numeric and not roles.categorical:
        inferred_out = [c for c in set(skipped) - {*exclude, id, time}
                        if "features.numeric" not in skipped[c] and not skipped[c].startswith("a row index")]
        raise MlopsError(f"no feature columns in the data besides the target {target!r}: "
                         f"{'; '.join(f'{c}: {r}' for c, r in skipped.items()) or 'no other columns'}"
                         f"{'. To use one, name it: features.numeric=[COLUMN] or features.categorical=[COLUMN]' if inferred_out else ''}")
    return roles


def schema_lines(frame: pd.DataFrame, roles: Roles) -> list[str]:
    """One line per column: its type, nulls, distinct values and role (or why it is not a feature)."""
    role = {roles.target: "target", **{c: "numeric" for c in roles.numeric},
            **{c: "categorical" for c in roles.categorical}}
    for column, reason in (roles.skipped or {}).items():
        role[column] = f"not a feature: {reason}"
    width = max(len(str(c)) for c in frame.columns)
    lines = [f"{'column':<{width}}  {'type':<14} {'nulls':>7} {'distinct':>9}  role"]
    for column in frame.columns:
        series = frame[column]
        lines.append(f"{str(column):<{width}}  {str(series.dtype):<14} {int(series.isna().sum()):>7,} "
                     f"{int(series.nunique()):>9,}  {role.get(column, 'not read')}")
    return lines


# ---------------------------------------------------------------------- helpers
def _check_names(numeric: list[str], categorical: list[str], target: str) -> None:
    if not numeric and not categorical:
        raise MlopsError("no feature columns: list at least one numeric or categorical column")
    both = sorted(set(numeric) & set(categorical))
    if both:
        raise MlopsError(f"columns listed as both numeric and categorical: {', '.join(both)}")
    for kind, cols in (("numeric", numeric), ("categorical", categorical)):
        dupes = sorted({c for c in cols if cols.count(c) > 1})
        if dupes:
            raise MlopsError(f"{kind} feature columns listed twice: {', '.join(dupes)}")
    if target in numeric or target in categorical:
        raise MlopsError(f"the target column {target!r} is also listed as a feature")


def _learn_classes(series: pd.Series, target: str, task: str, positive_class=None) -> list:
    if positive_class is not None and task != "binary":
        raise MlopsError(f"features.positive_class is for a binary target; {target!r} is a {task} target")
    if series.isna().any():
        raise MlopsError(f"target column {target!r} has {int(series.isna().sum())} missing value(s); drop or fill them")
    if task == "regression":
        if not (pd.api.types.is_numeric_dtype(series.dtype) and not pd.api.types.is_bool_dtype(series.dtype)):
            raise MlopsError(f"target column {target!r} has dtype {series.dtype}: regression needs numbers")
        return []
    values = _natives(pd.unique(series))
    try:
        values = sorted(values)
    except TypeError as exc:
        raise MlopsError(f"target column {target!r} mixes value types: {values[:5]!r}") from exc
    if len(values) < 2:
        need = "a binary classifier needs exactly two classes" if task == "binary" else "classification needs two or more"
        raise MlopsError(
            f"target column {target!r} has only one class ({values[0]!r}): {need}"
            if values
            else f"target column {target!r} has no rows"
        )
    if task == "binary" and len(values) > 2:
        shown = ", ".join(map(repr, values[:10])) + (", ..." if len(values) > 10 else "")
        raise MlopsError(
            f"target column {target!r} has {len(values)} classes ({shown}): binary classification needs exactly "
            f"two classes (features.task=multiclass, or features.task=auto)"
        )
    if positive_class is not None:
        chosen = [v for v in values if v == positive_class or str(v) == str(positive_class)]
        if not chosen:
            raise MlopsError(f"features.positive_class {positive_class!r} is not a class of target column "
                             f"{target!r}: {', '.join(map(repr, values))}")
        values = [v for v in values if v != chosen[0]] + chosen
    return values


def _learn_vocabulary(series: pd.Series, col: str) -> list:
    values = _natives(pd.unique(series.dropna()))
    if not values:
        raise MlopsError(f"categorical feature column {col!r} has no values (every row is missing)")
    kinds = {type(v) for v in values}
    if not kinds <= {str} and not kinds <= {int, bool} and not kinds <= {int, float}:
        names = ", ".join(sorted(k.__name__ for k in kinds))
        raise MlopsError(
            f"categorical feature column {col!r} has values of type {names}: "
            f"use one type of strings or integers"
        )
    return sorted(values)


def _natives(values) -> list:
    """numpy scalars -> Python values (JSON-safe), NaN-free."""
    out = []
    for v in (values.tolist() if hasattr(values, "tolist") else list(values)):
        if isinstance(v, np.generic):
            v = v.item()
        if isinstance(v, float) and math.isnan(v):
            continue
        out.append(v)
    return out


def _delimiter_hint(columns: list, needed: list[str]) -> str:
    """'A;B;C' as the only column name means the file was read with the wrong delimiter."""
    for name in columns:
        if not isinstance(name, str):
            continue
        for delim in _DELIMITERS:
            parts = [p.strip().strip('"') for p in name.split(delim)]
            if len(parts) > 1 and set(parts) & set(needed):
                shown = name if len(name) <= 80 else name[:77] + "..."
                label = "a tab" if delim == "\t" else repr(delim)
                return (
                    f"The input has one column named {shown!r}: the file looks delimited by {label}, "
                    f"not the delimiter it was read with; set the delimiter to {label}."
                )
    return ""
