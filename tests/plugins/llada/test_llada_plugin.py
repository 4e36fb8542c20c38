"""The llada plug-in through the core (PluginContract: names, presets, teacher, a tiny train-teacher ->
run -> eval), its presets' values, and the bundled assets."""
import json

import pytest
import torch

from dimo_core.config import load_config
from dimo_core.context import Context
from dimo_core.errors import ConfigError
from dimo_core.registry import registry_with
from dimo_core.testing import PluginContract
from dimo_llada.teacher import ASSETS
from dimo_llada import plugin

BUNDLED = (ASSETS / "teacher" / "model.safetensors").exists()


@pytest.fixture(scope="module")
def registry():
    return registry_with("llada", plugin)


class TestLLaDAPlugin(PluginContract):
    name = "llada"
    module = plugin
    registers = {"teachers": ["hf_mdm"], "tokenizers": ["hf"], "conditions": ["prompts"], "datasets": ["text_pairs"],
                 "samplers": ["llada"], "metrics": ["text_quality"], "writers": ["text_examples"],
                 "exporters": ["adapter", "hf"], "presets": ["llada", "llada_8b"]}
    tiny = ["conditions.sources=[pydoc]", "dataset.sources=[pydoc]", "teacher.hidden_size=16", "teacher.num_layers=1",
            "teacher.num_heads=2", "teacher.intermediate_size=32"]

    def end_to_end_overrides(self, tmp_path):
        from dimo_llada.testing import tiny_llada_folder
        scorer = tiny_llada_folder(tmp_path / "scorer", causal=True)   # another vocabulary: scored through text
        return ["distill.guidance=2.0", f"eval.metrics=[{{name: text_quality, reference: {scorer}}}]"]

    def check_report(self, report, out_dir):
        assert all({"gen_ppl", "entropy", "distinct_2"} <= set(r["metrics"]) for r in report["rows"])
        examples = (out_dir / "text_examples.md").read_text()
        assert examples.count("## Example") == 2 and "student: " in examples and "teacher 2 steps: " in examples


def test_the_presets_validate_against_the_core_config(registry):
    config = load_config(["plugins=llada"], registry)
    assert config.teacher.name == "hf_mdm" and config.eval.sampler.name == "llada"
    assert config.teacher.spec()["seq_len"] == config.dataset.spec()["response_len"]
    with pytest.raises(ConfigError, match=r"not given: conditions\.path, eval\.metrics\[0\]\.reference \("):
        load_config(["preset=llada_8b", "teacher.path=/models/LLaDA-8B-Instruct"], registry)
    big = load_config(["preset=llada_8b", "teacher.path=/models/LLaDA-8B-Instruct", "conditions.path=p.jsonl",
                       "eval.metrics.0.reference=/models/gpt2-large"], registry)
    assert big.tokenizer.spec()["path"] == "/models/LLaDA-8B-Instruct"


@pytest.mark.skipif(not BUNDLED, reason="bundled teacher not built yet (python -m dimo_llada.build_assets teacher)")
def test_bundled_teacher_loads_from_its_folder_and_predicts_held_out_text(registry):
    ctx = Context(load_config(["plugins=llada"], registry), registry)
    teacher = ctx.teacher.eval()   # the core checks vocabulary and mask id against the tokenizer
    config = json.loads((ASSETS / "teacher" / "config.json").read_text())
    assert config["model_type"] == "dimo_llada" and teacher.mask_id == config["mask_token_id"] == ctx.tokenizer.mask_id
    tokens, cond = ctx.dataset.sample(64, torch.Generator().manual_seed(0), split="eval")
    masked = torch.rand(tokens.shape, generator=torch.Generator().manual_seed(1)) < 0.5
    with torch.no_grad():
        logits = teacher(tokens.masked_fill(masked, teacher.mask_id), cond)
    nll = torch.nn.functional.cross_entropy(logits[masked], tokens[masked])
    # uniform guessing: ln 2048 = 7.62; the train text's unigram entropy: 6.56; the teacher uses context (~4.8)
    assert nll < 5.5
