"""Command-line entry point (placeholder replaced below)."""
import typer

app = typer.Typer(no_args_is_help=True, help="hepzoo: fast-simulation and MLPF model zoo.")
