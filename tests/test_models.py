from __future__ import annotations

import re

import pytest
import torch
from omegaconf import OmegaConf

from cifar.config import compose
from cifar.errors import ConfigError
from cifar.models import (
    _Residual, airbench, build_model, check_fits, count_parameters, relu_before_pool, resnet9, simplecnn, summarize,
    whiten_first_conv,
)


def test_resnet18_has_the_cifar_stem_and_parameter_count():
    model = build_model(OmegaConf.create({"name": "resnet18"}))
    assert count_parameters(model) == 11_173_962
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert isinstance(model.maxpool, torch.nn.Identity)
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_simplecnn_follows_its_config():
    cfg = OmegaConf.create(
        {"name": "simplecnn", "channels": [32, 64, 128], "hidden": 256, "dropout": 0.5, "batch_norm": True}
    )
    model = build_model(cfg)
    convs = [m for m in model if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [32, 64, 128]
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in model) == 3
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    no_bn = build_model(OmegaConf.merge(cfg, {"batch_norm": False, "channels": [16, 32]}))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in no_bn)
    assert no_bn(torch.zeros(1, 3, 32, 32)).shape == (1, 10)


def test_resnet9_is_the_dawnbench_net_with_configurable_widths():
    model = build_model(OmegaConf.create({"name": "resnet9", "channels": [64, 128, 256, 512]}))
    assert count_parameters(model) == 6_573_120  # the myrtle.ai ResNet-9's
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 128, 128, 128, 256, 512, 512, 512]
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    narrow = resnet9([4, 8, 16, 32])
    assert [c.out_channels for c in narrow.modules() if isinstance(c, torch.nn.Conv2d)] == [4, 8, 8, 8, 16, 32, 32, 32]


def test_airbench_is_airbench94s_net_with_configurable_widths():
    model = build_model(OmegaConf.create({"name": "airbench", "widths": [64, 256, 256]}))
    assert count_parameters(model) == 1_972_792  # airbench94's 1.97M
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size) for c in convs] == [(24, (2, 2))] + [
        (width, (3, 3)) for width in (64, 64, 256, 256, 256, 256)]
    assert torch.equal(convs[0].bias, torch.zeros(24))
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(norms) == 6 and all(not n.weight.requires_grad and n.bias.requires_grad for n in norms)
    assert all(n.momentum == 0.4 and n.eps == 1e-12 for n in norms)
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    assert count_parameters(airbench([8, 16, 16])) < count_parameters(model)


def test_airbench_convolutions_start_as_the_identity_on_their_inputs():
    model = airbench([8, 16, 16])
    with torch.no_grad():
        for conv in [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)][1:]:
            x = torch.randn(2, conv.in_channels, 7, 7)
            kept = min(conv.in_channels, conv.out_channels)  # the first group's 8 filters: 8 of the 24 inputs
            assert torch.allclose(conv(x)[:, :kept], x[:, :kept], atol=1e-6)
            assert conv.out_channels <= conv.in_channels or conv(x)[:, kept:].abs().sum() > 0  # random, not zeroed


def test_resnet9_residual_blocks_add_their_input():
    model = resnet9([4, 8, 16, 32]).eval()
    residuals = [m for m in model if isinstance(m, _Residual)]
    assert len(residuals) == 2
    x = torch.randn(2, 8, 16, 16)
    with torch.no_grad():
        for conv in residuals[0]:
            if isinstance(conv, torch.nn.Conv2d):
                conv.weight.zero_()  # the block's branch then outputs relu(BN(0)) = relu(bias) = 0
        assert torch.equal(residuals[0](x), x)


def test_summary_counts_the_flops_of_the_convolutions_and_linear_layers():
    cfg = OmegaConf.create({"name": "simplecnn", "channels": [8], "hidden": 4, "dropout": 0.0, "batch_norm": False})
    model = build_model(cfg)
    conv = 32 * 32 * 8 * (3 * 3 * 3 + 1)  # multiply-adds per output, bias included
    linear = (8 * 16 * 16 + 1) * 4 + (4 + 1) * 10
    summary = summarize(model)
    assert summary.flops_per_image == 2 * (conv + linear)
    assert summary.parameters == count_parameters(model)
    assert "Conv2d" in summary.table and "Linear" in summary.table
    assert model.training  # counting does not leave the model in eval mode


def test_counting_flops_draws_nothing_from_the_global_rng():
    model = build_model(OmegaConf.create({"name": "resnet18"}))
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    summarize(model)
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize("cfg", [
    {"name": "simplecnn", "channels": [8, 16], "hidden": 16, "dropout": 0.0, "batch_norm": True},
    {"name": "simplecnn", "channels": [8, 16], "hidden": 16, "dropout": 0.0, "batch_norm": False},
    {"name": "resnet9", "channels": [4, 8, 16, 32]},
])
def test_pooling_before_relu_gives_the_outputs_and_gradients_of_the_lab_order(cfg):
    torch.manual_seed(0)
    model = build_model(OmegaConf.create(cfg))
    pools = [i for i, m in enumerate(model) if isinstance(m, torch.nn.MaxPool2d)]
    assert pools and all(isinstance(model[i + 1], torch.nn.ReLU) for i in pools)
    lab = relu_before_pool(model)
    assert [type(m) for m in lab] != [type(m) for m in model]
    assert not set(map(id, lab.parameters())) & set(map(id, model.parameters()))  # its own gradients below
    lab.load_state_dict(model.state_dict())  # the same state dict keys
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    for net in (model, lab):
        torch.nn.functional.cross_entropy(net(x), y).backward()
    with torch.no_grad():
        assert torch.equal(model(x), lab(x))
    for ours, theirs in zip(model.parameters(), lab.parameters()):
        assert torch.equal(ours.grad, theirs.grad)


def test_a_max_pool_before_batchnorm_keeps_its_place():
    model = airbench([8, 16, 16])
    assert [type(m) for m in relu_before_pool(model)] == [type(m) for m in model]


def _correlated_images(n: int) -> torch.Tensor:
    """Images whose channels and neighbouring pixels are correlated, as in photographs."""
    fields = torch.randn(n, 3, 12, 12, generator=torch.Generator().manual_seed(0))
    mixing = torch.tensor([[1.0, 0.8, 0.2], [0.0, 0.5, 0.3], [0.0, 0.0, 0.1]])
    return torch.einsum("ij,njhw->nihw", mixing, torch.nn.functional.avg_pool2d(fields, 3, 1, 1))


@pytest.mark.parametrize(("model", "pairs"), [
    (simplecnn([32, 8], 16, 0.0, True), 16),  # 32 filters: the 16 directions of largest variance
    (resnet9([64, 8, 8, 8]), 27),  # 64 filters: all 27 directions of a 3x3x3 patch, 10 filters left as they were
    (airbench([8, 8, 8]), 12),  # 24 2x2 filters: all 12 directions of a 2x2x3 patch
])
def test_whitened_first_conv_responds_to_the_patches_with_unit_uncorrelated_outputs_and_is_frozen(model, pairs):
    images = _correlated_images(200)
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    initial = conv.weight.detach().clone()
    whiten_first_conv(model, images, eps=0.0)
    responses = torch.nn.functional.conv2d(images.double(), conv.weight[:pairs].double())  # patches without padding
    responses = responses.transpose(0, 1).reshape(pairs, -1)
    assert torch.allclose(responses @ responses.T / responses.shape[1], torch.eye(pairs, dtype=torch.double),
                          atol=1e-3)
    norms = conv.weight[:pairs].flatten(1).norm(dim=1)  # 1 / sqrt(variance): the most varying direction first
    assert (norms[1:] > norms[:-1]).all()
    assert torch.equal(conv.weight[pairs : 2 * pairs], -conv.weight[:pairs])
    assert torch.equal(conv.weight[2 * pairs :], initial[2 * pairs :])
    assert not conv.weight.requires_grad


@pytest.mark.parametrize("overrides, convolutions, refusal", [
    (["trainer.whiten=true"], 0, "trainer.whiten=true whitens the first convolution, and model=simplecnn has none: "
                                 "set trainer.whiten=false"),
    (["optimizer=muon", "scheduler=cosine"], 0, "optimizer=muon orthogonalizes the filters of the convolutions after "
                                                "the first, and model=simplecnn has none: choose another optimizer"),
    (["optimizer=muon", "scheduler=cosine"], 1, "and model=simplecnn has one convolution: choose another optimizer"),
    (["optimizer=muon", "scheduler=cosine", "trainer.whiten=true"], 2, None),
    (["trainer.whiten=true", "trainer.whiten_bias_epochs=1"], 2, None),
])
def test_options_that_need_convolutions_are_refused_for_a_model_without_them(overrides, convolutions, refusal):
    """A model of one's own (an MLP, say) for what needs convolutions: one line naming the fix, not a traceback."""
    layers = [torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.Conv2d(8, 8, 3, padding=1)][:convolutions]
    model = torch.nn.Sequential(*layers, torch.nn.Flatten(), torch.nn.LazyLinear(10))
    cfg = compose(overrides)
    if refusal is None:
        check_fits(model, cfg)
    else:
        with pytest.raises(ConfigError, match=re.escape(refusal)):
            check_fits(model, cfg)
