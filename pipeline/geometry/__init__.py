"""Multi-view geometry: relative pose from joints (epipolar), optimal and N-view triangulation,
the vector median that fuses them (median),
static-rig calibration with bundle adjustment (rig; its residuals and exact Jacobian:
bundle), frame offsets between views (sync), and
the label stage's logic: its settings and input screening (label_settings), the cameras for
labelling (calibration) and the pseudo-labels (labels), and labels back in their rig's world
(label_world); several people per view: which detections are the same person across views and
over time (people, tracks); metric scale and an upright world from the person (world); an
estimated rig against a reference calibration (rig_error). Numpy
and OpenCV (numba for median's per-point loop), float64, shapes in every docstring; nothing
here reads or writes a store."""

__all__ = ["bundle", "calibration", "epipolar", "label_settings", "label_world", "labels", "median", "people", "rig",
           "rig_error", "sync", "tracks", "triangulate", "world"]
