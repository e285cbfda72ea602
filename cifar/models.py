"""The classifiers, built from the ``model`` config group."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from cifar.errors import ConfigError

NUM_CLASSES = 10


def simplecnn(channels: list[int], hidden: int, dropout: float, batch_norm: bool) -> nn.Sequential:
    """The classic lab CNN: conv-(BN)-ReLU-maxpool blocks, then a hidden FC layer with dropout."""
    layers: list[nn.Module] = []
    in_channels = 3
    for out_channels in channels:
        layers += _conv_relu_pool(in_channels, out_channels, batch_norm)
        in_channels = out_channels
    side = 32 // 2 ** len(channels)
    layers += [
        nn.Flatten(),
        nn.Linear(in_channels * side * side, hidden),
        nn.ReLU(inplace=True),
        nn.Dropout(dropout),
        nn.Linear(hidden, NUM_CLASSES),
    ]
    return nn.Sequential(*layers)


def resnet18() -> nn.Module:
    """torchvision's ResNet-18, randomly initialised, with the CIFAR stem (3x3 stride-1 conv, no max-pool)."""
    from torchvision.models import resnet18 as torchvision_resnet18

    model = torchvision_resnet18(weights=None, num_classes=NUM_CLASSES)
    model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return model


def _conv_bn(in_channels: int, out_channels: int, batch_norm: bool = True) -> list[nn.Module]:
    conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=not batch_norm)
    return [conv, nn.BatchNorm2d(out_channels)] if batch_norm else [conv]


def _conv_bn_relu(in_channels: int, out_channels: int) -> list[nn.Module]:
    return [*_conv_bn(in_channels, out_channels), nn.ReLU(inplace=True)]


def _conv_relu_pool(in_channels: int, out_channels: int, batch_norm: bool = True) -> list[nn.Module]:
    """conv-(BN)-ReLU-maxpool, computed as conv-(BN)-maxpool-ReLU.

    ReLU is monotonic, so it commutes with max-pooling: the outputs and gradients are the same, and
    the ReLU and its backward pass run on a quarter of the elements (simplecnn's training step is
    1.08x faster on a CPU: bench/layer_order.py). Neither layer has parameters, so state dicts are
    those of the usual order.
    """
    return [*_conv_bn(in_channels, out_channels, batch_norm), nn.MaxPool2d(2), nn.ReLU(inplace=True)]


class _Residual(nn.Sequential):
    """``x + block(x)``, the block being two conv-BN-ReLU layers of the same width."""

    def __init__(self, channels: int):
        super().__init__(*_conv_bn_relu(channels, channels), *_conv_bn_relu(channels, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + super().forward(x)


class _Scale(nn.Module):
    def __init__(self, factor: float):
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor


def resnet9(channels: list[int]) -> nn.Sequential:
    """The ResNet-9 of the DAWNBench CIFAR-10 entries (myrtle.ai), with the widths ``channels`` of its
    prep layer and three stages: conv-BN-ReLU, then per stage a conv-BN-ReLU and a max-pool, with a
    residual block after the first and last stage; a global max-pool and a bias-free linear layer
    whose logits are scaled by 1/8, as in the original.
    """
    prep, *stages = channels
    layers: list[nn.Module] = _conv_bn_relu(3, prep)
    in_channels = prep
    for stage, out_channels in enumerate(stages):
        layers += _conv_relu_pool(in_channels, out_channels)
        if stage in (0, len(stages) - 1):
            layers.append(_Residual(out_channels))
        in_channels = out_channels
    layers += [nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(in_channels, NUM_CLASSES, bias=False), _Scale(0.125)]
    return nn.Sequential(*layers)


def airbench(widths: list[int]) -> nn.Sequential:
    """cifar10-airbench's net (airbench94: widths [64, 256, 256]): a 2x2 convolution with a bias and 24
    filters (twice a 2x2x3 patch's 12 values: the pairs of ``trainer.whiten``), GELU, then per width a
    conv group (conv, max-pool, BN, GELU, conv, BN, GELU), a 3x3 max-pool and a bias-free linear
    layer whose logits are scaled by 1/9, as in the original.

    Also as there: the first layer's bias starts at 0; the BatchNorms keep their scale at 1 (only
    their bias is trained), with eps 1e-12 and fast statistics (momentum 0.4); each 3x3 convolution
    starts as the identity on its inputs (its first in_channels filters; the others keep their
    random initialisation).
    """
    first = nn.Conv2d(3, 24, 2)
    nn.init.zeros_(first.bias)
    layers: list[nn.Module] = [first, nn.GELU()]
    in_channels = first.out_channels
    for out_channels in widths:
        layers += [_identity_conv(in_channels, out_channels), nn.MaxPool2d(2), _fixed_scale_norm(out_channels),
                   nn.GELU(), _identity_conv(out_channels, out_channels), _fixed_scale_norm(out_channels), nn.GELU()]
        in_channels = out_channels
    layers += [nn.MaxPool2d(3), nn.Flatten(), nn.Linear(in_channels, NUM_CLASSES, bias=False), _Scale(1 / 9)]
    return nn.Sequential(*layers)


def _identity_conv(in_channels: int, out_channels: int) -> nn.Conv2d:
    conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
    with torch.no_grad():
        nn.init.dirac_(conv.weight[:in_channels])
    return conv


def _fixed_scale_norm(channels: int) -> nn.BatchNorm2d:
    norm = nn.BatchNorm2d(channels, eps=1e-12, momentum=0.4)
    norm.weight.requires_grad_(False)
    return norm


def relu_before_pool(model: nn.Module) -> nn.Module:
    """A copy of ``model`` in the layer order the labs write, each ReLU before its max-pool (simplecnn,
    resnet9), with its own parameters, for comparisons with this order; max-pools that no ReLU follows
    (airbench's) and other models are copied as they are."""
    model = copy.deepcopy(model)
    if not isinstance(model, nn.Sequential):
        return model
    layers = list(model)
    for i, layer in enumerate(layers[:-1]):
        if isinstance(layer, nn.MaxPool2d) and isinstance(layers[i + 1], nn.ReLU):
            layers[i], layers[i + 1] = layers[i + 1], layer
    return nn.Sequential(*layers)


def build_model(cfg: Any) -> nn.Module:
    """Build the model named by ``cfg.name`` with the rest of ``cfg`` as its options."""
    if cfg.name == "simplecnn":
        return simplecnn(list(cfg.channels), cfg.hidden, cfg.dropout, cfg.batch_norm)
    if cfg.name == "resnet18":
        return resnet18()
    if cfg.name == "resnet9":
        return resnet9(list(cfg.channels))
    if cfg.name == "airbench":
        return airbench(list(cfg.widths))
    raise ValueError(f"unknown model {cfg.name!r}")


def first_conv(model: nn.Module) -> nn.Conv2d:
    """The convolution that sees the images: the one ``trainer.whiten`` whitens."""
    return next(m for m in model.modules() if isinstance(m, nn.Conv2d))


def check_fits(model: nn.Module, cfg: Any) -> None:
    """Refuse, in one line before the data is read, the options that need convolutions ``model`` lacks (a model
    added to the ``model`` group may have none, or one): they failed with a traceback."""
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    model_option = f"model={cfg.model.name}"
    if cfg.trainer.whiten and not convs:
        raise ConfigError(f"trainer.whiten=true whitens the first convolution, and {model_option} has none: set "
                          "trainer.whiten=false")
    if cfg.trainer.whiten_bias_epochs is not None and convs[0].bias is None:
        raise ConfigError(f"trainer.whiten_bias_epochs={cfg.trainer.whiten_bias_epochs} fixes the first "
                          f"convolution's bias, which {model_option} does not have: set "
                          "trainer.whiten_bias_epochs=null")
    if "muon_lr" in cfg.optimizer and len(convs) < 2:
        raise ConfigError(f"optimizer=muon orthogonalizes the filters of the convolutions after the first, and "
                          f"{model_option} has {'one convolution' if convs else 'none'}: choose another optimizer")


def whiten_first_conv(model: nn.Module, images: torch.Tensor, eps: float = 5e-4) -> None:
    """Make the first convolution whiten the patches of ``images`` (normalised, (N, C, H, W)), and freeze
    it: cifar10-airbench's first layer.

    Each eigenvector of the patches' covariance (27 of them for 3x3 filters over 3 channels), divided
    by the square root of its eigenvalue, is a filter whose responses to these patches have unit
    variance and are uncorrelated with the other filters'. The filters take them in pairs, the
    eigenvector and its negative (so that a ReLU after keeps either sign), in order of eigenvalue;
    any filters beyond twice the eigenvectors keep their random initialisation (and stay fixed too).
    ``eps`` keeps the least varying directions from being scaled up without bound.
    """
    conv = first_conv(model)
    out_channels, in_channels, height, width = conv.weight.shape
    patches = nn.functional.unfold(images.float(), (height, width))  # (N, a filter's weights, patches an image)
    covariance = torch.einsum("npl,nql->pq", patches, patches).double().cpu() / (len(patches) * patches.shape[2])
    eigenvalues, eigenvectors = torch.linalg.eigh(covariance)  # ascending
    filters = (eigenvectors.T / torch.sqrt(eigenvalues + eps)[:, None]).flip(0)
    pairs = min(out_channels // 2, len(filters))
    filters = filters[:pairs].reshape(pairs, in_channels, height, width)
    with torch.no_grad():
        conv.weight[: 2 * pairs] = torch.cat([filters, -filters]).to(conv.weight)
    conv.weight.requires_grad_(False)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@dataclass
class Summary:
    parameters: int
    flops_per_image: int  # forward FLOPs for one 32x32 image: 2 x the multiply-adds that torchinfo counts
    table: str  # torchinfo's layer table: output shapes, parameters and multiply-adds per layer


def summarize(model: nn.Module) -> Summary:
    """Parameters and FLOPs of ``model``, counted by torchinfo (module hooks on one forward pass).

    The input is zeros, not torchinfo's random default, so counting draws nothing from the RNG
    that seeds training.
    """
    import torchinfo

    device = next(model.parameters()).device
    image = torch.zeros(1, 3, 32, 32, device=device)
    stats = torchinfo.summary(model, input_data=image, device=device, verbose=0, mode="eval",
                              col_names=("output_size", "num_params", "mult_adds"))
    return Summary(count_parameters(model), 2 * stats.total_mult_adds, str(stats))
