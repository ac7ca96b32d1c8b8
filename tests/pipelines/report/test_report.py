"""The run report: one self-contained HTML page per run, checked as HTML and in a real browser."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from pipelines.config.compose import compose_config
from pipelines.local.records import RunResult
from pipelines.local.runner import run_local
from pipelines.report import write_report

pytestmark = pytest.mark.integration

SMALL = ["data.rows=3000", "trainer.epochs=2", "inference.shards=2", "runtime.retries=0"]
FULL_SECTIONS = {
    "dag",
    "timeline",
    "data",
    "quality",
    "training",
    "evaluation",
    "inference",
    "config",
}


class _Page(HTMLParser):
    """The parts of a page the tests look at: ids, headings, links, image sources."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.headings: list[str] = []
        self.hrefs: list[str] = []
        self.images: list[str] = []
        self.resources: list[str] = []  # every src/href, to check that nothing is fetched
        self._heading: list[str] | None = None
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if values.get("id"):
            self.ids.add(values["id"])
        for name in ("src", "href"):
            if values.get(name):
                self.resources.append(values[name])
        if tag == "a" and values.get("href"):
            self.hrefs.append(values["href"])
        if tag == "img":
            self.images.append(values.get("src") or "")
        if tag == "h2":
            self._heading = []

    def handle_data(self, data: str) -> None:
        if self._heading is not None:
            self._heading.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "h2" and self._heading is not None:
            self.headings.append("".join(self._heading).strip())
            self._heading = None


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("report") / "runs"


@pytest.fixture(scope="module")
def demo(runs_dir: Path) -> RunResult:
    """One small end-to-end demo run (two inference shards) whose report the tests read."""
    result = run_local(compose_config([*SMALL, f"runtime.runs_dir={runs_dir}"]))
    assert result.ok, [(r.node, r.error) for r in result.failed]
    return result


@pytest.fixture(scope="module")
def report(demo: RunResult) -> Path:
    return write_report(demo.run_dir)


def test_report_of_a_full_run_has_every_section(demo: RunResult, report: Path) -> None:
    assert report == demo.run_dir / "report.html"
    page = _Page(report.read_text())
    assert FULL_SECTIONS | {"summary", "artifacts"} <= page.ids
    assert "failures" not in page.ids
    assert page.headings[:2] == ["DAG", "Timeline"]
    for heading in ("Data", "Training", "Composed config", "Artifacts and logs"):
        assert heading in page.headings
    assert any(h.startswith("Evaluation") for h in page.headings)
    assert demo.run_id in report.read_text()


def test_report_is_self_contained(report: Path) -> None:
    text = report.read_text()
    page = _Page(text)
    # dag, timeline, training curves, ROC, throughput
    assert len(page.images) == 5
    assert all(src.startswith("data:image/png;base64,") for src in page.images)
    assert "http://" not in text and "https://" not in text
    assert "<script" not in text
    for ref in page.resources:
        assert not ref.startswith(("/", "file:")), ref


def test_report_links_every_log_and_output(demo: RunResult, report: Path) -> None:
    page = _Page(report.read_text())
    for record in demo.nodes.values():
        for attempt in record.attempts:
            href = f"steps/{record.node}/{Path(attempt['log']).name}"
            assert href in page.hrefs
            assert (demo.run_dir / href).is_file()
        for output in record.outputs:
            href = f"steps/{record.node}/outputs/{output}"
            assert href in page.hrefs
            assert (demo.run_dir / href).exists()


def test_report_shows_data_metrics_and_row_accounting(demo: RunResult, report: Path) -> None:
    text = report.read_text()
    rows = demo.nodes["etl"].metrics
    assert f"{rows['rows_train']:,}" in text
    assert "infer x2" not in text  # a picture label, not text
    assert "runs 2 branches at a time" in text or "runs 1 branch at a time" in text
    assert "Every row to score has exactly one published prediction." in text
    assert "rows upserted into the lookup store" in text and "published version" in text
    assert "Confusion matrix" in text
    assert "ROC curve" in text
    assert "smoke run" not in text


def test_report_shows_quality_checks_and_profiles(tmp_path: Path) -> None:
    result = run_local(
        compose_config(
            [*SMALL, "stages=[etl]", "quality=demo", f"runtime.runs_dir={tmp_path / 'runs'}"]
        )
    )
    assert result.ok
    text = write_report(result.run_dir).read_text()
    assert "3,000 rows read, 3,000 written, 0 rejected." in text
    assert '<td><code>age.range</code></td><td>error</td><td class="ok">pass</td>' in text
    assert "Profile of the prepared rows" in text


def test_report_of_a_failed_run_shows_the_failure_and_its_log(tmp_path: Path) -> None:
    data = tmp_path / "loans.csv"
    data.write_text(
        "loan_id,amount,defaulted\n" + "".join(f"L{i},{i * 10},{i % 2}\n" for i in range(40))
    )
    result = run_local(
        compose_config(
            [
                "data=csv",
                f"data.uri={data}",
                "data.target=missing_col",
                "data.id_column=loan_id",
                "runtime.retries=0",
                f"runtime.runs_dir={tmp_path / 'runs'}",
            ]
        )
    )
    assert [r.node for r in result.failed] == ["etl"]
    page_text = write_report(result.run_dir).read_text()
    page = _Page(page_text)
    assert {"summary", "dag", "timeline", "failures", "config", "artifacts"} <= page.ids
    assert {"data", "training", "evaluation", "inference"}.isdisjoint(page.ids)
    assert "DataError" in page_text and "missing_col" in page_text
    log = "steps/etl/attempt-1.log"
    assert log in page.hrefs
    assert "missing_col" in (result.run_dir / log).read_text()
    assert "not run" in page_text  # the steps after it


def test_a_failure_before_any_attempt_is_shown_without_a_log(tmp_path: Path) -> None:
    result = run_local(
        compose_config(
            [
                "data=csv",
                f"data.uri={tmp_path / 'nope.csv'}",
                "data.target=y",
                "data.id_column=id",
                f"runtime.runs_dir={tmp_path / 'runs'}",
            ]
        )
    )
    page_text = write_report(result.run_dir).read_text()
    assert "failures" in _Page(page_text).ids
    assert "does not exist; check data.uri" in page_text


def test_report_of_an_etl_only_run_has_no_training_or_evaluation(tmp_path: Path) -> None:
    result = run_local(
        compose_config(["stages=[etl]", "data.rows=2000", f"runtime.runs_dir={tmp_path}"])
    )
    assert result.ok
    page = _Page(write_report(result.run_dir).read_text())
    assert {"summary", "dag", "timeline", "data", "config", "artifacts"} <= page.ids
    assert {"training", "evaluation", "inference", "failures"}.isdisjoint(page.ids)
    assert len(page.images) == 2


def test_smoke_runs_say_so_and_the_command_is_shown(demo: RunResult, tmp_path: Path) -> None:
    copy = tmp_path / demo.run_id
    shutil.copytree(demo.run_dir, copy, symlinks=True)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest.update(smoke=True, argv=["/venv/bin/kfbatch", "run", "--smoke", "name=a <b>"])
    (copy / "manifest.json").write_text(json.dumps(manifest))
    text = write_report(copy).read_text()
    assert "smoke run: a sample of the data, one epoch" in text
    assert "<code>kfbatch run --smoke &#39;name=a &lt;b&gt;&#39;</code>" in text  # quoted, escaped


def test_cli_run_writes_the_report_and_prints_its_path(kfbatch, tmp_path: Path) -> None:
    result = kfbatch(
        "run",
        "--progress",
        "plain",
        "stages=[etl]",
        "data=breast_cancer",
        f"runtime.runs_dir={tmp_path}",
    )
    assert result.code == 0, result.err
    report = tmp_path / "latest" / "report.html"
    printed = result.out.split("  report: ")[1].split()[0]
    assert Path(printed).resolve() == report.resolve()


def _chromium() -> str:
    """Debian's Chromium, installed once when missing and possible; else skip with the reason."""
    found = shutil.which("chromium")
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("headless Chromium is not installed and cannot be (not root, or no apt-get)")
    install = ["apt-get", "install", "-y", "--no-install-recommends", "chromium"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        done = subprocess.run(install, capture_output=True, text=True, timeout=600, env=env)
        if done.returncode != 0 and "Unable to locate package" in done.stderr:
            subprocess.run(["apt-get", "update"], capture_output=True, timeout=300, env=env)
            done = subprocess.run(install, capture_output=True, text=True, timeout=600, env=env)
    except subprocess.TimeoutExpired:
        pytest.skip("installing Chromium with apt-get took more than 10 minutes")
    found = shutil.which("chromium")
    if not found:
        pytest.skip(f"could not install Chromium with apt-get: {done.stderr.strip()[-300:]}")
    return found


@pytest.mark.slow
def test_report_renders_in_headless_chromium(report: Path, tmp_path: Path) -> None:
    browser = _chromium()
    url = report.resolve().as_uri()
    flags = ["--headless", "--disable-gpu", "--no-sandbox", "--hide-scrollbars"]
    flags += [f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0"]
    screenshot = tmp_path / "report.png"
    shot = subprocess.run(
        [browser, *flags, f"--screenshot={screenshot}", "--window-size=1280,4000", url],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert screenshot.is_file(), shot.stderr[-2000:]
    assert screenshot.stat().st_size > 50_000  # a blank 1280x4000 page is a few kB
    print(f"report screenshot: {screenshot}")

    dom = subprocess.run(
        [browser, *flags, "--dump-dom", url], capture_output=True, text=True, timeout=120
    )
    assert dom.returncode == 0, dom.stderr[-2000:]
    page = _Page(dom.stdout)
    assert FULL_SECTIONS | {"summary", "artifacts"} <= page.ids
    assert len(page.images) == 5
    for output in (shot.stderr, dom.stderr):
        lowered = output.lower()
        assert "failed to load resource" not in lowered, output[-2000:]
        assert "err_file_not_found" not in lowered, output[-2000:]
        assert "console" not in lowered or "error" not in lowered, output[-2000:]
