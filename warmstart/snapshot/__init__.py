"""Use cases `build` and `checkpoint`: start and warm up the app (warmup), trim its memory (trim), checkpoint it
into the cache (build; checkpoint for a running instance). A build makes trial restores of what it staged
(trials), so this layer sits on restore. May import: errors, core, engines, security, cache, runtime, restore."""
