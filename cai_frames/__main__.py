"""``python -m cai_frames`` runs the ``cai-frames`` command."""

from .cli import main

main(prog_name="cai-frames")
