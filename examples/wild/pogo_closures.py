"""POGO-SAC-N / POGO-EDAC, written as closures.

`make_trainer(...)` builds everything and returns a handle whose `.step(batch)` runs one update:
temperature -> actor -> ensemble critic (EDAC adds eta * gradient-diversity of the ensemble),
then a chain of deterministic actors.  Chain actor 1 is pulled towards samples of actor0 (the
tanh-Gaussian SAC policy, taken at the start of the step), chain actor i > 1 towards chain actor
i - 1:  loss_i = -Q(s, a_i) / mean|Q| + w_i * W2^2.  For a deterministic a_i the squared W2 to a
distribution X is E||X - a_i||^2, estimated with `chain_samples` draws per state from the chain's
own generator.

The ensemble critic keeps all N members in [N, in, out] weight tensors (one batched matmul per
layer, as in the EDAC paper code).  A lock serialises `step` and `evaluate` (the evaluation
thread of my launcher calls into the same handle).

    t = make_trainer(obs_dim=17, act_dim=6, seed=10, n_critics=10, eta=1.0, chain_weights=[1.0, 1.0])
    logs = t.step([s, a, r, s2, d])          # r, d: [B, 1]
    t.evaluate(env, seed=42, episodes=10)    # old gym API
"""
import copy
import math
import random
import threading
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn as nn
from torch.distributions import Normal


def mlp(sizes, act=nn.ReLU, final_act=None):
    mods = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        mods += [nn.Linear(n_in, n_out), act()]
    mods.pop()
    if final_act is not None:
        mods.append(final_act())
    return nn.Sequential(*mods)


class TanhGaussianActor(nn.Module):
    def __init__(self, obs_dim, act_dim, hidden=256, max_action=1.0):
        super().__init__()
        self.body = mlp([obs_dim, hidden, hidden], final_act=nn.ReLU)
        self.mean = nn.Linear(hidden, act_dim)
        self.log_std = nn.Linear(hidden, act_dim)
        for m in self.body:
            if isinstance(m, nn.Linear):
                nn.init.constant_(m.bias, 0.1)
        for p in (self.mean.weight, self.mean.bias, self.log_std.weight, self.log_std.bias):
            nn.init.uniform_(p, -1e-3, 1e-3)
        self.max_action = max_action

    def dist_params(self, obs):
        h = self.body(obs)
        return self.mean(h), self.log_std(h).clamp(-5.0, 2.0).exp()

    def forward(self, obs, deterministic=False, with_logprob=True):
        mu, std = self.dist_params(obs)
        u = mu if deterministic else mu + std * torch.randn_like(mu)
        a = torch.tanh(u)
        logp = None
        if with_logprob:
            logp = Normal(mu, std).log_prob(u).sum(-1) - torch.log(1 - a.pow(2) + 1e-6).sum(-1)
        return a * self.max_action, logp


class EnsembleQ(nn.Module):
    """N critics [in -> h -> h -> h -> 1] held as [N, in, out] weights and [N, 1, out] biases."""

    def __init__(self, in_dim, hidden, n):
        super().__init__()
        self.n = n
        sizes = [in_dim, hidden, hidden, hidden, 1]
        self.W, self.b = nn.ParameterList(), nn.ParameterList()
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
            w = torch.empty(n, fan_in, fan_out)
            for k in range(n):
                nn.init.kaiming_uniform_(w[k], a=math.sqrt(5))  # "default Linear init", member by member
            bound = 1 / math.sqrt(fan_out)  # torch takes dim 1 of an [in, out] slice as fan_in
            self.W.append(nn.Parameter(w))
            self.b.append(nn.Parameter(torch.empty(n, 1, fan_out).uniform_(-bound, bound)))
        with torch.no_grad():
            for b in self.b:
                b.fill_(0.1)
            self.W[-1].uniform_(-3e-3, 3e-3)
            self.b[-1].uniform_(-3e-3, 3e-3)

    def forward(self, s, a):
        x = torch.cat([s, a], -1)
        if x.dim() == 2:
            x = x.expand(self.n, *x.shape)
        for i in range(len(self.W)):
            x = x @ self.W[i] + self.b[i]
            if i < len(self.W) - 1:
                x = torch.relu(x)
        return x.squeeze(-1)


class frozen:
    def __init__(self, module):
        self.params = [p for p in module.parameters() if p.requires_grad]

    def __enter__(self):
        for p in self.params:
            p.requires_grad_(False)

    def __exit__(self, *exc):
        for p in self.params:
            p.requires_grad_(True)


def make_trainer(obs_dim, act_dim, *, seed=10, n_critics=10, eta=0.0, chain_weights=(1.0, 1.0), hidden=256,
                 lr=3e-4, gamma=0.99, tau=5e-3, max_action=1.0, chain_samples=16):
    np.random.seed(seed)
    random.seed(seed)
    torch.manual_seed(seed)

    critic, actor = EnsembleQ(obs_dim + act_dim, hidden, n_critics), TanhGaussianActor(obs_dim, act_dim, hidden, max_action)
    target = EnsembleQ(obs_dim + act_dim, hidden, n_critics).requires_grad_(False)
    log_alpha = torch.zeros(1, requires_grad=True)
    actor_opt = torch.optim.Adam(actor.parameters(), lr=lr)
    critic_opt = torch.optim.Adam(critic.parameters(), lr=lr)
    alpha_opt = torch.optim.Adam([log_alpha], lr=lr)
    target_entropy = -float(act_dim)
    offdiag = 1 - torch.eye(n_critics, dtype=torch.bool) if eta > 0 else None

    chain_weights = list(chain_weights)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 1)
        chain = nn.ModuleList(mlp([obs_dim, hidden, hidden, act_dim], final_act=nn.Tanh) for _ in chain_weights)
    chain_opt = torch.optim.Adam(chain.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed + 2)
    pi0_prev = copy.deepcopy(actor).requires_grad_(False)
    lock = threading.Lock()
    counters = {"updates": 0}

    def diversity(s, a):
        s_n = s.repeat(n_critics, 1, 1)
        a_n = a.repeat(n_critics, 1, 1).requires_grad_(True)
        q = critic(s_n, a_n)
        g = torch.autograd.grad(q.sum(), a_n, retain_graph=True)[0]
        g = g / (g.norm(dim=-1, keepdim=True) + 1e-10)
        g = g.transpose(0, 1)
        gram = g @ g.transpose(1, 2)
        return (gram * offdiag).sum(dim=(1, 2)).mean() / n_critics

    def chain_update(s):
        with torch.no_grad():
            mu0, std0 = pi0_prev.dist_params(s)
            eps = torch.randn((s.shape[0], chain_samples, act_dim), generator=gen)
            x0 = torch.tanh(mu0[:, None] + std0[:, None] * eps) * max_action
        total, logs, prev = 0.0, {}, None
        with frozen(critic):
            for i, net in enumerate(chain):
                a_i = net(s) * max_action
                q = critic(s, a_i).min(0).values
                energy = -q.mean() / q.abs().mean().detach()
                if i == 0:
                    w2 = ((x0 - a_i[:, None]) ** 2).sum(-1).mean()
                else:
                    w2 = ((a_i - prev) ** 2).sum(-1).mean()
                prev = a_i.detach()
                total = total + energy + chain_weights[i] * w2
                logs[f"chain{i + 1}/energy"] = energy.item()
                logs[f"chain{i + 1}/w2"] = w2.item()
        chain_opt.zero_grad()
        total.backward()
        chain_opt.step()
        return logs

    def step(batch):
        s, a, r, s2, d = batch
        with lock:
            pi0_prev.load_state_dict(actor.state_dict())

            with torch.no_grad():
                _, logp = actor(s, need_log_prob=True)
            alpha_loss = (log_alpha * (logp + target_entropy)).mean()
            alpha_opt.zero_grad()
            alpha_loss.backward()
            alpha_opt.step()
            alpha = log_alpha.exp().detach()

            a_pi, logp_pi = actor(s)
            q_pi = critic(s, a_pi)
            actor_loss = (alpha * logp_pi - q_pi.min(0).values).mean()
            actor_opt.zero_grad()
            actor_loss.backward()
            actor_opt.step()

            with torch.no_grad():
                a2, logp2 = pi0_prev(s2)
                q_next = target(s2, a2).min(0).values - alpha * logp2
                y = r + gamma * (1 - d) * q_next.unsqueeze(-1)
            q = critic(s, a)
            critic_loss = ((q - y.view(1, -1)) ** 2).mean()
            if eta > 0:
                critic_loss = critic_loss + eta * diversity(s, a)
            actor_opt.zero_grad()
            critic_loss.backward()
            critic_opt.step()

            with torch.no_grad():
                for p_t, p in zip(target.parameters(), critic.parameters()):
                    p_t.mul_(1 - tau).add_(tau * p)
                rand_a = -max_action + 2 * max_action * torch.rand(a.shape, generator=gen)
                q_rand_std = critic(s, rand_a).std(0).mean().item()

            logs = {"alpha_loss": alpha_loss.item(), "critic_loss": critic_loss.item(),
                    "actor_loss": actor_loss.item(), "batch_entropy": -logp_pi.mean().item(),
                    "alpha": alpha.item(), "q_policy_std": q_pi.std(0).mean().item(), "q_random_std": q_rand_std}
            if chain_weights:
                logs.update(chain_update(s))
            counters["updates"] += 1
            return logs

    def evaluate(env, seed, episodes):
        """Mean return of the deterministic policy tanh(mu); old gym API (reset -> obs, step -> 4-tuple)."""
        with lock:
            env.seed(seed)
            returns = []
            for _ in range(episodes):
                obs, _ = env.reset()
                done, ret = False, 0.0
                while not done:
                    with torch.no_grad():
                        act, _ = actor(torch.as_tensor(obs, dtype=torch.float32), deterministic=True)
                    obs, rew, done, _ = env.step(act.numpy())
                    ret += rew
                returns.append(ret)
            return float(np.mean(returns))

    return SimpleNamespace(step=step, evaluate=evaluate, actor=actor, critic=critic, target=target,
                           log_alpha=log_alpha, actor_opt=actor_opt, critic_opt=critic_opt, alpha_opt=alpha_opt,
                           chain=chain, chain_opt=chain_opt, counters=counters, lock=lock)
