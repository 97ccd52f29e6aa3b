"""The official SDK's own training loop, unmodified (run in its venv by tests/test_official_training.py).

argv: base_url api_key. Prints one JSON line: the losses, the checkpoint path, the samples, and how
``close`` ended.

``close`` is bounded: 0.38.0's own teardown can hang for good after the finish went out. Its
``retrieve_futures`` poller task, cancelled while its last acknowledging poll is in flight, sometimes
gets that poll's answer instead of the cancellation (the transport swallows it), then idles on its
work event, and ``close`` awaits it forever (1 in ~1,000 runs under load, the official SDK alone).
Then the line says ``"close": "hung"`` and stderr lists the SDK loop's tasks, for the test to check
that it is that case and nothing else.
"""

import asyncio
import concurrent.futures
import json
import os
import sys

import tinker
from tinker import types
from tinker.lib import internal_client_holder

base_url, api_key = sys.argv[1], sys.argv[2]
service = tinker.ServiceClient(base_url=base_url, api_key=api_key)
training = service.create_lora_training_client(base_model="Qwen/Qwen3-8B", rank=8).result()
datum = types.Datum(
    model_input=types.ModelInput.from_ints([1, 2, 3]),
    loss_fn_inputs={"target_tokens": [2, 3, 4], "weights": [1.0, 1.0, 1.0]},
)
losses = []
for _ in range(3):
    fwd_bwd = training.forward_backward([datum], "cross_entropy")
    optim = training.optim_step(types.AdamParams(learning_rate=1e-4))
    losses.append(fwd_bwd.result().metrics["loss:sum"])
    optim.result()
# one map entry per map: the SDK's bytes are deterministic, to compare with tinker_sync's live
single = types.Datum(model_input=types.ModelInput.from_ints([5, 6]), loss_fn_inputs={"target_tokens": [6, 7]})
training.forward([single], "ppo", {"clip": 0.25}).result()
path = training.save_state("official").result().path
sampler = training.save_weights_and_get_sampling_client().result()
sampled = sampler.sample(
    types.ModelInput.from_ints([1, 2]), 2, types.SamplingParams(max_tokens=4, seed=3)
).result()


async def _tasks() -> list[str]:
    me = asyncio.current_task()
    return [
        f"{task.get_name()} cancelling={task.cancelling()} {task!r}"
        for task in asyncio.all_tasks()
        if task is not me
    ]


try:
    service.close("success").result(timeout=30)
    closed = "closed"
except concurrent.futures.TimeoutError:
    closed = "hung"
    loop = internal_client_holder._internal_client_holder_thread_singleton.get_loop()
    for line in asyncio.run_coroutine_threadsafe(_tasks(), loop).result(10):
        print("official task:", line, file=sys.stderr)
print(
    json.dumps(
        {
            "close": closed,
            "losses": losses,
            "path": path,
            "tokens": [s.tokens for s in sampled.sequences],
            "sequence_ids": [s.sequence_id for s in sampled.sequences],
        }
    )
)
if closed == "hung":
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # an orderly exit would wait for the hung tasks
