"""The results tables of the READMEs, from `report.json` files of `dimo eval`.

    python docs/results_table.py maskgit runs/maskgit/report.json                 # print both tables
    python docs/results_table.py llada runs/llada/report.json runs/llada_t1/report.json --write

Rows come in the order given: every row of every report. When the reports' students sample at
different output temperatures (`eval.student_temperature`; 0 = argmax), each student row names its
own; so does a teacher sampled at a temperature other than 1. The first report's student rows are
bold.

`--write` replaces the block between `<!-- results:NAME -->` and `<!-- /results:NAME -->` in the
plug-in's README (its full column set) and in the top README (a shorter one), with a first line
naming the commit the reports were measured at (`--commit`, default: HEAD). Prose around the blocks
(timings of `dimo run`, ratios read off the table) is not touched: check it by hand.
"""
from __future__ import annotations

import argparse
import math
import json
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).parents[1]


def sig3(x: float) -> str:
    """Three significant digits, never in exponent form (gen-PPL 6091, FD 2.42, s/sample 0.00102)."""
    if abs(x) >= 100:
        return f"{x:.0f}"
    text = f"{x:.3g}"
    if "e" not in text:
        return text
    return f"{x:.{2 - math.floor(math.log10(abs(x)))}f}".rstrip("0")   # 0.000059, not 5.9e-05


def fixed(digits: int):
    return lambda x: f"{x:.{digits}f}"


# (header, metric key, format); "s/sample" is the row's seconds_per_sample.
IMAGE = [("FD (fmnist CNN)", "fd_fmnist_cnn", fixed(2)), ("IS (fmnist CNN)", "is_fmnist_cnn", fixed(2)),
         ("precision", "precision", fixed(2)), ("recall", "recall", fixed(2)), ("coverage", "coverage", fixed(2))]
COLUMNS = {
    "toy": [("valid", "valid_fraction", sig3), ("valid pairs", "valid_transitions", fixed(3)),
            ("pair TV", "pair_tv", fixed(3)), ("NLL/token (valid)", "nll_per_token", fixed(3))],
    "maskgit": IMAGE + [("class accuracy", "class_accuracy", fixed(3))],
    "meissonic": [IMAGE[0], ("prompt alignment", "prompt_alignment", fixed(3)), IMAGE[1],
                  ("precision", "precision", fixed(3)), ("recall", "recall", fixed(3)),
                  ("coverage", "coverage", fixed(3))],
    "llada": [("gen-PPL", "gen_ppl", sig3), ("entropy", "entropy", fixed(2)), ("distinct-2", "distinct_2", fixed(3))],
}
# The top README shows fewer columns: the headers kept there.
SUMMARY = {"toy": None, "llada": None,
           "maskgit": ["FD (fmnist CNN)", "precision", "recall", "class accuracy"],
           "meissonic": ["FD (fmnist CNN)", "precision", "recall", "prompt alignment"]}


def _temperature(value) -> str:
    return "argmax" if value == 0 else f"temperature {value:g}"


def rows_of(reports: list[dict]) -> list[tuple[str, str, dict, float]]:
    """(label, steps, metrics, seconds per sample) for every row of every report, in order."""
    temperatures = {rep["config"]["eval"]["student_temperature"] for rep in reports
                    if any(r["sampler"] == "student" for r in rep["rows"])}
    out = []
    for i, rep in enumerate(reports):
        cfg = rep["config"]["eval"]
        for r in rep["rows"]:
            if r["sampler"] == "teacher":
                t = cfg["sampler"].get("temperature", 1.0)
                label = "teacher" if t == 1 else f"teacher, {_temperature(t)}"
            else:
                label = "student" if len(temperatures) == 1 else f"student, {_temperature(cfg['student_temperature'])}"
                if i == 0:
                    label = f"**{label}**"
            out.append((label, str(r["steps"]), r["metrics"], r["seconds_per_sample"]))
    return out


def table(name: str, reports: list[dict], headers: list[str] | None = None) -> str:
    columns = [c for c in COLUMNS[name] if headers is None or c[0] in headers]
    speed = "s/response" if name == "llada" else "s/sample"
    lines = ["| sampler | steps | " + " | ".join(c[0] for c in columns) + f" | {speed} |",
             "|---|---|" + "---|" * len(columns) + "---|"]
    for label, steps, metrics, seconds in rows_of(reports):
        cells = [fmt(metrics[key]) if key in metrics else "" for _, key, fmt in columns]
        lines.append(f"| {label} | {steps} | " + " | ".join(cells) + f" | {sig3(seconds)} |")
    return "\n".join(lines)


def block(name: str, body: str, measured: str) -> str:
    return f"<!-- results:{name} -->\n{measured}\n\n{body}\n\n<!-- /results:{name} -->"


def replace_block(text: str, name: str, new_block: str) -> str:
    pattern = re.compile(rf"<!-- results:{name} -->.*?<!-- /results:{name} -->", re.DOTALL)
    if not pattern.search(text):
        raise SystemExit(f"no <!-- results:{name} --> block to replace")
    return pattern.sub(lambda _: new_block, text)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("name", choices=sorted(COLUMNS))
    parser.add_argument("reports", nargs="+", type=Path)
    parser.add_argument("--commit", help="the commit the reports were measured at (default: HEAD)")
    parser.add_argument("--write", action="store_true", help="replace the READMEs' result blocks")
    args = parser.parse_args(argv)
    reports = [json.loads(p.read_text()) for p in args.reports]
    commit = subprocess.run(["git", "log", "-1", "--format=%h %cs", args.commit or "HEAD"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout.split()
    measured = f"Measured at commit `{commit[0]}` ({commit[1]})."
    full, short = table(args.name, reports), table(args.name, reports, SUMMARY[args.name])
    if not args.write:
        print(full, short, sep="\n\n")
        return
    for path, body in ((ROOT / "plugins" / f"dimo_{args.name}" / "README.md", full), (ROOT / "README.md", short)):
        path.write_text(replace_block(path.read_text(), args.name, block(args.name, body, measured)))
        print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
