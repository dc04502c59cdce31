"""The demo behind ./run.sh demo."""
