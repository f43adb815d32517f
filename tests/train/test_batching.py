"""The batch choice: micro-batch x accumulation x devices stays the effective batch; memory figures decide the
micro-batch and checkpointing (a simulated device: fixed bytes + bytes per example, checkpointing storing less)."""

from __future__ import annotations

import pytest

from whisper_tune.pipeline.core.config import load_config
from whisper_tune.pipeline.core.errors import ConfigError
from whisper_tune.train.batching import (CPU_MICRO_BATCH, USEFUL_MICRO_BATCH, BatchRequest, DeviceMemory, agree, choose_batch, divisors,
                            count_in_clips, per_device_batch)
from whisper_tune.train.trainer import StepPlan

GIB = 1024 ** 3


def simulated_probe(fixed_gib: float, per_example_gib: float, ckpt_share: float = 0.3, calls: list | None = None):
    """Peak bytes of a device where each example costs per_example_gib (ckpt_share of it with checkpointing)."""

    def probe(micro: int, checkpointing: bool) -> int:
        if calls is not None:
            calls.append((micro, checkpointing))
        per = per_example_gib * (ckpt_share if checkpointing else 1.0)
        return int((fixed_gib + micro * per) * GIB)

    return probe


def memory(usable_gib: float, optimizer_gib: float = 0.0, margin: float = 0.1) -> DeviceMemory:
    return DeviceMemory(usable=int(usable_gib * GIB), optimizer=int(optimizer_gib * GIB), margin=margin)


@pytest.mark.parametrize("effective", [1, 7, 12, 21, 64, 100, 256])
@pytest.mark.parametrize("world", [1, 2, 3, 4, 8])
def test_effective_batch_is_kept_or_the_nearest_multiple_of_the_devices(effective, world):
    for mem, probe in ((None, None), (memory(80), simulated_probe(2, 0.7))):
        choice = choose_batch(BatchRequest(effective_batch=effective, world_size=world), mem, probe)
        per_device, note = per_device_batch(effective, world)
        assert choice.micro_batch * choice.grad_accum == per_device
        assert choice.effective_batch == per_device * world
        if effective % world == 0:
            assert choice.effective_batch == effective and not note
        else:
            assert str(effective) in choice.note
            if effective >= world:   # the nearest multiple of the devices
                assert abs(choice.effective_batch - effective) <= world / 2
            else:                    # fewer clips than devices: one per device
                assert choice.effective_batch == world


def test_cpu_keeps_a_small_fixed_micro_batch_without_probing():
    choice = choose_batch(BatchRequest(effective_batch=64))
    assert (choice.micro_batch, choice.grad_accum, choice.gradient_checkpointing) == (CPU_MICRO_BATCH, 16, False)
    odd = choose_batch(BatchRequest(effective_batch=63, world_size=3))      # 21 per device: divisors 1, 3, 7, 21
    assert (odd.micro_batch, odd.grad_accum, odd.effective_batch) == (3, 7, 63)


def test_the_largest_micro_batch_that_fits_is_chosen_without_checkpointing():
    # 2 GiB fixed + 0.7 GiB per example, 80 GiB usable, 10 % margin, 3 GiB of optimizer state: 69 GiB budget
    calls: list = []
    choice = choose_batch(BatchRequest(effective_batch=64), memory(80, optimizer_gib=3), simulated_probe(2, 0.7, calls=calls))
    assert (choice.micro_batch, choice.grad_accum, choice.gradient_checkpointing) == (64, 1, False)
    tight = choose_batch(BatchRequest(effective_batch=64), memory(30, optimizer_gib=3), simulated_probe(2, 0.7))
    # budget 24 GiB: 32 examples need 24.4, 16 need 13.2
    assert (tight.micro_batch, tight.grad_accum, tight.gradient_checkpointing) == (16, 4, False)
    assert "16" in tight.reason and "usable 30.0 GiB" in tight.reason and "out of memory" not in tight.reason
    assert len(calls) <= 4, "a binary search over the 7 divisors of 64"


def test_checkpointing_goes_on_only_when_too_small_a_batch_fits_without_it():
    # budget 9 GiB: without checkpointing 4 fit (8.8 GiB), with it (0.45 GiB each) 16 fit (9.2 is over: 8 -> 5.6)
    choice = choose_batch(BatchRequest(effective_batch=64), memory(10), simulated_probe(2, 1.5))
    assert choice.gradient_checkpointing and choice.micro_batch > USEFUL_MICRO_BATCH // 2
    assert "fits with checkpointing" in choice.reason and "without it only 4 fits" in choice.reason
    assert choice.micro_batch * choice.grad_accum == 64
    roomy = choose_batch(BatchRequest(effective_batch=64), memory(40), simulated_probe(2, 1.5))
    assert not roomy.gradient_checkpointing and roomy.micro_batch >= USEFUL_MICRO_BATCH


def test_an_out_of_memory_probe_never_fits_and_nothing_fitting_is_an_error():
    def oom_above_8(micro, checkpointing):
        return None if micro > 8 else int(micro * GIB)

    choice = choose_batch(BatchRequest(effective_batch=64), memory(1000), oom_above_8)
    assert choice.micro_batch == 8 and not choice.gradient_checkpointing and "out of memory" in choice.reason
    with pytest.raises(ConfigError, match="not even a micro-batch of 1"):
        choose_batch(BatchRequest(effective_batch=64), memory(1), simulated_probe(2, 1))


def test_checkpointing_forced_either_way_searches_that_mode_only():
    calls: list = []
    on = choose_batch(BatchRequest(effective_batch=64, checkpointing=True), memory(10),
                      simulated_probe(2, 1.5, calls=calls))
    assert on.gradient_checkpointing and all(c for _, c in calls)
    off = choose_batch(BatchRequest(effective_batch=64, checkpointing=False), memory(10), simulated_probe(2, 1.5))
    assert not off.gradient_checkpointing and off.micro_batch == 4


def test_explicit_batch_size_keeps_grad_accum_and_probes_checkpointing_only():
    req = BatchRequest(effective_batch=64, world_size=2, micro_batch=4, grad_accum=16)
    cpu = choose_batch(req)
    assert (cpu.micro_batch, cpu.grad_accum, cpu.effective_batch) == (4, 16, 128)     # today's behaviour
    fits = choose_batch(req, memory(80), simulated_probe(2, 1))
    assert (fits.micro_batch, fits.grad_accum, fits.gradient_checkpointing) == (4, 16, False)
    tight = choose_batch(req, memory(6), simulated_probe(2, 1))        # 6 GiB without, 3.2 with: budget 5.4
    assert tight.gradient_checkpointing and not tight.note
    hopeless = choose_batch(req, memory(2), simulated_probe(2, 1))
    assert hopeless.gradient_checkpointing and "does not fit" in hopeless.note
    derived = choose_batch(BatchRequest(effective_batch=64, world_size=2, micro_batch=8))
    assert derived.grad_accum == 4 and derived.effective_batch == 64


def test_eval_batch_follows_the_training_choice_unless_given():
    free = choose_batch(BatchRequest(effective_batch=64), memory(30), simulated_probe(2, 0.7))
    assert free.eval_batch == 2 * free.micro_batch
    given = choose_batch(BatchRequest(effective_batch=64, eval_batch=3), memory(30), simulated_probe(2, 0.7))
    assert given.eval_batch == 3


def test_ranks_agree_on_the_most_careful_choice():
    choice = choose_batch(BatchRequest(effective_batch=64, world_size=2), memory(80), simulated_probe(2, 0.7))
    assert choice.micro_batch == 32
    agreed = agree(choice, smallest_micro=8, any_checkpointing=True)
    assert (agreed.micro_batch, agreed.grad_accum, agreed.gradient_checkpointing) == (8, 4, True)
    assert agreed.effective_batch == choice.effective_batch == 64
    assert agree(choice, 32, False) is choice


def test_settings_accept_auto_or_a_value(tmp_path):
    t = load_config().training
    assert (t.batch_size, t.grad_accum, t.gradient_checkpointing, t.effective_batch) == ("auto", "auto", "auto", 64)
    t = load_config(None, {"training.batch_size": "8", "training.grad_accum": "2",
                           "training.gradient_checkpointing": "on"}).training
    assert (t.batch_size, t.grad_accum, t.gradient_checkpointing) == (8, 2, True)
    req = BatchRequest.of(t, world_size=3)
    assert (req.micro_batch, req.grad_accum, req.checkpointing, req.world_size) == (8, 2, True, 3)
    from whisper_tune.pipeline.core.config import save_config

    for overrides in ({}, {"training.batch_size": 8, "training.grad_accum": 2, "training.gradient_checkpointing": False}):
        cfg = load_config(None, overrides)
        save_config(cfg, tmp_path / "run.toml")           # what a run records reads back the same
        assert load_config(tmp_path / "run.toml") == cfg
    for bad, key in (({"training.batch_size": "big"}, "batch_size"), ({"training.grad_accum": 4}, "grad_accum"),
                     ({"training.gradient_checkpointing": "sometimes"}, "gradient_checkpointing"),
                     ({"training.effective_batch": 0}, "effective_batch")):
        with pytest.raises(ConfigError, match=key):
            load_config(None, bad)


def test_plan_batch_on_the_cpu_sets_the_models_checkpointing(tiny_model, tmp_path):
    from whisper_tune.train.model import choose_precision, load_model
    from whisper_tune.train.batching import plan_batch

    from whisper_tune.testing import build_cache

    cache = build_cache(tmp_path / "work", tiny_model, n_train=4)
    precision = choose_precision("fp32")
    for setting, expected in (("auto", False), ("on", True), ("off", False)):
        t = load_config(None, {"training.gradient_checkpointing": setting, "training.effective_batch": 8}).training
        net = load_model(str(tiny_model), gradient_checkpointing=not expected)
        choice = plan_batch(t, net, cache, cache.clip_ids("train"), precision)
        assert choice.gradient_checkpointing is expected and net.is_activation_checkpointing is expected
        assert (choice.micro_batch, choice.grad_accum) == (4, 2)
        assert net.config._attn_implementation == "sdpa"


def test_plan_batch_on_cuda_probes_the_longest_label_and_applies_the_choice(tiny_model, tmp_path, monkeypatch):
    """The CUDA branch's wiring, with the device's memory figures and probe passed in (no GPU needed)."""
    import whisper_tune.train.batching as batching
    from whisper_tune.train.model import Precision, load_model

    from whisper_tune.testing import build_cache

    cache = build_cache(tmp_path / "work", tiny_model, n_train=6)
    ids = cache.clip_ids("train")
    longest = max(len(cache.get(c, 0).labels) for c in ids) - 1
    shapes: list = []

    def fake_probe(model, shape, dtype):
        shapes.append((shape, dtype))
        return simulated_probe(2, 1.5)          # budget 9 GiB below: 4 fit without checkpointing, 8 with it

    monkeypatch.setattr(batching.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(batching, "make_probe", fake_probe)
    monkeypatch.setattr(batching, "device_memory", lambda model, device: memory(10))
    monkeypatch.setattr(batching, "training_device", lambda: batching.torch.device("cpu"))
    net = load_model(str(tiny_model), gradient_checkpointing=False)
    t = load_config().training
    choice = batching.plan_batch(t, net, cache, ids, Precision("bf16", False, "test"))
    assert shapes[0][0] == batching.ProbeShape(n_mels=80, label_tokens=longest) and shapes[0][1] is batching.torch.bfloat16
    assert (choice.micro_batch, choice.grad_accum, choice.gradient_checkpointing) == (8, 8, True)
    assert net.is_activation_checkpointing and choice.eval_batch == 8


def test_divisors_are_found_by_trial_division_up_to_the_square_root():
    for n in range(1, 400):
        assert divisors(n) == [d for d in range(1, n + 1) if n % d == 0]
    # a linear search over 10**12 candidates would not finish; this is 10**6 steps
    assert len(divisors(10**12)) == 169 and divisors(10**12)[-2:] == [5 * 10**11, 10**12]
    huge = choose_batch(BatchRequest(effective_batch=10**9))
    assert (huge.micro_batch, huge.grad_accum) == (CPU_MICRO_BATCH, 10**9 // CPU_MICRO_BATCH)


def _training(**over):
    return load_config(None, {f"training.{k}": v for k, v in {"pack": True, "batch_unit": "clips", **over}.items()}).training


@pytest.mark.parametrize("clips,windows", [(200, 49), (200, 40), (37, 5), (1000, 90), (12, 2), (9, 9)])
@pytest.mark.parametrize("batch,accum,world", [(8, 1, 1), (8, 2, 1), (4, 4, 2), (16, 1, 3), ("auto", "auto", 1),
                                               ("auto", "auto", 4)])
def test_a_batch_counted_in_clips_makes_the_unpacked_runs_steps_per_epoch(clips, windows, batch, accum, world):
    t = _training(batch_size=batch, grad_accum=accum, effective_batch=64)
    windowed, count = count_in_clips(t, clips, windows, world)
    choice = choose_batch(BatchRequest.of(windowed, world))
    assert choice.effective_batch == count.windows_per_step      # what the device settles on is what was planned
    unpacked = choose_batch(BatchRequest.of(t, world))          # the same settings, counted in clips
    clip_steps = StepPlan(clips, unpacked.micro_batch, unpacked.grad_accum, world, 1, -1).steps_per_epoch
    window_steps = StepPlan(count.windows_per_epoch, choice.micro_batch, choice.grad_accum, world, 1, -1)
    assert window_steps.steps_per_epoch == clip_steps == count.steps_per_epoch
    # every window packing made is trained on; the windows added (the fullest cut in two) fill the last
    # micro-batch of each step at most
    assert windows <= count.windows_per_epoch < windows + count.steps_per_epoch * choice.grad_accum * world
    assert count.clips_per_step == unpacked.effective_batch


def test_the_clip_count_says_windows_per_step_and_steps_per_epoch():
    _, count = count_in_clips(_training(batch_size=8, grad_accum=1), clips=200, windows=49, world_size=1)
    assert (count.steps_per_epoch, count.windows_per_step, count.windows_per_epoch) == (25, 2, 50)
    assert count.describe() == ("batch counted in clips: 8 clips per step, so 25 steps per epoch of 200 clips (as "
                                "unpacked); packed 4.1 clips per window on average: 2 windows per step, 50 windows "
                                "per epoch (packing laid out 49)")


def test_batch_unit_is_windows_or_clips():
    assert load_config(None).training.batch_unit == "clips"
    with pytest.raises(ConfigError, match="training.batch_unit.*windows or clips.*--batch-unit"):
        load_config(None, {"training.batch_unit": "frames"})
