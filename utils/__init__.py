"""What any project could reuse, nothing of TSM itself: the config schema and its
defaults (config_utils), the entry scripts' common flags (cli), logging, the machine
(env: devices, threads, seeds, ranks), downloads, a safe unpickler, and child processes
that end with their parent (parent_watch).

May import: nothing."""
