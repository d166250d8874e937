"""Drift that acts: per-version policies that pause rollouts, raise alerts and roll cohorts back."""
