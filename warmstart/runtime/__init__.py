"""Running the containers warmstart owns: start with remove-on-failure and diagnostics (containers), readiness
probes (probes), before-checkpoint/after-restore hooks (hooks), host ports checked before start (ports), and the
instances warmstart started, found by labels (instances: `ps`, `stop`). May import: errors, core, engines."""
