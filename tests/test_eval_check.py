"""`surgagent eval check`: each kind of misalignment, found on the datasets' real layouts."""

from __future__ import annotations

import json
from pathlib import Path

from surgagent.evals.check import CheckReport, Finding, check_dataset
from surgagent.evals.records import read_tasks
from tests.fixtures.cli import run_cli
from tests.fixtures.videos import write_video
from tests.test_eval_loaders import (
    ENDOSCAPES_ROWS,
    triplet_vector,
    write_cholec80,
    write_cholect50,
    write_endoscapes,
    write_endovis17,
    write_endovis18,
    write_image,
    write_sar_rarp50,
    write_surgvlm,
)


def only(report: CheckReport, kind: str, severity: str = "error") -> Finding:
    found = [f for f in report.findings if f.kind == kind and f.severity == severity]
    assert len(found) == 1, report.findings
    return found[0]


def kinds(report: CheckReport, severity: str) -> set[str]:
    return {finding.kind for finding in report.findings if finding.severity == severity}


def test_a_dataset_that_lines_up_passes(tmp_path: Path) -> None:
    report = check_dataset(write_endovis17(tmp_path), "endovis2017")
    assert report.ok and report.errors == 0 and report.warnings == 0
    assert report.items == 12
    assert [(s.split, s.task, s.items) for s in report.splits] == [
        ("-", "endovis17-localization", 12)
    ]
    counts = {label.label: label.count for label in report.labels}
    assert counts["Large Needle Driver"] == 4 and counts["Grasping Retractor"] == 0
    assert all(label.in_vocabulary for label in report.labels)
    assert any("left_frames/frameXXX.png" in line for line in report.assumptions)
    design = only(report, "skipped", "info")  # empty masks and Other_labels: by design
    assert design.count == 13


def test_items_per_split_and_task(tmp_path: Path) -> None:
    report = check_dataset(write_sar_rarp50(tmp_path), "sar-rarp50")
    assert [(s.split, s.task, s.items) for s in report.splits] == [
        ("test", "sar-rarp50-action", 1),
        ("train1", "sar-rarp50-action", 4),
    ]
    report = check_dataset(write_endovis18(tmp_path / "ev18"), "endovis2018-vqa")
    assert {(s.split, s.items) for s in report.splits} == {("val", 6)}


def test_labels_outside_the_vocabulary_are_named(tmp_path: Path) -> None:
    write_endovis18(tmp_path)
    (tmp_path / "seq_5/vqa/Classification/frame001_QA.txt").write_text(
        "what is the state of clip_applier?|Stapling\nwhat is the state of suction?|Suction\n"
    )
    report = check_dataset(tmp_path, "endovis2018-vqa")
    finding = only(report, "vocabulary")
    assert "'Stapling' (endovis18-vqa, 1x)" in finding.message
    assert finding.examples == ["endovis18-vqa/seq_5/frame001-q00"]
    outside = [label for label in report.labels if label.in_vocabulary is False]
    assert [(label.label, label.count) for label in outside] == [("Stapling", 1)]
    assert not report.ok


def test_annotations_without_frames(tmp_path: Path) -> None:
    write_cholect50(tmp_path)
    (tmp_path / "videos" / "VID01" / "000002.png").unlink()  # an item's frame
    (tmp_path / "videos" / "VID01" / "000003.png").unlink()  # an annotated, empty frame
    finding = only(check_dataset(tmp_path, "cholect50"), "missing_media")
    assert finding.count == 2
    assert finding.examples == ["videos/VID01/000002.png", "videos/VID01/000003.png"]
    write_cholec80(tmp_path / "c80")  # annotations, but videos/ is empty
    finding = only(check_dataset(tmp_path / "c80", "cholec80"), "missing_media")
    assert finding.examples == ["videos/video01.mp4"]
    write_endoscapes(tmp_path / "scapes")  # row 3_75 has no image: left out, and an error
    finding = only(check_dataset(tmp_path / "scapes", "endoscapes2023"), "missing_media")
    assert finding.count == 1 and "line 5: 3_75" in finding.examples[0]


def test_frames_without_annotations(tmp_path: Path) -> None:
    write_cholect50(tmp_path)
    write_image(tmp_path / "videos" / "VID01" / "000009.png")
    report = check_dataset(tmp_path, "cholect50")
    assert report.ok  # a warning only
    finding = only(report, "unannotated_media", "warning")
    assert finding.examples == ["videos/VID01/000009.png"]
    write_endovis17(tmp_path / "ev17")
    write_image(
        tmp_path / "ev17/instrument_1_4_training/instrument_dataset_4/left_frames/frame002.png"
    )
    finding = only(check_dataset(tmp_path / "ev17", "endovis2017"), "unannotated_media", "warning")
    assert finding.examples == [
        "instrument_1_4_training/instrument_dataset_4/left_frames/frame002.png"
    ]


def test_frame_rate_and_numbering_against_the_files(tmp_path: Path) -> None:
    root = tmp_path / "sar"
    for name, rows in (("video_1", range(0, 120, 6)), ("video_2", range(0, 600, 6))):
        (root / "train1" / name).mkdir(parents=True)
        text = "\n".join(f"{frame:09d},1" for frame in rows)
        (root / "train1" / name / "action_discrete.txt").write_text(text + "\n")
    (root / "train1" / "video_3").mkdir()
    (root / "train1" / "video_3" / "action_discrete.txt").write_text("0,1\n5,1\n10,2\n")
    write_video(root / "train1/video_1/video_left.avi", fps=60, duration=2.0, size=(64, 48))
    write_video(root / "train1/video_2/video_left.avi", fps=60, duration=2.0, size=(64, 48))
    write_video(root / "train1/video_3/video_left.avi", fps=30, duration=1.0, size=(64, 48))
    report = check_dataset(root, "sar-rarp50")
    timings = {t.case: (t.agrees, t.error) for t in report.timings}
    assert timings == {"video_1": (True, False), "video_2": (False, True), "video_3": (False, True)}
    error = only(report, "timing")
    assert error.count == 2
    assert any("frame 594 (10.0 s) is past the video's end (2.0 s)" in e for e in error.examples)
    assert any("the video runs at 30 fps, not 60" in e for e in error.examples)
    irregular = only(report, "timing", "warning")
    assert irregular.examples == [
        "train1/video_3/action_discrete.txt: rows not 6 frames apart: steps 5 (2x)"
    ]
    assert any("one row every 6 frames" in line for line in report.assumptions)
    write_cholect50(tmp_path / "t50", {"0": [triplet_vector(17)], "3": [triplet_vector(1)]})
    labels = tmp_path / "t50" / "labels" / "VID01.json"
    data = json.loads(labels.read_text())
    labels.write_text(json.dumps({**data, "num_frames": 2}))  # ids 0..1 only
    error = only(check_dataset(tmp_path / "t50", "cholect50"), "timing")
    assert "frame ids from 3 are at or past num_frames=2" in error.examples[0]


def test_cholec80_phase_file_against_its_video(tmp_path: Path) -> None:
    write_cholec80(tmp_path)  # 200 s of annotation
    write_video(tmp_path / "videos" / "video01.mp4", fps=25, duration=2.0, size=(64, 48))
    report = check_dataset(tmp_path, "cholec80")
    (timing,) = report.timings
    assert timing.video == "videos/video01.mp4" and timing.video_s == 2.0
    assert timing.annotated_s == 200.0 and timing.agrees is False and timing.error
    assert "past the video's end" in only(report, "timing").examples[0]


def test_duplicate_ids(tmp_path: Path) -> None:
    write_endoscapes(tmp_path, [*ENDOSCAPES_ROWS, ENDOSCAPES_ROWS[2]])  # 2_50 twice
    finding = only(check_dataset(tmp_path, "endoscapes2023"), "duplicate_id")
    assert finding.count == 1 and "line 6" in finding.examples[0]
    write_surgvlm(tmp_path / "qa")
    items = json.loads((tmp_path / "qa" / "qa.json").read_text())
    (tmp_path / "qa" / "qa.json").write_text(json.dumps([*items, items[0]]))
    report = check_dataset(tmp_path / "qa", "surgvlm")
    renamed = only(report, "duplicate_id", "warning")  # kept under a ~2 suffix
    assert "surgvlm-qa/video01/a1~2" in renamed.examples[0]


def test_skipped_files_are_listed_with_reasons(tmp_path: Path) -> None:
    write_endovis17(tmp_path)
    truth = tmp_path / "instrument_5_8_training/instrument_dataset_7/ground_truth"
    (truth / "Right_Vessel_Sealer" / "frame001.png").write_bytes(b"\x89PNG broken")
    (truth / "Readme.txt").write_text("")
    report = check_dataset(tmp_path, "endovis2017")
    unreadable = only(report, "skipped")
    assert "Right_Vessel_Sealer/frame001.png: unreadable mask" in unreadable.examples[0]
    stray = only(report, "skipped", "warning")
    assert "ground_truth/Readme.txt: not an instrument folder" in stray.examples[0]
    paths = {entry.path.rsplit("/", 2)[-1] for entry in report.skipped}
    assert {"frame001.png", "Readme.txt"} <= paths


def test_a_malformed_file_is_an_error_finding(tmp_path: Path) -> None:
    write_cholect50(tmp_path)
    (tmp_path / "labels" / "VID01.json").write_text('{"annotations": {"1": [[1, 0]],}}')
    report = check_dataset(tmp_path, "cholect50")
    assert not report.ok and "VID01.json line 1" in only(report, "load").message


def test_cli_check_exits_1_on_errors_and_prints_json(tmp_path: Path) -> None:
    write_endovis17(tmp_path / "good")
    done = run_cli("eval", "check", str(tmp_path / "good"), "--dataset", "endovis2017")
    assert done.returncode == 0, done.stderr
    assert "endovis2017: 12 items" in done.stdout and "ok: 0 errors" in done.stdout
    write_endovis18(tmp_path / "bad")
    (tmp_path / "bad/seq_5/vqa/Classification/frame001_QA.txt").write_text("what?|Stapling\n")
    done = run_cli("eval", "check", str(tmp_path / "bad"), "--dataset", "endovis2018-vqa", "--json")
    assert done.returncode == 1, done.stderr
    report = CheckReport.model_validate_json(done.stdout)
    assert report.errors == 1 and report.findings[0].kind == "vocabulary"
    assert json.loads(done.stdout)["ok"] is False
    done = run_cli("eval", "check", str(tmp_path / "nowhere"), "--dataset", "endovis2017")
    assert done.returncode == 1 and "no such file or folder" in done.stderr
    assert "Traceback" not in done.stderr


def test_cli_tasks_keeps_what_was_left_out_in_the_task_set(tmp_path: Path) -> None:
    write_endovis17(tmp_path / "ev17")
    truth = tmp_path / "ev17/instrument_5_8_training/instrument_dataset_7/ground_truth"
    (truth / "Right_Vessel_Sealer" / "frame001.png").write_bytes(b"broken")
    out = tmp_path / "ev17.jsonl"
    done = run_cli(
        "eval", "tasks", str(tmp_path / "ev17"), "--dataset", "endovis2017", "--out", str(out)
    )
    assert done.returncode == 0, done.stderr
    logged = " ".join(done.stderr.split())  # the log handler wraps lines
    assert "endovis2017: left out 13 entries" in logged and "unreadable mask" in logged
    header, items = read_tasks(out)
    assert len(items) == 12
    left_out = [entry for entry in header.meta["left_out"] if entry["kind"] == "unreadable"]
    assert left_out[0]["path"].endswith("Right_Vessel_Sealer/frame001.png")
