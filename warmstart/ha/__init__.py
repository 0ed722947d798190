"""High availability by itself: `run --restart on-failure` supervises an instance, checkpoints it periodically and
restores it in place when it dies (supervisor.py). May import everything below it, as migrate may."""
