"""Export a checkpoint to ONNX: here the classifier's graph, with its preprocessing inside
(segmenters: ``segment_onnx``; exam bundles: ``exam_onnx``; ``export_onnx`` picks by kind).

The graph takes the scan as ``dxkit.io.read_scan`` returns it — any height and width, in
Hounsfield units for a CT-window model, 0–255 for an image model — and returns the
probability of each finding. Inside: the CT windows (an affine map and a clamp per window)
or the 0–255 scaling, the resize to the checkpoint's size (ONNX ``Resize``, antialiased
like the training path), the normalisation, the network and the sigmoid/softmax.

Outside, written beside the model as a JSON sidecar (and embedded in the ONNX metadata):
reading the file and matching its channel count to the model (grey → repeated, colour →
averaged), label names, thresholds, the task, the full preprocessing recipe and the
training inputs' profile (``input_profile``: the input guard, checked outside the graph).

A model trained on the head-CT cache (``Preprocessing.ct``) takes the cached slice — uint8
windows of the head crop — as graph input, and ``OnnxPredictor`` makes it from raw HU
with ``CTRecipe.prepare``, the function the eager path and the cache writer call. The
crop is not exported: its box comes from each slice's content (largest tissue component),
which ONNX has no operator for, and replaying the exact NumPy/OpenCV code keeps the
graph's input byte-identical to what the model was trained on (tested on real RSNA files).
"""

from __future__ import annotations

import hashlib
import json
import logging
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dxkit import __version__
from dxkit.data.augment import tta_views
from dxkit.errors import CheckpointError, ConfigError
from dxkit.infer.checkpoint import load_checkpoint, read_checkpoint
from dxkit.infer.probabilities import probabilities
from dxkit.preprocess.spec import Preprocessing

log = logging.getLogger(__name__)

FORMAT = "dxkit-onnx/1"
OPSET = 18  # the first opset whose Resize has ``antialias`` (the training path antialiases)
INPUT_NAME = "scan"
OUTPUT_NAMES = ("probabilities", "logits")
METADATA_KEY = "dxkit"


class ScanToProbabilities(nn.Module):
    """Read scan (raw values, any size) → probabilities: ``Preprocessing.apply`` + model.

    Mirrors ``Preprocessing.to_unit_range``, ``resize`` and ``normalize`` operation by
    operation, so PyTorch and ONNX Runtime see the same arithmetic. Channel matching is left
    outside because its branch depends on the uploaded file, not on the model.
    """

    low: torch.Tensor
    width: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, model: nn.Module, pre: Preprocessing, task: str, tta: bool = False) -> None:
        super().__init__()
        self.model = model.eval()
        self.pre = pre
        self.task = task
        self.tta = tta
        dims = pre.spatial_dims
        shape = (1, -1) + (1,) * dims
        if pre.windows:
            low = [c - w / 2 for c, w in pre.windows]
            width = [w for _, w in pre.windows]
            self.register_buffer("low", torch.tensor(low, dtype=torch.float32).reshape(shape))
            self.register_buffer("width", torch.tensor(width, dtype=torch.float32).reshape(shape))
        self.register_buffer("mean", torch.tensor(pre.mean, dtype=torch.float32).reshape(shape))
        self.register_buffer("std", torch.tensor(pre.std, dtype=torch.float32).reshape(shape))

    def forward(self, scan: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pre = self.pre
        x = scan
        if pre.windows:
            x = ((x - self.low) / self.width).clamp(0.0, 1.0)
        elif pre.input_kind == "uint8":
            x = x / pre.scale
        if pre.size is not None:
            target = (pre.size,) * pre.spatial_dims
            if pre.spatial_dims == 2:
                # Antialiasing only acts when shrinking; when enlarging it equals plain
                # bilinear (checked in the parity test), so one graph serves every size.
                x = F.interpolate(
                    x, size=target, mode="bilinear", align_corners=False, antialias=True
                )
            else:
                x = F.interpolate(x, size=target, mode="trilinear", align_corners=False)
        x = (x - self.mean) / self.std
        if not self.tta:
            logits = self.model(x).float()
            return probabilities(logits, self.task), logits  # type: ignore[arg-type]
        # The checkpoint's TTA recipe inside the graph: the same views and the same mean of
        # probabilities as predict_probabilities; ``logits`` is then the views' mean logit.
        views = tta_views(x, pre.spatial_dims)
        view_logits = [self.model(v).float() for v in views]
        probs = torch.stack([probabilities(z, self.task) for z in view_logits]).mean(0)  # type: ignore[arg-type]
        return probs, torch.stack(view_logits).mean(0)


def _resize_aa_symbolic(g: Any, input: Any, output_size: Any, *rest: Any) -> Any:
    """ONNX for ``aten::_upsample_bilinear2d_aa``: ``Resize`` with ``antialias=1``.

    The TorchScript exporter has no rule for PyTorch's antialiased bilinear resize; ONNX
    (opset 18) has the same operation, so we map it. The dynamo exporter has the rule but
    takes ~30 s per export on our CPUs against ~3 s here.
    """
    empty = g.op("Constant", value_t=torch.tensor([], dtype=torch.float32))
    shape = g.op("Shape", input)
    batch_channels = g.op(
        "Slice",
        shape,
        g.op("Constant", value_t=torch.tensor([0])),
        g.op("Constant", value_t=torch.tensor([2])),
    )
    sizes = g.op("Concat", batch_channels, g.op("Cast", output_size, to_i=7), axis_i=0)
    return g.op(
        "Resize",
        input,
        empty,
        empty,
        sizes,
        mode_s="linear",
        coordinate_transformation_mode_s="half_pixel",
        antialias_i=1,
        exclude_outside_i=1,
    )


def graph_input_channels(pre: Preprocessing) -> int:
    """Channels the graph takes: 1 (Hounsfield units) for CT windows, the prepared slice's
    for a head-CT cache recipe, else the model's."""
    if pre.ct is not None:
        return pre.ct.channels
    return 1 if pre.windows else pre.in_chans


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sidecar_path(onnx_path: Path) -> Path:
    """``model.onnx`` → ``model.onnx.json``: the metadata written beside the graph."""
    return onnx_path.with_name(onnx_path.name + ".json")


def export_metadata(checkpoint: Path, pre: Preprocessing, meta: dict[str, Any]) -> dict[str, Any]:
    """What a runtime needs besides the graph (JSON-safe, no patient data)."""
    channels = graph_input_channels(pre)
    layout = f"(N, {channels}, H, W)" if pre.spatial_dims == 2 else f"(N, {channels}, D, H, W)"
    outside = ["read the scan (dxkit.io.read_scan)"]
    if pre.ct is not None:
        # Cropping to the head depends on each slice's content: it stays in NumPy.
        outside.append(
            f"head-CT recipe: crop to the head, resize ({pre.ct.resize}), uint8 windows "
            "(dxkit.preprocess.spec.CTRecipe.prepare)"
        )
    outside.append("match channels (grey repeated, colour averaged)")
    labels = list(meta["label_names"])
    return {
        "format": FORMAT,
        "kind": meta.get("kind", "classify"),
        "task": meta["task"],
        "label_names": labels,
        "thresholds": list(meta.get("thresholds") or [0.5] * len(labels)),
        "tta": bool(meta.get("tta")),
        "model": meta["model"],
        "preprocessing": pre.model_dump(mode="json"),
        # the input guard (preprocess.input_profile): checked by OnnxPredictor as by Predictor
        "input_profile": meta.get("input_profile") or None,
        "graph": {
            "input": INPUT_NAME,
            "input_layout": layout,
            "input_values": (
                "Hounsfield units"
                if pre.windows
                else ("0-255 intensities" if pre.input_kind == "uint8" else "float values")
            ),
            "outputs": list(OUTPUT_NAMES),
            "inside": [
                *(["ct_windows"] if pre.windows else []),
                *(["scale_0_255"] if not pre.windows and pre.input_kind == "uint8" else []),
                *(["resize_antialiased"] if pre.size else []),
                "normalize",
                "model",
                *(["tta_flips_mean"] if meta.get("tta") else []),
                "probabilities",
            ],
            "outside": outside,
            "opset": OPSET,
        },
        "source_checkpoint": source_of(checkpoint),
        "dxkit_version": __version__,
        "trained_with": meta.get("dxkit_version"),
    }


def export_onnx(checkpoint: str | Path, out_path: str | Path | None = None) -> Path:
    """Write ``checkpoint`` as an ONNX graph (preprocessing inside) plus its JSON sidecar.

    Returns the ``.onnx`` path (default: beside the checkpoint, same stem). A segmenter
    (``infer.segment_onnx``) and an exam bundle (``infer.exam_onnx``) have their own graphs.
    """
    checkpoint = Path(checkpoint)
    kind = str(read_checkpoint(checkpoint, check=False)["dxkit"].get("kind", "classify"))
    out = onnx_out_path(checkpoint, out_path)
    if kind == "segment":
        from dxkit.infer.segment_onnx import export_segmenter_onnx

        return export_segmenter_onnx(checkpoint, out)
    if kind == "exam":
        from dxkit.infer.exam_onnx import export_exam_onnx

        return export_exam_onnx(checkpoint, out)
    if kind != "classify":
        raise ConfigError(
            f"{checkpoint}: a {kind!r} checkpoint (one network of an exam run) has no ONNX "
            "export; export the run's checkpoints/bundle.ckpt"
        )
    loaded = load_checkpoint(checkpoint)  # checks the contract
    pre = loaded.preprocessing
    wrapper = ScanToProbabilities(loaded.model.cpu(), pre, loaded.task, tta=loaded.tta).eval()
    size = pre.size or 64
    example = torch.zeros((1, graph_input_channels(pre)) + (size,) * pre.spatial_dims)
    spatial_axes = {i + 2: f"s{i}" for i in range(pre.spatial_dims)}
    torch.onnx.register_custom_op_symbolic(
        "aten::_upsample_bilinear2d_aa", _resize_aa_symbolic, OPSET
    )
    metadata = export_metadata(checkpoint, pre, {**loaded.meta, "tta": loaded.tta})
    save_graph(
        wrapper, example, out, metadata, [INPUT_NAME], list(OUTPUT_NAMES),
        {INPUT_NAME: {0: "batch", **spatial_axes}, **{n: {0: "batch"} for n in OUTPUT_NAMES}},
        what=f"{checkpoint}: model {loaded.meta['model']['name']!r}",
    )  # fmt: skip
    log.info("exported %s → %s", checkpoint.name, out)
    return out


def onnx_out_path(checkpoint: Path, out_path: str | Path | None) -> Path:
    """``--out`` (an ``.onnx`` file), else beside the checkpoint with the same stem."""
    out = Path(out_path) if out_path is not None else checkpoint.with_suffix(".onnx")
    if out.suffix != ".onnx":
        raise ConfigError(f"--out {out}: give the file an .onnx suffix")
    out.parent.mkdir(parents=True, exist_ok=True)
    return out


def save_graph(
    module: nn.Module,
    example: torch.Tensor,
    out: Path,
    metadata: dict[str, Any],
    input_names: list[str],
    output_names: list[str],
    dynamic_axes: dict[str, dict[int, str]],
    what: str,
) -> None:
    """Export ``module`` (TorchScript exporter, ``OPSET``) to ``out`` with ``metadata``
    embedded and written beside it; a failed export leaves nothing behind."""
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
            torch.onnx.export(
                module,
                (example,),
                str(tmp),
                input_names=input_names,
                output_names=output_names,
                dynamic_axes=dynamic_axes,
                opset_version=OPSET,
                dynamo=False,
            )
        _embed_metadata(tmp, metadata)
        tmp.replace(out)
    except (RuntimeError, torch.onnx.errors.OnnxExporterError) as err:
        tmp.unlink(missing_ok=True)
        raise CheckpointError(
            f"{what} could not be exported to ONNX ({type(err).__name__}: {str(err)[:300]})"
        ) from None
    sidecar_path(out).write_text(json.dumps(metadata, indent=2) + "\n")


def source_of(checkpoint: Path) -> dict[str, str]:
    """The checkpoint an export came from: its name and SHA-256."""
    return {"name": checkpoint.name, "sha256": _sha256(checkpoint)}


def _embed_metadata(path: Path, metadata: dict[str, Any]) -> None:
    """Store the sidecar's JSON in the model's ``metadata_props`` too, so the one file is
    enough to run it."""
    import onnx

    model = onnx.load(str(path))
    kept = [p for p in model.metadata_props if p.key != METADATA_KEY]  # replace, not repeat
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(metadata)
    model.producer_name = "dxkit"
    model.producer_version = __version__
    onnx.save(model, str(path))
