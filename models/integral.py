"""The integral pose network: ResNet trunk, deconvolution head, soft-argmax (Sun et al. 2018).

Coordinates come out normalised to [-1, 1] per axis with align_corners=False semantics:
a crop of S pixels maps pixel u (continuous, pixel centres at integers) to (2u + 1) / S - 1,
the same convention as torch.nn.functional.grid_sample. In 3D the third axis is depth,
its D bins spanning [-1, 1] the same way.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .resnet import ResNet


def _bin_centres(n: int, device, dtype) -> torch.Tensor:
    """Centres of n equal bins covering [-1, 1]: (2i + 1) / n - 1."""
    return (2 * torch.arange(n, device=device, dtype=dtype) + 1) / n - 1


def soft_argmax_2d(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """logits [B,J,H,W] -> (coords [B,J,2] as (x, y) in [-1,1], probabilities [B,J,H,W])."""
    B, J, H, W = logits.shape
    p = F.softmax(logits.float().reshape(B, J, H * W), dim=-1).reshape(B, J, H, W)
    x = (p.sum(2) * _bin_centres(W, p.device, p.dtype)).sum(-1)
    y = (p.sum(3) * _bin_centres(H, p.device, p.dtype)).sum(-1)
    return torch.stack([x, y], -1), p


def soft_argmax_3d(logits: torch.Tensor, depth: int) -> tuple[torch.Tensor, torch.Tensor]:
    """logits [B,J*D,H,W] -> (coords [B,J,3] as (x, y, z) in [-1,1], probabilities [B,J,D,H,W])."""
    B, C, H, W = logits.shape
    if C % depth:
        raise ValueError(f"soft_argmax_3d: {C} channels is not a multiple of depth {depth}")
    J = C // depth
    p = F.softmax(logits.float().reshape(B, J, depth * H * W), dim=-1).reshape(B, J, depth, H, W)
    x = (p.sum((2, 3)) * _bin_centres(W, p.device, p.dtype)).sum(-1)
    y = (p.sum((2, 4)) * _bin_centres(H, p.device, p.dtype)).sum(-1)
    z = (p.sum((3, 4)) * _bin_centres(depth, p.device, p.dtype)).sum(-1)
    return torch.stack([x, y, z], -1), p


def heatmap_confidence(prob: torch.Tensor, coords: torch.Tensor, radius: float = 1.5) -> torch.Tensor:
    """Probability mass within `radius` heatmap bins of the soft-argmax location.

    prob [B,J,H,W], coords [B,J,2] in [-1,1] -> [B,J] in [0,1]: a peaked, confident
    heatmap puts most of its mass near its mean; a diffuse or multi-modal one does not.
    """
    B, J, H, W = prob.shape
    xs = _bin_centres(W, prob.device, prob.dtype)
    ys = _bin_centres(H, prob.device, prob.dtype)
    dx = (xs[None, None, None, :] - coords[..., 0, None, None]) * W / 2
    dy = (ys[None, None, :, None] - coords[..., 1, None, None]) * H / 2
    near = (dx ** 2 + dy ** 2) <= radius ** 2
    return (prob * near).sum((2, 3))


def heatmap_nll(prob: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of heatmaps against their targets, each target split bilinearly over its
    four nearest bins (so the target distribution's mean is the target itself).

    prob [B,J,H,W] (sums to 1 over H,W), coords [B,J,2] as (x, y) in [-1,1] -> [B,J] nats.
    A one-hot heatmap on the target's bin gives 0 (bin-centre target); a uniform one log(H·W).
    Unlike the soft-argmax loss (only the mean is trained) or E_p||g - t||² (minimised by a
    delta wherever the target is uncertain), this is a proper scoring rule: where the
    network cannot tell, its heatmap spreads, so the mass near the peak is a confidence.
    Targets outside the grid are clamped to its border (mask them out of the loss).
    """
    B, J, H, W = prob.shape
    u = (((coords[..., 0] + 1) * W - 1) / 2).clamp(0, W - 1)  # continuous bin index, bin centres at integers
    v = (((coords[..., 1] + 1) * H - 1) / 2).clamp(0, H - 1)
    u0 = u.floor().clamp(max=max(W - 2, 0))
    v0 = v.floor().clamp(max=max(H - 2, 0))
    fu, fv = u - u0, v - v0
    # clamp: log(0) would be -inf; 1e-30 is far below any probability a softmax over a
    # heatmap gives in practice, so the gradient is lost only where the loss is huge anyway
    logp = torch.log(prob.float().clamp_min(1e-30)).reshape(B, J, H * W)
    u1 = (u0 + 1).clamp(max=W - 1)
    v1 = (v0 + 1).clamp(max=H - 1)

    def at(y, x):
        return logp.gather(-1, (y * W + x).long()[..., None])[..., 0]
    return -((1 - fu) * (1 - fv) * at(v0, u0) + fu * (1 - fv) * at(v0, u1)
             + (1 - fu) * fv * at(v1, u0) + fu * fv * at(v1, u1))


class DeconvHead(nn.Module):
    """n x (ConvTranspose 4x4 stride 2 -> BatchNorm -> ReLU), then a 1x1 conv to `out_channels`."""

    def __init__(self, cin: int, out_channels: int, channels: int = 256, layers: int = 3):
        super().__init__()
        mods = []
        for _ in range(layers):
            mods += [nn.ConvTranspose2d(cin, channels, 4, 2, 1, bias=False), nn.BatchNorm2d(channels), nn.ReLU(inplace=True)]
            cin = channels
        self.deconv = nn.Sequential(*mods)
        self.final = nn.Conv2d(cin, out_channels, 1)
        for m in self.deconv.modules():
            if isinstance(m, nn.ConvTranspose2d):
                nn.init.normal_(m.weight, std=0.001)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.final.weight, std=0.001)
        nn.init.zeros_(self.final.bias)

    def forward(self, x):
        return self.final(self.deconv(x))


class IntegralPoseNet(nn.Module):
    """Image [B,3,S,S] (ImageNet-normalised) -> joints [B,J,3] (3D) or [B,J,2] (2D) in [-1,1].

    mode "3d": the head outputs J*depth channels, soft-argmax over the volume.
    mode "2d": J channels, soft-argmax over the plane (the 2D detector).
    forward(x, return_prob=True) also returns the probabilities.
    """

    def __init__(self, joints: int = 17, mode: str = "3d", resnet: int = 50, width: float = 1.0,
                 depth: int = 64, deconv_channels: int = 256, deconv_layers: int = 3):
        super().__init__()
        if mode not in ("2d", "3d"):
            raise ValueError(f"IntegralPoseNet mode must be '2d' or '3d', got {mode!r}")
        self.joints, self.mode, self.depth = joints, mode, depth
        self.backbone = ResNet(resnet, width)
        out = joints * depth if mode == "3d" else joints
        self.head = DeconvHead(self.backbone.out_channels, out, deconv_channels, deconv_layers)

    def forward(self, x, return_prob: bool = False):
        logits = self.head(self.backbone(x))
        if self.mode == "3d":
            coords, prob = soft_argmax_3d(logits, self.depth)
        else:
            coords, prob = soft_argmax_2d(logits)
        return (coords, prob) if return_prob else coords
