"""The hooks a dimo plugin may implement.

Every hook receives a ``register(name, obj, **meta)`` callback; the core owns names and refuses
duplicates. A plugin is any module listed under the ``dimo`` entry-point group.
"""
import pluggy

hookspec = pluggy.HookspecMarker("dimo")
hookimpl = pluggy.HookimplMarker("dimo")


@hookspec
def register_teachers(register):
    """Register teacher factories: ``factory(ctx, **options) -> Teacher``."""


@hookspec
def register_tokenizers(register):
    """Register tokenizer factories: ``factory(ctx, **options) -> Tokenizer``."""


@hookspec
def register_conditions(register):
    """Register condition sources: ``factory(ctx, **options) -> Conditions``."""


@hookspec
def register_datasets(register):
    """Register training data for teachers: ``factory(ctx, **options) -> Dataset``."""


@hookspec
def register_divergences(register):
    """Register token-level divergences: ``factory(ctx, **options) -> Divergence``."""


@hookspec
def register_init_strategies(register):
    """Register initial distributions: ``factory(ctx, **options) -> InitStrategy``."""


@hookspec
def register_samplers(register):
    """Register multi-step teacher samplers: ``factory(ctx, **options) -> Sampler``."""


@hookspec
def register_metrics(register):
    """Register sample metrics: ``factory(ctx, **options) -> Metric``."""


@hookspec
def register_writers(register):
    """Register sample writers (grids, decoded text): ``factory(ctx, **options) -> Writer``."""


@hookspec
def register_exporters(register):
    """Register student exporters (``dimo export``): ``factory(ctx) -> Exporter``, called as
    ``exporter(student, folder) -> [paths]``. ``register(name, factory, teachers=[...], default=True)``:
    ``teachers`` lists the teacher names it writes for (none: any), ``default`` makes it the format
    ``dimo export`` picks for those teachers when ``export.format`` is not given."""


@hookspec
def register_presets(register):
    """Register configuration presets: ``register(name, dict_or_yaml_path)``."""
