"""Data layer on Minari: local datasets → CORL transitions, CORL preprocessing, a seeded replay buffer.

* Datasets are Minari datasets found under ``MINARI_DATASETS_PATH`` (Minari's own default otherwise). Nothing is
  ever downloaded.
* Episodes become transitions exactly as ``d4rl.qlearning_dataset`` builds them for CORL (§1.2 of the CORL spec):
  the episodes are laid out as D4RL's flat arrays, timeout (truncation) transitions are dropped, ``done`` marks only
  true terminations, and the last raw row is never used.
* The embedded default dataset (``pogo/hopper-noisy-v0``) is collected locally with ``minari.DataCollector`` on
  gymnasium ``Hopper-v5`` with a seeded noisy policy and cached on first use.
* The replay buffer samples with its own ``numpy.random.Generator``; it never touches a global RNG.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pogo_audit.runtime.errors import DataError, InputError
from pogo_audit.runtime.io import atomic_save_npz, atomic_write_json, load_json, load_npz

DEFAULT_DATASET_ID = "pogo/hopper-noisy-v0"
DEFAULT_ENV_ID = "Hopper-v5"
DEFAULT_STEPS = 20_000
DEFAULT_SEED = 0
STATE_NORM_EPS = 1e-3

# D4RL reference returns (random, expert) used for the normalized score; keyed by task family.
REFERENCE_SCORES: dict[str, tuple[float, float]] = {
    "hopper": (-20.272305, 3234.3),
    "halfcheetah": (-280.178953, 12135.0),
    "walker2d": (1.629008, 4592.3),
    "ant": (-325.6, 3879.7),
}
LOCOMOTION_FAMILIES = ("halfcheetah", "hopper", "walker2d")


def datasets_root() -> Path:
    """Where Minari looks for local datasets (``MINARI_DATASETS_PATH`` or ``~/.minari/datasets``)."""
    env = os.environ.get("MINARI_DATASETS_PATH")
    return Path(env) if env else Path.home() / ".minari" / "datasets"


def task_family(name: str) -> str | None:
    """``hopper``/``halfcheetah``/``walker2d``/``ant``/``antmaze`` from a dataset or env id, else None."""
    low = name.lower().replace("_", "").replace("-", "")
    for fam in ("antmaze", "halfcheetah", "hopper", "walker2d"):
        if fam in low:
            return fam
    return "ant" if "ant" in low.split("/")[-1] else None


# ------------------------------------------------------------------------------------------------- transitions


@dataclass
class Transitions:
    """CORL's transition layout (``d4rl.qlearning_dataset`` output) plus where it came from."""

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    next_observations: np.ndarray
    terminals: np.ndarray
    next_actions: np.ndarray
    dataset_id: str = ""
    env_id: str = ""
    info: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.observations.shape[0])

    @property
    def state_dim(self) -> int:
        return int(self.observations.shape[1])

    @property
    def action_dim(self) -> int:
        return int(self.actions.shape[1])

    def as_d4rl(self) -> dict[str, np.ndarray]:
        return {
            "observations": self.observations,
            "actions": self.actions,
            "rewards": self.rewards,
            "next_observations": self.next_observations,
            "terminals": self.terminals,
            "next_actions": self.next_actions,
        }


_MISSING = object()


def _episode_array(ep: Any, name: str, ep_id: Any) -> np.ndarray:
    value = getattr(ep, name, _MISSING)
    if value is _MISSING:
        raise DataError(f"episode {ep_id}, field '{name}': missing")
    try:
        arr = np.asarray(value)
    except (TypeError, ValueError) as exc:
        raise DataError(f"episode {ep_id}, field '{name}': cannot be read as an array ({exc})") from None
    if arr.dtype.kind not in "biuf":  # bool, int, uint, float; not complex, datetime, object, str
        raise DataError(f"episode {ep_id}, field '{name}': dtype {arr.dtype} is not numeric (real-valued)")
    return arr


def episodes_to_raw(episodes: Iterable[Any]) -> dict[str, np.ndarray]:
    """Lay episodes out as D4RL's flat arrays (one row per environment step), validating every field.

    Each episode needs ``observations`` [T+1, S], ``actions`` [T, A], ``rewards`` [T], ``terminations`` [T] and
    ``truncations`` [T]. Zero-length episodes contribute nothing.
    """
    obs_rows, act_rows, rew_rows, term_rows, tout_rows = [], [], [], [], []
    state_dim = action_dim = None
    for ep in episodes:
        ep_id = getattr(ep, "id", "?")
        obs = _episode_array(ep, "observations", ep_id)
        act = _episode_array(ep, "actions", ep_id)
        rew = _episode_array(ep, "rewards", ep_id)
        term = _episode_array(ep, "terminations", ep_id)
        trunc = _episode_array(ep, "truncations", ep_id)
        if obs.ndim != 2 or obs.shape[1] == 0:
            raise DataError(f"episode {ep_id}, field 'observations': expected a [T+1, state_dim] array with "
                            f"state_dim >= 1, got shape {list(obs.shape)}")
        if act.ndim != 2 or act.shape[1] == 0:
            raise DataError(f"episode {ep_id}, field 'actions': expected a [T, action_dim] array with "
                            f"action_dim >= 1, got shape {list(act.shape)}")
        steps = act.shape[0]
        if obs.shape[0] != steps + 1:
            raise DataError(f"episode {ep_id}, field 'observations': {obs.shape[0]} rows for {steps} actions "
                            f"(expected {steps + 1})")
        for name, arr in (("rewards", rew), ("terminations", term), ("truncations", trunc)):
            if arr.shape != (steps,):
                raise DataError(f"episode {ep_id}, field '{name}': shape {list(arr.shape)}, expected [{steps}]")
        for name, arr in (("observations", obs), ("actions", act), ("rewards", rew)):
            if not np.all(np.isfinite(arr)):
                bad = int(np.argwhere(~np.isfinite(arr))[0][0])
                raise DataError(f"episode {ep_id}, field '{name}': non-finite value at step {bad}")
            with np.errstate(over="ignore"):
                as_float32 = arr.astype(np.float32)
            if not np.all(np.isfinite(as_float32)):
                bad = int(np.argwhere(~np.isfinite(as_float32))[0][0])
                raise DataError(f"episode {ep_id}, field '{name}': value at step {bad} is outside the float32 range")
        for name, arr in (("terminations", term), ("truncations", trunc)):
            flag = (arr == 0) | (arr == 1)
            if not np.all(flag):
                bad = int(np.argwhere(~flag)[0][0])
                raise DataError(f"episode {ep_id}, field '{name}': value {arr[bad]!r} at step {bad} is not a 0/1 flag")
        if state_dim is None:
            state_dim, action_dim = obs.shape[1], act.shape[1]
        elif (obs.shape[1], act.shape[1]) != (state_dim, action_dim):
            raise DataError(f"episode {ep_id}, field 'observations'/'actions': dims {obs.shape[1]}/{act.shape[1]} "
                            f"differ from earlier episodes ({state_dim}/{action_dim})")
        if steps == 0:
            continue
        obs_rows.append(obs[:-1].astype(np.float32))
        act_rows.append(act.astype(np.float32))
        rew_rows.append(rew.astype(np.float32))
        term_rows.append(term.astype(bool))
        tout_rows.append(trunc.astype(bool))
    if not obs_rows:
        raise DataError("dataset has no steps: every episode is empty")
    return {
        "observations": np.concatenate(obs_rows),
        "actions": np.concatenate(act_rows),
        "rewards": np.concatenate(rew_rows),
        "terminals": np.concatenate(term_rows),
        "timeouts": np.concatenate(tout_rows),
    }


def qlearning_dataset(raw: Mapping[str, np.ndarray], max_episode_steps: int = 1000) -> dict[str, np.ndarray]:
    """``d4rl.qlearning_dataset`` semantics on D4RL-layout arrays (plus ReBRAC's ``next_actions``).

    Rows ``i = 0 … N-2``; a timeout row is skipped; ``done`` is the terminal flag; next observation/action are row
    ``i+1``. Without a ``timeouts`` field, an episode ends after ``max_episode_steps`` steps.
    """
    n = raw["rewards"].shape[0]
    has_timeouts = "timeouts" in raw
    keep = np.zeros(max(n - 1, 0), dtype=bool)
    episode_step = 0
    terminals = raw["terminals"]
    timeouts = raw["timeouts"] if has_timeouts else None
    for i in range(n - 1):
        done = bool(terminals[i])
        final = bool(timeouts[i]) if has_timeouts else episode_step == max_episode_steps - 1
        if final:
            episode_step = 0
            continue
        if done:
            episode_step = 0
        keep[i] = True
        episode_step += 1
    idx = np.flatnonzero(keep)
    obs = raw["observations"]
    act = raw["actions"]
    return {
        "observations": obs[idx].astype(np.float32),
        "actions": act[idx].astype(np.float32),
        "next_observations": obs[idx + 1].astype(np.float32),
        "rewards": raw["rewards"][idx].astype(np.float32),
        "terminals": terminals[idx].astype(bool),
        "next_actions": act[idx + 1].astype(np.float32),
    }


# ----------------------------------------------------------------------------------------------- preprocessing


def compute_mean_std(states: np.ndarray, eps: float = STATE_NORM_EPS) -> tuple[np.ndarray, np.ndarray]:
    """CORL: ``mean = states.mean(0)``, ``std = states.std(0) + eps`` (population std, float32)."""
    states = np.asarray(states, dtype=np.float32)
    return states.mean(0), states.std(0) + eps


def normalize_states(states: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    return (states - mean) / std


def return_reward_range(rewards: np.ndarray, terminals: np.ndarray, max_episode_steps: int = 1000):
    """CORL's return windows over the *filtered* transitions: close on terminal or every ``max_episode_steps``."""
    returns = []
    ep_ret, ep_len = 0.0, 0
    for r, d in zip(rewards, terminals):
        ep_ret += float(r)
        ep_len += 1
        if d or ep_len == max_episode_steps:
            returns.append(ep_ret)
            ep_ret, ep_len = 0.0, 0
    if not returns:
        raise DataError("reward normalization needs at least one complete return window (terminal or "
                        f"{max_episode_steps} steps); the dataset has none")
    return min(returns), max(returns)


def _rescale_locomotion(data: dict[str, np.ndarray], env_name: str, max_episode_steps: int) -> None:
    """``r <- r / (max_ret - min_ret) * max_episode_steps`` in place, CORL's locomotion rule."""
    min_ret, max_ret = return_reward_range(data["rewards"], data["terminals"], max_episode_steps)
    if max_ret == min_ret:
        raise DataError(f"reward normalization: every return window of {env_name!r} has the same return "
                        f"({max_ret}); max - min would divide by zero")
    data["rewards"] /= max_ret - min_ret
    data["rewards"] *= max_episode_steps


def modify_reward(data: dict[str, np.ndarray], env_name: str, max_episode_steps: int = 1000) -> None:
    """IQL/TD3+BC/AWAC/SAC-N/EDAC rule, in place: locomotion → ×1000/(max−min return); antmaze → r − 1."""
    family = task_family(env_name)
    if family in LOCOMOTION_FAMILIES:
        _rescale_locomotion(data, env_name, max_episode_steps)
    elif family == "antmaze":
        data["rewards"] -= 1.0


def modify_reward_cql(data: dict[str, np.ndarray], env_name: str, reward_scale: float, reward_bias: float,
                      max_episode_steps: int = 1000) -> None:
    """CQL's rule: the locomotion rescaling (no antmaze branch), then ``r * scale + bias`` for every env."""
    if task_family(env_name) in LOCOMOTION_FAMILIES:
        _rescale_locomotion(data, env_name, max_episode_steps)
    data["rewards"] = data["rewards"] * reward_scale + reward_bias


def modify_reward_rebrac(data: dict[str, np.ndarray], env_name: str) -> None:
    """ReBRAC's rule: antmaze rewards × 100; CORL raises for every other dataset."""
    if task_family(env_name) != "antmaze":
        raise DataError(f"normalize_reward: ReBRAC defines reward normalization only for antmaze, not {env_name!r}")
    data["rewards"] = data["rewards"] * 100.0


# ------------------------------------------------------------------------------------------------------ Minari


def _minari():
    import minari

    return minari


def local_dataset_path(dataset_id: str) -> Path:
    return datasets_root() / dataset_id


def dataset_exists(dataset_id: str) -> bool:
    return (local_dataset_path(dataset_id) / "data").is_dir()


def missing_dataset_error(dataset_id: str) -> InputError:
    hint = ("pogo-audit datasets make" if dataset_id == DEFAULT_DATASET_ID
            else f"pogo-audit datasets make --id {dataset_id} --env <EnvId>")
    return InputError(f"dataset {dataset_id!r} not found under {datasets_root()} (MINARI_DATASETS_PATH); "
                      f"create it with: {hint}")


def open_minari(dataset_id: str, create_default: bool = True):
    """Open a local Minari dataset by id; the embedded default is created on first use. Never downloads."""
    if not dataset_exists(dataset_id):
        if dataset_id == DEFAULT_DATASET_ID and create_default:
            make_dataset()
        else:
            raise missing_dataset_error(dataset_id)
    minari = _minari()
    try:
        return minari.load_dataset(dataset_id, download=False)
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise InputError(f"dataset {dataset_id!r} at {local_dataset_path(dataset_id)} cannot be read "
                         f"({type(exc).__name__}: {exc}); recreate it") from None


#: the conversion of Minari episodes into transitions, versioned: a change makes every cached conversion stale
TRANSITIONS_VERSION = 1
_ARRAYS = ("observations", "actions", "rewards", "next_observations", "terminals", "next_actions")


def cache_root() -> Path:
    """pogo-audit's cache (``$XDG_CACHE_HOME/pogo-audit``, else ``~/.cache/pogo-audit``)."""
    env = os.environ.get("XDG_CACHE_HOME")
    return (Path(env) if env else Path.home() / ".cache") / "pogo-audit"


def _converted_path(dataset_id: str) -> Path:
    """Where the conversion of ``dataset_id`` as its files are now is kept: named by a hash of the conversion's
    version, the dataset's id and path, and each of its files' path, size and modification time (a rewritten
    dataset is converted again)."""
    root = local_dataset_path(dataset_id)
    files = sorted(p for p in root.rglob("*") if p.is_file())
    state = [TRANSITIONS_VERSION, dataset_id, str(root.resolve())] + [
        [str(p.relative_to(root)), st.st_size, st.st_mtime_ns] for p in files for st in [p.stat()]]
    key = hashlib.sha256(json.dumps(state).encode()).hexdigest()[:32]
    return cache_root() / "transitions" / key


def _load_converted(dataset_id: str) -> tuple[Transitions, float] | None:
    """The cached conversion of ``dataset_id`` and its env's ``max_action`` (None when there is none)."""
    base = _converted_path(dataset_id)
    npz, meta = base.with_suffix(".npz"), base.with_suffix(".json")
    if not (npz.is_file() and meta.is_file()):
        return None
    try:
        arrays, info = load_npz(npz), load_json(meta)
    except InputError:  # a damaged cache file: convert again (and overwrite it)
        return None
    transitions = Transitions(*(arrays[k] for k in _ARRAYS), dataset_id=dataset_id, env_id=info["env_id"],
                              info=info["info"])
    return transitions, float(info["max_action"])


def _save_converted(dataset_id: str, transitions: Transitions, max_action: float) -> None:
    base = _converted_path(dataset_id)
    try:
        base.parent.mkdir(parents=True, exist_ok=True)
        atomic_save_npz(base.with_suffix(".npz"), {k: getattr(transitions, k) for k in _ARRAYS})
        atomic_write_json(base.with_suffix(".json"), {"env_id": transitions.env_id, "info": transitions.info,
                                                      "max_action": max_action})
    except OSError:  # a read-only cache costs the next run the conversion, nothing else
        return


def _converted(dataset_id: str, create_default: bool) -> tuple[Transitions, float]:
    """The dataset's transitions and its env's ``max_action``: read from Minari once per version of its files,
    then from the cache (the same arrays, bitwise; Minari and gymnasium are not even imported)."""
    if not dataset_exists(dataset_id) and dataset_id == DEFAULT_DATASET_ID and create_default:
        make_dataset()
    if dataset_exists(dataset_id):
        cached = _load_converted(dataset_id)
        if cached is not None:
            return cached
    ds = open_minari(dataset_id, create_default)
    transitions = _minari_transitions(ds, dataset_id)
    max_action = float(np.asarray(ds.action_space.high).reshape(-1)[0])
    _save_converted(dataset_id, transitions, max_action)
    return transitions, max_action


def load_transitions(dataset_id: str = DEFAULT_DATASET_ID, create_default: bool = True) -> Transitions:
    """Minari dataset → CORL transitions (timeouts dropped, terminals only as ``done``)."""
    return _converted(dataset_id, create_default)[0]


def _minari_transitions(ds: Any, dataset_id: str) -> Transitions:
    raw = episodes_to_raw(ds.iterate_episodes())
    q = qlearning_dataset(raw)
    if len(q["rewards"]) == 0:
        raise DataError(f"dataset {dataset_id!r}: no transitions left after dropping timeouts")
    spec = ds.spec.env_spec
    env_id = spec.id if spec is not None else ""
    meta = ds.storage.metadata
    info = {
        "episodes": int(ds.total_episodes),
        "raw_steps": int(raw["rewards"].shape[0]),
        "timeouts_dropped": int(raw["timeouts"][:-1].sum()),
        "terminals": int(q["terminals"].sum()),
        "ref_min_score": meta.get("ref_min_score"),
        "ref_max_score": meta.get("ref_max_score"),
    }
    return Transitions(q["observations"], q["actions"], q["rewards"], q["next_observations"], q["terminals"],
                       q["next_actions"], dataset_id=dataset_id, env_id=env_id, info=info)


def recover_env(dataset_id: str):
    """The gymnasium evaluation env recorded in the dataset."""
    return open_minari(dataset_id).recover_environment(eval_env=True)


def list_datasets() -> list[dict[str, Any]]:
    """Local datasets with episodes, steps and env id."""
    minari = _minari()
    root = datasets_root()
    if not root.is_dir():
        return []
    rows = []
    for dataset_id, meta in minari.list_local_datasets().items():
        env_spec = meta.get("env_spec")
        env_id = ""
        if isinstance(env_spec, str) and '"id"' in env_spec:
            import json

            env_id = json.loads(env_spec).get("id", "")
        rows.append({"id": dataset_id, "episodes": meta.get("total_episodes"), "steps": meta.get("total_steps"),
                     "env": env_id, "path": str(root / dataset_id)})
    return rows


class NoisyHopperPolicy:
    """Seeded behaviour policy: cycles uniform-random episodes and noisy PD control toward a standing pose."""

    CYCLE = ("uniform", 0.5, "uniform", 0.5, 0.3)

    def __init__(self, action_space: Any, rng: np.random.Generator):
        self.low = action_space.low
        self.high = action_space.high
        self.rng = rng
        self.mode: str | float = "uniform"

    def start_episode(self, episode: int) -> None:
        self.mode = self.CYCLE[episode % len(self.CYCLE)]

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        dim = self.low.shape[0]
        if self.mode == "uniform":
            return self.rng.uniform(self.low, self.high).astype(np.float32)
        n_joint = dim
        qpos = obs[2:2 + n_joint] if obs.shape[0] >= 2 + n_joint else np.zeros(n_joint)
        qvel = obs[-n_joint:]
        action = -1.5 * qpos - 0.2 * qvel + float(self.mode) * self.rng.standard_normal(dim)
        return np.clip(action, self.low, self.high).astype(np.float32)


def make_dataset(dataset_id: str = DEFAULT_DATASET_ID, env_id: str = DEFAULT_ENV_ID, steps: int = DEFAULT_STEPS,
                 seed: int = DEFAULT_SEED, overwrite: bool = False) -> Path:
    """Collect ``steps`` environment steps with the seeded noisy policy into a local Minari dataset.

    Collection happens in a temporary datasets root beside the target; the finished dataset directory is then
    renamed into place, so an interrupted run never leaves a half-written dataset.
    """
    if steps < 2:
        raise InputError(f"--steps: need at least 2 steps, got {steps}")
    import gymnasium as gym

    minari = _minari()
    root = datasets_root()
    root.mkdir(parents=True, exist_ok=True)
    target = root / dataset_id
    if (target / "data").is_dir() and not overwrite:
        return target
    try:
        env = gym.make(env_id)
    except gym.error.Error as exc:
        raise InputError(f"--env: cannot create gymnasium env {env_id!r} ({exc})") from None
    family = task_family(env_id)
    ref = REFERENCE_SCORES.get(family or "")
    tmp_root = Path(tempfile.mkdtemp(prefix=".pogo-make-", dir=root))
    old = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(tmp_root)
    try:
        collector = minari.DataCollector(env)
        rng = np.random.default_rng(seed)
        policy = NoisyHopperPolicy(env.action_space, rng)
        obs, _ = collector.reset(seed=seed)
        episode, done_steps = 0, 0
        policy.start_episode(episode)
        while done_steps < steps:
            obs, _, terminated, truncated, _ = collector.step(policy(obs))
            done_steps += 1
            if terminated or truncated:
                episode += 1
                policy.start_episode(episode)
                # explicit per-episode seeds: DataCollector would otherwise draw a fresh OS-random seed
                obs, _ = collector.reset(seed=seed * 1_000_003 + episode)
        kwargs: dict[str, Any] = {}
        if ref is not None:
            kwargs = {"ref_min_score": ref[0], "ref_max_score": ref[1], "eval_env": env_id}
        collector.create_dataset(
            dataset_id=dataset_id,
            algorithm_name="pogo-audit noisy PD + uniform (seeded)",
            author="pogo-audit",
            author_email="pogo-audit@localhost",
            code_permalink="pogo_audit/data.py",
            description=f"{steps} steps of {env_id} from a seeded (seed={seed}) mixture of uniform-random and noisy "
                        "PD-control episodes; embedded default dataset of pogo-audit.",
            **kwargs,
        )
        collector.close()
        if old is None:
            del os.environ["MINARI_DATASETS_PATH"]
        else:
            os.environ["MINARI_DATASETS_PATH"] = old
        if target.exists():
            shutil.rmtree(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        for meta_file in (tmp_root / dataset_id).parent.glob("namespace_metadata.json"):
            dest = target.parent / meta_file.name
            if not dest.exists():
                shutil.copy2(meta_file, dest)
        os.replace(tmp_root / dataset_id, target)
    finally:
        if os.environ.get("MINARI_DATASETS_PATH") == str(tmp_root):
            if old is None:
                del os.environ["MINARI_DATASETS_PATH"]
            else:
                os.environ["MINARI_DATASETS_PATH"] = old
        shutil.rmtree(tmp_root, ignore_errors=True)
    return target


# ------------------------------------------------------------------------------------------------ replay buffer


@dataclass
class Preprocessing:
    """What was applied to a dataset before it went into a buffer (kept for evaluation-time observation wrap)."""

    state_mean: np.ndarray
    state_std: np.ndarray
    reward_rule: str = "none"


def preprocess(data: Transitions, normalize_states_flag: bool, reward_rule: str = "none",
               **reward_kwargs: float) -> tuple[dict[str, np.ndarray], Preprocessing]:
    """CORL preprocessing on a copy: optional reward rule (``corl``/``cql``/``rebrac``), optional state norm."""
    if len(data) == 0:
        raise DataError(f"dataset {data.dataset_id!r}: no transitions to preprocess")
    d = {k: v.copy() for k, v in data.as_d4rl().items()}
    name = f"{data.dataset_id} {data.env_id}"
    if reward_rule == "corl":
        modify_reward(d, name)
    elif reward_rule == "cql":
        modify_reward_cql(d, name, reward_kwargs.get("reward_scale", 1.0), reward_kwargs.get("reward_bias", 0.0))
    elif reward_rule == "rebrac":
        modify_reward_rebrac(d, name)
    elif reward_rule != "none":
        raise ValueError(f"unknown reward rule {reward_rule!r}")
    with np.errstate(over="ignore", invalid="ignore"):  # overflow is detected and reported below
        if normalize_states_flag:
            mean, std = compute_mean_std(d["observations"], STATE_NORM_EPS)
        else:
            mean = np.zeros(data.state_dim, dtype=np.float32)
            std = np.ones(data.state_dim, dtype=np.float32)
        if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(std))):
            raise DataError(f"dataset {data.dataset_id!r}, field 'observations': state mean/std overflow float32 "
                            "(feature values too large to normalize)")
        d["observations"] = normalize_states(d["observations"], mean, std).astype(np.float32)
        d["next_observations"] = normalize_states(d["next_observations"], mean, std).astype(np.float32)
    for key in ("observations", "next_observations", "rewards"):
        if not np.all(np.isfinite(d[key])):
            raise DataError(f"dataset {data.dataset_id!r}, field '{key}': preprocessing produced non-finite values")
    return d, Preprocessing(mean, std, reward_rule)


class ReplayBuffer:
    """Fixed offline buffer in CORL's tensor layout that samples with its own seeded generator.

    ``sample`` returns ``[states, actions, rewards [B,1], next_states, dones [B,1]]`` as float32 torch tensors, like
    CORL's buffer, but the indices come from ``numpy.random.Generator(PCG64(seed))`` — never from ``np.random``.
    """

    def __init__(self, data: Mapping[str, np.ndarray], seed: int):
        import torch

        self.size = int(data["observations"].shape[0])
        if self.size == 0:
            raise DataError("replay buffer: the dataset has no transitions")
        self._states = torch.as_tensor(np.asarray(data["observations"], dtype=np.float32))
        self._actions = torch.as_tensor(np.asarray(data["actions"], dtype=np.float32))
        self._rewards = torch.as_tensor(np.asarray(data["rewards"], dtype=np.float32)[:, None])
        self._next_states = torch.as_tensor(np.asarray(data["next_observations"], dtype=np.float32))
        self._dones = torch.as_tensor(np.asarray(data["terminals"], dtype=np.float32)[:, None])
        self.rng = np.random.default_rng(seed)

    def sample_indices(self, batch_size: int) -> np.ndarray:
        return self.rng.integers(0, self.size, size=batch_size)

    def batch_at(self, indices: np.ndarray) -> list:
        return [self._states[indices], self._actions[indices], self._rewards[indices], self._next_states[indices],
                self._dones[indices]]

    def sample(self, batch_size: int) -> list:
        return self.batch_at(self.sample_indices(batch_size))

    def get_state(self) -> dict[str, Any]:
        """JSON-able generator state (for checkpoints)."""
        return self.rng.bit_generator.state

    def set_state(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state


# ------------------------------------------------------------------------------------------------ dataset spec


@dataclass(frozen=True)
class DatasetSpec:
    """What a trainer factory needs to know about the dataset (the ``dataset_spec`` of the Trainer protocol)."""

    dataset_id: str
    env_id: str
    state_dim: int
    action_dim: int
    max_action: float
    ref_min_score: float | None = None
    ref_max_score: float | None = None
    state_mean: tuple[float, ...] | None = None
    state_std: tuple[float, ...] | None = None

    @classmethod
    def from_transitions(cls, t: Transitions, max_action: float, state_mean: np.ndarray | None = None,
                         state_std: np.ndarray | None = None) -> DatasetSpec:
        as_tuple = (lambda a: None if a is None else tuple(float(x) for x in np.asarray(a).ravel()))
        return cls(t.dataset_id, t.env_id, t.state_dim, t.action_dim, float(max_action),
                   t.info.get("ref_min_score"), t.info.get("ref_max_score"), as_tuple(state_mean),
                   as_tuple(state_std))


def env_max_action(dataset_id: str) -> float:
    """``action_space.high[0]`` of the dataset's env (CORL's ``max_action``)."""
    return _converted(dataset_id, True)[1]
