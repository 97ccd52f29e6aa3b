"""The protobuf codec against reference bytes made by the official SDK (tests/proto_corpus/make_corpus.py).

Every request case is encoded by ``tinker_sync._proto`` and compared byte for byte
with the official ``request_conv`` output; every result case is decoded and
compared with what the official ``response_conv`` made of the same bytes.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import Any

import pytest

from tinker_sync import _proto
from tinker_sync.types import (
    Datum,
    DmelChunk,
    EncodedTextChunk,
    ForwardBackwardOutput,
    ImageChunk,
    ModelInput,
    ModelInputChunk,
    SampleResponse,
    TensorData,
)

CORPUS = json.loads((Path(__file__).parent / "proto_corpus" / "corpus.json").read_text())


def _chunk(chunk: Any) -> ModelInputChunk:
    """A case's chunk (see make_corpus.official_chunk): token ids, an image or a dmel chunk."""
    if isinstance(chunk, list):
        return EncodedTextChunk(list(chunk))
    if "image" in chunk:
        image = chunk["image"]
        return ImageChunk(bytes.fromhex(image["data"]), image["format"], image["expected_tokens"])
    return DmelChunk(bytes.fromhex(chunk["dmel"]))


def _datum(case: dict[str, Any]) -> Datum:
    return Datum(
        model_input=ModelInput([_chunk(chunk) for chunk in case["chunks"]]),
        loss_fn_inputs={
            name: TensorData(t["data"], t["dtype"], t["shape"], t.get("crow"), t.get("col"))
            for name, t in case["loss_fn_inputs"].items()
        },
    )


def _encode(case: dict[str, Any]) -> bytes:
    return _proto.encode_forward_backward_request(
        case["model_id"],
        case["seq_id"],
        [_datum(d) for d in case["data"]],
        case["loss_fn"],
        case["loss_fn_config"],
        forward_only=case["forward_only"],
    )


@pytest.mark.parametrize("case", CORPUS["requests"], ids=lambda c: c["name"])
def test_request_bytes_identical_to_official(case: dict[str, Any]) -> None:
    encoded = _encode(case)
    assert encoded.hex() == case["bytes"]
    if case["default_is_deterministic"]:  # no map with two entries: the SDK's everyday bytes too
        assert encoded.hex() == case["default_bytes"]


def test_corpus_covers_the_shapes_that_matter() -> None:
    """The corpus is not vacuous: it holds each feature the codec has a branch for."""
    requests = CORPUS["requests"]
    tensors = [t for c in requests for d in c["data"] for t in d["loss_fn_inputs"].values()]
    assert (
        len(requests) >= 100 and len(CORPUS["fwdbwd_outputs"]) >= 50 and len(CORPUS["sample_responses"]) >= 50
    )
    assert any(t.get("crow") is not None for t in tensors)
    assert any(t["shape"] == [] for t in tensors) and any(t["shape"] is None for t in tensors)
    assert any(t["shape"] == [0] for t in tensors)
    assert any(c["forward_only"] for c in requests) and any(not c["forward_only"] for c in requests)
    configs = [c["loss_fn_config"] for c in requests if c["loss_fn_config"]]
    assert any(isinstance(v, str) for cfg in configs for v in cfg.values())
    assert any(len(cfg) >= 2 for cfg in configs)
    assert any(not c["default_is_deterministic"] for c in requests)
    chunks = [
        chunk for c in requests for d in c["data"] for chunk in d["chunks"] if not isinstance(chunk, list)
    ]
    images = [chunk["image"] for chunk in chunks if "image" in chunk]
    assert any("dmel" in chunk for chunk in chunks) and any(image["data"] == "" for image in images)
    assert {None, 0, -1} <= {image["expected_tokens"] for image in images}
    samples = [c["decoded"] for c in CORPUS["sample_responses"]]
    targets = [s["target_prompt_logprobs"] for s in samples if s["target_prompt_logprobs"]]
    assert any(t["crow"] is not None for t in targets) and {t["dtype"] for t in targets} == {
        "float32",
        "int64",
    }
    assert any(s["prompt_alt_tokens"] for s in samples)
    dtypes = {bytes.fromhex(c["bytes"]).count(b"\x18\x03") for c in CORPUS["fwdbwd_outputs"]}
    assert dtypes  # int32 records appear (the widening is exercised below)


def test_note_example_is_179_bytes_and_round_trips_through_an_independent_decoder() -> None:
    case = next(c for c in CORPUS["requests"] if c["name"] == "note-example-181-bytes")
    encoded = _encode(case)
    assert len(encoded) == 179
    # the mock's decoder is a separate implementation: it must read back what we wrote
    from tinker_sync.testing import _proto_wire

    request = _proto_wire.decode_forward_backward_request(encoded)
    assert request["model_id"] == "s:train:0" and request["seq_id"] == 1
    assert request["loss_fn_config"] == {"clip": 0.2, "mode": "x"}
    assert request["data"][0]["tokens"] == [1, 2, 3]
    assert request["data"][0]["loss_fn_inputs"]["target_tokens"]["data"] == [2, 3, 4]


def _same_float(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    if math.isnan(a):
        return math.isnan(b)
    return struct.pack("<d", a) == struct.pack("<d", b)


def _same_floats(a: list[Any] | None, b: list[Any] | None) -> bool:
    if a is None or b is None:
        return a is b
    return len(a) == len(b) and all(_same_float(x, y) for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("case", CORPUS["fwdbwd_outputs"], ids=lambda c: c["name"])
def test_forward_backward_output_decodes_as_official(case: dict[str, Any]) -> None:
    out = _proto.decode_forward_backward_output(bytes.fromhex(case["bytes"]))
    want = case["decoded"]
    assert isinstance(out, ForwardBackwardOutput)
    assert out.loss_fn_output_type == want["loss_fn_output_type"]
    assert {k: v.hex() for k, v in out.metrics.items()} == want["metrics"]
    assert len(out.loss_fn_outputs) == len(want["loss_fn_outputs"])
    for got, expected in zip(out.loss_fn_outputs, want["loss_fn_outputs"], strict=True):
        assert set(got) == set(expected)
        for name, tensor in got.items():
            _same_tensor(tensor, expected[name])


def _same_tensor(tensor: TensorData | None, ref: dict[str, Any] | None) -> None:
    """``tensor`` holds what the official decoder made (``ref``: make_corpus.tensor_json)."""
    if tensor is None or ref is None:
        assert tensor is ref
        return
    assert (tensor.dtype, tensor.shape) == (ref["dtype"], ref["shape"])
    assert (tensor.sparse_crow_indices, tensor.sparse_col_indices) == (ref.get("crow"), ref.get("col"))
    if tensor.dtype == "int64":
        assert list(tensor.data) == ref["data"]
        assert all(type(x) is int for x in tensor.data)
    else:
        assert _same_floats(list(tensor.data), ref["data"])


@pytest.mark.parametrize("case", CORPUS["sample_responses"], ids=lambda c: c["name"])
def test_sample_response_decodes_as_official(case: dict[str, Any]) -> None:
    out = _proto.decode_sample_response(bytes.fromhex(case["bytes"]))
    want = case["decoded"]
    assert isinstance(out, SampleResponse)
    assert out.prompt_cache_hit_tokens == want["prompt_cache_hit_tokens"]
    assert _same_floats(out.prompt_logprobs, want["prompt_logprobs"])

    def topk(value: Any) -> Any:
        return None if value is None else [None if p is None else [list(t) for t in p] for p in value]

    assert topk(out.topk_prompt_logprobs) == want["topk_prompt_logprobs"]
    assert len(out.sequences) == len(want["sequences"])
    for seq, ref in zip(out.sequences, want["sequences"], strict=True):
        assert (seq.stop_reason, seq.tokens) == (ref["stop_reason"], ref["tokens"])
        assert _same_floats(seq.logprobs, ref["logprobs"])
        assert topk(seq.topk_logprobs) == ref["topk_logprobs"]
    _same_tensor(out.target_prompt_logprobs, want["target_prompt_logprobs"])
    alternatives = want["prompt_alt_tokens"]
    assert (out.prompt_alt_tokens is None) == (alternatives is None)
    if out.prompt_alt_tokens is not None:
        _same_tensor(out.prompt_alt_tokens.tokens, alternatives["tokens"])
        _same_tensor(out.prompt_alt_tokens.logprobs, alternatives["logprobs"])


@pytest.mark.parametrize(
    "raw",
    [
        b"\x0a\x05ab",
        b"\x12\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01",
        b"\x0b",
        b"\x00\x00",
        b"\x12\x03\x0a\x01",
    ],
    ids=["short-string", "long-varint", "group-wire-type", "field-zero", "short-map-entry"],
)
def test_malformed_bodies_raise_a_decode_error(raw: bytes) -> None:
    with pytest.raises(_proto.ProtoDecodeError):
        _proto.decode_forward_backward_output(raw)
    with pytest.raises(_proto.ProtoDecodeError):
        _proto.decode_sample_response(raw + b"\x08\x07" if raw == b"\x00\x00" else raw)


def test_unknown_stop_reason_and_unknown_fields() -> None:
    # an unknown field (99) is skipped; an unknown stop reason enum is an error, as in the SDK
    assert _proto.decode_sample_response(b"\x98\x06\x01").sequences == []
    with pytest.raises(_proto.ProtoDecodeError, match="stop_reason"):
        _proto.decode_sample_response(b"\x0a\x02\x08\x07")


@pytest.mark.parametrize(
    ("value", "error"),
    [
        (TensorData([1.0], "float16", [1]), ValueError),  # type: ignore[arg-type]
        (TensorData([1], "int64", [1], [0, 1]), ValueError),
    ],
    ids=["dtype", "csr-without-cols"],
)
def test_unencodable_tensors_are_refused(value: TensorData, error: type[Exception]) -> None:
    datum = Datum(ModelInput.from_ints([1]), {"x": value})
    with pytest.raises(error):
        _proto.encode_forward_backward_request("m", 1, [datum], "cross_entropy")


def test_datum_coerces_lists_by_key_and_estimate_counts_bytes() -> None:
    datum = Datum(
        ModelInput.from_ints([1, 2, 3]),
        {"target_tokens": [2, 3, 4], "weights": [1, 1, 0], "mask": [[1.5, 2.5], [3.5, 4.5]]},
    )
    assert datum.loss_fn_inputs["target_tokens"] == TensorData([2, 3, 4], "int64", [3])
    assert datum.loss_fn_inputs["weights"].dtype == "float32"
    assert datum.loss_fn_inputs["mask"].shape == [2, 2]
    assert datum.loss_fn_inputs["mask"].tolist() == [[1.5, 2.5], [3.5, 4.5]]
    assert _proto.estimate_datum_bytes(datum) == 3 * 4 + 3 * 8 + 3 * 4 + 4 * 4
    with pytest.raises(ValueError, match="rectangular"):
        Datum(ModelInput.from_ints([1]), {"weights": [[1.0], [1.0, 2.0]]})
