"""Evaluation: the paper's metrics (metrics), the Pose Structure Score (pss), scoring poses
against a dataset's ground truth and the paper's Table 1 (scoring), the markdown report with
its figures (report, plots, sheet), and what can be measured without 3D ground truth
(selfcheck)."""

__all__ = ["metrics", "plots", "pss", "report", "scoring", "selfcheck", "sheet"]
