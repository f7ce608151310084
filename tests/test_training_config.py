"""Training configurations are checked when resolved (types and ranges of every key), with a
one-line ValueError naming the key, before anything is written."""
from __future__ import annotations

import pytest

from pipeline.training import augment, detector2d, refiner, pose3d
from pipeline.orchestration import BY_NAME, config
from pipeline.detectors import gt, network


def _params(cfg, stage):
    """A stage's section without the orchestration's own keys (what its module receives)."""
    return {k: v for k, v in cfg[stage].items() if k not in BY_NAME[stage].own_keys}


def _one_line_error(fn, key: str):
    with pytest.raises(ValueError) as e:
        fn()
    msg = str(e.value)
    assert key in msg and "\n" not in msg, msg
    return msg


@pytest.mark.parametrize("preset", ["cpu", "paper"])
@pytest.mark.parametrize("detector", ["network", "gt"])
def test_resolved_presets_pass(preset, detector):
    """What the orchestration resolves (presets, their modules' sections) passes every check."""
    cfg = config.resolve(preset, {"detect2d.detector": detector})
    t = pose3d.resolve_cfg({**_params(cfg, "train3d"), "preset": preset})
    p = detector2d.resolve_cfg({**_params(cfg, "pretrain2d"), "preset": preset})
    r = refiner.resolve_cfg(_params(cfg, "refine"))
    assert t["epochs"] >= 1 and p["heatmap_nll_weight"] >= 0 and r["epochs"] >= 1
    (network if detector == "network" else gt).resolve_cfg(_params(cfg, "detect2d"))


def test_the_issue_cases():
    assert "epochs must be" in _one_line_error(lambda: pose3d.resolve_cfg({"epochs": -3}), "train3d: epochs")
    _one_line_error(lambda: pose3d.resolve_cfg({"epochs": 0}), "epochs")  # was TypeError ... NoneType
    _one_line_error(lambda: pose3d.resolve_cfg({"num_threads": 0}), "num_threads")
    _one_line_error(lambda: pose3d.resolve_cfg({"num_threads": "abc"}), "num_threads")
    _one_line_error(lambda: pose3d.resolve_cfg({"lr": "1e-3"}), "lr")  # YAML 1.1 reads 1e-3 as a string
    _one_line_error(lambda: pose3d.resolve_cfg({"lr": 0.0}), "lr")
    _one_line_error(lambda: pose3d.resolve_cfg({"lr_steps": [0]}), "lr_steps")
    _one_line_error(lambda: pose3d.resolve_cfg({"resnet": 19}), "resnet")
    _one_line_error(lambda: pose3d.resolve_cfg({"amp": "yes"}), "amp")
    _one_line_error(lambda: pose3d.resolve_cfg({"batch_size": 1}), "batch_size")
    _one_line_error(lambda: pose3d.resolve_cfg({"target_extent": 1.5}), "target_extent")
    _one_line_error(lambda: pose3d.resolve_cfg({"min_valid_joints": 18}), "min_valid_joints")
    _one_line_error(lambda: pose3d.resolve_cfg({"preset": "gpu"}), "preset")
    _one_line_error(lambda: detector2d.resolve_cfg({"heatmap_nll_weight": -1}), "pretrain2d: heatmap_nll_weight")
    # an epochs value written as 12.0 is an integer
    assert pose3d.resolve_cfg({"epochs": 12.0})["epochs"] == 12.0


@pytest.mark.parametrize("key", sorted(pose3d.PRESETS["cpu"]))
def test_every_training_key_rejects_a_wrong_type(key):
    if key in ("pretrained", "init"):  # a path: any string
        _one_line_error(lambda: pose3d.resolve_cfg({key: 3}), key)
        return
    _one_line_error(lambda: pose3d.resolve_cfg({key: "abc"}), key)
    if key not in ("iters_per_epoch", "num_threads", "augment"):  # augment None: the defaults
        _one_line_error(lambda: pose3d.resolve_cfg({key: None}), key)


def test_augmentation_ranges():
    assert augment.resolve(None) == augment.resolve({}) == augment.DEFAULTS
    for bad, key in (({"rotation": -1}, "rotation"), ({"rotation_prob": 1.5}, "rotation_prob"),
                     ({"scale": [1.2, 0.8]}, "scale"), ({"scale": 1.0}, "scale"), ({"flip": 1}, "flip"),
                     ({"color": "x"}, "color"), ({"occluder_size": [0.1, 2.0]}, "occluder_size"),
                     ({"occluder_prob": None}, "occluder_prob")):
        _one_line_error(lambda: augment.resolve(bad), key)
        _one_line_error(lambda: pose3d.resolve_cfg({"augment": bad}), key)
    _one_line_error(lambda: augment.resolve("off"), "augment")


@pytest.mark.parametrize("bad,key", [({"dropout": 1.5}, "dropout"), ({"epochs": 0}, "epochs"),
                                     ({"batch_size": 1}, "batch_size"), ({"lr_decay": 0}, "lr_decay"),
                                     ({"training_data": "mocap"}, "training_data"), ({"hidden": 2.5}, "hidden"),
                                     ({"num_threads": 0}, "num_threads"), ({"copies": "2"}, "copies"),
                                     ({"preset": "gpu"}, "preset"), ({"seed": -1}, "seed")])
def test_refiner_ranges(bad, key):
    _one_line_error(lambda: refiner.resolve_cfg(bad), key)


def test_detector_ranges():
    for bad, key in (({"drop_invisible": "no"}, "drop_invisible"), ({"sigma_px": -1}, "sigma_px"),
                     ({"invisible_conf": 2}, "invisible_conf"), ({"seed": 0.5}, "seed"),
                     ({"conf_outlier": "high"}, "conf_outlier"), ({"swap_rate": 1.5}, "swap_rate")):
        _one_line_error(lambda: gt.resolve_cfg(bad), f"gt detector: {key}")
    _one_line_error(lambda: network.resolve_cfg({"min_confidence": 2}), "network detector: min_confidence")
    assert gt.resolve_cfg({"conf_outlier": None})["conf_outlier"] is None
