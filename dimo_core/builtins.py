"""The core's own plugin: divergences, init strategies and samplers every modality shares."""
from __future__ import annotations

from typing import Literal

from .divergences import FKL, RKL, Jeffreys, f_divergence
from .errors import ConfigError
from .hookspecs import hookimpl
from .init import RandomMaskInit
from .sampling import AncestralSampler, ConfidenceSampler


@hookimpl
def register_divergences(register):
    register("fkl", lambda ctx: FKL())
    register("rkl", lambda ctx: RKL())

    def jeffreys(ctx, beta: float = 0.5):
        return Jeffreys(beta)
    register("jeffreys", jeffreys)

    def f_div(ctx, f: Literal["js", "tv", "kl", "reverse_kl"] = "js"):
        return f_divergence(f)
    register("f", f_div)
    register("js", lambda ctx: f_divergence("js"))
    register("tv", lambda ctx: f_divergence("tv"))


@hookimpl
def register_init_strategies(register):
    def random_mask(ctx, r_init: float | tuple[float, float] = 0.6):
        if isinstance(r_init, tuple) and not 0 <= r_init[0] <= r_init[1] <= 1 or \
                not isinstance(r_init, tuple) and not 0 <= r_init <= 1:
            raise ConfigError(f"distill.init.r_init must lie in [0, 1] (a ratio, or a range [a, b] with "
                              f"0 <= a <= b <= 1), got {list(r_init) if isinstance(r_init, tuple) else r_init}")
        return RandomMaskInit(r_init)
    register("random_mask", random_mask)


@hookimpl
def register_samplers(register):
    def confidence(ctx, schedule: str = "arccos", temperature: float = 1.0, final_temperature: float | None = None,
                   r_temp: float = 4.5, guidance_ramp: bool = True,
                   guidance_form: Literal["standard", "maskgit"] = "standard",
                   progress: Literal["to_last_step", "to_steps"] = "to_last_step",  # to_steps: pre-2023-11 MaskGit
                   counts: Literal["schedule", "maskgit_v1"] = "schedule"):          # maskgit_v1: its adap_sche
        return ConfidenceSampler(schedule, temperature, final_temperature, r_temp, guidance_ramp, guidance_form,
                                 progress, counts)
    register("confidence", confidence)

    def ancestral(ctx, schedule: str = "linear", temperature: float = 1.0,
                  guidance_form: Literal["standard", "maskgit"] = "standard"):
        return AncestralSampler(schedule, temperature, guidance_form)
    register("ancestral", ancestral)


@hookimpl
def register_exporters(register):
    from .export import SafetensorsExporter
    register("safetensors", lambda ctx: SafetensorsExporter(ctx))  # any teacher; the toy teacher's own format
