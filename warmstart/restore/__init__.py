"""Use case `run`: restore a new instance from the newest usable snapshot or start cold, saying why (launch),
when to restore at all (policy), lazy pages (lazypages), and the destination side of a post-copy restore
(postcopy). May import: errors, core, engines, security, cache, runtime."""
