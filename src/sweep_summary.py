"""`python -m src.sweep_summary` in a clone: genlab.sweep_summary's command."""

from genlab.sweep_summary import main

if __name__ == "__main__":
    main()
