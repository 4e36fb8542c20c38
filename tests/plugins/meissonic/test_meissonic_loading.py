"""Loading Meissonic from a folder in the release layout, built here at toy size; clear errors otherwise."""
import importlib.util
import json
import types

import pytest
import torch

from dimo_core.checkpoint import load_tensors, save_json, save_tensors
from dimo_core.errors import CheckpointError, ConfigError
from dimo_core.registry import registry_with
from dimo_meissonic import plugin
from dimo_meissonic.teacher import build_teacher
from dimo_meissonic.text import PromptEncoder, load_text_encoder
from dimo_meissonic.testing import TINY_ARCHITECTURE, write_tiny_meissonic

# A CLIP BPE written by hand: words end with </w>; merges build "cat</w>" and "dog</w>" from letters.
VOCAB = {"<|startoftext|>": 0, "<|endoftext|>": 1, "a</w>": 2, "c": 3, "a": 4, "t</w>": 5, "ca": 6,
         "cat</w>": 7, "d": 8, "o": 9, "g</w>": 10, "do": 11, "dog</w>": 12}
MERGES = ["c a", "ca t</w>", "d o", "do g</w>"]


def registry():
    return registry_with("meissonic", plugin)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_tiny_meissonic(tmp_path_factory.mktemp("meissonic"))


def ctx_stub(device="cpu"):
    return types.SimpleNamespace(device=torch.device(device))


def test_transformer_folder_loads_key_for_key(folder):
    teacher = build_teacher(folder, grid_size=4)
    saved, _ = load_tensors(folder / "transformer" / "diffusion_pytorch_model.safetensors")
    assert teacher.config == {**TINY_ARCHITECTURE, "axes_dims_rope": [4, 6, 6]}
    assert all(torch.equal(v, saved[k]) for k, v in teacher.state_dict().items())
    # the transformer folder itself works too, and the registry builds the same thing
    assert torch.equal(build_teacher(folder / "transformer", grid_size=4).embed.embeddings.weight,
                       teacher.embed.embeddings.weight)
    built = registry().build("teachers", {"name": "meissonic", "path": str(folder), "grid_size": 4}, ctx_stub())
    assert torch.equal(built.mlm_layer.conv2.weight, teacher.mlm_layer.conv2.weight)


def test_wrong_keys_are_named(folder, tmp_path):
    state, _ = load_tensors(folder / "transformer" / "diffusion_pytorch_model.safetensors")
    state["embed.extra.weight"] = state.pop("embed.conv.weight")
    save_tensors(tmp_path / "bad.safetensors", state)
    named = r"missing keys: embed\.conv\.weight.*unexpected keys: embed\.extra\.weight"
    with pytest.raises(CheckpointError, match=named):
        build_teacher(tmp_path / "bad.safetensors", grid_size=4, **TINY_ARCHITECTURE)


def test_options_that_disagree_with_config_json_are_refused(folder):
    with pytest.raises(ConfigError, match=r"num_layers=3 \(config.json: 1\)"):
        build_teacher(folder, grid_size=4, num_layers=3)
    assert build_teacher(folder, grid_size=4, num_layers=1).config["num_layers"] == 1   # agreeing is fine


def test_unknown_config_json_keys_and_bad_paths_are_errors(folder, tmp_path):
    config = json.loads((folder / "transformer" / "config.json").read_text())
    save_json(tmp_path / "t" / "config.json", {**config, "num_experts": 4})
    with pytest.raises(CheckpointError, match="num_experts"):
        build_teacher(tmp_path / "t", grid_size=4)
    with pytest.raises(CheckpointError, match="neither a folder"):
        build_teacher(tmp_path / "nothing_here", grid_size=4)


def test_sharded_weights_load_through_their_index(folder, tmp_path):
    state, _ = load_tensors(folder / "transformer" / "diffusion_pytorch_model.safetensors")
    keys = sorted(state)
    shards = {"diffusion_pytorch_model-00001-of-00002.safetensors": keys[::2],
              "diffusion_pytorch_model-00002-of-00002.safetensors": keys[1::2]}
    for name, part in shards.items():
        save_tensors(tmp_path / name, {k: state[k] for k in part})
    save_json(tmp_path / "diffusion_pytorch_model.safetensors.index.json",
              {"weight_map": {k: name for name, part in shards.items() for k in part}})
    (tmp_path / "config.json").write_text((folder / "transformer" / "config.json").read_text())
    teacher = build_teacher(tmp_path, grid_size=4)
    assert all(torch.equal(v, state[k]) for k, v in teacher.state_dict().items())


def test_text_encoder_gives_penultimate_context_and_projected_pooled(folder):
    tokenizer, encoder = load_text_encoder(folder)
    assert not any(p.requires_grad for p in encoder.parameters()) and not encoder.training
    out = PromptEncoder(tokenizer, encoder, max_length=8)(["a photo of a cat", "a red car on the grass", ""])
    assert out["context"].shape == (3, 8, 24) and out["pooled"].shape == (3, 32)
    ids = tokenizer(["a photo of a cat"], padding="max_length", max_length=8, return_tensors="pt").input_ids
    ref = encoder(ids, output_hidden_states=True)
    assert torch.allclose(out["context"][0], ref.hidden_states[-2][0])
    assert torch.allclose(out["pooled"][0], ref.text_embeds[0])
    assert not torch.allclose(out["pooled"][0], out["pooled"][1])


def test_clip_tokenizer_from_hand_written_vocab_and_merges(tmp_path):
    """The release's tokenizer/ holds vocab.json + merges.txt; save_pretrained and reload keep the ids."""
    from transformers import CLIPTokenizer
    (tmp_path / "tok").mkdir()
    (tmp_path / "tok" / "vocab.json").write_text(json.dumps(VOCAB))
    (tmp_path / "tok" / "merges.txt").write_text("#version: 0.2\n" + "\n".join(MERGES) + "\n")
    tokenizer = CLIPTokenizer.from_pretrained(str(tmp_path / "tok"), local_files_only=True)
    assert tokenizer("a cat").input_ids == [0, 2, 7, 1] and tokenizer("A DOG").input_ids == [0, 2, 12, 1]
    tokenizer.save_pretrained(str(tmp_path / "saved"))
    reloaded = CLIPTokenizer.from_pretrained(str(tmp_path / "saved"), local_files_only=True)
    assert reloaded("a dog").input_ids == [0, 2, 12, 1]


def test_prompt_file_conditions_from_the_folder(folder, tmp_path):
    (tmp_path / "train.txt").write_text("a photo of a cat\n\na red car\n")
    (tmp_path / "eval.txt").write_text("a dog on the grass\n")
    conditions = registry().build("conditions", {"name": "prompt_files", "path": str(folder), "max_length": 8,
                                                  "train_file": str(tmp_path / "train.txt"),
                                                  "eval_file": str(tmp_path / "eval.txt"),
                                                  "negative_prompt": "blue"}, ctx_stub())
    cond = conditions.sample(4, torch.Generator().manual_seed(0))
    assert cond["context"].shape == (4, 8, 24) and cond["micro_conds"][0].tolist() == [1024, 1024, 0, 0, 6]
    assert set(conditions.text(cond["prompt_id"])) <= {"a photo of a cat", "a red car"}
    evaluation = conditions.sample(2, torch.Generator(), split="eval")
    assert conditions.text(evaluation["prompt_id"]) == ["a dog on the grass"] * 2
    null = conditions.null(cond)
    assert torch.allclose(null["pooled"], conditions.encoder(["blue"])["pooled"].expand(4, -1))
    assert (null["label"] == -1).all() and null["context"].shape == cond["context"].shape
    teacher = build_teacher(folder, grid_size=4)
    x = torch.full((4, 16), teacher.mask_id)
    with torch.no_grad():
        assert not torch.allclose(teacher(x, cond), teacher(x, null))
    with pytest.raises(ConfigError, match="does not exist"):
        registry().build("conditions", {"name": "prompt_files", "path": str(folder),
                                        "train_file": str(tmp_path / "missing.txt")}, ctx_stub())


def test_vq_model_needs_diffusers_or_loads_through_it(tmp_path):
    """Without diffusers: an error naming the extra. With it: a tiny VQModel round trip."""
    spec = {"name": "meissonic_vq", "path": str(tmp_path)}
    if importlib.util.find_spec("diffusers") is None:
        (tmp_path / "vqvae").mkdir()
        (tmp_path / "vqvae" / "config.json").write_text("{}")
        with pytest.raises(ConfigError, match=r"dimo\[meissonic\]"):
            registry().build("tokenizers", spec, ctx_stub())
        return
    from diffusers import VQModel
    VQModel(block_out_channels=(8, 8), down_block_types=("DownEncoderBlock2D",) * 2, layers_per_block=1,
            up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, num_vq_embeddings=16, norm_num_groups=4,
            lookup_from_codebook=True).save_pretrained(str(tmp_path / "vqvae"))
    tokenizer = registry().build("tokenizers", spec, ctx_stub())
    codes = tokenizer.encode(torch.rand(2, 3, 8, 8))
    assert codes.shape == (2, 16) and tokenizer.vocab_size == 16
    assert tokenizer.decode(codes).shape == (2, 3, 8, 8)


def test_a_prompt_file_that_is_not_utf8_is_named(tmp_path):
    from dimo_core.errors import ConfigError
    from dimo_meissonic.conditions import read_prompt_file
    file = tmp_path / "prompts.txt"
    file.write_bytes(b"a red car\n\xff\xfe caf\xe9\n")
    with pytest.raises(ConfigError, match=r"prompt file .*prompts.txt is not UTF-8 text \(byte 10"):
        read_prompt_file(file)
