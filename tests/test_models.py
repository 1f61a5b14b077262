"""Contract tests over every registered model, plus what is specific to each architecture.

Every registered model needs an entry in FIXTURES (build kwargs and a small input); a model without one
fails ``test_every_model_has_a_fixture`` and every contract test, so a new model is tested for free.
"""
from __future__ import annotations

import copy
import os

import pytest
import torch
from torch import nn

from lnlbench.errors import LnlError
from lnlbench.registry import MODELS

NUM_CLASSES = 10

# name -> (builder kwargs, input shape (B, C, H, W)). Batch 2-4 and small images keep the file fast on CPU.
FIXTURES: dict[str, tuple[dict, tuple[int, int, int, int]]] = {
    "preact_resnet18": ({"width": 16}, (3, 3, 32, 32)),
    "resnet18": ({"width": 8}, (3, 3, 32, 32)),
    "resnet34": ({"width": 8}, (3, 3, 32, 32)),  # width 8: exercises in_channels < 16 shortcuts
    "resnet50": ({"image_size": 64}, (2, 3, 64, 64)),
    "mlp": ({"in_channels": 1, "image_size": 8}, (4, 1, 8, 8)),
    "cnn_small": ({}, (3, 3, 32, 32)),
    "cnn9": ({}, (2, 3, 32, 32)),
    "sce_cnn": ({}, (2, 3, 32, 32)),
    "lenet": ({}, (2, 3, 32, 32)),
    "cotplus_cnn": ({}, (2, 3, 32, 32)),
    "inception_resnet_v2": ({}, (2, 3, 75, 75)),  # its smallest input (mini-WebVision trains on 227)
}
ALL_MODELS = MODELS.names()
_BUILT: dict[tuple[str, int], nn.Module] = {}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One intra-op thread: on a small shared CPU, OpenMP threads waiting on each other cost 10× the time."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def build(name: str, seed: int = 0) -> tuple[nn.Module, torch.Tensor]:
    assert name in FIXTURES, f"model '{name}' has no fixture in tests/test_models.py FIXTURES: add one"
    kwargs, shape = FIXTURES[name]
    kwargs = {"in_channels": shape[1], "image_size": shape[2], **kwargs}
    if (name, seed) not in _BUILT:  # the large nets take seconds to build: once per module, copies after
        torch.manual_seed(seed)
        _BUILT[name, seed] = MODELS.get(name)(NUM_CLASSES, **kwargs)
    model = copy.deepcopy(_BUILT[name, seed])
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(seed + 1))
    return model, x


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_every_model_has_a_fixture():
    assert ALL_MODELS, "no models registered"
    missing = sorted(set(ALL_MODELS) - set(FIXTURES))
    assert not missing, f"registered models without a fixture in FIXTURES: {missing}"


@pytest.mark.parametrize("name", ALL_MODELS)
def test_docstring_is_one_line_description(name):
    desc = dict(MODELS.describe())[name]
    assert desc and len(desc) <= 110, f"{name}: first docstring line must be a short description, got {desc!r}"


@pytest.mark.parametrize("name", ALL_MODELS)
def test_contract_shapes_and_head(name):
    model, x = build(name)
    assert isinstance(model.feature_dim, int) and model.feature_dim > 0
    assert isinstance(model.head, nn.Linear)
    assert (model.head.in_features, model.head.out_features) == (model.feature_dim, NUM_CLASSES)
    model.eval()
    with torch.no_grad():
        logits = model(x)
        feats = model.forward_features(x)
    assert logits.shape == (x.shape[0], NUM_CLASSES) and logits.dtype == torch.float32
    assert feats.shape == (x.shape[0], model.feature_dim)
    torch.testing.assert_close(model.head(feats), logits)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("name", ALL_MODELS)
def test_backward_gives_finite_grads_everywhere(name):
    model, x = build(name)
    model.train()
    nn.functional.cross_entropy(model(x), torch.arange(x.shape[0]) % NUM_CLASSES).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{name}: no gradient reaches {pname}"
        assert torch.isfinite(p.grad).all(), f"{name}: non-finite gradient in {pname}"


@pytest.mark.parametrize("name", ALL_MODELS)
def test_train_and_eval_modes(name):
    model, x = build(name)
    model.train()
    with torch.no_grad():
        train_out = model(x)  # also moves the BN running statistics away from their initial values
    assert model.training and torch.isfinite(train_out).all()
    model.eval()
    assert not any(m.training for m in model.modules())
    with torch.no_grad():
        a, b = model(x), model(x)
    torch.testing.assert_close(a, b, rtol=0, atol=0)  # eval is deterministic
    has_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    if has_bn:  # BN uses batch statistics in train mode and running ones in eval mode
        assert not torch.allclose(train_out, a)


@pytest.mark.parametrize("name", ALL_MODELS)
def test_channels_last_matches_contiguous(name):
    model, x = build(name)
    model.eval()
    with torch.no_grad():
        ref = model(x)
        model = model.to(memory_format=torch.channels_last)
        out = model(x.contiguous(memory_format=torch.channels_last))
        feats = model.forward_features(x.contiguous(memory_format=torch.channels_last))
    assert feats.shape == (x.shape[0], model.feature_dim)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
    model.train()  # and a training step in channels_last
    model(x.contiguous(memory_format=torch.channels_last)).sum().backward()


@pytest.mark.parametrize("name", ALL_MODELS)
def test_cpu_bf16_autocast(name):
    model, x = build(name)
    model.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(x.contiguous(memory_format=torch.channels_last))
        feats = model.forward_features(x)
    assert logits.shape == (x.shape[0], NUM_CLASSES) and feats.shape == (x.shape[0], model.feature_dim)
    assert torch.isfinite(logits.float()).all()
    logits.float().sum().backward()


@pytest.mark.parametrize("name", ALL_MODELS)
def test_state_dict_round_trip(name, tmp_path):
    model, x = build(name, seed=0)
    model.train()
    with torch.no_grad():
        model(x)  # non-trivial BN running statistics, so buffers must travel too
    model.eval()
    path = tmp_path / "model.pt"
    torch.save(model.state_dict(), path)
    other, _ = build(name, seed=123)
    other.load_state_dict(torch.load(path, weights_only=True), strict=True)
    other.eval()
    with torch.no_grad():
        torch.testing.assert_close(other(x), model(x), rtol=0, atol=0)


# ----------------------------------------------------------------------------------------------------------
# Fidelity to the reference code. Counts are those of the official files, checked by loading their
# state dict key-for-key (DivideMix PreResNet.py ResNet18 = 11,171,274; ELR ResNet_Zoo.py / CIFAR-N
# models/resnet.py ResNet34 = 21,282,122; torchvision resnet50 trunk 23,508,032 + the new fc).

@pytest.mark.parametrize("name, kwargs, expected", [
    ("preact_resnet18", {}, 11_171_274),
    ("preact_resnet18", {"width": 32}, 2_796_266),   # cpu-calibration.md: 2.8 M
    ("preact_resnet18", {"width": 16}, 700_794),     # cpu-calibration.md: 0.70 M
    ("resnet34", {}, 21_282_122),
    ("resnet18", {}, 11_173_962),                     # PES networks/ResNet.py ResNet18, DISC models/resnet.py
    ("cnn_small", {}, 78_042),                        # cpu-calibration.md: 0.08 M
    ("mlp", {"in_channels": 1, "image_size": 8}, 85_002),
    ("cnn9", {}, 4_434_570),                          # Co-teaching model.py CNN, counted layer by layer
    ("sce_cnn", {}, 1_639_794),                       # SCELoss-Reproduce SCEModel (3,136 → 256 → 10)
    ("lenet", {}, 62_006),                            # Co-teaching+ CNN_small: 456+2,416+48,120+10,164+850
    ("cotplus_cnn", {}, 518_150),                     # Co-teaching+ CNN, counted layer by layer
])
def test_parameter_counts(name, kwargs, expected):
    assert n_params(MODELS.get(name)(NUM_CLASSES, **kwargs)) == expected


def test_resnet50_clothing1m_head():
    model = MODELS.get("resnet50")(14)
    assert model.feature_dim == 2048 and model.head.out_features == 14
    assert n_params(model) == 23_508_032 + 2048 * 14 + 14
    assert isinstance(model.backbone.fc, nn.Identity)


def test_preact_resnet18_tiny_imagenet_size():
    model = MODELS.get("preact_resnet18")(200, image_size=64, width=16)
    model.eval()
    with torch.no_grad():
        feats = model.forward_features(torch.randn(2, 3, 64, 64))
    assert feats.shape == (2, model.feature_dim) and model.feature_dim == 128


def test_preact_resnet18_kaiming_init_option():
    torch.manual_seed(0)
    model = MODELS.get("preact_resnet18")(10, width=16, init="kaiming")
    w = model.layer1[0].conv1.weight  # fan_out = 16 * 3 * 3
    assert abs(w.std().item() - (2 / (16 * 9)) ** 0.5) < 0.03
    with pytest.raises(LnlError, match="init"):
        MODELS.get("preact_resnet18")(10, init="xavier")


def test_resnet50_pretrained_without_cache_raises(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(LnlError) as err:
        MODELS.get("resnet50")(14, pretrained=True)
    msg = str(err.value)
    assert "\n" not in msg and "resnet50-0676ba61.pth" in msg and "TORCH_HOME" in msg
    assert str(tmp_path) in msg
    assert not os.listdir(tmp_path), "must not start a download"


def test_resnet50_pretrained_loads_the_cached_file(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    ckpt = tmp_path / "hub" / "checkpoints"
    ckpt.mkdir(parents=True)
    file = ckpt / "resnet50-0676ba61.pth"
    torch.manual_seed(1)
    imagenet = MODELS.get("resnet50")(1000).backbone  # stands in for the real IMAGENET1K_V1 file
    with torch.no_grad():
        imagenet.bn1.running_mean.fill_(0.25)
    state = imagenet.state_dict()
    state.update({"fc.weight": torch.zeros(1000, 2048), "fc.bias": torch.zeros(1000)})  # as in the real file
    torch.save(state, file)
    model = MODELS.get("resnet50")(14, pretrained=True)
    torch.testing.assert_close(model.backbone.conv1.weight, imagenet.conv1.weight, rtol=0, atol=0)
    torch.testing.assert_close(model.backbone.bn1.running_mean, imagenet.bn1.running_mean)
    assert model.head.out_features == 14

    file.write_bytes(b"not a checkpoint")
    with pytest.raises(LnlError, match="cannot load"):
        MODELS.get("resnet50")(14, pretrained=True)
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, file)  # another network's file
    with pytest.raises(LnlError, match="cannot load"):
        MODELS.get("resnet50")(14, pretrained=True)


def test_resnet50_pretrained_from_a_path(monkeypatch, tmp_path):
    """weights=PATH loads that file instead of the cache; a missing one names both places, in one line."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    torch.manual_seed(2)
    imagenet = MODELS.get("resnet50")(1000).backbone
    file = tmp_path / "mine.pth"
    torch.save(imagenet.state_dict(), file)
    model = MODELS.get("resnet50")(14, pretrained=True, weights=str(file))
    torch.testing.assert_close(model.backbone.conv1.weight, imagenet.conv1.weight, rtol=0, atol=0)
    with pytest.raises(LnlError) as err:
        MODELS.get("resnet50")(14, pretrained=True, weights=str(tmp_path / "absent.pth"))
    msg = str(err.value)
    assert "\n" not in msg and "absent.pth" in msg and str(tmp_path / "torch") in msg and "weights: PATH" in msg
    with pytest.raises(LnlError, match="pretrained=True"):
        MODELS.get("resnet50")(14, weights=str(file))


@pytest.mark.parametrize("name, kwargs", [
    ("preact_resnet18", {"image_size": 4}),
    ("preact_resnet18", {"width": 0}),
    ("resnet34", {"in_channels": 0}),
    ("resnet50", {"image_size": 16}),
    ("resnet50", {"in_channels": 1, "pretrained": True}),
    ("mlp", {"hidden": (256, 0)}),
    ("cnn_small", {"widths": ()}),
    ("cnn_small", {"image_size": 2, "widths": (8, 16, 32)}),
    ("cnn_small", {"num_classes": 1}),
])
def test_unsupported_arguments_raise_lnl_error(name, kwargs):
    num_classes = kwargs.pop("num_classes", NUM_CLASSES)
    with pytest.raises(LnlError, match=name):
        MODELS.get(name)(num_classes, **kwargs)


def test_other_channel_counts_and_sizes():
    """Digits (8×8×1) and Tiny-ImageNet (64×64×3) through the nets that support them."""
    for name, kwargs, shape in [("cnn_small", {"in_channels": 1, "image_size": 8}, (2, 1, 8, 8)),
                                ("preact_resnet18", {"in_channels": 1, "image_size": 8, "width": 8}, (2, 1, 8, 8)),
                                ("mlp", {"in_channels": 3, "image_size": 32}, (2, 3, 32, 32)),
                                ("resnet50", {"in_channels": 1, "image_size": 32}, (2, 1, 32, 32))]:
        model = MODELS.get(name)(NUM_CLASSES, **kwargs).eval()
        with torch.no_grad():
            assert model(torch.randn(*shape)).shape == (2, NUM_CLASSES), name


def test_strided_1x1_shortcut_matches_nn_conv2d():
    from lnlbench.models.resnets import Conv1x1
    torch.manual_seed(0)
    ours = Conv1x1(8, 16, stride=2)
    ref = nn.Conv2d(8, 16, kernel_size=1, stride=2, bias=False)
    ref.load_state_dict(ours.state_dict())
    for size in (8, 9):
        x = torch.randn(2, 8, size, size)
        torch.testing.assert_close(ours(x), ref(x))


def test_small_widths_train_in_channels_last_with_odd_batch():
    """oneDNN's strided 1×1 weight-gradient kernel corrupts memory for in_channels < 16 and odd batches."""
    for name, kwargs in [("preact_resnet18", {"width": 8}), ("resnet34", {"width": 8}),
                         ("cnn_small", {"widths": (8, 12, 16)})]:
        torch.manual_seed(0)
        model = MODELS.get(name)(NUM_CLASSES, **kwargs)
        x = torch.randn(3, 3, 16, 16)
        model(x).sum().backward()
        ref = {n: p.grad.clone() for n, p in model.named_parameters()}
        model.zero_grad()
        model = model.to(memory_format=torch.channels_last)
        model(x.contiguous(memory_format=torch.channels_last)).sum().backward()
        # Summation order differs between layouts, and some gradients are ~0 up to rounding (a BN scale
        # followed by another BN): compare against the largest gradient of the model.
        scale = max(g.abs().max().item() for g in ref.values())
        for n, p in model.named_parameters():
            torch.testing.assert_close(p.grad, ref[n], rtol=1e-3, atol=1e-4 * scale, msg=f"{name}: {n}")
