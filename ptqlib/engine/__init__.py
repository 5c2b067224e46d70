"""The engine: quantized layers and attention, wrapping a timm model, capture, calibration,
the memory guard, the recipe dataclass and its presets. Imports only ``ptqlib.core``; no
files, plotting or pandas."""
