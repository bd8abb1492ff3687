"""The ONNX operators TensorRT 10.x parses, and the data types each accepts: onnx-tensorrt's own table, as data.

Source: onnx/onnx-tensorrt, ``docs/operators.md``, the revision headed "TensorRT 10.15 supports operators in the
inclusive range of opset 9 to opset 24" (the 10.15 GA release, dated 2026-02-02 in that repository's
``docs/Changelog.md``), read through the public code index; cross-read against the ``10.1-GA`` branch (commit
96e781103cfc4adf4a6bb557e94bac8e693f6f4c), whose table header says "TensorRT 10.0 supports operators in the
inclusive range of opset 9 to opset 20". Only rows marked "Y" are listed; a missing operator is unsupported.

The type column names the operator's data types; UINT8 appears only for Cast/CastLike because "UINT8 is only
supported as network input or output tensor types" (same document), and INT8/FP8/FP4/INT4 are "quantized
types", reachable only through QuantizeLinear/DequantizeLinear. Restrictions the table states in words are
checked in :mod:`clipedge.runtime.tensorrt.check` where they can apply to a clipedge graph.
"""

from __future__ import annotations

#: Every 10.x release must parse a clipedge export (JetPack 6 ships 10.3), so the opset range is the narrowest
#: header among the 10.x tables read: 10.0's "opset 9 to opset 20" (10.15 widens it to 24).
OPSET_RANGE = (9, 20)

FLOAT = frozenset({"FLOAT", "FLOAT16", "BFLOAT16"})
FP32_FP16 = frozenset({"FLOAT", "FLOAT16"})
INTEGER = frozenset({"INT32", "INT64"})
BOOL = frozenset({"BOOL"})
LOW_PRECISION = frozenset({"FLOAT8E4M3FN", "FLOAT4E2M1", "INT4"})

_GROUPS: dict[frozenset[str], str] = {
    FLOAT: """Acos Acosh Asin Asinh Atan Atanh AveragePool BatchNormalization Ceil Celu Clip Conv ConvTranspose Cos
        Cosh CumSum Dropout Einsum Elu Erf Exp Floor Gemm GlobalAveragePool GlobalLpPool GlobalMaxPool
        GroupNormalization GRU HardSigmoid HardSwish Hardmax ImageScaler InstanceNormalization IsInf
        LayerNormalization LeakyRelu Log LogSoftmax LRN LSTM LpNormalization LpPool MatMul MaxPool
        MeanVarianceNormalization ParametricSoftplus PRelu QuantizeLinear RandomNormal RandomNormalLike RandomUniform
        RandomUniformLike Reciprocal Resize RMSNormalization RNN RotaryEmbedding Round ScaledTanh Scan Selu Sigmoid
        Sin Sinh Softmax Softplus Softsign Sqrt Tan Tanh ThresholdedRelu Upsample""",
    FP32_FP16: """BlackmanWindow DeformConv GridSample HammingWindow HannWindow Mish NonMaxSuppression NonZero
        RoiAlign""",
    frozenset({"FLOAT"}): "STFT",
    FLOAT | INTEGER: """Abs Add ArgMax ArgMin DepthToSpace Div Equal Greater GreaterOrEqual IsNaN Less LessOrEqual
        Max Min Mod Mul Neg Pad Pow Range ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean
        ReduceMin ReduceProd ReduceSum ReduceSumSquare Relu Scatter ScatterElements ScatterND Shrink Sign
        SpaceToDepth Sub Sum TopK""",
    FLOAT | INTEGER | BOOL: """Concat Expand EyeLike Flatten Gather GatherElements GatherND Identity If Loop OneHot
        Reshape ReverseSequence Shape Size Slice Split Squeeze Tile Transpose Trilu Unsqueeze Where""",
    FLOAT | INTEGER | BOOL | LOW_PRECISION: "Constant ConstantOfShape",
    FLOAT | INTEGER | BOOL | {"UINT8"}: "Cast CastLike",
    BOOL: "And Not Or Xor",
    FLOAT | INTEGER | {"INT8"}: "Gelu",
    FLOAT | INTEGER | {"FLOAT8E4M3FN"}: "Mean",
    FLOAT | {"INT8", "FLOAT8E4M3FN"}: "Attention",
    FLOAT | {"INT32"}: "TensorScatter",
    LOW_PRECISION | {"INT8"}: "DequantizeLinear",
}

#: op type -> ONNX data type names (``onnx.TensorProto.DataType`` names) its data input may have
SUPPORTED_TYPES: dict[str, frozenset[str]] = {op: types for types, ops in _GROUPS.items() for op in ops.split()}

#: Resize, per the table: transformation modes, modes and nearest modes TensorRT implements; "Antialiasing is not
#: supported"; aspect ratio policy "stretch" only. No "cubic": a bicubic resize cannot be part of a TensorRT graph.
RESIZE_COORDINATE_MODES = frozenset({"half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "asymmetric",
                                     "align_corners"})
RESIZE_MODES = frozenset({"nearest", "linear"})
RESIZE_NEAREST_MODES = frozenset({"floor", "ceil", "round_prefer_floor", "round_prefer_ceil"})
RESIZE_ASPECT_POLICIES = frozenset({"stretch"})

#: ops whose listed input must be a build-time constant ("`axes` must be an initializer", "`axis` must be a
#: build-time constant", "`K` ... ", "`is_training` must be an initializer"): op -> input index
CONSTANT_INPUTS: dict[str, int] = {
    **{op: 1 for op in ("ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMean",
                        "ReduceMin", "ReduceProd", "ReduceSum", "ReduceSumSquare", "Squeeze", "Unsqueeze",
                        "CumSum")},
    "Dropout": 2,
}
#: pooling: "2D or 3D Pooling only. `dilations` must be empty or all ones"
POOLING = frozenset({"AveragePool", "MaxPool", "LpPool"})
