"""`python -m src.fid_stats` in a clone: genlab.fid_stats's command."""

from genlab.fid_stats import main

if __name__ == "__main__":
    main()
