"""``sample_many`` runs in constant memory: a memray bound on the whole client process, any number of prompts.

The mock runs in another process (``python -m tinker_sync.testing``), so what is measured is the
client alone: its threads, its pools, the window of samples in flight and their results.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

from tinker_sync import ServiceClient, types

pytestmark = pytest.mark.slow  # seconds each: started first under xdist (conftest)

PROMPTS = 3_000  # ~6,000 requests


@pytest.fixture
def mock_url() -> Iterator[str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "tinker_sync.testing", "--empty"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        yield line.split(" at ", 1)[1].split(" ", 1)[0]
    finally:
        process.terminate()
        process.wait(30)
        if process.stdout is not None:
            process.stdout.close()


# The high watermark is ~4 MiB of fixed costs (TLS roots, pools, threads) whatever the count: a
# window of 32 in flight adds little, while a leak of even 1 KiB per prompt would pass the bound.
@pytest.mark.limit_memory("5 MB")
def test_sample_many_over_thousands_of_prompts_in_constant_memory(mock_url: str) -> None:
    with ServiceClient(api_key="tml-test-key", base_url=mock_url) as service:
        sampler = service.create_sampling_client(base_model="Qwen/Qwen3-8B").result(60)
        prompts = (types.ModelInput.from_ints([i % 1000, 7]) for i in range(PROMPTS))
        count = tokens = 0
        for result in sampler.sample_many(prompts, 1, types.SamplingParams(max_tokens=8), window=32):
            count += 1
            tokens += len(result.sequences[0].tokens)
    assert (count, tokens) == (PROMPTS, PROMPTS * 8)
