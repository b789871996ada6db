import torch

from ptflow.models import MLP, ConvNet, get_hidden_sizes, model_args


def test_hidden_sizes_follow_the_articles_arithmetic():
    assert get_hidden_sizes(784, 10, 5) == [630, 476, 322, 168]
    assert get_hidden_sizes(784, 10, 1) == []


def test_mlp_matches_the_articles_layout_and_state_dict_keys():
    args = model_args("mlp", (1, 28, 28), 10, n_layers=5)
    model = MLP(**args)
    keys = list(model.state_dict())
    assert keys[0] == "layers.0.block.0.weight"  # the article's ImageClassifier naming
    assert "layers.0.block.2.running_mean" in keys  # BatchNorm after LeakyReLU
    assert keys[-1] == "layers.4.bias"
    assert [m.out_features for m in model.modules() if isinstance(m, torch.nn.Linear)] == [630, 476, 322, 168, 10]


def test_dropout_replaces_batchnorm():
    model = MLP(**model_args("mlp", (64,), 3, n_layers=3, use_dropout=True, dropout_p=0.25))
    kinds = {type(m).__name__ for m in model.modules()}
    assert "Dropout" in kinds and "BatchNorm1d" not in kinds


def test_models_return_log_probabilities_of_the_right_shape():
    for model in (MLP(**model_args("mlp", (1, 8, 8), 4)), ConvNet(**model_args("cnn", (1, 8, 8), 4))):
        model.eval()
        out = model(torch.rand(5, 1, 8, 8))
        assert out.shape == (5, 4)
        torch.testing.assert_close(out.exp().sum(-1), torch.ones(5))
