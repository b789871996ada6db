import torch

from ptflow.config import TrainConfig
from ptflow.models.cnn import ConvNet
from ptflow.models.mlp import MLP, get_hidden_sizes
from ptflow.models.networks import Preprocess
from ptflow.models.registry import builtin_args


def flags(**given) -> dict:
    """The train flags as TrainConfig's defaults (the one place they are written), with `given` over them."""
    return {**TrainConfig().to_dict(), **given}


def test_hidden_sizes_follow_the_articles_arithmetic():
    assert get_hidden_sizes(784, 10, 5) == [630, 476, 322, 168]
    assert get_hidden_sizes(784, 10, 1) == []


def test_mlp_matches_the_articles_layout_and_state_dict_keys():
    args = builtin_args("mlp", (1, 28, 28), 10, flags(n_layers=5))
    model = MLP(**args)
    keys = list(model.state_dict())
    assert keys[0] == "layers.0.block.0.weight"  # the article's ImageClassifier naming
    assert "layers.0.block.2.running_mean" in keys  # BatchNorm after LeakyReLU
    assert keys[-1] == "layers.4.bias"
    assert [m.out_features for m in model.modules() if isinstance(m, torch.nn.Linear)] == [630, 476, 322, 168, 10]


def test_dropout_replaces_batchnorm():
    model = MLP(**builtin_args("mlp", (64,), 3, flags(n_layers=3, use_dropout=True, dropout_p=0.25)))
    kinds = {type(m).__name__ for m in model.modules()}
    assert "Dropout" in kinds and "BatchNorm1d" not in kinds


def test_models_return_log_probabilities_of_the_right_shape():
    for model in (MLP(**builtin_args("mlp", (1, 8, 8), 4, flags())),
                  ConvNet(**builtin_args("cnn", (1, 8, 8), 4, flags()))):
        model.eval()
        out = model(torch.rand(5, 1, 8, 8))
        assert out.shape == (5, 4)
        torch.testing.assert_close(out.exp().sum(-1), torch.ones(5))


def test_in_place_activation_gives_the_same_numbers_as_the_plain_one():
    torch.manual_seed(0)
    model = MLP(20, 3, [16, 8])
    plain = MLP(20, 3, [16, 8])
    plain.load_state_dict(model.state_dict())
    for block in plain.layers[:-1]:
        block.block[1] = torch.nn.LeakyReLU()  # what the article's block uses
    x, y = torch.randn(6, 20), torch.tensor([0, 1, 2, 0, 1, 2])
    for net in (model, plain):
        torch.nn.functional.nll_loss(net(x), y).backward()
    assert torch.equal(model(x), plain(x))
    for (name, a), b in zip(model.named_parameters(), plain.parameters()):
        assert torch.equal(a.grad, b.grad), name


def test_preprocess_never_changes_its_input():
    pixels = torch.randint(0, 256, (4, 1, 5, 5), dtype=torch.uint8)
    floats = pixels.float() / 255
    kept_pixels, kept_floats = pixels.clone(), floats.clone()
    prep = Preprocess((1, 5, 5), 1 / 255, mean=[0.1], std=[0.3])
    expected = (floats - 0.1) / 0.3
    assert torch.allclose(prep(pixels), expected, atol=1e-6)
    assert torch.allclose(prep(floats), expected, atol=1e-6)
    assert torch.equal(pixels, kept_pixels) and torch.equal(floats, kept_floats)
