"""Training and running the networks of models/: the shared training loop and its
checkpoints (loop, checkpoint), image sources (images), augmentation (augment), the 3D network
(pose3d), the 2D detector (detector2d) and the refinement unit (refiner)."""

__all__ = ["augment", "checkpoint", "detector2d", "images", "loop", "pose3d", "refiner"]
