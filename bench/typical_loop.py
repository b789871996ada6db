"""A baseline for bench/train_bench.py: the article's model and hyperparameters, trained the way
most PyTorch code does it (float32 tensors, a DataLoader over a TensorDataset, loss.item() every
step, best-by-validation restore). Prints epoch lines and the test accuracy like the others.
"""

import argparse
import copy
import gzip
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from ptflow.models.mlp import MLP, get_hidden_sizes


def load(folder: Path, prefix: str) -> tuple[torch.Tensor, torch.Tensor]:
    with gzip.open(folder / f"{prefix}-images-idx3-ubyte.gz") as f:
        x = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 784)
    with gzip.open(folder / f"{prefix}-labels-idx1-ubyte.gz") as f:
        y = np.frombuffer(f.read(), np.uint8, offset=8)
    return torch.from_numpy(x.astype(np.float32) / 255), torch.from_numpy(y.astype(np.int64))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data_dir", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    x, y = load(args.data_dir, "train")
    x_test, y_test = load(args.data_dir, "t10k")
    order = torch.randperm(len(x))
    train, valid = order[:48000], order[48000:]
    train_loader = DataLoader(TensorDataset(x[train], y[train]), batch_size=256, shuffle=True)
    valid_loader = DataLoader(TensorDataset(x[valid], y[valid]), batch_size=256)
    model = MLP(784, 10, get_hidden_sizes(784, 10, 5)).to(device)
    optimizer = torch.optim.Adam(model.parameters())
    best_loss, best_state = float("inf"), None
    print("training", flush=True)
    for epoch in range(args.epochs):
        model.train()
        train_loss = 0.0
        for xb, yb in train_loader:
            xb, yb = xb.to(device), yb.to(device)
            loss = F.nll_loss(model(xb), yb)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            train_loss += loss.item() * len(yb)
        model.eval()
        valid_loss = 0.0
        with torch.no_grad():
            for xb, yb in valid_loader:
                xb, yb = xb.to(device), yb.to(device)
                valid_loss += F.nll_loss(model(xb), yb, reduction="sum").item()
        valid_loss /= len(valid)
        if valid_loss <= best_loss:
            best_loss, best_state = valid_loss, copy.deepcopy(model.state_dict())
        print(f"Epoch({epoch + 1}/{args.epochs}): train_loss={train_loss / len(train):.4e}  "
              f"valid_loss={valid_loss:.4e}", flush=True)
    model.load_state_dict(best_state)
    model.eval()
    with torch.no_grad():
        accuracy = (model(x_test.to(device)).argmax(-1) == y_test.to(device)).float().mean().item()
    print(f"Test accuracy: {accuracy:.4f}")


if __name__ == "__main__":
    main()
