"""Bundles: building and publishing signed bundles, the content-addressed artifact store, the TUF repository."""
