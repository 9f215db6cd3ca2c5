"""`mlops run data=csv data.path=gs://...` end to end, against a real GCS emulator on 127.0.0.1."""

import io
import socket

import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest

from run_sizes import SMALL
from mlops_framework.cli import main
from mlops_local.synthetic import generate_table

BUCKET = "mortgage-data"


@pytest.fixture
def gcs(monkeypatch):
    from gcp_storage_emulator.server import create_server

    from mlops_local import sources

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = create_server("127.0.0.1", port, in_memory=True, default_bucket=BUCKET)
    server.start()
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{port}")
    try:
        yield sources._filesystem("gs")
    finally:
        server.stop()


def test_train_on_a_gs_csv_and_score_a_gs_parquet_through_an_alias(gcs, home, capsys):
    csv = io.BytesIO()
    pa_csv.write_csv(generate_table(weeks=3, rows_per_week=300, seed=2), csv)
    gcs.pipe(f"{BUCKET}/loans.csv", csv.getvalue())
    new_weeks = io.BytesIO()
    pq.write_table(generate_table(weeks=5, rows_per_week=200, seed=4).slice(600), new_weeks)
    gcs.pipe(f"{BUCKET}/new/weeks.parquet", new_weeks.getvalue())

    assert main(["run", "pipeline=train", "data=csv", "features=mortgage", f"data.path=gs://{BUCKET}/loans.csv", *SMALL[2:]]) == 0
    assert main(["registry", "alias", "set", "MORTGAGE_XGB", "v1", "PRODUCTION"]) == 0
    capsys.readouterr()
    assert main(["run", "pipeline=score", "data=parquet", f"data.path=gs://{BUCKET}/new/weeks.parquet",
                 "scoring.version=PRODUCTION"]) == 0
    assert "400 rows with v1" in capsys.readouterr().out
    assert main(["run", "data=csv", f"data.path=gs://{BUCKET}/missing.csv"]) == 2
    assert "missing.csv" in capsys.readouterr().err
