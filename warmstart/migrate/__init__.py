"""Use case `migrate`: move a running instance to another host through a registry, stop-and-copy (migration)
or post-copy with this host serving the pages (postcopy). May import everything below cli except serve."""
