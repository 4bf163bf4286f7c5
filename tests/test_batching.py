"""asr_s2s.batching: duration-bucketed batches under a cap on padded seconds."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asr_s2s.batching import BucketBatchSampler, GlobalBatchSampler, balance_tail, merge_short, split_step

durations_st = st.lists(st.floats(min_value=0.1, max_value=40.0, allow_nan=False), min_size=1, max_size=200)


def _check_epoch(sampler: BucketBatchSampler, durations: list[float]) -> list[list[int]]:
    batches = list(sampler)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(len(durations))), "every index exactly once per epoch"
    for batch in batches:
        assert batch, "no empty batch"
        padded = len(batch) * max(durations[i] for i in batch)
        assert len(batch) == 1 or padded <= sampler.max_batch_seconds + 1e-9
        if sampler.max_batch_size is not None:
            assert len(batch) <= sampler.max_batch_size
    assert len(sampler) == len(batches)
    return batches


@given(
    durations=durations_st,
    cap=st.floats(min_value=1.0, max_value=120.0),
    seed=st.integers(0, 2**16),
    epoch=st.integers(0, 50),
    max_size=st.none() | st.integers(1, 8),
    shuffle=st.booleans(),
)
@settings(max_examples=200)
def test_every_index_once_and_cap_respected(durations, cap, seed, epoch, max_size, shuffle):
    sampler = BucketBatchSampler(durations, cap, shuffle=shuffle, seed=seed, max_batch_size=max_size)
    sampler.set_epoch(epoch)
    first = _check_epoch(sampler, durations)
    # deterministic: a new sampler with the same seed and epoch yields the same batches
    again = BucketBatchSampler(durations, cap, shuffle=shuffle, seed=seed, max_batch_size=max_size)
    again.set_epoch(epoch)
    assert list(again) == first


@given(durations=durations_st, cap=st.floats(min_value=1.0, max_value=120.0))
@settings(max_examples=100)
def test_batches_are_greedy_over_sorted_durations_without_shuffle(durations, cap):
    """Without shuffle, batches are consecutive runs of the duration-sorted order, and cutting is greedy."""
    batches = list(BucketBatchSampler(durations, cap, shuffle=False))
    flat = [i for b in batches for i in b]
    assert [durations[i] for i in flat] == sorted(durations)
    for batch, following in zip(batches, batches[1:]):
        longest = max(durations[i] for i in batch + following[:1])
        assert (len(batch) + 1) * longest > cap, "a batch is only closed when the next item would break the cap"


def test_different_epochs_give_different_orders():
    rng = random.Random(1)
    durations = [rng.uniform(1, 20) for _ in range(300)]
    sampler = BucketBatchSampler(durations, 60.0, seed=3)
    orders = []
    for epoch in range(4):
        sampler.set_epoch(epoch)
        orders.append(list(sampler))
        _check_epoch(sampler, durations)
    assert len({str(o) for o in orders}) == 4
    sampler.set_epoch(1)
    assert list(sampler) == orders[1], "going back to an epoch replays its order"
    other_seed = BucketBatchSampler(durations, 60.0, seed=4)
    other_seed.set_epoch(1)
    assert list(other_seed) != orders[1]


def test_similar_durations_share_batches():
    """Bucketing keeps padding small: far less than random batching would."""
    rng = random.Random(0)
    durations = [rng.uniform(1, 30) for _ in range(500)]
    sampler = BucketBatchSampler(durations, 120.0, seed=0)
    batches = list(sampler)
    padded = sum(len(b) * max(durations[i] for i in b) for b in batches)
    assert padded < 1.15 * sum(durations)


def test_long_item_gets_its_own_batch():
    batches = list(BucketBatchSampler([1.0, 50.0, 1.0, 2.0], 10.0, shuffle=False))
    assert [1] in batches
    assert sorted(i for b in batches for i in b) == [0, 1, 2, 3]


def test_cap_must_be_positive():
    with pytest.raises(ValueError, match="max_batch_seconds"):
        BucketBatchSampler([1.0], 0)


def test_sortagrad_visits_shortest_batches_first_then_shuffles():
    rng = random.Random(3)
    durations = [rng.uniform(0.5, 15.0) for _ in range(300)]
    sampler = BucketBatchSampler(durations, 40.0, shuffle=True, seed=0, sortagrad_epochs=1)
    longest = [max(durations[i] for i in batch) for batch in sampler.batches()]
    assert longest == sorted(longest)
    sampler.set_epoch(1)
    shuffled = [max(durations[i] for i in batch) for batch in sampler.batches()]
    assert shuffled != sorted(shuffled)
    assert sorted(i for b in sampler.batches() for i in b) == list(range(300))


# -- sharding across ranks (torchrun) -----------------------------------------------------
@given(
    durations=durations_st,
    cap=st.floats(min_value=1.0, max_value=120.0),
    seed=st.integers(0, 2**16),
    epoch=st.integers(0, 20),
    world=st.integers(1, 5),
    max_size=st.none() | st.integers(1, 8),
)
@settings(max_examples=200)
def test_ranks_get_disjoint_equal_shares_that_cover_the_epoch(durations, cap, seed, epoch, world, max_size):
    if len(durations) < world:
        with pytest.raises(ValueError, match="cannot be shared"):
            BucketBatchSampler(durations, cap, seed=seed, world_size=world)
        return
    samplers = [BucketBatchSampler(durations, cap, seed=seed, max_batch_size=max_size, rank=r, world_size=world)
                for r in range(world)]
    shares = []
    for sampler in samplers:
        sampler.set_epoch(epoch)
        shares.append(list(sampler))
    assert len({len(s) for s in shares}) == 1, "every rank takes the same number of steps"
    assert all(len(s) == len(sampler) for s, sampler in zip(shares, samplers))
    flat = [i for share in shares for batch in share for i in batch]
    assert sorted(flat) == list(range(len(durations))), "no utterance duplicated or lost"
    assert all(batch for share in shares for batch in share)
    # step k of all ranks together is global batches kW .. kW+W-1
    global_batches = samplers[0].global_batches()
    assert [share[k] for k in range(len(shares[0])) for share in shares] == global_batches


def test_one_rank_is_the_unsharded_sampler():
    rng = random.Random(5)
    durations = [rng.uniform(1, 20) for _ in range(101)]
    plain, sharded = BucketBatchSampler(durations, 60.0, seed=2), BucketBatchSampler(durations, 60.0, seed=2, rank=0, world_size=1)
    for epoch in range(3):
        plain.set_epoch(epoch)
        sharded.set_epoch(epoch)
        assert list(plain) == list(sharded)


def test_shards_reshuffle_every_epoch():
    rng = random.Random(7)
    durations = [rng.uniform(1, 20) for _ in range(200)]
    sampler = BucketBatchSampler(durations, 60.0, seed=0, rank=1, world_size=2)
    orders = []
    for epoch in range(3):
        sampler.set_epoch(epoch)
        orders.append([i for b in sampler for i in b])
    assert orders[0] != orders[1] != orders[2]
    assert {frozenset(o) for o in orders} != {frozenset(orders[0])}, "a rank sees different utterances each epoch"


def test_even_out_splits_the_largest_batch_or_merges_singles():
    from asr_s2s.batching import even_out

    assert even_out([[0, 1, 2], [3]], 2, [1.0] * 4) == [[0, 1, 2], [3]]
    assert even_out([[0, 1, 2], [3], [4, 5]], 2, [1.0] * 6) == [[0, 1], [2], [3], [4, 5]]
    assert even_out([[0, 1, 2, 3, 4]], 3, [1.0] * 5) == [[0, 1], [2], [3, 4]]
    # only single-utterance batches: the two shortest are merged
    assert even_out([[0], [1], [2]], 2, [3.0, 1.0, 2.0]) == [[0], [1, 2]]
    assert even_out([[0, 1], [2], [3]], 2, [3.0, 3.0, 1.0, 2.0]) == [[0], [1], [2], [3]]


# -- batches cut for all ranks at once (train.global_batch_seconds) ------------------------
@given(
    durations=st.lists(st.floats(min_value=0.5, max_value=30.0, allow_nan=False), min_size=8, max_size=150),
    cap=st.floats(min_value=20.0, max_value=200.0),
    seed=st.integers(0, 2**16),
    epoch=st.integers(0, 5),
    layouts=st.sampled_from([[(1, 1), (1, 4), (2, 2), (4, 1)], [(1, 1), (2, 1), (8, 1)], [(1, 3), (3, 1)]]),
)
@settings(max_examples=150)
def test_global_batches_do_not_depend_on_the_world_size(durations, cap, seed, epoch, layouts):
    """Any (world size, accum_grad): the same step batches as one process (unless one of those holds fewer
    utterances than ranks: then it is merged into a neighbour); each rank takes accum_grad parts of every
    step, its last one never empty; together the ranks' parts of a step are exactly the step's batch."""
    one = GlobalBatchSampler(durations, cap, seed=seed)
    one.set_epoch(epoch)
    alone = one.step_batches()
    for world_size, accum in layouts:
        samplers = [GlobalBatchSampler(durations, cap, accum, seed=seed, rank=r, world_size=world_size)
                    for r in range(world_size)]
        for s in samplers:
            s.set_epoch(epoch)
        step_batches = samplers[0].step_batches()
        if min(map(len, alone)) >= world_size:
            assert step_batches == alone, f"world {world_size} x accum {accum} cut other batches"
        assert min(map(len, step_batches)) >= world_size
        assert sorted(i for b in step_batches for i in b) == list(range(len(durations)))
        shares = [s.batches() for s in samplers]
        assert all(len(share) == len(step_batches) * accum for share in shares), "accum_grad batches per step"
        for k, batch in enumerate(step_batches):
            parts = [share[k * accum + a] for a in range(accum) for share in shares]
            assert sorted(i for p in parts for i in p) == sorted(batch)
            assert all(share[k * accum + accum - 1] for share in shares), "a step's last batch is never empty"
            assert max(map(len, parts)) - min(map(len, parts)) <= 1


def test_global_batches_under_their_cap_and_shuffled_per_epoch():
    rng = random.Random(3)
    durations = [rng.uniform(1.0, 16.0) for _ in range(500)]
    sampler = GlobalBatchSampler(durations, 120.0, accum_grad=2, world_size=1)
    first = sampler.step_batches()
    padded = sorted(len(b) * max(durations[i] for i in b) for b in first)
    # the cut is BucketBatchSampler's at the global cap; only the last two buckets share their utterances anew
    assert padded[-3] <= 120.0 and padded[-1] <= 120.0 * 1.2
    assert len(first) == len(BucketBatchSampler(durations, 120.0).global_batches())
    sampler.set_epoch(1)
    assert sampler.step_batches() != first


def test_split_step_and_merge_short():
    assert split_step([1, 2, 3, 4, 5], 2) == [[1, 2], [3, 4, 5]], "the larger part last"
    assert split_step([1, 2], 4) == [[], [], [1], [2]], "empty parts only first"
    assert merge_short([[1], [2, 3, 4], [5]], 2) == [[1, 2, 3, 4, 5]]
    assert merge_short([[1, 2], [3, 4]], 2) == [[1, 2], [3, 4]]
    assert balance_tail([[1, 2, 3, 4], [5]]) == [[1, 2, 3], [4, 5]]
    assert balance_tail([[1, 2], [3, 4]]) == [[1, 2], [3, 4]]
