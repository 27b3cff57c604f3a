"""Running cells: config composition and validation, config -> dataset and model, the runner, run
records, launchers, progress bars and the sweep index."""
