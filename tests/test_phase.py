"""The phase room: the segmenter trained on synthetic videos, its tools and its CLI.

Each synthetic video shows four phases in a fixed order with varying durations; every phase
has its own colour and texture (plus noise). A random-init backbone's features are enough for
the MS-TCN head to learn the phases, so a held-out video tests generalisation for real.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.utils.function_calling import convert_to_openai_tool
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode
from typer.testing import CliRunner

from surgagent.agent.errors import UserError
from surgagent.cli.phase import app as phase_app
from surgagent.tools.cache import Case, CaseCache
from surgagent.tools.errors import CaseError, ConfigError, ToolInputError
from surgagent.tools.phase.annotations import (
    align_labels,
    read_cholec80_phase_file,
    write_cholec80_phase_file,
)
from surgagent.tools.phase.engine import PhaseSegmenter
from surgagent.tools.phase.model import (
    BackboneSpec,
    FeatureExtractor,
    HeadConfig,
    forward_transitions,
    learned_transitions,
    viterbi,
)
from surgagent.tools.phase.tools import make_phase_tools, phase_at, phase_segments
from surgagent.tools.phase.train import TrainProgress, train_segmenter
from surgagent.tools.phase.types import PhaseAtResult, PhasePrediction, PhaseSegmentsResult
from surgagent.tools.video.engine import open_case
from tests.fixtures.videos import random_bytes_file, write_frame_folder, write_video

PHASES = ["Access", "Dissection", "Clipping", "Closure"]
COLOURS = [(200, 60, 60), (60, 180, 80), (70, 90, 210), (210, 200, 60)]
FPS = 25
SMALL_HEAD = HeadConfig(stages=2, layers=6, channels=32)
# Phase durations (s) per video: the order is fixed, the lengths vary.
TRAIN = {
    "video01": [8.3, 15.1, 9.6, 12.2],
    "video02": [12.5, 10.2, 14.8, 8.4],
    "video03": [6.4, 18.7, 7.3, 15.5],
}
HELD_OUT = ("video04", [10.6, 13.3, 11.1, 9.9])
FLASH = (24.5, 32.0)  # in the held-out video: 7.5 s inside Clipping that look like Access


def painter(bounds: np.ndarray, seed: int, flash: tuple[float, float] | None = None) -> Any:
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:48, 0:64]
    textures = [ys % 8 < 4, xs % 8 < 4, (xs // 6 + ys // 6) % 2 == 0, (xs + ys) % 10 < 5]

    def paint(index: int, width: int, height: int) -> np.ndarray:
        phase = int(np.searchsorted(bounds, index, side="right"))
        if flash is not None and flash[0] * FPS <= index < flash[1] * FPS:
            phase = 0
        frame = np.empty((height, width, 3), np.float32)
        frame[:] = COLOURS[phase]
        frame *= np.where(textures[phase], 1.0, 0.6)[..., None]
        frame += rng.normal(0, 20, frame.shape).astype(np.float32)
        return np.clip(frame, 0, 255).astype(np.uint8)

    return paint


def make_case(
    video: Path, annotation: Path, durations: list[float], seed: int, flash: Any = None
) -> None:
    bounds = np.cumsum([round(d * FPS) for d in durations])[:-1]
    total = round(sum(durations) * FPS)
    paint = painter(bounds, seed, flash)
    write_video(video, fps=FPS, duration=total / FPS, size=(64, 48), frame_fn=paint)
    labels = np.searchsorted(bounds, np.arange(total), side="right")
    write_cholec80_phase_file(annotation, labels, PHASES, fps=FPS, video_fps=FPS)


@dataclass
class Trained:
    root: Path
    cache: CaseCache
    checkpoint: Path
    events: list[TrainProgress]
    held_out: Path

    @property
    def videos(self) -> Path:
        return self.root / "videos"

    @property
    def annotations(self) -> Path:
        return self.root / "annotations"


@pytest.fixture(scope="module")
def trained_segmenter(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    root = tmp_path_factory.mktemp("phase")
    for seed, (name, durations) in enumerate(TRAIN.items()):
        make_case(
            root / "videos" / f"{name}.mp4",
            root / "annotations" / f"{name}-phase.txt",
            durations,
            seed,
        )
    name, durations = HELD_OUT
    held_out = root / "test" / f"{name}.mp4"
    make_case(held_out, root / "annotations" / f"{name}-phase.txt", durations, 9, FLASH)
    cache = CaseCache(root / "cache")
    events: list[TrainProgress] = []
    checkpoint = train_segmenter(
        root / "videos",
        root / "annotations",
        out=root / "phase.pt",
        backbone="resnet18",
        epochs=30,
        vocabulary=PHASES,
        progress=events.append,
        cache=cache,
        image_size=64,
        head=SMALL_HEAD,
        lr=5e-3,
    )
    return Trained(root, cache, checkpoint, events, held_out)


@pytest.fixture(scope="module")
def segmenter(trained_segmenter: Trained) -> PhaseSegmenter:
    return PhaseSegmenter.from_checkpoint(trained_segmenter.checkpoint, vocabulary=PHASES)


def gold_labels(trained_segmenter: Trained, name: str, count: int) -> np.ndarray:
    labels, fps = read_cholec80_phase_file(
        trained_segmenter.annotations / f"{name}-phase.txt", PHASES
    )
    return align_labels(labels, fps, count, 1.0)


def count_av_open(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    opened: list[str] = []
    real_open = av.open

    def counting_open(*args: Any, **kwargs: Any) -> Any:
        opened.append(str(args[0]))
        return real_open(*args, **kwargs)

    monkeypatch.setattr(av, "open", counting_open)
    return opened


# -- annotations -----------------------------------------------------------------------------


def test_phase_files_round_trip_at_25_and_1_fps(tmp_path: Path) -> None:
    labels = np.repeat([0, 1, 3], [20, 36, 4])
    path = write_cholec80_phase_file(tmp_path / "v-phase.txt", labels, PHASES, fps=25)
    lines = path.read_text().splitlines()
    assert lines[0] == "Frame\tPhase" and lines[1] == "0\tAccess" and lines[-1] == "59\tClosure"
    read, fps = read_cholec80_phase_file(path, PHASES)
    assert fps == 25.0 and read.tolist() == labels.tolist()
    per_second = align_labels(read, fps, 3, 1.0)
    assert per_second.tolist() == [0, 1, 1]  # frames 0, 25, 50
    path = write_cholec80_phase_file(tmp_path / "p.txt", per_second, PHASES, fps=1.0)
    assert path.read_text().splitlines()[2] == "25\tDissection"
    assert read_cholec80_phase_file(path, PHASES)[1] == 1.0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("Frame\tPhase\n", "covers an empty range"),
        ("Frame\tPhase\n0\tAccess\n1\tDisection\n", "Did you mean 'Dissection'"),
        ("Frame\tPhase\n0\tAccess\n1\n", "is not 'frame<TAB>phase'"),
        ("Frame\tPhase\n0\tAccess\n1\tAccess\n5\tAccess\n", "constant step"),
    ],
    ids=["empty", "unknown-phase", "bad-row", "uneven"],
)
def test_bad_phase_files_raise_case_error(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad-phase.txt"
    path.write_text(text)
    with pytest.raises(CaseError, match=message):
        read_cholec80_phase_file(path, PHASES)


# -- training and prediction -----------------------------------------------------------------


def test_training_reports_progress_and_learns(
    trained_segmenter: Trained, segmenter: PhaseSegmenter
) -> None:
    stages = {event.stage for event in trained_segmenter.events}
    assert stages == {"features", "train"}
    epochs = [event for event in trained_segmenter.events if event.stage == "train"]
    assert [event.done for event in epochs] == list(range(1, 31))
    assert epochs[-1].loss is not None and epochs[0].loss is not None
    assert epochs[-1].loss < epochs[0].loss
    assert segmenter.vocabulary == PHASES
    prior = np.asarray(segmenter.spec.transitions)
    assert prior.shape == (4, 4) and np.allclose(prior.sum(1), 1.0)
    assert prior[1, 2] > prior[2, 1]  # learned from the annotations: forward moves are likely


def test_held_out_video_is_recognised_in_order(
    trained_segmenter: Trained, segmenter: PhaseSegmenter
) -> None:
    case = open_case(trained_segmenter.held_out, trained_segmenter.cache)
    prediction = segmenter.predict(case, trained_segmenter.cache)
    gold = gold_labels(trained_segmenter, HELD_OUT[0], len(prediction.labels))
    labels = np.asarray(prediction.labels[: len(gold)])
    assert (labels == gold).mean() > 0.85  # chance is 0.25
    assert np.all(np.diff(prediction.labels) >= 0)  # Viterbi keeps the procedure's order
    # Without it, the flash that looks like Access makes the per-second argmax jump back.
    raw = np.asarray(segmenter.predict(case, trained_segmenter.cache, smoothing=False).labels)
    assert np.any(np.diff(raw) < 0) and (raw[: len(gold)] == gold).mean() < (labels == gold).mean()
    assert [s.phase for s in prediction.segments] == PHASES
    assert prediction.segments[0].start == 0.0
    assert prediction.segments[-1].end == pytest.approx(case.duration)
    assert all(0.25 < s.confidence <= 1.0 for s in prediction.segments)
    assert len(prediction.probabilities) == len(prediction.labels) == 45
    assert np.allclose(np.sum(prediction.probabilities, axis=1), 1.0, atol=1e-3)


def test_features_and_predictions_are_cached(
    trained_segmenter: Trained, segmenter: PhaseSegmenter, monkeypatch: pytest.MonkeyPatch
) -> None:
    case = open_case(trained_segmenter.held_out, trained_segmenter.cache)
    first = segmenter.predict(case, trained_segmenter.cache)
    opened = count_av_open(monkeypatch)
    again = PhaseSegmenter.from_checkpoint(trained_segmenter.checkpoint)
    assert again.predict(case, trained_segmenter.cache) == first
    raw = again.predict(
        case, trained_segmenter.cache, smoothing=False
    )  # new decoding, cached features
    assert opened == [] and not raw.smoothed and raw.probabilities == first.probabilities
    features = list(trained_segmenter.cache.case_dir(case).glob("phase-features/*.npy"))
    assert len(features) == 1 and np.load(features[0]).shape == (45, 512)
    assert not list(trained_segmenter.cache.root.rglob("*.tmp"))


def test_viterbi_removes_flicker_and_backward_jumps() -> None:
    truth = np.repeat([0, 1, 2], [20, 20, 20])
    probs = np.full((60, 3), 0.05)
    probs[np.arange(60), truth] = 0.9
    probs[[25, 26, 45], :] = [[0.9, 0.05, 0.05], [0.9, 0.05, 0.05], [0.05, 0.9, 0.05]]
    probs /= probs.sum(1, keepdims=True)
    assert np.any(np.diff(probs.argmax(1)) < 0)  # per-sample argmax jumps back
    for transitions, initial in (
        forward_transitions(3, mean_run=20),
        learned_transitions([truth, truth[5:]], 3),
    ):
        assert viterbi(probs, transitions, initial).tolist() == truth.tolist()


def test_resume_continues_the_checkpoint(trained_segmenter: Trained, tmp_path: Path) -> None:
    args: dict[str, Any] = dict(
        out=tmp_path / "resume.pt",
        backbone="resnet18",
        vocabulary=PHASES,
        cache=trained_segmenter.cache,
        image_size=64,
        head=SMALL_HEAD,
        lr=5e-3,
    )
    events: list[TrainProgress] = []
    train_segmenter(trained_segmenter.videos, trained_segmenter.annotations, epochs=2, **args)
    train_segmenter(
        trained_segmenter.videos,
        trained_segmenter.annotations,
        epochs=4,
        resume=True,
        progress=events.append,
        **args,
    )
    assert [e.done for e in events if e.stage == "train"] == [3, 4]
    with pytest.raises(ConfigError, match="another vocabulary, backbone or head"):
        train_segmenter(
            trained_segmenter.videos,
            trained_segmenter.annotations,
            epochs=5,
            resume=True,
            **{**args, "head": HeadConfig(stages=1, layers=2, channels=8)},
        )


def test_frame_folder_cases_work(segmenter: PhaseSegmenter, tmp_path: Path) -> None:
    cache = CaseCache(tmp_path / "cache")
    case = open_case(write_frame_folder(tmp_path / "frames", count=5, fps=1.0), cache)
    prediction = segmenter.predict(case, cache, smoothing=False)
    assert len(prediction.labels) == 5 and prediction.duration == 5.0


# -- errors ----------------------------------------------------------------------------------


def test_checkpoint_errors(trained_segmenter: Trained, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no phase-segmenter weights at"):
        PhaseSegmenter.from_checkpoint(tmp_path / "absent.pt")
    with pytest.raises(ConfigError, match="not a readable phase checkpoint"):
        PhaseSegmenter.from_checkpoint(random_bytes_file(tmp_path / "noise.pt"))
    cut = tmp_path / "cut.pt"
    cut.write_bytes(trained_segmenter.checkpoint.read_bytes()[:5000])
    with pytest.raises(ConfigError, match="not a readable phase checkpoint"):
        PhaseSegmenter.from_checkpoint(cut)
    with pytest.raises(ConfigError, match="trained for the phases Access, Dissection"):
        PhaseSegmenter.from_checkpoint(trained_segmenter.checkpoint, vocabulary=PHASES[:3])
    import torch

    payload = torch.load(trained_segmenter.checkpoint, weights_only=True)
    spec = json.loads(payload["spec"])
    spec["vocabulary"] = PHASES[:3]
    payload["spec"] = json.dumps(spec)
    torch.save(payload, tmp_path / "edited.pt")
    with pytest.raises(ConfigError, match="predicts 4 classes but the vocabulary lists 3"):
        PhaseSegmenter.from_checkpoint(tmp_path / "edited.pt")
    torch.save({"format": "something-else"}, tmp_path / "other.pt")
    with pytest.raises(ConfigError, match="not a phase-segmenter checkpoint"):
        PhaseSegmenter.from_checkpoint(tmp_path / "other.pt")


def test_training_input_errors(trained_segmenter: Trained, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no such folder"):
        train_segmenter(tmp_path / "absent", trained_segmenter.annotations, out=tmp_path / "x.pt")
    with pytest.raises(ConfigError, match="has a phase file"):
        train_segmenter(trained_segmenter.videos, tmp_path / "empty", out=tmp_path / "x.pt")
    with pytest.raises(ConfigError, match="at least 1 epoch"):
        train_segmenter(
            trained_segmenter.videos, trained_segmenter.annotations, out=tmp_path / "x.pt", epochs=0
        )
    with pytest.raises(ConfigError, match="repeat"):
        train_segmenter(
            trained_segmenter.videos,
            trained_segmenter.annotations,
            out=tmp_path / "x.pt",
            vocabulary=["a", "a"],
        )
    # The annotations name phases outside Cholec80's vocabulary (the default).
    with pytest.raises(CaseError, match="unknown phase 'Access'"):
        train_segmenter(
            trained_segmenter.videos, trained_segmenter.annotations, out=tmp_path / "x.pt"
        )
    assert not (tmp_path / "x.pt").exists()


def build(spec: BackboneSpec) -> int:
    """Build the backbone (the feature size needs it) and return its feature size."""
    return FeatureExtractor(spec).feature_dim


def test_backbone_errors(trained_segmenter: Trained, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="Did you mean 'resnet18'"):
        build(BackboneSpec(name="resnet81"))
    with pytest.raises(ConfigError, match="neither a file nor weights of resnet18"):
        build(BackboneSpec(name="resnet18", weights="IMAGENET9K"))
    spec = BackboneSpec(name="mobilenet_v3_small", image_size=32, fingerprint=[1.0] * 18)
    with pytest.raises(ConfigError, match="other features than the one the phase head was"):
        build(spec)


def test_local_state_dict_weights(tmp_path: Path) -> None:
    import torch
    from torchvision.models import mobilenet_v3_small

    torch.manual_seed(5)
    torch.save(mobilenet_v3_small().state_dict(), tmp_path / "backbone.pth")
    from_file = FeatureExtractor(
        BackboneSpec(name="mobilenet_v3_small", weights=str(tmp_path / "backbone.pth"))
    )
    seeded = FeatureExtractor(BackboneSpec(name="mobilenet_v3_small", seed=5))
    assert from_file.feature_dim == seeded.feature_dim == 576
    assert from_file.spec.fingerprint == pytest.approx(seeded.spec.fingerprint)
    assert "backbone-" in from_file.cache_key() and from_file.cache_key() != seeded.cache_key()
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(ConfigError, match="lacks .* weights of a mobilenet_v3_small backbone"):
        build(BackboneSpec(name="mobilenet_v3_small", weights=str(tmp_path / "other.pth")))


# -- the tools -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ctx:
    case: Case
    cache: CaseCache
    segmenter: Any = None


def run_tool(ctx: Ctx, name: str, args: dict[str, Any]) -> ToolMessage:
    graph = StateGraph(MessagesState, context_schema=Ctx)
    graph.add_node("tools", ToolNode(make_phase_tools(), handle_tool_errors=(ToolInputError,)))
    graph.add_edge(START, "tools")
    graph.add_edge("tools", END)
    call = AIMessage("", tool_calls=[{"name": name, "args": args, "id": "c1"}])
    out = graph.compile().invoke({"messages": [HumanMessage("Phases?"), call]}, context=ctx)
    reply = out["messages"][-1]
    assert isinstance(reply, ToolMessage)
    return reply


@pytest.fixture
def ctx(trained_segmenter: Trained, segmenter: PhaseSegmenter) -> Ctx:
    return Ctx(
        open_case(trained_segmenter.held_out, trained_segmenter.cache),
        trained_segmenter.cache,
        segmenter,
    )


def test_tool_schemas_are_for_the_planner() -> None:
    at = convert_to_openai_tool(phase_at)["function"]
    assert set(at["parameters"]["properties"]) == {"time"}  # runtime is injected
    assert "mm:ss" in at["parameters"]["properties"]["time"]["description"]
    segments = convert_to_openai_tool(phase_segments)["function"]
    assert set(segments["parameters"]["properties"]) == {"phase"}
    assert "how long" in segments["description"]


def test_phase_at_through_a_tool_node(ctx: Ctx) -> None:
    reply = run_tool(ctx, "phase_at", {"time": "00:30"})
    assert reply.status != "error"
    assert reply.text.startswith("At 00:30 the phase is Clipping (confidence 0.")
    result = reply.artifact
    assert isinstance(result, PhaseAtResult) and result.phase == "Clipping"
    assert result.segment.start <= 30.0 < result.segment.end
    (evidence,) = result.evidence()
    assert evidence.kind == "segment" and evidence.tool == "phase_at"
    assert (evidence.time, evidence.end) == (result.segment.start, result.segment.end)
    numeric = run_tool(ctx, "phase_at", {"time": 3})
    assert "Access" in numeric.text


def test_phase_segments_through_a_tool_node(ctx: Ctx) -> None:
    reply = run_tool(ctx, "phase_segments", {})
    assert reply.text.startswith("4 phase segments in the case (00:45 long): Access 00:00-")
    result = reply.artifact
    assert isinstance(result, PhaseSegmentsResult) and result.phase is None
    assert [e.kind for e in result.evidence()] == ["segment"] * 4
    one = run_tool(ctx, "phase_segments", {"phase": "clipping"})
    assert one.text.startswith("Clipping: 1 segment(s), ")
    (segment,) = one.artifact.segments
    assert segment.phase == "Clipping" and segment.duration == segment.end - segment.start
    assert abs(segment.start - 24.0) <= 2 and abs(segment.end - 35.0) <= 2


@pytest.mark.parametrize(
    ("name", "args", "message"),
    [
        ("phase_at", {"time": "99:00"}, "past the end of the case (00:45)"),
        ("phase_at", {"time": "soon"}, "is not a time"),
        ("phase_segments", {"phase": "Clippin"}, "Did you mean 'Clipping'? The phases are"),
    ],
)
def test_tool_input_errors_come_back_as_error_messages(
    ctx: Ctx, name: str, args: dict[str, Any], message: str
) -> None:
    reply = run_tool(ctx, name, args)
    assert reply.status == "error" and message in reply.text


def test_both_tools_in_one_turn_share_one_prediction(trained_segmenter: Trained, ctx: Ctx) -> None:
    fresh = PhaseSegmenter.from_checkpoint(trained_segmenter.checkpoint)
    graph = StateGraph(MessagesState, context_schema=Ctx)
    graph.add_node("tools", ToolNode(make_phase_tools()))
    graph.add_edge(START, "tools")
    graph.add_edge("tools", END)
    calls = [
        {"name": "phase_at", "args": {"time": "40"}, "id": "a"},
        {"name": "phase_segments", "args": {"phase": "closure"}, "id": "b"},
    ]
    messages = [HumanMessage("When does closure start?"), AIMessage("", tool_calls=calls)]
    out = graph.compile().invoke({"messages": messages}, context=Ctx(ctx.case, ctx.cache, fresh))
    at, segments = out["messages"][-2:]
    assert "phase is Closure" in at.text and segments.text.startswith("Closure: 1 segment(s)")
    assert at.artifact.segment == segments.artifact.segments[0]


def test_tools_without_a_segmenter_say_so(ctx: Ctx) -> None:
    reply = run_tool(Ctx(ctx.case, ctx.cache), "phase_segments", {})
    assert reply.status == "error" and "no phase model is configured" in reply.text


# -- the CLI ---------------------------------------------------------------------------------


def test_cli_predict_and_eval(trained_segmenter: Trained, tmp_path: Path) -> None:
    runner = CliRunner()
    preds = tmp_path / "preds"
    done = runner.invoke(
        phase_app,
        [
            "predict",
            str(trained_segmenter.held_out),
            "--weights",
            str(trained_segmenter.checkpoint),
            "--json",
            "--out",
            str(preds / "video04-phase.txt"),
        ],
    )
    assert done.exit_code == 0, done.output
    prediction = PhasePrediction.model_validate_json(done.stdout)
    assert [s.phase for s in prediction.segments] == PHASES
    gold = tmp_path / "gold"
    gold.mkdir()
    shutil.copy(trained_segmenter.annotations / "video04-phase.txt", gold)
    scores = {}
    for variant in ("matlab", "intended", "strict"):
        done = runner.invoke(
            phase_app,
            [
                "eval",
                "--gold",
                str(gold),
                "--pred",
                str(preds),
                "--phases",
                ",".join(PHASES),
                "--variant",
                variant,
                "--json",
            ],
        )
        assert done.exit_code == 0, done.output
        scores[variant] = json.loads(done.stdout)
        assert scores[variant]["variant"] == variant
    assert scores["strict"]["accuracy"] <= scores["matlab"]["accuracy"] <= 100
    assert scores["strict"]["accuracy"] > 85
    table = runner.invoke(
        phase_app,
        ["eval", "--gold", str(gold), "--pred", str(preds), "--phases", ",".join(PHASES)],
    )
    assert table.exit_code == 0 and "variant matlab" in table.stdout and "accuracy" in table.stdout
    missing = runner.invoke(
        phase_app, ["eval", "--gold", str(trained_segmenter.annotations), "--pred", str(preds)]
    )
    assert isinstance(missing.exception, UserError) and "3 of 4 gold videos" in str(
        missing.exception
    )


def test_cli_train(trained_segmenter: Trained, tmp_path: Path) -> None:
    done = CliRunner().invoke(
        phase_app,
        [
            "train",
            "--videos",
            str(trained_segmenter.videos),
            "--annotations",
            str(trained_segmenter.annotations),
            "--out",
            str(tmp_path / "cli.pt"),
            "--epochs",
            "2",
            "--image-size",
            "32",
            "--backbone",
            "mobilenet_v3_small",
            "--phases",
            ",".join(PHASES),
            "--prior",
            "forward",
            "--json",
        ],
    )
    assert done.exit_code == 0, done.output
    summary = json.loads(done.stdout)
    assert summary["epochs"] == 2 and Path(summary["checkpoint"]).is_file()
    loaded = PhaseSegmenter.from_checkpoint(tmp_path / "cli.pt")
    assert loaded.spec.backbone.name == "mobilenet_v3_small" and loaded.spec.prior == "forward"
    transitions, _ = loaded.transition_prior()
    assert np.all(np.tril(transitions, -1) < 1e-5)  # the forward prior hardly ever goes back
