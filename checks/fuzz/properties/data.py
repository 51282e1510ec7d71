"""Property of the data layer: episodes load into finite normalized transitions, or a DataError names the episode and
the field."""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from types import SimpleNamespace

import numpy as np
import torch

from checks.fuzz.strategies.episodes import DataCase
from checks.fuzz.violations import fail
from pogo_audit.runtime.data import ReplayBuffer, Transitions, episodes_to_raw, preprocess, qlearning_dataset
from pogo_audit.runtime.errors import DataError


def _transition_count(episodes_: Sequence[SimpleNamespace]) -> int:
    """CORL's rule, counted independently: rows 0..N-2 of the flat layout that are not timeouts."""
    flags = [np.asarray(ep.truncations).astype(bool) for ep in episodes_ if len(ep.rewards)]
    if not flags:
        return 0
    timeouts = np.concatenate(flags)
    return int((~timeouts[:-1]).sum())


def _check_data_error(case: DataCase, message: str) -> None:
    """A DataError is legitimate for this case and names what it must name."""
    named = any(f"'{f}'" in message for f in case.fields)
    if case.must_fail:
        if case.episode is not None and not re.search(rf"\bepisode {case.episode}\b", message):
            fail(f"{case.mutation}: DataError does not name episode {case.episode}: {message}")
        if not named:
            fail(f"{case.mutation}: DataError does not name field {' or '.join(case.fields)}: {message}")
        return
    empty = _transition_count(case.episodes) == 0 and ("no steps" in message or "no transitions" in message)
    if not (empty or named):
        fail(f"{case.mutation}: data rejected without naming {' or '.join(case.fields) or 'an emptiness'}: {message}")


def check_data_layer(case: DataCase) -> None:
    """Episodes load into finite normalized transitions, or DataError names the episode and the field."""
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            raw = episodes_to_raw(case.episodes)
            q = qlearning_dataset(raw)
            t = Transitions(dataset_id="fuzz", **q)
            processed, pre = preprocess(t, True)
    except DataError as err:
        _check_data_error(case, str(err))
        return
    if case.must_fail:
        fail(f"{case.mutation}: episode {case.episode} field {'/'.join(case.fields)} loaded without a DataError")
    n = _transition_count(case.episodes)
    if len(processed["observations"]) != n:
        fail(f"{len(processed['observations'])} transitions, expected {n}")
    for key in ("observations", "next_observations", "actions", "rewards"):
        arr = processed[key]
        if arr.dtype != np.float32 or not np.all(np.isfinite(arr)):
            fail(f"{key}: dtype {arr.dtype} or non-finite values after preprocessing")
    if not (np.all(np.isfinite(pre.state_mean)) and np.all(np.isfinite(pre.state_std)) and np.all(pre.state_std > 0)):
        fail(f"normalization statistics not finite/positive: mean {pre.state_mean}, std {pre.state_std}")
    batch = ReplayBuffer(processed, 0).sample(4)
    if not all(bool(torch.isfinite(b).all()) for b in batch):
        fail("replay buffer sampled non-finite values")
