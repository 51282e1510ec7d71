"""PyTorch reference algorithms, one readable module per algorithm (CORL single-file spirit).

Every module exposes a config dataclass ``Config`` with CORL's defaults and
``build(config, state_dim, action_dim, max_action, device="cpu", dtype=torch.float32)``. Which module serves which
algorithm and golden-trace variant is declared once, in :mod:`multi_actor.registry`.
"""
