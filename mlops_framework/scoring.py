"""Streaming batch scoring: Arrow batches in, input rows plus predictions out, into a sink.

The work overlaps in threads: a reader pulls the next batch from the source and encodes it (into one
of a few recycled buffers), predictor threads score it, the calling thread collects the scores and
adds the prediction columns, a writer hands finished batches to the sink. Queues are short, so memory
stays bounded whatever the input size. The first error in any thread stops them all and aborts the
sink, which leaves the previous data as it was.

Why predictor threads rather than one ``predict`` call using every core: XGBoost splits a call's rows
evenly between its OpenMP threads and waits for the slowest, so while the reader and the writer take
turns on a core, every call runs at the speed of the thread that lost the turns; reading, encoding
and writing then cost as much time as if nothing overlapped. Instead each predictor thread scores
small slices of the batch with one OpenMP thread (a per-thread limit, through threadpoolctl), and takes
the next slice as soon as it is done: the cores stay busy with whatever work there is.
"""

from __future__ import annotations

import collections
import os
import queue
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Iterable

import numpy as np
import pyarrow as pa

from mlops_framework.errors import MlopsError

_QUEUE_SIZE = 1  # encoded batches waiting to be scored (and scored batches waiting to be written)
_IN_FLIGHT = 2  # batches being scored at once: the next one keeps the predictors busy at a batch's end
_SLICE_ROWS = 32_768  # rows per predict call in a predictor thread (~50 ms of a 200-tree model)
_POLL_S = 0.05
_DONE = object()


@dataclass
class ScoreResult:
    rows: int
    seconds: float
    destination: str
    replaced: str | None = None  # what a partitioned sink replaced, e.g. "WEEK 20-25: 1,000 rows -> 1,300"
    unseen: dict = field(default_factory=dict)  # categorical column -> values met that training never saw


def prediction_columns(contract, *, score_column: str = "PREDICTED_SCORE",
                       class_column: str = "PREDICTED_RESPONSE") -> list[tuple[str, str]]:
    """The (name, type) of every column scoring adds, per ``contract.task``: binary, the positive class's
    probability and the predicted label; multiclass, the predicted label, its probability and one
    ``PROBA_<label>`` per class; regression, the predicted value only."""
    task = contract.task
    if task == "regression":
        return [(class_column, "float")]
    columns = [(score_column, "float"), (class_column, "class")]
    if task == "multiclass":
        columns += [(f"PROBA_{label}", "float") for label in contract.classes]
    return columns


def _prediction_arrays(task, scores: np.ndarray, classes: pa.Array, threshold: float) -> list[pa.Array]:
    """The arrays of :func:`prediction_columns`, in its order, for one batch's model output."""
    if task == "regression":
        return [pa.array(scores)]
    if task == "multiclass":
        best = scores.argmax(axis=1)
        return [pa.array(scores[np.arange(len(best)), best]), classes.take(pa.array(best)),
                *(pa.array(np.ascontiguousarray(scores[:, i])) for i in range(scores.shape[1]))]
    return [pa.array(scores), classes.take(pa.array((scores >= threshold).view(np.int8)))]


class _Stopped(Exception):
    """Another thread failed: this one leaves quietly."""


def score_to_sink(
    model,
    batches: Iterable[pa.RecordBatch],
    sink,
    *,
    threshold: float = 0.5,
    total_rows: int | None = None,
    progress: bool | None = None,
    score_column: str = "PREDICTED_SCORE",
    class_column: str = "PREDICTED_RESPONSE",
    stamp: dict | None = None,
) -> ScoreResult:
    """Score every row of ``batches`` with ``model`` and write it, with its predictions, to ``sink``.

    ``model`` has ``contract`` (a FeatureContract) and ``predict_scores(X)`` for X as returned by
    ``contract.encode_batch`` (or a slice of its rows; it is called from several threads at once, as
    XGBoost's ``inplace_predict`` allows): per ``contract.task``, the probability of ``classes[1]``
    (binary), an (n, classes) probability matrix (multiclass) or the predicted values (regression).
    Each output batch is the input batch unchanged plus the columns of :func:`prediction_columns`
    (binary: ``score_column`` float64 and ``class_column``, ``classes[1]`` if the score is >=
    ``threshold`` else ``classes[0]``, same type as the classes). ``ScoreResult.unseen`` counts the
    categorical values met that training never saw, per column.
    The input columns are checked on the first batch, before the sink is opened. With no batch at
    all the sink is never opened and 0 rows are reported. ``progress=None`` shows a bar if stderr is
    a TTY. Predictor threads: as many as OpenMP would use in the calling thread (all cores unless
    ``OMP_NUM_THREADS`` or a threadpoolctl limit says fewer), each with one OpenMP thread.

    Traceability: ``stamp`` (column -> one value, e.g. ``MODEL_NAME``, ``MODEL_VERSION``, ``RUN_ID``,
    ``SCORED_AT``; see :func:`trace_columns`) is added to every row. A batch without the target column
    gets it as nulls (of the classes' type), so predictions scored before their labels land go into
    the same table as those scored with them, and a monitor joins the labels later.
    """
    if not 0.0 <= float(threshold) <= 1.0:
        raise MlopsError(f"threshold must be between 0 and 1, got {threshold}")
    if score_column == class_column:
        raise MlopsError(f"score and class columns must differ, both are {score_column!r}")
    contract = model.contract
    task = contract.task
    classes = pa.array(contract.classes)
    stamp = dict(stamp or {})
    target = contract.target
    target_type = classes.type if len(classes) else pa.float64()
    added = [name for name, _ in prediction_columns(contract, score_column=score_column, class_column=class_column)]
    unseen: dict = {}
    threshold = float(threshold)
    if progress is None:
        progress = sys.stderr.isatty()

    start = time.perf_counter()
    stop = threading.Event()
    errors: list[BaseException] = []
    lock = threading.Lock()
    encoded_q: queue.Queue = queue.Queue(maxsize=_QUEUE_SIZE)
    output_q: queue.Queue = queue.Queue(maxsize=_QUEUE_SIZE)

    def fail(exc: BaseException) -> None:
        with lock:
            errors.append(exc)
        stop.set()

    def put(q: queue.Queue, item) -> None:
        while True:
            if stop.is_set():
                raise _Stopped
            try:
                q.put(item, timeout=_POLL_S)
                return
            except queue.Full:
                continue

    def get(q: queue.Queue):
        while True:
            if stop.is_set():
                raise _Stopped
            try:
                return q.get(timeout=_POLL_S)
            except queue.Empty:
                continue

    # One-hot features are encoded into a few recycled buffers (the batch being encoded, those queued,
    # those being scored): a fresh matrix per batch would cost a page fault per 4 KiB.
    reuse = getattr(contract, "encoding", None) == "onehot"
    width = len(contract.feature_names) if reuse else 0
    free_q: queue.Queue = queue.Queue()
    allocated = 0

    def take_buffer(n: int) -> np.ndarray:
        nonlocal allocated
        while True:
            try:
                buffer = free_q.get_nowait()
            except queue.Empty:
                if allocated < _QUEUE_SIZE + _IN_FLIGHT + 1:
                    allocated += 1
                    return np.empty((n, width), dtype=np.float32)
                buffer = get(free_q)
            if buffer.shape[0] >= n:
                return buffer
            allocated -= 1  # too small for this batch: let it go

    def read() -> None:
        try:
            first = True
            for batch in batches:
                if first:
                    contract.check_columns(batch.schema.names)
                    clash = [c for c in (*added, *stamp) if c in batch.schema.names]
                    if clash:
                        raise MlopsError(
                            f"the input already has column(s) {', '.join(clash)}: "
                            f"name the prediction columns differently"
                        )
                    first = False
                buffer = features = None
                if batch.num_rows:
                    if reuse:
                        buffer = take_buffer(batch.num_rows)
                        features = contract.encode_batch(batch, out=buffer, unseen_counts=unseen)
                    else:
                        features = contract.encode_batch(batch, unseen_counts=unseen)
                put(encoded_q, (batch, features, buffer))
            put(encoded_q, _DONE)
        except _Stopped:
            pass
        except BaseException as exc:  # noqa: BLE001 - handed to the calling thread
            fail(exc)

    def write() -> None:
        try:
            item = get(output_q)
            if item is _DONE:
                return
            with sink.open() as out:
                while item is not _DONE:
                    out.write(item)
                    item = get(output_q)  # raises _Stopped inside the with: the sink aborts
            from mlops_framework.contracts import ReportingWriter

            replaced.append(out.describe_replaced() if isinstance(out, ReportingWriter) else None)
        except _Stopped:
            pass
        except BaseException as exc:  # noqa: BLE001
            fail(exc)

    predictor = _Predictor(model, len(contract.classes) if task == "multiclass" else 0)
    reader = threading.Thread(target=read, name="mlops-score-reader", daemon=True)
    writer = threading.Thread(target=write, name="mlops-score-writer", daemon=True)
    bar = _Progress(total_rows) if progress else None
    rows = 0
    replaced: list = []
    constants = _ConstantColumns({**({target: pa.nulls(1, type=target_type)} if target else {}),
                                  **{name: _constant(value) for name, value in stamp.items()}})
    in_flight: collections.deque = collections.deque()

    def finish() -> None:
        nonlocal rows
        batch, buffer, pending = in_flight.popleft()
        scores = pending.result()
        if buffer is not None:
            free_q.put(buffer)
        names, arrays = list(added), _prediction_arrays(task, scores, classes, threshold)
        if target and target not in batch.schema.names:
            names.insert(0, target)
            arrays.insert(0, constants.array(target, batch.num_rows))
        for name in stamp:
            names.append(name)
            arrays.append(constants.array(name, batch.num_rows))
        put(output_q, _with_columns(batch, names, arrays))
        rows += batch.num_rows
        if bar:
            bar.advance(batch.num_rows)

    try:
        reader.start()
        writer.start()
        while True:
            item = get(encoded_q)
            if item is _DONE:
                break
            batch, features, buffer = item
            in_flight.append((batch, buffer, predictor.submit(features, batch.num_rows)))
            del features
            if len(in_flight) >= _IN_FLIGHT:
                finish()
        while in_flight:
            finish()
        put(output_q, _DONE)
        writer.join()
    except _Stopped:
        pass
    except BaseException as exc:  # noqa: BLE001 - includes KeyboardInterrupt: abort the sink
        fail(exc)
    finally:
        predictor.close()
        if errors:
            stop.set()
        writer.join()
        if bar:
            bar.close()
    if errors:
        reader.join(timeout=1.0)  # a source blocked in I/O cannot be interrupted; it is a daemon
        raise errors[0]
    reader.join()
    return ScoreResult(rows=rows, seconds=time.perf_counter() - start, destination=sink.describe(),
                       replaced=replaced[0] if replaced else None, unseen=unseen)


def trace_columns(model_name: str, version: str, run_id: str | None, scored_at=None) -> dict:
    """The traceability columns of every predictions row: model name, resolved version (never an
    alias), run id and scoring time (UTC, no time zone)."""
    import datetime as dt

    scored_at = scored_at or dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    return {"MODEL_NAME": model_name, "MODEL_VERSION": version, "RUN_ID": run_id, "SCORED_AT": scored_at}


def _constant(value) -> pa.Array:
    """``value`` as an Arrow array of one element."""
    import datetime as dt

    kind = pa.timestamp("us") if isinstance(value, dt.datetime) else pa.string() if value is None or isinstance(value, str) else None
    return pa.array([value], type=kind)


class _ConstantColumns:
    """Columns with one value in every row. Each is built once, as long as the longest batch so far, and a
    batch gets a slice of it (building them anew per batch cost about 0.7 CPU s per 10M rows)."""

    def __init__(self, values: dict[str, pa.Array]):
        self._values = values
        self._built: dict[str, pa.Array] = {}

    def array(self, name: str, n: int) -> pa.Array:
        built = self._built.get(name)
        if built is None or len(built) < n:
            built = self._built[name] = self._values[name].take(pa.array(np.zeros(n, dtype=np.int32)))
        return built.slice(0, n)


class _Predictor:
    """Scores batches in slices on a few threads, each limited to one OpenMP thread."""

    def __init__(self, model, width: int = 0):
        self._model = model
        self._width = width  # columns of the model's output: 0 for one score per row
        self._threads = _predictor_threads()
        self._pool: ThreadPoolExecutor | None = None
        if self._threads:
            self._pool = ThreadPoolExecutor(self._threads, thread_name_prefix="mlops-score-predict",
                                            initializer=_one_openmp_thread)

    def submit(self, features, n: int) -> "_Pending":
        """Start scoring ``n`` rows; ``.result()`` gives their float64 scores."""
        if n == 0 or self._pool is None or n <= _SLICE_ROWS // 2:
            done: Future = Future()
            try:
                done.set_result(_scores(self._model, features, n, self._width))
            except BaseException as exc:  # noqa: BLE001 - raised again by result()
                done.set_exception(exc)
            return _Pending(None, [done])
        out = np.empty((n, self._width) if self._width else n, dtype=np.float64)
        step = max(_SLICE_ROWS, -(-n // (64 * self._threads)))  # not too many calls for huge batches
        futures = [self._pool.submit(self._slice, features, out, i, min(i + step, n)) for i in range(0, n, step)]
        return _Pending(out, futures)

    def _slice(self, features, out: np.ndarray, i: int, j: int) -> None:
        part = features.iloc[i:j] if hasattr(features, "iloc") else features[i:j]
        out[i:j] = _scores(self._model, part, j - i, self._width)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)


class _Pending:
    def __init__(self, out: np.ndarray | None, futures: list[Future]):
        self._out, self._futures = out, futures

    def result(self) -> np.ndarray:
        values = [f.result() for f in self._futures]
        return values[0] if self._out is None else self._out


def _predictor_threads() -> int:
    """How many threads OpenMP would use here (0: threadpoolctl is missing, predict in one call)."""
    try:
        from threadpoolctl import threadpool_info

        openmp = [info.get("num_threads") or 1 for info in threadpool_info() if info.get("user_api") == "openmp"]
    except Exception:  # noqa: BLE001 - pragma: no cover - threadpoolctl is a dependency of scikit-learn
        return 0
    if openmp:
        return max(1, min(openmp))
    cores = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else range(os.cpu_count() or 1)
    return max(1, len(cores))


def _one_openmp_thread() -> None:
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1, user_api="openmp")  # this thread only: OpenMP's thread count is per thread
    except Exception:  # noqa: BLE001 - pragma: no cover - slower (threads compete), never wrong
        pass


def _scores(model, features, n: int, width: int = 0) -> np.ndarray:
    expected = (n, width) if width else (n,)
    if n == 0:
        return np.empty(expected, dtype=np.float64)
    scores = np.asarray(model.predict_scores(features))
    if not width and scores.ndim == 2 and scores.shape[1] == 2:
        scores = scores[:, 1]
    if scores.shape != expected:
        raise MlopsError(f"the model returned scores of shape {scores.shape} for {n} rows; expected {expected}")
    return scores.astype(np.float64, copy=False)


def _with_columns(batch, names: list[str], arrays: list[pa.Array]):
    return pa.RecordBatch.from_arrays([*batch.columns, *arrays], names=[*batch.schema.names, *names])


class _Progress:
    def __init__(self, total: int | None):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._progress = Progress(
            TextColumn("scoring"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=Console(stderr=True),
        )
        self._progress.start()
        self._task = self._progress.add_task("scoring", total=total)

    def advance(self, n: int) -> None:
        self._progress.advance(self._task, n)

    def close(self) -> None:
        self._progress.stop()
