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


def _timed_batches(draw, cond, n: int, batch_size: int, seed: int, device) -> tuple[torch.Tensor, float]:
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
    for who, steps in tqdm(jobs, desc="eval", disable=not progress):
        if who == "teacher":
            def draw(c, n, g, steps=steps):
                return draw_teacher(ctx, sampler, c, n, steps, cfg.guidance, g)
        else:
            def draw(c, n, g, steps=steps):
                return draw_student(ctx, student, c, n, steps, cfg.student_temperature, g)
        tokens, seconds = _timed_batches(draw, cond, cfg.samples, cfg.batch_size, cfg.seed, ctx.device)
        values = {}
        for metric in metrics:
            values.update({k: float(v) for k, v in metric(tokens, cond).items()})
        rows.append({"sampler": who, "steps": steps, "metrics": values, "seconds_per_sample": seconds,
                     "samples": cfg.samples})
        label = f"teacher {steps} step{'s' * (steps > 1)}" if who == "teacher" else \
            ("student" if steps == 1 else f"student {steps} steps")
        grid[label] = tokens[:cfg.grid]
    report = {"rows": rows, "config": ctx.config.model_dump(mode="json"),
              "teacher_sampler": cfg.sampler.spec(), "guidance": cfg.guidance}
    save_json(out / "report.json", report)
    (out / "report.md").write_text(markdown_table(rows))
    plot_quality(rows, out / "quality_vs_steps.png")
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


def plot_quality(rows: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    names = sorted({k for r in rows for k in r["metrics"]})
    if not names:
        return
    fig, axes = plt.subplots(1, len(names), figsize=(3.6 * len(names), 3.2), squeeze=False)
    for ax, name in zip(axes[0], names):
        teacher = sorted((r["steps"], r["metrics"][name]) for r in rows if r["sampler"] == "teacher" and name in r["metrics"])
        if teacher:
            ax.plot(*zip(*teacher), "o-", label="teacher")
        student = sorted((r["steps"], r["metrics"][name]) for r in rows if r["sampler"] == "student" and name in r["metrics"])
        if student:  # one student sampled at each k it serves: a curve beside the teacher's
            ax.plot(*zip(*student), "r*-", markersize=12, label="student")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("steps")
        ax.set_title(name)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
