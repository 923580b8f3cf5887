"""The review app in a real headless Chromium, against the real server and engines.

``surgagent serve`` runs as a subprocess with a tiny trained phase segmenter and the session's
shapes detector; the planner is a scripted OpenAI-compatible server on loopback that streams.
The browser uploads a generated video, sees the phase ribbon and instrument timeline, seeks by
clicking them, asks a question, sees the streamed answer with a clickable timestamp, reloads
the page and finds the session again, also after the server restarts. Screenshots are written
to ``tests/artifacts/`` for a person to look at.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from surgagent.agent.testing.openai_server import ScriptedOpenAIServer, ScriptedReply
from surgagent.tools.cache import CaseCache
from tests.fixtures.engines import TinyDetector
from tests.test_tool_chain import CASE, PHASES, make_case, train_chain_segmenter

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "tests" / "artifacts"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium)"
    ),
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def planner(request: dict[str, Any]) -> ScriptedReply:
    """Look up the clipping phase and the instruments in it, then answer citing [mm:ss]."""
    tool = [m["content"] for m in request["messages"] if m["role"] == "tool"]
    if not tool:
        return ScriptedReply(
            tool_calls=[
                ("phase_segments", {"phase": "ClippingCutting"}),
                ("instruments_at", {"time": "00:15"}),
            ]
        )
    times = re.findall(r"\d\d:\d\d", tool[0])
    start, end = (times + ["00:00", "00:00"])[:2] if len(times) < 3 else times[1:3]
    return ScriptedReply(
        content=f"Clipping and cutting runs from [{start}] to [{end}], as the phase "
        "segmenter shows.",
        reasoning="The phase tool answers this directly.",
    )


@pytest.fixture(scope="module")
def engines(tmp_path_factory: pytest.TempPathFactory, tiny_detector: TinyDetector) -> dict:
    root = tmp_path_factory.mktemp("ui")
    checkpoint = train_chain_segmenter(root, CaseCache(root / "cache"))
    video = root / "upload" / "lapchole_review.mp4"
    make_case(video, root / "upload" / "gold.txt", CASE, seed=7)
    return {"phase": checkpoint, "detector": tiny_detector.weights, "video": video}


class Server:
    """``surgagent serve`` in a subprocess."""

    def __init__(self, env: dict[str, str], port: int) -> None:
        self.env, self.port = env, port
        self.url = f"http://127.0.0.1:{port}/"
        self.process: subprocess.Popen[str] | None = None

    def start(self) -> None:
        command = [sys.executable, "-m", "surgagent", "serve", "--port", str(self.port)]
        self.process = subprocess.Popen(
            command, env={**os.environ, **self.env}, cwd=REPO, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if self.process.poll() is not None:
                    output = self.process.stdout.read() if self.process.stdout else ""
                    raise RuntimeError(output) from None
                time.sleep(0.5)
        raise TimeoutError("the review app did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=30)


@pytest.fixture
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox"]
        )
        yield chromium
        chromium.close()


def video_time(page: Any) -> float:
    return float(page.evaluate("document.querySelector('#case-video video').currentTime"))


def test_review_session_in_a_browser(engines: dict, browser: Any, tmp_path: Path) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    with ScriptedOpenAIServer(planner, chunk_chars=6, chunk_delay=0.05) as model:
        env = {
            "SURGAGENT_DATA_DIR": str(tmp_path / "data"),
            "SURGAGENT_PLANNER__BACKEND": "openai",
            "SURGAGENT_PLANNER__BASE_URL": model.base_url,
            "SURGAGENT_PERCEPTION__ENABLED": "false",
            "SURGAGENT_KNOWLEDGE__ENABLED": "false",
            "SURGAGENT_PHASE__WEIGHTS": str(engines["phase"]),
            "SURGAGENT_DETECTOR__WEIGHTS": str(engines["detector"]),
            "SURGAGENT_DETECTOR__IMGSZ": "128",
            "GRADIO_ANALYTICS_ENABLED": "False",
        }
        server = Server(env, free_port())
        server.start()
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(server.url)
            page.locator("#tools").get_by_text("guidelines: unavailable").wait_for()
            page.locator("#upload input[type=file]").set_input_files(str(engines["video"]))

            segments = page.locator("#phase-ribbon .segment")
            segments.first.wait_for(timeout=60_000)
            assert segments.count() == 3
            phases = [segments.nth(k).get_attribute("data-phase") for k in range(3)]
            assert phases == PHASES
            page.locator("#case-video video").wait_for()
            page.wait_for_function(
                "document.querySelector('#case-video video').readyState >= 1", timeout=30_000
            )
            clipping = segments.nth(1)
            clipping.click()
            assert abs(video_time(page) - float(clipping.get_attribute("data-seek") or 0)) < 0.5
            bars = page.locator("#instrument-timeline .bar")
            assert {bars.nth(k).get_attribute("data-instrument") for k in range(bars.count())} >= {
                "Clipper",
                "Grasper",
            }
            page.screenshot(path=str(ARTIFACTS / "ui-case-opened.png"), full_page=True)

            page.locator("#question textarea").fill("When does clipping and cutting happen?")
            page.locator("#question textarea").press("Enter")
            answer = page.locator("#chat").get_by_text("Clipping and cutting runs from")
            answer.wait_for(timeout=60_000)
            stamp = page.locator("#chat .seek").first
            stamp.wait_for()
            page.get_by_text("as the phase segmenter shows.").wait_for(timeout=30_000)
            seek_to = float((stamp.get_attribute("href") or "#t=0")[3:])
            page.screenshot(path=str(ARTIFACTS / "ui-answer.png"), full_page=True)
            assert 9 <= seek_to <= 13, page.locator("#chat").inner_text()  # clipping at 00:11
            page.locator("#case-video video").evaluate("v => v.currentTime = 0")
            stamp.click()
            assert abs(video_time(page) - seek_to) < 0.5
            assert "phase_segments" in page.locator("#evidence").inner_text()
            assert "Clipper" in page.locator("#evidence").inner_text()
            page.locator("#frames img").first.wait_for(timeout=30_000)  # boxes drawn on it
            page.get_by_text("Reasoning and tool trace").click()
            page.locator("#trace").get_by_text("The phase tool answers this directly.").wait_for()
            page.screenshot(path=str(ARTIFACTS / "ui-answer.png"), full_page=True)
            session_url = page.url
            assert "session=" in session_url

            page.reload()
            page.locator("#chat").get_by_text("Clipping and cutting runs from").wait_for(
                timeout=60_000
            )
            assert page.locator("#phase-ribbon .segment").count() == 3

            server.stop()
            server.start()
            page.goto(session_url)
            page.locator("#chat").get_by_text("When does clipping and cutting happen?").wait_for(
                timeout=60_000
            )
            assert "When does clipping" in page.locator("#sessions input").input_value()
            page.screenshot(path=str(ARTIFACTS / "ui-after-restart.png"), full_page=True)
        finally:
            server.stop()


def test_down_model_and_bad_upload_show_banners(browser: Any, tmp_path: Path) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    env = {
        "SURGAGENT_DATA_DIR": str(tmp_path / "data"),
        "SURGAGENT_PLANNER__BACKEND": "openai",
        "SURGAGENT_PLANNER__BASE_URL": "http://127.0.0.1:9/v1",
        "SURGAGENT_PLANNER__MAX_RETRIES": "0",
        "SURGAGENT_KNOWLEDGE__ENABLED": "false",
        "GRADIO_ANALYTICS_ENABLED": "False",
    }
    server = Server(env, free_port())
    server.start()
    try:
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(server.url)
        banner = page.locator("#banner [role=alert]")
        banner.wait_for(timeout=60_000)
        assert "planner model is not available" in banner.inner_text()
        assert "127.0.0.1:9" in banner.inner_text()
        status = page.locator("#tools").inner_text()
        assert "phase segmenter: unavailable" in status and "frames: available" in status
        broken = tmp_path / "broken.mp4"
        broken.write_bytes(os.urandom(4096))
        page.locator("#upload input[type=file]").set_input_files(str(broken))
        refused = page.locator("#banner").get_by_text("Upload refused")
        refused.wait_for(timeout=60_000)
        assert "broken.mp4 is not a readable video" in refused.inner_text()
        assert str(tmp_path) not in refused.inner_text()  # no server paths shown
        page.screenshot(path=str(ARTIFACTS / "ui-banners.png"), full_page=True)
        assert not list((tmp_path / "data" / "uploads").glob("*/*"))
    finally:
        server.stop()


def library_planner(request: dict[str, Any]) -> ScriptedReply:
    """Answer a library question citing one case, as the cohort planner does."""
    return ScriptedReply(content="Clipping came latest in [beta-00000002 00:11].")


def test_cohort_view_opens_a_case_at_the_clicked_time(
    engines: dict, browser: Any, tmp_path: Path
) -> None:
    from datetime import UTC, datetime

    from surgagent.library.store import LibraryStore
    from surgagent.library.types import (
        CaseIndex,
        CaseRecord,
        InstrumentIntervalRow,
        PhaseSegmentRow,
    )

    ARTIFACTS.mkdir(exist_ok=True)
    data, archive = tmp_path / "data", tmp_path / "archive"
    archive.mkdir()
    store = LibraryStore(data / "library.sqlite")
    cases = {"alpha-00000001": 7.0, "beta-00000002": 11.0, "gamma-00000003": 9.0}
    for case_id, clipper in cases.items():
        video = archive / f"{case_id.split('-')[0]}.mp4"
        shutil.copyfile(engines["video"], video)
        record = CaseRecord(
            id=case_id, path=video, kind="video", stamp="1:1", status="indexed",
            indexed_at=datetime.now(UTC), duration=20.0,
        )  # fmt: skip
        clipping = InstrumentIntervalRow(
            instrument="Clipper", start_s=clipper, end_s=clipper + 2, samples=3,
            mean_score=0.8, best_time_s=clipper, best_score=0.9, best_box=(0.1, 0.1, 0.3, 0.3),
        )  # fmt: skip
        phases = [PhaseSegmentRow(phase="Preparation", start_s=0, end_s=clipper - 1)]
        store.save(CaseIndex(case=record, phases=phases, instruments=[clipping]))
    with ScriptedOpenAIServer(library_planner) as model:
        env = {
            "SURGAGENT_DATA_DIR": str(data),
            "SURGAGENT_PLANNER__BACKEND": "openai",
            "SURGAGENT_PLANNER__BASE_URL": model.base_url,
            "SURGAGENT_PERCEPTION__ENABLED": "false",
            "SURGAGENT_KNOWLEDGE__ENABLED": "false",
            "SURGAGENT_PHASE__WEIGHTS": str(engines["phase"]),
            "GRADIO_ANALYTICS_ENABLED": "False",
        }
        server = Server(env, free_port())
        server.start()
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(server.url)
            page.get_by_role("tab", name="Cohort").click()
            points = page.locator("#cohort-plot circle.pt")
            points.first.wait_for(timeout=60_000)
            assert points.count() == 3
            page.locator("#cohort-measure").get_by_text("instrument first use").click()
            page.wait_for_function(
                "document.querySelectorAll('#cohort-table tr[data-case]').length === 3"
                " && document.querySelector('#cohort-table').innerText.includes('Clipper')",
                timeout=30_000,
            )
            page.screenshot(path=str(ARTIFACTS / "ui-cohort.png"), full_page=True)
            assert archive.as_posix() not in page.content()  # no server path on the page
            page.locator('#cohort-table tr[data-case="beta-00000002"]').click()

            page.locator("#case-video video").wait_for(timeout=60_000)
            page.wait_for_function(
                "Math.abs(document.querySelector('#case-video video').currentTime - 11) < 0.5",
                timeout=30_000,
            )
            assert page.locator("#phase-ribbon .segment").count() == 3  # the engines ran on it
            assert "beta-00000002" in page.locator("#known-cases input").input_value()
            src = page.evaluate("document.querySelector('#case-video video').currentSrc")
            assert archive.as_posix() not in src and str(data) not in src

            page.get_by_text("Case report").click()
            page.locator("#make-report").click()
            link = page.locator("#report-file a").first
            link.wait_for(timeout=60_000)
            assert "-report.html" in (link.get_attribute("href") or "")
            assert archive.as_posix() not in (link.get_attribute("href") or "")

            page.get_by_role("tab", name="Cohort").click()
            page.locator("#library-question textarea").fill("Where was clipping latest?")
            page.locator("#library-question textarea").press("Enter")
            cited = page.locator('#library-answer a[href^="#case="]')
            cited.wait_for(timeout=60_000)
            page.locator("#case-video video").evaluate("v => v.currentTime = 0")
            cited.click()
            page.wait_for_function(
                "Math.abs(document.querySelector('#case-video video').currentTime - 11) < 0.5",
                timeout=30_000,
            )
            page.screenshot(path=str(ARTIFACTS / "ui-cohort-opened.png"), full_page=True)
        finally:
            server.stop()
