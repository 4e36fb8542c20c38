"""Meissonic's transformer: the release's parameter names and shapes, the Teacher contract, timesteps."""
import copy

import pytest
import torch

from dimo_core.testing import TeacherContract
from dimo_meissonic.teacher import MeissonicTeacher
from dimo_meissonic.testing import TINY_ARCHITECTURE
from dimo_meissonic.transformer import MeissonicTransformer

# One dual-stream and one single-stream block, as the release's state_dict names them.
DUAL_BLOCK = ["norm1.linear.weight", "norm1.linear.bias", "norm1_context.linear.weight", "norm1_context.linear.bias",
              *(f"attn.{p}.{w}" for p in ("to_q", "to_k", "to_v", "add_q_proj", "add_k_proj", "add_v_proj",
                                          "to_out.0", "to_add_out") for w in ("weight", "bias")),
              "attn.norm_q.weight", "attn.norm_k.weight", "attn.norm_added_q.weight", "attn.norm_added_k.weight",
              *(f"{ff}.net.{i}.{w}" for ff in ("ff", "ff_context") for i in ("0.proj", "2")
                for w in ("weight", "bias"))]
SINGLE_BLOCK = ["norm.linear.weight", "norm.linear.bias", "proj_mlp.weight", "proj_mlp.bias", "proj_out.weight",
                "proj_out.bias", *(f"attn.{p}.{w}" for p in ("to_q", "to_k", "to_v") for w in ("weight", "bias")),
                "attn.norm_q.weight", "attn.norm_k.weight"]
TOP_LEVEL = ["time_text_embed.timestep_embedder.linear_1.weight", "time_text_embed.timestep_embedder.linear_1.bias",
             "time_text_embed.timestep_embedder.linear_2.weight", "time_text_embed.timestep_embedder.linear_2.bias",
             "time_text_embed.text_embedder.linear_1.weight", "time_text_embed.text_embedder.linear_1.bias",
             "time_text_embed.text_embedder.linear_2.weight", "time_text_embed.text_embedder.linear_2.bias",
             "context_embedder.weight", "context_embedder.bias", "embed.embeddings.weight",
             "embed.layer_norm.weight", "embed.conv.weight", "mlm_layer.conv1.weight", "mlm_layer.layer_norm.weight",
             "mlm_layer.conv2.weight", "cond_embed.linear_1.weight", "cond_embed.linear_2.weight",
             "encoder_proj_layer_norm.weight", "project_to_hidden_norm.weight", "project_to_hidden.weight",
             "project_from_hidden_norm.weight", "project_from_hidden.weight"]
RESAMPLE = ["down_block.downsample.norm.weight", "down_block.downsample.conv.weight",
            "up_block.upsample.norm.weight", "up_block.upsample.conv.weight"]


def tiny_teacher(**overrides) -> MeissonicTeacher:
    torch.manual_seed(0)
    teacher = MeissonicTeacher(grid_size=4, **{**TINY_ARCHITECTURE, **overrides})
    with torch.no_grad():  # random modulation: the zero init would make every block an identity
        for p in teacher.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return teacher


class TinyPromptConditions:
    """Random prompt embeddings; the null condition is a fixed 'negative prompt' embedding."""

    def sample(self, n, generator, split="train"):
        g = generator
        return {"context": torch.randn(n, 5, 24, generator=g), "pooled": torch.randn(n, 32, generator=g),
                "micro_conds": torch.tensor([[64.0, 64, 0, 0, 6]]).repeat(n, 1),
                "label": torch.zeros(n, dtype=torch.long), "prompt_id": torch.arange(n)}

    def null(self, cond):
        n = cond["pooled"].shape[0]
        return {**cond, "context": torch.zeros(n, 5, 24), "pooled": torch.zeros(n, 32)}


class TestMeissonicTeacherContract(TeacherContract):
    def make_teacher(self):
        return tiny_teacher()

    def make_conditions(self):
        return TinyPromptConditions()


def test_state_dict_names_and_shapes_follow_the_release():
    model = MeissonicTransformer(**{**TINY_ARCHITECTURE, "num_layers": 2, "num_single_layers": 3})
    expected = set(TOP_LEVEL + RESAMPLE)
    expected |= {f"transformer_blocks.{i}.{k}" for i in range(2) for k in DUAL_BLOCK}
    expected |= {f"single_transformer_blocks.{i}.{k}" for i in range(3) for k in SINGLE_BLOCK}
    state = model.state_dict()
    assert set(state) == expected
    d = 32
    assert state["embed.embeddings.weight"].shape == (40, d)                   # vocab rows, mask id last
    assert state["mlm_layer.conv2.weight"].shape == (32, d, 1, 1)              # codebook logits only
    assert state["cond_embed.linear_1.weight"].shape == (d, 5 * 256 + 32)      # pooled + 5 micro-conditions
    assert state["time_text_embed.timestep_embedder.linear_1.weight"].shape == (d, 256)
    assert state["context_embedder.weight"].shape == (d, 24)
    assert state["transformer_blocks.0.norm1.linear.weight"].shape == (6 * d, d)
    assert state["single_transformer_blocks.0.proj_out.weight"].shape == (d, 5 * d)
    assert state["transformer_blocks.0.attn.norm_q.weight"].shape == (16,)     # per head
    assert state["down_block.downsample.conv.weight"].shape == (d, d, 2, 2)
    assert state["up_block.upsample.conv.weight"].shape == (d, d, 2, 2)        # transposed conv: (in, out, k, k)
    assert set(MeissonicTransformer(**{**TINY_ARCHITECTURE, "downsample": False, "upsample": False}).state_dict()) \
        == set(MeissonicTransformer(**TINY_ARCHITECTURE).state_dict()) - set(RESAMPLE)


def test_release_defaults_are_the_1b_model():
    with torch.device("meta"):
        model = MeissonicTransformer()
    assert model.inner_dim == 1024
    assert len(model.transformer_blocks) == 14 and len(model.single_transformer_blocks) == 28
    assert 1.00e9 < sum(p.numel() for p in model.parameters()) < 1.01e9


def test_grid_is_halved_inside_and_restored():
    teacher = tiny_teacher().eval()
    cond = TinyPromptConditions().sample(2, torch.Generator().manual_seed(0))
    seen = []
    teacher.project_to_hidden.register_forward_hook(lambda m, i, o: seen.append(o.shape))
    with torch.no_grad():
        logits = teacher(torch.randint(0, 32, (2, 16)), cond)
    assert seen[0] == (2, 4, 32)        # 4 x 4 codes -> 2 x 2 tokens inside
    assert logits.shape == (2, 16, 32)
    with pytest.raises(ValueError, match="even token grid"):
        MeissonicTeacher(grid_size=3, **TINY_ARCHITECTURE)(torch.zeros(1, 9, dtype=torch.long), cond)


def test_architecture_constraints_are_explained():
    with pytest.raises(ValueError, match="pooled_projection_dim"):
        MeissonicTransformer(**{**TINY_ARCHITECTURE, "pooled_projection_dim": 48})
    with pytest.raises(ValueError, match="axes_dims_rope"):
        MeissonicTransformer(**{**TINY_ARCHITECTURE, "axes_dims_rope": [4, 4, 4]})


def test_mask_id_is_the_last_vocab_row_and_not_a_logit_column():
    teacher = tiny_teacher()
    assert teacher.mask_id == 39 and teacher.vocab_size == 32 and teacher.seq_len == 16


def test_timestep_conventions():
    tokens = torch.tensor([[39] * 16, [39] * 8 + [0] * 8, [0] * 16])
    teacher = tiny_teacher()
    assert torch.allclose(teacher.timesteps(tokens), torch.tensor([1000.0, 500.0, 0.0]))
    teacher.timestep = "zero"
    assert torch.equal(teacher.timesteps(tokens), torch.zeros(3))
    teacher.timestep, teacher.reference_steps = "step_index", 48
    # all masked: the pipeline's first step (N - 1); half masked: cos(pi/2 i/48) = 0.5 at i = 32; none: 0
    assert teacher.timesteps(tokens).tolist() == [47.0, 15.0, 0.0]


def test_embedding_noise_touches_image_tokens_only():
    teacher = tiny_teacher().eval()
    cond = TinyPromptConditions().sample(2, torch.Generator().manual_seed(0))
    image, text = [], []
    teacher.down_block.register_forward_hook(lambda m, i, o: image.append(i[0].clone()))
    teacher.encoder_proj_layer_norm.register_forward_hook(lambda m, i, o: text.append(o.clone()))
    x = torch.randint(0, 32, (2, 16))
    with torch.no_grad():
        a, b = teacher(x, cond), teacher(x, cond, embedding_noise=0.3, generator=torch.Generator().manual_seed(0))
    assert not torch.allclose(a, b)
    assert not torch.allclose(image[0], image[1]) and torch.equal(text[0], text[1])


def test_core_activation_checkpointing_finds_both_block_lists_and_keeps_gradients():
    from dimo_core.distributed import enable_activation_checkpointing, find_blocks
    teacher = tiny_teacher(num_layers=2, num_single_layers=3).train()
    assert len(find_blocks(teacher)) == 5
    cond = TinyPromptConditions().sample(2, torch.Generator().manual_seed(0))
    x = torch.randint(0, 32, (2, 16))
    grads = []
    for checkpointed in (False, True):
        model = copy.deepcopy(teacher)
        if checkpointed:
            enable_activation_checkpointing(model)
        model(x, cond).square().mean().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


def test_missing_condition_keys_are_named():
    with pytest.raises(Exception, match="context, pooled, micro_conds"):
        tiny_teacher()(torch.zeros(1, 16, dtype=torch.long), {"pooled": torch.zeros(1, 32)})
