"""torch.optim's optimizers, without the 1 s / 75 MB import of torch._dynamo in eager runs.

torch.optim wraps Optimizer.step, zero_grad, add_param_group, state_dict and load_state_dict in
guards for torch.compile whose first call imports torch._dynamo: about 1 s and 75 MB of RSS
(measured with torch 2.13 on CPU), paid by every training run though nothing is compiled.
The classes here run the very same methods without those guards: same kernels, same numbers,
same state_dict format. If a torch release drops the `__wrapped__` attribute this relies on,
the guarded methods are used as they are (correct, only heavier).
"""

from __future__ import annotations

import torch
from torch.optim import SGD, Adam, AdamW, Optimizer


def _unguarded(method):
    return getattr(method, "__wrapped__", method)


class _Eager:
    """Mixin placed before a torch.optim class: its guarded methods, called unguarded."""

    def add_param_group(self, param_group):
        return _unguarded(Optimizer.add_param_group)(self, param_group)

    def zero_grad(self, set_to_none: bool = True):
        return _unguarded(Optimizer.zero_grad)(self, set_to_none)

    def state_dict(self):
        return _unguarded(Optimizer.state_dict)(self)

    def load_state_dict(self, state_dict):
        return _unguarded(Optimizer.load_state_dict)(self, state_dict)

    def step(self, closure=None):
        base = next(c for c in type(self).__mro__ if c.__module__.startswith("torch.optim"))
        with torch.no_grad():  # what the guard around step does, minus the graph breaks
            return _unguarded(base.step)(self, closure)


class EagerAdam(_Eager, Adam):
    pass


class EagerAdamW(_Eager, AdamW):
    pass


class EagerSGD(_Eager, SGD):
    pass
