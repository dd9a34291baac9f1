"""The benchmark (`python -m bench`) runs end to end, scaled down, and reports every figure.

It needs PostgreSQL (COPY, the trigram index) and its own database, which it drops and creates:
it runs when the suite runs on PostgreSQL and is skipped on SQLite.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DATABASE_URL = os.environ.get("DATABASE_URL", "")

pytestmark = pytest.mark.skipif(
    not DATABASE_URL.startswith(("postgres://", "postgresql://")),
    reason="the benchmark needs PostgreSQL: set DATABASE_URL",
)


def test_the_benchmark_builds_a_small_programme_and_reports_each_figure(tmp_path):
    server = DATABASE_URL.rsplit("/", 1)[0]
    figures_file = tmp_path / "figures.json"
    run = subprocess.run(
        [sys.executable, "-m", "bench", "--mailboxes", "2000", "--samples", "5", "--repeats", "1"]
        + ["--database-url", f"{server}/portal_bench_suite", "--json", str(figures_file)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]

    report = json.loads(figures_file.read_text())
    figures = {figure["name"]: figure for figure in report["figures"]}
    assert report["facts"]["mailboxes"] == 2000
    for start in [
        "Raw \\copy",
        "Import 2,000 mailboxes",
        "Re-import with every mailbox's size changed",
        "Count every mailbox by status",
        "Download: IT lead",
        "Download: Central: organisations yet to book",
        "Exact lookup by address",
        "Search as you type: name fragment",
        "Book a ",
        "Page: Central: wave page",
        "One poll cycle",
        "Whole weekend wave",
    ]:
        found = [figure for name, figure in figures.items() if name.startswith(start)]
        assert found, f"no figure starting {start!r} in {sorted(figures)}"
        assert all(figure["median"] > 0 for figure in found)
    targets = [figure for figure in figures.values() if figure["target"]]
    assert all(figure["verdict"].split(" ")[0] in {"met", "MISSED"} for figure in targets)
    assert "Whole weekend wave" in run.stdout  # the table is printed
    refresh = figures["Re-import with every mailbox's size changed (a weekly refresh)"]
    assert refresh["note"].startswith("Rows read 2,000: created 0, updated 2,000")
