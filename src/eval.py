"""`python -m src.eval` in a clone: genlab.eval's command."""

from genlab.eval import main

if __name__ == "__main__":
    main()
