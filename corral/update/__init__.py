"""Whole-system atomic updates: Omaha v3, A/B slots with boot counting, signed payloads.

Pure cores: `omaha` (codec), `version` (semver), `slots` (gptprio selection and slot
backends), `policy` (rollout policy), `payload` (format and trust rules), `schedule`
(update_engine's check timing), `health` (boot assessment, the per-check event).
Shells: `server` (the update server), `agent` (the update agent on a machine);
`fleet_health` judges a machine's fleet units after a boot; `hello` is a tiny program
every release ships (the tour's fleet workload).
Errors: one tree in `errors`, each carrying its update_engine error code.
See docs/updates.md for how to run them.
"""
