"""The command-line front end: thin wrappers over the core."""
