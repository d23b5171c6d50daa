"""Test-only losses for mixed precision that train.py loads by _target_ (see tests/planted.py)."""

from gan_lightning.losses import gan_discriminator_loss

calls = 0


def discriminator_loss_times_at_call(real_logits, fake_logits, call: int, factor: float):
    """The usual D loss, its call-th evaluation (1-based) multiplied by factor: with factor 1e4 the
    loss stays finite, but its fp16 gradients, times the loss scale, overflow (an ordinary fp16
    overflow, which the gradient scaler answers by skipping the step); factor nan is a divergence."""
    global calls
    calls += 1
    loss = gan_discriminator_loss(real_logits, fake_logits)
    return loss * factor if calls == call else loss
