"""Dataset loaders: tiny self-made datasets in each release's real layout -> hand-checked items.

Folder, file and answer spellings are the releases' own (EndoVis2017 ground_truth folders
with and without ``_labels``, side first or last; EndoVis18-VQA underscore answers;
Endoscapes' ``endoscapes/`` zip folder; CholecT50 v1.5 label files with sparse frame ids;
SAR-RARP50 rows every 6 frames of a 60 fps video). Item counts are checked exactly.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from surgagent.evals.loaders import (
    LOADERS,
    Skip,
    build_task_set,
    get_loader,
    load_task_set,
    stratified_sample,
)
from surgagent.evals.loaders._base import AnnotationError, clock, sample_times, time_tag
from surgagent.evals.loaders.cholect50 import (
    CHOLECT50_PHASES,
    CHOLECT50_TRIPLETS,
    one_per_window,
    triplet_names,
)
from surgagent.evals.loaders.endovis17 import instrument_name
from surgagent.evals.loaders.endovis18 import ENDOVIS18_VQA_CLASSES
from surgagent.evals.records import TaskRecord, read_tasks, write_tasks
from surgagent.tools.vocabulary import (
    CHOLEC80_PHASES,
    CHOLEC80_TOOLS,
    CHOLECT50_INSTRUMENTS,
    CHOLECT50_TARGETS,
    CHOLECT50_VERBS,
)

# -- builders of native layouts ---------------------------------------------------------------


def write_cholec80(root: Path, case: str = "video01") -> Path:
    """200 s at 25 fps: Preparation 0-60 s, CalotTriangleDissection 60-150 s, ClippingCutting
    150-200 s. Tools every 25 frames: Grasper always, Hook 40-140 s, Clipper 150-170 s,
    Scissors 175-180 s."""
    phases = root / "phase_annotations"
    tools = root / "tool_annotations"
    phases.mkdir(parents=True, exist_ok=True)
    tools.mkdir(parents=True, exist_ok=True)
    rows = ["Frame\tPhase"]
    for frame in range(5000):
        name = (
            "Preparation"
            if frame < 1500
            else "CalotTriangleDissection"
            if frame < 3750
            else "ClippingCutting"
        )
        rows.append(f"{frame}\t{name}")
    (phases / f"{case}-phase.txt").write_text("\n".join(rows) + "\n")
    rows = ["Frame\t" + "\t".join(CHOLEC80_TOOLS)]
    for frame in range(0, 5000, 25):
        t = frame / 25
        on = {
            "Grasper": True,
            "Hook": 40 <= t < 140,
            "Clipper": 150 <= t < 170,
            "Scissors": 175 <= t < 180,
        }
        rows.append(
            f"{frame}\t" + "\t".join(str(int(on.get(tool, False))) for tool in CHOLEC80_TOOLS)
        )
    (tools / f"{case}-tool.txt").write_text("\n".join(rows) + "\n")
    (root / "videos").mkdir(exist_ok=True)
    return root


def cholect50_categories() -> dict[str, dict[str, str]]:
    """``categories`` as the challenge-val v1.5 label files hold it: a dict of id tables."""
    return {
        "instrument": {str(k): v for k, v in enumerate(CHOLECT50_INSTRUMENTS)},
        "verb": {str(k): v for k, v in enumerate(CHOLECT50_VERBS)},
        "target": {str(k): v for k, v in enumerate(CHOLECT50_TARGETS)},
        "triplet": {str(k): v for k, v in enumerate(CHOLECT50_TRIPLETS)},
        "phase": {str(k): v for k, v in enumerate(CHOLECT50_PHASES)},
    }


def triplet_vector(triplet: int, phase: int = 1) -> list[float]:
    """One instance: [triplet, instrument, score, x, y, w, h, verb, target, score, ..., phase]."""
    return [triplet, 0, 1, 0.1, 0.1, 0.2, 0.2, 1, 0, -1, -1, -1, -1, -1, phase]


NULL_VECTOR = [-1] * 14 + [0]


def write_cholect50(root: Path, annotations: dict[str, list[list[float]]] | None = None) -> Path:
    """``CholecT50/labels/VID01.json`` (v1.5 format) and its 1 fps frames, 000000.png ..."""
    labels = root / "labels"
    labels.mkdir(parents=True, exist_ok=True)
    annotations = annotations or {
        "0": [NULL_VECTOR],
        "1": [triplet_vector(60), triplet_vector(17)],
        "2": [triplet_vector(7), triplet_vector(7)],
        "3": [],
    }
    data = {
        "video": 1,
        "fps": 1,
        "num_frames": max(int(k) for k in annotations) + 1,
        "categories": cholect50_categories(),
        "annotations": annotations,
    }
    (labels / "VID01.json").write_text(json.dumps(data))
    frames = root / "videos" / "VID01"
    frames.mkdir(parents=True, exist_ok=True)
    for key in annotations:
        write_image(frames / f"{int(key):06d}.png")
    return root


def write_image(path: Path, size: tuple[int, int] = (8, 6)) -> None:
    """A tiny real image (PNG or JPEG by suffix)."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (90, 30, 30)).save(path)


ENDOSCAPES_HEADER = (
    "vid,frame,avg_cvs,C1,C2,C3,is_ds_keyframe,cvs_annotator_1,cvs_annotator_2,cvs_annotator_3"
)
ENDOSCAPES_ROWS = [
    '1,100,"[0.67, 0.33, 0.0]",0.6666666666666666,0.3333333333333333,0.0,True,'
    '"[1, 0, 0]","[1, 1, 0]","[0, 0, 0]"',
    '1,125,"[0.5, 0.5, 0.0]",0.5,0.5,0.0,False,,,',
    '2,50,"[0.5, 1.0, 0.5]",0.5,1.0,0.5,True,"[1, 1, 1]","[0, 1, 0]","[1, 1, 1]"',
    '3,75,"[1, 1, 1]",1.0,1.0,1.0,True,"[1, 1, 1]","[1, 1, 1]","[1, 1, 1]"',
]


def write_endoscapes(root: Path, rows: list[str] | None = None) -> Path:
    """The unpacked ``endoscapes/`` folder: all_metadata.csv and <vid>_<frame>.jpg per split."""
    root.mkdir(parents=True, exist_ok=True)
    rows = rows or ENDOSCAPES_ROWS
    (root / "all_metadata.csv").write_text(ENDOSCAPES_HEADER + "\n" + "\n".join(rows) + "\n")
    for split, name in (("train", "1_100"), ("train", "1_125"), ("test", "2_50")):
        write_image(root / split / f"{name}.jpg")
    (root / "val").mkdir(exist_ok=True)
    return root


def write_endovis18(root: Path) -> Path:
    """EndoVis-18-VQA: seq_N/vqa/Classification/frameXXX_QA.txt and seq_N/left_frames/."""
    files = {
        "seq_1/vqa/Classification/frame000_QA.txt": (
            "what organ is being operated?|kidney\n"
            "what is the state of prograsp_forceps?&what is the state of bipolar_forceps?"
            "|Retraction\n"
        ),
        "seq_5/vqa/Classification/frame001_QA.txt": (
            "where is monopolar_curved_scissors located?|left-top\n\n"
            "what is the state of monopolar_curved_scissors?|Tissue_Manipulation\n"
            "what is the state of ultrasound_probe?|Ultrasound_Sensing\n"
        ),
    }
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    for frame in ("seq_1/left_frames/frame000.png", "seq_5/left_frames/frame001.png"):
        write_image(root / frame)
    return root


def write_mask(path: Path, size: tuple[int, int], box: tuple[int, int, int, int] | None) -> None:
    from PIL import Image

    width, height = size
    pixels = np.zeros((height, width), dtype=np.uint8)
    if box is not None:
        x1, y1, x2, y2 = box
        pixels[y1:y2, x1:x2] = 10  # a part value, as EndoVis2017 masks use
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


# The ground_truth folders of the training release, as named there (datasets 1, 4, 6, 7).
ENDOVIS17_FOLDERS = {
    "instrument_1_4_training/instrument_dataset_1": (
        "Left_Prograsp_Forceps_labels",
        "Maryland_Bipolar_Forceps_labels",
        "Other_labels",
        "Right_Prograsp_Forceps_labels",
    ),
    "instrument_1_4_training/instrument_dataset_4": (
        "Large_Needle_Driver_Left_labels",
        "Large_Needle_Driver_Right_labels",
        "Prograsp_Forceps_labels",
    ),
    "instrument_5_8_training/instrument_dataset_6": (
        "Left_Large_Needle_Driver_labels",
        "Monopolar_Curved_Scissors_labels",
        "Prograsp_Forceps",
        "Right_Large_Needle_Driver_labels",
    ),
    "instrument_5_8_training/instrument_dataset_7": ("Left_Bipolar_Forceps", "Right_Vessel_Sealer"),
}


def write_endovis17(root: Path) -> Path:
    """Two frames per dataset; every instrument visible in frame000, none in frame001 except
    dataset 1's Maryland forceps (its frame000 mask is empty)."""
    for dataset, folders in ENDOVIS17_FOLDERS.items():
        for frame in ("frame000.png", "frame001.png"):
            write_image(root / dataset / "left_frames" / frame, (40, 20))
        for k, folder in enumerate(folders):
            truth = root / dataset / "ground_truth" / folder
            visible = folder != "Maryland_Bipolar_Forceps_labels"
            write_mask(
                truth / "frame000.png", (40, 20), (k * 8, 5, k * 8 + 8, 10) if visible else None
            )
            write_mask(truth / "frame001.png", (40, 20), None if visible else (0, 0, 4, 2))
    return root


def write_sar_rarp50(root: Path) -> Path:
    """train1/video_1 (rows every 6 frames of the 60 fps video, 0-35 s) and test/video_2,
    its frame indices zero-padded to nine digits as in the release."""

    def action(frame: int) -> int:
        t = frame / 60
        return 0 if t < 5 else 1 if t < 12 else 3 if t < 25 else 5

    first = root / "train1" / "video_1"
    first.mkdir(parents=True)
    rows = [f"{frame},{action(frame)}" for frame in range(0, 2101, 6)]
    (first / "action_discrete.txt").write_text("\n".join(rows) + "\n")
    second = root / "test" / "video_2"
    second.mkdir(parents=True)
    (second / "action_discrete.txt").write_text("000000000,6\n000000006,7\n")
    return root


def write_surgvlm(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    items = [
        {
            "id": "a1",
            "image": "images/video01/0001.jpg",
            "question": "Which phase is shown?",
            "answer": "Preparation",
            "task": "Phase Recognition",
        },
        {
            "id": "b2",
            "images": ["images/video02/0002.jpg"],
            "type": "instrument_localization",
            "conversations": [
                {"from": "human", "value": "<image>\nWhere is the grasper?"},
                {"from": "gpt", "value": "grasper (120,80),(400,300)"},
                {"from": "human", "value": "And the hook?"},
                {"from": "gpt", "value": "hook (500,500),(600,700)"},
            ],
        },
    ]
    (root / "qa.json").write_text(json.dumps(items))
    line = {
        "video": "clips/c1.mp4",
        "question_type": "CVS assessment",
        "choices": ["Yes", "No"],
        "messages": [
            {"role": "user", "content": "<video>Is criterion 1 achieved?"},
            {"role": "assistant", "content": "No"},
        ],
    }
    (root / "more.jsonl").write_text(json.dumps(line) + "\n")
    return root


def by_id(items: list[TaskRecord]) -> dict[str, TaskRecord]:
    ids = [item.id for item in items]
    assert len(set(ids)) == len(ids), "ids must be unique"
    assert ids == sorted(ids), "items come sorted by id"
    return {item.id: item for item in items}


# -- shared helpers ---------------------------------------------------------------------------


def test_time_helpers() -> None:
    assert sample_times(200.0, 60.0) == [0.0, 60.0, 120.0, 180.0]
    assert sample_times(120.0, 60.0) == [0.0, 60.0]  # 120 s is past the last frame
    assert sample_times(0.0, 60.0) == []
    assert clock(75.9) == "01:15" and clock(3725) == "1:02:05"
    assert time_tag(60) == "t0060" and time_tag(60.5) == "t0060.500"
    with pytest.raises(ValueError, match="positive"):
        sample_times(10, 0)


def test_registry_covers_every_dataset() -> None:
    assert set(LOADERS) == {
        "cholec80",
        "cholect50",
        "endoscapes2023",
        "endovis2018-vqa",
        "endovis2017",
        "sar-rarp50",
        "surgvlm",
    }
    for name, loader in LOADERS.items():
        assert loader.name == name and loader.tasks


# -- Cholec80 ---------------------------------------------------------------------------------


def test_cholec80_phase_items_follow_the_frame_rows(tmp_path: Path) -> None:
    items = by_id(build_task_set(write_cholec80(tmp_path), "cholec80", tasks=["cholec80-phase"]))
    golds = {key: item.gold for key, item in items.items()}
    assert golds == {
        "cholec80-phase/video01/t0000": "Preparation",
        "cholec80-phase/video01/t0060": "CalotTriangleDissection",  # the switch is at frame 1500
        "cholec80-phase/video01/t0120": "CalotTriangleDissection",
        "cholec80-phase/video01/t0180": "ClippingCutting",
    }
    item = items["cholec80-phase/video01/t0060"]
    assert item.case == "video01" and item.dataset == "cholec80"
    assert item.media.video == "videos/video01.mp4"
    assert item.media.start == 60.0 and item.media.times == [60.0]
    assert item.choices == list(CHOLEC80_PHASES)
    assert "01:00" in item.question


def test_cholec80_next_phase_and_tools(tmp_path: Path) -> None:
    items = by_id(
        build_task_set(
            write_cholec80(tmp_path), "cholec80", tasks=["cholec80-phase-next", "cholec80-tools"]
        )
    )
    nexts = {k: (v.gold, v.meta["seconds_to_next"]) for k, v in items.items() if "next" in k}
    assert nexts == {  # 180 s lies in the last phase: no next-phase question there
        "cholec80-phase-next/video01/t0000": ("CalotTriangleDissection", 60.0),
        "cholec80-phase-next/video01/t0060": ("ClippingCutting", 90.0),
        "cholec80-phase-next/video01/t0120": ("ClippingCutting", 30.0),
    }
    tools = {k: v.gold for k, v in items.items() if "tools" in k}
    assert tools == {
        "cholec80-tools/video01/t0000": ["Grasper"],
        "cholec80-tools/video01/t0060": ["Grasper", "Hook"],
        "cholec80-tools/video01/t0120": ["Grasper", "Hook"],
        "cholec80-tools/video01/t0180": ["Grasper"],
    }
    every_30 = build_task_set(tmp_path, "cholec80", tasks=["cholec80-tools"], every_s=30)
    assert [i.gold for i in every_30 if i.meta["seconds"] == 150] == [["Grasper", "Clipper"]]


def test_cholec80_multistep_questions_are_consistent(tmp_path: Path) -> None:
    items = build_task_set(write_cholec80(tmp_path), "cholec80", tasks=["cholec80-multistep"])
    kinds = Counter(item.meta["kind"] for item in items)
    assert kinds == {
        "phase-at-first-tool": 2,
        "tool-in-phase": 2,
        "longer-phase": 1,
        "tool-order": 1,
    }
    used = {
        ("Hook", "Preparation"),
        ("Hook", "CalotTriangleDissection"),
        ("Clipper", "ClippingCutting"),
        ("Scissors", "ClippingCutting"),
    }
    lengths = {"Preparation": 60, "CalotTriangleDissection": 90, "ClippingCutting": 50}
    firsts = {"Hook": 40, "Clipper": 150, "Scissors": 175}  # the Grasper is never asked about
    by_kind: dict[str, list[TaskRecord]] = {}
    for item in items:
        by_kind.setdefault(item.meta["kind"], []).append(item)
        assert item.media.start == 0 and item.media.end == 200 and len(item.media.times) == 8
        assert item.gold in (item.choices or [])
    first = {i.meta["tool"]: i.gold for i in by_kind["phase-at-first-tool"]}
    assert first == {"Clipper": "ClippingCutting", "Scissors": "ClippingCutting"}
    assert "multistep/video01/phase-at-first-tool-clipper" in " ".join(i.id for i in items)
    answers = sorted(i.gold for i in by_kind["tool-in-phase"])
    assert answers == ["no", "yes"]
    for item in by_kind["tool-in-phase"]:
        expected = (item.meta["tool"], item.meta["phase"]) in used
        assert item.gold == ("yes" if expected else "no")
    (longer,) = by_kind["longer-phase"]
    assert longer.gold == max(longer.choices or [], key=lambda p: lengths[p])
    (order,) = by_kind["tool-order"]
    assert order.gold == min(order.choices or [], key=lambda t: firsts[t])
    again = build_task_set(tmp_path, "cholec80", tasks=["cholec80-multistep"])
    assert again == items  # the per-video choice of questions is stable


def test_cholec80_tool_only_download(tmp_path: Path) -> None:
    write_cholec80(tmp_path)
    for path in (tmp_path / "phase_annotations").iterdir():
        path.unlink()
    items = build_task_set(tmp_path, "cholec80")
    assert {item.task for item in items} == {"cholec80-tools"}
    with pytest.raises(ValueError, match="phase_annotations"):
        build_task_set(tmp_path, "cholec80", tasks=["cholec80-phase"])


def test_cholec80_malformed_lines_name_file_and_line(tmp_path: Path) -> None:
    write_cholec80(tmp_path)
    tool_file = tmp_path / "tool_annotations" / "video01-tool.txt"
    lines = tool_file.read_text().splitlines()
    lines[2] = "25\t1\t0\tx\t0\t0\t0\t0"
    tool_file.write_text("\n".join(lines))
    with pytest.raises(AnnotationError, match=r"video01-tool\.txt line 3"):
        build_task_set(tmp_path, "cholec80", tasks=["cholec80-tools"])
    phase_file = tmp_path / "phase_annotations" / "video01-phase.txt"
    lines = phase_file.read_text().splitlines()
    lines[4] = "3\tPreparation\textra"
    phase_file.write_text("\n".join(lines))
    with pytest.raises(AnnotationError, match=r"video01-phase\.txt line 5"):
        build_task_set(tmp_path, "cholec80", tasks=["cholec80-phase"])


def test_cholec80_stray_files_and_missing_tool_files_are_reported(tmp_path: Path) -> None:
    write_cholec80(tmp_path / "cholec80", "video01")
    write_cholec80(tmp_path / "cholec80", "video02")
    (tmp_path / "cholec80/tool_annotations/video02-tool.txt").unlink()
    (tmp_path / "cholec80/phase_annotations/video02-phase.txt.bak").write_text("")
    loaded = load_task_set(tmp_path, "cholec80")
    assert Counter(item.case for item in loaded.items) == {"video01": 17, "video02": 7}
    assert {(e.path, e.kind) for e in loaded.report.skipped} == {
        ("cholec80/phase_annotations/video02-phase.txt.bak", Skip.UNRECOGNISED),
        ("cholec80/phase_annotations/video02-phase.txt", Skip.INCOMPLETE),
    }
    phase_only = load_task_set(tmp_path, "cholec80", tasks=["cholec80-phase"])
    assert [e.kind for e in phase_only.report.skipped] == [Skip.UNRECOGNISED]


# -- CholecT50 --------------------------------------------------------------------------------


def test_cholect50_triplets(tmp_path: Path) -> None:
    write_cholect50(tmp_path / "CholecT50")  # the folder the download unpacks into
    items = by_id(build_task_set(tmp_path, "cholect50"))
    assert {k: v.gold for k, v in items.items()} == {
        "cholect50-triplet/VID01/f000001": [
            ["grasper", "retract", "gallbladder"],  # triplet 17, sorted before 60
            ["hook", "dissect", "gallbladder"],
        ],
        "cholect50-triplet/VID01/f000002": [["grasper", "grasp", "gallbladder"]],  # repeated 7
    }
    item = items["cholect50-triplet/VID01/f000001"]
    assert item.media.frames == ["CholecT50/videos/VID01/000001.png"]
    assert item.media.times == [1.0]
    assert item.meta["triplet_ids"] == [17, 60]
    assert item.meta["phase"] == "carlot-triangle-dissection"  # the file's own phase table
    with_empty = by_id(build_task_set(tmp_path, "cholect50", keep_empty=True))
    assert with_empty["cholect50-triplet/VID01/f000000"].gold == []
    assert with_empty["cholect50-triplet/VID01/f000003"].gold == []
    loaded = load_task_set(tmp_path, "cholect50")
    (entry,) = loaded.report.skipped  # frames 0 and 3 hold no triplet
    assert (entry.path, entry.kind, entry.count) == ("CholecT50/labels/VID01.json", Skip.DESIGN, 2)


def test_cholect50_every_means_seconds_on_sparse_ids(tmp_path: Path) -> None:
    """Sparse 1 fps ids: ``every_s=5`` keeps the first frame of each 5 s window, not the ids
    that are multiples of 5 (which would keep 0 and 10 only, and lose 7 s-9 s)."""
    annotated = [0, 1, 2, 4, 7, 8, 9, 10, 11, 13, 14, 17]
    write_cholect50(tmp_path, {str(f): [triplet_vector(17)] for f in annotated})
    every_5 = build_task_set(tmp_path, "cholect50", every_s=5)
    assert [item.meta["frame"] for item in every_5] == [0, 7, 10, 17]
    assert len(build_task_set(tmp_path, "cholect50")) == len(annotated)  # every_s=1: all
    loaded = load_task_set(tmp_path, "cholect50", every_s=5)
    assert loaded.report.total() == len(annotated) - 4
    assert one_per_window([0.0, 0.5, 2.0, 2.5, 9.0], 2.0) == [0, 2, 4]


def test_cholect50_triplet_table_matches_the_reference() -> None:
    assert len(CHOLECT50_TRIPLETS) == 100
    assert triplet_names()[17] == ["grasper", "retract", "gallbladder"]
    assert triplet_names({"categories": {"triplet": {"0": "a,b,c"}}}) == {0: ["a", "b", "c"]}
    reference = Path("/work/shared/reference/cholect50_vocabulary.json")
    if reference.is_file():
        table = json.loads(reference.read_text())["triplet"]
        assert [table[str(i)] for i in range(100)] == list(CHOLECT50_TRIPLETS)


def test_cholect50_malformed_files(tmp_path: Path) -> None:
    write_cholect50(tmp_path)
    path = tmp_path / "labels" / "VID01.json"
    path.write_text('{"annotations": {\n"1": [[150, 0]]\n}}')
    with pytest.raises(AnnotationError, match=r"VID01\.json.*frame 1.*unknown triplet id 150"):
        build_task_set(tmp_path, "cholect50")
    path.write_text('{"annotations": {\n"1": [[1, 0]],\n}}')
    with pytest.raises(AnnotationError, match=r"VID01\.json line 3"):
        build_task_set(tmp_path, "cholect50")


# -- Endoscapes2023 ---------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["unzipped folder", "folder holding endoscapes/"])
def test_endoscapes_cvs(tmp_path: Path, layout: str) -> None:
    folder = write_endoscapes(tmp_path / "endoscapes")
    for decoy in ("semseg/1_100.png", "insseg/1_100.jpg"):  # masks and other folders lose
        write_image(folder / decoy)
    root = folder if layout == "unzipped folder" else tmp_path
    prefix = "" if layout == "unzipped folder" else "endoscapes/"
    loaded = load_task_set(root, "endoscapes2023")
    items = by_id(loaded.items)
    assert {k: v.gold for k, v in items.items()} == {
        "endoscapes-cvs/1/f000100": [True, False, False],
        "endoscapes-cvs/2/f000050": [True, True, True],  # 0.5 counts as achieved
    }
    item = items["endoscapes-cvs/1/f000100"]
    assert item.media.frames == [f"{prefix}train/1_100.jpg"] and item.meta["split"] == "train"
    assert items["endoscapes-cvs/2/f000050"].meta["split"] == "test"
    assert item.meta["seconds"] == 4.0 and item.meta["is_ds_keyframe"] is True
    assert "Criterion 3:" in item.question and "Yes/No" in item.question
    kinds = {(e.kind, e.count, tuple(e.examples)) for e in loaded.report.skipped}
    assert kinds == {  # 1_125 is interpolated (no annotator); 3_75 has no image
        (Skip.DESIGN, 1, ()),
        (Skip.NO_MEDIA, 1, ("line 5: 3_75",)),
    }
    every_row = build_task_set(root, "endoscapes2023", annotated_only=False)
    assert "endoscapes-cvs/1/f000125" in by_id(every_row)


def test_endoscapes_repeated_rows_are_reported_not_merged(tmp_path: Path) -> None:
    write_endoscapes(tmp_path, [*ENDOSCAPES_ROWS, ENDOSCAPES_ROWS[0]])
    loaded = load_task_set(tmp_path, "endoscapes2023")
    assert len(loaded.items) == 2
    (duplicate,) = [e for e in loaded.report.skipped if e.kind is Skip.DUPLICATE]
    assert duplicate.examples == ["line 6: all_metadata.csv line 2"]


def test_endoscapes_without_any_image_says_so(tmp_path: Path) -> None:
    write_endoscapes(tmp_path / "endoscapes")
    for image in (tmp_path / "endoscapes").glob("*/*.jpg"):
        image.unlink()
    with pytest.raises(ValueError, match=r"gave no items; left out: 3 x no frame image"):
        build_task_set(tmp_path, "endoscapes2023")


def test_endoscapes_malformed_rows(tmp_path: Path) -> None:
    rows = ['1,100,"[1, 1, 1]",abc,1.0,1.0,True,"[1, 1, 1]","[1, 1, 1]","[1, 1, 1]"']
    write_endoscapes(tmp_path, rows)
    with pytest.raises(AnnotationError, match=r"all_metadata\.csv line 2: C1='abc'"):
        build_task_set(tmp_path, "endoscapes2023")
    (tmp_path / "all_metadata.csv").write_text("vid,frame,C1\n1,100,1.0\n")
    with pytest.raises(AnnotationError, match="missing column"):
        build_task_set(tmp_path, "endoscapes2023")


# -- EndoVis2018-VQA --------------------------------------------------------------------------


def test_endovis18_vqa(tmp_path: Path) -> None:
    items = by_id(build_task_set(write_endovis18(tmp_path), "endovis2018-vqa"))
    assert {k: v.gold for k, v in items.items()} == {
        "endovis18-vqa/seq_1/frame000-q00": "kidney",
        "endovis18-vqa/seq_1/frame000-q01": "Retraction",  # one line, two questions
        "endovis18-vqa/seq_1/frame000-q02": "Retraction",
        "endovis18-vqa/seq_5/frame001-q00": "left-top",
        "endovis18-vqa/seq_5/frame001-q01": "Tissue_Manipulation",  # the files' spelling
        "endovis18-vqa/seq_5/frame001-q02": "Ultrasound_Sensing",
    }
    item = items["endovis18-vqa/seq_1/frame000-q02"]
    assert item.media.frames == ["seq_1/left_frames/frame000.png"]
    assert item.question.startswith("what is the state of bipolar_forceps?")
    assert item.meta["kind"] == "state" and item.meta["split"] == "val"
    assert items["endovis18-vqa/seq_5/frame001-q00"].meta["kind"] == "location"
    assert item.choices == list(ENDOVIS18_VQA_CLASSES)  # 18 classes, one spelling each
    assert "Tissue_Manipulation" in item.choices and "Tissue Manipulation" not in item.choices
    from surgagent.evals.tasks import get_task

    prompt = get_task(item.task).prompt(item)  # the options are listed once, readable
    assert prompt.count("Tissue Manipulation, Tool Manipulation") == 1
    assert "Tissue_Manipulation" not in prompt
    assert "_" not in prompt.split("Options:")[1]


def test_endovis18_other_spellings_and_unknown_answers(tmp_path: Path) -> None:
    write_endovis18(tmp_path)
    (tmp_path / "seq_5/vqa/Classification/frame001_QA.txt").write_text(
        "what is the state of suction?|Tool Manipulation\nwhat is the state of clip?|Stapling\n"
    )
    (tmp_path / "seq_5/vqa/Classification/readme.txt").write_text("notes")
    loaded = load_task_set(tmp_path, "endovis2018-vqa")
    golds = {item.id: item.gold for item in loaded.items if item.case == "seq_5"}
    assert golds == {
        "endovis18-vqa/seq_5/frame001-q00": "Tool_Manipulation",  # the class, not a new one
        "endovis18-vqa/seq_5/frame001-q01": "Stapling",  # outside the classes: eval check
    }
    assert loaded.items[0].choices == [*ENDOVIS18_VQA_CLASSES, "Stapling"]
    (entry,) = loaded.report.skipped
    assert entry.path == "seq_5/vqa/Classification/readme.txt"
    assert entry.kind is Skip.UNRECOGNISED


def test_endovis18_malformed_line(tmp_path: Path) -> None:
    write_endovis18(tmp_path)
    (tmp_path / "seq_5/vqa/Classification/frame001_QA.txt").write_text("ok?|kidney\nno pipe\n")
    with pytest.raises(AnnotationError, match=r"frame001_QA\.txt line 2"):
        build_task_set(tmp_path, "endovis2018-vqa")


# -- EndoVis2017 ------------------------------------------------------------------------------


def test_endovis17_folder_names() -> None:
    assert instrument_name("Left_Large_Needle_Driver_labels") == ("Large Needle Driver", "left")
    assert instrument_name("Large_Needle_Driver_Left_labels") == ("Large Needle Driver", "left")
    assert instrument_name("Prograsp_Forceps") == ("Prograsp Forceps", None)
    assert instrument_name("Right_Vessel_Sealer") == ("Vessel Sealer", "right")
    assert instrument_name("Maryland_Bipolar_Forceps_labels") == ("Maryland Bipolar Forceps", None)


def test_endovis17_boxes_from_every_folder_naming(tmp_path: Path) -> None:
    loaded = load_task_set(write_endovis17(tmp_path), "endovis2017")
    items = by_id(loaded.items)
    assert len(items) == 12  # datasets 1, 4, 6, 7: 3 + 3 + 4 + 2 instruments in view
    assert Counter(item.case for item in items.values()) == {
        "instrument_dataset_1": 3,
        "instrument_dataset_4": 3,
        "instrument_dataset_6": 4,
        "instrument_dataset_7": 2,
    }
    ds1 = "endovis17-localization/instrument_dataset_1"
    assert {k: v.gold for k, v in items.items() if k.startswith(ds1)} == {
        f"{ds1}/frame000-left-prograsp-forceps": {
            "label": "Prograsp Forceps",
            "box": [0.0, 0.25, 0.2, 0.5],
        },
        f"{ds1}/frame000-right-prograsp-forceps": {
            "label": "Prograsp Forceps",
            "box": [0.6, 0.25, 0.8, 0.5],
        },
        f"{ds1}/frame001-maryland-bipolar-forceps": {
            "label": "Maryland Bipolar Forceps",
            "box": [0.0, 0.0, 0.1, 0.1],
        },
    }
    needle = items["endovis17-localization/instrument_dataset_4/frame000-left-large-needle-driver"]
    assert needle.gold["label"] == "Large Needle Driver" and needle.meta["side"] == "left"
    assert needle.media.frames == [
        "instrument_1_4_training/instrument_dataset_4/left_frames/frame000.png"
    ]
    assert "left Large Needle Driver" in needle.question
    assert "endovis17-localization/instrument_dataset_6/frame000-prograsp-forceps" in items
    sealer = items["endovis17-localization/instrument_dataset_7/frame000-right-vessel-sealer"]
    assert sealer.meta["type"] == "Vessel Sealer"
    assert items[f"{ds1}/frame001-maryland-bipolar-forceps"].meta["type"] == "Bipolar Forceps"
    reasons: Counter[tuple[Skip, str]] = Counter()
    for entry in loaded.report.skipped:
        reasons[(entry.kind, entry.reason.split(" (")[0])] += entry.count
    assert reasons == {(Skip.DESIGN, "empty mask"): 12, (Skip.DESIGN, "catch-all 'Other' class"): 1}
    with_other = build_task_set(tmp_path, "endovis2017", include_other=True)
    assert sum(item.gold["label"] == "Other" for item in with_other) == 1


def test_endovis17_unreadable_and_stray_files_are_reported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_endovis17(tmp_path)
    truth = tmp_path / "instrument_5_8_training/instrument_dataset_7/ground_truth"
    (truth / "Right_Vessel_Sealer" / "frame002.png").write_bytes(b"not a png")
    (truth / "Right_Vessel_Sealer" / "Thumbs.db").write_bytes(b"")
    (truth / "notes.txt").write_text("")
    with caplog.at_level("WARNING"):
        items = build_task_set(tmp_path, "endovis2017")
    assert len(items) == 12  # the broken mask gives no item, and nothing else is lost
    assert "endovis2017: left out 16 entries" in caplog.text
    assert "unreadable mask" in caplog.text and "eval check" in caplog.text
    loaded = load_task_set(tmp_path, "endovis2017")
    problems = {
        (entry.path.split("ground_truth/")[1], entry.kind)
        for entry in loaded.report.skipped
        if entry.kind is not Skip.DESIGN
    }
    assert problems == {
        ("Right_Vessel_Sealer/frame002.png", Skip.UNREADABLE),
        ("Right_Vessel_Sealer/Thumbs.db", Skip.UNRECOGNISED),
        ("notes.txt", Skip.UNRECOGNISED),
    }


def test_endovis17_same_instrument_twice_is_reported(tmp_path: Path) -> None:
    write_endovis17(tmp_path)
    truth = tmp_path / "instrument_5_8_training/instrument_dataset_6/ground_truth"
    write_mask(truth / "Prograsp_Forceps_labels" / "frame000.png", (40, 20), (0, 0, 4, 2))
    loaded = load_task_set(tmp_path, "endovis2017")
    assert len(loaded.items) == 12
    (entry,) = [e for e in loaded.report.skipped if e.kind is Skip.DUPLICATE]
    assert entry.path.endswith("Prograsp_Forceps_labels")
    assert entry.reason == "same instrument and side as Prograsp_Forceps"


# -- SAR-RARP50 -------------------------------------------------------------------------------


def test_sar_rarp50_actions(tmp_path: Path) -> None:
    items = by_id(build_task_set(write_sar_rarp50(tmp_path), "sar-rarp50"))
    assert {k: v.gold for k, v in items.items()} == {
        "sar-rarp50-action/video_1/t0000": "Other",
        "sar-rarp50-action/video_1/t0010": "Picking-up the needle",
        "sar-rarp50-action/video_1/t0020": "Pushing the needle through the tissue",
        "sar-rarp50-action/video_1/t0030": "Tying a knot",
        "sar-rarp50-action/video_2/t0000": "Cutting the suture",
    }
    item = items["sar-rarp50-action/video_1/t0020"]
    assert item.media.video == "train1/video_1/video_left.avi" and item.media.start == 20
    assert item.meta["action_id"] == 3 and item.meta["split"] == "train1"
    assert item.meta["frame"] == 1200 and len(item.choices or []) == 8
    every_5 = build_task_set(tmp_path, "sar-rarp50", every_s=5, tasks=["sar-rarp50-action"])
    assert len([i for i in every_5 if i.case == "video_1"]) == 8  # 0, 5, ..., 35 s


def test_sar_rarp50_malformed_rows(tmp_path: Path) -> None:
    write_sar_rarp50(tmp_path)
    path = tmp_path / "test" / "video_2" / "action_discrete.txt"
    path.write_text("0,6\n6,abc\n")
    with pytest.raises(AnnotationError, match=r"action_discrete\.txt line 2"):
        build_task_set(tmp_path, "sar-rarp50")
    path.write_text("0,6\n6,9\n")
    with pytest.raises(AnnotationError, match=r"line 2: action id 9"):
        build_task_set(tmp_path, "sar-rarp50")


# -- SurgVLM / SurgSigma QA -------------------------------------------------------------------


def test_surgvlm_qa_shapes(tmp_path: Path) -> None:
    items = by_id(build_task_set(write_surgvlm(tmp_path), "surgvlm"))
    assert {k: (v.gold, v.meta["qa_type"]) for k, v in items.items()} == {
        "surgvlm-qa/video01/a1": ("Preparation", "phase"),
        "surgvlm-qa/video02/b2-q0": ("grasper (120,80),(400,300)", "box"),
        "surgvlm-qa/video02/b2-q1": ("hook (500,500),(600,700)", "box"),
        "surgvlm-qa/c1/more-00000": ("No", "cvs"),
    }
    grasper = items["surgvlm-qa/video02/b2-q0"]
    assert grasper.question == "Where is the grasper?"  # the <image> placeholder is dropped
    assert grasper.media.frames == ["images/video02/0002.jpg"]
    assert grasper.meta["qa_type_raw"] == "instrument_localization"
    clip = items["surgvlm-qa/c1/more-00000"]
    assert clip.media.video == "clips/c1.mp4" and clip.choices == ["Yes", "No"]
    one_file = build_task_set(tmp_path / "qa.json", "surgvlm")
    assert len(one_file) == 3 and one_file[0].media.frames == ["images/video01/0001.jpg"]


def test_surgvlm_malformed_items(tmp_path: Path) -> None:
    write_surgvlm(tmp_path)
    (tmp_path / "more.jsonl").write_text('{"question": "q", "answer": "a"}\n{broken\n')
    with pytest.raises(AnnotationError, match=r"more\.jsonl line 2"):
        build_task_set(tmp_path, "surgvlm")
    (tmp_path / "more.jsonl").write_text('{"question": "q without an answer"}\n')
    with pytest.raises(AnnotationError, match=r"more\.jsonl line 1.*no question\+answer"):
        build_task_set(tmp_path, "surgvlm")


# -- build_task_set: errors, sampling, files --------------------------------------------------


def test_unknown_dataset_suggests_the_closest() -> None:
    with pytest.raises(ValueError, match=r"unknown dataset 'cholec8'\. Did you mean 'cholec80'"):
        build_task_set(Path("."), "cholec8")
    with pytest.raises(ValueError, match="endoscapes2023"):
        get_loader("endoscape")


def test_missing_or_empty_roots_say_what_was_expected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"no such file or folder.*phase_annotations"):
        build_task_set(tmp_path / "nowhere", "cholec80")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"is empty; expected labels/VIDxx\.json"):
        build_task_set(tmp_path / "empty", "cholect50")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("nothing here")
    for dataset, expected in (
        ("cholec80", "phase_annotations/videoNN-phase.txt"),
        ("cholect50", "labels/VIDxx.json"),
        ("endoscapes2023", "all_metadata.csv"),
        ("endovis2018-vqa", "seq_N/vqa/Classification"),
        ("endovis2017", r"ground_truth/<Instrument>\[_labels\]"),
        ("sar-rarp50", "action_discrete.txt"),
        ("surgvlm", "JSON or JSONL"),
    ):
        with pytest.raises(ValueError, match=rf"found no .* under .*other; expected .*{expected}"):
            build_task_set(tmp_path / "other", dataset)


def test_unknown_task_and_option(tmp_path: Path) -> None:
    write_cholec80(tmp_path)
    with pytest.raises(ValueError, match="Did you mean 'cholec80-phase'"):
        build_task_set(tmp_path, "cholec80", tasks=["cholec80-phases"])
    with pytest.raises(ValueError, match="unknown loader option 'keep_emtpy'"):
        build_task_set(tmp_path, "cholec80", keep_emtpy=True)
    with pytest.raises(ValueError, match="positive"):
        build_task_set(tmp_path, "cholec80", every_s=0)


def _records(counts: dict[str, int]) -> list[TaskRecord]:
    return [
        TaskRecord(id=f"{task}/c/{k:03d}", task=task, dataset="x", question="q?", gold=k)
        for task, count in counts.items()
        for k in range(count)
    ]


def test_stratified_sample_keeps_task_shares() -> None:
    records = _records({"a": 60, "b": 30, "c": 10})
    picked = stratified_sample(records, 10, seed=3)
    assert Counter(r.task for r in picked) == {"a": 6, "b": 3, "c": 1}
    assert [r.id for r in picked] == sorted(r.id for r in picked)
    assert stratified_sample(records, 10, seed=3) == picked  # seeded: the same draw again
    assert stratified_sample(records, 10, seed=4) != picked
    assert Counter(r.task for r in stratified_sample(records, 20)) == {"a": 12, "b": 6, "c": 2}
    rare = _records({"a": 98, "b": 1, "c": 1})
    assert Counter(r.task for r in stratified_sample(rare, 5)) == {"a": 3, "b": 1, "c": 1}
    assert len(stratified_sample(records, 500)) == 100
    with pytest.raises(ValueError, match="at least one"):
        stratified_sample(records, 0)


def test_build_task_set_sample_is_deterministic(tmp_path: Path) -> None:
    write_cholec80(tmp_path / "cholec80", "video01")
    write_cholec80(tmp_path / "cholec80", "video02")
    every = build_task_set(tmp_path, "cholec80", every_s=20)
    first = build_task_set(tmp_path, "cholec80", every_s=20, sample=12, seed=7)
    assert first == build_task_set(tmp_path, "cholec80", every_s=20, sample=12, seed=7)
    shares = Counter(item.task for item in first)
    totals = Counter(item.task for item in every)
    assert sum(shares.values()) == 12 and set(shares) == set(totals)
    for task, count in shares.items():
        assert abs(count - 12 * totals[task] / len(every)) < 1
    assert {i.media.video for i in first} <= {
        "cholec80/videos/video01.mp4",
        "cholec80/videos/video02.mp4",
    }


def test_items_round_trip_through_task_files(tmp_path: Path) -> None:
    builders = {
        "cholec80": write_cholec80,
        "cholect50": write_cholect50,
        "endoscapes2023": write_endoscapes,
        "endovis2018-vqa": write_endovis18,
        "endovis2017": write_endovis17,
        "sar-rarp50": write_sar_rarp50,
        "surgvlm": write_surgvlm,
    }
    for dataset, build in builders.items():
        items = build_task_set(build(tmp_path / dataset), dataset)
        assert items, dataset
        path = write_tasks(tmp_path / f"{dataset}.jsonl", items, name=dataset)
        assert path.items == len(items)
        _, again = read_tasks(tmp_path / f"{dataset}.jsonl")
        assert again == items
