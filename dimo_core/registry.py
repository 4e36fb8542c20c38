"""Plugin discovery (entry-point group ``dimo``) and the named registries plugins fill."""
from __future__ import annotations

import inspect
import types
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import pluggy
import pydantic

from . import hookspecs
from .errors import ConfigError, PluginError

ENTRY_POINT_GROUP = "dimo"
KINDS = ("teachers", "tokenizers", "conditions", "datasets", "divergences", "init_strategies",
         "samplers", "metrics", "writers", "exporters", "presets")


def singular(kind: str) -> str:
    """"init_strategies" -> "init strategy", "teachers" -> "teacher": for messages."""
    return "init strategy" if kind == "init_strategies" else kind[:-1]


@dataclass
class Entry:
    kind: str
    name: str
    obj: Any  # a factory ``f(ctx, **options)``, or a preset (dict or YAML path)
    plugin: str
    meta: dict = field(default_factory=dict)


@dataclass
class PluginInfo:
    name: str
    version: str
    registers: dict[str, list[str]]


class Registry:
    """Everything the installed plugins registered, by kind and name."""

    def __init__(self, pm: pluggy.PluginManager):
        self.pm = pm
        self.entries: dict[str, dict[str, Entry]] = {kind: {} for kind in KINDS}
        for kind in KINDS:
            caller = getattr(pm.hook, f"register_{kind}")
            for impl in caller.get_hookimpls():
                impl.function(register=self._registrar(kind, impl.plugin_name))

    def _registrar(self, kind: str, plugin: str) -> Callable:
        def register(name: str, obj: Any, **meta):
            if not isinstance(name, str) or not name:
                raise PluginError(f"plugin {plugin!r} registered a {singular(kind)} with an empty name")
            if name in self.entries[kind]:
                other = self.entries[kind][name].plugin
                raise PluginError(
                    f"{singular(kind)} {name!r} is registered by both plugin {other!r} and plugin {plugin!r}; "
                    f"uninstall one of them or rename the {singular(kind)} in one plugin")
            self.entries[kind][name] = Entry(kind, name, obj, plugin, meta)
        return register

    def get(self, kind: str, name: str) -> Entry:
        if kind not in self.entries:
            raise ConfigError(f"unknown component kind {kind!r}; kinds are {', '.join(KINDS)}")
        try:
            return self.entries[kind][name]
        except KeyError:
            choices = ", ".join(sorted(self.entries[kind])) or "(none installed)"
            raise ConfigError(f"unknown {singular(kind)} {name!r}; installed {kind}: {choices}") from None

    def names(self, kind: str) -> list[str]:
        return sorted(self.entries[kind])

    def check_options(self, kind: str, name: str, options: dict, where: str) -> None:
        """Refuse options the factory does not take, naming the key and the valid ones."""
        factory = self.get(kind, name).obj
        params = list(inspect.signature(factory).parameters.values())[1:]  # drop ctx
        if any(p.kind is p.VAR_KEYWORD for p in params):
            return
        valid = [p.name for p in params]
        for key in options:
            if key not in valid:
                raise ConfigError(f"unknown key {where}.{key} for {singular(kind)} {name!r}; "
                                  f"valid keys: {', '.join(['name'] + valid)}")

    def build(self, kind: str, spec: dict, ctx: Any, where: str | None = None) -> Any:
        """Build a component from ``{"name": ..., **options}``; options are type-checked."""
        spec = dict(spec)
        name = spec.pop("name", None)
        where = where or kind
        if name is None:
            raise ConfigError(f"{where}.name is not set; choose one of: {', '.join(self.names(kind))}")
        self.check_options(kind, name, spec, where)
        factory = pydantic.validate_call(config={"arbitrary_types_allowed": True})(self.get(kind, name).obj)
        try:
            return factory(ctx, **spec)
        except pydantic.ValidationError as e:
            problems = "; ".join(f"{where}.{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())
            raise ConfigError(f"bad options for {singular(kind)} {name!r}: {problems}") from None

    def plugins(self) -> list[PluginInfo]:
        versions = {}
        for plugin, dist in self.pm.list_plugin_distinfo():
            versions[self.pm.get_name(plugin)] = getattr(dist, "version", "?")
        infos = []
        for plugin_name, _ in sorted(self.pm.list_name_plugin(), key=lambda x: x[0]):
            registers = {kind: sorted(n for n, e in self.entries[kind].items() if e.plugin == plugin_name)
                         for kind in KINDS}
            infos.append(PluginInfo(plugin_name, versions.get(plugin_name, "unpackaged"),
                                    {k: v for k, v in registers.items() if v}))
        return infos


def plugin_manager(extra: Iterable[types.ModuleType | object] = (), entry_points: bool = True
                   ) -> pluggy.PluginManager:
    pm = pluggy.PluginManager(ENTRY_POINT_GROUP)
    pm.add_hookspecs(hookspecs)
    if entry_points:
        try:
            pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
        except Exception as e:  # an installed plugin that fails to import
            raise PluginError(f"a dimo plugin failed to load: {type(e).__name__}: {e}; "
                              f"fix or uninstall it (pip list | grep dimo)") from e
    for plugin in extra:
        pm.register(plugin, name=getattr(plugin, "__name__", None))
    try:
        pm.check_pending()  # a misspelled hook name fails here, loudly
    except pluggy.PluginValidationError as e:
        raise PluginError(f"{e}; the hooks a plugin may implement are: "
                          f"{', '.join('register_' + k for k in KINDS)}") from e
    return pm


_default: Registry | None = None


def get_registry(extra: Iterable = (), refresh: bool = False) -> Registry:
    """The registry of all installed plugins (cached), plus ``extra`` plugin modules."""
    global _default
    extra = list(extra)
    if extra:
        return Registry(plugin_manager(extra))
    if _default is None or refresh:
        _default = Registry(plugin_manager())
    return _default


def registry_with(name: str, module: types.ModuleType | object, entry_points: bool = True) -> Registry:
    """A fresh registry with ``module`` registered as plug-in ``name``, whether or not its entry point
    is installed: for a plug-in's tests and build scripts (``plugins=name`` then resolves). With
    ``entry_points=False`` only the core's built-ins and ``module`` are loaded."""
    pm = plugin_manager(entry_points=entry_points)
    installed = pm.get_plugin(name)
    if installed is not None and installed is not module:
        pm.unregister(installed)  # another copy of the plug-in (an installed version): the given one wins
    if pm.get_plugin(name) is None:
        pm.register(module, name=name)
    if pm.get_plugin("core") is None:
        from . import builtins
        pm.register(builtins, name="core")
    return Registry(pm)
