"""The plugin manager and the component registry built on it.

``get_plugin_manager()`` loads every module listed under the ``asr_s2s``
entry-point group (the built-ins included), registers any extra plugins passed
in, and checks the hook implementations. ``Registry`` collects the components
the plugins contribute and builds them from config dicts such as
``{"name": "pblstm", "hidden_size": 320}``.

Environment variables:

* ``ASR_S2S_DISABLE_AUTOLOAD=1`` loads no entry points (only extra plugins).
* ``ASR_S2S_DISABLE_PLUGINS=a,b`` blocks the entry points named ``a`` and ``b``.
"""

from __future__ import annotations

import importlib.metadata
import inspect
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import pluggy

from asr_s2s import hookspecs
from asr_s2s.errors import ConfigError, PluginError, did_you_mean

ENTRY_POINT_GROUP = "asr_s2s"
DISABLE_AUTOLOAD_ENV = "ASR_S2S_DISABLE_AUTOLOAD"
DISABLE_PLUGINS_ENV = "ASR_S2S_DISABLE_PLUGINS"

Kind = Literal["encoder", "decoder", "lm", "scorer", "augmentation"]
KINDS: tuple[Kind, ...] = ("encoder", "decoder", "lm", "scorer", "augmentation")
_HOOK_OF_KIND = {
    "encoder": "asr_s2s_register_encoders",
    "decoder": "asr_s2s_register_decoders",
    "lm": "asr_s2s_register_lms",
    "scorer": "asr_s2s_register_scorers",
    "augmentation": "asr_s2s_register_augmentations",
}
# kinds built through a classmethod factory rather than the class itself
_FACTORY_OF_KIND = {"scorer": "from_model"}


def _blocked_from_env() -> set[str]:
    raw = os.environ.get(DISABLE_PLUGINS_ENV, "")
    return {name.strip() for name in raw.split(",") if name.strip()}


class PluginManager(pluggy.PluginManager):
    """A pluggy manager that remembers which distribution each plugin came from."""

    def __init__(self) -> None:
        super().__init__(hookspecs.PROJECT_NAME)
        self.distributions: dict[str, str] = {}
        self.blocked_by: dict[str, str] = {}  # blocked entry-point name -> the setting that blocked it

    def distribution_of(self, plugin: object) -> str:
        """'name version' of the plugin's distribution, or a note that it was registered in code."""
        return self.distributions.get(self.get_name(plugin) or "", "(registered in code)")


def get_plugin_manager(
    extra_plugins: Iterable[object] = (),
    disable: Iterable[str] = (),
    autoload: bool | None = None,
) -> PluginManager:
    """Build a plugin manager with the entry points of group ``asr_s2s`` loaded.

    :param extra_plugins: plugin objects (modules or instances) to register too.
    :param disable: entry-point names to block, in addition to ``ASR_S2S_DISABLE_PLUGINS``.
    :param autoload: load entry points; defaults to on unless ``ASR_S2S_DISABLE_AUTOLOAD`` is set.
    :raises PluginError: when a plugin fails to import or register; the message
        names the plugin and its distribution and how to disable it.
    """
    pm = PluginManager()
    pm.add_hookspecs(hookspecs)
    from_env = _blocked_from_env()
    for name in from_env:
        pm.blocked_by[name] = f"{DISABLE_PLUGINS_ENV}={os.environ.get(DISABLE_PLUGINS_ENV, '')}"
    for name in disable:
        pm.blocked_by[name] = f"--disable-plugin {name}"
    blocked = set(pm.blocked_by)
    for name in blocked:
        pm.set_blocked(name)
    if autoload is None:
        autoload = os.environ.get(DISABLE_AUTOLOAD_ENV, "") in ("", "0", "false")
    if autoload:
        _load_entry_points(pm, blocked)
    for plugin in extra_plugins:
        pm.register(plugin)
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        name = pm.get_name(exc.plugin) or repr(exc.plugin)
        raise PluginError(
            f"plugin {name!r} ({pm.distribution_of(exc.plugin)}) is invalid: {exc}. "
            f"Known hooks: {', '.join(sorted(h for h in dir(hookspecs) if h.startswith('asr_s2s_')))}. "
            f"Disable it with --disable-plugin {name}."
        ) from None
    return pm


def _load_entry_points(pm: PluginManager, blocked: set[str]) -> None:
    """Import and register each entry point, naming the culprit when one fails.

    pluggy's ``load_setuptools_entrypoints`` would do the same, but it cannot
    say which plugin of many raised; users need that to disable it.
    """
    for dist in importlib.metadata.distributions():
        for ep in dist.entry_points:
            if ep.group != ENTRY_POINT_GROUP or ep.name in blocked:
                continue
            if pm.get_plugin(ep.name) is not None or pm.is_blocked(ep.name):
                continue
            dist_label = f"{dist.metadata['name']} {dist.version}"
            try:
                plugin = ep.load()
                pm.register(plugin, name=ep.name)
            except Exception as exc:  # noqa: BLE001 - re-raised with context
                raise PluginError(
                    f"plugin {ep.name!r} from distribution {dist_label} failed to load: "
                    f"{type(exc).__name__}: {exc}. Disable it with --disable-plugin {ep.name} "
                    f"or {DISABLE_PLUGINS_ENV}={ep.name}."
                ) from exc
            pm.distributions[ep.name] = dist_label


@dataclass(frozen=True)
class ComponentInfo:
    """One registered component: what it is and where it came from."""

    kind: Kind
    name: str
    cls: type
    plugin: str
    distribution: str


class Registry:
    """Components by kind and name, collected from a plugin manager's hooks."""

    def __init__(self, pm: PluginManager | None = None) -> None:
        self.pm = pm if pm is not None else get_plugin_manager()
        self._components: dict[Kind, dict[str, ComponentInfo]] = {kind: {} for kind in KINDS}
        for kind in KINDS:
            hook = getattr(self.pm.hook, _HOOK_OF_KIND[kind])
            for impl in hook.get_hookimpls():
                plugin_name = self.pm.get_name(impl.plugin) or repr(impl.plugin)
                dist = self.pm.distribution_of(impl.plugin)
                try:
                    classes = impl.function() or []
                except Exception as exc:  # noqa: BLE001 - re-raised with context
                    raise PluginError(
                        f"plugin {plugin_name!r} ({dist}) raised in {_HOOK_OF_KIND[kind]}: "
                        f"{type(exc).__name__}: {exc}. Disable it with --disable-plugin {plugin_name}."
                    ) from exc
                for cls in classes:
                    self._add(ComponentInfo(kind, _component_name(cls, plugin_name), cls, plugin_name, dist))

    def _add(self, info: ComponentInfo) -> None:
        known = self._components[info.kind]
        if info.name in known:
            other = known[info.name]
            raise PluginError(
                f"two plugins register the {info.kind} {info.name!r}: "
                f"{other.plugin!r} ({other.distribution}) and {info.plugin!r} ({info.distribution}). "
                f"Disable one with --disable-plugin."
            )
        known[info.name] = info

    def names(self, kind: Kind) -> list[str]:
        """Sorted component names of one kind."""
        return sorted(self._components[kind])

    def components(self) -> list[ComponentInfo]:
        """Every registered component, sorted by kind then name."""
        return [self._components[k][n] for k in KINDS for n in self.names(k)]

    def get(self, kind: Kind, name: str) -> ComponentInfo:
        """Look a component up by name; an unknown name lists the known ones."""
        try:
            return self._components[kind][name]
        except KeyError:
            known = self.names(kind)
            blocked = getattr(self.pm, "blocked_by", {})
            if name in blocked:
                raise PluginError(
                    f"the {kind} {name!r} is not available: its plugin {name!r} is disabled by {blocked[name]}. "
                    f"Drop that setting to use it."
                ) from None
            note = ""
            if blocked:
                note = (" Disabled plugins, which may provide it: "
                        + ", ".join(f"{b!r} (by {how})" for b, how in sorted(blocked.items())) + ".")
            raise PluginError(
                f"unknown {kind} {name!r}.{did_you_mean(name, known)} "
                f"Known {kind}s: {', '.join(known) or '(none)'}.{note} Run `asr-s2s plugins` to list them."
            ) from None

    def origin(self, kind: Kind, name: str) -> str:
        """Where a component comes from, for messages: ``plugin 'x' from dist 1.0``."""
        info = self.get(kind, name)
        return f"plugin {info.plugin!r}, {info.distribution}"

    def factory(self, kind: Kind, name: str) -> Any:
        """What builds a component: its class, or for scorers its ``from_model`` classmethod."""
        cls = self.get(kind, name).cls
        return getattr(cls, _FACTORY_OF_KIND[kind]) if kind in _FACTORY_OF_KIND else cls

    def build(self, kind: Kind, config: Mapping[str, Any], where: str, **injected: Any) -> Any:
        """Build a component from ``{"name": ..., **params}``.

        :param where: the config path of ``config`` (e.g. ``model.encoder``) for errors.
        :param injected: arguments the caller supplies (e.g. ``input_dim``), not config keys.
        """
        if "name" not in config:
            raise PluginError(f"{where}: missing key 'name' (one of: {', '.join(self.names(kind))})")
        if not isinstance(config["name"], str):
            raise PluginError(f"{where}.name: expected a {kind} name, got {config['name']!r}")
        try:
            info = self.get(kind, config["name"])
        except PluginError as exc:
            raise PluginError(f"{where}: {exc}") from None
        params = {k: v for k, v in config.items() if k != "name"}
        factory = self.factory(kind, info.name)
        check_params(factory, params, where=f"{where} ({kind} {info.name!r})", injected=set(injected))
        params = _typed_params(factory, params, where)
        try:
            return factory(**injected, **params)
        except (TypeError, ValueError) as exc:  # a value the component refuses (an even conv_kernel, ...)
            shown = ", ".join(f"{k}={v!r}" for k, v in params.items()) or "no params"
            raise ConfigError(f"{where} ({kind} {info.name!r}): cannot build it with {shown}: {exc}") from exc


def _typed_params(factory: Any, params: dict[str, Any], where: str) -> dict[str, Any]:
    """``params`` checked against the types ``factory`` declares, so that ``hidden_size: "x"`` is an error
    naming ``WHERE.hidden_size`` rather than a traceback from inside the component."""
    import typing

    from asr_s2s.config import convert_value

    try:
        hints = typing.get_type_hints(factory.__init__ if isinstance(factory, type) else factory)
    except Exception:  # noqa: BLE001 - hints that do not resolve are not checked
        return params
    checked = {}
    for key, value in params.items():
        try:
            checked[key] = convert_value(hints[key], value, f"{where}.{key}") if key in hints else value
        except TypeError:  # a hint convert_value cannot check (Literal, Sequence[str], ...)
            checked[key] = value
    return checked


def accepted_params(factory: Any, injected: set[str] = frozenset()) -> list[str]:
    """The config keys ``factory`` takes: its keyword parameters, less those the toolkit supplies."""
    return [
        p.name
        for p in inspect.signature(factory).parameters.values()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in injected and p.name != "self"
    ]


def check_params(factory: Any, params: Mapping[str, Any], where: str, injected: set[str] = frozenset()) -> None:
    """Check ``params`` against ``factory``'s signature; a stray key is an error naming it."""
    signature = inspect.signature(factory)
    accepted = accepted_params(factory, injected)
    for key in params:
        if key in injected:
            raise ConfigKeyError(f"{where}: key {key!r} is set by the toolkit and cannot be configured")
        if key not in accepted:
            raise ConfigKeyError(
                f"{where}: unknown key {key!r}.{did_you_mean(key, accepted)} Accepted keys: {', '.join(accepted)}"
            )
    missing = [
        p.name
        for p in signature.parameters.values()
        if p.default is p.empty and p.name in accepted and p.name not in params
        and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    ]
    if missing:
        raise ConfigKeyError(f"{where}: missing required key(s): {', '.join(missing)}")


class ConfigKeyError(PluginError):
    """A component's config has an unknown or missing key."""


def _component_name(cls: type, plugin_name: str) -> str:
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise PluginError(f"plugin {plugin_name!r} registers {cls!r} without a string class attribute 'name'")
    return name
