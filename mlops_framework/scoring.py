"""Streaming batch scoring: Arrow batches in, input rows plus predictions out, into a sink.

Three threads overlap the work: a reader pulls the next batch from the source and encodes it, the
calling thread scores it (one ``predict_scores`` call per batch; XGBoost and Arrow release the GIL),
a writer hands the previous batch to the sink. Queues hold at most two batches each, so memory stays
bounded whatever the input size. The first error in any thread stops all three and aborts the sink,
which leaves the previous data as it was.
"""

from __future__ import annotations

import queue
import sys
import threading
import time
from dataclasses import dataclass
from typing import Iterable

import numpy as np
import pyarrow as pa

from mlops_framework.errors import MlopsError

_QUEUE_SIZE = 2
_POLL_S = 0.05
_DONE = object()


@dataclass
class ScoreResult:
    rows: int
    seconds: float
    destination: str


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
) -> ScoreResult:
    """Score every row of ``batches`` with ``model`` and write it, with its predictions, to ``sink``.

    ``model`` has ``contract`` (a FeatureContract) and ``predict_scores(X)``, the probability of
    ``contract.classes[1]`` for X as returned by ``contract.encode_batch``. Each output batch is
    the input batch unchanged plus ``score_column`` (float64) and ``class_column`` (``classes[1]`` if
    the score is >= ``threshold``, else ``classes[0]``; same type as the classes). The input
    columns are checked on the first batch, before the sink is opened. With no batch at all the
    sink is never opened and 0 rows are reported. ``progress=None`` shows a bar if stderr is a TTY.
    """
    if not 0.0 <= float(threshold) <= 1.0:
        raise MlopsError(f"threshold must be between 0 and 1, got {threshold}")
    if score_column == class_column:
        raise MlopsError(f"score and class columns must differ, both are {score_column!r}")
    contract = model.contract
    classes = pa.array(contract.classes)
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

    def read() -> None:
        try:
            first = True
            for batch in batches:
                if first:
                    contract.check_columns(batch.schema.names)
                    clash = [c for c in (score_column, class_column) if c in batch.schema.names]
                    if clash:
                        raise MlopsError(
                            f"the input already has column(s) {', '.join(clash)}: "
                            f"name the prediction columns differently"
                        )
                    first = False
                features = contract.encode_batch(batch) if batch.num_rows else None
                put(encoded_q, (batch, features))
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
        except _Stopped:
            pass
        except BaseException as exc:  # noqa: BLE001
            fail(exc)

    reader = threading.Thread(target=read, name="mlops-score-reader", daemon=True)
    writer = threading.Thread(target=write, name="mlops-score-writer", daemon=True)
    bar = _Progress(total_rows) if progress else None
    rows = 0
    try:
        reader.start()
        writer.start()
        while True:
            item = get(encoded_q)
            if item is _DONE:
                break
            batch, features = item
            n = batch.num_rows
            scores = _scores(model, features, n)
            labels = classes.take(pa.array((scores >= threshold).view(np.int8)))
            put(output_q, _with_columns(batch, [score_column, class_column], [pa.array(scores), labels]))
            rows += n
            if bar:
                bar.advance(n)
        put(output_q, _DONE)
        writer.join()
    except _Stopped:
        pass
    except BaseException as exc:  # noqa: BLE001 - includes KeyboardInterrupt: abort the sink
        fail(exc)
    finally:
        if errors:
            stop.set()
        writer.join()
        if bar:
            bar.close()
    if errors:
        reader.join(timeout=1.0)  # a source blocked in I/O cannot be interrupted; it is a daemon
        raise errors[0]
    reader.join()
    return ScoreResult(rows=rows, seconds=time.perf_counter() - start, destination=sink.describe())


def _scores(model, features, n: int) -> np.ndarray:
    if n == 0:
        return np.empty(0, dtype=np.float64)
    scores = np.asarray(model.predict_scores(features))
    if scores.ndim == 2 and scores.shape[1] == 2:
        scores = scores[:, 1]
    if scores.shape != (n,):
        raise MlopsError(f"the model returned scores of shape {scores.shape} for {n} rows; expected ({n},)")
    return scores.astype(np.float64, copy=False)


def _with_columns(batch, names: list[str], arrays: list[pa.Array]):
    if isinstance(batch, pa.Table):
        for name, array in zip(names, arrays):
            batch = batch.append_column(name, array)
        return batch
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
