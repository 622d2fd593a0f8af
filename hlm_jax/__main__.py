"""`python -m hlm_jax ...`: see hlm_jax.cli."""
import sys

from hlm_jax.cli import main

if __name__ == "__main__":
    sys.exit(main())
