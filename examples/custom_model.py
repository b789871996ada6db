"""Train your own network with ptflow from Python: a class in, a run folder and a model out.

    python examples/custom_model.py                      # the 8x8 digits: offline, seconds
    python examples/custom_model.py --dataset mnist --n_epochs 5

Any nn.Module works. ptflow calls it as `WideMLP(input_shape=..., n_classes=..., **model_args)`,
trains it with cross-entropy on what it returns (logits here; log-probabilities work too), keeps
the epoch with the lowest validation loss and judges it once on the test split. To load the model
file from another program, put the class in a module of yours and pass "my_package.models:WideMLP"
(or register it as a plugin: examples/plugin/); a class defined in a script is found by name only
while that script runs.
"""

import argparse

import torch.nn as nn

import ptflow


class WideMLP(nn.Module):
    """One wide hidden layer with dropout: the simplest network that beats a linear model."""

    def __init__(self, input_shape: list[int], n_classes: int, width: int = 256, dropout_p: float = 0.2):
        super().__init__()
        n_inputs = 1
        for size in input_shape:
            n_inputs *= size
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(n_inputs, width), nn.ReLU(), nn.Dropout(dropout_p),
                                 nn.Linear(width, n_classes))

    def forward(self, x):
        # |x| = (batch, *input_shape) -> |logits| = (batch, n_classes)
        return self.net(x)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--n_epochs", type=int, default=20)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--runs_dir", default="runs")
    args = parser.parse_args()

    result = ptflow.train(dataset=args.dataset, model=WideMLP, model_args={"width": args.width},
                          n_epochs=args.n_epochs, batch_size=32, runs_dir=args.runs_dir, verbose=0)
    print(f"run folder: {result.run_dir}")
    print(f"best epoch {result.metrics['best_epoch']}, test accuracy {result.metrics['test_acc']:.4f}")

    model = result.model  # the saved file, loaded back: what `ptflow predict` would use
    x_test, y_test = model.test_split()
    accuracy = float((model.predict(x_test) == y_test).mean())
    print(f"test accuracy from the reloaded model: {accuracy:.4f}")


if __name__ == "__main__":
    main()
