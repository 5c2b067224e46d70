"""Save and load calibrated models; export quantized tensors as integer codes.

**Quantized model file** (:func:`save_quantized`, :func:`load_quantized`): one ``.safetensors``
file holding every calibrated quantizer's tensors under ``<quantizer name>.<parameter>``
(``blocks.0.attn.qkv.input_quant.scale``, ``blocks.0.attn.matmul_av.a_quant.m``, ...) and, in
the safetensors metadata under ``"ptqlib"``, a JSON header: format and version, the ptqlib,
torch and timm versions, the model name (with its tag) and architecture, the checkpoint the
float weights came from and a SHA-256 of those weights, the :class:`~ptqlib.config.PTQConfig`,
the bit-widths, each quantizer's kind, bits and enabled flag, and free-form ``info`` (seed,
calibration files, accuracy). The float weights are *not* in the file: loading rebuilds the
model from its checkpoint (or timm), wraps it with the saved config and sets the saved scales,
so the loaded model computes exactly, bit for bit, what the saved one computed. A reparameterised
model (RepQ-ViT, ``config.reparam``) also stores each fold's ratio and offset (float64) under
``reparam.<norm>.ratio`` / ``.offset`` and the folded LayerNorms in the header's ``reparam``;
loading repeats the folds on the float weights before it checks their hash. A model whose
weights calibration corrected (ERQ, ``config.weight_correction``) stores those layers' weights
under ``corrected.<layer>.weight`` (header ``corrected``); loading copies them in after the folds.

**Integer export** (:func:`weight_integers`, :func:`activation_integers`, :func:`export_integers`):
each quantized tensor as the integer codes an integer kernel would store, with the parameters
that give them values. Layouts (``LAYOUTS``), for ``k`` bits and ``n = 2^(k-1)``:

=================  ===============================================================================
uniform_signed     two's complement ``q`` in ``[-n, n-1]``; value ``q · scale``
uniform_unsigned   ``q`` in ``[0, 2^k - 1]``; value ``q · scale``
uniform_shifted    ``q`` in ``[0, 2^k - 1]``; value ``q · scale - 0.16997…`` (post-GELU, asymmetric)
twin_softmax       bit ``k-1`` is the range bit ``r``, bits ``0..k-2`` the magnitude ``q`` in
                   ``[0, n-1]``; value ``q · 2^-(k-1)`` if ``r`` else ``q · 2^-(k-1) / 2^m``
twin_gelu          bit ``k-1`` is the sign bit ``s``, bits ``0..k-2`` the magnitude ``q`` in
                   ``[0, n-1]``; value ``-q · scale / 2^m`` if ``s`` else ``q · scale``
log2               ``c`` in ``[0, 2^k - 1]``; value ``scale · 2^-c``, ``c = 2^k - 1`` means 0
log_sqrt2          ``c`` in ``[0, 2^k - 1]``; ``j = c >> 1``, value ``scale · 2^-j``, times
                   ``2^-0.5`` for odd ``c``; ``c = 2^k - 1`` means 0
adalog             ``c`` in ``[0, 2^k - 1]``, ``a = 4q``; value ``scale · 2^-⌊4c/a⌋ · 2^(-(4c mod a)/a)``
                   (a float32 table of ``a`` entries); ``c = 2^k - 1`` means 0
``*_shifted``      the same three for post-GELU values, minus ``0.16997…`` (GELU's minimum)
=================  ===============================================================================

Every code fits in ``k`` bits, and :meth:`IntegerTensor.dequantize` reproduces the fake-quantized
tensor exactly. Codes are stored in the smallest of int8, uint8, int16, int32 that holds them.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import safetensors
import safetensors.torch
import torch
from torch import Tensor, nn

from .. import __version__
from .files import write_atomic
from .provenance import versions
from ..engine.config import PTQConfig
from ..errors import PtqlibError
from ..engine.layers import QuantConv2d, QuantLinear
from ..engine.calibrate import CORRECTED_ATTR, corrected_layers
from ..engine.reparam import apply_folds, folds_of
from ..core.quant import QUANTIZER_KINDS, Quantizer, quantizer_for_layout
from ..engine.wrap import quantize_model, quantizers, sites

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "INTEGER_FORMAT",
    "LAYOUTS",
    "float_state_hash",
    "save_quantized",
    "read_header",
    "load_quantized",
    "IntegerTensor",
    "weight_integers",
    "activation_integers",
    "export_integers",
    "read_integers",
]

FORMAT = "ptqlib-quantized"
#: Bumped whenever a file written now could not be read correctly by an older reader. Format 2
#: added reparameterised LayerNorms (``reparam``) and corrected weights (``corrected``); a format-1
#: file has neither and reads as before.
FORMAT_VERSION = 2
INTEGER_FORMAT = "ptqlib-integers"
HEADER_KEY = "ptqlib"
_REMAKE = "re-create it with 'python -m ptqlib quantize --save FILE'"

#: Every integer layout with its documentation, as each quantizer kind declares it.
LAYOUTS: dict[str, str] = {name: doc for cls in QUANTIZER_KINDS.values() for name, doc in cls.layouts.items()}
#: The quantizer parameters an integer tensor carries (``<quantizer>.<parameter>`` in an export).
_PARAMS = ("scale", "m", "q")


# ----------------------------------------------------------------------------- helpers


def _architecture(model: nn.Module) -> str:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    arch = cfg.get("architecture") if isinstance(cfg, dict) else getattr(cfg, "architecture", None)
    return str(arch or type(model).__name__)


def float_state_hash(model: nn.Module) -> str:
    """SHA-256 of a model's float state (every state-dict tensor except quantizer buffers).

    Names, dtypes, shapes and bytes all count, so any changed weight changes the hash; a wrapped
    and a plain model of the same weights do not hash alike (hash both wrapped).

    Args:
        model: a timm model, wrapped or not.
    """
    skip = tuple(f"{name}." for name, _ in quantizers(model))
    digest = hashlib.sha256()
    for key, value in sorted(model.state_dict().items()):
        if skip and key.startswith(skip):
            continue
        t = value.detach().cpu().contiguous()
        digest.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        if t.numel():
            digest.update(t.reshape(-1).view(torch.uint8).numpy())  # the bytes, without a copy
    return digest.hexdigest()


def _write_safetensors(tensors: dict[str, Tensor], path: Path, header: dict[str, Any]) -> None:
    """Write atomically (a temporary file beside ``path``, then rename); OS errors become PtqlibError."""
    metadata = {HEADER_KEY: json.dumps(header)}
    write_atomic(path, lambda tmp: safetensors.torch.save_file(tensors, str(tmp), metadata=metadata),
                 errors=(safetensors.SafetensorError,))


def _open_header(path: Path, what: str) -> dict[str, Any]:
    """The parsed ``ptqlib`` metadata of a safetensors file, with clear errors for every failure."""
    if not path.is_file():
        raise PtqlibError(f"{what} file {path} does not exist; check the path")
    try:
        with safetensors.safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
    except Exception as error:  # truncated, not safetensors, unreadable
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise PtqlibError(f"cannot read {what} file {path} ({first}); the file is truncated or corrupt: "
                          f"{_REMAKE}") from None
    if HEADER_KEY not in metadata:
        raise PtqlibError(f"{path} is not a ptqlib file (its safetensors header has no 'ptqlib' entry); "
                          "pass a file written by 'python -m ptqlib quantize --save'")
    try:
        header = json.loads(metadata[HEADER_KEY])
    except json.JSONDecodeError:
        raise PtqlibError(f"the ptqlib header of {path} is not valid JSON; the file is corrupt: {_REMAKE}") from None
    if not isinstance(header, dict):
        raise PtqlibError(f"the ptqlib header of {path} is malformed; {_REMAKE}")
    return header


def _load_tensors(path: Path, what: str) -> dict[str, Tensor]:
    try:
        return safetensors.torch.load_file(str(path), device="cpu")
    except Exception as error:
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise PtqlibError(f"cannot read the tensors of {what} file {path} ({first}); {_REMAKE}") from None


# ----------------------------------------------------------------------------- save / load


def save_quantized(
    model: nn.Module,
    path: str | Path,
    config: PTQConfig,
    *,
    model_name: str | None = None,
    checkpoint: str | Path | None = None,
    random_init: bool = False,
    init_seed: int = 0,
    info: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Save a calibrated model's quantizers (scales, splits, bits, flags) and how to rebuild it.

    Args:
        model: a wrapped and calibrated model (:func:`ptqlib.quantize_model`, :func:`ptqlib.calibrate`).
        path: the ``.safetensors`` file to write (parent folders are created).
        config: the config the model was wrapped and calibrated with (recorded; loading wraps with it).
        model_name: the timm name (with its tag) to rebuild the model with; default: the
            architecture in the model's ``pretrained_cfg``.
        checkpoint: the float weights the model was loaded from (recorded, not copied).
        random_init: the float weights are timm's random initialization with ``init_seed``.
        init_seed: the seed of that initialization (``ptqlib.load_model(..., seed=...)``).
        info: anything JSON-serializable to record (seed, calibration files, accuracy, ...).

    Returns:
        The JSON header written into the file.
    """
    path = Path(path)
    sites(model)  # raises for an unwrapped model
    if not isinstance(config, PTQConfig):
        raise PtqlibError(f"save_quantized needs the model's PTQConfig, got {type(config).__name__}")
    tensors: dict[str, Tensor] = {}
    entries: dict[str, dict[str, Any]] = {}
    for name, q in quantizers(model):
        if not q.calibrated:  # a fresh wrap gives the same state
            continue
        entries[name] = {"kind": type(q).__name__, "bits": q.bits, "enabled": bool(q.enabled),
                         "signed": getattr(q, "signed", None)}
        for buf_name, buf in q.named_buffers(recurse=False):
            tensors[f"{name}.{buf_name}"] = buf.detach().cpu().contiguous().clone()
    if not entries:
        raise PtqlibError("the model has no calibrated quantizers; run ptqlib.calibrate(model, images) before saving")
    folds = _fold_tensors(model, tensors)
    corrected = corrected_layers(model)
    for name in corrected:
        tensors[f"corrected.{name}.weight"] = model.get_submodule(name).weight.detach().cpu().contiguous().clone()
    header: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "versions": versions(),
        "model": model_name or _architecture(model),
        "architecture": _architecture(model),
        "checkpoint": None if checkpoint is None else str(Path(checkpoint).resolve()),
        "random_init": bool(random_init),
        "init_seed": int(init_seed),
        "float_sha256": float_state_hash(model),
        "method": config.method,
        "w_bits": config.w_bits,
        "a_bits": config.a_bits,
        "config": config.to_dict(),
        "quantizers": entries,
        "reparam": folds,
        "corrected": corrected,
        "info": info or {},
    }
    try:
        json.dumps(header)
    except TypeError as error:
        raise PtqlibError(f"info must be JSON-serializable ({error}); pass plain numbers, strings and lists") from None
    _write_safetensors(tensors, path, header)
    return header


def _fold_tensors(model: nn.Module, tensors: dict[str, Tensor]) -> dict[str, list[str]]:
    """Add each fold's ``reparam.<norm>.ratio`` / ``.offset`` to ``tensors``; ``{norm: consumers}``."""
    out = {}
    for name, fold in folds_of(model).items():
        tensors[f"reparam.{name}.ratio"] = fold.ratio.detach().double().cpu().contiguous().clone()
        tensors[f"reparam.{name}.offset"] = fold.offset.detach().double().cpu().contiguous().clone()
        out[name] = list(fold.consumers)
    return out


def _submodule(model: nn.Module, name: str) -> nn.Module | None:
    try:
        return model.get_submodule(name)
    except AttributeError:
        return None


def read_header(path: str | Path) -> dict[str, Any]:
    """The JSON header of a quantized model file, checked for format and version.

    Args:
        path: a file written by :func:`save_quantized`.
    """
    path = Path(path)
    header = _open_header(path, "quantized model")
    fmt, version = header.get("format"), header.get("format_version")
    if fmt == INTEGER_FORMAT:
        raise PtqlibError(f"{path} holds exported integer codes, not a loadable model; "
                          "pass the file written by 'quantize --save'")
    if fmt != FORMAT or not isinstance(version, int):
        raise PtqlibError(f"{path} is not a ptqlib quantized model file (format {fmt!r}); "
                          "pass a file written by 'python -m ptqlib quantize --save'")
    writer = header.get("versions", {}).get("ptqlib", "unknown")
    if version > FORMAT_VERSION:
        raise PtqlibError(f"{path} was written by ptqlib {writer} in format {version}, but this ptqlib "
                          f"{__version__} reads format {FORMAT_VERSION} at most; upgrade ptqlib, or quantize again "
                          "with this version ('python -m ptqlib quantize --save FILE')")
    if version < 1:
        raise PtqlibError(f"{path} uses the old format {version} of ptqlib {writer}; {_REMAKE}")
    missing = [k for k in ("model", "architecture", "float_sha256", "config", "quantizers") if k not in header]
    if missing:
        raise PtqlibError(f"the header of {path} lacks {', '.join(missing)}; the file is corrupt: {_REMAKE}")
    return header


def _config_from(header: dict[str, Any], path: Path) -> PTQConfig:
    try:
        return PTQConfig(**header["config"])
    except (TypeError, ValueError) as error:
        raise PtqlibError(f"the config saved in {path} does not fit this ptqlib {__version__} ({error}); "
                          f"use the ptqlib version that wrote it ({header.get('versions', {}).get('ptqlib')}), or "
                          "quantize again with this one ('python -m ptqlib quantize --save FILE')") from None


def load_quantized(
    path: str | Path,
    *,
    model: nn.Module | None = None,
    checkpoint: str | Path | None = None,
    data_root: str | Path | None = None,
    device: str | torch.device = "cpu",
    check_weights: bool = True,
) -> nn.Module:
    """Rebuild a saved quantized model: load its float model, wrap it, set the saved scales.

    No calibration runs; the result computes exactly what the saved model computed.

    Args:
        path: a file written by :func:`save_quantized`.
        model: a fresh (unwrapped) timm model with the float weights to use; default: built from
            the header's model name and ``checkpoint``.
        checkpoint: float weights for the default model; default: the checkpoint recorded in the
            file (or, for a model saved with random weights, the same seeded initialization),
            else the model's weights in ``data_root``, else timm's pretrained download.
        data_root: a data folder whose ``weights/`` may hold the float weights
            (:func:`~ptqlib.io.models.find_checkpoint`), used when the recorded checkpoint is gone.
        device: where a model built here lives.
        check_weights: refuse float weights whose hash differs from the saved model's.
    """
    from .models import find_checkpoint, load_model

    path = Path(path)
    header = read_header(path)
    config = _config_from(header, path)
    if model is None:
        name = header["model"]
        recorded = header.get("checkpoint")
        if checkpoint is not None:
            model = load_model(name, checkpoint, device=device)
        elif header.get("random_init"):
            model = load_model(name, random_init=True, seed=int(header.get("init_seed", 0)), device=device)
        elif recorded and Path(recorded).is_file():
            model = load_model(name, recorded, device=device)
        elif (found := find_checkpoint(name, None if data_root is None else Path(data_root))) is not None:
            model = load_model(name, found, device=device)
        else:
            model = load_model(name, device=device)
        if _architecture(model) != header["architecture"]:
            raise PtqlibError(f"{path} was made for {header['architecture']}, but its model name {name} builds "
                              f"{_architecture(model)}; the header is inconsistent: {_REMAKE}")
    elif _architecture(model) != header["architecture"]:
        raise PtqlibError(f"{path} was made for {header['architecture']}, not {_architecture(model)}; "
                          f"load it onto a fresh {header['architecture']} model")
    quantize_model(model, config)
    tensors = _load_tensors(path, "quantized model")
    expected: set[str] = set()
    folds = header.get("reparam") or {}
    if folds:
        keys = [f"reparam.{n}.{part}" for n in folds for part in ("ratio", "offset")]
        if any(k not in tensors for k in keys):
            raise PtqlibError(f"{path} names folded LayerNorms but lacks their tensors; the file is corrupt: {_REMAKE}")
        expected.update(keys)
        apply_folds(model, {n: (tensors[f"reparam.{n}.ratio"], tensors[f"reparam.{n}.offset"]) for n in folds})
    corrected = header.get("corrected") or []
    for name in corrected:
        key = f"corrected.{name}.weight"
        layer = _submodule(model, name)
        weight = getattr(layer, "weight", None)
        if key not in tensors or weight is None or tensors[key].shape != weight.shape:
            raise PtqlibError(f"{path} names corrected weights of {name} that it lacks or that do not fit the model; "
                              f"the file is corrupt: {_REMAKE}")
        with torch.no_grad():
            weight.copy_(tensors[key])
        expected.add(key)
    if corrected:
        setattr(model, CORRECTED_ATTR, list(corrected))
    if check_weights and float_state_hash(model) != header["float_sha256"]:
        recorded = header.get("checkpoint") or ("random weights, seed " + str(header.get("init_seed"))
                                                if header.get("random_init") else "timm's pretrained weights")
        raise PtqlibError(f"the float weights of this {header['architecture']} differ from those {path} was "
                          f"calibrated with ({recorded}); pass that checkpoint (--checkpoint) or calibrate again")
    for qname, entry in header["quantizers"].items():
        q = _submodule(model, qname)
        if not isinstance(q, Quantizer):
            raise PtqlibError(f"{path} has a quantizer {qname} that a {header['architecture']} wrapped with its "
                              "config does not have; the file was made for another model: load it onto the "
                              f"model named in it ({header['model']})")
        if type(q).__name__ != entry.get("kind") or q.bits != entry.get("bits") or (
                getattr(q, "signed", None) != entry.get("signed")):
            raise PtqlibError(f"quantizer {qname} in {path} is a {entry.get('bits')}-bit {entry.get('kind')}, but the "
                              f"saved config builds a {q.bits}-bit {type(q).__name__}; the file is corrupt: {_REMAKE}")
        params = {}
        for buf_name, _ in q.named_buffers(recurse=False):
            key = f"{qname}.{buf_name}"
            if key not in tensors:
                raise PtqlibError(f"{path} lacks tensor {key}; the file is corrupt: {_REMAKE}")
            params[buf_name] = tensors[key]
            expected.add(key)
        try:
            q.set(**params, enabled=bool(entry.get("enabled", True)))
        except (ValueError, RuntimeError) as error:
            raise PtqlibError(f"quantizer {qname} in {path} has invalid parameters ({error}); {_REMAKE}") from None
    extra = sorted(set(tensors) - expected)
    if extra:
        raise PtqlibError(f"{path} holds tensors its header does not describe ({', '.join(extra[:3])}); "
                          f"the file is corrupt: {_REMAKE}")
    return model.eval()


# ----------------------------------------------------------------------------- integer export


def _storage_dtype(lo: int, hi: int) -> torch.dtype:
    for dtype in (torch.int8, torch.uint8, torch.int16):
        info = torch.iinfo(dtype)
        if info.min <= lo and hi <= info.max:
            return dtype
    return torch.int32


@dataclass
class IntegerTensor:
    """One quantized tensor as integer codes plus what gives them values (see ``LAYOUTS``).

    Attributes:
        codes: the codes (``int32`` in memory; stored smaller by :func:`export_integers`).
        bits: ``k``.
        layout: a key of ``LAYOUTS``.
        scale: the uniform step(s), the positive step of ``twin_gelu`` or the largest level of the
            logarithmic layouts; None for ``twin_softmax``.
        m: the twin split(s); None for the other layouts.
        q: AdaLog's codes per octave (base ``2^(1/q)``); None for the other layouts.
    """

    codes: Tensor
    bits: int
    layout: str
    scale: Tensor | None = None
    m: Tensor | None = None
    q: Tensor | None = None

    def quantizer(self) -> Quantizer:
        """The calibrated quantizer that writes this layout with these parameters."""
        params = {k: v for k, v in zip(_PARAMS, (self.scale, self.m, self.q)) if v is not None}
        return quantizer_for_layout(self.layout, self.bits, params)

    def code_range(self) -> tuple[int, int]:
        """The smallest and largest code a ``bits``-bit tensor of this layout may hold."""
        return self.quantizer().code_range()

    def fits(self) -> bool:
        """Whether every code lies in :meth:`code_range` (fits in ``bits`` bits)."""
        lo, hi = self.code_range()
        return self.codes.numel() == 0 or (int(self.codes.min()) >= lo and int(self.codes.max()) <= hi)

    def dequantize(self) -> Tensor:
        """The real values of the codes: the fake-quantized tensor, exactly."""
        return self.quantizer().dequantize(self.codes.to(torch.int32))


def _integer(q: Quantizer, x: Tensor) -> IntegerTensor:
    with torch.no_grad():
        codes = q.codes(x.detach())
    params = {k: v.detach().clone() for k, v in q.params().items()}
    return IntegerTensor(codes=codes, bits=q.bits, layout=q.layout, **{k: params.get(k) for k in _PARAMS})


def weight_integers(model: nn.Module) -> dict[str, IntegerTensor]:
    """Every enabled weight quantizer's codes, keyed by quantizer name (``<layer>.weight_quant``).

    Args:
        model: a wrapped, calibrated model.
    """
    out = {}
    for site in sites(model):
        layer = site.module
        if isinstance(layer, (QuantLinear, QuantConv2d)) and layer.weight_quant.enabled:
            out[f"{site.name}.weight_quant"] = _integer(layer.weight_quant, layer.weight)
    return out


def activation_integers(
    model: nn.Module, images: Tensor, *, device: str | torch.device = "cpu"
) -> dict[str, IntegerTensor]:
    """Every enabled activation quantizer's codes for the values it sees on one forward pass.

    Keys are quantizer names (``<layer>.input_quant``, ``<matmul>.a_quant``, ``<matmul>.b_quant``);
    each holds the codes of the quantizer's whole input for ``images``.

    Args:
        model: a wrapped, calibrated model.
        images: a batch ``(B, 3, H, W)``.
        device: where the model runs.
    """
    out: dict[str, IntegerTensor] = {}
    handles = []

    def hook_for(name: str, q: Quantizer):
        def hook(module: nn.Module, args: tuple) -> None:
            if name in out:
                raise RuntimeError(f"quantizer {name} ran twice in one forward pass; export it per call")
            out[name] = _integer(q, args[0])
        return hook

    weight_quants = {id(s.module.weight_quant) for s in sites(model) if hasattr(s.module, "weight_quant")}
    for name, q in quantizers(model):
        if q.enabled and id(q) not in weight_quants:
            handles.append(q.register_forward_pre_hook(hook_for(name, q)))
    try:
        with torch.no_grad():
            model(images.to(device))
    finally:
        for h in handles:
            h.remove()
    return out


def export_integers(
    model: nn.Module, path: str | Path, images: Tensor | None = None, *, config: PTQConfig | None = None,
    device: str | torch.device = "cpu",
) -> dict[str, Any]:
    """Write the weights' (and, given ``images``, the activations') integer codes to ``path``.

    Tensors are ``<quantizer>.codes``, ``<quantizer>.scale``, ``<quantizer>.m`` and ``<quantizer>.q``; the JSON
    header (safetensors metadata ``ptqlib``) gives each quantizer's layout and bits and the
    layouts' documentation. A reparameterised model adds ``reparam.<norm>.ratio`` / ``.offset``
    (the header's ``reparam`` names the LayerNorms and the Linear layers they feed): the weights'
    codes are those of the folded weights, whose LayerNorm is ``γ / ratio``, ``β / ratio - offset``.
    Returns that header.

    Args:
        model: a wrapped, calibrated model.
        path: the ``.safetensors`` file to write.
        images: a batch whose activations to export too (optional).
        config: the model's config, recorded in the header (optional).
        device: where the model runs.
    """
    parts = {"weight": weight_integers(model)}
    if images is not None:
        parts["activation"] = activation_integers(model, images, device=device)
    tensors: dict[str, Tensor] = {}
    entries: dict[str, dict[str, Any]] = {}
    for kind, items in parts.items():
        for name, it in items.items():
            lo, hi = it.code_range()
            dtype = _storage_dtype(lo, hi)
            tensors[f"{name}.codes"] = it.codes.to(dtype).cpu().contiguous()
            for key in _PARAMS:
                value = getattr(it, key)
                if value is not None:
                    tensors[f"{name}.{key}"] = value.cpu().contiguous().clone()
            entries[name] = {"kind": kind, "layout": it.layout, "bits": it.bits, "dtype": str(dtype).removeprefix("torch.")}
    folds = _fold_tensors(model, tensors)  # a deployment folds its float LayerNorms the same way
    header = {"format": INTEGER_FORMAT, "format_version": FORMAT_VERSION, "versions": versions(),
              "architecture": _architecture(model), "config": None if config is None else config.to_dict(),
              "layouts": LAYOUTS, "tensors": entries, "reparam": folds}
    _write_safetensors(tensors, Path(path), header)
    return header


def read_integers(path: str | Path) -> dict[str, IntegerTensor]:
    """Read a file written by :func:`export_integers` back (codes as ``int32``).

    Args:
        path: the exported file.
    """
    path = Path(path)
    header = _open_header(path, "integer export")
    if header.get("format") != INTEGER_FORMAT:
        raise PtqlibError(f"{path} is not an integer export (format {header.get('format')!r}); "
                          "pass a file written by ptqlib.io.export_integers")
    if header.get("format_version", 0) > FORMAT_VERSION:
        raise PtqlibError(f"{path} uses integer-export format {header.get('format_version')}, newer than this "
                          f"ptqlib {__version__} reads ({FORMAT_VERSION}); upgrade ptqlib")
    tensors = _load_tensors(path, "integer export")
    out = {}
    for name, entry in header.get("tensors", {}).items():
        if f"{name}.codes" not in tensors:
            raise PtqlibError(f"{path} lacks tensor {name}.codes; the file is corrupt: export it again")
        out[name] = IntegerTensor(codes=tensors[f"{name}.codes"].to(torch.int32), bits=int(entry["bits"]),
                                  layout=entry["layout"], **{k: tensors.get(f"{name}.{k}") for k in _PARAMS})
    return out
