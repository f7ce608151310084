"""Training and running the networks of models/: the shared training loop and its
checkpoints (loop, checkpoint), image sources (images), augmentation (augment), the 3D network
(pose3d), the 2D detector (detector2d), the refinement unit (refiner) and the CPU threads
they use (threads)."""
import os as _os

# How OpenMP threads wait (threads.wait_policy: sleep when other processes keep the cores busy,
# spin otherwise) is read once, when torch starts OpenMP: decided before torch is imported
# here; a user's OMP_WAIT_POLICY wins.
if "OMP_WAIT_POLICY" not in _os.environ:
    from .threads import wait_policy as _wait_policy
    _policy = _wait_policy()
    if _policy:
        _os.environ["OMP_WAIT_POLICY"] = _policy

__all__ = ["augment", "checkpoint", "detector2d", "images", "loop", "pose3d", "refiner", "threads"]
