"""Keeping snapshots trustworthy and secret-free: secret environment variables kept out of snapshots, stored
files and argv (secretenv), encryption at rest (crypt), Ed25519 signatures over the manifest (signing).
May import: warmstart.errors, core."""
