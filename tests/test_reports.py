"""Case reports: a reviewed synthetic case in markdown, HTML and PDF; the sample case bare.

The reviewed case is the tool-chain test's bordered-phase video (CalotTriangleDissection
00:00-00:11 with a Hook, ClippingCutting 00:11-00:20 with a Clipper, GallbladderDissection
00:20-00:30; a Grasper throughout). The engines are real: the session's tiny detector and a
segmenter trained here, named in the settings as a user would. The session is made by a
scripted planner through the real graph and kept in the SQLite sessions file; perception
answers from a scripted OpenAI-compatible server.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import pytest
from pypdf import PdfReader
from typer.testing import CliRunner

from surgagent.agent.api import SurgicalAgent
from surgagent.agent.backends import load_backend
from surgagent.agent.errors import UserError
from surgagent.agent.settings import get_settings, reset_settings
from surgagent.agent.testing.openai_server import ScriptedOpenAIServer, ScriptedReply
from surgagent.agent.testing.scripted import ScriptedChatModel, call, say
from surgagent.cli.main import app
from surgagent.reports import (
    CaseReport,
    Statement,
    build_report,
    render_html,
    render_markdown,
    render_pdf,
)
from surgagent.reports.model import SURGEON_MARK, AnswerItem, CitationItem
from surgagent.tools.base import format_time
from surgagent.tools.cache import CaseCache
from tests.fixtures.cli import REPO, run_cli
from tests.fixtures.engines import IMGSZ, TinyDetector
from tests.test_tool_chain import CASE, make_case, train_chain_segmenter

SAMPLE = REPO / "examples" / "sample_case" / "sample_lapchole.mp4"
SCRIPT = "<script>alert('x')</script>"
FIRST_ANSWER = f"At [00:15] the detector sees a clipper and a grasper. {SCRIPT}"
CVS_REPLY = "Criterion 1: No; Criterion 2: No; Criterion 3: Yes."
SECTIONS = [
    "Procedure",
    "Findings",
    "Phases",
    "Critical view of safety",
    "Instruments",
    "Events to review",
]


@dataclass
class Chain:
    video: Path
    detector: Path
    segmenter: Path


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory, tiny_detector: TinyDetector) -> Chain:
    root = tmp_path_factory.mktemp("report-chain")
    checkpoint = train_chain_segmenter(root, CaseCache(root / "cache"))
    video = root / "case" / "lapchole.mp4"
    make_case(video, root / "case" / "gold-phase.txt", CASE, seed=7)
    return Chain(video, tiny_detector.weights, checkpoint)


@pytest.fixture
def reviewed(chain: Chain, monkeypatch: pytest.MonkeyPatch) -> SurgicalAgent:
    """Engines named in the settings, and session ``review`` of two turns about the case."""
    monkeypatch.setenv("SURGAGENT_DETECTOR__WEIGHTS", str(chain.detector))
    monkeypatch.setenv("SURGAGENT_DETECTOR__IMGSZ", str(IMGSZ))
    monkeypatch.setenv("SURGAGENT_PHASE__WEIGHTS", str(chain.segmenter))
    monkeypatch.setenv("SURGAGENT_KNOWLEDGE__ENABLED", "false")
    reset_settings()
    planner = ScriptedChatModel(
        replies=[
            call("instruments_at", time="00:15"),
            say(FIRST_ANSWER),
            call("ask_perception", question="Is CVS achieved?", task="cvs", times=["00:09"]),
            say("At [00:09] only criterion 3 is met: not achieved. Look again at [00:27]."),
        ]
    )
    with ScriptedOpenAIServer([ScriptedReply(content=CVS_REPLY)]) as server:
        settings = get_settings(
            perception={"backend": "openai", "base_url": server.base_url, "max_retries": 0}
        )
        agent = SurgicalAgent.from_settings(
            settings,
            planner_model=planner,
            vision_model=load_backend(settings.perception, role="perception"),
            sessions="sqlite",
        )
        agent.invoke(
            "Which instruments are in view at 00:15?", case=chain.video, thread_id="review"
        )
        agent.invoke("Is the critical view of safety achieved?", thread_id="review")
    return agent


def statements(report: CaseReport, title: str) -> list[Statement]:
    (section,) = [s for s in report.note if s.title == title]
    return section.statements


def test_report_model_holds_engines_session_and_a_traceable_draft(
    reviewed: SurgicalAgent, chain: Chain
) -> None:
    report = build_report(reviewed, chain.video, thread_id="review")

    assert [s.title for s in report.note] == SECTIONS
    for section in report.note:  # every sentence names evidence or is left to the surgeon
        assert all(s.refs or s.surgeon for s in section.statements)
    assert report.phases is not None and report.instruments is not None
    phases = [(p.phase, p.start, p.end) for p in report.phases]
    assert [name for name, _, _ in phases] == [
        "CalotTriangleDissection",
        "ClippingCutting",
        "GallbladderDissection",
    ]
    assert abs(phases[1][1] - 11) <= 1 and abs(phases[1][2] - 20) <= 1
    clipper = [i for i in report.instruments if i.instrument == "Clipper"]
    assert clipper and abs(clipper[0].start - 11) <= 1 and abs(clipper[-1].end - 19) <= 1.5
    assert {i.instrument for i in report.instruments} == {"Grasper", "Hook", "Clipper"}
    assert all(f.png and f.png.startswith(b"\x89PNG") for f in report.figures)

    reasons = {r: f for f in report.key_frames for r in f.reasons}
    assert "Clipper first seen" in reasons and "cited in turn 1" in reasons
    assert abs(reasons["cited in turn 1"].time - 15) <= 0.5
    assert "Clipper" in " ".join(reasons["cited in turn 1"].detections or [])
    assert all(f.jpeg and f.jpeg.startswith(b"\xff\xd8") for f in report.key_frames)

    (cvs, own) = statements(report, "Critical view of safety")
    assert cvs.text.startswith("At 00:09, the perception model read the critical view as not")
    assert "before the clipper is first seen" in cvs.text and own.surgeon
    assert [r.time for r in cvs.refs if r.time is not None][0] == pytest.approx(9, abs=0.2)
    (turn_1, turn_2) = report.turns
    assert turn_1.answer == FIRST_ANSWER and turn_2.status == "answered"
    events = " ".join(s.text for s in statements(report, "Events to review"))
    assert "Turn 2, unsupported claim: The answer cites [00:27]" in events
    assert statements(report, "Procedure")[1].surgeon  # no procedure is invented


def test_report_in_markdown_html_and_pdf(
    reviewed: SurgicalAgent, chain: Chain, tmp_path: Path
) -> None:
    runner = CliRunner()
    video = str(chain.video)
    md = runner.invoke(app, ["report", video, "--session", "review"])
    assert md.exit_code == 0, md.output
    text = md.stdout
    for title in SECTIONS:
        assert f"\n### {title}\n" in text
    uri = chain.video.resolve().as_uri()
    assert f"[00:15]({uri}#t=15.0)" in text  # the cited moment links into the video
    assert "| ClippingCutting | [00:1" in text and SURGEON_MARK in text
    assert "&lt;script&gt;" in text and SCRIPT not in text
    assert "### Turn 2: Is the critical view of safety achieved?" in text

    page = tmp_path / "review.html"
    done = runner.invoke(app, ["report", video, "-s", "review", "-f", "html", "-o", str(page)])
    assert done.exit_code == 0, done.output
    html = page.read_text(encoding="utf-8")
    assert html.count('src="data:image/png;base64,') == 2  # phase and instrument timelines
    assert html.count('src="data:image/jpeg;base64,') >= 3  # key frames
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in html
    assert "<script" not in html and "Content-Security-Policy" in html
    assert (
        f'href="{uri}#t=15.0"' in html and f'<video controls preload="metadata" src="{uri}"' in html
    )

    pdf = tmp_path / "out" / "review.pdf"
    done = runner.invoke(app, ["report", video, "-s", "review", "-f", "pdf", "-o", str(pdf)])
    assert done.exit_code == 0, done.output
    reader = PdfReader(pdf)
    pages = [p.extract_text() for p in reader.pages]
    whole = " ".join(" ".join(pages).split())
    assert len(pages) >= 2 and pages[0].startswith("Case report: lapchole-")
    for expected in (
        "Operative note (draft)",
        "Critical view of safety",
        "ClippingCutting",
        "Clipper first seen",
        "At 00:09, the perception model read the critical view as not achieved",
        SURGEON_MARK,
        "Turn 1: Which instruments are in view at 00:15?",
        SCRIPT,  # shown as text
    ):
        assert expected in whole, expected
    assert sum(len(p.images) for p in reader.pages) >= 5  # 2 timelines + key frames


def test_markdown_out_keeps_its_pictures_beside_it(
    reviewed: SurgicalAgent, chain: Chain, tmp_path: Path
) -> None:
    out = tmp_path / "notes" / "case.md"
    done = CliRunner().invoke(app, ["report", str(chain.video), "--out", str(out)])
    assert done.exit_code == 0, done.output
    text = out.read_text()
    assert "![Phase timeline](case_files/phase-timeline.png)" in text
    assert (out.parent / "case_files" / "instrument-timeline.png").read_bytes()[:4] == b"\x89PNG"
    assert "*No session was given (--session).*" in text

    done = CliRunner().invoke(app, ["report", str(chain.video), "--format", "json"])
    assert done.exit_code == 0, done.output
    again = CaseReport.model_validate_json(done.stdout)  # pictures travel as base64
    assert again.figures[0].png is not None and again.figures[0].png.startswith(b"\x89PNG")
    served = build_report(reviewed, chain.video, video_url="/cases/lapchole/video")
    assert served.case.link(15) == "/cases/lapchole/video#t=15.0"


def test_unknown_session_or_case_is_one_clear_error(reviewed: SurgicalAgent, chain: Chain) -> None:
    with pytest.raises(UserError, match="session 'nope' is unknown; recent sessions: review"):
        build_report(reviewed, chain.video, thread_id="nope")
    with pytest.raises(UserError, match="session 'review' is about case 'lapchole-"):
        build_report(reviewed, SAMPLE, thread_id="review")
    done = run_cli("report", str(chain.video), "--session", "nope")
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.startswith("error: session 'nope' is unknown")
    assert len(done.stderr.strip().splitlines()) <= 2  # one sentence (wrapped at most once)
    done = run_cli("report", "no-such-case.mp4", "--format", "pdf")
    assert done.returncode == 1 and "no such file or folder" in done.stderr
    assert "Traceback" not in done.stderr


def test_sample_case_without_engines_says_so(tmp_path: Path) -> None:
    runner = CliRunner()
    done = runner.invoke(app, ["report", str(SAMPLE), "-f", "html"])
    assert done.exit_code == 0, done.output
    assert "No phase segmenter is configured (set phase.weights)" in done.stdout
    assert "No instrument detector is configured (set detector.weights)" in done.stdout
    assert "data:image/png" not in done.stdout
    pdf = tmp_path / "sample.pdf"
    assert runner.invoke(app, ["report", str(SAMPLE), "-f", "pdf", "-o", str(pdf)]).exit_code == 0
    text = " ".join(PdfReader(pdf).pages[0].extract_text().split())
    assert "No phase segmenter is configured, so no phase was timed." in text


def handmade(answer: str) -> CaseReport:
    from surgagent.reports.model import CaseInfo, EngineInfo, NoteSection, Ref

    case = CaseInfo(
        id="c1",
        source="/data/c 1.mp4",
        kind="video",
        duration=60,
        fps=25,
        width=320,
        height=240,
        content_hash="ab" * 32,
        video_uri="file:///data/c%201.mp4",
    )
    cited = Ref(kind="passage", label="passage sages-cvs-1")
    return CaseReport(
        title="Case report: c1",
        created="2025-01-01T00:00:00+00:00",
        version="0",
        case=case,
        session_id='s"1<b>',
        engines=[EngineInfo(role="detector", model_id=None, note="not configured")],
        note=[NoteSection(title="Findings", statements=[Statement(text=answer, refs=[cited])])],
        figures=[],
        phases=None,
        instruments=None,
        key_frames=[],
        turns=[
            AnswerItem(
                turn=1,
                question="Q <i>?",
                answer=answer,
                status="answered",
                citations=[
                    CitationItem(passage_id="sages-cvs-1", title="T", url="javascript:alert(1)")
                ],
            )
        ],
    )


def test_every_session_text_is_data_in_every_format() -> None:
    hostile = '<img src=x onerror="alert(1)"> & </div>'
    report = handmade(hostile)
    html = render_html(report)
    assert "<img src=x" not in html and "javascript:" not in html and "<i>" not in html
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt; &amp; &lt;/div&gt;" in html
    assert "s&quot;1&lt;b&gt;" in html
    assert "<img src=x" not in render_markdown(report)
    text = PdfReader(io.BytesIO(render_pdf(report))).pages[0].extract_text()
    assert hostile in " ".join(text.split())


def test_a_statement_without_evidence_must_be_left_to_the_surgeon() -> None:
    with pytest.raises(ValueError, match="names no evidence"):
        Statement(text="The cystic artery was clipped.")
    assert Statement(text="Complications:", surgeon=True).surgeon
    assert format_time(59.6) == "01:00"  # the times the reports print
