"""Passes: source passes change the PyTorch module, artifact passes change an exported file."""
