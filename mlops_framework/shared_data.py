"""The data a sweep's trials share in one process: read, encoded and split once, not once per trial.

A sweep's trials usually differ in model parameters only, so each worker process (and the sweep's own
process when it runs the trials one after the other) keeps what its last trial's ``load``, ``features`` and
``split`` stages produced, and the next trial's stages reuse it when nothing they depend on changed:

- ``load``: the source's class and settings (its attributes; one holding an object without a value-based
  ``repr`` makes every trial read its own data), its fingerprint (``Source.fingerprint``: a trial whose
  rows changed reads them again) and the columns read;
- ``features``: the data ``load`` left (the very frame kept here), the ``features`` settings and the model
  (it decides the task of ``features.task=auto``);
- ``split``: the matrix ``features`` left (the very one kept here) and the ``split`` settings.

One entry per stage: a changed key replaces the entry and drops the later stages' entries, so at most
one trial's data is held. The results are the same objects for every trial that reuses them: stages treat
what earlier stages left as read-only (the built-in ones do). A trial's summary says what it reused
(``reused``). Only trials get a ``SharedData`` (``mlops_framework.cli``); a plain run reads its data itself.
"""

from __future__ import annotations

from typing import Any, Callable

STAGES = ("load", "features", "split")


class SharedData:
    """What the last trial's ``load``/``features``/``split`` produced in this process, by what it depended on."""

    def __init__(self) -> None:
        self._entries: dict[str, tuple[Any, dict]] = {}

    def results(self, run, stage: str, key: Any, compute: Callable[[], dict]) -> dict:
        """The results ``stage`` produced for ``key`` (reused, noted in the run's summary), else ``compute()``'s,
        kept for the next trial."""
        entry = self._entries.get(stage)
        if entry is not None and entry[0] == key:
            reused = run.results.get("summary", {}).get("reused")
            run.summarize("reused", f"{reused}, {stage}" if reused else
                          f"data of an earlier trial in this process (same data and settings): {stage}")
            return entry[1]
        for later in STAGES[STAGES.index(stage):]:  # freed before the new data is made
            self._entries.pop(later, None)
        value = compute()
        self._entries[stage] = (key, value)
        return value

    def key_holding(self, stage: str, name: str, value: Any) -> Any:
        """The key of ``stage``'s entry when its result ``name`` is ``value`` itself, else None (``value`` was
        not produced or reused here: what depends on it cannot be shared)."""
        entry = self._entries.get(stage)
        if entry is None or entry[1].get(name) is not value:
            return None
        return entry[0]


_THIS_PROCESS = SharedData()


def in_this_process() -> SharedData:
    """This process's ``SharedData`` (a forked worker starts with an empty one)."""
    return _THIS_PROCESS
