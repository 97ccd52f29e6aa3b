"""The official SDK choosing the Dimuon optimizer (run in its venv by tests/test_official_training.py).

argv: base_url api_key. Makes a Dimuon LoRA model, steps it, saves it, and loads the checkpoint
twice (a fresh Dimuon optimizer, then with its optimizer state); the test compares the bodies the
mock recorded with tinker_sync's for the same calls. Prints the checkpoint path.
"""

import concurrent.futures
import json
import os
import sys

import tinker
from tinker import types

base_url, api_key = sys.argv[1], sys.argv[2]
service = tinker.ServiceClient(base_url=base_url, api_key=api_key)
training = service.create_lora_training_client(
    "Qwen/Qwen3-8B", rank=8, optimizer=types.DimuonOptimizerConfig()
).result()
training.optim_step(types.DimuonParams(learning_rate=1, beta1=0.8)).result()
path = training.save_state("dimuon").result().path
fresh = service.create_training_client_from_state(path, optimizer=types.DimuonOptimizerConfig()).result()
resumed = service.create_training_client_from_state_with_optimizer(path).result()
print(json.dumps({"path": path, "optimizer": fresh.get_info().optimizer_config.model_dump(mode="json")}))
sys.stdout.flush()
try:
    service.close("success").result(timeout=30)
except concurrent.futures.TimeoutError:  # 0.38.0's own teardown hang (_official_training_driver.py)
    os._exit(0)
