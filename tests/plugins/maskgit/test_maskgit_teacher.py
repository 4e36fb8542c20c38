"""The MaskGit v1.0 transformer as a dimo teacher, and its checkpoints in the released formats."""
import pytest
import torch

from dimo_core.errors import CheckpointError
from dimo_core.testing import TeacherContract
from dimo_core.conditions import ClassLabels
from dimo_core.registry import registry_with
from dimo_maskgit.teacher import MaskGitTeacher, build_teacher, save_teacher
from dimo_maskgit import plugin

TINY = dict(hidden=32, depth=2, heads=4, mlp=64, codebook_size=12, num_classes=3, tokens=9, dropout=0.0)


def tiny_teacher(seed=0, **overrides):
    torch.manual_seed(seed)
    teacher = MaskGitTeacher(**{**TINY, **overrides})
    with torch.no_grad():  # the release starts the bias at zero; give it values so loading is visible
        teacher.bias.normal_()
    return teacher.eval()


class TestMaskGitTeacherContract(TeacherContract):
    def make_teacher(self):
        return tiny_teacher()

    def make_conditions(self):
        return ClassLabels(TINY["num_classes"])


def test_release_size_has_the_released_parameter_count_and_key_names():
    with torch.device("meta"):
        teacher = MaskGitTeacher()  # defaults: the ImageNet 256 release
    assert sum(p.numel() for p in teacher.parameters()) == 174_160_874  # README: 174.161M
    shapes = {k: tuple(v.shape) for k, v in teacher.state_dict().items()}
    assert shapes["tok_emb.weight"] == (2026, 768)   # 1024 codes + mask + 1000 classes + null
    assert shapes["pos_emb"] == (1, 257, 768)
    assert shapes["bias"] == (257, 2026)
    assert shapes["transformer.layers.23.0.fn.mha.in_proj_weight"] == (3 * 768, 768)
    assert shapes["transformer.layers.23.1.fn.net.0.weight"] == (3072, 768)
    assert {"first_layer.6.weight", "last_layer.4.bias", "transformer.layers.0.0.norm.weight"} <= set(shapes)
    assert (teacher.vocab_size, teacher.mask_id, teacher.seq_len) == (1024, 1024, 256)


def test_logits_drop_the_mask_column_and_the_class_token():
    teacher = tiny_teacher()
    x = torch.randint(0, 13, (2, 9))
    labels = torch.tensor([0, 2])
    with torch.no_grad():
        released = teacher.release_logits(x, labels)
        logits = teacher(x, labels)
        from_grid = teacher(x.view(2, 3, 3), labels)  # (B, h, w), as the release takes tokens
    assert released.shape == (2, 9, 13)          # [:, :tokens, :codebook + 1] as the release
    assert logits.shape == (2, 9, 12)
    assert torch.equal(logits, released[..., :12])
    assert torch.equal(from_grid, logits)


def test_null_class_is_the_last_embedding_row_and_none_means_null():
    teacher = tiny_teacher()
    null = ClassLabels(3).null(torch.tensor([0, 1]))
    assert null.tolist() == [3, 3]
    assert teacher.class_rows(null).tolist() == [teacher.tok_emb.num_embeddings - 1] * 2
    x = torch.randint(0, 13, (2, 9))
    with torch.no_grad():
        assert torch.equal(teacher(x, None), teacher(x, null))


def test_embedding_noise_perturbs_visual_tokens_but_not_the_class_token():
    teacher = tiny_teacher()
    x, other_x = torch.randint(0, 12, (2, 2, 9))
    with torch.no_grad():
        torch.manual_seed(5)
        a = teacher(x, torch.tensor([0, 0]), embedding_noise=1.0, generator=torch.Generator().manual_seed(0))    # sigma = 1: pure noise
        torch.manual_seed(5)
        b = teacher(other_x, torch.tensor([0, 0]), embedding_noise=1.0, generator=torch.Generator().manual_seed(0))
        torch.manual_seed(5)
        c = teacher(x, torch.tensor([1, 1]), embedding_noise=1.0, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(a, b)      # the visual tokens were entirely replaced by the same noise
    assert not torch.allclose(a, c)  # the class token was not


def test_released_pth_format_loads_strictly(tmp_path):
    teacher = tiny_teacher()
    opt = torch.optim.Adam(teacher.parameters())
    path = tmp_path / "MaskGIT_tiny.pth"
    torch.save({"iter": 10, "global_epoch": 1, "model_state_dict": teacher.state_dict(),
                "optimizer_state_dict": opt.state_dict()}, path)
    loaded = build_teacher(path, **TINY)
    x, y = torch.randint(0, 13, (4, 9)), torch.tensor([0, 1, 2, 3])
    with torch.no_grad():
        assert torch.equal(loaded(x, y), teacher(x, y))


def test_ddp_prefixed_state_dict_and_safetensors_load(tmp_path):
    teacher = tiny_teacher()
    torch.save({f"module.{k}": v for k, v in teacher.state_dict().items()}, tmp_path / "ddp.pth")
    save_teacher(teacher, tmp_path / "teacher.safetensors")
    x, y = torch.randint(0, 13, (4, 9)), torch.tensor([0, 1, 2, 0])
    for name in ("ddp.pth", "teacher.safetensors"):
        with torch.no_grad():
            assert torch.equal(build_teacher(tmp_path / name, **TINY)(x, y), teacher(x, y))


def test_wrong_checkpoint_names_missing_unexpected_and_misshapen_keys(tmp_path):
    save_teacher(tiny_teacher(depth=1), tmp_path / "shallow.safetensors")
    with pytest.raises(CheckpointError, match=r"missing keys: .*transformer\.layers\.1\."):
        build_teacher(tmp_path / "shallow.safetensors", **TINY)
    save_teacher(tiny_teacher(depth=3), tmp_path / "deep.safetensors")
    with pytest.raises(CheckpointError, match=r"unexpected keys: .*transformer\.layers\.2\."):
        build_teacher(tmp_path / "deep.safetensors", **TINY)
    save_teacher(tiny_teacher(num_classes=5), tmp_path / "classes.safetensors")
    with pytest.raises(CheckpointError, match=r"wrong shapes: .*tok_emb\.weight"):
        build_teacher(tmp_path / "classes.safetensors", **TINY)


class Executable:
    """A pickled object whose class is not an allowed global: weights_only must refuse it."""


def test_pickled_code_is_refused(tmp_path):
    torch.save({"model_state_dict": tiny_teacher().state_dict(), "extra": Executable()}, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match="weights_only"):
        build_teacher(tmp_path / "bad.pth", **TINY)


def test_registered_factory_builds_and_loads(tmp_path):
    registry = registry_with("maskgit", plugin)
    teacher = tiny_teacher()
    save_teacher(teacher, tmp_path / "t.safetensors")
    built = registry.build("teachers", {"name": "maskgit", "path": str(tmp_path / "t.safetensors"), **TINY}, ctx=None)
    x, y = torch.randint(0, 13, (2, 9)), torch.tensor([1, 2])
    with torch.no_grad():
        assert torch.equal(built(x, y), teacher(x, y))
    random_init = registry.build("teachers", {"name": "maskgit", **TINY}, ctx=None)
    assert random_init.vocab_size == 12 and random_init.mask_id == 12 and random_init.seq_len == 9
