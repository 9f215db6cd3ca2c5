"""Overrides that make a full `mlops run` take about a second: shared by the end-to-end tests."""

SMALL = ["data.weeks=4", "data.rows_per_week=300", "model.params.n_estimators=20", "model.params.n_jobs=1"]
