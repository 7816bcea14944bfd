"""The batch pre-filters may only narrow where the content tests look: every response `poison_reason`
flags and every text `find_secrets` finds something in is among the candidates, whatever else the batch
holds (characters whose lower case is longer, separators, empty strings)."""

from __future__ import annotations

import random

import pytest

from healing.content import find_secrets, poison_candidates, poison_reason, secret_candidates

PIECES = [
    "Here is a careful answer about rate limits and retries.", "Error code: 429 - Rate limit reached for requests.",
    "I'm sorry, but I can't help with that.", "Service Unavailable", "Request timed out", "```python\nprint(1)\n",
    "   ", "", "İstanbul ΣΑΣ straße", "\x00", "contact me at jane.doe@example.com", "key sk-proj-" + "A" * 24,
    "AKIA" + "Q" * 16, "-----BEGIN RSA PRIVATE KEY-----", "Bearer " + "t" * 30, "maximum context length is 8192 tokens",
    "The quota exceeded the plan.", "a long tail of plain words " * 30,
]


def _texts(rng: random.Random, count: int) -> list[str]:
    return ["".join(rng.choice(PIECES) for _ in range(rng.randint(0, 4))) for _ in range(count)]


@pytest.mark.parametrize(("flags", "prefilter"), [(poison_reason, poison_candidates), (find_secrets, secret_candidates)],
                         ids=["poisoned", "secrets"])
def test_every_text_the_full_test_flags_is_a_candidate(flags, prefilter):
    rng = random.Random(20261204)
    total = 0
    for _ in range(300):
        texts = _texts(rng, rng.randint(1, 40))
        flagged = {i for i, text in enumerate(texts) if flags(text)}
        assert flagged <= set(prefilter(texts))
        total += len(flagged)
    assert total > 1000, "the batches must hold plenty to find, or the test proves nothing"


def test_healthy_answers_are_not_candidates():
    topics = ["sharding", "replicas", "vector search", "tokenisers", "backoff"]
    answers = [f"{topics[i % 5].capitalize()} is explained here, with an example and the usual caveats." for i in range(1000)]
    assert poison_candidates(answers) == [] and secret_candidates(answers) == []
    answers[617] = "Rate limit exceeded"
    answers[3] = "write to ops@example.org"
    assert poison_candidates(answers) == [617] and secret_candidates(answers) == [3]


def test_text_whose_lower_case_is_longer_does_not_shift_the_others():
    texts = ["İ" * 50, "Rate limit exceeded", "fine", "Service Unavailable"]  # 'İ'.lower() is two characters
    assert poison_candidates(texts) == [1, 3]
    assert [i for i, text in enumerate(texts) if poison_reason(text)] == [1, 3]
