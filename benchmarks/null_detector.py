"""A detector in the model contract that finds nothing at almost no cost: the read-bound case for ``minescan bench``.

    .venv/bin/python benchmarks/null_detector.py                      # -> benchmarks/.data/null_detector.onnx
    .venv/bin/minescan bench benchmarks/.data/scene_10980.tif --model benchmarks/.data/null_detector.onnx --bands 3,2,1 --batch 8

Its outputs have the contract's names, types and layout (one padded detection per
image, score 0, ``num_detections`` 0), so a scan runs it like any model and every
other stage (reading, rendering, stitching, writing) is what the wall time shows.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import onnx
from onnx import TensorProto, helper

HERE = Path(__file__).resolve().parent


def null_detector() -> onnx.ModelProto:
    """The model: outputs of batch N built from the input's shape, nothing computed on its pixels."""
    image = helper.make_tensor_value_info("input_tensor", TensorProto.UINT8, ["N", "H", "W", 3])
    outputs = [
        helper.make_tensor_value_info("detection_boxes", TensorProto.FLOAT, ["N", 1, 4]),
        helper.make_tensor_value_info("detection_scores", TensorProto.FLOAT, ["N", 1]),
        helper.make_tensor_value_info("detection_classes", TensorProto.FLOAT, ["N", 1]),
        helper.make_tensor_value_info("num_detections", TensorProto.FLOAT, ["N"]),
    ]

    def ints(name: str, values: list[int]) -> onnx.NodeProto:
        return helper.make_node("Constant", [], [name], value=helper.make_tensor(name, TensorProto.INT64, [len(values)], values))

    def filled(shape: str, out: str, value: float) -> onnx.NodeProto:
        return helper.make_node("ConstantOfShape", [shape], [out], value=helper.make_tensor(out + "_value", TensorProto.FLOAT, [1], [value]))

    nodes = [
        helper.make_node("Shape", ["input_tensor"], ["shape"], end=1),  # [N]
        ints("one_by_four", [1, 4]), ints("one", [1]),
        helper.make_node("Concat", ["shape", "one_by_four"], ["boxes_shape"], axis=0),
        helper.make_node("Concat", ["shape", "one"], ["scores_shape"], axis=0),
        filled("boxes_shape", "detection_boxes", 0.0),
        filled("scores_shape", "detection_scores", 0.0),
        filled("scores_shape", "detection_classes", 1.0),
        filled("shape", "num_detections", 0.0),
    ]
    model = helper.make_model(helper.make_graph(nodes, "null_detector", [image], outputs), opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(HERE / ".data" / "null_detector.onnx"), help="where to write the model")
    out = Path(parser.parse_args().out)
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(null_detector(), str(out))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
