"""Reports of an eval run: markdown, JSON and plots, per task and system, with agent deltas.

Scores come from `surgagent.evals.metrics.score_task` on every item of the task set: an item a
system failed on, or whose answer could not be parsed, counts as wrong and is listed.
Agent-vs-direct deltas carry paired bootstrap 95% confidence intervals (the same resampled items
for both systems). The arena sum follows SurgVLM-Bench: the six tasks' primary scores added
(max 600).

    report = build_report([Path("runs/c80")])
    write_report(report, Path("runs/c80/report"))
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from surgagent.evals.metrics import TaskScore, score_task
from surgagent.evals.records import ResultRecord, TaskRecord, read_results, read_tasks
from surgagent.evals.runner import read_manifest, results_files
from surgagent.evals.tasks import TASKS, MetricSpec, get_task
from surgagent.tools.answers import Parsed

__all__ = ["Delta", "Report", "SystemCost", "build_report", "write_report"]


class Delta(BaseModel):
    """One system minus a baseline on one task, with a paired bootstrap 95% interval."""

    task: str
    system: str
    baseline: str
    metric: str
    delta: float
    low: float
    high: float
    n: int


class SystemCost(BaseModel):
    """What one item cost a system, on average."""

    system: str
    items: int
    failed: int
    latency_mean_s: float
    latency_median_s: float
    prompt_tokens: float
    completion_tokens: float
    images: float


class Report(BaseModel):
    """Everything `write_report` renders."""

    runs: list[str]
    tasks_name: str
    tasks_version: str
    context: str
    systems: list[str]
    scores: dict[str, dict[str, TaskScore]]  # task -> system -> score
    primary_metrics: dict[str, MetricSpec] = Field(default_factory=dict)  # task -> its spec's
    arena: dict[str, float]
    arena_tasks: list[str]
    deltas: list[Delta]
    costs: list[SystemCost]
    failures: dict[str, list[str]] = Field(default_factory=dict)  # system -> "id: error"
    notes: list[str] = Field(default_factory=list)


def _pairs(
    items: Sequence[TaskRecord], results: dict[str, ResultRecord]
) -> list[tuple[TaskRecord, Parsed[Any] | None]]:
    pairs: list[tuple[TaskRecord, Parsed[Any] | None]] = []
    for item in items:
        result = results.get(item.id)
        if result is None or result.status == "failed" or result.parsed is None:
            pairs.append((item, None))
        else:
            pairs.append((item, Parsed(ok=True, value=result.parsed)))
    return pairs


def _bootstrap(
    items: Sequence[TaskRecord],
    ours: dict[str, ResultRecord],
    base: dict[str, ResultRecord],
    rounds: int,
    seed: int,
) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    deltas = []
    for _ in range(rounds):
        sample = [items[k] for k in rng.integers(0, len(items), len(items))]
        a = score_task(sample[0].task, _pairs(sample, ours)).primary.value
        b = score_task(sample[0].task, _pairs(sample, base)).primary.value
        deltas.append(a - b)
    low, high = np.percentile(deltas, [2.5, 97.5])
    return float(low), float(high)


def _cost(system: str, results: Sequence[ResultRecord]) -> SystemCost:
    latencies = [r.usage.latency_s for r in results] or [0.0]
    n = max(1, len(results))
    return SystemCost(
        system=system,
        items=len(results),
        failed=sum(r.status == "failed" for r in results),
        latency_mean_s=round(statistics.fmean(latencies), 3),
        latency_median_s=round(statistics.median(latencies), 3),
        prompt_tokens=round(sum(r.usage.prompt_tokens for r in results) / n, 1),
        completion_tokens=round(sum(r.usage.completion_tokens for r in results) / n, 1),
        images=round(sum(r.usage.images for r in results) / n, 2),
    )


def build_report(
    run_dirs: Sequence[Path],
    *,
    tasks_file: Path | None = None,
    baseline: str = "direct",
    bootstrap: int = 1000,
    seed: int = 0,
) -> Report:
    """Score every system of the run folders (shards of one run may be several folders).

    Raises:
        ValueError: If the folders hold runs of different task sets, or no results.
    """
    manifests = [read_manifest(d) for d in run_dirs]
    if len({m.tasks_version for m in manifests}) > 1:
        raise ValueError("the run folders hold different task sets; report them separately")
    manifest = manifests[0]
    _, items = read_tasks(tasks_file or Path(manifest.tasks_file))
    latest: dict[str, dict[str, ResultRecord]] = defaultdict(dict)
    for run_dir in run_dirs:
        for result in read_results(results_files(run_dir)):
            latest[result.system][result.item_id] = result  # the last attempt counts
    if not latest:
        raise ValueError(f"no results in {', '.join(map(str, run_dirs))}")
    answered = {item_id for by_id in latest.values() for item_id in by_id}
    items = [item for item in items if item.id in answered]  # shards: only what ran
    by_task: dict[str, list[TaskRecord]] = defaultdict(list)
    for item in items:
        by_task[item.task].append(item)
    systems = sorted(latest)
    scores = {
        task: {s: score_task(task, _pairs(task_items, latest[s])) for s in systems}
        for task, task_items in sorted(by_task.items())
    }
    bench = [spec.name for spec in TASKS.arena()]
    arena_tasks = [task for task in bench if task in scores]
    arena = {s: round(sum(scores[t][s].primary.value for t in arena_tasks), 2) for s in systems}
    deltas = []
    if baseline in systems:
        for task, task_items in sorted(by_task.items()):
            for system in systems:
                if system == baseline:
                    continue
                low, high = _bootstrap(
                    task_items, latest[system], latest[baseline], bootstrap, seed
                )
                ours, base = scores[task][system].primary, scores[task][baseline].primary
                deltas.append(
                    Delta(
                        task=task,
                        system=system,
                        baseline=baseline,
                        metric=ours.name,
                        delta=round(ours.value - base.value, 2),
                        low=round(low, 2),
                        high=round(high, 2),
                        n=len(task_items),
                    )
                )
    failures = {
        s: [f"{r.item_id}: {r.error}" for r in latest[s].values() if r.status == "failed"]
        for s in systems
    }
    notes = []
    if "cholec80-phase" in scores:
        notes.append(
            "cholec80-phase is scored per sampled moment (accuracy over items); video-level "
            "Cholec80 metrics with the 10 s relaxed boundary come from `surgagent eval score` "
            "on phase files (variant named there)."
        )
    if len(arena_tasks) < len(bench):
        missing = ", ".join(t for t in bench if t not in arena_tasks)
        notes.append(
            f"arena sum over {len(arena_tasks)} of {len(bench)} tasks (missing: {missing})."
        )
    return Report(
        runs=[str(d) for d in run_dirs],
        tasks_name=manifest.tasks_name,
        tasks_version=manifest.tasks_version,
        context=manifest.context,
        systems=systems,
        scores=scores,
        primary_metrics={task: get_task(task).primary_metric for task in scores},
        arena=arena,
        arena_tasks=arena_tasks,
        deltas=deltas,
        costs=[_cost(s, list(latest[s].values())) for s in systems],
        failures={s: f for s, f in failures.items() if f},
        notes=notes,
    )


def _markdown(report: Report, plots: list[str]) -> str:
    lines = [
        f"# Eval report: {report.tasks_name} (version {report.tasks_version})",
        "",
        f"Runs: {', '.join(report.runs)}. Context: **{report.context}** "
        "(fresh: each item asked alone; case: one conversation per case). "
        "Failed and unparseable answers count as wrong.",
        "",
        "## Scores (0-100, primary metric per task)",
        "",
        "| task | metric | n | " + " | ".join(report.systems) + " |",
        "|---|---|---|" + "---|" * len(report.systems),
    ]
    for task, by_system in report.scores.items():
        first = next(iter(by_system.values()))
        cells = [f"{s.primary.value:.2f} ({s.n_unparsed} unparsed)" for s in by_system.values()]
        lines.append(f"| {task} | {first.primary.name} | {first.n} | " + " | ".join(cells) + " |")
    if report.arena_tasks:
        arena = " | ".join(f"{report.arena[s]:.2f}" for s in report.systems)
        lines.append(f"| **arena sum** | sum of {len(report.arena_tasks)} | | {arena} |")
    lines += _metric_lines(report)
    if report.deltas:
        lines += [
            "",
            "## Against the baseline (paired bootstrap 95% CI)",
            "",
            "| task | system | baseline | metric | delta | 95% CI | n |",
            "|---|---|---|---|---|---|---|",
        ]
        for d in report.deltas:
            lines.append(
                f"| {d.task} | {d.system} | {d.baseline} | {d.metric} | {d.delta:+.2f} | "
                f"[{d.low:+.2f}, {d.high:+.2f}] | {d.n} |"
            )
    lines += [
        "",
        "## Cost per item",
        "",
        "| system | items | failed | latency mean (s) | median (s) | prompt tok | "
        "completion tok | images |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in report.costs:
        lines.append(
            f"| {c.system} | {c.items} | {c.failed} | {c.latency_mean_s} | "
            f"{c.latency_median_s} | {c.prompt_tokens} | {c.completion_tokens} | {c.images} |"
        )
    phase = report.scores.get("cholec80-phase")
    if phase:
        lines += ["", "## Per-phase F1 (cholec80-phase)", ""]
        lines.append("| phase | " + " | ".join(phase) + " |")
        lines.append("|---|" + "---|" * len(phase))
        classes = next(iter(phase.values())).per_class
        for name in classes:
            values = [
                f"{s.per_class.get(name, {}).get('f1', float('nan')):.1f}" for s in phase.values()
            ]
            lines.append(f"| {name} | " + " | ".join(values) + " |")
    for system, failures in report.failures.items():
        lines += ["", f"## Failed items: {system}", ""] + [f"- {f}" for f in failures[:50]]
    for task, by_system in report.scores.items():
        for system, s in by_system.items():
            if s.unparsed_ids:
                shown = ", ".join(s.unparsed_ids[:20])
                lines.append(f"\nUnparsed ({task}, {system}): {shown}")
    if plots:
        lines += ["", "## Plots", ""] + [f"![{p}]({p})" for p in plots]
    if report.notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in report.notes]
    return "\n".join(lines) + "\n"


def _metric_lines(report: Report) -> list[str]:
    """What each primary metric is, as the task specs define it."""
    if not report.primary_metrics:
        return []
    lines = ["", "Primary metrics, as the task specs define them:", ""]
    for task, metric in report.primary_metrics.items():
        better = "higher" if metric.higher_is_better else "lower"
        lines.append(f"- {task}: {metric.name} ({better} is better): {metric.aggregation}")
    return lines


def _plots(report: Report, folder: Path) -> list[str]:
    """Confusion matrices of label tasks and a score bar chart; returns relative paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    fig, ax = plt.subplots(figsize=(max(4, 1.4 * len(report.scores)), 3.2))
    width = 0.8 / max(1, len(report.systems))
    for k, system in enumerate(report.systems):
        values = [report.scores[t][system].primary.value for t in report.scores]
        ax.bar(np.arange(len(values)) + k * width, values, width, label=system)
    ax.set_xticks(np.arange(len(report.scores)) + width * (len(report.systems) - 1) / 2)
    ax.set_xticklabels(list(report.scores), rotation=30, ha="right", fontsize=7)
    ax.set_ylabel("score (0-100)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(folder / "scores.png", dpi=120)
    plt.close(fig)
    written.append("plots/scores.png")
    for task, by_system in report.scores.items():
        for system, score in by_system.items():
            if not score.confusion:
                continue
            labels, matrix = score.confusion["labels"], np.array(score.confusion["matrix"])
            fig, ax = plt.subplots(figsize=(1 + 0.5 * len(labels), 1 + 0.5 * len(labels)))
            ax.imshow(matrix, cmap="Blues")
            ax.set_xticks(range(len(labels)), labels, rotation=60, ha="right", fontsize=6)
            ax.set_yticks(range(len(labels)), labels, fontsize=6)
            ax.set_xlabel("predicted")
            ax.set_ylabel("gold")
            ax.set_title(f"{task}: {system}", fontsize=8)
            fig.tight_layout()
            name = f"confusion-{task}-{system}.png"
            fig.savefig(folder / name, dpi=120)
            plt.close(fig)
            written.append(f"plots/{name}")
    return written


def write_report(report: Report, out: Path, *, plots: bool = True) -> dict[str, Path]:
    """Write ``report.md``, ``report.json`` and ``plots/`` under ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    images = _plots(report, out / "plots") if plots else []
    (out / "report.json").write_text(report.model_dump_json(indent=1))
    (out / "report.md").write_text(_markdown(report, images))
    return {"markdown": out / "report.md", "json": out / "report.json", "plots": out / "plots"}
