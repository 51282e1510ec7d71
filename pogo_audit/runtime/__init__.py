"""What a trainer needs at run time, and the auditor too: errors and exit codes, atomic pickle-free io, the Minari
data layer and replay buffer, RNG seeding and digests, the thread budget. Imports nothing else of the project, so
the multi-actor trainer (``multi_actor``) uses it without importing the auditor."""
