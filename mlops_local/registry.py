"""The embedded default model registry: versions, aliases, tags and an audit trail in plain files.

Modelled on Snowflake's Model Registry. A model has versions (immutable once logged), model-level
tags and comment, and aliases (upper-case names such as ``PRODUCTION``) that point at versions.
Every alias move, refused promotion and rollback is appended to an audit history.

Layout under ``root``::

    MODEL/model.json          name, comment, tags, created_on, last_version_number (highest vN ever)
    MODEL/aliases.json        {"PRODUCTION": "v3", ...}
    MODEL/history.jsonl       one line per alias move, refusal or deleted version, append-only
    MODEL/.lock               flock'ed by every writer
    MODEL/.staging/           versions being written; never read
    MODEL/versions/NAME/version.json
    MODEL/versions/NAME/sample_input.parquet   (when a sample input was given)
    MODEL/versions/NAME/artifact/...           whatever ``model.save`` wrote

Guarantees: a version is built in ``.staging`` and published by one ``os.rename`` under the
model's lock, so a crash leaves either no version or a complete one, and concurrent writers
never lose or duplicate a version number. JSON files are replaced atomically; readers take no
lock. Every file of a version is checksummed (sha256) and verified before it is used. Nothing is
ever pickled. POSIX only (``fcntl``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import getpass
import hashlib
import json
import os
import pathlib
import re
import shutil
import socket
import tempfile
import time

from mlops_framework.contracts import NAME_RE, check_name, check_tag, previous_holders  # noqa: F401  (shared with plugins)
from mlops_framework.errors import MlopsError
from mlops_framework.files import fsync_dir as _fsync_dir, write_text_atomic

AUTO_VERSION_RE = re.compile(r"^[vV](\d+)$")
SAMPLE_ROWS = 100
SAMPLE_FILE = "sample_input.parquet"
ARTIFACT_DIR = "artifact"
STALE_OTHER_HOST_S = 24 * 3600


class LocalRegistry:
    """A model registry in a local (or locally mounted) directory. See the module docstring."""

    def __init__(self, root: str | os.PathLike):
        self.root = root

    def describe(self) -> str:
        """One line naming this registry, for plans and run summaries."""
        return f"local registry at {self.root}"

    # ---- writing versions -------------------------------------------------------------------

    def log_model(self, model, *, model_name: str, version_name: str | None = None,
                  comment: str | None = None, metrics: dict | None = None,
                  metadata: dict | None = None, tags: dict[str, str] | None = None,
                  sample_input=None, signature: dict | None = None,
                  lineage: dict | None = None) -> dict:
        """Save ``model`` as a new version of ``model_name`` and return its version record.

        ``model`` is any object with ``save(directory: pathlib.Path) -> None`` writing its files
        into ``directory``. ``version_name`` defaults to the next ``vN``. ``tags`` are merged
        into the model-level tags. ``sample_input`` (a DataFrame) keeps its first 100 rows.
        ``metrics``, ``metadata``, ``signature`` and ``lineage`` must be JSON-serialisable.
        """
        check_name(model_name, "model name")
        if version_name is not None:
            check_name(version_name, "version name")
        tags = dict(tags or {})
        for tag, value in tags.items():
            check_tag(tag, value)
        record = {
            "model_name": model_name, "version_name": None, "created_on": None,
            "comment": comment, "metrics": metrics or {}, "metadata": metadata or {},
            "signature": signature, "lineage": lineage or {}, "files": {}, "sample_input": None,
        }
        _dumps(record)
        if sample_input is not None and not hasattr(sample_input, "to_parquet"):
            raise MlopsError(f"sample_input must be a pandas DataFrame, got {type(sample_input).__name__}")
        model_dir = self._model_path(model_name)
        if version_name is not None and (model_dir / "versions" / version_name).exists():
            raise MlopsError(f"model {model_name!r} already has a version {version_name!r}")

        staging_root = model_dir / ".staging"
        staging_root.mkdir(parents=True, exist_ok=True)
        (model_dir / "versions").mkdir(exist_ok=True)
        staging = pathlib.Path(tempfile.mkdtemp(dir=staging_root, prefix=_staging_prefix()))
        try:
            staging.chmod(0o755)
            (staging / ARTIFACT_DIR).mkdir()
            try:
                model.save(staging / ARTIFACT_DIR)
                if sample_input is not None:
                    sample_input.head(SAMPLE_ROWS).to_parquet(staging / SAMPLE_FILE)
            except MlopsError:
                raise
            except Exception as error:  # disk full, quota: XGBoost raises its own error with a native stack
                first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
                raise MlopsError(f"could not save version of model {model_name!r} under {self.root}: "
                                 f"{first}; nothing was registered") from None
            if sample_input is not None:
                record["sample_input"] = SAMPLE_FILE
            record["files"] = _checksums(staging)
            _fsync_tree(staging)
            with _locked(model_dir):
                name = version_name or _next_version(model_dir)
                if (model_dir / "versions" / name).exists():
                    raise MlopsError(f"model {model_name!r} already has a version {name!r}")
                if name.upper() in _current_aliases(model_dir):
                    raise MlopsError(f"{name!r} is already an alias of model {model_name!r}")
                record["version_name"] = name
                record["created_on"] = _now()
                text = _dumps(record)
                _write_new(staging / "version.json", text)
                _fsync_dir(staging)
                self._update_model_record(model_dir, model_name, tags=tags)
                os.rename(staging, model_dir / "versions" / name)
                _fsync_dir(model_dir / "versions")
                _remember_version_number(model_dir, name)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
        _clean_staging(staging_root)
        return json.loads(text)

    def delete_version(self, model_name: str, version_name: str, *, actor: str | None = None,
                       reason: str | None = None) -> dict:
        """Delete a version; return the history entry (``event``: ``deleted``, ``old_version``: the version).
        Refused while an alias points at it."""
        model_dir = self._existing_model(model_name)
        with _locked(model_dir):
            self._version_dir(model_dir, version_name)
            pointing = sorted(a for a, v in _current_aliases(model_dir).items()
                              if v == version_name)
            if pointing:
                raise MlopsError(f"version {version_name!r} of model {model_name!r} is still the "
                                 f"target of alias {', '.join(pointing)}; move or unset it first")
            (model_dir / ".staging").mkdir(exist_ok=True)
            trash = pathlib.Path(tempfile.mkdtemp(dir=model_dir / ".staging", prefix=_staging_prefix()))
            os.rename(model_dir / "versions" / version_name, trash / version_name)
            _fsync_dir(model_dir / "versions")
            entry = self._append_history(model_dir, {
                "when": _now(), "actor": actor or _user(), "alias": None, "old_version": version_name,
                "new_version": None, "reason": reason, "metrics": {}, "event": "deleted", "config_hash": None})
        shutil.rmtree(trash, ignore_errors=True)
        return entry

    # ---- reading versions -------------------------------------------------------------------

    def models(self) -> list[dict]:
        """Every model: name, comment, tags, versions (count), aliases, created_on; sorted by name."""
        root = pathlib.Path(self.root)
        if not root.is_dir():
            return []
        out = []
        for model_dir in sorted(root.iterdir()):
            record = _read_json(model_dir / "model.json", None)
            if record is None:
                continue
            out.append({
                "name": record["name"], "comment": record.get("comment"), "tags": record.get("tags", {}),
                "versions": len(_version_names(model_dir)),
                "aliases": _current_aliases(model_dir),
                "created_on": record.get("created_on"),
            })
        return out

    def versions(self, model_name: str) -> list[dict]:
        """The version records of a model, oldest first."""
        model_dir = self._existing_model(model_name)
        records = [_read_json(model_dir / "versions" / n / "version.json", None)
                   for n in _version_names(model_dir)]
        return sorted((r for r in records if r is not None),
                      key=lambda r: (r["created_on"], _natural_key(r["version_name"])))

    def get_version(self, model_name: str, version_or_alias: str) -> dict:
        """The record of a version, by exact version name or by alias (case-insensitive)."""
        model_dir = self._existing_model(model_name)
        return _read_json(self._resolve(model_dir, model_name, version_or_alias) / "version.json", None)

    def artifact_path(self, model_name: str, version_or_alias: str) -> pathlib.Path:
        """The version's artifact directory, after checking every file against its sha256."""
        model_dir = self._existing_model(model_name)
        version_dir = self._resolve(model_dir, model_name, version_or_alias)
        record = _read_json(version_dir / "version.json", None)
        where = f"model {model_name!r} version {record['version_name']!r}"
        actual = _checksums(version_dir)
        for rel, digest in sorted(record["files"].items()):
            if rel not in actual:
                raise MlopsError(f"{where}: file {rel} is missing")
            if actual[rel] != digest:
                raise MlopsError(f"{where}: file {rel} does not match its recorded sha256 (tampered?)")
        extra = sorted(set(actual) - set(record["files"]))
        if extra:
            raise MlopsError(f"{where}: unexpected file {extra[0]} (tampered?)")
        return version_dir / ARTIFACT_DIR

    def load_model(self, model_name: str, version_or_alias: str):
        """Load a version as a ``TrainedModel``, after verifying its files."""
        path = self.artifact_path(model_name, version_or_alias)
        from mlops_framework.model import TrainedModel

        return TrainedModel.load(path)

    # ---- aliases ----------------------------------------------------------------------------

    def set_alias(self, model_name: str, version_name: str, alias: str, *, actor: str | None = None,
                  reason: str | None = None, metrics: dict | None = None,
                  config_hash: str | None = None) -> dict:
        """Point ``alias`` (stored upper-case) at ``version_name``; return the history entry."""
        check_name(alias, "alias")
        alias = alias.upper()
        if AUTO_VERSION_RE.match(alias):
            raise MlopsError(f"alias {alias!r} looks like a version name; choose another")
        model_dir = self._existing_model(model_name)
        with _locked(model_dir):
            self._version_dir(model_dir, version_name)
            if any(n.upper() == alias for n in _version_names(model_dir)):
                raise MlopsError(f"alias {alias!r} clashes with a version name of model {model_name!r}")
            return self._move_alias(model_dir, alias, version_name, actor, reason, metrics,
                                    config_hash=config_hash)

    def record_refusal(self, model_name: str, version_name: str, alias: str, *, actor: str | None = None,
                       reason: str | None = None, metrics: dict | None = None,
                       config_hash: str | None = None) -> dict:
        """Record that ``version_name`` was refused ``alias`` (the alias does not move); return the entry.

        The entry's ``event`` is ``refused``, ``old_version`` the alias's holder, ``new_version`` the
        refused candidate."""
        alias = str(alias).upper()
        model_dir = self._existing_model(model_name)
        with _locked(model_dir):
            self._version_dir(model_dir, version_name)
            return self._append_history(model_dir, self._entry(
                model_dir, alias, version_name, actor, reason, metrics, "refused", config_hash))

    def rollback(self, model_name: str, alias: str, *, actor: str | None = None,
                 reason: str | None = None) -> dict:
        """Move ``alias`` back to the version it held before its current one; return the history entry.

        Repeated rollbacks walk further back (v1 -> v2 -> v3, rollback: v2, rollback: v1); refusals
        are skipped. Refused when the alias never held another version or that version was deleted."""
        alias = str(alias).upper()
        model_dir = self._existing_model(model_name)
        with _locked(model_dir):
            aliases = _current_aliases(model_dir)
            previous = previous_holders(self.history(model_name), alias)
            target = previous[-1] if previous else None
            if target is None:
                now = f"holds {aliases[alias]}" if alias in aliases else "is not set"
                raise MlopsError(f"alias {alias!r} of model {model_name!r} {now} and has no earlier "
                                 f"version to roll back to; see mlops registry history {model_name}")
            self._version_dir(model_dir, target)
            return self._move_alias(model_dir, alias, target, actor,
                                    reason or f"rollback from {aliases.get(alias)}", None, event="rollback")

    def unset_alias(self, model_name: str, alias: str, *, actor: str | None = None,
                    reason: str | None = None) -> dict:
        """Remove an alias; return the history entry."""
        model_dir = self._existing_model(model_name)
        alias = alias.upper()
        with _locked(model_dir):
            aliases = _current_aliases(model_dir)
            if alias not in aliases:
                raise MlopsError(f"model {model_name!r} has no alias {alias!r}; "
                                 f"aliases: {_listing(aliases)}")
            return self._move_alias(model_dir, alias, None, actor, reason, None)

    def aliases(self, model_name: str) -> dict[str, str]:
        """alias -> version name."""
        return _current_aliases(self._existing_model(model_name))

    def history(self, model_name: str) -> list[dict]:
        """Every alias move, oldest first: when, actor, alias, old_version, new_version, reason, metrics,
        event (``set``, ``unset``, ``rollback``, ``refused``: the alias did not move, or ``deleted``: the
        version ``old_version`` was deleted, ``alias`` None) and config_hash."""
        return _read_history(self._existing_model(model_name))

    # ---- model-level metadata ---------------------------------------------------------------

    def set_tag(self, model_name: str, tag: str, value: str) -> None:
        """Set a model-level tag (value: a string of at most 256 characters)."""
        check_tag(tag, value)
        model_dir = self._existing_model(model_name)
        with _locked(model_dir):
            self._update_model_record(model_dir, model_name, tags={tag: value})

    # ---- internals --------------------------------------------------------------------------

    def _model_path(self, model_name: str) -> pathlib.Path:
        check_name(model_name, "model name")
        return pathlib.Path(self.root) / model_name

    def _existing_model(self, model_name: str) -> pathlib.Path:
        model_dir = pathlib.Path(self.root) / model_name
        if not NAME_RE.match(model_name or "") or not (model_dir / "model.json").exists():
            known = [m["name"] for m in self.models()]
            raise MlopsError(f"unknown model {model_name!r}; known models: {_listing(known)}")
        return model_dir

    def _version_dir(self, model_dir: pathlib.Path, version_name: str) -> pathlib.Path:
        path = model_dir / "versions" / version_name
        if not NAME_RE.match(version_name or "") or not (path / "version.json").exists():
            raise MlopsError(f"model {model_dir.name!r} has no version {version_name!r}; "
                             f"versions: {_listing(_version_names(model_dir))}")
        return path

    def _resolve(self, model_dir: pathlib.Path, model_name: str, version_or_alias: str) -> pathlib.Path:
        path = model_dir / "versions" / version_or_alias
        if NAME_RE.match(version_or_alias or "") and (path / "version.json").exists():
            return path
        aliases = _current_aliases(model_dir)
        target = aliases.get((version_or_alias or "").upper())
        if target is None:
            raise MlopsError(f"model {model_name!r} has no version or alias {version_or_alias!r}; "
                             f"versions: {_listing(_version_names(model_dir))}; aliases: {_listing(aliases)}")
        path = model_dir / "versions" / target
        if not (path / "version.json").exists():
            raise MlopsError(f"alias {version_or_alias.upper()!r} of model {model_name!r} points at "
                             f"version {target!r}, which no longer exists")
        return path

    def _update_model_record(self, model_dir: pathlib.Path, model_name: str, *, tags: dict) -> None:
        """Create model.json if missing and merge ``tags``. Call under the lock."""
        path = model_dir / "model.json"
        record = _read_json(path, None) or {"name": model_name, "comment": None, "tags": {},
                                             "created_on": _now()}
        if tags or not path.exists():
            record["tags"].update(tags)
            _write_json_atomic(path, record)

    def _entry(self, model_dir, alias, new_version, actor, reason, metrics, event, config_hash) -> dict:
        aliases = _current_aliases(model_dir)
        return {
            "when": _now(), "actor": actor or _user(), "alias": alias,
            "old_version": aliases.get(alias), "new_version": new_version,
            "reason": reason, "metrics": metrics or {}, "event": event, "config_hash": config_hash,
        }

    def _append_history(self, model_dir, entry) -> dict:
        line = (_dumps(entry, indent=None) + "\n").encode()
        fd = os.open(model_dir / "history.jsonl", os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":  # a torn line from a crash: drop it first
                os.ftruncate(fd, size - len(os.pread(fd, size, 0).rsplit(b"\n", 1)[-1]))
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)
        return entry

    def _move_alias(self, model_dir, alias, new_version, actor, reason, metrics, *, event=None,
                    config_hash=None) -> dict:
        """Record the move in history, then apply it. Call under the lock.

        The history line is the commit point: a crash after it and before ``aliases.json`` is written
        is repaired on read, since ``_current_aliases`` replays the history over ``aliases.json``."""
        aliases = _current_aliases(model_dir)
        event = event or ("set" if new_version is not None else "unset")
        entry = self._append_history(model_dir, self._entry(
            model_dir, alias, new_version, actor, reason, metrics, event, config_hash))
        if new_version is None:
            aliases.pop(alias)
        else:
            aliases[alias] = new_version
        _write_json_atomic(model_dir / "aliases.json", dict(sorted(aliases.items())))
        return entry


def _read_history(model_dir: pathlib.Path) -> list[dict]:
    path = model_dir / "history.jsonl"
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    entries = []
    for number, line in enumerate(text.split("\n")[:-1], 1):  # a torn last line (crash mid-append) has no newline
        if not line:
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            entry = None
        if not isinstance(entry, dict):
            raise MlopsError(f"{path} line {number} is not a history record; repair or remove that line")
        entries.append(entry)
    return entries


def _current_aliases(model_dir: pathlib.Path) -> dict:
    """``aliases.json`` with the history replayed over it: the last move of each alias wins, so a move
    whose history line was written but whose ``aliases.json`` write was cut short still counts."""
    aliases = _read_json(model_dir / "aliases.json", {})
    if not isinstance(aliases, dict):
        raise MlopsError(f"{model_dir / 'aliases.json'} is not an alias map; repair or remove it")
    for entry in _read_history(model_dir):
        if entry.get("event") == "refused" or not entry.get("alias"):
            continue
        if entry.get("new_version") is None:
            aliases.pop(entry["alias"], None)
        else:
            aliases[entry["alias"]] = entry["new_version"]
    for alias, target in aliases.items():
        if not isinstance(target, str) or not NAME_RE.match(target):
            raise MlopsError(f"alias {alias!r} in {model_dir / 'aliases.json'} points at {target!r}, "
                             f"which is not a version name; refused")
    return dict(sorted(aliases.items()))


def _listing(names) -> str:
    names = list(names)
    return ", ".join(sorted(names, key=_natural_key)) if names else "(none)"


def _natural_key(name: str):
    m = AUTO_VERSION_RE.match(name)
    return (0, int(m.group(1)), name) if m else (1, 0, name)


def _version_names(model_dir: pathlib.Path) -> list[str]:
    versions = model_dir / "versions"
    return [p.name for p in versions.iterdir() if (p / "version.json").exists()] if versions.is_dir() else []


def _remember_version_number(model_dir: pathlib.Path, version_name: str) -> None:
    """Keep the highest ``vN`` ever registered in model.json, so that deleting the newest version does not
    free its number. Called under the lock once the version is in place (a registration killed earlier
    leaves no gap in the numbers)."""
    match = AUTO_VERSION_RE.match(version_name)
    path = model_dir / "model.json"
    record = _read_json(path, {})
    if match and int(match.group(1)) > record.get("last_version_number", 0):
        record["last_version_number"] = int(match.group(1))
        _write_json_atomic(path, record)


def _next_version(model_dir: pathlib.Path) -> str:
    """``v<N+1>``: N the highest ``vN`` registered, deleted ones included (model.json remembers it)."""
    numbers = [int(m.group(1)) for p in (model_dir / "versions").iterdir()
               if (m := AUTO_VERSION_RE.match(p.name))]
    remembered = _read_json(model_dir / "model.json", {}).get("last_version_number", 0)
    return f"v{max(*numbers, remembered, 0) + 1}"


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat()


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no login name in some containers
        return "unknown"


def _jsonable(value):
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return value.tolist()
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _dumps(data, indent: int | None = 2) -> str:
    try:
        return json.dumps(data, indent=indent, default=_jsonable)
    except (TypeError, ValueError) as exc:
        raise MlopsError(f"registry records must be JSON-serialisable: {exc}") from None


def _read_json(path: pathlib.Path, default):
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return default
    except (ValueError, UnicodeDecodeError):
        raise MlopsError(f"{path} is not valid JSON (a damaged registry file); repair or remove it") from None


def _write_new(path: pathlib.Path, text: str) -> None:
    with open(path, "x") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def _write_json_atomic(path: pathlib.Path, data) -> None:
    write_text_atomic(path, _dumps(data))


def _fsync_tree(root: pathlib.Path) -> None:
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(pathlib.Path(dirpath))


def _checksums(version_dir: pathlib.Path) -> dict[str, str]:
    """sha256 of every file under ``version_dir`` except version.json, keyed by relative path."""
    out = {}
    for path in sorted(version_dir.rglob("*")):
        rel = path.relative_to(version_dir).as_posix()
        if path.is_file() and rel != "version.json":
            digest = hashlib.sha256()
            with open(path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    digest.update(chunk)
            out[rel] = digest.hexdigest()
    return out


@contextlib.contextmanager
def _locked(model_dir: pathlib.Path):
    fd = os.open(model_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _staging_prefix() -> str:
    return f"{os.getpid()}@{socket.gethostname()}@"


def _clean_staging(staging_root: pathlib.Path) -> None:
    """Remove staging dirs left by dead writers (same host) or older than a day (other hosts)."""
    host = socket.gethostname()
    for path in staging_root.iterdir():
        pid, _, rest = path.name.partition("@")
        owner_host = rest.rpartition("@")[0]
        stale = False
        if owner_host == host and pid.isdigit():
            stale = not _pid_alive(int(pid))
        else:
            with contextlib.suppress(FileNotFoundError):
                stale = time.time() - path.stat().st_mtime > STALE_OTHER_HOST_S
        if stale:
            shutil.rmtree(path, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
