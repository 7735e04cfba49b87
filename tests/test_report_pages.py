"""Report pages: rendered from the templates, looked at in a real headless browser (Debian's chromium), and
bundled by ``snakemake --report``."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from test_model_rules import project_copy

from flashsim import validation as V
from flashsim.validation.glossary import explain

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# CI installs chromium (scripts/setup-system.sh); only a dev machine without it skips
needs_chromium = pytest.mark.skipif(CHROMIUM is None and not os.environ.get("CI"), reason="chromium not installed")


class _Images(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.src: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.src.append(dict(attrs)["src"])


def _page(root: Path) -> Path:
    """A model page as ``flashsim validate`` writes it: weighted histograms (one with tails), gates, MLflow run."""
    rng = np.random.default_rng(5)
    ref = np.stack([rng.normal(size=4000), rng.standard_cauchy(4000)], 1)
    gen = np.stack([rng.normal(0.05, 1.0, 4000), rng.standard_cauchy(4000)], 1)
    w = rng.uniform(0.5, 1.5, 4000)
    d = root / "reports" / "m1"
    plots = [V.plot_distributions(ref, gen, ["dx", "pull"], d / "distributions.png", ["mm", "1"], w, w, title="m1"),
             V.plot_history([{"epoch": i, "loss": 1 / (i + 1), "val_loss": 1.1 / (i + 1)} for i in range(20)],
                            d / "training.png")]
    plots = V.collect_figures(d, plots)
    metrics = {"two_sample_auc": 0.52, "ks_max": 0.08, "rows": 4000.0}
    gates = V.evaluate_gates(metrics, {"two_sample_auc": {"max": 0.6}, "ks_max": {"max": 0.05}})
    state = root / "results" / "train" / "m1" / "mlflow.json"
    state.parent.mkdir(parents=True)
    state.write_text(json.dumps({"tracking_uri": "http://127.0.0.1:5000", "run_id": "abc123", "experiment": "m1"}))
    head = V.page_header("m1", "demo", family="generator", mlflow=V.mlflow_info("m1", root))
    (d / "metrics.json").write_text(json.dumps({"family": "generator", "scale": "demo", "gates": gates}))
    V.write_index(root / "reports")
    return V.write_model_page(d, "m1", metrics, gates, plots, header=head)


def test_page_header_and_figures(tmp_path):
    page = _page(tmp_path)
    text = page.read_text()
    for want in ("m1", "demo", "generator", "http://127.0.0.1:5000/#/runs/abc123", "abc123", "two_sample_auc",
                 "FAIL", explain("two_sample_auc"), explain("ks_max")):
        assert want in text, want
    assert re.search(r"<dt>git sha</dt><dd><code>[0-9a-f]{7,}|unknown", text)
    assert re.search(r"<dt>date</dt><dd>\d{4}-\d\d-\d\d \d\d:\d\d UTC", text)
    parser = _Images()
    parser.feed(text)
    assert parser.src == ["figures/distributions.png", "figures/training.png"]
    for src in parser.src:
        png = page.parent / src
        assert png.read_bytes()[:4] == b"\x89PNG"
        assert png.with_suffix(".pdf").read_bytes()[:4] == b"%PDF"
        assert f'href="{Path(src).with_suffix(".pdf").as_posix()}"' in text
    import matplotlib.image

    w = matplotlib.image.imread(page.parent / parser.src[0]).shape[1]
    assert w >= 1000  # 150 dpi: two 3.9-inch panels
    assert "m1/index.html" in (tmp_path / "reports" / "index.html").read_text()


def _chromium(*args: str) -> subprocess.CompletedProcess:
    assert CHROMIUM, "chromium is missing: scripts/setup-system.sh installs it"
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--allow-file-access-from-files",
                           "--virtual-time-budget=15000", *args], capture_output=True, text=True, timeout=120)


@needs_chromium
def test_page_in_a_real_browser(tmp_path):
    """The page renders (a non-blank screenshot) and every <img> loads in chromium (naturalWidth > 0)."""
    page = _page(tmp_path)
    shot = tmp_path / "page.png"
    r = _chromium(f"--screenshot={shot}", "--window-size=1400,1800", page.as_uri())
    assert shot.exists(), r.stderr[-2000:]
    import matplotlib.image

    img = matplotlib.image.imread(shot)[..., :3]
    assert img.std() > 0.05  # not a blank page
    assert (img < 0.5).mean() > 0.01  # text and plots drawn
    # the same page with a probe that reports how many images loaded
    probe = page.with_name("probe.html")
    probe.write_text(page.read_text().replace("</body>", (
        "<script>window.addEventListener('load', () => { const i = [...document.images]; document.body.setAttribute("
        "'data-images', i.length + ':' + i.filter(x => x.complete && x.naturalWidth > 0).length); });</script>"
        "</body>")))
    dom = _chromium("--dump-dom", probe.as_uri()).stdout
    m = re.search(r'data-images="(\d+):(\d+)"', dom)
    assert m, dom[-2000:]
    assert int(m.group(1)) == 2 and m.group(2) == m.group(1), m.group(0)


def test_broken_page_is_caught(tmp_path):
    """A missing figure or a template error must not pass unnoticed."""
    import jinja2

    from flashsim.validation.report import render

    with pytest.raises(jinja2.UndefinedError):  # the templates are strict: a missing value is an error
        render("model.html", tmp_path / "index.html", title="m", index_href="", gates=[], passed=True, plots=[],
               metrics=[], card="")  # no header
    assert not (tmp_path / "index.html").exists()
    page = _page(tmp_path)
    (page.parent / "figures" / "training.png").unlink()
    parser = _Images()
    parser.feed(page.read_text())
    assert not all((page.parent / s).exists() for s in parser.src)


def test_snakemake_report_bundles_pages_and_figures(tmp_path):
    root = project_copy(tmp_path)
    d = root / "reports" / "acceptance"
    rng = np.random.default_rng(2)
    plots = V.collect_figures(d, [V.plot_distributions(rng.normal(size=(300, 1)), rng.normal(size=(300, 1)), ["a"],
                                                       d / "distributions.png")])
    V.write_model_page(d, "acceptance", {"auc": 0.7}, [], plots)
    (d / "metrics.json").write_text("{}")
    exe = Path(sys.executable).with_name("snakemake")
    proc = subprocess.run([str(exe), "--report", "report.zip", "reports/acceptance/index.html"], cwd=root,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    names = {Path(n).name for n in zipfile.ZipFile(root / "report.zip").namelist()}
    assert {"index.html", "distributions.png", "report.html"} <= names
