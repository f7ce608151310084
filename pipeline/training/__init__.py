"""Training and running the networks of models/: the shared training loop and its
checkpoints (loop, checkpoint), image sources (images), augmentation (augment), the 3D network
(pose3d), the 2D detector (detector2d), the refinement unit (refiner) and the CPU threads
they use (threads)."""

__all__ = ["augment", "checkpoint", "detector2d", "images", "loop", "pose3d", "refiner", "threads"]
