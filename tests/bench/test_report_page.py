"""The bench report: a sortable HTML table (failures first), comparison plots, per-run ArviZ plots,
and the page as a real headless browser renders it."""
import json
import shutil
import subprocess
from html.parser import HTMLParser

import numpy as np
import pytest

from samplax.bench import run_suite
from samplax.bench.report import STATUS_ORDER, make_report

SUITE = {
    "suite": {"name": "tiny", "num_chains": 2, "num_warmup": 100, "num_samples": 100, "seed": 0},
    "run": [
        {"method": "nuts", "target": "std_gaussian", "target_params": {"dim": 3}},
        {"method": "mala", "target": "gmm9"},  # cannot cross between the modes: fails its accuracy check
        {"method": "nuts", "target": "std_gaussian", "target_params": {"dim": 2},
         "options": {"max_tree_depth": 99}},  # an invalid option: the run raises
    ],
}


class _Table(HTMLParser):
    """The runs table: per row, its cells' (class, data-sort, text)."""

    def __init__(self):
        super().__init__()
        self.rows, self.keys, self._in, self._cell = [], [], False, None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table" and a.get("id") == "runs":
            self._in = True
        elif self._in and tag == "th":
            self.keys.append(a.get("data-key"))
        elif self._in and tag == "tr":
            self.rows.append([])
        elif self._in and tag == "td":
            self._cell = [a.get("class", ""), a.get("data-sort"), ""]

    def handle_data(self, data):
        if self._cell is not None:
            self._cell[2] += data

    def handle_endtag(self, tag):
        if self._in and tag == "td":
            self.rows[-1].append(tuple(self._cell))
            self._cell = None
        elif tag == "table":
            self._in = False


@pytest.fixture(scope="module")
def bench_folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    run = run_suite(SUITE, out_dir=str(out), progress=False)
    return out, run


def _status_column(table):
    return [row[table.keys.index("status")][2] for row in table.rows if row]


def test_failures_first_and_status_coloured(bench_folder):
    out, run = bench_folder
    statuses = {r["method"] + str(r.get("error", ""))[:5]: r["status"] for r in run.rows}
    assert [r["status"] for r in run.rows][2] == "error", statuses
    assert "max_tree_depth" in run.rows[2]["error"]
    assert run.rows[1]["status"].startswith("failed") and run.rows[0]["status"].startswith("passed")
    page = make_report(str(out), plots=False)
    table = _Table()
    table.feed(open(page).read())
    shown = _status_column(table)
    assert len(shown) == 3
    assert [STATUS_ORDER.index(s) for s in shown] == sorted(STATUS_ORDER.index(s) for s in shown)
    assert shown[0] == "error" and shown[-1].startswith("passed")
    cls = {row[table.keys.index("status")][2]: row[table.keys.index("status")][0] for row in table.rows if row}
    assert "bad" in cls["error"] and "bad" in cls[shown[1]] and ("good" in cls[shown[2]] or "warn" in cls[shown[2]])
    # numbers carry a sort key (the JavaScript sorts on it); absent values sort last
    ess = [row[table.keys.index("min_ess_bulk")][1] for row in table.rows if row]
    assert ess[0] == "" and float(ess[2]) > 0
    # the summary says how many of each
    assert "1 error" in open(page).read()
    summary = json.loads((out / "results.json").read_text())["summary"]
    assert summary["error"] == 1


@pytest.mark.slow  # ArviZ's import and ~15 figures: about 20 s
def test_plots_across_methods_and_per_run(bench_folder):
    out, run = bench_folder
    page = open(make_report(str(out))).read()
    assert (out / "compare_ess.png").exists() and (out / "compare_error_cost.png").exists()
    nuts_dir = out / "runs" / run.rows[0]["run_dir"]
    for f in ("trace.png", "rank.png", "pair.png", "energy.png", "ess_evolution.png", "marginals.png",
              "diagnostics.png"):
        assert (nuts_dir / f).exists(), f
    assert not (out / "runs" / run.rows[2]["run_dir"]).exists()  # the failed run has no folder
    assert page.count("<details") == 2 and page.count("data:image/png;base64") >= 11
    # the failing run's section comes first and is open
    first = page.index("<details")
    assert page[first:first + 200].startswith("<details open>") and "mala" in page[first:first + 200]


def _browser():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


@pytest.mark.slow  # two Chromium starts and the figures
def test_page_in_a_headless_browser(bench_folder, tmp_path):
    """Chromium renders the page (a screenshot that is not blank) and its JavaScript sorts the table."""
    browser = _browser()
    if browser is None:
        pytest.skip("no Chromium on this machine (apt-get install chromium)")
    out, run = bench_folder
    page = make_report(str(out))
    flags = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    shot = tmp_path / "page.png"
    subprocess.run(flags + [f"--screenshot={shot}", "--window-size=1300,900", f"file://{page}"],
                   check=True, capture_output=True, timeout=120)
    import matplotlib.image

    img = matplotlib.image.imread(shot)
    assert img.shape[0] >= 800 and img.shape[1] >= 1200
    # the status colours are on screen: the failure red (#f6cccc) and the passed run's green (#d8f0d8), or
    # orange (#fbe9c0) when it passed with warnings
    rgb = np.round(img[..., :3] * 255).astype(int)
    passed = (0xD8, 0xF0, 0xD8) if run.rows[0]["status"] == "passed" else (0xFB, 0xE9, 0xC0)
    assert np.any(np.all(rgb == (0xF6, 0xCC, 0xCC), axis=-1)) and np.any(np.all(rgb == passed, axis=-1))
    # the page's own sort, run by the browser: ascending by the method column
    dom = subprocess.run(flags + ["--dump-dom", f"file://{page}#sort=method"], check=True, capture_output=True,
                         text=True, timeout=120).stdout
    table = _Table()
    table.feed(dom)
    methods = [row[table.keys.index("method")][2] for row in table.rows if row]
    assert methods == sorted(methods) and methods != [r["method"] for r in sorted(
        run.rows, key=lambda r: STATUS_ORDER.index(r["status"]))]
