"""Config files: `ptflow train --config FILE` (YAML or TOML) and `--print_config`.

A config file is a flat mapping with the train flags' names as keys (hyphens or underscores),
values only: no code, no class names. Flags given on the command line override it. Relative
paths in it are relative to the current directory, as they are on the command line.

    # experiment.yaml                     # experiment.toml
    dataset: mnist                        dataset = "mnist"
    n_layers: 3                           n_layers = 3
    lr: 3.0e-4                            lr = 3.0e-4
    hidden_sizes: [500, 300]              hidden_sizes = [500, 300]

`--print_config` writes the resolved config in the same form, every key included, so feeding
it back with `--config` gives the same config. Values arrive typed by the file's own syntax and
are converted to the field's type here (YAML 1.1 reads `1e-3` as a string, for one), so
TrainConfig sees the same types as from the command line. PyYAML (the `config` extra) is
needed to read YAML; TOML is read with the standard library's tomllib (tomli on Python 3.10).
Writing needs neither.
"""

from __future__ import annotations

import dataclasses
import json
import math
import typing
from pathlib import Path

from ptflow.config import TrainConfig, describe_type, field_type
from ptflow.errors import PtflowError, UsageError, shown
from ptflow.sizes import MAX_CONFIG_BYTES, check_structure

FORMATS = {".yaml": "yaml", ".yml": "yaml", ".toml": "toml"}


def read(path: str) -> dict:
    """The train options in a YAML or TOML file, converted to TrainConfig's types."""
    kind = _format(path)
    try:
        if Path(path).is_dir():
            raise UsageError(f"{path}: is a folder; --config needs a YAML or TOML file")
        with open(path, "rb") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)
        text = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PtflowError(f"cannot read config file {path}: {getattr(exc, 'strerror', None) or exc}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise UsageError(f"{path}: larger than {MAX_CONFIG_BYTES:,} bytes; a config file is a flat mapping of options")
    try:
        values = _parse_yaml(text, path) if kind == "yaml" else _parse_toml(text, path)
        if values is None:
            return {}  # an empty YAML file
        check_structure(values, path)  # before anything walks it: YAML aliases can multiply a few lines
        if not isinstance(values, dict):
            raise UsageError(f"{path}: expected a mapping of train options (key: value), got {type(values).__name__}")
        return convert({str(k).replace("-", "_"): v for k, v in values.items()}, path)
    except RecursionError:  # the parsers recurse once per level of nesting
        raise UsageError(f"{path}: nested too deeply to be a config file") from None


def _format(path: str) -> str:
    kind = FORMATS.get(Path(path).suffix.lower())
    if kind is None:
        raise UsageError(f"{path}: a config file must end in .yaml, .yml or .toml")
    return kind


def _parse_yaml(text: str, path: str):
    try:
        import yaml
    except ImportError:
        raise PtflowError("reading YAML config files needs PyYAML: pip install 'ptflow[config]' "
                          "(or use a .toml file)") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise UsageError(f"{path}: malformed YAML{where}: {getattr(exc, 'problem', None) or exc}") from None


def _parse_toml(text: str, path: str) -> dict:
    try:
        import tomllib
    except ImportError:  # Python 3.10
        try:
            import tomli as tomllib
        except ImportError:
            raise PtflowError("reading TOML on Python 3.10 needs tomli: pip install 'ptflow[config]'") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path}: malformed TOML: {exc}") from None


def convert(values: dict, source: str) -> dict:
    """Each value as its TrainConfig field's type; unknown keys and wrong types are errors."""
    unknown = sorted(set(values) - {f.name for f in dataclasses.fields(TrainConfig)})
    if unknown:
        raise UsageError(f"{source}: unknown config key(s): {', '.join(unknown)}")
    return {key: _convert(key, value, source) for key, value in values.items()}


def _convert(key: str, value, source: str):
    kind, optional = field_type(key)
    if value is None:
        if optional:
            return None
        raise UsageError(f"{source}: {key} needs a value")
    try:
        return _as(kind, value)
    except (TypeError, ValueError):
        raise UsageError(f"{source}: {key} must be {describe_type(kind)}, got {shown(value)}") from None


def _as(kind, value):
    if isinstance(value, bool) and kind is not bool:  # True is an int to Python, not to a config
        raise TypeError
    if typing.get_origin(kind) is list:
        item = typing.get_args(kind)[0]
        items = [part.strip() for part in value.split(",") if part.strip()] if isinstance(value, str) else value
        if not isinstance(items, list):
            raise TypeError
        return [_as(item, v) for v in items]
    if kind is dict:  # --model_args: a mapping in the file, or its JSON text
        value = json.loads(value) if isinstance(value, str) else value
        if not isinstance(value, dict):
            raise TypeError
        return value
    if kind is bool:
        if not isinstance(value, bool):
            raise TypeError
        return value
    if kind is int:
        if isinstance(value, float) or (isinstance(value, str) and not value.strip().lstrip("+-").isdigit()):
            raise TypeError  # 2.5 is not an int, and int() would quietly truncate it
        return int(value)
    if kind is float:
        return float(value)  # also reads YAML 1.1's string "1e-3"
    if kind is str and isinstance(value, (str, int, float)):
        return str(value)  # a CSV --target given as a column index
    raise TypeError



def output_format(asked: str, config_file: str | None) -> str:
    """--print_config's format: as asked, else the --config file's, else YAML."""
    if asked in ("yaml", "toml"):
        return asked
    if asked != "auto":
        raise UsageError(f"--print_config takes yaml or toml, got {asked!r}")
    return _format(config_file) if config_file else "yaml"


def dump(values: dict, kind: str) -> str:
    """The config as a YAML or TOML file that `--config` reads back to the same values.

    Written by hand rather than by a library: a flat mapping of scalars and lists needs no more,
    and the output is then the same whichever libraries are installed.
    """
    separator = ": " if kind == "yaml" else " = "
    lines = [f"# ptflow train config; run it with: ptflow train --config FILE.{kind}"]
    for key, value in values.items():
        if value is None and kind == "toml":
            lines.append(f"# {key} = (not set)")  # TOML has no null; an absent key is the default, None
        else:
            lines.append(f"{key}{separator}{_value(value, kind)}")
    return "\n".join(lines) + "\n"


def _value(value, kind: str) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return _float(value, kind)
    if isinstance(value, list):
        return "[" + ", ".join(_value(v, kind) for v in value) + "]"
    if isinstance(value, dict):  # a flow mapping in YAML, an inline table in TOML
        separator = ": " if kind == "yaml" else " = "
        return "{" + ", ".join(f"{json.dumps(str(k))}{separator}{_value(v, kind)}" for k, v in value.items()) + "}"
    if isinstance(value, int):
        return str(value)
    return json.dumps(str(value), ensure_ascii=False)  # a JSON string is a valid YAML and TOML string


def _float(value: float, kind: str) -> str:
    if math.isnan(value):
        return ".nan" if kind == "yaml" else "nan"
    if math.isinf(value):
        sign = "-" if value < 0 else ""
        return f"{sign}.inf" if kind == "yaml" else f"{sign}inf"
    text = repr(value)
    if "e" in text and "." not in text:  # YAML 1.1 reads 1e-05 as a string; 1.0e-05 as a float
        mantissa, exponent = text.split("e")
        text = f"{mantissa}.0e{exponent}"
    return text
