"""asr_s2s.optimization.plan_steps: the global batch, accum_grad and the schedule's length for any number of ranks."""

from __future__ import annotations

import dataclasses
import logging
import math
import random
from pathlib import Path

import pytest

from asr_s2s.batching import BucketBatchSampler, GlobalBatchSampler
from asr_s2s.config import TrainConfig, load_config
from asr_s2s.dataset import SpeechDataset
from asr_s2s.errors import ConfigError
from asr_s2s.optimization import PACKING, StepPlan, batch_layout, plan_steps
from asr_s2s.trainer import Trainer
from asr_s2s.training_state import data_order_changes, resumed_batches

REPO = Path(__file__).resolve().parents[1]
LIBRISPEECH = REPO / "recipes" / "librispeech" / "conf"
HOURS = {"las_100h.yaml": 100.6, "las_960h.yaml": 961.0}  # training audio of train-clean-100 and of all 960 h


def librispeech_like(n: int, seed: int = 1) -> list[float]:
    """Durations shaped like LibriSpeech's training sets: most utterances 12-17 s, a tail down to 1.5 s."""
    rng = random.Random(seed)
    return [min(24.5, max(10.0, rng.gauss(14.8, 1.2))) if rng.random() < 0.7 else rng.uniform(1.5, 14.0) for _ in range(n)]


@pytest.mark.parametrize("name", sorted(HOURS))
def test_librispeech_plans_do_not_depend_on_the_number_of_gpus(name):
    config = load_config(LIBRISPEECH / name).train
    plans = {w: plan_steps(config, HOURS[name] * 3600, w) for w in (1, 2, 4, 8)}
    assert len({(p.global_batch_seconds, p.steps_per_epoch, p.total_steps, p.warmup_steps) for p in plans.values()}) == 1
    for w, plan in plans.items():
        assert plan.per_rank_batch_seconds * w * plan.accum_grad == pytest.approx(plan.global_batch_seconds)
        assert plan.per_rank_batch_seconds <= config.max_batch_seconds, "the per-GPU cap holds"
        assert plan.accum_grad == math.ceil(config.global_batch_seconds / (w * config.max_batch_seconds))
    plan = plans[1]
    # published recipes: tens of thousands of optimizer steps (see the configs' comments)
    assert 20_000 <= plan.total_steps <= 120_000, plan
    assert plan.warmup_steps <= 0.1 * plan.total_steps
    assert config.early_stopping_patience is None, "early stopping would cut the cosine decay short"


def test_the_old_keys_plan_as_before():
    """Without global_batch_seconds: max_batch_seconds per rank and accum_grad as given; the global batch
    grows with the ranks, and a run's steps per epoch are ceil(batches per rank / accum_grad) as before."""
    config = TrainConfig(max_batch_seconds=800, accum_grad=2, epochs=40, warmup_steps=1000)
    assert batch_layout(config, 4) == (800, 2)
    plans = [plan_steps(config, 362_160, w) for w in (1, 4)]
    assert [p.global_batch_seconds for p in plans] == [1600, 6400]
    assert plans[0].steps_per_epoch > 3 * plans[1].steps_per_epoch
    counted = plan_steps(config, 362_160, 4, batches_per_rank=121)
    assert counted.counted and counted.steps_per_epoch == 61 and counted.total_steps == 40 * 61


@pytest.mark.parametrize("path", [*sorted((REPO / "recipes" / "mini_librispeech" / "conf").glob("las_*.yaml")),
                                  REPO / "tests" / "conf" / "tiny.yaml"], ids=lambda p: p.name)
def test_configs_without_the_key_keep_the_old_batches(path, fixture_utterances, tokenizer, make_model, tmp_path):
    """The mini recipe's (and the tests') configs give the Trainer the very batches, accum_grad and schedule
    length that make_loader and ceil(batches / accum_grad) gave before train.global_batch_seconds existed."""
    config = load_config(path).train
    assert config.global_batch_seconds is None
    config = dataclasses.replace(config, max_batch_seconds=min(config.max_batch_seconds, 5.0), num_workers=0, augment=[])
    data = SpeechDataset(fixture_utterances, tokenizer)
    trainer = Trainer(make_model(), config, data, data, tmp_path, progress=False)
    sampler = trainer.train_loader.batch_sampler.sampler
    assert type(sampler) is BucketBatchSampler
    old = BucketBatchSampler([u.duration for u in fixture_utterances], config.max_batch_seconds, seed=config.seed,
                             max_batch_size=config.max_batch_size, sortagrad_epochs=config.sortagrad_epochs)
    assert sampler.batches() == old.batches()
    assert trainer.plan.accum_grad == config.accum_grad
    assert trainer.steps_per_epoch == math.ceil(len(old) / config.accum_grad)
    assert trainer.plan.total_steps == config.epochs * trainer.steps_per_epoch


def test_a_run_counts_the_same_steps_on_any_number_of_ranks():
    """The step batches are cut once for all ranks: the counted plan of 1, 4 and 8 ranks is the same,
    and the estimate from the audio alone lies within 2 % of it."""
    durations = librispeech_like(28_539)  # as many utterances as train-clean-100, 100.6 h
    config = TrainConfig(global_batch_seconds=400, max_batch_seconds=200, epochs=40, warmup_steps=1000)
    counted = []
    for world_size in (1, 4, 8):
        _, accum = batch_layout(config, world_size)
        sampler = GlobalBatchSampler(durations, 400, accum, rank=world_size - 1, world_size=world_size)
        counted.append(plan_steps(config, sum(durations), world_size, batches_per_rank=len(sampler)))
    assert [p.accum_grad for p in counted] == [2, 1, 1]
    assert len({(p.global_batch_seconds, p.steps_per_epoch, p.total_steps) for p in counted}) == 1
    estimate = plan_steps(config, sum(durations), 1)
    assert not estimate.counted and estimate.steps_per_epoch == pytest.approx(counted[0].steps_per_epoch, rel=0.02)


@pytest.mark.parametrize("cap", [400, 1200])
def test_packing_measured_on_librispeech_like_durations(cap):
    durations = librispeech_like(28_539)
    packing = sum(durations) / (len(GlobalBatchSampler(durations, cap).step_batches()) * cap)
    assert packing == pytest.approx(PACKING, abs=0.01)


@pytest.mark.parametrize(("changes", "message"), [
    (dict(global_batch_seconds=0.0), "global_batch_seconds must be positive"),
    (dict(global_batch_seconds=400.0, accum_grad=2), "accum_grad .2. is derived from train.global_batch_seconds"),
    (dict(global_batch_seconds=400.0, max_batch_size=16), "max_batch_size caps one rank's batch"),
])
def test_global_batch_config_errors(changes, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**changes)


def test_the_per_rank_batch_is_the_global_batch_s_share():
    config = TrainConfig(global_batch_seconds=1200, max_batch_seconds=500)
    assert [batch_layout(config, w) for w in (1, 2, 3, 8)] == [(400, 3), (300, 2), (400, 1), (150, 1)]


def test_a_run_logs_its_plan_in_one_block(fixture_utterances, tokenizer, make_model, tmp_path, caplog):
    config = TrainConfig(epochs=1, global_batch_seconds=8.0, max_batch_seconds=4.0, warmup_steps=1, num_workers=0,
                         early_stopping_patience=2)
    data = SpeechDataset(fixture_utterances, tokenizer)
    trainer = Trainer(make_model(), config, data, data, tmp_path, progress=False)
    with caplog.at_level(logging.INFO, logger="asr_s2s.trainer"):
        trainer.fit()
    (block,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("step plan:")]
    plan: StepPlan = trainer.plan
    assert plan.counted and plan.accum_grad == 2 and plan.per_rank_batch_seconds == 4.0
    for line in ("world size             1", "per-rank batch         4 padded audio-s", "accum_grad             2",
                 "global batch           8 padded audio-s", f"steps per epoch        {plan.steps_per_epoch} (counted",
                 f"total steps            {plan.total_steps} (1 epochs)", "warm-up steps          1 ("):
        assert line in block
    assert trainer.step == plan.total_steps, "the schedule's length is the steps the run took"
    assert any("early_stopping_patience can end the run before" in r.getMessage() for r in caplog.records)


def test_a_resume_on_another_number_of_ranks_goes_on_at_the_same_step():
    """With a global batch, a mid-epoch checkpoint lies between steps: 6 batches of 2 per step on 1 process
    are 3 steps, which are 3 batches on each of 2 ranks (accum_grad 1); without it, batches stay batches."""
    state = {"batches_done": 6, "accum_grad": 2, "world_size": 1, "train_config": dataclasses.asdict(TrainConfig())}
    with_global = TrainConfig(global_batch_seconds=400.0, max_batch_seconds=200.0)
    assert resumed_batches(state, with_global, accum_grad=1) == 3
    assert resumed_batches(state, TrainConfig(), accum_grad=1) == 6
    assert resumed_batches({"batches_done": 4}, with_global, accum_grad=1) == 4, "a checkpoint of before the key"
    # what a resume warns about: the ranks matter only without the global batch
    old = {**state, "train_config": dataclasses.asdict(TrainConfig(global_batch_seconds=400.0, max_batch_seconds=200.0))}
    assert data_order_changes(old, with_global, 0, world_size=2) == []
    assert data_order_changes(state, TrainConfig(), 0, world_size=2) == ["the number of ranks"]
    assert data_order_changes(state, with_global, 0, world_size=1) == ["global_batch_seconds"]
    before_the_key = {"train_config": {k: v for k, v in state["train_config"].items() if k != "global_batch_seconds"}}
    assert data_order_changes(before_the_key, TrainConfig(), 0) == []
