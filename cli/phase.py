"""``surgagent phase``: train, run and evaluate the surgical phase segmenter.

surgagent phase train --videos data/videos --annotations data/phase_annotations --out phase.pt
surgagent phase eval --gold data/phase_annotations --pred preds/ --variant matlab
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from surgagent.agent.errors import UserError
from surgagent.cli._shared import (
    JsonOpt,
    VariantChoice,
    case_cache,
    emit_json,
    err_console,
    progress_bar,
)

if TYPE_CHECKING:
    from rich.progress import Progress

    from surgagent.tools.phase.train import TrainProgress

__all__ = ["app"]

console = Console()

app = typer.Typer(
    help="Train, run and evaluate the surgical phase segmenter.\n\n"
    "Examples:\n\n"
    "  surgagent phase train --videos cholec80/videos --annotations cholec80/phase_annotations "
    "--out phase.pt --backbone resnet50\n\n"
    "  surgagent phase predict video41.mp4 --weights phase.pt --out preds/video41-phase.txt\n\n"
    "  surgagent phase eval --gold cholec80/phase_annotations --pred preds --variant matlab",
    no_args_is_help=True,
    rich_markup_mode="rich",
)


class PriorChoice(StrEnum):
    """Where the Viterbi transition prior comes from."""

    learned = "learned"
    forward = "forward"


_VARIANT_NOTES = {
    "matlab": "relaxed boundary as Evaluate.m runs it (early switches in effect not forgiven)",
    "intended": "relaxed boundary at both ends of each phase (as Python ports score)",
    "strict": "no relaxed boundary",
}

DeviceOpt = Annotated[str, typer.Option(help="Torch device: cpu, cuda, cuda:1 or auto.")]
PhasesOpt = Annotated[
    str | None,
    typer.Option(
        "--phases", help="Comma-separated phase names in label order (default: Cholec80's 7)."
    ),
]


def _vocabulary(phases: str | None) -> list[str] | None:
    return [name.strip() for name in phases.split(",") if name.strip()] if phases else None


@contextmanager
def _progress(enabled: bool) -> Iterator[Progress]:
    from rich.progress import Progress

    with Progress(console=err_console, disable=not enabled, transient=True) as bar:
        yield bar


@app.command()
def train(
    videos: Annotated[Path, typer.Option("--videos", help="Folder of videos (video01.mp4).")],
    annotations: Annotated[
        Path, typer.Option("--annotations", help="Folder of phase files (video01-phase.txt).")
    ],
    out: Annotated[Path, typer.Option("--out", help="Checkpoint file to write.")],
    backbone: Annotated[str, typer.Option(help="torchvision model for frame features.")] = (
        "resnet18"
    ),
    epochs: Annotated[int, typer.Option(min=1, help="Passes over the training videos.")] = 50,
    device: DeviceOpt = "cpu",
    weights: Annotated[
        str | None,
        typer.Option(help="Backbone weights: DEFAULT, IMAGENET1K_V1 or a state-dict file."),
    ] = None,
    image_size: Annotated[int, typer.Option(help="Frames are resized to this side.")] = 224,
    phases: PhasesOpt = None,
    lr: Annotated[float, typer.Option(help="Adam learning rate of the head.")] = 5e-4,
    prior: Annotated[
        PriorChoice,
        typer.Option(help="Viterbi transition prior: learned from the annotations, or forward."),
    ] = PriorChoice.learned,
    resume: Annotated[bool, typer.Option(help="Continue training the checkpoint at --out.")] = (
        False
    ),
    as_json: JsonOpt = False,
) -> None:
    """Train the phase head on Cholec80-format data; features are cached per video."""
    from surgagent.tools.phase.train import train_segmenter

    history: list[TrainProgress] = []
    with _progress(not as_json) as bar:
        features = bar.add_task("features", total=None)
        epochs_task = bar.add_task("training", total=epochs, visible=False)

        def show(event: TrainProgress) -> None:
            if event.stage == "features":
                bar.update(
                    features, completed=event.done, total=event.total, description=event.video
                )
            else:
                history.append(event)
                bar.update(features, visible=False)
                bar.update(
                    epochs_task,
                    completed=event.done,
                    visible=True,
                    description=f"epoch {event.done} loss {event.loss:.3f}",
                )

        path = train_segmenter(
            videos,
            annotations,
            out=out,
            backbone=backbone,
            epochs=epochs,
            vocabulary=_vocabulary(phases),
            device=device,
            progress=show,
            cache=case_cache(),
            weights=weights,
            image_size=image_size,
            lr=lr,
            prior=prior.value,
            resume=resume,
        )
    last = history[-1] if history else None
    summary = {
        "checkpoint": str(path),
        "epochs": last.done if last else None,
        "loss": last.loss if last else None,
        "train_accuracy": last.accuracy if last else None,
    }
    if as_json:
        sys.stdout.write(json.dumps(summary, indent=2) + "\n")
    else:
        console.print(f"wrote {path}: {summary}", highlight=False)


@app.command()
def predict(
    case: Annotated[str, typer.Argument(help="A video file, a frame folder or a case id.")],
    weights: Annotated[Path, typer.Option("--weights", help="Checkpoint from `phase train`.")],
    device: DeviceOpt = "cpu",
    smoothing: Annotated[
        bool, typer.Option(help="Viterbi decoding with the phase-transition prior.")
    ] = True,
    out: Annotated[
        Path | None, typer.Option("--out", help="Also write a Cholec80-format phase file here.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Recognise the phases of a case and print its segments."""
    from surgagent.tools.base import format_time
    from surgagent.tools.phase.annotations import write_cholec80_phase_file
    from surgagent.tools.phase.engine import PhaseSegmenter
    from surgagent.tools.video.engine import open_case

    segmenter = PhaseSegmenter.from_checkpoint(weights, device=device)  # bad weights fail first
    cache = case_cache()
    opened = open_case(case, cache)
    with progress_bar(not as_json, f"phases of {opened.id}") as progress:
        prediction = segmenter.predict(opened, cache, smoothing=smoothing, progress=progress)
    if out is not None:
        write_cholec80_phase_file(
            out, prediction.labels, prediction.vocabulary, fps=prediction.fps, video_fps=opened.fps
        )
    if as_json:
        emit_json(prediction)
        return
    from rich.table import Table

    table = Table("phase", "start", "end", "duration", "confidence", title=opened.id)
    for s in prediction.segments:
        times = (format_time(s.start), format_time(s.end), format_time(s.duration))
        table.add_row(s.phase, *times, f"{s.confidence:.2f}")
    console.print(table)


@app.command("eval")
def evaluate(
    gold: Annotated[Path, typer.Option("--gold", help="Folder of ground-truth phase files.")],
    pred: Annotated[Path, typer.Option("--pred", help="Folder of predicted phase files.")],
    variant: Annotated[
        VariantChoice, typer.Option(help="matlab (reference code), intended, or strict.")
    ] = VariantChoice.matlab,
    phases: PhasesOpt = None,
    fps: Annotated[float, typer.Option(help="Rate both are scored at (Cholec80: 1).")] = 1.0,
    video_fps: Annotated[
        float, typer.Option(help="Frame rate the files' frame numbers count (Cholec80: 25).")
    ] = 25.0,
    as_json: JsonOpt = False,
) -> None:
    """Score predicted phase files against ground truth (Cholec80 metrics, files by video)."""
    from surgagent.evals.phase_files import read_phase_pairs
    from surgagent.evals.phase_metrics import evaluate_videos
    from surgagent.tools.phase.annotations import check_vocabulary

    vocabulary = check_vocabulary(_vocabulary(phases))
    try:
        pairs = read_phase_pairs(gold, pred, vocabulary, fps=fps, video_fps=video_fps)
        result = evaluate_videos(pairs, phases=vocabulary, fps=fps, variant=variant.value)
    except ValueError as exc:
        raise UserError(f"cannot score these files: {exc}") from exc
    if as_json:
        sys.stdout.write(json.dumps(result.to_dict(), indent=2) + "\n")
        return
    from rich.table import Table

    table = Table(
        "phase",
        "jaccard",
        "precision",
        "recall",
        title=f"{len(result.videos)} videos, variant {result.variant}: "
        f"{_VARIANT_NOTES[result.variant]}",
    )
    rows = zip(
        result.phases,
        result.jaccard_per_phase,
        result.precision_per_phase,
        result.recall_per_phase,
        strict=True,
    )
    for name, j, p, r in rows:
        table.add_row(name, f"{j:.2f}", f"{p:.2f}", f"{r:.2f}")
    table.add_row(
        "mean",
        f"{result.jaccard:.2f} ± {result.jaccard_std:.2f}",
        f"{result.precision:.2f} ± {result.precision_std:.2f}",
        f"{result.recall:.2f} ± {result.recall_std:.2f}",
        style="bold",
    )
    console.print(table)
    console.print(
        f"accuracy {result.accuracy:.2f} ± {result.accuracy_std:.2f} (variant {result.variant})",
        highlight=False,
    )
