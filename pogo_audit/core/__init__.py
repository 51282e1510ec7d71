"""The auditor's core below the checks: bundles, comparisons, golden traces and fingerprints, the lock-step harness's
RNG isolation, factory loading, digests, source locations, the CI exporters and the bundle inspection."""
