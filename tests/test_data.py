"""Data layer: Minari episodes → CORL transitions, preprocessing, seeded buffer, embedded dataset."""

from __future__ import annotations

import os
from types import SimpleNamespace

import numpy as np
import pytest

from pogo_audit.runtime import data
from pogo_audit.runtime.errors import DataError, InputError


def episode(ep_id, length, state_dim=3, action_dim=2, terminated=False, truncated=False, offset=0.0):
    obs = np.arange((length + 1) * state_dim, dtype=np.float32).reshape(length + 1, state_dim) + offset
    act = (np.full((length, action_dim), ep_id) + np.arange(length)[:, None] / 100).astype(np.float32)
    rew = np.arange(length, dtype=np.float32) + 100 * ep_id
    term = np.zeros(length, dtype=bool)
    trunc = np.zeros(length, dtype=bool)
    if length:
        term[-1] = terminated
        trunc[-1] = truncated
    return SimpleNamespace(id=ep_id, observations=obs, actions=act, rewards=rew, terminations=term,
                           truncations=trunc)


def test_terminal_kept_timeout_dropped_last_row_unused():
    eps = [episode(0, 3, terminated=True), episode(1, 4, truncated=True, offset=1000), episode(2, 2, offset=2000)]
    raw = data.episodes_to_raw(eps)
    assert raw["observations"].shape == (9, 3)
    q = data.qlearning_dataset(raw)
    # ep0: 3 transitions (last terminal); ep1: 4 steps minus the timeout step; ep2: 2 steps minus the last raw row
    assert q["rewards"].tolist() == [0, 1, 2, 100, 101, 102, 200]
    assert q["terminals"].tolist() == [False, False, True, False, False, False, False]
    # a terminal transition's next observation is the next raw row (reset obs of the next episode), masked by done
    np.testing.assert_array_equal(q["next_observations"][2], eps[1].observations[0])
    np.testing.assert_array_equal(q["next_observations"][0], eps[0].observations[1])
    np.testing.assert_array_equal(q["next_actions"][3], eps[1].actions[1])
    assert q["observations"].dtype == np.float32 and q["terminals"].dtype == bool


def test_without_timeouts_episodes_end_after_max_steps():
    raw = {"observations": np.zeros((7, 2), np.float32), "actions": np.zeros((7, 1), np.float32),
           "rewards": np.arange(7, dtype=np.float32), "terminals": np.zeros(7, bool)}
    q = data.qlearning_dataset(raw, max_episode_steps=3)
    assert q["rewards"].tolist() == [0, 1, 3, 4]


@pytest.mark.parametrize("field,value,match", [
    ("observations", np.full((4, 3), np.nan, np.float32), "episode 7, field 'observations': non-finite"),
    ("rewards", np.array([0, np.inf, 0], np.float32), "episode 7, field 'rewards': non-finite value at step 1"),
    ("actions", np.zeros((3, 2, 1), np.float32), "episode 7, field 'actions': expected"),
    ("observations", np.zeros((3, 3), np.float32), "episode 7, field 'observations': 3 rows for 3 actions"),
    ("rewards", np.array(["a", "b", "c"]), "episode 7, field 'rewards': dtype"),
    ("terminations", np.zeros(2, bool), "episode 7, field 'terminations': shape"),
])
def test_bad_episode_raises_clear_data_error(field, value, match):
    ep = episode(7, 3)
    setattr(ep, field, value)
    with pytest.raises(DataError, match=match):
        data.episodes_to_raw([episode(0, 2), ep])


def test_zero_length_episodes_are_skipped_but_all_empty_is_an_error():
    raw = data.episodes_to_raw([episode(0, 0), episode(1, 3, terminated=True)])
    assert raw["rewards"].shape == (3,)
    with pytest.raises(DataError, match="no steps"):
        data.episodes_to_raw([episode(0, 0)])


def test_state_normalization_matches_corl():
    rng = np.random.default_rng(0)
    obs = rng.normal(3, 2, size=(500, 4)).astype(np.float32)
    obs[:, 2] = 5.0  # constant feature: std 0 + eps, no NaN
    mean, std = data.compute_mean_std(obs)
    np.testing.assert_array_equal(mean, obs.mean(0))
    np.testing.assert_array_equal(std, obs.std(0) + 1e-3)
    assert std[2] == np.float32(1e-3)
    normed = data.normalize_states(obs, mean, std)
    assert np.all(np.isfinite(normed))


def test_return_reward_range_uses_corl_windows():
    rewards = np.ones(2500, np.float32)
    terminals = np.zeros(2500, bool)
    terminals[99] = True
    # windows: 100 (terminal), then 1000, 1000; the trailing 400 is not a window
    assert data.return_reward_range(rewards, terminals) == (100.0, 1000.0)


def _rewards(values, terminal_at):
    terminals = np.zeros(len(values), bool)
    terminals[list(terminal_at)] = True
    return {"rewards": np.array(values, np.float32), "terminals": terminals}


def test_locomotion_rule_rescales_by_return_range():
    d = _rewards([1.0, 2.0, 4.0, 1.0], terminal_at=(1, 3))  # windows: 3 and 5
    data.modify_reward(d, "Hopper-v5")
    np.testing.assert_allclose(d["rewards"], np.array([1, 2, 4, 1]) / (5 - 3) * 1000, rtol=1e-6)


def test_locomotion_rule_refuses_a_zero_return_range():
    with pytest.raises(DataError, match="divide by zero"):
        data.modify_reward(_rewards([1.0, 2.0, 3.0], terminal_at=(2,)), "walker2d-medium-v2")


def test_antmaze_and_other_families():
    ant = _rewards([1.0, 2.0], terminal_at=())
    data.modify_reward(ant, "antmaze-umaze-v2")
    assert ant["rewards"].tolist() == [0.0, 1.0]
    other = _rewards([1.0, 2.0], terminal_at=())
    data.modify_reward(other, "pen-human-v1")
    assert other["rewards"].tolist() == [1.0, 2.0]


def test_cql_rule_applies_scale_and_bias_to_every_env():
    d = _rewards([1.0, 2.0, 3.0], terminal_at=())
    data.modify_reward_cql(d, "pen-human-v1", reward_scale=5.0, reward_bias=-1.0)
    assert d["rewards"].tolist() == [4.0, 9.0, 14.0]


def test_rebrac_rule_only_for_antmaze():
    d = _rewards([1.0, 2.0], terminal_at=())
    data.modify_reward_rebrac(d, "antmaze-umaze-v2")
    assert d["rewards"].tolist() == [100.0, 200.0]
    with pytest.raises(DataError, match="antmaze"):
        data.modify_reward_rebrac(_rewards([1.0], terminal_at=()), "hopper-medium-v2")


def _buffer_data(n=1000):
    rng = np.random.default_rng(1)
    return {"observations": rng.normal(size=(n, 3)).astype(np.float32),
            "actions": rng.normal(size=(n, 2)).astype(np.float32),
            "rewards": rng.normal(size=n).astype(np.float32),
            "next_observations": rng.normal(size=(n, 3)).astype(np.float32),
            "terminals": rng.random(n) < 0.1}


def test_buffer_same_seed_same_batches_different_seed_different():
    d = _buffer_data()
    a, b, c = data.ReplayBuffer(d, 3), data.ReplayBuffer(d, 3), data.ReplayBuffer(d, 4)
    for _ in range(5):
        ba, bb, bc = a.sample(64), b.sample(64), c.sample(64)
        for x, y in zip(ba, bb):
            assert x.equal(y)
        assert not ba[0].equal(bc[0])
    assert ba[2].shape == (64, 1) and ba[4].shape == (64, 1)


def test_buffer_never_touches_global_rngs():
    import torch

    np.random.seed(0)
    torch.manual_seed(0)
    np_state = np.random.get_state()[1].copy()
    torch_state = torch.get_rng_state().clone()
    buf = data.ReplayBuffer(_buffer_data(), 0)
    buf.sample(256)
    assert np.array_equal(np.random.get_state()[1], np_state)
    assert torch.equal(torch.get_rng_state(), torch_state)


def test_buffer_state_round_trip_resumes_the_stream():
    d = _buffer_data()
    buf = data.ReplayBuffer(d, 9)
    buf.sample(10)
    state = buf.get_state()
    expected = buf.sample(10)[0]
    other = data.ReplayBuffer(d, 123)
    other.set_state(state)
    assert other.sample(10)[0].equal(expected)


def test_embedded_dataset_is_created_in_minari_path_and_loads(embedded_dataset, tmp_path):
    import os

    root = data.datasets_root()
    assert str(root) == os.environ["MINARI_DATASETS_PATH"]
    assert (root / embedded_dataset / "data").is_dir()
    t = data.load_transitions(embedded_dataset)
    assert t.env_id == "Hopper-v5"
    assert t.state_dim == 11 and t.action_dim == 3
    assert 19_000 < len(t) <= data.DEFAULT_STEPS
    assert t.info["raw_steps"] == data.DEFAULT_STEPS
    assert t.info["terminals"] == int(t.terminals.sum()) > 0
    assert not any(p.name.startswith(".pogo-make-") for p in root.iterdir())
    assert [r["id"] for r in data.list_datasets()] == [embedded_dataset]


def test_embedded_dataset_is_deterministic(tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "a"))
    data.make_dataset("pogo/tiny-v0", steps=300, seed=5)
    first = data.load_transitions("pogo/tiny-v0")
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "b"))
    data.make_dataset("pogo/tiny-v0", steps=300, seed=5)
    second = data.load_transitions("pogo/tiny-v0")
    for k, v in first.as_d4rl().items():
        np.testing.assert_array_equal(v, second.as_d4rl()[k])


def test_unknown_dataset_names_id_path_and_command(tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    with pytest.raises(InputError) as err:
        data.load_transitions("someone/unknown-v3")
    msg = str(err.value)
    assert "'someone/unknown-v3'" in msg and str(tmp_path) in msg and "pogo-audit datasets make" in msg


def test_a_converted_dataset_is_read_back_bitwise_until_its_files_change(tmp_path, monkeypatch):
    """The second load reads the cached conversion (Minari is not touched) with the same arrays and metadata; a
    dataset file rewritten since is converted again."""
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "datasets"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    data.make_dataset("pogo/tiny-v0", steps=300, seed=5)
    first, first_max = data.load_transitions("pogo/tiny-v0"), data.env_max_action("pogo/tiny-v0")
    assert len(list((tmp_path / "cache" / "pogo-audit" / "transitions").glob("*.npz"))) == 1

    def no_minari():
        raise AssertionError("Minari opened although the conversion is cached")

    monkeypatch.setattr(data, "_minari", no_minari)
    again = data.load_transitions("pogo/tiny-v0")
    assert data.env_max_action("pogo/tiny-v0") == first_max
    for k, v in first.as_d4rl().items():
        assert v.dtype == again.as_d4rl()[k].dtype
        np.testing.assert_array_equal(v, again.as_d4rl()[k])
    assert (again.env_id, again.info, again.dataset_id) == (first.env_id, first.info, first.dataset_id)

    some_file = next(p for p in data.local_dataset_path("pogo/tiny-v0").rglob("*") if p.is_file())
    os.utime(some_file, ns=(some_file.stat().st_atime_ns, some_file.stat().st_mtime_ns + 10**9))
    with pytest.raises(AssertionError, match="Minari opened"):
        data.load_transitions("pogo/tiny-v0")
