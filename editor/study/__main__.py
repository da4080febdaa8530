"""``python -m editor.study create|list ...``: the command line of :mod:`editor.study.studies`."""
from editor.study.studies import main

if __name__ == "__main__":
    main()
