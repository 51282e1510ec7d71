"""Fixtures shared by the JAX profile tests: the reference ReBRAC, small, built once per session."""

from __future__ import annotations

import pytest

from checks.jax_profile.targets import rebrac_target


@pytest.fixture(scope="session")
def small_rebrac():
    """The reference ReBRAC, small (compile and eager time dominate); policy_freq=1: eager warm-up on one branch."""
    return rebrac_target(updates_per_epoch=10, batch_size=64, config_overrides=dict(
        hidden_dim=32, actor_n_hiddens=1, critic_n_hiddens=1, policy_freq=1))
