"""``python -m mpicnn`` is ``python -m mpicnn.train``."""
from .train import main

main()
