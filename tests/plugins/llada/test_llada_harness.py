"""The lm-evaluation-harness model ``dimo``: `lm_eval run --model dimo` on a tiny distilled student and a
local generate_until task; its answers are the student's responses to the task's prompts."""
import glob
import json
import os
import subprocess
import sys

import pytest
import torch

lm_eval = pytest.importorskip("lm_eval", reason="lm-eval is not installed (pip install 'dimo[harness]')")

from dimo_core.config import load_config  # noqa: E402
from dimo_core.context import Context  # noqa: E402
from dimo_core.distill import distill  # noqa: E402
from dimo_core.registry import get_registry  # noqa: E402
from dimo_core.sample import draw_student, prompt_conditions  # noqa: E402
from dimo_llada.harness import DimoLM, cut_at  # noqa: E402

PROMPTS = [("The cat sat on the", "mat"), ("Time flies like an", "arrow"), ("To be or not to be,", "that")]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("llada_run")
    registry = get_registry()
    config = load_config(["plugins=llada", f"out_dir={out}", "threads=1", "distill.steps=1", "distill.batch_size=2"],
                         registry)
    distill(Context(config, registry), progress=False)
    return out


def task_folder(tmp_path):
    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps({"prompt": p, "answer": a}) + "\n" for p, a in PROMPTS))
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "dimo_local.yaml").write_text(f"""task: dimo_local
dataset_path: json
dataset_kwargs:
  data_files:
    test: {docs}
test_split: test
output_type: generate_until
doc_to_text: "{{{{prompt}}}}"
doc_to_target: "{{{{answer}}}}"
generation_kwargs:
  until: ["."]
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
""")
    return tmp_path / "tasks"


def test_cut_at_keeps_the_text_before_the_first_stop():
    assert cut_at("a b. c\nd", [".", "\n"]) == "a b" and cut_at("abc", ["."]) == "abc" and cut_at("x.y", ".") == "x"


def test_lm_eval_runs_the_student_on_a_local_task(run, tmp_path):
    tasks = task_folder(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "dimo_llada.harness", "run", "--model", "dimo", "--model_args",
                           f"out_dir={run},overrides=threads=1", "--tasks", "dimo_local", "--include_path",
                           str(tasks), "--output_path", str(tmp_path / "out"), "--log_samples"],
                          capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    [results] = glob.glob(str(tmp_path / "out" / "*" / "results_*.json"))
    score = json.loads(open(results).read())["results"]["dimo_local"]["exact_match,none"]
    [samples] = glob.glob(str(tmp_path / "out" / "*" / "samples_dimo_local_*.jsonl"))
    answers = {json.loads(l)["doc"]["prompt"]: json.loads(l)["resps"][0][0] for l in open(samples)}
    assert set(answers) == {p for p, _ in PROMPTS} and all("." not in a for a in answers.values())
    assert score == sum(answers[p].strip() == a for p, a in PROMPTS) / len(PROMPTS)


def test_answers_are_the_student_responses_to_the_prompts(run):
    model = DimoLM(out_dir=str(run), overrides="threads=1", batch_size=8, seed=3)

    class Request:  # what lm-eval passes: args = (context, generation kwargs)
        def __init__(self, text):
            self.args = (text, {"until": []})
    answers = model.generate_until([Request(p) for p, _ in PROMPTS])
    ctx = model.ctx
    cond = prompt_conditions(ctx, [p for p, _ in PROMPTS], len(PROMPTS))
    tokens = draw_student(ctx, model.student, cond, len(PROMPTS), 1, ctx.config.sample.temperature,
                          torch.Generator().manual_seed(3))
    assert answers == ctx.tokenizer.hf.batch_decode(tokens.tolist(), skip_special_tokens=True,
                                                    clean_up_tokenization_spaces=False)
    with pytest.raises(NotImplementedError, match="generate_until"):
        model.loglikelihood([])
