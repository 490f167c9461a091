"""``python -m autocode.serve``: run the prediction API, manage its API keys and users."""

from autocode.serve.cli import main

if __name__ == "__main__":
    main()
