"""The paper-scale networks: DivideMix's PreAct ResNet-18, ELR/CIFAR-N's ResNet-34, PES's ResNet-18,
torchvision's ResNet-50.

Sources read (architectures re-written here, not copied):

- ``LiJunnan1992/DivideMix`` ``PreResNet.py`` (``ResNet18`` = ``ResNet(PreActBlock, [2, 2, 2, 2])``), used by
  DivideMix on CIFAR; ``DiegoOrtego/LabelNoiseMOIT`` ``utils_labelNoise/models/preact_resnet.py`` has the
  same trunk with adaptive pooling and Kaiming init.
- ``shengliu66/ELR`` ``ELR/model/ResNet_Zoo.py`` + ``model.py`` (``resnet34`` = ``ResNet(BasicBlock,
  [3, 4, 6, 3])``), identical to ``UCSC-REAL/cifar-10-100n`` ``models/resnet.py`` ``ResNet34`` used by its
  ``main.py``.
- ``tmllab/PES`` ``networks/ResNet.py`` (``ResNet18`` = ``ResNet(BasicBlock, [2, 2, 2, 2])``), PES's CIFAR-10 net.
- DivideMix ``Train_clothing1M.py``: ``torchvision.models.resnet50(pretrained=True)`` with ``fc`` replaced by
  a new ``nn.Linear(2048, 14)``.

State-dict keys follow the official files (``conv1``, ``bn1``, ``layer1``..``layer4``) except that their
final ``linear`` is called ``head`` here.
"""
from __future__ import annotations

import os
from urllib.parse import urlparse

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import LnlError
from ..registry import register_model
from .base import LnlModel, check_build_args

CIFAR_MIN_SIZE = 8  # four stages with strides 1, 2, 2, 2 bring 8×8 down to 1×1


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


class Conv1x1(nn.Conv2d):
    """Bias-free 1×1 conv (the projection shortcut) that applies its stride by subsampling the input first.

    The same function and state dict as ``nn.Conv2d(kernel_size=1, stride=s, bias=False)``. Why: on CPU with
    channels_last, oneDNN's strided 1×1 weight-gradient kernel writes out of bounds when in_channels < 16 and
    the batch is odd (seen with torch 2.14.1: segfaults for width=8 nets; oneDNN issue #6035).
    """

    def __init__(self, in_planes: int, out_planes: int, stride: int = 1):
        super().__init__(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.stride[0]
        return F.conv2d(x[:, :, ::s, ::s] if s != 1 else x, self.weight)


class BasicBlock(nn.Module):
    """Post-activation residual block (He et al. 2016a): conv-BN-ReLU-conv-BN, + shortcut, ReLU."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = conv3x3(in_planes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:  # projection shortcut with BN, as in the reference files
            self.shortcut = nn.Sequential(Conv1x1(in_planes, planes, stride), nn.BatchNorm2d(planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class PreActBlock(nn.Module):
    """Pre-activation residual block (He et al. 2016b): BN-ReLU-conv-BN-ReLU-conv, + shortcut.

    The projection shortcut (a 1×1 conv, no BN) takes the block's pre-activated input, as in DivideMix.
    """

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = conv3x3(in_planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(Conv1x1(in_planes, planes, stride))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        shortcut = self.shortcut(out)
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + shortcut


class CifarResNet(LnlModel):
    """The CIFAR ResNet trunk shared by DivideMix, ELR and CIFAR-N.

    Stem: 3×3 conv (stride 1) → BN → ReLU, no max-pool. Four stages of ``width × (1, 2, 4, 8)`` channels with
    strides 1, 2, 2, 2, then global average pooling and the linear head. There is no BN/ReLU after the last
    stage, also for pre-activation blocks (so it is the official file, not He et al.'s PreAct ResNet).
    """

    def __init__(self, block: type[nn.Module], num_blocks: tuple[int, ...], num_classes: int,
                 in_channels: int = 3, width: int = 64):
        super().__init__()
        self.conv1 = conv3x3(in_channels, width)
        self.bn1 = nn.BatchNorm2d(width)
        layers, in_planes = [], width
        for i, (n, stride) in enumerate(zip(num_blocks, (1, 2, 2, 2))):
            planes = width * 2 ** i
            blocks = []
            for s in [stride] + [1] * (n - 1):
                blocks.append(block(in_planes, planes, s))
                in_planes = planes
            layers.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.feature_dim = in_planes
        self.head = nn.Linear(in_planes, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        # The official files use F.avg_pool2d(out, 4): the same thing at 32×32, but it leaves 2×2 (and a
        # wrong-sized linear layer) at 64×64; adaptive pooling works for every input size.
        return F.adaptive_avg_pool2d(out, 1).flatten(1)


def _kaiming_init(model: nn.Module) -> None:
    """MOIT's init: Kaiming-normal (fan_out, ReLU) convs, BN weight 1 / bias 0; linear layers stay default."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def _initialised(model: nn.Module, init: str, name: str) -> nn.Module:
    """``init="pytorch"``: PyTorch's default init, unchanged; ``"kaiming"``: :func:`_kaiming_init`."""
    if init == "kaiming":
        _kaiming_init(model)
    elif init != "pytorch":
        raise LnlError(f"model '{name}': init must be 'pytorch' or 'kaiming', got {init!r}")
    return model


def _check_width(model: str, width: int) -> None:
    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
        raise LnlError(f"model '{model}': width must be a positive integer, got {width!r}")


@register_model("preact_resnet18")
def preact_resnet18(num_classes: int, in_channels: int = 3, image_size: int = 32, width: int = 64,
                    init: str = "pytorch") -> CifarResNet:
    """PreAct ResNet-18 for 32×32/64×64 images, as DivideMix's PreResNet.py (width=16/32: 1/4, 1/2 width).

    ``width`` is the first stage's channels (64 in the paper: 11.17 M parameters for 10 classes; 32 gives
    2.8 M, 16 gives 0.70 M). ``init="pytorch"`` keeps PyTorch's default init, as DivideMix does;
    ``init="kaiming"`` is MOIT's (Kaiming-normal fan_out convs). Deviation: adaptive average pooling
    instead of the official fixed ``avg_pool2d(4)`` (identical at 32×32; needed at 64×64).
    """
    check_build_args("preact_resnet18", num_classes, in_channels, image_size, CIFAR_MIN_SIZE)
    _check_width("preact_resnet18", width)
    return _initialised(CifarResNet(PreActBlock, (2, 2, 2, 2), num_classes, in_channels, width), init,
                        "preact_resnet18")


@register_model("resnet18")
def resnet18(num_classes: int, in_channels: int = 3, image_size: int = 32, width: int = 64,
             init: str = "pytorch") -> CifarResNet:
    """CIFAR ResNet-18 (3×3 stem, no max-pool, post-activation BasicBlock [2,2,2,2]): PES's and DISC's network.

    11.17 M parameters for 10 classes. ``init="pytorch"`` keeps PyTorch's default init, as ``tmllab/PES``
    ``networks/ResNet.py`` ``ResNet18``; ``init="kaiming"`` is DISC's ``models/resnet.py`` (Kaiming-normal
    fan_out convs, BN weight 1 / bias 0, as the torchvision-derived file). Deviation: adaptive average pooling
    instead of ``avg_pool2d(4)`` (identical at 32×32).
    """
    check_build_args("resnet18", num_classes, in_channels, image_size, CIFAR_MIN_SIZE)
    _check_width("resnet18", width)
    return _initialised(CifarResNet(BasicBlock, (2, 2, 2, 2), num_classes, in_channels, width), init, "resnet18")


@register_model("resnet34")
def resnet34(num_classes: int, in_channels: int = 3, image_size: int = 32, width: int = 64,
             init: str = "pytorch") -> CifarResNet:
    """CIFAR ResNet-34 (3×3 stem, no max-pool, BasicBlock [3,4,6,3]) as used by ELR and CIFAR-N.

    21.28 M parameters for 10 classes. ``init="pytorch"`` (default): PyTorch's init, as in ELR's
    ``ResNet_Zoo.py`` and CIFAR-N's ``models/resnet.py``; ``"kaiming"``: DISC's file (its instance-noise net).
    Deviation: adaptive average pooling instead of ``avg_pool2d(4)`` (identical at 32×32).
    """
    check_build_args("resnet34", num_classes, in_channels, image_size, CIFAR_MIN_SIZE)
    _check_width("resnet34", width)
    return _initialised(CifarResNet(BasicBlock, (3, 4, 6, 3), num_classes, in_channels, width), init, "resnet34")


class TorchvisionResNet50(LnlModel):
    """torchvision's ResNet-50 trunk (``backbone``, its ``fc`` an identity) with a new linear ``head``."""

    def __init__(self, num_classes: int, in_channels: int = 3):
        super().__init__()
        from torchvision.models import resnet50 as tv_resnet50

        self.backbone = tv_resnet50(weights=None)
        if in_channels != 3:  # a fresh stem for other channel counts, initialised as torchvision does
            self.backbone.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
            nn.init.kaiming_normal_(self.backbone.conv1.weight, mode="fan_out", nonlinearity="relu")
        self.feature_dim = self.backbone.fc.in_features
        self.backbone.fc = nn.Identity()
        self.head = nn.Linear(self.feature_dim, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)


def _imagenet_weights(given: str | None = None) -> tuple[str, str, dict[str, torch.Tensor]]:
    """(path, url, state dict without ``fc``) of torchvision's IMAGENET1K_V1 ResNet-50, from ``given`` (a
    file path) or else the local hub cache only: never downloads."""
    from torchvision.models import ResNet50_Weights

    url = ResNet50_Weights.IMAGENET1K_V1.url
    cache = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(urlparse(url).path))
    path = os.path.expanduser(given) if given else cache
    if not os.path.isfile(path):
        raise LnlError(f"resnet50 pretrained=True needs torchvision's ImageNet weights: none at {path}; download "
                       f"{url} into torchvision's cache {cache} (TORCH_HOME now "
                       f"{os.environ.get('TORCH_HOME', 'unset, default ~/.cache/torch')}) or give the file as "
                       "--hp 'model_kwargs={pretrained: true, weights: PATH}'")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated download or not a checkpoint at all
        raise _bad_weights(path, url, exc) from exc
    return path, url, {k: v for k, v in state.items() if not k.startswith("fc.")}


def _bad_weights(path: str, url: str, exc: Exception) -> LnlError:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return LnlError(f"resnet50: cannot load ImageNet weights from {path} ({type(exc).__name__}: {first}); "
                    f"delete it and download {url} again")


@register_model("resnet50")
def resnet50(num_classes: int, in_channels: int = 3, image_size: int = 32, pretrained: bool = False,
             weights: str | None = None) -> TorchvisionResNet50:
    """torchvision ResNet-50 with a new num_classes-way fc (Clothing1M: ImageNet-pretrained, 14 classes).

    ``pretrained=True`` loads IMAGENET1K_V1 (``resnet50-0676ba61.pth``) from ``torch.hub.get_dir()/checkpoints``
    only (or from the file ``weights``, a path, for machines without that cache), and raises
    :class:`LnlError` naming both if it is missing: no download and no silent random init. The trunk
    keeps torchvision's init (Kaiming-normal fan_out convs); the new head keeps PyTorch's default Linear
    init, as DivideMix's ``Train_clothing1M.py`` (``model.fc = nn.Linear(2048, 14)``). Any ``image_size`` >= 32
    works (torchvision pools adaptively); Clothing1M uses 224. ``in_channels`` != 3 gets a fresh stem conv.
    """
    check_build_args("resnet50", num_classes, in_channels, image_size, 32)
    if pretrained and in_channels != 3:
        raise LnlError(f"model 'resnet50': pretrained=True needs in_channels=3 (ImageNet), got {in_channels}")
    if weights is not None and not pretrained:
        raise LnlError("model 'resnet50': weights=PATH is the ImageNet file of pretrained=True; add it")
    loaded = _imagenet_weights(weights) if pretrained else None  # a missing file fails before the (slow) build
    model = TorchvisionResNet50(num_classes, in_channels)
    if loaded is not None:
        path, url, state = loaded
        try:
            model.backbone.load_state_dict(state, strict=True)
        except RuntimeError as exc:  # another network's file under the expected name
            raise _bad_weights(path, url, exc) from exc
    return model
