"""Remote-code text teachers in their published layout, loaded under the installed transformers.

The folders hold this project's own modeling files, written in the style of the published ones
(tests/plugins/llada/remote_code/): a 4.x-era PreTrainedModel subclass whose __init__ never calls
post_init(), auto_map in config.json, safetensors weights. CI also runs this file under the lowest
transformers pyproject.toml allows (.ci/run)."""
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import torch
import transformers

from dimo_core.errors import CheckpointError, ConfigError
from dimo_llada.hf_loading import LOWEST_TRANSFORMERS, compatible_class, load_masked_lm
from dimo_llada.teacher import load_teacher
from remote_code_folders import reference_model, write_remote_code_folder


@pytest.fixture(scope="module")
def llada_style(tmp_path_factory):
    return write_remote_code_folder(tmp_path_factory.mktemp("llada_style") / "model", "llada")


@pytest.fixture(scope="module")
def dream_style(tmp_path_factory):
    return write_remote_code_folder(tmp_path_factory.mktemp("dream_style") / "model", "dream")


def test_llada_style_folder_loads_with_trust_remote_code_and_its_logits_match(llada_style):
    teacher = load_teacher(str(llada_style), seq_len=6, trust_remote_code=True).eval()
    reference = reference_model(llada_style)
    assert type(teacher.model).__name__ == "TinyLLaDAModelLM" and isinstance(teacher.model, type(reference))
    assert teacher.mask_id == 3 and teacher.vocab_size == reference.config.embedding_size
    prompt, response = torch.randint(4, 200, (2, 5)), torch.randint(4, 200, (2, 6))
    with torch.no_grad():
        expected = reference(torch.cat([prompt, response], 1)).logits[:, 5:]
        assert torch.equal(teacher(response, prompt), expected)
        # left-padded prompts reach the model's own attention_mask argument
        padded = {"input_ids": torch.cat([torch.zeros(2, 2, dtype=torch.long), prompt[:, 2:]], 1),
                  "attention_mask": torch.tensor([[0, 0, 1, 1, 1]] * 2)}
        ids = torch.cat([padded["input_ids"], response], 1)
        mask = torch.cat([padded["attention_mask"], torch.ones_like(response)], 1)
        assert torch.equal(teacher(response, padded), reference(ids, attention_mask=mask).logits[:, 5:])


def test_bf16_loading_uses_the_installed_transformers_dtype_argument(llada_style):
    model = load_masked_lm(llada_style, trust_remote_code=True, dtype="bfloat16")
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}


def test_the_compatible_class_keeps_name_module_and_save_layout(llada_style, tmp_path):
    model = load_masked_lm(llada_style, trust_remote_code=True)
    cls = type(model)
    assert compatible_class(cls.__mro__[1]) is cls        # one subclass per original class
    assert (cls.__name__, cls.__module__) == (cls.__mro__[1].__name__, cls.__mro__[1].__module__)
    model.save_pretrained(str(tmp_path / "saved"))       # what `dimo export` of a student writes
    saved = load_masked_lm(tmp_path / "saved", trust_remote_code=True)
    ids = torch.randint(4, 200, (1, 7))
    assert torch.equal(saved(ids).logits, model(ids).logits)


def test_refused_without_trust_remote_code(llada_style):
    with pytest.raises(CheckpointError, match="trust_remote_code=true"):
        load_teacher(str(llada_style), seq_len=4)


def broken_copy(folder, tmp_path, old, new):
    target = tmp_path / "broken"
    shutil.copytree(folder, target)
    modeling = target / "modeling_tiny_llada.py"
    text = modeling.read_text()
    assert old in text
    modeling.write_text(text.replace(old, new))
    return target


def test_a_model_class_failing_in_init_is_a_clear_error(llada_style, tmp_path):
    folder = broken_copy(llada_style, tmp_path, "self.model = model or", "self.model = self.not_an_attribute or")
    with pytest.raises(CheckpointError) as error:
        load_teacher(str(folder), seq_len=4, trust_remote_code=True)
    message = str(error.value)
    assert str(folder) in message and "TinyLLaDAModelLM" in message and "AttributeError" in message
    assert f"transformers {transformers.__version__}" in message and "pip install" in message


def test_a_model_file_that_does_not_import_is_a_clear_error(llada_style, tmp_path):
    folder = broken_copy(llada_style, tmp_path, "from transformers import AutoModel, PreTrainedModel",
                         "from transformers import AutoModel, PreTrainedModel, NoSuchClassInTransformers")
    with pytest.raises(CheckpointError) as error:
        load_teacher(str(folder), seq_len=4, trust_remote_code=True)
    message = str(error.value)
    assert str(folder) in message and re.search(r"modeling_tiny_llada\.TinyLLaDAModelLM", message)
    assert f"transformers {transformers.__version__}" in message


def test_the_lowest_transformers_errors_name_is_the_pyproject_bound():
    pyproject = tomllib.loads((Path(__file__).parents[3] / "pyproject.toml").read_text())
    bound = next(d for d in pyproject["project"]["dependencies"] if d.startswith("transformers"))
    assert re.search(r">=([0-9.]+)", bound).group(1) == LOWEST_TRANSFORMERS


def test_dream_style_logits_are_moved_back_onto_their_tokens(dream_style):
    """Dream's logits at position i are for token i + 1; its own code shifts them right by one."""
    teacher = load_teacher(str(dream_style), seq_len=6, trust_remote_code=True).eval()
    reference = reference_model(dream_style, "dream")
    assert teacher.family.name == "dream" and teacher.mask_id == 3
    prompt, response = torch.randint(4, 200, (2, 5)), torch.randint(4, 200, (2, 6))
    with torch.no_grad():
        raw = reference(torch.cat([prompt, response], 1)).logits
        assert torch.equal(teacher(response, prompt), raw[:, 4:10])      # response token j <- output at P + j - 1
        alone = reference(response).logits
        assert torch.equal(teacher(response, None), torch.cat([alone[:, :1], alone[:, :-1]], 1))
        as_aligned = load_teacher(str(dream_style), seq_len=6, trust_remote_code=True, family="llada").eval()
        assert torch.equal(as_aligned(response, prompt), raw[:, 5:])      # the option overrides detection


def test_dream_style_left_padding_goes_in_as_dream_generates(dream_style):
    """Dream's generate: a (B, 1, T, T) mask of real-token pairs and positions counting real tokens."""
    teacher = load_teacher(str(dream_style), seq_len=6, trust_remote_code=True).eval()
    reference = reference_model(dream_style, "dream")
    prompt, response = torch.randint(4, 200, (2, 3)), torch.randint(4, 200, (2, 6))
    padded = {"input_ids": torch.cat([torch.zeros(2, 2, dtype=torch.long), prompt], 1),
              "attention_mask": torch.tensor([[0, 0, 1, 1, 1]] * 2)}
    with torch.no_grad():
        got = teacher(response, padded)
        keep = torch.cat([padded["attention_mask"], torch.ones_like(response)], 1)
        positions = (keep.cumsum(-1) - 1).masked_fill(keep == 0, 1)
        pairs = torch.logical_and(keep.bool()[:, None, None, :], keep.bool()[:, None, :, None])
        raw = reference(torch.cat([padded["input_ids"], response], 1), attention_mask=pairs,
                        position_ids=positions).logits
        assert torch.equal(got, raw[:, 4:10]) and not got.isnan().any()
        assert torch.allclose(got, teacher(response, prompt), atol=1e-5)   # padding changes nothing


def test_uniform_state_duo_is_refused_with_the_reason(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "duo", "auto_map": {}}))
    with pytest.raises(ConfigError, match="uniform-state"):
        load_teacher(str(tmp_path), seq_len=4, trust_remote_code=True)


def test_dimo_run_on_a_published_layout_remote_code_folder(llada_style, tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "dimo_core", "run", "plugins=llada", f"teacher.path={llada_style}",
         "teacher.trust_remote_code=true", f"out_dir={out}", "threads=1", "distill.steps=2",
         "distill.batch_size=4", "distill.warmup_steps=1", "--no-progress"],
        env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "student.safetensors").exists()


@pytest.fixture(scope="module")
def mdlm_style(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mdlm_style") / "model"
    return write_remote_code_folder(folder, "mdlm", vocab_size=301, mask_token_id=None)   # mask = tokenizer size


def test_mdlm_style_gets_its_noise_level_and_an_explicit_mask_id(mdlm_style):
    teacher = load_teacher(str(mdlm_style), seq_len=6, trust_remote_code=True, mask_id=300,
                           embedding_module="backbone.vocab_embed").eval()
    reference = reference_model(mdlm_style, "mdlm")
    assert teacher.family.name == "mdlm" and teacher.mask_id == 300 and teacher.vocab_size == 301
    prompt, response = torch.randint(4, 200, (2, 5)), torch.randint(4, 200, (2, 6))
    with torch.no_grad():
        expected = reference(torch.cat([prompt, response], 1), torch.zeros(2))[:, 5:]   # MDLM: sigma 0
        assert torch.equal(teacher(response, prompt), expected)
        noisy = teacher(response, prompt, embedding_noise=0.5, generator=torch.Generator().manual_seed(0))
        assert noisy.shape == expected.shape and not torch.equal(noisy, expected)
    padded = {"input_ids": prompt, "attention_mask": torch.tensor([[0, 1, 1, 1, 1]] * 2)}
    with pytest.raises(ConfigError, match="attention_mask"):
        teacher(response, padded)
