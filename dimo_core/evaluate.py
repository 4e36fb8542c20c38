"""``dimo eval``: the quality-vs-steps table every modality shares (report.json, report.md, PNG)."""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .checkpoint import save_json
from .conditions import index_conditions
from .context import Context
from .run_folder import prepare_out_dir
from .sample import draw_student, draw_teacher, eval_conditions
from .student import load_student


def _timed_batches(draw, cond, n: int, batch_size: int, seed: int, device, done=None) -> tuple[torch.Tensor, float]:
    """Draw n samples in batches, batch i seeded with seed + i (so rows share conditions and seeds)."""
    out, seconds = [], 0.0
    for i, start in enumerate(range(0, n, batch_size)):
        idx = slice(start, min(n, start + batch_size))
        generator = torch.Generator(device).manual_seed(seed + i)
        tic = time.perf_counter()
        out.append(draw(index_conditions(cond, idx), idx.stop - idx.start, generator))
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds += time.perf_counter() - tic
        if done is not None:
            done(idx.stop - idx.start)  # progress: samples finished
    return torch.cat(out), seconds / n


def evaluate(ctx: Context, progress: bool = True) -> dict:
    cfg = ctx.config.eval
    out = prepare_out_dir(ctx, "eval")
    metrics = [ctx.build("metrics", m, f"eval.metrics[{i}]") for i, m in enumerate(cfg.metrics)]
    sampler = ctx.build("samplers", cfg.sampler, "eval.sampler")
    # a teacher-only report (eval.student_steps=[]) needs no student
    student = load_student(ctx, cfg.student) if cfg.student_steps != [] else None
    student_steps = student.trained_steps if student is not None and cfg.student_steps is None else cfg.student_steps
    cond = eval_conditions(ctx, cfg.samples, cfg.seed)
    jobs = [("teacher", s) for s in cfg.teacher_steps] + [("student", s) for s in student_steps or []]
    rows, grid = [], {}
    # the bar counts samples weighted by their sampling steps: a row's cost grows with its steps, so
    # this is what the ETA must count (one tick per row would promise the 32-step row in a 1-step time)
    bar = tqdm(total=cfg.samples * sum(steps for _, steps in jobs), desc="eval (samples x steps)",
               unit="", disable=not progress)
    for who, steps in jobs:
        bar.set_postfix_str(f"{who} {steps} step{'s' * (steps > 1)}")
        if who == "teacher":
            def draw(c, n, g, steps=steps):
                return draw_teacher(ctx, sampler, c, n, steps, cfg.guidance, g)
        else:
            def draw(c, n, g, steps=steps):
                return draw_student(ctx, student, c, n, steps, cfg.student_temperature, g)
        tokens, seconds = _timed_batches(draw, cond, cfg.samples, cfg.batch_size, cfg.seed, ctx.device,
                                         lambda n, steps=steps: bar.update(n * steps))
        values = {}
        for metric in metrics:
            values.update({k: float(v) for k, v in metric(tokens, cond).items()})
        rows.append({"sampler": who, "steps": steps, "metrics": values, "seconds_per_sample": seconds,
                     "samples": cfg.samples})
        label = f"teacher {steps} step{'s' * (steps > 1)}" if who == "teacher" else \
            ("student" if steps == 1 else f"student {steps} steps")
        grid[label] = tokens[:cfg.grid]
    bar.close()
    report = {"rows": rows, "config": ctx.config.model_dump(mode="json"),
              "teacher_sampler": cfg.sampler.spec(), "guidance": cfg.guidance}
    save_json(out / "report.json", report)
    (out / "report.md").write_text(markdown_table(rows))
    plot_quality(rows, out / "quality_vs_steps.png", metric_info(metrics))
    if cfg.writer and cfg.writer.name:
        writer = ctx.build("writers", cfg.writer, "eval.writer")
        paths = writer(grid, index_conditions(cond, slice(0, cfg.grid)), str(out))
        with open(out / "report.md", "a") as f:
            f.write("\n" + "\n".join(f"![samples]({Path(p).name})" if str(p).endswith(".png")
                                     else f"Samples: [{Path(p).name}]({Path(p).name})" for p in paths) + "\n")
    return report


def markdown_table(rows: list[dict]) -> str:
    names = sorted({k for r in rows for k in r["metrics"]})
    teacher_16 = next((r["seconds_per_sample"] for r in rows if r["sampler"] == "teacher" and r["steps"] == 16), None)
    head = ["sampler", "steps", *names, "s/sample"] + (["speed-up vs teacher@16"] if teacher_16 else [])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["sampler"], str(r["steps"]), *(f"{r['metrics'].get(n, float('nan')):.4g}" for n in names),
                 f"{r['seconds_per_sample']:.3g}"]
        if teacher_16:
            cells.append(f"{teacher_16 / r['seconds_per_sample']:.1f}x")
        lines.append("| " + " | ".join(cells) + " |")
    return "# Quality against steps\n\n" + "\n".join(lines) + f"\n\n{rows[0]['samples']} samples per row, same " \
        "conditions and seeds in every row.\n"


# Full names and directions of the bundled plug-ins' metrics. A metric object may add its own with a
# ``metric_info = {key: (full name, "lower" | "higher" | None)}`` attribute (None: no better direction).
METRIC_INFO = {
    "fd_fmnist_cnn": ("Fréchet distance, Fashion-MNIST CNN features", "lower"),
    "is_fmnist_cnn": ("Inception score analogue, Fashion-MNIST CNN", "higher"),
    "fid_inception": ("FID, Inception-v3 features", "lower"),
    "is_inception": ("Inception score", "higher"),
    "kid_fmnist_cnn": ("Kernel inception distance, Fashion-MNIST CNN features", "lower"),
    "precision": ("precision (Kynkäänniemi et al.)", "higher"),
    "recall": ("recall (Kynkäänniemi et al.)", "higher"),
    "density": ("density (Naeem et al.)", "higher"),
    "coverage": ("coverage (Naeem et al.)", "higher"),
    "class_accuracy": ("CNN accuracy at the conditioned class", "higher"),
    "prompt_alignment": ("CNN accuracy at the class the prompt names", "higher"),
    "gen_ppl": ("generative perplexity under the reference LM", "lower"),
    "nll": ("NLL under the reference LM, nats per token", "lower"),
    "entropy": ("unigram entropy of a sample, nats (near the data's is best)", None),
    "distinct_1": ("distinct unigrams per token", "higher"),
    "distinct_2": ("distinct bigrams per token", "higher"),
    "valid_fraction": ("share of samples the source can emit", "higher"),
    "valid_transitions": ("share of allowed adjacent pairs", "higher"),
    "nll_per_token": ("exact NLL of the valid samples, nats per token", "lower"),
    "source_entropy_per_token": ("the source's entropy, nats per token (a reference line)", None),
    "pair_tv": ("total variation of pair frequencies to the source", "lower"),
}


def metric_info(metrics: list) -> dict[str, tuple[str, str | None]]:
    info = dict(METRIC_INFO)
    for metric in metrics:
        info.update(getattr(metric, "metric_info", None) or {})
    return info


def panel_title(name: str, info: dict) -> str:
    full, direction = info.get(name, (name, None))
    better = {"lower": "lower is better", "higher": "higher is better"}.get(direction)
    title = full if full == name else f"{full}\n({name})"
    return f"{title}\n{better}" if better else title


def plot_quality(rows: list[dict], path: Path, info: dict | None = None) -> None:
    """One titled panel per metric (full name, key, which way is better) in a grid: the teacher's curve
    over its step counts, the student's point at each k it was sampled at, NaN values marked."""
    import math
    import textwrap

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    info = METRIC_INFO if info is None else info
    names = sorted({k for r in rows for k in r["metrics"]})
    if not names:
        return
    columns = min(3, len(names))
    grid_rows = math.ceil(len(names) / columns)
    fig, axes = plt.subplots(grid_rows, columns, figsize=(4.4 * columns, 3.6 * grid_rows), squeeze=False)
    for ax in axes.flat[len(names):]:
        ax.set_visible(False)
    for ax, name in zip(axes.flat, names):
        points = {who: sorted((r["steps"], r["metrics"][name]) for r in rows
                              if r["sampler"] == who and name in r["metrics"]) for who in ("teacher", "student")}
        if points["teacher"]:
            ax.plot(*zip(*points["teacher"]), "o-", color="tab:blue", label="teacher")
        if points["student"]:  # the student at each k it was sampled at
            ax.plot(*zip(*points["student"]), "*-", color="tab:red", markersize=13,
                    label="student" + (" at k steps" if len(points["student"]) > 1 else ""))
        missing: dict[int, list[str]] = {}
        for who, pts in points.items():
            for s, v in pts:
                if not math.isfinite(v):
                    missing.setdefault(s, []).append(who)
        for s, whos in missing.items():  # a NaN: a cross at its step on the bottom edge, labelled
            color = "tab:red" if "student" in whos else "tab:blue"
            ax.plot([s], [0.04], "x", color=color, markersize=11, markeredgewidth=2,
                    transform=ax.get_xaxis_transform(), clip_on=False)
            ax.annotate(f"{' and '.join(whos)}: NaN", (s, 0.04), xycoords=ax.get_xaxis_transform(),
                        textcoords="offset points", xytext=(6, 4), fontsize=8, color=color)
        ax.set_xscale("log", base=2)
        steps = sorted({s for pts in points.values() for s, _ in pts})
        ax.set_xticks(steps, [str(s) for s in steps])
        ax.minorticks_off()
        ax.set_xlabel("sampling steps")
        ax.set_title("\n".join(textwrap.fill(line, 58) for line in panel_title(name, info).split("\n")), fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Quality against sampling steps: teacher and student, same conditions and seeds",
                 fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
