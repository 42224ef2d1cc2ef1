"""The ``minescan export-triton`` command: a detector (ONNX, or a TensorRT plan with its sidecar) -> a Triton model repository.

onnx and tritonclient are imported only when the command runs; ranges (--max-batch >= 0...) are checked
by the library, so a bad value is one ``minescan: error:`` line like any other fault.
"""

from __future__ import annotations

import argparse

from minescan.cli.options import int_list
from minescan.export.triton import DEFAULT_MAX_BATCH, DEFAULT_QUEUE_DELAY_US, KINDS


def run_export_triton(args: argparse.Namespace) -> int:
    """Write the repository and print what was written."""
    from minescan.export.triton import write_triton_repository

    report = write_triton_repository(
        args.model,
        args.repo,
        name=args.name,
        max_batch=args.max_batch,
        instances=args.instances,
        kind=args.kind,
        preferred_batch=args.preferred_batch,
        max_queue_delay_us=args.max_queue_delay_us,
    )
    print(report.format())
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``export-triton`` to the command line."""
    parser = sub.add_parser(
        "export-triton",
        help="write a Triton Inference Server model repository for a detector (needs tritonclient)",
        description="Lay out REPO/NAME/config.pbtxt, REPO/NAME/1/model.onnx (onnxruntime_onnx) or 1/model.plan "
        "(tensorrt_plan, from minescan build's engine and its sidecar) and REPO/NAME/labels.txt. An ONNX graph that "
        "takes batch 1 only gets its batch freed (a Loop over the images, checked against batch-1 calls) when "
        "--max-batch is above 0.",
    )
    parser.add_argument("model", help="ONNX detector (.onnx), or TensorRT engine (.plan/.engine) with its .json sidecar beside it")
    parser.add_argument("--repo", required=True, metavar="DIR", help="model repository folder (created if missing)")
    parser.add_argument("--name", help="model name, the folder under --repo (default: the model file's stem)")
    parser.add_argument("--max-batch", type=int, default=DEFAULT_MAX_BATCH, metavar="B",
                        help=f"Triton's max_batch_size; 0: no batching, dims are the model's full shapes (default {DEFAULT_MAX_BATCH})")
    parser.add_argument("--instances", type=int, default=1, metavar="K", help="model instances Triton runs side by side (default 1)")
    parser.add_argument("--kind", choices=KINDS, help="where instances run (default: cpu for ONNX, gpu for a TensorRT plan)")
    parser.add_argument("--preferred-batch", type=int_list, metavar="B,B...",
                        help="batch sizes the dynamic batcher prefers to form (default: none, as large as the queue allows)")
    parser.add_argument("--max-queue-delay-us", type=int, default=DEFAULT_QUEUE_DELAY_US, metavar="US",
                        help=f"how long the dynamic batcher waits for more requests (default {DEFAULT_QUEUE_DELAY_US})")
    parser.set_defaults(handler=run_export_triton)
