"""`ptflow predict`: labels and probabilities for files; with no files, test accuracy (the article's)."""

from __future__ import annotations

from ptflow.cli.common import (
    add_device_options,
    add_model_option,
    add_trust_option,
    device_of,
    model_file,
    use_threads,
)


def register(commands) -> None:
    p = commands.add_parser("predict", help="labels and probabilities for images, .npz or .csv files",
                            description="Predict. With no INPUT, evaluates on the test split "
                                        "(as the article's predict).")
    add_model_option(p, "model file to use")
    p.add_argument("inputs", nargs="*", metavar="INPUT", help="image files or folders, .npz (array x), .csv rows")
    p.add_argument("--format", default="table", choices=["table", "json", "csv"], help="output format")
    add_device_options(p)
    add_trust_option(p)
    p.set_defaults(handler=run)


def run(args) -> int:
    model = model_file(args)
    use_threads(args)
    if not args.inputs:
        from ptflow.reports import evaluate

        evaluate.evaluate_model(model, device=device_of(args), trust_code=args.trust_model_code)
        return 0
    from ptflow.reports import predict

    predict.predict_inputs(model, args.inputs, args.format, device_of(args), trust_code=args.trust_model_code)
    return 0
