"""`python -m src.report` in a clone: genlab.report's command."""

from genlab.report import main

if __name__ == "__main__":
    main()
