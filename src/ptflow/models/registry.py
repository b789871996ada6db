"""Every model name ptflow can build: the built-in networks, plugins and import paths.

    --model mlp                      built in: a module of this folder (mlp.py), named in BUILTIN
    --model resnet_small             registered by an installed package under `ptflow.models`
    --model my_pkg.nets:WideNet      a class or factory imported from a module
    --model timm:resnet18            any timm architecture (timm_models.py): a name, not code

A model from outside is called as `factory(input_shape=[C, H, W] or [F], n_classes=N,
**model_args)` and returns an `nn.Module` that maps a float batch (N, *input_shape) to
(N, n_classes) scores: logits or log-probabilities, either works, because training uses
cross-entropy (log-softmax then NLL) and prediction softmax, and log-softmax leaves
log-probabilities unchanged; a model that ends in log-softmax may say so with a class attribute
`returns_log_probs = True`, and is then trained with NLL alone (as the built-ins are). The
model file records the name, where it came from (plugin package and version, or import path)
and the JSON arguments; never pickled code. See plugins.py for the trust rule on names read
from files.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable

from ptflow.errors import PtflowError, UsageError
from ptflow.models import timm_models
from ptflow.plugins import Source, describe, find, load
from ptflow.sizes import MAX_PARAMETERS

GROUP = "ptflow.models"
# The built-in networks: name -> the `MODEL` its module declares. Imported when a network is built
# or asked about, never to list the names (the modules import torch; `ptflow --help` must not).
BUILTIN = {"mlp": "ptflow.models.mlp:MODEL", "cnn": "ptflow.models.cnn:MODEL"}


@dataclass(frozen=True)
class BuiltinModel:
    """A built-in network as its module declares it, beside its class.

    `args(input_shape, n_classes, *, FLAG...)` makes the constructor's keyword arguments (JSON,
    stored in the model file) from the train flags: its keyword-only parameters are the flags the
    network reads, named as TrainConfig's fields, which hold their defaults and help (config.py),
    and a report shows a run only those. Its needs: BatchNorm layers (unless the bool flag
    `batch_norm_unless` is set), which cannot train on one-example batches, and image inputs
    (C, H, W). Whether it returns log-probabilities is its class's `returns_log_probs`.
    Called, it builds the network, as any model factory does.
    """

    network: Callable  # the nn.Module class
    args: Callable[..., dict]
    batch_norm: bool = False
    batch_norm_unless: str | None = None
    needs_images: bool = False

    def __call__(self, **args):
        return self.network(**args)

    def flags(self) -> set[str]:
        parameters = inspect.signature(self.args).parameters.values()
        return {p.name for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY}

    def uses_batch_norm(self, flags: dict) -> bool:
        return self.batch_norm and not (self.batch_norm_unless and flags.get(self.batch_norm_unless))


def source(name: str) -> Source:
    """Where model `name` comes from, without importing it (a UsageError if it is nowhere)."""
    if timm_models.is_timm(name):  # before import paths: "timm:NAME" has their form
        return timm_models.source(name)
    return find(name, BUILTIN, GROUP, "model", also=("timm:NAME",))


def builtin(name: str) -> BuiltinModel | None:
    """The declaration of built-in network `name` (importing its module, and torch); None for others."""
    if name not in BUILTIN:
        return None
    return load(source(name), True, None, "model")


def constructor_args(name: str, input_shape: tuple[int, ...], n_classes: int, model_args: dict,
                     flags: dict) -> dict:
    """The keyword arguments that build `name` for this data: JSON, stored in the model file.

    Built-in networks take their sizes from the train flags (`flags`: TrainConfig's values by
    name, of which each reads its own), which --model_args may override key by key; other models
    get input_shape and n_classes.
    """
    if name in BUILTIN:
        return {**builtin_args(name, input_shape, n_classes, flags), **model_args}
    if timm_models.is_timm(name):
        return timm_models.constructor_args(name, input_shape, n_classes, model_args)
    return {"input_shape": list(input_shape), "n_classes": n_classes, **model_args}


def builtin_args(name: str, input_shape: tuple[int, ...], n_classes: int, flags: dict) -> dict:
    """Constructor arguments of built-in network `name` from the train flags it reads."""
    model = builtin(name)
    if model is None:
        raise ValueError(f"not a built-in network: {name!r}")
    if model.needs_images and len(input_shape) != 3:
        raise UsageError(f"--model {name} needs image data (C, H, W); this dataset's inputs are {tuple(input_shape)}")
    return model.args(input_shape, n_classes, **{k: flags[k] for k in model.flags()})


def train_flags(name: str) -> set[str]:
    """The train flags network `name` is built from: none for a model that is not built in (--model_args)."""
    model = builtin(name)
    return model.flags() if model else set()


def model_flags() -> set[str]:
    """Every train flag that builds some built-in network (n_layers, channels...)."""
    return set().union(*map(train_flags, BUILTIN))


def flags_not_used_by(name: str) -> set[str]:
    """The train flags that build built-in networks but not model `name` (a cnn ignores n_layers;
    a plugin's model, built from --model_args, ignores them all)."""
    return model_flags() - train_flags(name)


def uses_batch_norm(name: str, flags: dict) -> bool:
    """Whether `name` built from these train flags has BatchNorm layers (known for built-ins only)."""
    model = builtin(name)
    return model is not None and model.uses_batch_norm(flags)


def batch_norm_note(name: str) -> str:
    """Which network has BatchNorm, and the flag that would take it out, for one-line errors."""
    unless = builtin(name).batch_norm_unless if name in BUILTIN else None
    return f"--model {name}" + (f" without --{unless}" if unless else "")


def build(name: str, args: dict, trust_code: bool = True, origin: str | None = None,
          expect: Callable | None = None):
    """The nn.Module for `name` built from `args`; origin names the file `name` was read from.

    The model is first built on the meta device (shapes, no memory): its size is checked against
    sizes.MAX_PARAMETERS, and expect(skeleton), if given, compares it with what a file holds,
    all before a byte of weights is allocated. A factory that cannot run on the meta device
    (rare, and only code the user trusts) skips these checks.
    """
    where = source(name)
    factory = timm_models.factory(name) if where.kind == "timm" else load(where, trust_code, origin, "model")
    skeleton = _on_meta(factory, args, name)
    if skeleton is not None:
        n = sum(t.numel() for t in (*skeleton.parameters(), *skeleton.buffers()))
        if n > MAX_PARAMETERS:
            error = PtflowError if origin else UsageError
            raise error(f"{origin + ': ' if origin else ''}model {name!r} with arguments {_brief(args)} has "
                        f"{n:,} parameters, more than the {MAX_PARAMETERS:,} ptflow builds")
        if expect is not None:
            expect(skeleton)
    return _construct(factory, args, name)


def _on_meta(factory: Callable, args: dict, name: str):
    import torch

    try:
        with torch.device("meta"):
            return _construct(factory, args, name)
    except Exception:  # noqa: BLE001 - code that needs real tensors, or bad arguments: the real build says which
        return None


def _construct(factory: Callable, args: dict, name: str):
    import torch.nn as nn

    try:
        model = factory(**args)
    except PtflowError:
        raise
    except (Exception, SystemExit) as exc:  # a keyword or a value the model does not take, or its own bug
        raise UsageError(f"model {name!r} cannot be built with arguments {sorted(args)}: {describe(exc)}") from None
    if not isinstance(model, nn.Module):
        raise PtflowError(f"model {name!r} returned {type(model).__name__}, not a torch.nn.Module")
    return model


def check_fits(model, x, n_classes: int, name: str, model_args: dict) -> None:
    """One forward pass of a couple of examples, before training: a model whose arguments contradict
    the data (an input size, a class count in --model_args) fails here in one line, not mid-epoch.

    x: (2, *input_shape) preprocessed examples on the model's device. In eval mode, without
    gradients and with the random state put back, the pass changes nothing: BatchNorm keeps its
    statistics, dropout and initial weights draw the same numbers as without it.
    """
    import torch

    what = f"model {name!r}" + (f" with --model_args {_brief(model_args)}" if model_args else "")
    data = f"inputs {tuple(x.shape[1:])}, {n_classes} classes"
    was_training = model.training
    model.eval()
    try:
        with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []), torch.no_grad():
            scores = model(x)
    except PtflowError:
        raise
    except (Exception, SystemExit) as exc:
        raise UsageError(f"{what} does not fit the data ({data}): {describe(exc)}") from None
    finally:
        model.train(was_training)
    if not isinstance(scores, torch.Tensor):
        raise UsageError(f"{what} returns {type(scores).__name__}, not a tensor of class scores")
    if tuple(scores.shape) != (len(x), n_classes):
        raise UsageError(f"{what} returns scores of shape {tuple(scores.shape)} for {len(x)} examples; the "
                         f"data ({data}) needs ({len(x)}, {n_classes}): one score per class")


def _brief(args: dict) -> str:
    import json

    text = json.dumps(args)
    return text if len(text) <= 80 else text[:77] + "..."
