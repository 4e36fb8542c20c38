"""The toy family on seeds no preset was tuned on: per seed, `dimo train-teacher`, then `dimo run`
and `dimo eval` for each recipe, and a table of the mean and spread over the seeds.

    python docs/experiments/toy_seeds.py --seeds 5 6 7 8 9 --out runs/toy_seeds --jobs 10 device=cuda

Trailing key=value arguments go to every dimo command (device=cuda, distill.steps=1000, ...). Each
seed's teacher is trained once (kept in OUT/s<seed>/teacher) with the preset's train_teacher
settings unless --teacher-steps says otherwise. Writes OUT/summary.md and OUT/summary.json.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

RECIPES = {"one-step": ["distill.student_steps=[1]"],
           "k-step": ["distill.student_steps=[1,2,4]"]}
TEACHER_STEPS = [1, 2, 4, 8, 16, 32]


def dimo(args: list[str], log: Path) -> None:
    with open(log, "w") as f:
        proc = subprocess.run([sys.executable, "-m", "dimo_core", "--no-progress", *args], stdout=f,
                              stderr=subprocess.STDOUT)
    if proc.returncode:
        raise RuntimeError(f"dimo {' '.join(args)} failed; see {log}")


def teacher(seed: int, out: Path, extra: list[str], steps: int | None) -> Path:
    folder = out / f"s{seed}" / "teacher"
    if not (folder / "teacher.safetensors").exists():
        folder.mkdir(parents=True, exist_ok=True)
        dimo(["train-teacher", "plugins=toy", f"dataset.seed={seed}", f"out_dir={folder}", *extra,
              *([f"train_teacher.steps={steps}"] if steps else [])], folder.parent / "teacher.log")
    return folder / "teacher.safetensors"


def recipe(seed: int, name: str, out: Path, extra: list[str], teacher_path: Path) -> dict:
    run = out / f"s{seed}" / name
    run.mkdir(parents=True, exist_ok=True)
    args = ["plugins=toy", f"teacher.path={teacher_path}", f"dataset.seed={seed}", f"eval.metrics[0].seed={seed}",
            f"out_dir={run}", f"eval.teacher_steps={TEACHER_STEPS}".replace(" ", ""), *RECIPES[name], *extra]
    done = run / "result.json"   # a finished recipe is not run again
    if done.exists():
        return json.loads(done.read_text())
    tic = time.time()
    dimo(["run", *args], run.parent / f"{name}.run.log")
    seconds = time.time() - tic
    dimo(["eval", *args], run.parent / f"{name}.eval.log")
    report = json.loads((run / "report.json").read_text())
    result = {"seed": seed, "recipe": name, "run_seconds": round(seconds, 1),
              "rows": [(r["sampler"], r["steps"], r["metrics"]) for r in report["rows"]]}
    done.write_text(json.dumps(result))
    return result


def summarise(results: list[dict], settings: str = "") -> tuple[str, dict]:
    """Per recipe and student k: mean and spread over seeds of valid, of valid / teacher best, and
    how many seeds the student beats the teacher at the same k."""
    def spread(xs):   # mean ± sample standard deviation (nan where a teacher never produced a valid sample)
        m = sum(xs) / len(xs)
        sd = (sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) ** 0.5 if len(xs) > 1 else 0.0
        return f"{m:.3f} ± {sd:.3f}"
    lines = ["| recipe | sampler | steps | valid (mean ± sd) | valid / teacher best | pair TV | beats teacher@k |",
             "|---|---|---|---|---|---|---|"]
    table = {}
    teacher_rows = {}
    for res in results:
        for who, k, m in res["rows"]:
            if who == "teacher":
                teacher_rows.setdefault(res["seed"], {})[k] = m
    seeds = sorted(teacher_rows)
    best = {s: max(m["valid_fraction"] for m in teacher_rows[s].values()) or float("nan") for s in seeds}
    for k in TEACHER_STEPS:
        vals = [teacher_rows[s][k]["valid_fraction"] for s in seeds]
        lines.append(f"| - | teacher | {k} | {spread(vals)} | {spread([v / best[s] for v, s in zip(vals, seeds)])} | "
                     f"{spread([teacher_rows[s][k]['pair_tv'] for s in seeds])} | |")
    names = [n for n in RECIPES if any(r["recipe"] == n for r in results)]
    for name in names:
        rows = [r for r in results if r["recipe"] == name]
        ks = sorted({k for r in rows for who, k, _ in r["rows"] if who == "student"})
        for k in ks:
            per_seed = [(r["seed"], m) for r in rows for who, kk, m in r["rows"] if who == "student" and kk == k]
            vals = [m["valid_fraction"] for _, m in per_seed]
            wins = sum(m["valid_fraction"] > teacher_rows[s][k]["valid_fraction"] for s, m in per_seed
                       if k in teacher_rows[s])
            table[f"{name}@{k}"] = {"valid": vals, "ratio": [m["valid_fraction"] / best[s] for s, m in per_seed]}
            lines.append(f"| {name} | student | {k} | {spread(vals)} | "
                         f"{spread(table[f'{name}@{k}']['ratio'])} | {spread([m['pair_tv'] for _, m in per_seed])} | "
                         f"{wins}/{len(per_seed)} |")
    head = (f"Seeds {', '.join(map(str, seeds))}{settings}; teacher best (mean) {sum(best.values()) / len(best):.3f}; "
            f"longest run, seconds: " + ", ".join(f"{n} {max(r['run_seconds'] for r in results if r['recipe'] == n):.0f}"
                                                     for n in names))
    return head + "\n\n" + "\n".join(lines) + "\n", {"teacher_best": best, "students": table, "results": results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--jobs", type=int, default=2, help="dimo processes at once")
    parser.add_argument("--teacher-steps", type=int, default=None)
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    args, extra = parser.parse_known_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(args.jobs) as pool:
        teachers = dict(zip(args.seeds, pool.map(lambda s: teacher(s, args.out, extra, args.teacher_steps), args.seeds)))
        jobs = [pool.submit(recipe, s, name, args.out, extra, teachers[s]) for s in args.seeds for name in args.recipes]
        results = [j.result() for j in jobs]
    settings = f" ({' '.join(extra)}" + (f", teacher {args.teacher_steps} steps" if args.teacher_steps else "") + ")"
    text, data = summarise(results, settings)
    (args.out / "summary.md").write_text(text)
    (args.out / "summary.json").write_text(json.dumps(data, indent=2))
    print(text)


if __name__ == "__main__":
    main()
