"""Training and running the networks of models/: the shared training loop and its
checkpoints (loop, checkpoint), image sources (images), augmentation (augment), the 3D network
(pose3d), the 2D detector (detector2d), the refinement unit (refiner) and the CPU threads
they use (threads)."""
import os as _os

# OpenMP threads that wait by sleeping, not spinning (read once, when torch's OpenMP starts:
# set before this package imports torch; a user's setting wins). With every core in use
# (threads.py), a spinning thread that shares its core with another process stalls each
# parallel region: two threads then ran several times slower than one.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__all__ = ["augment", "checkpoint", "detector2d", "images", "loop", "pose3d", "refiner", "threads"]
