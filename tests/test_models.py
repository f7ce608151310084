"""models/: ResNet names and sizes (torchvision's published figures), soft-argmax (closed form),
weight loading, the integral network's shapes."""
from __future__ import annotations

import math

import pytest
import torch

from models.integral import IntegralPoseNet, heatmap_confidence, heatmap_nll, soft_argmax_2d, soft_argmax_3d
from models.resnet import ResNet, load_backbone_weights


@pytest.mark.parametrize("depth,params", [(18, 11_689_512), (34, 21_797_672), (50, 25_557_032)])
def test_resnet_sizes_match_torchvision(depth, params):
    """torchvision's documented parameter counts, minus its 1000-way fc layer."""
    net = ResNet(depth)
    fc = net.out_channels * 1000 + 1000
    assert sum(p.numel() for p in net.parameters()) == params - fc


def test_resnet_names_match_torchvision():
    sd = ResNet(50).state_dict()
    assert len(sd) == 318  # torchvision resnet50: 320 entries, less fc.weight and fc.bias
    assert sd["layer1.0.downsample.0.weight"].shape == (256, 64, 1, 1)
    assert sd["layer4.2.conv3.weight"].shape == (2048, 512, 1, 1)
    assert sd["layer3.5.bn2.num_batches_tracked"].shape == ()
    sd18 = ResNet(18).state_dict()
    assert sd18["conv1.weight"].shape == (64, 3, 7, 7) and sd18["layer2.0.downsample.1.running_mean"].shape == (128,)
    assert "layer1.0.downsample.0.weight" not in sd18
    assert ResNet(18)(torch.zeros(1, 3, 64, 64)).shape == (1, 512, 2, 2)


def test_load_weights(tmp_path):
    src = ResNet(18, width=0.25)
    state = {"module." + k: v for k, v in src.state_dict().items()}
    state["module.fc.weight"] = torch.zeros(1000, 128)
    torch.save({"state_dict": state}, tmp_path / "w.pth")
    dst = ResNet(18, width=0.25)
    assert load_backbone_weights(dst, tmp_path / "w.pth") == []
    assert all(torch.equal(a, b) for a, b in zip(src.state_dict().values(), dst.state_dict().values()))
    with pytest.raises(ValueError, match="do not fit"):
        load_backbone_weights(ResNet(18, width=0.5), tmp_path / "w.pth")
    torch.save({"foo": torch.zeros(3)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="no ResNet parameter"):
        load_backbone_weights(ResNet(18, width=0.25), tmp_path / "other.pth")


def test_soft_argmax_closed_form():
    """A peaked heatmap returns its bin centre (2i + 1) / n - 1; a flat one the centre, 0."""
    logits = torch.full((1, 2, 4 * 8 * 6), -1e4)  # J=2, D=4, H=8, W=6
    vol = logits.reshape(1, 2, 4, 8, 6)
    vol[0, 0, 1, 5, 2] = 0
    c, p = soft_argmax_3d(vol.reshape(1, 8, 8, 6), depth=4)
    torch.testing.assert_close(c[0, 0], torch.tensor([(2 * 2 + 1) / 6 - 1, (2 * 5 + 1) / 8 - 1, (2 * 1 + 1) / 4 - 1]))
    torch.testing.assert_close(c[0, 1], torch.zeros(3), atol=1e-6, rtol=0)
    assert torch.allclose(p.sum((2, 3, 4)), torch.ones(1, 2))
    hm = torch.zeros(1, 1, 8, 8)
    hm[0, 0, 3, 6] = 50.0
    c2, p2 = soft_argmax_2d(hm)
    torch.testing.assert_close(c2[0, 0], torch.tensor([(2 * 6 + 1) / 8 - 1, (2 * 3 + 1) / 8 - 1]))
    assert heatmap_confidence(p2, c2)[0, 0] > 0.99
    _, pf = soft_argmax_2d(torch.zeros(1, 1, 8, 8))
    assert heatmap_confidence(pf, torch.zeros(1, 1, 2))[0, 0] < 0.2


def test_heatmap_nll_closed_form():
    """Cross-entropy against the bilinear splat of the target: 0 for a one-hot heatmap on a
    bin-centre target, log(H·W) for a uniform heatmap, the two-bin entropy mix for a target
    between two bins; minimised (over heatmaps) by the splat itself, whose soft-argmax is the target."""
    H, W = 6, 8
    centre = lambda i, n: (2 * i + 1) / n - 1
    p = torch.zeros(1, 1, H, W)
    p[0, 0, 2, 5] = 1.0
    t = torch.tensor([[[centre(5, W), centre(2, H)]]])
    torch.testing.assert_close(heatmap_nll(p, t), torch.zeros(1, 1), atol=1e-6, rtol=0)
    u = torch.full((1, 1, H, W), 1 / (H * W))
    torch.testing.assert_close(heatmap_nll(u, t), torch.full((1, 1), math.log(H * W)))
    # a target a quarter of the way from bin 5 to bin 6 (same row): weights 0.75 / 0.25
    tq = torch.tensor([[[0.75 * centre(5, W) + 0.25 * centre(6, W), centre(2, H)]]])
    q = torch.zeros(1, 1, H, W)
    q[0, 0, 2, 5], q[0, 0, 2, 6] = 0.75, 0.25
    ent = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    torch.testing.assert_close(heatmap_nll(q, tq), torch.full((1, 1), ent))
    assert float(heatmap_nll(u, tq)) > ent and float(heatmap_nll(p, tq)) > ent
    c, _ = soft_argmax_2d(torch.log(q.clamp_min(1e-30)))
    torch.testing.assert_close(c, tq)
    # targets on the last bin and beyond the grid are clamped, not indexed out of range
    edge = torch.tensor([[[1.5, centre(H - 1, H)]]])
    pe = torch.zeros(1, 1, H, W)
    pe[0, 0, H - 1, W - 1] = 1.0
    torch.testing.assert_close(heatmap_nll(pe, edge), torch.zeros(1, 1), atol=1e-6, rtol=0)


def test_heatmap_confidence_orders_spread():
    """The mass near the soft-argmax falls as an isotropic Gaussian heatmap widens: 1 for a
    delta, low for a uniform heatmap."""
    H = W = 16
    ys, xs = torch.meshgrid(torch.arange(H, dtype=torch.float32), torch.arange(W, dtype=torch.float32), indexing="ij")
    confs = []
    for sigma in (0.2, 0.5, 1.0, 2.0, 4.0):
        c, p = soft_argmax_2d((-((xs - 7.5) ** 2 + (ys - 7.5) ** 2) / (2 * sigma ** 2))[None, None])
        confs.append(float(heatmap_confidence(p, c)))
    assert confs[0] > 0.999 and all(a > b for a, b in zip(confs, confs[1:])) and confs[-1] < 0.2


@pytest.mark.parametrize("mode,dim", [("3d", 3), ("2d", 2)])
def test_integral_net_shapes(mode, dim):
    net = IntegralPoseNet(17, mode, 18, 0.125, depth=8, deconv_channels=16)
    x = torch.randn(2, 3, 64, 64)
    c, p = net(x, return_prob=True)
    assert c.shape == (2, 17, dim) and c.abs().max() <= 1
    assert p.shape == ((2, 17, 8, 16, 16) if mode == "3d" else (2, 17, 16, 16))
    c.sum().backward()
    assert net.backbone.conv1.weight.grad is not None
