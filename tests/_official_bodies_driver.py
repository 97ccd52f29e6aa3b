"""The official SDK's calls whose JSON bodies tests/test_official_training.py compares with tinker_sync's.

argv: base_url api_key. A Dimuon LoRA model, a Dimuon step, its checkpoint loaded twice (a fresh
Dimuon optimizer, then with its optimizer state) and copied into the session's project; samples with every option the JSON carries
(stop strings, a seed, top-k prompt logprobs, a recorded stability, the last n prompt logprobs).
Prints the checkpoint path, the loaded model's optimizer and the logprobs.
"""

import concurrent.futures
import json
import os
import sys

import tinker
from tinker import types

base_url, api_key = sys.argv[1], sys.argv[2]
service = tinker.ServiceClient(base_url=base_url, api_key=api_key, project_id="proj-a")
training = service.create_lora_training_client(
    "Qwen/Qwen3-8B", rank=8, optimizer=types.DimuonOptimizerConfig()
).result()
training.optim_step(types.DimuonParams(learning_rate=1, beta1=0.8)).result()
path = training.save_state("dimuon").result().path
fresh = service.create_training_client_from_state(path, optimizer=types.DimuonOptimizerConfig()).result()
resumed = service.create_training_client_from_state_with_optimizer(path).result()
copied = service.copy_weights(path, ttl_seconds=7200).result()

prompt = types.ModelInput.from_ints([1, 2, 3, 4, 5])
plain = service.create_sampling_client(base_model="Qwen/Qwen3-8B").result()
plain.sample(prompt, 2, types.SamplingParams(max_tokens=3, seed=5, stop=["\n"], temperature=0.5)).result()
plain.sample(
    prompt, 1, types.SamplingParams(max_tokens=1), include_prompt_logprobs=True, topk_prompt_logprobs=2
).result()
stable = service.create_sampling_client(base_model="Qwen/Qwen3-8B", record_stability_info=True).result()
logprobs = stable.compute_logprobs(prompt, prompt_logprobs_last_n=2).result()
print(
    json.dumps(
        {
            "path": path,
            "copied": copied,
            "optimizer": fresh.get_info().optimizer_config.model_dump(mode="json"),
            "logprobs": logprobs,
        }
    )
)
sys.stdout.flush()
try:
    service.close("success").result(timeout=30)
except concurrent.futures.TimeoutError:  # 0.38.0's own teardown hang (_official_training_driver.py)
    os._exit(0)
