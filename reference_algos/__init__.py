"""CORL-faithful single-actor reference algorithms. Knows nothing about multi-actor training or audits."""
