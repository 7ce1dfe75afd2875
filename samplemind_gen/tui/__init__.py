"""The terminal app: a thin Textual front end over the core (`samplemind_gen.service`)."""
