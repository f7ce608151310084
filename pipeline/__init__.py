"""EpipolarPose pipeline: pure stage logic (no Prefect imports)."""
__version__ = "0.1.0"
