"""Test-only pieces that train.py loads by _target_ (tests/ is importable from the project folder)."""

from gan_lightning.losses import gan_discriminator_loss

calls = 0


def discriminator_loss_nan_at_call(real_logits, fake_logits, call: int):
    """The usual D loss, except that its call-th evaluation (1-based) is NaN: one planted NaN."""
    global calls
    calls += 1
    loss = gan_discriminator_loss(real_logits, fake_logits)
    return loss * float("nan") if calls == call else loss
