"""The command-line layer: typer and rich live here and nowhere else."""
