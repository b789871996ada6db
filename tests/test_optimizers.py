"""ptflow's optimizers are torch.optim's, minus the torch._dynamo import: same numbers, same files."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from ptflow.training.optimizers import EagerAdam, EagerAdamW, EagerSGD

CASES = [
    (EagerAdam, torch.optim.Adam, {"fused": True, "weight_decay": 0.01}),
    (EagerAdam, torch.optim.Adam, {"foreach": True}),
    (EagerAdamW, torch.optim.AdamW, {"fused": True, "weight_decay": 0.05}),
    (EagerSGD, torch.optim.SGD, {"fused": True, "momentum": 0.9, "weight_decay": 1e-4}),
]


def _train(optimizer_cls, options: dict, steps: int = 12):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(12, 16), torch.nn.BatchNorm1d(16), torch.nn.ReLU(),
                                torch.nn.Linear(16, 3))
    optimizer = optimizer_cls(model.parameters(), lr=1e-2, **options)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=1e-2, total_steps=steps)
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(torch.randn(8, 12)), torch.randint(0, 3, (8,))).backward()
        optimizer.step()
        scheduler.step()
    return model, optimizer


def _assert_same_state(a: dict, b: dict) -> None:
    assert a["param_groups"] == b["param_groups"]
    assert a["state"].keys() == b["state"].keys()
    for index, slots in a["state"].items():
        assert slots.keys() == b["state"][index].keys()
        for name, value in slots.items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(b["state"][index][name])), (index, name)


@pytest.mark.parametrize("ours, theirs, options", CASES, ids=lambda c: getattr(c, "__name__", None))
def test_bit_identical_to_torch_optim(ours, theirs, options):
    model_a, opt_a = _train(ours, options)
    model_b, opt_b = _train(theirs, options)
    for (name, a), b in zip(model_a.state_dict().items(), model_b.state_dict().values()):
        assert torch.equal(a, b), name
    _assert_same_state(opt_a.state_dict(), opt_b.state_dict())


def test_state_dicts_load_across_both_ways():
    """Checkpoints written with torch.optim load into ptflow's optimizers and back."""
    _, stock = _train(torch.optim.Adam, {"fused": True})
    model, ours = _train(EagerAdam, {"fused": True}, steps=3)
    ours.load_state_dict(stock.state_dict())
    _assert_same_state(ours.state_dict(), stock.state_dict())
    again = torch.optim.Adam(model.parameters(), lr=1e-2, fused=True)
    again.load_state_dict(ours.state_dict())
    _assert_same_state(again.state_dict(), stock.state_dict())


def test_training_never_imports_dynamo(tmp_path):
    """The point of the module: a whole ptflow training run without the 1 s, ~75 MB dynamo import."""
    code = (
        "import sys\n"
        "from ptflow.cli import main\n"
        f"status = main(['train', '--dataset', 'digits', '--n_epochs', '2', '--scheduler', 'cosine',\n"
        f"               '--runs_dir', {str(tmp_path)!r}, '--verbose', '0'])\n"
        "assert status in (0, None), status\n"
        "print('torch._dynamo' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "False"
