"""`dimo export` for text (llada): a tiny distilled student, written in its teacher's format and read back
through the loader of that format, gives the same logits as dimo's student."""
import torch

from dimo_core.distill import distill
from dimo_core.export import export
from dimo_core.testing import distilled
from dimo_core.testing import run_context as context


def llada_run(tmp_path, *extra):
    return ["plugins=llada", f"out_dir={tmp_path}", "distill.steps=2", "distill.batch_size=2",
            "distill.lr_generator=1e-2", "distill.warmup_steps=0", "distill.ema=0", *extra]


def prompt_and_response(student, n=2):
    g = torch.Generator().manual_seed(0)
    prompt = torch.randint(4, student.vocab_size, (n, 5), generator=g)
    response = torch.randint(4, student.vocab_size, (n, student.seq_len), generator=g)
    response[:, ::3] = student.mask_id
    return prompt, response


def test_llada_exports_a_hugging_face_folder_that_auto_classes_load(tmp_path):
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    import dimo_llada.modeling  # noqa: F401  the bundled architecture registers with the Auto classes
    ctx, student = distilled(*llada_run(tmp_path))
    export(ctx)
    folder = tmp_path / "export"
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in folder.iterdir()}
    model = AutoModelForMaskedLM.from_pretrained(str(folder)).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    assert tokenizer.mask_token_id == student.mask_id
    prompt, response = prompt_and_response(student)
    with torch.no_grad():
        expected = student(response, prompt)
        assert torch.equal(model(torch.cat([prompt, response], 1)).logits[:, 5:], expected)
        reloaded = context(*llada_run(tmp_path), f"teacher.path={folder}").teacher.eval()
        assert torch.equal(reloaded(response, prompt), expected)
        assert not torch.equal(ctx.teacher.eval()(response, prompt), expected)


def test_llada_lora_student_exports_merged_or_as_a_peft_adapter(tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForMaskedLM

    from dimo_llada.teacher import BUNDLED_TEACHER
    run = llada_run(tmp_path, "teacher.lora_rank=2", "distill.frozen=[]")
    ctx, student = distilled(*run)
    prompt, response = prompt_and_response(student)
    ids = torch.cat([prompt, response], 1)
    with torch.no_grad():
        expected = student(response, prompt)
        assert not torch.equal(ctx.teacher.eval()(response, prompt), expected)  # the adapters moved

        export(context(*run, f"export.path={tmp_path / 'hf'}"))
        merged = AutoModelForMaskedLM.from_pretrained(str(tmp_path / "hf")).eval()
        assert not any("lora" in k for k in merged.state_dict())
        torch.testing.assert_close(merged(ids).logits[:, 5:], expected, atol=1e-5, rtol=1e-5)  # W + BA rounded once

        export(context(*run, "export.format=adapter", f"export.path={tmp_path / 'adapter'}"))
        assert (tmp_path / "adapter" / "adapter_config.json").is_file()
        base = AutoModelForMaskedLM.from_pretrained(BUNDLED_TEACHER, dtype=torch.float32)  # dimo loads fp32
        adapted = PeftModel.from_pretrained(base, str(tmp_path / "adapter")).eval()
        assert torch.equal(adapted(input_ids=ids).logits[:, 5:], expected)


def test_llada_adapter_format_needs_a_lora_run(tmp_path):
    import pytest

    from dimo_core.errors import ConfigError
    run = llada_run(tmp_path, "distill.steps=1")
    distill(context(*run), progress=False)
    with pytest.raises(ConfigError, match="lora_rank"):
        export(context(*run, "export.format=adapter"))


def test_a_remote_code_teacher_exports_with_its_model_code(tmp_path):
    import sys
    from pathlib import Path

    from dimo_llada.hf_loading import load_masked_lm
    sys.path.insert(0, str(Path(__file__).parent))
    from remote_code_folders import reference_model, write_remote_code_folder
    teacher = write_remote_code_folder(tmp_path / "teacher", "llada")
    run = llada_run(tmp_path, f"teacher.path={teacher}", "teacher.trust_remote_code=true", "distill.frozen=[]")
    ctx, student = distilled(*run)
    export(ctx)
    folder = tmp_path / "export"
    code = sorted(p.name for p in teacher.glob("*.py"))
    assert code and all((folder / name).is_file() for name in code)
    # read as the teacher was (its 4.x-era file under the installed transformers), and by the folder's own
    # classes given the exported weights strictly
    loaded = load_masked_lm(folder, trust_remote_code=True).eval()
    own = reference_model(folder, "llada").eval()
    prompt, response = prompt_and_response(student)
    ids = torch.cat([prompt, response], 1)
    with torch.no_grad():
        expected = student(response, prompt)
        assert torch.equal(loaded(input_ids=ids).logits[:, 5:], expected)
        assert torch.equal(own(input_ids=ids).logits[:, 5:], expected)
