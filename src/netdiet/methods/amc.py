"""`amc`: AutoML for Model Compression (He et al., ECCV 2018): a DDPG agent chooses each group's keep
fraction in turn, and the budget is met by bounding every action, not by a penalty.

An episode walks the groups in the network's order. The state of step t says what the group is (index,
kind, size, producing layer's input size, stride, kernel), how much of the dense cost it carries, how
much cost the earlier actions removed and how much the later groups can still remove, and the previous
action. The actor proposes a keep fraction; during the first `warmup` episodes actions are uniform
random, after that the actor's action plus truncated-normal noise whose width decays every episode.
The action is then cut to the largest count with which the budget is still reachable if every later
group went to its smallest choice, so every episode's policy meets the budget (a last repair covers a
measured latency that is not monotone in the counts). The reward is the episode's held-out score of
the masked sub-network (BatchNorm re-estimated, no fine-tuning) minus a moving-average baseline; with
the reward only at the end and no discount, the critic's target for every step is that reward (the
Monte-Carlo form of AMC's update). The best sub-network any episode found is the read-off.

Defaults are sized for a CPU: 100 episodes (25 warm-up) score 100 sub-networks, about 4 minutes for a
ResNet-20 on one CPU thread with netdiet.compress's 1,000 held-out images per candidate; AMC ran 400
episodes on a GPU.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.stats import truncnorm
from torch import nn

from netdiet.errors import ConfigError
from netdiet.methods.context import MethodContext
from netdiet.methods.registry import register_method
from netdiet.methods.subnets import KINDS, Counts, SubnetSearch

STATE_SIZE = 10


@dataclass
class AmcConfig:
    """`episodes` includes the `warmup` episodes of random actions. `min_keep` is the smallest keep
    fraction an action may ask for (AMC's lower bound 0.2; the budget bound may still cut below it).
    `noise` is the initial width of the exploration noise, multiplied by `noise_decay` each episode
    after the warm-up. `hidden`, `actor_lr`, `critic_lr`, `batch_size`, `replay_size`: AMC's."""

    episodes: int = 100
    warmup: int = 25
    min_keep: float = 0.2
    noise: float = 0.5
    noise_decay: float = 0.95
    hidden: int = 300
    actor_lr: float = 1e-4
    critic_lr: float = 1e-3
    batch_size: int = 64
    replay_size: int = 2000
    updates_per_episode: int = 0  # 0: one per group
    baseline_decay: float = 0.95
    seed: int = 0

    def __post_init__(self) -> None:
        if self.episodes < 1:
            raise ConfigError(f"episodes must be >= 1, got {self.episodes}")
        if not 0 <= self.warmup <= self.episodes:
            raise ConfigError(f"warmup must be in [0, episodes={self.episodes}], got {self.warmup}")
        if not 0.0 <= self.min_keep <= 1.0:
            raise ConfigError(f"min_keep must be in [0, 1], got {self.min_keep}")
        if self.noise <= 0 or not 0 < self.noise_decay <= 1:
            raise ConfigError(
                f"noise must be > 0 and noise_decay in (0, 1], got {self.noise}, {self.noise_decay}"
            )
        for name in ("hidden", "batch_size", "replay_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.actor_lr <= 0 or self.critic_lr <= 0:
            raise ConfigError("actor_lr and critic_lr must be > 0")
        if self.updates_per_episode < 0:
            raise ConfigError(f"updates_per_episode must be >= 0, got {self.updates_per_episode}")
        if not 0 <= self.baseline_decay < 1:
            raise ConfigError(f"baseline_decay must be in [0, 1), got {self.baseline_decay}")


def _mlp(inputs: int, hidden: int, out: nn.Module | None = None) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Linear(inputs, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU()]
    layers.append(nn.Linear(hidden, 1))
    if out is not None:
        layers.append(out)
    return nn.Sequential(*layers)


@register_method("amc")
class Amc(SubnetSearch):
    Config = AmcConfig
    config: AmcConfig

    def __init__(self, model: nn.Module, context: MethodContext, config: AmcConfig | None = None) -> None:
        super().__init__(model, context, config)
        self.episodes: list[dict[str, Any]] = []  # one record per episode: reward, cost ratio, noise
        self._facts = self.subnets.facts()

    # ----- the environment ---------------------------------------------------------------------------
    def _state(self, t: int, counts: Counts, previous: float) -> list[float]:
        s, names = self.subnets, self.subnets.names
        facts = self._facts
        chosen = {**s.full(), **counts}
        smallest = s.smallest()
        rest_min = {**chosen, **{n: smallest[n] for n in names[t + 1 :]}}
        now = s.price({**s.full(), **counts})
        reduced = (self.dense - now) / self.dense
        to_go = (now - s.price(rest_min)) / self.dense
        own = (s.price(chosen) - s.price({**chosen, names[t]: smallest[names[t]]})) / self.dense
        f = facts[t]
        return [
            t / max(len(names) - 1, 1),
            f.kind / len(KINDS),
            f.size / self._max("size"),
            f.in_size / self._max("in_size"),
            f.stride / self._max("stride"),
            f.kernel / self._max("kernel"),
            own,
            reduced,
            to_go,
            previous,
        ]

    def _max(self, field: str) -> float:
        return float(max(getattr(f, field) for f in self._facts)) or 1.0

    def _bound(self, t: int, counts: Counts) -> int:
        """The largest count of group t with which the budget is reachable by taking every later group
        to its smallest choice (bisection: counted costs grow with every count)."""
        s = self.subnets
        name = s.names[t]
        smallest = s.smallest()
        later = {n: smallest[n] for n in s.names[t + 1 :]}
        options = s.choices[name]
        if s.price({**counts, name: options[0], **later}) > self.target:
            return options[0]
        lo, hi = 0, len(options) - 1
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if s.price({**counts, name: options[mid], **later}) <= self.target:
                lo = mid
            else:
                hi = mid - 1
        return options[lo]

    def episode(self, propose: Any) -> tuple[Counts, list[list[float]], list[float]]:
        """One walk over the groups: `propose(state) -> keep fraction`. Returns the counts (within the
        budget), the states and the actions as taken (after the bound)."""
        s = self.subnets
        counts: Counts = {}
        states: list[list[float]] = []
        actions: list[float] = []
        previous = 1.0
        for t, name in enumerate(s.names):
            state = self._state(t, counts, previous)
            wanted = min(max(float(propose(state)), self.config.min_keep), 1.0)
            low, high = s.choices[name][0], s.choices[name][-1]
            count = min(s.snap(name, low + wanted * (high - low)), self._bound(t, counts))
            counts[name] = count
            taken = (count - low) / (high - low) if high > low else 1.0
            states.append(state)
            actions.append(taken)
            previous = taken
        if s.price(counts) > self.target:  # measured latency can rise where a count falls off a block
            counts = s.repair(counts, self.target, random.Random(len(self.episodes)))
        return counts, states, actions

    # ----- the agent ---------------------------------------------------------------------------------
    def search(self) -> Counts:
        cfg = self.config
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            rng = random.Random(cfg.seed)
            np_rng = np.random.default_rng(cfg.seed)
            actor = _mlp(STATE_SIZE, cfg.hidden, nn.Sigmoid())
            critic = _mlp(STATE_SIZE + 1, cfg.hidden)
            actor_opt = torch.optim.Adam(actor.parameters(), lr=cfg.actor_lr)
            critic_opt = torch.optim.Adam(critic.parameters(), lr=cfg.critic_lr)
            replay: list[tuple[list[float], float, float]] = []
            baseline: float | None = None
            sigma = cfg.noise
            updates = cfg.updates_per_episode or len(self.subnets.names)
            for ep in range(cfg.episodes):
                warm = ep < cfg.warmup

                def propose(state: list[float], sigma: float = sigma, warm: bool = warm) -> float:
                    if warm:  # AMC's warm-up: uniform random actions fill the replay buffer
                        return rng.uniform(cfg.min_keep, 1.0)
                    with torch.no_grad():
                        mu = float(actor(torch.tensor([state], dtype=torch.float32)))
                    lo, hi = (0.0 - mu) / sigma, (1.0 - mu) / sigma
                    return float(truncnorm.rvs(lo, hi, loc=mu, scale=sigma, random_state=np_rng))

                counts, states, actions = self.episode(propose)
                score = self.context.evaluate(self.subnets.assignment(counts))
                if not math.isfinite(score):
                    raise ConfigError(f"amc: the evaluator returned {score} for episode {ep}")
                if self.best is None or score > self.best[0]:
                    self.best = (score, dict(counts))
                baseline = (
                    score
                    if baseline is None
                    else cfg.baseline_decay * baseline + (1 - cfg.baseline_decay) * score
                )
                reward = score - baseline
                replay.extend((st, a, reward) for st, a in zip(states, actions))
                del replay[: max(0, len(replay) - cfg.replay_size)]
                self.episodes.append(
                    {
                        "episode": ep,
                        "score": score,
                        "cost_ratio": self.subnets.price(counts) / self.reference,
                        "noise": sigma if ep >= cfg.warmup else None,
                        "counts": dict(counts),
                    }
                )
                if ep + 1 >= cfg.warmup and len(replay) >= min(cfg.batch_size, len(replay)):
                    for _ in range(updates):
                        batch = rng.sample(replay, min(cfg.batch_size, len(replay)))
                        st = torch.tensor([b[0] for b in batch], dtype=torch.float32)
                        act = torch.tensor([[b[1]] for b in batch], dtype=torch.float32)
                        rew = torch.tensor([[b[2]] for b in batch], dtype=torch.float32)
                        q = critic(torch.cat([st, act], 1))
                        critic_loss = (q - rew).pow(2).mean()
                        critic_opt.zero_grad()
                        critic_loss.backward()
                        critic_opt.step()
                        actor_loss = -critic(torch.cat([st, actor(st)], 1)).mean()
                        actor_opt.zero_grad()
                        actor_loss.backward()
                        actor_opt.step()
                if ep >= cfg.warmup:
                    sigma *= cfg.noise_decay
        assert self.best is not None
        return self.best[1]

    def search_record(self) -> dict[str, Any]:
        best = self.best
        return {
            "episodes": len(self.episodes),
            "best_score": best[0] if best else None,
            "best_counts": dict(best[1]) if best else None,
            "trace": self.episodes,
        }
