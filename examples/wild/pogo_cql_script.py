"""POGO-CQL training script.

CQL (Kumar et al. 2020; hyper-parameters and quirks of the CORL implementation) for the critic and
actor0, plus a chain of deterministic actors trained after every update:

    chain actor 1:  -Q(s, a_1)/mean|Q| + w_1 * E||X - a_1||^2,   X ~ actor0 at the start of the step
    chain actor i:  -Q(s, a_i)/mean|Q| + w_i * ||a_{i-1} - a_i||^2   (a_{i-1} before its update)

(the W2 between a distribution and a point mass is E||X - a||^2; K samples per state.)

    python pogo_cql_script.py --env hopper-medium-v2 --seed 0 --chain_weights 1.0 1.0

Evaluation uses the D4RL / gym<0.26 interface (env.seed, obs = env.reset(), 4-tuple step) and reports
the D4RL normalised score.
"""
import argparse
import copy
import math
import random
import time
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.distributions import Normal

CONFIG = SimpleNamespace(
    env="hopper-medium-v2",
    seed=0,
    max_steps=1_000_000,
    batch_size=256,
    discount=0.99,
    policy_lr=3e-5,
    qf_lr=3e-4,
    tau=5e-3,
    target_update_period=1,
    alpha_multiplier=1.0,
    auto_alpha=True,
    backup_entropy=False,
    n_actions=10,
    importance_sample=True,
    lagrange=False,
    target_action_gap=-1.0,
    temp=1.0,
    cql_alpha=10.0,
    clip_diff_min=-np.inf,
    clip_diff_max=np.inf,
    orthogonal_init=True,
    q_n_hidden_layers=3,
    bc_steps=0,
    log_std_multiplier=1.0,
    chain_weights=[1.0, 1.0],
    chain_samples=16,
    chain_lr=3e-4,
    eval_every=5000,
    eval_episodes=10,
)
LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0


def set_seed(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def mlp(in_dim, out_dim, n_hidden=2, hidden=256):
    layers, d = [], in_dim
    for _ in range(n_hidden):
        layers += [nn.Linear(d, hidden), nn.ReLU()]
        d = hidden
    layers.append(nn.Linear(d, out_dim))
    return nn.Sequential(*layers)


def init_weights(net, orthogonal=False):
    linears = [m for m in net if isinstance(m, nn.Linear)]
    if orthogonal:
        for m in linears[:-1]:
            nn.init.orthogonal_(m.weight, gain=math.sqrt(2))
            nn.init.zeros_(m.bias)
        nn.init.orthogonal_(linears[-1].weight, gain=1e-2)
    else:
        nn.init.xavier_uniform_(linears[-1].weight, gain=1e-2)
    nn.init.zeros_(linears[-1].bias)


class TanhGaussianPolicy(nn.Module):
    def __init__(self, obs_dim, act_dim, max_action, log_std_multiplier=1.0, orthogonal=False):
        super().__init__()
        self.act_dim, self.max_action = act_dim, max_action
        self.net = mlp(obs_dim, 2 * act_dim)
        init_weights(self.net, orthogonal)
        self.log_std_mult = nn.Parameter(torch.tensor(log_std_multiplier))
        self.log_std_offset = nn.Parameter(torch.tensor(-1.0))

    def mean_std(self, obs):
        mean, raw = torch.split(self.net(obs), self.act_dim, dim=-1)
        log_std = (self.log_std_mult * raw + self.log_std_offset).clamp(LOG_STD_MIN, LOG_STD_MAX)
        return mean, log_std.exp()

    def forward(self, obs, deterministic=False, repeat=None):
        if repeat is not None:
            obs = obs.unsqueeze(1).repeat(1, repeat, 1)
        mean, std = self.mean_std(obs)
        u = mean if deterministic else mean + std * torch.randn_like(mean)
        a = torch.tanh(u)
        log_det = 2.0 * (math.log(2.0) - u - F.softplus(-2.0 * u))  # log |d tanh(u) / du|, stable form
        logp = (Normal(mean, std).log_prob(u) - log_det).sum(-1, keepdim=True)
        return self.max_action * a, logp

    @torch.no_grad()
    def act(self, obs, deterministic=False):
        a, _ = self(torch.as_tensor(obs, dtype=torch.float32).reshape(1, -1), deterministic=deterministic)
        return a[0].numpy()


class QNet(nn.Module):
    def __init__(self, obs_dim, act_dim, n_hidden=3, orthogonal=False):
        super().__init__()
        self.net = mlp(obs_dim + act_dim, 1, n_hidden)
        init_weights(self.net, orthogonal)

    def forward(self, obs, act):
        if act.dim() == 3:  # [B, n, A] sampled actions for each state
            b, n = act.shape[:2]
            obs = obs.unsqueeze(1).repeat(1, n, 1)
            return self.net(torch.cat([obs, act], -1)).reshape(b, n)
        return self.net(torch.cat([obs, act], -1)).squeeze(-1)


def build_agent(obs_dim, act_dim, max_action, cfg=CONFIG, seed=None):
    seed = cfg.seed if seed is None else seed
    set_seed(seed)
    ag = SimpleNamespace(cfg=cfg, step=0)
    ag.critic_1 = QNet(obs_dim, act_dim, cfg.q_n_hidden_layers, cfg.orthogonal_init)
    ag.critic_2 = QNet(obs_dim, act_dim, cfg.q_n_hidden_layers, cfg.orthogonal_init)
    ag.q_opt = torch.optim.Adam([*ag.critic_1.parameters(), *ag.critic_2.parameters()], lr=cfg.qf_lr)
    ag.actor = TanhGaussianPolicy(obs_dim, act_dim, max_action, cfg.log_std_multiplier, orthogonal=cfg.orthogonal_init)
    ag.actor_opt = torch.optim.Adam(ag.actor.parameters(), lr=cfg.policy_lr)
    ag.target_1 = copy.deepcopy(ag.critic_1).requires_grad_(False)
    ag.target_2 = copy.deepcopy(ag.critic_2).requires_grad_(False)
    ag.target_entropy = -float(act_dim)
    ag.log_alpha = torch.tensor(0, requires_grad=True)
    ag.alpha_opt = torch.optim.Adam([ag.log_alpha], lr=cfg.qf_lr)
    ag.log_alpha_prime = torch.tensor(1.0, requires_grad=True)
    ag.alpha_prime_opt = torch.optim.Adam([ag.log_alpha_prime], lr=cfg.qf_lr)

    # POGO chain: own init seed, own sampling generator
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 12345)
        ag.chain = [nn.Sequential(mlp(obs_dim, act_dim), nn.Tanh()) for _ in cfg.chain_weights]
    ag.chain_opt = torch.optim.Adam([p for net in ag.chain for p in net.parameters()], lr=cfg.chain_lr)
    ag.chain_gen = torch.Generator().manual_seed(seed + 54321)
    return ag


def soft_update(target, source, tau):
    with torch.no_grad():
        for t, s in zip(target.parameters(), source.parameters()):
            t.mul_(1.0 - tau).add_(tau * s)


def update(ag, batch):
    cfg = ag.cfg
    obs, act, rew, next_obs, done = batch
    actor, q1, q2 = ag.actor, ag.critic_1, ag.critic_2
    with torch.no_grad():
        mu0, std0 = actor.mean_std(obs)  # actor0 before this update: anchor of the chain

    # ---------------- policy and temperature losses
    new_act, log_pi = actor(obs)
    if cfg.auto_alpha:
        alpha_loss = -(ag.log_alpha * (log_pi + ag.target_entropy).detach()).mean()
        alpha = ag.log_alpha.exp() * cfg.alpha_multiplier
    else:
        alpha_loss = obs.new_tensor(0.0)
        alpha = obs.new_tensor(cfg.alpha_multiplier)
    if ag.step <= cfg.bc_steps:
        _, bc_logp = actor(obs)  # as in CORL: log-prob of a fresh sample
        policy_loss = (alpha * log_pi - bc_logp).mean()
    else:
        q_new = torch.min(q1(obs, new_act), q2(obs, new_act))
        policy_loss = (alpha * log_pi - q_new).mean()

    # ---------------- critic loss: TD + conservative penalty
    q1_pred, q2_pred = q1(obs, act), q2(obs, act)
    with torch.no_grad():
        next_act, next_logp = actor(next_obs)
        target_q = torch.min(ag.target_1(next_obs, next_act), ag.target_2(next_obs, next_act))
        if cfg.backup_entropy:
            target_q = target_q - alpha * next_logp
        td_target = (rew + (1.0 - done) * cfg.discount * target_q.unsqueeze(-1)).squeeze(-1)
    qf1_loss = F.mse_loss(q1_pred, td_target)
    qf2_loss = F.mse_loss(q2_pred, td_target)

    B, A, n = act.shape[0], act.shape[-1], cfg.n_actions
    rand_act = torch.empty(B, n, A).uniform_(-1.0, 1.0)
    cur_act, cur_logp = actor(obs, repeat=n)
    nxt_act, nxt_logp = actor(next_obs, repeat=n)
    cur_act, cur_logp, nxt_act, nxt_logp = cur_act.detach(), cur_logp.detach(), nxt_act.detach(), nxt_logp.detach()

    stats, diffs = {}, []
    for k, qf, q_pred in (("1", q1, q1_pred), ("2", q2, q2_pred)):
        q_rand = qf(obs, rand_act)
        q_cur = qf(obs, cur_act)
        q_next = qf(next_obs, nxt_act)
        stats[f"cql_std_q{k}"] = torch.cat([q_rand, q_pred.unsqueeze(1), q_next, q_cur], 1).std(1).mean().item()
        if cfg.importance_sample:
            cat_q = torch.cat([q_rand + math.log(0.5 ** A), q_next - nxt_logp, q_cur - cur_logp], 1)
        else:
            cat_q = torch.cat([q_rand, q_pred.unsqueeze(1), q_next, q_cur], 1)
        ood = torch.logsumexp(cat_q / cfg.temp, dim=1) * cfg.temp
        diffs.append((ood - q_pred).clamp(cfg.clip_diff_min, cfg.clip_diff_max).mean())
        stats[f"cql_q{k}_rand"] = q_rand.mean().item()
        stats[f"cql_q{k}_current_actions"] = q_cur.mean().item()
        stats[f"cql_q{k}_next_actions"] = q_next.mean().item()

    if cfg.lagrange:
        alpha_prime = ag.log_alpha_prime.exp().clamp(0.0, 1e6)
        cql_1 = alpha_prime * cfg.cql_alpha * (diffs[0] - cfg.target_action_gap)
        cql_2 = alpha_prime * cfg.cql_alpha * (diffs[1] - cfg.target_action_gap)
        alpha_prime_loss = (-cql_1 - cql_2) * 0.5
        ag.alpha_prime_opt.zero_grad()
        alpha_prime_loss.backward(retain_graph=True)
        ag.alpha_prime_opt.step()
    else:
        cql_1, cql_2 = diffs[0] * cfg.cql_alpha, diffs[1] * cfg.cql_alpha
        alpha_prime_loss, alpha_prime = obs.new_tensor(0.0), obs.new_tensor(0.0)
    qf_loss = qf1_loss + qf2_loss + cql_1 + cql_2

    # ---------------- steps: alpha -> actor -> critics -> targets
    if cfg.auto_alpha:
        ag.alpha_opt.zero_grad()
        alpha_loss.backward()
        ag.alpha_opt.step()
    ag.actor_opt.zero_grad()
    policy_loss.backward()
    ag.actor_opt.step()
    ag.q_opt.zero_grad()  # after the policy backward, which leaves gradients in the critics
    qf_loss.backward(retain_graph=True)
    ag.q_opt.step()
    if (ag.step + 1) % cfg.target_update_period == 0:
        soft_update(ag.target_1, q1, cfg.tau)
        soft_update(ag.target_2, q2, cfg.tau)

    logs = {
        "train/log_pi": log_pi.mean().item(), "train/policy_loss": policy_loss.item(),
        "train/alpha_loss": alpha_loss.item(), "train/alpha": alpha.item(),
        "train/qf1_loss": qf1_loss.item(), "train/qf2_loss": qf2_loss.item(),
        "train/average_qf1": q1_pred.mean().item(), "train/average_qf2": q2_pred.mean().item(),
        "train/average_target_q": target_q.mean().item(),
        "train/cql_min_qf1_loss": cql_1.item(), "train/cql_min_qf2_loss": cql_2.item(),
        "train/cql_qf1_diff": diffs[0].item(), "train/cql_qf2_diff": diffs[1].item(),
        "train/alpha_prime_loss": alpha_prime_loss.item(), "train/alpha_prime": alpha_prime.item(),
        **{f"train/{k}": v for k, v in stats.items()},
    }
    if ag.chain:
        logs.update(update_chain(ag, obs, mu0, std0))
    ag.step += 1
    return logs


def update_chain(ag, obs, mu0, std0):
    cfg, m = ag.cfg, ag.actor.max_action
    eps = torch.randn((obs.shape[0], cfg.chain_samples, mu0.shape[-1]))
    anchor = m * torch.tanh(mu0.unsqueeze(1) + std0.unsqueeze(1) * eps)  # [B, K, A] samples of actor0
    critic_params = [*ag.critic_1.parameters(), *ag.critic_2.parameters()]
    for p in critic_params:
        p.requires_grad_(False)
    total, logs = 0.0, {}
    for i, (net, w) in enumerate(zip(ag.chain, cfg.chain_weights), start=1):
        a_i = net(obs) * m
        q = torch.min(ag.critic_1(obs, a_i), ag.critic_2(obs, a_i))
        energy = -q.mean() / q.abs().mean().detach()
        if anchor.dim() == 3:
            w2 = ((anchor - a_i.unsqueeze(1)) ** 2).sum(-1).mean()
        else:
            w2 = ((anchor - a_i) ** 2).sum(-1).mean()
        total = total + energy + w * w2
        anchor = a_i.detach()
        logs[f"chain_{i}/energy"], logs[f"chain_{i}/w2"] = energy.item(), w2.item()
    ag.chain_opt.zero_grad()
    total.backward()
    ag.chain_opt.step()
    for p in critic_params:
        p.requires_grad_(True)
    return logs


def evaluate(env, actor, episodes, seed, obs_mean, obs_std, ref_min_score=None, ref_max_score=None):
    """Return and D4RL normalised score of actor0 (deterministic actions)."""
    env.seed(seed)
    returns = []
    for _ in range(episodes):
        obs, done, ret = env.reset(), False, 0.0
        while not done:
            action = actor.act((obs - obs_mean) / obs_std)
            obs, reward, done, _ = env.step(action)
            ret += reward
        returns.append(ret)
    out = {"eval/return": float(np.mean(returns))}
    if ref_min_score is not None and ref_max_score is not None:
        out["eval/d4rl_score"] = 100.0 * (out["eval/return"] - ref_min_score) / (ref_max_score - ref_min_score)
    return out


def main():
    parser = argparse.ArgumentParser()
    for key, value in vars(CONFIG).items():
        if isinstance(value, list):
            parser.add_argument(f"--{key}", type=float, nargs="*", default=value)
        elif isinstance(value, bool):
            parser.add_argument(f"--{key}", type=lambda s: s.lower() in ("1", "true", "yes"), default=value)
        else:
            parser.add_argument(f"--{key}", type=type(value), default=value)
    cfg = SimpleNamespace(**vars(parser.parse_args()))

    import d4rl  # noqa: F401  (registers the datasets)
    import gym

    env = gym.make(cfg.env)
    data = d4rl.qlearning_dataset(env)
    obs_mean, obs_std = data["observations"].mean(0), data["observations"].std(0) + 1e-3
    to_t = lambda x: torch.as_tensor(x, dtype=torch.float32)  # noqa: E731
    buf = [to_t((data["observations"] - obs_mean) / obs_std), to_t(data["actions"]),
           to_t(data["rewards"])[:, None], to_t((data["next_observations"] - obs_mean) / obs_std),
           to_t(data["terminals"])[:, None]]
    ag = build_agent(buf[0].shape[1], buf[1].shape[1], float(env.action_space.high[0]), cfg)
    t0 = time.time()
    for it in range(cfg.max_steps):
        idx = np.random.randint(0, buf[0].shape[0], size=cfg.batch_size)
        logs = update(ag, [x[idx] for x in buf])
        if (it + 1) % cfg.eval_every == 0:
            ev = evaluate(env, ag.actor, cfg.eval_episodes, cfg.seed, obs_mean, obs_std,
                          d4rl.infos.REF_MIN_SCORE[cfg.env], d4rl.infos.REF_MAX_SCORE[cfg.env])
            print(f"[{it + 1}] {time.time() - t0:.0f}s q1={logs['train/qf1_loss']:.3f} "
                  f"pi={logs['train/policy_loss']:.3f} score={ev.get('eval/d4rl_score', float('nan')):.1f}")


if __name__ == "__main__":
    main()
