"""The official SDK meets a 429 from asample (the test arms it for the first sample), then pickles
its SamplingClient into spawned workers (run in its venv by tests/test_sampling_official.py).

argv: base_url api_key. Prints one JSON line: the sequence ids and tokens of the main process's
sample and of each worker's.
"""

import json
import multiprocessing
import sys
from concurrent.futures import ProcessPoolExecutor

import tinker
from tinker import types

PARAMS = types.SamplingParams(max_tokens=3, seed=7)


def sample_in_worker(sampler, start):
    prompt = types.ModelInput.from_ints([start, start + 1, start + 2])
    result = sampler.sample(prompt, 2, PARAMS).result()
    return [[s.sequence_id, list(s.tokens)] for s in result.sequences]


if __name__ == "__main__":
    base_url, api_key = sys.argv[1], sys.argv[2]
    service = tinker.ServiceClient(base_url=base_url, api_key=api_key)
    sampler = service.create_sampling_client(base_model="Qwen/Qwen3-8B").result()
    main = sample_in_worker(sampler, 1)
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        workers = list(pool.map(sample_in_worker, [sampler] * 3, [1, 1, 4]))
    service.close("success").result()
    print(json.dumps({"workers": workers, "main": main}))
