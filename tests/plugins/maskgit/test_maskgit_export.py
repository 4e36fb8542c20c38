"""`dimo export` for MaskGit: a tiny distilled student, written in its teacher's format and read back
through the loader of that format, gives the same logits as dimo's student."""
import torch

from dimo_core.export import export
from dimo_core.testing import distilled
from dimo_core.testing import run_context as context


def test_maskgit_exports_the_valeoai_v1_checkpoint(tmp_path):
    from dimo_maskgit.transformer import MaskTransformer
    arch = dict(hidden=16, depth=1, heads=2, mlp=32, codebook_size=256, num_classes=10, tokens=49, dropout=0.1)
    overrides = ["plugins=maskgit", f"out_dir={tmp_path}", "teacher.path=null", *(f"teacher.{k}={v}" for k, v in arch.items()),
                 "distill.steps=2", "distill.batch_size=4", "distill.lr_generator=1e-2", "distill.warmup_steps=0"]
    ctx, student = distilled(*overrides)
    [path] = export(ctx)
    assert path == tmp_path / "export" / "current.pth"
    # what v1.0's get_network reads: iter, global_epoch and model_state_dict, loaded into its MaskTransformer
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    assert {"iter", "global_epoch", "model_state_dict"} <= set(checkpoint)
    release = MaskTransformer(**arch)
    release.load_state_dict(checkpoint["model_state_dict"], strict=True)
    reloaded = context(*overrides, f"teacher.path={path}").teacher.eval()  # and dimo's own loader
    tokens = torch.randint(0, 257, (3, 49), generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 5, 10])  # 10 = the null class
    with torch.no_grad():
        expected = student(tokens, labels)
        assert torch.equal(reloaded(tokens, labels), expected)
        assert torch.equal(release.eval().release_logits(tokens, labels, 0.0)[..., :256], expected)
        assert not torch.equal(ctx.teacher.eval()(tokens, labels), expected)
