"""Rollouts run by the hub: operations on stored rollouts, the canary gate, the manager that acts, the REST API."""
