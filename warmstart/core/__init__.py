"""What every layer shares, stdlib only: the app spec and its file (spec, specfile), labels and names
(labels), signal discipline (signals), where the cache is and which names may become paths there (layout), the
filesystem rules for untrusted dirs (safefs), facts about this host (host), and the contract with the sandbox init
(sandbox, criu, jvmhelper). May import: warmstart.errors."""
