"""train/model.py: SpecAugment is transformers' own Whisper masking, on while training only."""

from __future__ import annotations

import pytest
import torch

from whisper_tune.pipeline.core.config import load_config
from whisper_tune.pipeline.core.errors import ConfigError
from whisper_tune.train.model import SpecAugment, prepare_model
from whisper_tune.testing import bundled_tokenizer, tiny_whisper


@pytest.fixture(scope="module")
def tokenizer():
    return bundled_tokenizer()


def _model(tokenizer, spec: SpecAugment, checkpoint_says: bool = False):
    net = tiny_whisper(tokenizer, config={"apply_spec_augment": checkpoint_says})
    return prepare_model(net, "tiny", tokenizer=tokenizer, gradient_checkpointing=False, spec_augment=spec)


def _encoder_inputs(net) -> list[torch.Tensor]:
    """What the encoder is given, call by call (SpecAugment masks before the encoder)."""
    seen: list[torch.Tensor] = []
    net.model.encoder.register_forward_pre_hook(lambda module, args, kwargs: seen.append(
        (args[0] if args else kwargs["input_features"]).detach().clone()), with_kwargs=True)
    return seen


def _features() -> torch.Tensor:
    return 0.5 + torch.rand(2, 80, 3000)          # no zeros: a masked frame or bin reads as 0 exactly


def test_spec_augment_masks_in_training_and_never_in_evaluation_or_generation(tokenizer):
    net = _model(tokenizer, SpecAugment(True, mask_time_prob=0.2, mask_feature_prob=0.2))
    assert net.config.apply_spec_augment and net.config.mask_time_prob == 0.2 and net.config.mask_feature_prob == 0.2
    seen = _encoder_inputs(net)
    x, labels = _features(), torch.tensor([[50257, 440, 50256]] * 2)
    torch.manual_seed(0)
    net.train()
    net(input_features=x.clone(), labels=labels)
    masked = seen[-1] == 0
    time_share = masked.all(dim=1).float().mean().item()        # frames zero in every bin
    bin_share = masked.all(dim=2).float().mean().item()         # bins zero in every frame
    assert 0.05 < time_share < 0.4 and 0.05 < bin_share < 0.4, (time_share, bin_share)
    net.eval()
    with torch.no_grad():
        net(input_features=x.clone(), labels=labels)
        assert torch.equal(seen[-1], x)
        net.generate(input_features=x.clone(), max_new_tokens=2)
        assert torch.equal(seen[-1], x)


def test_spec_augment_off_is_off_whatever_the_checkpoint_says(tokenizer):
    net = _model(tokenizer, SpecAugment(), checkpoint_says=True)
    assert net.config.apply_spec_augment is False
    seen = _encoder_inputs(net)
    x = _features()
    net.train()
    net(input_features=x.clone(), labels=torch.tensor([[50257, 440, 50256]] * 2))
    assert torch.equal(seen[-1], x)


def test_spec_augment_settings_are_checked_at_load():
    cfg = load_config(None, {"training.spec_augment": True})
    assert SpecAugment.of(cfg.training) == SpecAugment(True, 0.05, 0.0)
    assert SpecAugment.of(cfg.training).describe() == ("SpecAugment on while training: 0.05 of the frames and 0 of "
                                                       "the mel bins masked (evaluation unmasked)")
    assert load_config().training.spec_augment is False
    with pytest.raises(ConfigError, match=r"training.mask_time_prob = 1.5 is not allowed; expected a share in "
                                          r"\[0, 1\), e.g. 0.05 \(--mask-time-prob\)"):
        load_config(None, {"training.mask_time_prob": 1.5})
    with pytest.raises(ConfigError, match=r"training.mask_time_prob = 0.0 is not allowed; expected above 0 \(or "
                                          r"training.mask_feature_prob above 0\) while training.spec_augment is on"):
        load_config(None, {"training.spec_augment": True, "training.mask_time_prob": 0})


def test_train_turns_it_on_from_the_flags(tiny_model, work, planned_train):
    on = planned_train(work, tiny_model, "--spec-augment", "--mask-time-prob", "0.1", "--mask-feature-prob", "0.05")
    assert on.model.config.apply_spec_augment is True
    assert (on.model.config.mask_time_prob, on.model.config.mask_feature_prob) == (0.1, 0.05)
    assert planned_train(work, tiny_model).model.config.apply_spec_augment is False
