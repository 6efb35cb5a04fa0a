"""One seed rule: a stream is a pure function of its keys, and distinct keys give distinct streams."""

import numpy as np
import pytest
import torch

from fetalgen.utils.seeds import derive_seed, name_key, seeded_rng, torch_generator


def test_a_stream_depends_on_its_keys_only():
    assert derive_seed(0, 5) == derive_seed(0, 5)
    seeds = {derive_seed(s, i) for s in range(3) for i in range(100)}
    assert len(seeds) == 300 and all(0 <= s < 2**63 for s in seeds)
    assert np.array_equal(seeded_rng(1, 2).integers(0, 10**9, 5), seeded_rng(1, 2).integers(0, 10**9, 5))
    assert not np.array_equal(seeded_rng(1, 2).integers(0, 10**9, 5), seeded_rng(2, 1).integers(0, 10**9, 5))
    a, b = (torch.randperm(50, generator=torch_generator(3, e)) for e in (0, 1))
    assert torch.equal(a, torch.randperm(50, generator=torch_generator(3, 0))) and not torch.equal(a, b)


def test_a_root_seed_is_numpy_s_own_and_names_hash_stably():
    assert np.array_equal(seeded_rng(7).random(3), np.random.default_rng(7).random(3))
    assert name_key("case_001") == name_key("case_001") != name_key("case_002")
    assert name_key("case_001") == 0x6089211F66B3A34B  # sha256-based: the same in every process and release
    with pytest.raises(ValueError, match="at least one key"):
        seeded_rng()
