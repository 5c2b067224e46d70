"""Input and output: models and the paper registry, image folders, evaluation, quantized-model
checkpoints and integer export, provenance. Imports ``ptqlib.engine`` and ``ptqlib.core``.

The checkpoint and integer-export API is re-exported here (``ptqlib.io.read_integers``).
"""
from .checkpoints import (
    FORMAT,
    FORMAT_VERSION,
    INTEGER_FORMAT,
    LAYOUTS,
    IntegerTensor,
    activation_integers,
    export_integers,
    float_state_hash,
    load_quantized,
    read_header,
    read_integers,
    save_quantized,
    weight_integers,
)

__all__ = ["FORMAT", "FORMAT_VERSION", "INTEGER_FORMAT", "LAYOUTS", "IntegerTensor", "activation_integers",
           "export_integers", "float_state_hash", "load_quantized", "read_header", "read_integers", "save_quantized",
           "weight_integers"]
