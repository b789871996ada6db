"""The search space of `ptflow sweep`: `--param NAME=SPEC` parsed and checked against TrainConfig.

    lr=loguniform:1e-4:1e-2     a float, sampled on a log scale (an int field: an int on a log scale)
    dropout_p=float:0.1:0.5     a float, uniform
    n_layers=int:2:8            an int, LO and HI included; int:32:256:32 steps by 32
    use_dropout=choice:true,false
    channels=choice:16/32,32/64 one of several values; list values join their items with '/'
    model_args.width=int:32:128 one keyword argument of the model (--model_args), searched alone

Every spec is checked before anything trains: the name must be a TrainConfig field worth tuning,
the values must have that field's type, and the bounds and every choice must pass the config's
own validation. Pure Python (no optuna, no torch): the errors come at once.

`--space NAME` adds a named set of specs (SPACES), made for the run's config: a flag that fixes
one of its fields, or a --param that names one, takes that field out of it.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Any

from ptflow.config import HYPERPARAMETER, TrainConfig, field_type, fields_where
from ptflow.errors import UsageError

KINDS = ("float", "loguniform", "int", "choice")
MAX_FROZEN = 3  # --space finetune: at most this many head-only epochs, and never more than half the run


def finetune_space(base: TrainConfig) -> list[str]:
    """Fine-tuning a pretrained network: the learning rate (log scale: fine-tunes want 10-100x less
    than training from scratch), layer decay (1 is off; BEiT and timm use 0.65-0.75 for ViTs),
    head-only epochs, and the EMA off or one of three decays (averaging the last ~100, 1,000 or
    10,000 steps). Needs a model with a layer order (a timm model): config.py refuses layer decay
    for the built-in networks."""
    specs = ["lr=loguniform:1e-5:1e-2", "layer_decay=float:0.5:1.0", "ema=choice:0,0.99,0.999,0.9999"]
    frozen = min(MAX_FROZEN, base.n_epochs // 2)
    if frozen:  # a one-epoch run can freeze nothing: --freeze_backbone_epochs must stay below --n_epochs
        specs.append(f"freeze_backbone_epochs=int:0:{frozen}")
    return specs


SPACES = {"finetune": finetune_space}  # --space NAME: each makes its specs from the run's config



@dataclass(frozen=True, kw_only=True)  # bounds and step are all numbers: named, never in order
class ParamSpec:
    name: str  # the TrainConfig field, or model_args.KEY for one of the model's arguments
    kind: str  # one of KINDS
    low: float | int | None = None
    high: float | int | None = None
    step: int | None = None  # int only
    choices: tuple = ()  # choice only: the values as Optuna stores them (lists as "32/64")
    is_int: bool = False  # the field holds an int: loguniform samples ints
    is_list: bool = False  # the field holds a list of ints: choices are "a/b/c" strings

    def __str__(self) -> str:
        if self.kind == "choice":
            return f"{self.name}=choice:{','.join(_show(c) for c in self.choices)}"
        step = f":{self.step}" if self.step not in (None, 1) else ""
        return f"{self.name}={self.kind}:{self.low!r}:{self.high!r}{step}"

    def to_config(self, value):
        """A sampled value as the TrainConfig field wants it."""
        if self.is_list and value is not None:
            return [int(v) for v in value.split("/")]
        return value


MODEL_ARG = "model_args."


def config_values(base: dict, specs: list[ParamSpec], sampled: dict) -> dict:
    """base (a config dict) with the sampled values in: fields replaced, model_args.KEY merged into model_args."""
    values = dict(base)
    for spec in specs:
        if spec.name not in sampled:
            continue
        value = spec.to_config(sampled[spec.name])
        if spec.name.startswith(MODEL_ARG):
            values["model_args"] = {**values.get("model_args", {}), spec.name[len(MODEL_ARG):]: value}
        else:
            values[spec.name] = value
    return values


def parse_specs(texts: list[str], base: TrainConfig, fixed: set[str] = frozenset()) -> list[ParamSpec]:
    """Parse and check every --param; `fixed` holds the fields also given as flags (a contradiction)."""
    specs = [parse_spec(text, base) for text in texts]
    names = [s.name for s in specs]
    for name in names:
        if names.count(name) > 1:
            raise UsageError(f"--param {name} is given twice")
        if name in fixed:
            raise UsageError(f"--{name} is both fixed by a flag and searched by --param {name}=...")
    return specs


def parse_space(name: str | None, params: list[str], base: TrainConfig, fixed: set[str] = frozenset()
                ) -> list[ParamSpec]:
    """--space NAME's specs (without the fields fixed by a flag or named by a --param), then --param's."""
    specs = parse_specs(params, base, fixed)
    if name is None:
        return specs
    if name not in SPACES:
        raise UsageError(f"--space {name!r}: expected one of {', '.join(sorted(SPACES))}")
    taken = {spec.name for spec in specs} | set(fixed)
    texts = [text for text in SPACES[name](base) if _spec_name(text) not in taken]
    named = []
    for text in texts:
        try:
            named.append(parse_spec(text, base))
        except UsageError as exc:
            field = _spec_name(text)
            raise UsageError(f"--space {name}: {exc} (--{field} {getattr(TrainConfig(), field)} fixes that field "
                             f"and searches the rest)") from None
    return named + specs


def space_help() -> str:
    """The named spaces and the fields each searches (for a config of the defaults), for --help."""
    default = TrainConfig()
    return ", ".join(f"{name} ({', '.join(_spec_name(t) for t in make(default))})" for name, make in SPACES.items())


def _spec_name(text: str) -> str:
    return text.partition("=")[0].strip().replace("-", "_")


def parse_spec(text: str, base: TrainConfig) -> ParamSpec:
    _, eq, spec = text.partition("=")
    kind, colon, args = spec.partition(":")
    name = _spec_name(text)
    if not eq or not colon or kind not in KINDS:
        raise UsageError(f"--param {text!r}: expected NAME=KIND:VALUES with KIND one of {', '.join(KINDS)}, "
                         f"e.g. lr=loguniform:1e-4:1e-2")
    field_type = _field_type(name, text, kind, args)
    spec = _parse_choice(name, args, field_type, text) if kind == "choice" else \
        _parse_range(name, kind, args, field_type, text)
    for value in _extremes(spec):
        _check_value(spec, value, base, text)
    return spec


def _field_type(name: str, text: str, kind: str = "", args: str = "") -> type:
    """The field's value type: int, float, bool, str, or list (of ints); Optional is unwrapped.
    A model argument has no declared type: the spec's kind and values say it."""
    if name.startswith(MODEL_ARG):
        if not name[len(MODEL_ARG):].isidentifier():
            raise UsageError(f"--param {text!r}: expected model_args.KEY with KEY a keyword argument name")
        if kind == "int" or (kind == "loguniform" and all(p.strip().lstrip("+-").isdigit() for p in args.split(":"))):
            return int
        return float if kind in ("float", "loguniform") else _model_arg_choice_type(args)
    if name not in {f.name for f in dataclasses.fields(TrainConfig)}:
        raise UsageError(f"--param {text!r}: unknown hyperparameter {name!r} (tunable: "
                         f"{', '.join(sorted(tunable()))})")
    if name not in tunable():
        raise UsageError(f"--param {text!r}: {name} is not tunable (it changes the validation data "
                         f"or only where output goes)")
    kind, _ = field_type(name)
    return typing.get_origin(kind) or kind


def _model_arg_choice_type(args: str) -> type:
    """The type of a model argument's choices: the narrowest that reads every one of them."""
    words = [w.strip() for w in args.split(",")]
    for kind in (int, float):
        try:
            [kind(w) for w in words]
            return kind
        except ValueError:
            pass
    return bool if all(w.lower() in ("true", "false") for w in words) else str


def tunable() -> set[str]:
    """The hyperparameters: data fields and the seed decide which examples validate, so trials that
    changed them would be ranked on different validation sets; runtime fields only say where and
    how a run executes (config.py declares each field's role)."""
    # model_args.KEY is searched key by key; --calibrate acts after training, so trials could not differ by it
    return fields_where(role=HYPERPARAMETER) - {"model_args", "calibrate"}


def _parse_range(name: str, kind: str, args: str, field_type: type, text: str) -> ParamSpec:
    if field_type not in (int, float):
        raise UsageError(f"--param {text!r}: {name} is not numeric; use choice:A,B,...")
    if kind == "int" and field_type is float:
        raise UsageError(f"--param {text!r}: {name} is a float; use float:LO:HI or loguniform:LO:HI")
    if kind == "float" and field_type is int:
        raise UsageError(f"--param {text!r}: {name} is an integer; use int:LO:HI or loguniform:LO:HI")
    parts = args.split(":")
    is_int = field_type is int
    if len(parts) not in ((2, 3) if kind == "int" else (2,)):
        usage = "int:LO:HI or int:LO:HI:STEP" if kind == "int" else f"{kind}:LO:HI"
        raise UsageError(f"--param {text!r}: expected {usage}")
    try:
        low, high, *step = [(int if is_int else float)(p) for p in parts]
    except ValueError:
        raise UsageError(f"--param {text!r}: bounds must be {'integers' if is_int else 'numbers'}") from None
    step = step[0] if step else 1 if is_int else None
    if not low < high:
        raise UsageError(f"--param {text!r}: LO must be below HI")
    if kind == "loguniform" and low <= 0:
        raise UsageError(f"--param {text!r}: loguniform needs LO > 0")
    if step is not None and (step < 1 or (high - low) % step):
        raise UsageError(f"--param {text!r}: STEP must be >= 1 and divide HI - LO")
    return ParamSpec(name=name, kind=kind, low=low, high=high, step=step, is_int=is_int)


def _parse_choice(name: str, args: str, field_type: type, text: str) -> ParamSpec:
    values = [_parse_value(part.strip(), field_type, name, text) for part in args.split(",")]
    if len(set(values)) != len(values):
        raise UsageError(f"--param {text!r}: a choice is repeated")
    return ParamSpec(name=name, kind="choice", choices=tuple(values), is_list=field_type is list)


def _parse_value(word: str, field_type: type, name: str, text: str):
    """One choice as Optuna stores it: bool, int, float, str, None, or a list as 'a/b/c'."""
    if word.lower() == "none" and getattr(TrainConfig(), name, 0) is None:
        return None  # an optional field's "not set", e.g. hidden_sizes (then n_layers decides)
    try:
        if field_type is bool:
            return {"true": True, "false": False}[word.lower()]
        if field_type is list:
            return "/".join(str(int(item)) for item in word.split("/"))
        return field_type(word)
    except (KeyError, ValueError):
        kind = {bool: "true or false", int: "an integer", float: "a number",
                list: "integers joined by '/', e.g. 32/64"}.get(field_type, "a string")
        raise UsageError(f"--param {text!r}: {name} takes {kind}, got {word!r}") from None


def _extremes(spec: ParamSpec) -> list[Any]:
    return list(spec.choices) if spec.kind == "choice" else [spec.low, spec.high]


def _check_value(spec: ParamSpec, value, base: TrainConfig, text: str) -> None:
    """The config's own validation, for a bound or a choice: n_layers=int:0:4 fails here, not in trial 3."""
    try:
        TrainConfig.from_dict(config_values(base.to_dict(), [spec], {spec.name: value}))
    except UsageError as exc:
        raise UsageError(f"--param {text!r}: {exc}") from None


def _show(value) -> str:
    return "none" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
