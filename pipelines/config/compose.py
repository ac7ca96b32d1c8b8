"""Compose the Hydra config tree into a validated :class:`Config`.

Hydra composes on the client only: the packaged tree (``configs/`` in the repository, shipped
as ``pipelines.conf`` in the wheel) is searched after any ``--config-dir`` the user gives, and
overrides use Hydra's grammar. Every failure becomes one :class:`ConfigError` line naming the
key, what was expected, what was given and, when known, the file or override it came from.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from pipelines.config.schema import Config, register_schema
from pipelines.config.secrets import Secret, find_secrets, redact
from pipelines.config.validate import schema_at, unknown_key_error, validate
from pipelines.errors import ConfigError

__all__ = ["ComposedConfig", "compose_config", "packaged_config_dir"]


@dataclasses.dataclass(frozen=True)
class ComposedConfig:
    """The result of composition: the typed config plus what produced it."""

    config: Config
    container: dict[str, Any]
    raw: DictConfig
    choices: dict[str, str | None]
    search_path: tuple[Path, ...]
    overrides: tuple[str, ...]

    @functools.cached_property
    def secrets(self) -> list[Secret]:
        """The credentials in the config (see :mod:`pipelines.config.secrets`)."""
        return find_secrets(self.container)

    def to_yaml(self, *, resolve: bool = False) -> str:
        """The composed config as YAML, with interpolations resolved or kept, and every
        credential redacted (this text goes into run folders and terminals)."""
        if resolve:
            return OmegaConf.to_yaml(OmegaConf.create(redact(self.container, self.secrets)))
        raw = OmegaConf.to_container(self.raw, resolve=False)
        return OmegaConf.to_yaml(OmegaConf.create(redact(raw, self.secrets)))


def packaged_config_dir() -> Path:
    """The config tree shipped with kfbatch (``configs/`` of the repository)."""
    return Path(str(resources.files("pipelines.conf")))


def compose_config(
    overrides: Sequence[str] = (),
    *,
    config_dir: str | Path | None = None,
    config_name: str = "config",
) -> ComposedConfig:
    """Compose, resolve and validate the config tree.

    Args:
        overrides: Hydra overrides such as ``trainer.epochs=3`` or ``resources=gpu``.
        config_dir: A user config tree searched before the packaged one.
        config_name: The primary config file (without ``.yaml``).

    Raises:
        ConfigError: the config is invalid; the message is one line.
    """
    search_path = _search_path(config_dir)
    overrides = tuple(overrides)
    raw: DictConfig | None = None
    try:
        raw, choices = _hydra_compose(search_path, config_name, overrides)
        if missing := sorted(OmegaConf.missing_keys(raw)):
            raise ConfigError(missing[0], "a value (the key is required and has no default)")
        container = OmegaConf.to_container(raw, resolve=True, throw_on_missing=True)
        validate(container)
        config = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(Config), container))
    except ConfigError as error:
        error = _at_interpolation_source(error, raw)
        raise error.with_source(_source_of(error.key, overrides, choices, search_path)) from None
    except Exception as error:  # Hydra and OmegaConf raise many types; all mean "bad config".
        raise _translate(error, overrides, search_path) from None
    return ComposedConfig(config, container, raw, choices, search_path, overrides)


def _at_interpolation_source(error: ConfigError, raw: DictConfig | None) -> ConfigError:
    """The error moved to the key a value was interpolated from (``etl.scoring_shards`` is
    ``${inference.shards}`` unless set): that is the key the user set."""
    if raw is None:
        return error
    node: Any = OmegaConf.to_container(raw, resolve=False)
    for part in error.key.split("."):
        if not isinstance(node, dict) or part not in node:
            return error
        node = node[part]
    match = re.fullmatch(r"\$\{([\w.]+)\}", node) if isinstance(node, str) else None
    if match is None:
        return error
    return ConfigError(match.group(1), error.expected, error.given)


def _search_path(config_dir: str | Path | None) -> tuple[Path, ...]:
    packaged = packaged_config_dir()
    if config_dir is None:
        return (packaged,)
    user = Path(config_dir).expanduser().resolve()
    if not user.is_dir():
        raise ConfigError("--config-dir", "an existing directory", str(config_dir))
    return (user, packaged)


def _hydra_compose(
    search_path: tuple[Path, ...], config_name: str, overrides: tuple[str, ...]
) -> tuple[DictConfig, dict[str, str | None]]:
    from hydra import compose
    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import create_config_search_path
    from hydra.core.config_search_path import SearchPathQuery
    from hydra.core.global_hydra import GlobalHydra

    register_schema()
    *users, packaged = search_path
    csp = create_config_search_path(f"file://{packaged}")
    for user in users:
        csp.prepend("kfbatch-config-dir", f"file://{user}", anchor=SearchPathQuery(provider="main"))
    GlobalHydra.instance().clear()
    Hydra.create_main_hydra2(task_name="kfbatch", config_search_path=csp)
    try:
        cfg = compose(config_name, overrides=list(overrides), return_hydra_config=True)
    finally:
        GlobalHydra.instance().clear()
    choices = {
        group: choice
        for group, choice in cfg.hydra.runtime.choices.items()
        if not group.startswith("hydra/")
    }
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg, choices


def _source_of(
    key: str,
    overrides: tuple[str, ...],
    choices: dict[str, str | None],
    search_path: tuple[Path, ...],
) -> str:
    """Name the override or the group file a key's value came from, as far as we can tell."""
    if override := _matching_override(key, overrides, search_path):
        return f"override '{override}'"
    group = key.split(".", 1)[0]
    file = _group_file(group, choices.get(group), search_path)
    if file is None:
        file = _group_file("", "config", search_path)
    return str(file) if file else ""


def _group_file(group: str, choice: str | None, search_path: tuple[Path, ...]) -> Path | None:
    if not choice:
        return None
    for root in search_path:
        candidate = root / group / f"{choice}.yaml"
        if candidate.is_file():
            return candidate
    return None


def _translate(
    error: Exception, overrides: tuple[str, ...], search_path: tuple[Path, ...]
) -> ConfigError:
    """Turn a Hydra/OmegaConf exception into one :class:`ConfigError` line."""
    root = _outermost_omegaconf(error)
    text = str(error)
    if missing_group := re.search(r"Could not find '([^']+)/([^']+)'", text):
        group, choice = missing_group.groups()
        options = re.findall(r"^\t(\S+)$", text.split("Available options", 1)[-1], re.M)
        expected = f"one of {', '.join(options)}" if options else f"an existing {group} option"
        where = f"files in {group}/ of " + ", ".join(str(p) for p in search_path)
        return ConfigError(group, expected, choice, source=where)
    if "Cannot find primary config" in text:
        return ConfigError("config", "a primary config file in the config search path", None)
    if type(error).__name__ == "OverrideParseException":
        bad = re.search(r"Error parsing override '([^']*)'", text)
        given = bad.group(1) if bad else text.splitlines()[0]
        return ConfigError("override", "key=value in Hydra's override grammar", given)
    if root is not None:
        key = getattr(root, "full_key", None) or "config"
        message = str(root).splitlines()[0]
        parent, _, leaf = key.rpartition(".")
        if type(root).__name__ in ("ConfigKeyError", "ConfigAttributeError"):
            if cls := schema_at(parent):
                unknown = unknown_key_error(cls, f"{parent}." if parent else "", leaf)
                expected, given = unknown.expected, unknown.given
            else:
                expected, given = f"an existing key (add a new one with +{key}=...)", leaf
        else:
            expected, given = _describe_validation(message)
        in_file = re.match(r"In '([^']+)'", text)
        source = ""
        if in_file:
            group, _, choice = in_file.group(1).rpartition("/")
            found = _group_file(group, choice, search_path)
            source = str(found) if found else in_file.group(1)
        if override := _matching_override(key, overrides, search_path):
            source = f"override '{override}'"
            name, _, value = override.lstrip("+~").partition("=")
            given = value if name == key and given == type(value).__name__ else given
        return ConfigError(key, expected, given, source=source)
    return ConfigError("config", "a composable config tree", text.splitlines()[0])


def _outermost_omegaconf(error: BaseException) -> OmegaConfBaseException | None:
    current: BaseException | None = error
    while current is not None and not isinstance(current, OmegaConfBaseException):
        current = current.__cause__ or current.__context__
    return current


def _describe_validation(message: str) -> tuple[str, object]:
    """Split OmegaConf's 'Value 'x' of type 'str' could not be converted to Integer'."""
    if m := re.match(r"Value '(.*)' of type '(\w+)' could not be converted to (\w+)", message):
        return f"{'an' if m.group(3)[0] in 'AEIOU' else 'a'} {m.group(3).lower()}", m.group(1)
    if m := re.match(r"Invalid value assigned: (\w+) is not a ListConfig", message):
        return "a list such as [a,b]", m.group(1)
    if m := re.match(r"Cannot convert '(\w+)' to string: '(.*)'", message):
        return "a string", m.group(2)
    if m := re.match(r"Invalid type assigned: (\w+) is not a subclass of (\w+)", message):
        return f"a mapping of {m.group(2)} fields", m.group(1)
    return "a value of the declared type", message


def _matching_override(
    key: str, overrides: tuple[str, ...], search_path: tuple[Path, ...]
) -> str | None:
    """The last override that sets ``key``, a parent or a child (group choices excluded)."""
    for override in reversed(overrides):
        name = override.lstrip("+~").split("=", 1)[0]
        if any((root / name).is_dir() for root in search_path):
            continue
        if name == key or key.startswith((name + ".", name + "[")) or name.startswith(key + "."):
            return override
    return None
