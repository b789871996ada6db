"""`ptflow export`: a model file as ONNX or TorchScript, preprocessing and class names included."""

from __future__ import annotations

from ptflow.cli.common import add_model_option, add_trust_option, check_output, model_file
from ptflow.errors import UsageError


def register(commands) -> None:
    p = commands.add_parser("export", help="export a model to ONNX or TorchScript, preprocessing included",
                            description="Export a model that takes raw inputs (uint8 pixels or raw features) and "
                                        "returns class probabilities; class names and preprocessing go with it.")
    add_model_option(p, "model file to export")
    p.add_argument("--format", required=True, choices=["onnx", "torchscript"], help="onnx or torchscript")
    p.add_argument("-o", "--out", required=True, metavar="FILE", help="where to write the exported model")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset version (default: 17)")
    add_trust_option(p)
    p.set_defaults(handler=run)


def run(args) -> int:
    check_output(args.out, "--out")
    if not 7 <= args.opset <= 99:
        raise UsageError(f"--opset must be an ONNX opset version (7 to the newest), got {args.opset}")
    from ptflow.models import export

    export.export_model(model_file(args), args.format, args.out, args.opset, trust_code=args.trust_model_code)
    return 0
