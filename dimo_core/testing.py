"""Contract tests for plugin authors, and a tiny dummy teacher to run them on.

``PluginContract``: subclass it once in your plug-in's tests (``tests/plugins/<name>/``), give the
plug-in's name, its hook module, what it registers and the overrides that make it tiny; pytest then
checks the registered names, validates every preset, runs ``TeacherContract`` on the registered
teacher at that size, and runs train-teacher -> run -> eval through the core.

``TeacherContract``: what the engine assumes of a Teacher; subclass it directly for a hand-built
teacher (``make_teacher``, and ``make_conditions`` for a conditional one).
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from .config import DistillConfig
from .divergences import FKL
from .engine import DiMOEngine
from .init import RandomMaskInit, perturb_embeddings


class DummyTeacher(nn.Module):
    """A two-layer bidirectional MDM small enough for unit tests (class labels as conditions)."""

    def __init__(self, vocab_size: int = 7, seq_len: int = 6, num_classes: int = 3, dim: int = 16):
        super().__init__()
        self.vocab_size, self.mask_id, self.seq_len, self.num_classes = vocab_size, vocab_size, seq_len, num_classes
        self.tokens = nn.Embedding(vocab_size + 1, dim)
        self.classes = nn.Embedding(num_classes + 1, dim)
        self.positions = nn.Parameter(torch.randn(seq_len, dim) * 0.1)
        self.mix = nn.TransformerEncoderLayer(dim, 2, 2 * dim, dropout=0.0, batch_first=True)
        self.head = nn.Linear(dim, vocab_size)

    def forward(self, tokens, cond, embedding_noise: float = 0.0, generator=None):
        e = perturb_embeddings(self.tokens(tokens), embedding_noise, generator)
        if cond is not None:
            e = e + self.classes(cond)[:, None]
        return self.head(self.mix(e + self.positions))


class DummyConditions:
    def __init__(self, num_classes: int = 3):
        self.num_classes = num_classes

    def sample(self, n, generator, split="train"):
        return torch.randint(0, self.num_classes, (n,), generator=generator, device=generator.device)

    def null(self, cond):
        return torch.full_like(cond, self.num_classes)


class TeacherContract:
    """What the engine assumes of a Teacher (and of its Conditions)."""

    batch_size = 3

    def make_teacher(self) -> nn.Module:
        raise NotImplementedError

    def make_conditions(self):
        return None

    def _inputs(self, teacher, conditions, seed=0):
        g = torch.Generator().manual_seed(seed)
        device = next(teacher.parameters()).device
        x = RandomMaskInit(0.5)(self.batch_size, teacher.seq_len, teacher.vocab_size, teacher.mask_id, g, device)
        cond = conditions.sample(self.batch_size, g) if conditions is not None else None
        return x, cond

    def test_declares_vocabulary_mask_and_length(self):
        teacher = self.make_teacher()
        assert isinstance(teacher, nn.Module)
        assert teacher.vocab_size > 1 and teacher.seq_len > 0
        assert 0 <= teacher.mask_id

    def test_logits_shape(self):
        teacher, conditions = self.make_teacher().eval(), self.make_conditions()
        x, cond = self._inputs(teacher, conditions)
        with torch.no_grad():
            out = teacher(x, cond)
        assert out.shape == (self.batch_size, teacher.seq_len, teacher.vocab_size)
        assert torch.isfinite(out).all()

    def test_embedding_noise_is_random_and_zero_noise_is_deterministic(self):
        teacher, conditions = self.make_teacher().eval(), self.make_conditions()
        x, cond = self._inputs(teacher, conditions)
        with torch.no_grad():
            assert torch.equal(teacher(x, cond), teacher(x, cond, embedding_noise=0.0))
            noisy = lambda seed: teacher(x, cond, embedding_noise=0.5, generator=torch.Generator(x.device).manual_seed(seed))  # noqa: E731
            assert not torch.allclose(teacher(x, cond), noisy(0))
            assert torch.equal(noisy(0), noisy(0)) and not torch.equal(noisy(0), noisy(1))  # the noise is the generator's

    def test_null_condition_keeps_batch_and_changes_output(self):
        conditions = self.make_conditions()
        if conditions is None:
            return
        teacher = self.make_teacher().eval()
        x, cond = self._inputs(teacher, conditions)
        null = conditions.null(cond)
        with torch.no_grad():
            assert teacher(x, null).shape == teacher(x, cond).shape
            assert not torch.allclose(teacher(x, null), teacher(x, cond))

    def test_deepcopy_is_independent(self):
        teacher = self.make_teacher()
        clone = copy.deepcopy(teacher)
        p = next(clone.parameters())
        with torch.no_grad():
            p.add_(1.0)
        assert not torch.equal(p, next(teacher.parameters()))

    def test_one_distillation_step_moves_the_generator_only(self):
        teacher, conditions = self.make_teacher(), self.make_conditions()
        before = {k: v.clone() for k, v in teacher.state_dict().items()}
        cfg = DistillConfig(steps=2, batch_size=self.batch_size, lr_generator=1e-2, lr_aux=1e-2, warmup_steps=0,
                            ema=0.0, guidance=2.0 if conditions is not None else 1.0)
        engine = DiMOEngine(teacher, conditions, FKL(), RandomMaskInit(0.5), cfg, seed=0)
        # Two steps: unguided, the aux model starts equal to the teacher, so the generator's first
        # gradient is exactly zero; the aux's first update makes the second one non-zero.
        for _ in range(2):
            logs = engine.train_step()
            assert all(torch.isfinite(torch.as_tensor(v)) for v in logs.values())
        assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())
        moved = [k for k, v in engine.generator.state_dict().items() if not torch.equal(before[k], v)]
        assert moved, "the generator did not change after one step"


class PluginContract(TeacherContract):
    """What every plug-in promises, checked through the core as a user runs it.

    Set ``name`` (as in ``plugins=NAME``), ``module`` (the module of hook implementations),
    ``registers`` ({kind: [names]}) and ``tiny`` (overrides for a seconds-sized teacher and run);
    override ``end_to_end_overrides(tmp_path)`` for data or metrics of its own (a fake dataset root,
    a small reference model) and ``check_report(report, out_dir)`` for what the report must hold."""

    name: str
    module = None
    registers: dict[str, list[str]] = {}
    tiny: list[str] = []

    def registry(self):
        from .registry import registry_with
        return registry_with(self.name, self.module)

    def context(self, overrides: list[str]):
        from .config import load_config
        from .context import Context
        registry = self.registry()
        return Context(load_config([f"plugins={self.name}", *overrides], registry), registry)

    def make_teacher(self) -> nn.Module:
        """The registered teacher at the tiny size, freshly initialised; every weight is then nudged,
        since zero-initialised layers (AdaLN-zero modulation, say) would hide the condition."""
        torch.manual_seed(0)
        teacher = self.context([*self.tiny, "teacher.path=null"]).teacher
        with torch.no_grad():
            for p in teacher.parameters():
                p.add_(0.05 * torch.randn_like(p))
        return teacher

    def make_conditions(self):
        ctx = self.context([*self.tiny, "teacher.path=null"])
        return ctx.conditions if ctx.config.conditions.name is not None else None

    def end_to_end_overrides(self, tmp_path) -> list[str]:
        return []

    def check_report(self, report: dict, out_dir) -> None:
        """Extra checks of a plug-in on the tiny run's report (its metric names, its writer's files)."""

    def test_registers_its_names(self):
        info = {p.name: p for p in self.registry().plugins()}[self.name]
        for kind, names in self.registers.items():
            assert sorted(names) == info.registers.get(kind, []), kind

    def test_every_preset_validates(self):
        from .config import RunConfig, load_config
        registry = self.registry()
        for preset in self.registers.get("presets", []):
            # values a user must give (REQUIRED) stay "???": here only the rest is checked
            config = load_config([f"preset={preset}"], registry, unused=tuple(RunConfig.model_fields))
            assert config.teacher.name in registry.names("teachers"), preset

    def test_tiny_train_teacher_run_and_eval(self, tmp_path):
        import math

        from .distill import distill
        from .evaluate import evaluate
        from .train_teacher import train_teacher
        common = [*self.tiny, f"out_dir={tmp_path / 'run'}", *self.end_to_end_overrides(tmp_path)]
        teacher = train_teacher(self.context([*common, "teacher.path=null", "train_teacher.steps=2",
                                              "train_teacher.batch_size=4", "train_teacher.warmup_steps=1"]),
                                progress=False)
        ctx = self.context([*common, f"teacher.path={teacher}", "distill.steps=2", "distill.batch_size=4",
                            "distill.warmup_steps=1", "distill.ckpt_every=2", "eval.samples=8", "eval.batch_size=4",
                            "eval.teacher_steps=[1,2]", "eval.student_steps=[1]", "eval.grid=2"])
        assert distill(ctx, progress=False).is_file()
        report = evaluate(ctx, progress=False)
        assert [(r["sampler"], r["steps"]) for r in report["rows"]] == [("teacher", 1), ("teacher", 2), ("student", 1)]
        for row in report["rows"]:
            assert row["metrics"] and all(isinstance(v, float) and not math.isinf(v) for v in row["metrics"].values())
        assert (tmp_path / "run" / "report.md").is_file()
        self.check_report(report, tmp_path / "run")


def run_context(*overrides: str, registry=None):
    """A Context for a test run: one thread, a fresh out_dir (resume=false), then ``overrides``."""
    from .config import load_config
    from .context import Context
    from .registry import get_registry
    registry = registry or get_registry()
    return Context(load_config(["threads=1", "resume=false", *overrides], registry), registry)


def distilled(*overrides: str, registry=None):
    """Run ``dimo run`` in-process with ``overrides`` (keep it tiny) and return (ctx, the student as
    ``dimo sample`` and ``dimo export`` load it)."""
    from .distill import distill
    from .student import load_student
    ctx = run_context(*overrides, registry=registry)
    distill(ctx, progress=False)
    return ctx, load_student(ctx)
