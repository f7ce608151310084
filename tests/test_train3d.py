"""The 3D training loop (pipeline/train3d.py) on a tiny in-test dataset store.

The store follows docs/stores.md: random skeletons seen by a ring of cameras, each crop a
drawing of the projected skeleton, crop boxes around the 2D bounding box.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import zarr

from pipeline.training import images, loop, pose3d
from pipeline.camera import look_at, world_to_camera, project
from pipeline.joints import J, ROOT
from pipeline.evaluation.plots import draw_skeleton_2d

# a standing skeleton, world Z up, mm
TEMPLATE = np.array([
    [0, 0, 1000], [-120, 0, 1000], [-120, 0, 550], [-120, 0, 100], [120, 0, 1000], [120, 0, 550], [120, 0, 100],
    [0, 0, 1230], [0, 0, 1460], [0, 0, 1560], [0, 0, 1700], [170, 0, 1440], [420, 0, 1440], [650, 0, 1440],
    [-170, 0, 1440], [-420, 0, 1440], [-650, 0, 1440]], dtype=np.float64)

TINY = {"resnet": 18, "width": 0.125, "deconv_channels": 16, "depth": 8, "input_size": 32, "batch_size": 8,
        "epochs": 2, "iters_per_epoch": 3, "eval_batch_size": 16, "num_threads": 1}


def make_poses(rng, F):
    """F random poses [F,J,3]: the template turned about Z, limbs jittered, walked about."""
    a = rng.uniform(-np.pi, np.pi, F)
    c, s = np.cos(a), np.sin(a)
    Rz = np.zeros((F, 3, 3))
    Rz[:, 0, 0], Rz[:, 0, 1], Rz[:, 1, 0], Rz[:, 1, 1], Rz[:, 2, 2] = c, -s, s, c, 1
    P = TEMPLATE + rng.normal(0, 80, (F, J, 3)) * (np.arange(J) != ROOT)[:, None]
    return np.einsum("fij,fkj->fki", Rz, P) + np.concatenate([rng.uniform(-500, 500, (F, 1, 2)), np.zeros((F, 1, 1))], -1)


def make_store(path, F=24, V=2, S=32, seed=0, test_share=0.25):
    """A dataset store of F frames and V views, S-pixel crops (docs/stores.md contract)."""
    rng = np.random.default_rng(seed)
    X = make_poses(rng, F)
    K = np.tile(np.array([[900.0, 0, 500], [0, 900, 500], [0, 0, 1]]), (V, 1, 1))
    Rs, ts = [], []
    for v in range(V):
        ang = 2 * np.pi * v / V
        R, t = look_at([4000 * np.cos(ang), 4000 * np.sin(ang), 1200], [0, 0, 1000])
        Rs.append(R), ts.append(t)
    R, t = np.stack(Rs), np.stack(ts)
    kp = project(X[:, None], K[None], R[None], t[None])  # [F,V,J,2]
    lo, hi = kp.min(2), kp.max(2)
    side = (hi - lo).max(-1) * 1.25
    centre = (lo + hi) / 2
    boxes = np.concatenate([centre - side[..., None] / 2, side[..., None], side[..., None]], -1)
    images = np.zeros((F, V, S, S, 3), np.uint8)
    for f in range(F):
        for v in range(V):
            u = (kp[f, v] - boxes[f, v, :2]) * S / boxes[f, v, 2:]
            images[f, v] = draw_skeleton_2d(images[f, v], u, thickness=1, radius=1)
    g = zarr.open_group(str(path), mode="w")

    def put(name, arr, dims):
        a = g.create_array(name, shape=arr.shape, dtype=arr.dtype, dimension_names=dims)
        a[...] = arr
    put("images", images, ["frame", "view", "y", "x", "channel"])
    put("crop_boxes", boxes.astype(np.float32), ["frame", "view", "box"])
    put("keypoints2d_gt", np.concatenate([kp, np.ones(kp.shape[:-1] + (1,))], -1).astype(np.float32),
        ["frame", "view", "joint", "coord"])
    put("poses3d_world", X.astype(np.float32), ["frame", "joint", "xyz"])
    put("rig", np.zeros(F, np.int16), ["frame"])
    put("K", K[None], ["rig", "view", "i", "j"])
    put("R", R[None], ["rig", "view", "i", "j"])
    put("t", t[None], ["rig", "view", "i"])
    put("dist", np.zeros((1, V, 5)), ["rig", "view", "k"])
    put("size", np.full((1, V, 2), 1000.0), ["rig", "view", "wh"])
    split = (np.arange(F) >= F * (1 - test_share)).astype(np.int16)
    subject = split.copy()
    put("split", split, ["frame"])
    put("subject", subject, ["frame"])
    put("clip", np.zeros(F, np.int16), ["frame"])
    put("frame_index", np.arange(F, dtype=np.int32), ["frame"])
    g.attrs.update({"dataset": "tiny", "subjects": ["S1", "S9"], "clips": ["c0"], "crop_size": S, "fps": 50})
    return g


@pytest.fixture
def store(tmp_path):
    return make_store(tmp_path / "ds.zarr")


def test_gt_camera_poses_root_relative_and_rigid(store):
    """FS targets: rigid transforms of the world poses (bone lengths kept, checked against
    pipeline.camera.world_to_camera) and zero at the root."""
    P = pose3d.gt_camera_poses(store)
    X = store["poses3d_world"][:].astype(np.float64)
    Xc = world_to_camera(X[:, None], store["R"][0][None], store["t"][0][None])
    np.testing.assert_allclose(P, Xc - Xc[:, :, :1], atol=1e-3)
    assert np.all(P[:, :, ROOT] == 0)


def test_train_predict_resume_exact(store, tmp_path):
    """Two epochs straight vs one epoch, 'crash', resume: bit-identical weights and predictions."""
    a = pose3d.train(TINY, store, None, None, tmp_path / "a", progress=False)
    one = {**TINY, "epochs": 1}
    pose3d.train(one, store, None, None, tmp_path / "b", progress=False)
    (tmp_path / "b" / "final.pt").unlink()  # as if killed after epoch 1's checkpoint
    b = pose3d.train(TINY, store, None, None, tmp_path / "b", progress=False)
    wa, wb = torch.load(a, weights_only=True)["model"], torch.load(b, weights_only=True)["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert sorted(p.name for p in (tmp_path / "b" / "checkpoints").iterdir()) == ["epoch-0001.pt", "epoch-0002.pt"]
    pa = pose3d.predict(a, store, slice(0, 5), progress=False)
    assert pa.shape == (5, 2, J, 3) and np.all(pa[:, :, ROOT] == 0) and np.all(np.isfinite(pa))
    np.testing.assert_array_equal(pa, pose3d.predict(b, store, np.arange(5), progress=False))
    g = zarr.open_group(str(tmp_path / "a"), mode="r")
    assert g["loss"].shape == (2,) and g.attrs["training"]["units"] == "mm"
    # complete: returned as it is, no retraining
    t0 = (tmp_path / "a" / "final.pt").stat().st_mtime_ns
    assert pose3d.train(TINY, store, None, None, tmp_path / "a", progress=False) == a
    assert (tmp_path / "a" / "final.pt").stat().st_mtime_ns == t0



def test_colour_permute_trains_six_copies_per_epoch_of_real_samples(store, tmp_path):
    """colour_permute: fit sees each (frame, view) in the 6 RGB orders (n_samples 6x), while an
    epoch stays a pass over the real samples (iters_per_epoch None); off, the plain samples."""
    cfg = {**TINY, "iters_per_epoch": None, "batch_size": 4, "epochs": 1}
    on = torch.load(pose3d.train({**cfg, "colour_permute": True}, store, None, None, tmp_path / "on",
                                  progress=False), weights_only=True)
    off = torch.load(pose3d.train({**cfg, "colour_permute": False}, store, None, None, tmp_path / "off",
                                   progress=False), weights_only=True)
    assert on["n_samples"] == 6 * off["n_samples"]
    assert on["images_seen"] == off["images_seen"] == (off["n_samples"] // 4) * 4
    # deterministic off (cuDNN autotuning on a GPU) trains too, and leaves torch's flags as they were
    before = torch.are_deterministic_algorithms_enabled()
    pose3d.train({**cfg, "deterministic": False}, store, None, None, tmp_path / "fast", progress=False)
    assert torch.are_deterministic_algorithms_enabled() == before
    assert torch.backends.cudnn.benchmark is False


def test_only_the_newest_checkpoints_are_kept_and_resume_from_them(store, tmp_path):
    """keep_checkpoints 2: after 3 epochs only epochs 2 and 3 remain; a run killed after epoch 3
    of 4 resumes from them and ends bit-identical to an uninterrupted one."""
    cfg = {**TINY, "epochs": 4, "iters_per_epoch": 2, "keep_checkpoints": 2}
    a = pose3d.train(cfg, store, None, None, tmp_path / "a", progress=False)
    pose3d.train({**cfg, "epochs": 3}, store, None, None, tmp_path / "b", progress=False)
    assert sorted(p.name for p in (tmp_path / "b" / "checkpoints").iterdir()) == ["epoch-0002.pt", "epoch-0003.pt"]
    (tmp_path / "b" / "final.pt").unlink()
    b = pose3d.train(cfg, store, None, None, tmp_path / "b", progress=False)
    wa, wb = torch.load(a, weights_only=True)["model"], torch.load(b, weights_only=True)["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    with pytest.raises(ValueError, match="keep_checkpoints"):
        pose3d.resolve_cfg({"keep_checkpoints": -1})

def test_loss_decreases_on_labels(store, tmp_path):
    """Trained on label-style targets (scale-free), the loss falls: the loop learns."""
    P = pose3d.gt_camera_poses(store)
    targets = P / 250.0
    mask = np.ones(P.shape[:3], bool)
    mask[:, :, 5] = False  # a masked joint: its NaN must not reach the loss
    targets[:, :, 5] = np.nan
    cfg = {**TINY, "epochs": 6, "iters_per_epoch": 6, "augment": {"occluder_prob": 0.0}}
    ck = pose3d.train(cfg, store, targets, mask, tmp_path / "ss", progress=False)
    losses = zarr.open_group(str(tmp_path / "ss"), mode="r")["loss"][:]
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]
    assert torch.load(ck, weights_only=True)["units"] == "label"


def test_bad_inputs(store, tmp_path):
    P = pose3d.gt_camera_poses(store)
    with pytest.raises(ValueError, match="expects 64x64"):
        pose3d.train({**TINY, "input_size": 64}, store, None, None, tmp_path / "x", progress=False)
    with pytest.raises(ValueError, match="NaN"):
        bad = P.copy()
        bad[0, 0, 3] = np.nan
        pose3d.train(TINY, store, bad, np.ones(P.shape[:3], bool), tmp_path / "x", progress=False)
    with pytest.raises(ValueError, match=r"\[F,V,J,3\]"):
        pose3d.train(TINY, store, P[:, :, :16], None, tmp_path / "x", progress=False)
    with pytest.raises(ValueError, match="empty training set"):
        pose3d.train(TINY, store, P, np.zeros(P.shape[:3], bool), tmp_path / "x", progress=False)
    with pytest.raises(ValueError, match="unknown configuration keys"):
        pose3d.train({**TINY, "widht": 2}, store, None, None, tmp_path / "x", progress=False)
    ck = pose3d.train({**TINY, "epochs": 1}, store, None, None, tmp_path / "y", progress=False)
    with pytest.raises(ValueError, match="another architecture"):
        pose3d.train({**TINY, "epochs": 1, "width": 0.25}, store, None, None, tmp_path / "y", progress=False)
    with pytest.raises(ValueError, match="a 2d one is needed"):
        loop.load_model(ck, "2d")
    g = zarr.open_group(str(tmp_path / "gray.zarr"), mode="w")
    g.create_array("images", shape=(4, 1, 32, 32, 1), dtype="uint8", dimension_names=list("fvyxc"))
    with pytest.raises(ValueError, match="RGB"):
        images.dataset_images(g, 32)


def test_crop_rotations_look_through_the_crop_centre(store):
    """The virtual camera's optical axis is the ray through the crop centre (K⁻¹ of the
    centre pixel, closed form), and the rotation is proper (RᵀR = I, det 1)."""
    R = pose3d.crop_rotations(store)
    b = store["crop_boxes"][:].astype(np.float64)
    c = b[..., :2] + b[..., 2:] / 2
    d = np.einsum("ij,fvj->fvi", np.linalg.inv(store["K"][0, 0]), np.concatenate([c, np.ones(c.shape[:-1] + (1,))], -1))
    d /= np.linalg.norm(d, axis=-1, keepdims=True)
    np.testing.assert_allclose(np.einsum("fvij,fvj->fvi", R, d), np.broadcast_to([0, 0, 1.0], d.shape), atol=1e-9)
    np.testing.assert_allclose(np.linalg.det(R), 1.0)


def test_a_network_starts_from_another_but_its_output_layer(store, tmp_path):
    """loop.seed_weights, the paper's recipe (its 3D networks start from the MPII-trained 2D
    one, every layer whose shape matches; the output layer, another size, keeps its fresh
    initialisation): here a 4-deep volume's network seeds an 8-deep one."""
    src = pose3d.train({**TINY, "depth": 4, "epochs": 1}, store, None, None, tmp_path / "src", progress=False)
    arch = {k: pose3d.resolve_cfg(TINY)[k] for k in loop.ARCH_KEYS}
    torch.manual_seed(0)
    fresh = loop.build_model(arch, "3d").state_dict()
    torch.manual_seed(0)
    model = loop.build_model(arch, "3d")
    left = loop.seed_weights(model, src)
    assert left == ["head.final.weight", "head.final.bias"]
    given = torch.load(src, weights_only=True)["model"]
    got = model.state_dict()
    for k, v in got.items():
        assert torch.equal(v, fresh[k] if k in left else given[k]), k
    # through training: the checkpoint says what it started from, and it differs from a fresh start
    a = pose3d.train({**TINY, "epochs": 1, "init": str(src)}, store, None, None, tmp_path / "a", progress=False)
    b = pose3d.train({**TINY, "epochs": 1}, store, None, None, tmp_path / "b", progress=False)
    ca, cb = torch.load(a, weights_only=True), torch.load(b, weights_only=True)
    assert ca["cfg"]["init"] == str(src) and cb["cfg"]["init"] is None
    assert not torch.equal(ca["model"]["backbone.conv1.weight"], cb["model"]["backbone.conv1.weight"])
    # another width: refused, naming the file and a layer
    with pytest.raises(ValueError, match=r"init .*src.*differs from this one beyond the output layer \(backbone"):
        loop.seed_weights(loop.build_model({**arch, "width": 0.25}, "3d"), src)
