"""`dimo export` for Meissonic: a tiny distilled student, written in its teacher's format and read back
through the loader of that format, gives the same logits as dimo's student."""
import torch

from dimo_core.export import export
from dimo_core.testing import distilled
from dimo_core.testing import run_context as context


def test_meissonic_exports_the_teacher_folder_with_the_student_as_transformer(tmp_path):
    from dimo_meissonic.plugin import BUNDLED_FOLDER
    run = ["plugins=meissonic", f"out_dir={tmp_path}", "distill.steps=1", "distill.batch_size=2",
           "distill.lr_generator=1e-2", "distill.warmup_steps=0", "distill.ema=0"]
    ctx, student = distilled(*run)
    export(ctx)
    folder = tmp_path / "export"
    assert (folder / "transformer" / "diffusion_pytorch_model.safetensors").is_file()
    for part in ("text_encoder", "tokenizer"):  # the teacher's other parts, linked
        assert (folder / part).resolve() == (BUNDLED_FOLDER / part).resolve()
    reloaded = context(*run, f"teacher.path={folder}", f"conditions.path={folder}")
    cond = reloaded.conditions.sample(2, torch.Generator().manual_seed(0), split="eval")
    tokens = torch.randint(0, student.vocab_size, (2, student.seq_len), generator=torch.Generator().manual_seed(1))
    tokens[:, ::2] = student.mask_id
    with torch.no_grad():
        expected = student(tokens, cond)
        assert torch.equal(reloaded.teacher.eval()(tokens, cond), expected)
        assert not torch.equal(ctx.teacher.eval()(tokens, cond), expected)
