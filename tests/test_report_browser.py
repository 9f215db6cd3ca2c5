"""The run report and a sweep's leaderboard open in headless Chromium (Debian's ``chromium``): every chart is
drawn by the charting library, nothing is fetched from the network, and the console stays free of errors. A
screenshot of each is saved in the test's tmp_path."""

import pytest

import browser
from run_sizes import SMALL

pytestmark = pytest.mark.skipif(browser.chromium() is None,
                                reason="headless Chromium is not installed (apt-get install chromium)")


def test_the_lifecycle_report_renders_with_no_console_error(mlops, home, tmp_path):
    mlops("run", "experiment=mortgage_lifecycle", "data.rows_per_week=300", "model.params.n_estimators=20", check=True)
    report = next(home.glob("runs/*/report.html"))
    seen = browser.open_page(report, tmp_path / "report.png")
    assert seen["errors"] == []
    assert seen["charts"] > 20 and seen["drawn"] == seen["charts"], seen
    assert (tmp_path / "report.png").stat().st_size > 20_000


def test_a_sweep_leaderboard_renders_with_no_console_error(mlops, home, tmp_path):
    mlops("run", "-m", "hydra/launcher=basic", "pipeline=train", "model.params.max_depth=2,3", *SMALL, check=True)
    leaderboard = next(home.glob("multiruns/*/leaderboard.html"))
    seen = browser.open_page(leaderboard, tmp_path / "leaderboard.png")
    assert seen["errors"] == [] and seen["charts"] == seen["drawn"] == 1, seen
    assert (tmp_path / "leaderboard.png").stat().st_size > 10_000


def test_a_page_that_fetches_from_the_network_is_caught(tmp_path):
    page = tmp_path / "online.html"
    page.write_text('<html><head><script src="https://cdn.plot.ly/plotly-3.0.0.min.js"></script></head><body>'
                    '<div class="plotly-graph-div" id="chart"></div><script>Plotly.newPlot("chart", [])</script>'
                    "</body></html>")
    seen = browser.open_page(page, tmp_path / "online.png", timeout=30)
    assert any("ERR_PROXY_CONNECTION_FAILED" in error for error in seen["errors"]), seen
    assert any("Plotly is not defined" in error for error in seen["errors"]) and seen["drawn"] == 0
