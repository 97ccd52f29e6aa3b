"""numpy (optional) views of tensors and samples, as the official SDK offers them; torch tensors in
and out through numpy. The package never imports numpy or torch on its own."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import numpy as np
import pytest

from tinker_sync import types


def test_tensors_go_to_and_from_numpy_with_the_wire_dtypes() -> None:
    floats = types.TensorData.from_numpy(np.arange(6, dtype=np.float64).reshape(2, 3))
    assert (floats.dtype, floats.shape, list(floats.data)) == (
        "float32",
        [2, 3],
        [0.0, 1.0, 2.0, 3.0, 4.0, 5.0],
    )
    ints = types.TensorData.from_numpy(np.array([[1, 2], [3, 4]], dtype=np.uint8))
    assert ints.dtype == "int64" and ints.to_numpy().dtype == np.int64
    assert ints.to_numpy().tolist() == [[1, 2], [3, 4]]
    assert floats.to_numpy().dtype == np.float32 and floats.to_numpy().shape == (2, 3)
    with pytest.raises(ValueError, match="Unsupported numpy dtype"):
        types.TensorData.from_numpy(np.array(["a"]))


def test_a_sparse_tensor_is_densified_with_the_pad_value() -> None:
    sparse = types.TensorData(
        data=[7, 8], dtype="int64", shape=[2, 3], sparse_crow_indices=[0, 1, 2], sparse_col_indices=[2, 0]
    )
    assert sparse.to_numpy().tolist() == [[0, 0, 7], [8, 0, 0]]
    assert sparse.to_numpy(pad_value=-1).tolist() == [[-1, -1, 7], [8, -1, -1]]
    assert sparse.tolist(pad_value=-1) == [[-1, -1, 7], [8, -1, -1]]


class StandInTensor:
    """What ``from_torch`` asks of a torch tensor (torch is not installed for the tests)."""

    def __init__(self, array: Any, dtype: str) -> None:
        self.array, self.dtype, self.calls = array, dtype, []

    def float(self) -> StandInTensor:
        self.calls.append("float")
        return StandInTensor(self.array.astype(np.float32), "torch.float32")

    def detach(self) -> StandInTensor:
        return self

    def cpu(self) -> StandInTensor:
        return self

    def contiguous(self) -> StandInTensor:
        return self

    def numpy(self) -> Any:
        return self.array


def test_torch_tensors_come_in_through_numpy_bfloat16_widened() -> None:
    plain = types.TensorData.from_torch(StandInTensor(np.array([1, 2, 3]), "torch.int64"))
    assert (plain.dtype, plain.shape, list(plain.data)) == ("int64", [3], [1, 2, 3])
    bf16 = StandInTensor(np.array([0.5, 1.5], dtype=np.float64), "torch.bfloat16")
    widened = types.TensorData.from_torch(bf16)
    assert bf16.calls == ["float"] and widened.dtype == "float32" and list(widened.data) == [0.5, 1.5]


def test_samples_have_the_sdks_numpy_views() -> None:
    sequence = types.SampledSequence(stop_reason="length", tokens=[5, 6, 7], logprobs=[-0.5, -1.0, -2.0])
    assert sequence.tokens_np.dtype == np.int32 and sequence.tokens_np.tolist() == [5, 6, 7]
    assert sequence.logprobs_np.dtype == np.float32 and sequence.logprobs_np.tolist() == [-0.5, -1.0, -2.0]
    assert types.SampledSequence(stop_reason="stop", tokens=[]).logprobs_np is None
    response = types.SampleResponse(sequences=[sequence], prompt_logprobs=[None, -1.5, None, -0.25])
    got = response.prompt_logprobs_np
    assert got.dtype == np.float32 and np.isnan(got[[0, 2]]).all() and got[[1, 3]].tolist() == [-1.5, -0.25]
    assert types.SampleResponse(sequences=[]).prompt_logprobs_np is None


def test_the_package_imports_neither_numpy_nor_torch() -> None:
    code = "import sys, tinker_sync, tinker_sync.types; print(sorted({'numpy', 'torch'} & set(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
