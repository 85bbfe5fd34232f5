"""`python -m src.train` in a clone: genlab.train's command."""

from genlab.train import main

if __name__ == "__main__":
    main()
