"""`edgefleet demo`: a digits model trained on the spot, a hub on embedded defaults and simulated devices."""
