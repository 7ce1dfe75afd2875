"""One screen per module: generation, export, model picker, help, error."""
