"""The mock's own protobuf codec (stdlib only): an independent oracle for the client's ``_proto``.

Reads ``ForwardBackwardRequest`` bodies into plain dicts and writes the two protobuf
results, ``ForwardBackwardOutput`` (one batched ``ArrayRecord``) and ``SampleResponse``.
It shares no code with the client on purpose: a client encoding that this decoder
reads back differently is a bug on one side, caught by the tests.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

__all__ = ["WireError", "decode_forward_backward_request", "encode_fwdbwd_output", "encode_sample_response"]

_FORMATS = {1: ("<f", 4, "float32"), 2: ("<q", 8, "int64"), 3: ("<i", 4, "int32"), 4: ("<H", 2, "bfloat16")}


class WireError(ValueError):
    """A body that is not the protobuf message it should be."""


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise WireError("bad varint")
        b = buf[pos]
        result |= (b & 0x7F) << shift
        pos += 1
        if not b & 0x80:
            return result, pos
        shift += 7


def _read(buf: bytes) -> Iterator[tuple[int, Any]]:
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        value: Any
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = buf[pos : pos + 8], pos + 8
        elif wire == 2:
            n, pos = _varint(buf, pos)
            if pos + n > len(buf):
                raise WireError("length past the end")
            value, pos = buf[pos : pos + n], pos + n
        elif wire == 5:
            value, pos = buf[pos : pos + 4], pos + 4
        else:
            raise WireError(f"wire type {wire}")
        yield number, value


def _s64(v: int) -> int:
    return v - (1 << 64) if v >> 63 else v


def _values(raw: bytes, fmt: str, size: int) -> list[Any]:
    if len(raw) % size:
        raise WireError("buffer not a whole number of items")
    return [x[0] for x in struct.iter_unpack(fmt, raw)]


def _tensor(raw: bytes) -> dict[str, Any]:
    out: dict[str, Any] = {"data": b"", "dtype": 0, "shape": [], "crow": None, "col": None}
    for number, value in _read(raw):
        if number == 1:
            out["data"] = value
        elif number == 2:
            for n, v in _read(value):
                if n == 1:
                    out["data"] = v
                elif n == 2:
                    out["crow"] = _values(v, "<q", 8)
                elif n == 3:
                    out["col"] = _values(v, "<q", 8)
            out["crow"] = out["crow"] or []
            out["col"] = out["col"] or []
        elif number == 3:
            out["dtype"] = value
        elif number == 4:
            pos = 0
            while pos < len(value):
                item, pos = _varint(value, pos)
                out["shape"].append(_s64(item))
    if out["dtype"] not in (1, 2):
        raise WireError(f"tensor dtype {out['dtype']}: only float32 (1) and int64 (2) go on the request wire")
    fmt, size, name = _FORMATS[out["dtype"]]
    out["data"], out["dtype"] = _values(out["data"], fmt, size), name
    return out


def _entry(raw: bytes) -> tuple[str, Any]:
    key, value = "", None
    for number, v in _read(raw):
        if number == 1:
            key = v.decode()
        elif number == 2:
            value = v
    return key, value


def _media(arm: int, raw: bytes) -> dict[str, Any]:
    """An image chunk (``{"type": "image", "data", "format", "expected_tokens"}``) or a dmel one."""
    if arm == 3:
        return {"type": "dmel", "dmel": b"".join(v for f, v in _read(raw) if f == 1)}
    image: dict[str, Any] = {"type": "image", "data": b"", "format": "", "expected_tokens": None}
    for f, v in _read(raw):
        if f == 1:
            image["data"] = v
        elif f == 2:
            image["format"] = v.decode()
        elif f == 3:
            image["expected_tokens"] = _s64(v)
    return image


def decode_forward_backward_request(raw: bytes) -> dict[str, Any]:
    """``{model_id, seq_id, loss_fn, forward_only, loss_fn_config, legacy_config,
    data: [{tokens, loss_fn_inputs, media}]}`` (``media``: the datum's image and dmel chunks)."""
    out: dict[str, Any] = {
        "model_id": "",
        "seq_id": 0,
        "loss_fn": "",
        "forward_only": False,
        "loss_fn_config": {},
        "legacy_config": {},
        "data": [],
    }
    for number, value in _read(raw):
        if number == 1:
            out["model_id"] = value.decode()
        elif number == 2:
            out["seq_id"] = _s64(value)
        elif number == 3:
            datum: dict[str, Any] = {"tokens": [], "loss_fn_inputs": {}, "media": []}
            for n, v in _read(value):
                if n == 1:
                    for arm, chunk in _read(v):
                        if arm == 1:
                            for f, tokens in _read(chunk):
                                if f == 1:
                                    datum["tokens"].extend(_values(tokens, "<i", 4))
                        elif arm in (2, 3):
                            datum["media"].append(_media(arm, chunk))
                        else:
                            raise WireError(f"Chunk: unknown arm {arm}")
                elif n == 2:
                    key, tensor = _entry(v)
                    datum["loss_fn_inputs"][key] = _tensor(tensor or b"")
            out["data"].append(datum)
        elif number == 4:
            out["loss_fn"] = value.decode()
        elif number == 5:
            key, v = _entry(value)
            out["legacy_config"][key] = struct.unpack("<d", v)[0] if v else 0.0
        elif number == 6:
            out["forward_only"] = bool(value)
        elif number == 7:
            key, v = _entry(value)
            for arm, item in _read(v or b""):
                out["loss_fn_config"][key] = struct.unpack("<d", item)[0] if arm == 1 else item.decode()
    return out


def _key(number: int, wire: int) -> bytes:
    return _enc_varint(number << 3 | wire)


_ONE_BYTE = [bytes((i,)) for i in range(0x80)]  # the varints of 0..127 (field keys, dtypes, lengths)


def _enc_varint(value: int) -> bytes:
    if 0 <= value < 0x80:
        return _ONE_BYTE[value]
    if value < 0:
        value += 1 << 64
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _ld(number: int, payload: bytes) -> bytes:
    return _key(number, 2) + _enc_varint(len(payload)) + payload


def encode_fwdbwd_output(
    output_type: str,
    fields: Mapping[str, Sequence[Sequence[float]]],
    dtypes: Mapping[str, int],
    metrics: Mapping[str, float],
) -> bytes:
    """One ``ArrayRecord`` of ``len(per-datum lists)`` datums: ``fields[name][i]`` is datum i's values."""
    num = len(next(iter(fields.values()))) if fields else 0
    record = _ld(1, b"ArrayRecord")
    for name, per_datum in fields.items():
        fmt, size, _ = _FORMATS[dtypes[name]]
        data, offsets = b"", [0]
        for values in per_datum:
            data += b"".join(struct.pack(fmt, v) for v in values)
            offsets.append(len(data))
        tensor = (
            _ld(1, data)
            + _ld(2, b"".join(struct.pack("<q", o) for o in offsets))
            + _key(3, 0)
            + _enc_varint(dtypes[name])
        )
        record += _ld(2, _ld(1, name.encode()) + _ld(2, tensor))
    if num:
        record += _key(3, 0) + _enc_varint(num)
    body = _ld(1, output_type.encode()) + _ld(2, record)
    for key, value in metrics.items():
        body += _ld(3, _ld(1, key.encode()) + _key(2, 1) + struct.pack("<d", value))
    return body


def encode_dense_tensor(values: Sequence[float], dtype: int, shape: Sequence[int]) -> bytes:
    """A dense ``Tensor`` (1 dense, 3 dtype, 4 shape packed) of ``dtype`` (a ``DType`` number)."""
    fmt, _, _ = _FORMATS[dtype]
    data = b"".join(struct.pack(fmt, v) for v in values)
    return _ld(1, data) + _key(3, 0) + _enc_varint(dtype) + _ld(4, b"".join(_enc_varint(n) for n in shape))


def encode_sample_response(
    sequences: Sequence[tuple[int, Sequence[int], Sequence[float] | None]],
    prompt_logprobs: Sequence[float] | None = None,
    prompt_cache_hit_tokens: int = 0,
    target_prompt_logprobs: bytes | None = None,
    prompt_alt_tokens: tuple[bytes, bytes] | None = None,
) -> bytes:
    """``(stop_reason, tokens, logprobs)`` per sequence; NaN marks a prompt position without a logprob.
    ``target_prompt_logprobs`` (field 5) and ``prompt_alt_tokens`` (field 6: tokens, logprobs) are
    encoded ``Tensor`` messages (``encode_dense_tensor``)."""
    body = b""
    for stop, tokens, logprobs in sequences:
        seq = (_key(1, 0) + _enc_varint(stop)) if stop else b""
        if tokens:
            seq += _ld(2, struct.pack(f"<{len(tokens)}i", *tokens))
        if logprobs:
            seq += _ld(3, struct.pack(f"<{len(logprobs)}f", *logprobs))
        body += _ld(1, seq)
    if prompt_logprobs:
        body += _ld(2, struct.pack(f"<{len(prompt_logprobs)}f", *prompt_logprobs))
    if prompt_cache_hit_tokens:
        body += _key(4, 0) + _enc_varint(prompt_cache_hit_tokens)
    if target_prompt_logprobs is not None:
        body += _ld(5, target_prompt_logprobs)
    if prompt_alt_tokens is not None:
        body += _ld(6, _ld(1, prompt_alt_tokens[0]) + _ld(2, prompt_alt_tokens[1]))
    return body
