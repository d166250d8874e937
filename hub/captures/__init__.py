"""Input samples devices captured for retraining (opt-in on devices): export as arrays, and deletion."""

from hub.captures.export import export_samples, samples_npz

__all__ = ["export_samples", "samples_npz"]
