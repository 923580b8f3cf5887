"""``surgagent eval``: build task sets, run systems on them, score and report.

surgagent eval check data/cholec80 --dataset cholec80
surgagent eval tasks data/cholec80 --dataset cholec80 --out cholec80.jsonl --sample 200
surgagent eval run cholec80.jsonl --systems agent,direct --concurrency 8 --out runs/c80
"""

from __future__ import annotations

import json
import sys
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape

from surgagent.agent.errors import UserError
from surgagent.cli._shared import JsonOpt, VariantChoice, emit_json, err_console, progress_bar

if TYPE_CHECKING:
    from surgagent.evals.check import CheckReport

__all__ = ["app"]

console = Console()

app = typer.Typer(
    help="SurgVLM-Bench-style evals: the agent against the bare VLM on the same items.\n\n"
    "Examples:\n\n"
    "  surgagent eval check data/cholec80 --dataset cholec80\n\n"
    "  surgagent eval tasks data/cholec80 --dataset cholec80 --out c80.jsonl --sample 200\n\n"
    "  surgagent eval run c80.jsonl --systems agent,direct --concurrency 8 --out runs/c80\n\n"
    "  surgagent eval run c80.jsonl --systems agent --shard 0/4 --out runs/c80\n\n"
    "  surgagent eval report runs/c80\n\n"
    "  surgagent eval score --task cholec80-phase --gold gold/ --pred preds/ --json",
    no_args_is_help=True,
    rich_markup_mode="rich",
)


class ContextChoice(StrEnum):
    """How items of one case are asked."""

    fresh = "fresh"
    case = "case"


def _shard(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise UserError(f"--shard {text!r}: write it as i/n, e.g. 0/4") from None
    if not 0 <= index < count:
        raise UserError(f"--shard {text!r}: i must be in 0..{count - 1}")
    return index, count


@app.command()
def tasks(
    root: Annotated[Path, typer.Argument(help="The dataset folder, in its native layout.")],
    dataset: Annotated[str, typer.Option(help="cholec80, cholect50, endoscapes2023, ...")],
    out: Annotated[Path, typer.Option(help="The task set (.jsonl) to write.")],
    task: Annotated[
        str | None, typer.Option("--tasks", help="Comma-separated task names (default: all).")
    ] = None,
    sample: Annotated[int | None, typer.Option(min=1, help="Draw this many items.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the sample.")] = 0,
    every: Annotated[
        float | None, typer.Option(min=0.1, help="Seconds between items of dense videos.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Build a versioned task set from a dataset's own annotation files."""
    import logging

    from surgagent.evals.loaders import load_task_set
    from surgagent.evals.records import write_tasks

    names = [t.strip() for t in task.split(",")] if task else None
    try:
        loaded = load_task_set(root, dataset, tasks=names, sample=sample, seed=seed, every_s=every)
    except ValueError as error:
        raise UserError(str(error)) from error
    items = loaded.items
    loaded.report.log(logging.getLogger(__name__))
    meta = {
        "root": str(root.resolve()),
        "dataset": dataset,
        "seed": seed,
        "sample": sample,
        "left_out": [entry.model_dump(mode="json") for entry in loaded.report.skipped],
    }
    header = write_tasks(out, items, name=out.stem, meta=meta)
    if as_json:
        emit_json(header)
    else:
        counts: dict[str, int] = {}
        for item in items:
            counts[item.task] = counts.get(item.task, 0) + 1
        listing = ", ".join(f"{name} {n}" for name, n in sorted(counts.items()))
        console.print(f"wrote {out}: {header.items} items ({listing}), version {header.version}")


@app.command()
def check(
    root: Annotated[Path, typer.Argument(help="The dataset folder, in its native layout.")],
    dataset: Annotated[str, typer.Option(help="cholec80, cholect50, endoscapes2023, ...")],
    every: Annotated[
        float | None, typer.Option(min=0.1, help="Seconds between items of dense videos.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Check that a dataset's files and items line up before a benchmark; exit 1 on errors.

    Reports items per split and task, gold labels against the vocabulary, annotations
    without frames and frames without annotations, the frame-rate and numbering
    assumptions against the files (and each video's length), repeated ids, and every
    folder, file or row the loader left out with its reason.
    """
    from surgagent.evals.check import check_dataset

    try:
        report = check_dataset(root, dataset, every_s=every)
    except ValueError as error:
        raise UserError(str(error)) from error
    if as_json:
        emit_json(report)
    else:
        _print_check(report)
    if not report.ok:
        raise typer.Exit(1)


def _print_check(report: CheckReport) -> None:
    """The check report as rich tables: items, labels, timing, then the findings."""
    from rich.table import Table

    items = Table("split", "task", "items", title=f"{report.dataset}: {report.items} items")
    for row in report.splits:
        items.add_row(row.split, row.task, str(row.items))
    console.print(items)
    labels = Table("task", "label", "items", "in vocabulary", title="gold labels")
    for label in report.labels:
        if label.count or label.in_vocabulary is False:
            inside = {True: "yes", False: "[red]NO[/red]", None: "-"}[label.in_vocabulary]
            labels.add_row(label.task, escape(label.label), str(label.count), inside)
    unused = sum(1 for label in report.labels if not label.count and label.in_vocabulary)
    labels.caption = f"{unused} vocabulary labels have no item" if unused else None
    console.print(labels)
    console.print("assumptions: " + "; ".join(report.assumptions), highlight=False, markup=False)
    off = [timing for timing in report.timings if timing.agrees is False]
    if off:
        timings = Table("annotation", "video", "annotated s", "video s", "problem")
        for timing in off:
            video_s = f"{timing.video_s:.1f}" if timing.video_s is not None else "-"
            timings.add_row(
                escape(timing.annotation),
                escape(timing.video or "-"),
                f"{timing.annotated_s:.1f}",
                video_s,
                escape(timing.note),
            )
        console.print(timings)
    colours = {"error": "red", "warning": "yellow", "info": "dim"}
    findings = Table("severity", "kind", "count", "what", title="findings")
    findings.add_column("e.g.", overflow="fold")
    for finding in report.findings:
        colour = colours[finding.severity]
        findings.add_row(
            f"[{colour}]{finding.severity}[/{colour}]",
            finding.kind,
            str(finding.count),
            escape(finding.message),
            escape("\n".join(finding.examples)),
        )
    console.print(findings)
    verdict = "[green]ok[/green]" if report.ok else "[red]errors found[/red]"
    console.print(f"{verdict}: {report.errors} errors, {report.warnings} warnings")


@app.command()
def run(
    tasks_file: Annotated[Path, typer.Argument(help="A task set from `eval tasks`.")],
    out: Annotated[Path, typer.Option(help="Run folder (resumed when it exists).")],
    systems: Annotated[
        str, typer.Option(help="Comma-separated: agent, direct, agent-oracle.")
    ] = "agent,direct",
    concurrency: Annotated[int, typer.Option(min=1, max=256, help="Items in flight.")] = 4,
    context: Annotated[
        ContextChoice, typer.Option(help="fresh: each item alone; case: one chat per case.")
    ] = ContextChoice.fresh,
    retry_failed: Annotated[
        bool, typer.Option("--retry-failed", help="Run failed items again.")
    ] = False,
    shard: Annotated[str | None, typer.Option(help="Only shard i/n (0-based), e.g. 0/4.")] = None,
    media_root: Annotated[
        Path | None, typer.Option(help="Where relative media paths start (default: the set's).")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Run systems on a task set; results are appended as they finish, so a rerun resumes."""
    from surgagent.evals.records import read_tasks
    from surgagent.evals.runner import RunRefused, run_eval
    from surgagent.evals.systems import make_systems

    try:
        header, _ = read_tasks(tasks_file)
        root = media_root or Path(header.meta.get("root") or tasks_file.resolve().parent)
        names = [name.strip() for name in systems.split(",") if name.strip()]
        built = make_systems(names, media_root=root, work_dir=out)
    except ValueError as error:  # an unreadable task set, unknown systems
        raise UserError(str(error)) from error
    try:
        with progress_bar(not as_json, f"{header.name}: {', '.join(names)}") as report:
            summary = run_eval(
                tasks_file,
                out,
                built,
                concurrency=concurrency,
                context=context.value,
                retry_failed=retry_failed,
                shard_spec=_shard(shard),
                progress=report,
            )
    except RunRefused as error:  # anything else is a bug: its traceback is shown
        raise UserError(str(error)) from error
    if as_json:
        emit_json(summary)
    else:
        console.print(
            f"{summary.done} answered, {summary.failed} failed, {summary.skipped} already done "
            f"({summary.seconds:.1f} s) -> {summary.results_file}",
            highlight=False,
        )
    if summary.failed:
        err_console.print(f"{summary.failed} items failed; rerun with --retry-failed")
    if summary.planned and summary.failed == summary.planned:
        raise typer.Exit(1)  # nothing was answered: a pipeline must not go on as if it were


@app.command()
def score(
    task: Annotated[str, typer.Option(help="cholec80-phase (Cholec80-format phase files).")],
    gold: Annotated[Path, typer.Option(help="Folder of ground-truth phase files.")],
    pred: Annotated[Path, typer.Option(help="Folder of predicted phase files (same names).")],
    variant: Annotated[VariantChoice, typer.Option(help="matlab, intended or strict.")] = (
        VariantChoice.matlab
    ),
    as_json: JsonOpt = False,
) -> None:
    """Score prediction files in a dataset's own format directly (no run needed)."""
    from surgagent.evals.phase_files import score_cholec80_dirs

    if task != "cholec80-phase":
        raise UserError(f"eval score reads cholec80-phase files; {task!r} is scored by runs")
    try:
        result = score_cholec80_dirs(gold, pred, variant=variant.value)
    except ValueError as error:
        raise UserError(str(error)) from error
    if as_json:
        sys.stdout.write(json.dumps(result, indent=2, default=str) + "\n")
    else:
        for key, value in result.items():
            console.print(f"{key}: {value}", highlight=False, markup=False)


@app.command()
def report(
    runs: Annotated[list[Path], typer.Argument(help="Run folder(s); shards of one run merge.")],
    out: Annotated[Path | None, typer.Option(help="Report folder (default: RUN/report).")] = None,
    tasks_file: Annotated[
        Path | None, typer.Option("--tasks", help="The task set, if it moved since the run.")
    ] = None,
    baseline: Annotated[str, typer.Option(help="System the deltas are against.")] = "direct",
    bootstrap: Annotated[int, typer.Option(min=0, help="Bootstrap resamples for the CIs.")] = 1000,
    as_json: JsonOpt = False,
) -> None:
    """Write report.md, report.json and plots: scores, arena sum, deltas with CIs, cost."""
    from surgagent.evals.report import build_report, write_report

    try:
        built = build_report(runs, tasks_file=tasks_file, baseline=baseline, bootstrap=bootstrap)
    except (ValueError, FileNotFoundError) as error:
        raise UserError(str(error)) from error
    paths = write_report(built, out or runs[0] / "report")
    if as_json:
        emit_json(built)
    else:
        console.print(paths["markdown"].read_text(), highlight=False, markup=False)
        console.print(f"wrote {paths['markdown']}, {paths['json']}, {paths['plots']}/")
