"""The evaluation report (pipeline/report.py): every section from a full results dict, the
numbers in its tables are the evaluation's, figures are real PNGs, and missing inputs are
listed rather than crashing."""
import numpy as np
import pytest

from pipeline.evaluation import scoring as ev
from pipeline.evaluation import pss, report
from tests import synth
from pipeline.joints import J


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    rng = np.random.default_rng(0)
    F, V = 12, 2
    gt = synth.random_poses(F * V, seed=11).reshape(F, V, J, 3) + [0, 0, 4000]
    rr = gt - gt[..., :1, :]
    actions = ["walk"] * 6 + ["sit"] * 6
    ref = pss.build_reference(synth.random_poses(600, seed=12), ks=(50, 100), n_init=1)
    preds = {"FS": (rr + rng.normal(0, 25, rr.shape), "mm", None),
             "SS": ((rr + rng.normal(0, 60, rr.shape)) / 250.0, "bones", 250.0),
             "SS + RU": ((rr + rng.normal(0, 45, rr.shape)) / 250.0, "bones", 250.0)}
    models = {}
    pf_dir = tmp_path_factory.mktemp("pf")
    for i, (name, (p, units, mb)) in enumerate(preds.items()):
        s, df = ev.score(p, gt, actions=actions, units=units, mean_bone_mm=mb, reference=ref, model=name)
        # one as a DataFrame, the others as Parquet paths: both are accepted
        models[name] = {"summary": s, "per_frame": df if i == 0 else ev.write_per_frame(df, pf_dir / f"{i}.parquet")}
    lab, _ = ev.score(rr + rng.normal(0, 15, rr.shape), gt, actions=actions, reference=ref)
    stab = [pss.stability(synth.random_poses(300, seed=13), 10, runs=3, pred=rr.reshape(-1, J, 3),
                          gt=gt.reshape(-1, J, 3), n_init=1, progress=False)]
    return {
        "title": "test report", "dataset": "synthetic",
        "labels": {"GT 2D, known extrinsics": {"summary": lab, "coverage": 0.97, "note": "σ = 0"}},
        "models": models,
        "pss_reference": ref, "pss_stability": stab,
        "samples": {"images": rng.integers(0, 255, (F, V, 32, 32, 3), dtype=np.uint8), "gt": gt,
                    "predictions": {n: p for n, (p, _, _) in preds.items()}},
        "n_worst": 2,
        "timings": {"dataset": 1.5, "label": 12.25},
        "config": {"detector": "gt"},
        "training": {"SS": {"loss": [0.3, 0.1, 0.05], "images_per_s": 321.0, "note": "smooth L1",
                            "start": "the 2D detector",
                            "validation": [{"loss": 0.4, "mpjpe": 120.0, "nmpjpe": 110.0, "units": "mm"},
                                           {"loss": 0.2, "mpjpe": 100.0, "nmpjpe": 95.0, "units": "mm"},
                                           {"loss": 0.25, "mpjpe": 105.0, "nmpjpe": 97.0, "units": "mm"}]},
                     "RU": {"loss": [1.0, 0.5]}},
    }


def test_full_report(results, tmp_path):
    import matplotlib.image as mpimg

    path = report.write_report(results, tmp_path)
    text = path.read_text()
    for section in ("Table 1", "Tables 2 and 3", "Per action", "PSS stability", "Fig. 6",
                    "Qualitative", "Worst frames", "Stage timings", "Configuration", "## Training"):
        assert section in text, section
    assert "Not in this report" not in text
    # the tables carry the evaluation's own numbers
    for name, e in results["models"].items():
        o = e["summary"]["overall"]
        assert f"| {name} | {o['mpjpe']:.1f} | {o['nmpjpe']:.1f} |" in text
        assert f"{100 * o['mpss_k50']:.1f}" in text
    assert "| 97.0 |" in text  # label coverage
    assert "| sum of build times | 13.8 |" in text  # not called a total: a run's wall clock differs
    # a spread is quoted with the number of poses it scored
    stab = results["pss_stability"][0]
    assert stab["n_scored"] == len(results["samples"]["gt"].reshape(-1, J, 3))
    assert f"{stab['mpss_range_pct']:.2f} | {stab['n_scored']} |" in text
    # the held-out validation per epoch: last epoch's MPJPE / NMPJPE and the best epoch
    assert ("| SS | the 2D detector | 3 | 0.3 | 0.05 | 105.0 / 97.0 (best 100.0 at epoch 2) mm | 321.0 | smooth L1 |"
            in text)
    assert "| RU | - | 2 | 1 | 0.5 | - | – |" in text and "Validation: a held-out clip" in text
    pngs = sorted(p.name for p in tmp_path.glob("*.png"))
    assert {"qualitative.png", "pss_centres_k50.png", "per_action_mpjpe.png", "error_cdf.png", "training_curves.png",
            "worst_FS.png", "worst_SS.png", "worst_SS___RU.png"} <= set(pngs)
    for p in pngs:
        assert f"({p})" in text
        im = mpimg.imread(tmp_path / p)
        assert im.ndim == 3 and im.shape[0] > 100 and im.std() > 0


def test_partial_report_lists_what_is_missing(results, tmp_path):
    only = {"models": {"SS": {"summary": results["models"]["SS"]["summary"]}}}
    text = report.write_report(only, tmp_path).read_text()
    assert "Tables 2 and 3" in text and "| SS |" in text
    for missing in ("training-label table", "PSS stability", "cluster centres", "qualitative figure",
                    "training curves"):
        assert missing in text
    assert not (tmp_path / "qualitative.png").exists()


def test_json_stored_summaries(results, tmp_path):
    """Summaries that went through a JSON store (NaN written as the string "nan") still render."""
    import copy

    s = copy.deepcopy(results["models"]["SS"]["summary"])
    s["overall"]["nmpjpe"] = "nan"
    s["per_action"]["walk"]["mpjpe"] = None
    text = report.write_report({"models": {"SS": {"summary": s}}}, tmp_path).read_text()
    assert f"| SS | {s['overall']['mpjpe']:.1f} | – |" in text
    assert "| walk | – |" in text


def test_bad_results(tmp_path, results):
    with pytest.raises(ValueError, match="summary"):
        report.write_report({"models": {"SS": {"per_frame": None}}}, tmp_path)
    with pytest.raises(ValueError, match="main_model"):
        report.write_report({"models": {"SS": {"summary": results["models"]["SS"]["summary"]}},
                             "main_model": "FS"}, tmp_path)
    with pytest.raises(ValueError, match="dict"):
        report.write_report([1, 2], tmp_path)
