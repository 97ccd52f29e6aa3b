"""The training and sampling data types, under the official SDK's names, as msgspec Structs.

Prompts (``ModelInput`` and its text, image and audio chunks), tensors
(``TensorData``) and sampling (``SamplingParams``, ``SampleResponse``,
``SampledSequence``) live in ``resources.types`` (the REST surface uses them too);
this module adds what ``TrainingClient`` sends and gets: ``Datum``, the optimizers
(``AdamParams``, ``DimuonParams`` and the ``OptimizerConfig`` a model is made with),
``ForwardBackwardOutput`` and the small responses. Code written for the official SDK builds them the same way
(``Datum(model_input=..., loss_fn_inputs={"target_tokens": [...], ...})``).

numpy is optional: ``TensorData.from_numpy`` / ``to_numpy`` import it when called,
and ``Datum`` accepts numpy arrays in ``loss_fn_inputs`` when it is installed.
Tensors keep plain lists, so the types never need numpy to exist.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping
from typing import Any, Literal
from urllib.parse import quote

import msgspec
import msgspec.structs

from .resources.types import ModelInput, TensorData, TensorDtype

__all__ = [
    "CONSOLE",
    "AdamOptimizerConfig",
    "AdamParams",
    "ClientConfigResponse",
    "CreateSamplingSessionResponse",
    "Datum",
    "DimuonOptimizerConfig",
    "DimuonParams",
    "ForwardBackwardOutput",
    "GetInfoResponse",
    "LoadWeightsResponse",
    "LossFnOutput",
    "LossFnType",
    "ModelData",
    "OptimParams",
    "OptimStepResponse",
    "OptimizerConfig",
    "SaveWeightsForSamplerResponse",
    "SaveWeightsForSamplerResponseInternal",
    "SaveWeightsResponse",
    "TensorData",
    "console_url",
    "TensorDtype",
]

LossFnType = Literal[
    "cross_entropy", "importance_sampling", "ppo", "cispo", "dro", "gspo", "stable_reinforce", "custom"
]

# The dtype each well-known loss input gets from a plain list (the SDK's table).
KEY_DTYPES: dict[str, TensorDtype] = {
    "target_tokens": "int64",
    "weights": "float32",
    "advantages": "float32",
    "logprobs": "float32",
    "clip_low_threshold": "float32",
    "clip_high_threshold": "float32",
    "sequence_ratio_mask": "float32",
}


def as_tensor(key: str, value: Any) -> TensorData:
    """A loss input as a ``TensorData``: kept as is, from a numpy array, or from a (nested) list."""
    if isinstance(value, TensorData):
        return value
    if "numpy" in sys.modules and isinstance(value, sys.modules["numpy"].ndarray):
        return TensorData.from_numpy(value)
    if isinstance(value, (list, tuple)):
        dtype = KEY_DTYPES.get(key)
        shape = [len(value)]
        flat: list[Any] = list(value)
        if flat and isinstance(flat[0], (list, tuple)):
            width = len(flat[0])
            if any(not isinstance(row, (list, tuple)) or len(row) != width for row in flat):
                raise ValueError(
                    f"{key} must be a rectangular numeric array; ragged nested lists are not supported"
                )
            shape = [len(flat), width]
            flat = [x for row in flat for x in row]
        if dtype is None:
            dtype = "float32" if any(isinstance(x, float) for x in flat) else "int64"
        return TensorData(flat, dtype, shape)
    raise TypeError(f"Unsupported loss_fn_inputs value for {key!r}: {type(value).__name__}")


class Datum(msgspec.Struct):
    """One training example: the model input and the loss function's inputs by name.

    ``loss_fn_inputs`` values may be ``TensorData``, lists (the dtype from the
    key: ``target_tokens`` int64, ``weights``/``advantages``/``logprobs`` float32)
    or numpy arrays; they are converted to ``TensorData`` on construction.
    """

    model_input: ModelInput
    loss_fn_inputs: dict[str, TensorData] = msgspec.field(default_factory=dict)

    def __post_init__(self) -> None:
        inputs: Mapping[str, Any] = self.loss_fn_inputs
        if any(not isinstance(v, TensorData) for v in inputs.values()):
            self.loss_fn_inputs = {k: as_tensor(k, v) for k, v in inputs.items()}


LossFnOutput = dict[str, TensorData]


class ForwardBackwardOutput(msgspec.Struct):
    """The result of ``forward`` / ``forward_backward``: per-datum outputs and metrics.

    ``metrics`` keys are ``name:reduction`` (``loss:sum``, ...); a call split into
    chunks has them merged with that reduction.
    """

    loss_fn_output_type: str
    loss_fn_outputs: list[LossFnOutput]
    metrics: dict[str, float] = msgspec.field(default_factory=dict)


class AdamParams(msgspec.Struct):
    """Adam (AdamW) step parameters; the SDK's defaults (no weight decay by default)."""

    learning_rate: float = 0.0001
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-12
    weight_decay: float = 0.0
    grad_clip_norm: float = 0.0


class AdamOptimizerConfig(msgspec.Struct, frozen=True):
    """Adam (AdamW): the optimizer a training model gets unless told otherwise; its steps take
    ``AdamParams``."""

    type: Literal["adamw"] = "adamw"


class DimuonOptimizerConfig(msgspec.Struct, frozen=True):
    """The Dimuon optimizer, chosen when a training model is made (``optimizer=``); its steps
    take ``DimuonParams``."""

    type: Literal["dimuon"] = "dimuon"
    version: Literal[1] = 1


OptimizerConfig = AdamOptimizerConfig | DimuonOptimizerConfig


class DimuonParams(msgspec.Struct, frozen=True, kw_only=True):
    """One Dimuon step's hyperparameters (``optim_step``), checked as the SDK checks them: every
    value finite, ``learning_rate`` >= 0, 0 <= ``beta1`` < 1 (``grad_clip_norm`` <= 0: no clipping)."""

    type: Literal["dimuon"] = "dimuon"
    learning_rate: float
    grad_clip_norm: float = 0.0
    beta1: float = 0.9

    def __post_init__(self) -> None:
        for name in ("learning_rate", "grad_clip_norm", "beta1"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ValueError(f"DimuonParams.{name} must be a finite number, got {value!r}")
            msgspec.structs.force_setattr(self, name, float(value))  # 1 goes out as 1.0, as the SDK's
        if self.learning_rate < 0:
            raise ValueError(f"DimuonParams.learning_rate must be >= 0, got {self.learning_rate!r}")
        if not 0 <= self.beta1 < 1:
            raise ValueError(f"DimuonParams.beta1 must be in [0, 1), got {self.beta1!r}")


OptimParams = AdamParams | DimuonParams


class OptimStepResponse(msgspec.Struct):
    """The result of ``optim_step``."""

    metrics: dict[str, float] | None = None


CONSOLE = "https://tinker.thinkingmachines.ai"  # the Tinker Console, whose pages the SDK links to


def console_url(*parts: str) -> str:
    """A Console page: ``console_url("sessions", id)``, ``("training_runs", id)``, ..."""
    return "/".join((CONSOLE, *parts))


def _checkpoint_page(tinker_path: str) -> str:
    """The Console page of a ``tinker://RUN/KIND/NAME`` checkpoint, as the SDK builds it
    (``InvalidRequestError``, a ``ValueError``, for anything else)."""
    from .resources._paths import parse_tinker_path  # the checkpoint paths' parser, loaded when asked for

    run, kind, name = parse_tinker_path(tinker_path)
    return console_url("checkpoints", quote(run, safe=""), quote(f"{kind}/{name}", safe=""))


class SaveWeightsResponse(msgspec.Struct):
    """The result of ``save_state``: the checkpoint's ``tinker://`` path."""

    path: str
    type: str | None = None

    def get_console_url(self) -> str:
        """The checkpoint's Tinker Console page."""
        return _checkpoint_page(self.path)


class SaveWeightsForSamplerResponse(msgspec.Struct):
    """The result of ``save_weights_for_sampler``: the sampler checkpoint's path."""

    path: str
    type: str | None = None

    def get_console_url(self) -> str:
        """The sampler checkpoint's Tinker Console page."""
        return _checkpoint_page(self.path)

    def get_playground_url(self) -> str:
        """A Tinker Playground page on this sampler checkpoint."""
        return f"{CONSOLE}/playground?mode=checkpoint&checkpoint={quote(self.path, safe='')}"


class SaveWeightsForSamplerResponseInternal(msgspec.Struct):
    """``save_weights_for_sampler`` as the server answers it (a path, or an ephemeral sampling session)."""

    path: str | None = None
    sampling_session_id: str | None = None
    type: str | None = None


class LoadWeightsResponse(msgspec.Struct):
    """The result of ``load_state`` and of creating a training client from a checkpoint."""

    path: str | None = None
    model_id: str | None = None
    type: str | None = None


class ModelData(msgspec.Struct):
    """What a training model is (``GetInfoResponse.model_data``)."""

    arch: str | None = None
    model_name: str | None = None
    tokenizer_id: str | None = None


class GetInfoResponse(msgspec.Struct):
    """``TrainingClient.get_info()``: fetched once, when the client is created."""

    model_data: ModelData
    model_id: str
    optimizer_config: dict[str, Any] | None = None
    is_lora: bool | None = None
    lora_rank: int | None = None
    model_name: str | None = None
    type: str | None = None


class CreateSamplingSessionResponse(msgspec.Struct):
    """``create_sampling_session``: the new session's id."""

    sampling_session_id: str


class ClientConfigResponse(msgspec.Struct):
    """The server's ``client/config`` flags that steer the training engine (the SDK's defaults)."""

    proto_compress_fwdbwd: bool = False
    parallel_fwdbwd_chunks: bool = True
    fwdbwd_max_chunk_len: int = 1024
    fwdbwd_max_chunk_bytes_count: int = 5_000_000
    fwdbwd_dispatch_bytes_semaphore_size: int = 50_000_000
    sample_dispatch_bytes_semaphore_size: int = 10 * 1024 * 1024
    inflight_response_bytes_semaphore_size: int = 50 * 1024 * 1024
    sample_max_concurrent_requests: int = 2000
    billing_exception_max_pause_duration_sec: float = 3600.0
    sample_use_retrieve_futures: bool = False
    sample_join_sampling_session: bool = False
