"""The taming VQGAN tokenizer: Lightning checkpoints + model.yaml in both folder layouts."""
import pytest
import torch
from omegaconf import OmegaConf

from dimo_core.checkpoint import save_tensors
from dimo_core.errors import CheckpointError
from dimo_maskgit.vqgan import VQModel, load_vqgan

DDCONFIG = dict(double_z=False, z_channels=8, resolution=16, in_channels=3, out_ch=3, ch=32, ch_mult=[1, 2],
                num_res_blocks=1, attn_resolutions=[8], dropout=0.0)
PARAMS = dict(embed_dim=4, n_embed=16, ddconfig=DDCONFIG)


class ModelCheckpoint:
    """Lightning (before 1.5) keys callback states by the callback class: not an allowed global."""


def tiny_vqgan():
    torch.manual_seed(0)
    return VQModel(**PARAMS).eval()


def write_release_folder(folder, model, layout):
    """model.yaml as taming writes it (target, lossconfig) and a Lightning-style last.ckpt."""
    config = {"model": {"base_learning_rate": 4.5e-6, "target": "taming.models.vqgan.VQModel",
                        "params": {**PARAMS, "lossconfig": {
                            "target": "taming.modules.losses.vqperceptual.VQLPIPSWithDiscriminator",
                            "params": {"disc_start": 250001, "codebook_weight": 1.0}}}}}
    state = dict(model.state_dict())
    state["loss.discriminator.main.0.weight"] = torch.zeros(4, 3, 4, 4)  # training-only weights
    ckpt = {"epoch": 3, "global_step": 1000, "pytorch-lightning_version": "1.0.8", "state_dict": state,
            "callbacks": {ModelCheckpoint: {"best_model_score": torch.tensor(0.1)}},
            "optimizer_states": [{"state": {}, "param_groups": [{"lr": 4.5e-6, "params": [0]}]}],
            "lr_schedulers": []}
    config_dir, ckpt_dir = (folder, folder) if layout == "flat" else (folder / "configs", folder / "ckpts")
    config_dir.mkdir(parents=True, exist_ok=True)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(OmegaConf.create(config), config_dir / "model.yaml")
    torch.save(ckpt, ckpt_dir / "last.ckpt")


@pytest.mark.parametrize("layout", ["flat", "taming"])
def test_lightning_checkpoint_loads_in_both_layouts(tmp_path, layout):
    model = tiny_vqgan()
    write_release_folder(tmp_path, model, layout)
    tokenizer = load_vqgan(tmp_path)
    assert tokenizer.vocab_size == 16 and tokenizer.mask_id is None and tokenizer.grid == (8, 8)
    images = torch.rand(2, 3, 16, 16)
    codes = tokenizer.encode(images)
    assert codes.shape == (2, 64) and codes.dtype == torch.long and 0 <= codes.min() and codes.max() < 16
    with torch.no_grad():  # the loaded weights are the saved ones: same codes as a direct nearest search
        z = model.quant_conv(model.encoder(images * 2 - 1))
        distances = torch.cdist(z.permute(0, 2, 3, 1).reshape(-1, 4), model.quantize.embedding.weight)
    assert torch.equal(codes.flatten(), distances.argmin(1))
    decoded = tokenizer.decode(codes)
    assert decoded.shape == (2, 3, 16, 16) and 0 <= decoded.min() and decoded.max() <= 1


def test_safetensors_weights_load(tmp_path):
    model = tiny_vqgan()
    write_release_folder(tmp_path, model, "flat")
    (tmp_path / "last.ckpt").unlink()
    save_tensors(tmp_path / "model.safetensors", model.state_dict())
    codes = load_vqgan(tmp_path).encode(torch.rand(1, 3, 16, 16))
    assert codes.shape == (1, 64)


def test_wrong_checkpoint_names_missing_keys(tmp_path):
    model = tiny_vqgan()
    write_release_folder(tmp_path, model, "flat")
    ckpt = torch.load(tmp_path / "last.ckpt", weights_only=False)
    del ckpt["state_dict"]["quantize.embedding.weight"]
    ckpt["state_dict"]["encoder.extra.weight"] = torch.zeros(1)
    del ckpt["callbacks"]
    torch.save(ckpt, tmp_path / "last.ckpt")
    with pytest.raises(CheckpointError, match=r"missing keys: quantize\.embedding\.weight.*unexpected keys: "
                                              r"encoder\.extra\.weight"):
        load_vqgan(tmp_path)


def test_missing_files_are_named(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_vqgan(tmp_path / "nowhere")
    with pytest.raises(CheckpointError, match=r"model\.yaml, configs/model\.yaml"):
        load_vqgan(tmp_path)
