"""Sub-commands of the `emola` CLI, one module each."""
