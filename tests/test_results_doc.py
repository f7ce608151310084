"""The README's measured figures and docs/results.md are what bench/results.py writes from
the saved benchmark results (bench/results/*.json): no figure typed by hand can hide there."""
import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _results():
    spec = importlib.util.spec_from_file_location("bench_results", ROOT / "bench" / "results.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_readme_block_and_results_doc_are_regenerated():
    r = _results()
    text = (ROOT / "README.md").read_text()
    assert r.update_readme(text) == text, "README's measured figures differ from bench/results: run python bench/results.py"
    assert (ROOT / "docs" / "results.md").read_text() == r.render()
    block = r.render_readme_block()
    assert block.count("\n| ") == len(r.README_FIGURES) + 1       # header + one row per figure


def test_a_saved_result_reaches_the_readme(tmp_path, monkeypatch):
    r = _results()
    monkeypatch.setattr(r, "OUT", tmp_path)
    monkeypatch.setattr(r, "_commit", lambda: "abc1234")
    r.save("train-gt", {"ss_over_fs": 1.0734, "ru_gain": 0.021}, quick=False)
    r.save("chain", {"demo_s": 612.4}, quick=True)                   # quick runs stay out of the README
    block = r.render_readme_block()
    assert "| 1.07 | `python bench/train.py --detector gt` at `abc1234`" in block
    assert "wall clock (s) | not measured yet" in block
    # the CPU is named beside the figure: timings and trained metrics hold for one kind of CPU
    cpu = json.loads((tmp_path / "train-gt.json").read_text())["meta"]["cpu"]
    assert cpu and cpu == r.cpu_model()
    assert f"CPUs ({cpu}) |" in block
