"""Make ``corpus.json``: reference bytes of the official SDK's protobuf codec, for tinker_sync's own.

Runs ONLY in the official SDK's venv (``tinker==0.38.0``, with its protobuf and numpy)::

    /work/wt/_venv-official/bin/python tests/proto_corpus/make_corpus.py

tinker_sync never imports the official package: this script is the one place that
does, and its output (checked in) is what ``tests/test_proto.py`` compares against.

Three kinds of cases, each a JSON description both sides can build, plus the bytes:
- ``requests``: a ``ForwardBackwardRequest`` built from the official types and
  encoded by the official ``request_conv`` (``bytes``: the deterministic
  serialization; ``default_bytes``: the plain ``SerializeToString()``, which orders
  map entries by a per-process hash seed, so it is only reproducible when every map
  has at most one entry: ``default_is_deterministic`` says so);
- ``fwdbwd_outputs`` and ``sample_responses``: protobuf bytes built with the official
  message classes (bf16 and int32 tensors included) and what the official
  ``response_conv`` decodes them into.

Hand-written shapes first, then fuzzed ones from a fixed seed.
"""

from __future__ import annotations

import json
import math
import random
import struct
import sys
from pathlib import Path
from typing import Any

import numpy as np
from tinker import types
from tinker.proto import response_conv
from tinker.proto import tinker_public_pb2 as pb
from tinker.proto.request_conv import forward_backward_request_to_proto

OUT = Path(__file__).with_name("corpus.json")
LOSS_FNS = ["cross_entropy", "importance_sampling", "ppo", "cispo", "dro", "gspo", "stable_reinforce"]
SPECIAL_F32 = [0.0, -0.0, 1.0, -1.5, 0.1, 3.4028234663852886e38, 1e-45, math.inf, -math.inf]
SPECIAL_I64 = [0, 1, -1, 2**31 - 1, -(2**31), 2**63 - 1, -(2**63), 50256]
SPECIAL_TOKENS = [0, 1, -1, 2**31 - 1, -(2**31), 151643, 127, 128, 16383, 16384]


def f32(rng: random.Random) -> float:
    """A random finite float32 value (exact as a Python float), or a special one."""
    if rng.random() < 0.2:
        return rng.choice(SPECIAL_F32)
    while True:
        value: float = struct.unpack("<f", rng.getrandbits(32).to_bytes(4, "little"))[0]
        if math.isfinite(value):
            return value


def tensor_case(rng: random.Random, dtype: str) -> dict[str, Any]:
    kind = rng.choice(["1d", "1d", "2d", "scalar", "empty", "noshape", "sparse"])
    gen = (
        (lambda: f32(rng))
        if dtype == "float32"
        else (lambda: rng.choice(SPECIAL_I64 + [rng.randrange(-(10**6), 10**6)]))
    )
    if kind == "sparse":
        rows, cols = rng.randint(1, 4), rng.randint(1, 5)
        crow, col = [0], []
        for _ in range(rows):
            picked = sorted(rng.sample(range(cols), rng.randint(0, cols)))
            col.extend(picked)
            crow.append(len(col))
        return {"data": [gen() for _ in col], "dtype": dtype, "shape": [rows, cols], "crow": crow, "col": col}
    if kind == "2d":
        shape = [rng.randint(1, 4), rng.randint(1, 4)]
    elif kind == "scalar":
        shape = []
    elif kind == "empty":
        shape = [0]
    else:
        shape = [rng.randint(1, 9)]
    n = 1
    for s in shape:
        n *= s
    return {"data": [gen() for _ in range(n)], "dtype": dtype, "shape": None if kind == "noshape" else shape}


def fuzz_request(rng: random.Random, i: int) -> dict[str, Any]:
    data = []
    for _ in range(rng.choice([0, 1, 1, 2, 3, 5])):
        chunks = [
            [
                rng.choice(SPECIAL_TOKENS) if rng.random() < 0.1 else rng.randrange(0, 200_000)
                for _ in range(rng.choice([0, 1, 3, 17, 64]))
            ]
            for _ in range(rng.choice([0, 1, 1, 2, 3]))
        ]
        names = rng.sample(
            ["target_tokens", "weights", "advantages", "logprobs", "mask", "é"], rng.randint(0, 4)
        )
        inputs = {
            name: tensor_case(rng, "int64" if name == "target_tokens" or rng.random() < 0.3 else "float32")
            for name in names
        }
        data.append({"chunks": chunks, "loss_fn_inputs": inputs})
    config: dict[str, Any] | None = None
    if rng.random() < 0.7:
        config = {}
        for key in rng.sample(
            ["clip", "clip_low", "clip_high", "beta", "mode", "", "kl", "z"], rng.randint(0, 4)
        ):
            roll = rng.random()
            config[key] = f"text-{rng.randrange(100)}" if roll < 0.3 else ("" if roll < 0.35 else f32(rng))
    return {
        "name": f"fuzz-{i:03d}",
        "model_id": rng.choice(
            ["", "s:train:0", f"session-{rng.randrange(10**9)}:train:{rng.randrange(100)}", "ünï"]
        ),
        "seq_id": rng.choice([1, 2, 1000, 2**31 - 1, rng.randrange(1, 2**20)]),
        "loss_fn": rng.choice(LOSS_FNS),
        "loss_fn_config": config,
        "forward_only": rng.random() < 0.3,
        "data": data,
    }


HAND_REQUESTS: list[dict[str, Any]] = [
    {
        "name": "empty",
        "model_id": "",
        "seq_id": 0,
        "loss_fn": "cross_entropy",
        "loss_fn_config": None,
        "forward_only": False,
        "data": [],
    },
    {
        "name": "note-example-181-bytes",
        "model_id": "s:train:0",
        "seq_id": 1,
        "loss_fn": "cross_entropy",
        "loss_fn_config": {"clip": 0.2, "mode": "x"},
        "forward_only": False,
        "data": [
            {
                "chunks": [[1, 2, 3]],
                "loss_fn_inputs": {
                    "target_tokens": {"data": [2, 3, 4], "dtype": "int64", "shape": [3]},
                    "weights": {"data": [1.0, 1.0, 1.0], "dtype": "float32", "shape": [3]},
                },
            }
        ],
    },
    {
        "name": "forward-only-one-input",
        "model_id": "abc:train:7",
        "seq_id": 42,
        "loss_fn": "importance_sampling",
        "loss_fn_config": {"clip": 0.0},
        "forward_only": True,
        "data": [
            {
                "chunks": [[5, 6], [], [7]],
                "loss_fn_inputs": {
                    "advantages": {"data": [0.5, -0.25, 0.0], "dtype": "float32", "shape": [3]}
                },
            }
        ],
    },
    {
        "name": "float-values-into-int64-truncate",
        "model_id": "m",
        "seq_id": 3,
        "loss_fn": "ppo",
        "loss_fn_config": {"n": 3},
        "forward_only": False,
        "data": [
            {
                "chunks": [[1]],
                "loss_fn_inputs": {
                    "target_tokens": {"data": [1.7, -1.7, 2.0], "dtype": "int64", "shape": [3]}
                },
            }
        ],
    },
    {
        "name": "sparse-csr",
        "model_id": "m",
        "seq_id": 9,
        "loss_fn": "cross_entropy",
        "loss_fn_config": None,
        "forward_only": False,
        "data": [
            {
                "chunks": [[10, 11, 12, 13]],
                "loss_fn_inputs": {
                    "target_tokens": {
                        "data": [11, 13],
                        "dtype": "int64",
                        "shape": [2, 3],
                        "crow": [0, 1, 2],
                        "col": [0, 2],
                    },
                },
            }
        ],
    },
]


def official_tensor(case: dict[str, Any]) -> types.TensorData:
    return types.TensorData(
        data=case["data"],
        dtype=case["dtype"],
        shape=case["shape"],
        sparse_crow_indices=case.get("crow"),
        sparse_col_indices=case.get("col"),
    )


def official_chunk(chunk: Any) -> Any:
    """A case's chunk: a list of token ids, ``{"image": {data (hex), format, expected_tokens}}`` or
    ``{"dmel": hex}``."""
    if isinstance(chunk, list):
        return types.EncodedTextChunk(tokens=chunk)
    if "image" in chunk:
        image = chunk["image"]
        return types.ImageChunk(
            data=bytes.fromhex(image["data"]),
            format=image["format"],
            expected_tokens=image["expected_tokens"],
        )
    return types.DmelChunk(dmel=bytes.fromhex(chunk["dmel"]))


def media_chunk(rng: random.Random) -> dict[str, Any]:
    """An image or dmel chunk of random bytes (empty ones too), for the requests with media."""
    data = bytes(rng.getrandbits(8) for _ in range(rng.choice([0, 1, 7, 200])))
    if rng.random() < 0.3:
        return {"dmel": data.hex()}
    tokens = rng.choice([None, None, 0, 1, 576, 2**31 - 1, -1])
    return {"image": {"data": data.hex(), "format": rng.choice(["png", "jpeg"]), "expected_tokens": tokens}}


def media_request(i: int) -> dict[str, Any]:
    """A request whose datums mix text with image and dmel chunks (its own random stream, so that
    adding these cases leaves every earlier case as it was)."""
    rng = random.Random(7_000 + i)
    case = fuzz_request(rng, i)
    case["name"] = f"media-{i:03d}"
    for datum in case["data"] or []:
        for _ in range(rng.randint(1, 3)):
            datum["chunks"].insert(rng.randint(0, len(datum["chunks"])), media_chunk(rng))
    if not case["data"]:
        case["data"] = [{"chunks": [media_chunk(rng), [1, 2]], "loss_fn_inputs": {}}]
    return case


def encode_request(case: dict[str, Any]) -> tuple[bytes, bytes]:
    data = [
        types.Datum(
            model_input=types.ModelInput(chunks=[official_chunk(c) for c in d["chunks"]]),
            loss_fn_inputs={k: official_tensor(v) for k, v in d["loss_fn_inputs"].items()},
        )
        for d in case["data"]
    ]
    request = types.ForwardBackwardRequest(
        forward_backward_input=types.ForwardBackwardInput(
            data=data, loss_fn=case["loss_fn"], loss_fn_config=case["loss_fn_config"]
        ),
        model_id=case["model_id"],
        seq_id=case["seq_id"],
    )
    message = forward_backward_request_to_proto(request)
    message.forward_only = case["forward_only"]  # as resources/training.py sets it
    return message.SerializeToString(deterministic=True), message.SerializeToString()


def max_map_entries(message: Any) -> int:
    """The most entries any map in ``message`` (recursively) holds."""
    most = 0
    for field, value in message.ListFields():
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            most = max(most, len(value))
            if field.message_type.fields_by_name["value"].message_type is not None:
                for item in value.values():
                    most = max(most, max_map_entries(item))
        elif field.message_type is not None:
            items = value if field.is_repeated else [value]
            for item in items:
                most = max(most, max_map_entries(item))
    return most


def tensor_json(td: types.TensorData) -> dict[str, Any]:
    return {
        "data": np.asarray(td._numpy).ravel().tolist(),
        "dtype": td.dtype,
        "shape": td.shape,
        "crow": td.sparse_crow_indices,
        "col": td.sparse_col_indices,
    }


DTYPES = {
    "float32": (pb.DTYPE_FLOAT32, "<f"),
    "int64": (pb.DTYPE_INT64, "<q"),
    "int32": (pb.DTYPE_INT32, "<i"),
    "bfloat16": (pb.DTYPE_BFLOAT16, "<H"),
}


def fuzz_fwdbwd_output(rng: random.Random, i: int) -> bytes:
    msg = pb.ForwardBackwardOutput()
    msg.loss_fn_output_type = rng.choice(["", "ArrayRecord", "tinker.x:TorchLossReturn", "a:b:ArrayRecord"])
    for key in rng.sample(["loss:sum", "loss:mean", "tokens:sum", "x:max", "y:min"], rng.randint(0, 3)):
        msg.metrics[key] = f32(rng)
    names = rng.sample(["logprobs", "elementwise_loss", "ids", "topk"], rng.randint(1, 3))
    for _ in range(rng.choice([0, 1, 1, 2])):
        record = msg.loss_fn_outputs.add()
        record.type_tag = "ArrayRecord"
        n = rng.choice([0, 1, 2, 4])
        record.num_datums = n
        for name in names:
            dtype = rng.choice(list(DTYPES))
            code, fmt = DTYPES[dtype]
            trailing = rng.choice([[], [], [2], [3, 2]])
            per = 1
            for s in trailing:
                per *= s
            offsets, blob = [0], b""
            for _ in range(n):
                count = rng.randint(0, 5) * per
                for _ in range(count):
                    if dtype == "float32":
                        blob += struct.pack(fmt, f32(rng))
                    elif dtype == "bfloat16":
                        blob += struct.pack(fmt, rng.getrandbits(16) & 0x7F7F)  # finite bf16
                    elif dtype == "int32":
                        blob += struct.pack(fmt, rng.randrange(-(2**31), 2**31))
                    else:
                        blob += struct.pack(fmt, rng.choice(SPECIAL_I64))
                offsets.append(len(blob))
            bt = record.fields[name]
            bt.data = blob
            bt.offsets = np.asarray(offsets, dtype=np.int64).tobytes()
            bt.dtype = code
            bt.trailing_shape.extend(trailing)
    return msg.SerializeToString(deterministic=True)


def fwdbwd_output_json(raw: bytes) -> dict[str, Any]:
    out = response_conv.deserialize_forward_backward_output(raw)
    return {
        "loss_fn_output_type": out.loss_fn_output_type,
        "metrics": {k: v.hex() for k, v in out.metrics.items()},
        "loss_fn_outputs": [{k: tensor_json(v) for k, v in datum.items()} for datum in out.loss_fn_outputs],
    }


def topk_msg(rng: random.Random, msg: Any, n: int) -> None:
    k = rng.randint(1, 3)
    ids, lps = [], []
    for _ in range(n):
        empty = rng.random() < 0.2
        filled = 0 if empty else rng.randint(1, k)
        for j in range(k):
            if j < filled:
                ids.append(rng.randrange(1, 1000))
                lps.append(-rng.random() * 5)
            else:
                ids.append(0)
                lps.append(-99999.0)
    msg.token_ids = np.asarray(ids, dtype=np.int32).tobytes()
    msg.logprobs = np.asarray(lps, dtype=np.float32).tobytes()
    msg.k = k
    msg.length = n


def fuzz_sample_response(rng: random.Random, i: int) -> bytes:
    msg = pb.SampleResponse()
    for _ in range(rng.choice([0, 1, 2, 4])):
        seq = msg.sequences.add()
        seq.stop_reason = rng.choice([pb.STOP_REASON_STOP, pb.STOP_REASON_LENGTH])
        n = rng.choice([0, 1, 5, 16])
        seq.tokens = np.asarray([rng.randrange(0, 2**31) for _ in range(n)], dtype=np.int32).tobytes()
        if rng.random() < 0.7:
            seq.logprobs = np.asarray([-rng.random() * 9 for _ in range(n)], dtype=np.float32).tobytes()
        if rng.random() < 0.3 and n:
            topk_msg(rng, seq.topk_sampled_logprobs, n)
    if rng.random() < 0.5:
        plen = rng.randint(1, 6)
        values = [math.nan] + [-rng.random() * 6 if rng.random() < 0.8 else math.nan for _ in range(plen - 1)]
        msg.prompt_logprobs = np.asarray(values, dtype=np.float32).tobytes()
        if rng.random() < 0.5:
            topk_msg(rng, msg.topk_prompt_logprobs, plen)
    msg.prompt_cache_hit_tokens = rng.choice([0, 0, 3, 1024])
    extra = random.Random(9_000 + i)  # fields 5 and 6, on a stream of their own (earlier cases unchanged)
    if extra.random() < 0.4:
        tensor_msg(extra, msg.target_prompt_logprobs, extra.choice(["float32", "float32", "int64", "int32"]))
    if extra.random() < 0.4:
        rows, k = extra.randint(0, 4), extra.randint(1, 3)
        tensor_msg(extra, msg.prompt_alt_tokens.tokens, extra.choice(["int64", "int32"]), [rows, k])
        tensor_msg(extra, msg.prompt_alt_tokens.logprobs, "float32", [rows, k])
    return msg.SerializeToString(deterministic=True)


def tensor_msg(rng: random.Random, msg: Any, dtype: str, shape: list[int] | None = None) -> None:
    """A ``Tensor``: dense of ``shape`` (random when None), or sparse CSR (a float32 2-D one, sometimes)."""
    code, fmt = DTYPES[dtype]
    if shape is None:
        shape = rng.choice([[0, 2], [1, 1], [3, 2], [2, 4]])
    count = shape[0] * shape[1]

    def item() -> bytes:
        if dtype == "float32":
            return struct.pack(fmt, f32(rng))
        if dtype == "int32":
            return struct.pack(fmt, rng.randrange(-(2**31), 2**31))
        return struct.pack(fmt, rng.choice(SPECIAL_I64))

    msg.dtype = code
    msg.shape.extend(shape)
    if dtype == "float32" and rng.random() < 0.3:
        crow, col = [0], []
        for _ in range(shape[0]):
            picked = sorted(rng.sample(range(shape[1]), rng.randint(0, shape[1])))
            col.extend(picked)
            crow.append(len(col))
        msg.sparse_csr.values = b"".join(item() for _ in col)
        msg.sparse_csr.crow_indices = np.asarray(crow, dtype=np.int64).tobytes()
        msg.sparse_csr.col_indices = np.asarray(col, dtype=np.int64).tobytes()
    else:
        msg.dense = b"".join(item() for _ in range(count))


def opt_list(values: list[Any] | None) -> list[Any] | None:
    return None if values is None else [list(v) if isinstance(v, tuple) else v for v in values]


def sample_response_json(raw: bytes) -> dict[str, Any]:
    out = response_conv.deserialize_sample_response(raw)
    return {
        "sequences": [
            {
                "stop_reason": s.stop_reason,
                "tokens": s.tokens,
                "logprobs": s.logprobs,
                "topk_logprobs": None if s.topk_logprobs is None else [opt_list(p) for p in s.topk_logprobs],
            }
            for s in out.sequences
        ],
        "prompt_logprobs": out.prompt_logprobs,
        "topk_prompt_logprobs": None
        if out.topk_prompt_logprobs is None
        else [opt_list(p) for p in out.topk_prompt_logprobs],
        "prompt_cache_hit_tokens": out.prompt_cache_hit_tokens,
        "target_prompt_logprobs": None
        if out.target_prompt_logprobs is None
        else tensor_json(out.target_prompt_logprobs),
        "prompt_alt_tokens": None
        if out.prompt_alt_tokens is None
        else {
            "tokens": tensor_json(out.prompt_alt_tokens.tokens),
            "logprobs": tensor_json(out.prompt_alt_tokens.logprobs),
        },
    }


def main() -> None:
    import tinker

    rng = random.Random(20261207)
    requests = []
    for case in (
        HAND_REQUESTS + [fuzz_request(rng, i) for i in range(120)] + [media_request(i) for i in range(24)]
    ):
        deterministic, default = encode_request(case)
        message = pb.ForwardBackwardRequest.FromString(deterministic)
        case = {
            **case,
            "bytes": deterministic.hex(),
            "default_bytes": default.hex(),
            "default_is_deterministic": max_map_entries(message) <= 1,
        }
        if case["default_is_deterministic"]:
            assert deterministic == default, case["name"]
        requests.append(case)
    outputs = []
    for i in range(60):
        raw = fuzz_fwdbwd_output(rng, i)
        outputs.append({"name": f"fuzz-{i:03d}", "bytes": raw.hex(), "decoded": fwdbwd_output_json(raw)})
    samples = []
    for i in range(60):
        raw = fuzz_sample_response(rng, i)
        samples.append({"name": f"fuzz-{i:03d}", "bytes": raw.hex(), "decoded": sample_response_json(raw)})
    corpus = {
        "made_by": f"tinker {tinker.__version__}, protobuf {sys.modules['google.protobuf'].__version__}",
        "requests": requests,
        "fwdbwd_outputs": outputs,
        "sample_responses": samples,
    }
    OUT.write_text(json.dumps(corpus, indent=0, sort_keys=True) + "\n")
    print(f"wrote {OUT}: {len(requests)} requests, {len(outputs)} outputs, {len(samples)} sample responses")


if __name__ == "__main__":
    main()
