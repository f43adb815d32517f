"""Command-line flags derived from the settings dataclasses of pipeline/core/config.py.

A flag that sets a config value is one `Flag` line in its command's FLAGS table:

    Flag("training.epochs", "Training epochs.")          # --epochs, a float, default shown from TrainingConfig
    Flag("model.name", "Hub id or folder.", name="model") # the flag's name differs from the field's

The flag's name (the field's, with `-` for `_`), its type and the default shown in --help come from the dataclass
field; a bool field becomes `--x/--no-x`; any other type (e.g. `int | str`) is read as text and checked by
`load_config` like a TOML value. An unset flag leaves the config file's value (or the default) alone.
`Flag(..., negative="off")` also accepts `--no-x` for a field that is not a bool (e.g. "auto", "on" or "off").
`with_config(*flags)` adds `--config` and these flags to a command, and calls it with `cfg=` the loaded Config.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer

from whisper_tune.pipeline.core.config import Config, load_config

ConfigOpt = Annotated[Optional[Path], typer.Option("--config", "-c", help="TOML config file (see whisper-tune.example.toml).")]
WorkOpt = Annotated[Path, typer.Option("--work", help="Work folder: manifest.parquet and cache/ live here.")]


@dataclass(frozen=True)
class Flag:
    """One CLI flag that overrides one config field, e.g. Flag("training.epochs", "Training epochs.")."""

    key: str            # "section.field" of Config
    help: str
    name: str = ""      # flag name without dashes; "" = the field's name
    negative: Any = None  # for a non-bool field: also accept `--no-<flag>`, which sets this value (e.g. "off")

    @property
    def flag(self) -> str:
        return self.name or self.key.partition(".")[2].replace("_", "-")

    @property
    def param(self) -> str:
        return self.flag.replace("-", "_")

    @property
    def negative_param(self) -> str:
        return "no_" + self.param


MODEL = Flag("model.name", "Hub id, local transformers folder, CTranslate2/faster-whisper folder, or bundled:tiny.en.",
             name="model")


def config_field(key: str) -> tuple[Any, Any]:
    """(type, default) of a dotted Config key such as "training.epochs"."""
    section, _, name = key.partition(".")
    section_type = typing.get_type_hints(Config).get(section)
    fields = {f.name: f for f in dataclasses.fields(section_type)} if section_type else {}
    if name not in fields:
        raise KeyError(f"{key} is not a Config field (see pipeline/config.py)")
    field = fields[name]
    default = field.default if field.default is not dataclasses.MISSING else field.default_factory()
    return typing.get_type_hints(section_type)[name], default


def _toml(value: Any) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else repr(value).replace("'", '"')


def _options(flag: Flag) -> list[inspect.Parameter]:
    hint, default = config_field(flag.key)
    if hint not in (bool, int, float, str):
        hint = str  # unions such as `int | str` ("auto" or a number): load_config checks and converts the text
    shown = f"{flag.help} (config {flag.key}, default {_toml(default)})"
    decls = (f"--{flag.flag}/--no-{flag.flag}",) if hint is bool else (f"--{flag.flag}",)
    annotation = Annotated[Optional[hint], typer.Option(*decls, help=shown, show_default=False)]
    params = [inspect.Parameter(flag.param, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=annotation)]
    if flag.negative is not None and hint is not bool:
        negative = typer.Option(f"--no-{flag.flag}", help=f"Same as --{flag.flag} {flag.negative}.")
        params.append(inspect.Parameter(flag.negative_param, inspect.Parameter.KEYWORD_ONLY, default=False,
                                        annotation=Annotated[bool, negative]))
    return params


def _value(flag: Flag, kwargs: dict[str, Any], keep: bool) -> Any:
    """The flag's value from the command's keyword arguments (popped unless `keep`); None when not given."""
    value = kwargs[flag.param] if keep else kwargs.pop(flag.param)
    if flag.negative is not None and kwargs.pop(flag.negative_param, False):
        return flag.negative
    return value


def with_config(*flags: Flag) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Give a command `--config` and one option per Flag; it is called with `cfg=` (flags over the file).

    A command that needs a flag's raw value too (e.g. whether --model was given) names it as a parameter."""

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        own = inspect.signature(fn, eval_str=True).parameters
        flag_params = {f.param for f in flags}
        kept = [p for p in own.values() if p.name != "cfg" and p.name not in flag_params]
        config = inspect.Parameter("config", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=ConfigOpt)
        added = [p for f in flags for p in _options(f)]
        params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in kept] + [config] + added

        @functools.wraps(fn)
        def command(**kwargs: Any) -> Any:
            overrides = {f.key: _value(f, kwargs, keep=f.param in own) for f in flags}
            cfg = load_config(kwargs.pop("config"), overrides, {f.key: f"--{f.flag}" for f in flags})
            return fn(cfg=cfg, **kwargs)

        command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in params}
        return command

    return decorate
