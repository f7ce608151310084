"""The refinement unit (EpipolarPose §3.3): noisy 3D pose in, refined 3D pose out.

A stem Linear, then `blocks` residual blocks of 2 x (Linear + BatchNorm + LeakyReLU +
Dropout); after every block a linear read-out gives a pose (the intermediate ones feed the
intermediate loss). The network predicts a correction added to its input, so an untrained
unit starts near the identity.
"""
from __future__ import annotations

import torch
from torch import nn


def _layer(n: int, dropout: float, slope: float) -> list[nn.Module]:
    return [nn.Linear(n, n), nn.BatchNorm1d(n), nn.LeakyReLU(slope, inplace=True), nn.Dropout(dropout)]


class ResidualBlock(nn.Module):
    def __init__(self, n: int, dropout: float, slope: float):
        super().__init__()
        self.body = nn.Sequential(*_layer(n, dropout, slope), *_layer(n, dropout, slope))

    def forward(self, x):
        return x + self.body(x)


class RefineNet(nn.Module):
    """poses [B,J,3] -> list of `blocks` refined poses [B,J,3]; the last one is the output."""

    def __init__(self, joints: int = 17, hidden: int = 1024, blocks: int = 2, dropout: float = 0.5,
                 slope: float = 0.2):
        super().__init__()
        self.joints = joints
        n_in = joints * 3
        self.stem = nn.Sequential(nn.Linear(n_in, hidden), nn.BatchNorm1d(hidden), nn.LeakyReLU(slope, inplace=True),
                                  nn.Dropout(dropout))
        self.blocks = nn.ModuleList(ResidualBlock(hidden, dropout, slope) for _ in range(blocks))
        self.heads = nn.ModuleList(nn.Linear(hidden, n_in) for _ in range(blocks))
        for h in self.heads:  # start at the identity map
            nn.init.zeros_(h.weight)
            nn.init.zeros_(h.bias)

    def forward(self, poses: torch.Tensor) -> list[torch.Tensor]:
        B = poses.shape[0]
        flat = poses.reshape(B, -1)
        h = self.stem(flat)
        outs = []
        for block, head in zip(self.blocks, self.heads):
            h = block(h)
            outs.append((flat + head(h)).reshape(B, self.joints, 3))
        return outs
