"""ResNet 18/34/50 backbones with torchvision's parameter names (no torchvision import).

The names (conv1, bn1, layer1.0.conv1, layer1.0.downsample.0, ...) match
torchvision.models.resnet so ImageNet or MPII-pretrained state dicts load as they are.
`width` scales every stage's channel count (1.0 = the standard network; the CPU preset
uses a narrow one). The classifier (avgpool/fc) is left out: the pose heads take the
stride-32 feature map.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

# name -> (block type, blocks per stage)
SPECS = {18: ("basic", (2, 2, 2, 2)), 34: ("basic", (3, 4, 6, 3)), 50: ("bottleneck", (3, 4, 6, 3))}


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride, 1, bias=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = _conv3x3(cin, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        idt = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + idt)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        # stride on the 3x3 conv, as torchvision (ResNet v1.5)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        idt = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + idt)


class ResNet(nn.Module):
    """ResNet trunk: [B,3,H,W] -> [B, out_channels, H/32, W/32]."""

    def __init__(self, depth: int = 50, width: float = 1.0):
        super().__init__()
        if depth not in SPECS:
            raise ValueError(f"ResNet depth must be one of {sorted(SPECS)}, got {depth}")
        if not width > 0:
            raise ValueError(f"ResNet width multiplier must be positive, got {width}")
        kind, layers = SPECS[depth]
        block = BasicBlock if kind == "basic" else Bottleneck
        self.depth, self.width = depth, float(width)
        base = max(8, int(round(64 * width)))
        self.conv1 = nn.Conv2d(3, base, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(base)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin = base
        for i, n in enumerate(layers):
            planes = base * 2 ** i
            stride = 1 if i == 0 else 2
            down = None
            if stride != 1 or cin != planes * block.expansion:
                down = nn.Sequential(nn.Conv2d(cin, planes * block.expansion, 1, stride, bias=False),
                                     nn.BatchNorm2d(planes * block.expansion))
            blocks = [block(cin, planes, stride, down)]
            cin = planes * block.expansion
            blocks += [block(cin, planes) for _ in range(n - 1)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.out_channels = cin
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


def clean_state_dict(state: dict) -> dict:
    """Strip wrappers' prefixes ('module.', 'backbone.') and the classifier from a ResNet state dict."""
    out = {}
    for k, v in state.items():
        for prefix in ("module.", "backbone."):
            if k.startswith(prefix):
                k = k[len(prefix):]
        if k.startswith("fc.") or not torch.is_tensor(v):
            continue
        out[k] = v
    return out


def load_backbone_weights(model: ResNet, path: str | Path) -> list[str]:
    """Load a torchvision-style ResNet state dict (or a checkpoint holding one under
    'state_dict'/'model') into `model`. Returns the names of parameters not found in the file.

    Raises ValueError when a tensor's shape differs (a file for another depth or width), and
    when the file is missing, unreadable, or holds anything but tensors and plain data (it is
    loaded with weights_only=True, so such a file is refused without running any of it).
    """
    import pickle
    import warnings
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"pretrained weights {path} do not exist")
    try:
        with warnings.catch_warnings():  # torch warns of a plain pickle's protocol before refusing it
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        detail = next((ln.strip() for ln in str(e).splitlines() if "GLOBAL" in ln or "Unsupported" in ln), "")
        raise ValueError(f"{path}: refused: it holds Python objects besides tensors and plain data, and loading "
                         f"it could run code ({detail[:120] or 'weights_only load failed'}); it was not loaded") from None
    except (RuntimeError, EOFError, KeyError, OSError, ValueError) as e:
        raise ValueError(f"{path}: not a readable weights file ({type(e).__name__}: "
                         f"{str(e).splitlines()[0][:160] if str(e) else 'truncated'})") from None
    if isinstance(obj, dict):
        for key in ("state_dict", "model"):
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a state dict, got {type(obj).__name__}")
    state = clean_state_dict(obj)
    own = model.state_dict()
    bad = [f"{k}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}"
           for k, v in state.items() if k in own and own[k].shape != v.shape]
    if bad:
        raise ValueError(f"{path}: weights do not fit ResNet-{model.depth} width {model.width}: " + "; ".join(bad[:3]))
    if not any(k in own for k in state):
        raise ValueError(f"{path}: no ResNet parameter names found in the file")
    missing = [k for k in own if k not in state]
    model.load_state_dict({**own, **{k: v for k, v in state.items() if k in own}})
    return missing
