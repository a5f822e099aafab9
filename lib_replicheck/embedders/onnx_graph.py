"""Just enough of the ONNX file format to reach inside a model: list its nodes, read a float
initializer, and name an inner tensor as one more output.

Region search needs SSCD's last feature map, which the exported model computes but does not
return. onnxruntime cannot add outputs to a model; the `onnx` package can, but would be one more
dependency for three small edits of a protobuf message, so they are done here, on the bytes:
field numbers from onnx.proto (ModelProto.graph = 7; GraphProto.node = 1, initializer = 5,
output = 12; NodeProto.input = 1, output = 2, op_type = 4; TensorProto.dims = 1, data_type = 2,
float_data = 4, name = 8, raw_data = 9; ValueInfoProto.name = 1). The file is already verified
(sha256, or loaded by onnxruntime) before it gets here; malformed bytes raise ValueError.
"""

from __future__ import annotations

from dataclasses import dataclass

GRAPH, NODE, INITIALIZER, OUTPUT = 7, 1, 5, 12
FLOAT = 1  # TensorProto.DataType.FLOAT


@dataclass(frozen=True)
class Node:
    op_type: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise ValueError("truncated or malformed protobuf varint")
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        b = value & 0x7F
        value >>= 7
        out.append(b | (0x80 if value else 0))
        if not value:
            return bytes(out)


def fields(buf: bytes):
    """(field number, wire type, value, start, end) of each field of a message; `value` is an int
    for varints and fixed-width fields, the payload's bytes for length-delimited ones."""
    pos = 0
    while pos < len(buf):
        start = pos
        tag, pos = _varint(buf, pos)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = int.from_bytes(buf[pos:pos + 8], "little"), pos + 8
        elif wire == 2:
            size, pos = _varint(buf, pos)
            if pos + size > len(buf):
                raise ValueError("truncated protobuf field")
            value, pos = buf[pos:pos + size], pos + size
        elif wire == 5:
            value, pos = int.from_bytes(buf[pos:pos + 4], "little"), pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        if pos > len(buf):
            raise ValueError("truncated protobuf field")
        yield number, wire, value, start, pos


def _graph(model: bytes) -> bytes:
    for number, wire, value, _, _ in fields(model):
        if number == GRAPH and wire == 2:
            return value
    raise ValueError("no graph in this ONNX model")


def nodes(model: bytes) -> list[Node]:
    """The graph's nodes in order (only the top-level graph; SSCD has no subgraphs)."""
    out = []
    for number, wire, value, _, _ in fields(_graph(model)):
        if number == NODE and wire == 2:
            ins, outs, op = [], [], ""
            for n, w, v, _, _ in fields(value):
                if w != 2:
                    continue
                if n == 1:
                    ins.append(v.decode("utf-8", "replace"))
                elif n == 2:
                    outs.append(v.decode("utf-8", "replace"))
                elif n == 4:
                    op = v.decode("utf-8", "replace")
            out.append(Node(op, tuple(ins), tuple(outs)))
    return out


def initializer(model: bytes, name: str):
    """A float32 initializer of the graph as a numpy array, or None if there is none by that name
    (or it is not float32, or its data lives in an external file)."""
    import numpy as np

    for number, wire, value, _, _ in fields(_graph(model)):
        if number != INITIALIZER or wire != 2:
            continue
        dims, dtype, tname, raw, floats = [], FLOAT, None, None, []
        for n, w, v, _, _ in fields(value):
            if n == 1 and w == 0:
                dims.append(v)
            elif n == 1 and w == 2:  # packed dims
                p = 0
                while p < len(v):
                    d, p = _varint(v, p)
                    dims.append(d)
            elif n == 2 and w == 0:
                dtype = v
            elif n == 8 and w == 2:
                tname = v.decode("utf-8", "replace")
            elif n == 9 and w == 2:
                raw = v
            elif n == 4 and w == 2:
                floats.append(v)
        if tname != name:
            continue
        if dtype != FLOAT:
            return None
        data = raw if raw is not None else b"".join(floats)
        count = int(np.prod(dims)) if dims else 1
        if len(data) != 4 * count:
            return None
        return np.frombuffer(data, dtype="<f4").reshape(dims).astype(np.float32)
    return None


def with_output(model: bytes, name: str) -> bytes:
    """The model with the inner tensor `name` added to the graph's outputs (no type given:
    onnxruntime infers it)."""
    name_b = name.encode("utf-8")
    value_info = _encode_varint((1 << 3) | 2) + _encode_varint(len(name_b)) + name_b
    extra = _encode_varint((OUTPUT << 3) | 2) + _encode_varint(len(value_info)) + value_info
    out = bytearray()
    done = False
    for number, wire, value, start, end in fields(model):
        if number == GRAPH and wire == 2 and not done:
            graph = value + extra
            out += _encode_varint((GRAPH << 3) | 2) + _encode_varint(len(graph)) + graph
            done = True
        else:
            out += model[start:end]
    if not done:
        raise ValueError("no graph in this ONNX model")
    return bytes(out)


@dataclass(frozen=True)
class GemHead:
    """Where SSCD's head starts: the feature map it pools (GeM, p=3), and the linear layer after."""

    feature_map: str
    weight: str
    bias: str | None


def find_gem_head(graph_nodes: list[Node]) -> GemHead | None:
    """SSCD's head as exported: [Reshape|Flatten] -> Clip -> Pow -> ReduceMean -> Pow -> Gemm.
    None when the model does not end that way."""
    producer = {o: n for n in graph_nodes for o in n.outputs}
    for gemm in graph_nodes:
        if gemm.op_type != "Gemm" or len(gemm.inputs) < 2:
            continue
        chain, name = [], gemm.inputs[0]
        for op in ("Pow", "ReduceMean", "Pow", "Clip"):
            node = producer.get(name)
            if node is None or node.op_type != op:
                break
            chain.append(node)
            name = node.inputs[0]
        else:
            node = producer.get(name)
            if node is not None and node.op_type in ("Reshape", "Flatten"):
                name = node.inputs[0]
            return GemHead(name, gemm.inputs[1], gemm.inputs[2] if len(gemm.inputs) > 2 and gemm.inputs[2] else None)
    return None
