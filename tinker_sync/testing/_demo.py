"""The demo dataset: realistic, deterministic runs, checkpoints, sessions and futures.

``MockTinkerServer(demo_data=True)`` and ``python -m tinker_sync.testing`` start
with it. Every id, size and time comes from the constants and one seeded
generator here, so the docs' examples and tests can name them (docs/TESTING.md
lists them). Nothing is generated until downloaded: a checkpoint is a
(seed, size) pair.
"""

from __future__ import annotations

import random

from ._checkpoints import Registry
from ._futures import Futures
from ._sessions import Sessions

__all__ = ["BASE_TIME", "OWNED_RUNS", "SESSIONS", "SHARED_RUNS", "populate"]

MiB = 1 << 20
BASE_TIME = 1_750_000_000.0  # 2025-06-15T15:06:40Z: run-001's first checkpoint is an hour later
OWNED_RUNS = 45  # run-001 .. run-045: three pages of the default 20
SHARED_RUNS = 3  # shared-001 .. shared-003, owned by "teammate": access_scope=accessible only
SESSIONS = 30  # session-001 .. session-030
TEAMMATE = "teammate"


def _steps(i: int) -> int:
    """How many steps run-i saved: 3, 4, 2, 3, 4, 2, ... (run-045 none)."""
    return 0 if i == OWNED_RUNS else 2 + i % 3


def populate(registry: Registry, sessions: Sessions, futures: Futures) -> None:
    """Fill an empty server with the demo dataset."""
    rng = random.Random(20250615)
    models = registry.state.supported_models or ["meta-llama/Llama-3.1-8B"]
    for i in range(1, OWNED_RUNS + 1):
        run = f"run-{i:03d}"
        start = BASE_TIME + i * 3600
        registry.add_run(
            run,
            base_model=models[i % len(models)],
            lora_rank=(8, 16, 32, 64)[i % 4],
            corrupted=i == 13,
            last_request_time=start,
            user_metadata={"project": "demo", "learning_rate": "1e-4"} if i % 5 == 0 else None,
        )
        for k in range(1, _steps(i) + 1):
            name = f"step-{k * 100:04d}"
            for kind, offset in (("weights", 0), ("sampler_weights", 30)):
                registry.add(
                    f"tinker://{run}/{kind}/{name}",
                    size=rng.randrange(1, 9) * MiB + rng.randrange(0, 4096),
                    seed=i * 1000 + k * 10 + (kind == "sampler_weights"),
                    created=start + k * 60 + offset,
                    public=(i == 2 and kind == "sampler_weights"),
                    expires_at=start + 30 * 86400 if (i == 3 and kind == "weights") else None,
                )
    # run-001 also has a final training checkpoint and an external-weights export.
    registry.add("tinker://run-001/weights/final", size=2 * MiB, seed=1999, created=BASE_TIME + 3600 + 400)
    registry.add(
        "tinker://run-001/external_weights/hf-export",
        size=3 * MiB + 512,
        seed=1998,
        n_files=5,
        created=BASE_TIME + 3600 + 500,
    )
    for j in range(1, SHARED_RUNS + 1):
        run = f"shared-{j:03d}"
        registry.add_run(
            run, base_model=models[0], model_owner=TEAMMATE, last_request_time=BASE_TIME + j * 600
        )
        registry.add(
            f"tinker://{run}/weights/step-0100", size=MiB, seed=9000 + j, created=BASE_TIME + j * 600
        )
        registry.add(
            f"tinker://{run}/sampler_weights/step-0100",
            size=MiB,
            seed=9100 + j,
            created=BASE_TIME + j * 600 + 30,
            public=True,
        )
    for k in range(1, SESSIONS + 1):
        runs = [f"run-{i:03d}" for i in range(k, OWNED_RUNS + 1, SESSIONS)]
        session_id = f"session-{k:03d}"
        sessions.add_session(
            session_id,
            created_at=BASE_TIME + k * 3600 - 60,
            tags=["demo"],
            sdk_version="0.38.0",
            display_name=f"demo session {k}",
            user_metadata={"experiment": f"exp-{k % 4}"} if k % 3 == 0 else None,
            training_run_ids=runs,
            sampler_ids=[f"{session_id}:sample:0"] if k % 2 else [],
            finished=None if k > SESSIONS - 3 else ("errored" if k % 7 == 0 else "success"),
        )
    futures.add(
        "future-ok",
        {"type": "try_again", "request_id": "future-ok", "queue_state": "active"},
        {"type": "try_again", "request_id": "future-ok", "queue_state": "paused_capacity"},
        {"model_id": "run-001", "type": "create_model"},
    )
    futures.add(
        "future-failed",
        {"type": "try_again", "request_id": "future-failed", "queue_state": "active"},
        {"error": "out of memory while loading the model", "category": "server"},
    )
