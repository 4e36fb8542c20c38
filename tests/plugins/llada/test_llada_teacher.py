"""The Hugging Face teacher wrapper, on tiny folders built here (BERT, the bundled architecture, an
AutoModel-only model like LLaDA), plus the core's teacher contract."""
import copy
import json

import pytest
import torch
from torch import nn
from transformers import AutoConfig, AutoModel, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import MaskedLMOutput

import dimo_llada.teacher as teacher_module
from dimo_core.errors import CheckpointError
from dimo_core.testing import TeacherContract
from dimo_llada.conditions import PromptConditions
from dimo_llada.teacher import load_teacher
from dimo_llada.memory import embedding_and_head_patterns
from dimo_llada.testing import SENTENCES, tiny_bert_folder, tiny_llada_folder
from dimo_llada.tokenizer import HFTokenizer


@pytest.fixture(scope="module")
def llada_folder(tmp_path_factory):
    return tiny_llada_folder(tmp_path_factory.mktemp("tiny_llada"))


@pytest.fixture(scope="module")
def bert_folder(tmp_path_factory):
    return tiny_bert_folder(tmp_path_factory.mktemp("tiny_bert"))


def prompts_for(folder, prompt_len=5):
    tokenizer = HFTokenizer.from_folder(folder)
    path = folder / "prompts.txt"
    path.write_text("\n".join(SENTENCES) + "\n")
    return PromptConditions(tokenizer, tokenizer.mask_id, prompt_len, str(path), eval_fraction=0)


def test_bundled_architecture_loads_through_auto_classes_with_mask_id_from_config(llada_folder):
    teacher = load_teacher(str(llada_folder), seq_len=7)
    config = json.loads((llada_folder / "config.json").read_text())
    assert teacher.mask_id == config["mask_token_id"] == HFTokenizer.from_folder(llada_folder).mask_id
    assert teacher.vocab_size == config["vocab_size"] and teacher.seq_len == 7
    assert type(teacher.model).__name__ == "DimoLladaForMaskedLM"


def test_bert_mask_id_comes_from_its_tokenizer(bert_folder):
    assert "mask_token_id" not in json.loads((bert_folder / "config.json").read_text())
    teacher = load_teacher(str(bert_folder), seq_len=4)
    assert teacher.mask_id == HFTokenizer.from_folder(bert_folder).hf.mask_token_id == 4


def test_response_logits_are_the_model_logits_after_the_prompt(bert_folder):
    teacher = load_teacher(str(bert_folder), seq_len=4).eval()
    prompt, response = torch.randint(5, 20, (2, 3)), torch.randint(5, 20, (2, 4))
    expected = teacher.model(torch.cat([prompt, response], 1)).logits[:, 3:]
    assert torch.allclose(teacher(response, prompt), expected)
    assert torch.allclose(teacher(response, {"input_ids": prompt, "attention_mask": torch.ones_like(prompt)}),
                          expected)
    assert teacher(response, None).shape == (2, 4, teacher.vocab_size)


def test_left_padding_of_the_prompt_does_not_change_the_response_logits(llada_folder):
    teacher = load_teacher(str(llada_folder), seq_len=6).eval()
    prompt, response = torch.randint(4, 200, (1, 3)), torch.randint(4, 200, (1, 6))
    padded = {"input_ids": torch.cat([torch.zeros(1, 2, dtype=torch.long), prompt], 1),
              "attention_mask": torch.tensor([[0, 0, 1, 1, 1]])}
    assert torch.allclose(teacher(response, padded), teacher(response, prompt), atol=1e-5)


def test_embedding_noise_touches_response_embeddings_only(llada_folder, monkeypatch):
    teacher = load_teacher(str(llada_folder), seq_len=6).eval()
    seen = []
    real = teacher_module.perturb_embeddings
    monkeypatch.setattr(teacher_module, "perturb_embeddings", lambda e, s, g: seen.append(e.shape) or real(e, s, g))
    prompt, response = torch.randint(4, 200, (2, 3)), torch.randint(4, 200, (2, 6))
    clean = teacher(response, prompt)
    noisy = teacher(response, prompt, embedding_noise=0.3, generator=torch.Generator().manual_seed(0))
    assert seen == [(2, 6, 32)]                       # the 6 response positions, not the 3 prompt positions
    assert not torch.allclose(clean, noisy)
    assert torch.equal(clean, teacher(response, prompt))   # the hook is gone afterwards


def test_missing_mask_id_is_a_clear_error_and_an_explicit_one_works(llada_folder, tmp_path):
    folder = tiny_llada_folder(tmp_path / "no_mask", mask_token_id=None)
    (folder / "tokenizer_config.json").write_text(
        json.dumps({k: v for k, v in json.loads((folder / "tokenizer_config.json").read_text()).items()
                    if k != "mask_token"}))
    (folder / "tokenizer.json").unlink()               # neither config nor tokenizer name a mask token
    with pytest.raises(CheckpointError, match="mask id"):
        load_teacher(str(folder), seq_len=4)
    assert load_teacher(str(folder), seq_len=4, mask_id=3).mask_id == 3


class TinyRemoteConfig(PretrainedConfig):
    model_type = "dimo_test_automodel_only"
    vocab_size: int = 11
    mask_token_id: int | None = 10


class TinyRemoteModel(PreTrainedModel):
    """Registered with AutoModel only, as LLaDA's remote code is."""
    config_class = TinyRemoteConfig

    def __init__(self, config):
        super().__init__(config)
        self.wte = nn.Embedding(config.vocab_size, 8)
        self.ff_out = nn.Linear(8, config.vocab_size)
        self.post_init()

    def forward(self, input_ids=None, **kwargs):
        return MaskedLMOutput(logits=self.ff_out(self.wte(input_ids).cumsum(1)))


def test_falls_back_to_automodel_when_there_is_no_masked_lm_class(tmp_path):
    AutoConfig.register(TinyRemoteConfig.model_type, TinyRemoteConfig, exist_ok=True)
    AutoModel.register(TinyRemoteConfig, TinyRemoteModel, exist_ok=True)
    TinyRemoteModel(TinyRemoteConfig()).save_pretrained(str(tmp_path))
    teacher = load_teacher(str(tmp_path), seq_len=3)
    assert isinstance(teacher.model, TinyRemoteModel) and teacher.mask_id == 10 and teacher.vocab_size == 11
    with pytest.raises(Exception, match="embedding"):   # no get_input_embeddings: sigma needs embedding_module
        teacher(torch.zeros(1, 3, dtype=torch.long), None, embedding_noise=0.1, generator=torch.Generator().manual_seed(0))
    named = load_teacher(str(tmp_path), seq_len=3, embedding_module="wte")
    assert named(torch.zeros(1, 3, dtype=torch.long), None, embedding_noise=0.1, generator=torch.Generator().manual_seed(0)).shape == (1, 3, 11)


def test_remote_code_is_refused_unless_trusted(tmp_path):
    config = {"model_type": "dimo_test_remote", "auto_map": {"AutoConfig": "configuration_x.XConfig",
                                                             "AutoModel": "modeling_x.XModel"}}
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="trust_remote_code"):
        load_teacher(str(tmp_path), seq_len=3)


def test_bf16_weights_and_gradient_checkpointing_give_the_same_gradients(llada_folder):
    from dimo_llada.memory import enable_activation_checkpointing
    assert next(load_teacher(str(llada_folder), seq_len=4, dtype="bfloat16").parameters()).dtype == torch.bfloat16
    prompt, response = torch.randint(4, 200, (2, 3)), torch.randint(4, 200, (2, 4))
    grads = []
    for checkpointing in (False, True):
        teacher = load_teacher(str(llada_folder), seq_len=4).train()
        if checkpointing:
            enable_activation_checkpointing(teacher.model)
        teacher(response, prompt).logsumexp(-1).sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in teacher.parameters()]))
    assert torch.allclose(grads[0], grads[1], atol=1e-5)


def test_lora_teacher_starts_equal_and_its_engine_copies_train_adapters_only(llada_folder):
    from dimo_core.config import DistillConfig
    from dimo_core.divergences import FKL
    from dimo_core.engine import DiMOEngine
    from dimo_core.init import RandomMaskInit
    plain = load_teacher(str(llada_folder), seq_len=4).eval()
    teacher = load_teacher(str(llada_folder), seq_len=4)
    teacher.add_lora(rank=4)
    prompt, response = torch.randint(4, 200, (2, 3)), torch.randint(4, 200, (2, 4))
    assert torch.allclose(teacher.eval()(response, prompt), plain(response, prompt))
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    cfg = DistillConfig(steps=1, batch_size=3, lr_generator=1e-2, lr_aux=1e-2, warmup_steps=0, ema=0.0, guidance=2.0)
    engine = DiMOEngine(teacher, prompts_for(llada_folder, 3), FKL(), RandomMaskInit(0.5), cfg, seed=0)
    trainable = [n for n, p in engine.generator.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert sum(p.numel() for g in engine.opt_generator.param_groups for p in g["params"]) == sum(
        p.numel() for n, p in engine.generator.named_parameters() if "lora_" in n)
    engine.train_step()
    moved = {k for k, v in engine.generator.state_dict().items() if not torch.equal(before[k], v)}
    assert moved and all("lora_" in k for k in moved)
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())


def test_embedding_and_head_patterns_name_existing_parameters(llada_folder):
    teacher = load_teacher(str(llada_folder), seq_len=4)
    assert embedding_and_head_patterns(teacher) == ["model.model.embed_tokens.*", "model.lm_head.*"]


class TestBundledArchitectureContract(TeacherContract):
    @pytest.fixture(autouse=True)
    def _folder(self, llada_folder):
        self.folder = llada_folder

    def make_teacher(self):
        return load_teacher(str(self.folder), seq_len=6)

    def make_conditions(self):
        return prompts_for(self.folder)


class TestBertContract(TeacherContract):
    @pytest.fixture(autouse=True)
    def _folder(self, bert_folder):
        self.folder = bert_folder

    def make_teacher(self):
        return load_teacher(str(self.folder), seq_len=5)

    def make_conditions(self):
        return prompts_for(self.folder, prompt_len=4)


def test_olmo_style_activation_checkpointing_is_the_fallback():
    from dimo_llada.memory import enable_activation_checkpointing

    class Inner(nn.Module):          # LLaDA's LLaDAModel has this switch; its HF wrapper does not support HF's
        strategy = None

        def set_activation_checkpointing(self, strategy):
            self.strategy = strategy

    class Outer(nn.Module):
        def __init__(self):
            super().__init__()
            self.model = Inner()

        def gradient_checkpointing_enable(self):
            raise ValueError("Outer does not support gradient checkpointing.")

    outer = Outer()
    enable_activation_checkpointing(outer)
    assert outer.model.strategy == "whole_layer"


def test_the_8b_presets_frozen_patterns_resolve_on_a_lora_wrapped_model(llada_folder):
    """preset=llada_8b (LoRA r16) inherits the embedding and head patterns: they must name the
    wrapped model's parameters (model.base_model.model.model.embed_tokens...), and only those."""
    from dimo_core.config import load_config
    from dimo_core.engine import trainable_copy
    from dimo_core.registry import registry_with
    from dimo_llada import plugin
    config = load_config(["plugins=llada", "preset=llada_8b", f"teacher.path={llada_folder}", "conditions.path=p.txt",
                          "eval.metrics.0.reference=r"], registry_with("llada", plugin))
    assert config.teacher.spec()["lora_rank"] > 0 and config.distill.frozen
    for lora in (False, True):
        teacher = load_teacher(str(llada_folder), seq_len=4)
        if lora:
            teacher.add_lora(rank=4)
        frozen_before = {n for n, p in teacher.named_parameters() if not p.requires_grad}
        copy_ = trainable_copy(teacher, config.distill)   # raises when a pattern matches no parameter
        frozen = {n for n, p in copy_.named_parameters() if not p.requires_grad} - (frozen_before if not lora else set())
        named = [n for n in frozen if "embed_tokens" in n or "lm_head" in n]
        assert len(named) == 2, named  # the embedding and the head weights, under either name
        if not lora:
            assert frozen == set(named)


def test_the_memory_estimate_counts_prompt_and_response_tokens():
    from dimo_core.config import load_config
    from dimo_core.context import Context
    from dimo_core.distill import model_shape
    from dimo_core.registry import registry_with
    from dimo_llada import plugin
    registry = registry_with("llada", plugin)
    ctx = Context(load_config(["plugins=llada", "teacher.path=null", "teacher.hidden_size=32", "teacher.num_layers=1",
                               "teacher.num_heads=2", "teacher.intermediate_size=64"], registry), registry)
    prompt, response = ctx.config.conditions.spec()["prompt_len"], ctx.config.teacher.spec()["seq_len"]
    assert prompt > 0 and model_shape(ctx).seq_len == prompt + response


def test_a_lora_engine_holds_one_frozen_base_and_checkpoints_adapters_only(llada_folder):
    """Teacher, generator and aux share the base weights' storage: the distinct parameter bytes of the
    three models are one base plus three sets of adapters (the teacher's own are zero-initialised)."""
    from dimo_core.config import DistillConfig
    from dimo_core.divergences import FKL
    from dimo_core.engine import DiMOEngine
    from dimo_core.init import RandomMaskInit
    teacher = load_teacher(str(llada_folder), seq_len=4)
    teacher.add_lora(rank=4)
    base = sum(p.numel() * p.element_size() for n, p in teacher.named_parameters() if "lora_" not in n)
    adapters = sum(p.numel() * p.element_size() for n, p in teacher.named_parameters() if "lora_" in n)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    cfg = DistillConfig(steps=2, batch_size=3, lr_generator=1e-2, lr_aux=1e-2, warmup_steps=0, ema=0.9, guidance=2.0,
                        sigma=0.1)
    engine = DiMOEngine(teacher, prompts_for(llada_folder, 3), FKL(), RandomMaskInit(0.5), cfg, seed=0)
    storages = {p.untyped_storage().data_ptr(): p.untyped_storage().nbytes()
                for model in (engine.teacher, engine.generator, engine.aux) for p in model.parameters()}
    assert sum(storages.values()) <= base + 3 * adapters
    assert sum(s.numel() * s.element_size() for s in engine.ema.shadow.values()) <= adapters
    for _ in range(2):
        engine.train_step()
    engine.check_finite()
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())   # the shared base never moves
    moved = [k for k, v in engine.generator.state_dict().items() if not torch.equal(before[k], v)]
    assert moved and all("lora_" in k for k in moved)
    tensors, _ = engine.state()
    model_keys = [k for k in tensors if k.startswith(("generator.", "aux.", "ema."))]
    assert model_keys and all("lora_" in k for k in model_keys)
    assert sum(tensors[k].numel() * tensors[k].element_size() for k in model_keys) <= 3 * adapters
