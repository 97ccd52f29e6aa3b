"""The official SDK's own training loop, unmodified (run in its venv by tests/test_official_training.py).

argv: base_url api_key. Prints one JSON line: the losses, the checkpoint path, the samples.
"""

import json
import sys

import tinker
from tinker import types

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
service.close("success").result()
print(
    json.dumps(
        {
            "losses": losses,
            "path": path,
            "tokens": [s.tokens for s in sampled.sequences],
            "sequence_ids": [s.sequence_id for s in sampled.sequences],
        }
    )
)
