"""What the notebooks need: model and images for a lesson, activations by kind, fitted
quantizers, scale sweeps, cached accuracy tables, figures and interactive explorers.
Uses ``ptqlib.io`` and below; never ``ptqlib.app``."""
