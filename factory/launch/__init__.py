"""Launching stages: local torchrun, or a rendered sbatch script for Slurm (`python -m factory.launch`)."""
