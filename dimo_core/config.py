"""Configuration: pydantic models (extra keys forbidden) validated from an OmegaConf merge of
defaults <- plugin presets <- ``preset=`` presets <- ``config=FILE.yaml`` <- ``key=value`` overrides.

Only OmegaConf's built-in interpolation is used; no resolver evaluates code.
"""
from __future__ import annotations

import re
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import ConfigError


# Value ranges: pydantic names the key and the bound in its message ("greater than or equal to 1").
Count = Annotated[int, Field(ge=1)]             # steps, batch sizes, intervals
NonNegativeInt = Annotated[int, Field(ge=0)]
NonNegative = Annotated[float, Field(ge=0)]     # learning rates, weight decay, temperatures (0 = greedy)
Positive = Annotated[float, Field(gt=0)]        # clipping norms
Rate = Annotated[float, Field(ge=0, lt=1)]      # EMA rates, label smoothing, Adam betas
Fraction = Annotated[float, Field(ge=0, le=1)]  # ratios and probabilities


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class Component(BaseModel):
    """A registered component: ``name`` plus the options its factory takes (checked by the registry)."""
    model_config = ConfigDict(extra="allow")
    name: str | None = None

    def spec(self) -> dict:
        return self.model_dump()


class DistillConfig(Strict):
    steps: Count = 1000                  # generator updates
    batch_size: Count = 64               # global batch per update
    grad_accum: Count = 1                # micro-batches per update (batch_size must divide)
    divergence: Component = Component(name="fkl")  # fkl | rkl | jeffreys (beta) | f (f=js|tv|...) | js | tv
    init: Component = Component(name="random_mask", r_init=0.6)  # r_init: a ratio or a range [a, b] per batch
    student_steps: list[int] = [1]       # step counts k the student is trained for ([1, 4]: one student, both); stages in dimo_core/stages.py
    sigma: Fraction = 0.1                # generator-only embedding perturbation (0 = off)
    schedule: str = "arccos"             # masking schedule of x_theta (arccos|cosine|linear|square)
    schedule_clamp: tuple[float, float] | None = None  # Meissonic's release clamps r to [0.02, 0.98]
    guidance: float = 1.0                # teacher CFG weight during distillation (1.0 = off in "standard" form)
    guidance_form: Literal["standard", "maskgit"] = "standard"  # u + w(c-u) | c + w(c-u)
    guidance_ramp: bool = False          # weight w * t(r) by each row's mask ratio r, as a ramped sampler (off: the release)
    normalize: Literal["batch", "masked"] = "batch"  # divide by B (release) | by L_M per sample (paper)
    aux_samples: Literal["fresh", "reuse"] = "fresh"  # fresh x_init + generator sample (release) | reuse x_theta (paper)
    aux_updates: Count = 1               # aux updates per generator update
    label_smoothing: Rate = 0.1          # aux cross-entropy
    temperature: NonNegative = 1.0       # generator sampling temperature in training
    lr_generator: NonNegative = 1e-5
    lr_aux: NonNegative = 1e-5
    betas: tuple[Rate, Rate] = (0.9, 0.999)
    weight_decay: NonNegative = 0.0
    warmup_steps: NonNegativeInt = 100   # linear warm-up, then constant
    min_lr_ratio: Fraction = 1.0         # cosine decay to lr * min_lr_ratio at the last step (1.0 = constant, the release)
    grad_clip: Positive | None = 1.0     # generator gradient norm (None = off)
    aux_grad_clip: Positive | None = None
    ema: Rate = 0.9999                   # EMA rate of the generator, ramped min(rate, (1+s)/(10+s)); 0 = off
    frozen: list[str] = []               # fnmatch patterns (a|b: either) of parameter names frozen in generator and aux
    nonfinite: Literal["stop", "skip"] = "stop"  # on a NaN/inf loss: stop (keep last checkpoint) | skip batch
    train_mode: bool = True              # generator/aux in train mode (dropout as the model defines)
    log_every: Count = 50
    ckpt_every: Count = 500
    keep_checkpoints: Count = 2

    @field_validator("student_steps", mode="before")
    @classmethod
    def _step_counts(cls, v):
        v = [v] if isinstance(v, int) else v
        if not v or any(not isinstance(k, int) or k < 1 for k in v):
            raise ValueError("must be step counts >= 1, such as [1] or [1, 2, 4]")
        return sorted(set(v))


class TrainTeacherConfig(Strict):
    steps: Count = 2000
    batch_size: Count = 128
    lr: NonNegative = 1e-3
    betas: tuple[Rate, Rate] = (0.9, 0.95)
    weight_decay: NonNegative = 0.01
    warmup_steps: NonNegativeInt = 100
    min_lr_ratio: Fraction = 0.1         # cosine decay to lr * min_lr_ratio
    schedule: str = "arccos"             # masking schedule of eq. 3
    masking: Literal["bernoulli", "exact"] = "bernoulli"  # per-token at ratio r (MaskGit) | exactly round(rL)
    loss_positions: Literal["all", "masked"] = "all"  # MaskGit trains all positions; MDLM/LLaDA masked only
    label_smoothing: Rate = 0.1
    cond_drop: Fraction = 0.1            # condition -> null condition, for guidance
    grad_clip: Positive | None = 1.0
    ema: Rate = 0.0
    init_from: str | None = None         # fine-tune: a teacher checkpoint to start from
    log_every: Count = 100
    ckpt_every: Count = 500


class SampleConfig(Strict):
    source: Literal["teacher", "student", "both"] = "student"
    sampler: Component = Component(name="confidence")
    steps: Count = 16                    # teacher steps
    student_steps: Count | None = None   # student passes k (None: the largest k it was trained for)
    guidance: float = 1.0
    temperature: NonNegative = 1.0       # student output temperature
    prompt: list[str] | None = None      # conditions as text (plugins' from_text): prompt="a sneaker", or a class
    n: Count = 16
    student: str | None = None           # student weights (default: out_dir/student.safetensors)
    seed: int = 0

    @field_validator("prompt", mode="before")
    @classmethod
    def _one_prompt(cls, v):
        return [v] if isinstance(v, str) else v


class EvalConfig(Strict):
    teacher_steps: list[Count] = [1, 2, 4, 8, 16, 32]
    student_steps: list[Count] | None = None  # student rows at these k (None: every k it was trained for; []: none)
    samples: Count = 2000
    batch_size: Count = 250
    sampler: Component = Component(name="confidence")
    guidance: float = 1.0                # teacher guidance at sampling
    student_temperature: NonNegative = 1.0
    metrics: list[Component] = []
    writer: Component | None = None
    grid: NonNegativeInt = 10            # conditions shown by the writer
    student: str | None = None
    seed: int = 1234
    after_run: bool = False              # `dimo run` ends with `dimo eval` (one process only)


class ExportConfig(Strict):
    format: str | None = None            # None: the teacher's own format (dimo plugins lists exporters)
    path: str | None = None              # folder written (default: out_dir/export)
    student: str | None = None           # student weights (default: out_dir/student.safetensors)


class LogConfig(Strict):
    tensorboard: bool = False            # also write train_log.jsonl's numbers as TensorBoard scalars (out_dir/tensorboard)


class DistributedConfig(Strict):
    strategy: Literal["auto", "none", "ddp", "fsdp"] = "auto"  # auto: ddp under torchrun with >1 process, else none
    backend: Literal["auto", "nccl", "gloo"] = "auto"  # auto: nccl on GPU, gloo on CPU
    timeout_minutes: float = 30.0        # a collective waiting longer fails instead of hanging (> checkpoint time)
    shard_teacher: bool = True           # fsdp: shard the frozen teacher too (memory); it never gets gradients

    @field_validator("timeout_minutes")
    @classmethod
    def _positive_timeout(cls, v):
        if v <= 0:
            raise ValueError("must be > 0")
        return v


class PerformanceConfig(Strict):
    activation_checkpointing: bool = False  # recompute blocks in backward (generator, aux): less memory, ~1.3x compute
    compile: bool = False                # torch.compile the three models (first steps slower)
    compile_backend: str = "inductor"    # torch.compile backend (inductor | aot_eager | eager)
    cuda_graph: bool = False             # one GPU: replay each training step as one captured CUDA graph (eager if capture fails); not yet measured on a GPU
    attention: Literal["sdpa", "xformers"] = "sdpa"  # dimo_core.attention backend; xformers only on CUDA where installed
    memory_check: bool = True            # print a memory estimate; refuse to start if it exceeds free memory


class RunConfig(Strict):
    plugins: list[str] = []              # plugins whose presets apply (plugins=NAME)
    preset: list[str] = []               # further presets, applied after the plugins'
    out_dir: str | None = None           # default: runs/<first plugin>
    seed: int = 0
    device: str = "cpu"
    threads: Count | None = None         # CPU threads for torch (None: torch's default; 1 on a busy machine)
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"  # autocast dtype (auto: bfloat16 on CUDA, else float32); weights stay fp32
    resume: bool | Literal["force"] = True  # continue from the last checkpoint | force: despite changed keys | false: move it aside
    teacher: Component = Component()
    tokenizer: Component = Component()
    conditions: Component = Component()
    dataset: Component = Component()
    distill: DistillConfig = DistillConfig()
    train_teacher: TrainTeacherConfig = TrainTeacherConfig()
    sample: SampleConfig = SampleConfig()
    eval: EvalConfig = EvalConfig()
    export: ExportConfig = ExportConfig()
    log: LogConfig = LogConfig()
    distributed: DistributedConfig = DistributedConfig()
    performance: PerformanceConfig = PerformanceConfig()

    @field_validator("plugins", "preset", mode="before")
    @classmethod
    def _listify(cls, v):
        return [v] if isinstance(v, str) else v

    @field_validator("resume", mode="before")
    @classmethod
    def _resume_choice(cls, v):
        if isinstance(v, bool) or v == "force":
            return v
        raise ValueError("must be true (continue), false (move the old run aside and start over) or force "
                         "(continue although training keys changed)")

    @field_validator("device")
    @classmethod
    def _torch_device(cls, v):
        import torch
        try:
            torch.device(v)
        except (RuntimeError, ValueError):
            raise ValueError("not a torch device; use cpu, cuda, cuda:N or mps") from None
        return v

    @property
    def run_dir(self) -> Path:
        return Path(self.out_dir or f"runs/{self.plugins[0] if self.plugins else 'default'}")


COMPONENT_SECTIONS = {"teacher": "teachers", "tokenizer": "tokenizers", "conditions": "conditions",
                      "dataset": "datasets", "distill.divergence": "divergences", "distill.init": "init_strategies",
                      "sample.sampler": "samplers", "eval.sampler": "samplers"}


def _valid_keys(model: type[BaseModel], loc: tuple) -> list[str]:
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        ann = getattr(field, "annotation", None)
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return []
        model = ann
    return list(model.model_fields)


BOUND_ERRORS = {"greater_than", "greater_than_equal", "less_than", "less_than_equal"}


def _valid_range(model: type[BaseModel], loc: tuple) -> str | None:
    """What a number field accepts ("in [0, 1)", ">= 1"), from its pydantic constraints."""
    field = None
    for part in loc:
        if field is not None:
            ann = field.annotation
            if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
                return None
            model = ann
        field = model.model_fields.get(str(part))
        if field is None:
            return None
    low, high = "(-inf", "inf)"
    constraints = list(field.metadata)
    for arg in typing.get_args(field.annotation):  # Count | None: the constraints sit inside the union
        for m in getattr(arg, "__metadata__", ()):
            constraints += getattr(m, "metadata", [m])
    for c in constraints:
        if getattr(c, "ge", None) is not None:
            low = f"[{c.ge}"
        if getattr(c, "gt", None) is not None:
            low = f"({c.gt}"
        if getattr(c, "le", None) is not None:
            high = f"{c.le}]"
        if getattr(c, "lt", None) is not None:
            high = f"{c.lt})"
    if high == "inf)":
        return None if low == "(-inf" else f">= {low[1:]}" if low[0] == "[" else f"> {low[1:]}"
    if low == "(-inf":
        return f"<= {high[:-1]}" if high[-1] == "]" else f"< {high[:-1]}"
    return f"in {low}, {high}"


def _raise_validation(e: ValidationError, file_layer=None, file_name: str | None = None) -> None:
    problems = []
    for err in e.errors():
        loc = tuple(err["loc"])
        key = ".".join(map(str, loc))
        # name the YAML file when the offending value is the file's (not a key=value override's)
        in_file = file_name and OmegaConf.select(file_layer, key, default=None, throw_on_missing=False)
        where = f" in {file_name}" if in_file is not None and in_file == err.get("input", in_file) else ""
        if err["type"] == "extra_forbidden":
            valid = _valid_keys(RunConfig, loc)
            problems.append(f"unknown config key {key!r}{where}" + (f"; valid keys here: {', '.join(valid)}" if valid else ""))
        elif err["type"] in BOUND_ERRORS and (bounds := _valid_range(RunConfig, loc)):
            problems.append(f"{key}{where}: must be {bounds} (got {err.get('input')!r})")
        else:
            problems.append(f"{key}{where}: {err['msg'].removeprefix('Value error, ')} (got {err.get('input')!r})")
    raise ConfigError("invalid configuration: " + "; ".join(problems)) from None


def _file_layer(path: str):
    """A ``config=FILE.yaml`` layer: a YAML mapping, with errors that name the file."""
    import yaml
    try:
        layer = OmegaConf.load(path)
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        line = f" at line {where.line + 1}" if where else ""
        raise ConfigError(f"config file {path} is not valid YAML{line}: {getattr(e, 'problem', None) or e}") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {path} is a directory; give a YAML file") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"config file {path} is not a text file (byte {e.start} is not UTF-8); give a YAML file") from None
    except (OmegaConfBaseException, ValueError, TypeError) as e:
        raise ConfigError(f"config file {path} is not a dimo configuration: {str(e).splitlines()[0]}") from None
    if not OmegaConf.is_dict(layer):
        raise ConfigError(f"config file {path} must hold a mapping of keys (distill: {{steps: 100}}), not a "
                          f"{type(OmegaConf.to_container(layer)).__name__}")
    return layer


def _split_overrides(overrides: list[str]) -> tuple[dict[str, str], list[str]]:
    special, rest = {}, []
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"expected key=value, got {item!r} (for example: plugins=toy distill.steps=100)")
        key, value = item.split("=", 1)
        if key in ("plugins", "preset", "config"):
            special[key] = value
        else:
            rest.append(item)
    return special, rest


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    value = OmegaConf.to_container(OmegaConf.create({"v": value}))["v"] if not isinstance(value, str) else value
    if isinstance(value, str):
        value = value.strip("[]").split(",") if value else []
    return [str(v).strip() for v in value if str(v).strip()]


# A preset value the user must give (OmegaConf's mandatory-value marker): `"path": REQUIRED`.
REQUIRED = "???"


def load_config(overrides: list[str] = (), registry=None, unused: tuple[str, ...] = ()) -> RunConfig:
    """Merge defaults, presets, an optional YAML file and key=value overrides; validate.

    ``unused``: dotted keys (or sections) the calling command does not read; a ``REQUIRED`` value under
    one of them stays ``"???"`` instead of stopping the command (building it later still refuses)."""
    from .registry import get_registry
    registry = registry or get_registry()
    special, rest = _split_overrides(list(overrides))
    try:
        layers = [OmegaConf.create(RunConfig().model_dump(mode="json"))]
        file_layer = _file_layer(special["config"]) if "config" in special else OmegaConf.create({})
        plugins = _as_list(special.get("plugins", file_layer.get("plugins")))
        presets = _as_list(special.get("preset", file_layer.get("preset")))
        installed = {p.name for p in registry.plugins()}
        for name in plugins:
            if name not in installed:
                raise ConfigError(f"unknown plugin {name!r}; installed plugins: {', '.join(sorted(installed))} "
                                  f"(pip install dimo-plugin-{name} to add one)")
        for name in plugins + presets:
            if name in registry.entries["presets"]:
                layers.append(_preset_layer(registry.get("presets", name).obj))
            elif name in presets:
                registry.get("presets", name)  # raises with the list of presets
        merged = OmegaConf.merge(*layers, file_layer)
        for item in rest:  # update, not merge: keys may index lists (eval.metrics[0].reference=...)
            key, value = item.split("=", 1)
            if key == "prompt":  # dimo sample's shorthand; the text is taken as is, never parsed as YAML
                OmegaConf.update(merged, "sample.prompt", [literal(value)])
            elif key == "student":  # shorthand for the student file of sample, eval and export
                for section_name in ("sample", "eval", "export"):
                    OmegaConf.update(merged, f"{section_name}.student", literal(value))
            else:
                OmegaConf.update(merged, key, command_line_value(value), merge=True)
        refuse_environment_lookups(merged)
        merged.plugins, merged.preset = plugins, presets
        missing = sorted(k for k in OmegaConf.missing_keys(merged) if not _is_interpolation(merged, k))
        for key in [k for k in missing if _under(k, unused)]:
            OmegaConf.update(merged, key, _UNGIVEN)  # resolvable, so interpolations of it resolve too
        missing = [k for k in missing if not _under(k, unused)]
        if missing:
            raise ConfigError(f"required value{'s' * (len(missing) > 1)} not given: {', '.join(missing)} (marked "
                              f"{REQUIRED!r} by preset {', '.join(plugins + presets) or 'defaults'}); pass "
                              f"{' '.join(k + '=...' for k in missing)}")
        data = _restore_required(OmegaConf.to_container(merged, resolve=True))
    except FileNotFoundError as e:
        raise ConfigError(f"config file not found: {e.filename}") from None
    except (OmegaConfBaseException, TypeError, ValueError) as e:
        raise ConfigError(f"bad configuration: {e}".splitlines()[0]) from None
    try:
        config = RunConfig.model_validate(data)
    except ValidationError as e:
        _raise_validation(e, file_layer, special.get("config"))
    check_components(config, registry)
    return config


_UNGIVEN = "\x00required"  # stands in for "???" while OmegaConf resolves interpolations


def _under(key: str, sections: tuple[str, ...]) -> bool:
    return any(key == s or key.startswith((s + ".", s + "[")) for s in sections)


def _restore_required(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _restore_required(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_restore_required(v) for v in value]
    return REQUIRED if value == _UNGIVEN else value


def literal(text: str) -> str:
    """``text`` as OmegaConf keeps it verbatim: ``${...}`` escaped, so nothing on the command line is
    interpolated (an ``${oc.env:SECRET}`` would otherwise be resolved into run.config.yaml)."""
    # a backslash is special only right before ${: double those, then escape the ${ itself
    return re.sub(r"(\\*)\$\{", lambda m: m.group(1) * 2 + "\\${", text)


def command_line_value(value: str):
    """A ``key=value`` value: YAML-typed (100, 1e-4, [1, 2], null), except that text holding ``${`` is
    kept literally, as text."""
    if "${" in value:
        return literal(value)
    return OmegaConf.from_dotlist([f"v={value}"]).v


ENV_LOOKUP = re.compile(r"(?<!\\)(?:\\\\)*\$\{\s*oc\.env\s*:")  # an unescaped ${oc.env:...}


def refuse_environment_lookups(cfg, prefix: str = "") -> None:
    """Presets and config files may point at other keys (${teacher.path}) but not read environment
    variables: the resolved value would be written into run.config.yaml, secrets included."""
    for key in (cfg.keys() if OmegaConf.is_dict(cfg) else range(len(cfg))):
        node = cfg._get_node(key)
        dotted = f"{prefix}{key}"
        if OmegaConf.is_interpolation(cfg, key) and ENV_LOOKUP.search(str(node._value())):
            raise ConfigError(f"{dotted}: {node._value()} reads an environment variable, which dimo does not do "
                              f"(it would be written into run.config.yaml); give the value itself: {dotted}=...")
        if OmegaConf.is_config(node) and not OmegaConf.is_interpolation(cfg, key):
            refuse_environment_lookups(node, f"{dotted}.")


def _is_interpolation(cfg, dotted: str) -> bool:
    """True for a value like ${teacher.path}: it is reported through the key it points to."""
    parent, _, key = dotted.rpartition(".")
    node = OmegaConf.select(cfg, parent, throw_on_missing=False) if parent else cfg
    return OmegaConf.is_interpolation(node, key)


def _preset_layer(preset: Any):
    if isinstance(preset, (str, Path)):
        return OmegaConf.load(preset)
    return OmegaConf.create(preset)


def section(config: RunConfig, dotted: str) -> Component | None:
    obj: Any = config
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def check_components(config: RunConfig, registry) -> None:
    """Every named component exists and gets only options its factory accepts."""
    for where, kind in COMPONENT_SECTIONS.items():
        comp = section(config, where)
        if comp is not None and comp.name is not None:
            options = {k: v for k, v in comp.model_dump().items() if k != "name"}
            registry.check_options(kind, comp.name, options, where)
    for i, metric in enumerate(config.eval.metrics):
        registry.check_options("metrics", metric.name, {k: v for k, v in metric.model_dump().items() if k != "name"},
                               f"eval.metrics[{i}]")
    if config.eval.writer is not None and config.eval.writer.name:
        w = config.eval.writer
        registry.check_options("writers", w.name, {k: v for k, v in w.model_dump().items() if k != "name"}, "eval.writer")
    if config.distill.batch_size % config.distill.grad_accum:
        raise ConfigError(f"distill.batch_size={config.distill.batch_size} is not divisible by "
                          f"distill.grad_accum={config.distill.grad_accum}")


def to_yaml(config: RunConfig) -> str:
    return OmegaConf.to_yaml(OmegaConf.create(config.model_dump(mode="json")))
