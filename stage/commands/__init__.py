"""One module per `stage` subcommand (discovered by stage.cli): NAME, HELP, add_arguments, run."""
