"""The detector room: training that learns, detection, ByteTrack timelines, tools, converters, CLI.

One tiny YOLO is trained once per session (`tiny_detector`, about 70 s on 2 cores, to
convergence: see tests/fixtures/engines.py) on synthetic shapes; every test that needs a
detector uses it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.utils.function_calling import convert_to_openai_tool
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode
from PIL import Image
from typer.testing import CliRunner

from surgagent.cli.detector import app as detector_app
from surgagent.graphs.tool_calls import build_tools_node
from surgagent.tools.base import ToolRecord
from surgagent.tools.cache import Case, CaseCache
from surgagent.tools.detector.convert import convert_coco, convert_masks, convert_voc
from surgagent.tools.detector.data import DEFAULT_CLASSES, inspect_dataset
from surgagent.tools.detector.engine import InstrumentDetector
from surgagent.tools.detector.tools import instrument_timeline, instruments_at, make_detector_tools
from surgagent.tools.detector.train import evaluate_detector, train_detector
from surgagent.tools.detector.types import (
    Detection,
    DetectionsResult,
    FrameDetections,
    TimelineResult,
    box_iou,
    build_timeline,
)
from surgagent.tools.errors import ConfigError, ToolInputError
from surgagent.tools.results import read_result
from surgagent.tools.video.engine import open_case
from tests.fixtures.engines import (
    EPOCHS,
    IMGSZ,
    MARGIN_SHARE,
    NAMES,
    SIZE,
    TinyDetector,
    no_network,
)
from tests.fixtures.videos import write_video
from tests.fixtures.yolo import (
    Appearance,
    draw_scene,
    random_objects,
    scene_frame_fn,
)

# The scene video: what is on screen when (seconds; end excluded) and where.
SCHEDULE = [
    Appearance("Grasper", 0.0, 99.0, (0.05, 0.15, 0.25, 0.65)),
    Appearance("Clipper", 3.0, 8.0, (0.40, 0.20, 0.70, 0.60)),
    Appearance("Hook", 6.0, 10.0, (0.60, 0.55, 0.90, 0.95)),
]
VIDEO_FPS, VIDEO_SECONDS, TRACK_FPS = 5, 12.0, 2.0


@pytest.fixture(scope="module")
def trained(tiny_detector: TinyDetector) -> TinyDetector:
    return tiny_detector


@pytest.fixture(scope="module")
def detector(trained: TinyDetector) -> InstrumentDetector:
    return InstrumentDetector.from_weights(trained.weights, imgsz=IMGSZ, track_fps=TRACK_FPS)


@pytest.fixture(scope="module")
def scene_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("scene") / "scene.mp4"
    paint = scene_frame_fn(SCHEDULE, fps=VIDEO_FPS)
    return write_video(path, fps=VIDEO_FPS, duration=VIDEO_SECONDS, size=SIZE, frame_fn=paint)


@pytest.fixture
def cache(tmp_path: Path) -> CaseCache:
    return CaseCache(tmp_path / "cache")


def on_screen(t: float) -> set[str]:
    return {a.name for a in SCHEDULE if a.start <= t < a.end}


def count_predicts(monkeypatch: pytest.MonkeyPatch, detector: InstrumentDetector) -> list[int]:
    calls: list[int] = []
    real = detector.yolo.predict

    def counting(images: Any, **kwargs: Any) -> Any:
        calls.append(len(images))
        return real(images, **kwargs)

    monkeypatch.setattr(detector.yolo, "predict", counting)
    return calls


# -- training --------------------------------------------------------------------------------


def test_training_learns_the_shapes(trained: TinyDetector, detector: InstrumentDetector) -> None:
    assert trained.attempts == []  # fonts, settings, hub: nothing reached for the network
    assert trained.epochs_seen[-1] == (EPOCHS, EPOCHS) and len(trained.epochs_seen) == EPOCHS
    assert trained.weights.name == "best.pt" and detector.class_names == list(NAMES)
    assert json.loads((trained.root / "run" / "data.yaml").read_text())["nc"] == 3
    # Trained to convergence: every class found confidently (at twice the threshold).
    assert min(trained.margins.values()) >= MARGIN_SHARE, (trained.margins, trained.rounds)

    rng = np.random.default_rng(1234)  # scenes never seen in training
    truth, images = [], []
    for k in range(16):
        objects = random_objects(rng, NAMES)
        truth.append(objects)
        images.append(Image.fromarray(draw_scene(*SIZE, objects, seed=10_000 + k)))
    found = detector.predict_images(images)
    hits = sum(
        any(d.name == name and box_iou(d.box_norm, box) >= 0.5 for d in dets)
        for objects, dets in zip(truth, found, strict=True)
        for name, box in objects
    )
    total = sum(len(objects) for objects in truth)
    correct = sum(
        any(d.name == name and box_iou(d.box_norm, box) >= 0.5 for name, box in objects)
        for objects, dets in zip(truth, found, strict=True)
        for d in dets
    )
    assert hits / total >= 0.7, f"recall {hits}/{total}"
    assert correct / max(1, sum(map(len, found))) >= 0.6, "precision"

    metrics = evaluate_detector(trained.weights, trained.data_yaml, imgsz=IMGSZ)
    assert (
        metrics.images == 8
        and metrics.map50 > 0.5
        and set(metrics.per_class_map50_95) <= set(NAMES)
    )


# -- detection and tracking ------------------------------------------------------------------


def test_detect_finds_what_is_on_screen_and_caches(
    detector: InstrumentDetector,
    scene_video: Path,
    cache: CaseCache,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    case = open_case(scene_video, cache)
    times = [1.0, 4.0, 7.0, 11.0]
    calls = count_predicts(monkeypatch, detector)
    with no_network() as attempts:
        frames = detector.detect(case, times, cache)
    assert attempts == [] and sum(calls) == 4
    for frame, t in zip(frames, times, strict=True):
        assert frame.time == pytest.approx(t) and frame.frame is not None and frame.frame.exists()
        assert {d.name for d in frame.detections} == on_screen(t)
        for det in frame.detections:
            truth = next(a.box for a in SCHEDULE if a.name == det.name)
            assert box_iou(det.box_norm, truth) > 0.5
            pixels = [v * s for v, s in zip(det.box_norm, SIZE * 2, strict=True)]
            assert det.box == pytest.approx((pixels[0], pixels[1], pixels[2], pixels[3]))
    again = detector.detect(case, [7.0, 1.0], cache)
    assert sum(calls) == 4  # both frames came from the cache
    assert again == [frames[2], frames[0]]


def test_track_builds_a_timeline_matching_the_video(
    detector: InstrumentDetector,
    scene_video: Path,
    cache: CaseCache,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    case = open_case(scene_video, cache)
    seen: list[tuple[int, int]] = []
    with no_network() as attempts:
        timeline = detector.track(case, cache, progress=lambda d, t: seen.append((d, t)))
    assert attempts == []
    step = 1 / TRACK_FPS
    assert timeline.samples == seen[-1][0] == seen[-1][1] == 24 and timeline.fps == TRACK_FPS
    for appearance in SCHEDULE:
        (interval,) = timeline.intervals_of(appearance.name)
        last = min(appearance.end, VIDEO_SECONDS) - step  # the last sample it is on screen
        assert abs(interval.start - appearance.start) <= step + 0.1, interval
        assert abs(interval.end - last) <= step + 0.1, interval
        assert interval.track_ids and interval.max_confidence >= detector.conf
        assert appearance.start - 0.1 <= interval.best_time <= appearance.end
    assert timeline.first_seen("clipper") == pytest.approx(3.0, abs=step + 0.1)
    assert timeline.last_seen("HOOK") == pytest.approx(9.5, abs=step + 0.1)
    assert timeline.visible_at(5.0) == ["Grasper", "Clipper"]
    assert timeline.visible_at(9.0) == ["Grasper", "Hook"]
    assert len(timeline.frames) == 24 and all(
        d.track_id is not None for f in timeline.frames for d in f.detections
    )

    calls = count_predicts(monkeypatch, detector)
    assert detector.track(case, cache) == timeline
    assert calls == []  # the second call read the cache
    part = detector.track(case, cache, start=2.0, end=5.0)
    assert calls and (part.start, part.end, part.samples) == (2.0, 5.0, 7)
    assert part.first_seen("Clipper") == pytest.approx(3.0, abs=step + 0.1)


def test_timeline_bridges_short_gaps_only() -> None:
    def frame(t: float, *names: str, conf: float = 0.8) -> FrameDetections:
        dets = [
            Detection(
                name=n,
                class_id=NAMES.index(n),
                confidence=conf + t / 100,
                box=(1, 1, 2, 2),
                box_norm=(0.1, 0.1, 0.2, 0.2),
                track_id=7,
            )
            for n in names
        ]
        return FrameDetections(time=t, index=int(t), width=10, height=10, detections=dets)

    samples = [
        frame(0, "Hook"),
        frame(1, "Hook"),
        frame(2),  # one missed sample: bridged
        frame(3, "Hook"),
        frame(4),
        frame(5),  # two: a new interval
        frame(6, "Hook", "Clipper"),
    ]
    timeline = build_timeline(
        samples, case_id="c", class_names=NAMES, fps=1.0, start=0, end=6, model_id="m"
    )
    hooks = timeline.intervals_of("hook")
    assert [(i.start, i.end, i.frames) for i in hooks] == [(0, 3, 3), (6, 6, 1)]
    assert hooks[0].best_time == 3 and hooks[0].max_confidence == pytest.approx(0.83)
    assert [i.instrument for i in timeline.intervals] == ["Hook", "Clipper", "Hook"]
    assert timeline.visible_at(2.0) == ["Hook"] and timeline.visible_at(4.5) == []
    assert timeline.first_seen("Grasper") is None and timeline.seen() == ["Clipper", "Hook"]
    strict = build_timeline(
        samples, case_id="c", class_names=NAMES, fps=1.0, start=0, end=6, model_id="m", max_gap=0
    )
    assert len(strict.intervals_of("Hook")) == 3
    with pytest.raises(ToolInputError, match="Did you mean 'Clipper'"):
        timeline.first_seen("Clipers")


def test_both_box_formats() -> None:
    det = Detection(
        name="Clipper", class_id=1, confidence=0.9, box=(0, 0, 1, 1), box_norm=(0.1234, 0.5, 1, 0)
    )
    assert det.box_surgvlm() == [0.123, 0.5, 1.0, 0.0]
    assert det.box_surgsigma() == "Clipper (123,500),(1000,0)"


# -- the tools -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ctx:
    case: Case
    cache: CaseCache
    detector: InstrumentDetector | None


def run_tool(ctx: Ctx, name: str, args: dict[str, Any], node: Any = None) -> ToolMessage:
    graph = StateGraph(MessagesState, context_schema=Ctx)
    tools = make_detector_tools()
    graph.add_node("tools", node or ToolNode(tools, handle_tool_errors=(ToolInputError,)))
    graph.add_edge(START, "tools")
    graph.add_edge("tools", END)
    call = AIMessage("", tool_calls=[{"name": name, "args": args, "id": "c1"}])
    out = graph.compile().invoke({"messages": [HumanMessage("?"), call]}, context=ctx)
    reply = out["messages"][-1]
    assert isinstance(reply, ToolMessage)
    return reply


def test_tool_schemas_are_for_the_planner() -> None:
    at = convert_to_openai_tool(instruments_at)["function"]
    timeline = convert_to_openai_tool(instrument_timeline)["function"]
    assert set(at["parameters"]["properties"]) == {"time"}  # runtime is injected
    assert "mm:ss" in at["parameters"]["properties"]["time"]["description"]
    assert set(timeline["parameters"]["properties"]) == {"instrument"}
    assert "Clipper" in timeline["parameters"]["properties"]["instrument"]["description"]
    assert "first/last" in timeline["description"] and "boxes" in at["description"]


def test_instruments_at_tool(
    detector: InstrumentDetector, scene_video: Path, cache: CaseCache
) -> None:
    case = open_case(scene_video, cache)
    reply = run_tool(Ctx(case, cache, detector), "instruments_at", {"time": "00:07"})
    assert reply.status != "error"
    result = reply.artifact
    assert isinstance(result, DetectionsResult) and result.case_id == case.id
    found = result.frames[0].detections
    assert {det.name for det in found} == on_screen(7.0)  # a weak duplicate box may come too
    assert reply.text.startswith(f"At 00:07 (frame 35): {len(found)} instruments.\n- ")
    for det in found:
        assert f"{det.box_surgvlm()[0]:.3f}" in reply.text and det.box_surgsigma() in reply.text
    evidence = result.evidence()
    assert {e.kind for e in evidence} == {"detection"} and len(evidence) == len(found)
    assert all(e.time == pytest.approx(7.0) and Path(str(e.frame)).exists() for e in evidence)

    late = run_tool(Ctx(case, cache, detector), "instruments_at", {"time": 11.5})
    assert "Grasper" in late.text and "Hook" not in late.text and "Clipper" not in late.text


def test_instrument_timeline_tool(
    detector: InstrumentDetector, scene_video: Path, cache: CaseCache
) -> None:
    case = open_case(scene_video, cache)
    ctx = Ctx(case, cache, detector)
    reply = run_tool(ctx, "instrument_timeline", {"instrument": "clipper"})
    assert reply.status != "error"
    assert "Clipper: first seen 00:03, last seen 00:07" in reply.text.replace("00:07.6", "00:07")
    assert "Grasper" not in reply.text
    result = reply.artifact
    assert isinstance(result, TimelineResult) and result.instrument == "Clipper"
    (interval,) = result.intervals
    evidence = result.evidence()
    assert [(e.kind, e.time, e.end) for e in evidence] == [
        ("detection", interval.start, interval.end)
    ]
    assert Path(str(evidence[0].frame)).exists()

    everything = run_tool(ctx, "instrument_timeline", {})
    lines = everything.text.splitlines()
    assert lines[0] == "Instrument timeline of 00:00-00:12 (2 frames/s, 24 checked):"
    assert [line.split(":")[0] for line in lines[1:]] == ["- Grasper", "- Clipper", "- Hook"]


def test_tool_evidence_through_the_agent_tools_node(
    detector: InstrumentDetector, scene_video: Path, cache: CaseCache
) -> None:
    case = open_case(scene_video, cache)
    node = build_tools_node(make_detector_tools())
    reply = run_tool(
        Ctx(case, cache, detector), "instrument_timeline", {"instrument": "Hook"}, node
    )
    result = read_result(reply)
    assert isinstance(result, TimelineResult)
    (item,) = result.evidence()
    assert item.kind == "detection" and item.tool == "instrument_timeline"
    assert item.time == pytest.approx(6.0, abs=0.6) and ToolRecord.of(reply).images == []


@pytest.mark.parametrize(
    ("name", "args", "message"),
    [
        ("instrument_timeline", {"instrument": "Clipers"}, "Did you mean 'Clipper'?"),
        ("instrument_timeline", {"instrument": "stapler"}, "use one of Grasper, Clipper, Hook"),
        ("instruments_at", {"time": "99:00"}, "past the end of the case (00:12)"),
        ("instruments_at", {"time": "later"}, "is not a time"),
    ],
)
def test_tool_input_errors(
    detector: InstrumentDetector,
    scene_video: Path,
    cache: CaseCache,
    name: str,
    args: dict[str, Any],
    message: str,
) -> None:
    reply = run_tool(Ctx(open_case(scene_video, cache), cache, detector), name, args)
    assert reply.status == "error" and message in reply.text


def test_tools_without_a_detector(scene_video: Path, cache: CaseCache) -> None:
    ctx = Ctx(open_case(scene_video, cache), cache, None)
    for name, args in [("instruments_at", {"time": "1"}), ("instrument_timeline", {})]:
        reply = run_tool(ctx, name, args)
        assert reply.status == "error" and "no instrument detector is configured" in reply.text


# -- errors ----------------------------------------------------------------------------------


def test_unusable_weights_raise_config_errors(tmp_path: Path, trained: TinyDetector) -> None:
    from ultralytics import YOLO

    with pytest.raises(ConfigError, match="do not exist"):
        InstrumentDetector.from_weights(tmp_path / "absent.pt")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(trained.weights.read_bytes()[:5000])
    with pytest.raises(ConfigError, match="cannot be loaded as YOLO weights"):
        InstrumentDetector.from_weights(corrupt)
    with pytest.raises(ConfigError, match="not a PyTorch .pt file"):
        InstrumentDetector.from_weights(trained.data_yaml)
    classifier = tmp_path / "classifier.pt"
    YOLO("yolo11n-cls.yaml").save(classifier)
    with pytest.raises(ConfigError, match="classify model, not a detection model"):
        InstrumentDetector.from_weights(classifier)
    with pytest.raises(ConfigError, match="multiple of 32"):
        InstrumentDetector.from_weights(trained.weights, imgsz=100)


def test_weights_for_other_classes_are_refused(tmp_path: Path, trained: TinyDetector) -> None:
    seven = json.loads(trained.data_yaml.read_text())
    seven["names"] = dict(enumerate(DEFAULT_CLASSES))
    (tmp_path / "cholec.yaml").write_text(json.dumps(seven))
    message = r"detects 3 classes \(Grasper, Clipper, Hook\) but .* has 7 \(Grasper, Bipolar"
    with pytest.raises(ConfigError, match=message):
        evaluate_detector(trained.weights, tmp_path / "cholec.yaml", imgsz=IMGSZ)
    with pytest.raises(ConfigError, match="detects 3 classes"):
        InstrumentDetector.from_weights(trained.weights, class_names=DEFAULT_CLASSES)


def test_empty_or_bad_ranges(detector: InstrumentDetector, scene_video: Path, cache: CaseCache):
    case = open_case(scene_video, cache)
    with pytest.raises(ToolInputError, match="00:05-00:05 is empty"):
        detector.track(case, cache, start=5.0, end=5.0)
    with pytest.raises(ToolInputError, match="is empty"):
        detector.track(case, cache, start=8.0, end=2.0)
    with pytest.raises(ToolInputError, match="past the end"):
        detector.track(case, cache, end=60.0)
    with pytest.raises(ToolInputError, match="fps=0"):
        detector.track(case, cache, fps=0)
    with pytest.raises(ToolInputError, match="no times given"):
        detector.detect(case, [], cache)


def test_training_refuses_a_broken_dataset(tmp_path: Path, trained: TinyDetector) -> None:
    data = json.loads(trained.data_yaml.read_text())
    data["names"] = {0: "Grasper"}  # the labels use classes 0-2
    (tmp_path / "one.yaml").write_text(json.dumps(data))
    with pytest.raises(ConfigError, match=r"class [12] does not exist; the dataset names 1"):
        train_detector(tmp_path / "one.yaml", epochs=1, imgsz=64, out_dir=tmp_path / "run")
    with pytest.raises(ConfigError, match="does not exist"):
        train_detector(tmp_path / "absent.yaml", epochs=1, imgsz=64, out_dir=tmp_path / "run")
    assert not (tmp_path / "run" / "weights").exists()


# -- converters ------------------------------------------------------------------------------


def labels_of(data_yaml: Path) -> dict[str, list[list[float]]]:
    root = data_yaml.parent
    return {
        p.stem: [[float(v) for v in line.split()] for line in p.read_text().splitlines()]
        for p in sorted((root / "labels").rglob("*.txt"))
    }


def voc_xml(filename: str, objects: list[tuple[str, int, int, int, int]]) -> str:
    boxes = "".join(
        f"<object><name>{n}</name><bndbox><xmin>{a}</xmin><ymin>{b}</ymin>"
        f"<xmax>{c}</xmax><ymax>{d}</ymax></bndbox></object>"
        for n, a, b, c, d in objects
    )
    return (
        f"<annotation><filename>{filename}</filename><size><width>200</width>"
        f"<height>100</height><depth>3</depth></size>{boxes}</annotation>"
    )


def test_convert_voc(tmp_path: Path) -> None:
    src = tmp_path / "m2cai"
    (src / "Annotations").mkdir(parents=True)
    (src / "JPEGImages").mkdir()
    (src / "ImageSets" / "Main").mkdir(parents=True)
    for k, objects in enumerate(
        [[("Grasper", 1, 1, 100, 50)], [("specimen bag", 51, 26, 150, 75)]]
    ):
        Image.new("RGB", (200, 100)).save(src / "JPEGImages" / f"f{k}.jpg")
        (src / "Annotations" / f"f{k}.xml").write_text(voc_xml(f"f{k}.jpg", objects))
    (src / "ImageSets" / "Main" / "trainval.txt").write_text("f0\n")
    (src / "ImageSets" / "Main" / "test.txt").write_text("f1\n")
    data_yaml = convert_voc(src, tmp_path / "out")
    summary = inspect_dataset(data_yaml)
    assert summary.images == {"train": 1, "val": 1} and summary.class_names == list(DEFAULT_CLASSES)
    assert summary.boxes_per_class["SpecimenBag"] == 1
    assert labels_of(data_yaml) == {
        "f0": [[0, 0.25, 0.25, 0.5, 0.5]],
        "f1": [[6, 0.5, 0.5, 0.5, 0.5]],
    }
    assert (tmp_path / "out" / "images" / "val" / "f1.jpg").is_file()

    (src / "Annotations" / "f1.xml").write_text(voc_xml("f1.jpg", [("Grasperr", 1, 1, 9, 9)]))
    with pytest.raises(ConfigError, match="'Grasperr' is not one of .* Did you mean 'Grasper'"):
        convert_voc(src, tmp_path / "out2")
    (src / "Annotations" / "f1.xml").write_text("<annotation><object>")
    with pytest.raises(ConfigError, match="f1.xml is not valid XML"):
        convert_voc(src, tmp_path / "out3")


def test_convert_coco(tmp_path: Path) -> None:
    src = tmp_path / "coco"
    (src / "images").mkdir(parents=True)
    for name in ("a.png", "b.png", "c.png"):
        Image.new("RGB", (100, 50)).save(src / "images" / name)
    # An uncompressed COCO RLE: runs of 0s and 1s, column by column.
    mask = np.zeros((50, 100), dtype=bool)
    mask[10:20, 40:60] = True
    runs, flat, value, count = [], mask.T.ravel(), False, 0
    for pixel in flat:
        if pixel != value:
            runs.append(count)
            value, count = pixel, 0
        count += 1
    runs.append(count)
    coco = {
        "images": [
            {"id": 1, "file_name": "a.png", "width": 100, "height": 50},
            {"id": 2, "file_name": "b.png", "width": 100, "height": 50},
            {"id": 3, "file_name": "c.png"},
        ],
        "categories": [{"id": 5, "name": "Hook"}, {"id": 9, "name": "Irrigator"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 5, "bbox": [10, 5, 20, 10]},
            {"id": 2, "image_id": 2, "category_id": 9, "segmentation": [[0, 0, 50, 0, 50, 25]]},
            {
                "id": 3,
                "image_id": 3,
                "category_id": 5,
                "segmentation": {"counts": runs, "size": [50, 100]},
            },
        ],
    }
    (src / "instances_train.json").write_text(json.dumps(coco))
    data_yaml = convert_coco(src / "instances_train.json", tmp_path / "out")
    assert labels_of(data_yaml) == {
        "a": [[2, 0.2, 0.2, 0.2, 0.2]],
        "b": [[5, 0.25, 0.25, 0.5, 0.5]],
        "c": [[2, 0.5, 0.3, 0.2, 0.2]],
    }
    assert inspect_dataset(data_yaml).images == {"train": 2, "val": 1}  # one moved to val

    del coco["categories"]
    (src / "instances_train.json").write_text(json.dumps(coco))
    with pytest.raises(ConfigError, match="is not COCO JSON: missing 'categories'"):
        convert_coco(src / "instances_train.json", tmp_path / "out2")


def test_convert_masks(tmp_path: Path) -> None:
    src = tmp_path / "endovis"
    # Mask folder names as EndoVis2017 spells them: side first with _labels, and (dataset 6,
    # dataset 7) no side or suffix, or the side last.
    names = {
        "instrument_dataset_1": (
            "Left_Prograsp_Forceps_labels",
            "Right_Large_Needle_Driver_labels",
        ),
        "instrument_dataset_2": ("Prograsp_Forceps", "Large_Needle_Driver_Left_labels"),
    }
    for video, (forceps, driver) in names.items():
        frames = src / video / "left_frames"
        frames.mkdir(parents=True)
        for k in range(2):
            Image.new("RGB", (80, 40)).save(frames / f"frame00{k}.png")
            for folder, boxes in (
                (forceps, [(0, 0, 20, 10), (60, 30, 80, 40)]),
                (driver, [(30, 10, 50, 30)] if k else []),
            ):
                mask = np.zeros((40, 80), dtype=np.uint8)
                for x1, y1, x2, y2 in boxes:
                    mask[y1:y2, x1:x2] = 10  # EndoVis parts are 10/20/30: any non-zero counts
                mask[0, 79] = 30  # a one-pixel speck is dropped
                (src / video / "ground_truth" / folder).mkdir(parents=True, exist_ok=True)
                Image.fromarray(mask).save(
                    src / video / "ground_truth" / folder / f"frame00{k}.png"
                )
    data_yaml = convert_masks(src, tmp_path / "out")
    summary = inspect_dataset(data_yaml)
    assert summary.class_names == ["Large_Needle_Driver", "Prograsp_Forceps"]
    assert sum(summary.images.values()) == 4 and summary.boxes_per_class == {
        "Large_Needle_Driver": 2,
        "Prograsp_Forceps": 8,
    }
    labels = labels_of(data_yaml)["instrument_dataset_1_frame001"]
    assert sorted(labels) == [
        [0, 0.5, 0.5, 0.25, 0.5],
        [1, 0.125, 0.125, 0.25, 0.25],
        [1, 0.875, 0.875, 0.25, 0.25],
    ]
    splits = {p.parent.name for p in (tmp_path / "out" / "images").rglob("instrument_dataset_1*")}
    assert len(splits) == 1  # a whole video stays in one split

    with pytest.raises(ConfigError, match="'Prograsp_Forceps' is not one of Grasper"):
        convert_masks(src, tmp_path / "out2", class_names=DEFAULT_CLASSES)
    Image.new("L", (8, 8)).save(
        src
        / "instrument_dataset_1"
        / "ground_truth"
        / "Left_Prograsp_Forceps_labels"
        / "frame000.png"
    )
    with pytest.raises(ConfigError, match="is 8x8, its frame 80x40"):
        convert_masks(src, tmp_path / "out3")


# -- the CLI ---------------------------------------------------------------------------------


def test_cli_convert_predict_track(
    tmp_path: Path, trained: TinyDetector, scene_video: Path
) -> None:
    runner = CliRunner()
    src = tmp_path / "voc"
    (src / "Annotations").mkdir(parents=True)
    (src / "JPEGImages").mkdir()
    Image.new("RGB", (200, 100)).save(src / "JPEGImages" / "a.jpg")
    (src / "Annotations" / "a.xml").write_text(voc_xml("a.jpg", [("Clipper", 1, 1, 50, 50)]))
    (src / "Annotations" / "b.xml").write_text(voc_xml("a.jpg", [("Hook", 1, 1, 50, 50)]))
    out = runner.invoke(
        detector_app, ["convert", "voc", str(src), str(tmp_path / "yolo"), "--json"]
    )
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout)["boxes_per_class"]["Clipper"] == 1

    weights = ["--weights", str(trained.weights), "--imgsz", str(IMGSZ)]
    out = runner.invoke(
        detector_app, ["predict", str(scene_video), *weights, "--times", "4,00:07", "--json"]
    )
    assert out.exit_code == 0, out.output
    frames = json.loads(out.stdout)["frames"]
    assert [{d["name"] for d in f["detections"]} for f in frames] == [on_screen(4), on_screen(7)]

    out = runner.invoke(
        detector_app, ["track", str(scene_video), *weights, "--fps", "1", "--end", "6", "--json"]
    )
    assert out.exit_code == 0, out.output
    timeline = json.loads(out.stdout)
    assert (timeline["samples"], timeline["fps"]) == (7, 1.0)
    assert {i["instrument"] for i in timeline["intervals"]} == {"Grasper", "Clipper"}

    out = runner.invoke(
        detector_app, ["track", str(scene_video), *weights, "--start", "5", "--end", "1"]
    )
    assert isinstance(out.exception, ToolInputError)


def test_cli_train_and_eval(tmp_path: Path, trained: TinyDetector) -> None:
    runner = CliRunner()
    data = ["--data", str(trained.data_yaml)]
    out = runner.invoke(
        detector_app, ["eval", "--weights", str(trained.weights), *data, "--imgsz", "128", "--json"]
    )
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout)["map50"] > 0.5  # stdout holds the JSON only

    model = str(trained.root / "yolo11n-tiny.yaml")
    args = ["train", *data, "--out", str(tmp_path / "run"), "--epochs", "1", "--imgsz", "64"]
    out = runner.invoke(detector_app, [*args, "--model", model, "--json"])
    assert out.exit_code == 0, out.output
    summary = json.loads(out.stdout)
    assert Path(summary["weights"]).is_file() and summary["epochs"] == 1
    assert InstrumentDetector.from_weights(summary["weights"]).class_names == list(NAMES)


def test_importing_the_detector_loads_no_torch() -> None:
    code = (
        "import sys, surgagent.tools.detector.engine, surgagent.cli.detector; "
        "heavy = [m for m in ('torch', 'ultralytics', 'cv2') if m in sys.modules]; "
        "print(heavy); sys.exit(1 if heavy else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
