"""POGO chains on top of IQL / TD3+BC / AWAC, in one file.

Policy chain: actor0 is trained exactly like the base algorithm's actor; actor i >= 1 minimises
the base actor objective ("energy") + w_i * W2^2(pi_i, pi_{i-1}), where pi_{i-1} is frozen as it
was at the start of the step.  W2 is closed-form for the Gaussian actors (IQL, AWAC),
||a_i - a_{i-1}||^2 for the deterministic TD3+BC actors.

Everything lives in a SimpleNamespace `S`; there is one `train_step(S, batch)` with a branch per
algorithm.  Networks come out of one `mlp()` helper.  Hyper-parameters follow CORL.

    S = setup("iql", obs_dim=17, act_dim=6, seed=0, w2=[1.0, 1.0])
    for batch in loader:                 # [s, a, r, s2, d], r and d as [B, 1]
        logs = train_step(S, batch)
    evaluate(S, env, seed=0, episodes=10, obs_mean=mu, obs_std=sd)   # old gym API (reset -> obs)
"""
import contextlib
import copy
import random
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.distributions import Normal
from torch.optim.lr_scheduler import CosineAnnealingLR

DEFAULTS = {
    "iql": dict(lr=3e-4, gamma=0.99, tau=0.005, beta=3.0, expectile=0.7, max_steps=1_000_000),
    "td3_bc": dict(lr=3e-4, gamma=0.99, tau=0.005, alpha=2.5, policy_noise=0.2, noise_clip=0.5, policy_freq=2),
    "awac": dict(lr=3e-4, gamma=0.99, tau=0.005, awac_lambda=1.0),
}
EXP_ADV_MAX = 100.0
CHAIN_SEED = 7919


def seed_all(seed, env=None):
    if env is not None:
        env.seed(seed)
    np.random.seed(seed)
    random.seed(seed)
    torch.manual_seed(seed)


@contextlib.contextmanager
def private_rng(seed):
    """Build things from their own torch seed without moving the global stream."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def mlp(sizes, act=nn.ReLU, out_act=None):
    layers = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(act())
    if out_act is not None:
        layers.append(out_act())
    return nn.Sequential(*layers)


class GaussActor(nn.Module):
    """N(mu(s), diag(std)), state-independent log-std (IQL / AWAC style)."""

    def __init__(self, mu_net, act_dim):
        super().__init__()
        self.mu = mu_net
        self.log_std = nn.Parameter(torch.zeros(act_dim))

    def forward(self, obs):
        return self.mu(obs), self.log_std.clamp(-20.0, 2.0).exp()


def new_actor(S):
    if S.algo == "td3_bc":
        return mlp([S.obs_dim, S.hidden, S.hidden, S.act_dim], out_act=nn.Tanh)
    if S.algo == "iql":
        return GaussActor(mlp([S.obs_dim, S.hidden, S.hidden, S.act_dim]), S.act_dim)
    return GaussActor(mlp([S.obs_dim] + [S.hidden] * 3 + [S.act_dim]), S.act_dim, max_log_std=2.0)


def make_critics(S):
    sa_dim = S.obs_dim + S.act_dim
    depth = 3 if S.algo == "awac" else 2
    S.q1 = mlp([sa_dim] + [S.hidden] * depth + [1])
    S.q2 = mlp([sa_dim] + [S.hidden] * depth + [1])
    S.q_opt = torch.optim.Adam([*S.q1.parameters(), *S.q2.parameters()], lr=S.lr)
    if S.algo == "iql":
        S.v = mlp([S.obs_dim] + [S.hidden] * depth + [1])
        S.v_opt = torch.optim.Adam(S.v.parameters(), lr=S.lr)
    S.q1_t = copy.deepcopy(S.q1).requires_grad_(False)
    S.q2_t = copy.deepcopy(S.q2).requires_grad_(False)


def setup(algo, obs_dim, act_dim, max_action=1.0, seed=0, w2=(1.0, 1.0), hidden=256, **overrides):
    hp = dict(DEFAULTS[algo])
    hp.update(overrides)
    S = SimpleNamespace(algo=algo, obs_dim=obs_dim, act_dim=act_dim, max_action=max_action, hidden=hidden,
                        w2=list(w2), it=0, **hp)
    seed_all(seed)
    critics_first = algo in ("iql", "awac")
    if critics_first:
        make_critics(S)
    S.actors = []
    for i in range(len(S.w2) + 1):
        with contextlib.nullcontext() if i == 0 else private_rng(seed + CHAIN_SEED * i):
            S.actors.append(new_actor(S))
    if not critics_first:
        make_critics(S)
    S.pi = S.actors[0]
    S.pi_opt = torch.optim.Adam(S.pi.parameters(), lr=S.lr)
    S.pi_sched = CosineAnnealingLR(S.pi_opt, S.max_steps) if algo == "iql" else None
    if algo == "td3_bc":
        S.pi_t = copy.deepcopy(S.pi).requires_grad_(False)
        S.noise, S.clip = S.policy_noise * max_action, S.noise_clip * max_action
    S.chain_opt = torch.optim.Adam([p for actor in S.actors[1:] for p in actor.parameters()], lr=S.lr)
    S.gen = torch.Generator().manual_seed(seed + 2 * CHAIN_SEED)
    return S


# ------------------------------------------------------------------------------------------------ helpers

def sgd_step(opt, loss, sched=None):
    opt.zero_grad()
    loss.backward()
    opt.step()
    if sched is not None:
        sched.step()


def polyak(target, source, tau):
    with torch.no_grad():
        for pt, p in zip(target.parameters(), source.parameters()):
            pt.mul_(1 - tau).add_(tau * p)


@contextlib.contextmanager
def frozen(*nets):
    ps = [p for net in nets for p in net.parameters() if p.requires_grad]
    for p in ps:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in ps:
            p.requires_grad_(True)


def policy_out(S, pi, s):
    """What the chain compares: the action (TD3+BC) or (mean, std) (Gaussian actors)."""
    if S.algo == "td3_bc":
        return pi(obs=s) * S.max_action
    return pi(s)


def greedy_action(S, s):
    if S.algo == "td3_bc":
        return S.pi(s) * S.max_action
    mu, _ = S.pi(s)
    if S.algo == "iql":
        return (mu * S.max_action).clamp(-S.max_action, S.max_action)
    return mu


# ------------------------------------------------------------------------------------------------ training

def train_step(S, batch):
    s, a, r, s2, d = batch
    logs = {}
    if S.algo == "td3_bc":
        actor_step = S.it % S.policy_freq == 0
    else:
        actor_step = True
    anchors = []
    if actor_step:
        with torch.no_grad():
            anchors = [policy_out(S, pi, s) for pi in S.actors[:-1]]

    if S.algo == "iql":
        with torch.no_grad():
            next_v = S.v(s2).squeeze(-1)
            sa = torch.cat([s, a], 1)
            q_t = torch.min(S.q1_t(sa), S.q2_t(sa)).squeeze(-1)
        adv = q_t - S.v(s).squeeze(-1)
        v_loss = (torch.abs(S.expectile - (adv < 0).float()) * adv ** 2).mean()
        sgd_step(S.v_opt, v_loss)
        y = r + S.gamma * (1 - d) * next_v
        q_loss = F.mse_loss(S.q1(sa).squeeze(-1), y) + F.mse_loss(S.q2(sa).squeeze(-1), y)
        sgd_step(S.q_opt, q_loss)
        polyak(S.q1_t, S.q1, S.tau)
        polyak(S.q2_t, S.q2, S.tau)
        weights = torch.exp(S.beta * adv.detach()).clamp(max=EXP_ADV_MAX)
        mu, std = S.pi(s)
        pi_loss = (weights * -Normal(mu, std).log_prob(a).sum(-1)).mean()
        sgd_step(S.pi_opt, pi_loss)
        logs.update({"iql/v_loss": v_loss.item(), "iql/q_loss": q_loss.item(), "iql/pi_loss": pi_loss.item()})
        extra = weights

    elif S.algo == "td3_bc":
        with torch.no_grad():
            noise = (torch.randn_like(a) * S.noise).clamp(-S.clip, S.clip)
            a2 = (S.pi_t(s2) * S.max_action + noise).clamp(-S.max_action, S.max_action)
            sa2 = torch.cat([s2, a2], 1)
            y = r + S.gamma * (1 - d) * torch.min(S.q1_t(sa2), S.q2_t(sa2))
        sa = torch.cat([s, a], 1)
        q_loss = F.mse_loss(S.q1(sa), y) + F.mse_loss(S.q2(sa), y)
        sgd_step(S.q_opt, q_loss)
        logs["td3/q_loss"] = q_loss.item()
        if actor_step:
            pi = S.pi(s) * S.max_action
            q = S.q1(torch.cat([s, pi], 1))
            lmbda = S.alpha / q.abs().mean()
            pi_loss = -lmbda * q.mean() + ((pi - a) ** 2).sum(-1).mean()
            sgd_step(S.pi_opt, pi_loss)
            polyak(S.q1_t, S.q1, S.tau)
            polyak(S.q2_t, S.q2, S.tau)
            polyak(S.pi_t, S.actors[-1], S.tau)
            logs["td3/pi_loss"] = pi_loss.item()
        extra = None

    elif S.algo == "awac":
        with torch.no_grad():
            mu2, std2 = S.pi(s2)
            a2 = Normal(mu2, std2).rsample().clamp(-1.0, 1.0)
            sa2 = torch.cat([s2, a2], -1)
            y = r + S.gamma * (1 - d) * torch.min(S.q1_t(sa2), S.q2_t(sa2))
        sa = torch.cat([s, a], -1)
        q_loss = F.mse_loss(S.q1(sa), y) + F.mse_loss(S.q2(sa), y)
        sgd_step(S.q_opt, q_loss)
        mu, std = S.pi(s)
        a_pi = Normal(mu, std).rsample().clamp(-1.0, 1.0)
        v = torch.min(S.q1(torch.cat([s, a_pi], -1)), S.q2(torch.cat([s, a_pi], -1)))
        q = torch.min(S.q1(sa), S.q2(sa))
        weights = torch.exp((q - v) / S.awac_lambda).clamp(max=EXP_ADV_MAX)
        pi_loss = -(Normal(mu, std).log_prob(a).sum(-1, keepdim=True) * weights).mean()
        sgd_step(S.pi_opt, pi_loss)
        polyak(S.q1_t, S.q1, S.tau)
        polyak(S.q2_t, S.q2, S.tau)
        logs.update({"awac/q_loss": q_loss.item(), "awac/pi_loss": pi_loss.item()})
        extra = q.detach()

    else:
        raise ValueError(f"unknown algo {S.algo!r}")

    if actor_step and len(S.actors) > 1:
        logs.update(chain_step(S, s, a, anchors, extra))
    S.it += 1
    return logs


def chain_step(S, s, a, anchors, extra):
    """One Adam step for every chain actor; all losses use the start-of-step anchors."""
    total, logs = 0.0, {}
    with frozen(S.q1, S.q2):
        for i in range(1, len(S.actors)):
            actor = S.actors[i]
            if S.algo == "td3_bc":
                act = actor(s) * S.max_action
                q = S.q1(torch.cat([s, act], 1))
                energy = -S.alpha / q.abs().mean().detach() * q.mean() + F.mse_loss(act, a)
                w2 = ((act - anchors[i - 1]) ** 2).sum(-1).mean()
            else:
                mu, std = actor(s)
                mu_prev, std_prev = anchors[i - 1]
                w2 = ((mu - mu_prev) ** 2).sum(-1).mean() + ((std - std_prev) ** 2).sum()
                logp = Normal(mu, std).log_prob(a).sum(-1)
                if S.algo == "iql":
                    energy = -(extra * logp).mean()
                else:
                    with torch.no_grad():
                        eps = torch.randn_like(mu)
                        a_i = (mu + std * eps).clamp(-1.0, 1.0)
                        v_i = torch.min(S.q1(torch.cat([s, a_i], -1)), S.q2(torch.cat([s, a_i], -1)))
                        w_i = torch.exp((extra - v_i) / S.awac_lambda).clamp(max=EXP_ADV_MAX).squeeze(-1)
                    energy = -(w_i * logp).mean()
            total = total + energy + S.w2[i - 1] * w2
            logs[f"chain/{i}/energy"] = energy.item()
            logs[f"chain/{i}/w2"] = w2.item()
    sgd_step(S.chain_opt, total)
    return logs


# ------------------------------------------------------------------------------------------------ evaluation

def evaluate(S, env, seed, episodes, obs_mean, obs_std):
    """Mean undiscounted return of actor0 (deterministic), old gym API: reset() -> obs, step() -> 4-tuple."""
    seed_all(seed, env)
    returns = []
    for _ in range(episodes):
        obs, done, ret = env.reset(), False, 0.0
        while not done:
            x = torch.as_tensor((obs - obs_mean) / obs_std, dtype=torch.float32)[None]
            with torch.no_grad():
                act = greedy_action(S, x)[0].numpy()
            obs, rew, done, _ = env.step(act)
            ret += rew
        returns.append(ret)
    return float(np.mean(returns))
