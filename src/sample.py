"""`python -m src.sample` in a clone: genlab.sample's command."""

from genlab.sample import main

if __name__ == "__main__":
    main()
