"""How ``mlops registry`` prints records for a person: short tables and summaries (``--json`` prints them whole)."""

from __future__ import annotations

KEY_METRICS = ("f1", "roc_auc", "accuracy", "rmse", "mae", "r2")  # shown first, where a version has them
MAX_METRICS = 3


def table(header, rows):
    """Columns padded to their widest cell; the last column is not padded."""
    if not rows:
        return "(none)"
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip()]
    lines += ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    return "\n".join(lines)


def _number(value):
    if isinstance(value, float):
        return f"{value:.4f}"
    return "" if value is None else str(value)


def _pairs(mapping, sep=", "):
    return sep.join(f"{key}={value}" for key, value in sorted((mapping or {}).items()))


def _when(value):
    """``2026-12-04 12:50`` from an ISO timestamp (UTC as recorded)."""
    return str(value or "")[:16].replace("T", " ")


def _aliases_by_version(aliases):
    by_version = {}
    for alias, version in sorted((aliases or {}).items()):
        by_version.setdefault(version, []).append(alias)
    return by_version


def key_metrics(records):
    """Up to three holdout metrics the records have, the usual ones first (f1, roc_auc, accuracy, rmse, ...)."""
    names = {name for record in records for name in (record.get("metrics") or {}) if name.startswith("holdout_")}
    ordered = [f"holdout_{m}" for m in KEY_METRICS if f"holdout_{m}" in names]
    ordered += sorted(names - set(ordered))
    return ordered[:MAX_METRICS]


def models_table(models):
    """``mlops registry models``: name, versions, latest version, aliases, tags, comment."""
    rows = [[m["name"], str(m.get("versions", "")), m.get("latest_version") or "",
             _pairs(m.get("aliases")), _pairs(m.get("tags")), m.get("comment") or ""] for m in models]
    return table(["MODEL", "VERSIONS", "LATEST", "ALIASES", "TAGS", "COMMENT"], rows)


def versions_table(versions, aliases):
    """``mlops registry versions MODEL``: version, created, aliases, key holdout metrics, comment."""
    metrics = key_metrics(versions)
    by_version = _aliases_by_version(aliases)
    rows = [[v["version_name"], _when(v.get("created_on")), ", ".join(by_version.get(v["version_name"], [])),
             *(_number((v.get("metrics") or {}).get(m)) for m in metrics), v.get("comment") or ""]
            for v in versions]
    return table(["VERSION", "CREATED", "ALIASES", *(m.upper() for m in metrics), "COMMENT"], rows)


def version_summary(record, aliases, model):
    """``mlops registry show MODEL VERSION``: a few lines a person reads at a glance."""
    name, version = record["model_name"], record["version_name"]
    by_version = _aliases_by_version(aliases)
    metadata = record.get("metadata") or {}
    lineage = record.get("lineage") or {}
    lines = [f"{name} {version}",
             f"aliases   {', '.join(by_version.get(version, [])) or '(none)'}",
             f"created   {_when(record.get('created_on'))} UTC",
             f"comment   {record.get('comment') or '(none)'}"]
    metrics = record.get("metrics") or {}
    parts = sorted({key.split("_", 1)[0] for key in metrics if "_" in key}, key=lambda p: (p != "holdout", p))
    for number, part in enumerate(parts):
        values = {k.split("_", 1)[1]: v for k, v in metrics.items() if k.startswith(part + "_")}
        label = "metrics" if number == 0 else ""
        lines.append(f"{label:<9} {part:<10} " + "  ".join(f"{k}={_number(v)}" for k, v in values.items()))
    if not parts:
        lines.append("metrics   (none)")
    lines.append(f"tags      {_pairs(model.get('tags')) or '(none)'}")
    trained = metadata.get("estimator") or "?"
    if metadata.get("training_rows") is not None:
        trained += f" on {metadata['training_rows']:,} rows"
    lines.append(f"model     {trained}")
    lines.append(f"from      {_origin(lineage)}")
    return "\n".join(lines)


def _origin(lineage):
    """Where a version came from: data, its fingerprint, the git commit, a sweep's trial."""
    parts = []
    data = (lineage.get("config") or {}).get("data") or {}
    if data:
        where = next((str(data[k]) for k in ("path", "table", "name") if data.get(k)), "")
        parts.append(f"data {data.get('kind', '?')}" + (f" {where}" if where else ""))
    if lineage.get("data_fingerprint"):
        parts.append(f"fingerprint {str(lineage['data_fingerprint']).removeprefix('sha256:')[:12]}")
    parts.append(f"git {str(lineage['git_commit'])[:12]}" if lineage.get("git_commit") else "git unknown")
    sweep = lineage.get("sweep")
    if sweep:
        parts.append(f"best trial {sweep.get('trial')} of sweep {sweep.get('dir')}")
    return ", ".join(parts)
