"""The protobuf wire codec of the training API: ``ForwardBackwardRequest`` out, results in.

Why a codec of our own rather than the ``protobuf`` package: the wire schema on
this path is about twenty small messages (``tinker_public.proto``, see the shared
note), and a runtime dependency on ``protobuf`` would pin users into version
conflicts (the official SDK pins it, and so do many ML stacks, each to its own
major version), add generated code to keep in step, and a C extension to the
install. The encoding rules this path needs are few and fixed (varints, length
prefixes, packed repeated int64, little-endian doubles, map entries), so a small
pure-Python codec is about as fast (the bulk of the bytes are token and tensor
buffers made by ``array`` in C) and has no dependency at all.

Byte for byte: the request is encoded exactly as the official SDK's
``request_conv`` + upb serializer write it: fields in number order, proto3
defaults left out (an empty ``model_id``, ``seq_id`` 0, ``forward_only`` false),
a oneof arm written even when empty (an empty dense tensor), map entries with
both key and value always written, ``loss_fn_config`` numbers dual-written to the
legacy map (field 5) and the v2 map (field 7), strings only to v2. Map entries
are written in upb's deterministic order (``SerializeToString(deterministic=True)``);
the official SDK's default serialization orders them by a per-process hash seed,
so its own bytes differ from run to run whenever a map has two entries or more
(tests/proto_corpus holds reference bytes made by the official package).

Results are decoded as ``response_conv`` does, with its widenings: bfloat16 to
float32 and int32 to int64 (``BatchedTensor``), NaN prompt logprobs to ``None``,
top-k cells holding the (0, -99999.0) sentinel trimmed. Unknown fields are
skipped, as any protobuf parser does.
"""

from __future__ import annotations

import struct
import sys
from array import array
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from ._train_types import Datum, ForwardBackwardOutput, TensorData, TensorDtype
from .resources.types import (
    DmelChunk,
    EncodedTextChunk,
    ImageChunk,
    PromptAltTokens,
    SampledSequence,
    SampleResponse,
)

__all__ = [
    "ProtoDecodeError",
    "decode_forward_backward_output",
    "decode_sample_response",
    "encode_forward_backward_request",
    "estimate_datum_bytes",
]

_SWAP = sys.byteorder != "little"
_SMALL = [bytes([i]) for i in range(128)]
_DOUBLE = struct.Struct("<d")
DTYPE_FLOAT32, DTYPE_INT64, DTYPE_INT32, DTYPE_BFLOAT16 = 1, 2, 3, 4
_DTYPE_CODES: dict[str, int] = {"float32": DTYPE_FLOAT32, "int64": DTYPE_INT64}
_STOP_REASONS = {0: "stop", 1: "length"}
MASK_LOGPROB = -99999.0


class ProtoDecodeError(ValueError):
    """A protobuf body that does not parse as the message it should be."""


# -- encoding ---------------------------------------------------------------------------------------
#
# Each message is built as a list of byte pieces and its total length, so a nested message is
# never copied into its parent: the body is joined once, at the end.

Parts = list[bytes]
_STRUCTS: dict[tuple[str, int], struct.Struct] = {}


def _varint(value: int) -> bytes:
    if 0 <= value < 0x80:
        return _SMALL[value]
    if 0 < value < 0x4000:  # two bytes: every length of a datum's pieces up to 16 KiB
        return bytes(((value & 0x7F) | 0x80, value >> 7))
    if value < 0:
        value += 1 << 64  # int32/int64 negatives: ten bytes, two's complement
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(tag: int, payload: bytes) -> bytes:
    """A length-delimited field (``tag`` is the already shifted key byte)."""
    return _SMALL[tag] + _varint(len(payload)) + payload


def _nested(out: Parts, tag: int, parts: Parts, size: int) -> int:
    """Append a length-delimited field whose payload is ``parts`` (``size`` bytes); its total size."""
    head = _SMALL[tag] + _varint(size)
    out.append(head)
    out.extend(parts)
    return len(head) + size


def _packer(code: str, count: int) -> struct.Struct:
    packer = _STRUCTS.get((code, count))
    if packer is None:
        if len(_STRUCTS) > 4096:
            _STRUCTS.clear()
        packer = _STRUCTS[(code, count)] = struct.Struct(f"<{count}{code}")
    return packer


def _le(code: str, values: Sequence[Any]) -> bytes:
    """``values`` as little-endian items of ``code`` (``i`` int32, ``q`` int64, ``f`` float32)."""
    try:
        return _packer(code, len(values)).pack(*values)
    except (struct.error, OverflowError) as error:
        if code == "q" and any(isinstance(x, float) for x in values):  # truncated toward zero, as numpy casts
            return _le(code, [int(x) for x in values])
        if code == "f":  # beyond float32's range: what a C cast makes of it
            packed = array("f", values)
            if _SWAP:
                packed.byteswap()
            return packed.tobytes()
        raise ValueError(f"a value does not fit the wire's {_ITEM_NAMES[code]}: {error}") from None


_ITEM_NAMES = {"i": "int32", "q": "int64", "f": "float32"}


def _pack(data: Any, dtype: TensorDtype) -> bytes:
    """A tensor's values as little-endian bytes of ``dtype`` (numpy arrays straight, sequences packed)."""
    if type(data) is not list and hasattr(data, "astype") and hasattr(data, "tobytes"):
        return bytes(data.astype("<f4" if dtype == "float32" else "<i8").tobytes())
    return _le("f" if dtype == "float32" else "q", data)


def _tensor(td: TensorData, out: Parts) -> int:
    code = _DTYPE_CODES.get(td.dtype)
    if code is None:
        raise ValueError(f"Unsupported TensorData dtype for the protobuf wire: {td.dtype!r}")
    values = _pack(td.data, td.dtype)
    if td.sparse_crow_indices is not None:
        if td.sparse_col_indices is None:
            raise ValueError("sparse_col_indices required with sparse_crow_indices")
        csr = b"".join(
            _field(tag, raw)
            for tag, raw in (
                (0x0A, values),
                (0x12, _le("q", td.sparse_crow_indices)),
                (0x1A, _le("q", td.sparse_col_indices)),
            )
            if raw
        )
        head = _field(0x12, csr)
        out.append(head)
        size = len(head)
    else:
        size = _nested(out, 0x0A, [values], len(values))
    tail = b"\x18" + _varint(code)
    if td.shape:
        tail += _field(0x22, b"".join(_varint(s) for s in td.shape))
    out.append(tail)
    return size + len(tail)


_ORDERS: dict[tuple[str, ...], list[tuple[str, bytes]]] = {}  # every datum of a batch has the same keys


def _map_order(keys: Iterable[str]) -> list[tuple[str, bytes]]:
    """Keys with their UTF-8 bytes, in upb's deterministic order (bytes ascending, a prefix after its extensions)."""
    known = tuple(keys)
    pairs = _ORDERS.get(known)
    if pairs is None:
        pairs = [(key, key.encode()) for key in known]
        if len(pairs) > 1:
            pairs.sort(key=lambda pair: (*pair[1], 256))
        if len(_ORDERS) >= 256:
            _ORDERS.clear()
        _ORDERS[known] = pairs
    return pairs


def _media_chunk(chunk: Any, out: Parts) -> int:
    """``Datum.model_input`` entry of an image (``Chunk.image``) or audio (``Chunk.dmel``) chunk: its size."""
    if isinstance(chunk, ImageChunk):
        payload = _field(0x0A, chunk.data) if chunk.data else b""
        payload += _field(0x12, chunk.format.encode()) if chunk.format else b""
        if chunk.expected_tokens is not None:  # optional: written when set, 0 too
            payload += b"\x18" + _varint(chunk.expected_tokens)
        arm = _field(0x12, payload)
    elif isinstance(chunk, DmelChunk):
        arm = _field(0x1A, _field(0x0A, chunk.dmel) if chunk.dmel else b"")
    else:
        raise ValueError(f"Unsupported model input chunk type for the protobuf wire: {type(chunk).__name__}")
    entry = _field(0x0A, arm)
    out.append(entry)
    return len(entry)


def _datum(datum: Datum, out: Parts) -> int:
    size = 0
    for chunk in datum.model_input.chunks:
        if not isinstance(chunk, EncodedTextChunk):
            size += _media_chunk(chunk, out)
            continue
        tokens = _le("i", chunk.tokens)
        if not tokens:
            out.append(b"\x0a\x02\x0a\x00")  # Chunk{encoded_text: EncodedTextChunk{}}
            size += 4
            continue
        inner = b"\x0a" + _varint(len(tokens))  # EncodedTextChunk.tokens
        text = b"\x0a" + _varint(len(inner) + len(tokens))  # Chunk.encoded_text
        outer = b"\x0a" + _varint(len(text) + len(inner) + len(tokens))  # Datum.model_input
        out += (outer, text, inner, tokens)
        size += len(outer) + len(text) + len(inner) + len(tokens)
    inputs = datum.loss_fn_inputs
    for name, raw_name in _map_order(inputs):
        td = inputs[name]
        if (
            td.sparse_crow_indices is None
            and td.shape is not None
            and len(td.shape) == 1
            and td.dtype in _DTYPE_CODES
        ):
            # the common case, inlined: a dense 1-D tensor (entry = key, then Tensor{dense, dtype, shape})
            values = _pack(td.data, td.dtype)
            shape = _varint(td.shape[0])
            tail = b"\x18" + _SMALL[_DTYPE_CODES[td.dtype]] + b"\x22" + _varint(len(shape)) + shape
            head = _SMALL[0x0A] + _varint(len(values))
            tensor_size = len(head) + len(values) + len(tail)
            key = _field(0x0A, raw_name)
            tensor_head = b"\x12" + _varint(tensor_size)
            entry_size = len(key) + len(tensor_head) + tensor_size
            entry_head = b"\x12" + _varint(entry_size)
            out += (entry_head, key, tensor_head, head, values, tail)
            size += len(entry_head) + entry_size
            continue
        tensor: Parts = []
        tensor_size = _tensor(td, tensor)
        entry: Parts = [_field(0x0A, raw_name)]
        entry_size = len(entry[0]) + _nested(entry, 0x12, tensor, tensor_size)
        size += _nested(out, 0x12, entry, entry_size)
    return size


def encode_forward_backward_request(
    model_id: str,
    seq_id: int,
    data: Sequence[Datum],
    loss_fn: str,
    loss_fn_config: Mapping[str, float | str] | None = None,
    *,
    forward_only: bool = False,
) -> bytes:
    """The ``ForwardBackwardRequest`` body, byte for byte as the official SDK encodes it (see the module doc)."""
    parts: Parts = []
    if model_id:
        parts.append(_field(0x0A, model_id.encode()))
    if seq_id:
        parts.append(b"\x10" + _varint(seq_id))
    for datum in data:
        payload: Parts = []
        _nested(parts, 0x1A, payload, _datum(datum, payload))
    if loss_fn:
        parts.append(_field(0x22, loss_fn.encode()))
    ordered = _map_order(list(loss_fn_config)) if loss_fn_config else []
    for key, raw in ordered:
        value = loss_fn_config[key]  # type: ignore[index]
        if not isinstance(value, str):
            parts.append(_field(0x2A, _field(0x0A, raw) + b"\x11" + _DOUBLE.pack(float(value))))
    if forward_only:
        parts.append(b"\x30\x01")
    for key, raw in ordered:
        value = loss_fn_config[key]  # type: ignore[index]
        arm = _field(0x12, value.encode()) if isinstance(value, str) else b"\x09" + _DOUBLE.pack(float(value))
        parts.append(_field(0x3A, _field(0x0A, raw) + _field(0x12, arm)))
    return b"".join(parts)


def estimate_datum_bytes(datum: Datum) -> int:
    """The SDK's estimate of a datum's encoded size (what chunking counts): tokens x 4, image and audio
    bytes, tensor bytes, CSR indices x 8."""
    total = 0
    for chunk in datum.model_input.chunks:
        if isinstance(chunk, ImageChunk):
            total += len(chunk.data)
        elif isinstance(chunk, DmelChunk):
            total += len(chunk.dmel)
        else:
            total += 4 * len(chunk.tokens)
    for td in datum.loss_fn_inputs.values():
        total += len(td.data) * (4 if td.dtype == "float32" else 8)
        total += 8 * len(td.sparse_crow_indices or ()) + 8 * len(td.sparse_col_indices or ())
    return total


# -- decoding ---------------------------------------------------------------------------------------


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ProtoDecodeError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise ProtoDecodeError("varint longer than ten bytes")


def _fields(buf: bytes) -> Iterator[tuple[int, int, Any]]:
    """(field number, wire type, value): an int for varints, bytes for the rest."""
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = _read_varint(buf, pos)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise ProtoDecodeError("field number 0")
        if wire == 0:
            value, pos = _read_varint(buf, pos)
            yield number, wire, value
        elif wire == 2:
            length, pos = _read_varint(buf, pos)
            if pos + length > end:
                raise ProtoDecodeError(f"field {number}: {length} bytes announced, {end - pos} left")
            yield number, wire, buf[pos : pos + length]
            pos += length
        elif wire == 1:
            if pos + 8 > end:
                raise ProtoDecodeError("truncated fixed64")
            yield number, wire, buf[pos : pos + 8]
            pos += 8
        elif wire == 5:
            if pos + 4 > end:
                raise ProtoDecodeError("truncated fixed32")
            yield number, wire, buf[pos : pos + 4]
            pos += 4
        else:
            raise ProtoDecodeError(f"field {number}: unsupported wire type {wire}")


def _expect(number: int, wire: int, want: int, message: str) -> None:
    if wire != want:
        raise ProtoDecodeError(f"{message} field {number}: wire type {wire}, expected {want}")


def _signed64(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _signed32(value: int) -> int:
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value >= 1 << 31 else value


def _int64s(wire: int, value: Any, into: list[int]) -> None:
    """A repeated int64 field's item(s): packed (wire 2) or one varint."""
    if wire == 0:
        into.append(_signed64(value))
        return
    pos, raw = 0, bytes(value)
    while pos < len(raw):
        item, pos = _read_varint(raw, pos)
        into.append(_signed64(item))


def _unpack(raw: bytes, code: str) -> array[Any]:
    values = array(code)
    if len(raw) % values.itemsize:
        raise ProtoDecodeError(f"{len(raw)} bytes is not a whole number of {values.itemsize}-byte items")
    values.frombytes(raw)
    if _SWAP:
        values.byteswap()
    return values


def _map_entry(raw: bytes, message: str) -> tuple[str, Any]:
    key, value = "", None
    for number, wire, item in _fields(raw):
        if number == 1:
            _expect(number, wire, 2, message)
            key = bytes(item).decode()
        elif number == 2:
            value = item
    return key, value


# (numpy-free) item code and widening per BatchedTensor dtype: (array code, itemsize, public dtype)
_BATCHED: dict[int, tuple[str, int, TensorDtype]] = {
    DTYPE_FLOAT32: ("f", 4, "float32"),
    DTYPE_INT64: ("q", 8, "int64"),
    DTYPE_INT32: ("i", 4, "int64"),
    DTYPE_BFLOAT16: ("H", 2, "float32"),
}


def _widened(data: bytes, code: int) -> list[Any]:
    """Packed items of a ``DType`` as Python numbers, widened (bfloat16 to float32; int32 to int64)."""
    values = _unpack(data, _BATCHED[code][0])
    if code == DTYPE_BFLOAT16:  # bfloat16 is the upper half of a float32
        widened = array("I", [v << 16 for v in values])
        values = array("f", widened.tobytes())
    return values.tolist()


def _tensor_data(raw: bytes) -> TensorData:
    """A ``Tensor`` (dense or sparse CSR) as ``TensorData``, as ``response_conv`` reads it, widened
    as ``BatchedTensor`` is (the SDK leaves a bfloat16 ``Tensor``'s raw halves under a float32 label)."""
    dense, code = b"", 0
    csr: bytes | None = None
    shape: list[int] = []
    for number, wire, value in _fields(raw):
        if number == 1:
            dense = bytes(value)
        elif number == 2:
            csr = bytes(value)
        elif number == 3:
            code = value
        elif number == 4:
            _int64s(wire, value, shape)
    spec = _BATCHED.get(code)
    if spec is None:
        raise ProtoDecodeError(f"Unsupported proto dtype: {code}")
    if csr is None:
        return TensorData(_widened(dense, code), spec[2], shape)
    values, crow, col = b"", b"", b""
    for number, _wire, value in _fields(csr):
        if number == 1:
            values = bytes(value)
        elif number == 2:
            crow = bytes(value)
        elif number == 3:
            col = bytes(value)
    return TensorData(
        _widened(values, code), spec[2], shape, _unpack(crow, "q").tolist(), _unpack(col, "q").tolist()
    )


def _batched(raw: bytes) -> tuple[TensorDtype, list[int], list[list[Any]]]:
    """A BatchedTensor: (public dtype, trailing shape, per-datum flat values), widened."""
    data, offsets_raw, code = b"", b"", 0
    trailing: list[int] = []
    for number, wire, value in _fields(raw):
        if number == 1:
            data = bytes(value)
        elif number == 2:
            offsets_raw = bytes(value)
        elif number == 3:
            code = value
        elif number == 4:
            _int64s(wire, value, trailing)
    spec = _BATCHED.get(code)
    if spec is None:
        raise ProtoDecodeError(f"Unsupported proto DType value: {code}")
    _, size, dtype = spec
    flat = _widened(data, code)
    offsets = _unpack(offsets_raw, "q")
    per_datum = [flat[offsets[i] // size : offsets[i + 1] // size] for i in range(len(offsets) - 1)]
    return dtype, trailing, per_datum


def decode_forward_backward_output(raw: bytes) -> ForwardBackwardOutput:
    """A protobuf ``ForwardBackwardOutput`` as the SDK's type (records merged, datums split, widened)."""
    output_type, metrics, records = "", {}, []
    for number, _wire, value in _fields(raw):
        if number == 1:
            output_type = bytes(value).decode()
        elif number == 2:
            records.append(value)
        elif number == 3:
            key, item = _map_entry(value, "metrics")
            metrics[key] = 0.0 if item is None else _DOUBLE.unpack(item)[0]
    if not records:
        return ForwardBackwardOutput(output_type or "ArrayRecord", [], metrics)
    arrays: dict[str, list[list[Any]]] = {}
    meta: dict[str, list[tuple[TensorDtype, list[int]]]] = {}
    num_datums = 0
    for record in records:
        for number, _wire, value in _fields(record):
            if number == 2:
                name, tensor = _map_entry(value, "ArrayRecord.fields")
                dtype, trailing, per_datum = _batched(b"" if tensor is None else bytes(tensor))
                arrays.setdefault(name, []).extend(per_datum)
                meta.setdefault(name, []).extend([(dtype, trailing)] * len(per_datum))
            elif number == 3:
                num_datums += _signed64(value)
    if num_datums == 0 and arrays:
        num_datums = len(next(iter(arrays.values())))
    outputs: list[dict[str, TensorData]] = []
    for i in range(num_datums):
        datum: dict[str, TensorData] = {}
        for name, per_datum in arrays.items():
            if i >= len(per_datum):
                raise ProtoDecodeError(
                    f"field {name!r} has {len(per_datum)} datums, the records {num_datums}"
                )
            dtype, trailing = meta[name][i]
            values = per_datum[i]
            elems = 1
            for s in trailing:
                elems *= s
            datum[name] = TensorData(values, dtype, [len(values) // elems if elems else 0, *trailing])
        outputs.append(datum)
    return ForwardBackwardOutput(output_type.rsplit(":", 1)[-1], outputs, metrics)


def _topk(raw: bytes) -> list[list[tuple[int, float]] | None] | None:
    ids_raw, lps_raw, k, n = b"", b"", 0, 0
    for number, _wire, value in _fields(raw):
        if number == 1:
            ids_raw = bytes(value)
        elif number == 2:
            lps_raw = bytes(value)
        elif number == 3:
            k = value & 0xFFFFFFFF
        elif number == 4:
            n = value & 0xFFFFFFFF
    if n == 0 or k == 0:
        return None
    ids, lps = _unpack(ids_raw, "i").tolist(), _unpack(lps_raw, "f").tolist()
    if len(ids) != n * k or len(lps) != n * k:
        raise ProtoDecodeError(f"top-k logprobs of {n} x {k} with {len(ids)} ids and {len(lps)} logprobs")
    result: list[list[tuple[int, float]] | None] = []
    for start in range(0, n * k, k):
        if ids[start] == 0 and lps[start] == MASK_LOGPROB:
            result.append(None)
            continue
        end = start + k
        while end > start and ids[end - 1] == 0 and lps[end - 1] == MASK_LOGPROB:
            end -= 1
        result.append(list(zip(ids[start:end], lps[start:end], strict=True)))
    return result


def _sequence(raw: bytes) -> SampledSequence:
    stop, tokens, logprobs, topk = 0, b"", b"", None
    for number, _wire, value in _fields(raw):
        if number == 1:
            stop = value
        elif number == 2:
            tokens = bytes(value)
        elif number == 3:
            logprobs = bytes(value)
        elif number == 4:
            topk = _topk(bytes(value))
    reason = _STOP_REASONS.get(stop)
    if reason is None:
        raise ProtoDecodeError(f"Unknown stop_reason enum value {stop} in proto SampleResponse")
    return SampledSequence(
        stop_reason=reason,
        tokens=_unpack(tokens, "i").tolist(),
        logprobs=_unpack(logprobs, "f").tolist() if logprobs else None,
        topk_logprobs=topk,
    )


def decode_sample_response(raw: bytes) -> SampleResponse:
    """A protobuf ``SampleResponse`` as the SDK's type (NaN prompt logprobs become None)."""
    sequences, prompt, topk, hits = [], b"", None, 0
    targets: TensorData | None = None
    alternatives: PromptAltTokens | None = None
    for number, _wire, value in _fields(raw):
        if number == 1:
            sequences.append(_sequence(bytes(value)))
        elif number == 2:
            prompt = bytes(value)
        elif number == 3:
            topk = _topk(bytes(value))
        elif number == 4:
            hits = _signed32(value)
        elif number == 5:
            targets = _tensor_data(bytes(value))
        elif number == 6:
            pair = {n: _tensor_data(bytes(v)) for n, _w, v in _fields(bytes(value)) if n in (1, 2)}
            empty = TensorData([], "float32", [])
            alternatives = PromptAltTokens(pair.get(1, empty), pair.get(2, empty))
    prompt_logprobs: list[float | None] | None = None
    if prompt:
        prompt_logprobs = [None if x != x else x for x in _unpack(prompt, "f").tolist()]
    return SampleResponse(
        sequences=sequences,
        prompt_logprobs=prompt_logprobs,
        topk_prompt_logprobs=topk,
        prompt_cache_hit_tokens=hits,
        target_prompt_logprobs=targets,
        prompt_alt_tokens=alternatives,
    )
